//! The messages of the channel and their frame codec.
//!
//! A frame is a 4-byte big-endian length and a JSON message (a `type` tag and its fields). JSON
//! because the objects it carries are JSON already and an operator can read a capture; the
//! length prefix because QUIC streams (unlike WebSocket messages) have no message boundaries.

use bytes::{Buf, BufMut, BytesMut};
use serde::{Deserialize, Serialize};

use super::digest::Digest;

/// Largest frame accepted (length prefix excluded). A Device object is a few KiB; a reported
/// batch is bounded by the window.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// A per-node credential. Never printed: its `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(pub String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token(<{} bytes, redacted>)", self.0.len())
    }
}

/// What an edge sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EdgeMsg {
    /// First message of a session.
    Hello {
        /// The node the edge says it is; must match its credentials.
        node: String,
        /// Its credential.
        token: Token,
        /// What it holds.
        digest: Digest,
    },
    /// The (key, version) pairs the edge holds in the buckets the hub asked to expand.
    Entries {
        /// The buckets expanded (an empty one has no entries).
        buckets: Vec<u8>,
        /// Key and version of every object held in those buckets.
        entries: Vec<(String, String)>,
    },
    /// Every downstream message up to `seq` is applied and committed.
    Ack {
        /// Cumulative.
        seq: u64,
    },
    /// Reported twin values and device states, the newest of each (device, property).
    Reports {
        /// Upstream batch number of this session (1, 2, …), acknowledged by `ReportsAck`.
        id: u64,
        /// The reports.
        reports: Vec<Report>,
    },
    /// Telemetry from the outbox, in sequence order.
    Telemetry {
        /// The samples.
        samples: Vec<TelemetrySample>,
    },
    /// Liveness, answered by `Pong`.
    Ping {
        /// Echoed.
        id: u64,
    },
    /// Answer to the hub's `Ping`.
    Pong {
        /// The ping's id.
        id: u64,
    },
}

/// A reported value (or a device's state) on its way to the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Device id `namespace/name`.
    pub device: String,
    /// The property; `None` for the device's state (`online`, `offline`, `unhealthy`).
    pub property: Option<String>,
    /// The value as text.
    pub value: String,
    /// When it was read, in milliseconds since the epoch.
    pub ts: i64,
}

/// One telemetry sample of the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelemetrySample {
    /// The node's outbox sequence number (never reused; the sink deduplicates by node and seq).
    pub seq: u64,
    /// Device id `namespace/name`.
    pub device: String,
    /// The property.
    pub property: String,
    /// The value as text.
    pub value: String,
    /// When it was read, in milliseconds since the epoch.
    pub ts: i64,
}

/// What the hub sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HubMsg {
    /// The hello was accepted.
    Welcome {
        /// Interval at which both ends ping, in milliseconds.
        heartbeat_ms: u64,
    },
    /// The hello was refused; the hub closes the connection after this.
    Refused {
        /// Why, for the edge's log.
        reason: String,
    },
    /// Send `Entries` for these buckets.
    Expand {
        /// Bucket numbers.
        buckets: Vec<u8>,
    },
    /// Store this object (new, or a newer version).
    Upsert {
        /// Position in this session's downstream sequence.
        seq: u64,
        /// `kind/namespace/name`.
        key: String,
        /// Opaque version (Kubernetes resourceVersion): compared for equality only.
        version: String,
        /// The object as JSON.
        body: String,
    },
    /// Forget this object.
    Delete {
        /// Position in this session's downstream sequence.
        seq: u64,
        /// `kind/namespace/name`.
        key: String,
    },
    /// Everything the edge lacked at hello has been sent; live changes follow.
    Synced {
        /// Position in this session's downstream sequence.
        seq: u64,
    },
    /// Every `Reports` batch up to `id` is written to the cluster (cumulative).
    ReportsAck {
        /// The batch.
        id: u64,
    },
    /// The sink has stored every sample up to `seq` (cumulative): the edge may delete them.
    TelemetryAck {
        /// Outbox sequence number.
        seq: u64,
    },
    /// Liveness, answered by `Pong`.
    Ping {
        /// Echoed.
        id: u64,
    },
    /// Answer to the edge's `Ping`.
    Pong {
        /// The ping's id.
        id: u64,
    },
}

