//! Mapper benchmarks: `cargo bench -p mappers --bench mapper_bench -- p1|p2|p3` (release
//! mode; figures go to `docs/BENCHMARKS.md`).
//!
//! - `p1`: a fleet of PLCs of 30 tags polled every 100 ms; this process's CPU and RSS (the
//!   simulators run in a `sim-bench serve-fleet` child, found next to this binary).
//! - `p2`: requests per poll cycle of a map: the planner, one request per property (KubeEdge),
//!   contiguous-only merging, and Telegraf-style hole filling, counted by the simulator.
//! - `p3`: Modbus RTU registers per second at 19200 baud on the simulator's timed line, as a
//!   share of the line's physical limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use device_models::protocol::PropertyVisitor;
use device_models::protocol::modbus::ReadLimits;
use device_models::{DeviceConfig, DeviceSet};
use mappers::modbus::Links;
use mappers::modbus::planner::{self, PlanInput, Read};
use mappers::{Event, Mapper, MapperIo, MapperOptions};
use tokio::sync::{mpsc, watch};

// mimalloc gives freed memory back to the system; glibc's malloc keeps what the YAML loader
// used at its peak, which would hide the mappers' own footprint (see docs/BENCHMARKS.md).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn usage() -> ! {
    eprintln!(
        "usage: cargo bench -p mappers --bench mapper_bench -- p1 [PLCS] [SECS] | p2 | p3 [SECS]"
    );
    std::process::exit(2)
}

fn proc_cpu_ticks(pid: &str) -> Result<u64> {
    simulators::testkit::cpu_ticks(pid).map_err(anyhow::Error::msg)
}

fn proc_kb(pid: &str, key: &str) -> Result<u64> {
    simulators::testkit::status_kb(pid, key).map_err(anyhow::Error::msg)
}

/// Running mappers: the stop switch, the readings counter, and their write queues (kept open).
struct Fleet {
    stop: watch::Sender<bool>,
    readings: Arc<AtomicU64>,
    _writes: Vec<mpsc::Sender<mappers::WriteRequest>>,
}

/// Runs `cfgs` as mappers and counts their readings.
fn run_mappers(cfgs: &[DeviceConfig], links: &Links) -> Result<Fleet> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let readings = Arc::new(AtomicU64::new(0));
    let (etx, mut erx) = mpsc::channel::<Event>(4096);
    let counter = readings.clone();
    tokio::spawn(async move {
        while let Some(e) = erx.recv().await {
            if let Event::Readings(r) = e {
                counter.fetch_add(r.len() as u64, Ordering::Relaxed);
            }
        }
    });
    let mut writers = Vec::new();
    for c in cfgs {
        let m = Mapper::build(c, links, &MapperOptions::default())?;
        let (wtx, wrx) = mpsc::channel(4);
        writers.push(wtx);
        // No reconfiguration here: the sender is dropped, the branch stays idle.
        let (_, reconfigure) = mpsc::channel(1);
        tokio::spawn(m.run(MapperIo {
            events: etx.clone(),
            writes: wrx,
            shutdown: stop_rx.clone(),
            reconfigure,
        }));
    }
    Ok(Fleet {
        stop: stop_tx,
        readings,
        _writes: writers,
    })
}

