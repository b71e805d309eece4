//! The session store: the client's session in a file, so that the QoS 1 and 2 publishes the
//! broker has not acknowledged, and the QoS 2 messages it is releasing, survive the process
//! (see [`ClientOptions::session_store`](crate::ClientOptions::session_store)).
//!
//! The file holds the client identifier the session belongs to and the session in the saved form
//! of [`Session::encode`] (versioned, checksummed):
//!
//! ```text
//! magic        8 bytes  "MQTTCSTO"
//! version      u8       1
//! client id             u16 length, UTF-8
//! session               Session::encode, to the end of the file
//! ```
//!
//! It is replaced whole: written to `PATH.tmp`, flushed to the disk (fsync), renamed over
//! `PATH`, and the directory flushed, so that a crash at any point leaves the old file or the
//! new one, never a mix.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_channel::{Receiver, Sender};
use bytes::{Bytes, BytesMut};
use mqtt_proto::codec::EncodeError;
use mqtt_proto::connection::{Session, SessionDecodeError};
use mqtt_proto::packet::ByteString;

use crate::Error;

const MAGIC: [u8; 8] = *b"MQTTCSTO";

/// The version of the file around the session (the session has a version of its own).
const VERSION: u8 = 1;

/// A file that keeps a client's session: see
/// [`ClientOptions::session_store`](crate::ClientOptions::session_store).
///
/// [`SessionStore::load`] reads one, to look at what a client left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStore {
    path: PathBuf,
    /// Where a new version is written before it replaces the file.
    temporary: PathBuf,
}

/// What went wrong with a [`SessionStore`]. The client does not connect (at
/// [`Client::connect`](crate::Client::connect)) or stops (while running): it cannot keep its
/// guarantees without the file.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SessionStoreError {
    /// Reading, writing or flushing the file failed (permissions, a full disk, …).
    #[error("session store {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: Arc<io::Error>,
    },
    /// The file is not a session store (another file at that path?).
    #[error("{} is not a client session store", path.display())]
    NotAStore {
        /// The file.
        path: PathBuf,
    },
    /// The file was written by a version of this library that this one cannot read.
    #[error(
        "session store {}: file format version {version} is not supported (this build reads \
         version {VERSION})",
        path.display()
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version it says it has.
        version: u8,
    },
    /// The file holds the session of another client: use another path per client identifier.
    #[error(
        "session store {} holds the session of client {found:?}, not of {expected:?}",
        path.display()
    )]
    WrongClientId {
        /// The file.
        path: PathBuf,
        /// The client identifier of the session in the file.
        found: String,
        /// The client identifier of these options.
        expected: String,
    },
    /// The file is damaged (cut short, changed) or its session cannot be read. Remove it to
    /// start without the session, knowing that its unacknowledged publishes are lost.
    #[error("session store {} is damaged: {source}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: SessionDecodeError,
    },
}

