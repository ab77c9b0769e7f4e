//! A simulated Modbus slave: a register bank laid out by a device file, and the physics that
//! fill it.
//!
//! The register map comes from the device's `DeviceConfig` (the oil-platform example files are
//! the single source): every property's value is encoded into its registers with the same codec
//! the mappers decode with. Writes from a client land in the bank and are decoded back into the
//! property's value, which the physics then reads as an input (a choke position, a pump run
//! command).

use std::collections::BTreeMap;

use device_models::crd::PropertyType;
use device_models::protocol::modbus::{DataType, ModbusVisitor, RegisterKind};
use device_models::protocol::{DeviceProtocol, PropertyVisitor};
use device_models::{DeviceConfig, Value};
use tokio_modbus::{ExceptionCode, Request, Response};

use crate::physics::Physics;
use crate::rng::Rng;

/// One property as the simulator serves it.
#[derive(Debug, Clone)]
struct SimProperty {
    name: String,
    ty: PropertyType,
    visitor: ModbusVisitor,
}

/// The four data tables, each as long as the highest address a property uses.
#[derive(Debug, Clone, Default)]
pub struct RegisterBank {
    /// Coils.
    pub coils: Vec<bool>,
    /// Discrete inputs.
    pub discrete: Vec<bool>,
    /// Holding registers.
    pub holding: Vec<u16>,
    /// Input registers.
    pub input: Vec<u16>,
}

fn range<T>(table: &[T], addr: u16, qty: u16) -> Result<std::ops::Range<usize>, ExceptionCode> {
    let start = usize::from(addr);
    let end = start + usize::from(qty);
    if end > table.len() {
        Err(ExceptionCode::IllegalDataAddress)
    } else {
        Ok(start..end)
    }
}

/// A simulated PLC (one Modbus unit id).
#[derive(Debug)]
pub struct SimPlc {
    /// Device id `namespace/name`.
    pub id: String,
    /// Unit id.
    pub unit: u8,
    bank: RegisterBank,
    props: Vec<SimProperty>,
    /// Current value of every property, by name.
    pub values: BTreeMap<String, Value>,
    physics: Physics,
    rng: Rng,
}

impl SimPlc {
    /// Builds the simulated slave of a Modbus device; `None` for other protocols.
    pub fn new(cfg: &DeviceConfig, seed: u64) -> Option<SimPlc> {
        let DeviceProtocol::Modbus(proto) = &cfg.protocol else {
            return None;
        };
        let mut bank = RegisterBank::default();
        let mut props = Vec::new();
        for p in &cfg.properties {
            let PropertyVisitor::Modbus(v) = &p.visitor else {
                continue;
            };
            let end = v.last_address() as usize + 1;
            match v.register {
                RegisterKind::Coil => bank.coils.resize(bank.coils.len().max(end), false),
                RegisterKind::DiscreteInput => {
                    bank.discrete.resize(bank.discrete.len().max(end), false)
                }
                RegisterKind::Holding => bank.holding.resize(bank.holding.len().max(end), 0),
                RegisterKind::Input => bank.input.resize(bank.input.len().max(end), 0),
            }
            props.push(SimProperty {
                name: p.name.clone(),
                ty: p.ty,
                visitor: v.clone(),
            });
        }
        let model = cfg.model.metadata.name.clone().unwrap_or_default();
        let mut rng = Rng::new(seed ^ Rng::hash(&cfg.id));
        let mut values = BTreeMap::new();
        let physics = Physics::for_model(&model, cfg, &mut values, &mut rng);
        let mut plc = SimPlc {
            id: cfg.id.clone(),
            unit: proto.slave_id,
            bank,
            props,
            values,
            physics,
            rng,
        };
        plc.store_all();
        Some(plc)
    }

    /// Advances the physics by `dt` seconds and refreshes the registers.
    pub fn tick(&mut self, dt: f64) {
        self.physics.step(&mut self.values, &mut self.rng, dt);
        self.store_all();
    }

