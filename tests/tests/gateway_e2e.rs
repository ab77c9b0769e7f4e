//! The gateway end to end: `ballast-gateway demo` (simulators, gateway, embedded broker, SQLite)
//! as a process, and mosquitto_sub / mosquitto_pub as third-party clients of the KubeEdge twin
//! topics. Then `kill -9` and a look into the SQLite file.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use ballast_tests::repo;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn gateway_bin() -> PathBuf {
    ballast_tests::workspace_bin("ballast-gateway")
}

fn tool(name: &str) -> PathBuf {
    simulators::testkit::tool(name).unwrap()
}

/// One demo at a time: these tests are about one gateway, and two demos at once only add load
/// and noise to the timing of what they check.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Starts the demo; returns it, its broker port, and a channel of its stdout lines.
fn demo(data_dir: &Path) -> (KillOnDrop, u16) {
    let mut child = Command::new(gateway_bin())
        .args([
            "demo",
            "--seconds",
            "120",
            "--broker-port",
            "0",
            "--data-dir",
            data_dir.to_str().unwrap(),
        ])
        .current_dir(repo())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let guard = KillOnDrop(child);
    let mut lines = BufReader::new(out).lines();
    let port = loop {
        let line = lines.next().expect("demo exited").unwrap();
        if let Some(rest) = line.split(" -p ").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap()
                .parse::<u16>()
                .unwrap();
        }
    };
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (guard, port)
}

/// mosquitto_sub on `topics`, lines arriving on the channel once it has subscribed.
fn subscribe(port: u16, topics: &[&str]) -> (KillOnDrop, mpsc::Receiver<String>) {
    // mosquitto_sub block-buffers a pipe: stdbuf makes it line-buffered.
    let mut args = vec![
        "-oL".to_string(),
        tool("mosquitto_sub").to_string_lossy().into_owned(),
    ];
    args.extend([
        "-h".to_string(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "-v".into(),
        "-d".into(),
    ]);
    for t in topics {
        args.push("-t".into());
        args.push(t.to_string());
    }
    let mut child = Command::new(tool("stdbuf"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let l = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("mosquitto_sub never subscribed");
        if l.contains("SUBACK") {
            break;
        }
    }
    (KillOnDrop(child), rx)
}

fn publish(port: u16, topic: &str, payload: &str) {
    // QoS 1: mosquitto_pub waits for the PUBACK, so the broker has the message before the
    // client disconnects (a QoS 0 publish followed at once by a disconnect can be dropped).
    let st = Command::new(tool("mosquitto_pub"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            payload,
        ])
        .status()
        .unwrap();
    assert!(st.success());
}

/// The first message on `rx` for which `f` holds, within `limit`.
fn wait_for(
    rx: &mpsc::Receiver<String>,
    limit: Duration,
    mut f: impl FnMut(&str, &serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    let mut seen: Vec<String> = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            let last: Vec<&str> = seen
                .iter()
                .rev()
                .take(8)
                .map(|l| &l[..l.len().min(160)])
                .collect();
            panic!("expected message never came; last lines seen: {last:#?}");
        };
        seen.push(line.clone());
        let Some((topic, body)) = line.split_once(' ') else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
            continue;
        };
        if f(topic, &v) {
            return v;
        }
    }
}

/// Publishes a request and waits for its answer (the first message for which `f` holds).
fn request(
    port: u16,
    rx: &mpsc::Receiver<String>,
    topic: &str,
    payload: &str,
    f: impl FnMut(&str, &serde_json::Value) -> bool,
) -> serde_json::Value {
    publish(port, topic, payload);
    wait_for(rx, T, f)
}

const PUMP: &str = "$hw/events/device/rig7/pump-p201";
const T: Duration = Duration::from_secs(30);

