//! The hub's end of one edge session, without I/O.
//!
//! Inputs: `handle` (a message from the edge), `object_changed` (the watcher saw an object of
//! this node change), `handle_timeout`. Outputs: `poll_transmit` (messages to send, within the
//! window), `poll_event`, `poll_timeout`. The session keeps no state that outlives it: what the
//! edge holds comes from its hello, so any hub replica can serve any node and a hub restart
//! loses nothing.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::digest::{Digest, bucket_of};
use super::msg::{EdgeMsg, HubMsg, Report, TelemetrySample, Token};
use super::{CloseReason, Object};

/// Where sessions look up credentials and the objects bound to a node (the hub's cache).
pub trait Directory {
    /// Whether `token` is `node`'s credential.
    fn authenticate(&self, node: &str, token: &Token) -> bool;
    /// Calls `f` with every object bound to `node`.
    fn for_each_object(&self, node: &str, f: &mut dyn FnMut(&str, &Object));
}

/// Settings of a hub session.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Downstream messages in flight (sent, not acknowledged) at most.
    pub window: usize,
    /// Both ends ping at this interval; silence for two intervals closes the session.
    pub heartbeat: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            window: 256,
            heartbeat: Duration::from_secs(5),
        }
    }
}

/// What a session reports to its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubEvent {
    /// The edge proved it is `node`.
    Authenticated {
        /// Its name.
        node: String,
    },
    /// The edge has applied everything it lacked at hello.
    Synced,
    /// Reported values and states of the node's own devices: write them to the cluster, then
    /// call [`Session::reports_written`] with `id`.
    Reports {
        /// Batch number, for the ack.
        id: u64,
        /// The reports (those about other nodes' devices are left out and counted).
        reports: Vec<Report>,
    },
    /// Telemetry of the node's own devices: store it (deduplicating by node and sequence),
    /// then call [`Session::telemetry_stored`] with `last_seq`.
    Telemetry {
        /// The samples, in sequence order.
        samples: Vec<TelemetrySample>,
        /// The last sequence number of the message (acknowledge this one even when samples
        /// about other nodes' devices were left out).
        last_seq: u64,
    },
    /// The session is over; the driver closes the connection after sending what is queued.
    Closed(CloseReason),
}

/// Counters of one session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Buckets the edge was asked to expand.
    pub buckets_expanded: u64,
    /// Upserts sent.
    pub upserts: u64,
    /// Deletes sent.
    pub deletes: u64,
    /// Changes folded into a newer change of the same key before being sent.
    pub coalesced: u64,
    /// Reports and samples about devices that are not the node's, left out.
    pub foreign_refused: u64,
}

#[derive(Debug)]
enum Change {
    Upsert(Object),
    Delete,
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    AwaitHello,
    AwaitEntries(Vec<u8>),
    Live,
    Closed,
}

/// One edge's session.
#[derive(Debug)]
pub struct Session {
    cfg: HubConfig,
    node: Option<String>,
    phase: Phase,
    // Downstream: changes not yet sent, in order, one per key (the newest).
    order: VecDeque<String>,
    changes: HashMap<String, Change>,
    // `Synced` goes out after this many more changes from the front of `order`.
    synced_after: Option<usize>,
    synced_seq: Option<u64>,
    next_seq: u64,
    acked: u64,
    out: VecDeque<HubMsg>,
    events: VecDeque<HubEvent>,
    last_heard: Instant,
    next_ping: Instant,
    ping_id: u64,
    stats: HubStats,
    reports_received: u64,
    telemetry_received: u64,
}

impl Session {
    /// A session for a connection accepted at `now`.
    pub fn new(cfg: HubConfig, now: Instant) -> Session {
        let next_ping = now + cfg.heartbeat;
        Session {
            cfg,
            node: None,
            phase: Phase::AwaitHello,
            order: VecDeque::new(),
            changes: HashMap::new(),
            synced_after: None,
            synced_seq: None,
            next_seq: 1,
            acked: 0,
            out: VecDeque::new(),
            events: VecDeque::new(),
            last_heard: now,
            next_ping,
            ping_id: 0,
            stats: HubStats::default(),
            reports_received: 0,
            telemetry_received: 0,
        }
    }

    /// The authenticated node, once the hello is accepted.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// This session's counters.
    pub fn stats(&self) -> &HubStats {
        &self.stats
    }

