//! The downstream half of the channel as stories on a simulated pair: an edge, a hub session,
//! a link that can be cut or silenced, and a clock. Every message crosses the frame codec.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use cloud_bridge::proto::CloseReason;
use cloud_bridge::proto::edge::{Edge, EdgeEvent};
use cloud_bridge::proto::hub::{HubConfig, HubEvent, Session};
use cloud_bridge::proto::msg::{EdgeMsg, HubMsg, Token};
use common::{NODE, Pair, obj};

#[test]
fn first_connect_sends_everything_the_node_owns_then_synced() {
    let mut p = Pair::new(HubConfig::default())
        .with_objects(NODE, 1000)
        .with_objects("rig8", 5);
    p.connect();
    p.settle();
    assert_eq!(p.store, p.wanted());
    assert_eq!(p.sent_this_session(), (1000, 0));
    assert!(
        p.hub_log.iter().all(|m| match m {
            HubMsg::Upsert { key, .. } => key.starts_with("Device/rig7/"),
            _ => true,
        }),
        "an object of another node was sent"
    );
    assert!(matches!(
        p.edge_events.last(),
        Some(EdgeEvent::Synced { seq: 1001 })
    ));
    assert!(p.hub_events.contains(&HubEvent::Synced));
}

#[test]
fn resume_after_outage_sends_only_changes() {
    let mut p = Pair::new(HubConfig::default()).with_objects(NODE, 10_000);
    p.connect();
    p.settle();
    p.cut();
    // During the outage: three changed, one deleted, one added.
    for i in [17, 4242, 9001] {
        p.change(NODE, &format!("Device/rig7/dev-{i}"), Some(obj("2")));
    }
    p.change(NODE, "Device/rig7/dev-5", None);
    p.change(NODE, "Device/rig7/new", Some(obj("1")));
    let before = p.edge_log.len();
    p.connect();
    p.settle();
    assert_eq!(p.store, p.wanted());
    assert_eq!(p.sent_this_session(), (4, 1));
    let hub = p.hub.as_ref().unwrap();
    assert!(hub.stats().buckets_expanded <= 5, "{:?}", hub.stats());
    // The hello is 256 buckets whatever the edge holds; the expansion names only the
    // entries of the differing buckets (about 40 each for 10,000 objects).
    let hello_and_entries: usize = p.edge_log[before..]
        .iter()
        .map(|m| serde_json::to_vec(m).unwrap().len())
        .sum();
    assert!(hello_and_entries < 64 * 1024, "{hello_and_entries} bytes");
}

#[test]
fn a_hub_restart_loses_nothing_and_resends_nothing() {
    let mut p = Pair::new(HubConfig::default()).with_objects(NODE, 300);
    p.connect();
    p.settle();
    p.cut(); // the session's state is gone with it
    p.connect();
    p.settle();
    assert_eq!(p.sent_this_session(), (0, 0));
    // The digests agree: no bucket is expanded in the second session.
    let expands = p
        .hub_log
        .iter()
        .filter(|m| matches!(m, HubMsg::Expand { .. }))
        .count();
    assert_eq!(expands, 1, "only the first session's");
    assert!(matches!(
        p.edge_events.last(),
        Some(EdgeEvent::Synced { .. })
    ));
    assert_eq!(p.store, p.wanted());
}

#[test]
fn messages_are_pipelined_within_the_window() {
    let cfg = HubConfig {
        window: 16,
        ..HubConfig::default()
    };
    let mut p = Pair::new(cfg).with_objects(NODE, 1000);
    p.connect();
    p.settle();
    assert_eq!(p.store, p.wanted());
    // Never more than the window in flight, and not stop-and-wait either.
    assert_eq!(p.max_in_flight, 16);
    // Cumulative acks: one per round, not one per object.
    let acks = p
        .edge_log
        .iter()
        .filter(|m| matches!(m, EdgeMsg::Ack { .. }))
        .count();
    assert!(acks < 100, "{acks} acks for 1001 messages");
}

