//! The `devices.kubeedge.io/v1beta1` resources as Rust types.
//!
//! Device, DeviceModel and DeviceStatus derive kube's `CustomResource`, so the hub can watch and
//! patch them with kube-rs, and `Device::crd()` gives a CRD with a schema. Every field of
//! KubeEdge's v1beta1 schema is a typed field here; the parts KubeEdge leaves free-form
//! (`configData`, `protocolConfigData`, `anomalyDetection`, the old Device status) are kept as
//! JSON, so a file read and written back loses nothing. Every field is optional, as in KubeEdge's
//! schema: absence is kept apart from an empty value, and validation (`crate::validate`) decides
//! what is required.

mod device;
mod model;
mod status;

pub use device::*;
pub use model::*;
pub use status::*;

/// The API group of every resource here.
pub const GROUP: &str = "devices.kubeedge.io";
/// The API version this crate reads and writes.
pub const VERSION: &str = "v1beta1";
/// `apiVersion` of the resources this crate reads and writes.
pub const API_VERSION: &str = "devices.kubeedge.io/v1beta1";

/// A free-form JSON object (KubeEdge's `x-kubernetes-preserve-unknown-fields`).
pub type ConfigData = serde_json::Map<String, serde_json::Value>;

/// Schema of a free-form object whose unknown fields the API server must keep.
pub(crate) fn preserve_unknown(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Protocol-specific configuration: which protocol, and its free-form settings.
///
/// Used for `Device.spec.protocol`, for each property's `visitors`, and for a model property's
/// `visitors`.
#[derive(
    Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolConfig {
    /// Protocol name, for instance `modbus`, `serial`, `mqtt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_name: Option<String>,
    /// Free-form settings of that protocol; parsed by `crate::protocol`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub config_data: Option<ConfigData>,
}

impl ProtocolConfig {
    /// The protocol name, empty when absent.
    pub fn name(&self) -> &str {
        self.protocol_name.as_deref().unwrap_or("")
    }
}

/// A twin value with its metadata (`desired`, `reported`, `observedDesired`).
#[derive(
    Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct TwinProperty {
    /// The value, as text (KubeEdge keeps every twin value as a string).
    pub value: String,
    /// Metadata such as `timestamp` (ms) and `type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
}
