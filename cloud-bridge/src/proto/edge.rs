//! The edge's end of the channel, without I/O.
//!
//! The edge's store is the record of what it holds: `Edge::new` takes the (key, version) pairs
//! it has committed, and the digest of its hello is computed from them. Downstream changes come
//! out as events; the driver stores them and calls `committed(seq)` once the transaction has
//! committed, and only then is the change acknowledged (cumulatively, one ack for a batch).
//! `connect` starts a session over a new connection; `connection_lost` ends one.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::CloseReason;
use super::digest::{Digest, bucket_of};
use super::msg::{EdgeMsg, HubMsg, TelemetrySample, Token};
use super::upstream::{Upstream, UpstreamConfig};

/// What the edge reports to its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeEvent {
    /// The hub accepted the hello.
    Welcome,
    /// Store this object, then call `committed(seq)`.
    Apply {
        /// Downstream sequence.
        seq: u64,
        /// `kind/namespace/name`.
        key: String,
        /// Opaque version.
        version: String,
        /// The object as JSON.
        body: String,
    },
    /// Forget this object, then call `committed(seq)`.
    Remove {
        /// Downstream sequence.
        seq: u64,
        /// `kind/namespace/name`.
        key: String,
    },
    /// Everything the hub had for this node at hello has been received (call `committed(seq)`
    /// like for the others).
    Synced {
        /// Downstream sequence.
        seq: u64,
    },
    /// The sink stored every telemetry sample up to `seq`: delete them from the outbox.
    TelemetryStored {
        /// Outbox sequence number.
        seq: u64,
    },
    /// The session is over: reconnect after a back-off (unless it was refused).
    Closed(CloseReason),
}

/// A delivered change that becomes part of what the edge holds once committed.
#[derive(Debug)]
enum Pending {
    /// The key now has this version.
    Put(String, String),
    /// The key is gone.
    Remove(String),
    /// `Synced`: nothing to hold, but it is acknowledged like the others.
    Marker,
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    AwaitWelcome,
    Live,
}

/// The edge end.
#[derive(Debug)]
pub struct Edge {
    node: String,
    token: Token,
    held: BTreeMap<String, String>,
    digest: Digest,
    phase: Phase,
    // Delivered as events, not yet committed, with their downstream sequence.
    uncommitted: VecDeque<(u64, Pending)>,
    received: u64,
    committed: u64,
    acked: u64,
    out: VecDeque<EdgeMsg>,
    events: VecDeque<EdgeEvent>,
    heartbeat: Duration,
    last_heard: Instant,
    next_ping: Instant,
    ping_id: u64,
    up: Upstream,
    telemetry_out: VecDeque<EdgeMsg>,
}

