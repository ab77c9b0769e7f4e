//! Simulated Modbus endpoints: several slaves behind one TCP listener or on one RTU line, with
//! fault injection and request counters.
//!
//! An [`Endpoint`] owns its slaves and its faults. Each request goes through
//! [`Endpoint::decide`], which applies the faults and asks the slave; the transports
//! ([`tcp`], [`rtu`]) carry out the decision (reply, stay silent, send garbage, close). The
//! endpoint also implements tokio-modbus's server `Service`, so it can sit behind tokio-modbus's
//! own server too.

pub mod pdu;
pub mod rtu;
pub mod tcp;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use device_models::protocol::modbus::RegisterKind;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

use crate::plc::SimPlc;
use crate::rng::Rng;

/// Faults an endpoint injects. All off by default.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Every reply waits this long.
    pub delay: Duration,
    /// Plus a uniform random extra of up to this long.
    pub jitter: Duration,
    /// Requests that touch one of these addresses get this exception.
    pub exceptions: Vec<ExceptionRule>,
    /// Every Nth request gets no reply at all.
    pub drop_every: Option<u64>,
    /// Every Nth reply is replaced by random bytes of the same length.
    pub garbage_every: Option<u64>,
    /// Every Nth TCP reply carries a wrong transaction id (RTU: a wrong slave address).
    pub wrong_id_every: Option<u64>,
    /// Each connection is closed after this many requests (TCP only).
    pub close_after: Option<u64>,
    /// No replies until this instant (set with [`Endpoint::go_silent`]).
    pub silent_until: Option<Instant>,
}

/// An exception answered for requests touching an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExceptionRule {
    /// Which table; `None` for all.
    pub kind: Option<RegisterKind>,
    /// The address.
    pub address: u16,
    /// The exception code.
    pub code: ExceptionCode,
}

/// Counters of an endpoint. Read them to measure what a client did.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests received (whatever was answered).
    pub requests: AtomicU64,
    /// Requests that asked to read.
    pub reads: AtomicU64,
    /// Requests that asked to write.
    pub writes: AtomicU64,
    /// Exceptions answered.
    pub exceptions: AtomicU64,
    /// Requests left without reply by a fault.
    pub dropped: AtomicU64,
    /// Connections accepted (TCP).
    pub connections: AtomicU64,
    /// Registers and bits returned by reads.
    pub points_read: AtomicU64,
}

impl Stats {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Current value of a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// What to do with one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Reply with this PDU result after `after`.
    Reply {
        /// The response, or an exception.
        result: Result<Response, ExceptionCode>,
        /// How long to wait first.
        after: Duration,
        /// Corrupt the reply: random bytes instead of the frame.
        garbage: bool,
        /// Corrupt the reply's transaction id (or RTU address).
        wrong_id: bool,
    },
    /// Say nothing.
    NoReply,
}

/// Several simulated slaves behind one listener or line.
#[derive(Debug)]
pub struct Endpoint {
    slaves: HashMap<u8, Arc<Mutex<SimPlc>>>,
    faults: Mutex<Faults>,
    rng: Mutex<Rng>,
    /// Request counters.
    pub stats: Stats,
}

