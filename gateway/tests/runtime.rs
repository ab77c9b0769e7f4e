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

/// A gateway config on `dir`: broker on a free loopback port, no metrics listener (a test that
/// wants one sets port 0).
fn config(dir: &Path) -> Config {
    let mut cfg = Config {
        data_dir: dir.to_path_buf(),
        node_name: "rig7-edge".into(),
        ..Config::default()
    };
    cfg.broker.listen = "127.0.0.1:0".parse().unwrap();
    cfg.metrics.listen = None;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_from_its_store_alone() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
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

/// `GET path` on the gateway's metrics listener: the whole response.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    // The devices point at addresses where nothing answers: they go offline, which the metrics say.
    let gw = gateway::runtime::start(&cfg, platform().devices)
        .await
        .unwrap();
    let addr = gw.metrics.unwrap();
    let get = |path: &'static str| http_get(addr, path);
    assert!(get("/healthz").await.ends_with("ok\n"));
    assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = get("/metrics").await;
        assert!(m.contains("# TYPE ballast_readings_total counter"), "{m}");
        assert!(m.contains("ballast_outbox_depth_rows "), "{m}");
        // The six devices of the platform started, no reload yet.
        assert!(m.contains("ballast_mapper_starts_total 6"), "{m}");
        assert!(m.contains("ballast_reloads_total 0"), "{m}");
        assert!(m.contains("ballast_mapper_reconfigures_total 0"), "{m}");
        assert!(m.contains("ballast_broker_clients "), "{m}");
        assert!(
            m.contains("ballast_cloud_link_state{state=\"not_configured\"} 1"),
            "{m}"
        );
        assert!(
            m.contains("ballast_broker_tls_handshake_failures_total 0"),
            "{m}"
        );
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

/// A gateway that restarts on an outbox over its bounds trims it at once, by the configured
/// policy, and says so in `ballast_outbox_dropped_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_bounds_apply_at_start_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.outbox.max_rows = 10;
    cfg.outbox.policy = gateway::config::OutboxPolicy::DropNewest;
    {
        let store = gateway::store::Store::open(&cfg.db_path()).await.unwrap();
        let now = mappers::now_ms();
        let samples: Vec<gateway::store::Sample> = (0..50)
            .map(|i| gateway::store::Sample {
                device: "rig7/pump-p201".into(),
                property: "speed".into(),
                value: i.to_string(),
                ts: now + i,
            })
            .collect();
        store.apply(&[], &samples).await.unwrap();
    }
    let gw = gateway::runtime::start(&cfg, Vec::new()).await.unwrap();
    let addr = gw.metrics.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = http_get(addr, "/metrics").await;
        assert!(
            m.contains("ballast_outbox_dropped_total{reason=\"age\"} 0"),
            "{m}"
        );
        if m.contains("ballast_outbox_dropped_total{reason=\"rows\"} 40") {
            assert!(m.contains("ballast_outbox_depth_rows 10"), "{m}");
            break;
        }
        assert!(Instant::now() < deadline, "no trim counted: {m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = gw.shutdown.send(true);
    let _ = gw.task.await;
    // drop_newest: the first ten samples are the ones kept.
    let store = gateway::store::Store::open(&cfg.db_path()).await.unwrap();
    let kept: Vec<String> = store
        .outbox_after(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.sample.value)
        .collect();
    assert_eq!(kept, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_restarts_only_what_changed() {
    use device_models::protocol::modbus::ModbusTransport;
    use device_models::protocol::{DeviceProtocol, PropertyVisitor};
    use std::sync::atomic::Ordering;
    let set = platform();
    let ep = simulators::modbus_endpoint(&set.devices, simulators::Line::Tcp, 1).unwrap();
    let sim = simulators::modbus::tcp::spawn("127.0.0.1:0".parse().unwrap(), ep.clone())
        .await
        .unwrap();
    let _tick = simulators::AbortOnDrop(simulators::spawn_ticker(
        vec![ep],
        Duration::from_millis(20),
    ));
    let mut devices: Vec<_> = set
        .devices
        .into_iter()
        .filter(|d| d.id == "rig7/wellhead-a07" || d.id == "rig7/pump-p201")
        .collect();
    for d in &mut devices {
        if let DeviceProtocol::Modbus(m) = &mut d.protocol {
            m.transport = ModbusTransport::Tcp {
                host: "127.0.0.1".into(),
                port: sim.addr.port(),
            };
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let gw = gateway::runtime::start(&cfg, devices.clone())
        .await
        .unwrap();
    let reported = |view: &tokio::sync::watch::Receiver<
        std::collections::BTreeMap<
            String,
            std::collections::BTreeMap<String, device_models::twin::PropertyTwin>,
        >,
    >,
                    dev: &str,
                    prop: &str| {
        view.borrow()
            .get(dev)
            .and_then(|t| t.get(prop))
            .and_then(|t| t.reported.clone())
    };
    // The pump runs (desired from its file) and draws current: 8 A and up, in 0.1 A steps.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !reported(&gw.view, "rig7/pump-p201", "motor-current")
        .is_some_and(|v| v.value.parse::<f64>().unwrap_or(0.0) > 8.0)
    {
        assert!(Instant::now() < deadline, "pump never drew current");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let starts = gw.stats.mapper_starts.load(Ordering::Relaxed);
    let conns = simulators::modbus::Stats::get(&sim.endpoint.stats.connections);
    assert_eq!((starts, conns), (2, 1));
    // Change the pump's motor-current scale from 0.1 to 1 (raw amps × 10): reload.
    let pump = devices
        .iter_mut()
        .find(|d| d.id == "rig7/pump-p201")
        .unwrap();
    let p = pump
        .properties
        .iter_mut()
        .find(|p| p.name == "motor-current")
        .unwrap();
    let PropertyVisitor::Modbus(v) = &mut p.visitor else {
        panic!()
    };
    v.scaling.scale = 1.0;
    gw.reload.send(devices.clone()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !reported(&gw.view, "rig7/pump-p201", "motor-current")
        .is_some_and(|v| v.value.parse::<f64>().unwrap_or(0.0) > 80.0)
    {
        assert!(Instant::now() < deadline, "new scale never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A changed property does not restart its device: the pump's mapper took the new plan in
    // place; nothing restarted; the TCP connection stayed.
    assert_eq!(gw.stats.mapper_starts.load(Ordering::Relaxed), 2);
    assert_eq!(gw.stats.mapper_reconfigures.load(Ordering::Relaxed), 1);
    assert_eq!(
        simulators::modbus::Stats::get(&sim.endpoint.stats.connections),
        1
    );
    let t0 = reported(&gw.view, "rig7/wellhead-a07", "tubing-pressure")
        .unwrap()
        .timestamp_ms;
    let deadline = Instant::now() + Duration::from_secs(20);
    while reported(&gw.view, "rig7/wellhead-a07", "tubing-pressure")
        .unwrap()
        .timestamp_ms
        == t0
    {
        assert!(Instant::now() < deadline, "wellhead stopped reporting");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The same set again: nothing restarts.
    gw.reload.send(devices.clone()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.stats.reloads.load(Ordering::Relaxed) < 2 {
        assert!(Instant::now() < deadline, "second reload not applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gw.stats.mapper_starts.load(Ordering::Relaxed), 2);
    // A changed protocol setting (the pump's timeout) needs a new mapper: only the pump's.
    let pump = devices
        .iter_mut()
        .find(|d| d.id == "rig7/pump-p201")
        .unwrap();
    if let DeviceProtocol::Modbus(m) = &mut pump.protocol {
        m.timeout = Duration::from_millis(750);
    }
    gw.reload.send(devices).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.stats.reloads.load(Ordering::Relaxed) < 3 {
        assert!(Instant::now() < deadline, "third reload not applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gw.stats.mapper_starts.load(Ordering::Relaxed), 3);
    assert_eq!(gw.stats.mapper_reconfigures.load(Ordering::Relaxed), 1);
    let _ = gw.shutdown.send(true);
}

/// Requests in bursts from several clients at once: every one is answered. (rumqttd's link
/// sometimes wakes with an empty batch; the gateway once took that for the end of the link and
/// stopped answering anything, which showed as "lost" requests in the end-to-end test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_of_a_burst_is_answered() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let gw = gateway::runtime::start(&cfg, platform().devices)
        .await
        .unwrap();
    let port = gw.broker.port();
    let client = |id: &str| {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        o.set_inflight(100);
        AsyncClient::new(o, 1000)
    };
    let (sub, mut sub_loop) = client("burst-watch");
    sub.subscribe("$hw/events/device/+/+/twin/get/result", QoS::AtLeastOnce)
        .await
        .unwrap();
    // Wait for the SUBACK before anything is published.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ev = tokio::time::timeout_at(deadline.into(), sub_loop.poll())
            .await
            .expect("no SUBACK")
            .unwrap();
        if matches!(ev, Event::Incoming(Packet::SubAck(_))) {
            break;
        }
    }
    const CLIENTS: usize = 4;
    const PER_BURST: usize = 50;
    const BURSTS: usize = 12;
    let mut pubs = Vec::new();
    for c in 0..CLIENTS {
        let (p, mut el) = client(&format!("burst-{c}"));
        tokio::spawn(async move { while el.poll().await.is_ok() {} });
        pubs.push(p);
    }
    let mut answered = std::collections::BTreeSet::new();
    for burst in 0..BURSTS {
        for (c, p) in pubs.iter().enumerate() {
            for i in 0..PER_BURST {
                let id = format!("b{burst}-c{c}-{i}");
                p.publish(
                    "$hw/events/device/rig7/pump-p201/twin/get",
                    QoS::AtLeastOnce,
                    false,
                    format!(r#"{{"event_id":"{id}"}}"#),
                )
                .await
                .unwrap();
            }
        }
        let want = (burst + 1) * CLIENTS * PER_BURST;
        let deadline = Instant::now() + Duration::from_secs(20);
        while answered.len() < want {
            let Ok(ev) = tokio::time::timeout_at(deadline.into(), sub_loop.poll()).await else {
                panic!(
                    "burst {burst}: {} of {want} requests answered",
                    answered.len()
                );
            };
            if let Event::Incoming(Packet::Publish(p)) = ev.unwrap() {
                let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                answered.insert(v["event_id"].as_str().unwrap().to_string());
            }
        }
    }
    assert_eq!(answered.len(), CLIENTS * PER_BURST * BURSTS);
    let _ = gw.shutdown.send(true);
}
