//! The SCRAM credential store: `<data_dir>/users.json`.
//!
//! ```json
//! {"version":1,"users":{"alice":{"SCRAM-SHA-256":{"salt":"<b64>","iterations":4096,
//!   "stored_key":"<b64>","server_key":"<b64>"},"SCRAM-SHA-512":{...}}}}
//! ```
//!
//! Only salted keys are stored, never passwords; the file is mode 0600.
//!
//! Several processes may share the file (a running broker and `weir users`
//! commands): every change is a read-modify-write under an exclusive lock on
//! `<data_dir>/users.lock`, written crash-safely (temp file, fsync, rename,
//! fsync of the directory), and readers notice a changed file by its
//! metadata and reload it, so a change takes effect without a restart.
//!
//! All methods do blocking file I/O (a `stat` per lookup, PBKDF2 for
//! [`UserStore::verify_plain`]); async callers should use `spawn_blocking`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use super::scram::{Mechanism, ScramCredential};

/// The credential file, in the data dir.
pub const USERS_FILE: &str = "users.json";

/// The lock file serializing changes across processes, in the data dir.
const LOCK_FILE: &str = "users.lock";

/// The temp file a change is written to before the rename.
const TEMP_FILE: &str = "users.json.tmp";

/// The file format version.
const VERSION: u32 = 1;

/// The longest user name, in bytes.
const MAX_USERNAME_LEN: usize = 255;

/// Every user's credentials, by mechanism.
pub type Users = BTreeMap<String, BTreeMap<Mechanism, ScramCredential>>;

/// The SCRAM credentials of all users, backed by `<data_dir>/users.json`.
#[derive(Debug)]
pub struct UserStore {
    dir: PathBuf,
    path: PathBuf,
    inner: RwLock<Loaded>,
    /// In a cluster: the users its quorum holds, looked up before the
    /// file's (which are then this broker's own, as Kafka's static users).
    replicated: RwLock<Option<Users>>,
    /// Serializes this process's changes (the file lock does across
    /// processes).
    write_lock: Mutex<()>,
}

/// The file's contents as last read, and which version of the file that was.
#[derive(Debug)]
struct Loaded {
    /// `None`: there was no file.
    stamp: Option<FileStamp>,
    users: Users,
    /// A version of the file that failed to load, so that it is not retried
    /// (and warned about) on every lookup.
    failed: Option<FileStamp>,
}

/// What tells versions of the file apart: every change renames a new file
/// into place, so the inode changes as well as the mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl FileStamp {
    fn of(meta: &fs::Metadata) -> Self {
        Self {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode: inode(meta),
        }
    }
}

#[cfg(unix)]
fn inode(meta: &fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

#[cfg(not(unix))]
fn inode(_meta: &fs::Metadata) -> u64 {
    0
}

#[derive(Deserialize)]
struct UsersFile {
    version: u32,
    #[serde(default)]
    users: Users,
}

#[derive(Serialize)]
struct UsersFileRef<'a> {
    version: u32,
    users: &'a Users,
}

impl UserStore {
    /// Opens the store of `data_dir`. A missing file means no users.
    ///
    /// # Errors
    /// The file can't be read, or is corrupt ([`io::ErrorKind::InvalidData`],
    /// naming the file).
    pub fn open(data_dir: &Path) -> io::Result<Self> {
        let path = data_dir.join(USERS_FILE);
        let (users, stamp) = read_users(&path)?;
        Ok(Self {
            dir: data_dir.to_path_buf(),
            path,
            inner: RwLock::new(Loaded {
                stamp,
                users,
                failed: None,
            }),
            replicated: RwLock::new(None),
            write_lock: Mutex::new(()),
        })
    }

    /// The credential of `user` for `mech`, reloading the file first if it
    /// changed on disk.
    #[must_use]
    pub fn credential(&self, user: &str, mech: Mechanism) -> Option<ScramCredential> {
        if let Some(found) = self.replicated_user(user) {
            return found.get(&mech).cloned();
        }
        self.refresh();
        self.inner.read().users.get(user)?.get(&mech).cloned()
    }