/// Locks a mutex whose data stays consistent even if a holder panicked (every critical section
/// here is a plain read or write of registers).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Endpoint {
    /// An endpoint serving `plcs` (by unit id).
    pub fn new(plcs: Vec<SimPlc>, seed: u64) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            slaves: plcs
                .into_iter()
                .map(|p| (p.unit, Arc::new(Mutex::new(p))))
                .collect(),
            faults: Mutex::new(Faults::default()),
            rng: Mutex::new(Rng::new(seed)),
            stats: Stats::default(),
        })
    }

    /// The unit ids served, sorted.
    pub fn units(&self) -> Vec<u8> {
        let mut u: Vec<u8> = self.slaves.keys().copied().collect();
        u.sort_unstable();
        u
    }

    /// The simulated slave with unit id `unit`.
    pub fn slave(&self, unit: u8) -> Option<Arc<Mutex<SimPlc>>> {
        self.slaves.get(&unit).cloned()
    }

    /// Replaces the faults.
    pub fn set_faults(&self, f: Faults) {
        *lock(&self.faults) = f;
    }

    /// Current faults.
    pub fn faults(&self) -> Faults {
        lock(&self.faults).clone()
    }

    /// Stops answering for `d` (requests are read and ignored).
    pub fn go_silent(&self, d: Duration) {
        lock(&self.faults).silent_until = Some(Instant::now() + d);
    }

    /// Advances every slave's physics by `dt` seconds.
    pub fn tick(&self, dt: f64) {
        for s in self.slaves.values() {
            lock(s).tick(dt);
        }
    }

    /// Current values of every slave's properties, by device id.
    pub fn snapshot(&self) -> BTreeMap<String, BTreeMap<String, device_models::Value>> {
        self.slaves
            .values()
            .map(|s| {
                let s = lock(s);
                (s.id.clone(), s.values.clone())
            })
            .collect()
    }

    /// Whether connections should be closed after `n` requests on them.
    pub fn close_after(&self) -> Option<u64> {
        lock(&self.faults).close_after
    }

    /// Applies faults and serves one request addressed to `unit`.
    pub fn decide(&self, unit: u8, req: &Request<'_>) -> Decision {
        let n = self.stats.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let f = lock(&self.faults).clone();
        if f.silent_until.is_some_and(|t| Instant::now() < t) || crate::every(f.drop_every, n) {
            Stats::bump(&self.stats.dropped);
            return Decision::NoReply;
        }
        let Some(slave) = self.slaves.get(&unit) else {
            // A real gateway answers 0x0B; a TCP device with one unit answers whatever id it is
            // asked. Unknown ids stay silent, as an absent slave on a serial line does.
            Stats::bump(&self.stats.dropped);
            return Decision::NoReply;
        };
        let (kind, addr, qty, write) = touched(req);
        if write {
            Stats::bump(&self.stats.writes);
        } else {
            Stats::bump(&self.stats.reads);
        }
        let rule = f.exceptions.iter().find(|r| {
            r.kind.is_none_or(|k| Some(k) == kind)
                && u32::from(r.address) >= u32::from(addr)
                && u32::from(r.address) < u32::from(addr) + u32::from(qty)
        });
        let result = match rule {
            Some(r) => Err(r.code),
            None => lock(slave).handle(req),
        };
        match &result {
            Err(_) => Stats::bump(&self.stats.exceptions),
            Ok(Response::ReadCoils(v) | Response::ReadDiscreteInputs(v)) => {
                self.stats
                    .points_read
                    .fetch_add(v.len() as u64, Ordering::Relaxed);
            }
            Ok(Response::ReadHoldingRegisters(v) | Response::ReadInputRegisters(v)) => {
                self.stats
                    .points_read
                    .fetch_add(v.len() as u64, Ordering::Relaxed);
            }
            Ok(_) => {}
        }
        let jitter = if f.jitter.is_zero() {
            Duration::ZERO
        } else {
            let j = lock(&self.rng).below(f.jitter.as_micros() as u64 + 1);
            Duration::from_micros(j)
        };
        Decision::Reply {
            result,
            after: f.delay + jitter,
            garbage: crate::every(f.garbage_every, n),
            wrong_id: crate::every(f.wrong_id_every, n),
        }
    }

    /// Random bytes for a garbage reply.
    pub(crate) fn garbage(&self, len: usize) -> Vec<u8> {
        let mut rng = lock(&self.rng);
        (0..len).map(|_| rng.next_u64() as u8).collect()
    }
}

/// Which table, first address and count a request touches, and whether it writes.
fn touched(req: &Request<'_>) -> (Option<RegisterKind>, u16, u16, bool) {
    use RegisterKind::*;
    match req {
        Request::ReadCoils(a, q) => (Some(Coil), *a, *q, false),
        Request::ReadDiscreteInputs(a, q) => (Some(DiscreteInput), *a, *q, false),
        Request::ReadHoldingRegisters(a, q) => (Some(Holding), *a, *q, false),
        Request::ReadInputRegisters(a, q) => (Some(Input), *a, *q, false),
        Request::WriteSingleCoil(a, _) => (Some(Coil), *a, 1, true),
        Request::WriteMultipleCoils(a, v) => (Some(Coil), *a, v.len() as u16, true),
        Request::WriteSingleRegister(a, _) => (Some(Holding), *a, 1, true),
        Request::WriteMultipleRegisters(a, v) => (Some(Holding), *a, v.len() as u16, true),
        _ => (None, 0, 0, false),
    }
}

/// The endpoint as a tokio-modbus server `Service` (for tokio-modbus's own TCP server).
#[derive(Debug, Clone)]
pub struct SimService(pub Arc<Endpoint>);

impl tokio_modbus::server::Service for SimService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Result<Option<Response>, ExceptionCode>> + Send>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let decision = self.0.decide(req.slave, &req.request);
        Box::pin(async move {
            match decision {
                Decision::NoReply => Ok(None),
                Decision::Reply { result, after, .. } => {
                    if !after.is_zero() {
                        tokio::time::sleep(after).await;
                    }
                    result.map(Some)
                }
            }
        })
    }
}