/// Why bytes could not be read as a message.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The length prefix announces more than `MAX_FRAME`.
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME}")]
    TooLarge(usize),
    /// The frame is not a message of this protocol.
    #[error("malformed message: {0}")]
    Malformed(#[source] serde_json::Error),
}

/// Appends `msg` as one frame.
pub fn encode<M: Serialize>(msg: &M, out: &mut BytesMut) -> Result<(), CodecError> {
    let body = serde_json::to_vec(msg).map_err(CodecError::Malformed)?;
    if body.len() > MAX_FRAME {
        return Err(CodecError::TooLarge(body.len()));
    }
    out.reserve(4 + body.len());
    out.put_u32(body.len() as u32);
    out.put_slice(&body);
    Ok(())
}

/// Takes one message from the front of `buf`: `Ok(None)` until a whole frame is there. An
/// oversize length is refused before its bytes arrive; a malformed frame is consumed, so the
/// caller may log it and go on or close.
pub fn decode<M: for<'de> Deserialize<'de>>(buf: &mut BytesMut) -> Result<Option<M>, CodecError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_FRAME {
        return Err(CodecError::TooLarge(len));
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let frame = buf.split_to(len);
    serde_json::from_slice(&frame)
        .map(Some)
        .map_err(CodecError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upsert() -> HubMsg {
        HubMsg::Upsert {
            seq: 7,
            key: "Device/rig7/pump-p201".into(),
            version: "12345".into(),
            body: r#"{"spec":{}}"#.into(),
        }
    }

    #[test]
    fn a_frame_arriving_byte_by_byte_decodes_once() {
        let mut whole = BytesMut::new();
        encode(&upsert(), &mut whole).unwrap();
        encode(&HubMsg::Synced { seq: 8 }, &mut whole).unwrap();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in whole.iter() {
            buf.put_u8(*b);
            while let Some(m) = decode::<HubMsg>(&mut buf).unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, vec![upsert(), HubMsg::Synced { seq: 8 }]);
        assert!(buf.is_empty());
    }

    #[test]
    fn oversize_is_refused_from_its_prefix() {
        let mut buf = BytesMut::new();
        buf.put_u32((MAX_FRAME + 1) as u32);
        assert!(matches!(
            decode::<HubMsg>(&mut buf),
            Err(CodecError::TooLarge(n)) if n == MAX_FRAME + 1
        ));
    }

    #[test]
    fn garbage_is_an_error_and_is_consumed() {
        let mut buf = BytesMut::new();
        buf.put_u32(5);
        buf.put_slice(b"{nope");
        encode(&HubMsg::Synced { seq: 1 }, &mut buf).unwrap();
        assert!(matches!(
            decode::<HubMsg>(&mut buf),
            Err(CodecError::Malformed(_))
        ));
        assert_eq!(
            decode::<HubMsg>(&mut buf).unwrap(),
            Some(HubMsg::Synced { seq: 1 })
        );
        // A message of the other direction is not one of ours.
        let mut buf = BytesMut::new();
        encode(&EdgeMsg::Ack { seq: 1 }, &mut buf).unwrap();
        assert!(decode::<HubMsg>(&mut buf).is_err());
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let hello = EdgeMsg::Hello {
            node: "rig7-edge".into(),
            token: Token("s3cr3t-token".into()),
            digest: Digest::default(),
        };
        let shown = format!("{hello:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn wire_names_are_snake_case_tags() {
        let v = serde_json::to_value(EdgeMsg::Ack { seq: 3 }).unwrap();
        assert_eq!(v, serde_json::json!({"type": "ack", "seq": 3}));
    }
}
