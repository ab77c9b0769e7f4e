//! `ballast-sim`: simulated field devices from a directory of KubeEdge device files.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use device_models::DeviceSet;
use device_models::protocol::DeviceProtocol;
use device_models::protocol::modbus::ModbusTransport;
use simulators::modbus::rtu::LineTiming;
use simulators::modbus::{Endpoint, ExceptionRule, Faults};
use simulators::pty::Pty;
use simulators::{AbortOnDrop, Line, load_devices, modbus_endpoint, spawn_ticker};
use tokio_modbus::ExceptionCode;

/// Simulated field devices for development, CI and demos.
///
/// Devices come from KubeEdge Device/DeviceModel files (default: the oil-platform example).
/// Each transport prints where it listens, one line each, then runs until interrupted.
#[derive(Debug, Parser)]
#[command(name = "ballast-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Common {
    /// Directory (or file) of Device and DeviceModel YAML.
    #[arg(long, default_value = "device-models/examples/oil-platform")]
    devices: PathBuf,
    /// Seed of the simulated physics: the same seed gives the same plant.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Physics step.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    tick: Duration,
}

#[derive(Debug, Args, Default)]
struct ModbusFaultArgs {
    /// Delay every reply (e.g. 20ms).
    #[arg(long, value_parser = parse_duration)]
    delay: Option<Duration>,
    /// Random extra delay up to this long.
    #[arg(long, value_parser = parse_duration)]
    jitter: Option<Duration>,
    /// Answer an exception for requests touching an address: [KIND:]ADDR=CODE, KIND one of
    /// coil, discrete, holding, input; CODE a number (2 = illegal data address). Repeatable.
    #[arg(long = "exception", value_parser = parse_exception)]
    exceptions: Vec<ExceptionRule>,
    /// Give no reply to every Nth request.
    #[arg(long)]
    drop_every: Option<u64>,
    /// Reply with random bytes to every Nth request.
    #[arg(long)]
    garbage_every: Option<u64>,
    /// Reply with a wrong transaction id (RTU: wrong address) to every Nth request.
    #[arg(long)]
    wrong_id_every: Option<u64>,
    /// Close each TCP connection after N requests.
    #[arg(long)]
    close_after: Option<u64>,
    /// Go silent for this long, starting after --silent-after.
    #[arg(long, value_parser = parse_duration)]
    silent_for: Option<Duration>,
    /// When the silence starts.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    silent_after: Duration,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve every Modbus TCP device of the directory on one listener, by unit id.
    ModbusTcp {
        #[command(flatten)]
        common: Common,
        /// Address to listen on (loopback unless told otherwise).
        #[arg(long, default_value = "127.0.0.1:5020")]
        listen: SocketAddr,
        #[command(flatten)]
        faults: ModbusFaultArgs,
    },
    /// Serve every Modbus RTU device of the directory on one serial line, by unit id.
    ModbusRtu {
        #[command(flatten)]
        common: Common,
        /// Serial port to serve on.
        #[arg(long, conflicts_with = "pty", required_unless_present = "pty")]
        port: Option<PathBuf>,
        /// Create a pseudo-terminal and print the path a client should open.
        #[arg(long)]
        pty: bool,
        /// Baud rate; replies are timed as on a real line at this rate (0: untimed).
        #[arg(long, default_value_t = 19200)]
        baud: u32,
        #[command(flatten)]
        faults: ModbusFaultArgs,
    },
    /// Run the serial line instruments of the directory.
    Serial {
        #[command(flatten)]
        common: Common,
        /// Serial port (for a directory with one instrument).
        #[arg(long, conflicts_with = "pty", required_unless_present = "pty")]
        port: Option<PathBuf>,
        /// Create one pseudo-terminal per instrument and print their paths.
        #[arg(long)]
        pty: bool,
        /// Corrupt the checksum of every Nth record.
        #[arg(long)]
        bad_checksum_every: Option<u64>,
        /// Split every Nth record across two writes.
        #[arg(long)]
        split_every: Option<u64>,
        /// Merge every Nth record with the next one.
        #[arg(long)]
        merge_every: Option<u64>,
    },
    /// Run the MQTT devices of the directory against a broker.
    Mqtt {
        #[command(flatten)]
        common: Common,
        /// Broker address.
        #[arg(long, default_value = "127.0.0.1:1883")]
        broker: String,
        /// Publication interval.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
        /// Publish a malformed document every Nth time.
        #[arg(long)]
        garbage_every: Option<u64>,
    },
    /// Everything at once: Modbus TCP on --listen, Modbus RTU and serial instruments on ptys,
    /// MQTT devices against --broker when given.
    All {
        #[command(flatten)]
        common: Common,
        /// Modbus TCP listen address.
        #[arg(long, default_value = "127.0.0.1:5020")]
        listen: SocketAddr,
        /// Baud rate of the simulated RTU line.
        #[arg(long, default_value_t = 19200)]
        baud: u32,
        /// MQTT broker for the MQTT devices (skipped when absent).
        #[arg(long)]
        broker: Option<String>,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 100ms, 2s, 1m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "us" => n / 1e6,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn parse_exception(s: &str) -> Result<ExceptionRule, String> {
    use device_models::protocol::modbus::RegisterKind;
    let (lhs, code) = s
        .split_once('=')
        .ok_or("expected [KIND:]ADDR=CODE, e.g. holding:10=2")?;
    let (kind, addr) = match lhs.split_once(':') {
        Some((k, a)) => {
            let kind = match k {
                "coil" => RegisterKind::Coil,
                "discrete" => RegisterKind::DiscreteInput,
                "holding" => RegisterKind::Holding,
                "input" => RegisterKind::Input,
                other => {
                    return Err(format!(
                        "unknown table {other:?} (coil, discrete, holding, input)"
                    ));
                }
            };
            (Some(kind), a)
        }
        None => (None, lhs),
    };
    let address = addr
        .parse::<u16>()
        .map_err(|_| format!("{addr:?} is not an address 0..=65535"))?;
    let code = code
        .parse::<u8>()
        .map_err(|_| format!("{code:?} is not an exception code"))?;
    let code = match code {
        1 => ExceptionCode::IllegalFunction,
        2 => ExceptionCode::IllegalDataAddress,
        3 => ExceptionCode::IllegalDataValue,
        4 => ExceptionCode::ServerDeviceFailure,
        5 => ExceptionCode::Acknowledge,
        6 => ExceptionCode::ServerDeviceBusy,
        8 => ExceptionCode::MemoryParityError,
        10 => ExceptionCode::GatewayPathUnavailable,
        11 => ExceptionCode::GatewayTargetDevice,
        c => ExceptionCode::Custom(c),
    };
    Ok(ExceptionRule {
        kind,
        address,
        code,
    })
}

impl ModbusFaultArgs {
    fn apply(&self, ep: &Arc<Endpoint>) {
        ep.set_faults(Faults {
            delay: self.delay.unwrap_or_default(),
            jitter: self.jitter.unwrap_or_default(),
            exceptions: self.exceptions.clone(),
            drop_every: self.drop_every,
            garbage_every: self.garbage_every,
            wrong_id_every: self.wrong_id_every,
            close_after: self.close_after,
            silent_until: None,
        });
        if let Some(d) = self.silent_for {
            let ep = ep.clone();
            let after = self.silent_after;
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                ep.go_silent(d);
            });
        }
    }
}

