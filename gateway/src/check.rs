//! `ballast-gateway check`: validate device files and report every problem in one run.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use device_models::Severity;
use device_models::load::{LoadedObjects, load_path};
use device_models::validate::validate;

/// Loads every path into one set (a device may use a model from another path), validates it,
/// prints the diagnostics and the summary, and returns the exit code.
pub fn run(paths: &[PathBuf], deny_warnings: bool, quiet: bool) -> ExitCode {
    let mut all = LoadedObjects::default();
    for p in paths {
        let one = load_path(p);
        all.devices.extend(one.devices);
        all.models.extend(one.models);
        all.diagnostics.extend(one.diagnostics);
        all.files += one.files;
    }
    let set = validate(all);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for d in &set.diagnostics {
        if quiet && d.severity != Severity::Error {
            continue;
        }
        // A closed pipe (`check ... | head`) is not an error worth a panic.
        if writeln!(out, "{d}").is_err() {
            break;
        }
    }
    let _ = writeln!(out, "{}", set.summary());
    let failed = set.errors() > 0 || (deny_warnings && set.warnings() > 0);
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
