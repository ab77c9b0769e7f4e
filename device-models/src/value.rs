//! Typed values.
//!
//! KubeEdge keeps every twin value as a string; Ballast keeps a typed [`Value`] and converts to
//! and from the model's [`PropertyType`] at the edges. Text values may hold any UTF-8 up to
//! [`MAX_VALUE_BYTES`], unlike KubeEdge's narrow character regex.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::crd::PropertyType;

/// Largest value, in bytes of its text form, that Ballast accepts in a twin (64 KiB). Longer
/// values are refused with [`ValueError::TooLong`] rather than truncated.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// A typed property value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "lowercase")]
pub enum Value {
    /// true / false (coils, discrete inputs, flags).
    Bool(bool),
    /// Signed integer (every integer register type but uint64 above `i64::MAX`).
    Int(i64),
    /// Unsigned integer that does not fit `i64`.
    Uint(u64),
    /// Floating point, always kept as 64 bits.
    Float(f64),
    /// UTF-8 text.
    String(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
}

/// Why a text could not become a value of a type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    /// The text is not a value of the requested type.
    #[error("{text:?} is not a valid {expected}")]
    Invalid {
        /// The text that was given (cut to 64 characters).
        text: String,
        /// What was expected.
        expected: &'static str,
    },
    /// The text is longer than [`MAX_VALUE_BYTES`].
    #[error("value is {len} bytes, more than the {MAX_VALUE_BYTES} bytes allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A number that is not finite (NaN, infinity) where a twin needs a number.
    #[error("{0} is not a finite number")]
    NotFinite(f64),
}

fn invalid(text: &str, expected: &'static str) -> ValueError {
    ValueError::Invalid {
        text: text.chars().take(64).collect(),
        expected,
    }
}

