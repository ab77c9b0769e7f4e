//! The embedded broker's in-process link, against the real rumqttd and a real MQTT client.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

use std::time::Duration;

use gateway::broker;
use gateway::config::BrokerConfig;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::time::Instant;

/// rumqttd pauses a link that lets 200 notifications pile up and forwards nothing more until
/// the link says it is ready. Here the link is not read at all while 600 publishes are
/// accepted (every PUBACK received), so the pause is certain; then every one of them must
/// still arrive. (Before `forward_link` answered the pause, 199 arrived and then nothing: the
/// gateway stopped answering MQTT requests after a burst on a loaded machine.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_read_late_gets_every_publish() {
    const N: usize = 600;
    let cfg = BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..BrokerConfig::default()
    };
    let mut emb = broker::start(&cfg, &["late"]).unwrap();
    let (mut tx, rx) = emb.links.remove("late").unwrap();
    tx.subscribe("burst/#").unwrap();

    let mut o = MqttOptions::new("burst-pub", "127.0.0.1", emb.listen.port());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_inflight(100);
    let (client, mut el) = AsyncClient::new(o, N + 10);
    for i in 0..N {
        client
            .publish(
                format!("burst/{}", i % 7),
                QoS::AtLeastOnce,
                false,
                i.to_string(),
            )
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut acked = 0;
    while acked < N {
        let Ok(ev) = tokio::time::timeout_at(deadline, el.poll()).await else {
            panic!("{acked} of {N} publishes acknowledged");
        };
        if matches!(ev.unwrap(), Event::Incoming(Packet::PubAck(_))) {
            acked += 1;
        }
    }
    tokio::spawn(async move { while el.poll().await.is_ok() {} });

    let (req_tx, mut req_rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(broker::forward_link(rx, req_tx));
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < N {
        let Ok(Some((topic, body))) = tokio::time::timeout_at(deadline, req_rx.recv()).await else {
            panic!("{} of {N} publishes reached the link", seen.len());
        };
        assert!(topic.starts_with("burst/"), "{topic}");
        let i: usize = String::from_utf8(body).unwrap().parse().unwrap();
        assert!(seen.insert(i), "publish {i} forwarded twice");
    }
    assert_eq!(seen.len(), N);
}
