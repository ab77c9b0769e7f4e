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
