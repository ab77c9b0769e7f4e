//! KubeEdge compatibility: the reference v1beta1 files load unchanged, lose nothing when
//! written back, and the shipped oil-platform example is valid.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

use std::path::{Path, PathBuf};

use device_models::crd::{Device, DeviceModel};
use device_models::load::{LoadedObjects, load_path, load_str};
use device_models::protocol::modbus::{DataType, ModbusTransport, RegisterKind};
use device_models::protocol::{DeviceProtocol, PropertyVisitor};
use device_models::validate::validate;
use device_models::{Severity, check_path};

fn reference_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference/kubeedge");
    assert!(
        dir.is_dir(),
        "the KubeEdge reference files are expected in {} (shared/ beside the checkout)",
        dir.display()
    );
    dir
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/oil-platform")
}

/// The YAML file as plain JSON, for comparing with what the typed structs write back.
fn as_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    let docs = device_models::yaml::parse_documents(&text).unwrap();
    assert_eq!(docs.len(), 1);
    docs.into_iter().next().unwrap().value
}

#[test]
fn v1beta1_samples_round_trip_without_loss() {
    let dir = reference_dir();
    let device_file = dir.join("v1beta1-modbus-temperature-device.yaml");
    let original = as_json(&device_file);
    let device: Device = serde_json::from_value(original.clone()).unwrap();
    assert_eq!(serde_json::to_value(&device).unwrap(), original);

    let model_file = dir.join("v1beta1-modbus-temperature-model.yaml");
    let original = as_json(&model_file);
    let model: DeviceModel = serde_json::from_value(original.clone()).unwrap();
    assert_eq!(serde_json::to_value(&model).unwrap(), original);
}

#[test]
fn every_v1beta1_field_survives_a_round_trip() {
    // A device that sets every field of KubeEdge's v1beta1 Device schema at least once.
    let text = r#"
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {name: full, namespace: ns, labels: {a: b}}
spec:
  deviceModelRef: {name: m}
  nodeName: node-1
  methods:
    - {name: Set, description: sets, propertyNames: [p]}
  protocol:
    protocolName: modbus
    configData: {communicateMode: TCP, ip: 127.0.0.1, port: "502", slaveID: 1, vendorKey: {x: 1}}
  stateReport: {reportCycle: 5000, reportToCloud: true}
  properties:
    - name: p
      desired: {value: "1", metadata: {timestamp: "1550049403598", type: integer}}
      visitors: {protocolName: modbus, configData: {register: CoilRegister, offset: 0}}
      reportCycle: 1000
      collectCycle: 1000
      reportToCloud: false
      pushMethod:
        http: {hostName: h, port: 80, requestPath: /p, timeout: 3}
        mqtt: {address: "tcp://b:1883", topic: t, qos: 1, retained: false}
        otel: {endpointURL: "http://o:4318/v1/metrics"}
        anomalyDetection: {anything: [1, 2]}
        dbMethod:
          influxdb2:
            influxdb2ClientConfig: {url: u, org: o, bucket: b}
            influxdb2DataConfig: {measurement: m, tag: {k: v}, fieldKey: f}
          redis: {redisClientConfig: {addr: a, db: 1, poolsize: 2, minIdleConns: 3}}
          TDEngine: {TDEngineClientConfig: {addr: a, dbName: d}}
          mysql: {mysqlClientConfig: {addr: a, database: d, userName: u}}
status: {reportCycle: 100, reportToCloud: true, twins: [{propertyName: p}]}
"#;
    let docs = device_models::yaml::parse_documents(text).unwrap();
    let original = docs[0].value.clone();
    let device: Device = serde_json::from_value(original.clone()).unwrap();
    assert_eq!(serde_json::to_value(&device).unwrap(), original);
    let mut out = LoadedObjects::default();
    load_str(Path::new("full.yaml"), text, &mut out);
    assert!(
        out.diagnostics
            .iter()
            .all(|d| d.severity != Severity::Warning),
        "a schema field was reported unknown: {:?}",
        out.diagnostics
    );
}

