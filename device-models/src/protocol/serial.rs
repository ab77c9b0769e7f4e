//! Serial line instruments (protocol `serial`): a device that prints ASCII records on a serial
//! line and takes short text commands.
//!
//! Device `configData`: the line (`serialName`, `baudRate`, `dataBits`, `stopBits`, `parity`),
//! framing (`framing: line` with `delimiter`, or `framing: length` with `frameLength`;
//! `maxFrameBytes`), the record format (`template` with `{name}` fields, or a `pattern` regex
//! with named groups), `checksum` (`none`, `xor8`, `sum8`, `crc16`) and `commandSuffix`.
//! Property `configData`: `field` (the record field), `scale`, `valueOffset`, `deadband`, and
//! `write` (a command template with `{value}`) for writable properties.
//!
//! The checksum sits in the field `checksum` as hex. With a `template` it covers the text
//! between a leading `$`, `!` or `:` and the character before `{checksum}` (the NMEA
//! convention: `$FLOW,12.5,1034.2*4B`); with a `pattern` it covers the named group `body`.

use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;
use serde_json::{Map, Value};

use super::fields::{FieldIssue, Fields};
use super::{Scaling, SerialSettings, check_value_template, parse_scaling, parse_serial_settings};

/// Longest regex or template accepted, to keep a hostile file from building a huge automaton.
const MAX_PATTERN_LEN: usize = 1024;

/// How the byte stream is cut into records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// Records end with this byte sequence (default `\n`; a trailing `\r` is dropped).
    Delimiter(Vec<u8>),
    /// Records are exactly this many bytes.
    Length(usize),
}

/// Checksum kinds of serial records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// No checksum.
    None,
    /// XOR of the covered bytes, 2 hex digits (NMEA 0183).
    Xor8,
    /// Sum of the covered bytes modulo 256, 2 hex digits.
    Sum8,
    /// CRC-16/MODBUS of the covered bytes, 4 hex digits.
    Crc16,
}

impl Checksum {
    /// Names accepted in `checksum`, in the order of the enum.
    pub const NAMES: [&'static str; 4] = ["none", "xor8", "sum8", "crc16"];

    /// The checksum of `data`.
    pub fn compute(self, data: &[u8]) -> u32 {
        match self {
            Checksum::None => 0,
            Checksum::Xor8 => u32::from(data.iter().fold(0u8, |a, b| a ^ b)),
            Checksum::Sum8 => u32::from(data.iter().fold(0u8, |a, b| a.wrapping_add(*b))),
            Checksum::Crc16 => u32::from(crc16_modbus(data)),
        }
    }

    /// The checksum of `data` as it is written in a record (upper-case hex).
    pub fn format(self, data: &[u8]) -> String {
        match self {
            Checksum::None => String::new(),
            Checksum::Xor8 | Checksum::Sum8 => format!("{:02X}", self.compute(data)),
            Checksum::Crc16 => format!("{:04X}", self.compute(data)),
        }
    }
}

/// CRC-16/MODBUS (polynomial 0xA001 reflected, initial 0xFFFF), as on Modbus RTU frames.
pub fn crc16_modbus(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for b in data {
        crc ^= u16::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// A compiled record format.
#[derive(Clone)]
pub struct RecordFormat {
    source: String,
    template: Option<String>,
    regex: Regex,
    checksum: Checksum,
}

impl PartialEq for RecordFormat {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.checksum == other.checksum
    }
}

impl fmt::Debug for RecordFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordFormat")
            .field("source", &self.source)
            .field("checksum", &self.checksum)
            .finish()
    }
}

/// Why a record was not accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordError {
    /// The record does not have the configured format.
    #[error("record does not match the format: {0:?}")]
    NoMatch(String),
    /// The checksum in the record is not the checksum of its contents.
    #[error("checksum mismatch: record says {found}, contents give {computed}")]
    BadChecksum {
        /// What the record carried.
        found: String,
        /// What its contents give.
        computed: String,
    },
}

