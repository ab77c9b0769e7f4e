//! The RTU line, the serial instrument and the MQTT device, each through a real peer: a
//! tokio-modbus RTU client and a serial port opened on the simulator's pty, and a mosquitto
//! broker with an MQTT client.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use simulators::modbus::rtu::{self, LineTiming};
use simulators::modbus::{Endpoint, Faults};
use simulators::pty::Pty;
use simulators::serial::{Instrument, SerialFaults};
use simulators::{AbortOnDrop, Line, modbus_endpoint};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_modbus::Slave;
use tokio_modbus::client::Reader;
use tokio_modbus::prelude::SlaveContext;

const LINE: LineTiming = LineTiming {
    baud: 19200,
    bits_per_char: 11,
};

fn rtu_line(timing: Option<LineTiming>) -> (Arc<Endpoint>, String, AbortOnDrop) {
    let set = common::platform();
    let ep = modbus_endpoint(&set.devices, Line::Rtu, 1).unwrap();
    let pty = Pty::open().unwrap();
    let path = pty.path().to_string_lossy().into_owned();
    let ep2 = ep.clone();
    let task = AbortOnDrop(tokio::spawn(async move {
        let _ = rtu::serve(pty, ep2, timing).await;
    }));
    (ep, path, task)
}

fn open_port(path: &str, baud: u32) -> tokio_serial::SerialStream {
    tokio_serial::SerialStream::open(&tokio_serial::new(path, baud)).unwrap()
}

#[tokio::test]
async fn rtu_slaves_share_one_timed_line() {
    let (ep, path, _task) = rtu_line(Some(LINE));
    let mut ctx = tokio_modbus::client::rtu::attach_slave(open_port(&path, 19200), Slave(3));
    let t0 = Instant::now();
    let a = ctx.read_input_registers(0, 5).await.unwrap().unwrap();
    let took = t0.elapsed();
    // Request 8 bytes, 3.5 characters of silence, reply 3 + 10 + 2 bytes, at 11 bits a character.
    let wire = LINE.bytes_time(8) + LINE.frame_gap() + LINE.bytes_time(15);
    assert!(
        took >= wire,
        "reply after {took:?}, faster than the wire allows ({wire:?})"
    );
    ctx.set_slave(Slave(4));
    let b = ctx.read_input_registers(0, 5).await.unwrap().unwrap();
    let bank = |u| ep.slave(u).unwrap().lock().unwrap().bank().input.clone();
    assert_eq!(a, bank(3)[..5]);
    assert_eq!(b, bank(4)[..5]);
    // An absent slave costs a timeout and nothing else.
    ctx.set_slave(Slave(9));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), ctx.read_input_registers(0, 1))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn rtu_faults_garbage_and_wrong_address() {
    let (ep, path, _task) = rtu_line(None);
    ep.set_faults(Faults {
        garbage_every: Some(1),
        ..Faults::default()
    });
    let mut ctx = tokio_modbus::client::rtu::attach_slave(open_port(&path, 19200), Slave(3));
    let r = tokio::time::timeout(Duration::from_millis(500), ctx.read_input_registers(0, 2)).await;
    assert!(!matches!(r, Ok(Ok(Ok(_)))), "garbage accepted: {r:?}");
    // Serial ports open exclusively: close before reopening.
    drop(ctx);
    ep.set_faults(Faults {
        wrong_id_every: Some(1),
        ..Faults::default()
    });
    let mut ctx = tokio_modbus::client::rtu::attach_slave(open_port(&path, 19200), Slave(3));
    let r = tokio::time::timeout(Duration::from_millis(500), ctx.read_input_registers(0, 2)).await;
    assert!(
        !matches!(r, Ok(Ok(Ok(_)))),
        "reply from the wrong slave accepted: {r:?}"
    );
    drop(ctx);
    ep.set_faults(Faults::default());
    let mut ctx = tokio_modbus::client::rtu::attach_slave(open_port(&path, 19200), Slave(3));
    assert!(ctx.read_input_registers(0, 2).await.unwrap().is_ok());
}

fn flowmeter() -> Arc<Instrument> {
    let set = common::platform();
    let cfg = set
        .devices
        .iter()
        .find(|d| d.id == "rig7/flowmeter-ft310")
        .unwrap();
    Instrument::new(cfg, 1).unwrap()
}

