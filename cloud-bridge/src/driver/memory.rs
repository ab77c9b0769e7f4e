//! A hub backend held in memory: node credentials, the objects bound to each node, the status
//! reports wrote and the telemetry stored (deduplicated by node and sequence). For tests and
//! demos; it forgets everything when dropped.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{HubBackend, StoreFailure};
use crate::proto::Object;
use crate::proto::hub::Directory;
use crate::proto::msg::{Report, TelemetrySample, Token};

/// What a [`MemoryHub`] holds.
#[derive(Debug, Default)]
pub struct HubState {
    /// Node → its token.
    pub tokens: BTreeMap<String, String>,
    /// Node → key (`Device/ns/name`) → object.
    pub objects: BTreeMap<String, BTreeMap<String, Object>>,
    /// (node, device, property or `None` for the state) → value.
    pub status: BTreeMap<(String, String, Option<String>), String>,
    /// (node, seq) → sample.
    pub telemetry: BTreeMap<(String, u64), TelemetrySample>,
}

/// A hub backend in memory.
#[derive(Debug, Default)]
pub struct MemoryHub(Mutex<HubState>);

impl MemoryHub {
    /// Its state, to change or to look at.
    pub fn state(&self) -> MutexGuard<'_, HubState> {
        // A panic elsewhere while holding the lock leaves plain data; keep using it.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Directory for MemoryHub {
    fn authenticate(&self, node: &str, token: &Token) -> bool {
        self.state().tokens.get(node).is_some_and(|t| *t == token.0)
    }
    fn for_each_object(&self, node: &str, f: &mut dyn FnMut(&str, &Object)) {
        for (k, o) in self.state().objects.get(node).into_iter().flatten() {
            f(k, o);
        }
    }
}

impl HubBackend for MemoryHub {
    async fn write_reports(&self, node: &str, reports: Vec<Report>) -> Result<(), StoreFailure> {
        let mut s = self.state();
        for r in reports {
            s.status
                .insert((node.to_string(), r.device, r.property), r.value);
        }
        Ok(())
    }
    async fn store_telemetry(
        &self,
        node: &str,
        samples: Vec<TelemetrySample>,
    ) -> Result<(), StoreFailure> {
        let mut s = self.state();
        for t in samples {
            s.telemetry.insert((node.to_string(), t.seq), t);
        }
        Ok(())
    }
}
