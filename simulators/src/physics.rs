//! Physically plausible, deterministic behaviour of the simulated equipment.
//!
//! Each model of the oil-platform example has its own behaviour, chosen by model name; any other
//! model (the benchmark fleets) gets a generic random walk within the model's range. Physics
//! reads writable properties as inputs and writes the others. Time advances in fixed steps
//! (`dt` seconds), so the same seed and step count give the same plant.

use std::collections::BTreeMap;

use device_models::crd::{AccessMode, PropertyType};
use device_models::{DeviceConfig, Value};

use crate::rng::Rng;

/// Property types by name, to store values in their model's type.
type Types = BTreeMap<String, (PropertyType, AccessMode, f64, f64)>;

/// The behaviour of one device.
#[derive(Debug, Clone)]
pub enum Physics {
    /// Wellhead: pressure responds to the choke, with noise; ESD on high pressure.
    Wellhead {
        /// Property types.
        types: Types,
        /// Seconds the well has flowed.
        flowing_s: f64,
        /// Shutdown latched.
        esd: bool,
    },
    /// Pump skid: speed ramps to the setpoint when running, coasts down when not.
    Pump {
        /// Property types.
        types: Types,
        /// Shaft speed, rpm.
        speed: f64,
    },
    /// Two tanks: levels integrate inflow and outflow; high-high alarms with hysteresis.
    Tanks {
        /// Property types.
        types: Types,
        /// Levels, m.
        levels: [f64; 2],
        /// Alarm states.
        alarms: [bool; 2],
    },
    /// Random walk within each property's range.
    Generic {
        /// Property types.
        types: Types,
    },
}

/// Tank cross-section, m² (small, so that levels move visibly in a demo).
const TANK_AREA_M2: f64 = 5.0;
/// High-high alarm trips at this level by default, m (`hh-trip-level` changes it).
pub const HH_TRIP_M: f64 = 11.0;
/// And clears below this one (0.5 m under the trip level).
pub const HH_CLEAR_M: f64 = 10.5;

fn types_of(cfg: &DeviceConfig) -> Types {
    cfg.properties
        .iter()
        .map(|p| {
            let lo = p.range.0.unwrap_or(0.0);
            let hi = p.range.1.unwrap_or(lo + 100.0);
            (p.name.clone(), (p.ty, p.access, lo, hi))
        })
        .collect()
}

fn set(values: &mut BTreeMap<String, Value>, types: &Types, name: &str, x: f64) {
    let Some((ty, ..)) = types.get(name) else {
        return;
    };
    let v = match ty {
        PropertyType::Int => Value::Int(x.round() as i64),
        PropertyType::Boolean => Value::Bool(x != 0.0),
        PropertyType::String | PropertyType::Stream | PropertyType::Bytes => {
            Value::String(format!("{x}"))
        }
        PropertyType::Float | PropertyType::Double => Value::Float(x),
    };
    values.insert(name.to_string(), v);
}

fn set_text(values: &mut BTreeMap<String, Value>, types: &Types, name: &str, s: &str) {
    if types.contains_key(name) {
        values.insert(name.to_string(), Value::String(s.to_string()));
    }
}

fn get(values: &BTreeMap<String, Value>, name: &str) -> f64 {
    values.get(name).and_then(Value::as_f64).unwrap_or(0.0)
}

/// First-order approach of `x` to `target` with time constant `tau` over `dt`.
fn approach(x: f64, target: f64, tau: f64, dt: f64) -> f64 {
    x + (target - x) * (1.0 - (-dt / tau).exp())
}

