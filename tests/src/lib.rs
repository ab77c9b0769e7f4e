//! Helpers shared by the end-to-end tests in `tests/tests/`.

use std::path::{Path, PathBuf};

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A binary of the workspace (`ballast-gateway`, `ballast-sim`), built by
/// `cargo test --workspace` in the target directory of the running test.
///
/// # Panics
/// When it is not there: the message says how to build it.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join(name))
        .unwrap_or_default();
    assert!(
        bin.exists(),
        "{} not built (run the workspace tests: scripts/test.sh)",
        bin.display()
    );
    bin
}