    /// Whether `password` is the password of `user` under any of its SCRAM
    /// credentials (SASL PLAIN). Runs one PBKDF2 derivation per mechanism
    /// whether or not the user or credential exists, so that the time taken
    /// does not reveal which users exist.
    #[must_use]
    pub fn verify_plain(&self, user: &str, password: &str) -> bool {
        let creds = self.replicated_user(user).or_else(|| {
            self.refresh();
            self.inner.read().users.get(user).cloned()
        });
        let mut ok = false;
        for mech in Mechanism::ALL {
            match creds.as_ref().and_then(|c| c.get(&mech)) {
                Some(cred) => ok |= cred.verify_password(mech, password),
                None => {
                    let dummy = dummy_credential(mech);
                    let _ = std::hint::black_box(dummy.verify_password(mech, password));
                }
            }
        }
        ok
    }

    /// Adds or replaces the credential of `user` for `mech` (the salted
    /// credential AlterUserScramCredentials sends).
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidInput`] for an invalid user name, an
    /// iteration count outside Kafka's bounds or keys of the wrong length;
    /// otherwise the I/O error (nothing changed then).
    pub fn upsert(&self, user: &str, mech: Mechanism, cred: ScramCredential) -> io::Result<()> {
        validate_username(user).map_err(invalid_input)?;
        validate_iterations(mech, cred.iterations)?;
        if cred.stored_key.len() != mech.hash_len() || cred.server_key.len() != mech.hash_len() {
            return Err(invalid_input(format!(
                "{mech} keys must be {} bytes long",
                mech.hash_len()
            )));
        }
        if cred.salt.is_empty() {
            return Err(invalid_input("the salt must not be empty".to_owned()));
        }
        self.mutate(|users| {
            set_credential(users, user, mech, cred);
            true
        })?;
        tracing::info!(user, mechanism = %mech, "stored SCRAM credential");
        Ok(())
    }

    /// Adds `user` with `password` under both mechanisms, replacing any
    /// credentials it had.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidInput`] for an invalid user name or an
    /// iteration count outside Kafka's bounds; otherwise the I/O error.
    pub fn add_user(&self, user: &str, password: &str, iterations: u32) -> io::Result<()> {
        validate_username(user).map_err(invalid_input)?;
        for mech in Mechanism::ALL {
            validate_iterations(mech, iterations)?;
        }
        // The derivations happen outside the lock.
        let creds: Vec<(Mechanism, ScramCredential)> = Mechanism::ALL
            .into_iter()
            .map(|mech| {
                (
                    mech,
                    ScramCredential::from_password(mech, password, iterations),
                )
            })
            .collect();
        self.mutate(|users| {
            let entry = users.entry(user.to_owned()).or_default();
            entry.clear();
            entry.extend(creds);
            true
        })?;
        tracing::info!(user, iterations, "stored SCRAM credentials");
        Ok(())
    }

    /// Removes the credential of `user` for `mech`, or with `None` all its
    /// credentials; a user left without credentials is dropped. Returns
    /// whether anything was removed.
    ///
    /// # Errors
    /// The I/O error (nothing changed then).
    pub fn delete(&self, user: &str, mech: Option<Mechanism>) -> io::Result<bool> {
        let removed = self.mutate(|users| match mech {
            None => users.remove(user).is_some(),
            Some(mech) => delete_credential(users, user, mech),
        })?;
        if removed {
            match mech {
                Some(mech) => tracing::info!(user, mechanism = %mech, "deleted SCRAM credential"),
                None => tracing::info!(user, "deleted user"),
            }
        }
        Ok(removed)
    }

    /// Every user the Kafka API manages, with its mechanisms and their
    /// iteration counts, sorted: in a cluster the quorum's, otherwise the
    /// file's.
    #[must_use]
    pub fn list(&self) -> Vec<(String, Vec<(Mechanism, u32)>)> {
        let listed = |users: &Users| {
            users
                .iter()
                .map(|(user, creds)| {
                    let mechs = creds.iter().map(|(m, c)| (*m, c.iterations)).collect();
                    (user.clone(), mechs)
                })
                .collect()
        };
        if let Some(users) = &*self.replicated.read() {
            return listed(users);
        }
        self.refresh();
        listed(&self.inner.read().users)
    }

    /// Sets the users of the cluster this broker is in (its quorum holds
    /// them): they are looked up before the file's.
    pub fn set_replicated(&self, users: Users) {
        *self.replicated.write() = Some(users);
    }

    /// The cluster's credentials of `user`, if it is one of the cluster's.
    fn replicated_user(&self, user: &str) -> Option<BTreeMap<Mechanism, ScramCredential>> {
        self.replicated.read().as_ref()?.get(user).cloned()
    }

    /// Whether there are no users.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.refresh();
        self.inner.read().users.is_empty()
    }

    /// Reloads the file if it changed on disk since it was last read. A
    /// failed reload keeps the previous contents.
    fn refresh(&self) {
        let current = match fs::metadata(&self.path) {
            Ok(meta) => Some(FileStamp::of(&meta)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(
                    path = %self.path.display(), error = %e,
                    "failed to check the users file; keeping the loaded credentials"
                );
                return;
            }
        };
        let before = {
            let loaded = self.inner.read();
            if loaded.stamp == current || (current.is_some() && loaded.failed == current) {
                return;
            }
            loaded.stamp
        };
        match read_users(&self.path) {
            Ok((users, stamp)) => {
                let mut loaded = self.inner.write();
                // Someone else (a change in this process, or a concurrent
                // refresh) got there first: theirs is at least as new.
                if loaded.stamp != before {
                    return;
                }
                tracing::info!(
                    path = %self.path.display(), users = users.len(),
                    "reloaded the users file"
                );
                loaded.users = users;
                loaded.stamp = stamp;
                loaded.failed = None;
            }
            Err(e) => {
                tracing::warn!(
                    path = %self.path.display(), error = %e,
                    "failed to reload the users file; keeping the previous credentials"
                );
                self.inner.write().failed = current;
            }
        }
    }

    /// Read-modify-write of the file under the cross-process lock. `change`
    /// returns whether it changed anything; if not, nothing is written.
    fn mutate(&self, change: impl FnOnce(&mut Users) -> bool) -> io::Result<bool> {
        let _guard = self.write_lock.lock();
        fs::create_dir_all(&self.dir).map_err(|e| annotate(e, "failed to create", &self.dir))?;
        let lock_path = self.dir.join(LOCK_FILE);
        let lock_file = open_private(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
            &lock_path,
        )
        .map_err(|e| annotate(e, "failed to open", &lock_path))?;
        lock_file
            .lock()
            .map_err(|e| annotate(e, "failed to lock", &lock_path))?;

        // The file may have been changed by another process since it was
        // last read here: start from what is on disk.
        let (mut users, stamp) = read_users(&self.path)?;
        let changed = change(&mut users);
        let stamp = if changed {
            Some(self.write_users(&users)?)
        } else {
            stamp
        };

        let mut loaded = self.inner.write();
        loaded.users = users;
        loaded.stamp = stamp;
        loaded.failed = None;
        drop(loaded);
        // Closing the file releases the lock; say so explicitly.
        drop(lock_file);
        Ok(changed)
    }

    /// Writes `users` crash-safely; returns the stamp of the new file.
    fn write_users(&self, users: &Users) -> io::Result<FileStamp> {
        let mut data = serde_json::to_vec_pretty(&UsersFileRef {
            version: VERSION,
            users,
        })
        .map_err(io::Error::other)?;
        data.push(b'\n');

        let tmp = self.dir.join(TEMP_FILE);
        let stamp = {
            let mut file = open_private(
                OpenOptions::new().write(true).create(true).truncate(true),
                &tmp,
            )
            .map_err(|e| annotate(e, "failed to create", &tmp))?;
            set_private(&file).map_err(|e| annotate(e, "failed to set permissions of", &tmp))?;
            file.write_all(&data)
                .and_then(|()| file.sync_all())
                .map_err(|e| annotate(e, "failed to write", &tmp))?;
            FileStamp::of(
                &file
                    .metadata()
                    .map_err(|e| annotate(e, "failed to stat", &tmp))?,
            )
        };
        if let Err(e) = fs::rename(&tmp, &self.path) {
            let _ = fs::remove_file(&tmp);
            return Err(annotate(e, "failed to rename into place", &self.path));
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| annotate(e, "failed to sync directory", &self.dir))?;
        Ok(stamp)
    }
}