impl Physics {
    /// The behaviour for a model, with initial values written into `values`.
    pub fn for_model(
        model: &str,
        cfg: &DeviceConfig,
        values: &mut BTreeMap<String, Value>,
        rng: &mut Rng,
    ) -> Physics {
        let types = types_of(cfg);
        match model {
            "wellhead-plc" => {
                set(values, &types, "choke-position", 30.0);
                set(values, &types, "tubing-pressure", 226.0);
                set(values, &types, "casing-pressure", 45.0);
                set(values, &types, "wellhead-temperature", 55.0);
                set(values, &types, "esd-active", 0.0);
                set(values, &types, "run-hours", 12_873.0);
                Physics::Wellhead {
                    types,
                    flowing_s: 12_873.0 * 3600.0,
                    esd: false,
                }
            }
            "pump-skid" => {
                set(values, &types, "pump-run", 0.0);
                set(values, &types, "speed-setpoint", 0.0);
                set(values, &types, "speed", 0.0);
                set(values, &types, "vibration", 0.4);
                set(values, &types, "motor-current", 0.0);
                set_text(values, &types, "drive-status", "STOPPED");
                Physics::Pump { types, speed: 0.0 }
            }
            "tank-farm" => {
                let levels = [4.0 + rng.unit() * 2.0, 3.0 + rng.unit() * 2.0];
                set(values, &types, "level-1", levels[0]);
                set(values, &types, "level-2", levels[1]);
                set(values, &types, "inflow", 120.0);
                set(values, &types, "transfer-valve", 0.0);
                set(values, &types, "hh-alarm-1", 0.0);
                set(values, &types, "hh-alarm-2", 0.0);
                set(values, &types, "hh-trip-level", HH_TRIP_M);
                Physics::Tanks {
                    types,
                    levels,
                    alarms: [false; 2],
                }
            }
            _ => {
                for (name, (ty, _, lo, hi)) in &types {
                    match ty {
                        PropertyType::Boolean => set(values, &types, name, 0.0),
                        PropertyType::String | PropertyType::Bytes | PropertyType::Stream => {
                            set_text(values, &types, name, "OK")
                        }
                        _ => set(values, &types, name, lo + (hi - lo) * rng.unit()),
                    }
                }
                Physics::Generic { types }
            }
        }
    }