#[test]
fn twin_topics_with_mosquitto_clients() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let (_gw, port) = demo(dir.path());
    let (_sub, rx) = subscribe(
        port,
        &[
            &format!("{PUMP}/twin/#"),
            "$ke/events/device/rig7/pump-p201/data/update",
        ],
    );
    // Telemetry flows.
    wait_for(&rx, T, |t, v| {
        t.ends_with("/data/update") && v["data"].is_object()
    });
    // Set a desired value: result, document and delta.
    let r = request(
        port,
        &rx,
        &format!("{PUMP}/twin/update"),
        r#"{"event_id":"e2e-1","timestamp":0,"twin":{"speed-setpoint":{"expected":{"value":"1800"}}}}"#,
        |t, v| t.ends_with("/twin/update/result") && v["event_id"] == "e2e-1",
    );
    assert_eq!(r["twin"]["speed-setpoint"]["expected"]["value"], "1800");
    let d = wait_for(&rx, T, |t, v| {
        t.ends_with("/twin/update/delta") && v["event_id"] == "e2e-1"
    });
    assert_eq!(d["delta"]["speed-setpoint"], "1800");
    // The mapper writes it and the next reading closes the loop: twin/get shows it reported.
    let deadline = Instant::now() + T;
    loop {
        let g = request(
            port,
            &rx,
            &format!("{PUMP}/twin/get"),
            r#"{"event_id":"e2e-get"}"#,
            |t, v| t.ends_with("/twin/get/result") && v["event_id"] == "e2e-get",
        );
        if g["twin"]["speed-setpoint"]["actual"]["value"] == "1800" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "desired 1800 never reported: {g}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Bad requests get an error result and change nothing.
    let e = request(
        port,
        &rx,
        &format!("{PUMP}/twin/update"),
        "{not json",
        |t, v| t.ends_with("/twin/update/result") && v["code"] == 400,
    );
    assert!(e["reason"].as_str().unwrap().contains("malformed"));
    let e = request(
        port,
        &rx,
        &format!("{PUMP}/twin/update"),
        r#"{"event_id":"e2e-ro","twin":{"speed":{"expected":{"value":"1"}}}}"#,
        |t, v| t.ends_with("/twin/update/result") && v["event_id"] == "e2e-ro",
    );
    assert_eq!(e["code"], 409);
    let (_sub2, rx2) = subscribe(port, &["$hw/events/device/rig7/nope/twin/get/result"]);
    let e = request(
        port,
        &rx2,
        "$hw/events/device/rig7/nope/twin/get",
        r#"{"event_id":"e2e-404"}"#,
        |_, v| v["event_id"] == "e2e-404",
    );
    assert_eq!(e["code"], 404);
}

#[test]
fn kill_9_loses_no_acknowledged_sample() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, port) = demo(dir.path());
    let (_sub, rx) = subscribe(port, &["$ke/events/device/+/+/data/update"]);
    // Every sample published on data/update was committed first: collect a burst of them.
    let mut seen: Vec<(String, String, String, i64)> = Vec::new();
    let deadline = Instant::now() + T;
    while seen.len() < 150 {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("too few samples");
        let Some((topic, body)) = line.split_once(' ') else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
            continue;
        };
        let device = topic
            .trim_start_matches("$ke/events/device/")
            .trim_end_matches("/data/update")
            .to_string();
        for (prop, d) in v["data"].as_object().unwrap() {
            seen.push((
                device.clone(),
                prop.clone(),
                d["value"].as_str().unwrap().to_string(),
                d["metadata"]["timestamp"].as_i64().unwrap(),
            ));
        }
    }
    // kill -9 (SIGKILL), mid-burst.
    gw.0.kill().unwrap();
    let _ = gw.0.wait();
    let db = dir.path().join("ballast.db");
    let rows = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = gateway::store::Store::open(&db).await.unwrap();
        store.outbox_after(0, 1_000_000).await.unwrap()
    });
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "sequence numbers out of order"
    );
    let stored: std::collections::HashMap<(String, String, i64), Vec<String>> =
        rows.iter().fold(Default::default(), |mut m, r| {
            m.entry((
                r.sample.device.to_string(),
                r.sample.property.to_string(),
                r.sample.ts,
            ))
            .or_default()
            .push(r.sample.value.clone());
            m
        });
    for (dev, prop, value, ts) in &seen {
        let got = stored
            .get(&(dev.clone(), prop.clone(), *ts))
            .unwrap_or_else(|| panic!("{dev} {prop} @{ts} acknowledged but not stored"));
        assert_eq!(
            got,
            &vec![value.clone()],
            "{dev} {prop} @{ts} stored {got:?}"
        );
    }
}
