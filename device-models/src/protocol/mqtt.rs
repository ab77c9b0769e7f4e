//! Devices that speak MQTT themselves (protocol `mqtt`).
//!
//! Device `configData`: `broker` (`embedded`, the default, for the gateway's own broker, or
//! `mqtt://host:port`), `topic` (where the device publishes JSON), `commandTopic` (where it
//! takes commands), `qos` (0 or 1, default 1), `clientId`, `username` and `passwordEnv` (the
//! name of an environment variable holding the password: secrets stay out of device files).
//! Property `configData`: `pointer` (RFC 6901 JSON pointer into the payload, for instance
//! `/gas/h2s`), `scale`, `valueOffset`, `deadband`, and `command` (a payload template with
//! `{value}`) for writable properties.

use serde_json::{Map, Value};

use super::fields::{FieldIssue, Fields};
use super::{Scaling, check_value_template, parse_scaling};

/// Where the device's broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broker {
    /// The gateway's embedded broker.
    Embedded,
    /// An external broker.
    External {
        /// Host name or address.
        host: String,
        /// Port (default 1883).
        port: u16,
    },
}

/// Device-level MQTT settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttProtocol {
    /// Which broker.
    pub broker: Broker,
    /// Topic the device publishes its readings on (wildcards allowed).
    pub topic: String,
    /// Topic the device takes commands on.
    pub command_topic: Option<String>,
    /// QoS of subscriptions and commands.
    pub qos: u8,
    /// Client id; default `ballast-{namespace}-{name}`.
    pub client_id: Option<String>,
    /// User name for an external broker.
    pub username: Option<String>,
    /// Environment variable that holds the password.
    pub password_env: Option<String>,
}

/// Per-property MQTT settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttVisitor {
    /// JSON pointer to the value in the payload.
    pub pointer: String,
    /// Numeric post-processing.
    pub scaling: Scaling,
    /// Command payload template (`{value}` replaced), if writable.
    pub command: Option<String>,
}

/// Checks an MQTT topic filter for subscribing: not empty, no NUL, `#` only last, `+` and `#`
/// alone in their level.
pub fn check_topic_filter(t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Err("must not be empty".into());
    }
    if t.contains('\0') {
        return Err("must not contain NUL".into());
    }
    let levels: Vec<&str> = t.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i != levels.len() - 1) {
            return Err(format!("{t:?}: # must be a whole level and the last one"));
        }
        if level.contains('+') && *level != "+" {
            return Err(format!("{t:?}: + must be a whole level"));
        }
    }
    Ok(())
}

fn check_topic_name(t: &str) -> Result<(), String> {
    check_topic_filter(t)?;
    if t.contains(['+', '#']) {
        return Err(format!(
            "{t:?}: a topic to publish on cannot hold wildcards"
        ));
    }
    Ok(())
}

fn parse_broker(s: &str) -> Result<Broker, String> {
    if s.eq_ignore_ascii_case("embedded") {
        return Ok(Broker::Embedded);
    }
    let rest = s
        .strip_prefix("mqtt://")
        .or_else(|| s.strip_prefix("tcp://"))
        .ok_or_else(|| format!("{s:?} is not \"embedded\" or mqtt://host:port"))?;
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("{p:?} is not a port number"))?,
        ),
        None => (rest, 1883),
    };
    if host.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    Ok(Broker::External {
        host: host.to_string(),
        port,
    })
}