    /// The current registers (for tests and benchmarks).
    pub fn bank(&self) -> &RegisterBank {
        &self.bank
    }

    /// Encodes every property's value into its registers. A value that does not fit (a
    /// generic simulation out of a register's range) is clamped by the codec's error path:
    /// the registers keep their last value.
    fn store_all(&mut self) {
        for p in &self.props {
            let Some(v) = self.values.get(&p.name) else {
                continue;
            };
            store(&mut self.bank, &p.visitor, v);
        }
    }

    /// Serves one request.
    pub fn handle(&mut self, req: &Request<'_>) -> Result<Response, ExceptionCode> {
        let b = &mut self.bank;
        match req {
            Request::ReadCoils(a, q) => Ok(Response::ReadCoils(
                b.coils[range(&b.coils, *a, *q)?].to_vec(),
            )),
            Request::ReadDiscreteInputs(a, q) => Ok(Response::ReadDiscreteInputs(
                b.discrete[range(&b.discrete, *a, *q)?].to_vec(),
            )),
            Request::ReadHoldingRegisters(a, q) => Ok(Response::ReadHoldingRegisters(
                b.holding[range(&b.holding, *a, *q)?].to_vec(),
            )),
            Request::ReadInputRegisters(a, q) => Ok(Response::ReadInputRegisters(
                b.input[range(&b.input, *a, *q)?].to_vec(),
            )),
            Request::WriteSingleCoil(a, on) => {
                let r = range(&b.coils, *a, 1)?;
                b.coils[r.start] = *on;
                self.load_written(RegisterKind::Coil, *a, 1);
                Ok(Response::WriteSingleCoil(*a, *on))
            }
            Request::WriteMultipleCoils(a, bits) => {
                let r = range(&b.coils, *a, bits.len() as u16)?;
                b.coils[r].copy_from_slice(bits);
                self.load_written(RegisterKind::Coil, *a, bits.len() as u16);
                Ok(Response::WriteMultipleCoils(*a, bits.len() as u16))
            }
            Request::WriteSingleRegister(a, v) => {
                let r = range(&b.holding, *a, 1)?;
                b.holding[r.start] = *v;
                self.load_written(RegisterKind::Holding, *a, 1);
                Ok(Response::WriteSingleRegister(*a, *v))
            }
            Request::WriteMultipleRegisters(a, words) => {
                let r = range(&b.holding, *a, words.len() as u16)?;
                b.holding[r].copy_from_slice(words);
                self.load_written(RegisterKind::Holding, *a, words.len() as u16);
                Ok(Response::WriteMultipleRegisters(*a, words.len() as u16))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }

    /// After a write: decodes every property the write touched back into its value.
    fn load_written(&mut self, kind: RegisterKind, addr: u16, qty: u16) {
        let (lo, hi) = (u32::from(addr), u32::from(addr) + u32::from(qty));
        for p in &self.props {
            let v = &p.visitor;
            if v.register != kind || u32::from(v.address) >= hi || v.last_address() < lo {
                continue;
            }
            if let Some(value) = load(&self.bank, v) {
                let shown = value.to_type(p.ty).unwrap_or(value);
                self.values.insert(p.name.clone(), shown);
            }
        }
    }
}

fn store(bank: &mut RegisterBank, v: &ModbusVisitor, value: &Value) {
    let a = usize::from(v.address);
    match v.register {
        RegisterKind::Coil | RegisterKind::DiscreteInput => {
            let on = value.as_f64().is_some_and(|f| f != 0.0);
            let table = if v.register == RegisterKind::Coil {
                &mut bank.coils
            } else {
                &mut bank.discrete
            };
            if let Some(slot) = table.get_mut(a) {
                *slot = on;
            }
        }
        RegisterKind::Holding | RegisterKind::Input => {
            let table = if v.register == RegisterKind::Holding {
                &mut bank.holding
            } else {
                &mut bank.input
            };
            if let DataType::Bit(n) = v.data_type {
                if let Some(w) = table.get_mut(a) {
                    let on = value.as_f64().is_some_and(|f| f != 0.0);
                    *w = device_models::codec::set_bit(*w, n, on);
                }
                return;
            }
            if let Ok(words) = v.encode_value(value)
                && let Some(dst) = table.get_mut(a..a + words.len())
            {
                dst.copy_from_slice(&words);
            }
        }
    }
}

fn load(bank: &RegisterBank, v: &ModbusVisitor) -> Option<Value> {
    let a = usize::from(v.address);
    match v.register {
        RegisterKind::Coil => bank.coils.get(a).map(|b| Value::Bool(*b)),
        RegisterKind::DiscreteInput => bank.discrete.get(a).map(|b| Value::Bool(*b)),
        RegisterKind::Holding | RegisterKind::Input => {
            let table = if v.register == RegisterKind::Holding {
                &bank.holding
            } else {
                &bank.input
            };
            let words = table.get(a..a + usize::from(v.count()))?;
            v.decode_registers(words).ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn platform() -> Vec<DeviceConfig> {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../device-models/examples/oil-platform");
        let set = device_models::check_path(&dir);
        assert_eq!(set.errors(), 0);
        set.devices
    }

    fn plc(id: &str) -> SimPlc {
        let cfg = platform().into_iter().find(|d| d.id == id).unwrap();
        SimPlc::new(&cfg, 7).unwrap()
    }

    #[test]
    fn registers_decode_as_the_device_file_says() {
        let mut p = plc("rig7/wellhead-a07");
        let Response::ReadInputRegisters(w) = p.handle(&Request::ReadInputRegisters(0, 4)).unwrap()
        else {
            panic!()
        };
        // tubing pressure: float32 ABCD at 0; casing pressure: float32 CDAB at 2.
        let tubing = f32::from_bits(u32::from(w[0]) << 16 | u32::from(w[1]));
        let casing = f32::from_bits(u32::from(w[3]) << 16 | u32::from(w[2]));
        assert!((200.0..300.0).contains(&tubing), "{tubing}");
        assert!((20.0..80.0).contains(&casing), "{casing}");
    }

    #[test]
    fn writes_change_behaviour() {
        let mut p = plc("rig7/pump-p201");
        // Run coil on, setpoint 2400 rpm.
        p.handle(&Request::WriteSingleCoil(0, true)).unwrap();
        p.handle(&Request::WriteSingleRegister(0, 2400)).unwrap();
        for _ in 0..100 {
            p.tick(0.1);
        }
        let Response::ReadInputRegisters(w) = p.handle(&Request::ReadInputRegisters(0, 1)).unwrap()
        else {
            panic!()
        };
        assert!((2300..=2500).contains(&w[0]), "speed {}", w[0]);
        // Off: it coasts down.
        p.handle(&Request::WriteSingleCoil(0, false)).unwrap();
        for _ in 0..300 {
            p.tick(0.1);
        }
        let Response::ReadInputRegisters(w) = p.handle(&Request::ReadInputRegisters(0, 1)).unwrap()
        else {
            panic!()
        };
        assert_eq!(w[0], 0);
    }

    #[test]
    fn out_of_map_addresses_are_refused() {
        let mut p = plc("rig7/wellhead-a07");
        assert_eq!(
            p.handle(&Request::ReadHoldingRegisters(0, 100)),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            p.handle(&Request::WriteSingleCoil(5, true)),
            Err(ExceptionCode::IllegalDataAddress)
        );
    }

    #[test]
    fn same_seed_same_behaviour() {
        let run = || {
            let mut p = plc("rig7/tanks-north");
            for _ in 0..50 {
                p.tick(1.0);
            }
            p.bank().input.clone()
        };
        assert_eq!(run(), run());
    }
}
