//! The default store: a directory with a `VERSION` file and an embedded fjall database.

use std::collections::HashMap;
use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::{Store, StoreError, StoreOp, check_ops};

/// The layout this version writes and reads: bump it when the layout or the engine changes.
pub(super) const FORMAT_VERSION: u32 = 1;

/// Holds [`FORMAT_VERSION`] in decimal, written before anything else.
const VERSION_FILE: &str = "VERSION";

/// Holds the number of a commit known durable, in decimal: see [`FileStore`].
const CHECKPOINT_FILE: &str = "COMMITTED";

/// The engine's directory inside the store's, so that a later format can sit beside it.
const ENGINE_DIR: &str = "fjall";

/// The core's records. Its key prefixes already separate their kinds.
const DATA_KEYSPACE: &str = "broker";

/// The store's own records: [`SEQ_KEY`].
const META_KEYSPACE: &str = "meta";

/// The number of the last commit, big-endian, written in every batch.
const SEQ_KEY: &[u8] = b"seq";

/// How often, at most, the checkpoint file is rewritten (three fsyncs each time).
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// The default [`Store`]: a directory holding an embedded `fjall` database.
///
/// fjall appends each batch to a checksummed write-ahead journal (one `fsync` per synced commit)
/// and sorts the data into checksummed tables in the background. A table or a journal batch
/// that fails its checksum is [`StoreError::Corrupt`]. The directory is locked while open
/// ([`StoreError::Locked`] for a second process).
///
/// One gap is closed here: fjall drops a journal's tail from the first batch it cannot parse,
/// as it must for the torn write of a crash, but also for damage in the middle. So every batch
/// also stores its number, and a `COMMITTED` file beside the database names a commit known
/// durable (rewritten at most once a second, and on drop). Opening a store that ends before
/// that commit is [`StoreError::Corrupt`] rather than a silent loss, naming the journal that
/// was cut (or, on later attempts, the engine's directory); deleting `COMMITTED` accepts the
/// loss and opens what is left.
///
/// After a failed write fjall refuses further writes; the store then reopens the database at
/// the next call, which replays the journal and drops the failed batch if it was torn. Tried
/// by hand on a full 3 MiB tmpfs: the commit that hit the full disk returned
/// [`StoreError::Write`], the calls after it reopened and went on once there was room, and
/// every commit reported done was there after reopening.
pub struct FileStore {
    dir: PathBuf,
    /// `None` after a failed write, until the next call reopens it.
    engine: Option<Engine>,
    /// The number of the last commit applied.
    seq: u64,
    /// The number of the last commit known durable.
    durable: u64,
    /// The number in the checkpoint file, and when it was written.
    checkpointed: u64,
    checkpointed_at: Instant,
}

struct Engine {
    database: Database,
    data: Keyspace,
    meta: Keyspace,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("dir", &self.dir)
            .field("open", &self.engine.is_some())
            .field("seq", &self.seq)
            .field("durable", &self.durable)
            .finish()
    }
}

