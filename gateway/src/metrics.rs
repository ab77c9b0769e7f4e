//! `/metrics` (Prometheus text format) and `/healthz` on a small HTTP/1.1 listener, loopback
//! by default. No HTTP framework: two GET routes, bounded request size and time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::runtime::Stats;
use crate::store::Store;

/// What the endpoint reports.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Gateway counters.
    pub stats: Arc<Stats>,
    /// Each device's mapper metrics.
    pub mappers: crate::runtime::MetricsMap,
    /// Each device's state (`online`, `offline`, `unhealthy`, `unknown`).
    pub states: Arc<Mutex<BTreeMap<String, &'static str>>>,
    /// For the outbox depth.
    pub store: Store,
    /// Broker client counters.
    pub clients: Arc<crate::front::Clients>,
}

fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The `/metrics` body.
pub async fn render(src: &Sources) -> String {
    let mut out = String::new();
    let g = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let s = &src.stats;
    for (name, help, v) in [
        (
            "ballast_readings_total",
            "Readings received from mappers.",
            g(&s.readings),
        ),
        (
            "ballast_store_batches_total",
            "Batches committed to SQLite.",
            g(&s.batches),
        ),
        (
            "ballast_outbox_samples_total",
            "Telemetry samples appended to the outbox.",
            g(&s.samples),
        ),
        (
            "ballast_mqtt_requests_total",
            "Requests served on the twin topics.",
            g(&s.requests),
        ),
        (
            "ballast_store_errors_total",
            "Batches the store refused.",
            g(&s.store_errors),
        ),
        (
            "ballast_reloads_total",
            "Device file reloads applied.",
            g(&s.reloads),
        ),
        (
            "ballast_mapper_starts_total",
            "Mapper tasks started (at start, for new devices, and for protocol changes).",
            g(&s.mapper_starts),
        ),
        (
            "ballast_mapper_reconfigures_total",
            "Running mappers given new properties in place by a reload.",
            g(&s.mapper_reconfigures),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP ballast_broker_clients MQTT clients connected now.\n# TYPE ballast_broker_clients gauge\nballast_broker_clients {}\n# HELP ballast_broker_connections_total MQTT connections accepted.\n# TYPE ballast_broker_connections_total counter\nballast_broker_connections_total {}\n# HELP ballast_broker_tls_handshake_failures_total TLS handshakes that failed or timed out.\n# TYPE ballast_broker_tls_handshake_failures_total counter\nballast_broker_tls_handshake_failures_total {}",
        g(&src.clients.connected),
        g(&src.clients.accepted),
        g(&src.clients.tls_failures)
    );
    // The cloud link is not built yet (issue 6 and on): the state says so rather than
    // leaving dashboards to guess from a missing series.
    let _ = writeln!(
        out,
        "# HELP ballast_cloud_link_state State of the cloud link (1 for the current state).\n# TYPE ballast_cloud_link_state gauge\nballast_cloud_link_state{{state=\"not_configured\"}} 1\nballast_cloud_link_state{{state=\"connecting\"}} 0\nballast_cloud_link_state{{state=\"up\"}} 0\nballast_cloud_link_state{{state=\"down\"}} 0"
    );
    let _ = writeln!(
        out,
        "# HELP ballast_outbox_dropped_total Outbox samples dropped at its bounds (outbox.max_age_s, max_rows, max_bytes).\n# TYPE ballast_outbox_dropped_total counter"
    );
    for (reason, c) in ["age", "rows", "bytes"].iter().zip(&s.outbox_dropped) {
        let _ = writeln!(
            out,
            "ballast_outbox_dropped_total{{reason=\"{reason}\"}} {}",
            g(c)
        );
    }
    if let Ok((rows, oldest)) = src.store.outbox_depth().await {
        let _ = writeln!(
            out,
            "# HELP ballast_outbox_depth_rows Samples waiting in the outbox.\n# TYPE ballast_outbox_depth_rows gauge\nballast_outbox_depth_rows {rows}"
        );
        let age = oldest.map_or(0.0, |ts| ((mappers::now_ms() - ts).max(0) as f64) / 1000.0);
        let _ = writeln!(
            out,
            "# HELP ballast_outbox_oldest_age_seconds Age of the first sample waiting in the outbox (by sequence).\n# TYPE ballast_outbox_oldest_age_seconds gauge\nballast_outbox_oldest_age_seconds {age}"
        );
    }
    let states = src
        .states
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let _ = writeln!(
        out,
        "# HELP ballast_device_state Device state (1 for the current one).\n# TYPE ballast_device_state gauge"
    );
    for (d, st) in &states {
        for s in ["online", "offline", "unhealthy", "unknown"] {
            let _ = writeln!(
                out,
                "ballast_device_state{{device=\"{}\",state=\"{s}\"}} {}",
                label(d),
                u8::from(*st == s)
            );
        }
    }
    let mut by_name: BTreeMap<&'static str, Vec<(String, u64)>> = BTreeMap::new();
    let mappers = src
        .mappers
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    for (d, m) in &mappers {
        for (name, v) in m.snapshot() {
            by_name.entry(name).or_default().push((d.clone(), v));
        }
    }
    for (name, rows) in by_name {
        let kind = if name.ends_with("_total") || name.starts_with("request_latency") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(out, "# TYPE ballast_mapper_{name} {kind}");
        for (d, v) in rows {
            let _ = writeln!(out, "ballast_mapper_{name}{{device=\"{}\"}} {v}", label(&d));
        }
    }
    out
}

/// Serves `/metrics` and `/healthz` until the task is dropped.
pub async fn serve(listener: TcpListener, src: Sources) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let src = src.clone();
        tokio::spawn(async move {
            let mut req = Vec::with_capacity(1024);
            let mut buf = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                true
            })
            .await;
            if !matches!(read, Ok(true)) {
                return;
            }
            let line = String::from_utf8_lossy(&req)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            let path = line.split_whitespace().nth(1).unwrap_or("");
            let (status, ctype, body) = match (line.split_whitespace().next(), path) {
                (Some("GET"), "/metrics") => {
                    ("200 OK", "text/plain; version=0.0.4", render(&src).await)
                }
                (Some("GET"), "/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
                (Some("GET"), _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
                _ => (
                    "405 Method Not Allowed",
                    "text/plain",
                    "GET only\n".to_string(),
                ),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(body.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}
