//! Typed protocol configs, parsed from the free-form `configData` of a Device.
//!
//! A closed set of protocols, one enum ([`DeviceProtocol`], [`PropertyVisitor`]): Modbus
//! ([`modbus`]), serial line instruments ([`serial`]) and devices that speak MQTT ([`mqtt`]).
//! Parsing never stops at the first problem: every function returns what it could build and
//! every [`FieldIssue`] with its full field path.

pub mod fields;
pub mod modbus;
pub mod mqtt;
pub mod serial;

use serde_json::{Map, Value};

pub use fields::FieldIssue;
use fields::Fields;

/// Serial line settings, shared by Modbus RTU and serial instruments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialSettings {
    /// Device path, for instance `/dev/ttyUSB0`.
    pub port: String,
    /// Bits per second (default 19200).
    pub baud_rate: u32,
    /// Data bits, 5..=8 (default 8).
    pub data_bits: u8,
    /// Stop bits, 1 or 2 (default 1).
    pub stop_bits: u8,
    /// Parity (default even, as the Modbus serial line specification requires).
    pub parity: Parity,
}

impl SerialSettings {
    /// Bits on the wire per character: start, data, parity, stop.
    pub fn bits_per_char(&self) -> u32 {
        1 + u32::from(self.data_bits)
            + u32::from(self.parity != Parity::None)
            + u32::from(self.stop_bits)
    }
}

/// Serial parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parity {
    /// No parity bit.
    None,
    /// Even parity.
    Even,
    /// Odd parity.
    Odd,
}

const BAUD_RATES: &[i64] = &[
    300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400,
];

/// Reads `serialName`-style settings: the port under `port_key`, and KubeEdge's `baudRate`,
/// `dataBits`, `stopBits`, `parity`.
pub(crate) fn parse_serial_settings(
    f: &mut Fields<'_>,
    port_key: &'static str,
) -> Option<SerialSettings> {
    let port = f.string(port_key);
    if port.is_none() && !f.has(port_key) {
        f.error(
            port_key,
            "missing (the serial device path, for instance /dev/ttyUSB0)",
        );
    }
    let baud_rate = f.int("baudRate", 1, 4_000_000).unwrap_or(19200);
    if f.has("baudRate") && !BAUD_RATES.contains(&baud_rate) {
        f.warn(
            "baudRate",
            format!("{baud_rate} is not a standard baud rate; check the device's manual"),
        );
    }
    let data_bits = f.int("dataBits", 5, 8).unwrap_or(8) as u8;
    let stop_bits = f.int("stopBits", 1, 2).unwrap_or(1) as u8;
    let parity = match f.one_of("parity", "parity", &["none", "even", "odd", "N", "E", "O"]) {
        Some(0 | 3) => Parity::None,
        Some(2 | 5) => Parity::Odd,
        _ => Parity::Even,
    };
    port.map(|port| SerialSettings {
        port,
        baud_rate: baud_rate as u32,
        data_bits,
        stop_bits,
        parity,
    })
}

/// A device's protocol settings, by protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceProtocol {
    /// `modbus`: Modbus TCP or RTU.
    Modbus(modbus::ModbusProtocol),
    /// `serial`: a line-based serial instrument.
    Serial(serial::SerialProtocol),
    /// `mqtt`: a device that publishes and takes commands over MQTT.
    Mqtt(mqtt::MqttProtocol),
}

/// One property's protocol settings, by protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum PropertyVisitor {
    /// A Modbus register or bit.
    Modbus(modbus::ModbusVisitor),
    /// A field of a serial record.
    Serial(serial::SerialVisitor),
    /// A field of an MQTT JSON payload.
    Mqtt(mqtt::MqttVisitor),
}

/// Protocol names Ballast runs, with their aliases.
pub const PROTOCOLS: &[&str] = &["modbus", "serial", "mqtt"];

/// Which of [`PROTOCOLS`] a name means (`modbus-tcp`, `modbus-rtu` are aliases of `modbus`).
pub fn protocol_index(name: &str) -> Option<usize> {
    match name.to_ascii_lowercase().as_str() {
        "modbus" | "modbus-tcp" | "modbus-rtu" | "modbustcp" | "modbusrtu" => Some(0),
        "serial" => Some(1),
        "mqtt" => Some(2),
        _ => None,
    }
}

