//! The gateway's SQLite file: applied objects, twins with versions, and the telemetry outbox.
//!
//! One file, WAL, `synchronous=NORMAL`, versioned migrations. Writes come in batches, one
//! transaction each (one commit per batch of readings, not per reading). Everything the gateway
//! needs to run without the cloud is here: a restart from this file alone brings back every
//! device, its model and its last desired values.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use device_models::crd::PropertyType;
use device_models::twin::{PropertyTwin, TwinValue, TwinVersion};
use sqlx::Row;

use crate::config::OutboxPolicy;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("sqlite: {0}")]
    Sqlite(#[from] sqlx::Error),
    /// The file was written by a newer Ballast.
    #[error("the store has schema version {found}; this gateway knows up to {known}")]
    TooNew {
        /// In the file.
        found: i64,
        /// Known here.
        known: i64,
    },
    /// A batch did not go in as written (a bug, or the file changed behind the gateway's back).
    #[error("batch not stored as written: {0}")]
    Batch(String),
}

/// Migrations, in order; the schema version is the number applied.
const MIGRATIONS: &[&str] = &[
    // 1: objects, twins, outbox.
    "CREATE TABLE objects (key TEXT PRIMARY KEY, version TEXT NOT NULL, body TEXT NOT NULL);
     CREATE TABLE twins (
        device TEXT NOT NULL, property TEXT NOT NULL, ty TEXT NOT NULL,
        desired TEXT, desired_cloud INTEGER, desired_edge INTEGER, desired_ts INTEGER,
        reported TEXT, reported_cloud INTEGER, reported_edge INTEGER, reported_ts INTEGER,
        PRIMARY KEY (device, property));
     CREATE TABLE outbox (seq INTEGER PRIMARY KEY, device TEXT NOT NULL, property TEXT NOT NULL,
        value TEXT NOT NULL, ts INTEGER NOT NULL);",
    // 2: outbox sequence numbers never reused. With a plain INTEGER PRIMARY KEY, SQLite hands
    // out MAX(seq) + 1, so a trim of the newest rows, or of every row (the age bound after a
    // quiet week), made the next samples reuse numbers the cloud may already have stored, and
    // the hub, which deduplicates by (node, seq), would drop them as duplicates. AUTOINCREMENT
    // keeps the highest number ever given in `sqlite_sequence`. The table is copied once.
    "CREATE TABLE outbox_v2 (seq INTEGER PRIMARY KEY AUTOINCREMENT, device TEXT NOT NULL,
        property TEXT NOT NULL, value TEXT NOT NULL, ts INTEGER NOT NULL);
     INSERT INTO outbox_v2 (seq, device, property, value, ts)
        SELECT seq, device, property, value, ts FROM outbox ORDER BY seq;
     DROP TABLE outbox;
     ALTER TABLE outbox_v2 RENAME TO outbox;",
];

/// One change to a twin value.
#[derive(Debug, Clone, PartialEq)]
pub struct TwinWrite {
    /// Device id (shared with the reading it came from).
    pub device: Arc<str>,
    /// Property.
    pub property: Arc<str>,
    /// Its type.
    pub ty: PropertyType,
    /// Desired or reported.
    pub which: Which,
    /// The new value.
    pub value: TwinValue,
}

/// Which side of a twin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// Desired.
    Desired,
    /// Reported.
    Reported,
}

/// One telemetry sample for the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Device id (shared with the reading it came from).
    pub device: Arc<str>,
    /// Property.
    pub property: Arc<str>,
    /// Value text.
    pub value: String,
    /// Milliseconds since the epoch.
    pub ts: i64,
}

/// An outbox row.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// Per-node sequence number, increasing.
    pub seq: i64,
    /// The sample.
    pub sample: Sample,
}

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    /// Rows in the outbox: counted once at open, then kept by every append and delete (a
    /// `COUNT(*)` per metrics scrape is a full scan: 0.1–0.7 s at 10 million rows here, on the
    /// one connection the batches need).
    outbox_rows: Arc<AtomicI64>,
}

fn type_text(ty: PropertyType) -> &'static str {
    device_models::payload::type_name(ty)
}

