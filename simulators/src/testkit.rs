//! Helpers for the tests and benchmarks of this and other crates: third-party peers started as
//! child processes that stop with the test, and `/proc` readings of a process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed when dropped, even when the test fails.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Finds a third-party tool; the error says how to get it.
pub fn tool(name: &str) -> Result<PathBuf, String> {
    ["/usr/bin", "/usr/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .ok_or_else(|| {
            format!("{name} is not installed; scripts/test.sh installs it (Debian package)")
        })
}

/// Runs mbpoll (the Debian package) once with `args`; returns the values it printed, one per
/// `[ref]: value` line, or what went wrong with its output.
pub fn mbpoll(args: &[&str]) -> Result<Vec<String>, String> {
    let out = Command::new(tool("mbpoll")?)
        .args(args)
        .output()
        .map_err(|e| format!("start mbpoll: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "mbpoll {args:?} failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(text
        .lines()
        .filter_map(|l| l.trim().strip_prefix('[').and_then(|l| l.split_once("]:")))
        .map(|(_, v)| v.trim().to_string())
        .collect())
}

/// A free TCP port on loopback, for third-party servers that cannot report a port 0 bind.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts mosquitto on a free loopback port and waits (up to 10 s) until it accepts
/// connections.
pub fn mosquitto() -> Result<(KillOnDrop, u16), String> {
    let port = free_port().map_err(|e| e.to_string())?;
    let child = Command::new(tool("mosquitto")?)
        .args(["-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start mosquitto: {e}"))?;
    let guard = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("mosquitto did not start within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((guard, port))
}

/// CPU time (user + system) of a process, in clock ticks (`pid` may be `self`).
pub fn cpu_ticks(pid: &str) -> Result<u64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    let after = stat.rsplit_once(')').ok_or("malformed stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the command: state is [0]; utime and stime are fields 14 and 15 of the line.
    let get = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or("malformed stat")
    };
    Ok(get(11)? + get(12)?)
}

/// Clock ticks per second of [`cpu_ticks`] (USER_HZ, 100 on Linux).
pub const TICKS_PER_S: f64 = 100.0;

/// A `kB` line of `/proc/PID/status`, such as `VmRSS:`.
pub fn status_kb(pid: &str, key: &str) -> Result<u64, String> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .ok_or_else(|| format!("no {key}"))?;
    line.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("malformed {key}"))
}

/// Starts `sim-bench serve-fleet` (found next to the running bench binary, in `target/release/`
/// or its `deps/`) with `plcs` PLCs of `tags` tags; returns the child (killed on drop) and the
/// port of each PLC.
pub async fn serve_fleet(
    plcs: usize,
    tags: usize,
) -> Result<(tokio::process::Child, Vec<u16>), String> {
    use tokio::io::AsyncBufReadExt;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let candidates = [
        exe.with_file_name("sim-bench"),
        exe.parent()
            .and_then(Path::parent)
            .map(|p| p.join("sim-bench"))
            .unwrap_or_default(),
    ];
    let sim = candidates
        .into_iter()
        .find(|p| p.exists())
        .ok_or("sim-bench not found: cargo build --release -p simulators --bins")?;
    let mut child = tokio::process::Command::new(sim)
        .args([
            "serve-fleet",
            "--plcs",
            &plcs.to_string(),
            "--tags",
            &tags.to_string(),
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("start sim-bench: {e}"))?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut lines = tokio::io::BufReader::new(out).lines();
    let mut ports = Vec::new();
    while let Some(l) = lines.next_line().await.map_err(|e| e.to_string())? {
        if l == "ready" {
            return Ok((child, ports));
        }
        ports.push(
            l.parse::<u16>()
                .map_err(|e| format!("sim-bench printed {l:?}: {e}"))?,
        );
    }
    Err("sim-bench exited before it was ready".into())
}
