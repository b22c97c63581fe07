//! What the coordinator answers about its transactions, for
//! DescribeTransactions, ListTransactions, OffsetFetch, status and metrics.

use std::sync::Arc;

use super::{Coordinator, OpenTxn, Phase, TxnMeta};

impl Coordinator {
    /// Whether a transactional id of this coordinator has `producer_id`.
    pub fn knows_producer(&self, producer_id: i64) -> bool {
        self.inner.read().by_pid.contains_key(&producer_id)
    }

    /// The state of one transactional id.
    pub fn describe(&self, id: &str) -> Option<TxnMeta> {
        self.inner.read().txns.get(id).cloned()
    }

    /// Every transactional id with its producer id and state.
    pub fn list(&self) -> Vec<(String, i64, Phase)> {
        let inner = self.inner.read();
        let mut out: Vec<_> = inner
            .txns
            .iter()
            .map(|(id, m)| (id.clone(), m.producer_id, m.phase))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Open (or deciding) transactions of every coordinator in `all`,
    /// oldest first.
    pub fn open_in(all: &[Arc<Coordinator>], now_ms: i64) -> Vec<OpenTxn> {
        let mut out: Vec<OpenTxn> = all
            .iter()
            .flat_map(|c| c.open_transactions(now_ms))
            .collect();
        out.sort_by_key(|t| std::cmp::Reverse(t.age_ms));
        out
    }

    /// Open (or deciding) transactions, oldest first.
    pub fn open_transactions(&self, now_ms: i64) -> Vec<OpenTxn> {
        let inner = self.inner.read();
        let mut out: Vec<_> = inner
            .txns
            .iter()
            .filter(|(_, m)| m.phase == Phase::Ongoing || m.phase.is_prepared())
            .map(|(id, m)| OpenTxn {
                transactional_id: id.clone(),
                producer_id: m.producer_id,
                state: m.phase.name(),
                age_ms: if m.started_ms < 0 {
                    0
                } else {
                    now_ms.saturating_sub(m.started_ms)
                },
                timeout_ms: m.timeout_ms,
                partitions: m.partitions.len(),
            })
            .collect();
        out.sort_by_key(|t| std::cmp::Reverse(t.age_ms));
        out
    }

    /// Whether an open transaction holds offsets of `group` for the
    /// partition (OffsetFetch with `require_stable` answers
    /// `UNSTABLE_OFFSET_COMMIT` then).
    pub fn has_pending_offset(&self, group: &str, topic: &str, partition: i32) -> bool {
        let inner = self.inner.read();
        let key = (topic.to_string(), partition);
        inner.txns.values().any(|m| {
            (m.phase == Phase::Ongoing || m.phase.is_prepared())
                && m.offsets.get(group).is_some_and(|o| o.contains_key(&key))
        })
    }
}
