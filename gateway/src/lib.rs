//! The Ballast edge gateway as a library: config, twin store, embedded broker, twin logic and
//! the KubeEdge MQTT API, the runtime that runs mappers, and the demo. The `ballast-gateway`
//! binary is a thin CLI over it.

pub mod broker;
pub mod check;
pub mod config;
pub mod demo;
pub mod front;
pub mod link_store;
pub mod metrics;
pub mod runtime;
pub mod store;
pub mod twin_cli;
pub mod twins;
