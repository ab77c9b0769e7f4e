//! Helpers shared by the mapper tests: the example devices, retargeted at in-process simulators,
//! and a running mapper with its channels.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use device_models::protocol::DeviceProtocol;
use device_models::protocol::modbus::ModbusTransport;
use device_models::{DeviceConfig, DeviceSet};
use mappers::{
    Event, Health, Mapper, MapperIo, MapperOptions, Reading, WriteOutcome, WriteRequest,
};
use tokio::sync::{mpsc, watch};

pub fn platform() -> DeviceSet {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../device-models/examples/oil-platform");
    simulators::load_devices(&dir).unwrap()
}

pub fn device(set: &DeviceSet, id: &str) -> DeviceConfig {
    set.devices.iter().find(|d| d.id == id).unwrap().clone()
}

/// Points a Modbus TCP device at `addr`.
pub fn at_tcp(mut cfg: DeviceConfig, addr: SocketAddr) -> DeviceConfig {
    if let DeviceProtocol::Modbus(m) = &mut cfg.protocol {
        m.transport = ModbusTransport::Tcp {
            host: addr.ip().to_string(),
            port: addr.port(),
        };
    }
    cfg
}

/// Points a serial device (Modbus RTU or instrument) at `path`.
pub fn at_port(mut cfg: DeviceConfig, path: &str) -> DeviceConfig {
    match &mut cfg.protocol {
        DeviceProtocol::Modbus(m) => {
            if let ModbusTransport::Rtu(s) = &mut m.transport {
                s.port = path.to_string();
            }
        }
        DeviceProtocol::Serial(s) => s.line.port = path.to_string(),
        DeviceProtocol::Mqtt(_) => {}
    }
    cfg
}

/// A running mapper: feed it writes, read its events; stops when dropped.
#[derive(Debug)]
pub struct Running {
    pub events: mpsc::Receiver<Event>,
    pub writes: mpsc::Sender<WriteRequest>,
    /// New property settings for the running mapper.
    pub reconfigure: mpsc::Sender<Box<Mapper>>,
    pub metrics: std::sync::Arc<mappers::Metrics>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.task.abort();
    }
}

pub fn start(mapper: Mapper) -> Running {
    let (etx, erx) = mpsc::channel(1024);
    let (wtx, wrx) = mpsc::channel(16);
    let (stx, srx) = watch::channel(false);
    let (rtx, rrx) = mpsc::channel(1);
    let metrics = mapper.metrics();
    let task = tokio::spawn(mapper.run(MapperIo {
        events: etx,
        writes: wrx,
        shutdown: srx,
        reconfigure: rrx,
    }));
    Running {
        events: erx,
        writes: wtx,
        reconfigure: rtx,
        metrics,
        shutdown: stx,
        task,
    }
}

pub fn options() -> MapperOptions {
    MapperOptions {
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        ..MapperOptions::default()
    }
}

impl Running {
    /// Next event within `limit`.
    pub async fn next(&mut self, limit: Duration) -> Event {
        tokio::time::timeout(limit, self.events.recv())
            .await
            .expect("no event in time")
            .expect("mapper stopped")
    }

    /// Waits for a batch of readings.
    pub async fn readings(&mut self, limit: Duration) -> Vec<Reading> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Event::Readings(r) = self.next(left).await {
                return r;
            }
        }
    }

    /// Waits until the device reports `want`.
    pub async fn health(&mut self, want: Health, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "device never became {want:?}");
            if let Event::Health { health, .. } = self.next(left).await
                && health == want
            {
                return;
            }
        }
    }

    /// Sends a write and waits for its outcome.
    pub async fn write(
        &mut self,
        id: u64,
        property: &str,
        value: device_models::Value,
        limit: Duration,
    ) -> WriteOutcome {
        self.writes
            .send(WriteRequest {
                id,
                property: property.into(),
                value,
            })
            .await
            .unwrap();
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Event::Write {
                id: got, outcome, ..
            } = self.next(left).await
                && got == id
            {
                return outcome;
            }
        }
    }
}
