//! The durable store of held (pending) retries.
//!
//! Records handed back for a retry live in an append-only file,
//! `<data-dir>/__retry/pending.log`, until they are delivered; memory holds
//! only the schedule: `(due time, file position)`, 16 bytes a record. Each
//! entry is `len u32 | crc32c u32 | payload`; a `DONE` entry marks a held
//! record as delivered. Replay at start rebuilds the schedule from the held
//! entries that have no `DONE`; a torn tail is cut. When most of the file is
//! delivered records it is rewritten with the live ones (write-temp, fsync,
//! rename).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::log::{self, framed, LogError};

pub const DIR: &str = crate::topics::RETRY_INTERNAL;
pub const FILE: &str = "pending.log";
const KIND_HELD: u8 = 1;
const KIND_DONE: u8 = 2;
/// Largest entry: a hand-back decompresses to at most 64 MiB
/// (`records::MAX_DECOMPRESSED_BYTES`), so anything larger at replay is
/// corruption, and `hold` refuses to write one.
const MAX_ENTRY: u32 = 128 << 20;

/// One record held for later delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub due_ms: i64,
    /// Topic it is delivered to (the retry topic).
    pub topic: String,
    pub partition: i32,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    /// Headers as they will be delivered (attempt and retry headers set).
    pub headers: Vec<(String, Option<Bytes>)>,
}

fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(b) => {
            out.extend_from_slice(&(b.len() as i32).to_be_bytes());
            out.extend_from_slice(b);
        }
    }
}

fn encode_held(h: &Held) -> Vec<u8> {
    framed::frame(&held_payload(h))
}

/// A held record's bytes, as the store writes them inside its framing (and
/// the cluster's journal as a record's value).
pub(crate) fn held_payload(h: &Held) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    p.push(KIND_HELD);
    p.extend_from_slice(&h.due_ms.to_be_bytes());
    put_bytes(&mut p, Some(h.topic.as_bytes()));
    p.extend_from_slice(&h.partition.to_be_bytes());
    p.extend_from_slice(&h.timestamp.to_be_bytes());
    put_bytes(&mut p, h.key.as_deref());
    put_bytes(&mut p, h.value.as_deref());
    p.extend_from_slice(&(h.headers.len() as i32).to_be_bytes());
    for (k, v) in &h.headers {
        put_bytes(&mut p, Some(k.as_bytes()));
        put_bytes(&mut p, v.as_deref());
    }
    p
}

fn encode_done(pos: u64) -> Vec<u8> {
    let mut p = vec![KIND_DONE];
    p.extend_from_slice(&pos.to_be_bytes());
    framed::frame(&p)
}

pub(crate) fn decode_held(p: &[u8]) -> Option<Held> {
    let mut c = framed::Reader(p);
    if c.u8()? != KIND_HELD {
        return None;
    }
    let due_ms = c.i64()?;
    let topic = String::from_utf8(c.bytes32()??.to_vec()).ok()?;
    let partition = c.i32()?;
    let timestamp = c.i64()?;
    let key = c.bytes32()?;
    let value = c.bytes32()?;
    let n = c.i32()?;
    let mut headers = Vec::with_capacity((n.max(0) as usize).min(c.0.len()));
    for _ in 0..n.max(0) {
        let k = String::from_utf8(c.bytes32()??.to_vec()).ok()?;
        headers.push((k, c.bytes32()?));
    }
    c.is_done().then_some(Held {
        due_ms,
        topic,
        partition,
        timestamp,
        key,
        value,
        headers,
    })
}

/// Earliest due first: (due ms, position of the held entry).
type Schedule = BinaryHeap<Reverse<(i64, u64)>>;

struct Inner {
    file: File,
    len: u64,
    schedule: Schedule,
    live: u64,
    done: u64,
}

/// The pending-retry store.
pub struct PendingStore {
    path: PathBuf,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for PendingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingStore")
            .field("path", &self.path)
            .finish()
    }
}

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> LogError {
    move |source| LogError::Io { context, source }
}