impl SessionStore {
    /// The store at `path`; its temporary file is `path` with `.tmp` appended.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let mut temporary = path.clone().into_os_string();
        temporary.push(".tmp");
        Self {
            path,
            temporary: temporary.into(),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the stored session and the client identifier it belongs to; `None` when there is
    /// no file.
    pub fn load(&self) -> Result<Option<(ByteString, Session)>, SessionStoreError> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(self.io(error)),
        };
        self.decode(&bytes).map(Some)
    }

    /// Reads the stored session for the client `client_id` (empty: whichever client's, as a
    /// client whose identifier the broker assigns finds its own).
    pub(crate) fn load_for(&self, client_id: &str) -> Result<Option<Session>, SessionStoreError> {
        let Some((found, session)) = self.load()? else {
            return Ok(None);
        };
        if !client_id.is_empty() && found != client_id {
            return Err(SessionStoreError::WrongClientId {
                path: self.path.clone(),
                found: found.to_string(),
                expected: client_id.to_string(),
            });
        }
        Ok(Some(session))
    }

    fn decode(&self, bytes: &[u8]) -> Result<(ByteString, Session), SessionStoreError> {
        let magic_len = bytes.len().min(MAGIC.len());
        if bytes.get(..magic_len) != MAGIC.get(..magic_len) {
            return Err(SessionStoreError::NotAStore {
                path: self.path.clone(),
            });
        }
        let corrupt = |source| SessionStoreError::Corrupt {
            path: self.path.clone(),
            source,
        };
        let rest = bytes.get(MAGIC.len()..).unwrap_or_default();
        let (&version, rest) = rest
            .split_first()
            .ok_or(corrupt(SessionDecodeError::Truncated))?;
        if version != VERSION {
            return Err(SessionStoreError::UnsupportedVersion {
                path: self.path.clone(),
                version,
            });
        }
        let (len, rest) = rest
            .split_first_chunk::<2>()
            .ok_or(corrupt(SessionDecodeError::Truncated))?;
        let (id, session) = rest
            .split_at_checked(usize::from(u16::from_be_bytes(*len)))
            .ok_or(corrupt(SessionDecodeError::Truncated))?;
        let id = std::str::from_utf8(id)
            .map_err(|_| corrupt(SessionDecodeError::Invalid("the client id is not UTF-8")))?;
        let session = Session::decode(session).map_err(corrupt)?;
        Ok((ByteString::from(id), session))
    }

    /// Writes what [`encode`] framed, replacing the file: temporary file, fsync, rename, and an
    /// fsync of the directory so that the rename itself is durable.
    pub(crate) fn save(&self, bytes: &[u8]) -> Result<(), SessionStoreError> {
        let write = || -> io::Result<()> {
            let mut file = File::create(&self.temporary)?;
            file.write_all(bytes)?;
            file.sync_data()?;
            drop(file);
            fs::rename(&self.temporary, &self.path)?;
            sync_directory(&self.path)
        };
        write().map_err(|error| self.io(error))
    }

    fn io(&self, error: io::Error) -> SessionStoreError {
        SessionStoreError::Io {
            path: self.path.clone(),
            source: Arc::new(error),
        }
    }
}

/// Frames a session for [`SessionStore::save`]: the header with `client_id`, then what
/// `session` appends (`Session::encode` or `ClientConnection::encode_session`).
pub(crate) fn encode(
    client_id: &str,
    buf: &mut BytesMut,
    session: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let id = client_id.as_bytes();
    let len = u16::try_from(id.len()).map_err(|_| EncodeError::FieldTooLong(id.len()))?;
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&[VERSION]);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(id);
    session(buf)
}

#[cfg(unix)]
fn sync_directory(path: &Path) -> io::Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(directory)?.sync_all()
}

/// Elsewhere a directory cannot be opened to be flushed; the rename is as durable as the
/// platform makes it.
#[cfg(not(unix))]
fn sync_directory(_path: &Path) -> io::Result<()> {
    Ok(())
}

/// The store's own thread: it reads the session once, then writes each version it is given.
/// Writing and flushing take milliseconds, which would stall every task of a single-threaded
/// executor; [`Runtime`](crate::Runtime) has no `spawn_blocking`, so the store has a thread of
/// its own, which ends with the client.
#[derive(Debug)]
pub(crate) struct StoreThread {
    versions: Sender<Bytes>,
    saved: Receiver<Result<(), SessionStoreError>>,
}

impl StoreThread {
    /// Starts the thread; returns once it has read the session of `client_id` (`None` without a
    /// file).
    pub(crate) async fn open(
        store: SessionStore,
        client_id: ByteString,
    ) -> Result<(Self, Option<Session>), Error> {
        let (versions, to_write) = async_channel::bounded::<Bytes>(1);
        let (done, saved) = async_channel::bounded(1);
        let (loaded_tx, loaded) = async_channel::bounded(1);
        std::thread::Builder::new()
            .name("mqtt-session-store".into())
            .spawn(move || {
                if loaded_tx.send_blocking(store.load_for(&client_id)).is_err() {
                    return;
                }
                while let Ok(bytes) = to_write.recv_blocking() {
                    if done.send_blocking(store.save(&bytes)).is_err() {
                        return;
                    }
                }
            })?;
        let session = loaded.recv().await.map_err(|_| Error::Closed)??;
        Ok((Self { versions, saved }, session))
    }

