//! One owner task per Modbus endpoint: a TCP connection shared by every unit behind it, or a
//! serial line shared by every slave on it (the RTU bus arbiter).
//!
//! Requests arrive on two bounded queues; writes are served before queued reads. Every request
//! has a timeout (tokio-modbus has none). After a timeout or a protocol error (a garbage frame,
//! a transaction-id mismatch) the connection is reopened, so a late reply cannot be taken for
//! the next request's. A slave that times out is skipped for a back-off period (degraded), so
//! it costs one timeout, not one per poll, and cannot starve the others. On RTU the
//! 3.5-character silence is kept between frames. Connecting backs off exponentially with jitter.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use device_models::protocol::modbus::{ModbusTransport, RegisterKind};
use device_models::protocol::{Parity, SerialSettings};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_modbus::client::{Context, Reader, Writer};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Slave};

use crate::{backoff, jitter};

/// An operation on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Read `count` registers or bits of a table from `start`.
    Read {
        /// Table.
        kind: RegisterKind,
        /// First address.
        start: u16,
        /// How many.
        count: u16,
    },
    /// Function 5.
    WriteCoil(u16, bool),
    /// Function 15.
    WriteCoils(u16, Vec<bool>),
    /// Function 6.
    WriteRegister(u16, u16),
    /// Function 16.
    WriteRegisters(u16, Vec<u16>),
}

/// What a read returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// Coils or discrete inputs.
    Bits(Vec<bool>),
    /// Registers.
    Words(Vec<u16>),
    /// A write was acknowledged.
    Written,
}

/// Why the bus could not carry a request. The device's own refusals are not here: they are the
/// inner `Err(ExceptionCode)` of a [`LinkResult`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// No reply within the timeout.
    #[error("timeout after {0:?}")]
    Timeout(Duration),
    /// Not connected (connect failed; retrying after a back-off).
    #[error("link down: {0}")]
    Down(String),
    /// The slave timed out recently and is skipped until its back-off ends.
    #[error("slave skipped for {0:?} after timing out")]
    Skipped(Duration),
    /// The reply was not a valid answer (garbage, wrong transaction id, I/O error).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The link task has stopped.
    #[error("link closed")]
    Closed,
}

/// The outcome of a request: the link's error, or the device's answer (data or exception).
pub type LinkResult = Result<Result<Data, ExceptionCode>, LinkError>;

#[derive(Debug)]
struct Job {
    unit: u8,
    op: Op,
    timeout: Duration,
    reply: oneshot::Sender<LinkResult>,
}

/// A handle on a link task; clone it freely.
#[derive(Debug, Clone)]
pub struct LinkHandle {
    writes: mpsc::Sender<Job>,
    reads: mpsc::Sender<Job>,
    /// Time the bus has been busy with requests, microseconds.
    pub busy_us: Arc<AtomicU64>,
    /// Requests sent on the bus (for measuring plans).
    pub requests: Arc<AtomicU64>,
    /// When the link started, for utilisation.
    pub started: Instant,
}

impl LinkHandle {
    /// Polls waiting for the bus (writes never wait behind them).
    pub fn queued_reads(&self) -> usize {
        self.reads.max_capacity() - self.reads.capacity()
    }

    /// Sends one request and waits for its outcome. `priority` puts it before queued reads.
    pub async fn call(&self, unit: u8, op: Op, timeout: Duration, priority: bool) -> LinkResult {
        let (tx, rx) = oneshot::channel();
        let q = if priority { &self.writes } else { &self.reads };
        q.send(Job {
            unit,
            op,
            timeout,
            reply: tx,
        })
        .await
        .map_err(|_| LinkError::Closed)?;
        rx.await.map_err(|_| LinkError::Closed)?
    }

    /// Share of wall time the bus was busy since the link started (0..=1).
    pub fn utilisation(&self) -> f64 {
        let busy = self.busy_us.load(Ordering::Relaxed) as f64 / 1e6;
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        (busy / wall).min(1.0)
    }
}

/// Settings of a link.
#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// First reconnect delay.
    pub min_backoff: Duration,
    /// Longest reconnect delay.
    pub max_backoff: Duration,
    /// First skip period of a slave that timed out; doubles while it keeps timing out.
    pub degraded_for: Duration,
}

