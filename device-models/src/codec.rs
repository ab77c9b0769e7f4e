//! The Modbus register codec: pure functions from register words to typed values and back.
//!
//! Registers are read as big-endian words. A multi-register value is assembled by optionally
//! reversing the register order (word swap: `CDAB`, `DCBA`) and swapping the two bytes of each
//! register (byte swap: `BADC`, `DCBA`), then reading the bytes as one big-endian number. Both
//! steps undo themselves, so encoding applies the same steps. For 64-bit values a word swap
//! reverses all four registers. Text uses the byte swap only: its registers are always in
//! address order.
//!
//! Scaling is `value = raw * scale + valueOffset`, applied after decoding and undone before
//! encoding; an integer register with a non-trivial scale yields a float.

use crate::protocol::Scaling;
use crate::protocol::modbus::{ByteOrder, DataType, ModbusVisitor};
use crate::value::Value;

/// Why registers could not become a value, or a value registers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecError {
    /// The number of registers does not match the data type.
    #[error("{data_type} needs {expected} registers, got {got}")]
    WrongLength {
        /// The data type.
        data_type: DataType,
        /// Registers it needs.
        expected: usize,
        /// Registers given.
        got: usize,
    },
    /// Text registers that are not UTF-8.
    #[error("registers do not hold UTF-8 text")]
    InvalidUtf8,
    /// The value does not fit the data type (after unscaling).
    #[error("{value} does not fit {data_type}")]
    OutOfRange {
        /// The value, as text.
        value: String,
        /// The data type.
        data_type: DataType,
    },
    /// The value is of a kind the data type cannot hold (text into an int16, say).
    #[error("a {kind} value cannot be written as {data_type}")]
    WrongType {
        /// What the value is.
        kind: &'static str,
        /// The data type.
        data_type: DataType,
    },
    /// A single bit of a register is written by read-modify-write: use [`set_bit`].
    #[error("a bit of a register is written by read-modify-write")]
    ReadModifyWrite,
}

fn bytes_of(words: &[u16], order: ByteOrder, text: bool) -> Vec<u8> {
    let mut ws: Vec<u16> = words.to_vec();
    if order.word_swap() && !text {
        ws.reverse();
    }
    let mut out = Vec::with_capacity(ws.len() * 2);
    for w in ws {
        let w = if order.byte_swap() { w.swap_bytes() } else { w };
        out.extend_from_slice(&w.to_be_bytes());
    }
    out
}

fn words_of(bytes: &[u8], order: ByteOrder, text: bool) -> Vec<u16> {
    let mut ws: Vec<u16> = bytes
        .chunks(2)
        .map(|c| {
            let w = u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]);
            if order.byte_swap() { w.swap_bytes() } else { w }
        })
        .collect();
    if order.word_swap() && !text {
        ws.reverse();
    }
    ws
}

/// Decodes registers into the raw (unscaled) value of `dt`.
pub fn decode(words: &[u16], dt: DataType, order: ByteOrder) -> Result<Value, CodecError> {
    let expected = usize::from(dt.registers());
    if words.len() != expected {
        return Err(CodecError::WrongLength {
            data_type: dt,
            expected,
            got: words.len(),
        });
    }
    let text = matches!(dt, DataType::String(_) | DataType::Bytes(_));
    let b = bytes_of(words, order, text);
    let arr = |n: usize| -> [u8; 8] {
        let mut a = [0u8; 8];
        a[8 - n..].copy_from_slice(&b[..n]);
        a
    };
    Ok(match dt {
        DataType::Bool => Value::Bool(words[0] != 0),
        DataType::Bit(n) => Value::Bool((words[0] >> n) & 1 == 1),
        DataType::Int16 => Value::Int(i64::from(i16::from_be_bytes([b[0], b[1]]))),
        DataType::Uint16 => Value::Int(i64::from(u16::from_be_bytes([b[0], b[1]]))),
        DataType::Int32 => Value::Int(i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))),
        DataType::Uint32 => Value::Int(i64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))),
        DataType::Int64 => Value::Int(i64::from_be_bytes(arr(8))),
        DataType::Uint64 => {
            let u = u64::from_be_bytes(arr(8));
            i64::try_from(u).map_or(Value::Uint(u), Value::Int)
        }
        DataType::Float32 => Value::Float(f64::from(f32::from_be_bytes([b[0], b[1], b[2], b[3]]))),
        DataType::Float64 => Value::Float(f64::from_be_bytes(arr(8))),
        DataType::String(_) => {
            let end = b.iter().rposition(|c| *c != 0).map_or(0, |i| i + 1);
            Value::String(
                String::from_utf8(b[..end].to_vec()).map_err(|_| CodecError::InvalidUtf8)?,
            )
        }
        DataType::Bytes(_) => Value::Bytes(b),
    })
}

