//! Committed offsets, kept in memory and in an internal append-only log
//! (`<data-dir>/__consumer_offsets/offsets.log`) that is replayed at start.
//!
//! Each record is `len u32 | crc32c u32 | payload`; a record whose CRC or
//! length does not check out ends the replay and the tail is cut, so a torn
//! write at a crash is dropped, never half-applied. When the log holds many
//! superseded records it is rewritten from the in-memory state
//! (write-temp, fsync, rename).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::log::{self, framed, LogError};

/// Directory of the offsets log inside the data dir.
pub const OFFSETS_DIR: &str = "__consumer_offsets";
pub const OFFSETS_FILE: &str = "offsets.log";
/// Longest metadata string accepted with a commit (Kafka's offset.metadata.max.bytes).
pub const MAX_METADATA_BYTES: usize = 4096;
/// Largest record accepted when replaying (anything bigger is corruption).
const MAX_RECORD_BYTES: u32 = 16 << 20;

const KIND_COMMIT: u8 = 1;
const KIND_DELETE_OFFSET: u8 = 2;
const KIND_DELETE_GROUP: u8 = 3;
const KIND_GROUP_STATE: u8 = 4;

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_time_ms: i64,
}

/// (topic, partition) → committed offset, per group.
pub type GroupOffsets = BTreeMap<(String, i32), Committed>;

#[derive(Debug)]
struct Inner {
    /// `None` in a cluster: offsets are journaled in `__consumer_offsets`
    /// there, and this store is the coordinator's memory of them.
    file: Option<File>,
    groups: HashMap<String, GroupOffsets>,
    /// Consumer groups' (KIP-848) last state records.
    states: HashMap<String, Bytes>,
    records_written: u64,
}

/// The durable store of committed offsets.
#[derive(Debug)]
pub struct OffsetStore {
    path: PathBuf,
    sync: bool,
    inner: Mutex<Inner>,
}

/// A change to committed offsets.
#[derive(Debug, Clone)]
pub enum Change {
    Commit {
        group: String,
        topic: String,
        partition: i32,
        committed: Committed,
    },
    DeleteOffset {
        group: String,
        topic: String,
        partition: i32,
    },
    DeleteGroup {
        group: String,
    },
    /// A consumer group's whole state ([`super::consumer`]), or its end.
    GroupState {
        group: String,
        state: Option<Bytes>,
    },
}