impl FileStore {
    /// Opens the store in `dir`, creating the directory and an empty store if needed.
    ///
    /// Opening replays the part of the journal not yet sorted into tables (normally the last
    /// few tens of MiB written, at most 512 MiB): about a second per 40 MB on the CI machine.
    ///
    /// # Errors
    /// [`StoreError::UnknownVersion`] when `dir` holds another format, or is not empty and
    /// holds no store; [`StoreError::Locked`] when another process has it open;
    /// [`StoreError::Corrupt`] when the journal or the tables fail their checks, or the store
    /// ends before a commit known durable; [`StoreError::Io`] when it cannot be created or read.
    pub fn open(dir: &Path) -> Result<FileStore, StoreError> {
        fs::create_dir_all(dir).map_err(|source| io_error(dir, source))?;
        check_version(dir)?;
        let checkpoint = read_checkpoint(dir)?;
        let engine_dir = dir.join(ENGINE_DIR);
        let journals = journal_sizes(&engine_dir);
        let mut store = FileStore {
            dir: dir.to_owned(),
            engine: None,
            seq: 0,
            durable: checkpoint.unwrap_or(0),
            checkpointed: checkpoint.unwrap_or(0),
            checkpointed_at: Instant::now(),
        };
        store.engine()?;
        if let Some(checkpoint) = checkpoint
            && store.seq < checkpoint
        {
            let after = journal_sizes(&engine_dir);
            let cut = journals
                .into_iter()
                .find(|(path, size)| after.get(path).is_none_or(|after| after < size));
            return Err(StoreError::Corrupt {
                path: cut.map_or(engine_dir, |(path, _)| path),
                detail: format!(
                    "the journal ends at commit {} but commit {checkpoint} was durable (see {}): \
                     the engine cut it at a damaged batch; delete {CHECKPOINT_FILE} to accept \
                     the loss",
                    store.seq,
                    dir.join(CHECKPOINT_FILE).display(),
                ),
            });
        }
        Ok(store)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The open database, reopened if a failed write closed it.
    fn engine(&mut self) -> Result<&Engine, StoreError> {
        let engine = match self.engine.take() {
            Some(engine) => engine,
            None => {
                let engine = self.open_engine()?;
                // A failed commit may or may not have been applied: continue after what is there.
                let stored = engine.meta.get(SEQ_KEY);
                let stored = stored.map_err(|error| self.error(error, false))?;
                self.seq = match stored {
                    None => 0,
                    Some(bytes) => match <[u8; 8]>::try_from(&*bytes) {
                        Ok(bytes) => u64::from_be_bytes(bytes),
                        Err(_) => {
                            return Err(StoreError::Corrupt {
                                path: self.dir.join(ENGINE_DIR),
                                detail: format!("a commit number of {} bytes", bytes.len()),
                            });
                        }
                    },
                };
                engine
            }
        };
        Ok(self.engine.insert(engine))
    }

    fn open_engine(&self) -> Result<Engine, StoreError> {
        let path = self.dir.join(ENGINE_DIR);
        let database = Database::builder(&path)
            .open()
            .map_err(|error| self.error(error, false))?;
        let keyspace = |name| {
            database
                .keyspace(name, KeyspaceCreateOptions::default)
                .map_err(|error| self.error(error, false))
        };
        let data = keyspace(DATA_KEYSPACE)?;
        let meta = keyspace(META_KEYSPACE)?;
        Ok(Engine {
            database,
            data,
            meta,
        })
    }

    /// Sorts an engine error into our kinds.
    fn error(&self, error: fjall::Error, writing: bool) -> StoreError {
        let engine_dir = self.dir.join(ENGINE_DIR);
        let io = |source: std::io::Error| {
            if writing {
                StoreError::Write {
                    path: self.dir.clone(),
                    source,
                }
            } else {
                io_error(&engine_dir, source)
            }
        };
        match error {
            fjall::Error::Io(source) | fjall::Error::Storage(fjall::LsmError::Io(source)) => {
                io(source)
            }
            fjall::Error::Poisoned => io(std::io::Error::other(
                "an earlier write failed; the store reopens at the next call",
            )),
            fjall::Error::Locked => StoreError::Locked {
                path: self.dir.clone(),
            },
            fjall::Error::InvalidVersion(Some(version)) => StoreError::UnknownVersion {
                path: engine_dir.join("version"),
                found: format!("engine format {version:?}"),
            },
            corrupt @ (fjall::Error::InvalidVersion(None)
            | fjall::Error::Storage(_)
            | fjall::Error::JournalRecovery(_)
            | fjall::Error::Decompress(_)
            | fjall::Error::InvalidTrailer
            | fjall::Error::InvalidTag(_)
            | fjall::Error::Unrecoverable
            | fjall::Error::KeyspaceDeleted) => StoreError::Corrupt {
                path: engine_dir,
                detail: corrupt.to_string(),
            },
            other => io(std::io::Error::other(other.to_string())),
        }
    }

    /// Closes the database after a failed write (fjall refuses writes after one), so that the
    /// next call reopens it.
    fn write_failed(&mut self, error: fjall::Error) -> StoreError {
        let error = self.error(error, true);
        self.engine = None;
        error
    }

    /// Records that every commit so far is durable, in the checkpoint file when it is due.
    fn synced(&mut self, force: bool) {
        self.durable = self.seq;
        let due = force || self.checkpointed_at.elapsed() >= CHECKPOINT_INTERVAL;
        if self.durable > self.checkpointed && due {
            self.checkpointed_at = Instant::now();
            // Best effort: the file only serves to detect a journal cut short, and the commit
            // itself is durable. A failure is tried again a second later.
            if write_atomically(&self.dir, CHECKPOINT_FILE, &self.durable.to_string()).is_ok() {
                self.checkpointed = self.durable;
            }
        }
    }

    /// Moves the data's memory table into a table file, so that tests can corrupt one.
    #[cfg(test)]
    pub(super) fn flush(&mut self) -> Result<(), StoreError> {
        let engine = self.engine()?;
        let result = engine.data.rotate_memtable_and_wait();
        result.map_err(|error| self.error(error, true))
    }
}

impl Store for FileStore {
    fn load(&mut self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), StoreError> {
        let engine = self.engine()?;
        let mut failed = None;
        for guard in engine.data.iter() {
            match guard.into_inner() {
                Ok((key, value)) => visit(&key, &value),
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
        }
        match failed {
            Some(error) => Err(self.error(error, false)),
            None => Ok(()),
        }
    }

    fn commit(&mut self, ops: &[StoreOp], sync: bool) -> Result<(), StoreError> {
        check_ops(ops)?;
        if ops.is_empty() {
            return if sync { self.sync() } else { Ok(()) };
        }
        let engine = self.engine()?;
        let mut batch = engine
            .database
            .batch()
            .durability(sync.then_some(PersistMode::SyncAll));
        for op in ops {
            match op {
                StoreOp::Put { key, value } => {
                    batch.insert(&engine.data, key.as_ref(), value.as_ref());
                }
                StoreOp::Delete { key } => batch.remove(&engine.data, key.as_ref()),
            }
        }
        let meta = engine.meta.clone();
        // Read after `engine()`, which reloads it when it reopens the database.
        let seq = self.seq + 1;
        batch.insert(&meta, SEQ_KEY, seq.to_be_bytes());
        batch.commit().map_err(|error| self.write_failed(error))?;
        self.seq = seq;
        if sync {
            self.synced(false);
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        let engine = self.engine()?;
        let result = engine.database.persist(PersistMode::SyncAll);
        result.map_err(|error| self.write_failed(error))?;
        self.synced(false);
        Ok(())
    }
}

impl Drop for FileStore {
    /// Makes every commit durable and records it, so that the next open checks all of them.
    fn drop(&mut self) {
        if let Some(engine) = &self.engine
            && engine.database.persist(PersistMode::SyncAll).is_ok()
        {
            self.synced(true);
        }
    }
}

fn io_error(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The temporary name of a file being replaced.
fn temp_name(name: &str) -> String {
    format!("{name}.tmp")
}

/// Reads the version file, or writes it in a new store. A directory with other files and no
/// version file is not ours: refused rather than filled.
fn check_version(dir: &Path) -> Result<(), StoreError> {
    let path = dir.join(VERSION_FILE);
    match fs::read(&path) {
        Ok(text) => {
            let text = String::from_utf8_lossy(&text);
            if text.trim() == FORMAT_VERSION.to_string() {
                Ok(())
            } else {
                let text: String = text.trim().chars().take(40).collect();
                let found = if text.is_empty() {
                    format!("an empty {VERSION_FILE} file")
                } else {
                    format!("format {text:?}")
                };
                Err(StoreError::UnknownVersion { path, found })
            }
        }
        Err(error) if error.kind() == ErrorKind::NotFound => {
            let entries = fs::read_dir(dir).map_err(|source| io_error(dir, source))?;
            for entry in entries {
                let entry = entry.map_err(|source| io_error(dir, source))?;
                if entry.file_name() != *temp_name(VERSION_FILE) {
                    return Err(StoreError::UnknownVersion {
                        path: dir.to_owned(),
                        found: format!(
                            "no {VERSION_FILE} file beside {}",
                            entry.file_name().to_string_lossy()
                        ),
                    });
                }
            }
            let version = FORMAT_VERSION.to_string();
            write_atomically(dir, VERSION_FILE, &version).map_err(|source| io_error(&path, source))
        }
        Err(source) => Err(io_error(&path, source)),
    }
}

/// The commit number in the checkpoint file, if there is one.
fn read_checkpoint(dir: &Path) -> Result<Option<u64>, StoreError> {
    let path = dir.join(CHECKPOINT_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => match text.trim().parse() {
            Ok(seq) => Ok(Some(seq)),
            Err(_) => Err(StoreError::Corrupt {
                path,
                detail: format!("not a commit number: {:?}", text.trim()),
            }),
        },
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(io_error(&path, source)),
    }
}

/// The size of each journal file of the engine.
fn journal_sizes(engine_dir: &Path) -> HashMap<PathBuf, u64> {
    let Ok(entries) = fs::read_dir(engine_dir) else {
        return HashMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "jnl"))
        .filter_map(|entry| Some((entry.path(), entry.metadata().ok()?.len())))
        .collect()
}

/// Replaces `dir/name` with a line of `text`, whole or not at all: a temporary file, fsynced,
/// renamed into place, and the directory fsynced so that the name survives a power cut.
fn write_atomically(dir: &Path, name: &str, text: &str) -> std::io::Result<()> {
    let temp = dir.join(temp_name(name));
    let mut file = fs::File::create(&temp)?;
    writeln!(file, "{text}")?;
    file.sync_all()?;
    fs::rename(&temp, dir.join(name))?;
    // Only Unix can open a directory to fsync it.
    #[cfg(unix)]
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}
