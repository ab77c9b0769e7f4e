//! `ballast-gateway twin get|set`: a local app of the twin topics, like any other.

use std::process::ExitCode;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::twins::{device_topic, expected_update};

fn split(broker: &str) -> Result<(String, u16), String> {
    let (h, p) = broker.rsplit_once(':').ok_or("broker must be HOST:PORT")?;
    Ok((
        h.to_string(),
        p.parse().map_err(|_| format!("{p:?} is not a port"))?,
    ))
}

/// Publishes `payload` on `topic` and prints the first message on `result` whose event id is
/// `event`; exit 1 when it is an error result or none arrives within 5 s.
async fn request(
    broker: &str,
    topic: String,
    payload: String,
    result: String,
    event: &str,
) -> ExitCode {
    let (host, port) = match split(broker) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("ballast-gateway: {e}");
            return ExitCode::from(2);
        }
    };
    let id = format!("ballast-cli-{}", std::process::id());
    let mut opts = MqttOptions::new(id, host, port);
    opts.set_keep_alive(Duration::from_secs(15));
    let (client, mut events) = AsyncClient::new(opts, 16);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut sent = false;
    loop {
        let ev = match tokio::time::timeout_at(deadline, events.poll()).await {
            Err(_) => {
                eprintln!("ballast-gateway: no answer on {result} within 5 s");
                return ExitCode::from(1);
            }
            Ok(Err(e)) => {
                eprintln!("ballast-gateway: broker {broker}: {e}");
                return ExitCode::from(1);
            }
            Ok(Ok(ev)) => ev,
        };
        match ev {
            Event::Incoming(Packet::ConnAck(_)) => {
                let _ = client.subscribe(result.clone(), QoS::AtLeastOnce).await;
            }
            Event::Incoming(Packet::SubAck(_)) if !sent => {
                sent = true;
                let _ = client
                    .publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
                    .await;
            }
            Event::Incoming(Packet::Publish(p)) => {
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) else {
                    continue;
                };
                if v["event_id"] != event {
                    continue;
                }
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                return if v.get("code").is_some() {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                };
            }
            _ => {}
        }
    }
}

/// `twin get`.
pub async fn get(device: &str, broker: &str) -> ExitCode {
    let event = format!("get-{}", mappers::now_ms());
    let body = serde_json::json!({ "event_id": event, "timestamp": mappers::now_ms() }).to_string();
    request(
        broker,
        device_topic(device, "twin/get"),
        body,
        device_topic(device, "twin/get/result"),
        &event,
    )
    .await
}

/// `twin set`.
pub async fn set(device: &str, property: &str, value: &str, broker: &str) -> ExitCode {
    let event = format!("set-{}", mappers::now_ms());
    let body = expected_update(&event, property, value, mappers::now_ms());
    request(
        broker,
        device_topic(device, "twin/update"),
        body,
        device_topic(device, "twin/update/result"),
        &event,
    )
    .await
}
