//! What every listener shares: connection slots and the in-flight byte
//! budget.

use std::sync::Arc;

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

/// Granularity of the in-flight byte budget (permits are KiB).
const PERMIT_BYTES: usize = 1024;

/// What every listener shares: connection slots (`--max-connections`) and
/// the budget of request bytes held in memory at once
/// (`--max-inflight-request-bytes`).
#[derive(Debug, Clone)]
pub struct Limits {
    connections: Arc<Semaphore>,
    inflight: Arc<Semaphore>,
    /// Permits in the whole budget; one request never asks for more.
    inflight_permits: u32,
}

impl Limits {
    pub fn new(max_connections: usize, max_inflight_bytes: usize) -> Self {
        let permits = (max_inflight_bytes / PERMIT_BYTES).clamp(1, Semaphore::MAX_PERMITS);
        Self {
            connections: Arc::new(Semaphore::new(max_connections)),
            inflight: Arc::new(Semaphore::new(permits)),
            inflight_permits: u32::try_from(permits).unwrap_or(u32::MAX),
        }
    }

    /// Waits for a connection slot; the slot is given back when the permit
    /// is dropped.
    ///
    /// # Errors
    /// The slots were closed.
    pub async fn connection_slot(&self) -> Result<OwnedSemaphorePermit, AcquireError> {
        Arc::clone(&self.connections).acquire_owned().await
    }

    /// Waits for room for a request of `len` bytes in the in-flight
    /// budget; the room is given back when the permit is dropped.
    ///
    /// # Errors
    /// The budget was closed.
    pub async fn reserve(&self, len: usize) -> Result<OwnedSemaphorePermit, AcquireError> {
        let permits = u32::try_from(len.div_ceil(PERMIT_BYTES))
            .unwrap_or(u32::MAX)
            .min(self.inflight_permits);
        Arc::clone(&self.inflight).acquire_many_owned(permits).await
    }
}