    /// Whether the session is over.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// A message from the edge.
    pub fn handle(&mut self, msg: EdgeMsg, now: Instant, dir: &dyn Directory) {
        if self.phase == Phase::Closed {
            return;
        }
        self.last_heard = now;
        match (msg, &self.phase) {
            (EdgeMsg::Ping { id }, _) => self.out.push_back(HubMsg::Pong { id }),
            (EdgeMsg::Pong { .. }, _) => {}
            (
                EdgeMsg::Hello {
                    node,
                    token,
                    digest,
                },
                Phase::AwaitHello,
            ) => self.hello(node, &token, &digest, dir),
            (EdgeMsg::Entries { buckets, entries }, Phase::AwaitEntries(asked)) => {
                let asked = asked.clone();
                self.entries(&asked, &buckets, entries, dir);
            }
            (EdgeMsg::Ack { seq }, Phase::Live) => {
                if seq < self.acked || seq >= self.next_seq {
                    self.close(CloseReason::Protocol(format!(
                        "ack {seq} outside {}..{}",
                        self.acked,
                        self.next_seq - 1
                    )));
                    return;
                }
                self.acked = seq;
                if self.synced_seq.is_some_and(|s| s <= seq) {
                    self.synced_seq = None;
                    self.events.push_back(HubEvent::Synced);
                }
            }
            (EdgeMsg::Reports { id, reports }, Phase::Live) => self.reports(id, reports, dir),
            (EdgeMsg::Telemetry { samples }, Phase::Live) => self.telemetry(samples, dir),
            (m, phase) => {
                let what = format!("{m:?}");
                let what = what.split([' ', '{']).next().unwrap_or("message");
                let reason = CloseReason::Protocol(format!("unexpected {what} in phase {phase:?}"));
                self.close(reason);
            }
        }
    }

    fn reports(&mut self, id: u64, reports: Vec<Report>, dir: &dyn Directory) {
        if id != self.reports_received + 1 {
            let want = self.reports_received + 1;
            self.close(CloseReason::Protocol(format!(
                "reports batch {id}, expected {want}"
            )));
            return;
        }
        self.reports_received = id;
        let reports = self.own_devices_only(reports, |r| &r.device, dir);
        self.events.push_back(HubEvent::Reports { id, reports });
    }

    /// The items about devices bound to this session's node (a node writes only its own
    /// devices); the others are counted. One pass over the node's objects per message, not one
    /// per item.
    fn own_devices_only<T>(
        &mut self,
        items: Vec<T>,
        device: impl Fn(&T) -> &str,
        dir: &dyn Directory,
    ) -> Vec<T> {
        let Some(node) = self.node.as_deref() else {
            return Vec::new();
        };
        let mut own: HashSet<String> = HashSet::new();
        if !items.is_empty() {
            dir.for_each_object(node, &mut |key, _| {
                if let Some(id) = key.strip_prefix("Device/") {
                    own.insert(id.to_string());
                }
            });
        }
        let n = items.len();
        let kept: Vec<T> = items
            .into_iter()
            .filter(|t| own.contains(device(t)))
            .collect();
        self.stats.foreign_refused += (n - kept.len()) as u64;
        kept
    }

    fn telemetry(&mut self, samples: Vec<TelemetrySample>, dir: &dyn Directory) {
        let mut last = self.telemetry_received;
        for s in &samples {
            if s.seq <= last {
                self.close(CloseReason::Protocol(format!(
                    "telemetry sequence {} after {last}",
                    s.seq
                )));
                return;
            }
            last = s.seq;
        }
        if last == self.telemetry_received {
            return;
        }
        self.telemetry_received = last;
        let samples = self.own_devices_only(samples, |s| &s.device, dir);
        self.events.push_back(HubEvent::Telemetry {
            samples,
            last_seq: last,
        });
    }

    /// The reports of every batch up to `id` are written to the cluster: acknowledges them.
    pub fn reports_written(&mut self, id: u64) {
        if self.phase != Phase::Closed {
            self.out.push_back(HubMsg::ReportsAck { id });
        }
    }

    /// The sink stored every sample up to `seq`: acknowledges them (one ack for many).
    pub fn telemetry_stored(&mut self, seq: u64) {
        if self.phase != Phase::Closed {
            self.out
                .retain(|m| !matches!(m, HubMsg::TelemetryAck { .. }));
            self.out.push_back(HubMsg::TelemetryAck { seq });
        }
    }

