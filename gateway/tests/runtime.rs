//! The gateway runtime in-process: a real SQLite file, the real embedded broker on port 0, and
//! the simulators; restart from the store alone.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

use std::path::Path;
use std::time::{Duration, Instant};

use gateway::config::Config;

fn platform() -> device_models::DeviceSet {
    device_models::check_path(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../device-models/examples/oil-platform"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_from_its_store_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config {
        data_dir: dir.path().to_path_buf(),
        node_name: "rig7-edge".into(),
        ..Config::default()
    };
    cfg.broker.listen = "127.0.0.1:0".parse().unwrap();
    let set = platform();
    let gw = gateway::runtime::start(&cfg, set.devices.clone())
        .await
        .unwrap();
    // The desired values of the files are stored before anything else happens.
    let deadline = Instant::now() + Duration::from_secs(10);
    let store = gateway::store::Store::open(&cfg.db_path()).await.unwrap();
    loop {
        let t = store.twins("rig7/pump-p201").await.unwrap();
        if t.get("speed-setpoint")
            .and_then(|t| t.desired.as_ref())
            .is_some()
        {
            assert_eq!(t["speed-setpoint"].desired.as_ref().unwrap().value, "2400");
            break;
        }
        assert!(Instant::now() < deadline, "desired values never stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = gw.shutdown.send(true);
    let _ = gw.task.await;
    // No devices directory, no cloud: the store alone gives back every device and model.
    let again = gateway::runtime::stored_devices(&cfg.db_path())
        .await
        .unwrap();
    assert_eq!(again.errors(), 0, "{:?}", again.diagnostics);
    let ids: Vec<&str> = again.devices.iter().map(|d| d.id.as_str()).collect();
    let want: Vec<&str> = set.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, want);
    let pump = again
        .devices
        .iter()
        .find(|d| d.id == "rig7/pump-p201")
        .unwrap();
    let sp = pump
        .properties
        .iter()
        .find(|p| p.name == "speed-setpoint")
        .unwrap();
    assert_eq!(sp.desired, Some(device_models::Value::Int(2400)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_healthz() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    cfg.broker.listen = "127.0.0.1:0".parse().unwrap();
    cfg.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    // The devices point at addresses where nothing answers: they go offline, which the metrics say.
    let gw = gateway::runtime::start(&cfg, platform().devices)
        .await
        .unwrap();
    let addr = gw.metrics.unwrap();
    let get = |path: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).await.unwrap();
        body
    };
    assert!(get("/healthz").await.ends_with("ok\n"));
    assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = get("/metrics").await;
        assert!(m.contains("# TYPE ballast_readings_total counter"), "{m}");
        assert!(m.contains("ballast_outbox_depth_rows "), "{m}");
        assert!(
            m.contains("ballast_mapper_errors_link_total{device=\"rig7/wellhead-a07\"}"),
            "{m}"
        );
        if m.contains("ballast_device_state{device=\"rig7/wellhead-a07\",state=\"offline\"} 1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "wellhead never reported offline: {m}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = gw.shutdown.send(true);
}
