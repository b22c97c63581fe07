//! The quorum's durable state in `__cluster_metadata/`: the Raft log as an
//! append-only file of checksummed records (`log`), the vote (`vote.json`)
//! and the last snapshot of the state machine (`snapshot.json`), each
//! replaced whole by write, fsync, rename.
//!
//! The log file's records are entries appended, a truncation, a purge or the
//! committed position; reading it back replays them in order and stops at
//! the first torn or damaged record, which is cut off (it was never
//! acknowledged: an append is acknowledged after its fsync). When purged
//! entries make up most of the file it is rewritten with what is left.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Cursor, Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership, Vote,
};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use super::types::{Metadata, NodeId, Reply, TypeConfig};

/// Largest log record read back; larger lengths are damage.
const MAX_RECORD: usize = 64 << 20;

type SError = StorageError<NodeId>;

#[derive(Serialize, Deserialize)]
enum Record {
    Entries(Vec<Entry<TypeConfig>>),
    TruncateFrom(u64),
    PurgeUpTo(LogId<NodeId>),
    Committed(Option<LogId<NodeId>>),
}

struct LogInner {
    dir: PathBuf,
    file: File,
    /// Bytes in the file, and how many of them hold live entries' records
    /// (roughly: decides when to rewrite).
    size: u64,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    last_purged: Option<LogId<NodeId>>,
    committed: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
}

/// The Raft log; clones share it (the engine's log readers are clones).
#[derive(Clone)]
pub struct LogStore(Arc<Mutex<LogInner>>);

/// The state machine and its snapshot.
pub struct StateMachine {
    dir: PathBuf,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
    state: Arc<RwLock<Metadata>>,
    /// Counts applied changes; the broker watches it.
    changed: Arc<tokio::sync::watch::Sender<u64>>,
    /// The last snapshot taken or installed, shared with its builders.
    snapshot: Arc<Mutex<Option<StoredSnapshot>>>,
}

#[derive(Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    data: Metadata,
}

/// Opens (or creates) the quorum's state in `dir`.
pub fn open(
    dir: &Path,
    changed: Arc<tokio::sync::watch::Sender<u64>>,
) -> io::Result<(LogStore, StateMachine, Arc<RwLock<Metadata>>)> {
    fs::create_dir_all(dir)?;
    // The quorum's state holds users' salted SCRAM keys: only the broker's
    // user may read it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    let path = dir.join("log");
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let mut inner = LogInner {
        dir: dir.to_path_buf(),
        file,
        size: 0,
        entries: BTreeMap::new(),
        last_purged: None,
        committed: None,
        vote: read_json(&dir.join("vote.json"))?,
    };
    let mut pos = 0usize;
    while let Some((rec, next)) = next_record(&bytes, pos) {
        inner.replay(rec);
        pos = next;
    }
    if pos < bytes.len() {
        tracing::warn!(
            path = %path.display(),
            kept = pos,
            dropped = bytes.len() - pos,
            "the quorum log has a torn or damaged tail; cutting it off"
        );
        inner.file.set_len(pos as u64)?;
        inner.file.sync_all()?;
    }
    inner.size = pos as u64;
    let snapshot: Option<StoredSnapshot> = read_json(&dir.join("snapshot.json"))?;
    let state = Arc::new(RwLock::new(
        snapshot
            .as_ref()
            .map(|s| s.data.clone())
            .unwrap_or_default(),
    ));
    let sm = StateMachine {
        dir: dir.to_path_buf(),
        last_applied: snapshot.as_ref().and_then(|s| s.meta.last_log_id),
        membership: snapshot
            .as_ref()
            .map(|s| s.meta.last_membership.clone())
            .unwrap_or_default(),
        state: Arc::clone(&state),
        changed,
        snapshot: Arc::new(Mutex::new(snapshot)),
    };
    Ok((LogStore(Arc::new(Mutex::new(inner))), sm, state))
}

