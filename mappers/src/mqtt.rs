//! The MQTT device mapper: subscribes to the device's topic (QoS 1) on the embedded or an
//! external broker, maps JSON fields to properties by JSON pointer, publishes writes to the
//! command topic from its template, and reconnects. A payload that does not parse is counted and
//! logged with its topic, never fatal.

use std::sync::Arc;
use std::time::Duration;

use device_models::crd::{AccessMode, PropertyType};
use device_models::protocol::mqtt::{Broker, MqttProtocol, MqttVisitor};
use device_models::protocol::{DeviceProtocol, PropertyVisitor, fill_value_template};
use device_models::{DeviceConfig, Value};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use serde_json::Value as Json;
use tokio::time::Instant;

use crate::metrics::ErrorKind;
use crate::readback::ReadBacks;
use crate::{
    BuildError, Event, Health, MapperIo, MapperOptions, Metrics, Reading, WriteOutcome,
    WriteRequest, backoff, jitter, now_ms,
};

const READ_BACK_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
struct Prop {
    name: Arc<str>,
    ty: PropertyType,
    access: AccessMode,
    visitor: MqttVisitor,
}

/// A built MQTT device mapper.
#[derive(Debug)]
pub struct MqttMapper {
    id: Arc<str>,
    proto: MqttProtocol,
    host: String,
    port: u16,
    props: Vec<Prop>,
    opts: MapperOptions,
    metrics: Arc<Metrics>,
}

fn json_value(p: &Prop, j: &Json) -> Option<Value> {
    let s = &p.visitor.scaling;
    let raw = match j {
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => Value::Float(n.as_f64()?),
        Json::String(t) => match p.ty {
            PropertyType::String | PropertyType::Stream | PropertyType::Bytes => {
                return Some(Value::String(t.clone()));
            }
            ty => Value::parse(ty, t).ok()?,
        },
        _ => return None,
    };
    let v = match raw.as_f64() {
        Some(f) if !matches!(raw, Value::Bool(_)) && (s.scale != 1.0 || s.value_offset != 0.0) => {
            Value::Float(f * s.scale + s.value_offset)
        }
        _ => raw,
    };
    v.to_type(p.ty)
}

impl MqttMapper {
    /// Builds the mapper; the embedded broker's address comes from `opts`.
    pub fn build(cfg: &DeviceConfig, opts: &MapperOptions) -> Result<MqttMapper, BuildError> {
        let DeviceProtocol::Mqtt(proto) = &cfg.protocol else {
            return Err(BuildError::WrongProtocol(cfg.id.clone()));
        };
        let (host, port) = match &proto.broker {
            Broker::Embedded => opts
                .embedded_broker
                .clone()
                .ok_or_else(|| BuildError::NoBroker(cfg.id.clone()))?,
            Broker::External { host, port } => (host.clone(), *port),
        };
        let props = cfg
            .properties
            .iter()
            .filter_map(|p| match &p.visitor {
                PropertyVisitor::Mqtt(v) => Some(Prop {
                    name: p.name.as_str().into(),
                    ty: p.ty,
                    access: p.access,
                    visitor: v.clone(),
                }),
                _ => None,
            })
            .collect();
        Ok(MqttMapper {
            id: cfg.id.as_str().into(),
            proto: proto.clone(),
            host,
            port,
            props,
            opts: opts.clone(),
            metrics: Arc::new(Metrics::default()),
        })
    }

