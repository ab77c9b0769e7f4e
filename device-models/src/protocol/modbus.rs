//! Modbus settings, parsed from KubeEdge's `configData` keys plus Ballast's extensions.
//!
//! Device `spec.protocol.configData` (protocol `modbus`): KubeEdge's `slaveID`,
//! `communicateMode` (`TCP`/`RTU`), `ip`, `port` (text or number), `timeout` (ms),
//! `serialName`, `baudRate`, `dataBits`, `stopBits`, `parity`, `rs485Enabled`; Ballast's
//! `maxReadRegisters`, `maxReadBits`, `maxGap`.
//!
//! Property `visitors.configData`: KubeEdge's `register`, `offset`, `limit`, `scale`, `isSwap`,
//! `isRegisterSwap`, `dataType`; Ballast's explicit data types, `byteOrder`, `bit`,
//! `valueOffset`, `deadband`, `pollGroup`. See `docs/DEVICE-CONFIG.md` for the full table.

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};

use super::fields::{FieldIssue, Fields};
use super::{Scaling, SerialSettings, parse_scaling, parse_serial_settings};

/// Keys found in KubeEdge's samples that no Modbus mapper reads (`max`, `min` of the
/// temperature demo); accepted silently.
const TOLERATED_VISITOR_KEYS: &[&str] = &["max", "min"];

/// How a Modbus device is reached.
#[derive(Debug, Clone, PartialEq)]
pub enum ModbusTransport {
    /// Modbus TCP.
    Tcp {
        /// Host name or IP address.
        host: String,
        /// TCP port (default 502).
        port: u16,
    },
    /// Modbus RTU on a serial line.
    Rtu(SerialSettings),
}

/// Limits of one read request; lowered for devices that refuse long reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Most registers in one read (1..=125, default 125).
    pub max_registers: u16,
    /// Most coils or discrete inputs in one read (1..=2000, default 2000).
    pub max_bits: u16,
    /// Largest hole of unused registers (or bits) a merged read may span (default 125 on TCP,
    /// 10 on RTU).
    pub max_gap: u16,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            max_registers: 125,
            max_bits: 2000,
            max_gap: 10,
        }
    }
}

/// Device-level Modbus settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ModbusProtocol {
    /// Unit id: 0..=255 on TCP, 1..=247 on RTU.
    pub slave_id: u8,
    /// TCP endpoint or serial line.
    pub transport: ModbusTransport,
    /// Per-request timeout (default 1 s).
    pub timeout: Duration,
    /// Read request limits.
    pub limits: ReadLimits,
}

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RegisterKind {
    /// Read-write bits (function codes 1, 5, 15).
    Coil,
    /// Read-only bits (function code 2).
    DiscreteInput,
    /// Read-write 16-bit registers (function codes 3, 6, 16).
    Holding,
    /// Read-only 16-bit registers (function code 4).
    Input,
}

impl RegisterKind {
    /// KubeEdge's spellings, in the order of the enum.
    pub const NAMES: [&'static str; 4] = [
        "CoilRegister",
        "DiscreteInputRegister",
        "HoldingRegister",
        "InputRegister",
    ];

    /// Whether the table holds bits rather than 16-bit words.
    pub fn is_bits(self) -> bool {
        matches!(self, RegisterKind::Coil | RegisterKind::DiscreteInput)
    }

    /// Whether the Modbus protocol allows writing this table.
    pub fn is_writable(self) -> bool {
        matches!(self, RegisterKind::Coil | RegisterKind::Holding)
    }

    /// KubeEdge's name of the table.
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

impl fmt::Display for RegisterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a property's registers encode its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// A coil or discrete input; in a register, non-zero is true.
    Bool,
    /// One bit (0 = least significant) of a 16-bit register.
    Bit(u8),
    /// Signed 16-bit, one register.
    Int16,
    /// Unsigned 16-bit, one register.
    Uint16,
    /// Signed 32-bit, two registers.
    Int32,
    /// Unsigned 32-bit, two registers.
    Uint32,
    /// Signed 64-bit, four registers.
    Int64,
    /// Unsigned 64-bit, four registers.
    Uint64,
    /// IEEE 754 single, two registers.
    Float32,
    /// IEEE 754 double, four registers.
    Float64,
    /// Text of N registers (2 bytes each, high byte first), NUL-padded.
    String(u16),
    /// Raw bytes of N registers.
    Bytes(u16),
}

