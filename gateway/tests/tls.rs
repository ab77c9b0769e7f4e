//! MQTT over TLS through the gateway's own acceptor: mosquitto_sub and mosquitto_pub with the
//! server's CA, a KubeEdge `$hw/` topic, and a silent client that must not block anyone.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gateway::config::{BrokerConfig, TlsConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_tls_with_a_silent_client_present() {
    let dir = tempfile::tempdir().unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let cfg = BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(TlsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert: cert.clone(),
            key,
            handshake_timeout_s: 2,
        }),
        ..BrokerConfig::default()
    };
    let emb = gateway::broker::start(&cfg, &[]).unwrap();
    let tls = emb.tls.unwrap();
    // A client that connects and never speaks.
    let _silent = std::net::TcpStream::connect(tls).unwrap();
    let tool = |n: &str| simulators::testkit::tool(n).unwrap();
    let port = tls.port().to_string();
    let ca = cert.to_str().unwrap().to_string();
    let mut sub = Command::new(tool("mosquitto_sub"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "--cafile",
            &ca,
            "-t",
            "$hw/events/device/rig7/x/twin/update",
            "-C",
            "1",
            "-W",
            "20",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = Command::new(tool("mosquitto_pub"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "--cafile",
                &ca,
                "-t",
                "$hw/events/device/rig7/x/twin/update",
                "-m",
                "over-tls",
            ])
            .status()
            .unwrap();
        assert!(st.success(), "mosquitto_pub over TLS failed");
        if let Some(status) = sub.try_wait().unwrap() {
            assert!(status.success());
            break;
        }
        assert!(Instant::now() < deadline, "no message over TLS");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = sub.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "over-tls");
    assert!(
        emb.clients
            .accepted
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );
}

#[test]
fn a_missing_certificate_is_a_clear_error() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cfg = BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(TlsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            handshake_timeout_s: 10,
        }),
        ..BrokerConfig::default()
    };
    let err = rt
        .block_on(async { gateway::broker::start(&cfg, &[]).map(|_| ()) })
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
}
