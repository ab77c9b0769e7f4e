//! Benchmarks of the simulators (run in release mode; figures go to `docs/BENCHMARKS.md`).
//!
//! - `sim-bench throughput`: requests per second the Modbus TCP simulator serves on loopback,
//!   with 1 and 16 connections, next to tokio-modbus's own server with a trivial service in
//!   the same run (this machine is shared and noisy: compare the ratio).
//! - `sim-bench fleet`: one simulator process with N PLCs of T tags, polled every period by a
//!   client in this process; prints the simulator's CPU share and RSS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use simulators::modbus::tcp;
use simulators::{Line, modbus_endpoint};
use tokio_modbus::client::Reader;
use tokio_modbus::{ExceptionCode, Response, Slave, SlaveRequest};

#[derive(Debug, Parser)]
#[command(name = "sim-bench", about = "Benchmarks of ballast-sim")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Requests/s on one and on 16 connections, against tokio-modbus's own server.
    Throughput {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5)]
        secs: u64,
    },
    /// CPU and RSS of one simulator process with a polled fleet.
    Fleet {
        /// Number of PLCs.
        #[arg(long, default_value_t = 500)]
        plcs: usize,
        /// Tags per PLC.
        #[arg(long, default_value_t = 30)]
        tags: usize,
        /// Poll period of every PLC, milliseconds.
        #[arg(long, default_value_t = 100)]
        period_ms: u64,
        /// Seconds to measure.
        #[arg(long, default_value_t = 20)]
        secs: u64,
    },
    /// (internal) Serve a fleet and print its ports.
    ServeFleet {
        #[arg(long)]
        plcs: usize,
        #[arg(long)]
        tags: usize,
    },
}

/// tokio-modbus's server with a service that answers every read with zeros: the reference.
#[derive(Clone)]
struct Zeros;

impl tokio_modbus::server::Service for Zeros {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Option<Response>, ExceptionCode>>;
    fn call(&self, req: Self::Request) -> Self::Future {
        let r = match req.request {
            tokio_modbus::Request::ReadHoldingRegisters(_, n) => {
                Ok(Some(Response::ReadHoldingRegisters(vec![
                    0;
                    usize::from(n)
                ])))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        };
        std::future::ready(r)
    }
}

async fn reference_server() -> Result<SocketAddr> {
    use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let new_service = |_| Ok(Some(Zeros));
        let on_connected = |stream: tokio::net::TcpStream, a| async move {
            let _ = stream.set_nodelay(true);
            accept_tcp_connection(stream, a, new_service)
        };
        let _ = Server::new(listener).serve(&on_connected, |_| {}).await;
    });
    Ok(addr)
}

/// Sequential clients (one request in flight each) reading 125 holding registers.
async fn hammer(addr: SocketAddr, conns: usize, secs: u64) -> Result<f64> {
    let count = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let count = count.clone();
        let mut ctx = tokio_modbus::client::tcp::connect_slave(addr, Slave(1)).await?;
        tasks.push(tokio::spawn(async move {
            while Instant::now() < stop {
                for _ in 0..64 {
                    if ctx.read_holding_registers(0, 125).await.is_err() {
                        return;
                    }
                }
                count.fetch_add(64, Ordering::Relaxed);
            }
        }));
    }
    let t0 = Instant::now();
    for t in tasks {
        t.await?;
    }
    Ok(count.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64())
}

