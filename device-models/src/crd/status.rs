//! `DeviceStatus`: the twins (reported and observed desired values) and state of a device,
//! written by the edge side. It shares its name with the Device it describes.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ConfigData, TwinProperty, preserve_unknown};

/// `spec` of a DeviceStatus: empty in KubeEdge's schema.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "devices.kubeedge.io",
    version = "v1beta1",
    kind = "DeviceStatus",
    plural = "devicestatuses",
    namespaced,
    status = "DeviceStatusReport",
    schema = "derived"
)]
pub struct DeviceStatusSpec {}

/// `status` of a DeviceStatus.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStatusReport {
    /// One entry per twin property.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twins: Option<Vec<Twin>>,
    /// Device state: `online`, `offline`, `unhealthy` (or `unknown`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// When the device was last online (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_online_time: Option<String>,
    /// Free-form extensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub extensions: Option<ConfigData>,
}

/// A twin in DeviceStatus.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Twin {
    /// Property name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property_name: Option<String>,
    /// Last value read from the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<TwinProperty>,
    /// The desired value the edge has seen and applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_desired: Option<TwinProperty>,
}