impl Default for LinkOptions {
    fn default() -> Self {
        LinkOptions {
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            degraded_for: Duration::from_secs(5),
        }
    }
}

/// Starts the owner task of `transport`.
pub fn spawn(transport: ModbusTransport, opts: LinkOptions) -> LinkHandle {
    let (wtx, wrx) = mpsc::channel(64);
    let (rtx, rrx) = mpsc::channel(256);
    let handle = LinkHandle {
        writes: wtx,
        reads: rtx,
        busy_us: Arc::new(AtomicU64::new(0)),
        requests: Arc::new(AtomicU64::new(0)),
        started: Instant::now(),
    };
    let (busy, requests) = (handle.busy_us.clone(), handle.requests.clone());
    tokio::spawn(run(transport, opts, wrx, rrx, busy, requests));
    handle
}

/// Silence between RTU frames: 3.5 characters, at least 1.75 ms above 19200 baud.
pub fn frame_gap(s: &SerialSettings) -> Duration {
    if s.baud_rate > 19200 {
        Duration::from_micros(1750)
    } else {
        Duration::from_secs_f64(3.5 * f64::from(s.bits_per_char()) / f64::from(s.baud_rate.max(1)))
    }
}

/// A byte stream that counts what it reads, so that a timeout after bytes did arrive is told
/// apart from silence: the device answered, but with garbage.
#[derive(Debug)]
struct Counting<T> {
    inner: T,
    read: Arc<AtomicU64>,
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counting<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counting<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn connect(transport: &ModbusTransport, read: &Arc<AtomicU64>) -> Result<Context, String> {
    match transport {
        ModbusTransport::Tcp { host, port } => {
            let addr = tokio::net::lookup_host((host.as_str(), *port))
                .await
                .map_err(|e| format!("resolve {host}: {e}"))?
                .next()
                .ok_or_else(|| format!("{host} has no address"))?;
            let stream =
                tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
                    .await
                    .map_err(|_| format!("connect {addr}: timeout"))?
                    .map_err(|e| format!("connect {addr}: {e}"))?;
            let _ = stream.set_nodelay(true);
            Ok(tokio_modbus::client::tcp::attach(Counting {
                inner: stream,
                read: read.clone(),
            }))
        }
        ModbusTransport::Rtu(s) => {
            let builder = tokio_serial::new(&s.port, s.baud_rate)
                .data_bits(match s.data_bits {
                    5 => tokio_serial::DataBits::Five,
                    6 => tokio_serial::DataBits::Six,
                    7 => tokio_serial::DataBits::Seven,
                    _ => tokio_serial::DataBits::Eight,
                })
                .stop_bits(if s.stop_bits == 2 {
                    tokio_serial::StopBits::Two
                } else {
                    tokio_serial::StopBits::One
                })
                .parity(match s.parity {
                    Parity::None => tokio_serial::Parity::None,
                    Parity::Even => tokio_serial::Parity::Even,
                    Parity::Odd => tokio_serial::Parity::Odd,
                });
            let port = tokio_serial::SerialStream::open(&builder)
                .map_err(|e| format!("open {}: {e}", s.port))?;
            Ok(tokio_modbus::client::rtu::attach_slave(
                Counting {
                    inner: port,
                    read: read.clone(),
                },
                Slave(1),
            ))
        }
    }
}

async fn exec(ctx: &mut Context, op: &Op) -> tokio_modbus::Result<Data> {
    Ok(match op {
        Op::Read { kind, start, count } => match kind {
            RegisterKind::Coil => ctx.read_coils(*start, *count).await?.map(Data::Bits),
            RegisterKind::DiscreteInput => ctx
                .read_discrete_inputs(*start, *count)
                .await?
                .map(Data::Bits),
            RegisterKind::Holding => ctx
                .read_holding_registers(*start, *count)
                .await?
                .map(Data::Words),
            RegisterKind::Input => ctx
                .read_input_registers(*start, *count)
                .await?
                .map(Data::Words),
        },
        Op::WriteCoil(a, v) => ctx.write_single_coil(*a, *v).await?.map(|()| Data::Written),
        Op::WriteCoils(a, v) => ctx
            .write_multiple_coils(*a, v)
            .await?
            .map(|()| Data::Written),
        Op::WriteRegister(a, v) => ctx
            .write_single_register(*a, *v)
            .await?
            .map(|()| Data::Written),
        Op::WriteRegisters(a, v) => ctx
            .write_multiple_registers(*a, v)
            .await?
            .map(|()| Data::Written),
    })
}

struct Degraded {
    failures: u32,
    until: Instant,
}

async fn run(
    transport: ModbusTransport,
    opts: LinkOptions,
    mut writes: mpsc::Receiver<Job>,
    mut reads: mpsc::Receiver<Job>,
    busy: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
) {
    let gap = match &transport {
        ModbusTransport::Rtu(s) => Some(frame_gap(s)),
        ModbusTransport::Tcp { .. } => None,
    };
    let mut ctx: Option<Context> = None;
    let mut attempts: u32 = 0;
    let mut down_until: Option<(Instant, String)> = None;
    let mut degraded: HashMap<u8, Degraded> = HashMap::new();
    let bytes_in = Arc::new(AtomicU64::new(0));
    loop {
        let job = tokio::select! {
            biased;
            Some(j) = writes.recv() => j,
            Some(j) = reads.recv() => j,
            else => return,
        };
        let now = Instant::now();
        let is_write = !matches!(job.op, Op::Read { .. });
        if let Some(d) = degraded.get(&job.unit)
            && !is_write
            && d.until > now
        {
            let _ = job.reply.send(Err(LinkError::Skipped(d.until - now)));
            continue;
        }
        if ctx.is_none() {
            if let Some((until, why)) = &down_until
                && *until > now
            {
                let _ = job.reply.send(Err(LinkError::Down(why.clone())));
                continue;
            }
            match connect(&transport, &bytes_in).await {
                Ok(c) => {
                    ctx = Some(c);
                    attempts = 0;
                    down_until = None;
                }
                Err(why) => {
                    let wait = backoff(attempts, opts.min_backoff, opts.max_backoff, jitter());
                    attempts = attempts.saturating_add(1);
                    down_until = Some((Instant::now() + wait, why.clone()));
                    let _ = job.reply.send(Err(LinkError::Down(why)));
                    continue;
                }
            }
        }
        let Some(c) = ctx.as_mut() else { continue };
        c.set_slave(Slave(job.unit));
        let t0 = Instant::now();
        let bytes_before = bytes_in.load(Ordering::Relaxed);
        let r = tokio::time::timeout(job.timeout, exec(c, &job.op)).await;
        busy.fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
        requests.fetch_add(1, Ordering::Relaxed);
        let out = match r {
            Err(_) if bytes_in.load(Ordering::Relaxed) > bytes_before => {
                // Bytes came, but never a valid reply: garbage, not silence.
                ctx = None;
                Err(LinkError::Protocol(format!(
                    "{} bytes that were not a valid reply within {:?}",
                    bytes_in.load(Ordering::Relaxed) - bytes_before,
                    job.timeout
                )))
            }
            Err(_) => {
                // A late reply may still arrive: start over on a fresh connection or port.
                ctx = None;
                // On a serial line one silent slave would hold up every other: skip it after
                // its first timeout. Behind a TCP endpoint, after three in a row.
                let threshold = if gap.is_some() { 1 } else { 3 };
                let d = degraded.entry(job.unit).or_insert(Degraded {
                    failures: 0,
                    until: now,
                });
                d.failures = d.failures.saturating_add(1);
                if d.failures >= threshold {
                    let doublings = (d.failures - threshold).min(4);
                    let skip = opts
                        .degraded_for
                        .saturating_mul(1 << doublings)
                        .min(opts.max_backoff);
                    d.until = Instant::now() + skip;
                }
                Err(LinkError::Timeout(job.timeout))
            }
            Ok(Err(e)) => {
                ctx = None;
                Err(LinkError::Protocol(e.to_string()))
            }
            Ok(Ok(answer)) => {
                degraded.remove(&job.unit);
                Ok(answer)
            }
        };
        let _ = job.reply.send(out);
        if let Some(g) = gap {
            tokio::time::sleep(g).await;
        }
    }
}