/// The record at `pos`, and where the next starts; `None` at the end or at
/// a torn or damaged record.
fn next_record(bytes: &[u8], pos: usize) -> Option<(Record, usize)> {
    let head = bytes.get(pos..pos.checked_add(8)?)?;
    let len = u32::from_be_bytes(head[..4].try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(head[4..8].try_into().ok()?);
    if len > MAX_RECORD {
        return None;
    }
    let body = bytes.get(pos + 8..pos + 8 + len)?;
    if crc32c::crc32c(body) != crc {
        return None;
    }
    let rec = serde_json::from_slice(body).ok()?;
    Some((rec, pos + 8 + len))
}

fn frame(rec: &Record) -> io::Result<Vec<u8>> {
    let body = serde_json::to_vec(rec).map_err(io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces `path` with `bytes`: a temporary file, fsync, rename, fsync of
/// the directory.
fn replace(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

impl LogInner {
    fn replay(&mut self, rec: Record) {
        match rec {
            Record::Entries(es) => {
                for e in es {
                    self.entries.insert(e.log_id.index, e);
                }
            }
            Record::TruncateFrom(i) => {
                self.entries.split_off(&i);
            }
            Record::PurgeUpTo(id) => {
                self.entries = self.entries.split_off(&(id.index + 1));
                self.last_purged = Some(id);
            }
            Record::Committed(c) => self.committed = c,
        }
    }

    /// Appends `rec` to the file and fsyncs it, then applies it in memory.
    fn write(&mut self, rec: Record) -> io::Result<()> {
        let bytes = frame(&rec)?;
        self.file.write_all(&bytes)?;
        self.file.sync_data()?;
        self.size += bytes.len() as u64;
        self.replay(rec);
        Ok(())
    }

    /// Rewrites the file with only what is live, when purges left most of
    /// it dead.
    fn compact_if_worth_it(&mut self) -> io::Result<()> {
        if self.size < (1 << 20) {
            return Ok(());
        }
        let mut bytes = Vec::new();
        if let Some(p) = self.last_purged {
            bytes.extend(frame(&Record::PurgeUpTo(p))?);
        }
        bytes.extend(frame(&Record::Entries(
            self.entries.values().cloned().collect(),
        ))?);
        bytes.extend(frame(&Record::Committed(self.committed))?);
        if bytes.len() as u64 * 2 > self.size {
            return Ok(());
        }
        replace(&self.dir, "log", &bytes)?;
        self.file = OpenOptions::new()
            .append(true)
            .read(true)
            .open(self.dir.join("log"))?;
        self.size = bytes.len() as u64;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, SError> {
        let inner = self.0.lock();
        Ok(inner.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, SError> {
        let inner = self.0.lock();
        let last = inner
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), SError> {
        let mut inner = self.0.lock();
        let bytes = serde_json::to_vec(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        replace(&inner.dir, "vote.json", &bytes).map_err(|e| StorageIOError::write_vote(&e))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, SError> {
        Ok(self.0.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), SError> {
        self.0
            .lock()
            .write(Record::Committed(committed))
            .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, SError> {
        Ok(self.0.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), SError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        let result = self.0.lock().write(Record::Entries(entries));
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = StorageIOError::write_logs(&e).into();
                callback.log_io_completed(Err(e));
                Err(err)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), SError> {
        self.0
            .lock()
            .write(Record::TruncateFrom(log_id.index))
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), SError> {
        let mut inner = self.0.lock();
        inner
            .write(Record::PurgeUpTo(log_id))
            .map_err(|e| StorageIOError::write_logs(&e))?;
        inner
            .compact_if_worth_it()
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

impl StateMachine {
    fn snapshot_now(&self) -> StoredSnapshot {
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id: format!(
                "{}-{}",
                self.last_applied.map_or(0, |l| l.leader_id.term),
                self.last_applied.map_or(0, |l| l.index)
            ),
        };
        StoredSnapshot {
            meta,
            data: self.state.read().clone(),
        }
    }

    /// Persists an installed snapshot and keeps it as the current one.
    fn keep(&mut self, snap: StoredSnapshot) -> io::Result<()> {
        let bytes = serde_json::to_vec(&snap).map_err(io::Error::other)?;
        replace(&self.dir, "snapshot.json", &bytes)?;
        *self.snapshot.lock() = Some(snap);
        Ok(())
    }
}

/// Builds a snapshot of the state machine as it was when asked.
pub struct Builder {
    snap: StoredSnapshot,
    dir: PathBuf,
    kept: Arc<Mutex<Option<StoredSnapshot>>>,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SError> {
        let bytes =
            serde_json::to_vec(&self.snap).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        replace(&self.dir, "snapshot.json", &bytes)
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let data = serde_json::to_vec(&self.snap.data)
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        *self.kept.lock() = Some(self.snap.clone());
        Ok(Snapshot {
            meta: self.snap.meta.clone(),
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Builder;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<NodeId>>,
            StoredMembership<NodeId, openraft::BasicNode>,
        ),
        SError,
    > {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Reply>, SError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        let mut state = self.state.write();
        for e in entries {
            self.last_applied = Some(e.log_id);
            replies.push(match e.payload {
                EntryPayload::Blank => Reply::default(),
                EntryPayload::Normal(cmd) => {
                    let r = state.apply(&cmd);
                    if r.changed {
                        self.changed.send_modify(|n| *n += 1);
                    }
                    r
                }
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(e.log_id), m);
                    Reply::default()
                }
            });
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        Builder {
            snap: self.snapshot_now(),
            dir: self.dir.clone(),
            kept: Arc::clone(&self.snapshot),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SError> {
        let data: Metadata = serde_json::from_slice(snapshot.get_ref())
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        *self.state.write() = data.clone();
        self.changed.send_modify(|n| *n += 1);
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.keep(StoredSnapshot {
            meta: meta.clone(),
            data,
        })
        .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e).into())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SError> {
        match &*self.snapshot.lock() {
            None => Ok(None),
            Some(s) => {
                let data = serde_json::to_vec(&s.data)
                    .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
                Ok(Some(Snapshot {
                    meta: s.meta.clone(),
                    snapshot: Box::new(Cursor::new(data)),
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::types::Command;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Command::RegisterBroker {
                id: index,
                kafka: format!("h:{index}"),
                http: String::new(),
                listeners: Vec::new(),
                cluster_id: None,
                incarnation: 0,
            }),
        }
    }

    fn indexes(log: &LogStore) -> Vec<u64> {
        log.0.lock().entries.keys().copied().collect()
    }

    #[test]
    fn the_log_replays_appends_truncations_and_purges_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _, _) = open(dir.path(), Default::default()).unwrap();
            let mut inner = log.0.lock();
            inner
                .write(Record::Entries((1..=10).map(|i| entry(1, i)).collect()))
                .unwrap();
            inner.write(Record::TruncateFrom(8)).unwrap();
            inner.write(Record::Entries(vec![entry(2, 8)])).unwrap();
            inner.write(Record::PurgeUpTo(entry(1, 3).log_id)).unwrap();
            inner
                .write(Record::Committed(Some(entry(2, 8).log_id)))
                .unwrap();
        }
        let (log, _, _) = open(dir.path(), Default::default()).unwrap();
        assert_eq!(indexes(&log), vec![4, 5, 6, 7, 8]);
        let inner = log.0.lock();
        assert_eq!(inner.entries[&8].log_id.leader_id.term, 2);
        assert_eq!(inner.last_purged, Some(entry(1, 3).log_id));
        assert_eq!(inner.committed, Some(entry(2, 8).log_id));
    }

    #[test]
    fn a_torn_or_damaged_tail_is_cut_off_and_what_came_before_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _, _) = open(dir.path(), Default::default()).unwrap();
            let mut inner = log.0.lock();
            inner
                .write(Record::Entries(vec![entry(1, 1), entry(1, 2)]))
                .unwrap();
            inner.write(Record::Entries(vec![entry(1, 3)])).unwrap();
        }
        let path = dir.path().join("log");
        let whole = fs::read(&path).unwrap();
        let first = 8 + u32::from_be_bytes(whole[..4].try_into().unwrap()) as usize;
        // A record cut short, then one with a flipped byte, then a length
        // claim of 4 GiB: each time the first record stays, nothing else.
        for damage in [
            whole[..whole.len() - 3].to_vec(),
            {
                let mut w = whole.clone();
                let last = w.len() - 2;
                w[last] ^= 0x20;
                w
            },
            {
                let mut w = whole[..first].to_vec();
                w.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0]);
                w
            },
        ] {
            fs::write(&path, &damage).unwrap();
            let (log, _, _) = open(dir.path(), Default::default()).unwrap();
            assert_eq!(indexes(&log), vec![1, 2]);
            assert_eq!(fs::metadata(&path).unwrap().len(), first as u64);
            // Appends after the cut are read back.
            log.0
                .lock()
                .write(Record::Entries(vec![entry(1, 3)]))
                .unwrap();
            drop(log);
            let (log, _, _) = open(dir.path(), Default::default()).unwrap();
            assert_eq!(indexes(&log), vec![1, 2, 3]);
        }
    }

    #[test]
    fn a_mostly_purged_log_is_rewritten_smaller_with_the_same_contents() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _, _) = open(dir.path(), Default::default()).unwrap();
        {
            let mut inner = log.0.lock();
            for i in 1..=20_000u64 {
                inner.write(Record::Entries(vec![entry(1, i)])).unwrap();
            }
            let before = inner.size;
            inner
                .write(Record::PurgeUpTo(entry(1, 19_990).log_id))
                .unwrap();
            inner.compact_if_worth_it().unwrap();
            assert!(inner.size * 10 < before, "{} -> {}", before, inner.size);
            inner
                .write(Record::Entries(vec![entry(1, 20_001)]))
                .unwrap();
        }
        drop(log);
        let (log, _, _) = open(dir.path(), Default::default()).unwrap();
        assert_eq!(indexes(&log), (19_991..=20_001).collect::<Vec<_>>());
        assert_eq!(log.0.lock().last_purged, Some(entry(1, 19_990).log_id));
    }
}
