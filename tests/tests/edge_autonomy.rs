//! Edge autonomy, end to end with processes: `ballast-gateway run` against a `ballast-sim`
//! Modbus TCP simulator; a local app sets a desired value (`ballast-gateway twin set`); then
//! `kill -9` of the gateway, the simulator restarted from scratch (its setpoint back at 0), the
//! devices directory removed, and the gateway started again on its SQLite file alone. It must
//! run the devices again, write the last desired value to the fresh device, and go on with the
//! outbox where it stopped: every sample once, in sequence.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ballast_tests::{repo, workspace_bin as bin};
use simulators::testkit::KillOnDrop;

const PUMP: &str = "rig7/pump-p201";
const T: Duration = Duration::from_secs(30);

/// `ballast-sim modbus-tcp` on `listen`; returns it and the address it announced.
fn simulator(listen: &str) -> (KillOnDrop, SocketAddr) {
    let mut child = Command::new(bin("ballast-sim"))
        .args(["modbus-tcp", "--listen", listen, "--devices"])
        .arg(repo().join("device-models/examples/oil-platform"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let guard = KillOnDrop(child);
    let mut lines = BufReader::new(out).lines();
    // "modbus-tcp 127.0.0.1:PORT units 1=… 2=…"
    let line = lines.next().expect("simulator exited").unwrap();
    let addr = line
        .split_whitespace()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("simulator said {line:?}"));
    std::thread::spawn(move || for _ in lines {});
    (guard, addr)
}

/// `ballast-gateway run`; returns it and its broker address, from its JSON log line
/// "gateway running".
fn gateway(config: &Path) -> (KillOnDrop, SocketAddr) {
    let mut child = Command::new(bin("ballast-gateway"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("BALLAST_LOG_FORMAT", "json")
        .env("BALLAST_LOG", "info,rumqttd=off")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let guard = KillOnDrop(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let deadline = Instant::now() + T;
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the gateway never said it was running");
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["fields"]["message"] == "gateway running" {
            let addr = v["fields"]["broker"].as_str().unwrap().parse().unwrap();
            // Keep draining its log so it never blocks on a full pipe.
            std::thread::spawn(move || for _ in rx {});
            return (guard, addr);
        }
    }
}

/// `ballast-gateway twin get`, as JSON (None while the gateway does not answer).
fn twin_get(broker: SocketAddr) -> Option<serde_json::Value> {
    let out = Command::new(bin("ballast-gateway"))
        .args(["twin", "get", PUMP, "--broker", &broker.to_string()])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).ok()
}

/// Polls the pump's twin until `f` holds, within `T`.
fn wait_twin(broker: SocketAddr, what: &str, f: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + T;
    loop {
        let got = twin_get(broker);
        if got.as_ref().is_some_and(&f) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: last twin {got:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The pump's speed setpoint (unit 2, holding register 0) as mbpoll, a third-party Modbus
/// client, reads it from the simulator.
fn setpoint_on_device(sim: SocketAddr) -> String {
    let port = sim.port().to_string();
    let args = [
        "-m", "tcp", "-p", &port, "-a", "2", "-t", "4", "-r", "1", "-c", "1", "-1",
    ];
    let values = simulators::testkit::mbpoll(&[&args[..], &["127.0.0.1"]].concat()).unwrap();
    values.first().cloned().expect("mbpoll printed no value")
}

fn setpoint(twin: &serde_json::Value, side: &str) -> Option<String> {
    twin["twin"]["speed-setpoint"][side]["value"]
        .as_str()
        .map(str::to_string)
}

/// The outbox as (seq, device, property, ts).
fn outbox(db: &Path) -> Vec<(i64, String, String, i64)> {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = gateway::store::Store::open(db).await.unwrap();
        store
            .outbox_after(0, 10_000_000)
            .await
            .unwrap()
            .into_iter()
            .map(|r| {
                (
                    r.seq,
                    r.sample.device.to_string(),
                    r.sample.property.to_string(),
                    r.sample.ts,
                )
            })
            .collect()
    })
}

#[test]
fn after_kill_9_it_runs_from_its_store_alone_with_the_last_desired_values() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, sim_addr) = simulator("127.0.0.1:0");

    // The two Modbus TCP devices of the example platform, pointed at the simulator.
    let devices = dir.path().join("devices");
    std::fs::create_dir(&devices).unwrap();
    let examples = repo().join("device-models/examples/oil-platform");
    std::fs::copy(examples.join("models.yaml"), devices.join("models.yaml")).unwrap();
    for f in ["wellhead.yaml", "pump-skid.yaml"] {
        let text = std::fs::read_to_string(examples.join(f)).unwrap();
        // The port is a number in one file and text in the other (KubeEdge accepts both).
        let port = sim_addr.port().to_string();
        let moved = text
            .replace("port: 5020", &format!("port: {port}"))
            .replace("port: \"5020\"", &format!("port: \"{port}\""));
        assert_ne!(moved, text, "{f} has no port 5020 any more: fix this test");
        let text = moved;
        std::fs::write(devices.join(f), text).unwrap();
    }
    let config = dir.path().join("gateway.toml");
    let toml = |with_devices: bool| {
        let mut t = format!(
            "node_name = \"rig7-edge\"\ndata_dir = \"{}\"\n",
            dir.path().display()
        );
        if with_devices {
            t.push_str(&format!("devices_dir = \"{}\"\n", devices.display()));
        }
        t.push_str("[broker]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n");
        t
    };
    std::fs::write(&config, toml(true)).unwrap();

    let (mut gw, broker) = gateway(&config);
    // The file's desired value (2400) is written and read back ...
    wait_twin(broker, "file's desired value never reported", |t| {
        setpoint(t, "actual").as_deref() == Some("2400")
    });
    // ... then a local app changes it, through the KubeEdge topics like any app.
    let st = Command::new(bin("ballast-gateway"))
        .args(["twin", "set", PUMP, "speed-setpoint", "1800", "--broker"])
        .arg(broker.to_string())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "twin set failed");
    wait_twin(broker, "local desired value never reported", |t| {
        setpoint(t, "expected").as_deref() == Some("1800")
            && setpoint(t, "actual").as_deref() == Some("1800")
    });

    // kill -9, while the mappers are reading.
    gw.0.kill().unwrap();
    let _ = gw.0.wait();
    let db = dir.path().join("ballast.db");
    let before = outbox(&db);
    assert!(!before.is_empty(), "nothing in the outbox before the kill");

    // A fresh device (setpoint 0 again) at the same address, no devices directory, no cloud.
    drop(sim);
    let (_sim, again) = simulator(&sim_addr.to_string());
    assert_eq!(again, sim_addr);
    assert_eq!(
        setpoint_on_device(sim_addr),
        "0",
        "the new device starts at 0"
    );
    std::fs::remove_dir_all(&devices).unwrap();
    std::fs::write(&config, toml(false)).unwrap();

    let (_gw, broker) = gateway(&config);
    // The gateway writes the last desired value (the local 1800, not the file's 2400) to the
    // new device ...
    let deadline = Instant::now() + T;
    while setpoint_on_device(sim_addr) != "1800" {
        assert!(
            Instant::now() < deadline,
            "last desired value never written to the new device"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // ... and its twin says so.
    wait_twin(
        broker,
        "last desired value not applied after restart",
        |t| {
            setpoint(t, "expected").as_deref() == Some("1800")
                && setpoint(t, "actual").as_deref() == Some("1800")
        },
    );
    // Both devices run: the wellhead reports too, with samples newer than the restart.
    let last_ts = before.iter().map(|r| r.3).max().unwrap();
    let deadline = Instant::now() + T;
    let after = loop {
        let rows = outbox(&db);
        let fresh = |dev: &str| {
            rows.iter()
                .any(|r| r.1 == dev && r.3 > last_ts && r.0 > before.last().unwrap().0)
        };
        if fresh("rig7/wellhead-a07") && fresh(PUMP) {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "no new samples from both devices after the restart"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // The outbox goes on where it stopped: what was there is untouched, new rows follow in
    // sequence, nothing twice.
    assert_eq!(&after[..before.len()], &before[..]);
    assert!(after.windows(2).all(|w| w[0].0 < w[1].0), "out of sequence");
    let mut keys: Vec<_> = after.iter().map(|r| (&r.1, &r.2, r.3)).collect();
    keys.sort();
    let n = keys.len();
    keys.dedup();
    assert_eq!(keys.len(), n, "a sample is in the outbox twice");
}