    /// Writes this version of the file; returns once it is durable.
    pub(crate) async fn save(&self, bytes: Bytes) -> Result<(), Error> {
        self.versions.send(bytes).await.map_err(|_| Error::Closed)?;
        Ok(self.saved.recv().await.map_err(|_| Error::Closed)??)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(client_id: &str, session: &Session) -> Vec<u8> {
        let mut buf = BytesMut::new();
        encode(client_id, &mut buf, |buf| session.encode(buf)).unwrap();
        buf.to_vec()
    }

    #[test]
    fn saves_and_loads_for_its_client_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::new(dir.path().join("client.session"));
        assert!(store.load().unwrap().is_none(), "no file, no session");
        assert!(store.load_for("me").unwrap().is_none());
        store.save(&saved("me", &Session::new())).unwrap();
        assert!(!dir.path().join("client.session.tmp").exists());
        let (id, session) = store.load().unwrap().unwrap();
        assert_eq!((id.as_ref(), session), ("me", Session::new()));
        assert_eq!(store.load_for("me").unwrap(), Some(Session::new()));
        assert_eq!(store.load_for("").unwrap(), Some(Session::new()));
        let error = store.load_for("someone-else").unwrap_err();
        assert!(
            matches!(&error, SessionStoreError::WrongClientId { found, expected, .. }
                if found == "me" && expected == "someone-else"),
            "{error:?}"
        );
        assert!(error.to_string().contains("\"someone-else\""), "{error}");
        // A newer version replaces the file.
        store.save(&saved("me", &Session::new())).unwrap();
        assert!(store.load_for("me").unwrap().is_some());
    }

    #[test]
    fn cut_or_changed_files_are_corrupt_never_a_session() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::new(dir.path().join("s"));
        let whole = saved("client-7", &Session::new());
        for len in 0..whole.len() {
            fs::write(store.path(), &whole[..len]).unwrap();
            let error = store.load().unwrap_err();
            assert!(
                matches!(error, SessionStoreError::Corrupt { .. }),
                "cut at {len}: {error:?}"
            );
        }
        for index in MAGIC.len() + 1..whole.len() {
            let mut changed = whole.clone();
            changed[index] ^= 0x10;
            fs::write(store.path(), &changed).unwrap();
            // A changed client id reads as another client's session; anything else is damage.
            assert!(store.load_for("client-7").is_err(), "byte {index} changed");
        }
        let mut longer = whole.clone();
        longer.push(0);
        fs::write(store.path(), &longer).unwrap();
        let error = store.load().unwrap_err();
        assert!(error.to_string().contains("damaged"), "{error}");
    }

    #[test]
    fn other_files_and_versions_are_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::new(dir.path().join("s"));
        fs::write(store.path(), b"[settings]\nkey = 1\n").unwrap();
        assert!(matches!(
            store.load(),
            Err(SessionStoreError::NotAStore { .. })
        ));
        let mut newer = saved("c", &Session::new());
        newer[MAGIC.len()] = 2;
        fs::write(store.path(), &newer).unwrap();
        let error = store.load().unwrap_err();
        assert!(
            matches!(
                error,
                SessionStoreError::UnsupportedVersion { version: 2, .. }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn an_unreadable_store_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be.
        let store = SessionStore::new(dir.path());
        assert!(matches!(store.load(), Err(SessionStoreError::Io { .. })));
        let missing = SessionStore::new(dir.path().join("no/such/dir/s"));
        assert!(matches!(
            missing.save(&saved("c", &Session::new())),
            Err(SessionStoreError::Io { .. })
        ));
    }

    #[test]
    fn the_thread_loads_then_saves() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::new(dir.path().join("s"));
        futures_lite::future::block_on(async {
            let (thread, session) = StoreThread::open(store.clone(), "c".into()).await.unwrap();
            assert!(session.is_none());
            thread
                .save(Bytes::from(saved("c", &Session::new())))
                .await
                .unwrap();
        });
        assert!(store.load_for("c").unwrap().is_some());
        futures_lite::future::block_on(async {
            let refused = StoreThread::open(store.clone(), "d".into()).await;
            assert!(matches!(
                refused,
                Err(Error::SessionStore(SessionStoreError::WrongClientId { .. }))
            ));
        });
    }
}
