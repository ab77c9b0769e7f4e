//! Twin values with versions, and the rules that merge them.
//!
//! Every twin value carries a [`TwinVersion`] `{cloud, edge}`. `cloud` is the version of the
//! cloud's copy the value derives from (the Device's `metadata.generation` when the desired value
//! came down); `edge` counts changes made on the site. The rules (ARCHITECTURE.md):
//! - desired: a newer cloud version wins over an older local change; a local change made after
//!   the last cloud version stands until the cloud changes again ([`merge_desired`]);
//! - reported: the edge always wins ([`merge_reported`]).

use serde::{Deserialize, Serialize};

use crate::crd::PropertyType;
use crate::value::Value;

/// Version of a twin value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TwinVersion {
    /// Version of the cloud copy this value derives from (0: never came from the cloud).
    pub cloud: u64,
    /// Number of changes made on the edge since.
    pub edge: u64,
}

/// One twin value: its text, version and when it was set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwinValue {
    /// The value as text (KubeEdge's form; see [`Value`] for the typed form).
    pub value: String,
    /// Its version.
    pub version: TwinVersion,
    /// When it was set, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

/// The twin of one property: what the site wants and what the device says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PropertyTwin {
    /// Value type, from the model.
    pub ty: PropertyType,
    /// Desired value, if any.
    pub desired: Option<TwinValue>,
    /// Last reported value, if any.
    pub reported: Option<TwinValue>,
}

/// What [`merge_desired`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DesiredMerge {
    /// The cloud's value is newer: it replaces the local one.
    TakeCloud(TwinValue),
    /// The local value stands (it is newer, or the cloud sent what we already have).
    KeepLocal,
}

/// Merges a desired value arriving from the cloud with the local one.
///
/// The cloud value wins when its cloud version is newer than the one the local value derives
/// from; it keeps the local edge count so that the edge's history stays monotonic. Otherwise
/// the local value stands: either it is the same cloud version (a resend after reconnect) or a
/// local change made after that version.
pub fn merge_desired(local: Option<&TwinValue>, cloud: &TwinValue) -> DesiredMerge {
    match local {
        None => DesiredMerge::TakeCloud(cloud.clone()),
        Some(l) if cloud.version.cloud > l.version.cloud => DesiredMerge::TakeCloud(TwinValue {
            value: cloud.value.clone(),
            version: TwinVersion {
                cloud: cloud.version.cloud,
                edge: l.version.edge,
            },
            timestamp_ms: cloud.timestamp_ms,
        }),
        Some(_) => DesiredMerge::KeepLocal,
    }
}

/// A desired value set on the site (local app, CLI): the cloud version stays, the edge count
/// goes up.
pub fn set_local_desired(local: Option<&TwinValue>, value: String, now_ms: i64) -> TwinValue {
    let base = local.map(|l| l.version).unwrap_or_default();
    TwinValue {
        value,
        version: TwinVersion {
            cloud: base.cloud,
            edge: base.edge + 1,
        },
        timestamp_ms: now_ms,
    }
}

/// A reading reported on the site: the edge count goes up.
pub fn set_reported(local: Option<&TwinValue>, value: String, now_ms: i64) -> TwinValue {
    set_local_desired(local, value, now_ms)
}

/// Merges reported values: the edge always wins; the cloud's copy only fills a gap (an edge
/// that lost its store learns the last value the cloud saw).
pub fn merge_reported(edge: Option<&TwinValue>, cloud: Option<&TwinValue>) -> Option<TwinValue> {
    edge.or(cloud).cloned()
}

/// Whether two texts are the same value of type `ty` (`"1"` and `"1.0"` are the same FLOAT).
///
/// FLOAT and DOUBLE values agree within the precision of a 32-bit float: a setpoint of 35.1
/// written to a float32 register reads back as 35.099998474121094, and that is the value the
/// operator asked for (compared exactly, the twin would show a delta forever and the gateway
/// would keep writing it). Integers compare exactly.
pub fn same_value(ty: PropertyType, a: &str, b: &str) -> bool {
    match (Value::parse(ty, a), Value::parse(ty, b)) {
        (Ok(x), Ok(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(fx), Some(fy)) if matches!(ty, PropertyType::Float | PropertyType::Double) => {
                let tolerance = 2.0 * f64::from(f32::EPSILON) * fx.abs().max(fy.abs());
                fx == fy || (fx - fy).abs() <= tolerance
            }
            (Some(fx), Some(fy)) => fx == fy,
            _ => x == y,
        },
        _ => a == b,
    }
}

