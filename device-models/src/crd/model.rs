//! `DeviceModel`: a template shared by devices of one kind: property names, types, access.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ConfigData, ProtocolConfig, preserve_unknown};

/// `spec` of a KubeEdge v1beta1 DeviceModel.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "devices.kubeedge.io",
    version = "v1beta1",
    kind = "DeviceModel",
    plural = "devicemodels",
    namespaced,
    schema = "derived"
)]
#[serde(rename_all = "camelCase")]
pub struct DeviceModelSpec {
    /// The properties every device of this model has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Vec<ModelProperty>>,
    /// The protocol devices of this model speak.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Free-form protocol settings shared by the model's devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub protocol_config_data: Option<ConfigData>,
}

/// One property of a model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelProperty {
    /// Property name, unique within the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the property is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Value type.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<PropertyType>,
    /// Whether the property may be written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_mode: Option<AccessMode>,
    /// Smallest allowed value, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<String>,
    /// Largest allowed value, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<String>,
    /// Unit, for instance `bar` or `degC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Protocol settings shared by every device of the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visitors: Option<ProtocolConfig>,
}

/// The value types of KubeEdge's model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PropertyType {
    /// 64-bit signed integer.
    #[serde(rename = "INT")]
    Int,
    /// Floating point (Ballast keeps 64 bits).
    #[serde(rename = "FLOAT")]
    Float,
    /// 64-bit floating point.
    #[serde(rename = "DOUBLE")]
    Double,
    /// UTF-8 text.
    #[serde(rename = "STRING")]
    String,
    /// true / false.
    #[serde(rename = "BOOLEAN")]
    Boolean,
    /// Raw bytes (base64 on the wire).
    #[serde(rename = "BYTES")]
    Bytes,
    /// A stream (camera and the like); Ballast does not poll it.
    #[serde(rename = "STREAM")]
    Stream,
}

/// Whether a property may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum AccessMode {
    /// Read and write.
    ReadWrite,
    /// Read only: a desired value is refused.
    ReadOnly,
}

impl DeviceModel {
    /// The model's properties, empty when absent.
    pub fn properties(&self) -> &[ModelProperty] {
        self.spec.properties.as_deref().unwrap_or(&[])
    }

    /// The property called `name`.
    pub fn property(&self, name: &str) -> Option<&ModelProperty> {
        self.properties()
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
    }
}
