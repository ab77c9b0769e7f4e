//! Mappers turn devices into readings and desired values into writes.
//!
//! One closed set ([`Mapper`]): Modbus TCP and RTU ([`modbus`]), serial line instruments
//! ([`serial`]) and devices that speak MQTT ([`mqtt`]). A mapper is built from a validated
//! `DeviceConfig` (so its settings are checked before it runs), then run as a plain async fn
//! with its channels ([`MapperIo`]) until its shutdown signal. Every mapper emits the same
//! events ([`Event`]: readings, device health, write outcomes) and the same [`Metrics`].
//!
//! Link failures and device refusals are different things all the way up: a timeout or a
//! broken connection is a [`WriteOutcome::LinkFailed`] and makes the device `offline`; an
//! exception the device answers is a [`WriteOutcome::Refused`] and makes it `unhealthy`.

pub mod metrics;
pub mod modbus;
pub mod mqtt;
mod readback;
pub mod serial;

use std::sync::Arc;
use std::time::Duration;

use device_models::{DeviceConfig, Value};
use tokio::sync::{mpsc, watch};

pub use metrics::Metrics;

/// How much a reading can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    /// Read from the device just now.
    Good,
    /// The device answered, but the value could not be decoded (garbage, bad checksum).
    Bad,
}

/// One value of one property.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Device id `namespace/name`.
    pub device: Arc<str>,
    /// Property name.
    pub property: Arc<str>,
    /// The value, in the model's type.
    pub value: Value,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Quality.
    pub quality: Quality,
}

impl Reading {
    /// A value just read from the device.
    pub fn good(
        device: &Arc<str>,
        property: &Arc<str>,
        value: Value,
        timestamp_ms: i64,
    ) -> Reading {
        Reading {
            device: device.clone(),
            property: property.clone(),
            value,
            timestamp_ms,
            quality: Quality::Good,
        }
    }
}

/// Device health, in KubeEdge's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Answering.
    Online,
    /// Not reachable: connection refused, timeouts, port gone.
    Offline,
    /// Reachable but answering garbage, exceptions or bad checksums.
    Unhealthy,
}

impl Health {
    /// KubeEdge's state text.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Online => "online",
            Health::Offline => "offline",
            Health::Unhealthy => "unhealthy",
        }
    }
}

/// A desired value to write.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteRequest {
    /// Caller's id, returned in the outcome.
    pub id: u64,
    /// Property name.
    pub property: String,
    /// The value, in the model's type.
    pub value: Value,
}

/// What became of a write.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    /// Written; the value read back afterwards (when the protocol can read it back).
    Done {
        /// The value read back.
        read_back: Option<Value>,
    },
    /// The device refused it (a Modbus exception, for instance).
    Refused(String),
    /// The property cannot be written (ReadOnly, a read-only table, no write command).
    ReadOnly(String),
    /// The value does not fit the property (out of range, wrong type).
    Invalid(String),
    /// The device could not be reached: the write may or may not have happened.
    LinkFailed(String),
}

/// Everything a mapper emits.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Readings of one poll (or one received record or message).
    Readings(Vec<Reading>),
    /// The device's health changed.
    Health {
        /// Device id.
        device: Arc<str>,
        /// New health.
        health: Health,
        /// Why, for the log.
        reason: String,
    },
    /// A write finished.
    Write {
        /// Device id.
        device: Arc<str>,
        /// [`WriteRequest::id`].
        id: u64,
        /// Property.
        property: String,
        /// What happened.
        outcome: WriteOutcome,
    },
}

/// A mapper's channels.
#[derive(Debug)]
pub struct MapperIo {
    /// Where events go. A full channel slows the mapper down (backpressure), never drops.
    pub events: mpsc::Sender<Event>,
    /// Writes to apply.
    pub writes: mpsc::Receiver<WriteRequest>,
    /// Becomes `true` to stop.
    pub shutdown: watch::Receiver<bool>,
    /// New property settings for the running mapper: a mapper built from the device's changed
    /// config, with the same protocol settings. The running mapper takes its properties (and,
    /// for Modbus, its read plan) and keeps its connection, port, metrics and health; a mapper
    /// of another kind is ignored (with a warning). The sender makes sure the protocol settings
    /// are the same; a change of those needs a new mapper.
    /// (Boxed: a channel's first block holds 32 slots, and a `Mapper` is large.)
    pub reconfigure: mpsc::Receiver<Box<Mapper>>,
}

