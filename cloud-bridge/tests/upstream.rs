//! The upstream half of the channel as stories on the simulated pair: reported values and
//! device states coalesced through an outage, telemetry drained from the outbox in order and
//! stored once, live reports ahead of a backlog, the backlog at its rate, and a node that
//! writes only its own devices.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

mod common;

use std::time::Duration;

use cloud_bridge::proto::edge::Edge;
use cloud_bridge::proto::hub::HubConfig;
use cloud_bridge::proto::msg::{EdgeMsg, Token};
use cloud_bridge::proto::upstream::UpstreamConfig;
use common::{NODE, Pair};

fn pair() -> Pair {
    Pair::new(HubConfig::default()).with_objects(NODE, 10)
}

fn speed<'a>(p: &'a Pair, dev: &str) -> Option<&'a str> {
    p.status
        .get(&(dev.to_string(), Some("speed".to_string())))
        .map(String::as_str)
}

/// Rounds and 100 ms clock steps until the outbox is empty (at most `limit` of clock time).
fn drain(p: &mut Pair, limit: Duration) {
    let mut waited = Duration::ZERO;
    p.settle();
    while !p.outbox.is_empty() {
        assert!(
            waited < limit,
            "{} samples still in the outbox",
            p.outbox.len()
        );
        p.advance(Duration::from_millis(100));
        p.settle();
        waited += Duration::from_millis(100);
    }
}

/// Reports the edge sent since its last hello.
fn reports_this_session(p: &Pair) -> usize {
    p.edge_log
        .iter()
        .rev()
        .take_while(|m| !matches!(m, EdgeMsg::Hello { .. }))
        .map(|m| match m {
            EdgeMsg::Reports { reports, .. } => reports.len(),
            _ => 0,
        })
        .sum()
}

#[test]
fn reports_wait_through_an_outage_and_only_the_newest_goes_up() {
    let mut p = pair();
    p.connect();
    p.settle();
    p.cut();
    for v in 0..1000 {
        let dev = format!("rig7/dev-{}", v % 10);
        p.edge.report(dev, Some("speed".into()), v.to_string(), v);
    }
    p.edge
        .report("rig7/dev-3".into(), None, "unhealthy".into(), 1000);
    assert_eq!(p.edge.reports_pending(), 11);
    p.connect();
    p.settle();
    for d in 0..10 {
        let want = (990 + d).to_string();
        assert_eq!(speed(&p, &format!("rig7/dev-{d}")), Some(want.as_str()));
    }
    assert_eq!(
        p.status.get(&("rig7/dev-3".to_string(), None)).unwrap(),
        "unhealthy"
    );
    assert_eq!(reports_this_session(&p), 11, "one report per key, not 1001");
    assert_eq!(p.edge.reports_pending(), 0);
}

#[test]
fn a_batch_lost_with_its_session_is_sent_again_unless_a_newer_value_came() {
    let mut p = pair();
    p.connect();
    p.settle();
    // The hub receives the batch but dies before writing it: no ack.
    p.hub_stores = false;
    p.edge
        .report("rig7/dev-1".into(), Some("speed".into()), "1".into(), 1);
    p.edge
        .report("rig7/dev-2".into(), Some("speed".into()), "1".into(), 1);
    p.settle();
    assert!(p.status.is_empty());
    p.cut();
    p.edge
        .report("rig7/dev-1".into(), Some("speed".into()), "2".into(), 2);
    p.hub_stores = true;
    p.connect();
    p.settle();
    assert_eq!(speed(&p, "rig7/dev-1"), Some("2"));
    assert_eq!(speed(&p, "rig7/dev-2"), Some("1"));
    assert_eq!(reports_this_session(&p), 2);
}

