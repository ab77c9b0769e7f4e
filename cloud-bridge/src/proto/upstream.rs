//! The edge's upstream half, without I/O: reported values and device states, coalesced, and
//! telemetry pulled from the outbox within a window and a rate.
//!
//! Reports live only here until the hub acknowledges them: the newest of each (device,
//! property) waits in `pending`; a batch in flight that a lost session never acknowledged goes
//! back to `pending` unless a newer value came meanwhile. Telemetry lives in the driver's outbox
//! (SQLite): the driver asks [`Upstream::telemetry_wanted`] how many rows after which sequence
//! number to read, hands them to [`Upstream::send_telemetry`], and deletes rows once a
//! `TelemetryAck` says the sink stored them. A new session resends from the last ack; the sink
//! deduplicates by (node, seq), so each sample is stored once. Reports go before telemetry, so
//! live twin values overtake a backlog.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::msg::{EdgeMsg, Report, TelemetrySample};

/// Settings of the upstream half.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Reports per batch at most.
    pub report_batch: usize,
    /// Report batches in flight (sent, not acknowledged) at most.
    pub report_window: usize,
    /// Telemetry samples per message at most.
    pub telemetry_batch: usize,
    /// Telemetry samples in flight at most.
    pub telemetry_window: usize,
    /// Telemetry samples sent per second at most (a backlog after an outage drains at this
    /// rate; one second's worth may go at once).
    pub telemetry_rate: u32,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            report_batch: 256,
            report_window: 4,
            telemetry_batch: 512,
            telemetry_window: 8192,
            telemetry_rate: 5000,
        }
    }
}

type Key = (String, Option<String>);

/// The upstream state of an edge.
#[derive(Debug)]
pub struct Upstream {
    cfg: UpstreamConfig,
    pending: BTreeMap<Key, (String, i64)>,
    in_flight: VecDeque<(u64, Vec<Report>)>,
    next_batch: u64,
    /// Highest sequence number the sink acknowledged.
    telemetry_acked: u64,
    /// Highest sequence number sent in this session.
    telemetry_sent: u64,
    tokens: f64,
    refilled: Option<Instant>,
}

impl Upstream {
    /// Upstream state with nothing pending.
    pub fn new(cfg: UpstreamConfig) -> Upstream {
        Upstream {
            cfg,
            pending: BTreeMap::new(),
            in_flight: VecDeque::new(),
            next_batch: 1,
            telemetry_acked: 0,
            telemetry_sent: 0,
            tokens: 0.0,
            refilled: None,
        }
    }

    /// A reported value (`property: Some`) or a device state (`None`) to send: replaces what
    /// is pending for the same key.
    pub fn report(&mut self, device: String, property: Option<String>, value: String, ts: i64) {
        self.pending.insert((device, property), (value, ts));
    }

    /// Reports waiting to be sent (not counting those in flight).
    pub fn reports_pending(&self) -> usize {
        self.pending.len()
    }

    /// A new session: batches in flight go back to pending (unless superseded), telemetry is
    /// sent again from the last ack.
    pub(crate) fn session_started(&mut self) {
        while let Some((_, batch)) = self.in_flight.pop_front() {
            for r in batch {
                self.pending
                    .entry((r.device, r.property))
                    .or_insert((r.value, r.ts));
            }
        }
        self.next_batch = 1;
        self.telemetry_sent = self.telemetry_acked;
    }

    /// The hub wrote every batch up to `id`.
    pub(crate) fn reports_acked(&mut self, id: u64) {
        while self.in_flight.front().is_some_and(|(b, _)| *b <= id) {
            self.in_flight.pop_front();
        }
    }

    /// The sink stored every sample up to `seq`; false when that is not news.
    pub(crate) fn telemetry_acked(&mut self, seq: u64) -> bool {
        if seq <= self.telemetry_acked {
            return false;
        }
        self.telemetry_acked = seq;
        self.telemetry_sent = self.telemetry_sent.max(seq);
        true
    }

    /// The next report batch, if the window allows.
    pub(crate) fn poll_reports(&mut self) -> Option<EdgeMsg> {
        if self.pending.is_empty() || self.in_flight.len() >= self.cfg.report_window {
            return None;
        }
        let mut reports = Vec::new();
        while reports.len() < self.cfg.report_batch.max(1) {
            let Some(((device, property), (value, ts))) = self.pending.pop_first() else {
                break;
            };
            reports.push(Report {
                device,
                property,
                value,
                ts,
            });
        }
        let id = self.next_batch;
        self.next_batch += 1;
        self.in_flight.push_back((id, reports.clone()));
        Some(EdgeMsg::Reports { id, reports })
    }

    fn refill(&mut self, now: Instant) {
        let rate = f64::from(self.cfg.telemetry_rate.max(1));
        let elapsed = self
            .refilled
            .map_or(Duration::from_secs(1), |t| now.saturating_duration_since(t));
        self.tokens = (self.tokens + elapsed.as_secs_f64() * rate).min(rate);
        self.refilled = Some(now);
    }

    /// How many outbox rows after which sequence number the driver should read now, if any.
    pub(crate) fn telemetry_wanted(&mut self, now: Instant) -> Option<(u64, usize)> {
        self.refill(now);
        let in_flight = usize::try_from(self.telemetry_sent - self.telemetry_acked).unwrap_or(0);
        let room = self.cfg.telemetry_window.saturating_sub(in_flight);
        let n = room
            .min(self.cfg.telemetry_batch)
            .min(self.tokens.floor() as usize);
        (n > 0).then_some((self.telemetry_sent, n))
    }

    /// Rows read from the outbox after the sequence number `telemetry_wanted` gave.
    pub(crate) fn send_telemetry(&mut self, samples: Vec<TelemetrySample>) -> Option<EdgeMsg> {
        let last = samples.last()?.seq;
        self.tokens -= samples.len() as f64;
        self.telemetry_sent = self.telemetry_sent.max(last);
        Some(EdgeMsg::Telemetry { samples })
    }
}
