//! Third-party Modbus peers against the simulators: mbpoll over TCP and over RTU on the
//! simulator's own pty, and a pymodbus client over TCP. The values decode as the example files
//! say.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

mod common;

use std::process::Command;
use std::time::Duration;

use simulators::modbus::rtu::{self, LineTiming};
use simulators::modbus::tcp;
use simulators::pty::Pty;
use simulators::{AbortOnDrop, Line, modbus_endpoint};

/// Runs mbpoll once and returns the values it printed; fails the test when mbpoll fails.
fn mbpoll(args: &[&str]) -> Vec<String> {
    simulators::testkit::mbpoll(args).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mbpoll_reads_tcp_holding_input_and_coils() {
    let set = common::platform();
    let ep = modbus_endpoint(&set.devices, Line::Tcp, 1).unwrap();
    let sim = tcp::spawn("127.0.0.1:0".parse().unwrap(), ep)
        .await
        .unwrap();
    let port = sim.addr.port().to_string();
    let values = sim
        .endpoint
        .slave(1)
        .unwrap()
        .lock()
        .unwrap()
        .values
        .clone();
    let t = tokio::task::spawn_blocking(move || {
        // Wellhead (unit 1): tubing pressure float32 ABCD at input 0 (mbpoll -B: big-endian words).
        let tubing = mbpoll(&[
            "-m",
            "tcp",
            "-p",
            &port,
            "-a",
            "1",
            "-t",
            "3:float",
            "-B",
            "-r",
            "1",
            "-c",
            "1",
            "-1",
            "127.0.0.1",
        ]);
        // Casing pressure float32 CDAB at input 2 (mbpoll's default word order).
        let casing = mbpoll(&[
            "-m",
            "tcp",
            "-p",
            &port,
            "-a",
            "1",
            "-t",
            "3:float",
            "-r",
            "3",
            "-c",
            "1",
            "-1",
            "127.0.0.1",
        ]);
        // Choke position: holding register 0, uint16 scaled by 0.1.
        let choke = mbpoll(&[
            "-m",
            "tcp",
            "-p",
            &port,
            "-a",
            "1",
            "-t",
            "4",
            "-r",
            "1",
            "-c",
            "1",
            "-1",
            "127.0.0.1",
        ]);
        // Pump (unit 2): run coil 0; write it on, read it back.
        mbpoll(&[
            "-m",
            "tcp",
            "-p",
            &port,
            "-a",
            "2",
            "-t",
            "0",
            "-r",
            "1",
            "-1",
            "127.0.0.1",
            "1",
        ]);
        let coil = mbpoll(&[
            "-m",
            "tcp",
            "-p",
            &port,
            "-a",
            "2",
            "-t",
            "0",
            "-r",
            "1",
            "-c",
            "1",
            "-1",
            "127.0.0.1",
        ]);
        (tubing, casing, choke, coil)
    });
    let (tubing, casing, choke, coil) = t.await.unwrap();
    let f = |s: &str| s.parse::<f64>().unwrap();
    assert!(
        (f(&tubing[0]) - values["tubing-pressure"].as_f64().unwrap()).abs() < 0.01,
        "{tubing:?}"
    );
    assert!(
        (f(&casing[0]) - values["casing-pressure"].as_f64().unwrap()).abs() < 0.01,
        "{casing:?}"
    );
    assert_eq!(
        f(&choke[0]) * 0.1,
        values["choke-position"].as_f64().unwrap()
    );
    assert_eq!(coil, ["1"]);
    assert_eq!(
        sim.endpoint.slave(2).unwrap().lock().unwrap().values["pump-run"],
        device_models::Value::Bool(true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mbpoll_reads_rtu_slaves_through_the_simulator_pty() {
    let set = common::platform();
    let ep = modbus_endpoint(&set.devices, Line::Rtu, 1).unwrap();
    let pty = Pty::open().unwrap();
    let path = pty.path().to_string_lossy().into_owned();
    let timing = Some(LineTiming {
        baud: 19200,
        bits_per_char: 11,
    });
    let _server = AbortOnDrop(tokio::spawn({
        let ep = ep.clone();
        async move {
            let _ = rtu::serve(pty, ep, timing).await;
        }
    }));
    let level = |unit: u8| {
        ep.slave(unit).unwrap().lock().unwrap().values["level-1"]
            .as_f64()
            .unwrap()
    };
    let (l3, l4) = (level(3), level(4));
    let out = tokio::task::spawn_blocking(move || {
        let read = |unit: &str, table: &str| {
            // Two input registers or discrete inputs; one holding register or coil.
            let count = if table == "3" || table == "1" {
                "2"
            } else {
                "1"
            };
            mbpoll(&[
                "-m", "rtu", "-b", "19200", "-P", "even", "-a", unit, "-t", table, "-r", "1", "-c",
                count, "-1", "-o", "2", &path,
            ])
        };
        // The trip level (holding 0, uint16 mm): write 10.8 m to tank 4, read it back; and the
        // transfer valve coil of tank 3.
        let write = mbpoll(&[
            "-m", "rtu", "-b", "19200", "-P", "even", "-a", "4", "-t", "4", "-r", "1", "-1", "-o",
            "2", &path, "10800",
        ]);
        assert!(write.is_empty());
        (
            read("3", "3"),
            read("4", "3"),
            read("3", "1"),
            read("4", "4"),
            read("3", "0"),
        )
    })
    .await
    .unwrap();
    // level-1 is input register 0, uint16 with scale 0.001 (millimetres).
    let mm = |s: &str| s.parse::<f64>().unwrap() * 0.001;
    assert!((mm(&out.0[0]) - l3).abs() < 0.0011, "{out:?} vs {l3}");
    assert!((mm(&out.1[0]) - l4).abs() < 0.0011, "{out:?} vs {l4}");
    assert_eq!(out.2, ["0", "0"], "high-high alarms are off at start");
    assert_eq!(out.3[0], "10800");
    assert_eq!(out.4[0], "0", "transfer valve closed at start");
    let trip = ep.slave(4).unwrap().lock().unwrap().values["hh-trip-level"]
        .as_f64()
        .unwrap();
    assert!((trip - 10.8).abs() < 1e-9, "{trip}");
    assert!(simulators::modbus::Stats::get(&ep.stats.reads) >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymodbus_reads_tcp() {
    let set = common::platform();
    let ep = modbus_endpoint(&set.devices, Line::Tcp, 1).unwrap();
    let sim = tcp::spawn("127.0.0.1:0".parse().unwrap(), ep)
        .await
        .unwrap();
    let port = sim.addr.port();
    let script = format!(
        r#"
import json, sys
from pymodbus.client import ModbusTcpClient
c = ModbusTcpClient("127.0.0.1", port={port})
assert c.connect(), "connect"
def call(f, *a):
    try:
        return f(*a, slave=1)
    except TypeError:
        return f(*a, unit=1)
ir = call(c.read_input_registers, 0, 6)
hr = call(c.read_holding_registers, 0, 1)
di = call(c.read_discrete_inputs, 0, 1)
print(json.dumps({{"input": ir.registers, "holding": hr.registers, "discrete": di.bits[:1]}}))
c.close()
"#
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "pymodbus failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bank = sim
        .endpoint
        .slave(1)
        .unwrap()
        .lock()
        .unwrap()
        .bank()
        .clone();
    let input: Vec<u16> = got["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u16)
        .collect();
    assert_eq!(input, bank.input[..6]);
    assert_eq!(got["holding"][0].as_u64().unwrap() as u16, bank.holding[0]);
    assert_eq!(got["discrete"][0].as_bool().unwrap(), bank.discrete[0]);
    // Decoded as the file says: tubing pressure float32 ABCD.
    let tubing = f32::from_bits(u32::from(input[0]) << 16 | u32::from(input[1]));
    assert!((200.0..300.0).contains(&tubing), "{tubing}");
    let _ = Duration::ZERO;
}
