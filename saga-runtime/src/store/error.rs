//! The errors of a checkpoint store, typed end to end: the runtime tells a lost claim from a
//! conflict, an unreadable row, an unusable store and a backend failure, and a backend failure
//! keeps its source and says whether trying again may help.

use std::error::Error;
use std::fmt;

use crate::id::SagaId;

/// Errors of a checkpoint store, each saying what happened and what to do, once.
///
/// `{:?}` prints the message (and its causes), so that `main` returning
/// `Result<(), Box<dyn Error>>` shows the text that says what to do; `{:#?}` prints the
/// variant and its fields, which stay public for `match`.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    // ---- about one saga --------------------------------------------------------------
    /// Another runner appended to the saga's journal first.
    #[error(
        "saga `{saga_id}` was advanced by another runner (expected record {expected}, the journal has {found}): let that runner finish it, or resume it again"
    )]
    Conflict {
        /// The saga id.
        saga_id: SagaId,
        /// The sequence number this runner wrote.
        expected: u64,
        /// The journal length found.
        found: u64,
    },
    /// The writer's claim on the saga was taken over by another worker (its lease expired):
    /// its epoch is stale, so nothing it writes is accepted any more.
    #[error(
        "this worker's claim on saga `{saga_id}` (epoch {epoch}) was taken over (the saga is now at epoch {current}), so it stopped driving the saga and wrote nothing more; its new owner continues it"
    )]
    Fenced {
        /// The saga id.
        saga_id: SagaId,
        /// The epoch of the refused writer.
        epoch: u64,
        /// The saga's current epoch.
        current: u64,
    },
    /// Records were appended to a saga that does not exist.
    #[error("no saga with id `{saga_id}` is stored: create it before appending to its journal")]
    Missing {
        /// The saga id.
        saga_id: SagaId,
    },
    /// A stored row cannot be read: corrupted, tampered with, or sealed with another key.
    #[error("{what} of saga `{saga_id}` cannot be read: {reason}; nothing was changed")]
    Unreadable {
        /// The saga id.
        saga_id: SagaId,
        /// Which row (`record 3 (step_completed)`, `the input`).
        what: String,
        /// Why, and what to do.
        reason: String,
    },

    // ---- about the store as a whole (mostly met when opening it) -------------------------
    /// Another process holds the embedded store.
    #[error(
        "`{location}` is in use by another process: one process at a time owns an embedded saga store, so stop the other one or use another file (PostgreSQL serves many workers)"
    )]
    Locked {
        /// The database file.
        location: String,
    },
    /// The file is not a database.
    #[error(
        "`{location}` is not a SQLite database: point the store at a new file or at one it created; nothing was changed"
    )]
    NotADatabase {
        /// The file.
        location: String,
    },
    /// The database belongs to another application.
    #[error(
        "`{location}` is not a saga store ({reason}): use a separate file or database for sagas; nothing was changed"
    )]
    NotASagaStore {
        /// The file or database.
        location: String,
        /// What was found.
        reason: String,
    },
    /// The database was written by a newer version of this library.
    #[error(
        "`{location}` has schema version {found}, newer than version {supported} that this build of saga-runtime knows: upgrade saga-runtime to open it; nothing was changed"
    )]
    NewerSchema {
        /// The file or database.
        location: String,
        /// The schema version found.
        found: i64,
        /// The newest schema version this build knows.
        supported: i64,
    },
    /// The keyring given to the store does not open what the store holds.
    #[error("the keyring does not open `{location}`: {reason}; nothing was changed")]
    WrongKey {
        /// The file or database.
        location: String,
        /// Why, and what to do.
        reason: String,
    },
    /// The store refuses writes (it holds sealed sagas and was opened without a keyring, or
    /// the file cannot be written).
    #[error("`{location}` cannot be written: {reason}")]
    ReadOnly {
        /// The file or database.
        location: String,
        /// Why, and what to do.
        reason: String,
    },

    /// The store's file was deleted, moved or replaced while it was open (or is missing where a
    /// store lived): it refuses everything, so that no write is acknowledged into a file that
    /// no longer exists.
    #[error("`{location}` {reason}")]
    Gone {
        /// The file.
        location: String,
        /// What happened, and how to get the data back.
        reason: String,
    },

    /// The store does not implement an operation (a store written before it existed).
    #[error(
        "{location} does not support {what}: implement that part of `CheckpointStore` for it, or use MemoryStore, SqliteStore or PostgresStore"
    )]
    Unsupported {
        /// The store.
        location: String,
        /// What it cannot do.
        what: String,
    },

    // ---- the backend ---------------------------------------------------------------
    /// The database itself failed (I/O, a full disk, a lost connection).
    #[error(transparent)]
    Backend(BackendError),
}