#[test]
fn telemetry_after_an_outage_is_stored_once_and_in_order_despite_a_cut() {
    let mut p = pair();
    p.append_telemetry("rig7/dev-1", 20_000);
    p.connect();
    // Part of the backlog goes up, then the link drops with samples in flight.
    for _ in 0..5 {
        p.advance(Duration::from_millis(100));
    }
    let stored_before_cut = p.sink.len();
    assert!(stored_before_cut > 0 && stored_before_cut < 20_000);
    p.cut();
    p.connect();
    drain(&mut p, Duration::from_secs(60));
    assert_eq!(p.sink.len(), 20_000);
    assert_eq!(
        p.sink.keys().copied().collect::<Vec<_>>(),
        (1..=20_000).collect::<Vec<u64>>()
    );
    assert!(p.sink.values().all(|s| s.value == format!("{}.5", s.seq)));
    // Each session sent in order: the sequence goes back once, where the second session
    // resent what the cut left unacknowledged, and only that arrived twice.
    let back = p.sink_arrivals.windows(2).filter(|w| w[1] <= w[0]).count();
    assert!(back <= 1, "{back} steps back in the arrivals");
    assert!(p.sink_duplicates <= UpstreamConfig::default().telemetry_window);
}

#[test]
fn a_hub_that_dies_before_its_sink_stores_loses_nothing() {
    let mut p = pair();
    p.append_telemetry("rig7/dev-1", 3_000);
    p.hub_stores = false;
    p.connect();
    for _ in 0..20 {
        p.advance(Duration::from_millis(100));
    }
    // Nothing was acknowledged, so the edge deleted nothing.
    assert_eq!(p.outbox.len(), 3_000);
    assert!(p.sink.is_empty());
    // A new hub (any replica): it knows nothing of the edge, the edge resends from its last ack.
    p.cut();
    p.hub_stores = true;
    p.connect();
    drain(&mut p, Duration::from_secs(30));
    assert_eq!(p.sink.len(), 3_000);
    assert_eq!(p.sink_duplicates, 0);
}

#[test]
fn live_reports_overtake_a_telemetry_backlog() {
    let mut p = pair();
    p.append_telemetry("rig7/dev-1", 50_000);
    p.connect();
    for _ in 0..3 {
        p.advance(Duration::from_millis(100));
    }
    let before = p.edge_log.len();
    p.edge
        .report("rig7/dev-5".into(), Some("speed".into()), "42".into(), 7);
    p.advance(Duration::from_millis(100));
    // In the round that carried it, the report went ahead of that round's telemetry ...
    let round = &p.edge_log[before..];
    let report = round
        .iter()
        .position(|m| matches!(m, EdgeMsg::Reports { .. }))
        .unwrap();
    let telemetry = round
        .iter()
        .position(|m| matches!(m, EdgeMsg::Telemetry { .. }))
        .expect("telemetry in the same round");
    assert!(report < telemetry);
    // ... and was written while most of the backlog still waits.
    p.step();
    assert_eq!(speed(&p, "rig7/dev-5"), Some("42"));
    assert!(
        p.outbox.len() > 40_000,
        "the report waited for the backlog: {} left",
        p.outbox.len()
    );
}

#[test]
fn the_backlog_drains_at_the_configured_rate() {
    let mut p = pair();
    p.edge = Edge::new(NODE, Token("rig7-token".into()), [], p.now).with_upstream(UpstreamConfig {
        telemetry_rate: 1_000,
        ..UpstreamConfig::default()
    });
    p.append_telemetry("rig7/dev-1", 10_000);
    p.connect();
    for _ in 0..30 {
        p.advance(Duration::from_millis(100));
    }
    // 3 s at 1,000 a second, plus one second's worth at once.
    let n = p.sink.len();
    assert!((3_000..=4_000).contains(&n), "{n} samples in 3 s");
}

#[test]
fn a_node_writes_only_its_own_devices() {
    let mut p = pair().with_objects("rig8", 2);
    p.connect();
    p.settle();
    p.edge
        .report("rig8/dev-1".into(), Some("speed".into()), "666".into(), 1);
    p.edge
        .report("rig7/dev-1".into(), Some("speed".into()), "10".into(), 1);
    p.append_telemetry("rig8/dev-0", 1);
    p.append_telemetry("rig7/dev-0", 1);
    drain(&mut p, Duration::from_secs(5));
    assert_eq!(speed(&p, "rig8/dev-1"), None);
    assert_eq!(speed(&p, "rig7/dev-1"), Some("10"));
    let devices: Vec<&str> = p.sink.values().map(|s| s.device.as_str()).collect();
    assert_eq!(devices, ["rig7/dev-0"]);
    assert_eq!(p.hub.as_ref().unwrap().stats().foreign_refused, 2);
    // Refused is still acknowledged: the edge does not resend it forever.
    assert!(p.outbox.is_empty());
}
