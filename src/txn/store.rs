//! The transaction coordinator's durable state: one entry per
//! transactional id, in an append-only log
//! (`<data-dir>/__transaction_state/transactions.log`) replayed at start.
//!
//! Each entry is `len u32 | crc32c u32 | payload` and holds a transactional
//! id's whole state (or its removal); the last entry of an id wins. A torn
//! tail is cut at start. When the log holds many superseded entries it is
//! rewritten from the live state (write-temp, fsync, rename).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::group::offsets::Committed;
use crate::log::{self, framed, LogError};

/// Directory of the transaction log inside the data dir.
pub const TXN_DIR: &str = "__transaction_state";
pub const TXN_FILE: &str = "transactions.log";
/// Largest entry accepted when replaying (anything bigger is corruption).
const MAX_ENTRY_BYTES: u32 = 16 << 20;
const VERSION: u8 = 1;
/// Entry kinds after the id.
const KIND_REMOVED: u8 = 0;
const KIND_STATE: u8 = 1;
const KIND_HAND_BACK: u8 = 2;

/// Where a transaction is, with Kafka's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A producer id and epoch, no transaction begun.
    Empty,
    /// Partitions or offsets added: a transaction is open.
    Ongoing,
    /// Commit decided; markers being written.
    PrepareCommit,
    /// Abort decided; markers being written.
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Empty => "Empty",
            Phase::Ongoing => "Ongoing",
            Phase::PrepareCommit => "PrepareCommit",
            Phase::PrepareAbort => "PrepareAbort",
            Phase::CompleteCommit => "CompleteCommit",
            Phase::CompleteAbort => "CompleteAbort",
        }
    }

    fn code(self) -> u8 {
        match self {
            Phase::Empty => 0,
            Phase::Ongoing => 1,
            Phase::PrepareCommit => 2,
            Phase::PrepareAbort => 3,
            Phase::CompleteCommit => 4,
            Phase::CompleteAbort => 5,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            0 => Phase::Empty,
            1 => Phase::Ongoing,
            2 => Phase::PrepareCommit,
            3 => Phase::PrepareAbort,
            4 => Phase::CompleteCommit,
            5 => Phase::CompleteAbort,
            _ => return None,
        })
    }

    /// Markers are being written: the transaction is decided, not done.
    pub fn is_prepared(self) -> bool {
        matches!(self, Phase::PrepareCommit | Phase::PrepareAbort)
    }
}

/// One transactional id's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMeta {
    pub producer_id: i64,
    pub epoch: i16,
    /// The epoch before the coordinator last fenced the producer (a
    /// transaction that timed out), or -1: a producer at that epoch may
    /// still ask for a new one (KIP-360).
    pub last_epoch: i16,
    pub timeout_ms: i32,
    pub phase: Phase,
    /// Partitions of the open (or deciding) transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// Groups whose offsets the transaction commits.
    pub groups: BTreeSet<String>,
    /// Offsets committed in the transaction: group → (topic, partition) →
    /// offset. They become the groups' committed offsets on commit.
    pub offsets: BTreeMap<String, BTreeMap<(String, i32), Committed>>,
    /// When the open transaction began (ms), or -1.
    pub started_ms: i64,
    pub updated_ms: i64,
    /// Batches produced to retry topics in the transaction (hand-backs):
    /// held by the retry scheduler only when it commits. Journaled as
    /// entries of their own.
    pub hand_backs: Vec<HeldBatch>,
    /// The committing transaction's hand-backs were passed to the retry
    /// scheduler.
    pub handed_back: bool,
}

/// A hand-back waiting for its transaction's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldBatch {
    pub topic: String,
    pub partition: i32,
    pub records: Bytes,
}

/// One entry of the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A transactional id's state (without its hand-backs), or its removal.
    State(String, Option<TxnMeta>),
    /// A hand-back of the transaction of (producer id, epoch, start).
    HandBack(String, (i64, i16, i64), HeldBatch),
}

impl TxnMeta {
    /// What names the open transaction: its hand-backs carry it.
    pub fn txn_key(&self) -> (i64, i16, i64) {
        (self.producer_id, self.epoch, self.started_ms)
    }
}

