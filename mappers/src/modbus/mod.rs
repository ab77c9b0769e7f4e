//! The Modbus mapper (TCP and RTU).
//!
//! Built once per device config: the read plan ([`planner`]) per poll group is computed at
//! build. Running, it polls each group at its cycle through the endpoint's shared link
//! ([`link`]), decodes every property with the register codec, and applies writes (which jump
//! the poll queue) followed by a read-back.

pub mod link;
pub mod planner;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use device_models::codec;
use device_models::crd::{AccessMode, PropertyType};
use device_models::protocol::modbus::{DataType, ModbusTransport, ModbusVisitor, RegisterKind};
use device_models::protocol::{DeviceProtocol, PropertyVisitor};
use device_models::{DeviceConfig, Value};
use tokio::time::Instant;

use self::link::{Data, LinkError, LinkHandle, LinkOptions, Op};
use self::planner::{PlanInput, Read};
use crate::metrics::ErrorKind;
use crate::{
    BuildError, Event, Health, MapperIo, Metrics, Reading, WriteOutcome, WriteRequest, now_ms,
};

/// The links of a gateway, one per endpoint (TCP host:port or serial port), shared by the
/// mappers of every device on it.
#[derive(Debug, Clone, Default)]
pub struct Links {
    inner: Arc<Mutex<HashMap<String, LinkHandle>>>,
    opts: Arc<LinkOptions>,
}

impl Links {
    /// Links with these options.
    pub fn new(opts: LinkOptions) -> Links {
        Links {
            inner: Arc::default(),
            opts: Arc::new(opts),
        }
    }

    /// The key of an endpoint.
    pub fn key(t: &ModbusTransport) -> String {
        match t {
            ModbusTransport::Tcp { host, port } => format!("tcp://{host}:{port}"),
            ModbusTransport::Rtu(s) => format!("rtu://{}", s.port),
        }
    }

    /// The link of `t`, started on first use (inside a runtime).
    pub fn get(&self, t: &ModbusTransport) -> LinkHandle {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(Self::key(t))
            .or_insert_with(|| link::spawn(t.clone(), (*self.opts).clone()))
            .clone()
    }

    /// The link of an endpoint key, if started.
    pub fn handle(&self, key: &str) -> Option<LinkHandle> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }
}

/// Whether a read spans addresses no property uses.
fn has_holes(r: &Read) -> bool {
    let mut spans: Vec<(u16, u16)> = r
        .members
        .iter()
        .map(|m| (m.offset, m.offset + m.count))
        .collect();
    spans.sort_unstable();
    let mut end = 0;
    for (a, b) in spans {
        if a > end {
            return true;
        }
        end = end.max(b);
    }
    end < r.count
}

#[derive(Debug, Clone)]
struct Prop {
    name: Arc<str>,
    ty: PropertyType,
    access: AccessMode,
    visitor: ModbusVisitor,
}

#[derive(Debug, Clone)]
struct Group {
    interval: Duration,
    reads: Vec<Read>,
}

/// A built Modbus mapper.
#[derive(Debug)]
pub struct ModbusMapper {
    id: Arc<str>,
    unit: u8,
    transport: ModbusTransport,
    timeout: Duration,
    props: Vec<Prop>,
    groups: Vec<Group>,
    links: Links,
    metrics: Arc<Metrics>,
}

