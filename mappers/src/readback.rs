//! What the serial and MQTT mappers share about writes: a write is confirmed by the next
//! record or message that carries its property (or, after a wait, confirmed without a value),
//! and every outcome is emitted the same way.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use device_models::Value;
use tokio::time::Instant;

use crate::{Event, MapperIo, Metrics, Reading, WriteOutcome};

/// Writes waiting to be read back.
#[derive(Debug, Default)]
pub(crate) struct ReadBacks {
    pending: Vec<(u64, String, Instant)>,
}

impl ReadBacks {
    /// A write `id` of `property`, confirmed within `wait` or given up on.
    pub fn push(&mut self, id: u64, property: String, wait: Duration) {
        self.pending.push((id, property, Instant::now() + wait));
    }

    /// When the next write gives up waiting.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.2).min()
    }

    /// The writes whose wait is over.
    pub fn take_expired(&mut self, now: Instant) -> Vec<(u64, String)> {
        let (late, keep): (Vec<_>, Vec<_>) = self.pending.drain(..).partition(|p| p.2 <= now);
        self.pending = keep;
        late.into_iter().map(|(id, p, _)| (id, p)).collect()
    }

    /// The writes these readings confirm, with the value read back.
    pub fn take_answered(&mut self, readings: &[Reading]) -> Vec<(u64, String, Value)> {
        let mut done = Vec::new();
        self.pending.retain(|(id, prop, _)| {
            match readings.iter().find(|r| *r.property == **prop) {
                Some(r) => {
                    done.push((*id, prop.clone(), r.value.clone()));
                    false
                }
                None => true,
            }
        });
        done
    }
}

/// Sleeps until `deadline`, or forever when there is none (a `select!` branch that never fires).
pub(crate) async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Emits a write outcome (counting the writes done); `false` when nobody listens any more.
pub(crate) async fn emit_write(
    io: &MapperIo,
    metrics: &Metrics,
    device: &Arc<str>,
    id: u64,
    property: String,
    outcome: WriteOutcome,
) -> bool {
    if matches!(outcome, WriteOutcome::Done { .. }) {
        metrics.writes.fetch_add(1, Ordering::Relaxed);
    }
    io.events
        .send(Event::Write {
            device: device.clone(),
            id,
            property,
            outcome,
        })
        .await
        .is_ok()
}
