//! MQTT over TLS through the gateway's own acceptor: mosquitto_sub and mosquitto_pub with the
//! server's CA, a KubeEdge `$hw/` topic, and a silent client that must not block anyone. Also
//! the cloud link over TLS with a node certificate.

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
            client_ca: None,
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
            client_ca: None,
        }),
        ..BrokerConfig::default()
    };
    let err = rt
        .block_on(async { gateway::broker::start(&cfg, &[]).map(|_| ()) })
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
}

/// A CA, and a certificate it signs for `name` (server: SANs; client: the common name).
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        Pki {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, f: &str) -> String {
        self.dir.path().join(f).to_str().unwrap().to_string()
    }

    /// Writes `{prefix}-ca.pem` and returns the issuer.
    fn ca(&self, prefix: &str) -> rcgen::Issuer<'static, rcgen::KeyPair> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{prefix} CA"));
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(self.path(&format!("{prefix}-ca.pem")), cert.pem()).unwrap();
        rcgen::Issuer::new(params, key)
    }

    /// Writes `{name}.pem` and `{name}.key`, signed by `issuer`.
    fn leaf(&self, name: &str, sans: &[&str], issuer: &rcgen::Issuer<'_, rcgen::KeyPair>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.signed_by(&key, issuer).unwrap();
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

/// With `client_ca`, only clients with a certificate from that CA get in: mosquitto_pub with
/// one publishes (QoS 1, so the broker acknowledged it); without one, or with one from another
/// CA, the handshake fails and is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_when_a_client_ca_is_set() {
    let pki = Pki::new();
    let site = pki.ca("site");
    pki.leaf("server", &["localhost", "127.0.0.1"], &site);
    pki.leaf("rig7-app", &[], &site);
    let rogue = pki.ca("rogue");
    pki.leaf("intruder", &[], &rogue);
    let cfg = BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(TlsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert: pki.path("server.pem").into(),
            key: pki.path("server.key").into(),
            handshake_timeout_s: 5,
            client_ca: Some(pki.path("site-ca.pem").into()),
        }),
        ..BrokerConfig::default()
    };
    let emb = gateway::broker::start(&cfg, &[]).unwrap();
    let port = emb.tls.unwrap().port().to_string();
    let ca = pki.path("site-ca.pem");
    let publish = |cert: Option<&str>| {
        let mut cmd = Command::new(simulators::testkit::tool("mosquitto_pub").unwrap());
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "--cafile",
            &ca,
            "-q",
            "1",
            "-t",
            "$hw/events/device/rig7/x/twin/update",
            "-m",
            "mtls",
        ]);
        if let Some(name) = cert {
            cmd.args(["--cert", &pki.path(&format!("{name}.pem"))]);
            cmd.args(["--key", &pki.path(&format!("{name}.key"))]);
        }
        cmd.stderr(Stdio::null()).status().unwrap().success()
    };
    assert!(
        publish(Some("rig7-app")),
        "a client with a site certificate was refused"
    );
    assert!(!publish(None), "a client without a certificate got in");
    assert!(
        !publish(Some("intruder")),
        "a client with another CA's certificate got in"
    );
    // The client may give up before the server's side of the handshake has failed and been
    // counted: wait for the count, with a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while emb
        .clients
        .tls_failures
        .load(std::sync::atomic::Ordering::Relaxed)
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "refused handshakes not counted: {}",
            emb.clients
                .tls_failures
                .load(std::sync::atomic::Ordering::Relaxed)
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        emb.clients
            .accepted
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn a_bad_client_ca_file_is_a_clear_error() {
    let pki = Pki::new();
    let site = pki.ca("site");
    pki.leaf("server", &["localhost"], &site);
    std::fs::write(pki.path("empty.pem"), "").unwrap();
    let err = gateway::front::acceptor(
        pki.path("server.pem").as_ref(),
        pki.path("server.key").as_ref(),
        Some(pki.path("empty.pem").as_ref()),
    )
    .map(|_| ())
    .unwrap_err();
    assert!(err.contains("empty.pem: no certificate in it"), "{err}");
}

/// The cloud link over TLS with per-node client certificates: the hub (a session driver behind
/// the gateway's acceptor, requiring a certificate from the nodes' CA) and the edge (the
/// cloud-bridge connector with node rig7's certificate, the SQLite store behind it). Objects
/// land in the store; an edge that does not trust the hub's CA gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloud_link_runs_over_tls_with_a_node_certificate() {
    use cloud_bridge::driver::{self, memory::MemoryHub};
    use cloud_bridge::proto::{Object, edge::Edge, hub::HubConfig, msg::Token};
    use rustls::pki_types::ServerName;
    use std::path::Path;
    use std::sync::Arc;

    let pki = Pki::new();
    let hub_ca = pki.ca("hub");
    pki.leaf("hub", &["localhost", "127.0.0.1"], &hub_ca);
    let nodes_ca = pki.ca("nodes");
    pki.leaf("rig7", &[], &nodes_ca);
    let _ = pki.ca("other");
    let p = |f: &str| pki.path(f);

    let backend = Arc::new(MemoryHub::default());
    {
        let mut s = backend.state();
        s.tokens.insert("rig7".into(), "rig7-token".into());
        s.objects.entry("rig7".into()).or_default().insert(
            "Device/rig7/pump".into(),
            Object {
                version: "3".into(),
                body: "{}".into(),
            },
        );
    }
    let acceptor = gateway::front::acceptor(
        Path::new(&p("hub.pem")),
        Path::new(&p("hub.key")),
        Some(Path::new(&p("nodes-ca.pem"))),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (changes, _) = tokio::sync::broadcast::channel(16);
    {
        let backend = backend.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, backend, rx) =
                    (acceptor.clone(), backend.clone(), changes.subscribe());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let (_stop, mut stop) = tokio::sync::watch::channel(false);
                    driver::hub_session(tls, HubConfig::default(), backend, rx, &mut stop).await;
                });
            }
        });
    }
    let name = ServerName::try_from("localhost").unwrap();

    // An edge that does not trust the hub's CA: the handshake fails on its side.
    let wrong = cloud_bridge::tls::connector(Path::new(&p("other-ca.pem")), None).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(wrong.connect(name.clone(), tcp).await.is_err());

    // Node rig7 with its certificate: the hub's objects land in its SQLite store.
    let connector = cloud_bridge::tls::connector(
        Path::new(&p("hub-ca.pem")),
        Some((Path::new(&p("rig7.pem")), Path::new(&p("rig7.key")))),
    )
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let db = pki.dir.path().join("ballast.db");
    let mut store = gateway::store::Store::open(&db).await.unwrap();
    let session = tokio::spawn(async move {
        let mut edge = Edge::new(
            "rig7",
            Token("rig7-token".into()),
            [],
            std::time::Instant::now(),
        );
        let (_tx, mut reports) = tokio::sync::mpsc::channel(1);
        let (_stop, mut stop) = tokio::sync::watch::channel(false);
        driver::edge_session(tls, &mut edge, &mut store, &mut reports, &mut stop).await
    });
    let check = gateway::store::Store::open(&db).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let objects = check.objects().await.unwrap();
        if objects.get("Device/rig7/pump").map(|o| o.0.as_str()) == Some("3") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the object never arrived over TLS"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    session.abort();
}
