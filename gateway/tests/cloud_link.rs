//! The gateway's SQLite store behind the cloud link's edge driver, against a hub session over
//! TCP on 127.0.0.1:0: objects land in the store before they are acknowledged, the outbox
//! drains to the hub's sink and is emptied, and an edge restarted from the store alone is
//! sent nothing it already has.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

use std::sync::Arc;
use std::time::Duration;

use cloud_bridge::driver::memory::MemoryHub;
use cloud_bridge::driver::{self, Change, SessionEnd};
use cloud_bridge::proto::Object;
use cloud_bridge::proto::edge::Edge;
use cloud_bridge::proto::hub::HubConfig;
use cloud_bridge::proto::msg::Token;
use gateway::store::{Sample, Store};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A hub on loopback serving every connection; returns its address.
async fn hub(backend: Arc<MemoryHub>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (changes, _) = broadcast::channel::<Change>(64);
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let (backend, rx) = (backend.clone(), changes.subscribe());
            tokio::spawn(async move {
                let (_stop, mut stop) = watch::channel(false);
                driver::hub_session(conn, HubConfig::default(), backend, rx, &mut stop).await
            });
        }
    });
    addr
}

async fn edge_from(store: &Store) -> Edge {
    let held = store
        .objects()
        .await
        .unwrap()
        .into_iter()
        .map(|(k, (v, _))| (k, v));
    Edge::new(
        "rig7",
        Token("rig7-token".into()),
        held,
        std::time::Instant::now(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_behind_the_edge_driver() {
    let backend = Arc::new(MemoryHub::default());
    {
        let mut s = backend.state();
        s.tokens.insert("rig7".into(), "rig7-token".into());
        let objects = s.objects.entry("rig7".into()).or_default();
        for i in 0..20 {
            objects.insert(
                format!("Device/rig7/dev-{i}"),
                Object {
                    version: "4".into(),
                    body: format!(r#"{{"metadata":{{"name":"dev-{i}"}}}}"#),
                },
            );
        }
    }
    let addr = hub(backend.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ballast.db");
    let store = Store::open(&path).await.unwrap();
    let samples: Vec<Sample> = (0..1_500)
        .map(|i| Sample {
            device: "rig7/dev-1".into(),
            property: "pressure".into(),
            value: format!("{i}.25"),
            ts: i,
        })
        .collect();
    store.apply(&[], &samples).await.unwrap();

    let mut edge = edge_from(&store).await;
    let (_tx, mut reports) = mpsc::channel(1);
    let (stop_tx, mut stop) = watch::channel(false);
    let conn = TcpStream::connect(addr).await.unwrap();
    let mut edge_store = Store::open(&path).await.unwrap();
    let session = tokio::spawn(async move {
        driver::edge_session(conn, &mut edge, &mut edge_store, &mut reports, &mut stop).await
    });
    wait_until("objects stored and the outbox drained", || {
        let (store, backend) = (&store, &backend);
        async move {
            store.objects().await.unwrap().len() == 20
                && store.outbox_after(0, 10).await.unwrap().is_empty()
                && backend.state().telemetry.len() == 1_500
        }
    })
    .await;
    let sink = backend.state().telemetry.clone();
    let values: Vec<&str> = sink.values().map(|s| s.value.as_str()).collect();
    let want: Vec<String> = (0..1_500).map(|i| format!("{i}.25")).collect();
    assert_eq!(values, want);
    assert_eq!(store.objects().await.unwrap()["Device/rig7/dev-3"].0, "4");
    stop_tx.send(true).unwrap();
    assert!(matches!(session.await.unwrap(), SessionEnd::Shutdown));

    // A restart: the store alone says what the edge has; the hub sends nothing again, and new
    // samples continue the sequence.
    drop(store);
    let mut store = Store::open(&path).await.unwrap();
    // A marker the hub would overwrite if it sent the object again (same version: it must not).
    store
        .put_object("Device/rig7/dev-3", "4", r#"{"marker":true}"#)
        .await
        .unwrap();
    let seqs = store.apply(&[], &samples[..2]).await.unwrap();
    assert_eq!(seqs, [1_501, 1_502]);
    let mut edge = edge_from(&store).await;
    assert_eq!(edge.held().len(), 20);
    let (_tx, mut reports) = mpsc::channel(1);
    let (_stop_tx, mut stop) = watch::channel(false);
    let conn = TcpStream::connect(addr).await.unwrap();
    let session = tokio::spawn(async move {
        let end = driver::edge_session(conn, &mut edge, &mut store, &mut reports, &mut stop).await;
        (end, store)
    });
    wait_until("the new samples stored at the hub", || {
        let backend = &backend;
        async move { backend.state().telemetry.len() == 1_502 }
    })
    .await;
    session.abort();
    let store = Store::open(&path).await.unwrap();
    // Nothing came down twice.
    let objects = store.objects().await.unwrap();
    assert_eq!(objects.len(), 20);
    assert_eq!(objects["Device/rig7/dev-3"].1, r#"{"marker":true}"#);
}