impl ModbusMapper {
    /// Builds the mapper and its read plan.
    pub fn build(cfg: &DeviceConfig, links: &Links) -> Result<ModbusMapper, BuildError> {
        let DeviceProtocol::Modbus(proto) = &cfg.protocol else {
            return Err(BuildError::WrongProtocol(cfg.id.clone()));
        };
        let mut props = Vec::new();
        let mut inputs = Vec::new();
        let mut intervals: HashMap<String, Duration> = HashMap::new();
        for p in &cfg.properties {
            let PropertyVisitor::Modbus(v) = &p.visitor else {
                continue;
            };
            let group = v
                .poll_group
                .clone()
                .unwrap_or_else(|| format!("{}ms", p.collect_cycle.as_millis()));
            let iv = intervals.entry(group.clone()).or_insert(p.collect_cycle);
            *iv = (*iv).min(p.collect_cycle);
            inputs.push(PlanInput {
                index: props.len(),
                unit: proto.slave_id,
                kind: v.register,
                address: v.address,
                count: v.count(),
                group,
            });
            props.push(Prop {
                name: p.name.as_str().into(),
                ty: p.ty,
                access: p.access,
                visitor: v.clone(),
            });
        }
        let reads = planner::plan(&inputs, &proto.limits)?;
        let mut by_group: HashMap<String, Vec<Read>> = HashMap::new();
        for r in reads {
            by_group.entry(r.group.clone()).or_default().push(r);
        }
        let mut groups: Vec<Group> = by_group
            .into_iter()
            .map(|(g, reads)| Group {
                interval: intervals.get(&g).copied().unwrap_or(Duration::from_secs(1)),
                reads,
            })
            .collect();
        groups.sort_by_key(|g| g.interval);
        Ok(ModbusMapper {
            id: cfg.id.as_str().into(),
            unit: proto.slave_id,
            transport: proto.transport.clone(),
            timeout: proto.timeout,
            props,
            groups,
            links: links.clone(),
            metrics: Arc::new(Metrics::default()),
        })
    }

    /// The mapper's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Requests one poll of every group makes (the plan's size).
    pub fn requests_per_cycle(&self) -> usize {
        self.groups.iter().map(|g| g.reads.len()).sum()
    }

