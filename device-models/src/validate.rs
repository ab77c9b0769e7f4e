//! Cross-object validation: from loaded objects to a [`DeviceSet`] the gateway can run.
//!
//! Checks that every device's model exists and every property is in it, that protocol settings
//! parse and fit (data type vs register kind and `limit`, address ranges), that names are unique
//! and usable in MQTT topics, that desired values parse, fit the model's range and are allowed
//! (no desired value on a ReadOnly property or a read-only register), and that cycles are
//! milliseconds. Every problem is reported; a device with an error is left out of the set, the
//! others are kept.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::crd::{AccessMode, Device, DeviceModel, PropertyType};
use crate::diag::{Diagnostic, Severity};
use crate::load::{Loaded, LoadedObjects, load_path};
use crate::protocol::{
    self, DeviceProtocol, FieldIssue, PROTOCOLS, PropertyVisitor, protocol_index,
};
use crate::value::Value;

/// Cycles above this many milliseconds (about 28 hours) are probably nanoseconds.
pub const SUSPICIOUS_CYCLE_MS: i64 = 100_000_000;
/// Default collect (poll) cycle.
pub const DEFAULT_COLLECT_CYCLE: Duration = Duration::from_secs(1);

/// One property, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyConfig {
    /// Name.
    pub name: String,
    /// Value type (from the model).
    pub ty: PropertyType,
    /// Access (from the model; default ReadWrite as in KubeEdge).
    pub access: AccessMode,
    /// How the mapper reaches it.
    pub visitor: PropertyVisitor,
    /// Poll interval (default 1 s).
    pub collect_cycle: Duration,
    /// Report interval: a value is reported at least this often even when unchanged (default:
    /// the collect cycle).
    pub report_cycle: Duration,
    /// Whether it goes to the cloud (default true).
    pub report_to_cloud: bool,
    /// Desired value from the file, typed.
    pub desired: Option<Value>,
    /// Unit (from the model).
    pub unit: Option<String>,
    /// Allowed range (from the model), for numeric types.
    pub range: (Option<f64>, Option<f64>),
}

/// One device, ready to run.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// `namespace/name`.
    pub id: String,
    /// The object as loaded.
    pub device: Device,
    /// Its model (shared by every device of the model).
    pub model: Arc<DeviceModel>,
    /// Device-level protocol settings.
    pub protocol: DeviceProtocol,
    /// Its properties, in file order.
    pub properties: Vec<PropertyConfig>,
}

/// A validated set of devices and models.
#[derive(Debug, Default)]
pub struct DeviceSet {
    /// Devices without errors, by file order.
    pub devices: Vec<DeviceConfig>,
    /// Models by `namespace/name`.
    pub models: BTreeMap<String, DeviceModel>,
    /// Every problem found, in file order.
    pub diagnostics: Vec<Diagnostic>,
    /// Files read.
    pub files: usize,
    /// Devices found, with or without errors.
    pub devices_found: usize,
}

impl DeviceSet {
    /// Number of errors.
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    /// Number of warnings.
    pub fn warnings(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .count()
    }

    /// The one-line summary `check` prints.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} file{}, {} device{} ({} valid), {} model{}; {} error{}, {} warning{}",
            if self.errors() == 0 { "ok" } else { "invalid" },
            self.files,
            plural(self.files),
            self.devices_found,
            plural(self.devices_found),
            self.devices.len(),
            self.models.len(),
            plural(self.models.len()),
            self.errors(),
            plural(self.errors()),
            self.warnings(),
            plural(self.warnings()),
        )
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Loads and validates a file or a directory.
pub fn check_path(path: &Path) -> DeviceSet {
    validate(load_path(path))
}

fn namespace_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