#[test]
fn nothing_is_acknowledged_before_it_is_committed() {
    let mut p = Pair::new(HubConfig::default()).with_objects(NODE, 50);
    p.auto_commit = false;
    p.connect();
    p.settle();
    assert_eq!(p.store.len(), 50, "delivered");
    assert!(!p.edge_log.iter().any(|m| matches!(m, EdgeMsg::Ack { .. })));
    // The edge dies before its transaction commits: its store never got them.
    p.cut();
    p.store.clear();
    p.edge = Edge::new(NODE, Token("rig7-token".into()), [], p.now);
    p.auto_commit = true;
    p.connect();
    p.settle();
    assert_eq!(p.sent_this_session(), (50, 0), "everything is sent again");
    assert_eq!(p.store, p.wanted());
    assert_eq!(p.edge.held().len(), 50);
}

#[test]
fn changes_to_one_key_coalesce_while_the_window_is_full() {
    let cfg = HubConfig {
        window: 4,
        ..HubConfig::default()
    };
    let mut p = Pair::new(cfg).with_objects(NODE, 10);
    p.connect();
    p.settle();
    p.auto_commit = false;
    for v in 2..=101 {
        p.change(NODE, "Device/rig7/dev-3", Some(obj(v.to_string())));
        p.step();
    }
    p.auto_commit = true;
    p.commit();
    p.settle();
    assert_eq!(p.store["Device/rig7/dev-3"].0, "101");
    let sent = p
        .hub_log
        .iter()
        .filter(|m| matches!(m, HubMsg::Upsert { key, .. } if key == "Device/rig7/dev-3"))
        .count();
    // The first sync, then the window's worth, then only the newest.
    assert!(sent <= 1 + 4 + 1, "{sent} upserts of one key");
    assert!(p.hub.as_ref().unwrap().stats().coalesced >= 90);
}

#[test]
fn a_node_cannot_pose_as_another() {
    let mut p = Pair::new(HubConfig::default())
        .with_objects(NODE, 3)
        .with_objects("rig8", 3);
    // rig7's credentials, rig8's name.
    p.edge = Edge::new("rig8", Token("rig7-token".into()), [], p.now);
    p.connect();
    p.settle();
    assert!(p.store.is_empty());
    assert!(
        p.edge_events
            .iter()
            .any(|e| matches!(e, EdgeEvent::Closed(CloseReason::Refused(_))))
    );
    assert!(
        p.hub_events
            .iter()
            .any(|e| matches!(e, HubEvent::Closed(CloseReason::Refused(_))))
    );
    assert!(!p.hub_log.iter().any(|m| matches!(m, HubMsg::Upsert { .. })));
    // The refusal does not echo the credential.
    let refused = format!("{:?}", p.hub_log);
    assert!(!refused.contains("rig7-token"), "{refused}");
}

#[test]
fn a_silent_link_is_detected_within_two_heartbeats() {
    let cfg = HubConfig {
        heartbeat: Duration::from_secs(2),
        ..HubConfig::default()
    };
    let mut p = Pair::new(cfg).with_objects(NODE, 3);
    p.connect();
    p.settle();
    // Healthy: pings keep both ends up for a long time.
    for _ in 0..100 {
        p.advance(Duration::from_millis(500));
    }
    assert!(p.edge.is_live());
    assert!(!p.hub.as_ref().unwrap().is_closed());
    p.silent = true;
    let cut_at = p.now;
    let mut edge_down = None;
    let mut hub_down = None;
    for _ in 0..100 {
        p.advance(Duration::from_millis(100));
        if edge_down.is_none() && !p.edge.is_live() {
            edge_down = Some(p.now - cut_at);
        }
        if hub_down.is_none() && p.hub.as_ref().is_none_or(|h| h.is_closed()) {
            hub_down = Some(p.now - cut_at);
        }
    }
    let limit = Duration::from_secs(4);
    assert!(edge_down.is_some_and(|d| d <= limit), "edge: {edge_down:?}");
    assert!(hub_down.is_some_and(|d| d <= limit), "hub: {hub_down:?}");
    assert!(
        p.edge_events
            .contains(&EdgeEvent::Closed(CloseReason::Timeout))
    );
}

