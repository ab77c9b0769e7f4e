//! The seamless list-watch channel as two state machines without I/O (see
//! docs/CLOUD-LINK.md): [`edge::Edge`] (its upstream half in [`upstream`]) and
//! [`hub::Session`], the messages they exchange ([`msg`]) and the digest an edge's hello
//! carries ([`digest`]). Time comes in as an argument;
//! a driver moves bytes and timers and nothing else.

pub mod digest;
pub mod edge;
pub mod hub;
pub mod msg;
pub mod upstream;

/// A downstream object: an opaque version and the object as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// The Kubernetes resourceVersion (compared for equality only).
    pub version: String,
    /// The object as JSON.
    pub body: String,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The connection went away.
    Lost,
    /// Nothing heard for two heartbeats.
    Timeout,
    /// The hub refused the hello (bad credentials): retrying will not help until they change.
    Refused(String),
    /// The peer broke the protocol.
    Protocol(String),
}
