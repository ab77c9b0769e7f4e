//! KubeEdge's device MQTT payloads, with its exact JSON field names.
//!
//! Topics (device id `namespace/name`):
//! - `$hw/events/device/{ns}/{name}/twin/update` (in): [`TwinUpdate`], `expected` sets the
//!   desired value, `actual` reports a value (external mapper);
//! - `.../twin/update/result`: [`TwinResult`], or [`ErrorResult`] with `code` and `reason`;
//! - `.../twin/update/delta`: [`TwinDelta`];
//! - `.../twin/update/document`: [`TwinDocument`] (`last` and `current` per property);
//! - `.../twin/get` (in): [`BaseMessage`]; `.../twin/get/result`: [`TwinResult`];
//! - `.../state/update` (in): [`DeviceStateUpdate`];
//! - `$hw/events/node/{node}/membership/get` (in) and `/result`: [`MembershipDetail`];
//! - `$ke/events/device/{ns}/{name}/data/update`: [`DeviceData`] (telemetry).
//!
//! Values are text of any UTF-8 up to [`crate::value::MAX_VALUE_BYTES`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::twin::{PropertyTwin, TwinVersion};
use crate::value::MAX_VALUE_BYTES;

/// Largest payload accepted on a twin topic (1 MiB).
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// Fields every message has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseMessage {
    /// Correlates a request and its result.
    #[serde(default)]
    pub event_id: String,
    /// Milliseconds since the Unix epoch.
    #[serde(default)]
    pub timestamp: i64,
}

/// A value with its timestamp.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwinValueMsg {
    /// The value as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// When it was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ValueMetadata>,
}

/// Value metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueMetadata {
    /// Milliseconds since the Unix epoch.
    #[serde(default)]
    pub timestamp: i64,
}

/// Type metadata of a twin (`{"type": "Updated"}` in KubeEdge's messages, or the value type).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeMetadata {
    /// The type text.
    #[serde(rename = "type", default)]
    pub type_: String,
}

/// One property's twin in a message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsgTwin {
    /// Desired value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<TwinValueMsg>,
    /// Reported value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual: Option<TwinValueMsg>,
    /// Whether the property is optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    /// Type metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TypeMetadata>,
    /// Version of the desired value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<TwinVersion>,
    /// Version of the reported value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_version: Option<TwinVersion>,
}

/// `twin/update` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwinUpdate {
    /// Event id and timestamp.
    #[serde(flatten)]
    pub base: BaseMessage,
    /// Properties to update.
    #[serde(default)]
    pub twin: BTreeMap<String, MsgTwin>,
}

/// `twin/update/result` and `twin/get/result`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwinResult {
    /// Event id of the request, and when the result was made.
    #[serde(flatten)]
    pub base: BaseMessage,
    /// The twins.
    pub twin: BTreeMap<String, MsgTwin>,
}

/// `twin/update/delta`: desired values not yet reported back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwinDelta {
    /// Event id and timestamp.
    #[serde(flatten)]
    pub base: BaseMessage,
    /// The full twins.
    pub twin: BTreeMap<String, MsgTwin>,
    /// Property name to desired value, for the properties that differ.
    pub delta: BTreeMap<String, String>,
}

/// A property's twin before and after an update.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwinDoc {
    /// Before.
    #[serde(default)]
    pub last: Option<MsgTwin>,
    /// After.
    #[serde(default)]
    pub current: Option<MsgTwin>,
}

/// `twin/update/document`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwinDocument {
    /// Event id and timestamp.
    #[serde(flatten)]
    pub base: BaseMessage,
    /// Per property, before and after.
    pub twin: BTreeMap<String, TwinDoc>,
}

/// An error answer on a result topic: the request changed nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResult {
    /// Event id of the request (empty when it could not be read).
    #[serde(flatten)]
    pub base: BaseMessage,
    /// HTTP-like code: 400 bad request, 404 unknown device or property, 409 refused (read-only),
    /// 413 too large, 500 internal.
    pub code: u16,
    /// What was wrong, for a person.
    pub reason: String,
}

/// `state/update` request from an external mapper.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStateUpdate {
    /// Event id and timestamp.
    #[serde(flatten)]
    pub base: BaseMessage,
    /// `online`, `offline`, `unhealthy` or `unknown`.
    pub state: String,
}

/// The device states KubeEdge accepts.
pub const DEVICE_STATES: [&str; 4] = ["online", "offline", "unhealthy", "unknown"];

/// A device in a membership result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipDevice {
    /// Device id `namespace/name`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Device name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// State.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// Last time online.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_online: String,
    /// Twins.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub twin: BTreeMap<String, MsgTwin>,
}

/// `membership/get/result`: the devices bound to this node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipDetail {
    /// Event id and timestamp.
    #[serde(flatten)]
    pub base: BaseMessage,
    /// The devices.
    pub devices: Vec<MembershipDevice>,
}

