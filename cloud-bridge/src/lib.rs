//! The seamless list-watch channel between an edge gateway and the hub.
//!
//! Built so far: the protocol as state machines without I/O ([`proto`]). Downstream: digest,
//! hello, expansion of differing buckets, pipelined and coalesced upserts and deletes with
//! cumulative acks after commit, heartbeats. Upstream: reports coalesced per (device, property)
//! through outages, telemetry pulled from the outbox within a window and a rate, acked after
//! the sink stored it, reports ahead of telemetry. Thin async drivers ([`driver`]) run either
//! end over any byte stream. Not yet: TLS and QUIC transports, the gateway's store behind the
//! edge driver, and the hub process (docs/CLOUD-LINK.md).

pub mod driver;
pub mod proto;
pub mod tls;