impl DataType {
    /// How many registers (or bits, for bit tables) the value spans.
    pub fn registers(self) -> u16 {
        match self {
            DataType::Bool | DataType::Bit(_) | DataType::Int16 | DataType::Uint16 => 1,
            DataType::Int32 | DataType::Uint32 | DataType::Float32 => 2,
            DataType::Int64 | DataType::Uint64 | DataType::Float64 => 4,
            DataType::String(n) | DataType::Bytes(n) => n,
        }
    }

    /// Whether scale and value offset apply.
    pub fn is_numeric(self) -> bool {
        !matches!(
            self,
            DataType::Bool | DataType::Bit(_) | DataType::String(_) | DataType::Bytes(_)
        )
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataType::Bool => f.write_str("bool"),
            DataType::Bit(b) => write!(f, "bit {b}"),
            DataType::Int16 => f.write_str("int16"),
            DataType::Uint16 => f.write_str("uint16"),
            DataType::Int32 => f.write_str("int32"),
            DataType::Uint32 => f.write_str("uint32"),
            DataType::Int64 => f.write_str("int64"),
            DataType::Uint64 => f.write_str("uint64"),
            DataType::Float32 => f.write_str("float32"),
            DataType::Float64 => f.write_str("float64"),
            DataType::String(n) => write!(f, "string of {n} registers"),
            DataType::Bytes(n) => write!(f, "bytes of {n} registers"),
        }
    }
}

/// Byte and word order of multi-byte values, named by where the bytes of the big-endian value
/// `ABCD` land in the registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ByteOrder {
    /// Big-endian bytes, most significant register first (the Modbus default).
    #[default]
    Abcd,
    /// Bytes swapped within each register (KubeEdge `isSwap`).
    Badc,
    /// Registers in reverse order (KubeEdge `isRegisterSwap`).
    Cdab,
    /// Both (`isSwap` and `isRegisterSwap`).
    Dcba,
}

impl ByteOrder {
    /// Names accepted in `byteOrder`, in the order of the enum.
    pub const NAMES: [&'static str; 4] = ["ABCD", "BADC", "CDAB", "DCBA"];

    /// The order KubeEdge's two swap flags describe.
    pub fn from_swaps(byte_swap: bool, word_swap: bool) -> ByteOrder {
        match (byte_swap, word_swap) {
            (false, false) => ByteOrder::Abcd,
            (true, false) => ByteOrder::Badc,
            (false, true) => ByteOrder::Cdab,
            (true, true) => ByteOrder::Dcba,
        }
    }

    /// Whether bytes are swapped within each register.
    pub fn byte_swap(self) -> bool {
        matches!(self, ByteOrder::Badc | ByteOrder::Dcba)
    }

    /// Whether the order of registers is reversed.
    pub fn word_swap(self) -> bool {
        matches!(self, ByteOrder::Cdab | ByteOrder::Dcba)
    }
}

/// Per-property Modbus settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ModbusVisitor {
    /// Which table.
    pub register: RegisterKind,
    /// First address (KubeEdge `offset`), 0-based as on the wire.
    pub address: u16,
    /// Encoding of the value.
    pub data_type: DataType,
    /// Byte and word order.
    pub order: ByteOrder,
    /// `value = raw * scale + valueOffset`, and the deadband.
    pub scaling: Scaling,
    /// Properties of one poll group are read together; default: the property's collect cycle.
    pub poll_group: Option<String>,
}

impl ModbusVisitor {
    /// Registers (or bits) the property spans.
    pub fn count(&self) -> u16 {
        self.data_type.registers()
    }

    /// Last address the property touches.
    pub fn last_address(&self) -> u32 {
        u32::from(self.address) + u32::from(self.count()) - 1
    }
}

