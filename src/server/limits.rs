//! What every listener shares: connection slots and the in-flight byte
//! budget.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{AcquireError, Notify, OwnedSemaphorePermit, Semaphore};

/// Granularity of the in-flight byte budget (permits are KiB).
const PERMIT_BYTES: usize = 1024;

/// What every listener shares: connection slots (`--max-connections`) and
/// the budget of request bytes held in memory at once
/// (`--max-inflight-request-bytes`).
#[derive(Debug, Clone)]
pub struct Limits {
    connections: Arc<Semaphore>,
    /// The connection slots there are to be (`max.connections`), which
    /// the semaphore reaches once enough connections have closed.
    max_connections: Arc<AtomicUsize>,
    /// Slots taken away by a lowering that connections still held.
    owed: Arc<AtomicUsize>,
    changed: Arc<Notify>,
    inflight: Arc<Semaphore>,
    /// Permits in the whole budget; one request never asks for more.
    inflight_permits: u32,
}

impl Limits {
    pub fn new(max_connections: usize, max_inflight_bytes: usize) -> Self {
        let permits = (max_inflight_bytes / PERMIT_BYTES).clamp(1, Semaphore::MAX_PERMITS);
        Self {
            connections: Arc::new(Semaphore::new(max_connections)),
            max_connections: Arc::new(AtomicUsize::new(max_connections)),
            owed: Arc::new(AtomicUsize::new(0)),
            changed: Arc::new(Notify::new()),
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
        loop {
            let slot = Arc::clone(&self.connections).acquire_owned().await?;
            // A slot owed since `max.connections` was lowered is taken.
            let owed = self
                .owed
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| o.checked_sub(1));
            if owed.is_err() {
                return Ok(slot);
            }
            slot.forget();
        }
    }

    /// The connection slots set.
    pub fn max_connections(&self) -> usize {
        self.max_connections.load(Ordering::Acquire)
    }

    /// Changes the number of connection slots while the broker runs
    /// (the dynamic `max.connections`). Raising it lets waiting
    /// connections in at once; lowering it closes none: the slots it takes
    /// away that connections still hold are owed, and taken as those
    /// connections close. The accept loops are told, so that a slot one of
    /// them took before the change is given back and taken again under the
    /// new number.
    pub fn set_max_connections(&self, n: usize) {
        let n = n.clamp(1, Semaphore::MAX_PERMITS);
        let old = self.max_connections.swap(n, Ordering::AcqRel);
        if n > old {
            let mut add = n - old;
            if let Ok(owed) = self
                .owed
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| {
                    Some(o.saturating_sub(add))
                })
            {
                add -= owed.min(add);
            }
            self.connections.add_permits(add);
        } else if n < old {
            let less = old - n;
            let forgotten = self.connections.forget_permits(less);
            self.owed.fetch_add(less - forgotten, Ordering::AcqRel);
        }
        self.changed.notify_waiters();
    }

    /// Resolves when the connection slots are changed.
    pub async fn changed(&self) {
        self.changed.notified().await;
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Limits;

    #[tokio::test]
    async fn lowering_owes_the_slots_in_use_and_raising_pays_them_back() {
        let wait = Duration::from_millis(100);
        let l = Limits::new(3, 1 << 20);
        let a = l.connection_slot().await.unwrap();
        let b = l.connection_slot().await.unwrap();
        l.set_max_connections(1);
        assert_eq!(l.max_connections(), 1);
        // Two are open, one may be: a closing one's slot is taken away.
        drop(a);
        assert!(tokio::time::timeout(wait, l.connection_slot())
            .await
            .is_err());
        drop(b);
        let c = tokio::time::timeout(wait, l.connection_slot())
            .await
            .expect("one slot")
            .unwrap();
        assert!(tokio::time::timeout(wait, l.connection_slot())
            .await
            .is_err());
        l.set_max_connections(3);
        let d = l.connection_slot().await.unwrap();
        let e = l.connection_slot().await.unwrap();
        assert!(tokio::time::timeout(wait, l.connection_slot())
            .await
            .is_err());
        drop((c, d, e));
    }
}
