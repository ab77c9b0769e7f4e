//! Simulated devices that speak MQTT themselves (the gas detector of the example): each
//! publishes a JSON document on its `topic` every interval, laid out by its properties' JSON
//! pointers, and applies the JSON documents it receives on its `commandTopic`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use device_models::DeviceConfig;
use device_models::crd::PropertyType;
use device_models::protocol::{DeviceProtocol, PropertyVisitor};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value as Json;

use crate::rng::Rng;

/// Faults of a simulated MQTT device. All off by default.
#[derive(Debug, Clone, Default)]
pub struct MqttFaults {
    /// Every Nth publication is not JSON.
    pub garbage_every: Option<u64>,
    /// Nothing is published until this instant.
    pub silent_until: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Prop {
    name: String,
    ty: PropertyType,
    pointer: String,
}

/// A simulated MQTT device.
#[derive(Debug)]
pub struct MqttDevice {
    /// Device id.
    pub id: String,
    topic: String,
    command_topic: Option<String>,
    qos: QoS,
    props: Vec<Prop>,
    state: Mutex<(BTreeMap<String, f64>, Rng, f64)>,
    faults: Mutex<MqttFaults>,
    /// Documents published.
    pub published: AtomicU64,
    /// Commands applied.
    pub commands: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sets `value` at JSON pointer `ptr` in `doc`, creating objects on the way.
pub fn set_pointer(doc: &mut Json, ptr: &str, value: Json) {
    let mut cur = doc;
    for raw in ptr.split('/').skip(1) {
        let key = raw.replace("~1", "/").replace("~0", "~");
        if !cur.is_object() {
            *cur = Json::Object(serde_json::Map::new());
        }
        let Json::Object(map) = cur else { return };
        cur = map.entry(key).or_insert(Json::Null);
    }
    *cur = value;
}

impl MqttDevice {
    /// The simulated device of an MQTT device config; `None` for other protocols.
    pub fn new(cfg: &DeviceConfig, seed: u64) -> Option<Arc<MqttDevice>> {
        let DeviceProtocol::Mqtt(m) = &cfg.protocol else {
            return None;
        };
        let props: Vec<Prop> = cfg
            .properties
            .iter()
            .filter_map(|p| match &p.visitor {
                PropertyVisitor::Mqtt(v) => Some(Prop {
                    name: p.name.clone(),
                    ty: p.ty,
                    pointer: v.pointer.clone(),
                }),
                _ => None,
            })
            .collect();
        let values = props.iter().map(|p| (p.name.clone(), 0.0)).collect();
        Some(Arc::new(MqttDevice {
            id: cfg.id.clone(),
            // A device publishes on a concrete topic; wildcards of the filter become "sim".
            topic: m
                .topic
                .split('/')
                .map(|l| if l == "+" || l == "#" { "sim" } else { l })
                .collect::<Vec<_>>()
                .join("/"),
            command_topic: m.command_topic.clone(),
            qos: if m.qos == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
            props,
            state: Mutex::new((values, Rng::new(seed ^ Rng::hash(&cfg.id)), 0.0)),
            faults: Mutex::new(MqttFaults::default()),
            published: AtomicU64::new(0),
            commands: AtomicU64::new(0),
        }))
    }

    /// Replaces the faults.
    pub fn set_faults(&self, f: MqttFaults) {
        *lock(&self.faults) = f;
    }

    /// The topic it publishes on.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Current value of a property.
    pub fn value(&self, property: &str) -> Option<f64> {
        lock(&self.state).0.get(property).copied()
    }

    fn step(&self, dt: f64) {
        let mut g = lock(&self.state);
        let (values, rng, puff) = &mut *g;
        // An occasional gas puff that decays; the detector alarms above 10 ppm H2S or 20 %LEL.
        if rng.below(400) == 0 {
            *puff = 8.0 + rng.unit() * 12.0;
        }
        *puff *= (-dt / 20.0).exp();
        let h2s = (0.3 + *puff + rng.noise(0.05)).max(0.0);
        let lel = (1.0 + *puff * 1.5 + rng.noise(0.2)).max(0.0);
        for (name, v) in values.iter_mut() {
            match name.as_str() {
                "h2s" => *v = h2s,
                "lel" => *v = lel,
                "alarm" => *v = f64::from(u8::from(h2s > 10.0 || lel > 20.0)),
                "beacon" => {}
                _ => *v = (*v + rng.noise(0.5)).clamp(0.0, 100.0),
            }
        }
    }

