//! `Device`: one physical device bound to a node, with its protocol and properties.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ConfigData, ProtocolConfig, TwinProperty, preserve_unknown};

/// `spec` of a KubeEdge v1beta1 Device.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "devices.kubeedge.io",
    version = "v1beta1",
    kind = "Device",
    plural = "devices",
    namespaced,
    status = "DeviceStatusOld",
    schema = "derived"
)]
#[serde(rename_all = "camelCase")]
pub struct DeviceSpec {
    /// The model this device instantiates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_model_ref: Option<DeviceModelRef>,
    /// Named groups of properties (KubeEdge "methods").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<DeviceMethod>>,
    /// The node (site) this device is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// The device's properties: how to read each one, and its desired value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Vec<DeviceProperty>>,
    /// How to reach the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<ProtocolConfig>,
    /// How often the device state is reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_report: Option<StateReport>,
}

/// Reference to a DeviceModel in the device's namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceModelRef {
    /// Name of the DeviceModel.
    #[serde(default)]
    pub name: String,
}

/// A named group of properties.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceMethod {
    /// Method name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the method does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The properties it touches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property_names: Option<Vec<String>>,
}

/// One property of a device instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceProperty {
    /// Property name; must exist in the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Desired value set by the cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<TwinProperty>,
    /// How the mapper reaches this property (register, topic, field...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visitors: Option<ProtocolConfig>,
    /// Report interval in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_cycle: Option<i64>,
    /// Poll interval in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collect_cycle: Option<i64>,
    /// Whether the value goes to the cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_to_cloud: Option<bool>,
    /// Where KubeEdge's mapper pushes the value besides the twin. Boxed: it is rare and big
    /// (580 bytes inline), and every property of every device carried it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_method: Option<Box<PushMethod>>,
}

/// Device state reporting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StateReport {
    /// Interval in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_cycle: Option<i64>,
    /// Whether the state goes to the cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_to_cloud: Option<bool>,
}

/// The Device's own `status` (KubeEdge keeps it for compatibility and moved twins to
/// DeviceStatus). Free-form; the two known fields are typed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStatusOld {
    /// Interval in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_cycle: Option<i64>,
    /// Whether the status goes to the cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_to_cloud: Option<bool>,
    /// Every other field, kept as it came.
    #[serde(flatten)]
    pub other: ConfigData,
}

impl JsonSchema for DeviceStatusOld {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DeviceStatusOld".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "properties": {
                "reportCycle": {"type": "integer", "format": "int64"},
                "reportToCloud": {"type": "boolean"}
            },
            "x-kubernetes-preserve-unknown-fields": true
        })
    }
}

/// Push targets of KubeEdge's mapper framework. Ballast keeps them so nothing is lost; its own
/// telemetry path is the outbox.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushMethod {
    /// Push over HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<PushMethodHttp>,
    /// Push over MQTT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<PushMethodMqtt>,
    /// Push to an OpenTelemetry collector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otel: Option<PushMethodOtel>,
    /// Write to a database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_method: Option<DbMethod>,
    /// Free-form anomaly detection settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub anomaly_detection: Option<ConfigData>,
}

/// HTTP push target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushMethodHttp {
    /// Host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_name: Option<String>,
    /// Port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// Request path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_path: Option<String>,
    /// Timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
}

/// MQTT push target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushMethodMqtt {
    /// Broker address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// QoS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<i32>,
    /// Retain flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retained: Option<bool>,
}

/// OpenTelemetry push target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PushMethodOtel {
    /// Exporter endpoint.
    #[serde(
        default,
        rename = "endpointURL",
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint_url: Option<String>,
}

/// Database push targets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DbMethod {
    /// InfluxDB 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub influxdb2: Option<DbInfluxdb2>,
    /// Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<DbRedis>,
    /// TDengine.
    #[serde(default, rename = "TDEngine", skip_serializing_if = "Option::is_none")]
    pub tdengine: Option<DbTdEngine>,
    /// MySQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mysql: Option<DbMysql>,
}

/// InfluxDB 2 target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DbInfluxdb2 {
    /// Client settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub influxdb2_client_config: Option<Influxdb2ClientConfig>,
    /// Data settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub influxdb2_data_config: Option<Influxdb2DataConfig>,
}

/// InfluxDB 2 client settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Influxdb2ClientConfig {
    /// Server URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Organisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// Bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
}

/// InfluxDB 2 data settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Influxdb2DataConfig {
    /// Measurement name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurement: Option<String>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<BTreeMap<String, String>>,
    /// Field key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_key: Option<String>,
}

/// Redis target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DbRedis {
    /// Client settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_client_config: Option<RedisClientConfig>,
}

/// Redis client settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisClientConfig {
    /// Server address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// Database number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<i64>,
    /// Pool size.
    #[serde(default, rename = "poolsize", skip_serializing_if = "Option::is_none")]
    pub pool_size: Option<i64>,
    /// Minimum idle connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_idle_conns: Option<i64>,
}

/// TDengine target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DbTdEngine {
    /// Client settings.
    #[serde(
        default,
        rename = "TDEngineClientConfig",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_config: Option<TdEngineClientConfig>,
}

/// TDengine client settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TdEngineClientConfig {
    /// Server address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// Database name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_name: Option<String>,
}

/// MySQL target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DbMysql {
    /// Client settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mysql_client_config: Option<MysqlClientConfig>,
}

/// MySQL client settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MysqlClientConfig {
    /// Server address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// Database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// User name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
}

impl Device {
    /// The device id used on MQTT topics and in the store: `namespace/name`. A device without a
    /// namespace is in `default`, as `kubectl apply` would put it.
    pub fn id(&self) -> String {
        format!(
            "{}/{}",
            self.metadata.namespace.as_deref().unwrap_or("default"),
            self.metadata.name.as_deref().unwrap_or("")
        )
    }

    /// The device's properties, empty when absent.
    pub fn properties(&self) -> &[DeviceProperty] {
        self.spec.properties.as_deref().unwrap_or(&[])
    }
}