    fn hello(&mut self, node: String, token: &Token, digest: &Digest, dir: &dyn Directory) {
        if !dir.authenticate(&node, token) {
            self.out.push_back(HubMsg::Refused {
                reason: format!("credentials are not those of node {node:?}"),
            });
            self.close(CloseReason::Refused(format!(
                "bad credentials for node {node:?}"
            )));
            return;
        }
        self.out.push_back(HubMsg::Welcome {
            heartbeat_ms: self.cfg.heartbeat.as_millis() as u64,
        });
        let mut ours = Digest::default();
        dir.for_each_object(&node, &mut |k, o| ours.insert(k, &o.version));
        let buckets = ours.differing(digest);
        self.events
            .push_back(HubEvent::Authenticated { node: node.clone() });
        self.node = Some(node);
        if buckets.is_empty() {
            self.live();
        } else {
            self.stats.buckets_expanded += buckets.len() as u64;
            self.out.push_back(HubMsg::Expand {
                buckets: buckets.clone(),
            });
            self.phase = Phase::AwaitEntries(buckets);
        }
    }

    fn entries(
        &mut self,
        asked: &[u8],
        buckets: &[u8],
        entries: Vec<(String, String)>,
        dir: &dyn Directory,
    ) {
        if buckets != asked {
            self.close(CloseReason::Protocol(
                "entries for other buckets than asked".into(),
            ));
            return;
        }
        let mut theirs: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in entries {
            if asked.binary_search(&bucket_of(&k)).is_err() {
                self.close(CloseReason::Protocol(format!(
                    "entry {k:?} is not in an expanded bucket"
                )));
                return;
            }
            theirs.insert(k, v);
        }
        let Some(node) = self.node.clone() else {
            return;
        };
        let mut upserts = Vec::new();
        dir.for_each_object(&node, &mut |k, o| {
            if asked.binary_search(&bucket_of(k)).is_ok()
                && theirs.remove(k).is_none_or(|v| v != o.version)
            {
                upserts.push((k.to_string(), o.clone()));
            }
        });
        for (k, o) in upserts {
            self.queue(k, Change::Upsert(o));
        }
        // What the edge holds and the hub does not bind to it any more.
        for k in theirs.into_keys() {
            self.queue(k, Change::Delete);
        }
        self.live();
    }

    fn live(&mut self) {
        self.phase = Phase::Live;
        self.synced_after = Some(self.order.len());
    }

    /// The watcher saw an object bound to this session's node change (`None`: deleted or no
    /// longer bound to it). Call it from hello on; changes before sync are folded in.
    pub fn object_changed(&mut self, key: &str, object: Option<Object>) {
        if self.node.is_none() || self.phase == Phase::Closed {
            return;
        }
        let change = match object {
            Some(o) => Change::Upsert(o),
            None => Change::Delete,
        };
        self.queue(key.to_string(), change);
    }

    fn queue(&mut self, key: String, change: Change) {
        match self.changes.insert(key.clone(), change) {
            Some(_) => self.stats.coalesced += 1,
            None => self.order.push_back(key),
        }
    }

    /// The next message to send, if any may go now.
    pub fn poll_transmit(&mut self) -> Option<HubMsg> {
        if let Some(m) = self.out.pop_front() {
            return Some(m);
        }
        if self.phase != Phase::Live {
            return None;
        }
        let in_flight = (self.next_seq - 1 - self.acked) as usize;
        if in_flight >= self.cfg.window {
            return None;
        }
        let seq = self.next_seq;
        if self.synced_after == Some(0) {
            self.synced_after = None;
            self.synced_seq = Some(seq);
            self.next_seq += 1;
            return Some(HubMsg::Synced { seq });
        }
        let key = self.order.pop_front()?;
        let change = self.changes.remove(&key)?;
        if let Some(n) = self.synced_after.as_mut() {
            *n -= 1;
        }
        self.next_seq += 1;
        Some(match change {
            Change::Upsert(o) => {
                self.stats.upserts += 1;
                HubMsg::Upsert {
                    seq,
                    key,
                    version: o.version,
                    body: o.body,
                }
            }
            Change::Delete => {
                self.stats.deletes += 1;
                HubMsg::Delete { seq, key }
            }
        })
    }

    /// The next thing the session reports.
    pub fn poll_event(&mut self) -> Option<HubEvent> {
        self.events.pop_front()
    }

    /// When `handle_timeout` is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Closed {
            return None;
        }
        Some(self.next_ping.min(self.last_heard + 2 * self.cfg.heartbeat))
    }

    /// Time passed: ping, or give up on a silent edge.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Closed {
            return;
        }
        if now >= self.last_heard + 2 * self.cfg.heartbeat {
            self.close(CloseReason::Timeout);
            return;
        }
        if now >= self.next_ping {
            self.ping_id += 1;
            self.out.push_back(HubMsg::Ping { id: self.ping_id });
            self.next_ping = now + self.cfg.heartbeat;
        }
    }

    fn close(&mut self, reason: CloseReason) {
        self.phase = Phase::Closed;
        self.events.push_back(HubEvent::Closed(reason));
    }
}
