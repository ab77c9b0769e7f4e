//! The Modbus mapper against a third-party server: pymodbus (Debian's python3-pymodbus 3.0,
//! with `zero_mode=True`, see ../shared/CRATES.md), laid out as the wellhead's device file says.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{at_tcp, device, options, platform, start};
use device_models::Value;
use mappers::modbus::Links;
use mappers::{Health, Mapper, WriteOutcome};
use simulators::testkit::{KillOnDrop, free_port};

const SERVER: &str = r#"
import sys
from pymodbus.server import StartTcpServer
from pymodbus.datastore import ModbusSequentialDataBlock, ModbusSlaveContext, ModbusServerContext
ir = [0] * 20
ir[0:2] = [0x4362, 0x8000]   # tubing pressure 226.5, float32 ABCD
ir[2:4] = [0x0000, 0x4235]   # casing pressure 45.25, float32 CDAB
ir[4] = 553                  # wellhead temperature 55.3, int16 x 0.1
ir[10:12] = [0, 12873]       # run hours, uint32
store = ModbusSlaveContext(
    di=ModbusSequentialDataBlock(0, [1] * 8),
    co=ModbusSequentialDataBlock(0, [0] * 8),
    hr=ModbusSequentialDataBlock(0, [350] + [0] * 7),
    ir=ModbusSequentialDataBlock(0, ir),
    zero_mode=True,
)
StartTcpServer(context=ModbusServerContext(slaves=store, single=True), address=("127.0.0.1", int(sys.argv[1])))
"#;

fn pymodbus_server() -> (KillOnDrop, u16) {
    let port = free_port().unwrap();
    let child = Command::new("/usr/bin/python3")
        .args(["-c", SERVER, &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 with pymodbus (scripts/test.sh installs python3-pymodbus)");
    let guard = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "pymodbus server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (guard, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wellhead_mapper_reads_and_writes_a_pymodbus_server() {
    let (_server, port) = pymodbus_server();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let cfg = at_tcp(device(&platform(), "rig7/wellhead-a07"), addr);
    let mut m = start(Mapper::build(&cfg, &Links::default(), &options()).unwrap());
    m.health(Health::Online, Duration::from_secs(10)).await;
    let mut seen: BTreeMap<String, Value> = BTreeMap::new();
    while seen.len() < 6 {
        for r in m.readings(Duration::from_secs(10)).await {
            seen.insert(r.property.to_string(), r.value);
        }
    }
    assert_eq!(seen["tubing-pressure"], Value::Float(226.5));
    assert_eq!(seen["casing-pressure"], Value::Float(45.25));
    let Value::Float(t) = seen["wellhead-temperature"] else {
        panic!("{seen:?}")
    };
    assert!((t - 55.3).abs() < 1e-9, "{t}");
    assert_eq!(seen["choke-position"], Value::Float(35.0));
    assert_eq!(seen["esd-active"], Value::Bool(true));
    assert_eq!(seen["run-hours"], Value::Int(12873));
    let out = m
        .write(
            1,
            "choke-position",
            Value::Float(40.0),
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(
        out,
        WriteOutcome::Done {
            read_back: Some(Value::Float(40.0))
        }
    );
}
