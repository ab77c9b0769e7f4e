//! Twin logic and the KubeEdge MQTT API, without I/O.
//!
//! One owner ([`Twins`]) holds every device's twins. Inputs: readings from mappers
//! ([`Twins::on_readings`]), MQTT requests ([`Twins::on_message`]), health changes. Outputs are
//! [`Actions`]: twin writes and samples for the store (committed before anything is
//! published), messages to publish, and writes for the mappers. The runtime carries them out.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use device_models::crd::{AccessMode, PropertyType};
use device_models::payload::{
    self, BaseMessage, DataMetadata, DataValue, DeviceData, ErrorResult, MembershipDetail,
    MembershipDevice, MsgTwin, TwinDelta, TwinDoc, TwinDocument, TwinResult, TwinValueMsg,
};
use device_models::protocol::PropertyVisitor;
use device_models::twin::{PropertyTwin, TwinValue, TwinVersion, set_local_desired, set_reported};
use device_models::{DeviceConfig, Value};
use mappers::{Reading, WriteRequest};

use crate::store::{Sample, TwinWrite, Which};

/// Everything the runtime must do after an input.
#[derive(Debug, Default, PartialEq)]
pub struct Actions {
    /// Twin changes to store (before publishing).
    pub twins: Vec<TwinWrite>,
    /// Telemetry samples to append to the outbox.
    pub samples: Vec<Sample>,
    /// Messages to publish: (topic, JSON payload).
    pub publish: Vec<(String, String)>,
    /// Writes for mappers: (device id, write).
    pub writes: Vec<(String, WriteRequest)>,
    /// Device states set by an external mapper (`state/update`).
    pub states: Vec<(String, &'static str)>,
}

#[derive(Debug, Clone)]
struct Prop {
    ty: PropertyType,
    access: AccessMode,
    deadband: Option<f64>,
    report_cycle_ms: i64,
    twin: PropertyTwin,
    /// When a write of the desired value last went to the mapper (never, since start: None).
    written_ms: Option<i64>,
}

/// A desired value that readings show the device does not hold is written again at most this
/// often (a device that restarted and lost its setpoint gets it back; one that refuses it is not
/// hammered).
pub const REWRITE_INTERVAL_MS: i64 = 10_000;

#[derive(Debug, Clone)]
struct Device {
    name: String,
    props: BTreeMap<String, Prop>,
    state: &'static str,
}

/// Every device's twins; the single owner of twin state.
#[derive(Debug, Default)]
pub struct Twins {
    node: String,
    devices: BTreeMap<String, Device>,
    next_write: u64,
}

/// `$hw/events/device/{ns}/{name}/...` for a device id `ns/name`.
pub fn device_topic(id: &str, suffix: &str) -> String {
    format!("$hw/events/device/{id}/{suffix}")
}

/// The telemetry topic of a device.
pub fn data_topic(id: &str) -> String {
    format!("$ke/events/device/{id}/data/update")
}

fn deadband(v: &PropertyVisitor) -> Option<f64> {
    match v {
        PropertyVisitor::Modbus(m) => m.scaling.deadband,
        PropertyVisitor::Serial(s) => s.scaling.deadband,
        PropertyVisitor::Mqtt(m) => m.scaling.deadband,
    }
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
}

/// Queues a write of `p`'s desired value when it is not reported.
fn push_write(id: &str, name: &str, p: &mut Prop, next: &mut u64, now_ms: i64, a: &mut Actions) {
    let Some(delta) = p.twin.delta() else {
        return;
    };
    if let Ok(value) = Value::parse(p.ty, delta) {
        a.writes.push((
            id.to_string(),
            WriteRequest {
                id: *next,
                property: name.to_string(),
                value,
            },
        ));
        *next += 1;
        p.written_ms = Some(now_ms);
    }
}

impl Twins {
    /// Twins for `devices` on `node`, starting from what the store had (`stored`, by device).
    pub fn new(
        node: &str,
        devices: &[DeviceConfig],
        mut stored: BTreeMap<String, BTreeMap<String, PropertyTwin>>,
    ) -> Twins {
        let mut out = BTreeMap::new();
        for d in devices {
            let mut have = stored.remove(&d.id).unwrap_or_default();
            let props = d
                .properties
                .iter()
                .map(|p| {
                    let twin = have
                        .remove(&p.name)
                        .map(|t| PropertyTwin { ty: p.ty, ..t })
                        .unwrap_or(PropertyTwin {
                            ty: p.ty,
                            desired: None,
                            reported: None,
                        });
                    (
                        p.name.clone(),
                        Prop {
                            ty: p.ty,
                            access: p.access,
                            deadband: deadband(&p.visitor),
                            report_cycle_ms: p.report_cycle.as_millis() as i64,
                            twin,
                            written_ms: None,
                        },
                    )
                })
                .collect();
            let name = d.device.metadata.name.clone().unwrap_or_default();
            out.insert(
                d.id.clone(),
                Device {
                    name,
                    props,
                    state: "unknown",
                },
            );
        }
        Twins {
            node: node.to_string(),
            devices: out,
            next_write: 1,
        }
    }

