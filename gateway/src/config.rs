//! `gateway.toml`: one file, every field documented, every field defaulted, unknown keys refused
//! by name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The gateway's configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This node's name (KubeEdge `nodeName`); devices bound to another node are not run.
    pub node_name: String,
    /// Where the SQLite file lives (`ballast.db`); created if missing.
    pub data_dir: PathBuf,
    /// Device and DeviceModel YAML to run in standalone mode (no cloud). When absent, the
    /// gateway runs what its store last applied.
    pub devices_dir: Option<PathBuf>,
    /// The embedded MQTT broker.
    pub broker: BrokerConfig,
    /// The telemetry outbox.
    pub outbox: OutboxConfig,
    /// The metrics and health endpoint.
    pub metrics: MetricsConfig,
}

/// Embedded broker settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// MQTT 3.1.1 listener; loopback unless set otherwise. A non-loopback listener requires
    /// `users`.
    pub listen: SocketAddr,
    /// Username → password for clients. Required on a non-loopback listener.
    pub users: std::collections::BTreeMap<String, String>,
    /// Largest accepted payload, bytes.
    pub max_payload_bytes: usize,
    /// Most client connections (default 100; rumqttd reserves memory per allowed connection,
    /// about 6 KB each).
    pub max_connections: usize,
    /// An MQTT-over-TLS listener, terminated by the gateway (not by rumqttd).
    pub tls: Option<TlsConfig>,
}

/// TLS listener settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Where TLS clients connect (conventionally port 8883).
    pub listen: SocketAddr,
    /// PEM file with the server certificate chain.
    pub cert: PathBuf,
    /// PEM file with the private key.
    pub key: PathBuf,
    /// Seconds a client has to finish its handshake (default 10).
    #[serde(default = "default_handshake_s")]
    pub handshake_timeout_s: u64,
    /// PEM file with the CA certificate(s) that sign client certificates. When set, every TLS
    /// client must present a certificate chained to one of them (mutual TLS); a client without
    /// one, or with one from another CA, fails the handshake. Unset: no client certificates.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

fn default_handshake_s() -> u64 {
    10
}

/// What the outbox keeps, and what happens at its bounds. The bounds are enforced every minute;
/// what is dropped is counted (`ballast_outbox_dropped_total{reason}`) and logged.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// Most rows kept.
    pub max_rows: u64,
    /// Oldest sample kept, seconds (older samples are dropped whatever the policy).
    pub max_age_s: u64,
    /// Most bytes of the store file in use (SQLite pages holding data: the outbox, and the small
    /// twins and objects tables; the WAL is not counted).
    pub max_bytes: u64,
    /// Which samples go when `max_rows` or `max_bytes` is reached.
    pub policy: OutboxPolicy,
}

/// Which samples the outbox drops at its row and byte bounds.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OutboxPolicy {
    /// Keep the newest samples: the cloud gets the end of a long outage (the default).
    #[default]
    DropOldest,
    /// Keep the oldest samples: the cloud gets the start of a long outage; newer samples are
    /// dropped until the link drains the outbox.
    DropNewest,
}

/// Metrics endpoint.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `/metrics` and `/healthz` listener (loopback by default); `None` turns it off.
    pub listen: Option<SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_name: "edge".into(),
            data_dir: PathBuf::from("/var/lib/ballast"),
            devices_dir: None,
            broker: BrokerConfig::default(),
            outbox: OutboxConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            users: Default::default(),
            max_payload_bytes: 1024 * 1024,
            max_connections: 100,
            tls: None,
        }
    }
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            max_rows: 10_000_000,
            max_age_s: 7 * 24 * 3600,
            max_bytes: 1 << 30,
            policy: OutboxPolicy::DropOldest,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
        }
    }
}

/// A config that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML, or an unknown key, or a wrong type.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message (it names the key and the line).
        message: String,
    },
    /// Valid TOML, unsafe settings.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and checks config text (`path` names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        // A client on a non-loopback listener must prove who it is: a password, or on the TLS
        // listener a client certificate (broker.tls.client_ca).
        let tls_open = cfg
            .broker
            .tls
            .as_ref()
            .filter(|t| !t.listen.ip().is_loopback() && t.client_ca.is_none())
            .map(|t| t.listen);
        let open = Some(cfg.broker.listen)
            .filter(|l| !l.ip().is_loopback())
            .or(tls_open);
        if let Some(addr) = open.filter(|_| cfg.broker.users.is_empty()) {
            return Err(ConfigError::Invalid {
                path: path.into(),
                message: format!(
                    "a broker listener ({addr}) is not loopback: set broker.users (username = \"password\") so that clients must log in, or on the TLS listener broker.tls.client_ca so that they must present a certificate"
                ),
            });
        }
        Ok(cfg)
    }

    /// The SQLite file.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("ballast.db")
    }

    /// Oldest outbox sample kept.
    pub fn outbox_max_age(&self) -> Duration {
        Duration::from_secs(self.outbox.max_age_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.example.toml");
        let cfg = Config::load(&path).unwrap();
        assert_eq!(cfg.node_name, "rig7-edge");
        assert_eq!(cfg.broker.listen, "127.0.0.1:1883".parse().unwrap());
        assert!(cfg.devices_dir.is_some());
    }

    #[test]
    fn empty_config_is_all_defaults() {
        assert_eq!(
            Config::parse(Path::new("x.toml"), "").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse(
            Path::new("g.toml"),
            "node_name = \"a\"\n[broker]\nlisten_on = \"127.0.0.1:1\"\n",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("g.toml: "), "{msg}");
        assert!(msg.contains("listen_on"), "{msg}");
    }

    #[test]
    fn outbox_policy_is_explicit() {
        let cfg = Config::parse(
            Path::new("g.toml"),
            "[outbox]\npolicy = \"drop_newest\"\nmax_bytes = 5000000\n",
        )
        .unwrap();
        assert_eq!(cfg.outbox.policy, OutboxPolicy::DropNewest);
        assert_eq!(cfg.outbox.max_bytes, 5_000_000);
        assert_eq!(Config::default().outbox.policy, OutboxPolicy::DropOldest);
        let err = Config::parse(Path::new("g.toml"), "[outbox]\npolicy = \"keep_all\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("keep_all") && err.contains("drop_oldest"),
            "{err}"
        );
    }

    #[test]
    fn non_loopback_broker_needs_users() {
        let err = Config::parse(Path::new("g.toml"), "[broker]\nlisten = \"0.0.0.0:1883\"\n")
            .unwrap_err();
        assert!(err.to_string().contains("broker.users"));
        let ok = Config::parse(
            Path::new("g.toml"),
            "[broker]\nlisten = \"0.0.0.0:1883\"\nusers = { app = \"s3cret\" }\n",
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn open_tls_listener_needs_users_or_client_certificates() {
        let tls = "[broker.tls]\nlisten = \"0.0.0.0:8883\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n";
        let err = Config::parse(Path::new("g.toml"), tls).unwrap_err();
        assert!(err.to_string().contains("0.0.0.0:8883"), "{err}");
        assert!(err.to_string().contains("client_ca"), "{err}");
        let mtls = format!("{tls}client_ca = \"ca.pem\"\n");
        let cfg = Config::parse(Path::new("g.toml"), &mtls).unwrap();
        let t = cfg.broker.tls.unwrap();
        assert_eq!(t.client_ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(t.handshake_timeout_s, 10);
        // Client certificates do not open the plain listener.
        let both = format!("[broker]\nlisten = \"0.0.0.0:1883\"\n{mtls}");
        assert!(Config::parse(Path::new("g.toml"), &both).is_err());
    }
}