impl Edge {
    /// An edge that holds `held` (key, version), as committed in its store.
    pub fn new(
        node: impl Into<String>,
        token: Token,
        held: impl IntoIterator<Item = (String, String)>,
        now: Instant,
    ) -> Edge {
        let held: BTreeMap<String, String> = held.into_iter().collect();
        let digest = Digest::of(held.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let heartbeat = Duration::from_secs(5);
        Edge {
            node: node.into(),
            token,
            held,
            digest,
            phase: Phase::Idle,
            uncommitted: VecDeque::new(),
            received: 0,
            committed: 0,
            acked: 0,
            out: VecDeque::new(),
            events: VecDeque::new(),
            heartbeat,
            last_heard: now,
            next_ping: now + heartbeat,
            ping_id: 0,
            up: Upstream::new(UpstreamConfig::default()),
            telemetry_out: VecDeque::new(),
        }
    }

    /// The same edge with other upstream settings (batches, windows, telemetry rate).
    pub fn with_upstream(mut self, cfg: UpstreamConfig) -> Edge {
        self.up = Upstream::new(cfg);
        self
    }

    /// A reported value (`property: Some`) or a device state (`None`) for the cluster. Only
    /// the newest of each (device, property) is sent; it waits here through an outage.
    pub fn report(&mut self, device: String, property: Option<String>, value: String, ts: i64) {
        self.up.report(device, property, value, ts);
    }

    /// Reports waiting to be sent.
    pub fn reports_pending(&self) -> usize {
        self.up.reports_pending()
    }

    /// While a session is up: read at most `n` outbox rows with a sequence number after the
    /// first value, and pass them to [`Edge::send_telemetry`]. `None`: not now (window full,
    /// rate spent, or no session).
    pub fn telemetry_wanted(&mut self, now: Instant) -> Option<(u64, usize)> {
        if self.phase != Phase::Live {
            return None;
        }
        self.up.telemetry_wanted(now)
    }

    /// Outbox rows, in sequence order, as [`Edge::telemetry_wanted`] asked for.
    pub fn send_telemetry(&mut self, samples: Vec<TelemetrySample>) {
        if self.phase != Phase::Live {
            return;
        }
        if let Some(m) = self.up.send_telemetry(samples) {
            self.telemetry_out.push_back(m);
        }
    }

    /// What the edge holds (committed): key → version.
    pub fn held(&self) -> &BTreeMap<String, String> {
        &self.held
    }

    /// Whether a session is up (hello accepted).
    pub fn is_live(&self) -> bool {
        self.phase == Phase::Live
    }

    /// A new connection is up: starts a session with a hello. Events of an earlier session
    /// that were never committed are forgotten; the digest will bring them back.
    pub fn connect(&mut self, now: Instant) {
        self.out.clear();
        self.uncommitted.clear();
        self.received = 0;
        self.committed = 0;
        self.acked = 0;
        self.telemetry_out.clear();
        self.up.session_started();
        self.phase = Phase::AwaitWelcome;
        self.last_heard = now;
        self.next_ping = now + self.heartbeat;
        self.out.push_back(EdgeMsg::Hello {
            node: self.node.clone(),
            token: self.token.clone(),
            digest: self.digest.clone(),
        });
    }

    /// The connection is gone.
    pub fn connection_lost(&mut self) {
        if self.phase != Phase::Idle {
            self.phase = Phase::Idle;
            self.out.clear();
            self.events.push_back(EdgeEvent::Closed(CloseReason::Lost));
        }
    }

    /// A message from the hub.
    pub fn handle(&mut self, msg: HubMsg, now: Instant) {
        if self.phase == Phase::Idle {
            return;
        }
        self.last_heard = now;
        match msg {
            HubMsg::Ping { id } => self.out.push_back(EdgeMsg::Pong { id }),
            HubMsg::Pong { .. } => {}
            HubMsg::Welcome { heartbeat_ms } if self.phase == Phase::AwaitWelcome => {
                self.heartbeat = Duration::from_millis(heartbeat_ms.clamp(100, 600_000));
                self.next_ping = now + self.heartbeat;
                self.phase = Phase::Live;
                self.events.push_back(EdgeEvent::Welcome);
            }
            HubMsg::Refused { reason } => self.close(CloseReason::Refused(reason)),
            HubMsg::ReportsAck { id } if self.phase == Phase::Live => self.up.reports_acked(id),
            HubMsg::TelemetryAck { seq } if self.phase == Phase::Live => {
                if self.up.telemetry_acked(seq) {
                    self.events.push_back(EdgeEvent::TelemetryStored { seq });
                }
            }
            HubMsg::Expand { buckets } if self.phase == Phase::Live => {
                let mut entries = Vec::new();
                for (k, v) in &self.held {
                    if buckets.binary_search(&bucket_of(k)).is_ok() {
                        entries.push((k.clone(), v.clone()));
                    }
                }
                self.out.push_back(EdgeMsg::Entries { buckets, entries });
            }
            HubMsg::Upsert {
                seq,
                key,
                version,
                body,
            } if self.in_order(seq) => {
                self.uncommitted
                    .push_back((seq, Pending::Put(key.clone(), version.clone())));
                self.events.push_back(EdgeEvent::Apply {
                    seq,
                    key,
                    version,
                    body,
                });
            }
            HubMsg::Delete { seq, key } if self.in_order(seq) => {
                self.uncommitted
                    .push_back((seq, Pending::Remove(key.clone())));
                self.events.push_back(EdgeEvent::Remove { seq, key });
            }
            HubMsg::Synced { seq } if self.in_order(seq) => {
                self.uncommitted.push_back((seq, Pending::Marker));
                self.events.push_back(EdgeEvent::Synced { seq });
            }
            other => {
                let what = format!("{other:?}");
                let what = what
                    .split([' ', '{'])
                    .next()
                    .unwrap_or("message")
                    .to_string();
                let expected = self.received + 1;
                self.close(CloseReason::Protocol(format!(
                    "unexpected {what} (next downstream sequence {expected}, phase {:?})",
                    self.phase
                )));
            }
        }
    }

    fn in_order(&mut self, seq: u64) -> bool {
        if self.phase == Phase::Live && seq == self.received + 1 {
            self.received = seq;
            true
        } else {
            false
        }
    }

    /// Everything delivered up to `seq` is stored: it becomes part of what the edge holds,
    /// and is acknowledged.
    pub fn committed(&mut self, seq: u64) {
        while let Some((s, _)) = self.uncommitted.front() {
            if *s > seq {
                break;
            }
            let Some((s, change)) = self.uncommitted.pop_front() else {
                break;
            };
            self.committed = s;
            let (key, version) = match change {
                Pending::Put(key, version) => (key, Some(version)),
                Pending::Remove(key) => (key, None),
                Pending::Marker => continue,
            };
            if let Some(old) = self.held.remove(&key) {
                self.digest.remove(&key, &old);
            }
            if let Some(v) = version {
                self.digest.insert(&key, &v);
                self.held.insert(key, v);
            }
        }
        if self.phase == Phase::Live && self.committed > self.acked {
            // One ack for all that is committed: replace an ack still waiting to go.
            self.out.retain(|m| !matches!(m, EdgeMsg::Ack { .. }));
            self.out.push_back(EdgeMsg::Ack {
                seq: self.committed,
            });
            self.acked = self.committed;
        }
    }

    /// The next message to send: control messages and acks first, then reports, then
    /// telemetry (so live twin values overtake a backlog).
    pub fn poll_transmit(&mut self) -> Option<EdgeMsg> {
        if let Some(m) = self.out.pop_front() {
            return Some(m);
        }
        if self.phase != Phase::Live {
            return None;
        }
        self.up
            .poll_reports()
            .or_else(|| self.telemetry_out.pop_front())
    }

    /// The next thing to report.
    pub fn poll_event(&mut self) -> Option<EdgeEvent> {
        self.events.pop_front()
    }

    /// When `handle_timeout` is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Idle {
            return None;
        }
        Some(self.next_ping.min(self.last_heard + 2 * self.heartbeat))
    }

    /// Time passed: ping, or give up on a silent hub (a half-open connection).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Idle {
            return;
        }
        if now >= self.last_heard + 2 * self.heartbeat {
            self.close(CloseReason::Timeout);
            return;
        }
        if now >= self.next_ping {
            self.ping_id += 1;
            self.out.push_back(EdgeMsg::Ping { id: self.ping_id });
            self.next_ping = now + self.heartbeat;
        }
    }

    fn close(&mut self, reason: CloseReason) {
        self.phase = Phase::Idle;
        self.out.clear();
        self.events.push_back(EdgeEvent::Closed(reason));
    }
}
