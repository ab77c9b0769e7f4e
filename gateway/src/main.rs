//! `ballast-gateway`: the edge process of Ballast.
//!
//! Subcommands: `demo` (simulated platform, embedded broker, SQLite, live twins), `run` (the
//! gateway on a config file), `check` (validate device files), `twin get|set` (through the MQTT
//! twin topics, like any local app).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use gateway::{check, config, demo, runtime, twin_cli};

// glibc's malloc keeps the heap the YAML loader used at its peak (about 100 MB for 500 device
// definitions) for the life of the process; mimalloc gives it back (docs/BENCHMARKS.md).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Ballast edge gateway.
#[derive(Debug, Parser)]
#[command(name = "ballast-gateway", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the oil-platform demo: simulators, the gateway, its broker and a SQLite file.
    Demo {
        /// Device files to simulate and run.
        #[arg(long, default_value = "device-models/examples/oil-platform")]
        devices: PathBuf,
        /// Keep the SQLite file here (default: a temporary directory, removed at exit).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Embedded broker port (a free one when this is taken).
        #[arg(long, default_value_t = 1883)]
        broker_port: u16,
        /// Stop after this many seconds.
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Run the gateway with a config file.
    Run {
        /// The config (see gateway/gateway.example.toml).
        #[arg(long)]
        config: PathBuf,
    },
    /// Load and validate Device and DeviceModel files (KubeEdge devices.kubeedge.io/v1beta1).
    ///
    /// Prints every problem as file:line:column: field: message, then a one-line summary.
    /// Exits 0 when the files are valid, 1 when any has an error, 2 on bad usage.
    Check {
        /// Files or directories (searched recursively for *.yaml and *.yml). Models may be in
        /// any of them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Treat warnings as errors.
        #[arg(long)]
        deny_warnings: bool,
        /// Print only errors and the summary.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Read or set a device twin through the gateway's MQTT twin topics.
    Twin {
        #[command(subcommand)]
        op: TwinOp,
    },
}

#[derive(Debug, Subcommand)]
enum TwinOp {
    /// Print a device's twins (twin/get).
    Get {
        /// Device id NAMESPACE/NAME.
        device: String,
        /// Broker address.
        #[arg(long, default_value = "127.0.0.1:1883")]
        broker: String,
    },
    /// Set a desired value (twin/update with expected).
    Set {
        /// Device id NAMESPACE/NAME.
        device: String,
        /// Property.
        property: String,
        /// Value.
        value: String,
        /// Broker address.
        #[arg(long, default_value = "127.0.0.1:1883")]
        broker: String,
    },
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ballast-gateway: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// mimalloc keeps freed memory for `purge_delay` (1 s in v3) before giving it back to the OS; at
/// a 1 s poll cycle that is one cycle's transient allocations held for good (3–4 MB of a
/// 100-device gateway, docs/BENCHMARKS.md). The gateway gives it back at once, unless
/// `MIMALLOC_PURGE_DELAY` in the environment says otherwise.
#[cfg(not(feature = "system-alloc"))]
#[allow(unsafe_code)]
fn allocator_defaults() {
    // `mi_option_purge_delay` in mimalloc.h (v2 and v3), which libmimalloc-sys does not name:
    // the option right before `mi_option_use_numa_nodes`.
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    const _: () = assert!(libmimalloc_sys::mi_option_use_numa_nodes == PURGE_DELAY + 1);
    // SAFETY: mi_option_set_default stores an integer into mimalloc's option table, which
    // mimalloc reads with plain loads; it is called first thing in main, before any thread is
    // spawned, so nothing reads the option concurrently. It takes no pointers.
    unsafe {
        libmimalloc_sys::mi_option_set_default(PURGE_DELAY, 0);
    }
}

#[cfg(feature = "system-alloc")]
fn allocator_defaults() {}

fn main() -> ExitCode {
    allocator_defaults();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Check { .. }) {
        tracing_subscriber_init(matches!(cli.command, Command::Demo { .. }));
    }
    match cli.command {
        Command::Check {
            paths,
            deny_warnings,
            quiet,
        } => check::run(&paths, deny_warnings, quiet),
        Command::Demo {
            devices,
            data_dir,
            broker_port,
            seconds,
        } => report(runtime().map_err(anyhow::Error::from).and_then(|rt| {
            rt.block_on(demo::run(demo::DemoOptions {
                devices,
                data_dir,
                broker_port,
                duration: seconds.map(Duration::from_secs),
            }))
        })),
        Command::Run { config } => report(
            runtime()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(run(config))),
        ),
        Command::Twin { op } => {
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => return report(Err(e.into())),
            };
            match op {
                TwinOp::Get { device, broker } => rt.block_on(twin_cli::get(&device, &broker)),
                TwinOp::Set {
                    device,
                    property,
                    value,
                    broker,
                } => rt.block_on(twin_cli::set(&device, &property, &value, &broker)),
            }
        }
    }
}

