//! A simulated line-based serial instrument (the flowmeter of the example): prints a framed
//! ASCII record with a checksum every interval and obeys the write commands of its device file.
//!
//! Records are rendered from the device's `template`; commands are recognised from the
//! properties' `write` templates (`$INT,{value}` sets the property to the value; a template
//! without `{value}`, such as `$ZERO`, sets it to 0). Faults: corrupted checksums, records split
//! across two writes, two records merged into one write, silence.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use device_models::DeviceConfig;
use device_models::protocol::serial::{Framing, SerialProtocol};
use device_models::protocol::{DeviceProtocol, PropertyVisitor};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::rng::Rng;

/// Faults of a serial instrument. All off by default.
#[derive(Debug, Clone, Default)]
pub struct SerialFaults {
    /// Every Nth record carries a wrong checksum.
    pub bad_checksum_every: Option<u64>,
    /// Every Nth record is written in two parts, 20 ms apart.
    pub split_every: Option<u64>,
    /// Every Nth record is held back and written together with the next one.
    pub merge_every: Option<u64>,
    /// Nothing is printed until this instant.
    pub silent_until: Option<Instant>,
}

/// A property as the instrument prints it.
#[derive(Debug, Clone)]
struct Field {
    property: String,
    field: String,
    write: Option<String>,
    scale: f64,
    offset: f64,
}

/// The shared state of a running instrument.
#[derive(Debug)]
pub struct Instrument {
    /// Device id.
    pub id: String,
    protocol: SerialProtocol,
    fields: Vec<Field>,
    state: Mutex<State>,
    faults: Mutex<SerialFaults>,
    /// Records printed.
    pub records: AtomicU64,
    /// Commands understood.
    pub commands: AtomicU64,
}

#[derive(Debug)]
struct State {
    values: BTreeMap<String, f64>,
    interval_ms: u64,
    rng: Rng,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Instrument {
    /// The simulated instrument of a serial device; `None` for other protocols.
    pub fn new(cfg: &DeviceConfig, seed: u64) -> Option<Arc<Instrument>> {
        let DeviceProtocol::Serial(protocol) = &cfg.protocol else {
            return None;
        };
        let fields: Vec<Field> = cfg
            .properties
            .iter()
            .filter_map(|p| match &p.visitor {
                PropertyVisitor::Serial(v) => Some(Field {
                    property: p.name.clone(),
                    field: v.field.clone(),
                    write: v.write.clone(),
                    scale: v.scaling.scale,
                    offset: v.scaling.value_offset,
                }),
                _ => None,
            })
            .collect();
        let mut values = BTreeMap::new();
        for f in &fields {
            let initial = match f.property.as_str() {
                "flow-rate" => 250.0,
                "totaliser" => 18_342.5,
                "temperature" => 38.0,
                "report-interval" => 1000.0,
                _ => 50.0,
            };
            values.insert(f.property.clone(), initial);
        }
        Some(Arc::new(Instrument {
            id: cfg.id.clone(),
            protocol: protocol.clone(),
            fields,
            state: Mutex::new(State {
                values,
                interval_ms: 1000,
                rng: Rng::new(seed ^ Rng::hash(&cfg.id)),
            }),
            faults: Mutex::new(SerialFaults::default()),
            records: AtomicU64::new(0),
            commands: AtomicU64::new(0),
        }))
    }

    /// Replaces the faults.
    pub fn set_faults(&self, f: SerialFaults) {
        *lock(&self.faults) = f;
    }

    /// Current value of a property.
    pub fn value(&self, property: &str) -> Option<f64> {
        lock(&self.state).values.get(property).copied()
    }

    /// Interval between records.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(lock(&self.state).interval_ms)
    }

    /// Advances the physics by `dt` seconds.
    fn step(&self, dt: f64) {
        let mut s = lock(&self.state);
        let State {
            values,
            rng,
            interval_ms,
        } = &mut *s;
        let rate = values.get("flow-rate").copied();
        for (name, v) in values.iter_mut() {
            match name.as_str() {
                "flow-rate" => {
                    *v = (*v + rng.noise(1.5 * dt.sqrt()) + (250.0 - *v) * 0.02).clamp(0.0, 600.0)
                }
                "totaliser" => *v += rate.unwrap_or(0.0) * dt / 3600.0,
                "temperature" => {
                    *v = (*v + rng.noise(0.05) + (38.0 - *v) * 0.01).clamp(-20.0, 120.0)
                }
                "report-interval" => *v = *interval_ms as f64,
                _ => *v = (*v + rng.noise(0.5)).clamp(0.0, 100.0),
            }
        }
    }

    /// The next record, as bytes on the wire (with its delimiter).
    fn record(&self, n: u64) -> Vec<u8> {
        let s = lock(&self.state);
        let mut fields: BTreeMap<&str, String> = BTreeMap::new();
        for f in &self.fields {
            let v = s.values.get(&f.property).copied().unwrap_or(0.0);
            let raw = (v - f.offset) / f.scale;
            let text = if f.property == "report-interval" {
                format!("{}", raw.round() as i64)
            } else {
                format!("{raw:.2}")
            };
            fields.insert(f.field.as_str(), text);
        }
        drop(s);
        let mut rec = self.protocol.format.render(&fields).unwrap_or_default();
        let faults = lock(&self.faults).clone();
        if crate::every(faults.bad_checksum_every, n) {
            // Change one digit of the contents; the checksum no longer matches.
            if let Some(i) = rec.find(|c: char| c.is_ascii_digit()) {
                let d = rec.as_bytes()[i];
                let nd = if d == b'9' { '0' } else { char::from(d + 1) };
                rec.replace_range(i..i + 1, &nd.to_string());
            }
        }
        let mut bytes = rec.into_bytes();
        match &self.protocol.framing {
            Framing::Delimiter(d) => bytes.extend_from_slice(d),
            Framing::Length(n) => bytes.resize(*n, b' '),
        }
        bytes
    }