    /// Applies the desired values of the device files (the standalone "cloud"): a file value
    /// replaces the stored one when its cloud version (the Device's generation, 1 when unset)
    /// is newer; then every desired value not yet reported is written to its device.
    pub fn apply_file_desired(&mut self, devices: &[DeviceConfig], now_ms: i64) -> Actions {
        let mut a = Actions::default();
        for d in devices {
            let generation = d.device.metadata.generation.unwrap_or(1).max(1) as u64;
            for p in &d.properties {
                let Some(v) = &p.desired else { continue };
                let Some(prop) = self
                    .devices
                    .get_mut(&d.id)
                    .and_then(|dev| dev.props.get_mut(&p.name))
                else {
                    continue;
                };
                let cloud = TwinValue {
                    value: v.to_string(),
                    version: TwinVersion {
                        cloud: generation,
                        edge: 0,
                    },
                    timestamp_ms: now_ms,
                };
                if let device_models::twin::DesiredMerge::TakeCloud(t) =
                    device_models::twin::merge_desired(prop.twin.desired.as_ref(), &cloud)
                {
                    prop.twin.desired = Some(t.clone());
                    a.twins.push(TwinWrite {
                        device: d.id.clone().into(),
                        property: p.name.clone().into(),
                        ty: p.ty,
                        which: Which::Desired,
                        value: t,
                    });
                }
            }
        }
        let ids: Vec<String> = self.devices.keys().cloned().collect();
        for id in ids {
            self.push_pending_writes(&id, now_ms, &mut a);
        }
        a
    }

    /// A write for every property of `id` whose desired value is not reported.
    fn push_pending_writes(&mut self, id: &str, now_ms: i64, a: &mut Actions) {
        let Some(dev) = self.devices.get_mut(id) else {
            return;
        };
        for (name, p) in &mut dev.props {
            push_write(id, name, p, &mut self.next_write, now_ms, a);
        }
    }

    /// Replaces the device set (a reload): properties that stay keep their twins, new ones
    /// start empty, removed devices and properties are dropped from memory (the store keeps
    /// their history).
    pub fn set_devices(&mut self, devices: &[DeviceConfig]) {
        let mut stored: BTreeMap<String, BTreeMap<String, PropertyTwin>> = BTreeMap::new();
        let mut states: BTreeMap<String, &'static str> = BTreeMap::new();
        for (id, d) in std::mem::take(&mut self.devices) {
            states.insert(id.clone(), d.state);
            stored.insert(id, d.props.into_iter().map(|(k, p)| (k, p.twin)).collect());
        }
        self.devices = Twins::new(&self.node, devices, stored).devices;
        for (id, d) in &mut self.devices {
            if let Some(st) = states.get(id) {
                d.state = st;
            }
        }
    }