/// Checks a Kubernetes object name that also appears in MQTT topics.
fn check_name(what: &str, name: Option<&str>, max: usize, dots: bool) -> Result<(), String> {
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Err(format!("missing (every {what} needs a name)"));
    };
    let ok_char =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.');
    let edges_ok = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if name.len() > max || !name.chars().all(ok_char) || !edges_ok {
        return Err(format!(
            "{name:?} is not a valid {what} name: lower-case letters, digits, '-'{}, starting and \
             ending with a letter or digit, at most {max} characters",
            if dots { " and '.'" } else { "" }
        ));
    }
    Ok(())
}

/// Validates loaded objects. See the module documentation for what is checked.
pub fn validate(loaded: LoadedObjects) -> DeviceSet {
    let LoadedObjects {
        devices,
        models,
        mut diagnostics,
        files,
    } = loaded;
    let mut set = DeviceSet {
        files,
        devices_found: devices.len(),
        ..DeviceSet::default()
    };

    // Models first: devices refer to them.
    let mut model_at: HashMap<String, (&Loaded<DeviceModel>, Arc<DeviceModel>)> = HashMap::new();
    for m in &models {
        let meta = &m.object.metadata;
        if let Err(e) = check_name("model", meta.name.as_deref(), 253, true) {
            diagnostics.push(m.diag(Severity::Error, "metadata.name", e));
            continue;
        }
        if let Err(e) = check_name(
            "namespace",
            meta.namespace.as_deref().or(Some("default")),
            63,
            false,
        ) {
            diagnostics.push(m.diag(Severity::Error, "metadata.namespace", e));
            continue;
        }
        let key = format!(
            "{}/{}",
            namespace_of(meta),
            meta.name.as_deref().unwrap_or("")
        );
        if let Some((first, _)) = model_at.get(&key) {
            diagnostics.push(m.diag(
                Severity::Error,
                "metadata.name",
                format!(
                    "duplicate model {key} (first defined in {}:{})",
                    first.file.display(),
                    first.positions.value("metadata.name")
                ),
            ));
            continue;
        }
        check_model(m, &mut diagnostics);
        model_at.insert(key.clone(), (m, Arc::new(m.object.clone())));
        set.models.insert(key, m.object.clone());
    }

    let mut device_at: HashMap<String, &Loaded<Device>> = HashMap::new();
    for d in &devices {
        let before = diagnostics.iter().filter(|x| x.is_error()).count();
        let meta = &d.object.metadata;
        if let Err(e) = check_name("device", meta.name.as_deref(), 253, true) {
            diagnostics.push(d.diag(Severity::Error, "metadata.name", e));
            continue;
        }
        if let Err(e) = check_name("namespace", Some(namespace_of(meta)), 63, false) {
            diagnostics.push(d.diag(Severity::Error, "metadata.namespace", e));
            continue;
        }
        let id = d.object.id();
        if let Some(first) = device_at.get(&id) {
            diagnostics.push(d.diag(
                Severity::Error,
                "metadata.name",
                format!(
                    "duplicate device {id} (first defined in {}:{})",
                    first.file.display(),
                    first.positions.value("metadata.name")
                ),
            ));
            continue;
        }
        device_at.insert(id.clone(), d);
        let config = check_device(d, &id, &model_at, &mut diagnostics);
        let after = diagnostics.iter().filter(|x| x.is_error()).count();
        if let Some(c) = config.filter(|_| after == before) {
            set.devices.push(c);
        }
    }
    set.diagnostics = diagnostics;
    set
}

fn push_issues<T>(obj: &Loaded<T>, issues: Vec<FieldIssue>, out: &mut Vec<Diagnostic>) {
    for i in issues {
        let sev = if i.warning {
            Severity::Warning
        } else {
            Severity::Error
        };
        out.push(if i.at_key {
            obj.diag_key(sev, &i.path, i.message)
        } else {
            obj.diag(sev, &i.path, i.message)
        });
    }
}

fn is_numeric(ty: PropertyType) -> bool {
    matches!(
        ty,
        PropertyType::Int | PropertyType::Float | PropertyType::Double
    )
}

