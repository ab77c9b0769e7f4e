//! The embedded MQTT broker (rumqttd), configured in code.
//!
//! Loopback by default, username/password when configured (required off loopback), 1 MiB
//! segments so memory stays bounded (rumqttd's 100 MB default segments let RSS reach ~140 MB).
//! The gateway's own parts talk to it through in-process links, not TCP. rumqttd runs its
//! router and listeners on their own threads and has no shutdown call: it ends with the process.

use std::collections::HashMap;
use std::net::SocketAddr;

use rumqttd::Notification;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

use crate::config::BrokerConfig;

/// A started broker and the in-process links asked for before it started.
pub struct Embedded {
    /// Where MQTT clients connect (the front door, see `crate::front`).
    pub listen: SocketAddr,
    /// rumqttd's own loopback listener (for the gateway's mappers).
    pub internal: SocketAddr,
    /// Front door connection counters.
    pub clients: std::sync::Arc<crate::front::Clients>,
    /// The TLS listener, when configured.
    pub tls: Option<SocketAddr>,
    /// Links by name.
    pub links: HashMap<String, (LinkTx, LinkRx)>,
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The listen address is taken or not ours.
    #[error("broker cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be used.
    #[error("broker TLS: {0}")]
    Tls(String),
    /// rumqttd refused a link.
    #[error("broker link {0}: {1}")]
    Link(String, String),
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("listen", &self.listen)
            .field("internal", &self.internal)
            .field("links", &self.links.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Whether rumqttd accepts MQTT at `addr`. Sends a real CONNECT and DISCONNECT: rumqttd logs a
/// connection that sends nothing as an error.
fn probe_ready(addr: SocketAddr) -> bool {
    use std::io::Write;
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let id = b"ballast-probe";
    let mut connect = vec![
        0x10,
        (10 + 2 + id.len()) as u8,
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        4,
        0x02,
        0,
        10,
    ];
    connect.extend_from_slice(&(id.len() as u16).to_be_bytes());
    connect.extend_from_slice(id);
    let _ = s.set_read_timeout(Some(std::time::Duration::from_millis(500)));
    if s.write_all(&connect).is_err() {
        return false;
    }
    // CONNACK first, then DISCONNECT: a client that leaves before its CONNACK is logged as an
    // error by rumqttd too.
    let mut ack = [0u8; 4];
    let ready = std::io::Read::read_exact(&mut s, &mut ack).is_ok() && ack[0] == 0x20;
    let _ = s.write_all(&[0xE0, 0]);
    let mut rest = [0u8; 1];
    let _ = std::io::Read::read(&mut s, &mut rest);
    ready
}

fn rumqttd_config(cfg: &BrokerConfig, listen: SocketAddr) -> Config {
    let connections = ConnectionSettings {
        connection_timeout_ms: 5000,
        max_payload_size: cfg.max_payload_bytes,
        max_inflight_count: 100,
        auth: if cfg.users.is_empty() {
            None
        } else {
            Some(cfg.users.clone().into_iter().collect())
        },
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "v4".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: cfg.max_connections + 16,
            max_outgoing_packet_count: 200,
            // rumqttd keeps a commit log per topic; with one telemetry topic per device, big
            // segments multiply. The outbox, not the broker, is the durable path.
            max_segment_size: 64 * 1024,
            max_segment_count: 4,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("v4".to_string(), server)])),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    }
}