    /// Advances by `dt` seconds.
    pub fn step(&mut self, values: &mut BTreeMap<String, Value>, rng: &mut Rng, dt: f64) {
        match self {
            Physics::Wellhead {
                types,
                flowing_s,
                esd,
            } => {
                let choke = if *esd {
                    0.0
                } else {
                    get(values, "choke-position").clamp(0.0, 100.0)
                };
                // Flowing drawdown: the more open the choke, the lower the tubing pressure.
                let target = 280.0 - 1.8 * choke;
                let p = approach(get(values, "tubing-pressure"), target, 5.0, dt)
                    + rng.noise(0.3 * dt.sqrt());
                set(values, types, "tubing-pressure", p.max(0.0));
                let casing = (get(values, "casing-pressure") + rng.noise(0.05 * dt.sqrt()))
                    .clamp(30.0, 60.0);
                set(values, types, "casing-pressure", casing);
                let t = approach(
                    get(values, "wellhead-temperature"),
                    40.0 + 0.5 * choke,
                    20.0,
                    dt,
                ) + rng.noise(0.05 * dt.sqrt());
                set(values, types, "wellhead-temperature", t);
                // ESD trips on high tubing pressure (choke nearly shut) and resets below 265 bar.
                if p > 275.0 {
                    *esd = true;
                } else if p < 265.0 {
                    *esd = false;
                }
                set(values, types, "esd-active", f64::from(u8::from(*esd)));
                if choke > 0.0 {
                    *flowing_s += dt;
                }
                set(values, types, "run-hours", (*flowing_s / 3600.0).floor());
            }
            Physics::Pump { types, speed } => {
                let run = get(values, "pump-run") != 0.0;
                let setpoint = get(values, "speed-setpoint").clamp(0.0, 3600.0);
                let before = *speed;
                if run {
                    let step = 300.0 * dt;
                    *speed += (setpoint - *speed).clamp(-step, step);
                } else {
                    *speed = (*speed - 150.0 * dt).max(0.0);
                }
                let s = *speed;
                let measured = if s > 0.0 {
                    (s + rng.noise(2.0)).max(0.0)
                } else {
                    0.0
                };
                set(values, types, "speed", measured);
                let load = s / 3000.0;
                let current = if s > 0.0 {
                    8.0 + 60.0 * load * load + rng.noise(0.2)
                } else {
                    0.0
                };
                set(values, types, "motor-current", current.max(0.0));
                set(
                    values,
                    types,
                    "vibration",
                    (0.4 + 2.5 * load + rng.noise(0.05)).max(0.0),
                );
                let status = match (run, s) {
                    (false, 0.0) => "STOPPED",
                    (false, _) => "COASTING",
                    (true, _) if (s - setpoint).abs() < 1.0 && s > 0.0 => "RUNNING",
                    (true, _) if s == before => "READY",
                    _ => "RAMPING",
                };
                set_text(values, types, "drive-status", status);
            }
            Physics::Tanks {
                types,
                levels,
                alarms,
            } => {
                let inflow =
                    (get(values, "inflow") + rng.noise(1.0 * dt.sqrt())).clamp(60.0, 180.0);
                set(values, types, "inflow", inflow);
                let transfer = if get(values, "transfer-valve") != 0.0 && levels[0] > 0.2 {
                    200.0
                } else {
                    0.0
                };
                let export = if levels[1] > 0.5 { 80.0 } else { 0.0 };
                let h = dt / 3600.0 / TANK_AREA_M2;
                levels[0] = (levels[0] + (inflow - transfer) * h).clamp(0.0, 12.0);
                levels[1] = (levels[1] + (transfer - export) * h).clamp(0.0, 12.0);
                // The trip level is a holding register an operator may change; the default
                // when the map has none is HH_TRIP_M.
                let trip = values
                    .get("hh-trip-level")
                    .and_then(Value::as_f64)
                    .unwrap_or(HH_TRIP_M);
                let clear = trip - (HH_TRIP_M - HH_CLEAR_M);
                for i in 0..2 {
                    if levels[i] >= trip {
                        alarms[i] = true;
                    } else if levels[i] < clear {
                        alarms[i] = false;
                    }
                }
                set(values, types, "level-1", levels[0]);
                set(values, types, "level-2", levels[1]);
                set(values, types, "hh-alarm-1", f64::from(u8::from(alarms[0])));
                set(values, types, "hh-alarm-2", f64::from(u8::from(alarms[1])));
            }
            Physics::Generic { types } => {
                for (name, (ty, access, lo, hi)) in types.iter() {
                    if *access == AccessMode::ReadWrite {
                        continue;
                    }
                    match ty {
                        PropertyType::Int | PropertyType::Float | PropertyType::Double => {
                            let span = hi - lo;
                            let x = (get(values, name) + rng.noise(span * 0.01)).clamp(*lo, *hi);
                            set(values, types, name, x);
                        }
                        PropertyType::Boolean if rng.below(1000) == 0 => {
                            let x = get(values, name);
                            set(values, types, name, 1.0 - x);
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn device(id: &str) -> DeviceConfig {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../device-models/examples/oil-platform");
        device_models::check_path(&dir)
            .devices
            .into_iter()
            .find(|d| d.id == id)
            .unwrap()
    }

    fn run(id: &str, setup: &[(&str, f64)], secs: usize) -> BTreeMap<String, Value> {
        let cfg = device(id);
        let mut rng = Rng::new(1);
        let mut values = BTreeMap::new();
        let model = cfg.model.metadata.name.clone().unwrap();
        let mut ph = Physics::for_model(&model, &cfg, &mut values, &mut rng);
        for (k, v) in setup {
            values.insert(k.to_string(), Value::Float(*v));
        }
        for _ in 0..secs * 10 {
            ph.step(&mut values, &mut rng, 0.1);
        }
        values
    }

    #[test]
    fn choke_moves_tubing_pressure() {
        let open = run("rig7/wellhead-a07", &[("choke-position", 80.0)], 60);
        let shut = run("rig7/wellhead-a07", &[("choke-position", 10.0)], 60);
        let p = |v: &BTreeMap<String, Value>| v["tubing-pressure"].as_f64().unwrap();
        assert!((p(&open) - 136.0).abs() < 5.0, "{}", p(&open));
        assert!((p(&shut) - 262.0).abs() < 5.0, "{}", p(&shut));
        // Fully shut: pressure builds to 280 bar and the ESD trips.
        let closed = run("rig7/wellhead-a07", &[("choke-position", 0.0)], 60);
        assert_eq!(closed["esd-active"], Value::Bool(true));
    }

    #[test]
    fn tank_alarm_trips_and_clears_with_hysteresis() {
        let cfg = device("rig7/tanks-north");
        let mut rng = Rng::new(3);
        let mut values = BTreeMap::new();
        let mut ph = Physics::for_model("tank-farm", &cfg, &mut values, &mut rng);
        let mut tripped_at = None;
        for step in 0..200_000 {
            ph.step(&mut values, &mut rng, 1.0);
            if values["hh-alarm-1"] == Value::Bool(true) {
                tripped_at = Some(step);
                break;
            }
        }
        assert!(tripped_at.is_some(), "never tripped");
        assert!(values["level-1"].as_f64().unwrap() >= HH_TRIP_M);
        // Open the transfer valve: the level falls; the alarm holds until below 10.5 m.
        values.insert("transfer-valve".into(), Value::Bool(true));
        let mut saw_hold = false;
        for _ in 0..20_000 {
            ph.step(&mut values, &mut rng, 1.0);
            let l = values["level-1"].as_f64().unwrap();
            let a = values["hh-alarm-1"] == Value::Bool(true);
            if (HH_CLEAR_M..HH_TRIP_M).contains(&l) && a {
                saw_hold = true;
            }
            if l < HH_CLEAR_M {
                assert!(!a, "alarm still on at {l}");
                break;
            }
        }
        assert!(saw_hold);
    }
}
