//! Step failures and their classification, and the errors of the runtime's own boundary.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::id::SagaId;
use crate::store::StoreError;

/// The three classes of agent failure; each climbs its own rows of the escalation ladder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FailureClass {
    /// Infrastructure that should recover by itself: a vendor 5xx, a rate limit, a network
    /// blip. Retried with backoff and jitter.
    Transient,
    /// The agent did something wrong while the system is healthy: bad SQL, a wrong tool call,
    /// a hallucinated or rejected output, a step that timed out or panicked. Re-prompted with
    /// the error, then tried on stronger model tiers.
    Logical,
    /// Something downstream changed (a schema migrated, an API removed): the plan is stale.
    /// Earlier steps are compensated and the saga restarts with the new state surfaced.
    Environmental,
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureClass::Transient => "transient",
            FailureClass::Logical => "logical",
            FailureClass::Environmental => "environmental",
        })
    }
}

/// How a failure came about, beyond its class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum FailureKind {
    /// The step (or compensation) returned an error.
    Error,
    /// The step returned an output that its `validate` method rejected.
    Rejected,
    /// The attempt ran past its timeout and was cancelled.
    TimedOut,
    /// The attempt panicked; the panic was caught.
    Panicked,
    /// The process stopped during the attempt (a crash or a shutdown); found on resume.
    Interrupted,
}

/// The error a step or a compensation returns, with its failure class.
///
/// ```
/// use std::time::Duration;
/// use saga_runtime::prelude::*;
///
/// let rate_limited = StepError::transient("429 Too Many Requests").retry_after(Duration::from_secs(2));
/// assert_eq!(rate_limited.class(), FailureClass::Transient);
///
/// let stale = StepError::environmental("table `users` has no column `email`")
///     .restart_from("plan")
///     .with_observation(serde_json::json!({ "schema": "v7" }));
/// assert_eq!(stale.class(), FailureClass::Environmental);
/// ```
#[derive(Clone, Debug)]
pub struct StepError {
    class: FailureClass,
    kind: FailureKind,
    message: String,
    retry_after: Option<Duration>,
    restart_from: Option<String>,
    observation: Option<serde_json::Value>,
}

impl StepError {
    fn new(class: FailureClass, error: impl fmt::Display) -> Self {
        StepError {
            class,
            kind: FailureKind::Error,
            message: error.to_string(),
            retry_after: None,
            restart_from: None,
            observation: None,
        }
    }

    /// A transient failure: retried with backoff.
    pub fn transient(error: impl fmt::Display) -> Self {
        Self::new(FailureClass::Transient, error)
    }

    /// A logical failure: re-prompted with the error, then tried on stronger model tiers.
    pub fn logical(error: impl fmt::Display) -> Self {
        Self::new(FailureClass::Logical, error)
    }

    /// An environmental failure: compensate and restart with the new state surfaced.
    pub fn environmental(error: impl fmt::Display) -> Self {
        Self::new(FailureClass::Environmental, error)
    }

    /// Waits at least this long before the next retry (a `Retry-After` header).
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// For an environmental failure: the step to restart from (default: the failing step).
    pub fn restart_from(mut self, step: impl Into<String>) -> Self {
        self.restart_from = Some(step.into());
        self
    }

    /// For an environmental failure: the new state, visible to every later step through
    /// [`StepContext::observation`](crate::StepContext::observation).
    pub fn with_observation(mut self, observation: serde_json::Value) -> Self {
        self.observation = Some(observation);
        self
    }

    /// The failure class.
    pub fn class(&self) -> FailureClass {
        self.class
    }

    /// How the failure came about.
    pub fn kind(&self) -> FailureKind {
        self.kind
    }

    /// The error message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The minimum delay before a retry, if the error asked for one.
    pub fn retry_after_delay(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The step an environmental failure asked to restart from.
    pub fn restart_step(&self) -> Option<&str> {
        self.restart_from.as_deref()
    }

    /// The observation an environmental failure surfaced.
    pub fn observation(&self) -> Option<&serde_json::Value> {
        self.observation.as_ref()
    }

    pub(crate) fn with_kind(mut self, kind: FailureKind) -> Self {
        self.kind = kind;
        self
    }

    pub(crate) fn take_observation(&mut self) -> Option<serde_json::Value> {
        self.observation.take()
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failure: {}", self.class, self.message)
    }
}

impl std::error::Error for StepError {}

/// A recorded failure: which step failed, how, and on which attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The step that failed (for a compensation: the step it undoes).
    pub step: String,
    /// The compensation method, when the failure is a compensation's.
    pub compensation: Option<String>,
    /// The failure class.
    pub class: FailureClass,
    /// How it came about.
    pub kind: FailureKind,
    /// The attempt (1-based) of the step, or of the compensation, that failed.
    pub attempt: u32,
    /// The error message.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.compensation {
            Some(compensation) => write!(
                f,
                "compensation `{compensation}` of step `{}` failed on attempt {} ({})",
                self.step, self.attempt, self.class
            )?,
            None => {
                let how = match self.kind {
                    FailureKind::Rejected => "returned a rejected output",
                    FailureKind::TimedOut => "timed out",
                    FailureKind::Panicked => "panicked",
                    FailureKind::Interrupted => "was interrupted",
                    FailureKind::Error => "failed",
                };
                write!(f, "step `{}` {how} on attempt {} ({})", self.step, self.attempt, self.class)?
            }
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for Failure {}

/// Errors of the runtime itself (not of a saga's steps, which become an [`Outcome`]).
///
/// [`Outcome`]: crate::Outcome
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The checkpoint store failed; see the inner error for what to do.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `run_with_id` was given an id that already names a saga with another input.
    #[error(
        "saga `{saga_id}` already exists with a different input: the same id never starts a second saga, so use a new SagaId for new input"
    )]
    InputMismatch {
        /// The saga id.
        saga_id: SagaId,
    },
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
        "the checkpoint of step `{step}` of saga `{saga_id}` cannot be decoded ({source}): the stored data does not fit the step's output type; nothing was changed"
    )]
    Checkpoint {
        /// The saga id.
        saga_id: SagaId,
        /// The step whose checkpoint is unreadable.
        step: String,
        /// The decoding error.
        source: CodecError,
    },
    /// A step output or the saga input could not be encoded for the checkpoint.
    #[error(
        "the output of step `{step}` of saga `{saga_id}` cannot be serialized for its checkpoint ({source}): make its Serialize impl infallible (JSON map keys must be strings)"
    )]
    Encode {
        /// The saga id.
        saga_id: SagaId,
        /// The step (or `input`).
        step: String,
        /// The encoding error.
        source: CodecError,
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
    /// The stored journal contradicts itself (it was edited or written by a buggy version).
    #[error("the journal of saga `{saga_id}` is inconsistent ({reason}): inspect it; nothing was changed")]
    Journal {
        /// The saga id.
        saga_id: SagaId,
        /// What is wrong.
        reason: String,
    },
}

/// A checkpoint could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct CodecError(#[from] serde_json::Error);