/// Adds or replaces the credential of `user` for `mech` in `users`.
pub fn set_credential(users: &mut Users, user: &str, mech: Mechanism, cred: ScramCredential) {
    users.entry(user.to_owned()).or_default().insert(mech, cred);
}

/// Removes the credential of `user` for `mech` from `users` (a user left
/// without credentials is dropped); returns whether it was there.
pub fn delete_credential(users: &mut Users, user: &str, mech: Mechanism) -> bool {
    let Some(creds) = users.get_mut(user) else {
        return false;
    };
    let removed = creds.remove(&mech).is_some();
    if creds.is_empty() {
        users.remove(user);
    }
    removed
}

/// Checks a user name: non-empty, at most 255 bytes, no control characters.
///
/// # Errors
/// What is wrong with the name.
pub fn validate_username(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the user name must not be empty".to_owned());
    }
    if name.len() > MAX_USERNAME_LEN {
        return Err(format!(
            "the user name must be at most {MAX_USERNAME_LEN} bytes long"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("the user name must not contain control characters".to_owned());
    }
    Ok(())
}

fn validate_iterations(mech: Mechanism, iterations: u32) -> io::Result<()> {
    if !(mech.min_iterations()..=Mechanism::MAX_ITERATIONS).contains(&iterations) {
        return Err(invalid_input(format!(
            "{mech} iterations must be between {} and {}, not {iterations}",
            mech.min_iterations(),
            Mechanism::MAX_ITERATIONS
        )));
    }
    Ok(())
}

/// A credential no password matches, with the default cost, to spend the
/// same work on unknown users as on known ones.
fn dummy_credential(mech: Mechanism) -> ScramCredential {
    ScramCredential {
        salt: vec![0; 32],
        iterations: mech.min_iterations(),
        stored_key: vec![0; mech.hash_len()],
        server_key: vec![0; mech.hash_len()],
    }
}

/// Reads and parses the file; a missing file is no users.
fn read_users(path: &Path) -> io::Result<(Users, Option<FileStamp>)> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Users::new(), None)),
        Err(e) => return Err(annotate(e, "failed to open", path)),
    };
    // The stamp of the very file read (a rename may replace the path).
    let stamp = FileStamp::of(
        &file
            .metadata()
            .map_err(|e| annotate(e, "failed to stat", path))?,
    );
    let mut data = Vec::new();
    file.read_to_end(&mut data)
        .map_err(|e| annotate(e, "failed to read", path))?;
    let parsed: UsersFile = serde_json::from_slice(&data).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is corrupt: {e}", path.display()),
        )
    })?;
    if parsed.version != VERSION {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} has unsupported version {} (expected {VERSION})",
                path.display(),
                parsed.version
            ),
        ));
    }
    Ok((parsed.users, Some(stamp)))
}

