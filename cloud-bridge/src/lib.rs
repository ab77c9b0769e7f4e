//! The seamless list-watch channel between an edge gateway and the hub.
//!
//! Built so far: the protocol as state machines without I/O ([`proto`]). Downstream: digest,
//! hello, expansion of differing buckets, pipelined and coalesced upserts and deletes with
//! cumulative acks after commit, heartbeats. Upstream: reports coalesced per (device, property)
//! through outages, telemetry pulled from the outbox within a window and a rate, acked after
//! the sink stored it, reports ahead of telemetry. Not yet: the transports (WebSocket, QUIC),
//! the gateway's driver and the hub process (docs/CLOUD-LINK.md).

pub mod proto;
