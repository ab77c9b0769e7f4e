//! Gateway benchmarks: `cargo bench -p gateway --bench gateway_bench -- p4|p7 [DEVICES] [TAGS]`
//! (release mode; figures go to `docs/BENCHMARKS.md`).
//!
//! - `p4`: readings per second through the twin logic, the SQLite store (one transaction per
//!   batch) and the embedded broker, fed directly (no device I/O) with values that always change.
//! - `p7`: RSS and CPU of the gateway (in this process) running DEVICES × TAGS at a 1 s cycle
//!   against a `sim-bench serve-fleet` child process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use device_models::Value;
use gateway::config::Config;
use mappers::{Quality, Reading};

#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn temp(name: &str) -> Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("gateway-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

async fn p4(devices: usize, tags: usize, secs: u64) -> Result<()> {
    let dir = temp("p4")?;
    let set = simulators::fleet::generate(&dir, devices, tags, |_| ("127.0.0.1".into(), 502))?;
    let mut twins = gateway::twins::Twins::new("bench", &set.devices, Default::default());
    let store = gateway::store::Store::open(&dir.join("ballast.db")).await?;
    let cfg = gateway::config::BrokerConfig {
        listen: "127.0.0.1:0".parse()?,
        ..Default::default()
    };
    let mut emb = gateway::broker::start(&cfg, &["bench"])?;
    let (mut tx, _rx) = emb.links.remove("bench").context("link")?;
    let ids: Vec<Arc<str>> = set
        .devices
        .iter()
        .map(|d| Arc::from(d.id.as_str()))
        .collect();
    let names: Vec<Arc<str>> = set.devices[0]
        .properties
        .iter()
        .map(|p| Arc::from(p.name.as_str()))
        .collect();
    let batch = 4096;
    let (mut n, mut i, mut published) = (0u64, 0u64, 0u64);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        let ts = mappers::now_ms();
        let readings: Vec<Reading> = (0..batch)
            .map(|k| {
                i += 1;
                let d = (i as usize / names.len()) % ids.len();
                let p = i as usize % names.len();
                // Always beyond any deadband: every reading becomes a report and a sample.
                let value = if names[p].ends_with(&['7', '8', '9'][..]) {
                    Value::Bool(i % 2 == 0)
                } else {
                    Value::Float((i % 10_000) as f64 + k as f64 * 1e-3)
                };
                Reading {
                    device: ids[d].clone(),
                    property: names[p].clone(),
                    value,
                    timestamp_ms: ts + (i as i64 % 1000),
                    quality: Quality::Good,
                }
            })
            .collect();
        let a = twins.on_readings(&readings, ts);
        store.apply(&a.twins, &a.samples).await?;
        for (topic, payload) in a.publish {
            if tx.publish(gateway::front::inward(&topic), payload).is_ok() {
                published += 1;
            }
        }
        n += a.samples.len() as u64;
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    println!(
        "| P4: {devices} devices × {tags} tags, batches of {batch} | {rate:.0} readings/s stored and published | {published} data/update messages |"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn p7(devices: usize, tags: usize, secs: u64) -> Result<()> {
    let (mut child, ports) = simulators::testkit::serve_fleet(devices, tags)
        .await
        .map_err(anyhow::Error::msg)?;
    let rss0 = simulators::testkit::status_kb("self", "VmRSS:").map_err(anyhow::Error::msg)?;
    let dir = temp("p7")?;
    simulators::fleet::write_with_cycle(&dir, devices, tags, 1000, |i| {
        ("127.0.0.1".into(), ports[i])
    })?;
    let set = simulators::load_devices(&dir)?;
    let mut cfg = Config {
        data_dir: dir.clone(),
        ..Config::default()
    };
    cfg.broker.listen = "127.0.0.1:0".parse()?;
    cfg.metrics.listen = None;
    if let Some(n) = std::env::var("BROKER_MAX_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        cfg.broker.max_connections = n;
    }
    let gw = gateway::runtime::start(&cfg, set.devices).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cpu0 = simulators::testkit::cpu_ticks("self").map_err(anyhow::Error::msg)?;
    let r0 = gw.stats.readings.load(std::sync::atomic::Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let cpu = (simulators::testkit::cpu_ticks("self").map_err(anyhow::Error::msg)? - cpu0) as f64
        / simulators::testkit::TICKS_PER_S
        / t0.elapsed().as_secs_f64();
    let r = (gw.stats.readings.load(std::sync::atomic::Ordering::Relaxed) - r0) as f64
        / t0.elapsed().as_secs_f64();
    let rss = simulators::testkit::status_kb("self", "VmRSS:").map_err(anyhow::Error::msg)?;
    println!(
        "| P7: {devices} devices / {} properties at 1 s | {r:.0} readings/s | gateway CPU {:.1} % of a core | RSS {:.1} MB ({:.1} MB at start) |",
        devices * tags,
        cpu * 100.0,
        rss as f64 / 1024.0,
        rss0 as f64 / 1024.0
    );
    let _ = gw.shutdown.send(true);
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let num = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        match args.first().map(String::as_str) {
            Some("p4") => p4(num(1, 1000), num(2, 10), 10).await,
            Some("p7") => p7(num(1, 100), num(2, 10), 15).await,
            _ => bail!(
                "usage: cargo bench -p gateway --bench gateway_bench -- p4|p7 [DEVICES] [TAGS]"
            ),
        }
    })
}
