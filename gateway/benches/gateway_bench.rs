//! Gateway benchmarks: `cargo bench -p gateway --bench gateway_bench -- p4|p7 [DEVICES] [TAGS]`
//! (release mode; figures go to `docs/BENCHMARKS.md`).
//!
//! - `p4`: readings per second through the twin logic, the SQLite store (one transaction per
//!   batch) and the embedded broker, fed directly (no device I/O) with values that always change.
//! - `p7`: RSS and CPU of a `ballast-gateway run` process (the release binary, as installed)
//!   running DEVICES × TAGS at a 1 s cycle against a `sim-bench serve-fleet` child process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use device_models::Value;
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

/// `ballast_readings_total` from the gateway's `/metrics`.
async fn readings_total(port: u16) -> Result<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut body = String::new();
    s.read_to_string(&mut body).await?;
    body.lines()
        .find_map(|l| l.strip_prefix("ballast_readings_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .context("no ballast_readings_total in /metrics")
}

/// P7 measures the product: a `ballast-gateway run` process on a config file, as installed.
async fn p7(devices: usize, tags: usize, secs: u64) -> Result<()> {
    let (mut fleet, ports) = simulators::testkit::serve_fleet(devices, tags)
        .await
        .map_err(anyhow::Error::msg)?;
    let dir = temp("p7")?;
    let devices_dir = dir.join("devices");
    std::fs::create_dir_all(&devices_dir)?;
    simulators::fleet::write_with_cycle(&devices_dir, devices, tags, 1000, |i| {
        ("127.0.0.1".into(), ports[i])
    })?;
    let metrics_port = simulators::testkit::free_port()?;
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "node_name = \"bench\"\ndata_dir = {:?}\ndevices_dir = {:?}\n\
             [broker]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
            dir.join("data").display().to_string(),
            devices_dir.display().to_string(),
        ),
    )?;
    let mut gw = tokio::process::Command::new(env!("CARGO_BIN_EXE_ballast-gateway"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = gw.id().context("gateway pid")?.to_string();
    let up = Instant::now() + Duration::from_secs(60);
    while readings_total(metrics_port).await.unwrap_or(0) == 0 {
        if Instant::now() > up {
            bail!("the gateway showed no readings within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cpu0 = simulators::testkit::cpu_ticks(&pid).map_err(anyhow::Error::msg)?;
    let r0 = readings_total(metrics_port).await?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let r = (readings_total(metrics_port).await? - r0) as f64 / t0.elapsed().as_secs_f64();
    let cpu = (simulators::testkit::cpu_ticks(&pid).map_err(anyhow::Error::msg)? - cpu0) as f64
        / simulators::testkit::TICKS_PER_S
        / t0.elapsed().as_secs_f64();
    let kb = |k: &str| simulators::testkit::status_kb(&pid, k).map_err(anyhow::Error::msg);
    let (rss, anon, file) = (kb("VmRSS:")?, kb("RssAnon:")?, kb("RssFile:")?);
    println!(
        "| P7: {devices} devices / {} properties at 1 s | {r:.0} readings/s | gateway CPU {:.1} % of a core | RSS {:.1} MB (heap and stacks {:.1} MB, code {:.1} MB) |",
        devices * tags,
        cpu * 100.0,
        rss as f64 / 1024.0,
        anon as f64 / 1024.0,
        file as f64 / 1024.0,
    );
    let _ = gw.kill().await;
    let _ = fleet.kill().await;
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
