//! The README's first screen is a promise: exactly two commands, the first runs Ballast's main
//! job, the second is the test command that CI runs. This test keeps the promise checked.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The commands of the README's first code block, without comments.
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let block = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README has a ```sh block");
    block
        .lines()
        .map(|l| l.split(" # ").next().unwrap().trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn readme_has_two_commands_and_ci_runs_the_second() {
    let cmds = readme_commands();
    assert_eq!(cmds.len(), 2, "{cmds:?}");
    let ci = std::fs::read_to_string(repo().join(".ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l.trim() == cmds[1]),
        ".ci/run must call the README's test command {:?}",
        cmds[1]
    );
    assert!(repo().join(&cmds[1]).is_file(), "{} is not a file", cmds[1]);
}

#[test]
fn readme_main_command_works() {
    let cmds = readme_commands();
    let out = Command::new("sh")
        .arg("-c")
        .arg(&cmds[0])
        .current_dir(repo())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{:?} failed: {stdout}\n{}",
        cmds[0],
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.lines().last().unwrap().starts_with("ok: "),
        "{stdout}"
    );
}