/// One telemetry sample of a property.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataValue {
    /// The value as text.
    pub value: String,
    /// Timestamp and type.
    pub metadata: DataMetadata,
}

/// Telemetry metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataMetadata {
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Value type (`int`, `float`, ...).
    #[serde(rename = "type")]
    pub type_: String,
}

/// `$ke/events/device/{ns}/{name}/data/update`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceData {
    /// Event id and timestamp.
    #[serde(flatten)]
    pub base: BaseMessage,
    /// Property name to sample.
    pub data: BTreeMap<String, DataValue>,
}

/// Why an incoming payload was refused. Maps to an [`ErrorResult`] with [`PayloadError::code`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PayloadError {
    /// Larger than [`MAX_PAYLOAD_BYTES`].
    #[error("payload is {0} bytes, more than {MAX_PAYLOAD_BYTES}")]
    TooLarge(usize),
    /// Not the JSON the topic takes.
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// A value longer than [`MAX_VALUE_BYTES`].
    #[error("value of {property:?} is {len} bytes, more than {MAX_VALUE_BYTES}")]
    ValueTooLong {
        /// Property.
        property: String,
        /// Length in bytes.
        len: usize,
    },
    /// A twin entry with neither `expected` nor `actual` value.
    #[error("twin {0:?} has neither expected.value nor actual.value")]
    Empty(String),
}

impl PayloadError {
    /// The result code for this error.
    pub fn code(&self) -> u16 {
        match self {
            PayloadError::TooLarge(_) | PayloadError::ValueTooLong { .. } => 413,
            PayloadError::Malformed(_) | PayloadError::Empty(_) => 400,
        }
    }
}

/// Reads a `twin/update` payload, refusing what cannot be applied as a whole.
pub fn parse_twin_update(payload: &[u8]) -> Result<TwinUpdate, PayloadError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(PayloadError::TooLarge(payload.len()));
    }
    let update: TwinUpdate =
        serde_json::from_slice(payload).map_err(|e| PayloadError::Malformed(e.to_string()))?;
    for (name, t) in &update.twin {
        let values = [&t.expected, &t.actual];
        let mut any = false;
        for v in values.into_iter().flatten() {
            if let Some(text) = &v.value {
                any = true;
                if text.len() > MAX_VALUE_BYTES {
                    return Err(PayloadError::ValueTooLong {
                        property: name.clone(),
                        len: text.len(),
                    });
                }
            }
        }
        if !any {
            return Err(PayloadError::Empty(name.clone()));
        }
    }
    Ok(update)
}

/// Reads the event id of a request whose body may be empty (`twin/get`, `membership/get`).
pub fn parse_request(payload: &[u8]) -> Result<BaseMessage, PayloadError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(PayloadError::TooLarge(payload.len()));
    }
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(BaseMessage::default());
    }
    serde_json::from_slice(payload).map_err(|e| PayloadError::Malformed(e.to_string()))
}

impl MsgTwin {
    /// The message form of a stored twin.
    pub fn from_twin(t: &PropertyTwin) -> MsgTwin {
        let msg = |v: &crate::twin::TwinValue| TwinValueMsg {
            value: Some(v.value.clone()),
            metadata: Some(ValueMetadata {
                timestamp: v.timestamp_ms,
            }),
        };
        MsgTwin {
            expected: t.desired.as_ref().map(msg),
            actual: t.reported.as_ref().map(msg),
            optional: None,
            metadata: Some(TypeMetadata {
                type_: type_name(t.ty).to_string(),
            }),
            expected_version: t.desired.as_ref().map(|v| v.version),
            actual_version: t.reported.as_ref().map(|v| v.version),
        }
    }
}

