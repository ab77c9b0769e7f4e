//! `ballast-sim` as a user runs it: the real binary, one transport per line of output.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio_modbus::Slave;
use tokio_modbus::client::Reader;

fn spawn(args: &[&str]) -> (common::KillOnDrop, Vec<String>, usize) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ballast-sim"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let guard = common::KillOnDrop(child);
    let expected = if args.contains(&"all") { 4 } else { 1 };
    let mut lines = Vec::new();
    let mut reader = BufReader::new(stdout);
    while lines.len() < expected {
        let mut l = String::new();
        assert!(
            reader.read_line(&mut l).unwrap() > 0,
            "ballast-sim exited early: {lines:?}"
        );
        lines.push(l.trim().to_string());
    }
    (guard, lines, expected)
}

fn field<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in {lines:?}"))
        .split_whitespace()
        .next()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_tcp_on_port_zero_with_a_fault() {
    let ex = common::examples();
    let (_sim, lines, _) = spawn(&[
        "modbus-tcp",
        "--devices",
        ex.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--exception",
        "holding:0=6",
    ]);
    assert!(
        lines[0].contains("units 1=rig7/wellhead-a07 2=rig7/pump-p201"),
        "{lines:?}"
    );
    let addr = field(&lines, "modbus-tcp ").parse().unwrap();
    let mut ctx = tokio_modbus::client::tcp::connect_slave(addr, Slave(1))
        .await
        .unwrap();
    assert!(ctx.read_input_registers(0, 2).await.unwrap().is_ok());
    assert_eq!(
        ctx.read_holding_registers(0, 1).await.unwrap(),
        Err(tokio_modbus::ExceptionCode::ServerDeviceBusy)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_transports_at_once() {
    let (_broker, port) = common::mosquitto();
    let ex = common::examples();
    let broker = format!("127.0.0.1:{port}");
    let (_sim, lines, _) = spawn(&[
        "all",
        "--devices",
        ex.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--broker",
        &broker,
    ]);
    let tcp = field(&lines, "modbus-tcp ").parse().unwrap();
    let rtu = field(&lines, "modbus-rtu ").to_string();
    let serial = field(&lines, "serial ").to_string();
    let mut ctx = tokio_modbus::client::tcp::connect_slave(tcp, Slave(2))
        .await
        .unwrap();
    assert!(ctx.read_coils(0, 1).await.unwrap().is_ok());
    let port = tokio_serial::SerialStream::open(&tokio_serial::new(&rtu, 19200)).unwrap();
    let mut rtu_ctx = tokio_modbus::client::rtu::attach_slave(port, Slave(4));
    assert_eq!(
        rtu_ctx.read_discrete_inputs(0, 2).await.unwrap().unwrap(),
        [false, false]
    );
    let serial_port = tokio_serial::SerialStream::open(&tokio_serial::new(&serial, 9600)).unwrap();
    let mut lines_in = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(serial_port));
    let rec = tokio::time::timeout(Duration::from_secs(5), lines_in.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(rec.starts_with("$FLOW,"), "{rec}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("mqtt ") && l.contains("rig7/gas-gd101")),
        "{lines:?}"
    );
}

#[test]
fn refuses_invalid_device_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata: {name: x}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ballast-sim"))
        .args([
            "modbus-tcp",
            "--devices",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ballast-gateway check"));
}