    /// Device ids, sorted.
    pub fn ids(&self) -> Vec<String> {
        self.devices.keys().cloned().collect()
    }

    /// The twins of a device (for display and tests).
    pub fn twins(&self, id: &str) -> Option<BTreeMap<String, PropertyTwin>> {
        self.devices.get(id).map(|d| {
            d.props
                .iter()
                .map(|(k, p)| (k.clone(), p.twin.clone()))
                .collect()
        })
    }

    /// A device's health changed.
    pub fn on_health(&mut self, id: &str, state: mappers::Health) {
        if let Some(d) = self.devices.get_mut(id) {
            d.state = state.as_str();
        }
    }

    /// The state of a device.
    pub fn state(&self, id: &str) -> Option<&'static str> {
        self.devices.get(id).map(|d| d.state)
    }

    /// Readings from mappers: a reading becomes a reported value (and a telemetry sample) when
    /// it changed beyond its deadband or its report cycle elapsed.
    pub fn on_readings(&mut self, readings: &[Reading], now_ms: i64) -> Actions {
        let mut a = Actions::default();
        let mut data: BTreeMap<String, DeviceData> = BTreeMap::new();
        let Twins {
            devices,
            next_write,
            ..
        } = self;
        // A mapper's readings come together: one device lookup and one message per run.
        for run in readings.chunk_by(|x, y| x.device == y.device) {
            let Some(dev) = devices.get_mut(&*run[0].device) else {
                continue;
            };
            let mut msg: Option<DeviceData> = None;
            for r in run {
                let Some(p) = dev.props.get_mut(&*r.property) else {
                    continue;
                };
                let text = r.value.to_string();
                let due = match &p.twin.reported {
                    None => true,
                    Some(last) => {
                        let changed = match (
                            Value::parse(p.ty, &last.value)
                                .ok()
                                .and_then(|v| v.as_f64()),
                            r.value.as_f64(),
                        ) {
                            (Some(old), Some(new)) => {
                                (new - old).abs() > p.deadband.unwrap_or(0.0)
                                    || (p.deadband.is_none() && new != old)
                            }
                            _ => last.value != text,
                        };
                        changed || r.timestamp_ms - last.timestamp_ms >= p.report_cycle_ms
                    }
                };
                if !due {
                    continue;
                }
                let v = set_reported(p.twin.reported.as_ref(), text.clone(), r.timestamp_ms);
                p.twin.reported = Some(v.clone());
                // The device does not hold its desired value (it restarted, someone changed it at
                // the panel, or the last write failed): write it again, but not on every reading.
                if p.written_ms
                    .is_none_or(|t| now_ms - t >= REWRITE_INTERVAL_MS)
                {
                    push_write(&r.device, &r.property, p, next_write, now_ms, &mut a);
                }
                a.twins.push(TwinWrite {
                    device: r.device.clone(),
                    property: r.property.clone(),
                    ty: p.ty,
                    which: Which::Reported,
                    value: v,
                });
                a.samples.push(Sample {
                    device: r.device.clone(),
                    property: r.property.clone(),
                    value: text.clone(),
                    ts: r.timestamp_ms,
                });
                msg.get_or_insert_with(|| DeviceData {
                    base: BaseMessage {
                        event_id: String::new(),
                        timestamp: now_ms,
                    },
                    data: BTreeMap::new(),
                })
                .data
                .insert(
                    r.property.to_string(),
                    DataValue {
                        value: text,
                        metadata: DataMetadata {
                            timestamp: r.timestamp_ms,
                            type_: payload::type_name(p.ty).into(),
                        },
                    },
                );
            }
            if let Some(m) = msg {
                match data.entry(run[0].device.to_string()) {
                    Entry::Vacant(e) => {
                        e.insert(m);
                    }
                    // The device's readings came in two runs: one message all the same.
                    Entry::Occupied(mut e) => e.get_mut().data.extend(m.data),
                }
            }
        }
        for (id, d) in data {
            a.publish.push((data_topic(&id), json(&d)));
        }
        a
    }

