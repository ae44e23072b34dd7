//! The errors of the runtime's own boundary (not of a saga's steps, which become an
//! [`Outcome`](crate::Outcome)).

use std::fmt;

use crate::error::CodecError;
use crate::id::SagaId;
use crate::journal::JournalError;
use crate::outcome::Status;
use crate::retention::ArchiveError;
use crate::store::StoreError;

/// Errors of the runtime itself (not of a saga's steps, which become an [`Outcome`]).
///
/// `{:?}` prints the message (and its causes), so that `main` returning
/// `Result<(), Box<dyn Error>>` shows the text that says what to do; `{:#?}` prints the
/// variant and its fields, which stay public for `match`.
///
/// [`Outcome`]: crate::Outcome
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The checkpoint store failed; the inner error says what to do. `saga_id` is the saga
    /// being written or read, when there was one.
    #[error("{}", store_message(saga_id.as_ref(), error))]
    Store {
        /// The saga the runtime was writing or reading.
        saga_id: Option<SagaId>,
        /// What the store said (its message is part of this one).
        error: StoreError,
    },
    /// `run_with_id` was given an id that already names a saga with another input.
    #[error(
        "saga `{saga_id}` already exists with a different input: the same id never starts a second saga, so use a new SagaId for new input"
    )]
    InputMismatch {
        /// The saga id.
        saga_id: SagaId,
    },
    /// The id names a saga that finished and was pruned by the retention policy: only its
    /// tombstone is left. Nothing was started: a saga id never runs twice. (With another input
    /// the same id is [`InputMismatch`](Self::InputMismatch).)
    #[error(
        "saga `{saga_id}` already ran: it finished {status} and was pruned by the retention policy, so its journal and output are no longer kept; nothing was started again (use a new SagaId to run it again)"
    )]
    Pruned {
        /// The saga id.
        saga_id: SagaId,
        /// How it finished (`Completed` or `Compensated`).
        status: Status,
        /// When it finished (milliseconds since the Unix epoch).
        finished_at_ms: u64,
        /// When it was pruned.
        pruned_at_ms: u64,
    },
    /// Archiving sagas before pruning them failed: the batch was not pruned.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// No saga with this id is stored.
    #[error("no saga with id `{saga_id}` is stored: check the id, or start it with `run_with_id`")]
    UnknownSaga {
        /// The saga id.
        saga_id: SagaId,
    },
    /// The id names a saga of another type.
    #[error("saga `{saga_id}` is a `{stored}` saga, not a `{requested}` one: resume it with its own type")]
    WrongSaga {
        /// The saga id.
        saga_id: SagaId,
        /// The name stored with the saga.
        stored: String,
        /// The name of the type it was resumed as.
        requested: String,
    },
    /// The saga was checkpointed under another definition of its type.
    #[error(
        "saga `{saga_id}` was checkpointed by `{name}` version {stored_version} (fingerprint {stored_fingerprint}) but this binary defines version {current_version} (fingerprint {current_fingerprint}): finish it with the binary that started it, or keep the old definition as its own type; nothing was changed"
    )]
    DefinitionMismatch {
        /// The saga id.
        saga_id: SagaId,
        /// The saga name.
        name: String,
        /// The version stored with the saga.
        stored_version: u32,
        /// The fingerprint stored with the saga.
        stored_fingerprint: String,
        /// The version of the running binary.
        current_version: u32,
        /// The fingerprint of the running binary.
        current_fingerprint: String,
    },
    /// A stored checkpoint could not be decoded into this definition's types.
    #[error(
        "the checkpoint of step `{step}` of saga `{saga_id}` cannot be decoded ({error}): the stored data does not fit the step's output type; nothing was changed"
    )]
    Checkpoint {
        /// The saga id.
        saga_id: SagaId,
        /// The step whose checkpoint is unreadable.
        step: String,
        /// The decoding error.
        error: CodecError,
    },
    /// A step output or the saga input could not be encoded for the checkpoint.
    #[error(
        "the output of step `{step}` of saga `{saga_id}` cannot be serialized for its checkpoint ({error}): make its Serialize impl infallible (JSON map keys must be strings)"
    )]
    Encode {
        /// The saga id.
        saga_id: SagaId,
        /// The step (or `input`).
        step: String,
        /// The encoding error.
        error: CodecError,
    },
    /// `resolve` was called on a saga with no compensation waiting for a human.
    #[error("saga `{saga_id}` cannot be resolved: {reason}")]
    CannotResolve {
        /// The saga id.
        saga_id: SagaId,
        /// Why not, and what to do instead.
        reason: String,
    },
    /// `resolve` or `recover` met a saga whose definition no registered type has.
    #[error(
        "saga `{saga_id}` was checkpointed by `{name}` version {stored_version} (fingerprint {stored_fingerprint}), and this runtime registers only {registered}: register the type that started it (keep the old definition as its own type); nothing was changed"
    )]
    NoMatchingVersion {
        /// The saga id.
        saga_id: SagaId,
        /// The saga name.
        name: String,
        /// The version stored with the saga.
        stored_version: u32,
        /// The fingerprint stored with the saga.
        stored_fingerprint: String,
        /// The registered versions and fingerprints of that name.
        registered: String,
    },
    /// `resolve` or `recover` met a saga whose type was not registered.
    #[error(
        "saga `{saga_id}` is a `{name}` saga, which this runtime does not know: add `.register::<T>()` for its type to `Runtime::builder()`"
    )]
    Unregistered {
        /// The saga id.
        saga_id: SagaId,
        /// The stored saga name.
        name: String,
    },
    /// A step of the saga draws from the rate limit of a downstream that the runtime does not
    /// declare (`#[step(limit = "...")]`): caught before the saga starts or resumes.
    #[error(
        "step `{step}` of `{saga}` draws from the rate limit of downstream `{downstream}`, which this runtime does not declare ({declared}): add `Runtime::builder().limit(\"{downstream}\", Limit::per_second(..))`; nothing was started"
    )]
    UnknownLimit {
        /// The saga name.
        saga: String,
        /// The step.
        step: String,
        /// The downstream it names.
        downstream: String,
        /// The downstreams the runtime declares.
        declared: String,
    },
    /// `cancel` was called on a saga that cannot be rolled back any more.
    #[error("saga `{saga_id}` cannot be cancelled: {reason}")]
    CannotCancel {
        /// The saga id.
        saga_id: SagaId,
        /// Why not, and what to do instead.
        reason: String,
    },
    /// A sweep could not do its chore on a saga's resource (the resource kind's `remove`
    /// failed); the next sweep tries again.
    #[error("sweep of saga `{saga_id}`: {reason}; the next sweep tries again")]
    Sweep {
        /// The saga whose resource it was.
        saga_id: SagaId,
        /// What failed.
        reason: String,
    },
    /// The stored journal contradicts itself (it was edited or written by a buggy version).
    #[error("the journal of saga `{saga_id}` is inconsistent ({error}): inspect it; nothing was changed")]
    Journal {
        /// The saga id.
        saga_id: SagaId,
        /// What is wrong.
        error: JournalError,
    },
}

