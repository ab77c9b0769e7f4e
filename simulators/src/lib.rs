//! Device simulators for development, CI, demos and benchmarks.
//!
//! The devices are the ones a device directory describes (by default the oil-platform example):
//! the simulator reads the same files the gateway does, so a register map lives in one place.
//! Transports: Modbus TCP ([`modbus::tcp`]), Modbus RTU on a pty or a serial port
//! ([`modbus::rtu`], [`pty`]), line-based serial instruments ([`serial`]) and MQTT devices
//! ([`mqtt`]). Everything starts in-process on port 0 for tests; the `ballast-sim` binary wraps
//! the same functions. Behaviour is deterministic for a given `seed`; faults are injected per
//! endpoint ([`modbus::Faults`], [`serial::SerialFaults`], [`mqtt::MqttFaults`]).

pub mod fleet;
pub mod modbus;
pub mod mqtt;
pub mod physics;
pub mod plc;
pub mod pty;
pub mod rng;
pub mod serial;
pub mod testkit;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use device_models::protocol::DeviceProtocol;
use device_models::protocol::modbus::ModbusTransport;
use device_models::{DeviceConfig, DeviceSet};
use tokio::task::JoinHandle;

use crate::modbus::Endpoint;
use crate::plc::SimPlc;

/// Why a set of devices cannot be simulated.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Two devices on one endpoint use the same unit id.
    #[error("unit id {unit} is used by both {first} and {second} on one endpoint")]
    DuplicateUnit {
        /// The unit id.
        unit: u8,
        /// First device.
        first: String,
        /// Second device.
        second: String,
    },
    /// The device files have errors.
    #[error("the device files have {0} errors (run `ballast-gateway check` on them)")]
    InvalidDevices(usize),
    /// An I/O error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Which kind of Modbus line a device is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// Modbus TCP.
    Tcp,
    /// Modbus RTU.
    Rtu,
}

/// The simulated slaves of every Modbus device on `line`, as one endpoint (one listener or one
/// serial line, several unit ids).
pub fn modbus_endpoint(
    devices: &[DeviceConfig],
    line: Line,
    seed: u64,
) -> Result<Arc<Endpoint>, SimError> {
    let mut by_unit: BTreeMap<u8, String> = BTreeMap::new();
    let mut plcs = Vec::new();
    for d in devices {
        let DeviceProtocol::Modbus(m) = &d.protocol else {
            continue;
        };
        let on_line = match m.transport {
            ModbusTransport::Tcp { .. } => Line::Tcp,
            ModbusTransport::Rtu(_) => Line::Rtu,
        };
        if on_line != line {
            continue;
        }
        if let Some(first) = by_unit.insert(m.slave_id, d.id.clone()) {
            return Err(SimError::DuplicateUnit {
                unit: m.slave_id,
                first,
                second: d.id.clone(),
            });
        }
        if let Some(p) = SimPlc::new(d, seed) {
            plcs.push(p);
        }
    }
    Ok(Endpoint::new(plcs, seed))
}

/// Loads and validates a device directory for simulation.
pub fn load_devices(dir: &std::path::Path) -> Result<DeviceSet, SimError> {
    let set = device_models::check_path(dir);
    if set.errors() > 0 {
        return Err(SimError::InvalidDevices(set.errors()));
    }
    Ok(set)
}

/// Advances the physics of `endpoints` every `tick` (fixed steps of `tick`, so a run is
/// deterministic in the number of ticks). Stops when the handle is dropped... by `abort`.
pub fn spawn_ticker(endpoints: Vec<Arc<Endpoint>>, tick: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut iv = tokio::time::interval(tick);
        iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            iv.tick().await;
            for ep in &endpoints {
                ep.tick(tick.as_secs_f64());
            }
        }
    })
}

/// Whether the `n`th event (counting from 1) is hit by an "every Kth" fault.
pub fn every(k: Option<u64>, n: u64) -> bool {
    k.is_some_and(|k| k > 0 && n.is_multiple_of(k))
}

/// Aborts a task when dropped: every simulator task a test starts stops with the test.
#[derive(Debug)]
pub struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
