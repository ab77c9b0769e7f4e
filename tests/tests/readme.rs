//! The README's first screen is a promise: exactly two commands, the first runs Ballast's main
//! job, the second is the test command that CI runs. This test keeps the promise checked.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

use std::process::Command;

use ballast_tests::repo;

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

/// The demo's process group: interrupted (like Ctrl-C) and waited for when dropped.
///
/// Through killpg(2), not `kill -INT -PGID`: procps' kill reads `-12345` as the option `-1`
/// followed by digits and signals process group 1 (a pgid starting with 3 went to group 3, and
/// one starting with 1 to every process on the machine, which is how an earlier version of this
/// test interrupted CI). Checked with strace: `kill -INT -12345` makes the call kill(-1, SIGINT).
struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(pgid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGINT,
            );
        }
        let _ = self.0.wait();
    }
}

#[test]
fn readme_main_command_works() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    let cmds = readme_commands();
    // Its own process group, so that stopping it stops cargo and the gateway both.
    let mut demo = Demo(
        Command::new("sh")
            .arg("-c")
            .arg(format!("exec {}", cmds[0]))
            .current_dir(repo())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap(),
    );
    let out = demo.0.stdout.take().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let mut saw_instructions = false;
    for line in BufReader::new(out).lines() {
        let line = line.unwrap();
        saw_instructions |= line.starts_with("Watch the twins:") && line.contains("mosquitto_sub");
        // The twins update live: more than 20 readings counted.
        let readings = line
            .strip_prefix("readings ")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        if readings > 20 {
            assert!(saw_instructions, "no mosquitto_sub instructions printed");
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the demo showed no readings"
        );
    }
    panic!("the demo exited before showing live twins");
}