/// KubeEdge's lower-case type names in twin metadata.
pub fn type_name(ty: crate::crd::PropertyType) -> &'static str {
    use crate::crd::PropertyType::*;
    match ty {
        Int => "int",
        Float => "float",
        Double => "double",
        String => "string",
        Boolean => "boolean",
        Bytes => "bytes",
        Stream => "stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::PropertyType;
    use crate::twin::TwinValue;
    use serde_json::json;

    #[test]
    fn reads_kubeedge_twin_update_with_expected() {
        // The shape KubeEdge's docs use to set a desired value from an edge app.
        let p = br#"{"event_id":"123","timestamp":1550049403598,
            "twin":{"choke-position":{"expected":{"value":"42"},"metadata":{"type":"Updated"}}}}"#;
        let u = parse_twin_update(p).unwrap();
        assert_eq!(u.base.event_id, "123");
        assert_eq!(u.base.timestamp, 1550049403598);
        let t = &u.twin["choke-position"];
        assert_eq!(t.expected.as_ref().unwrap().value.as_deref(), Some("42"));
        assert_eq!(t.metadata.as_ref().unwrap().type_, "Updated");
    }

    #[test]
    fn reads_actual_from_an_external_mapper() {
        let p = br#"{"event_id":"","timestamp":0,"twin":{"temperature":{"actual":{"value":"21.5","metadata":{"timestamp":17}}}}}"#;
        let u = parse_twin_update(p).unwrap();
        let a = u.twin["temperature"].actual.as_ref().unwrap();
        assert_eq!(a.value.as_deref(), Some("21.5"));
        assert_eq!(a.metadata.as_ref().unwrap().timestamp, 17);
    }

    #[test]
    fn refuses_malformed_and_empty_updates() {
        assert_eq!(parse_twin_update(b"{not json").unwrap_err().code(), 400);
        assert_eq!(
            parse_twin_update(br#"{"twin":{"x":{}}}"#),
            Err(PayloadError::Empty("x".into()))
        );
        assert_eq!(
            parse_twin_update(br#"{"twin":"x"}"#).unwrap_err().code(),
            400
        );
        let big = format!(
            r#"{{"twin":{{"x":{{"expected":{{"value":"{}"}}}}}}}}"#,
            "a".repeat(MAX_VALUE_BYTES + 1)
        );
        assert_eq!(parse_twin_update(big.as_bytes()).unwrap_err().code(), 413);
        // Any UTF-8, quotes and braces included, is a valid value.
        let odd = r#"{"twin":{"label":{"expected":{"value":"Ölpumpe \"B\" {7} 油"}}}}"#;
        assert!(parse_twin_update(odd.as_bytes()).is_ok());
        assert_eq!(parse_request(b"").unwrap(), BaseMessage::default());
        assert_eq!(
            parse_request(br#"{"event_id":"e1"}"#).unwrap().event_id,
            "e1"
        );
    }

    #[test]
    fn writes_kubeedge_field_names() {
        let twin = PropertyTwin {
            ty: PropertyType::Float,
            desired: Some(TwinValue {
                value: "60".into(),
                version: TwinVersion { cloud: 4, edge: 1 },
                timestamp_ms: 10,
            }),
            reported: Some(TwinValue {
                value: "59.5".into(),
                version: TwinVersion { cloud: 0, edge: 7 },
                timestamp_ms: 11,
            }),
        };
        let msg = TwinDelta {
            base: BaseMessage {
                event_id: "e".into(),
                timestamp: 12,
            },
            twin: BTreeMap::from([("speed".to_string(), MsgTwin::from_twin(&twin))]),
            delta: BTreeMap::from([("speed".to_string(), "60".to_string())]),
        };
        assert_eq!(
            serde_json::to_value(&msg).unwrap(),
            json!({
                "event_id": "e", "timestamp": 12,
                "twin": {"speed": {
                    "expected": {"value": "60", "metadata": {"timestamp": 10}},
                    "actual": {"value": "59.5", "metadata": {"timestamp": 11}},
                    "metadata": {"type": "float"},
                    "expected_version": {"cloud": 4, "edge": 1},
                    "actual_version": {"cloud": 0, "edge": 7}
                }},
                "delta": {"speed": "60"}
            })
        );
        let err = ErrorResult {
            base: BaseMessage {
                event_id: "e".into(),
                timestamp: 1,
            },
            code: 404,
            reason: "no device".into(),
        };
        assert_eq!(
            serde_json::to_value(&err).unwrap(),
            json!({"event_id":"e","timestamp":1,"code":404,"reason":"no device"})
        );
        let data = DeviceData {
            base: BaseMessage::default(),
            data: BTreeMap::from([(
                "speed".to_string(),
                DataValue {
                    value: "1".into(),
                    metadata: DataMetadata {
                        timestamp: 5,
                        type_: "float".into(),
                    },
                },
            )]),
        };
        assert_eq!(
            serde_json::to_value(&data).unwrap()["data"]["speed"]["metadata"]["type"],
            "float"
        );
        let doc = TwinDocument {
            base: BaseMessage::default(),
            twin: BTreeMap::from([(
                "s".to_string(),
                TwinDoc {
                    last: None,
                    current: Some(MsgTwin::default()),
                },
            )]),
        };
        let v = serde_json::to_value(&doc).unwrap();
        assert!(v["twin"]["s"]["last"].is_null() && v["twin"]["s"]["current"].is_object());
        let m = MembershipDetail {
            base: BaseMessage::default(),
            devices: vec![MembershipDevice {
                id: "ns/a".into(),
                name: "a".into(),
                state: "online".into(),
                ..Default::default()
            }],
        };
        assert_eq!(
            serde_json::to_value(&m).unwrap()["devices"][0],
            json!({"id":"ns/a","name":"a","state":"online"})
        );
    }
}