impl RecordFormat {
    /// Builds a format from a template such as `$FLOW,{rate},{total}*{checksum}`.
    pub fn from_template(template: &str, checksum: Checksum) -> Result<RecordFormat, String> {
        if template.len() > MAX_PATTERN_LEN {
            return Err(format!("longer than {MAX_PATTERN_LEN} characters"));
        }
        let mut re = String::from("^");
        let (head, checksum_at) = match template.find("{checksum}") {
            Some(at) => (&template[..at], Some(at)),
            None => (template, None),
        };
        if checksum != Checksum::None {
            let Some(at) = checksum_at else {
                return Err(format!(
                    "checksum {} needs a {{checksum}} field in the template",
                    Checksum::NAMES[checksum as usize]
                ));
            };
            // head = [lead] body sep
            let lead = usize::from(head.starts_with(['$', '!', ':']));
            let sep = head.chars().last().map_or(0, char::len_utf8);
            if head.len() < lead + sep || sep == 0 {
                return Err(
                    "{checksum} needs a separator character before it, as in *{checksum}".into(),
                );
            }
            re.push_str(&regex::escape(&head[..lead]));
            re.push_str("(?P<body>");
            re.push_str(&template_regex(&head[lead..head.len() - sep])?);
            re.push(')');
            re.push_str(&regex::escape(&head[head.len() - sep..]));
            re.push_str("(?P<checksum>[0-9A-Fa-f]+)");
            re.push_str(&template_regex(&template[at + "{checksum}".len()..])?);
        } else {
            re.push_str(&template_regex(template)?);
        }
        re.push('$');
        let regex = Regex::new(&re).map_err(|e| e.to_string())?;
        Ok(RecordFormat {
            source: template.to_string(),
            template: Some(template.to_string()),
            regex,
            checksum,
        })
    }

    /// Builds a format from a regex with named groups (`body` and `checksum` when checked).
    pub fn from_pattern(pattern: &str, checksum: Checksum) -> Result<RecordFormat, String> {
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(format!("longer than {MAX_PATTERN_LEN} characters"));
        }
        let regex = regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| e.to_string().replace('\n', " "))?;
        if checksum != Checksum::None {
            let names: Vec<_> = regex.capture_names().flatten().collect();
            for needed in ["body", "checksum"] {
                if !names.contains(&needed) {
                    return Err(format!(
                        "checksum {} needs a named group (?P<{needed}>...)",
                        Checksum::NAMES[checksum as usize]
                    ));
                }
            }
        }
        Ok(RecordFormat {
            source: pattern.to_string(),
            template: None,
            regex,
            checksum,
        })
    }

    /// The named fields of a record, without `body` and `checksum`.
    pub fn field_names(&self) -> Vec<String> {
        self.regex
            .capture_names()
            .flatten()
            .filter(|n| *n != "body" && *n != "checksum")
            .map(str::to_string)
            .collect()
    }

    /// The checksum kind.
    pub fn checksum(&self) -> Checksum {
        self.checksum
    }

    /// Splits a record into its fields, checking its checksum.
    pub fn parse<'r>(&self, record: &'r str) -> Result<BTreeMap<String, &'r str>, RecordError> {
        let caps = self
            .regex
            .captures(record)
            .ok_or_else(|| RecordError::NoMatch(record.chars().take(80).collect()))?;
        if self.checksum != Checksum::None {
            let body = caps.name("body").map_or("", |m| m.as_str());
            let found = caps.name("checksum").map_or("", |m| m.as_str());
            let computed = self.checksum.format(body.as_bytes());
            if !found.eq_ignore_ascii_case(&computed) {
                return Err(RecordError::BadChecksum {
                    found: found.to_string(),
                    computed,
                });
            }
        }
        Ok(self
            .regex
            .capture_names()
            .flatten()
            .filter(|n| *n != "body" && *n != "checksum")
            .filter_map(|n| caps.name(n).map(|m| (n.to_string(), m.as_str())))
            .collect())
    }

    /// Writes a record from field values (template formats only), computing its checksum: what
    /// a simulated instrument prints. `None` for pattern formats or a missing field.
    pub fn render(&self, values: &BTreeMap<&str, String>) -> Option<String> {
        let template = self.template.as_deref()?;
        let fill = |t: &str| -> Option<String> {
            let mut out = String::new();
            let mut rest = t;
            while let Some(i) = rest.find('{') {
                out.push_str(&rest[..i]);
                let end = rest[i..].find('}')? + i;
                out.push_str(values.get(&rest[i + 1..end])?);
                rest = &rest[end + 1..];
            }
            out.push_str(rest);
            Some(out)
        };
        match template.find("{checksum}") {
            Some(at) if self.checksum != Checksum::None => {
                let head = &template[..at];
                let lead = usize::from(head.starts_with(['$', '!', ':']));
                let sep = head.chars().last().map_or(0, char::len_utf8);
                let body = fill(&head[lead..head.len() - sep])?;
                let sum = self.checksum.format(body.as_bytes());
                let tail = fill(&template[at + "{checksum}".len()..])?;
                Some(format!(
                    "{}{body}{}{sum}{tail}",
                    &head[..lead],
                    &head[head.len() - sep..]
                ))
            }
            _ => fill(template),
        }
    }
}