    /// The 404 answer to a request for a device this node does not have.
    fn no_device(&self, topic: String, event_id: &str, now_ms: i64, id: &str) -> Actions {
        let reason = format!("no device {id} on node {}", self.node);
        self.error(topic, event_id, now_ms, 404, reason)
    }

    fn error(
        &self,
        topic: String,
        event_id: &str,
        now_ms: i64,
        code: u16,
        reason: String,
    ) -> Actions {
        let e = ErrorResult {
            base: BaseMessage {
                event_id: event_id.into(),
                timestamp: now_ms,
            },
            code,
            reason,
        };
        Actions {
            publish: vec![(topic, json(&e))],
            ..Actions::default()
        }
    }

    /// An MQTT request on one of the topics the gateway serves.
    pub fn on_message(&mut self, topic: &str, body: &[u8], now_ms: i64) -> Actions {
        if let Some(rest) = topic.strip_prefix("$hw/events/node/") {
            if rest == format!("{}/membership/get", self.node) {
                let req = payload::parse_request(body).unwrap_or_default();
                let devices = self
                    .devices
                    .iter()
                    .map(|(id, d)| MembershipDevice {
                        id: id.clone(),
                        name: d.name.clone(),
                        state: d.state.into(),
                        twin: d
                            .props
                            .iter()
                            .map(|(k, p)| (k.clone(), MsgTwin::from_twin(&p.twin)))
                            .collect(),
                        ..MembershipDevice::default()
                    })
                    .collect();
                let m = MembershipDetail {
                    base: BaseMessage {
                        event_id: req.event_id,
                        timestamp: now_ms,
                    },
                    devices,
                };
                return Actions {
                    publish: vec![(format!("{topic}/result"), json(&m))],
                    ..Actions::default()
                };
            }
            return Actions::default();
        }
        let Some(rest) = topic.strip_prefix("$hw/events/device/") else {
            return Actions::default();
        };
        let parts: Vec<&str> = rest.splitn(3, '/').collect();
        let [ns, name, op] = parts[..] else {
            return Actions::default();
        };
        let id = format!("{ns}/{name}");
        let result_topic = format!("{topic}/result");
        match op {
            "twin/get" => {
                let req = match payload::parse_request(body) {
                    Ok(r) => r,
                    Err(e) => return self.error(result_topic, "", now_ms, e.code(), e.to_string()),
                };
                let Some(dev) = self.devices.get(&id) else {
                    return self.no_device(result_topic, &req.event_id, now_ms, &id);
                };
                let r = TwinResult {
                    base: BaseMessage {
                        event_id: req.event_id,
                        timestamp: now_ms,
                    },
                    twin: dev
                        .props
                        .iter()
                        .map(|(k, p)| (k.clone(), MsgTwin::from_twin(&p.twin)))
                        .collect(),
                };
                Actions {
                    publish: vec![(result_topic, json(&r))],
                    ..Actions::default()
                }
            }
            "twin/update" => self.on_update(&id, body, result_topic, now_ms),
            "state/update" => {
                let upd: payload::DeviceStateUpdate = match serde_json::from_slice(body) {
                    Ok(u) => u,
                    Err(e) => {
                        return self.error(
                            result_topic,
                            "",
                            now_ms,
                            400,
                            format!("malformed payload: {e}"),
                        );
                    }
                };
                let ev = upd.base.event_id.clone();
                let Some(state) = payload::DEVICE_STATES.iter().find(|s| **s == upd.state) else {
                    return self.error(
                        result_topic,
                        &ev,
                        now_ms,
                        400,
                        format!(
                            "unknown state {:?} (expected {})",
                            upd.state,
                            payload::DEVICE_STATES.join(", ")
                        ),
                    );
                };
                let Some(dev) = self.devices.get_mut(&id) else {
                    return self.no_device(result_topic, &ev, now_ms, &id);
                };
                dev.state = state;
                let r = payload::DeviceStateUpdate {
                    base: BaseMessage {
                        event_id: ev,
                        timestamp: now_ms,
                    },
                    state: state.to_string(),
                };
                Actions {
                    publish: vec![(result_topic, json(&r))],
                    states: vec![(id, *state)],
                    ..Actions::default()
                }
            }
            _ => Actions::default(),
        }
    }

