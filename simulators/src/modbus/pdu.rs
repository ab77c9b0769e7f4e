//! The Modbus PDU codec of the simulators: request PDUs in, response PDUs out. Pure.
//!
//! Shared by the TCP (MBAP) and RTU (address + CRC) framings. Function codes 1–6, 15 and 16
//! are served; any other is answered with exception 1 (illegal function), as a PLC would.

use tokio_modbus::{ExceptionCode, Request, Response};

/// Why a request PDU could not be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PduError {
    /// Answer with this exception for function code `fc`.
    Exception {
        /// The request's function code.
        fc: u8,
        /// The exception.
        code: ExceptionCode,
    },
    /// Too short or inconsistent: no answer is possible, the frame is dropped.
    Malformed,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Most registers a read may ask for (Modbus application protocol 1.1b3, 6.3).
pub const MAX_READ_REGISTERS: u16 = 125;
/// Most bits a read may ask for.
pub const MAX_READ_BITS: u16 = 2000;
/// Most registers a write may carry.
pub const MAX_WRITE_REGISTERS: u16 = 123;
/// Most coils a write may carry.
pub const MAX_WRITE_BITS: u16 = 1968;

/// Decodes a request PDU (function code first).
pub fn decode_request(pdu: &[u8]) -> Result<Request<'static>, PduError> {
    let fc = *pdu.first().ok_or(PduError::Malformed)?;
    let illegal_value = PduError::Exception {
        fc,
        code: ExceptionCode::IllegalDataValue,
    };
    let addr = be16(pdu, 1).ok_or(PduError::Malformed);
    let qty = be16(pdu, 3).ok_or(PduError::Malformed);
    let check = |q: u16, max: u16| {
        if (1..=max).contains(&q) {
            Ok(q)
        } else {
            Err(illegal_value.clone())
        }
    };
    match fc {
        0x01 => Ok(Request::ReadCoils(addr?, check(qty?, MAX_READ_BITS)?)),
        0x02 => Ok(Request::ReadDiscreteInputs(
            addr?,
            check(qty?, MAX_READ_BITS)?,
        )),
        0x03 => Ok(Request::ReadHoldingRegisters(
            addr?,
            check(qty?, MAX_READ_REGISTERS)?,
        )),
        0x04 => Ok(Request::ReadInputRegisters(
            addr?,
            check(qty?, MAX_READ_REGISTERS)?,
        )),
        0x05 => match qty? {
            0xFF00 => Ok(Request::WriteSingleCoil(addr?, true)),
            0x0000 => Ok(Request::WriteSingleCoil(addr?, false)),
            _ => Err(illegal_value),
        },
        0x06 => Ok(Request::WriteSingleRegister(addr?, qty?)),
        0x0F => {
            let q = check(qty?, MAX_WRITE_BITS)?;
            let n = usize::from(*pdu.get(5).ok_or(PduError::Malformed)?);
            let data = pdu.get(6..6 + n).ok_or(PduError::Malformed)?;
            if n != usize::from(q).div_ceil(8) {
                return Err(illegal_value);
            }
            let coils = (0..usize::from(q))
                .map(|i| data[i / 8] >> (i % 8) & 1 == 1)
                .collect::<Vec<_>>();
            Ok(Request::WriteMultipleCoils(addr?, coils.into()))
        }
        0x10 => {
            let q = check(qty?, MAX_WRITE_REGISTERS)?;
            let n = usize::from(*pdu.get(5).ok_or(PduError::Malformed)?);
            let data = pdu.get(6..6 + n).ok_or(PduError::Malformed)?;
            if n != usize::from(q) * 2 {
                return Err(illegal_value);
            }
            let words = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect::<Vec<_>>();
            Ok(Request::WriteMultipleRegisters(addr?, words.into()))
        }
        _ => Err(PduError::Exception {
            fc,
            code: ExceptionCode::IllegalFunction,
        }),
    }
}

/// The total length of an RTU request frame (address, PDU, CRC) once enough of it has arrived
/// to tell; `None` while more bytes are needed.
pub fn rtu_request_len(buf: &[u8]) -> Option<usize> {
    let fc = *buf.get(1)?;
    match fc {
        0x01..=0x06 => Some(8),
        0x0F | 0x10 => buf.get(6).map(|n| 9 + usize::from(*n)),
        // Unknown function: assume the shortest frame (address, fc, 4 data bytes, CRC); a real
        // slave would wait for silence, and answers illegal function either way.
        _ => Some(8),
    }
}

/// The function code of a request.
pub fn function_code(req: &Request<'_>) -> u8 {
    match req {
        Request::ReadCoils(..) => 0x01,
        Request::ReadDiscreteInputs(..) => 0x02,
        Request::ReadHoldingRegisters(..) => 0x03,
        Request::ReadInputRegisters(..) => 0x04,
        Request::WriteSingleCoil(..) => 0x05,
        Request::WriteSingleRegister(..) => 0x06,
        Request::WriteMultipleCoils(..) => 0x0F,
        Request::WriteMultipleRegisters(..) => 0x10,
        _ => 0,
    }
}

fn push_bits(out: &mut Vec<u8>, bits: &[bool]) {
    let n = bits.len().div_ceil(8);
    out.push(n as u8);
    let start = out.len();
    out.resize(start + n, 0);
    for (i, b) in bits.iter().enumerate() {
        if *b {
            out[start + i / 8] |= 1 << (i % 8);
        }
    }
}

