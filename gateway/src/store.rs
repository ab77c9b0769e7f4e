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
];

/// One change to a twin value.
#[derive(Debug, Clone, PartialEq)]
pub struct TwinWrite {
    /// Device id.
    pub device: String,
    /// Property.
    pub property: String,
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
    /// Device id.
    pub device: String,
    /// Property.
    pub property: String,
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
        // Multi-row statements: one statement per chunk, not per row (sqlx runs each statement
        // through its SQLite worker thread, which costs far more than SQLite itself). Chunks have
        // a few fixed sizes (`pow2_chunks`), so the statements are prepared once and cached
        // instead of parsed for every batch (the parse was an eighth of P4's time).
        const TWIN_ROWS: usize = 128;
        const SAMPLE_ROWS: usize = 256;
        let mut tx = self.pool.begin().await?;
        // Only the newest write of a (device, property, side) in a batch matters.
        let mut last: BTreeMap<(&str, &str, bool), &TwinWrite> = BTreeMap::new();
        for t in twins {
            last.insert((&t.device, &t.property, t.which == Which::Desired), t);
        }
        for which in [Which::Desired, Which::Reported] {
            let rows: Vec<&TwinWrite> = last
                .values()
                .copied()
                .filter(|t| t.which == which)
                .collect();
            let side = if which == Which::Desired {
                "desired"
            } else {
                "reported"
            };
            for chunk in pow2_chunks(&rows, TWIN_ROWS) {
                let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(format!(
                    "INSERT INTO twins (device, property, ty, {side}, {side}_cloud, {side}_edge, {side}_ts) "
                ));
                q.push_values(chunk, |mut b, t| {
                    b.push_bind(t.device.as_str())
                        .push_bind(t.property.as_str())
                        .push_bind(type_text(t.ty))
                        .push_bind(t.value.value.as_str())
                        .push_bind(t.value.version.cloud as i64)
                        .push_bind(t.value.version.edge as i64)
                        .push_bind(t.value.timestamp_ms);
                });
                q.push(format!(
                    " ON CONFLICT(device, property) DO UPDATE SET ty = excluded.ty, {side} = excluded.{side}, \
                     {side}_cloud = excluded.{side}_cloud, {side}_edge = excluded.{side}_edge, {side}_ts = excluded.{side}_ts"
                ));
                q.build().execute(&mut *tx).await?;
            }
        }
        let mut seqs = Vec::with_capacity(samples.len());
        let mut appended = 0i64;
        for chunk in pow2_chunks(samples, SAMPLE_ROWS) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO outbox (device, property, value, ts) ",
            );
            q.push_values(chunk, |mut b, s| {
                b.push_bind(s.device.as_str())
                    .push_bind(s.property.as_str())
                    .push_bind(s.value.as_str())
                    .push_bind(s.ts);
            });
            let r = q.build().execute(&mut *tx).await?;
            appended += chunk.len() as i64;
            // One writer, one statement: the rows got consecutive sequence numbers.
            let end = r.last_insert_rowid();
            let first = end - chunk.len() as i64 + 1;
            seqs.extend(first..=end);
        }
        tx.commit().await?;
        self.outbox_rows.fetch_add(appended, Ordering::Relaxed);
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

/// `rows` cut into chunks of `max` (a power of two), then of the powers of two that make up the
/// rest: 300 rows with `max` 128 are 128, 128, 32, 8, 4. A multi-row statement exists for at most
/// log2(max) + 1 sizes, so every one of them stays in the statement cache.
fn pow2_chunks<T>(rows: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = if rest.len() >= max {
            max
        } else {
            1 << rest.len().ilog2()
        };
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn chunks_have_few_sizes_and_cover_every_row() {
        let rows: Vec<u32> = (0..300).collect();
        let sizes: Vec<usize> = pow2_chunks(&rows, 128).map(<[u32]>::len).collect();
        assert_eq!(sizes, [128, 128, 32, 8, 4]);
        let back: Vec<u32> = pow2_chunks(&rows, 128).flatten().copied().collect();
        assert_eq!(back, rows);
        assert_eq!(pow2_chunks(&rows[..1], 128).count(), 1);
        assert_eq!(pow2_chunks(&rows[..0], 128).count(), 0);
        let mut seen = std::collections::BTreeSet::new();
        for n in 0..1000 {
            seen.extend(pow2_chunks(&rows.repeat(4)[..n], 256).map(<[u32]>::len));
        }
        assert_eq!(seen.len(), 9, "{seen:?}");
    }
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
            assert_eq!(s.schema_version().await.unwrap(), 1);
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