    /// The mapper's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    fn qos(&self) -> QoS {
        if self.proto.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        }
    }

    async fn send(&self, io: &MapperIo, ev: Event) -> bool {
        io.events.send(ev).await.is_ok()
    }

    async fn finish_write(
        &self,
        io: &MapperIo,
        id: u64,
        property: String,
        outcome: WriteOutcome,
    ) -> bool {
        crate::readback::emit_write(io, &self.metrics, &self.id, id, property, outcome).await
    }

    fn command(&self, w: &WriteRequest) -> Result<(String, String), WriteOutcome> {
        let Some(p) = self.props.iter().find(|p| *p.name == w.property) else {
            return Err(WriteOutcome::Invalid(format!(
                "{} has no property {:?}",
                self.id, w.property
            )));
        };
        let (Some(t), Some(topic)) = (
            p.visitor.command.as_ref(),
            self.proto.command_topic.as_ref(),
        ) else {
            return Err(WriteOutcome::ReadOnly(format!(
                "{} has no command template or command topic",
                p.name
            )));
        };
        if p.access == AccessMode::ReadOnly {
            return Err(WriteOutcome::ReadOnly(format!("{} is ReadOnly", p.name)));
        }
        let s = &p.visitor.scaling;
        let text = match &w.value {
            Value::String(v) => serde_json::to_string(v).unwrap_or_default(),
            Value::Bool(b) => b.to_string(),
            v => match v.as_f64() {
                Some(f) => {
                    let raw = (f - s.value_offset) / s.scale;
                    if raw.fract() == 0.0 {
                        format!("{}", raw as i64)
                    } else {
                        format!("{raw}")
                    }
                }
                None => return Err(WriteOutcome::Invalid(format!("{v} cannot be sent"))),
            },
        };
        Ok((topic.clone(), fill_value_template(t, &text)))
    }

    /// Runs until shutdown.
    pub async fn run(mut self, mut io: MapperIo) {
        let client_id = self
            .proto
            .client_id
            .clone()
            .unwrap_or_else(|| format!("ballast-{}", self.id.replace('/', "-")));
        let mut o = MqttOptions::new(client_id, self.host.clone(), self.port);
        o.set_keep_alive(Duration::from_secs(15));
        if let Some(user) = &self.proto.username {
            let password = self
                .proto
                .password_env
                .as_ref()
                .and_then(|k| std::env::var(k).ok())
                .unwrap_or_default();
            o.set_credentials(user.clone(), password);
        }
        let (client, mut eventloop) = AsyncClient::new(o, 64);
        let mut health: Option<Health> = None;
        let mut attempts = 0u32;
        let mut pending = ReadBacks::default();
        loop {
            let next_deadline = pending.next_deadline();
            tokio::select! {
                r = io.shutdown.changed() => {
                    if r.is_err() || *io.shutdown.borrow() {
                        let _ = client.try_disconnect();
                        return;
                    }
                }
                Some(new) = io.reconfigure.recv() => match *new {
                    // New JSON pointers and scaling; the broker session, metrics and health stay.
                    crate::Mapper::Mqtt(new) => {
                        self.props = new.props;
                        tracing::info!(device = %self.id, "properties reconfigured");
                    }
                    _ => tracing::warn!(device = %self.id, "reconfiguration of another protocol ignored"),
                },
                Some(w) = io.writes.recv() => match self.command(&w) {
                    Err(outcome) => { self.finish_write(&io, w.id, w.property, outcome).await; }
                    Ok((topic, payload)) => match client.publish(topic, self.qos(), false, payload).await {
                        Ok(()) => pending.push(w.id, w.property, READ_BACK_WAIT),
                        Err(e) => { self.finish_write(&io, w.id, w.property, WriteOutcome::LinkFailed(e.to_string())).await; }
                    },
                },
                () = crate::readback::until(next_deadline) => {
                    for (id, property) in pending.take_expired(Instant::now()) {
                        self.finish_write(&io, id, property, WriteOutcome::Done { read_back: None }).await;
                    }
                }
                ev = eventloop.poll() => match ev {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                        attempts = 0;
                        if client.subscribe(self.proto.topic.clone(), self.qos()).await.is_err() {
                            continue;
                        }
                        if health != Some(Health::Online) {
                            health = Some(Health::Online);
                            if !self.send(&io, Event::Health { device: self.id.clone(), health: Health::Online, reason: "connected".into() }).await {
                                return;
                            }
                        }
                    }
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                        if !self.message(&p.topic, &p.payload, &io, &mut pending).await {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        self.metrics.error(ErrorKind::Link);
                        if health != Some(Health::Offline) {
                            health = Some(Health::Offline);
                            let ev = Event::Health { device: self.id.clone(), health: Health::Offline, reason: format!("broker {}:{}: {e}", self.host, self.port) };
                            if !self.send(&io, ev).await {
                                return;
                            }
                        }
                        let wait = backoff(attempts, self.opts.min_backoff, self.opts.max_backoff, jitter());
                        attempts = attempts.saturating_add(1);
                        tokio::time::sleep(wait).await;
                    }
                },
            }
        }
    }

    async fn message(
        &self,
        topic: &str,
        payload: &[u8],
        io: &MapperIo,
        pending: &mut ReadBacks,
    ) -> bool {
        self.metrics.request(Duration::ZERO);
        let doc: Json = match serde_json::from_slice(payload) {
            Ok(d) => d,
            Err(e) => {
                self.metrics.error(ErrorKind::Decode);
                tracing::warn!(device = %self.id, topic, error = %e, "payload is not JSON; ignored");
                return true;
            }
        };
        let ts = now_ms();
        let mut readings = Vec::new();
        for p in &self.props {
            let Some(j) = doc.pointer(&p.visitor.pointer) else {
                continue;
            };
            match json_value(p, j) {
                Some(value) => readings.push(Reading::good(&self.id, &p.name, value, ts)),
                None => {
                    self.metrics.error(ErrorKind::Decode);
                    tracing::warn!(device = %self.id, topic, property = %p.name, "value does not fit the property type");
                }
            }
        }
        for (id, property, v) in pending.take_answered(&readings) {
            if !self
                .finish_write(io, id, property, WriteOutcome::Done { read_back: Some(v) })
                .await
            {
                return false;
            }
        }
        if readings.is_empty() {
            return true;
        }
        self.metrics.readings(readings.len());
        self.send(io, Event::Readings(readings)).await
    }
}