/// Reads the device-level settings. Returns `None` when an error makes them unusable; the issues
/// say why.
pub fn parse_protocol(
    config: Option<&Map<String, Value>>,
    path: &str,
) -> (Option<ModbusProtocol>, Vec<FieldIssue>) {
    let mut f = Fields::new(config, path);
    let mode = f.one_of("communicateMode", "communicate mode", &["TCP", "RTU"]);
    let has_ip = f.has("ip");
    let has_serial = f.has("serialName");
    // Without communicateMode, the keys present decide; KubeEdge's samples always set it.
    let rtu = match mode {
        Some(i) => i == 1,
        None => !has_ip && has_serial,
    };
    let slave_max = if rtu { 247 } else { 255 };
    let slave_min = if rtu { 1 } else { 0 };
    let slave_id = f.int("slaveID", slave_min, slave_max);
    if !f.has("slaveID") {
        f.error("slaveID", "missing (the Modbus unit id of the device)");
    }
    let timeout_ms = f.int("timeout", 1, 600_000).unwrap_or(1000);
    let limits = ReadLimits {
        max_registers: f.int("maxReadRegisters", 1, 125).map_or(125, |v| v as u16),
        max_bits: f.int("maxReadBits", 1, 2000).map_or(2000, |v| v as u16),
        // Filling a hole costs 2 bytes a register; a separate request costs a round trip on
        // TCP but about 20 character times on a serial line. So fill freely on TCP, little
        // on RTU.
        max_gap: f
            .int("maxGap", 0, 125)
            .map_or(if rtu { 10 } else { 125 }, |v| v as u16),
    };
    let transport = if rtu {
        let serial = parse_serial_settings(&mut f, "serialName");
        f.bool("rs485Enabled");
        // Read so that TCP keys given to an RTU device are not reported as unknown.
        f.string("ip");
        f.string("port");
        serial.map(ModbusTransport::Rtu)
    } else {
        let host = f.string("ip");
        if host.is_none() {
            f.error(
                "ip",
                "missing (communicateMode TCP needs the device's address)",
            );
        }
        let port = if f.has("port") {
            f.int("port", 1, 65535).map(|p| p as u16)
        } else {
            Some(502)
        };
        for key in [
            "serialName",
            "baudRate",
            "dataBits",
            "stopBits",
            "parity",
            "rs485Enabled",
        ] {
            // KubeEdge's TCP samples often carry the serial keys too; they are harmless.
            f.has(key);
        }
        match (host, port) {
            (Some(host), Some(port)) => Some(ModbusTransport::Tcp { host, port }),
            _ => None,
        }
    };
    let issues = f.finish();
    let protocol = match (slave_id, transport) {
        (Some(id), Some(transport)) => Some(ModbusProtocol {
            slave_id: id as u8,
            transport,
            timeout: Duration::from_millis(timeout_ms as u64),
            limits,
        }),
        _ => None,
    };
    (protocol, issues)
}