async fn p1(plcs: usize, secs: u64) -> Result<()> {
    // This bench runs from target/release/deps/; sim-bench is in target/release/.
    let (mut child, ports) = simulators::testkit::serve_fleet(plcs, 30)
        .await
        .map_err(anyhow::Error::msg)?;
    let rss_at_start = proc_kb("self", "VmRSS:")?;
    let dir = std::env::temp_dir().join(format!("mapper-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let set = simulators::fleet::generate(&dir, plcs, 30, |i| ("127.0.0.1".into(), ports[i]))?;
    let _ = std::fs::remove_dir_all(&dir);
    let rss_before_mappers = proc_kb("self", "VmRSS:")?;
    let links = Links::default();
    let Fleet {
        stop,
        readings,
        _writes,
    } = run_mappers(&set.devices, &links)?;
    drop(set);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (c0, r0, t0) = (
        proc_cpu_ticks("self")?,
        readings.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (c1, r1, wall) = (
        proc_cpu_ticks("self")?,
        readings.load(Ordering::Relaxed),
        t0.elapsed(),
    );
    let cpu = (c1 - c0) as f64 / 100.0 / wall.as_secs_f64();
    let rss = proc_kb("self", "VmRSS:")?;
    println!(
        "| {plcs} PLCs x 30 tags every 100 ms | {:.0} readings/s (of {} expected) | mapper CPU {:.1} % of a core | RSS {:.1} MB | {:.1} MB at start, {:.1} MB after loading the device files |",
        (r1 - r0) as f64 / wall.as_secs_f64(),
        plcs * 300,
        cpu * 100.0,
        rss as f64 / 1024.0,
        rss_at_start as f64 / 1024.0,
        rss_before_mappers as f64 / 1024.0
    );
    let _ = stop.send(true);
    let _ = child.kill().await;
    Ok(())
}

fn modbus_unit(d: &DeviceConfig) -> Option<u8> {
    match &d.protocol {
        device_models::protocol::DeviceProtocol::Modbus(m) => Some(m.slave_id),
        _ => None,
    }
}

fn inputs(d: &DeviceConfig, group_all: bool) -> Vec<PlanInput> {
    let unit = modbus_unit(d).unwrap_or(1);
    d.properties
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match &p.visitor {
            PropertyVisitor::Modbus(v) => Some(PlanInput {
                index: i,
                unit,
                kind: v.register,
                address: v.address,
                count: v.count(),
                group: if group_all {
                    "all".into()
                } else {
                    v.poll_group
                        .clone()
                        .unwrap_or_else(|| format!("{}ms", p.collect_cycle.as_millis()))
                },
            }),
            _ => None,
        })
        .collect()
}

/// Executes a plan once against a simulator and returns the requests it counted.
async fn measure(sim: &simulators::modbus::tcp::TcpSim, reads: &[Read]) -> Result<u64> {
    use tokio_modbus::client::Reader;
    use tokio_modbus::prelude::SlaveContext;
    let mut ctx = tokio_modbus::client::tcp::connect(sim.addr).await?;
    let before = simulators::modbus::Stats::get(&sim.endpoint.stats.requests);
    for r in reads {
        ctx.set_slave(tokio_modbus::Slave(r.unit));
        use device_models::protocol::modbus::RegisterKind::*;
        let ok = match r.kind {
            Coil => ctx.read_coils(r.start, r.count).await?.is_ok(),
            DiscreteInput => ctx.read_discrete_inputs(r.start, r.count).await?.is_ok(),
            Holding => ctx.read_holding_registers(r.start, r.count).await?.is_ok(),
            Input => ctx.read_input_registers(r.start, r.count).await?.is_ok(),
        };
        if !ok {
            bail!("read {r:?} refused");
        }
    }
    Ok(simulators::modbus::Stats::get(&sim.endpoint.stats.requests) - before)
}

/// A 100-tag PLC map with addresses scattered as real maps are (blocks with holes).
fn scattered_map(dir: &std::path::Path) -> Result<DeviceSet> {
    let mut model = String::from(
        "apiVersion: devices.kubeedge.io/v1beta1\nkind: DeviceModel\nmetadata: {name: scattered, namespace: bench}\nspec:\n  protocol: modbus\n  properties:\n",
    );
    let mut props = String::new();
    let mut addr: u32 = 0;
    let mut x: u64 = 42;
    for t in 0..100 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let (dt, width) = if x >> 62 == 0 {
            ("float32", 2)
        } else {
            ("int16", 1)
        };
        let hole = match (x >> 40) % 10 {
            0..=5 => 0,
            6..=7 => (x >> 20) % 4,
            8 => 5 + (x >> 20) % 10,
            _ => 20 + (x >> 20) % 60,
        };
        addr += hole as u32;
        model.push_str(&format!(
            "    - {{name: t{t}, type: FLOAT, accessMode: ReadOnly}}\n"
        ));
        props.push_str(&format!("    - {{name: t{t}, visitors: {{configData: {{register: HoldingRegister, offset: {addr}, dataType: {dt}}}}}}}\n"));
        addr += width;
    }
    std::fs::write(dir.join("m.yaml"), model)?;
    std::fs::write(
        dir.join("d.yaml"),
        format!(
            "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata: {{name: scattered, namespace: bench}}\nspec:\n  deviceModelRef: {{name: scattered}}\n  protocol: {{protocolName: modbus, configData: {{ip: 127.0.0.1, slaveID: 1}}}}\n  properties:\n{props}"
        ),
    )?;
    Ok(simulators::load_devices(dir)?)
}

async fn p2() -> Result<()> {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../device-models/examples/oil-platform");
    let platform = simulators::load_devices(&examples)?;
    let dir = std::env::temp_dir().join(format!("mapper-bench-p2-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let scattered = scattered_map(&dir)?;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "| map | properties | one per property (KubeEdge) | contiguous only | fill up to 50 (Telegraf max_insert default) | Ballast planner (device default: maxGap 125 on TCP, 10 on RTU) |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    let limits = ReadLimits::default();
    let telegraf = ReadLimits {
        max_gap: 50,
        ..limits
    };
    let mut rows: Vec<(String, Vec<DeviceConfig>)> = platform
        .devices
        .iter()
        .filter(|d| modbus_unit(d).is_some())
        .map(|d| (d.id.clone(), vec![d.clone()]))
        .collect();
    rows.push((
        "100-tag scattered PLC map".into(),
        scattered.devices.clone(),
    ));
    for (name, devs) in rows {
        // Simulate the device over TCP whatever its line, so requests can be counted.
        let mut tcp_devs = devs.clone();
        for d in &mut tcp_devs {
            if let device_models::protocol::DeviceProtocol::Modbus(m) = &mut d.protocol {
                m.transport = device_models::protocol::modbus::ModbusTransport::Tcp {
                    host: "127.0.0.1".into(),
                    port: 502,
                };
            }
        }
        let ep = simulators::modbus_endpoint(&tcp_devs, simulators::Line::Tcp, 1)?;
        let sim = simulators::modbus::tcp::spawn("127.0.0.1:0".parse()?, ep).await?;
        let ins: Vec<PlanInput> = devs.iter().flat_map(|d| inputs(d, true)).collect();
        let per = measure(&sim, &planner::plan_per_property(&ins)).await?;
        let contiguous = measure(&sim, &planner::plan_contiguous(&ins, &limits)?).await?;
        let fill = measure(&sim, &planner::plan(&ins, &telegraf)?).await?;
        let own = match &devs[0].protocol {
            device_models::protocol::DeviceProtocol::Modbus(m) => m.limits,
            _ => limits,
        };
        let ours = measure(&sim, &planner::plan(&ins, &own)?).await?;
        println!(
            "| {name} | {} | {per} | {contiguous} | {fill} | {ours} |",
            ins.len()
        );
    }
    Ok(())
}

async fn p3(secs: u64) -> Result<()> {
    use simulators::modbus::rtu::LineTiming;
    let dir = std::env::temp_dir().join(format!("mapper-bench-p3-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut model = String::from(
        "apiVersion: devices.kubeedge.io/v1beta1\nkind: DeviceModel\nmetadata: {name: rtu125, namespace: bench}\nspec:\n  protocol: modbus\n  properties:\n",
    );
    let mut props = String::new();
    for t in 0..125 {
        model.push_str(&format!(
            "    - {{name: r{t}, type: INT, accessMode: ReadOnly}}\n"
        ));
        props.push_str(&format!("    - {{name: r{t}, collectCycle: 1, visitors: {{configData: {{register: InputRegister, offset: {t}, dataType: uint16}}}}}}\n"));
    }
    std::fs::write(dir.join("m.yaml"), model)?;
    std::fs::write(
        dir.join("d.yaml"),
        format!(
            "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata: {{name: rtu125, namespace: bench}}\nspec:\n  deviceModelRef: {{name: rtu125}}\n  protocol: {{protocolName: modbus, configData: {{communicateMode: RTU, serialName: /dev/null, baudRate: 19200, parity: even, slaveID: 1, timeout: 1000}}}}\n  properties:\n{props}"
        ),
    )?;
    let set = simulators::load_devices(&dir)?;
    let _ = std::fs::remove_dir_all(&dir);
    let ep = simulators::modbus_endpoint(&set.devices, simulators::Line::Rtu, 1)?;
    let pty = simulators::pty::Pty::open()?;
    let path = pty.path().to_string_lossy().into_owned();
    let timing = LineTiming {
        baud: 19200,
        bits_per_char: 11,
    };
    tokio::spawn(async move {
        let _ = simulators::modbus::rtu::serve(pty, ep, Some(timing)).await;
    });
    let mut cfg = set.devices[0].clone();
    if let device_models::protocol::DeviceProtocol::Modbus(m) = &mut cfg.protocol
        && let device_models::protocol::modbus::ModbusTransport::Rtu(s) = &mut m.transport
    {
        s.port = path;
    }
    let links = Links::default();
    let Fleet {
        stop,
        readings,
        _writes,
    } = run_mappers(&[cfg], &links)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (r0, t0) = (readings.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let rate = (readings.load(Ordering::Relaxed) - r0) as f64 / t0.elapsed().as_secs_f64();
    let limit = timing.max_registers_per_s(125);
    println!(
        "| RTU 19200 8E1, 125-register reads | {rate:.0} registers/s | line limit {limit:.0} registers/s | {:.1} % of the limit |",
        rate / limit * 100.0
    );
    let _ = stop.send(true);
    Ok(())
}

fn main() -> Result<()> {
    // `cargo bench` adds --bench; everything else is ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let num = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    rt.block_on(async {
        match args.first().map(String::as_str) {
            Some("p1") => p1(num(1, 500) as usize, num(2, 15)).await,
            Some("p2") => p2().await,
            Some("p3") => p3(num(1, 10)).await,
            _ => usage(),
        }
    })
}
