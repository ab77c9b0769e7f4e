//! The gateway's SQLite store behind the cloud link's edge driver
//! (`cloud_bridge::driver::edge_session`): downstream objects are committed in one transaction
//! per batch before the edge acknowledges them, telemetry is read from the outbox as the edge
//! asks and deleted once the hub's sink has it. (The driver is not started by the gateway yet:
//! docs/CLOUD-LINK.md.)

use cloud_bridge::driver::{EdgeStore, StoreFailure};
use cloud_bridge::proto::msg::TelemetrySample;

use crate::store::Store;

impl EdgeStore for Store {
    async fn commit(
        &mut self,
        changes: Vec<(String, Option<(String, String)>)>,
    ) -> Result<(), StoreFailure> {
        Ok(self.commit_objects(&changes).await?)
    }

    async fn outbox_after(
        &mut self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<TelemetrySample>, StoreFailure> {
        let after = i64::try_from(after)?;
        let limit = i64::try_from(limit)?;
        let rows = Store::outbox_after(self, after, limit).await?;
        rows.into_iter()
            .map(|r| {
                Ok(TelemetrySample {
                    seq: u64::try_from(r.seq)?,
                    device: r.sample.device.to_string(),
                    property: r.sample.property.to_string(),
                    value: r.sample.value,
                    ts: r.sample.ts,
                })
            })
            .collect()
    }

    async fn outbox_delete_through(&mut self, seq: u64) -> Result<(), StoreFailure> {
        self.delete_outbox_through(i64::try_from(seq)?).await?;
        Ok(())
    }
}