/// Reads one property's settings.
pub fn parse_visitor(
    config: Option<&Map<String, Value>>,
    path: &str,
) -> (Option<ModbusVisitor>, Vec<FieldIssue>) {
    let mut f = Fields::new(config, path).tolerate(TOLERATED_VISITOR_KEYS);
    let register = f
        .one_of("register", "register type", &RegisterKind::NAMES)
        .map(|i| {
            [
                RegisterKind::Coil,
                RegisterKind::DiscreteInput,
                RegisterKind::Holding,
                RegisterKind::Input,
            ][i]
        });
    if !f.has("register") {
        f.error(
            "register",
            format!("missing (expected {})", RegisterKind::NAMES.join(", ")),
        );
    }
    let address = f.int("offset", 0, 65535).map(|v| v as u16);
    if !f.has("offset") {
        f.error("offset", "missing (the first register address, 0..=65535)");
    }
    let limit = f.int("limit", 1, 65535).map(|v| v as u16);
    let scaling = parse_scaling(&mut f);
    let poll_group = f.string("pollGroup");
    let byte_swap = f.bool("isSwap").unwrap_or(false);
    let word_swap = f.bool("isRegisterSwap").unwrap_or(false);
    let from_flags = ByteOrder::from_swaps(byte_swap, word_swap);
    let order = match f.one_of("byteOrder", "byte order", &ByteOrder::NAMES) {
        Some(i) => {
            let named = [
                ByteOrder::Abcd,
                ByteOrder::Badc,
                ByteOrder::Cdab,
                ByteOrder::Dcba,
            ][i];
            if (byte_swap || word_swap) && named != from_flags {
                f.error(
                    "byteOrder",
                    format!(
                        "{} contradicts isSwap: {byte_swap}, isRegisterSwap: {word_swap} \
                         (which mean {}); give one or the other",
                        ByteOrder::NAMES[i],
                        ByteOrder::NAMES[from_flags as usize]
                    ),
                );
            }
            named
        }
        None => from_flags,
    };
    let bit = f.int("bit", 0, 15).map(|b| b as u8);
    // Mark dataType as read even when the register kind is broken, so it is not "unknown".
    f.has("dataType");
    let data_type = register.and_then(|kind| data_type(&mut f, kind, limit, bit));
    if let (Some(a), Some(dt)) = (address, data_type) {
        let last = u32::from(a) + u32::from(dt.registers()) - 1;
        if last > 65535 {
            f.error(
                "offset",
                format!("{dt} at {a} ends at {last}, past the last Modbus address 65535"),
            );
        }
    }
    let issues = f.finish();
    let visitor = match (register, address, data_type) {
        (Some(register), Some(address), Some(data_type)) if issues.iter().all(|i| i.warning) => {
            Some(ModbusVisitor {
                register,
                address,
                data_type,
                order,
                scaling,
                poll_group,
            })
        }
        _ => None,
    };
    (visitor, issues)
}

/// Data type names: KubeEdge's (`int`, `float`, `double`, `boolean`, `string`, `bytes`, whose
/// width comes from `limit`) and Ballast's explicit ones.
const DATA_TYPES: &[&str] = &[
    "int", "float", "double", "boolean", "string", "bytes", "bool", "bit", "int16", "uint16",
    "int32", "uint32", "int64", "uint64", "float32", "float64",
];