/// Parses a device's protocol settings.
pub fn parse_device_protocol(
    protocol: usize,
    config: Option<&Map<String, Value>>,
    path: &str,
) -> (Option<DeviceProtocol>, Vec<FieldIssue>) {
    match protocol {
        0 => {
            let (p, i) = modbus::parse_protocol(config, path);
            (p.map(DeviceProtocol::Modbus), i)
        }
        1 => {
            let (p, i) = serial::parse_protocol(config, path);
            (p.map(DeviceProtocol::Serial), i)
        }
        _ => {
            let (p, i) = mqtt::parse_protocol(config, path);
            (p.map(DeviceProtocol::Mqtt), i)
        }
    }
}

/// Parses one property's settings. `device` is the device's parsed protocol, when it parsed:
/// a serial field is checked against the device's record pattern.
pub fn parse_property_visitor(
    protocol: usize,
    device: Option<&DeviceProtocol>,
    config: Option<&Map<String, Value>>,
    path: &str,
) -> (Option<PropertyVisitor>, Vec<FieldIssue>) {
    match protocol {
        0 => {
            let (v, i) = modbus::parse_visitor(config, path);
            (v.map(PropertyVisitor::Modbus), i)
        }
        1 => {
            let fields = match device {
                Some(DeviceProtocol::Serial(s)) => Some(s.field_names()),
                _ => None,
            };
            let (v, i) = serial::parse_visitor(config, path, fields.as_deref());
            (v.map(PropertyVisitor::Serial), i)
        }
        _ => {
            let (v, i) = mqtt::parse_visitor(config, path);
            (v.map(PropertyVisitor::Mqtt), i)
        }
    }
}

/// Reads the numeric post-processing every protocol shares: `scale`, `valueOffset`, `deadband`.
pub(crate) fn parse_scaling(f: &mut Fields<'_>) -> Scaling {
    let scale = f.f64("scale").unwrap_or(1.0);
    if scale == 0.0 {
        f.error(
            "scale",
            "must not be 0 (a written value could not be unscaled)",
        );
    }
    let value_offset = f.f64("valueOffset").unwrap_or(0.0);
    let deadband = f.f64("deadband");
    if deadband.is_some_and(|d| d < 0.0) {
        f.error("deadband", "must not be negative");
    }
    Scaling {
        scale,
        value_offset,
        deadband,
    }
}

/// `value = raw * scale + value_offset`; a change within `deadband` is not reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scaling {
    /// Multiplier (default 1).
    pub scale: f64,
    /// Added after scaling (default 0).
    pub value_offset: f64,
    /// Smallest change worth reporting.
    pub deadband: Option<f64>,
}

/// Checks a command template: `{value}` is the only placeholder, `{{` and `}}` are literal
/// braces. Returns an error message when it is malformed.
pub(crate) fn check_value_template(t: &str) -> Result<(), String> {
    let mut rest = t;
    while let Some(i) = rest.find(['{', '}']) {
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            rest = &tail[2..];
        } else if let Some(after) = tail.strip_prefix("{value}") {
            rest = after;
        } else {
            return Err(format!(
                "bad placeholder at {:?}: the only placeholder is {{value}} (write {{{{ and }}}} for braces)",
                tail.chars().take(16).collect::<String>()
            ));
        }
    }
    Ok(())
}

/// Fills a command template checked by `check_value_template`.
pub fn fill_value_template(t: &str, value: &str) -> String {
    let mut out = String::with_capacity(t.len() + value.len());
    let mut rest = t;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{value}") {
            out.push_str(value);
            rest = after;
        } else if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
        } else {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        assert!(check_value_template("{{\"speed\": {value}}}").is_ok());
        assert!(check_value_template("$INT,{value}").is_ok());
        assert!(check_value_template("$INT,{val}").is_err());
        assert!(check_value_template("{").is_err());
        assert_eq!(
            fill_value_template("{{\"speed\": {value}}}", "42"),
            "{\"speed\": 42}"
        );
        assert_eq!(fill_value_template("$INT,{value}\r\n", "5"), "$INT,5\r\n");
    }

    #[test]
    fn bits_per_char() {
        let s = SerialSettings {
            port: "p".into(),
            baud_rate: 19200,
            data_bits: 8,
            stop_bits: 1,
            parity: Parity::Even,
        };
        assert_eq!(s.bits_per_char(), 11);
    }
}