    /// The JSON document it publishes now.
    pub fn document(&self) -> Json {
        let g = lock(&self.state);
        let mut doc = Json::Object(serde_json::Map::new());
        for p in &self.props {
            let v = g.0.get(&p.name).copied().unwrap_or(0.0);
            let j = match p.ty {
                PropertyType::Boolean => Json::Bool(v != 0.0),
                PropertyType::Int => Json::from(v.round() as i64),
                _ => Json::from((v * 100.0).round() / 100.0),
            };
            set_pointer(&mut doc, &p.pointer, j);
        }
        doc
    }

    /// Applies a command document: each property whose pointer is present takes that value.
    pub fn command(&self, payload: &[u8]) -> bool {
        let Ok(doc) = serde_json::from_slice::<Json>(payload) else {
            return false;
        };
        let mut g = lock(&self.state);
        let mut any = false;
        for p in &self.props {
            let Some(v) = doc.pointer(&p.pointer) else {
                continue;
            };
            let x = match v {
                Json::Bool(b) => f64::from(u8::from(*b)),
                Json::Number(n) => n.as_f64().unwrap_or(0.0),
                Json::String(s) => match s.as_str() {
                    "true" | "on" => 1.0,
                    "false" | "off" => 0.0,
                    other => other.parse().unwrap_or(0.0),
                },
                _ => continue,
            };
            g.0.insert(p.name.clone(), x);
            any = true;
        }
        if any {
            self.commands.fetch_add(1, Ordering::Relaxed);
        }
        any
    }
}

/// Connects `device` to the broker at `host:port` and runs it: publishes every `interval`,
/// obeys commands, reconnects when the broker goes away. Runs until aborted.
pub async fn run(device: Arc<MqttDevice>, host: String, port: u16, interval: Duration) {
    let client_id = format!("ballast-sim-{}", device.id.replace('/', "-"));
    let mut opts = MqttOptions::new(client_id, host, port);
    opts.set_keep_alive(Duration::from_secs(15));
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    let cmd_topic = device.command_topic.clone();
    let dev = device.clone();
    let sub_client = client.clone();
    let events = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if let Some(t) = &cmd_topic {
                        let _ = sub_client.subscribe(t.clone(), QoS::AtLeastOnce).await;
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    dev.command(&p.payload);
                }
                Ok(_) => {}
                // Broker gone: rumqttc reconnects on the next poll; do not spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    });
    let _guard = crate::AbortOnDrop(events);
    let mut iv = tokio::time::interval(interval);
    let mut last = tokio::time::Instant::now();
    loop {
        iv.tick().await;
        let now = tokio::time::Instant::now();
        device.step((now - last).as_secs_f64());
        last = now;
        let faults = lock(&device.faults).clone();
        if faults.silent_until.is_some_and(|t| Instant::now() < t) {
            continue;
        }
        let n = device.published.load(Ordering::Relaxed) + 1;
        let payload = if crate::every(faults.garbage_every, n) {
            b"{\"gas\": {\"h2s\": 0.4, \"lel\"".to_vec()
        } else {
            device.document().to_string().into_bytes()
        };
        if client
            .publish(device.topic.clone(), device.qos, false, payload)
            .await
            .is_ok()
        {
            device.published.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn detector() -> Arc<MqttDevice> {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../device-models/examples/oil-platform");
        let set = device_models::check_path(&dir);
        let cfg = set
            .devices
            .iter()
            .find(|d| d.id == "rig7/gas-gd101")
            .unwrap();
        MqttDevice::new(cfg, 1).unwrap()
    }

    #[test]
    fn document_follows_the_pointers() {
        let d = detector();
        d.step(1.0);
        let doc = d.document();
        assert!(doc.pointer("/gas/h2s").unwrap().is_number(), "{doc}");
        assert!(doc.pointer("/gas/lel").unwrap().is_number());
        assert_eq!(doc.pointer("/alarm"), Some(&Json::Bool(false)));
        assert_eq!(d.topic(), "rig7/wellbay/gd101/state");
    }

    #[test]
    fn commands_set_properties() {
        let d = detector();
        assert!(d.command(br#"{"beacon": true}"#));
        assert_eq!(d.value("beacon"), Some(1.0));
        assert_eq!(d.document().pointer("/beacon"), Some(&Json::Bool(true)));
        assert!(!d.command(b"not json"));
        assert!(!d.command(br#"{"unrelated": 1}"#));
    }

    #[test]
    fn pointers_build_nested_objects() {
        let mut doc = Json::Null;
        set_pointer(&mut doc, "/a/b~1c", Json::from(1));
        assert_eq!(doc, serde_json::json!({"a": {"b/c": 1}}));
    }
}