    fn on_update(&mut self, id: &str, body: &[u8], result_topic: String, now_ms: i64) -> Actions {
        let update = match payload::parse_twin_update(body) {
            Ok(u) => u,
            Err(e) => return self.error(result_topic, "", now_ms, e.code(), e.to_string()),
        };
        let ev = update.base.event_id.clone();
        let Some(dev) = self.devices.get(id) else {
            return self.no_device(result_topic, &ev, now_ms, id);
        };
        // Check everything first: a request is applied whole or not at all.
        for (name, t) in &update.twin {
            let Some(p) = dev.props.get(name) else {
                return self.error(
                    result_topic,
                    &ev,
                    now_ms,
                    404,
                    format!("device {id} has no property {name:?}"),
                );
            };
            if let Some(v) = t.expected.as_ref().and_then(|e| e.value.as_ref()) {
                if p.access == AccessMode::ReadOnly {
                    return self.error(
                        result_topic,
                        &ev,
                        now_ms,
                        409,
                        format!("{name} is read-only; a desired value cannot be set"),
                    );
                }
                if let Err(e) = Value::parse(p.ty, v) {
                    return self.error(result_topic, &ev, now_ms, 400, format!("{name}: {e}"));
                }
            }
            if let Some(v) = t.actual.as_ref().and_then(|e| e.value.as_ref())
                && let Err(e) = Value::parse(p.ty, v)
            {
                return self.error(result_topic, &ev, now_ms, 400, format!("{name}: {e}"));
            }
        }
        let mut a = Actions::default();
        let mut result = BTreeMap::new();
        let mut doc = BTreeMap::new();
        let Some(dev) = self.devices.get_mut(id) else {
            return a;
        };
        for (name, t) in &update.twin {
            let Some(p) = dev.props.get_mut(name) else {
                continue;
            };
            let before = MsgTwin::from_twin(&p.twin);
            if let Some(v) = t.expected.as_ref().and_then(|e| e.value.clone()) {
                let d = set_local_desired(p.twin.desired.as_ref(), v, now_ms);
                p.twin.desired = Some(d.clone());
                a.twins.push(TwinWrite {
                    device: id.into(),
                    property: name.clone().into(),
                    ty: p.ty,
                    which: Which::Desired,
                    value: d,
                });
            }
            if let Some(v) = t.actual.as_ref().and_then(|e| e.value.clone()) {
                let ts = t
                    .actual
                    .as_ref()
                    .and_then(|e| e.metadata.as_ref())
                    .map_or(now_ms, |m| m.timestamp);
                let r = set_reported(p.twin.reported.as_ref(), v.clone(), ts);
                p.twin.reported = Some(r.clone());
                a.twins.push(TwinWrite {
                    device: id.into(),
                    property: name.clone().into(),
                    ty: p.ty,
                    which: Which::Reported,
                    value: r,
                });
                a.samples.push(Sample {
                    device: id.into(),
                    property: name.clone().into(),
                    value: v,
                    ts,
                });
            }
            let after = MsgTwin::from_twin(&p.twin);
            result.insert(name.clone(), after.clone());
            doc.insert(
                name.clone(),
                TwinDoc {
                    last: Some(before),
                    current: Some(after),
                },
            );
        }
        let base = BaseMessage {
            event_id: ev,
            timestamp: now_ms,
        };
        a.publish.push((
            result_topic.clone(),
            json(&TwinResult {
                base: base.clone(),
                twin: result,
            }),
        ));
        let prefix = result_topic.trim_end_matches("/result").to_string();
        a.publish.push((
            format!("{prefix}/document"),
            json(&TwinDocument {
                base: base.clone(),
                twin: doc,
            }),
        ));
        let delta: BTreeMap<String, String> = dev
            .props
            .iter()
            .filter_map(|(k, p)| p.twin.delta().map(|d| (k.clone(), d.to_string())))
            .collect();
        if !delta.is_empty() {
            let twin = dev
                .props
                .iter()
                .filter(|(k, _)| delta.contains_key(*k))
                .map(|(k, p)| (k.clone(), MsgTwin::from_twin(&p.twin)))
                .collect();
            a.publish.push((
                format!("{prefix}/delta"),
                json(&TwinDelta { base, twin, delta }),
            ));
        }
        self.push_pending_writes(id, now_ms, &mut a);
        a
    }
}