/// Reads an MQTT device's settings.
pub fn parse_protocol(
    config: Option<&Map<String, Value>>,
    path: &str,
) -> (Option<MqttProtocol>, Vec<FieldIssue>) {
    let mut f = Fields::new(config, path);
    let broker = match f.string("broker") {
        None => Some(Broker::Embedded),
        Some(b) => parse_broker(&b).map_err(|e| f.error("broker", e)).ok(),
    };
    let topic = f.string("topic");
    match &topic {
        None => f.error(
            "topic",
            "missing (the topic the device publishes its readings on)",
        ),
        Some(t) => {
            if let Err(e) = check_topic_filter(t) {
                f.error("topic", e);
            }
        }
    }
    let command_topic = f.string("commandTopic");
    if let Some(t) = &command_topic
        && let Err(e) = check_topic_name(t)
    {
        f.error("commandTopic", e);
    }
    let qos = f.int("qos", 0, 1).unwrap_or(1) as u8;
    let client_id = f.string("clientId");
    let username = f.string("username");
    let password_env = f.string("passwordEnv");
    if f.has("password") {
        f.error(
            "password",
            "a password does not belong in a device file; put it in an environment variable and name it in passwordEnv",
        );
    }
    let issues = f.finish();
    let ok = issues.iter().all(|i| i.warning);
    let protocol = match (broker, topic) {
        (Some(broker), Some(topic)) if ok => Some(MqttProtocol {
            broker,
            topic,
            command_topic,
            qos,
            client_id,
            username,
            password_env,
        }),
        _ => None,
    };
    (protocol, issues)
}

/// Reads one property's settings.
pub fn parse_visitor(
    config: Option<&Map<String, Value>>,
    path: &str,
) -> (Option<MqttVisitor>, Vec<FieldIssue>) {
    let mut f = Fields::new(config, path);
    let pointer = f.string("pointer");
    match &pointer {
        None => f.error(
            "pointer",
            "missing (a JSON pointer to the value in the payload, for instance /gas/h2s)",
        ),
        Some(p) if !p.is_empty() && !p.starts_with('/') => f.error(
            "pointer",
            format!("{p:?} is not a JSON pointer: it must start with / (RFC 6901)"),
        ),
        Some(p) if has_bad_escape(p) => f.error(
            "pointer",
            format!("{p:?}: ~ must be followed by 0 or 1 (RFC 6901)"),
        ),
        _ => {}
    }
    let scaling = parse_scaling(&mut f);
    let command = f.string("command");
    if let Some(c) = &command
        && let Err(e) = check_value_template(c)
    {
        f.error("command", e);
    }
    let issues = f.finish();
    let visitor = match pointer {
        Some(pointer) if issues.iter().all(|i| i.warning) => Some(MqttVisitor {
            pointer,
            scaling,
            command,
        }),
        _ => None,
    };
    (visitor, issues)
}

fn has_bad_escape(p: &str) -> bool {
    let b = p.as_bytes();
    b.iter()
        .enumerate()
        .any(|(i, c)| *c == b'~' && !matches!(b.get(i + 1), Some(b'0' | b'1')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn device_and_property() {
        let (p, issues) = parse_protocol(
            Some(&obj(
                json!({"topic": "site/gas/gd101", "commandTopic": "site/gas/gd101/cmd"}),
            )),
            "c",
        );
        assert!(issues.is_empty(), "{issues:?}");
        let p = p.unwrap();
        assert_eq!(p.broker, Broker::Embedded);
        assert_eq!(p.qos, 1);
        let (v, issues) = parse_visitor(
            Some(&obj(json!({"pointer": "/gas/h2s", "scale": 0.1}))),
            "v",
        );
        assert!(issues.is_empty());
        let v = v.unwrap();
        assert_eq!(v.pointer, "/gas/h2s");
        assert_eq!(v.scaling.scale, 0.1);
        // The pointer works with serde_json's own pointer lookup.
        assert_eq!(
            json!({"gas": {"h2s": 4}}).pointer(&v.pointer),
            Some(&json!(4))
        );
    }

    #[test]
    fn errors() {
        let (p, issues) = parse_protocol(
            Some(&obj(
                json!({"broker": "http://x", "topic": "a/#/b", "commandTopic": "a/+",
                "password": "hunter2"}),
            )),
            "c",
        );
        assert!(p.is_none());
        let paths: Vec<_> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            ["c.broker", "c.topic", "c.commandTopic", "c.password"]
        );
        // The secret itself never appears in a message.
        assert!(issues.iter().all(|i| !i.message.contains("hunter2")));
        let (v, issues) = parse_visitor(Some(&obj(json!({"pointer": "gas.h2s"}))), "v");
        assert!(v.is_none());
        assert_eq!(issues[0].path, "v.pointer");
        assert_eq!(
            parse_broker("mqtt://10.1.2.3:2883"),
            Ok(Broker::External {
                host: "10.1.2.3".into(),
                port: 2883
            })
        );
    }
}
