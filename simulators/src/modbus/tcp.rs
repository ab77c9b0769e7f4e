//! Modbus TCP transport of a simulated endpoint: MBAP framing, pipelined requests, and the
//! connection-level faults (garbage, wrong transaction id, close after N requests).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::pdu::{self, PduError};
use super::{Decision, Endpoint, Stats};

/// A running TCP listener; stops (with all its connections) when dropped.
#[derive(Debug)]
pub struct TcpSim {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it serves.
    pub endpoint: Arc<Endpoint>,
    task: JoinHandle<()>,
}

impl Drop for TcpSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` (port 0 for any) and serves `endpoint` on it.
pub async fn spawn(addr: SocketAddr, endpoint: Arc<Endpoint>) -> io::Result<TcpSim> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let ep = endpoint.clone();
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        Stats::bump(&ep.stats.connections);
                        conns.spawn(serve_connection(stream, ep.clone()));
                    }
                    // Out of file descriptors and the like: keep listening.
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    });
    Ok(TcpSim {
        addr,
        endpoint,
        task,
    })
}

/// Largest MBAP length field: unit id plus a 253-byte PDU.
const MAX_MBAP_LEN: usize = 254;

/// Serves one connection until the client closes it, sends something that is not Modbus TCP,
/// or a close-after fault fires.
pub async fn serve_connection(mut stream: TcpStream, ep: Arc<Endpoint>) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    let mut served: u64 = 0;
    let close_after = ep.close_after();
    loop {
        // Serve every complete frame in the buffer, then write the replies at once.
        let mut used = 0;
        let mut close = false;
        while buf.len() - used >= 7 {
            let f = &buf[used..];
            let len = usize::from(u16::from_be_bytes([f[4], f[5]]));
            let proto = u16::from_be_bytes([f[2], f[3]]);
            if proto != 0 || !(2..=MAX_MBAP_LEN).contains(&len) {
                // Not Modbus TCP: a device drops such a connection.
                return Ok(());
            }
            if f.len() < 6 + len {
                break;
            }
            let tid = u16::from_be_bytes([f[0], f[1]]);
            let unit = f[6];
            let frame_pdu = &f[7..6 + len];
            used += 6 + len;
            served += 1;
            answer(&ep, tid, unit, frame_pdu, &mut out).await;
            if close_after.is_some_and(|n| served >= n) {
                close = true;
                break;
            }
        }
        buf.drain(..used);
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if close {
            return Ok(());
        }
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(4096);
        }
        let n = stream.read_buf(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
    }
}

async fn answer(ep: &Endpoint, tid: u16, unit: u8, frame_pdu: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 7]);
    let decision = match pdu::decode_request(frame_pdu) {
        Ok(req) => ep.decide(unit, &req),
        Err(PduError::Exception { fc, code }) => {
            Stats::bump(&ep.stats.requests);
            Stats::bump(&ep.stats.exceptions);
            pdu::encode_exception(fc, code, out);
            finish(out, start, tid, unit);
            return;
        }
        Err(PduError::Malformed) => {
            Stats::bump(&ep.stats.requests);
            Stats::bump(&ep.stats.dropped);
            out.truncate(start);
            return;
        }
    };
    match decision {
        Decision::NoReply => out.truncate(start),
        Decision::Reply {
            result,
            after,
            garbage,
            wrong_id,
        } => {
            if !after.is_zero() {
                tokio::time::sleep(after).await;
            }
            match &result {
                Ok(resp) => pdu::encode_response(resp, out),
                Err(code) => pdu::encode_exception(frame_pdu[0], *code, out),
            }
            let tid = if wrong_id { tid ^ 0x5A5A } else { tid };
            finish(out, start, tid, unit);
            if garbage {
                let junk = ep.garbage(out.len() - start);
                out[start..].copy_from_slice(&junk);
            }
        }
    }
}

fn finish(out: &mut [u8], start: usize, tid: u16, unit: u8) {
    let len = (out.len() - start - 6) as u16;
    out[start..start + 2].copy_from_slice(&tid.to_be_bytes());
    out[start + 2..start + 4].copy_from_slice(&[0, 0]);
    out[start + 4..start + 6].copy_from_slice(&len.to_be_bytes());
    out[start + 6] = unit;
}
