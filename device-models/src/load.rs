//! Loading YAML files (several documents each) into Device and DeviceModel objects.
//!
//! Every problem becomes a [`Diagnostic`] and loading goes on: a broken document does not hide
//! the problems of the next one, a broken file does not hide the next file. Cross-object checks
//! (models exist, properties match) are in [`crate::validate`].

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::crd::{API_VERSION, Device, DeviceModel, GROUP};
use crate::diag::{Diagnostic, Severity};
use crate::yaml::{self, Pos, PositionIndex};

/// An object with where it came from.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    /// The object.
    pub object: T,
    /// File it was read from.
    pub file: PathBuf,
    /// Where each of its fields is in that file.
    pub positions: PositionIndex,
}

impl<T> Loaded<T> {
    /// A diagnostic about the field at `path` of this object.
    pub fn diag(&self, severity: Severity, path: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity,
            file: self.file.clone(),
            pos: self.positions.value(path),
            path: path.to_string(),
            message: message.into(),
        }
    }

    /// A diagnostic about the key that names `path` (an unknown or duplicate key).
    pub fn diag_key(
        &self,
        severity: Severity,
        path: &str,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            pos: self.positions.key(path),
            ..self.diag(severity, path, message)
        }
    }
}

/// Everything read from a set of files, before cross-object validation.
#[derive(Debug, Default)]
pub struct LoadedObjects {
    /// Devices, in file order.
    pub devices: Vec<Loaded<Device>>,
    /// Models, in file order.
    pub models: Vec<Loaded<DeviceModel>>,
    /// Problems found while reading.
    pub diagnostics: Vec<Diagnostic>,
    /// Number of files read.
    pub files: usize,
}

fn file_diag(file: &Path, pos: Pos, severity: Severity, message: impl Into<String>) -> Diagnostic {
    Diagnostic {
        severity,
        file: file.to_path_buf(),
        pos,
        path: String::new(),
        message: message.into(),
    }
}

/// Loads every `*.yaml` and `*.yml` file under `path` (recursively, in name order), or the one
/// file `path` names.
pub fn load_path(path: &Path) -> LoadedObjects {
    let mut out = LoadedObjects::default();
    let mut files = Vec::new();
    if path.is_dir() {
        collect_files(path, &mut files, &mut out.diagnostics);
        if files.is_empty() {
            out.diagnostics.push(file_diag(
                path,
                Pos::default(),
                Severity::Warning,
                "no .yaml or .yml files in this directory",
            ));
        }
    } else if path.exists() {
        files.push(path.to_path_buf());
    } else {
        out.diagnostics.push(file_diag(
            path,
            Pos::default(),
            Severity::Error,
            "no such file or directory",
        ));
    }
    files.sort();
    for file in files {
        match std::fs::read(&file) {
            Err(e) => out.diagnostics.push(file_diag(
                &file,
                Pos::default(),
                Severity::Error,
                format!("cannot read: {e}"),
            )),
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => load_str(&file, &text, &mut out),
                Err(e) => {
                    let at = e.utf8_error().valid_up_to();
                    out.diagnostics.push(file_diag(
                        &file,
                        Pos::default(),
                        Severity::Error,
                        format!("not UTF-8 text (invalid byte at offset {at})"),
                    ));
                }
            },
        }
    }
    out
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>, diags: &mut Vec<Diagnostic>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            diags.push(file_diag(
                dir,
                Pos::default(),
                Severity::Error,
                format!("cannot read directory: {e}"),
            ));
            return;
        }
    };
    for entry in entries.flatten() {
        let p = entry.path();
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            collect_files(&p, files, diags);
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            files.push(p);
        }
    }
}

/// Loads the documents of one YAML text, named `file` in diagnostics. A file with a syntax error
/// contributes that error and nothing else (not the documents before it).
pub fn load_str(file: &Path, text: &str, out: &mut LoadedObjects) {
    out.files += 1;
    let mut staged = LoadedObjects::default();
    match yaml::parse_each(text, |doc| load_doc(file, doc, &mut staged)) {
        Err(e) => out.diagnostics.push(file_diag(
            file,
            e.pos,
            Severity::Error,
            format!("YAML syntax error: {}", e.message),
        )),
        Ok(()) => {
            out.devices.append(&mut staged.devices);
            out.models.append(&mut staged.models);
            out.diagnostics.append(&mut staged.diagnostics);
        }
    }
}

