//! `ballast-gateway demo`: the oil-platform simulators in-process, the gateway with its embedded
//! broker and a SQLite file, and the twins updating live in the terminal.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use device_models::protocol::DeviceProtocol;
use device_models::protocol::modbus::ModbusTransport;
use simulators::modbus::rtu::LineTiming;
use simulators::pty::Pty;
use simulators::{AbortOnDrop, Line};

use crate::config::Config;

/// Options of the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Device files.
    pub devices: PathBuf,
    /// Where the SQLite file goes (a temporary directory when absent).
    pub data_dir: Option<PathBuf>,
    /// Broker port (1883 by default; a free port when that one is taken).
    pub broker_port: u16,
    /// Stop after this long (for scripts); run until Ctrl-C when absent.
    pub duration: Option<Duration>,
}

/// Runs the demo.
pub async fn run(o: DemoOptions) -> Result<()> {
    let mut set = simulators::load_devices(&o.devices)
        .with_context(|| format!("load {}", o.devices.display()))?;
    let mut tasks: Vec<AbortOnDrop> = Vec::new();

    // Modbus TCP simulator, for every TCP device.
    let ep = simulators::modbus_endpoint(&set.devices, Line::Tcp, 1)?;
    let tcp = simulators::modbus::tcp::spawn("127.0.0.1:0".parse()?, ep.clone()).await?;
    // Modbus RTU simulator on a timed pty line.
    let rtu_ep = simulators::modbus_endpoint(&set.devices, Line::Rtu, 1)?;
    let rtu_pty = Pty::open().context("pseudo-terminal for the RTU line")?;
    let rtu_path = rtu_pty.path().to_string_lossy().into_owned();
    let rtu_ep2 = rtu_ep.clone();
    tasks.push(AbortOnDrop(tokio::spawn(async move {
        let _ = simulators::modbus::rtu::serve(
            rtu_pty,
            rtu_ep2,
            Some(LineTiming {
                baud: 19200,
                bits_per_char: 11,
            }),
        )
        .await;
    })));
    tasks.push(AbortOnDrop(simulators::spawn_ticker(
        vec![ep, rtu_ep],
        Duration::from_millis(100),
    )));
    // Serial instruments, one pty each; point every device at its simulator.
    for d in &mut set.devices {
        let instrument = simulators::serial::Instrument::new(d, 1);
        match &mut d.protocol {
            DeviceProtocol::Modbus(m) => match &mut m.transport {
                ModbusTransport::Tcp { host, port } => {
                    *host = tcp.addr.ip().to_string();
                    *port = tcp.addr.port();
                }
                ModbusTransport::Rtu(s) => s.port = rtu_path.clone(),
            },
            DeviceProtocol::Serial(s) => {
                if let Some(inst) = instrument {
                    let pty = Pty::open().context("pseudo-terminal for a serial instrument")?;
                    s.line.port = pty.path().to_string_lossy().into_owned();
                    tasks.push(AbortOnDrop(tokio::spawn(async move {
                        let _ = simulators::serial::run(pty, inst).await;
                    })));
                }
            }
            DeviceProtocol::Mqtt(_) => {}
        }
    }

    let temp;
    let data_dir = match &o.data_dir {
        Some(d) => d.clone(),
        None => {
            temp = TempDir::new()?;
            temp.0.clone()
        }
    };
    let mut cfg = Config {
        node_name: "rig7-edge".into(),
        data_dir: data_dir.clone(),
        ..Config::default()
    };
    cfg.broker.listen = std::net::SocketAddr::from(([127, 0, 0, 1], o.broker_port));
    if std::net::TcpListener::bind(cfg.broker.listen).is_err() {
        cfg.broker.listen.set_port(0);
    }
    cfg.metrics.listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let devices = set.devices.clone();
    let gw = crate::runtime::start(&cfg, devices).await?;
    // MQTT devices talk to the embedded broker.
    for d in &set.devices {
        if let Some(dev) = simulators::mqtt::MqttDevice::new(d, 1) {
            tasks.push(AbortOnDrop(tokio::spawn(simulators::mqtt::run(
                dev,
                "127.0.0.1".into(),
                gw.broker.port(),
                Duration::from_secs(1),
            ))));
        }
    }
    let port = gw.broker.port();
    // How to call this very binary (`cargo run` leaves it in target/debug, not on the PATH).
    let me = std::env::current_exe().map_or_else(
        |_| "ballast-gateway".to_string(),
        |p| match std::env::current_dir()
            .ok()
            .and_then(|d| p.strip_prefix(d).ok().map(|r| r.to_path_buf()))
        {
            Some(rel) => format!("./{}", rel.display()),
            None => p.display().to_string(),
        },
    );
    let mut header = format!(
        "Ballast demo: oil platform rig7, {} devices, store {}\n\
         Watch the twins:   mosquitto_sub -h 127.0.0.1 -p {port} -v -t '$hw/events/device/+/+/twin/#' -t '$ke/events/device/+/+/data/update'\n\
         Change a setpoint: {me} twin set rig7/pump-p201 speed-setpoint 1800 --broker 127.0.0.1:{port}\n\
         Read a twin:       {me} twin get rig7/wellhead-a07 --broker 127.0.0.1:{port}\n",
        set.devices.len(),
        cfg.db_path().display()
    );
    if let Some(m) = gw.metrics {
        header.push_str(&format!(
            "Metrics:           curl -s http://{m}/metrics | grep ^ballast_\n"
        ));
    }
    header.push('\n');
    // A closed stdout (`demo | head`) ends the demo; it is not worth a panic.
    let closed = {
        let mut out = std::io::stdout().lock();
        out.write_all(header.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
    };
    let tty = std::io::stdout().is_terminal();
    let started = std::time::Instant::now();
    let mut view = gw.view.clone();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        if closed {
            break;
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {}
        }
        if o.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        let twins = view.borrow_and_update().clone();
        let mut out = String::new();
        if tty {
            out.push_str("\x1b[7;1H\x1b[J");
        }
        for (id, props) in &twins {
            out.push_str(&format!("{id}\n"));
            let line: Vec<String> = props
                .iter()
                .map(|(k, t)| {
                    let r = t
                        .reported
                        .as_ref()
                        .map_or("-".to_string(), |v| short(&v.value));
                    match t.delta() {
                        Some(d) => format!("{k}={r} (→{d})"),
                        None => format!("{k}={r}"),
                    }
                })
                .collect();
            out.push_str(&format!("    {}\n", line.join("  ")));
        }
        out.push_str(&format!(
            "readings {}  samples stored {}  batches {}  mqtt requests {}\n",
            gw.stats.readings.load(std::sync::atomic::Ordering::Relaxed),
            gw.stats.samples.load(std::sync::atomic::Ordering::Relaxed),
            gw.stats.batches.load(std::sync::atomic::Ordering::Relaxed),
            gw.stats.requests.load(std::sync::atomic::Ordering::Relaxed),
        ));
        let mut stdout = std::io::stdout().lock();
        if stdout
            .write_all(out.as_bytes())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            break;
        }
    }
    let _ = gw.shutdown.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), gw.task).await;
    Ok(())
}

fn short(v: &str) -> String {
    match v.parse::<f64>() {
        Ok(f) if v.contains('.') => format!("{f:.2}"),
        _ => v.chars().take(16).collect(),
    }
}

/// A temporary directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<TempDir> {
        let p = std::env::temp_dir().join(format!("ballast-demo-{}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