/// Converts template text with `{name}` fields into regex source.
fn template_regex(t: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = t;
    while let Some(i) = rest.find('{') {
        out.push_str(&regex::escape(&rest[..i]));
        let end = rest[i..]
            .find('}')
            .ok_or_else(|| format!("unclosed {{ in {rest:?}"))?
            + i;
        let name = &rest[i + 1..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("field name {name:?} must be letters, digits and _"));
        }
        out.push_str(&format!("(?P<{name}>.*?)"));
        rest = &rest[end + 1..];
    }
    out.push_str(&regex::escape(rest));
    Ok(out)
}

/// Device-level settings of a serial instrument.
#[derive(Debug, Clone, PartialEq)]
pub struct SerialProtocol {
    /// The line.
    pub line: SerialSettings,
    /// How records are cut.
    pub framing: Framing,
    /// Longest record accepted; longer input is discarded up to the next delimiter.
    pub max_frame_bytes: usize,
    /// Record format.
    pub format: RecordFormat,
    /// Appended to every command (default `\r\n`).
    pub command_suffix: String,
}

impl SerialProtocol {
    /// The named fields a property may refer to.
    pub fn field_names(&self) -> Vec<String> {
        self.format.field_names()
    }
}

/// Per-property settings of a serial instrument.
#[derive(Debug, Clone, PartialEq)]
pub struct SerialVisitor {
    /// Record field holding the value.
    pub field: String,
    /// Numeric post-processing.
    pub scaling: Scaling,
    /// Command that writes the property (`{value}` is replaced), if writable.
    pub write: Option<String>,
}

/// Reads a serial instrument's device-level settings.
pub fn parse_protocol(
    config: Option<&Map<String, Value>>,
    path: &str,
) -> (Option<SerialProtocol>, Vec<FieldIssue>) {
    let mut f = Fields::new(config, path);
    let line = parse_serial_settings(&mut f, "serialName");
    let framing = match f.one_of("framing", "framing", &["line", "length"]) {
        Some(1) => match f.int("frameLength", 1, 65536) {
            Some(n) => Some(Framing::Length(n as usize)),
            None => {
                if !f.has("frameLength") {
                    f.error(
                        "frameLength",
                        "missing (framing: length needs the record size in bytes)",
                    );
                }
                None
            }
        },
        _ => {
            let d = f.string("delimiter").unwrap_or_else(|| "\n".to_string());
            if d.is_empty() {
                f.error("delimiter", "must not be empty");
                None
            } else {
                Some(Framing::Delimiter(d.into_bytes()))
            }
        }
    };
    let max_frame_bytes = f.int("maxFrameBytes", 8, 1 << 20).unwrap_or(1024) as usize;
    let checksum = match f.one_of("checksum", "checksum", &Checksum::NAMES) {
        Some(1) => Checksum::Xor8,
        Some(2) => Checksum::Sum8,
        Some(3) => Checksum::Crc16,
        _ => Checksum::None,
    };
    let template = f.string("template");
    let pattern = f.string("pattern");
    let format = match (template, pattern) {
        (Some(_), Some(_)) => {
            f.error("pattern", "give either template or pattern, not both");
            None
        }
        (Some(t), None) => RecordFormat::from_template(&t, checksum)
            .map_err(|e| f.error("template", format!("invalid record template: {e}")))
            .ok(),
        (None, Some(p)) => RecordFormat::from_pattern(&p, checksum)
            .map_err(|e| f.error("pattern", format!("invalid record pattern: {e}")))
            .ok(),
        (None, None) => {
            f.error(
                "template",
                "missing (the record format, for instance \"$FLOW,{rate},{total}*{checksum}\", or a pattern regex)",
            );
            None
        }
    };
    let command_suffix = f
        .string("commandSuffix")
        .unwrap_or_else(|| "\r\n".to_string());
    let issues = f.finish();
    let protocol = match (line, framing, format) {
        (Some(line), Some(framing), Some(format)) => Some(SerialProtocol {
            line,
            framing,
            max_frame_bytes,
            format,
            command_suffix,
        }),
        _ => None,
    };
    (protocol, issues)
}