#[test]
fn v1beta1_samples_validate() {
    let dir = reference_dir();
    let mut all = LoadedObjects::default();
    for f in [
        "v1beta1-modbus-temperature-device.yaml",
        "v1beta1-modbus-temperature-model.yaml",
    ] {
        let one = load_path(&dir.join(f));
        all.devices.extend(one.devices);
        all.models.extend(one.models);
        all.diagnostics.extend(one.diagnostics);
        all.files += one.files;
    }
    let set = validate(all);
    assert_eq!(set.errors(), 0, "{:#?}", set.diagnostics);
    assert_eq!(set.devices.len(), 1);
    let d = &set.devices[0];
    assert_eq!(d.id, "default/temperature-instance");
    let DeviceProtocol::Modbus(m) = &d.protocol else {
        panic!("not modbus")
    };
    assert_eq!(
        m.transport,
        ModbusTransport::Tcp {
            host: "10.244.1.13".into(),
            port: 5502
        }
    );
    let PropertyVisitor::Modbus(t) = &d.properties[0].visitor else {
        panic!()
    };
    assert_eq!(
        (t.register, t.data_type, t.scaling.scale),
        (RegisterKind::Holding, DataType::Int16, 0.1)
    );
    let PropertyVisitor::Modbus(s) = &d.properties[1].visitor else {
        panic!()
    };
    assert_eq!(
        (s.register, s.data_type),
        (RegisterKind::Coil, DataType::Bool)
    );
    assert_eq!(d.properties[1].desired, Some(device_models::Value::Int(1)));
}

#[test]
fn v1alpha2_files_are_refused_with_advice() {
    let set = check_path(&reference_dir().join("v1alpha2-modbustcp-device-instance.yaml"));
    assert_eq!(set.errors(), 1);
    let d = &set.diagnostics[0];
    assert_eq!((d.pos.line, d.pos.column), (1, 13));
    assert!(d.message.contains("v1alpha2") && d.message.contains("spec.properties[].visitors"));
}

#[test]
fn kubeedge_crd_files_are_skipped_with_a_notice() {
    let set = check_path(&reference_dir().join("crd-devices_v1beta1_device.yaml"));
    assert_eq!(set.errors(), 0);
    assert_eq!(set.diagnostics.len(), 1);
    assert_eq!(set.diagnostics[0].severity, Severity::Notice);
}

#[test]
fn oil_platform_example_is_valid_and_complete() {
    let set = check_path(&examples_dir());
    assert!(set.diagnostics.is_empty(), "{:#?}", set.diagnostics);
    let ids: Vec<&str> = set.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "rig7/flowmeter-ft310",
            "rig7/gas-gd101",
            "rig7/pump-p201",
            "rig7/tanks-north",
            "rig7/tanks-south",
            "rig7/wellhead-a07"
        ]
    );
    // Two unit ids behind one TCP endpoint, two slaves on one RTU line.
    let endpoint = |id: &str| match &set.devices.iter().find(|d| d.id == id).unwrap().protocol {
        DeviceProtocol::Modbus(m) => (m.transport.clone(), m.slave_id),
        other => panic!("{other:?}"),
    };
    let (a, ua) = endpoint("rig7/wellhead-a07");
    let (b, ub) = endpoint("rig7/pump-p201");
    assert_eq!((a, ua != ub), (b, true));
    let (n, sn) = endpoint("rig7/tanks-north");
    let (s, ss) = endpoint("rig7/tanks-south");
    assert!(matches!(n, ModbusTransport::Rtu(_)));
    assert_eq!((n, sn, ss), (s, 3, 4));
}

