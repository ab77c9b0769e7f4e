//! The serial line instrument mapper: frames records by delimiter or length, parses them with
//! the device's template or pattern, checks their checksum, writes commands, and reopens the
//! port when it disappears (USB adapters do).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use device_models::crd::{AccessMode, PropertyType};
use device_models::protocol::serial::{Framing, SerialProtocol, SerialVisitor};
use device_models::protocol::{DeviceProtocol, Parity, PropertyVisitor, fill_value_template};
use device_models::{DeviceConfig, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::metrics::ErrorKind;
use crate::readback::ReadBacks;
use crate::{
    BuildError, Event, Health, MapperIo, MapperOptions, Metrics, Reading, WriteOutcome,
    WriteRequest, backoff, jitter, now_ms,
};

/// Records in a row with a bad checksum or format before the device is `unhealthy`.
const BAD_RECORDS_UNHEALTHY: u32 = 3;
/// How long a write waits for a record that shows the new value.
const READ_BACK_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
struct Prop {
    name: Arc<str>,
    ty: PropertyType,
    access: AccessMode,
    visitor: SerialVisitor,
}

/// A built serial instrument mapper.
#[derive(Debug)]
pub struct SerialMapper {
    id: Arc<str>,
    proto: SerialProtocol,
    props: Vec<Prop>,
    opts: MapperOptions,
    metrics: Arc<Metrics>,
}

/// Converts a record field to the property's value: numbers are scaled, text stays text.
fn field_value(p: &Prop, text: &str) -> Option<Value> {
    let s = &p.visitor.scaling;
    match p.ty {
        PropertyType::String | PropertyType::Stream | PropertyType::Bytes => {
            Some(Value::String(text.to_string()))
        }
        PropertyType::Boolean => Value::parse(PropertyType::Boolean, text).ok(),
        _ => {
            let raw: f64 = text.trim().parse().ok()?;
            let v = raw * s.scale + s.value_offset;
            Value::Float(v).to_type(p.ty)
        }
    }
}

impl SerialMapper {
    /// Builds the mapper.
    pub fn build(cfg: &DeviceConfig, opts: &MapperOptions) -> Result<SerialMapper, BuildError> {
        let DeviceProtocol::Serial(proto) = &cfg.protocol else {
            return Err(BuildError::WrongProtocol(cfg.id.clone()));
        };
        let props = cfg
            .properties
            .iter()
            .filter_map(|p| match &p.visitor {
                PropertyVisitor::Serial(v) => Some(Prop {
                    name: p.name.as_str().into(),
                    ty: p.ty,
                    access: p.access,
                    visitor: v.clone(),
                }),
                _ => None,
            })
            .collect();
        Ok(SerialMapper {
            id: cfg.id.as_str().into(),
            proto: proto.clone(),
            props,
            opts: opts.clone(),
            metrics: Arc::new(Metrics::default()),
        })
    }

    /// The mapper's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    fn open(&self) -> Result<tokio_serial::SerialStream, String> {
        let l = &self.proto.line;
        let b = tokio_serial::new(&l.port, l.baud_rate)
            .parity(match l.parity {
                Parity::None => tokio_serial::Parity::None,
                Parity::Even => tokio_serial::Parity::Even,
                Parity::Odd => tokio_serial::Parity::Odd,
            })
            .stop_bits(if l.stop_bits == 2 {
                tokio_serial::StopBits::Two
            } else {
                tokio_serial::StopBits::One
            });
        tokio_serial::SerialStream::open(&b).map_err(|e| format!("open {}: {e}", l.port))
    }

    async fn health(
        &self,
        io: &MapperIo,
        last: &mut Option<Health>,
        h: Health,
        reason: String,
    ) -> bool {
        if *last == Some(h) {
            return true;
        }
        *last = Some(h);
        io.events
            .send(Event::Health {
                device: self.id.clone(),
                health: h,
                reason,
            })
            .await
            .is_ok()
    }

    async fn finish_write(&self, io: &MapperIo, id: u64, property: String, outcome: WriteOutcome) {
        crate::readback::emit_write(io, &self.metrics, &self.id, id, property, outcome).await;
    }

    /// The command bytes of a write, or why there are none.
    fn command(&self, w: &WriteRequest) -> Result<Vec<u8>, WriteOutcome> {
        let Some(p) = self.props.iter().find(|p| *p.name == w.property) else {
            return Err(WriteOutcome::Invalid(format!(
                "{} has no property {:?}",
                self.id, w.property
            )));
        };
        let Some(t) = p
            .visitor
            .write
            .as_ref()
            .filter(|_| p.access == AccessMode::ReadWrite)
        else {
            return Err(WriteOutcome::ReadOnly(format!(
                "{} has no write command",
                p.name
            )));
        };
        let s = &p.visitor.scaling;
        let text = match (&w.value, p.ty) {
            (Value::String(v), _) => v.clone(),
            (v, ty) => {
                let Some(f) = v.as_f64() else {
                    return Err(WriteOutcome::Invalid(format!("{v} is not a number")));
                };
                let raw = (f - s.value_offset) / s.scale;
                if ty == PropertyType::Int || raw.fract() == 0.0 {
                    format!("{}", raw.round() as i64)
                } else {
                    format!("{raw}")
                }
            }
        };
        let mut cmd = fill_value_template(t, &text).into_bytes();
        cmd.extend_from_slice(self.proto.command_suffix.as_bytes());
        Ok(cmd)
    }

    /// Runs until shutdown.
    pub async fn run(mut self, mut io: MapperIo) {
        let mut attempts = 0u32;
        let mut health = None;
        loop {
            if *io.shutdown.borrow() {
                return;
            }
            let mut port = match self.open() {
                Ok(p) => p,
                Err(why) => {
                    self.metrics.error(ErrorKind::Link);
                    if !self.health(&io, &mut health, Health::Offline, why).await {
                        return;
                    }
                    let wait = backoff(
                        attempts,
                        self.opts.min_backoff,
                        self.opts.max_backoff,
                        jitter(),
                    );
                    attempts = attempts.saturating_add(1);
                    let until = Instant::now() + wait;
                    loop {
                        tokio::select! {
                            _ = io.shutdown.changed() => return,
                            () = tokio::time::sleep_until(until) => break,
                            Some(w) = io.writes.recv() => {
                                self.finish_write(&io, w.id, w.property, WriteOutcome::LinkFailed("serial port not open".into())).await;
                            }
                        }
                    }
                    continue;
                }
            };
            attempts = 0;
            let reason = self.session(&mut port, &mut io, &mut health).await;
            match reason {
                None => return,
                Some(why) => {
                    self.metrics.error(ErrorKind::Link);
                    if !self.health(&io, &mut health, Health::Offline, why).await {
                        return;
                    }
                }
            }
        }
    }

    /// Serves one open port; returns why it ended (`None`: shutdown or nobody listening).
    async fn session(
        &mut self,
        port: &mut tokio_serial::SerialStream,
        io: &mut MapperIo,
        health: &mut Option<Health>,
    ) -> Option<String> {
        let mut buf: Vec<u8> = Vec::with_capacity(self.proto.max_frame_bytes * 2);
        let mut chunk = [0u8; 512];
        let mut bad_in_row = 0u32;
        let mut pending = ReadBacks::default();
        loop {
            let next_deadline = pending.next_deadline();
            tokio::select! {
                r = io.shutdown.changed() => {
                    if r.is_err() || *io.shutdown.borrow() {
                        return None;
                    }
                }
                Some(w) = io.writes.recv() => {
                    match self.command(&w) {
                        Err(outcome) => self.finish_write(io, w.id, w.property, outcome).await,
                        Ok(cmd) => {
                            if let Err(e) = port.write_all(&cmd).await {
                                self.finish_write(io, w.id, w.property, WriteOutcome::LinkFailed(e.to_string())).await;
                                return Some(format!("write: {e}"));
                            }
                            pending.push(w.id, w.property, READ_BACK_WAIT);
                        }
                    }
                }
                () = crate::readback::until(next_deadline) => {
                    for (id, property) in pending.take_expired(Instant::now()) {
                        self.finish_write(io, id, property, WriteOutcome::Done { read_back: None }).await;
                    }
                }
                Some(new) = io.reconfigure.recv() => match *new {
                    // New fields and scaling; the open port, metrics and health stay.
                    crate::Mapper::Serial(new) => {
                        self.props = new.props;
                        tracing::info!(device = %self.id, "properties reconfigured");
                    }
                    _ => tracing::warn!(device = %self.id, "reconfiguration of another protocol ignored"),
                },
                r = port.read(&mut chunk) => {
                    let n = match r {
                        Ok(0) => return Some("serial port closed".into()),
                        Ok(n) => n,
                        Err(e) => return Some(format!("read: {e}")),
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(frame) = self.next_frame(&mut buf) {
                        let ok = self.record(&frame, io, &mut pending).await?;
                        if ok {
                            bad_in_row = 0;
                            if !self.health(io, health, Health::Online, "records arriving".into()).await {
                                return None;
                            }
                        } else {
                            bad_in_row += 1;
                            if bad_in_row >= BAD_RECORDS_UNHEALTHY
                                && !self.health(io, health, Health::Unhealthy, format!("{bad_in_row} bad records in a row")).await
                            {
                                return None;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Cuts the next frame off the buffer; discards overlong input.
    fn next_frame(&self, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
        match &self.proto.framing {
            Framing::Length(n) => (buf.len() >= *n).then(|| buf.drain(..*n).collect()),
            Framing::Delimiter(d) => {
                match buf.windows(d.len()).position(|w| w == d.as_slice()) {
                    Some(i) => {
                        let mut frame: Vec<u8> = buf.drain(..i + d.len()).collect();
                        frame.truncate(i);
                        if frame.last() == Some(&b'\r') {
                            frame.pop();
                        }
                        Some(frame)
                    }
                    None => {
                        if buf.len() > self.proto.max_frame_bytes {
                            // No delimiter in far too many bytes: line noise. Drop it.
                            self.metrics.error(ErrorKind::Decode);
                            buf.clear();
                        }
                        None
                    }
                }
            }
        }
    }

    /// Handles one frame; `Some(true)` when it parsed, `Some(false)` when not, `None` when the
    /// events channel is gone.
    async fn record(&self, frame: &[u8], io: &MapperIo, pending: &mut ReadBacks) -> Option<bool> {
        self.metrics.request(Duration::ZERO);
        let text = String::from_utf8_lossy(frame);
        let fields: BTreeMap<String, &str> = match self.proto.format.parse(&text) {
            Ok(f) => f,
            Err(e) => {
                self.metrics.error(ErrorKind::Decode);
                tracing::debug!(device = %self.id, error = %e, "bad serial record");
                return Some(false);
            }
        };
        let l = &self.proto.line;
        let wire = Duration::from_secs_f64(
            frame.len() as f64 * f64::from(l.bits_per_char()) / f64::from(l.baud_rate.max(1)),
        );
        self.metrics.bus(wire);
        let ts = now_ms();
        let mut readings = Vec::new();
        for p in &self.props {
            let Some(t) = fields.get(&p.visitor.field) else {
                continue;
            };
            match field_value(p, t) {
                Some(value) => readings.push(Reading::good(&self.id, &p.name, value, ts)),
                None => self.metrics.error(ErrorKind::Decode),
            }
        }
        for (id, property, v) in pending.take_answered(&readings) {
            self.finish_write(io, id, property, WriteOutcome::Done { read_back: Some(v) })
                .await;
        }
        self.metrics.readings(readings.len());
        io.events.send(Event::Readings(readings)).await.ok()?;
        Some(true)
    }
}
