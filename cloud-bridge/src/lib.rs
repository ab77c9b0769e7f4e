//! The seamless list-watch channel between an edge gateway and the hub.
//!
//! Built so far: the protocol's downstream half as state machines without I/O ([`proto`]):
//! digest, hello, expansion of differing buckets, pipelined and coalesced upserts and deletes
//! with cumulative acks after commit, heartbeats. Not yet: the upstream half (reported twins,
//! telemetry), the transports (WebSocket, QUIC) and the hub process.

pub mod proto;