fn check_model(m: &Loaded<DeviceModel>, out: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, p) in m.object.properties().iter().enumerate() {
        let base = format!("spec.properties[{i}]");
        let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) else {
            out.push(m.diag(
                Severity::Error,
                &format!("{base}.name"),
                "missing (every property needs a name)",
            ));
            continue;
        };
        if name
            .chars()
            .any(|c| c.is_control() || c == '/' || c == '+' || c == '#')
        {
            out.push(m.diag(
                Severity::Error,
                &format!("{base}.name"),
                format!(
                    "{name:?}: a property name may not hold control characters, '/', '+' or '#'"
                ),
            ));
        }
        if let Some(first) = seen.insert(name, i) {
            out.push(m.diag(
                Severity::Error,
                &format!("{base}.name"),
                format!("duplicate property {name:?} (also spec.properties[{first}])"),
            ));
        }
        match p.type_ {
            None => out.push(m.diag(
                Severity::Error,
                &format!("{base}.type"),
                "missing (expected INT, FLOAT, DOUBLE, STRING, BOOLEAN, BYTES or STREAM)",
            )),
            Some(ty) => {
                let bounds = [("minimum", &p.minimum), ("maximum", &p.maximum)];
                for (key, bound) in bounds {
                    if let Some(b) = bound
                        && is_numeric(ty)
                        && b.trim().parse::<f64>().is_err()
                    {
                        out.push(m.diag(
                            Severity::Error,
                            &format!("{base}.{key}"),
                            format!("{b:?} is not a number"),
                        ));
                    }
                }
                if let (Some(lo), Some(hi)) = (
                    p.minimum
                        .as_deref()
                        .and_then(|s| s.trim().parse::<f64>().ok()),
                    p.maximum
                        .as_deref()
                        .and_then(|s| s.trim().parse::<f64>().ok()),
                ) && lo > hi
                {
                    out.push(m.diag(
                        Severity::Error,
                        &format!("{base}.minimum"),
                        format!("minimum {lo} is above maximum {hi}"),
                    ));
                }
            }
        }
    }
}

fn check_cycle(
    d: &Loaded<Device>,
    path: &str,
    value: Option<i64>,
    out: &mut Vec<Diagnostic>,
) -> Option<Duration> {
    let v = value?;
    if v <= 0 {
        // KubeEdge treats 0 as "use the default".
        if v < 0 {
            out.push(d.diag(
                Severity::Error,
                path,
                format!("{v} ms: a cycle must be positive"),
            ));
        }
        return None;
    }
    if v > SUSPICIOUS_CYCLE_MS {
        out.push(d.diag(
            Severity::Warning,
            path,
            format!(
                "{v} ms is {:.1} days; cycles are milliseconds, so this is probably nanoseconds \
                 from an old sample ({} ms?)",
                v as f64 / 86_400_000.0,
                v / 1_000_000
            ),
        ));
    }
    Some(Duration::from_millis(v as u64))
}