impl RuntimeError {
    /// The saga the error concerns, when there is one.
    pub fn saga_id(&self) -> Option<&SagaId> {
        match self {
            RuntimeError::Store { saga_id, error } => saga_id.as_ref().or_else(|| error.saga_id()),
            RuntimeError::Archive(_) => None,
            RuntimeError::InputMismatch { saga_id }
            | RuntimeError::Pruned { saga_id, .. }
            | RuntimeError::UnknownSaga { saga_id }
            | RuntimeError::WrongSaga { saga_id, .. }
            | RuntimeError::DefinitionMismatch { saga_id, .. }
            | RuntimeError::Checkpoint { saga_id, .. }
            | RuntimeError::Encode { saga_id, .. }
            | RuntimeError::CannotResolve { saga_id, .. }
            | RuntimeError::NoMatchingVersion { saga_id, .. }
            | RuntimeError::Unregistered { saga_id, .. }
            | RuntimeError::Journal { saga_id, .. }
            | RuntimeError::Sweep { saga_id, .. }
            | RuntimeError::CannotCancel { saga_id, .. } => Some(saga_id),
            RuntimeError::UnknownLimit { .. } => None,
        }
    }

    /// Whether the store failed for a reason that may pass (a full disk, an I/O error, a lost
    /// connection): trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, RuntimeError::Store { error, .. } if error.is_retryable())
    }

    pub(crate) fn store(saga_id: &SagaId, error: StoreError) -> Self {
        RuntimeError::Store { saga_id: Some(saga_id.clone()), error }
    }
}