impl fmt::Debug for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !f.alternate() {
            return crate::error::debug_message(self, f);
        }
        let location =
            |f: &mut fmt::Formatter<'_>, variant: &str, location: &String, more: &[(&str, &dyn fmt::Debug)]| {
                let mut s = f.debug_struct(variant);
                s.field("location", location);
                for (name, value) in more {
                    s.field(name, value);
                }
                s.finish()
            };
        match self {
            StoreError::Conflict { saga_id, expected, found } => f
                .debug_struct("Conflict")
                .field("saga_id", saga_id)
                .field("expected", expected)
                .field("found", found)
                .finish(),
            StoreError::Fenced { saga_id, epoch, current } => f
                .debug_struct("Fenced")
                .field("saga_id", saga_id)
                .field("epoch", epoch)
                .field("current", current)
                .finish(),
            StoreError::Missing { saga_id } => f.debug_struct("Missing").field("saga_id", saga_id).finish(),
            StoreError::Unreadable { saga_id, what, reason } => f
                .debug_struct("Unreadable")
                .field("saga_id", saga_id)
                .field("what", what)
                .field("reason", reason)
                .finish(),
            StoreError::Locked { location: l } => location(f, "Locked", l, &[]),
            StoreError::NotADatabase { location: l } => location(f, "NotADatabase", l, &[]),
            StoreError::NotASagaStore { location: l, reason } => location(f, "NotASagaStore", l, &[("reason", reason)]),
            StoreError::NewerSchema { location: l, found, supported } => {
                location(f, "NewerSchema", l, &[("found", found), ("supported", supported)])
            }
            StoreError::WrongKey { location: l, reason } => location(f, "WrongKey", l, &[("reason", reason)]),
            StoreError::ReadOnly { location: l, reason } => location(f, "ReadOnly", l, &[("reason", reason)]),
            StoreError::Gone { location: l, reason } => location(f, "Gone", l, &[("reason", reason)]),
            StoreError::Unsupported { location: l, what } => location(f, "Unsupported", l, &[("what", what)]),
            StoreError::Backend(backend) => f.debug_tuple("Backend").field(backend).finish(),
        }
    }
}

impl StoreError {
    /// A backend failure with `source` as its cause (not worth retrying unless marked with
    /// [`BackendError::retryable`]).
    pub fn backend(source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        StoreError::Backend(BackendError::new(source))
    }

    /// Whether trying the same operation again later may succeed (a full disk, an I/O error,
    /// a busy database, a lost connection).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Backend(backend) if backend.is_retryable())
    }

    /// The saga the error is about, when it is about one.
    pub fn saga_id(&self) -> Option<&SagaId> {
        match self {
            StoreError::Conflict { saga_id, .. }
            | StoreError::Fenced { saga_id, .. }
            | StoreError::Missing { saga_id }
            | StoreError::Unreadable { saga_id, .. } => Some(saga_id),
            _ => None,
        }
    }

    /// A copy for another caller of a failed group write (the source becomes its message).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn duplicate(&self) -> StoreError {
        match self {
            StoreError::Conflict { saga_id, expected, found } => {
                StoreError::Conflict { saga_id: saga_id.clone(), expected: *expected, found: *found }
            }
            StoreError::Fenced { saga_id, epoch, current } => {
                StoreError::Fenced { saga_id: saga_id.clone(), epoch: *epoch, current: *current }
            }
            StoreError::Missing { saga_id } => StoreError::Missing { saga_id: saga_id.clone() },
            StoreError::Unreadable { saga_id, what, reason } => {
                StoreError::Unreadable { saga_id: saga_id.clone(), what: what.clone(), reason: reason.clone() }
            }
            StoreError::Locked { location } => StoreError::Locked { location: location.clone() },
            StoreError::NotADatabase { location } => StoreError::NotADatabase { location: location.clone() },
            StoreError::NotASagaStore { location, reason } => {
                StoreError::NotASagaStore { location: location.clone(), reason: reason.clone() }
            }
            StoreError::NewerSchema { location, found, supported } => {
                StoreError::NewerSchema { location: location.clone(), found: *found, supported: *supported }
            }
            StoreError::WrongKey { location, reason } => {
                StoreError::WrongKey { location: location.clone(), reason: reason.clone() }
            }
            StoreError::ReadOnly { location, reason } => {
                StoreError::ReadOnly { location: location.clone(), reason: reason.clone() }
            }
            StoreError::Gone { location, reason } => {
                StoreError::Gone { location: location.clone(), reason: reason.clone() }
            }
            StoreError::Unsupported { location, what } => {
                StoreError::Unsupported { location: location.clone(), what: what.clone() }
            }
            StoreError::Backend(backend) => StoreError::Backend(backend.duplicate()),
        }
    }

    /// Whether the writer lost the saga to another one (a take-over or a concurrent append):
    /// it must stop driving the saga at once.
    pub fn is_lost_claim(&self) -> bool {
        matches!(self, StoreError::Fenced { .. } | StoreError::Conflict { .. })
    }
}

