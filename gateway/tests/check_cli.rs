//! `ballast-gateway check` as a user runs it: the real binary, real files, exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn gateway(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ballast-gateway"))
        .args(args)
        .output()
        .expect("run ballast-gateway")
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../device-models/examples/oil-platform")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn accepts_the_shipped_examples() {
    let out = gateway(&["check", examples().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with("ok: 6 files, 6 devices (6 valid), 5 models; 0 errors"),
        "{text}"
    );
}

#[test]
fn accepts_kubeedge_v1beta1_samples_unchanged() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference/kubeedge");
    let files: Vec<String> = [
        "v1beta1-modbus-temperature-device.yaml",
        "v1beta1-modbus-temperature-model.yaml",
    ]
    .iter()
    .map(|f| dir.join(f).to_string_lossy().into_owned())
    .collect();
    let mut args = vec!["check"];
    args.extend(files.iter().map(String::as_str));
    let out = gateway(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("1 device (1 valid), 1 model; 0 errors, 0 warnings"));
}

#[test]
fn rejects_a_broken_file_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["models.yaml", "pump-skid.yaml"] {
        std::fs::copy(examples().join(f), dir.path().join(f)).unwrap();
    }
    let broken = std::fs::read_to_string(examples().join("pump-skid.yaml"))
        .unwrap()
        .replace("register: CoilRegister", "register: Coils");
    std::fs::write(dir.path().join("pump-skid.yaml"), &broken).unwrap();
    let line = broken.lines().position(|l| l.contains("Coils")).unwrap() + 1;
    let out = gateway(&["check", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let expected = format!(
        "pump-skid.yaml:{line}:21: spec.properties[0].visitors.configData.register: unknown register type \"Coils\""
    );
    assert!(text.contains(&expected), "{text}");
    assert!(
        text.lines()
            .last()
            .unwrap()
            .starts_with("invalid: 2 files, 1 device (0 valid)"),
        "{text}"
    );
}

#[test]
fn warnings_pass_unless_denied() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        examples().join("models.yaml"),
        dir.path().join("models.yaml"),
    )
    .unwrap();
    let text = std::fs::read_to_string(examples().join("wellhead.yaml"))
        .unwrap()
        .replace("collectCycle: 60000", "collectCycle: 60000000000");
    std::fs::write(dir.path().join("wellhead.yaml"), text).unwrap();
    let d = dir.path().to_str().unwrap();
    let out = gateway(&["check", d]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("warning: spec.properties[5].collectCycle: 60000000000 ms"));
    assert_eq!(
        gateway(&["check", "--deny-warnings", d]).status.code(),
        Some(1)
    );
    let quiet = gateway(&["check", "--quiet", d]);
    assert_eq!(stdout(&quiet).lines().count(), 1);
}

#[test]
fn missing_path_and_bad_usage() {
    let out = gateway(&["check", "/nonexistent/ballast"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("/nonexistent/ballast: no such file or directory"));
    assert_eq!(gateway(&["check"]).status.code(), Some(2));
    assert_eq!(gateway(&["frobnicate"]).status.code(), Some(2));
}