impl PendingStore {
    /// Replays the store, cutting a torn tail.
    ///
    /// # Errors
    /// I/O errors.
    pub fn open(data_dir: &Path) -> Result<Self, LogError> {
        let dir = data_dir.join(DIR);
        fs::create_dir_all(&dir).map_err(io_err(format!("failed to create {}", dir.display())))?;
        let path = dir.join(FILE);
        let mut bytes = Vec::new();
        if let Ok(mut f) = File::open(&path) {
            f.read_to_end(&mut bytes)
                .map_err(io_err(format!("failed to read {}", path.display())))?;
        }
        let mut held: HashMap<u64, i64> = HashMap::new();
        let mut done = 0u64;
        // The end of the last entry applied: an entry that frames well but
        // does not decode also ends the store.
        let mut pos = 0usize;
        for (at, p) in framed::Frames::new(&bytes, MAX_ENTRY) {
            match p[0] {
                KIND_HELD => {
                    let Some(h) = decode_held(p) else { break };
                    held.insert(at, h.due_ms);
                }
                KIND_DONE if p.len() == 9 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&p[1..9]);
                    held.remove(&u64::from_be_bytes(b));
                    done += 1;
                }
                _ => break,
            }
            pos = at as usize + 8 + p.len();
        }
        let file = framed::open_truncated(&path, pos, bytes.len(), "pending-retry store")?;
        let live = held.len() as u64;
        let schedule = held.into_iter().map(|(p, d)| Reverse((d, p))).collect();
        Ok(Self {
            path,
            inner: Mutex::new(Inner {
                file,
                len: pos as u64,
                schedule,
                live,
                done,
            }),
        })
    }

    /// Holds `records` durably (fsync when `sync`), then schedules them.
    ///
    /// # Errors
    /// I/O errors; nothing is scheduled then.
    pub fn hold(&self, records: &[Held], sync: bool) -> Result<(), LogError> {
        let mut buf = Vec::new();
        let mut entries = Vec::with_capacity(records.len());
        let mut inner = self.inner.lock();
        let base = inner.len;
        for r in records {
            let entry = encode_held(r);
            if entry.len() > MAX_ENTRY as usize {
                return Err(LogError::TooLarge {
                    size: entry.len(),
                    max: MAX_ENTRY as usize,
                });
            }
            entries.push((r.due_ms, base + buf.len() as u64));
            buf.extend_from_slice(&entry);
        }
        self.append_locked(&mut inner, &buf, sync)?;
        for e in entries {
            inner.schedule.push(Reverse(e));
        }
        inner.live += records.len() as u64;
        Ok(())
    }

    fn append_locked(&self, inner: &mut Inner, buf: &[u8], sync: bool) -> Result<(), LogError> {
        let at = inner.len;
        let res = crate::log::faults::check(crate::log::faults::Op::Write, &self.path)
            .and_then(|()| inner.file.write_all_at(buf, at))
            .and_then(|()| {
                if sync {
                    crate::log::faults::check(crate::log::faults::Op::Sync, &self.path)?;
                    inner.file.sync_data()
                } else {
                    Ok(())
                }
            });
        if let Err(e) = res {
            let _ = inner.file.set_len(at);
            return Err(LogError::Io {
                context: format!("failed to write {}", self.path.display()),
                source: e,
            });
        }
        inner.len += buf.len() as u64;
        Ok(())
    }

    /// Earliest due time, if anything is pending.
    pub fn next_due(&self) -> Option<i64> {
        self.inner.lock().schedule.peek().map(|Reverse((d, _))| *d)
    }

    /// Takes up to `max` records due at `now_ms`, with their positions.
    /// They stay held on disk until [`PendingStore::mark_done`].
    ///
    /// # Errors
    /// I/O errors reading them back (they are then rescheduled).
    pub fn take_due(&self, now_ms: i64, max: usize) -> Result<Vec<(u64, Held)>, LogError> {
        let mut inner = self.inner.lock();
        let mut out = Vec::new();
        while out.len() < max {
            match inner.schedule.peek() {
                Some(Reverse((d, _))) if *d <= now_ms => {}
                _ => break,
            }
            let Some(Reverse((due, pos))) = inner.schedule.pop() else {
                break;
            };
            match read_entry(&inner.file, pos) {
                Ok(Some(h)) => out.push((pos, h)),
                Ok(None) => {
                    tracing::error!(pos, "unreadable pending retry entry; skipped");
                }
                Err(e) => {
                    inner.schedule.push(Reverse((due, pos)));
                    for (p, h) in out {
                        inner.schedule.push(Reverse((h.due_ms, p)));
                    }
                    return Err(LogError::Io {
                        context: format!("failed to read {}", self.path.display()),
                        source: e,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Puts taken records back (delivery failed).
    pub fn reschedule(&self, taken: &[(u64, Held)]) {
        let mut inner = self.inner.lock();
        for (pos, h) in taken {
            inner.schedule.push(Reverse((h.due_ms, *pos)));
        }
    }

    /// Marks delivered records done, and compacts when most of the file is
    /// done.
    ///
    /// # Errors
    /// I/O errors (the records may then be delivered again after a restart).
    pub fn mark_done(&self, positions: &[u64], sync: bool) -> Result<(), LogError> {
        let mut buf = Vec::with_capacity(positions.len() * 17);
        for p in positions {
            buf.extend_from_slice(&encode_done(*p));
        }
        let mut inner = self.inner.lock();
        self.append_locked(&mut inner, &buf, sync)?;
        inner.live = inner.live.saturating_sub(positions.len() as u64);
        inner.done += positions.len() as u64;
        if inner.done > 10_000 && inner.done > inner.live * 2 {
            if let Err(e) = self.compact_locked(&mut inner) {
                tracing::warn!(error = %e, "failed to compact the pending-retry store");
            }
        }
        Ok(())
    }

    /// The live held entries re-encoded back to back, and their schedule
    /// at their new positions.
    fn encode_live(&self, inner: &Inner) -> Result<(Vec<u8>, Schedule), LogError> {
        let mut buf = Vec::new();
        let mut schedule = BinaryHeap::with_capacity(inner.schedule.len());
        for Reverse((due, pos)) in inner.schedule.iter() {
            let h = read_entry(&inner.file, *pos)
                .map_err(io_err(format!("failed to read {}", self.path.display())))?;
            if let Some(h) = h {
                schedule.push(Reverse((*due, buf.len() as u64)));
                buf.extend_from_slice(&encode_held(&h));
            }
        }
        Ok((buf, schedule))
    }

    fn compact_locked(&self, inner: &mut Inner) -> Result<(), LogError> {
        let (buf, schedule) = self.encode_live(inner)?;
        log::write_atomic(&self.path, &buf)?;
        inner.file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(io_err(format!("failed to reopen {}", self.path.display())))?;
        inner.len = buf.len() as u64;
        inner.live = schedule.len() as u64;
        inner.schedule = schedule;
        inner.done = 0;
        Ok(())
    }

    /// Writes the pending records, compacted, to `path` (backup).
    ///
    /// # Errors
    /// I/O errors.
    pub fn snapshot_to(&self, path: &Path) -> Result<(), LogError> {
        let (buf, _) = self.encode_live(&self.inner.lock())?;
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)
                .map_err(io_err(format!("failed to create {}", dir.display())))?;
        }
        log::write_atomic(path, &buf)
    }

    /// Records pending delivery.
    pub fn pending(&self) -> u64 {
        self.inner.lock().schedule.len() as u64
    }

    /// Bytes of the store file.
    pub fn file_bytes(&self) -> u64 {
        self.inner.lock().len
    }

    /// fsync (shutdown).
    pub fn flush(&self) {
        let _ = self.inner.lock().file.sync_all();
    }
}

fn read_entry(file: &File, pos: u64) -> std::io::Result<Option<Held>> {
    let mut head = [0u8; 8];
    file.read_exact_at(&mut head, pos)?;
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if len > MAX_ENTRY {
        return Ok(None);
    }
    let mut p = vec![0u8; len as usize];
    file.read_exact_at(&mut p, pos + 8)?;
    let crc = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    if crc32c::crc32c(&p) != crc {
        return Ok(None);
    }
    Ok(decode_held(&p))
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_store_directory_is_a_reserved_topic_name() {
        assert!(crate::topics::is_reserved(DIR));
    }

    use super::*;

    fn held(due: i64, v: &str) -> Held {
        Held {
            due_ms: due,
            topic: "t.retry".into(),
            partition: 1,
            timestamp: 7,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from(v.to_string())),
            headers: vec![
                ("retry.attempt".into(), Some(Bytes::from_static(b"1"))),
                ("n".into(), None),
            ],
        }
    }

    #[test]
    fn held_records_come_due_in_order_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = PendingStore::open(dir.path()).unwrap();
            s.hold(&[held(300, "c"), held(100, "a"), held(200, "b")], true)
                .unwrap();
            assert_eq!(s.next_due(), Some(100));
            assert!(
                s.take_due(99, 10).unwrap().is_empty(),
                "nothing before its due time"
            );
            let got = s.take_due(150, 10).unwrap();
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].1, held(100, "a"));
            s.mark_done(&[got[0].0], true).unwrap();
            // "b" taken but not marked done: still pending after a crash.
            let _ = s.take_due(250, 10).unwrap();
        }
        let s = PendingStore::open(dir.path()).unwrap();
        assert_eq!(s.pending(), 2);
        let got = s.take_due(1000, 10).unwrap();
        let values: Vec<_> = got.iter().map(|(_, h)| h.value.clone().unwrap()).collect();
        assert_eq!(
            values,
            vec![Bytes::from_static(b"b"), Bytes::from_static(b"c")]
        );
    }

    #[test]
    fn compaction_keeps_only_live_records() {
        let dir = tempfile::tempdir().unwrap();
        let s = PendingStore::open(dir.path()).unwrap();
        let many: Vec<Held> = (0..10_010).map(|i| held(i, "x")).collect();
        s.hold(&many, false).unwrap();
        s.hold(&[held(1_000_000, "late")], false).unwrap();
        let got = s.take_due(10_009, 20_000).unwrap();
        let positions: Vec<u64> = got.iter().map(|(p, _)| *p).collect();
        s.mark_done(&positions, false).unwrap();
        assert_eq!(s.pending(), 1);
        assert!(s.file_bytes() < 200, "compacted to the one live record");
        drop(s);
        let s = PendingStore::open(dir.path()).unwrap();
        let got = s.take_due(i64::MAX, 10).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.value.as_deref(), Some(&b"late"[..]));
    }
}