fn type_from(s: &str) -> PropertyType {
    match s {
        "int" => PropertyType::Int,
        "float" => PropertyType::Float,
        "double" => PropertyType::Double,
        "boolean" => PropertyType::Boolean,
        "bytes" => PropertyType::Bytes,
        "stream" => PropertyType::Stream,
        _ => PropertyType::String,
    }
}

impl Store {
    /// Opens (creating if needed) the store at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(5))
            // SQLite's page cache defaults to 2 MB; appends to the outbox and the few twin rows
            // touched per batch need far less (P7 in docs/BENCHMARKS.md).
            .pragma("cache_size", "-512");
        // One connection: one writer, and SQLite serialises writers anyway.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        let store = Store {
            pool,
            outbox_rows: Arc::new(AtomicI64::new(0)),
        };
        store.migrate().await?;
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
            .fetch_one(&store.pool)
            .await?;
        store.outbox_rows.store(rows, Ordering::Relaxed);
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            .execute(&self.pool)
            .await?;
        let v: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_version")
            .fetch_one(&self.pool)
            .await?;
        let v = v.unwrap_or(0);
        let known = MIGRATIONS.len() as i64;
        if v > known {
            return Err(StoreError::TooNew { found: v, known });
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(v as usize) {
            let mut tx = self.pool.begin().await?;
            sqlx::raw_sql(*m).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO schema_version (version) VALUES (?)")
                .bind(i as i64 + 1)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// The schema version.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT MAX(version) FROM schema_version")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Stores an applied object (Device or DeviceModel JSON) under `key` with its version.
    pub async fn put_object(&self, key: &str, version: &str, body: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO objects (key, version, body) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET version = excluded.version, body = excluded.body")
            .bind(key)
            .bind(version)
            .bind(body)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Applies a batch of object changes in one transaction: `Some((version, body))` stores the
    /// key, `None` forgets it. The cloud link acknowledges them only after this returns.
    pub async fn commit_objects(
        &self,
        changes: &[(String, Option<(String, String)>)],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for (key, change) in changes {
            match change {
                Some((version, body)) => {
                    sqlx::query("INSERT INTO objects (key, version, body) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET version = excluded.version, body = excluded.body")
                        .bind(key)
                        .bind(version)
                        .bind(body)
                        .execute(&mut *tx)
                        .await?;
                }
                None => {
                    sqlx::query("DELETE FROM objects WHERE key = ?")
                        .bind(key)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes the outbox rows up to `seq` (the cloud has stored them); returns how many.
    pub async fn delete_outbox_through(&self, seq: i64) -> Result<u64, StoreError> {
        self.delete("DELETE FROM outbox WHERE seq <= ?", seq).await
    }

    /// Every stored object: key → (version, body).
    pub async fn objects(&self) -> Result<BTreeMap<String, (String, String)>, StoreError> {
        let rows = sqlx::query("SELECT key, version, body FROM objects")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.get::<String, _>(0),
                    (r.get::<String, _>(1), r.get::<String, _>(2)),
                )
            })
            .collect())
    }

    /// Applies twin writes and appends samples in one transaction; returns the sequence numbers
    /// given to the samples. Nothing is visible (or acknowledged) before the commit.
    pub async fn apply(
        &self,
        twins: &[TwinWrite],
        samples: &[Sample],
    ) -> Result<Vec<i64>, StoreError> {
        // One statement per table and side, whatever the batch size: the rows travel as one JSON
        // array bound as a single parameter and SQLite unpacks them (`json_each`) on the store's
        // worker thread. sqlx hands every bound value and every statement to that thread; binding
        // seven values a row cost the caller's thread more than SQLite's whole insert. The SQL
        // text is fixed, so each statement is prepared once and cached.
        let mut tx = self.pool.begin().await?;
        // Several writes of one (device, property, side) in a batch: SQLite upserts the rows in
        // array order, so the newest is what stays.
        for (which, sql) in [
            (Which::Desired, UPSERT_DESIRED),
            (Which::Reported, UPSERT_REPORTED),
        ] {
            let rows: Vec<_> = twins
                .iter()
                .filter(|t| t.which == which)
                .map(|t| {
                    (
                        &*t.device,
                        &*t.property,
                        type_text(t.ty),
                        t.value.value.as_str(),
                        t.value.version.cloud as i64,
                        t.value.version.edge as i64,
                        t.value.timestamp_ms,
                    )
                })
                .collect();
            if rows.is_empty() {
                continue;
            }
            sqlx::query(sql)
                .bind(json_rows(&rows)?)
                .execute(&mut *tx)
                .await?;
        }
        let mut seqs = Vec::with_capacity(samples.len());
        if !samples.is_empty() {
            let rows: Vec<_> = samples
                .iter()
                .map(|s| (&*s.device, &*s.property, s.value.as_str(), s.ts))
                .collect();
            let r = sqlx::query(APPEND_OUTBOX)
                .bind(json_rows(&rows)?)
                .execute(&mut *tx)
                .await?;
            let n = r.rows_affected() as i64;
            if n != samples.len() as i64 {
                return Err(StoreError::Batch(format!(
                    "{n} outbox rows inserted for {} samples",
                    samples.len()
                )));
            }
            // One writer, one statement, rows in array order: consecutive sequence numbers.
            let end = r.last_insert_rowid();
            seqs.extend(end - n + 1..=end);
        }
        tx.commit().await?;
        self.outbox_rows
            .fetch_add(samples.len() as i64, Ordering::Relaxed);
        Ok(seqs)
    }

    /// The twins of a device, by property.
    pub async fn twins(&self, device: &str) -> Result<BTreeMap<String, PropertyTwin>, StoreError> {
        let rows = sqlx::query(
            "SELECT property, ty, desired, desired_cloud, desired_edge, desired_ts, reported, reported_cloud, reported_edge, reported_ts FROM twins WHERE device = ?",
        )
        .bind(device)
        .fetch_all(&self.pool)
        .await?;
        let side = |r: &sqlx::sqlite::SqliteRow, i: usize| -> Option<TwinValue> {
            let value: Option<String> = r.get(i);
            value.map(|value| TwinValue {
                value,
                version: TwinVersion {
                    cloud: r.get::<Option<i64>, _>(i + 1).unwrap_or(0) as u64,
                    edge: r.get::<Option<i64>, _>(i + 2).unwrap_or(0) as u64,
                },
                timestamp_ms: r.get::<Option<i64>, _>(i + 3).unwrap_or(0),
            })
        };
        Ok(rows
            .iter()
            .map(|r| {
                let ty = type_from(&r.get::<String, _>(1));
                (
                    r.get::<String, _>(0),
                    PropertyTwin {
                        ty,
                        desired: side(r, 2),
                        reported: side(r, 6),
                    },
                )
            })
            .collect())
    }

    /// Outbox rows after `seq`, in order, at most `limit`.
    pub async fn outbox_after(&self, seq: i64, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query("SELECT seq, device, property, value, ts FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(seq)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| OutboxRow {
                seq: r.get(0),
                sample: Sample {
                    device: r.get(1),
                    property: r.get(2),
                    value: r.get(3),
                    ts: r.get(4),
                },
            })
            .collect())
    }

    /// Rows in the outbox and the timestamp of the oldest.
    pub async fn outbox_depth(&self) -> Result<(i64, Option<i64>), StoreError> {
        // The first row by sequence: samples are appended in time order, and trims and the link
        // take rows from the ends. O(log n), unlike MIN(ts) (no index on ts).
        let oldest: Option<i64> = sqlx::query_scalar("SELECT ts FROM outbox ORDER BY seq LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok((self.outbox_rows.load(Ordering::Relaxed).max(0), oldest))
    }

    /// Deletes with `query` and `bind`, and keeps the row count.
    async fn delete(&self, query: &'static str, bind: i64) -> Result<u64, StoreError> {
        let n = sqlx::query(query)
            .bind(bind)
            .execute(&self.pool)
            .await?
            .rows_affected();
        self.outbox_rows
            .fetch_sub(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed);
        Ok(n)
    }

    /// Enforces the outbox bounds: rows older than `oldest_ms`, then rows past `max_rows`, then
    /// rows until the file's used bytes fit `max_bytes`, taken from the end the policy says.
    /// Returns how many rows went for each reason.
    pub async fn trim_outbox(&self, b: &OutboxBounds) -> Result<Trimmed, StoreError> {
        let mut t = Trimmed::default();
        // Age: from the start of the sequence, a chunk at a time, while whole chunks are too old
        // (a `ts < ?` over the table is a full scan: 0.5 s at 10 million rows here).
        loop {
            let n = sqlx::query(
                "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?) AND ts < ?",
            )
            .bind(AGE_CHUNK)
            .bind(b.oldest_ms)
            .execute(&self.pool)
            .await?
            .rows_affected();
            self.outbox_rows
                .fetch_sub(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed);
            t.age += n;
            if n < AGE_CHUNK as u64 {
                break;
            }
        }
        let max_rows = i64::try_from(b.max_rows).unwrap_or(i64::MAX);
        let by_rows = match b.policy {
            OutboxPolicy::DropOldest => {
                "DELETE FROM outbox WHERE seq <= (SELECT MAX(seq) FROM outbox) - ?"
            }
            OutboxPolicy::DropNewest => {
                "DELETE FROM outbox WHERE seq >= (SELECT MIN(seq) FROM outbox) + ?"
            }
        };
        t.rows = self.delete(by_rows, max_rows).await?;
        // Bytes: drop the share of rows the file is over by (plus one), until it fits. Freed
        // pages go to SQLite's free list, which `used_bytes` does not count.
        for _ in 0..8 {
            let used = self.used_bytes().await?;
            if used <= b.max_bytes {
                break;
            }
            let (rows, _) = self.outbox_depth().await?;
            if rows == 0 {
                break;
            }
            let share = (used - b.max_bytes) as f64 / used as f64;
            let n = ((rows as f64 * share).ceil() as i64 + 1).min(rows);
            let q = match b.policy {
                OutboxPolicy::DropOldest => {
                    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)"
                }
                OutboxPolicy::DropNewest => {
                    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq DESC LIMIT ?)"
                }
            };
            t.bytes += self.delete(q, n).await?;
        }
        Ok(t)
    }

    /// Bytes of the store file holding data (pages in use, not the free list).
    pub async fn used_bytes(&self) -> Result<u64, StoreError> {
        let pragma = |name: &'static str| {
            let pool = self.pool.clone();
            async move {
                let v: i64 = sqlx::query_scalar(name).fetch_one(&pool).await?;
                Ok::<u64, StoreError>(u64::try_from(v).unwrap_or(0))
            }
        };
        let pages = pragma("PRAGMA page_count").await?;
        let free = pragma("PRAGMA freelist_count").await?;
        let size = pragma("PRAGMA page_size").await?;
        Ok(pages.saturating_sub(free) * size)
    }
}