/// Logs to stderr: `BALLAST_LOG` filters (default `info,rumqttd=off`, e.g. `BALLAST_LOG=debug` or
/// `BALLAST_LOG=mappers=debug,info`), `BALLAST_LOG_FORMAT=json` gives one JSON object a line.
/// The demo logs warnings only, so that its live table stays readable; rumqttd's INFO lines
/// (every subscription) are hidden unless asked for.
fn tracing_subscriber_init(demo: bool) {
    use tracing_subscriber::EnvFilter;
    // rumqttd logs every clean disconnect as an ERROR; its own log is opt-in.
    let default = if demo {
        "warn,rumqttd=off"
    } else {
        "info,rumqttd=off"
    };
    let filter = EnvFilter::try_from_env("BALLAST_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("BALLAST_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(config: PathBuf) -> anyhow::Result<()> {
    let cfg = config::Config::load(&config)?;
    // Standalone mode reads the devices directory; without one, the gateway runs what its
    // store last applied (edge autonomy: no files, no cloud).
    let set = match &cfg.devices_dir {
        Some(dir) => device_models::check_path(dir),
        None => runtime::stored_devices(&cfg.db_path()).await?,
    };
    for d in set.diagnostics.iter().filter(|d| d.is_error()) {
        eprintln!("{d}");
    }
    let node = cfg.node_name.clone();
    let mine = move |set: device_models::DeviceSet| -> Vec<device_models::DeviceConfig> {
        set.devices
            .into_iter()
            .filter(|d| d.device.spec.node_name.as_deref().is_none_or(|n| n == node))
            .collect()
    };
    let gw = runtime::start(&cfg, mine(set)).await?;
    tracing::info!(broker = %gw.broker, store = %cfg.db_path().display(), "gateway running");
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut poll = tokio::time::interval(Duration::from_secs(2));
    let mut seen = cfg.devices_dir.as_deref().map(fingerprint);
    loop {
        let reload = tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => true,
            _ = poll.tick() => {
                let now = cfg.devices_dir.as_deref().map(fingerprint);
                let changed = now != seen;
                seen = now;
                changed
            }
        };
        let Some(dir) = cfg.devices_dir.as_deref().filter(|_| reload) else {
            continue;
        };
        // A broken edit keeps the running configuration: report it, apply nothing.
        let set = device_models::check_path(dir);
        if set.errors() > 0 {
            for d in set.diagnostics.iter().filter(|d| d.is_error()) {
                tracing::error!("{d}");
            }
            tracing::error!("{}; keeping the running configuration", set.summary());
            continue;
        }
        let _ = gw.reload.send(mine(set)).await;
    }
    let _ = gw.shutdown.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), gw.task).await;
    Ok(())
}

/// What changes when a device file is edited: every YAML file's path, size and modification
/// time.
fn fingerprint(dir: &std::path::Path) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    fn walk(dir: &std::path::Path, out: &mut Vec<(PathBuf, u64, Option<std::time::SystemTime>)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if let Ok(m) = e.metadata() {
                out.push((p, m.len(), m.modified().ok()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}