fn data_type(
    f: &mut Fields<'_>,
    kind: RegisterKind,
    limit: Option<u16>,
    bit: Option<u8>,
) -> Option<DataType> {
    let name = match f.one_of("dataType", "data type", DATA_TYPES) {
        Some(i) => DATA_TYPES[i],
        None if f.has("dataType") => return None,
        // No dataType: a bit table gives bools, a register an int of `limit` registers.
        None if kind.is_bits() => "bool",
        None => "int",
    };
    if kind.is_bits() {
        if !matches!(name, "bool" | "boolean" | "int" | "uint16" | "int16") {
            f.error(
                "dataType",
                format!(
                    "{name} does not fit a {kind}, which holds single bits (use boolean or int)"
                ),
            );
            return None;
        }
        if let Some(l) = limit.filter(|l| *l != 1) {
            f.error(
                "limit",
                format!(
                    "a {kind} property is one bit, so limit must be 1, got {l} \
                     (map each bit to its own property)"
                ),
            );
            return None;
        }
        return Some(DataType::Bool);
    }
    let by_limit = |one: DataType, two: DataType, four: DataType| match limit.unwrap_or(1) {
        1 => Ok(one),
        2 => Ok(two),
        4 => Ok(four),
        n => Err(n),
    };
    let dt = match name {
        "int" => by_limit(DataType::Int16, DataType::Int32, DataType::Int64),
        // KubeEdge reads a one-register "float" as an integer register, then scales it.
        "float" => by_limit(DataType::Int16, DataType::Float32, DataType::Float64),
        "double" => by_limit(DataType::Int16, DataType::Float32, DataType::Float64),
        "bool" | "boolean" => {
            by_limit(DataType::Bool, DataType::Bool, DataType::Bool).and_then(|d| {
                if limit.unwrap_or(1) == 1 {
                    Ok(d)
                } else {
                    Err(limit.unwrap_or(1))
                }
            })
        }
        "string" => Ok(DataType::String(limit.unwrap_or(1))),
        "bytes" => Ok(DataType::Bytes(limit.unwrap_or(1))),
        "bit" => match bit {
            Some(b) => Ok(DataType::Bit(b)),
            None => {
                f.error(
                    "bit",
                    "missing (dataType bit needs the bit number, 0..=15, 0 = least significant)",
                );
                return None;
            }
        },
        explicit => {
            let dt = match explicit {
                "int16" => DataType::Int16,
                "uint16" => DataType::Uint16,
                "int32" => DataType::Int32,
                "uint32" => DataType::Uint32,
                "int64" => DataType::Int64,
                "uint64" => DataType::Uint64,
                "float32" => DataType::Float32,
                _ => DataType::Float64,
            };
            match limit {
                Some(l) if l != dt.registers() => Err(l),
                _ => Ok(dt),
            }
        }
    };
    match dt {
        Ok(DataType::Bit(_)) if limit.is_some_and(|l| l != 1) => {
            f.error(
                "limit",
                "dataType bit reads one register, so limit must be 1",
            );
            None
        }
        Ok(dt) => {
            if bit.is_some() && !matches!(dt, DataType::Bit(_)) {
                f.warn("bit", format!("ignored: dataType is {name}, not bit"));
            }
            Some(dt)
        }
        Err(l) => {
            let expected = match name {
                "int" | "float" | "double" => "1, 2 or 4".to_string(),
                "bool" | "boolean" => "1".to_string(),
                _ => DataType::registers(match name {
                    "int16" | "uint16" => DataType::Int16,
                    "int32" | "uint32" | "float32" => DataType::Int32,
                    _ => DataType::Int64,
                })
                .to_string(),
            };
            f.error(
                "limit",
                format!("dataType {name} spans {expected} registers, but limit is {l}"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn kubeedge_tcp_protocol_with_port_as_text() {
        let cfg =
            map(json!({"communicateMode": "TCP", "port": "5502", "slaveID": 1, "ip": "10.0.0.5"}));
        let (p, issues) = parse_protocol(Some(&cfg), "spec.protocol.configData");
        assert!(issues.is_empty(), "{issues:?}");
        let p = p.unwrap();
        assert_eq!(p.slave_id, 1);
        assert_eq!(
            p.transport,
            ModbusTransport::Tcp {
                host: "10.0.0.5".into(),
                port: 5502
            }
        );
        assert_eq!(p.timeout, Duration::from_secs(1));
        assert_eq!(p.limits.max_gap, 125);
    }

    #[test]
    fn rtu_protocol_with_serial_settings() {
        let cfg = map(
            json!({"communicateMode": "RTU", "slaveID": 3, "serialName": "/dev/ttyS0",
            "baudRate": 9600, "dataBits": 8, "stopBits": 1, "parity": "none", "rs485Enabled": false,
            "timeout": 250}),
        );
        let (p, issues) = parse_protocol(Some(&cfg), "p");
        assert!(issues.is_empty(), "{issues:?}");
        let p = p.unwrap();
        let ModbusTransport::Rtu(s) = p.transport else {
            panic!("not rtu")
        };
        assert_eq!(s.port, "/dev/ttyS0");
        assert_eq!(s.baud_rate, 9600);
        assert_eq!(p.timeout, Duration::from_millis(250));
        assert_eq!(p.limits.max_gap, 10);
    }

    #[test]
    fn protocol_errors_name_the_field() {
        let cfg = map(json!({"communicateMode": "UDP", "slaveID": 300, "ip": "x", "port": 70000}));
        let (p, issues) = parse_protocol(Some(&cfg), "c");
        assert!(p.is_none());
        let paths: Vec<_> = issues.iter().map(|i| i.path.as_str()).collect();
        assert!(paths.contains(&"c.communicateMode"), "{issues:?}");
        assert!(paths.contains(&"c.slaveID"), "{issues:?}");
        assert!(paths.contains(&"c.port"), "{issues:?}");
    }

    #[test]
    fn kubeedge_visitor_float_one_register_is_scaled_int16() {
        let cfg = map(
            json!({"dataType": "float", "register": "HoldingRegister", "offset": 0,
            "limit": 1, "scale": 0.1, "isSwap": false, "isRegisterSwap": false, "max": 100.0, "min": 1.0}),
        );
        let (v, issues) = parse_visitor(Some(&cfg), "v");
        assert!(issues.is_empty(), "{issues:?}");
        let v = v.unwrap();
        assert_eq!(v.data_type, DataType::Int16);
        assert_eq!(v.scaling.scale, 0.1);
        assert_eq!(v.register, RegisterKind::Holding);
    }

    #[test]
    fn swap_flags_map_to_byte_orders() {
        for (s, r, order) in [
            (false, false, ByteOrder::Abcd),
            (true, false, ByteOrder::Badc),
            (false, true, ByteOrder::Cdab),
            (true, true, ByteOrder::Dcba),
        ] {
            let cfg = map(
                json!({"register": "InputRegister", "offset": 4, "dataType": "float32",
                "isSwap": s, "isRegisterSwap": r}),
            );
            let (v, issues) = parse_visitor(Some(&cfg), "v");
            assert!(issues.is_empty(), "{issues:?}");
            assert_eq!(v.unwrap().order, order);
        }
    }

    #[test]
    fn unknown_register_type_lists_the_allowed_ones() {
        let cfg = map(json!({"register": "HoldReg", "offset": 0}));
        let (v, issues) = parse_visitor(Some(&cfg), "spec.properties[2].visitors.configData");
        assert!(v.is_none());
        assert_eq!(
            issues[0].path,
            "spec.properties[2].visitors.configData.register"
        );
        assert_eq!(
            issues[0].message,
            "unknown register type \"HoldReg\" (expected CoilRegister, DiscreteInputRegister, \
             HoldingRegister, InputRegister)"
        );
    }

    #[test]
    fn data_type_must_fit_register_kind_and_limit() {
        let cases = [
            (
                json!({"register": "CoilRegister", "offset": 0, "dataType": "float"}),
                "v.dataType",
            ),
            (
                json!({"register": "CoilRegister", "offset": 0, "limit": 8}),
                "v.limit",
            ),
            (
                json!({"register": "HoldingRegister", "offset": 0, "dataType": "int32", "limit": 1}),
                "v.limit",
            ),
            (
                json!({"register": "HoldingRegister", "offset": 0, "dataType": "int", "limit": 3}),
                "v.limit",
            ),
            (
                json!({"register": "HoldingRegister", "offset": 65534, "dataType": "float64"}),
                "v.offset",
            ),
            (
                json!({"register": "HoldingRegister", "offset": 70000}),
                "v.offset",
            ),
            (
                json!({"register": "HoldingRegister", "offset": 1, "dataType": "bit"}),
                "v.bit",
            ),
            (
                json!({"register": "HoldingRegister", "offset": 1, "byteOrder": "CDAB", "isSwap": true}),
                "v.byteOrder",
            ),
        ];
        for (cfg, path) in cases {
            let cfg = map(cfg);
            let (v, issues) = parse_visitor(Some(&cfg), "v");
            assert!(v.is_none(), "{cfg:?} accepted");
            assert!(
                issues.iter().any(|i| i.path == path && !i.warning),
                "{cfg:?}: {issues:?}"
            );
        }
    }

    #[test]
    fn explicit_types_derive_their_width() {
        let cfg = map(
            json!({"register": "HoldingRegister", "offset": 10, "dataType": "uint64",
            "byteOrder": "dcba", "valueOffset": -40, "deadband": 0.5, "pollGroup": "fast"}),
        );
        let (v, issues) = parse_visitor(Some(&cfg), "v");
        assert!(issues.is_empty(), "{issues:?}");
        let v = v.unwrap();
        assert_eq!(v.data_type, DataType::Uint64);
        assert_eq!(v.count(), 4);
        assert_eq!(v.last_address(), 13);
        assert_eq!(v.order, ByteOrder::Dcba);
        assert_eq!(v.scaling.value_offset, -40.0);
        assert_eq!(v.poll_group.as_deref(), Some("fast"));
    }

    #[test]
    fn typo_keys_warn() {
        let cfg = map(json!({"register": "HoldingRegister", "offset": 1, "scal": 0.1}));
        let (v, issues) = parse_visitor(Some(&cfg), "v");
        assert!(v.is_some());
        assert_eq!(issues.len(), 1);
        assert!(issues[0].warning && issues[0].at_key && issues[0].path == "v.scal");
    }
}