/// Starts the broker with the named in-process links: rumqttd on a private loopback port, and
/// the front door on `cfg.listen` (port 0 picks a free port). Call inside a tokio runtime.
pub fn start(cfg: &BrokerConfig, link_names: &[&str]) -> Result<Embedded, BrokerError> {
    let front = std::net::TcpListener::bind(cfg.listen).map_err(|source| BrokerError::Listen {
        addr: cfg.listen,
        source,
    })?;
    let listen = front.local_addr().map_err(|source| BrokerError::Listen {
        addr: cfg.listen,
        source,
    })?;
    // rumqttd binds inside its own thread and cannot report the port it got: find a free
    // loopback port here and hand it over.
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let probe = std::net::TcpListener::bind(loopback).map_err(|source| BrokerError::Listen {
        addr: loopback,
        source,
    })?;
    let internal = probe.local_addr().map_err(|source| BrokerError::Listen {
        addr: loopback,
        source,
    })?;
    drop(probe);
    let mut broker = Broker::new(rumqttd_config(cfg, internal));
    let mut links = HashMap::new();
    for name in link_names {
        let link = broker
            .link(name)
            .map_err(|e| BrokerError::Link(name.to_string(), e.to_string()))?;
        links.insert(name.to_string(), link);
    }
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })
        .map_err(|source| BrokerError::Listen {
            addr: internal,
            source,
        })?;
    // Wait (bounded) until rumqttd accepts, so callers can connect at once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !probe_ready(internal) {
        if std::time::Instant::now() > deadline {
            return Err(BrokerError::Listen {
                addr: internal,
                source: std::io::Error::other("broker did not start listening within 5 s"),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    front
        .set_nonblocking(true)
        .map_err(|source| BrokerError::Listen {
            addr: listen,
            source,
        })?;
    let front = tokio::net::TcpListener::from_std(front).map_err(|source| BrokerError::Listen {
        addr: listen,
        source,
    })?;
    let clients = std::sync::Arc::new(crate::front::Clients::default());
    tokio::spawn(crate::front::serve(front, internal, clients.clone()));
    let tls = match &cfg.tls {
        None => None,
        Some(t) => {
            let acceptor = crate::front::acceptor(&t.cert, &t.key, t.client_ca.as_deref())
                .map_err(BrokerError::Tls)?;
            let l =
                std::net::TcpListener::bind(t.listen).map_err(|source| BrokerError::Listen {
                    addr: t.listen,
                    source,
                })?;
            let addr = l.local_addr().map_err(|source| BrokerError::Listen {
                addr: t.listen,
                source,
            })?;
            l.set_nonblocking(true)
                .map_err(|source| BrokerError::Listen { addr, source })?;
            let l = tokio::net::TcpListener::from_std(l)
                .map_err(|source| BrokerError::Listen { addr, source })?;
            let handshake = std::time::Duration::from_secs(t.handshake_timeout_s.max(1));
            tokio::spawn(crate::front::serve_tls(
                l,
                internal,
                acceptor,
                handshake,
                clients.clone(),
            ));
            Some(addr)
        }
    };
    Ok(Embedded {
        listen,
        internal,
        clients,
        tls,
        links,
    })
}

/// Reads an in-process link until it closes or `tx` is dropped, handing on every publish as
/// (client topic name, payload).
///
/// rumqttd pauses a link whose unread notifications reach its channel capacity (200), puts
/// `Notification::Unschedule` behind them, and forwards nothing more until the link says it is
/// ready again: its own network links do so, and so must ours. Without the `wake`, a burst of
/// 200 requests read late (a loaded machine) left the gateway deaf to all later ones.
/// `Ok(None)` is not the end either: rumqttd wakes the link once per batch, and a wake whose
/// batch an earlier read already took yields nothing.
pub async fn forward_link(mut link_rx: LinkRx, tx: tokio::sync::mpsc::Sender<(String, Vec<u8>)>) {
    loop {
        let n = match link_rx.next().await {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!(error = %e, "broker link closed: MQTT requests are no longer read");
                return;
            }
        };
        match n {
            Notification::Forward(f) => {
                let topic = crate::front::outward(&String::from_utf8_lossy(&f.publish.topic));
                if tx.send((topic, f.publish.payload.to_vec())).await.is_err() {
                    return;
                }
            }
            Notification::Unschedule => {
                if let Err(e) = link_rx.wake().await {
                    tracing::error!(error = %e, "broker link closed: MQTT requests are no longer read");
                    return;
                }
            }
            _ => {}
        }
    }
}