impl TxnMeta {
    /// A new transactional id's state.
    pub fn new(producer_id: i64, timeout_ms: i32, now_ms: i64) -> Self {
        Self {
            producer_id,
            epoch: 0,
            last_epoch: -1,
            timeout_ms,
            phase: Phase::Empty,
            partitions: BTreeSet::new(),
            groups: BTreeSet::new(),
            offsets: BTreeMap::new(),
            started_ms: -1,
            updated_ms: now_ms,
            hand_backs: Vec::new(),
            handed_back: false,
        }
    }
}

fn put_str(p: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    let n = b.len().min(u16::MAX as usize);
    p.extend_from_slice(&(n as u16).to_be_bytes());
    p.extend_from_slice(&b[..n]);
}

fn put_len(p: &mut Vec<u8>, n: usize) {
    p.extend_from_slice(&(n as i32).to_be_bytes());
}

/// The framed entry for `id`: its state, or its removal.
pub fn encode(id: &str, meta: Option<&TxnMeta>) -> Vec<u8> {
    let mut p = Vec::with_capacity(128);
    p.push(VERSION);
    put_str(&mut p, id);
    let Some(m) = meta else {
        p.push(KIND_REMOVED);
        return framed::frame(&p);
    };
    p.push(KIND_STATE);
    p.extend_from_slice(&m.producer_id.to_be_bytes());
    p.extend_from_slice(&i32::from(m.epoch).to_be_bytes());
    p.extend_from_slice(&i32::from(m.last_epoch).to_be_bytes());
    p.extend_from_slice(&m.timeout_ms.to_be_bytes());
    p.push(m.phase.code());
    p.push(u8::from(m.handed_back));
    p.extend_from_slice(&m.started_ms.to_be_bytes());
    p.extend_from_slice(&m.updated_ms.to_be_bytes());
    put_len(&mut p, m.partitions.len());
    for (topic, partition) in &m.partitions {
        put_str(&mut p, topic);
        p.extend_from_slice(&partition.to_be_bytes());
    }
    put_len(&mut p, m.groups.len());
    for g in &m.groups {
        put_str(&mut p, g);
    }
    let offsets: Vec<_> = m
        .offsets
        .iter()
        .flat_map(|(g, o)| o.iter().map(move |(tp, c)| (g, tp, c)))
        .collect();
    put_len(&mut p, offsets.len());
    for (group, (topic, partition), c) in offsets {
        put_str(&mut p, group);
        put_str(&mut p, topic);
        p.extend_from_slice(&partition.to_be_bytes());
        p.extend_from_slice(&c.offset.to_be_bytes());
        p.extend_from_slice(&c.leader_epoch.to_be_bytes());
        p.extend_from_slice(&c.commit_time_ms.to_be_bytes());
        match &c.metadata {
            None => p.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(s) => {
                put_len(&mut p, s.len());
                p.extend_from_slice(s.as_bytes());
            }
        }
    }
    framed::frame(&p)
}

/// The framed entry of a hand-back of `id`'s transaction `key`.
pub fn encode_hand_back(id: &str, key: (i64, i16, i64), b: &HeldBatch) -> Vec<u8> {
    let mut p = Vec::with_capacity(64 + b.records.len());
    p.push(VERSION);
    put_str(&mut p, id);
    p.push(KIND_HAND_BACK);
    p.extend_from_slice(&key.0.to_be_bytes());
    p.extend_from_slice(&i32::from(key.1).to_be_bytes());
    p.extend_from_slice(&key.2.to_be_bytes());
    put_str(&mut p, &b.topic);
    p.extend_from_slice(&b.partition.to_be_bytes());
    put_len(&mut p, b.records.len());
    p.extend_from_slice(&b.records);
    framed::frame(&p)
}