/// A `twin/update` payload that sets desired values (what `twin set` sends).
pub fn expected_update(event_id: &str, property: &str, value: &str, now_ms: i64) -> String {
    let t = MsgTwin {
        expected: Some(TwinValueMsg {
            value: Some(value.into()),
            metadata: None,
        }),
        ..MsgTwin::default()
    };
    json(&payload::TwinUpdate {
        base: BaseMessage {
            event_id: event_id.into(),
            timestamp: now_ms,
        },
        twin: BTreeMap::from([(property.to_string(), t)]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::Arc;

    fn twins() -> (Twins, Vec<DeviceConfig>) {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../device-models/examples/oil-platform");
        let set = device_models::check_path(&dir);
        (
            Twins::new("rig7-edge", &set.devices, BTreeMap::new()),
            set.devices,
        )
    }

    fn reading(dev: &str, prop: &str, v: Value, ts: i64) -> Reading {
        Reading {
            device: Arc::from(dev),
            property: Arc::from(prop),
            value: v,
            timestamp_ms: ts,
            quality: mappers::Quality::Good,
        }
    }

    #[test]
    fn deadband_and_report_cycle() {
        let (mut t, _) = twins();
        let d = "rig7/pump-p201";
        // speed: deadband 5, report cycle = collect cycle 500 ms.
        let a = t.on_readings(&[reading(d, "speed", Value::Int(1000), 0)], 0);
        assert_eq!(a.samples.len(), 1);
        assert_eq!(
            a.publish[0].0,
            "$ke/events/device/rig7/pump-p201/data/update"
        );
        assert!(
            t.on_readings(&[reading(d, "speed", Value::Int(1003), 100)], 100)
                .samples
                .is_empty()
        );
        assert_eq!(
            t.on_readings(&[reading(d, "speed", Value::Int(1010), 200)], 200)
                .samples
                .len(),
            1
        );
        // Unchanged, but the report cycle elapsed.
        assert_eq!(
            t.on_readings(&[reading(d, "speed", Value::Int(1010), 800)], 800)
                .samples
                .len(),
            1
        );
    }

    #[test]
    fn file_desired_becomes_writes_until_reported() {
        let (mut t, devs) = twins();
        let a = t.apply_file_desired(&devs, 1);
        let props: Vec<&str> = a.writes.iter().map(|(_, w)| w.property.as_str()).collect();
        assert!(
            props.contains(&"choke-position")
                && props.contains(&"speed-setpoint")
                && props.contains(&"pump-run")
        );
        t.on_readings(
            &[reading(
                "rig7/wellhead-a07",
                "choke-position",
                Value::Float(35.0),
                2,
            )],
            2,
        );
        let w = t.twins("rig7/wellhead-a07").unwrap();
        assert_eq!(w["choke-position"].delta(), None);
    }

    #[test]
    fn a_device_that_loses_its_desired_value_gets_it_again_but_not_on_every_reading() {
        const WH: &str = "rig7/wellhead-a07";
        let choke_writes = |a: &Actions| {
            a.writes
                .iter()
                .filter(|(d, w)| d == WH && w.property == "choke-position")
                .map(|(_, w)| w.value.clone())
                .collect::<Vec<_>>()
        };
        let choke = |t: &mut Twins, v: f64, ts: i64| {
            t.on_readings(&[reading(WH, "choke-position", Value::Float(v), ts)], ts)
        };
        let (mut t, devs) = twins();
        assert_eq!(
            choke_writes(&t.apply_file_desired(&devs, 1)),
            [Value::Float(35.0)]
        );
        assert!(choke_writes(&choke(&mut t, 35.0, 2)).is_empty());
        // The PLC restarts with the choke at 30: written again, at most once per interval.
        assert!(choke_writes(&choke(&mut t, 30.0, 5_000)).is_empty());
        assert_eq!(
            choke_writes(&choke(&mut t, 29.0, 10_001)),
            [Value::Float(35.0)]
        );
        assert!(choke_writes(&choke(&mut t, 28.0, 12_000)).is_empty());
        assert_eq!(
            choke_writes(&choke(&mut t, 27.0, 20_001)),
            [Value::Float(35.0)]
        );
        // Held again: nothing more to write.
        assert!(choke_writes(&choke(&mut t, 35.0, 40_000)).is_empty());
        // A scaled register reads 0.3 back as 3 × 0.1 = 0.30000000000000004: that is the value
        // that was set, not a reason to write it every 10 s.
        let topic = "$hw/events/device/rig7/wellhead-a07/twin/update";
        let a = t.on_message(
            topic,
            expected_update("e-03", "choke-position", "0.3", 40_001).as_bytes(),
            40_001,
        );
        assert_eq!(choke_writes(&a), [Value::Float(0.3)]);
        for (i, ts) in [41_000, 52_000, 63_000].into_iter().enumerate() {
            let back = 3.0 * 0.1 + i as f64 * 1e-17;
            assert!(choke_writes(&choke(&mut t, back, ts)).is_empty());
        }
        assert_eq!(t.twins(WH).unwrap()["choke-position"].delta(), None);
        // A gateway restarted from its store (desired = reported = 0.3, the local value standing
        // over the file's 35) finds a device that lost the value: the first reading that shows
        // it brings a write at once.
        let stored = t.ids().into_iter().map(|id| {
            let tw = t.twins(&id).unwrap_or_default();
            (id, tw)
        });
        let mut t = Twins::new("rig7-edge", &devs, stored.collect());
        assert!(choke_writes(&t.apply_file_desired(&devs, 50_000)).is_empty());
        assert_eq!(
            choke_writes(&choke(&mut t, 0.0, 50_100)),
            [Value::Float(0.3)]
        );
    }

    #[test]
    fn one_telemetry_message_per_device_and_batch_even_when_its_readings_are_apart() {
        let (mut t, _) = twins();
        const PUMP: &str = "rig7/pump-p201";
        const WH: &str = "rig7/wellhead-a07";
        let a = t.on_readings(
            &[
                reading(PUMP, "speed", Value::Int(100), 1),
                reading(PUMP, "motor-current", Value::Float(3.5), 1),
                reading(WH, "choke-position", Value::Float(30.0), 1),
                reading(PUMP, "vibration", Value::Float(0.7), 2),
            ],
            3,
        );
        assert_eq!(a.samples.len(), 4);
        let topics: Vec<&str> = a.publish.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(topics, [data_topic(PUMP), data_topic(WH)]);
        let pump: serde_json::Value = serde_json::from_str(&a.publish[0].1).unwrap();
        let props: Vec<&String> = pump["data"].as_object().unwrap().keys().collect();
        assert_eq!(props, ["motor-current", "speed", "vibration"]);
    }

    #[test]
    fn twin_update_sets_desired_and_answers() {
        let (mut t, _) = twins();
        let topic = "$hw/events/device/rig7/pump-p201/twin/update";
        let a = t.on_message(
            topic,
            expected_update("e1", "speed-setpoint", "1800", 5).as_bytes(),
            5,
        );
        assert_eq!(a.writes.len(), 1);
        assert_eq!(a.writes[0].1.value, Value::Int(1800));
        let topics: Vec<&str> = a.publish.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            topics,
            [
                format!("{topic}/result"),
                format!("{topic}/document"),
                format!("{topic}/delta")
            ]
        );
        let result: serde_json::Value = serde_json::from_str(&a.publish[0].1).unwrap();
        assert_eq!(result["event_id"], "e1");
        assert_eq!(
            result["twin"]["speed-setpoint"]["expected"]["value"],
            "1800"
        );
        assert_eq!(
            result["twin"]["speed-setpoint"]["expected_version"]["edge"],
            1
        );
    }

    #[test]
    fn bad_requests_get_error_results_and_change_nothing() {
        let (mut t, _) = twins();
        let base = "$hw/events/device/rig7/pump-p201/twin/update";
        for (topic, body, code) in [
            (base.to_string(), "{not json".to_string(), 400),
            (
                "$hw/events/device/rig7/nope/twin/update".to_string(),
                expected_update("e", "x", "1", 0),
                404,
            ),
            (base.to_string(), expected_update("e", "warp", "1", 0), 404),
            (base.to_string(), expected_update("e", "speed", "1", 0), 409),
            (
                base.to_string(),
                expected_update("e", "speed-setpoint", "fast", 0),
                400,
            ),
            (
                "$hw/events/device/rig7/nope/twin/get".to_string(),
                "{}".to_string(),
                404,
            ),
        ] {
            let a = t.on_message(&topic, body.as_bytes(), 0);
            assert!(a.twins.is_empty() && a.writes.is_empty(), "{topic} {body}");
            assert_eq!(a.publish.len(), 1);
            assert_eq!(a.publish[0].0, format!("{topic}/result"));
            let e: serde_json::Value = serde_json::from_str(&a.publish[0].1).unwrap();
            assert_eq!(e["code"], code, "{topic} {body}: {e}");
        }
        assert!(
            t.twins("rig7/pump-p201").unwrap()["speed-setpoint"]
                .desired
                .is_none()
        );
    }

    #[test]
    fn state_update_from_an_external_mapper() {
        let (mut t, _) = twins();
        let topic = "$hw/events/device/rig7/gas-gd101/state/update";
        let a = t.on_message(topic, br#"{"event_id":"s1","state":"unhealthy"}"#, 1);
        assert_eq!(a.states, vec![("rig7/gas-gd101".to_string(), "unhealthy")]);
        assert_eq!(t.state("rig7/gas-gd101"), Some("unhealthy"));
        let r: serde_json::Value = serde_json::from_str(&a.publish[0].1).unwrap();
        assert_eq!(
            (r["event_id"].as_str(), r["state"].as_str()),
            (Some("s1"), Some("unhealthy"))
        );
        let a = t.on_message(topic, br#"{"state":"sleepy"}"#, 1);
        assert!(a.states.is_empty() && a.publish[0].1.contains("400"));
    }

    #[test]
    fn get_and_membership() {
        let (mut t, _) = twins();
        t.on_readings(&[reading("rig7/gas-gd101", "h2s", Value::Float(0.4), 1)], 1);
        let a = t.on_message(
            "$hw/events/device/rig7/gas-gd101/twin/get",
            br#"{"event_id":"g"}"#,
            2,
        );
        let r: serde_json::Value = serde_json::from_str(&a.publish[0].1).unwrap();
        assert_eq!(r["twin"]["h2s"]["actual"]["value"], "0.4");
        let a = t.on_message("$hw/events/node/rig7-edge/membership/get", b"", 3);
        let m: serde_json::Value = serde_json::from_str(&a.publish[0].1).unwrap();
        assert_eq!(m["devices"].as_array().unwrap().len(), 6);
    }
}