#[test]
fn canonical_error_points_at_file_line_column_and_field() {
    let text = std::fs::read_to_string(examples_dir().join("wellhead.yaml"))
        .unwrap()
        .replacen(
            "register: InputRegister\n          offset: 4",
            "register: HoldReg\n          offset: 4",
            1,
        );
    let line = text.lines().position(|l| l.contains("HoldReg")).unwrap() + 1;
    let column = text.lines().nth(line - 1).unwrap().find("HoldReg").unwrap() + 1;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("wellhead.yaml"), text).unwrap();
    std::fs::copy(
        examples_dir().join("models.yaml"),
        dir.path().join("models.yaml"),
    )
    .unwrap();
    let set = check_path(dir.path());
    assert_eq!(set.errors(), 1, "{:#?}", set.diagnostics);
    assert_eq!(set.diagnostics.len(), 1, "{:#?}", set.diagnostics);
    let expected = format!(
        "{}:{line}:{column}: spec.properties[2].visitors.configData.register: unknown register type \
         \"HoldReg\" (expected CoilRegister, DiscreteInputRegister, HoldingRegister, InputRegister)",
        dir.path().join("wellhead.yaml").display()
    );
    assert_eq!(set.diagnostics[0].to_string(), expected);
}

#[test]
fn every_problem_of_a_directory_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        examples_dir().join("models.yaml"),
        dir.path().join("models.yaml"),
    )
    .unwrap();
    let bad = [
        (
            "a.yaml",
            "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata: {name: a, namespace: rig7}\nspec:\n  deviceModelRef: {name: nope}\n  protocol: {protocolName: modbus, configData: {ip: x, slaveID: 1}}\n",
        ),
        (
            "b.yaml",
            "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata: {name: b, namespace: rig7}\nspec:\n  deviceModelRef: {name: pump-skid}\n  protocol: {protocolName: modbus, configData: {ip: x, slaveID: 1}}\n  properties:\n    - name: speed\n      desired: {value: \"100\"}\n      visitors: {configData: {register: InputRegister, offset: 0}}\n    - name: warp-drive\n      visitors: {configData: {register: InputRegister, offset: 1}}\n",
        ),
        ("c.yaml", "key: [unclosed\n"),
        (
            "d.yaml",
            "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata: {name: d, namespace: rig7}\nspec:\n  deviceModelRef: {name: pump-skid}\n  protocol: {protocolName: profibus}\n",
        ),
    ];
    for (name, text) in bad {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let set = check_path(dir.path());
    let files: std::collections::BTreeSet<String> = set
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.file.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files.into_iter().collect::<Vec<_>>(),
        ["a.yaml", "b.yaml", "c.yaml", "d.yaml"]
    );
    let messages: Vec<String> = set.diagnostics.iter().map(|d| d.to_string()).collect();
    let has = |s: &str| messages.iter().any(|m| m.contains(s));
    assert!(
        has("model \"nope\" not found in namespace rig7"),
        "{messages:#?}"
    );
    assert!(has("property \"speed\" is ReadOnly"), "{messages:#?}");
    assert!(
        has("property \"warp-drive\" is not in model \"pump-skid\""),
        "{messages:#?}"
    );
    assert!(has("YAML syntax error"), "{messages:#?}");
    assert!(
        has("protocol \"profibus\" is not one Ballast runs"),
        "{messages:#?}"
    );
    assert!(set.devices.is_empty());
}

#[test]
fn crds_have_schemas() {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(Device::crd()).unwrap();
    assert_eq!(crd["spec"]["group"], "devices.kubeedge.io");
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let visitors = &schema["properties"]["spec"]["properties"]["properties"]["items"]["properties"]
        ["visitors"];
    assert_eq!(
        visitors["properties"]["configData"]["x-kubernetes-preserve-unknown-fields"],
        true
    );
    let model = serde_json::to_value(DeviceModel::crd()).unwrap();
    assert_eq!(model["spec"]["names"]["plural"], "devicemodels");
    let status = serde_json::to_value(device_models::crd::DeviceStatus::crd()).unwrap();
    assert_eq!(status["spec"]["names"]["kind"], "DeviceStatus");
}