/// Decodes one entry's payload; `None` for anything damaged or unknown.
pub fn decode(payload: &[u8]) -> Option<Entry> {
    let mut r = framed::Reader(payload);
    if r.u8()? != VERSION {
        return None;
    }
    let id = r.str16()?;
    match r.u8()? {
        KIND_REMOVED => return r.is_done().then_some(Entry::State(id, None)),
        KIND_STATE => {}
        KIND_HAND_BACK => {
            let key = (r.i64()?, i16::try_from(r.i32()?).ok()?, r.i64()?);
            let topic = r.str16()?;
            let partition = r.i32()?;
            let n = usize::try_from(r.i32()?).ok()?;
            let records = Bytes::copy_from_slice(r.take(n)?);
            let b = HeldBatch {
                topic,
                partition,
                records,
            };
            return r.is_done().then_some(Entry::HandBack(id, key, b));
        }
        _ => return None,
    }
    let producer_id = r.i64()?;
    let epoch = i16::try_from(r.i32()?).ok()?;
    let last_epoch = i16::try_from(r.i32()?).ok()?;
    let timeout_ms = r.i32()?;
    let phase = Phase::from_code(r.u8()?)?;
    let handed_back = r.u8()? != 0;
    let started_ms = r.i64()?;
    let updated_ms = r.i64()?;
    let mut partitions = BTreeSet::new();
    for _ in 0..usize::try_from(r.i32()?).ok()? {
        partitions.insert((r.str16()?, r.i32()?));
    }
    let mut groups = BTreeSet::new();
    for _ in 0..usize::try_from(r.i32()?).ok()? {
        groups.insert(r.str16()?);
    }
    let mut offsets: BTreeMap<String, BTreeMap<(String, i32), Committed>> = BTreeMap::new();
    for _ in 0..usize::try_from(r.i32()?).ok()? {
        let group = r.str16()?;
        let topic = r.str16()?;
        let partition = r.i32()?;
        let offset = r.i64()?;
        let leader_epoch = r.i32()?;
        let commit_time_ms = r.i64()?;
        let n = r.i32()?;
        let metadata = if n < 0 {
            None
        } else {
            Some(String::from_utf8(r.take(n as usize)?.to_vec()).ok()?)
        };
        offsets.entry(group).or_default().insert(
            (topic, partition),
            Committed {
                offset,
                leader_epoch,
                metadata,
                commit_time_ms,
            },
        );
    }
    if !r.is_done() {
        return None;
    }
    let meta = TxnMeta {
        producer_id,
        epoch,
        last_epoch,
        timeout_ms,
        phase,
        partitions,
        groups,
        offsets,
        started_ms,
        updated_ms,
        hand_backs: Vec::new(),
        handed_back,
    };
    Some(Entry::State(id, Some(meta)))
}

/// Whether a transaction in this state still has hand-backs to pass on.
fn keeps_hand_backs(m: &TxnMeta) -> bool {
    !m.handed_back && matches!(m.phase, Phase::Ongoing | Phase::PrepareCommit)
}

/// The value of `id`'s record in a `__transaction_state` partition (in a
/// cluster): its whole state, hand-backs included, or `None` (a tombstone)
/// once it is forgotten. The latest record of an id is all a replay needs,
/// so the log cleaner may keep only that.
pub fn record_value(id: &str, meta: Option<&TxnMeta>) -> Option<Vec<u8>> {
    let m = meta?;
    let mut v = encode(id, Some(m));
    let key = m.txn_key();
    for b in &m.hand_backs {
        v.extend(encode_hand_back(id, key, b));
    }
    Some(v)
}

/// Applies one record of a `__transaction_state` partition: the whole
/// state of the id its key names, or its removal.
pub fn replay_record(
    state: &mut HashMap<String, TxnMeta>,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    let Some(id) = key.and_then(|k| std::str::from_utf8(k).ok()) else {
        return;
    };
    state.remove(id);
    if let Some(v) = value {
        replay_framed(state, v);
    }
}

/// Applies the framed entries in `bytes` to `state`.
fn replay_framed(state: &mut HashMap<String, TxnMeta>, bytes: &[u8]) {
    for (_, payload) in framed::Frames::new(bytes, MAX_ENTRY_BYTES) {
        match decode(payload) {
            Some(entry) => replay(state, entry),
            None => break,
        }
    }
}

/// Applies one replayed entry.
fn replay(state: &mut HashMap<String, TxnMeta>, entry: Entry) {
    match entry {
        Entry::State(id, None) => {
            state.remove(&id);
        }
        Entry::State(id, Some(mut m)) => {
            if let Some(old) = state.remove(&id) {
                if old.txn_key() == m.txn_key() && keeps_hand_backs(&m) {
                    m.hand_backs = old.hand_backs;
                }
            }
            state.insert(id, m);
        }
        Entry::HandBack(id, key, b) => {
            if let Some(m) = state.get_mut(&id) {
                if m.txn_key() == key && keeps_hand_backs(m) {
                    m.hand_backs.push(b);
                }
            }
        }
    }
}

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> LogError {
    move |source| LogError::Io { context, source }
}