async fn throughput(secs: u64) -> Result<()> {
    let dir = tempfile_dir()?;
    // One PLC with 125 int16 holding registers (188 tags: two thirds are holding registers).
    let set = simulators::fleet::generate(&dir, 1, 188, |_| ("127.0.0.1".into(), 502))?;
    let ep = modbus_endpoint(&set.devices, Line::Tcp, 1)?;
    let sim = tcp::spawn("127.0.0.1:0".parse()?, ep).await?;
    let reference = reference_server().await?;
    println!("| server | connections | requests/s (125 registers each) |");
    println!("| --- | --- | --- |");
    for conns in [1, 16] {
        let ours = hammer(sim.addr, conns, secs).await?;
        let theirs = hammer(reference, conns, secs).await?;
        println!("| ballast-sim | {conns} | {ours:.0} |");
        println!("| tokio-modbus server, trivial service | {conns} | {theirs:.0} |");
        println!(
            "| ratio ballast-sim / tokio-modbus | {conns} | {:.2} |",
            ours / theirs
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("sim-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn serve_fleet(plcs: usize, tags: usize) -> Result<()> {
    let dir = tempfile_dir()?;
    let set = simulators::fleet::generate(&dir, plcs, tags, |_| ("127.0.0.1".into(), 502))?;
    let _ = std::fs::remove_dir_all(&dir);
    let mut sims = Vec::new();
    let mut eps = Vec::new();
    for d in &set.devices {
        let ep = modbus_endpoint(std::slice::from_ref(d), Line::Tcp, 1)?;
        let sim = tcp::spawn("127.0.0.1:0".parse()?, ep.clone()).await?;
        println!("{}", sim.addr.port());
        eps.push(ep);
        sims.push(sim);
    }
    println!("ready");
    let _tick = simulators::AbortOnDrop(simulators::spawn_ticker(eps, Duration::from_millis(100)));
    tokio::signal::ctrl_c().await?;
    Ok(())
}

fn proc_cpu_ticks(pid: u32) -> Result<u64> {
    simulators::testkit::cpu_ticks(&pid.to_string()).map_err(anyhow::Error::msg)
}

fn proc_kb(pid: u32, key: &str) -> Result<u64> {
    simulators::testkit::status_kb(&pid.to_string(), key).map_err(anyhow::Error::msg)
}

async fn fleet(plcs: usize, tags: usize, period: Duration, secs: u64) -> Result<()> {
    // This very binary, in its serve-fleet mode, as the benches start it.
    let (mut child, ports) = simulators::testkit::serve_fleet(plcs, tags)
        .await
        .map_err(anyhow::Error::msg)?;
    let pid = child.id().context("child pid")?;
    let dir = tempfile_dir()?;
    let set = simulators::fleet::generate(&dir, 1, tags, |_| ("127.0.0.1".into(), 502))?;
    let _ = std::fs::remove_dir_all(&dir);
    // The read plan of one PLC: one request per table (the fleet map is contiguous per table).
    let mut plan: Vec<(device_models::protocol::modbus::RegisterKind, u16, u16)> = Vec::new();
    for p in &set.devices[0].properties {
        let device_models::protocol::PropertyVisitor::Modbus(v) = &p.visitor else {
            continue;
        };
        match plan.iter_mut().find(|(k, ..)| *k == v.register) {
            Some((_, lo, hi)) => {
                *lo = (*lo).min(v.address);
                *hi = (*hi).max(v.last_address() as u16);
            }
            None => plan.push((v.register, v.address, v.last_address() as u16)),
        }
    }
    let reads = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(secs + 2);
    let mut tasks = Vec::new();
    for port in &ports {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let mut ctx = tokio_modbus::client::tcp::connect_slave(addr, Slave(1)).await?;
        let (plan, reads, errors) = (plan.clone(), reads.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut iv = tokio::time::interval(period);
            while Instant::now() < stop {
                iv.tick().await;
                for (kind, lo, hi) in &plan {
                    use device_models::protocol::modbus::RegisterKind::*;
                    let n = hi - lo + 1;
                    let ok = match kind {
                        Coil => ctx.read_coils(*lo, n).await.map(|r| r.is_ok()),
                        DiscreteInput => ctx.read_discrete_inputs(*lo, n).await.map(|r| r.is_ok()),
                        Holding => ctx.read_holding_registers(*lo, n).await.map(|r| r.is_ok()),
                        Input => ctx.read_input_registers(*lo, n).await.map(|r| r.is_ok()),
                    };
                    if ok.unwrap_or(false) {
                        reads.fetch_add(1, Ordering::Relaxed);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // Warm up two seconds, then measure.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (c0, r0, t0) = (
        proc_cpu_ticks(pid)?,
        reads.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (c1, r1, wall) = (
        proc_cpu_ticks(pid)?,
        reads.load(Ordering::Relaxed),
        t0.elapsed(),
    );
    let rss = proc_kb(pid, "VmRSS:")?;
    let hwm = proc_kb(pid, "VmHWM:")?;
    for t in tasks {
        t.abort();
    }
    let clk = 100.0; // USER_HZ on Linux
    let cpu = (c1 - c0) as f64 / clk / wall.as_secs_f64();
    let req_s = (r1 - r0) as f64 / wall.as_secs_f64();
    println!(
        "| {plcs} PLCs x {tags} tags every {} ms | {:.0} requests/s ({:.0} tag-reads/s) | simulator CPU {:.1} % of a core | RSS {:.1} MB (peak {:.1} MB) | errors {} |",
        period.as_millis(),
        req_s,
        req_s / plan.len() as f64 * tags as f64,
        cpu * 100.0,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        errors.load(Ordering::Relaxed)
    );
    let _ = child.kill().await;
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Cmd::Throughput { secs } => throughput(secs).await,
            Cmd::Fleet {
                plcs,
                tags,
                period_ms,
                secs,
            } => fleet(plcs, tags, Duration::from_millis(period_ms), secs).await,
            Cmd::ServeFleet { plcs, tags } => serve_fleet(plcs, tags).await,
        }
    })
}
