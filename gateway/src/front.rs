//! The broker's front door: clients connect here, the gateway relays to rumqttd on a private
//! loopback listener.
//!
//! Why: KubeEdge's device topics start with `$hw/` and `$ke/`, and rumqttd 0.20 refuses any
//! subscription whose filter starts with `$` (it closes the connection) and never matches a
//! `$` topic. The front door renames those two prefixes on the way in (`$hw/…` becomes
//! `_sys/hw/…`, `$ke/…` becomes `_sys/ke/…`, in PUBLISH topics and SUBSCRIBE/UNSUBSCRIBE
//! filters) and back on the way out (PUBLISH topics), so clients see KubeEdge's topics
//! unchanged. Every other packet passes through byte for byte. `_sys/` is reserved. This is
//! also where TLS will be terminated (rumqttd's TLS listener stalls on one silent client).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Internal prefix of KubeEdge's `$` topics.
pub const INTERNAL: &str = "_sys/";

/// The internal name of a client topic or filter.
pub fn inward(topic: &str) -> String {
    for p in ["$hw/", "$ke/"] {
        if let Some(rest) = topic.strip_prefix(p) {
            return format!("{INTERNAL}{}/{rest}", &p[1..3]);
        }
    }
    topic.to_string()
}

/// The client name of an internal topic.
pub fn outward(topic: &str) -> String {
    for p in ["hw/", "ke/"] {
        if let Some(rest) = topic.strip_prefix(INTERNAL).and_then(|t| t.strip_prefix(p)) {
            return format!("${p}{rest}");
        }
    }
    topic.to_string()
}

/// Largest MQTT packet relayed (fixed header included).
const MAX_PACKET: usize = 2 * 1024 * 1024;

/// A problem with the byte stream: the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The remaining-length field is longer than 4 bytes, or the packet too big.
    #[error("malformed or oversized MQTT packet")]
    Malformed,
}

/// Cuts the next whole MQTT packet off `buf`: `Ok(None)` while more bytes are needed.
pub fn next_packet(buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len: usize = 0;
    let mut shift = 0;
    let mut i = 1;
    loop {
        let Some(b) = buf.get(i).copied() else {
            return Ok(None);
        };
        len |= usize::from(b & 0x7F) << shift;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            return Err(FrameError::Malformed);
        }
    }
    let total = i + len;
    if total > MAX_PACKET {
        return Err(FrameError::Malformed);
    }
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some(buf.drain(..total).collect()))
}

