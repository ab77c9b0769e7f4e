//! Ballast's shared types.
//!
//! Plain data and pure functions that every other crate uses: the KubeEdge
//! `devices.kubeedge.io/v1beta1` resources ([`crd`]), typed values ([`value`]), protocol configs
//! parsed from the free-form `configData` ([`protocol`]), the Modbus register codec
//! ([`codec`]), loading and validating a directory of YAML files ([`load`], [`validate`]), and
//! twin documents with their versions and merge rules ([`twin`], [`payload`]). No sockets, no
//! async runtime.

pub mod codec;
pub mod crd;
pub mod diag;
pub mod load;
pub mod payload;
pub mod protocol;
pub mod twin;
pub mod validate;
pub mod value;
pub mod yaml;

pub use diag::{Diagnostic, Severity};
pub use validate::{DeviceConfig, DeviceSet, PropertyConfig, check_path};
pub use value::Value;