/// Settings every mapper shares, with defaults.
#[derive(Debug, Clone)]
pub struct MapperOptions {
    /// Address of the gateway's embedded broker (for MQTT devices with `broker: embedded`).
    pub embedded_broker: Option<(String, u16)>,
    /// First reconnect delay; doubles up to `max_backoff`, with full jitter.
    pub min_backoff: Duration,
    /// Longest reconnect delay.
    pub max_backoff: Duration,
}

impl Default for MapperOptions {
    fn default() -> Self {
        MapperOptions {
            embedded_broker: None,
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// Why a mapper could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The read plan is impossible (a property longer than a read may be).
    #[error("read plan: {0}")]
    Plan(#[from] modbus::planner::PlanError),
    /// The device is not of this mapper's protocol.
    #[error("device {0} is not of this mapper's protocol")]
    WrongProtocol(String),
    /// An MQTT device on the embedded broker, but no broker address was given.
    #[error("device {0} uses the embedded broker, but the mapper has no broker address")]
    NoBroker(String),
}

/// Every kind of mapper.
#[derive(Debug)]
pub enum Mapper {
    /// Modbus TCP or RTU.
    Modbus(modbus::ModbusMapper),
    /// Serial line instrument.
    Serial(serial::SerialMapper),
    /// MQTT device.
    Mqtt(mqtt::MqttMapper),
}

impl Mapper {
    /// Builds the mapper of a device. Modbus devices share one link per endpoint through
    /// `links`.
    pub fn build(
        cfg: &DeviceConfig,
        links: &modbus::Links,
        opts: &MapperOptions,
    ) -> Result<Mapper, BuildError> {
        use device_models::protocol::DeviceProtocol;
        Ok(match &cfg.protocol {
            DeviceProtocol::Modbus(_) => Mapper::Modbus(modbus::ModbusMapper::build(cfg, links)?),
            DeviceProtocol::Serial(_) => Mapper::Serial(serial::SerialMapper::build(cfg, opts)?),
            DeviceProtocol::Mqtt(_) => Mapper::Mqtt(mqtt::MqttMapper::build(cfg, opts)?),
        })
    }

    /// The mapper's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        match self {
            Mapper::Modbus(m) => m.metrics(),
            Mapper::Serial(m) => m.metrics(),
            Mapper::Mqtt(m) => m.metrics(),
        }
    }

    /// Runs until shutdown.
    pub async fn run(self, io: MapperIo) {
        match self {
            Mapper::Modbus(m) => m.run(io).await,
            Mapper::Serial(m) => m.run(io).await,
            Mapper::Mqtt(m) => m.run(io).await,
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Exponential backoff with full jitter: `attempt` 0 waits up to `min`, then doubling, capped.
pub fn backoff(attempt: u32, min: Duration, max: Duration, rand01: f64) -> Duration {
    let cap = min.saturating_mul(1u32 << attempt.min(16)).min(max);
    cap.mul_f64(rand01.clamp(0.0, 1.0))
        .max(Duration::from_millis(10))
}

/// Slots a cycle is divided into: devices poll in one of them, so that a fleet's polls come in
/// [`PHASE_SLOTS`] small waves per cycle instead of one burst (the readings, store batches and
/// broker publishes of 100 devices at once), without waking the process for every device.
pub const PHASE_SLOTS: u32 = 10;

/// Where in its cycle a device polls, as a fraction of the cycle: `k / PHASE_SLOTS`, with `k` a
/// stable hash of the device id, so a device keeps its slot across restarts.
pub fn poll_phase(device: &str) -> f64 {
    // FNV-1a: stable across builds and platforms, unlike the standard library's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in device.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    // Murmur3's finaliser spreads ids that differ only in their last character.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    (h % u64::from(PHASE_SLOTS)) as f64 / f64::from(PHASE_SLOTS)
}

/// The process-wide origin of the poll grid: devices in the same slot and cycle wake together.
pub fn poll_epoch() -> tokio::time::Instant {
    static EPOCH: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(tokio::time::Instant::now)
}

/// The poll after one that was due at `due` and finished at `now`: the next point of the grid
/// `epoch + phase × interval + k × interval` that is at least half a cycle after `due` (the first
/// poll, at start, is off the grid) and after `now` (a poll that overran skips the points it
/// missed instead of polling back to back).
pub fn next_poll(
    epoch: tokio::time::Instant,
    phase: f64,
    interval: Duration,
    due: tokio::time::Instant,
    now: tokio::time::Instant,
) -> tokio::time::Instant {
    if interval.is_zero() {
        return now;
    }
    let origin = epoch + interval.mul_f64(phase.clamp(0.0, 1.0));
    let not_before = (due + interval / 2).max(now);
    // Grid points at or before `not_before` are taken; the next one is the answer.
    let since = not_before.saturating_duration_since(origin);
    let k = since.as_nanos() / interval.as_nanos() + 1;
    let k = u32::try_from(k).unwrap_or(u32::MAX);
    let next = origin + interval.saturating_mul(k);
    if origin > not_before { origin } else { next }
}

/// A small jitter source (no need for cryptographic randomness).
pub(crate) fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms() as u64);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps_with_jitter() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(backoff(0, min, max, 1.0), min);
        assert_eq!(backoff(3, min, max, 1.0), Duration::from_millis(800));
        assert_eq!(backoff(30, min, max, 1.0), max);
        assert_eq!(backoff(3, min, max, 0.5), Duration::from_millis(400));
        assert!(backoff(3, min, max, 0.0) >= Duration::from_millis(10));
        let j = jitter();
        assert!((0.0..1.0).contains(&j));
    }

    #[test]
    fn poll_phases_are_stable_and_spread_over_the_slots() {
        assert_eq!(poll_phase("rig7/pump-p201"), poll_phase("rig7/pump-p201"));
        // 100 devices named like a fleet: every slot gets some, none gets a quarter of them.
        let mut slots = [0usize; PHASE_SLOTS as usize];
        for i in 0..100 {
            let f = poll_phase(&format!("fleet/plc-{i:04}"));
            assert!((0.0..1.0).contains(&f), "{f}");
            slots[(f * f64::from(PHASE_SLOTS)).round() as usize] += 1;
        }
        assert!(slots.iter().all(|&n| (1..25).contains(&n)), "{slots:?}");
    }

    #[test]
    fn next_poll_keeps_to_the_grid() {
        let epoch = tokio::time::Instant::now();
        let ms = Duration::from_millis;
        let iv = ms(1000);
        // First poll at start (off the grid): the next is the grid point half a cycle away or more.
        assert_eq!(next_poll(epoch, 0.3, iv, epoch, epoch), epoch + ms(1300));
        assert_eq!(
            next_poll(epoch, 0.3, iv, epoch + ms(900), epoch + ms(900)),
            epoch + ms(2300)
        );
        assert_eq!(next_poll(epoch, 0.7, iv, epoch, epoch), epoch + ms(700));
        // On the grid: one interval later.
        assert_eq!(
            next_poll(epoch, 0.3, iv, epoch + ms(1300), epoch + ms(1310)),
            epoch + ms(2300)
        );
        // A poll that overran skips the missed points.
        assert_eq!(
            next_poll(epoch, 0.3, iv, epoch + ms(1300), epoch + ms(3500)),
            epoch + ms(4300)
        );
        // Started before the epoch's phase point, a later device joins the same grid.
        assert_eq!(
            next_poll(epoch, 0.0, iv, epoch + ms(5), epoch + ms(5)),
            epoch + ms(1000)
        );
        assert_eq!(
            next_poll(epoch, 0.5, ms(0), epoch, epoch + ms(7)),
            epoch + ms(7)
        );
    }
}