/// The transaction log file.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    sync: bool,
    entries: u64,
}

impl Journal {
    /// Replays the log in `data_dir`, cutting a torn tail, and returns the
    /// live state with it.
    ///
    /// # Errors
    /// I/O errors.
    pub fn open(data_dir: &Path, sync: bool) -> Result<(Self, HashMap<String, TxnMeta>), LogError> {
        let dir = data_dir.join(TXN_DIR);
        fs::create_dir_all(&dir).map_err(io_err(format!("failed to create {}", dir.display())))?;
        let path = dir.join(TXN_FILE);
        let mut bytes = Vec::new();
        if let Ok(mut f) = File::open(&path) {
            f.read_to_end(&mut bytes)
                .map_err(io_err(format!("failed to read {}", path.display())))?;
        }
        let mut state = HashMap::new();
        let mut entries = 0u64;
        let mut pos = 0usize;
        for (at, payload) in framed::Frames::new(&bytes, MAX_ENTRY_BYTES) {
            let Some(entry) = decode(payload) else {
                break;
            };
            replay(&mut state, entry);
            entries += 1;
            pos = at as usize + 8 + payload.len();
        }
        let file = framed::open_truncated(&path, pos, bytes.len(), "transaction log")?;
        Ok((
            Self {
                path,
                file,
                sync,
                entries,
            },
            state,
        ))
    }

    /// Appends `id`'s new state (fsynced when the broker's durability
    /// policy asks for it); rewrites the log when most of it is superseded.
    ///
    /// # Errors
    /// I/O errors; the file is left as it was.
    pub fn write(
        &mut self,
        id: &str,
        meta: Option<&TxnMeta>,
        live: &HashMap<String, TxnMeta>,
    ) -> Result<(), LogError> {
        self.append(&encode(id, meta), live)
    }

    /// Appends a hand-back of `id`'s transaction `key`.
    ///
    /// # Errors
    /// I/O errors; the file is left as it was.
    pub fn write_hand_back(
        &mut self,
        id: &str,
        key: (i64, i16, i64),
        b: &HeldBatch,
        live: &HashMap<String, TxnMeta>,
    ) -> Result<(), LogError> {
        self.append(&encode_hand_back(id, key, b), live)
    }

    fn append(&mut self, buf: &[u8], live: &HashMap<String, TxnMeta>) -> Result<(), LogError> {
        use std::os::unix::fs::FileExt;
        let end = self
            .file
            .metadata()
            .map_err(io_err(format!("failed to stat {}", self.path.display())))?
            .len();
        let written = log::faults::check(log::faults::Op::Write, &self.path)
            .and_then(|()| self.file.write_all_at(buf, end))
            .and_then(|()| {
                if self.sync {
                    log::faults::check(log::faults::Op::Sync, &self.path)?;
                    self.file.sync_data()
                } else {
                    Ok(())
                }
            });
        if let Err(e) = written {
            let _ = self.file.set_len(end);
            return Err(LogError::Io {
                context: format!("failed to write {}", self.path.display()),
                source: e,
            });
        }
        self.entries += 1;
        if self.entries > 1_000 && self.entries as usize > live.len().max(1) * 8 {
            if let Err(e) = self.rewrite(live) {
                tracing::warn!(error = %e, "failed to compact the transaction log");
            }
        }
        Ok(())
    }

    fn rewrite(&mut self, live: &HashMap<String, TxnMeta>) -> Result<(), LogError> {
        let mut buf = Vec::new();
        for (id, m) in live {
            buf.extend_from_slice(&encode(id, Some(m)));
            for b in &m.hand_backs {
                buf.extend_from_slice(&encode_hand_back(id, m.txn_key(), b));
            }
        }
        log::write_atomic(&self.path, &buf)?;
        self.file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(io_err(format!("failed to reopen {}", self.path.display())))?;
        self.entries = live.len() as u64;
        Ok(())
    }

