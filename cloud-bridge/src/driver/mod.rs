//! Thin async drivers for the protocol's two ends: they move frames between a byte stream and
//! the state machines of [`crate::proto`], fire their timers, and carry out what the machines
//! ask (store objects, read and delete outbox rows, write reports, store telemetry) through
//! the traits below. No protocol decision is made here.
//!
//! The stream is anything that reads and writes bytes (a TCP connection, a TLS stream over
//! it, a QUIC bidirectional stream); one call serves one connection, and returns why it ended.

pub mod memory;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, watch};

use crate::proto::edge::{Edge, EdgeEvent};
use crate::proto::hub::{Directory, HubConfig, HubEvent, Session};
use crate::proto::msg::{self, EdgeMsg, HubMsg, Report, TelemetrySample};
use crate::proto::{CloseReason, Object};

/// An error of the storage behind a driver.
pub type StoreFailure = Box<dyn std::error::Error + Send + Sync>;

/// The edge's storage: applied objects and the telemetry outbox (the gateway's SQLite file).
pub trait EdgeStore: Send {
    /// Stores one batch of downstream changes in one transaction: `Some((version, body))`
    /// upserts the key, `None` removes it. Returns once committed.
    fn commit(
        &mut self,
        changes: Vec<(String, Option<(String, String)>)>,
    ) -> impl Future<Output = Result<(), StoreFailure>> + Send;
    /// At most `limit` outbox rows with a sequence number above `after`, in order.
    fn outbox_after(
        &mut self,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<TelemetrySample>, StoreFailure>> + Send;
    /// Deletes the outbox rows up to `seq`: the cloud has them.
    fn outbox_delete_through(
        &mut self,
        seq: u64,
    ) -> impl Future<Output = Result<(), StoreFailure>> + Send;
}

/// The hub's side: who is who and what is bound where ([`Directory`]), where reports and
/// telemetry go.
pub trait HubBackend: Directory + Send + Sync {
    /// Writes reported values and states of `node`'s devices to the cluster.
    fn write_reports(
        &self,
        node: &str,
        reports: Vec<Report>,
    ) -> impl Future<Output = Result<(), StoreFailure>> + Send;
    /// Stores telemetry of `node`, deduplicating by (node, seq).
    fn store_telemetry(
        &self,
        node: &str,
        samples: Vec<TelemetrySample>,
    ) -> impl Future<Output = Result<(), StoreFailure>> + Send;
}

/// A change the hub's watcher saw: (node, key, the object or `None` when deleted or unbound).
pub type Change = (String, String, Option<Object>);

/// Why a driven session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// The protocol ended it (connection lost, timeout, refused, protocol error).
    Closed(CloseReason),
    /// Asked to stop.
    Shutdown,
    /// The storage behind the driver failed; the session stopped so nothing is acknowledged
    /// that was not stored.
    Store(StoreFailure),
    /// The hub's change feed fell behind: the edge reconnects and its digest resyncs it.
    Lagged,
}

/// How often the edge looks for new outbox rows while nothing else happens.
const OUTBOX_POLL: Duration = Duration::from_millis(100);

async fn flush<W: AsyncWrite + Unpin>(w: &mut W, buf: &mut BytesMut) -> std::io::Result<()> {
    if !buf.is_empty() {
        w.write_all(buf).await?;
        buf.clear();
    }
    Ok(())
}

fn until(deadline: Option<Instant>) -> tokio::time::Instant {
    let far = Instant::now() + Duration::from_secs(3600);
    tokio::time::Instant::from_std(deadline.unwrap_or(far))
}

