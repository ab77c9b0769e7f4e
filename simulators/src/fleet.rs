//! Generated fleets of generic PLCs, for benchmarks at scale (500 PLCs × 30 tags and more).
//!
//! A fleet is written as ordinary KubeEdge device files and loaded through the same validator,
//! so the benchmark measures exactly what a site's files would configure.

use std::fmt::Write as _;
use std::path::Path;

use device_models::DeviceSet;

use crate::SimError;

/// Writes a model `bench-plc` of `tags` properties and `plcs` devices using it into `dir`. The
/// map per PLC: holding registers 0.. (int16, scale 0.1) for two thirds of the tags, then
/// float32 input registers, then coils. Device `i` is reached at `endpoint(i)` (host, port).
pub fn write(
    dir: &Path,
    plcs: usize,
    tags: usize,
    endpoint: impl Fn(usize) -> (String, u16),
) -> Result<(), SimError> {
    write_with_cycle(dir, plcs, tags, 100, endpoint)
}

/// [`write`] with a collect cycle of `cycle_ms` for every tag.
pub fn write_with_cycle(
    dir: &Path,
    plcs: usize,
    tags: usize,
    cycle_ms: u64,
    endpoint: impl Fn(usize) -> (String, u16),
) -> Result<(), SimError> {
    let n_int = tags * 2 / 3;
    let n_float = (tags - n_int) / 2;
    let n_coil = tags - n_int - n_float;
    let mut model = String::from(
        "apiVersion: devices.kubeedge.io/v1beta1\nkind: DeviceModel\nmetadata:\n  name: bench-plc\n  namespace: bench\nspec:\n  protocol: modbus\n  properties:\n",
    );
    let mut props = String::new();
    for t in 0..tags {
        let (ty, cfg) = if t < n_int {
            (
                "FLOAT",
                format!("register: HoldingRegister, offset: {t}, dataType: int16, scale: 0.1"),
            )
        } else if t < n_int + n_float {
            let off = (t - n_int) * 2;
            (
                "FLOAT",
                format!("register: InputRegister, offset: {off}, dataType: float32"),
            )
        } else {
            (
                "BOOLEAN",
                format!("register: CoilRegister, offset: {}", t - n_int - n_float),
            )
        };
        let _ = writeln!(
            model,
            "    - {{name: tag-{t}, type: {ty}, accessMode: ReadOnly, minimum: \"0\", maximum: \"1000\"}}"
        );
        let _ = writeln!(
            props,
            "    - name: tag-{t}\n      collectCycle: {cycle_ms}\n      visitors: {{protocolName: modbus, configData: {{{cfg}}}}}"
        );
    }
    debug_assert!(n_coil > 0 || tags < 3);
    std::fs::write(dir.join("bench-model.yaml"), model)?;
    let mut devices = String::new();
    for i in 0..plcs {
        let (host, port) = endpoint(i);
        let _ = write!(
            devices,
            "---\napiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata:\n  name: plc-{i:05}\n  namespace: bench\nspec:\n  deviceModelRef: {{name: bench-plc}}\n  protocol:\n    protocolName: modbus\n    configData: {{communicateMode: TCP, ip: \"{host}\", port: {port}, slaveID: 1}}\n  properties:\n{props}"
        );
    }
    std::fs::write(dir.join("bench-devices.yaml"), devices)?;
    Ok(())
}

/// Writes and loads a fleet.
pub fn generate(
    dir: &Path,
    plcs: usize,
    tags: usize,
    endpoint: impl Fn(usize) -> (String, u16),
) -> Result<DeviceSet, SimError> {
    write(dir, plcs, tags, endpoint)?;
    crate::load_devices(dir)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_fleet_validates() {
        let dir = tempfile::tempdir().unwrap();
        let set =
            super::generate(dir.path(), 3, 30, |i| ("127.0.0.1".into(), 5000 + i as u16)).unwrap();
        assert_eq!(set.devices.len(), 3);
        assert_eq!(set.devices[0].properties.len(), 30);
    }
}