fn check_device(
    d: &Loaded<Device>,
    id: &str,
    models: &HashMap<String, (&Loaded<DeviceModel>, Arc<DeviceModel>)>,
    out: &mut Vec<Diagnostic>,
) -> Option<DeviceConfig> {
    let spec = &d.object.spec;
    let ns = namespace_of(&d.object.metadata);
    let model = match spec.device_model_ref.as_ref().map(|r| r.name.as_str()) {
        None | Some("") => {
            out.push(d.diag(
                Severity::Error,
                "spec.deviceModelRef.name",
                "missing (the DeviceModel this device instantiates)",
            ));
            None
        }
        Some(name) => {
            let key = format!("{ns}/{name}");
            match models.get(&key) {
                Some((m, arc)) => Some((*m, arc.clone())),
                None => {
                    let mut known: Vec<&str> = models
                        .keys()
                        .filter_map(|k| k.strip_prefix(&format!("{ns}/")))
                        .collect();
                    known.sort_unstable();
                    out.push(d.diag(
                        Severity::Error,
                        "spec.deviceModelRef.name",
                        format!(
                            "model {name:?} not found in namespace {ns} ({})",
                            if known.is_empty() {
                                "no models there".to_string()
                            } else {
                                format!("models there: {}", known.join(", "))
                            }
                        ),
                    ));
                    None
                }
            }
        }
    };

    let (model, model_arc) = match model {
        Some((m, arc)) => (Some(m), Some(arc)),
        None => (None, None),
    };

    // Protocol.
    let proto_name = spec.protocol.as_ref().map(|p| p.name()).unwrap_or("");
    let proto = if proto_name.is_empty() {
        out.push(d.diag(
            Severity::Error,
            "spec.protocol.protocolName",
            format!("missing (expected {})", PROTOCOLS.join(", ")),
        ));
        None
    } else {
        match protocol_index(proto_name) {
            Some(i) => Some(i),
            None => {
                out.push(d.diag(
                    Severity::Error,
                    "spec.protocol.protocolName",
                    format!(
                        "protocol {proto_name:?} is not one Ballast runs (expected {})",
                        PROTOCOLS.join(", ")
                    ),
                ));
                None
            }
        }
    };
    if let (Some(i), Some(m)) = (proto, model)
        && let Some(mp) = m.object.spec.protocol.as_deref()
        && protocol_index(mp) != Some(i)
    {
        out.push(d.diag(
            Severity::Warning,
            "spec.protocol.protocolName",
            format!("{proto_name:?} differs from its model's protocol {mp:?}"),
        ));
    }
    let device_protocol = proto.and_then(|i| {
        let cfg = spec.protocol.as_ref().and_then(|p| p.config_data.as_ref());
        let (p, issues) = protocol::parse_device_protocol(i, cfg, "spec.protocol.configData");
        push_issues(d, issues, out);
        p
    });

    check_cycle(
        d,
        "spec.stateReport.reportCycle",
        spec.state_report.as_ref().and_then(|s| s.report_cycle),
        out,
    );

    // Properties.
    let mut props = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, p) in d.object.properties().iter().enumerate() {
        let base = format!("spec.properties[{i}]");
        let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) else {
            out.push(d.diag(
                Severity::Error,
                &format!("{base}.name"),
                "missing (the model property this configures)",
            ));
            continue;
        };
        if let Some(first) = seen.insert(name, i) {
            out.push(d.diag(
                Severity::Error,
                &format!("{base}.name"),
                format!("duplicate property {name:?} (also spec.properties[{first}])"),
            ));
            continue;
        }
        let mp = match model {
            None => None,
            Some(m) => match m.object.property(name) {
                Some(mp) => Some(mp),
                None => {
                    let known: Vec<&str> = m
                        .object
                        .properties()
                        .iter()
                        .filter_map(|p| p.name.as_deref())
                        .collect();
                    out.push(d.diag(
                        Severity::Error,
                        &format!("{base}.name"),
                        format!(
                            "property {name:?} is not in model {:?} (it has {})",
                            m.object.metadata.name.as_deref().unwrap_or(""),
                            if known.is_empty() {
                                "no properties".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                    None
                }
            },
        };
        let collect = check_cycle(d, &format!("{base}.collectCycle"), p.collect_cycle, out);
        let report = check_cycle(d, &format!("{base}.reportCycle"), p.report_cycle, out);

        // Visitor.
        let visitor = proto.and_then(|pi| {
            if let Some(vp) = p.visitors.as_ref().and_then(|v| v.protocol_name.as_deref())
                && protocol_index(vp) != Some(pi)
            {
                out.push(d.diag(
                    Severity::Error,
                    &format!("{base}.visitors.protocolName"),
                    format!("{vp:?} differs from the device's protocol {proto_name:?}"),
                ));
            }
            let cfg = p.visitors.as_ref().and_then(|v| v.config_data.as_ref());
            let (v, issues) = protocol::parse_property_visitor(
                pi,
                device_protocol.as_ref(),
                cfg,
                &format!("{base}.visitors.configData"),
            );
            push_issues(d, issues, out);
            v
        });

        let Some(mp) = mp else { continue };
        let Some(ty) = mp.type_ else { continue };
        let access = mp.access_mode.unwrap_or(AccessMode::ReadWrite);
        if ty == PropertyType::Stream {
            out.push(d.diag(
                Severity::Warning,
                &format!("{base}.name"),
                "STREAM properties are not polled by Ballast; this property is skipped",
            ));
            continue;
        }
        let writable_visitor = match &visitor {
            Some(PropertyVisitor::Modbus(v)) => {
                if access == AccessMode::ReadWrite && !v.register.is_writable() {
                    out.push(d.diag(
                        Severity::Warning,
                        &format!("{base}.visitors.configData.register"),
                        format!(
                            "the model says ReadWrite, but a {} cannot be written; the property is read-only here",
                            v.register
                        ),
                    ));
                }
                v.register.is_writable()
            }
            Some(PropertyVisitor::Serial(v)) => v.write.is_some(),
            Some(PropertyVisitor::Mqtt(v)) => v.command.is_some(),
            None => true,
        };
        let range = (
            mp.minimum
                .as_deref()
                .and_then(|s| s.trim().parse::<f64>().ok()),
            mp.maximum
                .as_deref()
                .and_then(|s| s.trim().parse::<f64>().ok()),
        );
        let desired = p.desired.as_ref().and_then(|des| {
            let path = format!("{base}.desired.value");
            if access == AccessMode::ReadOnly {
                out.push(d.diag(
                    Severity::Error,
                    &path,
                    format!("property {name:?} is ReadOnly in its model; a desired value cannot be applied"),
                ));
                return None;
            }
            if !writable_visitor {
                let how = match &visitor {
                    Some(PropertyVisitor::Modbus(v)) => format!("a {} cannot be written", v.register),
                    Some(PropertyVisitor::Serial(_)) => "its visitor has no write command".to_string(),
                    _ => "its visitor has no command template".to_string(),
                };
                out.push(d.diag(Severity::Error, &path, format!("a desired value cannot be applied: {how}")));
                return None;
            }
            match Value::parse(ty, &des.value) {
                Err(e) => {
                    out.push(d.diag(Severity::Error, &path, format!("{e} (the model type of {name:?} is {ty:?})")));
                    None
                }
                Ok(v) => {
                    if let (Some(f), true) = (v.as_f64(), is_numeric(ty)) {
                        let below = range.0.is_some_and(|lo| f < lo);
                        let above = range.1.is_some_and(|hi| f > hi);
                        if below || above {
                            out.push(d.diag(
                                Severity::Error,
                                &path,
                                format!(
                                    "{f} is outside the model's range {}..={}",
                                    range.0.map_or("".into(), |x| x.to_string()),
                                    range.1.map_or("".into(), |x| x.to_string())
                                ),
                            ));
                            return None;
                        }
                    }
                    Some(v)
                }
            }
        });
        let Some(visitor) = visitor else { continue };
        let collect_cycle = collect.unwrap_or(DEFAULT_COLLECT_CYCLE);
        props.push(PropertyConfig {
            name: name.to_string(),
            ty,
            access: if writable_visitor {
                access
            } else {
                AccessMode::ReadOnly
            },
            visitor,
            collect_cycle,
            report_cycle: report.unwrap_or(collect_cycle),
            report_to_cloud: p.report_to_cloud.unwrap_or(true),
            desired,
            unit: mp.unit.clone(),
            range,
        });
    }

    // Methods refer to properties.
    for (i, m) in spec.methods.iter().flatten().enumerate() {
        for (j, pn) in m.property_names.iter().flatten().enumerate() {
            if !seen.contains_key(pn.as_str()) {
                out.push(d.diag(
                    Severity::Error,
                    &format!("spec.methods[{i}].propertyNames[{j}]"),
                    format!("method refers to {pn:?}, which is not a property of this device"),
                ));
            }
        }
    }

    Some(DeviceConfig {
        id: id.to_string(),
        device: d.object.clone(),
        model: model_arc?,
        protocol: device_protocol?,
        properties: props,
    })
}
