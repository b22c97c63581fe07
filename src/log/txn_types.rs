//! A transaction a partition's log holds the abort marker of.

/// The records a producer wrote in a transaction that aborted: its
/// transactional batches from `first_offset` up to the abort marker at
/// `last_offset` (Kafka's aborted-transaction index entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}