#[test]
fn an_object_moved_to_another_node_leaves_this_edge() {
    let mut p = Pair::new(HubConfig::default()).with_objects(NODE, 5);
    p.connect();
    p.settle();
    let o = p.dir.objects[NODE]["Device/rig7/dev-2"].clone();
    p.change(NODE, "Device/rig7/dev-2", None);
    p.change("rig8", "Device/rig7/dev-2", Some(o));
    p.settle();
    assert!(!p.store.contains_key("Device/rig7/dev-2"));
    assert_eq!(p.store, p.wanted());
    // And one the edge still holds from before the outage is removed at the next hello.
    p.cut();
    p.change(NODE, "Device/rig7/dev-4", None);
    p.connect();
    p.settle();
    assert_eq!(p.sent_this_session(), (0, 1));
    assert_eq!(p.store, p.wanted());
}

#[test]
fn a_garbled_or_out_of_order_message_ends_the_session_not_the_process() {
    let mut p = Pair::new(HubConfig::default()).with_objects(NODE, 5);
    p.connect();
    p.settle();
    p.edge.handle(
        HubMsg::Upsert {
            seq: 99,
            key: "Device/rig7/x".into(),
            version: "1".into(),
            body: "{}".into(),
        },
        p.now,
    );
    p.drain_edge_events();
    assert!(!p.edge.is_live());
    assert!(p.edge_events.iter().any(|e| matches!(
        e,
        EdgeEvent::Closed(CloseReason::Protocol(r)) if r.contains("Upsert")
    )));
    // The hub refuses an ack of what it never sent.
    let mut h = Session::new(HubConfig::default(), p.now);
    h.handle(
        EdgeMsg::Hello {
            node: NODE.into(),
            token: Token("rig7-token".into()),
            digest: Default::default(),
        },
        p.now,
        &p.dir,
    );
    h.handle(EdgeMsg::Ack { seq: 1_000_000 }, p.now, &p.dir);
    let mut closed = false;
    while let Some(e) = h.poll_event() {
        closed |= matches!(e, HubEvent::Closed(CloseReason::Protocol(_)));
    }
    assert!(closed);
}

mod random {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Change(u8, u8),
        Delete(u8),
        Step,
        Cut,
        Connect,
        Commit,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..40, any::<u8>()).prop_map(|(k, v)| Op::Change(k, v)),
            1 => (0u8..40).prop_map(Op::Delete),
            4 => Just(Op::Step),
            1 => Just(Op::Cut),
            1 => Just(Op::Connect),
            2 => Just(Op::Commit),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Whatever happens on the way (changes at any moment, cuts, reconnects, late
        /// commits), once the link stays up the edge holds exactly what the hub has for it.
        #[test]
        fn the_edge_converges_to_the_hub(ops in proptest::collection::vec(op(), 1..120), window in 1usize..8) {
            let cfg = HubConfig { window, ..HubConfig::default() };
            let mut p = Pair::new(cfg).with_objects(NODE, 20);
            p.auto_commit = false;
            p.connect();
            for o in ops {
                match o {
                    Op::Change(k, v) => p.change(NODE, &format!("Device/rig7/dev-{k}"), Some(obj(v.to_string()))),
                    Op::Delete(k) => p.change(NODE, &format!("Device/rig7/dev-{k}"), None),
                    Op::Step => { p.step(); }
                    Op::Cut => p.cut(),
                    Op::Connect => { if !p.edge.is_live() { p.cut(); p.connect(); } }
                    Op::Commit => p.commit(),
                }
            }
            // The edge's store holds what it committed; uncommitted work is lost with a cut.
            p.cut();
            p.store = p.edge.held().keys().map(|k| (k.clone(), p.store.get(k).cloned().unwrap_or_default())).collect();
            p.auto_commit = true;
            p.connect();
            p.settle();
            let held: BTreeMap<String, String> = p.wanted().into_iter().map(|(k, (v, _))| (k, v)).collect();
            prop_assert_eq!(p.edge.held(), &held);
            prop_assert_eq!(p.store.keys().collect::<Vec<_>>(), held.keys().collect::<Vec<_>>());
        }
    }
}