/// Runs one session of `edge` over `stream` until it ends. Call it again with a new stream to
/// reconnect (after a back-off): `edge` keeps what must outlive a connection.
pub async fn edge_session<S, St>(
    stream: S,
    edge: &mut Edge,
    store: &mut St,
    reports: &mut mpsc::Receiver<Report>,
    shutdown: &mut watch::Receiver<bool>,
) -> SessionEnd
where
    S: AsyncRead + AsyncWrite + Unpin,
    St: EdgeStore,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (mut rbuf, mut wbuf) = (BytesMut::with_capacity(64 * 1024), BytesMut::new());
    let mut poll = tokio::time::interval(OUTBOX_POLL);
    edge.connect(Instant::now());
    loop {
        let (mut changes, mut last) = (Vec::new(), None);
        while let Some(ev) = edge.poll_event() {
            match ev {
                EdgeEvent::Apply {
                    seq,
                    key,
                    version,
                    body,
                } => {
                    changes.push((key, Some((version, body))));
                    last = Some(seq);
                }
                EdgeEvent::Remove { seq, key } => {
                    changes.push((key, None));
                    last = Some(seq);
                }
                EdgeEvent::Synced { seq } => last = Some(seq),
                EdgeEvent::TelemetryStored { seq } => {
                    if let Err(e) = store.outbox_delete_through(seq).await {
                        return SessionEnd::Store(e);
                    }
                }
                EdgeEvent::Welcome => {}
                EdgeEvent::Closed(r) => {
                    // A refusal or protocol error may have queued nothing more; flush anyway.
                    let _ = flush(&mut wr, &mut wbuf).await;
                    return SessionEnd::Closed(r);
                }
            }
        }
        if let Some(seq) = last {
            if let Err(e) = store.commit(changes).await {
                return SessionEnd::Store(e);
            }
            edge.committed(seq);
        }
        while let Some((after, n)) = edge.telemetry_wanted(Instant::now()) {
            match store.outbox_after(after, n).await {
                Ok(rows) if rows.is_empty() => break,
                Ok(rows) => edge.send_telemetry(rows),
                Err(e) => return SessionEnd::Store(e),
            }
        }
        while let Some(m) = edge.poll_transmit() {
            if let Err(e) = msg::encode(&m, &mut wbuf) {
                return SessionEnd::Closed(CloseReason::Protocol(e.to_string()));
            }
        }
        if flush(&mut wr, &mut wbuf).await.is_err() {
            edge.connection_lost();
            continue;
        }
        let timer = until(edge.poll_timeout());
        tokio::select! {
            r = rd.read_buf(&mut rbuf) => match r {
                Ok(0) | Err(_) => edge.connection_lost(),
                Ok(_) => loop {
                    match msg::decode::<HubMsg>(&mut rbuf) {
                        Ok(Some(m)) => edge.handle(m, Instant::now()),
                        Ok(None) => break,
                        Err(e) => return SessionEnd::Closed(CloseReason::Protocol(e.to_string())),
                    }
                },
            },
            Some(r) = reports.recv() => edge.report(r.device, r.property, r.value, r.ts),
            () = tokio::time::sleep_until(timer) => edge.handle_timeout(Instant::now()),
            _ = poll.tick() => {}
            _ = shutdown.changed() => {
                edge.connection_lost();
                while edge.poll_event().is_some() {}
                return SessionEnd::Shutdown;
            }
        }
    }
}

/// Serves one edge connection on the hub until it ends. `changes` is the watcher's feed of
/// every node's changes; the session takes its node's.
pub async fn hub_session<S, B>(
    stream: S,
    cfg: HubConfig,
    backend: Arc<B>,
    mut changes: broadcast::Receiver<Change>,
    shutdown: &mut watch::Receiver<bool>,
) -> SessionEnd
where
    S: AsyncRead + AsyncWrite + Unpin,
    B: HubBackend,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (mut rbuf, mut wbuf) = (BytesMut::with_capacity(64 * 1024), BytesMut::new());
    let mut session = Session::new(cfg, Instant::now());
    let mut node = String::new();
    loop {
        let mut end = None;
        while let Some(ev) = session.poll_event() {
            match ev {
                HubEvent::Authenticated { node: n } => node = n,
                HubEvent::Reports { id, reports } => {
                    if let Err(e) = backend.write_reports(&node, reports).await {
                        return SessionEnd::Store(e);
                    }
                    session.reports_written(id);
                }
                HubEvent::Telemetry { samples, last_seq } => {
                    if let Err(e) = backend.store_telemetry(&node, samples).await {
                        return SessionEnd::Store(e);
                    }
                    session.telemetry_stored(last_seq);
                }
                HubEvent::Synced => {}
                HubEvent::Closed(r) => end = Some(r),
            }
        }
        while let Some(m) = session.poll_transmit() {
            if let Err(e) = msg::encode(&m, &mut wbuf) {
                return SessionEnd::Closed(CloseReason::Protocol(e.to_string()));
            }
        }
        let written = flush(&mut wr, &mut wbuf).await;
        if let Some(r) = end {
            let _ = wr.shutdown().await;
            return SessionEnd::Closed(r);
        }
        if written.is_err() {
            return SessionEnd::Closed(CloseReason::Lost);
        }
        let timer = until(session.poll_timeout());
        tokio::select! {
            r = rd.read_buf(&mut rbuf) => match r {
                Ok(0) | Err(_) => return SessionEnd::Closed(CloseReason::Lost),
                Ok(_) => loop {
                    match msg::decode::<EdgeMsg>(&mut rbuf) {
                        Ok(Some(m)) => session.handle(m, Instant::now(), &*backend),
                        Ok(None) => break,
                        Err(e) => return SessionEnd::Closed(CloseReason::Protocol(e.to_string())),
                    }
                },
            },
            c = changes.recv() => match c {
                Ok((n, key, object)) if n == node => session.object_changed(&key, object),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return SessionEnd::Lagged,
                Err(broadcast::error::RecvError::Closed) => return SessionEnd::Shutdown,
            },
            () = tokio::time::sleep_until(timer) => session.handle_timeout(Instant::now()),
            _ = shutdown.changed() => return SessionEnd::Shutdown,
        }
    }
}