/// Rows the age trim looks at per statement.
const AGE_CHUNK: i64 = 10_000;

/// The outbox's bounds, as [`Store::trim_outbox`] applies them.
#[derive(Debug, Clone, Copy)]
pub struct OutboxBounds {
    /// Samples older than this (ms since the epoch) are dropped.
    pub oldest_ms: i64,
    /// Most rows.
    pub max_rows: u64,
    /// Most bytes of the file in use.
    pub max_bytes: u64,
    /// Which end goes at the row and byte bounds.
    pub policy: OutboxPolicy,
}

/// Rows [`Store::trim_outbox`] dropped, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Older than `max_age_s`.
    pub age: u64,
    /// Past `max_rows`.
    pub rows: u64,
    /// Past `max_bytes`.
    pub bytes: u64,
}

impl Trimmed {
    /// All rows dropped.
    pub fn total(&self) -> u64 {
        self.age + self.rows + self.bytes
    }
}

/// Upserts of one twin side from a JSON array of
/// `[device, property, type, value, cloud version, edge version, timestamp]` rows.
/// (`WHERE true`: SQLite's documented way to write an upsert on an `INSERT … SELECT`.)
macro_rules! upsert_side {
    ($side:literal) => {
        concat!(
            "INSERT INTO twins (device, property, ty, ",
            $side,
            ", ",
            $side,
            "_cloud, ",
            $side,
            "_edge, ",
            $side,
            "_ts) ",
            "SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6 ",
            "FROM json_each(?1) WHERE true ORDER BY key ",
            "ON CONFLICT(device, property) DO UPDATE SET ty = excluded.ty, ",
            $side,
            " = excluded.",
            $side,
            ", ",
            $side,
            "_cloud = excluded.",
            $side,
            "_cloud, ",
            $side,
            "_edge = excluded.",
            $side,
            "_edge, ",
            $side,
            "_ts = excluded.",
            $side,
            "_ts"
        )
    };
}
const UPSERT_DESIRED: &str = upsert_side!("desired");
const UPSERT_REPORTED: &str = upsert_side!("reported");