    /// fsync (shutdown).
    pub fn flush(&self) {
        let _ = self.file.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TxnMeta {
        let mut m = TxnMeta::new(7, 60_000, 1_000);
        m.epoch = 3;
        m.last_epoch = 2;
        m.phase = Phase::Ongoing;
        m.partitions.insert(("out".into(), 1));
        m.groups.insert("g".into());
        m.offsets.entry("g".into()).or_default().insert(
            ("in".into(), 0),
            Committed {
                offset: 42,
                leader_epoch: -1,
                metadata: Some("m".into()),
                commit_time_ms: 5,
            },
        );
        m.started_ms = 900;
        m
    }

    /// The records of a `__transaction_state` partition replay to the same
    /// state whole or compacted to the latest record of each id.
    #[test]
    fn partition_records_replay_alike_whole_and_compacted() {
        let mut a = sample();
        let b = TxnMeta::new(8, 30_000, 2_000);
        let mut log: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        log.push(("a".into(), record_value("a", Some(&a))));
        log.push(("b".into(), record_value("b", Some(&b))));
        for i in 0..3u8 {
            a.hand_backs.push(HeldBatch {
                topic: "t.retry".into(),
                partition: 0,
                records: Bytes::from(vec![i; 10]),
            });
            log.push(("a".into(), record_value("a", Some(&a))));
        }
        log.push(("b".into(), record_value("b", None)));
        let replay_all = |records: &[(String, Option<Vec<u8>>)]| {
            let mut state = HashMap::new();
            for (k, v) in records {
                replay_record(&mut state, Some(k.as_bytes()), v.as_deref());
            }
            state
        };
        let whole = replay_all(&log);
        let mut latest: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        for (k, v) in log.iter().rev() {
            if !latest.iter().any(|(x, _)| x == k) {
                latest.push((k.clone(), v.clone()));
            }
        }
        latest.reverse();
        let compacted = replay_all(&latest);
        assert_eq!(whole, compacted);
        assert_eq!(whole.len(), 1, "b is forgotten");
        assert_eq!(whole["a"], a, "with its three hand-backs, once each");
    }

    #[test]
    fn entries_round_trip_and_damage_is_refused() {
        let m = sample();
        let framed_entry = encode("t1", Some(&m));
        let (_, payload) = framed::Frames::new(&framed_entry, MAX_ENTRY_BYTES)
            .next()
            .expect("one frame");
        assert_eq!(decode(payload), Some(Entry::State("t1".into(), Some(m))));
        let gone = encode("t1", None);
        let (_, payload) = framed::Frames::new(&gone, MAX_ENTRY_BYTES)
            .next()
            .expect("one frame");
        assert_eq!(decode(payload), Some(Entry::State("t1".into(), None)));
        assert_eq!(decode(&payload[..payload.len() - 1]), None);
    }

    #[test]
    fn the_journal_replays_the_last_state_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut live = HashMap::new();
        {
            let (mut j, state) = Journal::open(dir.path(), true).expect("open");
            assert!(state.is_empty());
            let mut m = sample();
            live.insert("t1".to_string(), m.clone());
            j.write("t1", Some(&m), &live).expect("write");
            // A hand-back of the open transaction, then its commit: the
            // committed state no longer holds it once handed back.
            let b = HeldBatch {
                topic: "t.retry".into(),
                partition: 0,
                records: Bytes::from_static(b"batch"),
            };
            j.write_hand_back("t1", m.txn_key(), &b, &live)
                .expect("write");
            m.phase = Phase::PrepareCommit;
            j.write("t1", Some(&m), &live).expect("write");
            m.hand_backs.push(b);
            let (_, state) = Journal::open(dir.path(), true).expect("replay");
            assert_eq!(
                state.get("t1"),
                Some(&m),
                "a decided commit keeps its hand-backs"
            );
            m.hand_backs.clear();
            m.handed_back = true;
            j.write("t1", Some(&m), &live).expect("write");
            m.phase = Phase::CompleteCommit;
            live.insert("t1".to_string(), m.clone());
            j.write("t1", Some(&m), &live).expect("write");
            live.insert("t2".to_string(), sample());
            j.write("t2", live.get("t2"), &live).expect("write");
            live.remove("t2");
            j.write("t2", None, &live).expect("write");
        }
        let path = dir.path().join(TXN_DIR).join(TXN_FILE);
        let mut bytes = fs::read(&path).expect("read");
        bytes.extend_from_slice(&[0, 0, 0, 40, 1, 2]);
        fs::write(&path, &bytes).expect("tear");
        let (_, state) = Journal::open(dir.path(), true).expect("reopen");
        assert_eq!(state, live);
    }
}
