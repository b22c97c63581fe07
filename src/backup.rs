//! Online backup and offline restore of a data dir.
//!
//! A backup is taken by the running broker (`POST /api/backup`, or `weir
//! backup`, which calls it), so that it is consistent with what the broker
//! serves:
//!
//! 1. committed offsets first, so no restored offset points past the
//!    restored data;
//! 2. `meta.json`, under the registry's lock;
//! 3. for every partition, its segment files and their committed sizes are
//!    recorded under the partition lock; then sealed segments are hard-linked
//!    (copied across file systems) and the active segment is copied up to the
//!    recorded size: whole batches only, bytes that never change;
//! 4. the pending retries;
//! 5. `BACKUP.json`, a manifest with every partition's end offset, written
//!    last: a backup without it is incomplete.
//!
//! Restore (`weir restore --from DIR --data-dir NEW`) is offline: it copies a
//! complete backup into a new, empty data dir; the broker started on it
//! recovers as after any stop.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::broker::{now_ms, Broker};
use crate::group::offsets::{OFFSETS_DIR, OFFSETS_FILE};
use crate::log::LogError;
use crate::topics::META_FILE;

/// Name of the manifest written last into a backup.
pub const MANIFEST: &str = "BACKUP.json";

/// What a backup holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub cluster_id: String,
    pub taken_at_ms: i64,
    pub partitions: Vec<PartitionEntry>,
    pub bytes: u64,
}

/// One partition in a backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionEntry {
    pub topic: String,
    pub partition: i32,
    pub log_start_offset: i64,
    pub end_offset: i64,
}

