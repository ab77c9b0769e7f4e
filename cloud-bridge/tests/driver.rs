//! Both ends driven over real TCP connections on 127.0.0.1:0: objects down, reports and
//! telemetry up, then the connection dropped and a second session that sends only what
//! changed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloud_bridge::driver::memory::MemoryHub;
use cloud_bridge::driver::{self, Change, EdgeStore, SessionEnd, StoreFailure};
use cloud_bridge::proto::Object;
use cloud_bridge::proto::edge::Edge;
use cloud_bridge::proto::hub::HubConfig;
use cloud_bridge::proto::msg::{Report, TelemetrySample, Token};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

#[derive(Default)]
struct Site {
    objects: BTreeMap<String, (String, String)>,
    outbox: BTreeMap<u64, TelemetrySample>,
    /// Object changes committed, per commit.
    commits: Vec<usize>,
}

/// The edge's store in memory, shared with the test.
#[derive(Clone, Default)]
struct Store(Arc<Mutex<Site>>);

impl EdgeStore for Store {
    async fn commit(
        &mut self,
        changes: Vec<(String, Option<(String, String)>)>,
    ) -> Result<(), StoreFailure> {
        let mut s = self.0.lock().unwrap();
        s.commits.push(changes.len());
        for (k, v) in changes {
            match v {
                Some(v) => s.objects.insert(k, v),
                None => s.objects.remove(&k),
            };
        }
        Ok(())
    }
    async fn outbox_after(
        &mut self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<TelemetrySample>, StoreFailure> {
        let s = self.0.lock().unwrap();
        Ok(s.outbox
            .range(after + 1..)
            .take(limit)
            .map(|(_, v)| v.clone())
            .collect())
    }
    async fn outbox_delete_through(&mut self, seq: u64) -> Result<(), StoreFailure> {
        let mut s = self.0.lock().unwrap();
        s.outbox = s.outbox.split_off(&(seq + 1));
        Ok(())
    }
}

/// A hub that knows node rig7 and its token.
fn hub() -> Arc<MemoryHub> {
    let hub = Arc::new(MemoryHub::default());
    hub.state()
        .tokens
        .insert("rig7".into(), "rig7-token".into());
    hub
}

fn object(v: u32) -> Object {
    Object {
        version: v.to_string(),
        body: format!(r#"{{"spec":{{"v":{v}}}}}"#),
    }
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_over_tcp_sync_objects_reports_and_telemetry() {
    let backend = hub();
    {
        let mut c = backend.state();
        for i in 0..50 {
            c.objects
                .entry("rig7".into())
                .or_default()
                .insert(format!("Device/rig7/dev-{i}"), object(1));
        }
    }
    let (changes_tx, _) = broadcast::channel::<Change>(1024);
    let (stop_hub, hub_stop) = watch::channel(false);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hub = {
        let (backend, changes_tx) = (backend.clone(), changes_tx.clone());
        tokio::spawn(async move {
            loop {
                let (conn, _) = listener.accept().await.unwrap();
                let (backend, rx, mut stop) =
                    (backend.clone(), changes_tx.subscribe(), hub_stop.clone());
                tokio::spawn(async move {
                    driver::hub_session(conn, HubConfig::default(), backend, rx, &mut stop).await
                });
            }
        })
    };

    let store = Store::default();
    {
        let mut s = store.0.lock().unwrap();
        for seq in 1..=2_000u64 {
            s.outbox.insert(
                seq,
                TelemetrySample {
                    seq,
                    device: "rig7/dev-1".into(),
                    property: "pressure".into(),
                    value: format!("{seq}"),
                    ts: seq as i64,
                },
            );
        }
    }
    let mut edge = Edge::new(
        "rig7",
        Token("rig7-token".into()),
        [],
        std::time::Instant::now(),
    );
    let (report_tx, mut reports) = mpsc::channel(16);
    report_tx
        .send(Report {
            device: "rig7/dev-2".into(),
            property: Some("speed".into()),
            value: "1500".into(),
            ts: 1,
        })
        .await
        .unwrap();

    // Session 1: everything the node owns comes down, the outbox and the report go up.
    let (stop_edge, mut edge_stop) = watch::channel(false);
    let conn = TcpStream::connect(addr).await.unwrap();
    let mut edge_store = store.clone();
    let session = tokio::spawn(async move {
        let end = driver::edge_session(
            conn,
            &mut edge,
            &mut edge_store,
            &mut reports,
            &mut edge_stop,
        )
        .await;
        (end, edge, edge_store, reports, edge_stop)
    });
    wait_until("first sync, telemetry and report", || {
        let (s, c) = (store.0.lock().unwrap(), backend.state());
        s.objects.len() == 50
            && s.outbox.is_empty()
            && c.telemetry.len() == 2_000
            && c.status.len() == 1
    })
    .await;
    assert_eq!(
        backend.state().status[&(
            "rig7".to_string(),
            "rig7/dev-2".to_string(),
            Some("speed".to_string())
        )],
        "1500"
    );
    stop_edge.send(true).unwrap();
    let (end, mut edge, mut edge_store, mut reports, _) = session.await.unwrap();
    assert!(matches!(end, SessionEnd::Shutdown), "{end:?}");

    // While the edge is away: one object changes, one is added, one is deleted.
    {
        let mut c = backend.state();
        let objects = c.objects.get_mut("rig7").unwrap();
        objects.insert("Device/rig7/dev-7".into(), object(2));
        objects.insert("Device/rig7/dev-new".into(), object(1));
        objects.remove("Device/rig7/dev-9");
    }
    let commits_before = store.0.lock().unwrap().commits.len();

    // Session 2: only those three changes come down; a live change follows.
    let (_stop_edge, mut edge_stop) = watch::channel(false);
    let conn = TcpStream::connect(addr).await.unwrap();
    let session = tokio::spawn(async move {
        driver::edge_session(
            conn,
            &mut edge,
            &mut edge_store,
            &mut reports,
            &mut edge_stop,
        )
        .await
    });
    wait_until("resync after the outage", || {
        let s = store.0.lock().unwrap();
        s.objects.get("Device/rig7/dev-7").map(|o| o.0.as_str()) == Some("2")
            && s.objects.contains_key("Device/rig7/dev-new")
            && !s.objects.contains_key("Device/rig7/dev-9")
    })
    .await;
    let changed: usize = store.0.lock().unwrap().commits[commits_before..]
        .iter()
        .sum();
    assert_eq!(changed, 3, "only the differences were sent");
    backend
        .state()
        .objects
        .get_mut("rig7")
        .unwrap()
        .insert("Device/rig7/dev-3".into(), object(5));
    changes_tx
        .send(("rig7".into(), "Device/rig7/dev-3".into(), Some(object(5))))
        .unwrap();
    wait_until("a live change", || {
        store.0.lock().unwrap().objects["Device/rig7/dev-3"].0 == "5"
    })
    .await;
    let s = store.0.lock().unwrap();
    let c = backend.state();
    let want: BTreeMap<String, (String, String)> = c.objects["rig7"]
        .iter()
        .map(|(k, o)| (k.clone(), (o.version.clone(), o.body.clone())))
        .collect();
    assert_eq!(s.objects, want);
    drop((s, c));
    stop_hub.send(true).unwrap();
    session.abort();
    hub.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_end_the_session_with_a_refusal_and_nothing_stored() {
    let backend = hub();
    backend
        .state()
        .objects
        .entry("rig7".into())
        .or_default()
        .insert("Device/rig7/dev-1".into(), object(1));
    let (changes_tx, _) = broadcast::channel::<Change>(16);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hub = {
        let backend = backend.clone();
        tokio::spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            let (_stop, mut stop) = watch::channel(false);
            driver::hub_session(
                conn,
                HubConfig::default(),
                backend,
                changes_tx.subscribe(),
                &mut stop,
            )
            .await
        })
    };
    let mut edge = Edge::new("rig7", Token("guess".into()), [], std::time::Instant::now());
    let mut store = Store::default();
    let (_tx, mut reports) = mpsc::channel(1);
    let (_stop, mut stop) = watch::channel(false);
    let conn = TcpStream::connect(addr).await.unwrap();
    let end = tokio::time::timeout(
        Duration::from_secs(20),
        driver::edge_session(conn, &mut edge, &mut store, &mut reports, &mut stop),
    )
    .await
    .expect("the session never ended");
    assert!(
        matches!(
            &end,
            SessionEnd::Closed(cloud_bridge::proto::CloseReason::Refused(_))
        ),
        "{end:?}"
    );
    assert!(matches!(hub.await.unwrap(), SessionEnd::Closed(_)));
    assert!(store.0.lock().unwrap().objects.is_empty());
}
