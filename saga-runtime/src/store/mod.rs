//! Where journals and checkpoints live: the [`CheckpointStore`] trait and its
//! implementations.
//!
//! A saga is one row (name, version, fingerprint, input, status, stage) and an append-only
//! journal. The checkpoint of a saga is its status and stage in that row together with the
//! outputs carried by its `StepCompleted` records; the runtime hands the store each batch of
//! records with the checkpoint they lead to, and the store writes both atomically.

mod memory;
mod sqlite;

pub use memory::MemoryStore;
pub use sqlite::{SqliteOptions, SqliteStore, Synchronous};

use crate::id::SagaId;
use crate::journal::{Payload, Record};
use crate::outcome::Status;
use crate::saga::BoxFuture;

/// A new saga to create.
#[derive(Clone, Debug)]
pub struct NewSaga {
    /// Its id.
    pub id: SagaId,
    /// The saga name.
    pub name: String,
    /// The definition version.
    pub version: u32,
    /// The definition fingerprint.
    pub fingerprint: String,
    /// The serialized input.
    pub input: Payload,
    /// The first records: `Started`, and the start of the first step's first attempt, so
    /// that creating a saga and starting it is one write.
    pub records: Vec<Record>,
    /// The stage the first records lead to.
    pub stage: String,
    /// The definition that wrote the records (for step names).
    pub definition: &'static crate::saga::Definition,
}

/// What `create` found.
#[derive(Clone, Debug)]
pub enum Created {
    /// The saga was created.
    New,
    /// A saga with this id already existed; nothing was written.
    Existing(StoredSaga),
}

/// A saga as stored: its row and its whole journal.
#[derive(Clone, Debug)]
pub struct StoredSaga {
    /// The row.
    pub summary: SagaSummary,
    /// The serialized input.
    pub input: Payload,
    /// The journal, in order.
    pub records: Vec<Record>,
}

/// The queryable row of a saga.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SagaSummary {
    /// Its id.
    pub id: SagaId,
    /// The saga name.
    pub name: String,
    /// The definition version.
    pub version: u32,
    /// The definition fingerprint.
    pub fingerprint: String,
    /// Where it stands.
    pub status: Status,
    /// The step it is at, in words.
    pub stage: String,
    /// How many journal records it has.
    pub records: u64,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Time of the last write, milliseconds since the Unix epoch.
    pub updated_at_ms: u64,
}

/// The checkpoint a batch of records leads to.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The saga's status after the batch.
    pub status: Status,
    /// The saga's stage after the batch.
    pub stage: String,
    /// The definition that wrote the batch (for step names).
    pub definition: &'static crate::saga::Definition,
}

/// Errors of a checkpoint store, each saying what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
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
    /// Records were appended to a saga that does not exist.
    #[error("no saga with id `{saga_id}` is stored: create it before appending to its journal")]
    Missing {
        /// The saga id.
        saga_id: SagaId,
    },
    /// The store failed for another reason.
    #[error("the checkpoint store failed: {0}")]
    Backend(String),
    /// Another process holds the embedded store.
    #[error(
        "`{path}` is in use by another process: one process at a time owns an embedded saga store, so stop the other one or use another file (PostgreSQL serves many workers)"
    )]
    Locked {
        /// The database file.
        path: std::path::PathBuf,
    },
    /// The file is not a SQLite database.
    #[error(
        "`{path}` is not a SQLite database: point the store at a new file or at one it created; nothing was changed"
    )]
    NotADatabase {
        /// The file.
        path: std::path::PathBuf,
    },
    /// The database belongs to another application.
    #[error("`{path}` is not a saga store ({reason}): use a separate file for sagas; nothing was changed")]
    NotASagaStore {
        /// The file.
        path: std::path::PathBuf,
        /// What was found.
        reason: String,
    },
    /// The database was written by a newer version of this library.
    #[error(
        "`{path}` has schema version {found}, newer than version {supported} that this build of saga-runtime knows: upgrade saga-runtime to open it; nothing was changed"
    )]
    NewerSchema {
        /// The file.
        path: std::path::PathBuf,
        /// The schema version in the file.
        found: i64,
        /// The newest schema version this build knows.
        supported: i64,
    },
    /// The keyring given to the store does not open what the file holds.
    #[error("the keyring does not open `{path}` (the input of saga `{saga_id}`: {reason}); nothing was changed")]
    WrongKey {
        /// The file.
        path: std::path::PathBuf,
        /// The saga whose input was checked.
        saga_id: SagaId,
        /// Why, and what to do.
        reason: String,
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
}

/// Persists sagas and their journals. The runtime drives it; users pick one with
/// `Runtime::builder().store(...)`.
///
/// Implementations must make `append` atomic (all records and the checkpoint, or nothing) and
/// must reject a batch whose first sequence number is not the journal's length
/// ([`StoreError::Conflict`]), so that two runners can never interleave one journal.
pub trait CheckpointStore: Send + Sync + 'static {
    /// Creates the saga, or returns the stored one when the id exists (writing nothing).
    fn create<'a>(&'a self, saga: NewSaga) -> BoxFuture<'a, Result<Created, StoreError>>;

    /// Appends records and writes the checkpoint they lead to, atomically.
    fn append<'a>(
        &'a self,
        id: &'a SagaId,
        records: Vec<Record>,
        checkpoint: Checkpoint,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Loads a saga with its whole journal.
    fn load<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<StoredSaga>, StoreError>>;

    /// Lists every saga, oldest first.
    fn list(&self) -> BoxFuture<'_, Result<Vec<SagaSummary>, StoreError>>;
}