fn push_words(out: &mut Vec<u8>, words: &[u16]) {
    out.push((words.len() * 2) as u8);
    for w in words {
        out.extend_from_slice(&w.to_be_bytes());
    }
}

/// Appends a response PDU. Responses the simulator never makes encode as an illegal-function
/// exception.
pub fn encode_response(resp: &Response, out: &mut Vec<u8>) {
    match resp {
        Response::ReadCoils(bits) => {
            out.push(0x01);
            push_bits(out, bits);
        }
        Response::ReadDiscreteInputs(bits) => {
            out.push(0x02);
            push_bits(out, bits);
        }
        Response::ReadHoldingRegisters(w) => {
            out.push(0x03);
            push_words(out, w);
        }
        Response::ReadInputRegisters(w) => {
            out.push(0x04);
            push_words(out, w);
        }
        Response::WriteSingleCoil(a, on) => {
            out.push(0x05);
            out.extend_from_slice(&a.to_be_bytes());
            out.extend_from_slice(&(if *on { 0xFF00u16 } else { 0 }).to_be_bytes());
        }
        Response::WriteSingleRegister(a, v) => {
            out.push(0x06);
            out.extend_from_slice(&a.to_be_bytes());
            out.extend_from_slice(&v.to_be_bytes());
        }
        Response::WriteMultipleCoils(a, q) => {
            out.push(0x0F);
            out.extend_from_slice(&a.to_be_bytes());
            out.extend_from_slice(&q.to_be_bytes());
        }
        Response::WriteMultipleRegisters(a, q) => {
            out.push(0x10);
            out.extend_from_slice(&a.to_be_bytes());
            out.extend_from_slice(&q.to_be_bytes());
        }
        _ => encode_exception(0x2B, ExceptionCode::IllegalFunction, out),
    }
}

/// Appends an exception response PDU.
pub fn encode_exception(fc: u8, code: ExceptionCode, out: &mut Vec<u8>) {
    out.push(fc | 0x80);
    out.push(u8::from(code));
}

/// Length in bytes of the response PDU to a request, for line timing.
pub fn response_pdu_len(req: &Request<'_>) -> usize {
    match req {
        Request::ReadCoils(_, q) | Request::ReadDiscreteInputs(_, q) => {
            2 + usize::from(*q).div_ceil(8)
        }
        Request::ReadHoldingRegisters(_, q) | Request::ReadInputRegisters(_, q) => {
            2 + 2 * usize::from(*q)
        }
        _ => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_reads_and_writes() {
        assert_eq!(
            decode_request(&[3, 0, 10, 0, 2]),
            Ok(Request::ReadHoldingRegisters(10, 2))
        );
        assert_eq!(
            decode_request(&[5, 0, 1, 0xFF, 0]),
            Ok(Request::WriteSingleCoil(1, true))
        );
        assert_eq!(
            decode_request(&[0x10, 0, 4, 0, 2, 4, 0x41, 0x20, 0, 0]),
            Ok(Request::WriteMultipleRegisters(4, vec![0x4120, 0].into()))
        );
        assert_eq!(
            decode_request(&[0x0F, 0, 0, 0, 10, 2, 0b0000_0101, 0b10]),
            Ok(Request::WriteMultipleCoils(
                0,
                vec![
                    true, false, true, false, false, false, false, false, false, true
                ]
                .into()
            ))
        );
    }

    #[test]
    fn refuses_bad_requests() {
        let ex = |fc, code| Err(PduError::Exception { fc, code });
        assert_eq!(
            decode_request(&[3, 0, 0, 0, 126]),
            ex(3, ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            decode_request(&[1, 0, 0, 0, 0]),
            ex(1, ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            decode_request(&[5, 0, 0, 0x12, 0x34]),
            ex(5, ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            decode_request(&[0x2B, 0x0E]),
            ex(0x2B, ExceptionCode::IllegalFunction)
        );
        assert_eq!(decode_request(&[3, 0]), Err(PduError::Malformed));
        assert_eq!(decode_request(&[]), Err(PduError::Malformed));
        assert_eq!(
            decode_request(&[0x10, 0, 0, 0, 2, 3, 1, 2, 3]),
            ex(0x10, ExceptionCode::IllegalDataValue)
        );
    }

    #[test]
    fn encodes_responses() {
        let mut out = Vec::new();
        encode_response(&Response::ReadCoils(vec![true, false, true]), &mut out);
        assert_eq!(out, [1, 1, 0b101]);
        out.clear();
        encode_response(&Response::ReadInputRegisters(vec![0x4120, 0]), &mut out);
        assert_eq!(out, [4, 4, 0x41, 0x20, 0, 0]);
        out.clear();
        encode_exception(3, ExceptionCode::IllegalDataAddress, &mut out);
        assert_eq!(out, [0x83, 2]);
    }

    #[test]
    fn rtu_lengths() {
        assert_eq!(rtu_request_len(&[1]), None);
        assert_eq!(rtu_request_len(&[1, 3]), Some(8));
        assert_eq!(rtu_request_len(&[1, 0x10, 0, 0, 0, 2]), None);
        assert_eq!(rtu_request_len(&[1, 0x10, 0, 0, 0, 2, 4]), Some(13));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_request(&b);
            let _ = rtu_request_len(&b);
        }
    }
}