/// Backup and restore errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    #[error("{0}")]
    Target(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Storage(#[from] LogError),
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> BackupError {
    move |source| BackupError::Io { context, source }
}

fn empty_or_missing(dir: &Path) -> Result<(), BackupError> {
    match fs::read_dir(dir) {
        Ok(mut it) => {
            if it.next().is_some() {
                return Err(BackupError::Target(format!(
                    "{} exists and is not empty",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(format!("failed to read {}", dir.display()))(e)),
    }
}

/// Copies the first `len` bytes of `from` to `to`, fsynced.
fn copy_prefix(from: &Path, to: &Path, len: u64) -> Result<(), BackupError> {
    let mut src = fs::File::open(from).map_err(io(format!("failed to open {}", from.display())))?;
    let mut dst = fs::File::create(to).map_err(io(format!("failed to create {}", to.display())))?;
    let copied = std::io::copy(&mut (&mut src).take(len), &mut dst)
        .map_err(io(format!("failed to copy {}", from.display())))?;
    if copied != len {
        return Err(BackupError::Target(format!(
            "{} is shorter than its committed size",
            from.display()
        )));
    }
    dst.sync_all()
        .map_err(io(format!("failed to sync {}", to.display())))
}

/// Hard-links `from` as `to` (falls back to a copy across file systems).
fn link_or_copy(from: &Path, to: &Path, len: u64) -> Result<(), BackupError> {
    match fs::hard_link(from, to) {
        Ok(()) => {
            // The data may still sit in the page cache: make it durable.
            fs::File::open(to)
                .and_then(|f| f.sync_all())
                .map_err(io(format!("failed to sync {}", to.display())))?;
            Ok(())
        }
        Err(_) => copy_prefix(from, to, len),
    }
}

/// Takes an online backup of `broker` into `dest` (missing or empty).
///
/// # Errors
/// A non-empty target, I/O errors.
pub fn backup(broker: &Broker, dest: &Path) -> Result<Manifest, BackupError> {
    empty_or_missing(dest)?;
    fs::create_dir_all(dest).map_err(io(format!("failed to create {}", dest.display())))?;
    let data = &broker.config.args.data_dir;
    // 1. Committed offsets.
    broker
        .groups
        .offsets
        .snapshot_to(&dest.join(OFFSETS_DIR).join(OFFSETS_FILE))?;
    // 2. Topic metadata.
    copy_prefix(
        &data.join(META_FILE),
        &dest.join(META_FILE),
        fs::metadata(data.join(META_FILE))
            .map_err(io("failed to stat meta.json".into()))?
            .len(),
    )?;
    // 3. Partitions.
    let mut partitions = Vec::new();
    let mut bytes = 0u64;
    for topic in broker.topics.list() {
        for (p, log) in topic.partitions().iter().enumerate() {
            let (files, start, end) = log.snapshot();
            let name = log
                .dir()
                .file_name()
                .map(PathBuf::from)
                .ok_or_else(|| BackupError::Target("partition dir without a name".into()))?;
            let pdir = dest.join(&name);
            fs::create_dir_all(&pdir)
                .map_err(io(format!("failed to create {}", pdir.display())))?;
            let last = files.len().saturating_sub(1);
            for (i, (path, len)) in files.iter().enumerate() {
                let file = path
                    .file_name()
                    .ok_or_else(|| BackupError::Target("segment without a name".into()))?;
                let target = pdir.join(file);
                if i == last {
                    copy_prefix(path, &target, *len)?;
                } else {
                    link_or_copy(path, &target, *len)?;
                }
                bytes += len;
            }
            fs::write(pdir.join("log-start-offset"), start.to_string())
                .map_err(io(format!("failed to write {}", pdir.display())))?;
            partitions.push(PartitionEntry {
                topic: topic.name.clone(),
                partition: p as i32,
                log_start_offset: start,
                end_offset: end,
            });
        }
    }
    // 4. Pending retries.
    broker.retries.store.snapshot_to(
        &dest
            .join(crate::retry::store::DIR)
            .join(crate::retry::store::FILE),
    )?;
    // 5. Users, ACLs and quotas (each replaced atomically when it changes,
    //    so a copy is whole).
    for file in [
        crate::security::users::USERS_FILE,
        crate::security::acl::ACLS_FILE,
        crate::security::quotas::QUOTAS_FILE,
    ] {
        let from = data.join(file);
        match fs::read(&from) {
            Ok(bytes) => crate::security::write_atomically(&dest.join(file), &bytes, 0o600)
                .map_err(io(format!("failed to copy {}", from.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("failed to read {}", from.display()))(e)),
        }
    }
    // 6. The manifest, last.
    let manifest = Manifest {
        version: 1,
        cluster_id: broker.topics.cluster_id().to_string(),
        taken_at_ms: now_ms(),
        partitions,
        bytes,
    };
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BackupError::Target(format!("failed to encode the manifest: {e}")))?;
    crate::log::write_atomic(&dest.join(MANIFEST), &json)?;
    crate::log::sync_dir(dest)?;
    tracing::info!(to = %dest.display(), bytes, partitions = manifest.partitions.len(), "backup taken");
    Ok(manifest)
}

fn copy_tree(from: &Path, to: &Path) -> Result<u64, BackupError> {
    fs::create_dir_all(to).map_err(io(format!("failed to create {}", to.display())))?;
    let mut n = 0;
    for entry in fs::read_dir(from).map_err(io(format!("failed to read {}", from.display())))? {
        let entry = entry.map_err(io(format!("failed to read {}", from.display())))?;
        let path = entry.path();
        let target = to.join(entry.file_name());
        let ft = entry
            .file_type()
            .map_err(io(format!("failed to stat {}", path.display())))?;
        if ft.is_dir() {
            n += copy_tree(&path, &target)?;
        } else if entry.file_name() != MANIFEST {
            let len = entry
                .metadata()
                .map_err(io(format!("failed to stat {}", path.display())))?
                .len();
            copy_prefix(&path, &target, len)?;
            n += len;
        }
    }
    crate::log::sync_dir(to)?;
    Ok(n)
}

/// Restores a complete backup into a new, empty data dir (offline).
///
/// # Errors
/// An incomplete backup, a non-empty target, I/O errors.
pub fn restore(from: &Path, data_dir: &Path) -> Result<Manifest, BackupError> {
    let mut raw = String::new();
    fs::File::open(from.join(MANIFEST))
        .and_then(|mut f| f.read_to_string(&mut raw))
        .map_err(|_| {
            BackupError::Target(format!(
                "{} holds no {MANIFEST}: not a complete backup",
                from.display()
            ))
        })?;
    let manifest: Manifest = serde_json::from_str(&raw)
        .map_err(|e| BackupError::Target(format!("unreadable {MANIFEST}: {e}")))?;
    empty_or_missing(data_dir)?;
    copy_tree(from, data_dir)?;
    #[cfg(unix)]
    for file in [
        crate::security::users::USERS_FILE,
        crate::security::acl::ACLS_FILE,
        crate::security::quotas::QUOTAS_FILE,
    ] {
        use std::os::unix::fs::PermissionsExt;
        let path = data_dir.join(file);
        if path.exists() {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                .map_err(io(format!("failed to restrict {}", path.display())))?;
        }
    }
    let mut note = fs::File::create(data_dir.join("RESTORED_FROM"))
        .map_err(io("failed to write RESTORED_FROM".into()))?;
    let _ = writeln!(
        note,
        "{} taken at {} ms",
        from.display(),
        manifest.taken_at_ms
    );
    Ok(manifest)
}
