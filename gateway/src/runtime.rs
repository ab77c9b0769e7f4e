//! The running gateway: store, broker, one mapper task per device, and the twin owner loop.
//!
//! Data path: mappers → bounded events channel → the owner loop, which drains events in
//! batches (readings wait up to 50 ms for others: group commit), runs the twin logic, commits
//! the batch to SQLite in one transaction, and only then publishes telemetry and twin messages
//! on the embedded broker. MQTT requests arrive on an in-process broker link and go through the
//! same owner.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use device_models::DeviceConfig;
use mappers::modbus::Links;
use mappers::{Event, Mapper, MapperIo, MapperOptions, WriteRequest};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::broker::{self, Embedded};
use crate::config::Config;
use crate::store::Store;
use crate::twins::Twins;

/// How long a reading waits for others to share its store transaction (group commit). With a
/// fleet's polls spread over the cycle, readings arrive a device at a time; one commit each would
/// cost a hundred commits a second at 100 devices.
const BATCH_LINGER: std::time::Duration = std::time::Duration::from_millis(50);

/// Most readings in one transaction (and events taken off the queue at once).
const MAX_BATCH: usize = 4096;

/// How often, at most, the twins view is refreshed.
const VIEW_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Counters an operator (and a test) reads.
#[derive(Debug, Default)]
pub struct Stats {
    /// Readings received from mappers.
    pub readings: AtomicU64,
    /// Batches committed.
    pub batches: AtomicU64,
    /// Samples appended to the outbox.
    pub samples: AtomicU64,
    /// MQTT requests served.
    pub requests: AtomicU64,
    /// Store errors (the batch is retried with the next one).
    pub store_errors: AtomicU64,
    /// Mapper tasks started (at start and by reloads).
    pub mapper_starts: AtomicU64,
    /// Mappers given new properties in place (by reloads that changed only properties).
    pub mapper_reconfigures: AtomicU64,
    /// Reloads applied.
    pub reloads: AtomicU64,
    /// Outbox samples dropped at its bounds, by reason: age, rows, bytes.
    pub outbox_dropped: [AtomicU64; 3],
}

/// A started gateway.
#[derive(Debug)]
pub struct Running {
    /// Where MQTT clients connect.
    pub broker: std::net::SocketAddr,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Set to `true` to stop.
    pub shutdown: watch::Sender<bool>,
    /// The owner loop; ends after shutdown.
    pub task: tokio::task::JoinHandle<()>,
    /// New device configs: only what changed is restarted (see [`reload`]).
    pub reload: mpsc::Sender<Vec<DeviceConfig>>,
    /// Where `/metrics` and `/healthz` are served, when enabled.
    pub metrics: Option<std::net::SocketAddr>,
    /// Current twins, refreshed after every batch (for display).
    pub view:
        watch::Receiver<BTreeMap<String, BTreeMap<String, device_models::twin::PropertyTwin>>>,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The broker could not start.
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    /// A mapper could not be built.
    #[error("device {0}: {1}")]
    Mapper(String, mappers::BuildError),
    /// I/O.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

const LINK: &str = "ballast-twins";

/// Starts the gateway for `devices` (already validated and, in standalone mode, from the
/// devices directory; otherwise from the store).
pub async fn start(cfg: &Config, devices: Vec<DeviceConfig>) -> Result<Running, StartError> {
    std::fs::create_dir_all(&cfg.data_dir)?;
    let store = Store::open(&cfg.db_path()).await?;
    for d in &devices {
        let body = serde_json::to_string(&d.device).unwrap_or_default();
        let version = d
            .device
            .metadata
            .resource_version
            .clone()
            .unwrap_or_else(|| format!("{:x}", fnv(&body)));
        store
            .put_object(&format!("Device/{}", d.id), &version, &body)
            .await?;
        let model = serde_json::to_string(&*d.model).unwrap_or_default();
        let ns = d.model.metadata.namespace.as_deref().unwrap_or("default");
        let name = d.model.metadata.name.as_deref().unwrap_or("");
        store
            .put_object(
                &format!("DeviceModel/{ns}/{name}"),
                &format!("{:x}", fnv(&model)),
                &model,
            )
            .await?;
    }
    let Embedded {
        listen,
        internal,
        clients,
        mut links,
        ..
    } = broker::start(&cfg.broker, &[LINK])?;
    let (mut link_tx, link_rx) = links
        .remove(LINK)
        .ok_or_else(|| broker::BrokerError::Link(LINK.into(), "missing".into()))?;
    for filter in [
        "$hw/events/device/+/+/twin/update".to_string(),
        "$hw/events/device/+/+/twin/get".to_string(),
        "$hw/events/device/+/+/state/update".to_string(),
        format!("$hw/events/node/{}/membership/get", cfg.node_name),
    ] {
        link_tx
            .subscribe(crate::front::inward(&filter))
            .map_err(|e| broker::BrokerError::Link(LINK.into(), e.to_string()))?;
    }

    let mut stored = BTreeMap::new();
    for d in &devices {
        stored.insert(d.id.clone(), store.twins(&d.id).await?);
    }
    let mut twins = Twins::new(&cfg.node_name, &devices, stored);

    let stats = Arc::new(Stats::default());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (events_tx, mut events_rx) = mpsc::channel::<Event>(4096);
    let mapper_metrics: MetricsMap = Arc::default();
    let states: Arc<std::sync::Mutex<BTreeMap<String, &'static str>>> = Arc::new(
        std::sync::Mutex::new(devices.iter().map(|d| (d.id.clone(), "unknown")).collect()),
    );
    let spawner = Spawner {
        links: Links::default(),
        opts: MapperOptions {
            embedded_broker: Some(("127.0.0.1".into(), internal.port())),
            ..MapperOptions::default()
        },
        events: events_tx,
        metrics: mapper_metrics.clone(),
        stats: stats.clone(),
    };
    let mut slots: BTreeMap<String, Slot> = BTreeMap::new();
    for d in &devices {
        let slot = spawner
            .spawn(d)
            .map_err(|e| StartError::Mapper(d.id.clone(), e))?;
        slots.insert(d.id.clone(), slot);
    }
    let (reload_tx, mut reload_rx) = mpsc::channel::<Vec<DeviceConfig>>(4);

