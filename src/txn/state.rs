//! The coordinator's state and where its changes are journaled: a single
//! node's file, or in a cluster the `__transaction_state` partition this
//! broker leads.

use std::collections::HashMap;
use std::sync::Arc;

use super::store::{self, Journal, TxnMeta};
use crate::protocol::errors::{COORDINATOR_NOT_AVAILABLE, KAFKA_STORAGE_ERROR, NOT_COORDINATOR};
use crate::replicas::Leadership;

/// Where the coordinator's changes of state are journaled.
pub(super) enum Sink {
    /// Nowhere (tests).
    Memory,
    /// A single node's journal file.
    File(Journal),
    /// In a cluster: the `__transaction_state` partition this broker
    /// leads; `upto` is the offset after the last entry appended.
    Partition {
        leadership: Arc<Leadership>,
        sync: bool,
        upto: i64,
    },
}

impl Sink {
    /// Appends the record of `id` to the partition: its whole state
    /// ([`store::record_value`]), `None` once it is forgotten.
    pub(super) fn append_entry(&mut self, id: &str, value: Option<Vec<u8>>) -> Result<(), i16> {
        let Sink::Partition {
            leadership, upto, ..
        } = self
        else {
            return Ok(());
        };
        if leadership.is_deposed() {
            return Err(NOT_COORDINATOR);
        }
        let now = crate::clock::now_ms();
        let record = crate::log::records::plain_record(
            0,
            now,
            Some(bytes::Bytes::copy_from_slice(id.as_bytes())),
            value.map(bytes::Bytes::from),
            &[],
        );
        let batch = crate::log::records::encode_batch(
            &[record],
            kafka_protocol::records::Compression::None,
        )
        .map_err(|e| {
            tracing::error!(transactional_id = id, error = %e, "cannot encode a transaction entry");
            KAFKA_STORAGE_ERROR
        })?;
        let info = leadership.log().append_internal(&batch, now).map_err(|e| {
            tracing::error!(transactional_id = id, error = %e, "cannot append to the transaction state");
            COORDINATOR_NOT_AVAILABLE
        })?;
        *upto = info.last_offset + 1;
        Ok(())
    }
}

pub(super) struct Inner {
    pub(super) sink: Sink,
    pub(super) txns: HashMap<String, TxnMeta>,
    pub(super) by_pid: HashMap<i64, String>,
}

impl Inner {
    /// Journals that `id` is forgotten, then forgets it.
    pub(super) fn remove(&mut self, id: &str) -> Result<(), i16> {
        match &mut self.sink {
            Sink::Memory => {}
            Sink::File(j) => {
                if let Err(e) = j.write(id, None, &self.txns) {
                    tracing::error!(transactional_id = id, error = %e, "failed to journal an expired transactional id");
                    return Err(KAFKA_STORAGE_ERROR);
                }
            }
            sink @ Sink::Partition { .. } => sink.append_entry(id, None)?,
        }
        if let Some(m) = self.txns.remove(id) {
            self.by_pid.remove(&m.producer_id);
        }
        Ok(())
    }

    /// Journals `id`'s new state, then takes it.
    pub(super) fn put(&mut self, id: &str, meta: TxnMeta) -> Result<(), i16> {
        match &mut self.sink {
            Sink::Memory => {}
            Sink::File(j) => {
                let mut live = std::mem::take(&mut self.txns);
                live.insert(id.to_string(), meta.clone());
                let r = j.write(id, Some(&meta), &live);
                live.remove(id);
                self.txns = live;
                if let Err(e) = r {
                    tracing::error!(transactional_id = id, error = %e, "failed to journal a transaction");
                    return Err(KAFKA_STORAGE_ERROR);
                }
            }
            sink @ Sink::Partition { .. } => {
                sink.append_entry(id, store::record_value(id, Some(&meta)))?;
            }
        }
        if let Some(old) = self.txns.get(id) {
            if old.producer_id != meta.producer_id {
                self.by_pid.remove(&old.producer_id);
            }
        }
        self.by_pid.insert(meta.producer_id, id.to_string());
        self.txns.insert(id.to_string(), meta);
        Ok(())
    }
}
