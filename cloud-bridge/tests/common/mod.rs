//! The simulated pair the protocol stories run on: an edge, a hub session, a link that can be
//! cut or silenced, and a clock, with a minimal driver on each side (the edge's store and
//! outbox, the hub's cluster status and telemetry sink). Every message crosses the frame codec.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // shared by several test files

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use cloud_bridge::proto::Object;
use cloud_bridge::proto::edge::{Edge, EdgeEvent};
use cloud_bridge::proto::hub::{Directory, HubConfig, HubEvent, Session};
use cloud_bridge::proto::msg::{self, EdgeMsg, HubMsg, TelemetrySample, Token};

#[derive(Default)]
pub struct MemDir {
    pub tokens: BTreeMap<String, String>,
    pub objects: BTreeMap<String, BTreeMap<String, Object>>,
}

impl Directory for MemDir {
    fn authenticate(&self, node: &str, token: &Token) -> bool {
        self.tokens.get(node).is_some_and(|t| *t == token.0)
    }
    fn for_each_object(&self, node: &str, f: &mut dyn FnMut(&str, &Object)) {
        for (k, o) in self.objects.get(node).into_iter().flatten() {
            f(k, o);
        }
    }
}

pub fn obj(version: impl Into<String>) -> Object {
    let version = version.into();
    Object {
        body: format!(r#"{{"v":"{version}"}}"#),
        version,
    }
}

/// One edge ("rig7") and its hub session, over a link that moves framed bytes.
pub struct Pair {
    pub now: Instant,
    pub cfg: HubConfig,
    pub dir: MemDir,
    pub edge: Edge,
    /// The edge's store: what it applied, key → (version, body).
    pub store: BTreeMap<String, (String, String)>,
    /// Commit (and so acknowledge) after every round; off: the test calls `commit`.
    pub auto_commit: bool,
    pub last_event_seq: u64,
    pub hub: Option<Session>,
    /// Messages are dropped in both directions while set (a half-open link).
    pub silent: bool,
    pub to_hub: VecDeque<BytesMut>,
    pub to_edge: VecDeque<BytesMut>,
    pub hub_log: Vec<HubMsg>,
    pub edge_log: Vec<EdgeMsg>,
    pub edge_events: Vec<EdgeEvent>,
    pub hub_events: Vec<HubEvent>,
    /// The last downstream sequence the hub received an ack for, this session.
    pub acked: u64,
    pub max_in_flight: u64,
    /// The edge's outbox: seq → sample, rows deleted once the sink stored them.
    pub outbox: BTreeMap<u64, TelemetrySample>,
    /// The hub's telemetry sink, deduplicating by seq.
    pub sink: BTreeMap<u64, TelemetrySample>,
    /// Samples the sink received again (and dropped as duplicates).
    pub sink_duplicates: usize,
    /// Every sample the sink received, in arrival order (duplicates included).
    pub sink_arrivals: Vec<u64>,
    /// The cluster's status as the hub wrote it: (device, property) → value.
    pub status: BTreeMap<(String, Option<String>), String>,
    /// The hub's driver stores and acknowledges what arrives; off: it receives and forgets
    /// (a hub that dies before its writes succeed).
    pub hub_stores: bool,
    /// The last outbox sequence number given.
    pub next_seq: u64,
}

pub const NODE: &str = "rig7";

impl Pair {
    pub fn new(cfg: HubConfig) -> Pair {
        let now = Instant::now();
        let mut dir = MemDir::default();
        dir.tokens.insert(NODE.into(), "rig7-token".into());
        dir.tokens.insert("rig8".into(), "rig8-token".into());
        Pair {
            now,
            cfg,
            dir,
            edge: Edge::new(NODE, Token("rig7-token".into()), [], now),
            store: BTreeMap::new(),
            auto_commit: true,
            last_event_seq: 0,
            hub: None,
            silent: false,
            to_hub: VecDeque::new(),
            to_edge: VecDeque::new(),
            hub_log: Vec::new(),
            edge_log: Vec::new(),
            edge_events: Vec::new(),
            hub_events: Vec::new(),
            acked: 0,
            max_in_flight: 0,
            outbox: BTreeMap::new(),
            sink: BTreeMap::new(),
            sink_duplicates: 0,
            sink_arrivals: Vec::new(),
            status: BTreeMap::new(),
            hub_stores: true,
            next_seq: 0,
        }
    }

    pub fn with_objects(mut self, node: &str, n: usize) -> Pair {
        for i in 0..n {
            self.dir
                .objects
                .entry(node.into())
                .or_default()
                .insert(format!("Device/{node}/dev-{i}"), obj("1"));
        }
        self
    }

    /// Appends `n` samples of `device` to the edge's outbox, after the last one.
    pub fn append_telemetry(&mut self, device: &str, n: usize) {
        let mut seq = self
            .outbox
            .keys()
            .next_back()
            .copied()
            .unwrap_or(self.next_seq);
        for _ in 0..n {
            seq += 1;
            self.outbox.insert(
                seq,
                TelemetrySample {
                    seq,
                    device: device.into(),
                    property: "pressure".into(),
                    value: format!("{seq}.5"),
                    ts: seq as i64,
                },
            );
        }
        self.next_seq = seq;
    }

    pub fn wanted(&self) -> BTreeMap<String, (String, String)> {
        self.dir
            .objects
            .get(NODE)
            .into_iter()
            .flatten()
            .map(|(k, o)| (k.clone(), (o.version.clone(), o.body.clone())))
            .collect()
    }

    pub fn connect(&mut self) {
        self.hub = Some(Session::new(self.cfg.clone(), self.now));
        self.acked = 0;
        self.edge.connect(self.now);
    }

    /// The connection drops: what is on the wire is lost; the hub forgets the session.
    pub fn cut(&mut self) {
        self.to_hub.clear();
        self.to_edge.clear();
        self.hub = None;
        self.edge.connection_lost();
        self.drain_edge_events();
    }

    /// The cluster changes an object of `node` (None: deleted or moved away).
    pub fn change(&mut self, node: &str, key: &str, o: Option<Object>) {
        let objects = self.dir.objects.entry(node.into()).or_default();
        match &o {
            Some(o) => objects.insert(key.into(), o.clone()),
            None => objects.remove(key),
        };
        if node == NODE
            && let Some(h) = self.hub.as_mut()
        {
            h.object_changed(key, o);
        }
    }

    pub fn commit(&mut self) {
        self.edge.committed(self.last_event_seq);
    }

    pub fn drain_edge_events(&mut self) {
        while let Some(ev) = self.edge.poll_event() {
            match &ev {
                EdgeEvent::Apply {
                    seq,
                    key,
                    version,
                    body,
                } => {
                    self.store
                        .insert(key.clone(), (version.clone(), body.clone()));
                    self.last_event_seq = *seq;
                }
                EdgeEvent::Remove { seq, key } => {
                    self.store.remove(key);
                    self.last_event_seq = *seq;
                }
                EdgeEvent::Synced { seq } => self.last_event_seq = *seq,
                EdgeEvent::TelemetryStored { seq } => {
                    self.outbox = self.outbox.split_off(&(seq + 1));
                }
                EdgeEvent::Welcome | EdgeEvent::Closed(_) => {}
            }
            self.edge_events.push(ev);
        }
    }

    /// One round: both ends transmit, the link carries, both ends handle. Whether anything moved.
    pub fn step(&mut self) -> bool {
        let mut moved = false;
        let mut hub_closed = false;
        if let Some(h) = self.hub.as_mut() {
            while let Some(m) = h.poll_transmit() {
                if let Some(seq) = seq_of(&m) {
                    self.max_in_flight = self.max_in_flight.max(seq - self.acked);
                }
                let mut b = BytesMut::new();
                msg::encode(&m, &mut b).unwrap();
                self.hub_log.push(m);
                if !self.silent {
                    self.to_edge.push_back(b);
                }
                moved = true;
            }
        }
        // The edge's driver reads the outbox as the edge asks.
        while let Some((after, n)) = self.edge.telemetry_wanted(self.now) {
            let rows: Vec<TelemetrySample> = self
                .outbox
                .range(after + 1..)
                .take(n)
                .map(|(_, s)| s.clone())
                .collect();
            if rows.is_empty() {
                break;
            }
            self.edge.send_telemetry(rows);
        }
        while let Some(m) = self.edge.poll_transmit() {
            let mut b = BytesMut::new();
            msg::encode(&m, &mut b).unwrap();
            self.edge_log.push(m);
            if !self.silent {
                self.to_hub.push_back(b);
            }
            moved = true;
        }
        while let Some(mut b) = self.to_edge.pop_front() {
            let m: HubMsg = msg::decode(&mut b).unwrap().unwrap();
            self.edge.handle(m, self.now);
        }
        self.drain_edge_events();
        if self.auto_commit {
            self.commit();
        }
        while let Some(mut b) = self.to_hub.pop_front() {
            let m: EdgeMsg = msg::decode(&mut b).unwrap().unwrap();
            if let EdgeMsg::Ack { seq } = m {
                self.acked = seq;
            }
            if let Some(h) = self.hub.as_mut() {
                h.handle(m, self.now, &self.dir);
            }
        }
        if let Some(h) = self.hub.as_mut() {
            while let Some(ev) = h.poll_event() {
                hub_closed |= matches!(ev, HubEvent::Closed(_));
                match &ev {
                    HubEvent::Reports { id, reports } if self.hub_stores => {
                        for r in reports {
                            self.status
                                .insert((r.device.clone(), r.property.clone()), r.value.clone());
                        }
                        h.reports_written(*id);
                    }
                    HubEvent::Telemetry { samples, last_seq } if self.hub_stores => {
                        for s in samples {
                            self.sink_arrivals.push(s.seq);
                            if self.sink.insert(s.seq, s.clone()).is_some() {
                                self.sink_duplicates += 1;
                            }
                        }
                        h.telemetry_stored(*last_seq);
                    }
                    _ => {}
                }
                self.hub_events.push(ev);
            }
        }
        if hub_closed {
            // The driver sends what the session queued (a refusal), then closes.
            self.step();
            self.cut();
        }
        moved
    }

    /// Rounds until nothing moves.
    pub fn settle(&mut self) {
        for _ in 0..100_000 {
            if !self.step() {
                return;
            }
        }
        panic!("the pair never settled");
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.edge.handle_timeout(self.now);
        if let Some(h) = self.hub.as_mut() {
            h.handle_timeout(self.now);
        }
        self.step();
    }

    /// Objects sent downstream since the last `Welcome`.
    pub fn sent_this_session(&self) -> (usize, usize) {
        let session = self
            .hub_log
            .iter()
            .rev()
            .take_while(|m| !matches!(m, HubMsg::Welcome { .. }));
        let (mut up, mut del) = (0, 0);
        for m in session {
            match m {
                HubMsg::Upsert { .. } => up += 1,
                HubMsg::Delete { .. } => del += 1,
                _ => {}
            }
        }
        (up, del)
    }
}

pub fn seq_of(m: &HubMsg) -> Option<u64> {
    match m {
        HubMsg::Upsert { seq, .. } | HubMsg::Delete { seq, .. } | HubMsg::Synced { seq } => {
            Some(*seq)
        }
        _ => None,
    }
}
