//! The metrics every mapper emits, whatever its protocol: readings, errors by kind, request
//! latency, requests per poll cycle, bus utilisation. Plain atomics: the gateway exports them
//! in Prometheus format; tests read them directly.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histogram buckets, in microseconds.
pub const LATENCY_BUCKETS_US: [u64; 8] = [
    500, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000,
];

/// Counters and gauges of one mapper.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Readings emitted.
    pub readings: AtomicU64,
    /// Requests sent (Modbus requests, serial records received, MQTT messages received).
    pub requests: AtomicU64,
    /// Errors: the link timed out.
    pub errors_timeout: AtomicU64,
    /// Errors: the link failed (refused, reset, port gone, broker gone).
    pub errors_link: AtomicU64,
    /// Errors: the device refused (Modbus exception).
    pub errors_exception: AtomicU64,
    /// Errors: the answer could not be decoded (garbage, bad checksum, bad JSON).
    pub errors_decode: AtomicU64,
    /// Writes done.
    pub writes: AtomicU64,
    /// Latency histogram counts, one per bucket of [`LATENCY_BUCKETS_US`], plus overflow.
    pub latency_buckets: [AtomicU64; 9],
    /// Sum of all latencies, microseconds.
    pub latency_sum_us: AtomicU64,
    /// Requests of the last poll cycle (gauge).
    pub requests_per_cycle: AtomicU64,
    /// Time the device's bus was busy with this mapper's requests, microseconds.
    pub bus_busy_us: AtomicU64,
}

/// Kinds of errors, for [`Metrics::error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Timeout.
    Timeout,
    /// Link failure.
    Link,
    /// Device refusal.
    Exception,
    /// Undecodable answer.
    Decode,
}

impl Metrics {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` readings.
    pub fn readings(&self, n: usize) {
        Self::add(&self.readings, n as u64);
    }

    /// Counts a request and its latency.
    pub fn request(&self, latency: Duration) {
        Self::add(&self.requests, 1);
        let us = latency.as_micros() as u64;
        Self::add(&self.latency_sum_us, us);
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        Self::add(&self.latency_buckets[i], 1);
    }

    /// Counts an error.
    pub fn error(&self, kind: ErrorKind) {
        Self::add(
            match kind {
                ErrorKind::Timeout => &self.errors_timeout,
                ErrorKind::Link => &self.errors_link,
                ErrorKind::Exception => &self.errors_exception,
                ErrorKind::Decode => &self.errors_decode,
            },
            1,
        );
    }

    /// Sets the requests-per-cycle gauge.
    pub fn cycle(&self, requests: u64) {
        self.requests_per_cycle.store(requests, Ordering::Relaxed);
    }

    /// Adds bus time.
    pub fn bus(&self, busy: Duration) {
        Self::add(&self.bus_busy_us, busy.as_micros() as u64);
    }

    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// Total errors of every kind.
    pub fn errors(&self) -> u64 {
        [
            &self.errors_timeout,
            &self.errors_link,
            &self.errors_exception,
            &self.errors_decode,
        ]
        .iter()
        .map(|c| Self::get(c))
        .sum()
    }

    /// Names and values of every metric, for export (`ballast_mapper_` prefix added by the
    /// exporter). The same list for every mapper kind.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let g = Self::get;
        let mut v = vec![
            ("readings_total", g(&self.readings)),
            ("requests_total", g(&self.requests)),
            ("errors_timeout_total", g(&self.errors_timeout)),
            ("errors_link_total", g(&self.errors_link)),
            ("errors_exception_total", g(&self.errors_exception)),
            ("errors_decode_total", g(&self.errors_decode)),
            ("writes_total", g(&self.writes)),
            ("request_latency_us_sum", g(&self.latency_sum_us)),
            ("requests_per_cycle", g(&self.requests_per_cycle)),
            ("bus_busy_us_total", g(&self.bus_busy_us)),
        ];
        for (i, b) in self.latency_buckets.iter().enumerate() {
            let name = match i {
                0 => "request_latency_le_500us",
                1 => "request_latency_le_1ms",
                2 => "request_latency_le_5ms",
                3 => "request_latency_le_10ms",
                4 => "request_latency_le_50ms",
                5 => "request_latency_le_100ms",
                6 => "request_latency_le_500ms",
                7 => "request_latency_le_1s",
                _ => "request_latency_gt_1s",
            };
            v.push((name, g(b)));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_and_counters() {
        let m = Metrics::default();
        m.request(Duration::from_micros(300));
        m.request(Duration::from_millis(7));
        m.request(Duration::from_secs(3));
        m.error(ErrorKind::Decode);
        assert_eq!(Metrics::get(&m.latency_buckets[0]), 1);
        assert_eq!(Metrics::get(&m.latency_buckets[3]), 1);
        assert_eq!(Metrics::get(&m.latency_buckets[8]), 1);
        assert_eq!(m.errors(), 1);
        assert_eq!(m.snapshot().len(), 19);
    }
}
