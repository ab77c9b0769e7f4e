//! Modbus RTU transport of a simulated endpoint, on any byte stream (a pty, a serial port).
//!
//! The line can be timed: at a given baud rate a reply is not delivered before the request and
//! the reply could have crossed the wire, with the 3.5-character silence between them, so a
//! pseudo-terminal (which moves bytes instantly) behaves like an RS-485 line for benchmarks.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use device_models::protocol::serial::crc16_modbus;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::pdu::{self, PduError};
use super::{Decision, Endpoint, Stats};

/// Timing of a serial line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LineTiming {
    /// Bits per second.
    pub baud: u32,
    /// Bits per character on the wire (11 for 8E1 or 8N2, 10 for 8N1).
    pub bits_per_char: u32,
}

impl LineTiming {
    /// Time one character takes on the wire.
    pub fn char_time(&self) -> Duration {
        Duration::from_secs_f64(f64::from(self.bits_per_char) / f64::from(self.baud.max(1)))
    }

    /// The silence that ends a frame: 3.5 characters, at least 1.75 ms above 19200 baud (Modbus
    /// over serial line 1.02, 2.5.1.1).
    pub fn frame_gap(&self) -> Duration {
        if self.baud > 19200 {
            Duration::from_micros(1750)
        } else {
            self.char_time().mul_f64(3.5)
        }
    }

    /// Time `n` bytes take on the wire.
    pub fn bytes_time(&self, n: usize) -> Duration {
        self.char_time().mul_f64(n as f64)
    }

    /// The most registers per second a line can carry with reads of `per_read` registers
    /// (request, gap, reply, gap), for comparing benchmark figures with the physical limit.
    pub fn max_registers_per_s(&self, per_read: u16) -> f64 {
        let cycle = self.bytes_time(8)
            + self.frame_gap()
            + self.bytes_time(5 + 2 * usize::from(per_read))
            + self.frame_gap();
        f64::from(per_read) / cycle.as_secs_f64()
    }
}

/// Largest RTU frame.
const MAX_FRAME: usize = 256;

/// Serves RTU requests on `io` until it closes. `timing` of `None` answers at once.
pub async fn serve<T: AsyncRead + AsyncWrite + Unpin>(
    mut io: T,
    ep: Arc<Endpoint>,
    timing: Option<LineTiming>,
) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(MAX_FRAME * 2);
    let mut first_byte_at: Option<Instant> = None;
    loop {
        while let Some(len) = pdu::rtu_request_len(&buf) {
            if len > MAX_FRAME {
                buf.clear();
                break;
            }
            if buf.len() < len {
                break;
            }
            let frame: Vec<u8> = buf.drain(..len).collect();
            let started = first_byte_at.take().unwrap_or_else(Instant::now);
            if !buf.is_empty() {
                first_byte_at = Some(Instant::now());
            }
            let crc = u16::from_le_bytes([frame[len - 2], frame[len - 1]]);
            if crc16_modbus(&frame[..len - 2]) != crc {
                // A slave ignores a frame with a bad CRC, and what follows it until silence.
                Stats::bump(&ep.stats.requests);
                Stats::bump(&ep.stats.dropped);
                buf.clear();
                first_byte_at = None;
                break;
            }
            let unit = frame[0];
            let body = &frame[1..len - 2];
            let reply = answer(&ep, unit, body).await;
            let Some(mut reply) = reply else { continue };
            if let Some(t) = timing {
                let due = started + t.bytes_time(len) + t.frame_gap() + t.bytes_time(reply.len());
                tokio::time::sleep_until(due).await;
            }
            if reply.is_empty() {
                continue;
            }
            io.write_all(&reply).await?;
            reply.clear();
        }
        let before = buf.len();
        let n = io.read_buf(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        if before == 0 {
            first_byte_at = Some(Instant::now());
        }
        if buf.len() > MAX_FRAME * 2 {
            buf.clear();
        }
    }
}

/// The reply frame (address, PDU, CRC) to a request, or `None` for no reply.
async fn answer(ep: &Endpoint, unit: u8, body: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![unit];
    let (decision, fc) = match pdu::decode_request(body) {
        Ok(req) => (ep.decide(unit, &req), body[0]),
        Err(PduError::Exception { fc, code }) => {
            Stats::bump(&ep.stats.requests);
            Stats::bump(&ep.stats.exceptions);
            // An absent slave does not answer, not even with an exception.
            ep.slave(unit)?;
            pdu::encode_exception(fc, code, &mut out);
            push_crc(&mut out);
            return Some(out);
        }
        Err(PduError::Malformed) => {
            Stats::bump(&ep.stats.requests);
            Stats::bump(&ep.stats.dropped);
            return None;
        }
    };
    match decision {
        Decision::NoReply => None,
        Decision::Reply {
            result,
            after,
            garbage,
            wrong_id,
        } => {
            if !after.is_zero() {
                tokio::time::sleep(after).await;
            }
            // Broadcast (address 0) is carried out and never answered.
            if unit == 0 {
                return None;
            }
            match &result {
                Ok(resp) => pdu::encode_response(resp, &mut out),
                Err(code) => pdu::encode_exception(fc, *code, &mut out),
            }
            if wrong_id {
                out[0] = out[0].wrapping_add(1).max(1);
            }
            push_crc(&mut out);
            if garbage {
                let len = out.len();
                out = ep.garbage(len);
            }
            Some(out)
        }
    }
}

fn push_crc(out: &mut Vec<u8>) {
    let crc = crc16_modbus(out);
    out.extend_from_slice(&crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_limit_at_19200_8e1() {
        let t = LineTiming {
            baud: 19200,
            bits_per_char: 11,
        };
        // About 800 registers/s with 125-register reads, as the mapper issue expects.
        let max = t.max_registers_per_s(125);
        assert!((780.0..830.0).contains(&max), "{max}");
        assert_eq!(t.frame_gap(), t.char_time().mul_f64(3.5));
    }
}