fn format() -> device_models::protocol::serial::RecordFormat {
    let set = common::platform();
    let cfg = set
        .devices
        .iter()
        .find(|d| d.id == "rig7/flowmeter-ft310")
        .unwrap();
    let device_models::protocol::DeviceProtocol::Serial(s) = &cfg.protocol else {
        panic!()
    };
    s.format.clone()
}

#[tokio::test]
async fn serial_instrument_prints_records_and_obeys_commands() {
    let inst = flowmeter();
    let pty = Pty::open().unwrap();
    let path = pty.path().to_string_lossy().into_owned();
    let _task = AbortOnDrop(tokio::spawn({
        let inst = inst.clone();
        async move {
            let _ = simulators::serial::run(pty, inst).await;
        }
    }));
    let port = open_port(&path, 9600);
    let (rd, mut wr) = tokio::io::split(port);
    let mut lines = BufReader::new(rd).lines();
    let fmt = format();
    let first = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let fields = fmt.parse(first.trim_end_matches('\r')).unwrap();
    assert_eq!(fields["interval"], "1000");
    wr.write_all(b"$INT,200\r\n$ZERO\r\n").await.unwrap();
    // Within a few records the interval is 200 ms and the totaliser restarted from zero.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let line = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let f = fmt.parse(line.trim_end_matches('\r')).unwrap();
        if f["interval"] == "200" && f["total"].parse::<f64>().unwrap() < 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "commands not applied: {line}");
    }
    assert_eq!(inst.commands.load(std::sync::atomic::Ordering::Relaxed), 2);
}

#[tokio::test]
async fn serial_faults_corrupt_split_and_merge() {
    let inst = flowmeter();
    inst.set_faults(SerialFaults {
        bad_checksum_every: Some(3),
        split_every: Some(2),
        merge_every: Some(5),
        silent_until: None,
    });
    let pty = Pty::open().unwrap();
    let path = pty.path().to_string_lossy().into_owned();
    let _task = AbortOnDrop(tokio::spawn({
        let inst = inst.clone();
        async move {
            let _ = simulators::serial::run(pty, inst).await;
        }
    }));
    let port = open_port(&path, 9600);
    let (rd, mut wr) = tokio::io::split(port);
    wr.write_all(b"$INT,100\r\n").await.unwrap();
    let mut lines = BufReader::new(rd).lines();
    let fmt = format();
    let (mut good, mut bad) = (0, 0);
    while good + bad < 12 {
        let line = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match fmt.parse(line.trim_end_matches('\r')) {
            Ok(_) => good += 1,
            Err(_) => bad += 1,
        }
    }
    // Split and merged records still arrive as whole lines; every third has a bad checksum.
    assert!(bad >= 3 && good >= 6, "good {good} bad {bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_device_publishes_and_obeys_commands() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let (_broker, port) = common::mosquitto();
    let set = common::platform();
    let cfg = set
        .devices
        .iter()
        .find(|d| d.id == "rig7/gas-gd101")
        .unwrap();
    let dev = simulators::mqtt::MqttDevice::new(cfg, 1).unwrap();
    let _sim = AbortOnDrop(tokio::spawn(simulators::mqtt::run(
        dev.clone(),
        "127.0.0.1".into(),
        port,
        Duration::from_millis(100),
    )));
    let (client, mut events) =
        AsyncClient::new(MqttOptions::new("test-client", "127.0.0.1", port), 16);
    client
        .subscribe("rig7/wellbay/gd101/state", QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut docs = Vec::new();
    let mut commanded = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let ev = tokio::time::timeout(Duration::from_secs(5), events.poll())
            .await
            .unwrap()
            .unwrap();
        if let Event::Incoming(Packet::Publish(p)) = ev {
            let doc: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
            assert!(doc.pointer("/gas/h2s").unwrap().is_number());
            if doc["beacon"] == true {
                docs.push(doc);
                break;
            }
            docs.push(doc);
            if !commanded && docs.len() >= 2 {
                client
                    .publish(
                        "rig7/wellbay/gd101/cmd",
                        QoS::AtLeastOnce,
                        false,
                        r#"{"beacon": true}"#,
                    )
                    .await
                    .unwrap();
                commanded = true;
            }
        }
    }
    assert_eq!(docs.last().unwrap()["beacon"], true, "{docs:?}");
    assert_eq!(docs[0]["beacon"], false);
}