    // MQTT requests: rumqttd's link is read on its own task and fed to the owner.
    let (req_tx, mut req_rx) = mpsc::channel::<(String, Vec<u8>)>(1024);
    tokio::spawn(broker::forward_link(link_rx, req_tx));

    let metrics = match cfg.metrics.listen {
        None => None,
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr).await?;
            let bound = l.local_addr()?;
            let src = crate::metrics::Sources {
                stats: stats.clone(),
                mappers: mapper_metrics.clone(),
                states: states.clone(),
                store: store.clone(),
                clients: clients.clone(),
            };
            tokio::spawn(crate::metrics::serve(l, src));
            Some(bound)
        }
    };
    let (view_tx, view_rx) = watch::channel(BTreeMap::new());
    let initial = twins.apply_file_desired(&devices, mappers::now_ms());
    let st = stats.clone();
    let mut shutdown = shutdown_rx.clone();
    let outbox = cfg.outbox.clone();
    let outbox_age = cfg.outbox_max_age();
    let task = tokio::spawn(async move {
        let mut pending = vec![initial];
        let mut last_trim: Option<std::time::Instant> = None;
        let (mut view_dirty, mut view_due) = (false, Instant::now());
        // Readings wait up to BATCH_LINGER for others: one transaction for all of them.
        let (mut held, mut flush_at) = (Vec::new(), Instant::now());
        loop {
            view_dirty |= !pending.is_empty();
            for a in pending.drain(..) {
                for (id, state) in &a.states {
                    if let Some(slot) = states
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .get_mut(id)
                    {
                        *slot = state;
                    }
                }
                carry_out(a, &store, &mut link_tx, &slots, &st).await;
            }
            // The view (for the demo's screen and tests) copies every twin: refreshed at most every
            // VIEW_EVERY, not after every batch (with a fleet's polls spread over the cycle
            // there are a hundred batches a second).
            if view_dirty && Instant::now() >= view_due {
                let ids = twins.ids();
                let _ = view_tx.send(
                    ids.iter()
                        .filter_map(|id| twins.twins(id).map(|t| (id.clone(), t)))
                        .collect(),
                );
                view_dirty = false;
                view_due = Instant::now() + VIEW_EVERY;
            }
            // The bounds, at start and every minute after.
            if last_trim.is_none_or(|t: std::time::Instant| t.elapsed().as_secs() >= 60) {
                last_trim = Some(std::time::Instant::now());
                let bounds = crate::store::OutboxBounds {
                    oldest_ms: mappers::now_ms() - outbox_age.as_millis() as i64,
                    max_rows: outbox.max_rows,
                    max_bytes: outbox.max_bytes,
                    policy: outbox.policy,
                };
                match store.trim_outbox(&bounds).await {
                    Ok(t) if t.total() == 0 => {}
                    Ok(t) => {
                        for (c, n) in st.outbox_dropped.iter().zip([t.age, t.rows, t.bytes]) {
                            c.fetch_add(n, Ordering::Relaxed);
                        }
                        tracing::warn!(
                            by_age = t.age,
                            by_rows = t.rows,
                            by_bytes = t.bytes,
                            policy = ?outbox.policy,
                            "outbox bound reached: samples dropped"
                        );
                    }
                    Err(e) => tracing::error!(error = %e, "outbox trim failed"),
                }
            }
            tokio::select! {
                () = tokio::time::sleep_until(view_due), if view_dirty => {}
                () = tokio::time::sleep_until(flush_at), if !held.is_empty() => {
                    pending.push(twins.on_readings(&held, mappers::now_ms()));
                    held.clear();
                }
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        // What is held was acknowledged to no one; store it all the same.
                        if !held.is_empty() {
                            let a = twins.on_readings(&held, mappers::now_ms());
                            carry_out(a, &store, &mut link_tx, &slots, &st).await;
                        }
                        for slot in slots.values() {
                            let _ = slot.stop.send(true);
                        }
                        return;
                    }
                }
                Some(new) = reload_rx.recv() => {
                    let changed = reload(&mut slots, &spawner, &new, &store, &states).await;
                    twins.set_devices(&new);
                    let now = mappers::now_ms();
                    let touched: Vec<DeviceConfig> = new.iter().filter(|d| changed.contains(&d.id)).cloned().collect();
                    pending.push(twins.apply_file_desired(&touched, now));
                    tracing::info!(devices = new.len(), changed = changed.len(), "device files reloaded");
                    st.reloads.fetch_add(1, Ordering::Relaxed);
                }
                Some(ev) = events_rx.recv() => {
                    // Drain what is queued: one transaction for the whole batch.
                    let mut batch = vec![ev];
                    while batch.len() < MAX_BATCH {
                        match events_rx.try_recv() {
                            Ok(e) => batch.push(e),
                            Err(_) => break,
                        }
                    }
                    for e in batch {
                        match e {
                            Event::Readings(r) => {
                                if held.is_empty() {
                                    flush_at = Instant::now() + BATCH_LINGER;
                                }
                                st.readings.fetch_add(r.len() as u64, Ordering::Relaxed);
                                held.extend(r);
                            }
                            Event::Health { device, health, reason } => {
                                tracing::info!(device = %device, state = health.as_str(), reason, "device state");
                                twins.on_health(&device, health);
                                if let Some(slot) = states.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_mut(&*device) {
                                    *slot = health.as_str();
                                }
                            }
                            Event::Write { device, property, outcome, .. } => {
                                tracing::info!(device = %device, property, outcome = ?outcome, "write");
                            }
                        }
                    }
                    if held.len() >= MAX_BATCH {
                        pending.push(twins.on_readings(&held, mappers::now_ms()));
                        held.clear();
                    }
                }
                Some((topic, body)) = req_rx.recv() => {
                    st.requests.fetch_add(1, Ordering::Relaxed);
                    pending.push(twins.on_message(&topic, &body, mappers::now_ms()));
                }
            }
        }
    });
    Ok(Running {
        broker: listen,
        stats,
        shutdown: shutdown_tx,
        task,
        reload: reload_tx,
        metrics,
        view: view_rx,
    })
}