/// Opens with mode 0600 for a created file (on unix).
fn open_private(options: &mut OpenOptions, path: &Path) -> io::Result<File> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Forces mode 0600 (a stale temp file may have been created otherwise).
#[cfg(unix)]
fn set_private(file: &File) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn set_private(_file: &File) -> io::Result<()> {
    Ok(())
}

fn annotate(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

fn invalid_input(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn add_verify_delete_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::open(dir.path()).unwrap();
        assert!(store.is_empty());

        store.add_user("alice", "wonderland", 4096).unwrap();
        assert!(!store.is_empty());
        assert!(store.verify_plain("alice", "wonderland"));
        assert!(!store.verify_plain("alice", "wrong"));
        for mech in Mechanism::ALL {
            let cred = store.credential("alice", mech).unwrap();
            assert_eq!(cred.iterations, 4096);
            assert!(cred.verify_password(mech, "wonderland"));
        }
        assert_eq!(
            store.list(),
            vec![(
                "alice".to_owned(),
                vec![
                    (Mechanism::ScramSha256, 4096),
                    (Mechanism::ScramSha512, 4096)
                ]
            )]
        );

        // Persisted in the documented shape, without the password.
        let text = fs::read_to_string(dir.path().join(USERS_FILE)).unwrap();
        assert!(!text.contains("wonderland"));
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["users"]["alice"]["SCRAM-SHA-256"]["iterations"], 4096);
        assert!(json["users"]["alice"]["SCRAM-SHA-512"]["stored_key"].is_string());

        // A reopened store sees the same.
        let reopened = UserStore::open(dir.path()).unwrap();
        assert!(reopened.verify_plain("alice", "wonderland"));

        assert!(store.delete("alice", None).unwrap());
        assert!(!store.delete("alice", None).unwrap());
        assert!(store.is_empty());
        assert!(!store.verify_plain("alice", "wonderland"));
        assert!(store.credential("alice", Mechanism::ScramSha256).is_none());
    }

    #[test]
    fn second_store_sees_changes() {
        let dir = tempfile::tempdir().unwrap();
        let broker = UserStore::open(dir.path()).unwrap();
        let cli = UserStore::open(dir.path()).unwrap();
        assert!(broker.credential("bob", Mechanism::ScramSha256).is_none());

        cli.add_user("bob", "builder", 4096).unwrap();
        let cred = broker.credential("bob", Mechanism::ScramSha256).unwrap();
        assert!(cred.verify_password(Mechanism::ScramSha256, "builder"));

        // A change of password is seen too.
        cli.add_user("bob", "rebuilt", 4096).unwrap();
        assert!(broker.verify_plain("bob", "rebuilt"));
        assert!(!broker.verify_plain("bob", "builder"));

        // Changes through the broker's store build on the CLI's.
        broker.add_user("carol", "pw-carol", 4096).unwrap();
        assert_eq!(cli.list().len(), 2);
        assert!(cli.delete("bob", None).unwrap());
        assert!(broker.credential("bob", Mechanism::ScramSha512).is_none());
        assert!(broker.verify_plain("carol", "pw-carol"));
    }

    #[test]
    fn corrupt_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(USERS_FILE), b"{not json").unwrap();
        let err = UserStore::open(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains(USERS_FILE), "{err}");

        fs::write(dir.path().join(USERS_FILE), br#"{"version":2,"users":{}}"#).unwrap();
        let err = UserStore::open(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn failed_reload_keeps_previous_contents() {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::open(dir.path()).unwrap();
        store.add_user("dave", "pw-dave", 4096).unwrap();
        fs::write(
            dir.path().join(USERS_FILE),
            b"garbage, and longer than before",
        )
        .unwrap();
        assert!(store.verify_plain("dave", "pw-dave"));
        // A change refuses to overwrite the corrupt file.
        let err = store.add_user("erin", "pw-erin", 4096).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[cfg(unix)]
    #[test]
    fn file_mode_is_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::open(dir.path()).unwrap();
        store.add_user("frank", "pw-frank", 4096).unwrap();
        let mode = fs::metadata(dir.path().join(USERS_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.path().join(TEMP_FILE).exists());
    }

    #[test]
    fn unknown_user_does_not_verify() {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::open(dir.path()).unwrap();
        assert!(!store.verify_plain("ghost", "anything"));
        store.add_user("real", "pw-real", 4096).unwrap();
        assert!(!store.verify_plain("ghost", "pw-real"));
        assert!(!store.delete("ghost", None).unwrap());
        assert!(!store.delete("ghost", Some(Mechanism::ScramSha256)).unwrap());
    }

    #[test]
    fn delete_one_mechanism_keeps_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::open(dir.path()).unwrap();
        store.add_user("heidi", "pw-heidi", 4096).unwrap();
        assert!(store.delete("heidi", Some(Mechanism::ScramSha256)).unwrap());
        assert!(store.credential("heidi", Mechanism::ScramSha256).is_none());
        assert!(store.credential("heidi", Mechanism::ScramSha512).is_some());
        assert!(store.verify_plain("heidi", "pw-heidi"));
        assert_eq!(
            store.list(),
            vec![("heidi".to_owned(), vec![(Mechanism::ScramSha512, 4096)])]
        );
        // Removing the last mechanism drops the user.
        assert!(store.delete("heidi", Some(Mechanism::ScramSha512)).unwrap());
        assert!(store.is_empty());
    }

    #[test]
    fn upsert_stores_a_salted_credential() {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::open(dir.path()).unwrap();
        let mech = Mechanism::ScramSha512;
        let cred = ScramCredential::from_password(mech, "pw-ivan", 8192);
        store.upsert("ivan", mech, cred.clone()).unwrap();
        assert_eq!(store.credential("ivan", mech), Some(cred.clone()));
        assert!(store.credential("ivan", Mechanism::ScramSha256).is_none());

        let too_few = ScramCredential {
            iterations: 100,
            ..cred.clone()
        };
        let err = store.upsert("ivan", mech, too_few).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let wrong_len = ScramCredential {
            stored_key: vec![0; 32],
            ..cred
        };
        assert!(store.upsert("ivan", mech, wrong_len).is_err());
    }

    #[test]
    fn usernames_are_validated() {
        assert!(validate_username("alice").is_ok());
        assert!(validate_username("user@example.com").is_ok());
        assert!(validate_username("").is_err());
        assert!(validate_username(&"x".repeat(256)).is_err());
        assert!(validate_username(&"x".repeat(255)).is_ok());
        assert!(validate_username("bad\nname").is_err());

        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::open(dir.path()).unwrap();
        let err = store.add_user("", "pw", 4096).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let err = store.add_user("ok", "pw", 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
