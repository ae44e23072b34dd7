//! Noticing that the database file was deleted, moved or replaced while the store is open.
//!
//! SQLite keeps writing to the file it opened: after an `rm sagas.db` (or a `mv`, or a
//! cleanup job) every later commit lands in an unlinked inode and is lost when the process
//! exits, while the next process opens an empty store at the path. The writer checks the open
//! file against the path after every commit, before it acknowledges anything (four `stat`
//! calls, microseconds against the commit's fsync), and from the first mismatch fails every
//! request with [`StoreError::Gone`], saying how to get the data back while the process still
//! holds it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::store::StoreError;

/// The identity of one file: device and inode.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
}

/// A file the store holds open, and the path it should be found at.
struct Watched {
    path: PathBuf,
    file: File,
    identity: Identity,
}

impl Watched {
    fn open(path: &Path) -> std::io::Result<Watched> {
        // Read-only: this descriptor only answers `fstat`. It is closed after SQLite's
        // connection (closing a descriptor of the database drops the POSIX locks SQLite holds
        // on it, so it must outlive them).
        let file = File::open(path)?;
        let meta = file.metadata()?;
        Ok(Watched { path: path.to_owned(), file, identity: Identity { dev: meta.dev(), ino: meta.ino() } })
    }

    /// `None` while the path still names the open file; otherwise what happened to it.
    fn check(&self) -> Option<Fate> {
        match std::fs::metadata(&self.path) {
            Ok(meta) if (Identity { dev: meta.dev(), ino: meta.ino() }) == self.identity => None,
            Ok(_) => Some(Fate::Replaced),
            Err(_) if self.file.metadata().is_ok_and(|open| open.nlink() == 0) => Some(Fate::Deleted),
            Err(_) => Some(Fate::Moved),
        }
    }

    fn proc_path(&self) -> String {
        format!("/proc/{}/fd/{}", std::process::id(), self.file.as_raw_fd())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Deleted,
    Moved,
    Replaced,
}

/// The database file and its write-ahead log, as the store opened them.
pub(super) struct Watch {
    db: Watched,
    wal: Option<Watched>,
    wal_path: PathBuf,
}

pub(super) fn wal_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push("-wal");
    path.with_file_name(name)
}

impl Watch {
    pub(super) fn new(path: &Path) -> std::io::Result<Watch> {
        let wal_path = wal_path(path);
        Ok(Watch { db: Watched::open(path)?, wal: Watched::open(&wal_path).ok(), wal_path })
    }

    /// Whether the log the store opened is no longer at its path.
    pub(super) fn log_is_gone(&self) -> bool {
        self.wal.as_ref().is_some_and(|wal| wal.check().is_some())
    }

    /// Whether the database file is no longer at its path.
    pub(super) fn database_is_gone(&self) -> bool {
        self.db.check().is_some()
    }

    /// Watches the log now at the path (after a rescue started a new one).
    pub(super) fn rewatch_log(&mut self) {
        self.wal = Watched::open(&self.wal_path).ok();
    }

    pub(super) fn location(&self) -> String {
        self.db.path.display().to_string()
    }

    /// Checks the files against their paths; `Err` says what happened and what to do.
    pub(super) fn check(&mut self) -> Result<(), StoreError> {
        if self.wal.is_none() {
            // SQLite creates the log with the first write: watch it from then on.
            self.wal = Watched::open(&self.wal_path).ok();
        }
        let location = self.db.path.display().to_string();
        // Copies under other names: when this process stops, SQLite deletes `<file>-wal` by
        // name, which must not be the copy.
        let copy_back = || {
            let mut how = format!("copy `{}` to `{location}.recovered`", self.db.proc_path());
            if let Some(wal) = &self.wal {
                how.push_str(&format!(" and `{}` to `{location}.recovered-wal`", wal.proc_path()));
            }
            how.push_str(&format!(
                " now, then stop this process and rename them to `{location}`{}",
                if self.wal.is_some() { " and `-wal`" } else { "" }
            ));
            how
        };
        let refusal = "nothing written since was acknowledged, and the store refuses every request from now on";
        let reason = match (self.db.check(), self.wal.as_ref().and_then(Watched::check)) {
            (None, None) => return Ok(()),
            (Some(Fate::Deleted), _) => format!(
                "was deleted while the store was open: {refusal}; to keep its sagas, {} (or restore the file from a backup)",
                copy_back()
            ),
            (Some(Fate::Moved), _) => format!(
                "was moved or renamed while the store was open: {refusal}; to keep its sagas, {} (or stop this process and move the file back)",
                copy_back()
            ),
            (Some(Fate::Replaced), _) => format!(
                "was replaced by another file while the store was open: {refusal}; to keep its sagas, {}",
                copy_back()
            ),
            (None, Some(_)) => format!(
                "lost its write-ahead log (`{}` was deleted, moved or replaced) while the store was open, and the last checkpoints are only in it: {refusal}; to keep its sagas, {}",
                self.wal_path.display(),
                copy_back()
            ),
        };
        Err(StoreError::Gone { location, reason })
    }
}