fn load_doc(file: &Path, doc: yaml::Document, out: &mut LoadedObjects) {
    let at = |path: &str| doc.positions.value(path);
    let api_version = doc.value.get("apiVersion").and_then(|v| v.as_str());
    let kind = doc.value.get("kind").and_then(|v| v.as_str());
    let (Some(api_version), Some(kind)) = (api_version, kind) else {
        out.diagnostics.push(file_diag(
            file,
            at(""),
            Severity::Error,
            "not a Kubernetes object: apiVersion and kind are required \
             (expected apiVersion: devices.kubeedge.io/v1beta1 with kind Device or DeviceModel)",
        ));
        return;
    };
    let name = doc
        .value
        .pointer("/metadata/name")
        .and_then(|v| v.as_str())
        .unwrap_or("?")
        .to_string();
    let group = api_version.split('/').next().unwrap_or("");
    if group != GROUP {
        out.diagnostics.push(file_diag(
            file,
            at("kind"),
            Severity::Notice,
            format!("skipped {kind} {name:?} ({api_version}): not a device object"),
        ));
        return;
    }
    if api_version != API_VERSION {
        let advice = if api_version.ends_with("/v1alpha2") {
            "v1alpha2 was replaced by v1beta1 in KubeEdge 1.15; Ballast reads only v1beta1. \
             Convert the file: set apiVersion: devices.kubeedge.io/v1beta1; in a Device, move \
             spec.protocol.modbus/common into spec.protocol.protocolName and configData, and \
             spec.propertyVisitors[] into spec.properties[].visitors; in a DeviceModel, \
             replace each property's type: {int: {accessMode: ...}} with type: INT and \
             accessMode (see docs/DEVICE-CONFIG.md, \"Migrating from v1alpha2\")"
        } else {
            "Ballast reads devices.kubeedge.io/v1beta1"
        };
        out.diagnostics.push(file_diag(
            file,
            at("apiVersion"),
            Severity::Error,
            format!("apiVersion {api_version} is not supported: {advice}"),
        ));
        return;
    }
    match kind {
        "Device" => {
            if let Some(d) = typed::<Device>(file, doc.value, &doc.positions, out) {
                out.devices.push(d);
            }
        }
        "DeviceModel" => {
            if let Some(m) = typed::<DeviceModel>(file, doc.value, &doc.positions, out) {
                out.models.push(m);
            }
        }
        other => out.diagnostics.push(file_diag(
            file,
            at("kind"),
            Severity::Notice,
            format!("skipped {other} {name:?}: only Device and DeviceModel configure the gateway"),
        )),
    }
}

fn typed<T: DeserializeOwned>(
    file: &Path,
    value: serde_json::Value,
    positions: &PositionIndex,
    out: &mut LoadedObjects,
) -> Option<Loaded<T>> {
    let mut ignored = Vec::new();
    let mut on_ignored = |p: serde_ignored::Path<'_>| ignored.push(ignored_path(&p));
    let result: Result<T, _> =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(value, &mut on_ignored));
    for path in ignored {
        // apiVersion and kind are read above; the derive skips them.
        if path == "apiVersion" || path == "kind" {
            continue;
        }
        out.diagnostics.push(Diagnostic {
            severity: Severity::Warning,
            file: file.to_path_buf(),
            pos: positions.key(&path),
            path: path.clone(),
            message: "unknown field is ignored (KubeEdge's v1beta1 schema has no such field)"
                .to_string(),
        });
    }
    match result {
        Ok(object) => Some(Loaded {
            object,
            file: file.to_path_buf(),
            positions: positions.clone(),
        }),
        Err(e) => {
            let path = error_path(e.path());
            let message = e.into_inner().to_string();
            out.diagnostics.push(Diagnostic {
                severity: Severity::Error,
                file: file.to_path_buf(),
                pos: positions.value(&path),
                path,
                message: humanize_serde(&message),
            });
            None
        }
    }
}