impl PropertyTwin {
    /// The desired value still waiting to be reported back, if any: what `twin/update/delta`
    /// carries.
    pub fn delta(&self) -> Option<&str> {
        let desired = self.desired.as_ref()?;
        match &self.reported {
            Some(r) if same_value(self.ty, &desired.value, &r.value) => None,
            _ => Some(&desired.value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_read_back_from_float32_registers_are_the_value_that_was_set() {
        let f = PropertyType::Float;
        assert!(same_value(f, "35.1", "35.099998474121094"));
        assert!(same_value(f, "35.1", &f64::from(35.1f32).to_string()));
        assert!(same_value(
            PropertyType::Double,
            "0.1",
            &(0.1f32 as f64).to_string()
        ));
        assert!(same_value(f, "1", "1.0"));
        assert!(same_value(f, "0", "0.0"));
        assert!(!same_value(f, "35.1", "35.2"));
        assert!(!same_value(f, "35.1", "35.1001"));
        assert!(!same_value(f, "0", "0.000001"));
        // Integers beyond float32 precision still differ.
        assert!(!same_value(PropertyType::Int, "16777217", "16777216"));
    }

    fn tv(value: &str, cloud: u64, edge: u64) -> TwinValue {
        TwinValue {
            value: value.into(),
            version: TwinVersion { cloud, edge },
            timestamp_ms: 1,
        }
    }

    #[test]
    fn newer_cloud_version_wins_over_older_local_change() {
        // The site changed the setpoint while on cloud version 3; the cloud moved to 4.
        let local = tv("55", 3, 1);
        let got = merge_desired(Some(&local), &tv("60", 4, 0));
        assert_eq!(got, DesiredMerge::TakeCloud(tv("60", 4, 1)));
    }

    #[test]
    fn local_change_after_last_cloud_version_stands() {
        let local = set_local_desired(Some(&tv("60", 4, 0)), "55".into(), 10);
        assert_eq!(local.version, TwinVersion { cloud: 4, edge: 1 });
        // The cloud resends version 4 after a reconnect: the local change stands.
        assert_eq!(
            merge_desired(Some(&local), &tv("60", 4, 0)),
            DesiredMerge::KeepLocal
        );
        // An older cloud version never wins.
        assert_eq!(
            merge_desired(Some(&local), &tv("50", 2, 0)),
            DesiredMerge::KeepLocal
        );
        // Nothing local: the cloud's value is taken.
        assert_eq!(
            merge_desired(None, &tv("60", 4, 0)),
            DesiredMerge::TakeCloud(tv("60", 4, 0))
        );
    }

    #[test]
    fn reported_edge_always_wins() {
        let edge = tv("21.5", 0, 9);
        let cloud = tv("20.0", 0, 12);
        assert_eq!(
            merge_reported(Some(&edge), Some(&cloud)),
            Some(edge.clone())
        );
        assert_eq!(merge_reported(None, Some(&cloud)), Some(cloud));
        assert_eq!(merge_reported(None, None), None);
        let next = set_reported(Some(&edge), "22".into(), 5);
        assert_eq!(next.version.edge, 10);
    }

    #[test]
    fn delta_until_reported_matches() {
        let mut t = PropertyTwin {
            ty: PropertyType::Float,
            desired: Some(tv("1", 1, 0)),
            reported: Some(tv("0.5", 0, 1)),
        };
        assert_eq!(t.delta(), Some("1"));
        t.reported = Some(tv("1.0", 0, 2));
        assert_eq!(t.delta(), None);
        t.desired = None;
        assert_eq!(t.delta(), None);
    }
}