    /// Runs until shutdown.
    pub async fn run(mut self, mut io: MapperIo) {
        let link = self.links.get(&self.transport);
        let start = Instant::now();
        // The first poll of every group is at start; later ones on this device's slot of a
        // process-wide grid (`next_poll`), so that a fleet's polls come in small waves.
        let (epoch, phase) = (crate::poll_epoch(), crate::poll_phase(&self.id));
        let mut next: Vec<Instant> = self.groups.iter().map(|_| start).collect();
        let mut health: Option<Health> = None;
        loop {
            let Some((gi, due)) = next.iter().copied().enumerate().min_by_key(|(_, t)| *t) else {
                // No property to poll: serve writes (and new properties) until shutdown.
                tokio::select! {
                    _ = io.shutdown.changed() => return,
                    w = io.writes.recv() => match w {
                        Some(w) => self.write(&link, w, &io).await,
                        None => return,
                    },
                    Some(new) = io.reconfigure.recv() => if let crate::Mapper::Modbus(new) = *new {
                        self.props = new.props;
                        self.groups = new.groups;
                        let now = Instant::now();
                        next = self.groups.iter().map(|_| now).collect();
                    }
                }
                continue;
            };
            tokio::select! {
                biased;
                r = io.shutdown.changed() => {
                    if r.is_err() || *io.shutdown.borrow() {
                        return;
                    }
                }
                Some(w) = io.writes.recv() => self.write(&link, w, &io).await,
                Some(new) = io.reconfigure.recv() => match *new {
                    crate::Mapper::Modbus(new) => {
                        // New properties and read plan; the link, metrics and health stay.
                        self.props = new.props;
                        self.groups = new.groups;
                        let now = Instant::now();
                        next = self.groups.iter().map(|_| now).collect();
                        tracing::info!(device = %self.id, reads = self.requests_per_cycle(), "properties reconfigured");
                    }
                    _ => tracing::warn!(device = %self.id, "reconfiguration of another protocol ignored"),
                },
                () = tokio::time::sleep_until(due) => {
                    let (readings, h, reason, split) = self.poll(&link, &self.groups[gi]).await;
                    if !split.is_empty() {
                        self.split(gi, &split);
                    }
                    let iv = self.groups[gi].interval;
                    let now = Instant::now();
                    next[gi] = crate::next_poll(epoch, phase, iv, due, now);
                    if !readings.is_empty() {
                        self.metrics.readings(readings.len());
                        if io.events.send(Event::Readings(readings)).await.is_err() {
                            return;
                        }
                    }
                    if health != Some(h) {
                        health = Some(h);
                        let ev = Event::Health { device: self.id.clone(), health: h, reason };
                        if io.events.send(ev).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }

    fn decode(&self, p: &Prop, data: &Data, offset: u16) -> Option<Value> {
        let o = usize::from(offset);
        let v = match data {
            Data::Bits(b) => Value::Bool(*b.get(o)?),
            Data::Words(w) => p
                .visitor
                .decode_registers(w.get(o..o + usize::from(p.visitor.count()))?)
                .ok()?,
            Data::Written => return None,
        };
        Some(v.to_type(p.ty).unwrap_or(v))
    }

    /// Replaces the reads `split` (indices into the group's reads) by reads without holes: the
    /// device refused to read across unmapped addresses.
    fn split(&mut self, gi: usize, split: &[usize]) {
        let g = &mut self.groups[gi];
        let mut reads = Vec::new();
        for (i, r) in g.reads.drain(..).enumerate() {
            if !split.contains(&i) {
                reads.push(r);
                continue;
            }
            let inputs: Vec<PlanInput> = r
                .members
                .iter()
                .map(|m| PlanInput {
                    index: m.index,
                    unit: r.unit,
                    kind: r.kind,
                    address: r.start + m.offset,
                    count: m.count,
                    group: r.group.clone(),
                })
                .collect();
            let limits = device_models::protocol::modbus::ReadLimits {
                max_registers: r.count.max(1),
                max_bits: r.count.max(1),
                max_gap: 0,
            };
            match planner::plan_contiguous(&inputs, &limits) {
                Ok(parts) => {
                    tracing::warn!(device = %self.id, kind = %r.kind, start = r.start, count = r.count, parts = parts.len(),
                        "device refused a read across unmapped addresses; reading without holes from now on");
                    reads.extend(parts);
                }
                Err(_) => reads.push(r),
            }
        }
        g.reads = reads;
    }

    /// Reads one poll group; returns the readings, the device health it shows, why, and the
    /// reads to split because the device refused their holes.
    async fn poll(
        &self,
        link: &LinkHandle,
        g: &Group,
    ) -> (Vec<Reading>, Health, String, Vec<usize>) {
        let mut split = Vec::new();
        let mut readings = Vec::new();
        let (mut ok, mut refused, mut broken) = (0, 0, 0);
        let mut reason = String::new();
        let ts = now_ms();
        for (ri, r) in g.reads.iter().enumerate() {
            let t0 = Instant::now();
            let op = Op::Read {
                kind: r.kind,
                start: r.start,
                count: r.count,
            };
            let out = link.call(self.unit, op, self.timeout, false).await;
            let took = t0.elapsed();
            match out {
                Ok(Ok(data)) => {
                    self.metrics.request(took);
                    self.metrics.bus(took);
                    ok += 1;
                    for m in &r.members {
                        let p = &self.props[m.index];
                        match self.decode(p, &data, m.offset) {
                            Some(value) => {
                                readings.push(Reading::good(&self.id, &p.name, value, ts))
                            }
                            None => {
                                self.metrics.error(ErrorKind::Decode);
                                refused += 1;
                                reason = format!(
                                    "{}: registers do not decode as {}",
                                    p.name, p.visitor.data_type
                                );
                            }
                        }
                    }
                }
                Ok(Err(exc)) => {
                    self.metrics.request(took);
                    self.metrics.error(ErrorKind::Exception);
                    refused += 1;
                    if exc == tokio_modbus::ExceptionCode::IllegalDataAddress && has_holes(r) {
                        split.push(ri);
                    }
                    reason = format!(
                        "{} {}..{}: exception {exc}",
                        r.kind,
                        r.start,
                        r.start + r.count
                    );
                }
                Err(e) => {
                    self.metrics.error(match e {
                        LinkError::Timeout(_) => ErrorKind::Timeout,
                        LinkError::Protocol(_) => ErrorKind::Decode,
                        _ => ErrorKind::Link,
                    });
                    if matches!(e, LinkError::Protocol(_)) {
                        refused += 1;
                    } else {
                        broken += 1;
                    }
                    reason = e.to_string();
                }
            }
        }
        self.metrics.cycle(g.reads.len() as u64);
        let health = if refused > 0 {
            Health::Unhealthy
        } else if ok == 0 && broken > 0 {
            Health::Offline
        } else {
            Health::Online
        };
        if health == Health::Online {
            reason = "answering".into();
        }
        (readings, health, reason, split)
    }

    async fn write(&self, link: &LinkHandle, w: WriteRequest, io: &MapperIo) {
        let outcome = self.apply(link, &w).await;
        crate::readback::emit_write(io, &self.metrics, &self.id, w.id, w.property, outcome).await;
    }

    async fn apply(&self, link: &LinkHandle, w: &WriteRequest) -> WriteOutcome {
        let Some(p) = self.props.iter().find(|p| *p.name == w.property) else {
            return WriteOutcome::Invalid(format!("{} has no property {:?}", self.id, w.property));
        };
        let v = &p.visitor;
        if p.access == AccessMode::ReadOnly || !v.register.is_writable() {
            return WriteOutcome::ReadOnly(format!(
                "{} is read-only ({} {})",
                p.name, v.register, v.address
            ));
        }
        let op = match (v.register, v.data_type) {
            (RegisterKind::Coil, _) => match w.value.as_f64() {
                Some(f) => Op::WriteCoil(v.address, f != 0.0),
                None => return WriteOutcome::Invalid(format!("{} is not a boolean", w.value)),
            },
            (_, DataType::Bit(n)) => {
                let on = w.value.as_f64().is_some_and(|f| f != 0.0);
                let read = link
                    .call(
                        self.unit,
                        Op::Read {
                            kind: RegisterKind::Holding,
                            start: v.address,
                            count: 1,
                        },
                        self.timeout,
                        true,
                    )
                    .await;
                match read {
                    Ok(Ok(Data::Words(words))) if !words.is_empty() => {
                        Op::WriteRegister(v.address, codec::set_bit(words[0], n, on))
                    }
                    Ok(Ok(_)) => {
                        return WriteOutcome::Refused("empty read before a bit write".into());
                    }
                    Ok(Err(exc)) => return WriteOutcome::Refused(format!("exception {exc}")),
                    Err(e) => return WriteOutcome::LinkFailed(e.to_string()),
                }
            }
            _ => match v.encode_value(&w.value) {
                Ok(words) if words.len() == 1 => Op::WriteRegister(v.address, words[0]),
                Ok(words) => Op::WriteRegisters(v.address, words),
                Err(e) => return WriteOutcome::Invalid(e.to_string()),
            },
        };
        let t0 = Instant::now();
        match link.call(self.unit, op, self.timeout, true).await {
            Ok(Ok(_)) => {}
            Ok(Err(exc)) => {
                self.metrics.error(ErrorKind::Exception);
                return WriteOutcome::Refused(format!("exception {exc}"));
            }
            Err(e) => return WriteOutcome::LinkFailed(e.to_string()),
        }
        self.metrics.request(t0.elapsed());
        let back = link
            .call(
                self.unit,
                Op::Read {
                    kind: v.register,
                    start: v.address,
                    count: v.count(),
                },
                self.timeout,
                true,
            )
            .await;
        let read_back = match back {
            Ok(Ok(data)) => self.decode(p, &data, 0),
            _ => None,
        };
        WriteOutcome::Done { read_back }
    }
}
