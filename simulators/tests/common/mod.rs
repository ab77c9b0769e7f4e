//! Helpers shared by the simulator tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use device_models::DeviceSet;

pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../device-models/examples/oil-platform")
}

pub fn platform() -> DeviceSet {
    simulators::load_devices(&examples()).unwrap()
}

/// Waits until `f` returns `Some`, polling, for at most `limit`.
pub async fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub use simulators::testkit::KillOnDrop;

/// Finds a third-party tool the tests need.
pub fn tool(name: &str) -> PathBuf {
    simulators::testkit::tool(name).unwrap()
}

/// Starts mosquitto on a free loopback port.
pub fn mosquitto() -> (KillOnDrop, u16) {
    simulators::testkit::mosquitto().unwrap()
}
