//! The serial instrument and MQTT device mappers against their simulators: a pty the mapper
//! opens like a USB adapter (and loses, and finds again), and a real mosquitto broker.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{at_port, device, options, platform, start};
use device_models::Value;
use mappers::modbus::Links;
use mappers::{Health, Mapper, MapperOptions, Metrics, WriteOutcome};
use simulators::AbortOnDrop;
use simulators::pty::Pty;
use simulators::serial::{Instrument, SerialFaults};

const T: Duration = Duration::from_secs(10);

/// A flowmeter on a new pty, reachable through the symlink `link` (as /dev/serial/by-id is).
fn flowmeter_at(link: &std::path::Path, inst: &Arc<Instrument>) -> AbortOnDrop {
    let pty = Pty::open().unwrap();
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(pty.path(), link).unwrap();
    let inst = inst.clone();
    AbortOnDrop(tokio::spawn(async move {
        let _ = simulators::serial::run(pty, inst).await;
    }))
}

#[tokio::test]
async fn serial_instrument_readings_writes_and_reconnect() {
    let set = platform();
    let cfg = device(&set, "rig7/flowmeter-ft310");
    let inst = Instrument::new(&cfg, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyFT310");
    let sim = flowmeter_at(&link, &inst);
    let cfg = at_port(cfg, link.to_str().unwrap());
    let mut m = start(Mapper::build(&cfg, &Links::default(), &options()).unwrap());
    m.health(Health::Online, T).await;
    let r = m.readings(T).await;
    let names: Vec<&str> = r.iter().map(|r| &*r.property).collect();
    assert_eq!(
        names,
        ["flow-rate", "totaliser", "temperature", "report-interval"]
    );
    assert_eq!(r[3].value, Value::Int(1000));
    // Writes: the interval, read back from the next record; zero the totaliser.
    assert_eq!(
        m.write(1, "report-interval", Value::Int(250), T).await,
        WriteOutcome::Done {
            read_back: Some(Value::Int(250))
        }
    );
    let WriteOutcome::Done {
        read_back: Some(Value::Float(total)),
    } = m.write(2, "totaliser", Value::Float(0.0), T).await
    else {
        panic!()
    };
    assert!(total < 1.0, "{total}");
    assert!(matches!(
        m.write(3, "flow-rate", Value::Float(1.0), T).await,
        WriteOutcome::ReadOnly(_)
    ));
    // Corrupted checksums are counted; good records still arrive.
    inst.set_faults(SerialFaults {
        bad_checksum_every: Some(2),
        split_every: Some(3),
        ..SerialFaults::default()
    });
    let before = Metrics::get(&m.metrics.errors_decode);
    let _ = m.readings(T).await;
    let _ = m.readings(T).await;
    assert!(Metrics::get(&m.metrics.errors_decode) > before);
    inst.set_faults(SerialFaults::default());
    // The adapter disappears...
    drop(sim);
    m.health(Health::Offline, T).await;
    // ...and comes back (on another pty, same name): the mapper reopens it.
    let _sim = flowmeter_at(&link, &inst);
    m.health(Health::Online, T).await;
    assert!(!m.readings(T).await.is_empty());
}

#[tokio::test]
async fn serial_garbage_makes_the_instrument_unhealthy() {
    use tokio::io::AsyncWriteExt;
    let set = platform();
    let mut pty = Pty::open().unwrap();
    let cfg = at_port(
        device(&set, "rig7/flowmeter-ft310"),
        &pty.path().to_string_lossy(),
    );
    let mut m = start(Mapper::build(&cfg, &Links::default(), &options()).unwrap());
    for _ in 0..5 {
        pty.write_all(b"#@!garbage line\r\n").await.unwrap();
    }
    m.health(Health::Unhealthy, T).await;
    // A very long line without a delimiter is dropped, not buffered forever.
    pty.write_all(&vec![b'x'; 5000]).await.unwrap();
    pty.write_all(b"\r\n").await.unwrap();
    let deadline = std::time::Instant::now() + T;
    while Metrics::get(&m.metrics.errors_decode) < 6 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The gas detector's simulator publishing every 100 ms on the broker at `port`, and mapper
/// options that point the embedded broker there.
fn gas_detector_on(
    cfg: &device_models::DeviceConfig,
    port: u16,
    faults: simulators::mqtt::MqttFaults,
) -> (AbortOnDrop, MapperOptions) {
    let dev = simulators::mqtt::MqttDevice::new(cfg, 1).unwrap();
    dev.set_faults(faults);
    let sim = AbortOnDrop(tokio::spawn(simulators::mqtt::run(
        dev,
        "127.0.0.1".into(),
        port,
        Duration::from_millis(100),
    )));
    let opts = MapperOptions {
        embedded_broker: Some(("127.0.0.1".into(), port)),
        ..options()
    };
    (sim, opts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_device_readings_commands_and_bad_payloads() {
    let (_broker, port) = mosquitto();
    let set = platform();
    let cfg = device(&set, "rig7/gas-gd101");
    let faults = simulators::mqtt::MqttFaults {
        garbage_every: Some(3),
        ..Default::default()
    };
    let (_sim, opts) = gas_detector_on(&cfg, port, faults);
    let mut m = start(Mapper::build(&cfg, &Links::default(), &opts).unwrap());
    m.health(Health::Online, T).await;
    let r = m.readings(T).await;
    let names: Vec<&str> = r.iter().map(|r| &*r.property).collect();
    assert_eq!(names, ["h2s", "lel", "alarm", "beacon"]);
    assert!(matches!(r[0].value, Value::Float(_)));
    assert_eq!(r[3].value, Value::Bool(false));
    assert_eq!(
        m.write(1, "beacon", Value::Bool(true), T).await,
        WriteOutcome::Done {
            read_back: Some(Value::Bool(true))
        }
    );
    assert!(matches!(
        m.write(2, "h2s", Value::Float(0.0), T).await,
        WriteOutcome::ReadOnly(_)
    ));
    // Every third document is not JSON: counted, never fatal.
    let deadline = std::time::Instant::now() + T;
    while Metrics::get(&m.metrics.errors_decode) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "bad payloads not counted"
        );
        let _ = m.next(T).await;
    }
    assert!(!m.readings(T).await.is_empty());
}

#[test]
fn mqtt_on_the_embedded_broker_needs_its_address() {
    let set = platform();
    let err = Mapper::build(
        &device(&set, "rig7/gas-gd101"),
        &Links::default(),
        &MapperOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("embedded broker"));
}

/// Every mapper kind emits the same metrics (readings, requests, latency, errors by kind,
/// requests per cycle, bus time), and they move when the mapper works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mapper_emits_the_same_metrics() {
    let set = platform();
    // Modbus.
    let ep = simulators::modbus_endpoint(&set.devices, simulators::Line::Tcp, 1).unwrap();
    let tcp = simulators::modbus::tcp::spawn("127.0.0.1:0".parse().unwrap(), ep)
        .await
        .unwrap();
    let mut modbus = start(
        Mapper::build(
            &common::at_tcp(device(&set, "rig7/pump-p201"), tcp.addr),
            &Links::default(),
            &options(),
        )
        .unwrap(),
    );
    // Serial.
    let cfg = device(&set, "rig7/flowmeter-ft310");
    let inst = Instrument::new(&cfg, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("tty");
    let _s = flowmeter_at(&link, &inst);
    let mut serial = start(
        Mapper::build(
            &at_port(cfg, link.to_str().unwrap()),
            &Links::default(),
            &options(),
        )
        .unwrap(),
    );
    // MQTT.
    let (_broker, port) = mosquitto();
    let gas = device(&set, "rig7/gas-gd101");
    let (_m, opts) = gas_detector_on(&gas, port, Default::default());
    let mut mqtt = start(Mapper::build(&gas, &Links::default(), &opts).unwrap());
    let names = |m: &Metrics| m.snapshot().into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    for r in [&mut modbus, &mut serial, &mut mqtt] {
        let _ = r.readings(T).await;
        let m = &r.metrics;
        assert!(Metrics::get(&m.readings) > 0);
        assert!(Metrics::get(&m.requests) > 0);
        assert!(m.latency_buckets.iter().map(Metrics::get).sum::<u64>() > 0);
        assert_eq!(names(m), names(&Metrics::default()));
    }
    assert!(Metrics::get(&modbus.metrics.requests_per_cycle) > 0);
    assert!(Metrics::get(&modbus.metrics.bus_busy_us) > 0);
    assert!(Metrics::get(&serial.metrics.bus_busy_us) > 0);
}

fn mosquitto() -> (simulators::testkit::KillOnDrop, u16) {
    simulators::testkit::mosquitto().unwrap()
}

/// `cfg` with `property`'s scale multiplied by `factor`.
fn rescaled(
    mut cfg: device_models::DeviceConfig,
    property: &str,
    factor: f64,
) -> device_models::DeviceConfig {
    use device_models::protocol::PropertyVisitor;
    let p = cfg
        .properties
        .iter_mut()
        .find(|p| p.name == property)
        .unwrap();
    match &mut p.visitor {
        PropertyVisitor::Serial(v) => v.scaling.scale *= factor,
        PropertyVisitor::Mqtt(v) => v.scaling.scale *= factor,
        PropertyVisitor::Modbus(v) => v.scaling.scale *= factor,
    }
    cfg
}

/// Waits for a reading of `property` and returns it; panics on an offline health event (the
/// mapper lost its port or broker session).
async fn next_value(m: &mut common::Running, property: &str) -> f64 {
    let deadline = std::time::Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match m.next(left).await {
            mappers::Event::Readings(r) => {
                if let Some(r) = r.iter().find(|r| &*r.property == property) {
                    return r.value.as_f64().unwrap();
                }
            }
            mappers::Event::Health { health, reason, .. } => {
                assert_ne!(health, Health::Offline, "went offline: {reason}");
            }
            mappers::Event::Write { .. } => {}
        }
    }
}

/// New property settings reach a running serial or MQTT mapper in place: the new scale applies,
/// the port or broker session is not dropped (no offline event), and the running mapper's own
/// metrics go on counting (a restarted mapper would count in a new metrics object).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_change_in_place() {
    let set = platform();
    // Serial flowmeter on a pty.
    let cfg = device(&set, "rig7/flowmeter-ft310");
    let inst = Instrument::new(&cfg, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyFT310");
    let _sim = flowmeter_at(&link, &inst);
    let cfg = at_port(cfg, link.to_str().unwrap());
    let mut m = start(Mapper::build(&cfg, &Links::default(), &options()).unwrap());
    m.health(Health::Online, T).await;
    let new = Mapper::build(
        &rescaled(cfg, "flow-rate", 1000.0),
        &Links::default(),
        &options(),
    );
    takes_in_place(&mut m, new.unwrap(), "flow-rate", 10_000.0).await;

    // MQTT gas detector on mosquitto.
    let (_broker, port) = mosquitto();
    let cfg = device(&set, "rig7/gas-gd101");
    let (_sim, opts) = gas_detector_on(&cfg, port, Default::default());
    let mut m = start(Mapper::build(&cfg, &Links::default(), &opts).unwrap());
    m.health(Health::Online, T).await;
    let new = Mapper::build(&rescaled(cfg, "h2s", 1000.0), &Links::default(), &opts);
    takes_in_place(&mut m, new.unwrap(), "h2s", 50.0).await;
}

/// `property` reads below `threshold`; after `new` (×1000 on that property) is sent, it reads
/// above, and the running mapper's metrics went on counting.
async fn takes_in_place(m: &mut common::Running, new: Mapper, property: &str, threshold: f64) {
    let before = next_value(m, property).await;
    assert!(before < threshold, "{before}");
    m.reconfigure.send(Box::new(new)).await.unwrap();
    let counted = Metrics::get(&m.metrics.readings);
    let deadline = std::time::Instant::now() + T;
    while next_value(m, property).await < threshold {
        assert!(
            std::time::Instant::now() < deadline,
            "new scale not applied"
        );
    }
    let _ = next_value(m, property).await;
    assert!(Metrics::get(&m.metrics.readings) > counted);
}