impl Value {
    /// Parses the text form of a value of type `ty` (as found in `desired.value`, or in a
    /// `twin/update` payload).
    pub fn parse(ty: PropertyType, text: &str) -> Result<Value, ValueError> {
        if text.len() > MAX_VALUE_BYTES {
            return Err(ValueError::TooLong { len: text.len() });
        }
        let t = text.trim();
        match ty {
            PropertyType::Int => {
                if let Ok(i) = t.parse::<i64>() {
                    Ok(Value::Int(i))
                } else if let Ok(u) = t.parse::<u64>() {
                    Ok(Value::Uint(u))
                } else {
                    match t.parse::<f64>() {
                        // "3.0" is an integer written as a float; "3.5" is not.
                        Ok(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Value::Int(f as i64)),
                        _ => Err(invalid(text, "integer")),
                    }
                }
            }
            PropertyType::Float | PropertyType::Double => match t.parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(Value::Float(f)),
                Ok(f) => Err(ValueError::NotFinite(f)),
                Err(_) => Err(invalid(text, "number")),
            },
            PropertyType::Boolean => match t.to_ascii_lowercase().as_str() {
                "true" | "1" | "on" => Ok(Value::Bool(true)),
                "false" | "0" | "off" => Ok(Value::Bool(false)),
                _ => Err(invalid(text, "boolean (true, false, 1, 0, on, off)")),
            },
            PropertyType::String | PropertyType::Stream => Ok(Value::String(text.to_string())),
            PropertyType::Bytes => decode_hex(t)
                .map(Value::Bytes)
                .ok_or_else(|| invalid(text, "hex byte string (for instance 0a1bff)")),
        }
    }

    /// The value as a float, for numbers and booleans.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            Value::Int(i) => Some(*i as f64),
            Value::Uint(u) => Some(*u as f64),
            Value::Float(f) => Some(*f),
            Value::String(_) | Value::Bytes(_) => None,
        }
    }

    /// The value presented as the model's type: a coil read as 0/1 for an `INT` property, a
    /// scaled integer register for a `FLOAT` property. `None` when it cannot be shown as `ty`.
    pub fn to_type(&self, ty: PropertyType) -> Option<Value> {
        match (ty, self) {
            (PropertyType::Int, Value::Bool(b)) => Some(Value::Int(i64::from(*b))),
            (PropertyType::Int, Value::Int(_) | Value::Uint(_)) => Some(self.clone()),
            (PropertyType::Int, Value::Float(f)) if f.is_finite() && f.abs() < 9.0e18 => {
                Some(Value::Int(f.round() as i64))
            }
            (PropertyType::Float | PropertyType::Double, v) => v.as_f64().map(Value::Float),
            (PropertyType::Boolean, v) => v.as_f64().map(|f| Value::Bool(f != 0.0)),
            (PropertyType::String | PropertyType::Stream, v) => Some(Value::String(v.to_string())),
            (PropertyType::Bytes, Value::Bytes(_)) => Some(self.clone()),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    /// The text form KubeEdge's twins carry: `true`, `42`, `3.5`, the text itself, hex bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Uint(u) => write!(f, "{u}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::String(s) => f.write_str(s),
            Value::Bytes(b) => {
                for byte in b {
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
        }
    }
}

fn decode_hex(t: &str) -> Option<Vec<u8>> {
    let t = t.strip_prefix("0x").unwrap_or(t);
    if !t.len().is_multiple_of(2) {
        return None;
    }
    (0..t.len())
        .step_by(2)
        .map(|i| t.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_each_type() {
        assert_eq!(Value::parse(PropertyType::Int, " 42 "), Ok(Value::Int(42)));
        assert_eq!(Value::parse(PropertyType::Int, "3.0"), Ok(Value::Int(3)));
        assert!(Value::parse(PropertyType::Int, "3.5").is_err());
        assert_eq!(
            Value::parse(PropertyType::Int, "18446744073709551615"),
            Ok(Value::Uint(u64::MAX))
        );
        assert_eq!(
            Value::parse(PropertyType::Float, "0.1"),
            Ok(Value::Float(0.1))
        );
        assert!(matches!(
            Value::parse(PropertyType::Double, "NaN"),
            Err(ValueError::NotFinite(_))
        ));
        assert!(matches!(
            Value::parse(PropertyType::Double, "inf"),
            Err(ValueError::NotFinite(_))
        ));
        assert_eq!(
            Value::parse(PropertyType::Boolean, "ON"),
            Ok(Value::Bool(true))
        );
        assert!(Value::parse(PropertyType::Boolean, "yes please").is_err());
        assert_eq!(
            Value::parse(PropertyType::Bytes, "0a1bff"),
            Ok(Value::Bytes(vec![0x0a, 0x1b, 0xff]))
        );
        assert!(Value::parse(PropertyType::Bytes, "0a1").is_err());
    }

    #[test]
    fn any_utf8_text_up_to_the_limit() {
        let text = "Öl-Druck: 12 bar ✓ \"quoted\" {json} 油压";
        assert_eq!(
            Value::parse(PropertyType::String, text),
            Ok(Value::String(text.to_string()))
        );
        let long = "x".repeat(MAX_VALUE_BYTES + 1);
        assert_eq!(
            Value::parse(PropertyType::String, &long),
            Err(ValueError::TooLong {
                len: MAX_VALUE_BYTES + 1
            })
        );
    }

    #[test]
    fn presented_as_the_model_type() {
        assert_eq!(
            Value::Bool(true).to_type(PropertyType::Int),
            Some(Value::Int(1))
        );
        assert_eq!(
            Value::Int(7).to_type(PropertyType::Float),
            Some(Value::Float(7.0))
        );
        assert_eq!(
            Value::Float(2.6).to_type(PropertyType::Int),
            Some(Value::Int(3))
        );
        assert_eq!(
            Value::Int(0).to_type(PropertyType::Boolean),
            Some(Value::Bool(false))
        );
        assert_eq!(Value::String("a".into()).to_type(PropertyType::Int), None);
    }

    proptest! {
        #[test]
        fn text_form_round_trips(i in any::<i64>(), f in -1.0e300f64..1.0e300, b in any::<bool>(),
                                 bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            prop_assert_eq!(Value::parse(PropertyType::Int, &Value::Int(i).to_string()), Ok(Value::Int(i)));
            prop_assert_eq!(Value::parse(PropertyType::Double, &Value::Float(f).to_string()), Ok(Value::Float(f)));
            prop_assert_eq!(Value::parse(PropertyType::Boolean, &Value::Bool(b).to_string()), Ok(Value::Bool(b)));
            prop_assert_eq!(Value::parse(PropertyType::Bytes, &Value::Bytes(bytes.clone()).to_string()), Ok(Value::Bytes(bytes)));
        }

        #[test]
        fn parse_never_panics(s in ".*") {
            for ty in [PropertyType::Int, PropertyType::Float, PropertyType::Double, PropertyType::String,
                       PropertyType::Boolean, PropertyType::Bytes, PropertyType::Stream] {
                let _ = Value::parse(ty, &s);
            }
        }
    }
}