/// Reads one property's settings; `fields` are the record's field names when the device's
/// format parsed.
pub fn parse_visitor(
    config: Option<&Map<String, Value>>,
    path: &str,
    fields: Option<&[String]>,
) -> (Option<SerialVisitor>, Vec<FieldIssue>) {
    let mut f = Fields::new(config, path);
    let field = f.string("field");
    match (&field, fields) {
        (None, _) => f.error(
            "field",
            "missing (the record field that holds this property)",
        ),
        (Some(name), Some(known)) if !known.iter().any(|k| k == name) => f.error(
            "field",
            format!(
                "the record format has no field {name:?} (it has {})",
                known.join(", ")
            ),
        ),
        _ => {}
    }
    let scaling = parse_scaling(&mut f);
    let write = f.string("write");
    if let Some(w) = &write
        && let Err(e) = check_value_template(w)
    {
        f.error("write", e);
    }
    let issues = f.finish();
    let visitor = match field {
        Some(field) if issues.iter().all(|i| i.warning) => Some(SerialVisitor {
            field,
            scaling,
            write,
        }),
        _ => None,
    };
    (visitor, issues)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nmea_style_template_round_trips() {
        let fmt =
            RecordFormat::from_template("$FLOW,{rate},{total}*{checksum}", Checksum::Xor8).unwrap();
        assert_eq!(fmt.field_names(), vec!["rate", "total"]);
        let values = BTreeMap::from([
            ("rate", "12.5".to_string()),
            ("total", "1034.2".to_string()),
        ]);
        let rec = fmt.render(&values).unwrap();
        let body = "FLOW,12.5,1034.2";
        assert_eq!(
            rec,
            format!(
                "$FLOW,12.5,1034.2*{}",
                Checksum::Xor8.format(body.as_bytes())
            )
        );
        let fields = fmt.parse(&rec).unwrap();
        assert_eq!(fields["rate"], "12.5");
        assert_eq!(fields["total"], "1034.2");
    }

    #[test]
    fn corrupted_record_is_refused() {
        let fmt =
            RecordFormat::from_template("$FLOW,{rate},{total}*{checksum}", Checksum::Xor8).unwrap();
        let values = BTreeMap::from([
            ("rate", "12.5".to_string()),
            ("total", "1034.2".to_string()),
        ]);
        let rec = fmt.render(&values).unwrap().replace("12.5", "13.5");
        assert!(matches!(
            fmt.parse(&rec),
            Err(RecordError::BadChecksum { .. })
        ));
        assert!(matches!(fmt.parse("garbage"), Err(RecordError::NoMatch(_))));
    }

    #[test]
    fn known_checksums() {
        // NMEA example sentence: $GPGLL,5300.97914,N,00259.98174,E,125926,A*28
        assert_eq!(
            Checksum::Xor8.format(b"GPGLL,5300.97914,N,00259.98174,E,125926,A"),
            "28"
        );
        // CRC-16/MODBUS check value of "123456789" is 0x4B37.
        assert_eq!(crc16_modbus(b"123456789"), 0x4B37);
        assert_eq!(Checksum::Sum8.compute(&[0xFF, 0x02]), 0x01);
    }

    #[test]
    fn pattern_needs_body_and_checksum_groups() {
        assert!(RecordFormat::from_pattern(r"^(?P<rate>\d+)$", Checksum::Xor8).is_err());
        let fmt = RecordFormat::from_pattern(
            r"^\$(?P<body>T,(?P<temp>[-0-9.]+))\*(?P<checksum>[0-9A-F]{2})$",
            Checksum::Xor8,
        )
        .unwrap();
        let rec = format!("$T,21.5*{}", Checksum::Xor8.format(b"T,21.5"));
        assert_eq!(fmt.parse(&rec).unwrap()["temp"], "21.5");
    }

    #[test]
    fn protocol_and_visitor_from_config() {
        let cfg = json!({"serialName": "/dev/ttyUSB0", "baudRate": 9600, "parity": "none",
            "template": "$FLOW,{rate},{total}*{checksum}", "checksum": "xor8", "delimiter": "\r\n"})
        .as_object()
        .cloned()
        .unwrap();
        let (p, issues) = parse_protocol(Some(&cfg), "c");
        assert!(issues.is_empty(), "{issues:?}");
        let p = p.unwrap();
        assert_eq!(p.framing, Framing::Delimiter(b"\r\n".to_vec()));
        let fields = p.field_names();
        let v = json!({"field": "totl"}).as_object().cloned().unwrap();
        let (vis, issues) = parse_visitor(Some(&v), "v", Some(&fields));
        assert!(vis.is_none());
        assert!(
            issues[0].message.contains("has no field \"totl\""),
            "{issues:?}"
        );
        let v = json!({"field": "total", "write": "$ZERO"})
            .as_object()
            .cloned()
            .unwrap();
        let (vis, issues) = parse_visitor(Some(&v), "v", Some(&fields));
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(vis.unwrap().write.as_deref(), Some("$ZERO"));
    }

    #[test]
    fn bad_pattern_is_an_error_not_a_panic() {
        let cfg = json!({"serialName": "/dev/x", "pattern": "(unclosed"})
            .as_object()
            .cloned()
            .unwrap();
        let (p, issues) = parse_protocol(Some(&cfg), "c");
        assert!(p.is_none());
        assert_eq!(issues[0].path, "c.pattern");
    }
}