/// Mapper metrics by device, shared with the metrics endpoint.
pub type MetricsMap = Arc<std::sync::Mutex<BTreeMap<String, Arc<mappers::Metrics>>>>;

/// A running mapper: its config, its write queue and its own stop switch.
#[derive(Debug)]
pub struct Slot {
    fingerprint: u64,
    /// Of the device's protocol settings alone: while it stays, a changed device is
    /// reconfigured in place instead of restarted.
    protocol: u64,
    writes: mpsc::Sender<WriteRequest>,
    reconfigure: mpsc::Sender<Box<Mapper>>,
    stop: watch::Sender<bool>,
}

/// Starts mappers; Modbus links live in `links`, so a restarted mapper keeps its device's
/// connection.
#[derive(Debug)]
struct Spawner {
    links: Links,
    opts: MapperOptions,
    events: mpsc::Sender<Event>,
    metrics: MetricsMap,
    stats: Arc<Stats>,
}

/// What identifies a device's running configuration: the object and everything parsed from it.
///
/// Kept as a 64-bit hash: the text itself is some 10 KB a device, held for the life of the
/// mapper only to be compared on reload.
fn fingerprint(d: &DeviceConfig) -> u64 {
    fnv(&format!(
        "{}|{:?}|{:?}",
        serde_json::to_string(&d.device).unwrap_or_default(),
        d.protocol,
        d.properties
    ))
}