/// Outbox rows from a JSON array of `[device, property, value, ts]`, in array order.
const APPEND_OUTBOX: &str = "INSERT INTO outbox (device, property, value, ts) \
     SELECT value->>0, value->>1, value->>2, value->>3 FROM json_each(?1) ORDER BY key";

/// Rows as one JSON array, for the statements above.
fn json_rows(rows: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(rows).map_err(|e| StoreError::Batch(format!("batch to JSON: {e}")))
}

#[cfg(test)]
mod tests {

    use super::*;

    fn tv(v: &str, edge: u64) -> TwinValue {
        TwinValue {
            value: v.into(),
            version: TwinVersion { cloud: 0, edge },
            timestamp_ms: 5,
        }
    }

    #[tokio::test]
    async fn twins_and_outbox_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ballast.db");
        {
            let s = Store::open(&path).await.unwrap();
            assert_eq!(s.schema_version().await.unwrap(), MIGRATIONS.len() as i64);
            let twins = [
                TwinWrite {
                    device: "rig7/p".into(),
                    property: "speed".into(),
                    ty: PropertyType::Int,
                    which: Which::Reported,
                    value: tv("1500", 3),
                },
                TwinWrite {
                    device: "rig7/p".into(),
                    property: "speed".into(),
                    ty: PropertyType::Int,
                    which: Which::Desired,
                    value: tv("1600", 1),
                },
            ];
            let samples: Vec<Sample> = (0..3)
                .map(|i| Sample {
                    device: "rig7/p".into(),
                    property: "speed".into(),
                    value: format!("{i}"),
                    ts: i,
                })
                .collect();
            let seqs = s.apply(&twins, &samples).await.unwrap();
            assert_eq!(seqs, [1, 2, 3]);
            s.put_object("Device/rig7/p", "17", "{}").await.unwrap();
        }
        let s = Store::open(&path).await.unwrap();
        let t = s.twins("rig7/p").await.unwrap();
        assert_eq!(t["speed"].reported, Some(tv("1500", 3)));
        assert_eq!(t["speed"].desired, Some(tv("1600", 1)));
        assert_eq!(t["speed"].delta(), Some("1600"));
        let rows = s.outbox_after(1, 10).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(s.objects().await.unwrap()["Device/rig7/p"].0, "17");
        // Sequence numbers keep rising after a reopen.
        let seqs = s
            .apply(
                &[],
                &[Sample {
                    device: "d".into(),
                    property: "p".into(),
                    value: "x".into(),
                    ts: 9,
                }],
            )
            .await
            .unwrap();
        assert_eq!(seqs, [4]);
    }

    #[tokio::test]
    async fn a_large_batch_of_awkward_values_goes_in_as_written_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("b.db")).await.unwrap();
        // Text that JSON must escape, or that SQLite's JSON functions could take for something
        // else: quotes, backslashes, control characters, non-ASCII, JSON-looking text, numbers.
        let awkward = [
            r#"say "hi""#,
            r"C:\path\n",
            "line\nbreak\ttab\u{1}",
            "Öl 300 °C ✓ 🛢",
            r#"{"not":"an object"}"#,
            "[1,2]",
            "null",
            "007",
            "1e3",
            "",
        ];
        let samples: Vec<Sample> = (0..10_000)
            .map(|i| Sample {
                device: format!("rig7/d{}", i % 7).into(),
                property: awkward[i % awkward.len()].to_string().into(),
                value: awkward[(i + 3) % awkward.len()].to_string(),
                ts: i as i64 - 5,
            })
            .collect();
        let twins: Vec<TwinWrite> = awkward
            .iter()
            .enumerate()
            .map(|(i, v)| TwinWrite {
                device: "rig7/d0".into(),
                property: v.to_string().into(),
                ty: PropertyType::String,
                which: if i % 2 == 0 {
                    Which::Reported
                } else {
                    Which::Desired
                },
                value: TwinValue {
                    value: awkward[(i + 1) % awkward.len()].to_string(),
                    version: TwinVersion {
                        cloud: u64::from(i as u32),
                        edge: 1 << 40,
                    },
                    timestamp_ms: -(i as i64),
                },
            })
            .collect();
        let seqs = s.apply(&twins, &samples).await.unwrap();
        assert_eq!(seqs, (1..=10_000).collect::<Vec<i64>>());
        let rows = s.outbox_after(0, 20_000).await.unwrap();
        let back: Vec<Sample> = rows.iter().map(|r| r.sample.clone()).collect();
        assert_eq!(back, samples);
        let t = s.twins("rig7/d0").await.unwrap();
        for w in &twins {
            let side = match w.which {
                Which::Reported => &t[&*w.property].reported,
                Which::Desired => &t[&*w.property].desired,
            };
            assert_eq!(side.as_ref(), Some(&w.value), "{}", w.property);
        }
        // Two writes of one twin in a batch: the later one stays.
        let mut twice = vec![twins[0].clone(), twins[0].clone()];
        twice[0].value.value = "older".into();
        twice[1].value.value = "newer".into();
        s.apply(&twice, &[]).await.unwrap();
        let t = s.twins("rig7/d0").await.unwrap();
        assert_eq!(
            t[&*twins[0].property].reported.as_ref().unwrap().value,
            "newer"
        );
        // The next batch follows on.
        assert_eq!(s.apply(&[], &samples[..2]).await.unwrap(), [10_001, 10_002]);
        assert!(s.apply(&[], &[]).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn outbox_bounds_drop_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("b.db")).await.unwrap();
        s.apply(&[], &samples(0..10, 1)).await.unwrap();
        let bounds = |oldest_ms, max_rows| OutboxBounds {
            oldest_ms,
            max_rows,
            max_bytes: u64::MAX,
            policy: OutboxPolicy::DropOldest,
        };
        let t = s.trim_outbox(&bounds(2000, 100)).await.unwrap();
        assert_eq!((t.age, t.rows, t.bytes), (2, 0, 0));
        assert_eq!(s.trim_outbox(&bounds(0, 5)).await.unwrap().rows, 3);
        let (n, oldest) = s.outbox_depth().await.unwrap();
        assert_eq!((n, oldest), (5, Some(5000)));
        // The depth is kept in memory: it agrees with the table, and after a reopen.
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
            .fetch_one(&s.pool)
            .await
            .unwrap();
        assert_eq!(count, 5);
        drop(s);
        let s = Store::open(&dir.path().join("b.db")).await.unwrap();
        assert_eq!(s.outbox_depth().await.unwrap(), (5, Some(5000)));
    }

    #[tokio::test]
    async fn the_age_bound_takes_whole_chunks_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("age.db")).await.unwrap();
        // 25,000 samples, one a second: more than two chunks are older than the bound.
        s.apply(&[], &samples(0..25_000, 1)).await.unwrap();
        let b = OutboxBounds {
            oldest_ms: 22_500 * 1000,
            max_rows: u64::MAX,
            max_bytes: u64::MAX,
            policy: OutboxPolicy::DropOldest,
        };
        assert_eq!(s.trim_outbox(&b).await.unwrap().age, 22_500);
        assert_eq!(
            s.outbox_depth().await.unwrap(),
            (2_500, Some(22_500 * 1000))
        );
    }

    fn samples(ts: std::ops::Range<i64>, bytes: usize) -> Vec<Sample> {
        ts.map(|i| Sample {
            device: "d".into(),
            property: "p".into(),
            value: "v".repeat(bytes),
            ts: i * 1000,
        })
        .collect()
    }

    #[tokio::test]
    async fn drop_newest_keeps_the_start_of_an_outage() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("n.db")).await.unwrap();
        s.apply(&[], &samples(0..10, 1)).await.unwrap();
        let b = OutboxBounds {
            oldest_ms: 0,
            max_rows: 4,
            max_bytes: u64::MAX,
            policy: OutboxPolicy::DropNewest,
        };
        assert_eq!(s.trim_outbox(&b).await.unwrap().rows, 6);
        let seqs: Vec<i64> = s
            .outbox_after(0, 100)
            .await
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
        // The numbers of the dropped samples are never given again, not even after a reopen or
        // when every row is gone: the cloud deduplicates by (node, seq).
        assert_eq!(s.apply(&[], &samples(10..12, 1)).await.unwrap(), [11, 12]);
        drop(s);
        let s = Store::open(&dir.path().join("n.db")).await.unwrap();
        let all = OutboxBounds {
            oldest_ms: i64::MAX,
            max_rows: u64::MAX,
            max_bytes: u64::MAX,
            policy: OutboxPolicy::DropOldest,
        };
        assert_eq!(s.trim_outbox(&all).await.unwrap().age, 6);
        assert_eq!(s.outbox_depth().await.unwrap().0, 0);
        assert_eq!(s.apply(&[], &samples(12..13, 1)).await.unwrap(), [13]);
    }

    #[tokio::test]
    async fn a_version_1_store_is_migrated_with_its_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            // A store as the first schema left it, with three samples.
            let opts = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true);
            let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
            sqlx::raw_sql(MIGRATIONS[0]).execute(&pool).await.unwrap();
            sqlx::raw_sql(
                "CREATE TABLE schema_version (version INTEGER NOT NULL);
                 INSERT INTO schema_version VALUES (1);
                 INSERT INTO outbox (seq, device, property, value, ts) VALUES
                    (7, 'd', 'p', 'a', 1), (8, 'd', 'p', 'b', 2), (9, 'd', 'p', 'c', 3);",
            )
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
        }
        let s = Store::open(&path).await.unwrap();
        assert_eq!(s.schema_version().await.unwrap(), MIGRATIONS.len() as i64);
        let rows = s.outbox_after(0, 10).await.unwrap();
        let got: Vec<(i64, &str)> = rows
            .iter()
            .map(|r| (r.seq, r.sample.value.as_str()))
            .collect();
        assert_eq!(got, [(7, "a"), (8, "b"), (9, "c")]);
        assert_eq!(s.outbox_depth().await.unwrap().0, 3);
        assert_eq!(s.apply(&[], &samples(4..5, 1)).await.unwrap(), [10]);
    }

    #[tokio::test]
    async fn the_byte_bound_trims_until_the_file_fits() {
        for policy in [OutboxPolicy::DropOldest, OutboxPolicy::DropNewest] {
            let dir = tempfile::tempdir().unwrap();
            let s = Store::open(&dir.path().join("bytes.db")).await.unwrap();
            // 2,000 samples of 1 KB: about 2 MB of pages.
            s.apply(&[], &samples(0..2000, 1000)).await.unwrap();
            let before = s.used_bytes().await.unwrap();
            assert!(before > 2_000_000, "{before}");
            let b = OutboxBounds {
                oldest_ms: 0,
                max_rows: u64::MAX,
                max_bytes: 1_000_000,
                policy,
            };
            let t = s.trim_outbox(&b).await.unwrap();
            let after = s.used_bytes().await.unwrap();
            assert!(after <= 1_000_000, "{policy:?}: {after} bytes in use");
            let rows = s.outbox_after(0, 10_000).await.unwrap();
            assert!(
                t.bytes > 900 && !rows.is_empty(),
                "{policy:?}: dropped {}",
                t.bytes
            );
            assert_eq!(rows.len() as u64 + t.bytes, 2000);
            // The rows kept are one contiguous end of the sequence.
            let (first, last) = (rows[0].seq, rows[rows.len() - 1].seq);
            assert_eq!(last - first + 1, rows.len() as i64);
            match policy {
                OutboxPolicy::DropOldest => assert_eq!(last, 2000),
                OutboxPolicy::DropNewest => assert_eq!(first, 1),
            }
        }
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.db");
        let s = Store::open(&path).await.unwrap();
        sqlx::query("INSERT INTO schema_version (version) VALUES (99)")
            .execute(&s.pool)
            .await
            .unwrap();
        drop(s);
        assert!(matches!(
            Store::open(&path).await,
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }
}