/// Encodes the raw (unscaled) value `v` as the registers of `dt`.
pub fn encode(v: &Value, dt: DataType, order: ByteOrder) -> Result<Vec<u16>, CodecError> {
    let out_of_range = || CodecError::OutOfRange {
        value: v.to_string(),
        data_type: dt,
    };
    let wrong_type = |kind| CodecError::WrongType {
        kind,
        data_type: dt,
    };
    let int = || -> Result<i128, CodecError> {
        match v {
            Value::Bool(b) => Ok(i128::from(*b)),
            Value::Int(i) => Ok(i128::from(*i)),
            Value::Uint(u) => Ok(i128::from(*u)),
            Value::Float(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1.9e19 => {
                Ok(*f as i128)
            }
            Value::Float(_) => Err(out_of_range()),
            Value::String(_) => Err(wrong_type("text")),
            Value::Bytes(_) => Err(wrong_type("bytes")),
        }
    };
    let float = || -> Result<f64, CodecError> {
        match v {
            Value::String(_) => Err(wrong_type("text")),
            Value::Bytes(_) => Err(wrong_type("bytes")),
            other => other.as_f64().ok_or_else(out_of_range),
        }
    };
    let fit = |lo: i128, hi: i128| -> Result<i128, CodecError> {
        let i = int()?;
        if (lo..=hi).contains(&i) {
            Ok(i)
        } else {
            Err(out_of_range())
        }
    };
    let bytes: Vec<u8> = match dt {
        DataType::Bool => {
            let on = match v {
                Value::Bool(b) => *b,
                _ => fit(0, 1)? == 1,
            };
            return Ok(vec![u16::from(on)]);
        }
        DataType::Bit(_) => return Err(CodecError::ReadModifyWrite),
        DataType::Int16 => (fit(i16::MIN.into(), i16::MAX.into())? as i16)
            .to_be_bytes()
            .to_vec(),
        DataType::Uint16 => (fit(0, u16::MAX.into())? as u16).to_be_bytes().to_vec(),
        DataType::Int32 => (fit(i32::MIN.into(), i32::MAX.into())? as i32)
            .to_be_bytes()
            .to_vec(),
        DataType::Uint32 => (fit(0, u32::MAX.into())? as u32).to_be_bytes().to_vec(),
        DataType::Int64 => (fit(i64::MIN.into(), i64::MAX.into())? as i64)
            .to_be_bytes()
            .to_vec(),
        DataType::Uint64 => (fit(0, u64::MAX.into())? as u64).to_be_bytes().to_vec(),
        DataType::Float32 => {
            let f = float()?;
            if f.is_finite() && f.abs() > f64::from(f32::MAX) {
                return Err(out_of_range());
            }
            (f as f32).to_be_bytes().to_vec()
        }
        DataType::Float64 => float()?.to_be_bytes().to_vec(),
        DataType::String(n) | DataType::Bytes(n) => {
            let raw: Vec<u8> = match v {
                Value::String(s) => s.as_bytes().to_vec(),
                Value::Bytes(b) => b.clone(),
                _ => v.to_string().into_bytes(),
            };
            let cap = usize::from(n) * 2;
            if raw.len() > cap {
                return Err(out_of_range());
            }
            let mut padded = raw;
            padded.resize(cap, 0);
            return Ok(words_of(&padded, order, true));
        }
    };
    Ok(words_of(&bytes, order, false))
}

/// Sets or clears bit `bit` of `word` (the write of a [`DataType::Bit`] property).
pub fn set_bit(word: u16, bit: u8, on: bool) -> u16 {
    let mask = 1u16 << (bit & 15);
    if on { word | mask } else { word & !mask }
}

/// Applies scale and value offset to a raw value. Identity scaling keeps integers integers.
pub fn scale(raw: Value, s: &Scaling) -> Value {
    if s.scale == 1.0 && s.value_offset == 0.0 {
        return raw;
    }
    match raw.as_f64() {
        Some(f) if !matches!(raw, Value::Bool(_)) => {
            // A scale of 1/n (0.1, 0.001) divides by n, so 199 × 0.1 is 19.9, not
            // 19.900000000000002.
            let n = 1.0 / s.scale;
            let scaled = if n.abs() >= 1.0 && (n - n.round()).abs() < 1e-9 {
                f / n.round()
            } else {
                f * s.scale
            };
            Value::Float(scaled + s.value_offset)
        }
        _ => raw,
    }
}

/// Undoes [`scale`] for a value about to be written as `dt`: integer types are rounded to the
/// nearest raw step.
pub fn unscale(v: &Value, s: &Scaling, dt: DataType) -> Result<Value, CodecError> {
    if (s.scale == 1.0 && s.value_offset == 0.0) || !dt.is_numeric() {
        return Ok(v.clone());
    }
    let f = match v {
        Value::String(_) => {
            return Err(CodecError::WrongType {
                kind: "text",
                data_type: dt,
            });
        }
        Value::Bytes(_) => {
            return Err(CodecError::WrongType {
                kind: "bytes",
                data_type: dt,
            });
        }
        other => other.as_f64().unwrap_or(0.0),
    };
    let raw = (f - s.value_offset) / s.scale;
    Ok(match dt {
        DataType::Float32 | DataType::Float64 => Value::Float(raw),
        _ => {
            let r = raw.round();
            if !r.is_finite() || r.abs() > 1.8e19 {
                return Err(CodecError::OutOfRange {
                    value: v.to_string(),
                    data_type: dt,
                });
            }
            if r < 0.0 {
                Value::Int(r as i64)
            } else {
                Value::Uint(r as u64)
            }
        }
    })
}

impl ModbusVisitor {
    /// The property's value from its registers: decoded, then scaled.
    pub fn decode_registers(&self, words: &[u16]) -> Result<Value, CodecError> {
        decode(words, self.data_type, self.order).map(|raw| scale(raw, &self.scaling))
    }

    /// The registers that write `v`: unscaled, then encoded.
    pub fn encode_value(&self, v: &Value) -> Result<Vec<u16>, CodecError> {
        let raw = unscale(v, &self.scaling, self.data_type)?;
        encode(&raw, self.data_type, self.order)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ByteOrder::*;
    use DataType::*;
    use proptest::prelude::*;

    const ORDERS: [ByteOrder; 4] = [Abcd, Badc, Cdab, Dcba];

    #[test]
    fn float32_ten_in_every_order() {
        // 10.0f32 = 0x41200000
        let cases = [
            (Abcd, [0x4120, 0x0000]),
            (Badc, [0x2041, 0x0000]),
            (Cdab, [0x0000, 0x4120]),
            (Dcba, [0x0000, 0x2041]),
        ];
        for (order, words) in cases {
            assert_eq!(
                decode(&words, Float32, order),
                Ok(Value::Float(10.0)),
                "{order:?}"
            );
            assert_eq!(
                encode(&Value::Float(10.0), Float32, order).unwrap(),
                words,
                "{order:?}"
            );
        }
    }

    #[test]
    fn known_integer_patterns() {
        assert_eq!(decode(&[0xFFFF], Int16, Abcd), Ok(Value::Int(-1)));
        assert_eq!(decode(&[0xFFFF], Uint16, Abcd), Ok(Value::Int(65535)));
        assert_eq!(decode(&[0x3412], Uint16, Badc), Ok(Value::Int(0x1234)));
        // 0x12345678 as ABCD and CDAB
        assert_eq!(
            decode(&[0x1234, 0x5678], Uint32, Abcd),
            Ok(Value::Int(0x1234_5678))
        );
        assert_eq!(
            decode(&[0x5678, 0x1234], Uint32, Cdab),
            Ok(Value::Int(0x1234_5678))
        );
        assert_eq!(
            decode(&[0x7856, 0x3412], Uint32, Dcba),
            Ok(Value::Int(0x1234_5678))
        );
        assert_eq!(decode(&[0xFFFF, 0xFFFE], Int32, Abcd), Ok(Value::Int(-2)));
        // 64-bit: 0x0102030405060708
        let w = [0x0102, 0x0304, 0x0506, 0x0708];
        assert_eq!(
            decode(&w, Int64, Abcd),
            Ok(Value::Int(0x0102_0304_0506_0708))
        );
        let rev = [0x0708, 0x0506, 0x0304, 0x0102];
        assert_eq!(
            decode(&rev, Int64, Cdab),
            Ok(Value::Int(0x0102_0304_0506_0708))
        );
        assert_eq!(
            decode(&[0xFFFF; 4], Uint64, Abcd),
            Ok(Value::Uint(u64::MAX))
        );
        // 1.0f64 = 0x3FF0000000000000
        assert_eq!(
            decode(&[0x3FF0, 0, 0, 0], Float64, Abcd),
            Ok(Value::Float(1.0))
        );
        assert_eq!(
            decode(&[0, 0, 0, 0x3FF0], Float64, Cdab),
            Ok(Value::Float(1.0))
        );
    }

    #[test]
    fn bits_and_bools() {
        assert_eq!(decode(&[0b100], Bit(2), Abcd), Ok(Value::Bool(true)));
        assert_eq!(decode(&[0b100], Bit(1), Abcd), Ok(Value::Bool(false)));
        assert_eq!(decode(&[7], Bool, Abcd), Ok(Value::Bool(true)));
        assert_eq!(encode(&Value::Int(1), Bool, Abcd), Ok(vec![1]));
        assert!(encode(&Value::Int(2), Bool, Abcd).is_err());
        assert_eq!(
            encode(&Value::Bool(true), Bit(3), Abcd),
            Err(CodecError::ReadModifyWrite)
        );
        assert_eq!(set_bit(0b0001, 3, true), 0b1001);
        assert_eq!(set_bit(0b1001, 0, false), 0b1000);
    }

    #[test]
    fn strings() {
        // "ABC" in 2 registers: 0x4142 0x4300
        assert_eq!(
            decode(&[0x4142, 0x4300], String(2), Abcd),
            Ok(Value::String("ABC".into()))
        );
        assert_eq!(
            decode(&[0x4241, 0x0043], String(2), Badc),
            Ok(Value::String("ABC".into()))
        );
        assert_eq!(
            encode(&Value::String("ABC".into()), String(2), Abcd),
            Ok(vec![0x4142, 0x4300])
        );
        assert!(encode(&Value::String("ABCDE".into()), String(2), Abcd).is_err());
        assert_eq!(
            decode(&[0xFFFE], String(1), Abcd),
            Err(CodecError::InvalidUtf8)
        );
    }

    #[test]
    fn wrong_lengths_and_ranges() {
        assert!(matches!(
            decode(&[1], Float32, Abcd),
            Err(CodecError::WrongLength {
                expected: 2,
                got: 1,
                ..
            })
        ));
        assert!(encode(&Value::Int(70000), Int16, Abcd).is_err());
        assert!(encode(&Value::Int(-1), Uint32, Abcd).is_err());
        assert!(encode(&Value::Float(1.5), Int32, Abcd).is_err());
        assert!(encode(&Value::String("x".into()), Int32, Abcd).is_err());
        assert!(encode(&Value::Float(1e40), Float32, Abcd).is_err());
    }

    #[test]
    fn decimal_scales_give_the_decimal() {
        let s = Scaling {
            scale: 0.1,
            value_offset: 0.0,
            deadband: None,
        };
        assert_eq!(scale(Value::Int(199), &s), Value::Float(19.9));
        assert_eq!(scale(Value::Int(199), &s).to_string(), "19.9");
        let s = Scaling {
            scale: 0.001,
            value_offset: 0.0,
            deadband: None,
        };
        assert_eq!(scale(Value::Int(10800), &s).to_string(), "10.8");
    }

    #[test]
    fn scale_and_offset() {
        let s = Scaling {
            scale: 0.1,
            value_offset: -40.0,
            deadband: None,
        };
        // raw 655 -> 65.5 - 40 = 25.5
        let v = scale(Value::Int(655), &s);
        let Value::Float(f) = v else { panic!("{v:?}") };
        assert!((f - 25.5).abs() < 1e-9);
        assert_eq!(
            unscale(&Value::Float(25.5), &s, Int16),
            Ok(Value::Uint(655))
        );
        assert_eq!(
            unscale(&Value::Float(-50.0), &s, Int16),
            Ok(Value::Int(-100))
        );
        let ident = Scaling {
            scale: 1.0,
            value_offset: 0.0,
            deadband: None,
        };
        assert_eq!(scale(Value::Int(5), &ident), Value::Int(5));
    }

    fn words_for(dt: DataType) -> impl Strategy<Value = Vec<u16>> {
        proptest::collection::vec(any::<u16>(), usize::from(dt.registers()))
    }

    proptest! {
        #[test]
        fn encode_decode_round_trips_integers(i in any::<i64>(), o in 0usize..4) {
            let order = ORDERS[o];
            for (dt, lo, hi) in [(Int16, i16::MIN as i64, i16::MAX as i64), (Uint16, 0, u16::MAX as i64),
                                 (Int32, i32::MIN as i64, i32::MAX as i64), (Uint32, 0, u32::MAX as i64),
                                 (Int64, i64::MIN, i64::MAX)] {
                let v = Value::Int(i.clamp(lo, hi));
                let w = encode(&v, dt, order).unwrap();
                prop_assert_eq!(decode(&w, dt, order), Ok(v));
            }
            let u = i as u64;
            let w = encode(&Value::Uint(u), Uint64, order).unwrap();
            let back = decode(&w, Uint64, order).unwrap();
            prop_assert_eq!(back.as_f64(), Value::Uint(u).as_f64());
        }

        #[test]
        fn encode_decode_round_trips_floats(f in any::<f64>(), o in 0usize..4) {
            let order = ORDERS[o];
            prop_assume!(f.is_finite());
            let w = encode(&Value::Float(f), Float64, order).unwrap();
            prop_assert_eq!(decode(&w, Float64, order), Ok(Value::Float(f)));
            let g = f as f32;
            prop_assume!(g.is_finite());
            let w = encode(&Value::Float(f64::from(g)), Float32, order).unwrap();
            prop_assert_eq!(decode(&w, Float32, order), Ok(Value::Float(f64::from(g))));
        }

        #[test]
        fn decode_encode_round_trips_words(o in 0usize..4, w32 in words_for(Int32), w64 in words_for(Int64)) {
            let order = ORDERS[o];
            for (dt, w) in [(Int32, &w32), (Uint32, &w32), (Int64, &w64), (Uint64, &w64), (Bytes(4), &w64)] {
                let v = decode(w, dt, order).unwrap();
                prop_assert_eq!(&encode(&v, dt, order).unwrap(), w);
            }
        }

        #[test]
        fn text_round_trips(s in "[ -~]{0,8}", o in 0usize..4) {
            let order = ORDERS[o];
            let w = encode(&Value::String(s.clone()), String(4), order).unwrap();
            prop_assert_eq!(decode(&w, String(4), order), Ok(Value::String(s)));
        }

        #[test]
        fn scaled_round_trip_within_one_step(raw in -30000i64..30000, scale in 0.001f64..100.0, off in -1000.0f64..1000.0) {
            let s = Scaling { scale, value_offset: off, deadband: None };
            let v = super::scale(Value::Int(raw), &s);
            let back = unscale(&v, &s, Int16).unwrap();
            prop_assert_eq!(back.as_f64(), Some(raw as f64));
        }

        #[test]
        fn decode_never_panics(w in proptest::collection::vec(any::<u16>(), 0..6), n in 0u16..6, o in 0usize..4) {
            for dt in [Bool, Bit(15), Int16, Uint16, Int32, Uint32, Int64, Uint64, Float32, Float64, String(n), Bytes(n)] {
                let _ = decode(&w, dt, ORDERS[o]);
            }
        }
    }
}