impl Spawner {
    fn spawn(&self, d: &DeviceConfig) -> Result<Slot, mappers::BuildError> {
        let m = Mapper::build(d, &self.links, &self.opts)?;
        let (wtx, wrx) = mpsc::channel(32);
        let (stop, stop_rx) = watch::channel(false);
        let (rtx, rrx) = mpsc::channel(1);
        self.metrics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(d.id.clone(), m.metrics());
        tokio::spawn(m.run(MapperIo {
            events: self.events.clone(),
            writes: wrx,
            shutdown: stop_rx,
            reconfigure: rrx,
        }));
        self.stats.mapper_starts.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            fingerprint: fingerprint(d),
            protocol: fnv(&format!("{:?}", d.protocol)),
            writes: wtx,
            reconfigure: rtx,
            stop,
        })
    }

    /// Hands a changed device's new properties to its running mapper, when only properties
    /// changed; `false` when it needs a restart (protocol settings changed, the mapper cannot
    /// be built, or it is not taking new settings).
    fn reconfigure(&self, slot: &mut Slot, d: &DeviceConfig) -> bool {
        if slot.protocol != fnv(&format!("{:?}", d.protocol)) {
            return false;
        }
        let Ok(m) = Mapper::build(d, &self.links, &self.opts) else {
            return false;
        };
        if slot.reconfigure.try_send(Box::new(m)).is_err() {
            return false;
        }
        slot.fingerprint = fingerprint(d);
        self.stats
            .mapper_reconfigures
            .fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// Applies a new set of device configs: removed devices stop, new ones start, devices whose
/// properties alone changed are reconfigured in place (their mapper keeps running: connection,
/// port, metrics, health), devices whose protocol settings changed restart (a Modbus connection
/// stays, it belongs to the link), unchanged ones are not touched. Returns the ids started,
/// reconfigured or restarted.
async fn reload(
    slots: &mut BTreeMap<String, Slot>,
    spawner: &Spawner,
    new: &[DeviceConfig],
    store: &Store,
    states: &std::sync::Mutex<BTreeMap<String, &'static str>>,
) -> Vec<String> {
    let keep: std::collections::BTreeSet<&str> = new.iter().map(|d| d.id.as_str()).collect();
    let gone: Vec<String> = slots
        .keys()
        .filter(|k| !keep.contains(k.as_str()))
        .cloned()
        .collect();
    for id in gone {
        if let Some(slot) = slots.remove(&id) {
            let _ = slot.stop.send(true);
        }
        spawner
            .metrics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
        states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
    }
    let mut changed = Vec::new();
    for d in new {
        if slots
            .get(&d.id)
            .is_some_and(|s| s.fingerprint == fingerprint(d))
        {
            continue;
        }
        // Only properties changed: the running mapper takes them, keeping its connection.
        if let Some(slot) = slots.get_mut(&d.id)
            && spawner.reconfigure(slot, d)
        {
            changed.push(d.id.clone());
            store_device(store, d).await;
            continue;
        }
        if let Some(old) = slots.remove(&d.id) {
            let _ = old.stop.send(true);
        }
        match spawner.spawn(d) {
            Ok(slot) => {
                slots.insert(d.id.clone(), slot);
                changed.push(d.id.clone());
                states
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .entry(d.id.clone())
                    .or_insert("unknown");
                store_device(store, d).await;
            }
            Err(e) => tracing::error!(device = %d.id, error = %e, "device not started"),
        }
    }
    changed
}

/// Keeps the applied Device object in the store (edge autonomy: a restart without files runs it).
async fn store_device(store: &Store, d: &DeviceConfig) {
    let body = serde_json::to_string(&d.device).unwrap_or_default();
    if let Err(e) = store
        .put_object(
            &format!("Device/{}", d.id),
            &format!("{:x}", fnv(&body)),
            &body,
        )
        .await
    {
        tracing::error!(device = %d.id, error = %e, "applied device not stored");
    }
}

async fn carry_out(
    a: crate::twins::Actions,
    store: &Store,
    link: &mut rumqttd::local::LinkTx,
    slots: &BTreeMap<String, Slot>,
    st: &Stats,
) {
    if !a.twins.is_empty() || !a.samples.is_empty() {
        match store.apply(&a.twins, &a.samples).await {
            Ok(_) => {
                st.batches.fetch_add(1, Ordering::Relaxed);
                st.samples
                    .fetch_add(a.samples.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                st.store_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "store batch failed; not published");
                return;
            }
        }
    }
    for (topic, payload) in a.publish {
        if let Err(e) = link.publish(crate::front::inward(&topic), payload) {
            tracing::warn!(error = %e, "broker publish failed");
        }
    }
    for (id, w) in a.writes {
        if let Some(slot) = slots.get(&id) {
            let _ = slot.writes.send(w).await;
        }
    }
}

/// The devices and models the store last applied, validated as if read from files: what the
/// gateway runs when it starts without its devices directory and without the cloud.
pub async fn stored_devices(
    db: &std::path::Path,
) -> Result<device_models::DeviceSet, crate::store::StoreError> {
    let store = Store::open(db).await?;
    let mut loaded = device_models::load::LoadedObjects::default();
    for (key, (_version, body)) in store.objects().await? {
        // Stored bodies are JSON, which is YAML: the same loader and validator apply.
        device_models::load::load_str(
            std::path::Path::new(&format!("store:{key}")),
            &body,
            &mut loaded,
        );
    }
    Ok(device_models::validate::validate(loaded))
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