fn encode_len(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn body(packet: &[u8]) -> Option<&[u8]> {
    let mut i = 1;
    while packet.get(i)? & 0x80 != 0 {
        i += 1;
    }
    packet.get(i + 1..)
}

fn rebuild(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    encode_len(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

fn take_str(b: &[u8], at: usize) -> Option<(&str, usize)> {
    let n = usize::from(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]));
    let s = std::str::from_utf8(b.get(at + 2..at + 2 + n)?).ok()?;
    Some((s, at + 2 + n))
}

fn push_str(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Renames topics in one packet with `map`. Packets it cannot read are returned unchanged (the
/// broker will judge them).
pub fn rewrite(packet: Vec<u8>, map: fn(&str) -> String, filters_too: bool) -> Vec<u8> {
    let first = packet[0];
    let Some(b) = body(&packet) else {
        return packet;
    };
    let out = match first >> 4 {
        3 => (|| {
            let (topic, rest) = take_str(b, 0)?;
            let mut nb = Vec::with_capacity(b.len() + 8);
            push_str(&map(topic), &mut nb);
            nb.extend_from_slice(&b[rest..]);
            Some(nb)
        })(),
        8 | 10 if filters_too => (|| {
            let mut nb = b.get(..2)?.to_vec();
            let mut at = 2;
            while at < b.len() {
                let (f, next) = take_str(b, at)?;
                push_str(&map(f), &mut nb);
                at = next;
                if first >> 4 == 8 {
                    nb.push(*b.get(at)?);
                    at += 1;
                }
            }
            Some(nb)
        })(),
        _ => None,
    };
    match out {
        Some(nb) => rebuild(first, &nb),
        None => packet,
    }
}

/// Relays packets from `rd` to `wr`, renaming with `map`.
async fn pump<R, W>(mut rd: R, mut wr: W, map: fn(&str) -> String, filters: bool)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 8192];
    loop {
        let n = match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut out = Vec::new();
        loop {
            match next_packet(&mut buf) {
                Ok(Some(p)) => out.extend(rewrite(p, map, filters)),
                Ok(None) => break,
                Err(_) => {
                    let _ = wr.shutdown().await;
                    return;
                }
            }
        }
        if !out.is_empty() && wr.write_all(&out).await.is_err() {
            break;
        }
    }
    let _ = wr.shutdown().await;
}

/// Relays one client connection (plain or TLS) to the broker at `inner`.
async fn relay<S>(client: S, inner: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Ok(broker) = TcpStream::connect(inner).await else {
        return;
    };
    let _ = broker.set_nodelay(true);
    let (crd, cwr) = tokio::io::split(client);
    let (brd, bwr) = broker.into_split();
    tokio::join!(pump(crd, bwr, inward, true), pump(brd, cwr, outward, false));
}

/// Serves MQTT over TLS on `listener`: each handshake runs in its own task with a deadline, so a
/// client that connects and says nothing blocks nobody (rumqttd's own TLS listener does the
/// handshake inside its accept loop).
pub async fn serve_tls(
    listener: TcpListener,
    inner: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    handshake: std::time::Duration,
    clients: std::sync::Arc<Clients>,
) {
    use std::sync::atomic::Ordering;
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let (acceptor, clients) = (acceptor.clone(), clients.clone());
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let tls = match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    clients.tls_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    clients.tls_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            clients.accepted.fetch_add(1, Ordering::Relaxed);
            clients.connected.fetch_add(1, Ordering::Relaxed);
            relay(tls, inner).await;
            clients.connected.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Loads a certificate chain and key (PEM) into a TLS acceptor; with `client_ca`, clients must
/// present a certificate signed by one of the CAs in that file.
pub fn acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
    client_ca: Option<&std::path::Path>,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    // A second crypto provider pulled in by some crate would make the builder panic: pick ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pem_certs = |path: &std::path::Path| -> Result<Vec<CertificateDer<'static>>, String> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no certificate in it", path.display()));
        }
        Ok(certs)
    };
    let certs = pem_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let builder = rustls::ServerConfig::builder();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in pem_certs(ca)? {
                roots
                    .add(c)
                    .map_err(|e| format!("{}: not a usable CA certificate: {e}", ca.display()))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder(std::sync::Arc::new(roots))
                    .build()
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

/// Connection counters of the front door.
#[derive(Debug, Default)]
pub struct Clients {
    /// Clients connected now.
    pub connected: std::sync::atomic::AtomicU64,
    /// Clients accepted since start.
    pub accepted: std::sync::atomic::AtomicU64,
    /// TLS handshakes that failed or timed out (bad or missing client certificate, wrong CA,
    /// a client that never finished).
    pub tls_failures: std::sync::atomic::AtomicU64,
}

/// Serves the front door on `listener`, relaying to the broker at `inner`.
pub async fn serve(listener: TcpListener, inner: SocketAddr, clients: std::sync::Arc<Clients>) {
    use std::sync::atomic::Ordering;
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let clients = clients.clone();
        clients.accepted.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            clients.connected.fetch_add(1, Ordering::Relaxed);
            // Counted down however the relay ends.
            struct Leave(std::sync::Arc<Clients>);
            impl Drop for Leave {
                fn drop(&mut self) {
                    self.0.connected.fetch_sub(1, Ordering::Relaxed);
                }
            }
            let _leave = Leave(clients);
            let _ = client.set_nodelay(true);
            relay(client, inner).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            inward("$hw/events/device/rig7/p/twin/get"),
            "_sys/hw/events/device/rig7/p/twin/get"
        );
        assert_eq!(
            inward("$ke/events/device/+/+/data/update"),
            "_sys/ke/events/device/+/+/data/update"
        );
        assert_eq!(
            inward("rig7/wellbay/gd101/state"),
            "rig7/wellbay/gd101/state"
        );
        assert_eq!(inward("$SYS/x"), "$SYS/x");
        assert_eq!(
            outward("_sys/hw/events/node/n/membership/get/result"),
            "$hw/events/node/n/membership/get/result"
        );
        assert_eq!(outward("other/topic"), "other/topic");
    }

    fn publish(topic: &str, payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        push_str(topic, &mut b);
        b.extend_from_slice(payload);
        rebuild(0x30, &b)
    }

    #[test]
    fn publish_and_subscribe_are_rewritten() {
        let p = rewrite(
            publish("$hw/events/device/a/b/twin/get", b"{}"),
            inward,
            true,
        );
        assert_eq!(p, publish("_sys/hw/events/device/a/b/twin/get", b"{}"));
        // SUBSCRIBE: pkid, then (filter, options) pairs.
        let mut b = vec![0, 7];
        push_str("$hw/#", &mut b);
        b.push(1);
        push_str("plain", &mut b);
        b.push(0);
        let s = rewrite(rebuild(0x82, &b), inward, true);
        let mut want = vec![0, 7];
        push_str("_sys/hw/#", &mut want);
        want.push(1);
        push_str("plain", &mut want);
        want.push(0);
        assert_eq!(s, rebuild(0x82, &want));
        // Other packets pass through unchanged.
        assert_eq!(rewrite(vec![0xC0, 0], inward, true), vec![0xC0, 0]);
    }

    #[test]
    fn framing_handles_fragments_long_lengths_and_garbage() {
        let big = publish("t", &vec![7u8; 300]);
        let mut buf = big[..2].to_vec();
        assert_eq!(next_packet(&mut buf), Ok(None));
        buf.extend_from_slice(&big[2..]);
        buf.extend_from_slice(&[0xC0, 0]);
        assert_eq!(next_packet(&mut buf), Ok(Some(big)));
        assert_eq!(next_packet(&mut buf), Ok(Some(vec![0xC0, 0])));
        assert!(buf.is_empty());
        let mut bad = vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
        assert_eq!(next_packet(&mut bad), Err(FrameError::Malformed));
        // A truncated topic inside a packet: passed on unchanged for the broker to refuse.
        let odd = rebuild(0x30, &[0, 50, b'a']);
        assert_eq!(rewrite(odd.clone(), inward, true), odd);
    }
}