fn describe(ep: &Endpoint, set: &DeviceSet) -> String {
    ep.units()
        .iter()
        .map(|u| {
            let id = set
                .devices
                .iter()
                .find(|d| matches!(&d.protocol, DeviceProtocol::Modbus(m) if m.slave_id == *u))
                .map_or("?", |d| d.id.as_str());
            format!("{u}={id}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn rtu_timing(set: &DeviceSet, baud: u32) -> Option<LineTiming> {
    if baud == 0 {
        return None;
    }
    let bits = set
        .devices
        .iter()
        .find_map(|d| match &d.protocol {
            DeviceProtocol::Modbus(m) => match &m.transport {
                ModbusTransport::Rtu(s) => Some(s.bits_per_char()),
                ModbusTransport::Tcp { .. } => None,
            },
            _ => None,
        })
        .unwrap_or(11);
    Some(LineTiming {
        baud,
        bits_per_char: bits,
    })
}

async fn start_tcp(
    set: &DeviceSet,
    seed: u64,
    listen: SocketAddr,
    faults: Option<&ModbusFaultArgs>,
) -> Result<Option<simulators::modbus::tcp::TcpSim>> {
    let ep = modbus_endpoint(&set.devices, Line::Tcp, seed)?;
    if ep.units().is_empty() {
        return Ok(None);
    }
    // Faults are in place before anyone can connect.
    if let Some(f) = faults {
        f.apply(&ep);
    }
    let sim = simulators::modbus::tcp::spawn(listen, ep)
        .await
        .with_context(|| format!("listen on {listen}"))?;
    println!(
        "modbus-tcp {} units {}",
        sim.addr,
        describe(&sim.endpoint, set)
    );
    Ok(Some(sim))
}

fn start_rtu_pty(
    set: &DeviceSet,
    seed: u64,
    baud: u32,
    faults: Option<&ModbusFaultArgs>,
) -> Result<Option<(Arc<Endpoint>, AbortOnDrop)>> {
    let ep = modbus_endpoint(&set.devices, Line::Rtu, seed)?;
    if ep.units().is_empty() {
        return Ok(None);
    }
    if let Some(f) = faults {
        f.apply(&ep);
    }
    let pty = Pty::open().context("open a pseudo-terminal")?;
    println!(
        "modbus-rtu {} baud {} units {}",
        pty.path().display(),
        baud,
        describe(&ep, set)
    );
    let timing = rtu_timing(set, baud);
    let task = tokio::spawn({
        let ep = ep.clone();
        async move {
            if let Err(e) = simulators::modbus::rtu::serve(pty, ep, timing).await {
                eprintln!("modbus-rtu: {e}");
            }
        }
    });
    Ok(Some((ep, AbortOnDrop(task))))
}

fn start_serial_ptys(
    set: &DeviceSet,
    seed: u64,
    faults: &simulators::serial::SerialFaults,
) -> Result<Vec<AbortOnDrop>> {
    let mut tasks = Vec::new();
    for d in &set.devices {
        let Some(inst) = simulators::serial::Instrument::new(d, seed) else {
            continue;
        };
        inst.set_faults(faults.clone());
        let pty = Pty::open().context("open a pseudo-terminal")?;
        println!("serial {} device {}", pty.path().display(), d.id);
        tasks.push(AbortOnDrop(tokio::spawn(async move {
            if let Err(e) = simulators::serial::run(pty, inst).await {
                eprintln!("serial: {e}");
            }
        })));
    }
    Ok(tasks)
}

fn split_host_port(s: &str) -> Result<(String, u16)> {
    let (h, p) = s.rsplit_once(':').context("broker must be HOST:PORT")?;
    Ok((h.to_string(), p.parse().context("broker port")?))
}

fn start_mqtt(
    set: &DeviceSet,
    seed: u64,
    broker: &str,
    interval: Duration,
    garbage_every: Option<u64>,
) -> Result<Vec<AbortOnDrop>> {
    let (host, port) = split_host_port(broker)?;
    let mut tasks = Vec::new();
    for d in &set.devices {
        let Some(dev) = simulators::mqtt::MqttDevice::new(d, seed) else {
            continue;
        };
        dev.set_faults(simulators::mqtt::MqttFaults {
            garbage_every,
            ..Default::default()
        });
        println!("mqtt {} device {} topic {}", broker, d.id, dev.topic());
        tasks.push(AbortOnDrop(tokio::spawn(simulators::mqtt::run(
            dev,
            host.clone(),
            port,
            interval,
        ))));
    }
    Ok(tasks)
}

async fn wait_for_ctrl_c() -> Result<()> {
    tokio::signal::ctrl_c().await.context("wait for Ctrl-C")
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::ModbusTcp {
            common,
            listen,
            faults,
        } => {
            let set = load_devices(&common.devices)?;
            let Some(sim) = start_tcp(&set, common.seed, listen, Some(&faults)).await? else {
                bail!("no Modbus TCP devices in {}", common.devices.display());
            };
            let _tick = AbortOnDrop(spawn_ticker(vec![sim.endpoint.clone()], common.tick));
            wait_for_ctrl_c().await
        }
        Command::ModbusRtu {
            common,
            port,
            pty,
            baud,
            faults,
        } => {
            let set = load_devices(&common.devices)?;
            if pty {
                let Some((ep, _task)) = start_rtu_pty(&set, common.seed, baud, Some(&faults))?
                else {
                    bail!("no Modbus RTU devices in {}", common.devices.display());
                };
                let _tick = AbortOnDrop(spawn_ticker(vec![ep], common.tick));
                return wait_for_ctrl_c().await;
            }
            let ep = modbus_endpoint(&set.devices, Line::Rtu, common.seed)?;
            if ep.units().is_empty() {
                bail!("no Modbus RTU devices in {}", common.devices.display());
            }
            faults.apply(&ep);
            let path = port.context("--port or --pty")?;
            let serial = tokio_serial::SerialStream::open(&tokio_serial::new(
                path.to_string_lossy(),
                baud.max(1),
            ))
            .with_context(|| format!("open {}", path.display()))?;
            println!(
                "modbus-rtu {} baud {} units {}",
                path.display(),
                baud,
                describe(&ep, &set)
            );
            let _tick = AbortOnDrop(spawn_ticker(vec![ep.clone()], common.tick));
            // A real port paces itself; no simulated timing on top.
            tokio::select! {
                r = simulators::modbus::rtu::serve(serial, ep, None) => r.context("serial line"),
                r = wait_for_ctrl_c() => r,
            }
        }
        Command::Serial {
            common,
            port,
            pty,
            bad_checksum_every,
            split_every,
            merge_every,
        } => {
            let set = load_devices(&common.devices)?;
            let faults = simulators::serial::SerialFaults {
                bad_checksum_every,
                split_every,
                merge_every,
                silent_until: None,
            };
            if pty {
                let tasks = start_serial_ptys(&set, common.seed, &faults)?;
                if tasks.is_empty() {
                    bail!("no serial instruments in {}", common.devices.display());
                }
                return wait_for_ctrl_c().await;
            }
            let inst = set
                .devices
                .iter()
                .find_map(|d| simulators::serial::Instrument::new(d, common.seed))
                .context("no serial instruments in the directory")?;
            inst.set_faults(faults);
            let path = port.context("--port or --pty")?;
            let serial =
                tokio_serial::SerialStream::open(&tokio_serial::new(path.to_string_lossy(), 9600))
                    .with_context(|| format!("open {}", path.display()))?;
            println!("serial {} device {}", path.display(), inst.id);
            tokio::select! {
                r = simulators::serial::run(serial, inst) => r.context("serial line"),
                r = wait_for_ctrl_c() => r,
            }
        }
        Command::Mqtt {
            common,
            broker,
            interval,
            garbage_every,
        } => {
            let set = load_devices(&common.devices)?;
            let tasks = start_mqtt(&set, common.seed, &broker, interval, garbage_every)?;
            if tasks.is_empty() {
                bail!("no MQTT devices in {}", common.devices.display());
            }
            wait_for_ctrl_c().await
        }
        Command::All {
            common,
            listen,
            baud,
            broker,
        } => {
            let set = load_devices(&common.devices)?;
            let tcp = start_tcp(&set, common.seed, listen, None).await?;
            let rtu = start_rtu_pty(&set, common.seed, baud, None)?;
            let _serial = start_serial_ptys(&set, common.seed, &Default::default())?;
            let _mqtt = match &broker {
                Some(b) => start_mqtt(&set, common.seed, b, Duration::from_secs(1), None)?,
                None => {
                    println!("mqtt skipped (no --broker)");
                    Vec::new()
                }
            };
            let mut eps = Vec::new();
            eps.extend(tcp.as_ref().map(|t| t.endpoint.clone()));
            eps.extend(rtu.as_ref().map(|r| r.0.clone()));
            let _tick = AbortOnDrop(spawn_ticker(eps, common.tick));
            wait_for_ctrl_c().await
        }
    }
}