fn error_path(p: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for seg in p.iter() {
        match seg {
            serde_path_to_error::Segment::Seq { index } => out = yaml::join_index(&out, *index),
            serde_path_to_error::Segment::Map { key } => out = yaml::join_key(&out, key),
            serde_path_to_error::Segment::Enum { variant } => out = yaml::join_key(&out, variant),
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    out
}

fn ignored_path(p: &serde_ignored::Path<'_>) -> String {
    match p {
        serde_ignored::Path::Root => String::new(),
        serde_ignored::Path::Seq { parent, index } => {
            yaml::join_index(&ignored_path(parent), *index)
        }
        serde_ignored::Path::Map { parent, key } => yaml::join_key(&ignored_path(parent), key),
        serde_ignored::Path::Some { parent }
        | serde_ignored::Path::NewtypeStruct { parent }
        | serde_ignored::Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}

/// Makes serde's messages read as advice: `unknown variant `Int`, expected one of `INT`, ...`
/// becomes `unknown value "Int" (expected INT, ...)`.
fn humanize_serde(m: &str) -> String {
    if let Some(rest) = m.strip_prefix("unknown variant `") {
        if let Some((value, expected)) = rest.split_once("`, expected one of ") {
            return format!(
                "unknown value {value:?} (expected {})",
                expected.replace('`', "")
            );
        }
        if let Some((value, expected)) = rest.split_once("`, expected ") {
            return format!(
                "unknown value {value:?} (expected {})",
                expected.replace('`', "")
            );
        }
    }
    m.replace("i64", "an integer")
        .replace("i32", "an integer")
        .replace("a string", "text")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> LoadedObjects {
        let mut out = LoadedObjects::default();
        load_str(Path::new("t.yaml"), text, &mut out);
        out
    }

    #[test]
    fn a_syntax_error_late_in_a_file_keeps_its_earlier_documents_out() {
        // Documents are read one at a time; the file still counts as a whole.
        let out = load(
            "apiVersion: devices.kubeedge.io/v1beta1\nkind: DeviceModel\nmetadata: {name: m}\nspec: {protocol: modbus}\n---\n\
             apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata: {name: d, labels: [}\n",
        );
        assert!(out.models.is_empty() && out.devices.is_empty());
        assert_eq!(out.diagnostics.len(), 1, "{:?}", out.diagnostics);
        assert!(out.diagnostics[0].message.starts_with("YAML syntax error"));
        assert_eq!(out.diagnostics[0].pos.line, 8, "{:?}", out.diagnostics[0]);
    }

    #[test]
    fn positions_of_a_later_document_after_empty_ones() {
        let out = load(
            "---\n---\napiVersion: devices.kubeedge.io/v1beta1\nkind: DeviceModel\nmetadata: {name: m}\nspec: {protocol: modbus}\n---\n\
             apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata:\n  name: d\nspec: {deviceModelRef: {name: m}}\n",
        );
        assert_eq!(out.devices.len(), 1);
        let d = &out.devices[0];
        assert_eq!(d.positions.value("metadata.name").line, 11);
        assert_eq!(d.positions.key("spec.deviceModelRef").line, 12);
    }

    #[test]
    fn devices_and_models_from_one_file() {
        let out = load(
            "apiVersion: devices.kubeedge.io/v1beta1\nkind: DeviceModel\nmetadata: {name: m}\nspec: {protocol: modbus}\n---\n\
             apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata: {name: d}\nspec: {deviceModelRef: {name: m}}\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
        );
        assert_eq!(out.models.len(), 1);
        assert_eq!(out.devices.len(), 1);
        assert_eq!(out.diagnostics.len(), 1);
        assert_eq!(out.diagnostics[0].severity, Severity::Notice);
        assert!(out.diagnostics[0].message.contains("ConfigMap"));
    }

    #[test]
    fn v1alpha2_says_what_to_do() {
        let out =
            load("apiVersion: devices.kubeedge.io/v1alpha2\nkind: Device\nmetadata: {name: d}\n");
        let d = &out.diagnostics[0];
        assert!(d.is_error());
        assert_eq!(
            d.pos,
            Pos {
                line: 1,
                column: 13
            }
        );
        assert!(
            d.message.contains("v1alpha2") && d.message.contains("v1beta1"),
            "{d}"
        );
    }

    #[test]
    fn type_errors_are_located() {
        let out = load(
            "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata: {name: d}\nspec:\n  properties:\n    - name: p\n      collectCycle: often\n",
        );
        let d = &out.diagnostics[0];
        assert!(d.is_error());
        assert_eq!(d.path, "spec.properties[0].collectCycle");
        assert_eq!(d.pos.line, 7);
        assert!(
            d.to_string()
                .starts_with("t.yaml:7:21: spec.properties[0].collectCycle: "),
            "{d}"
        );
    }

    #[test]
    fn unknown_fields_warn_and_enum_errors_read_well() {
        let out = load(
            "apiVersion: devices.kubeedge.io/v1beta1\nkind: DeviceModel\nmetadata: {name: m}\nspec:\n  protocl: modbus\n  properties:\n    - name: p\n      type: Int\n",
        );
        assert_eq!(out.diagnostics.len(), 2, "{:?}", out.diagnostics);
        let warn = out
            .diagnostics
            .iter()
            .find(|d| d.severity == Severity::Warning)
            .unwrap();
        assert_eq!(warn.path, "spec.protocl");
        assert_eq!(warn.pos, Pos { line: 5, column: 3 });
        let err = out.diagnostics.iter().find(|d| d.is_error()).unwrap();
        assert_eq!(err.path, "spec.properties[0].type");
        assert!(
            err.message
                .starts_with("unknown value \"Int\" (expected INT, FLOAT"),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_and_non_objects() {
        let out = load("a: [1, 2\n");
        assert!(out.diagnostics[0].message.starts_with("YAML syntax error"));
        let out = load("- 1\n- 2\n");
        assert!(
            out.diagnostics[0]
                .message
                .starts_with("not a Kubernetes object")
        );
    }
}