/// A failure of the database behind a store, with its source kept.
#[derive(Debug)]
pub struct BackendError(Box<Backend>);

#[derive(Debug)]
struct Backend {
    location: Option<String>,
    action: Option<String>,
    advice: Option<String>,
    retryable: bool,
    code: Option<String>,
    source: Box<dyn Error + Send + Sync>,
}

impl BackendError {
    /// A failure caused by `source`.
    pub fn new(source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        BackendError(Box::new(Backend {
            location: None,
            action: None,
            advice: None,
            retryable: false,
            code: None,
            source: source.into(),
        }))
    }

    /// The file or database it happened on.
    pub fn location(mut self, location: impl Into<String>) -> Self {
        self.0.location = Some(location.into());
        self
    }

    /// What the store was doing (`appending to the journal`).
    pub fn action(mut self, action: impl Into<String>) -> Self {
        self.0.action = Some(action.into());
        self
    }

    /// What the reader should do about it.
    pub fn advice(mut self, advice: impl Into<String>) -> Self {
        self.0.advice = Some(advice.into());
        self
    }

    /// Marks whether trying again later may succeed.
    pub fn retryable(mut self, retryable: bool) -> Self {
        self.0.retryable = retryable;
        self
    }

    /// The backend's own error code (a SQLite result code, a PostgreSQL SQLSTATE).
    pub fn code(mut self, code: impl Into<String>) -> Self {
        self.0.code = Some(code.into());
        self
    }

    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    fn duplicate(&self) -> BackendError {
        let b = &self.0;
        BackendError(Box::new(Backend {
            location: b.location.clone(),
            action: b.action.clone(),
            advice: b.advice.clone(),
            retryable: b.retryable,
            code: b.code.clone(),
            source: b.source.to_string().into(),
        }))
    }

    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.0.retryable
    }

    /// The backend's own error code, if it gave one.
    pub fn error_code(&self) -> Option<&str> {
        self.0.code.as_deref()
    }
}

impl From<&str> for BackendError {
    fn from(message: &str) -> Self {
        BackendError::new(message)
    }
}

impl From<String> for BackendError {
    fn from(message: String) -> Self {
        BackendError::new(message)
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.0.action, &self.0.location) {
            (Some(action), Some(location)) => write!(f, "{action} on `{location}` failed: ")?,
            (Some(action), None) => write!(f, "{action} failed: ")?,
            (None, Some(location)) => write!(f, "`{location}`: ")?,
            (None, None) => {}
        }
        write!(f, "{}", self.0.source)?;
        if let Some(advice) = &self.0.advice {
            write!(f, "; {advice}")?;
        }
        Ok(())
    }
}

/// The message includes the source's, so `source()` does not repeat it (an error reporter
/// walking the chain would print it twice); [`BackendError::get_ref`] gives it typed.
impl Error for BackendError {}

impl BackendError {
    /// The backend's own error, for downcasting (`rusqlite::Error`, `sqlx::Error`).
    pub fn get_ref(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.0.source
    }
}