impl Change {
    /// The group the change is to.
    pub fn group(&self) -> &str {
        match self {
            Change::Commit { group, .. }
            | Change::DeleteOffset { group, .. }
            | Change::DeleteGroup { group }
            | Change::GroupState { group, .. } => group,
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

fn encode(change: &Change) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    match change {
        Change::Commit {
            group,
            topic,
            partition,
            committed,
        } => {
            p.push(KIND_COMMIT);
            put_str(&mut p, group);
            put_str(&mut p, topic);
            p.extend_from_slice(&partition.to_be_bytes());
            p.extend_from_slice(&committed.offset.to_be_bytes());
            p.extend_from_slice(&committed.leader_epoch.to_be_bytes());
            p.extend_from_slice(&committed.commit_time_ms.to_be_bytes());
            match &committed.metadata {
                None => p.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(m) => {
                    p.extend_from_slice(&(m.len() as i32).to_be_bytes());
                    p.extend_from_slice(m.as_bytes());
                }
            }
        }
        Change::DeleteOffset {
            group,
            topic,
            partition,
        } => {
            p.push(KIND_DELETE_OFFSET);
            put_str(&mut p, group);
            put_str(&mut p, topic);
            p.extend_from_slice(&partition.to_be_bytes());
        }
        Change::DeleteGroup { group } => {
            p.push(KIND_DELETE_GROUP);
            put_str(&mut p, group);
        }
        Change::GroupState { group, state } => {
            p.push(KIND_GROUP_STATE);
            put_str(&mut p, group);
            match state {
                None => p.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(b) => {
                    p.extend_from_slice(&(b.len() as i32).to_be_bytes());
                    p.extend_from_slice(b);
                }
            }
        }
    }
    framed::frame(&p)
}

fn decode(payload: &[u8]) -> Option<Change> {
    let mut c = framed::Reader(payload);
    let change = match c.u8()? {
        KIND_COMMIT => {
            let group = c.str16()?;
            let topic = c.str16()?;
            let partition = c.i32()?;
            let offset = c.i64()?;
            let leader_epoch = c.i32()?;
            let commit_time_ms = c.i64()?;
            let mlen = c.i32()?;
            let metadata = if mlen < 0 {
                None
            } else {
                Some(String::from_utf8(c.take(mlen as usize)?.to_vec()).ok()?)
            };
            Change::Commit {
                group,
                topic,
                partition,
                committed: Committed {
                    offset,
                    leader_epoch,
                    metadata,
                    commit_time_ms,
                },
            }
        }
        KIND_DELETE_OFFSET => Change::DeleteOffset {
            group: c.str16()?,
            topic: c.str16()?,
            partition: c.i32()?,
        },
        KIND_DELETE_GROUP => Change::DeleteGroup { group: c.str16()? },
        KIND_GROUP_STATE => Change::GroupState {
            group: c.str16()?,
            state: c.bytes32()?,
        },
        _ => return None,
    };
    c.is_done().then_some(change)
}

fn apply(inner: &mut Inner, change: Change) {
    let groups = &mut inner.groups;
    match change {
        Change::Commit {
            group,
            topic,
            partition,
            committed,
        } => {
            groups
                .entry(group)
                .or_default()
                .insert((topic, partition), committed);
        }
        Change::DeleteOffset {
            group,
            topic,
            partition,
        } => {
            if let Some(g) = groups.get_mut(&group) {
                g.remove(&(topic, partition));
                if g.is_empty() {
                    groups.remove(&group);
                }
            }
        }
        Change::DeleteGroup { group } => {
            groups.remove(&group);
            inner.states.remove(&group);
        }
        Change::GroupState { group, state } => match state {
            // Of two records of one group the newer wins, whatever order
            // they were stored in.
            Some(s) => {
                let newer = inner
                    .states
                    .get(&group)
                    .is_none_or(|old| super::consumer::seq_of(old) <= super::consumer::seq_of(&s));
                if newer {
                    inner.states.insert(group, s);
                }
            }
            None => {
                inner.states.remove(&group);
            }
        },
    }
}

/// Every live committed offset and group state as entries, and how many.
fn encode_live(inner: &Inner) -> (Vec<u8>, u64) {
    let mut buf = Vec::new();
    let mut n = 0;
    for (group, state) in &inner.states {
        buf.extend_from_slice(&encode(&Change::GroupState {
            group: group.clone(),
            state: Some(state.clone()),
        }));
        n += 1;
    }
    for (group, offsets) in &inner.groups {
        for ((topic, partition), committed) in offsets {
            buf.extend_from_slice(&encode(&Change::Commit {
                group: group.clone(),
                topic: topic.clone(),
                partition: *partition,
                committed: committed.clone(),
            }));
            n += 1;
        }
    }
    (buf, n)
}

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> LogError {
    move |source| LogError::Io { context, source }
}

impl OffsetStore {
    /// Replays the offsets log in `data_dir`, cutting a torn tail.
    ///
    /// # Errors
    /// I/O errors.
    pub fn open(data_dir: &Path, sync: bool) -> Result<Self, LogError> {
        let dir = data_dir.join(OFFSETS_DIR);
        fs::create_dir_all(&dir).map_err(io_err(format!("failed to create {}", dir.display())))?;
        let path = dir.join(OFFSETS_FILE);
        let mut bytes = Vec::new();
        if let Ok(mut f) = File::open(&path) {
            f.read_to_end(&mut bytes)
                .map_err(io_err(format!("failed to read {}", path.display())))?;
        }
        let mut replayed = Inner {
            file: None,
            groups: HashMap::new(),
            states: HashMap::new(),
            records_written: 0,
        };
        let mut records = 0u64;
        // The end of the last entry applied: an entry that frames well but
        // does not decode also ends the log.
        let mut pos = 0usize;
        for (at, payload) in framed::Frames::new(&bytes, MAX_RECORD_BYTES) {
            let Some(change) = decode(payload) else { break };
            apply(&mut replayed, change);
            records += 1;
            pos = at as usize + 8 + payload.len();
        }
        let file = framed::open_truncated(&path, pos, bytes.len(), "offsets log")?;
        let store = Self {
            path,
            sync,
            inner: Mutex::new(Inner {
                file: Some(file),
                records_written: records,
                ..replayed
            }),
        };
        Ok(store)
    }

    /// A store kept in memory only: in a cluster the coordinator's view of
    /// the offsets it journals in `__consumer_offsets`.
    pub fn in_memory() -> Self {
        Self {
            path: PathBuf::new(),
            sync: false,
            inner: Mutex::new(Inner {
                file: None,
                groups: HashMap::new(),
                states: HashMap::new(),
                records_written: 0,
            }),
        }
    }

    /// Applies `changes` in memory only (in a cluster, once they are
    /// journaled and replicated).
    pub fn write_in_memory(&self, changes: Vec<Change>) {
        let mut inner = self.inner.lock();
        for c in changes {
            apply(&mut inner, c);
        }
    }

    /// Forgets the offsets of every group `drop` names (in a cluster, the
    /// groups another broker coordinates now).
    pub fn unload(&self, drop: impl Fn(&str) -> bool) {
        let mut inner = self.inner.lock();
        inner.groups.retain(|g, _| !drop(g));
        inner.states.retain(|g, _| !drop(g));
    }

    /// Applies and persists `changes` as one write (and one fsync when the
    /// durability policy asks for it).
    ///
    /// # Errors
    /// I/O errors; nothing is applied in memory then.
    pub fn write(&self, changes: Vec<Change>) -> Result<(), LogError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for c in &changes {
            buf.extend_from_slice(&encode(c));
        }
        let mut inner = self.inner.lock();
        let Some(file) = inner.file.as_ref() else {
            for c in changes {
                apply(&mut inner, c);
            }
            return Ok(());
        };
        let end = file
            .metadata()
            .map_err(io_err(format!("failed to stat {}", self.path.display())))?
            .len();
        let written = {
            use std::os::unix::fs::FileExt;
            crate::log::faults::check(crate::log::faults::Op::Write, &self.path)
                .and_then(|()| file.write_all_at(&buf, end))
        };
        if let Err(e) = written.and_then(|()| {
            if self.sync {
                crate::log::faults::check(crate::log::faults::Op::Sync, &self.path)?;
                file.sync_data()
            } else {
                Ok(())
            }
        }) {
            // Leave no partial record behind for the next write to follow.
            let _ = file.set_len(end);
            return Err(LogError::Io {
                context: format!("failed to write {}", self.path.display()),
                source: e,
            });
        }
        inner.records_written += changes.len() as u64;
        for c in changes {
            apply(&mut inner, c);
        }
        let live: usize =
            inner.groups.values().map(BTreeMap::len).sum::<usize>() + inner.states.len();
        if inner.records_written > 10_000 && inner.records_written as usize > live * 4 {
            if let Err(e) = self.compact_locked(&mut inner) {
                tracing::warn!(error = %e, "failed to compact the offsets log");
            }
        }
        Ok(())
    }

    fn compact_locked(&self, inner: &mut Inner) -> Result<(), LogError> {
        let (buf, n) = encode_live(inner);
        log::write_atomic(&self.path, &buf)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(io_err(format!("failed to reopen {}", self.path.display())))?;
        inner.file = Some(file);
        inner.records_written = n;
        Ok(())
    }

    /// Writes the current committed offsets, compacted, to `path` (backup).
    ///
    /// # Errors
    /// I/O errors.
    pub fn snapshot_to(&self, path: &Path) -> Result<(), LogError> {
        let (buf, _) = encode_live(&self.inner.lock());
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)
                .map_err(io_err(format!("failed to create {}", dir.display())))?;
        }
        log::write_atomic(path, &buf)
    }

    /// A group's committed offsets.
    pub fn group(&self, group: &str) -> GroupOffsets {
        self.inner
            .lock()
            .groups
            .get(group)
            .cloned()
            .unwrap_or_default()
    }

    /// One committed offset.
    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<Committed> {
        self.inner
            .lock()
            .groups
            .get(group)
            .and_then(|g| g.get(&(topic.to_string(), partition)).cloned())
    }

    /// A consumer group's last state record.
    pub fn group_state(&self, group: &str) -> Option<Bytes> {
        self.inner.lock().states.get(group).cloned()
    }

    /// Names of consumer groups with a stored state.
    pub fn group_state_names(&self) -> Vec<String> {
        self.inner.lock().states.keys().cloned().collect()
    }

    /// Names of groups with committed offsets.
    pub fn group_names(&self) -> Vec<String> {
        self.inner.lock().groups.keys().cloned().collect()
    }

    /// Every group's offsets (for lag metrics).
    pub fn all(&self) -> HashMap<String, GroupOffsets> {
        self.inner.lock().groups.clone()
    }

    /// fsync (shutdown).
    pub fn flush(&self) {
        let inner = self.inner.lock();
        if let Some(f) = &inner.file {
            let _ = f.sync_all();
        }
        drop(inner);
        let _ = std::io::stderr().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(group: &str, topic: &str, p: i32, offset: i64) -> Change {
        Change::Commit {
            group: group.into(),
            topic: topic.into(),
            partition: p,
            committed: Committed {
                offset,
                leader_epoch: -1,
                metadata: Some("m".into()),
                commit_time_ms: 5,
            },
        }
    }

    #[test]
    fn offsets_survive_a_reopen_and_deletes_apply() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = OffsetStore::open(dir.path(), true).unwrap();
            s.write(vec![commit("g", "t", 0, 10), commit("g", "t", 1, 20)])
                .unwrap();
            s.write(vec![commit("g", "t", 0, 11)]).unwrap();
            s.write(vec![Change::DeleteOffset {
                group: "g".into(),
                topic: "t".into(),
                partition: 1,
            }])
            .unwrap();
            s.write(vec![
                commit("h", "t", 0, 1),
                Change::DeleteGroup { group: "h".into() },
            ])
            .unwrap();
        }
        let s = OffsetStore::open(dir.path(), true).unwrap();
        assert_eq!(s.get("g", "t", 0).unwrap().offset, 11);
        assert_eq!(s.get("g", "t", 0).unwrap().metadata.as_deref(), Some("m"));
        assert!(s.get("g", "t", 1).is_none());
        assert!(s.get("h", "t", 0).is_none());
    }

    #[test]
    fn a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = OffsetStore::open(dir.path(), true).unwrap();
            s.write(vec![commit("g", "t", 0, 10)]).unwrap();
        }
        let path = dir.path().join(OFFSETS_DIR).join(OFFSETS_FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        let rec = encode(&commit("g", "t", 0, 99));
        f.write_all(&rec[..rec.len() - 3]).unwrap();
        drop(f);
        let s = OffsetStore::open(dir.path(), true).unwrap();
        assert_eq!(s.get("g", "t", 0).unwrap().offset, 10);
        s.write(vec![commit("g", "t", 0, 12)]).unwrap();
        drop(s);
        let s = OffsetStore::open(dir.path(), true).unwrap();
        assert_eq!(s.get("g", "t", 0).unwrap().offset, 12);
    }
}
