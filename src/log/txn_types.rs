//! Transaction facts the storage engine is told about by its callers.

/// An aborted transaction of one producer in a partition: its records lie
/// in `first_offset..=last_offset` (the abort marker is at or after
/// `last_offset`). The log cleaner drops the transactional records of
/// `producer_id` in that range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}