    /// Applies one command line; returns whether it was understood.
    fn command(&self, line: &str) -> bool {
        for f in &self.fields {
            let Some(t) = &f.write else { continue };
            let value = match t.split_once("{value}") {
                None if line == t => Some(0.0),
                None => None,
                Some((pre, post)) => line
                    .strip_prefix(pre)
                    .and_then(|r| r.strip_suffix(post))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .map(|raw| raw * f.scale + f.offset),
            };
            if let Some(v) = value {
                let mut s = lock(&self.state);
                if f.property == "report-interval" {
                    s.interval_ms = v.clamp(100.0, 60_000.0) as u64;
                }
                s.values.insert(f.property.clone(), v);
                self.commands.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
        false
    }
}

/// Runs the instrument on `io` (a pty master or a serial port) until it fails.
pub async fn run<T: AsyncRead + AsyncWrite + Unpin>(
    mut io: T,
    inst: Arc<Instrument>,
) -> std::io::Result<()> {
    let mut next = tokio::time::Instant::now();
    let mut held: Vec<u8> = Vec::new();
    let mut input: Vec<u8> = Vec::new();
    let mut buf = [0u8; 256];
    let suffix = inst.protocol.command_suffix.clone();
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {
                let now = tokio::time::Instant::now();
                inst.step((now - last).as_secs_f64());
                last = now;
                next += inst.interval();
                let faults = lock(&inst.faults).clone();
                if faults.silent_until.is_some_and(|t| Instant::now() < t) {
                    continue;
                }
                let n = inst.records.fetch_add(1, Ordering::Relaxed) + 1;
                let mut rec = inst.record(n);
                if crate::every(faults.merge_every, n) {
                    held.append(&mut rec);
                    continue;
                }
                if !held.is_empty() {
                    held.append(&mut rec);
                    rec = std::mem::take(&mut held);
                }
                if crate::every(faults.split_every, n) && rec.len() > 1 {
                    let (a, b) = rec.split_at(rec.len() / 2);
                    io.write_all(a).await?;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    io.write_all(b).await?;
                } else {
                    io.write_all(&rec).await?;
                }
            }
            r = io.read(&mut buf) => {
                let n = r?;
                if n == 0 {
                    return Ok(());
                }
                input.extend_from_slice(&buf[..n]);
                while let Some(line) = take_line(&mut input, suffix.as_bytes()) {
                    inst.command(line.trim());
                }
                if input.len() > 4096 {
                    input.clear();
                }
            }
        }
    }
}

/// Takes one command line off the front of `input`: up to the suffix, or up to a newline.
fn take_line(input: &mut Vec<u8>, suffix: &[u8]) -> Option<String> {
    let at = if suffix.is_empty() {
        None
    } else {
        input
            .windows(suffix.len())
            .position(|w| w == suffix)
            .map(|i| (i, suffix.len()))
    };
    let (i, len) = at.or_else(|| input.iter().position(|b| *b == b'\n').map(|i| (i, 1)))?;
    let line = String::from_utf8_lossy(&input[..i]).into_owned();
    input.drain(..i + len);
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn flowmeter() -> Arc<Instrument> {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../device-models/examples/oil-platform");
        let set = device_models::check_path(&dir);
        let cfg = set
            .devices
            .iter()
            .find(|d| d.id == "rig7/flowmeter-ft310")
            .unwrap();
        Instrument::new(cfg, 1).unwrap()
    }

    #[test]
    fn records_parse_with_the_device_format() {
        let f = flowmeter();
        let rec = String::from_utf8(f.record(1)).unwrap();
        assert!(rec.ends_with("\r\n"), "{rec:?}");
        let fields = f.protocol.format.parse(rec.trim_end()).unwrap();
        assert_eq!(fields["rate"], "250.00");
        assert_eq!(fields["interval"], "1000");
    }

    #[test]
    fn commands_from_write_templates() {
        let f = flowmeter();
        assert!(f.command("$ZERO"));
        assert_eq!(f.value("totaliser"), Some(0.0));
        assert!(f.command("$INT,250"));
        assert_eq!(f.interval(), Duration::from_millis(250));
        assert!(!f.command("$SELFDESTRUCT"));
    }

    #[test]
    fn corrupted_checksum_fault() {
        let f = flowmeter();
        f.set_faults(SerialFaults {
            bad_checksum_every: Some(2),
            ..Default::default()
        });
        let good = String::from_utf8(f.record(1)).unwrap();
        let bad = String::from_utf8(f.record(2)).unwrap();
        assert!(f.protocol.format.parse(good.trim_end()).is_ok());
        assert!(f.protocol.format.parse(bad.trim_end()).is_err());
    }

    #[test]
    fn lines_split_on_the_suffix() {
        let mut input = b"$ZERO\r\n$INT,5".to_vec();
        assert_eq!(take_line(&mut input, b"\r\n").as_deref(), Some("$ZERO"));
        assert_eq!(take_line(&mut input, b"\r\n"), None);
        input.extend_from_slice(b"00\n");
        assert_eq!(take_line(&mut input, b"\r\n").as_deref(), Some("$INT,500"));
    }
}