impl fmt::Debug for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !f.alternate() {
            return crate::error::debug_message(self, f);
        }
        match self {
            RuntimeError::Store { saga_id, error } => {
                f.debug_struct("Store").field("saga_id", saga_id).field("error", error).finish()
            }
            RuntimeError::InputMismatch { saga_id } => {
                f.debug_struct("InputMismatch").field("saga_id", saga_id).finish()
            }
            RuntimeError::Pruned { saga_id, status, finished_at_ms, pruned_at_ms } => f
                .debug_struct("Pruned")
                .field("saga_id", saga_id)
                .field("status", status)
                .field("finished_at_ms", finished_at_ms)
                .field("pruned_at_ms", pruned_at_ms)
                .finish(),
            RuntimeError::Archive(error) => f.debug_tuple("Archive").field(error).finish(),
            RuntimeError::UnknownSaga { saga_id } => f.debug_struct("UnknownSaga").field("saga_id", saga_id).finish(),
            RuntimeError::WrongSaga { saga_id, stored, requested } => f
                .debug_struct("WrongSaga")
                .field("saga_id", saga_id)
                .field("stored", stored)
                .field("requested", requested)
                .finish(),
            RuntimeError::DefinitionMismatch {
                saga_id,
                name,
                stored_version,
                stored_fingerprint,
                current_version,
                current_fingerprint,
            } => f
                .debug_struct("DefinitionMismatch")
                .field("saga_id", saga_id)
                .field("name", name)
                .field("stored_version", stored_version)
                .field("stored_fingerprint", stored_fingerprint)
                .field("current_version", current_version)
                .field("current_fingerprint", current_fingerprint)
                .finish(),
            RuntimeError::Checkpoint { saga_id, step, error } => f
                .debug_struct("Checkpoint")
                .field("saga_id", saga_id)
                .field("step", step)
                .field("error", error)
                .finish(),
            RuntimeError::Encode { saga_id, step, error } => {
                f.debug_struct("Encode").field("saga_id", saga_id).field("step", step).field("error", error).finish()
            }
            RuntimeError::CannotResolve { saga_id, reason } => {
                f.debug_struct("CannotResolve").field("saga_id", saga_id).field("reason", reason).finish()
            }
            RuntimeError::CannotCancel { saga_id, reason } => {
                f.debug_struct("CannotCancel").field("saga_id", saga_id).field("reason", reason).finish()
            }
            RuntimeError::NoMatchingVersion { saga_id, name, stored_version, stored_fingerprint, registered } => f
                .debug_struct("NoMatchingVersion")
                .field("saga_id", saga_id)
                .field("name", name)
                .field("stored_version", stored_version)
                .field("stored_fingerprint", stored_fingerprint)
                .field("registered", registered)
                .finish(),
            RuntimeError::Unregistered { saga_id, name } => {
                f.debug_struct("Unregistered").field("saga_id", saga_id).field("name", name).finish()
            }
            RuntimeError::UnknownLimit { saga, step, downstream, declared } => f
                .debug_struct("UnknownLimit")
                .field("saga", saga)
                .field("step", step)
                .field("downstream", downstream)
                .field("declared", declared)
                .finish(),
            RuntimeError::Sweep { saga_id, reason } => {
                f.debug_struct("Sweep").field("saga_id", saga_id).field("reason", reason).finish()
            }
            RuntimeError::Journal { saga_id, error } => {
                f.debug_struct("Journal").field("saga_id", saga_id).field("error", error).finish()
            }
        }
    }
}

impl From<StoreError> for RuntimeError {
    fn from(error: StoreError) -> Self {
        RuntimeError::Store { saga_id: None, error }
    }
}

/// The store's message, prefixed with the saga it concerns unless it names it already.
fn store_message(saga_id: Option<&SagaId>, error: &StoreError) -> String {
    match saga_id {
        Some(id) if error.saga_id().is_none() => format!("saga `{id}`: {error}"),
        _ => error.to_string(),
    }
}
