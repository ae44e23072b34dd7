//! Step failures and their classification.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::definition::StepRef;

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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum FailureKind {
    /// The step (or compensation) returned an error.
    #[default]
    Error,
    /// The step returned an output that its `validate` method rejected.
    Rejected,
    /// The attempt ran past its timeout and was cancelled.
    TimedOut,
    /// The attempt panicked; the panic was caught.
    Panicked,
    /// The process stopped during the attempt (a crash or a shutdown); found on resume.
    Interrupted,
    /// The checkpoint store refused the saga's writes for a while (a full disk, an I/O error):
    /// what a page about a long store outage reports.
    StoreUnavailable,
    /// The step's output (or an effect's result) is larger than the runtime's payload limit
    /// (`RuntimeBuilder::max_payload`): a logical failure, since checkpointing it would stall
    /// every saga of the store.
    TooLarge,
    /// The runtime is configured wrong for the step or compensation: it asks for a resource
    /// nobody registered (`cx.resource::<T>()`), or calls a downstream whose rate limit was
    /// never declared (`cx.limit(..)`). Retrying cannot help and compensating would need the
    /// same runtime, so the saga is parked for a human at once (level 4), nothing compensated;
    /// after the fix, `resume` continues it from there.
    Misconfigured,
    /// An operator cancelled the saga (`Runtime::cancel`): it was rolled back at once.
    Cancelled,
    /// The saga ran past its deadline (`#[saga(deadline = ..)]` or a per-run deadline): it is
    /// rolled back (level 3), or parked for a human after its commit point.
    DeadlinePassed,
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
///
/// // The tests found it, but the code was wrong: re-prompt the step that wrote it.
/// let red = StepError::logical("2 of 41 tests failed: login_rejects_expired_tokens, token_expiry_is_checked")
///     .blame("write_files"); // in a saga, write the typed `CodeChangeStep::write_files`
/// assert_eq!(red.blamed_step(), Some("write_files"));
/// ```
#[derive(Clone, Debug)]
pub struct StepError {
    class: FailureClass,
    kind: FailureKind,
    message: String,
    retry_after: Option<Duration>,
    // Boxed: they are rare, and a `Result<_, StepError>` is returned by every step.
    restart_from: Option<Box<StepRef>>,
    blame: Option<Box<StepRef>>,
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
            blame: None,
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
    ///
    /// Name it with the saga's typed step id (`ReleasePrStep::open_pr`, generated by
    /// `#[saga]`), so that a misspelt step does not compile; a string (`"open_pr"`) is for
    /// names known only at run time. An unknown or later step, or one at or before a commit
    /// point that has passed, restarts the failing step, and the report says why.
    pub fn restart_from(mut self, step: impl Into<StepRef>) -> Self {
        self.restart_from = Some(Box::new(step.into()));
        self
    }

    /// For a logical failure: the earlier step that made the mistake this step found (the
    /// tests fail because the code was wrong). Instead of re-prompting the failing step, the
    /// runtime compensates the completed steps from the blamed one to the failing one (the
    /// compensable ones, last first), then runs the blamed step again with this failure as its
    /// [`previous_error`](crate::StepContext::previous_error) (its `step` names the step that
    /// found it), on the blamed step's own rungs: re-prompts (level 1), then stronger tiers
    /// (level 2), then level 3. The steps after it run again on its new output.
    ///
    /// Name it with the saga's typed step id (`CodeChangeStep::write_files`), so that a
    /// misspelt step does not compile; a string is for names known only at run time. Any
    /// earlier step may be blamed, also one whose output the failing step does not read: a
    /// step reaches later ones through the world too (the files it pushed), and every step in
    /// between runs again anyway. A blame that cannot be followed (an unknown or later step,
    /// or one at or before a commit point that has passed, which can never run again) is a
    /// compile error where the macro sees it and otherwise re-prompts the failing step itself,
    /// with the journal saying why. Ignored on transient and environmental failures, and on a
    /// compensation's failure.
    pub fn blame(mut self, step: impl Into<StepRef>) -> Self {
        self.blame = Some(Box::new(step.into()));
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
        self.restart_from.as_deref().map(StepRef::name)
    }

    /// The step an environmental failure asked to restart from, as it was named.
    pub fn restart_ref(&self) -> Option<&StepRef> {
        self.restart_from.as_deref()
    }

    /// The earlier step a logical failure blamed.
    pub fn blamed_step(&self) -> Option<&str> {
        self.blame.as_deref().map(StepRef::name)
    }

    /// The earlier step a logical failure blamed, as it was named.
    pub fn blame_ref(&self) -> Option<&StepRef> {
        self.blame.as_deref()
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

/// `?` on an I/O error in a step or an effect: the class follows the error's kind. A timeout,
/// an interruption, a refused, reset or aborted connection, an unreachable network or host, a
/// busy resource or a short read is [`Transient`](FailureClass::Transient) (it may pass by
/// itself); any other kind (a missing file, a denied permission, bad input) is
/// [`Logical`](FailureClass::Logical) (the step asked for something wrong). Pick another class
/// with [`Classify`].
impl From<std::io::Error> for StepError {
    fn from(error: std::io::Error) -> Self {
        StepError::new(io_class(error.kind()), error)
    }
}

/// `?` on a JSON error (parsing a model's answer, an API's reply): a failed read underneath is
/// [`Transient`](FailureClass::Transient), bad or unexpected JSON is
/// [`Logical`](FailureClass::Logical) (re-prompted with the error). Pick another class with
/// [`Classify`].
impl From<serde_json::Error> for StepError {
    fn from(error: serde_json::Error) -> Self {
        let class = match error.io_error_kind() {
            Some(kind) => io_class(kind),
            None => FailureClass::Logical,
        };
        StepError::new(class, error)
    }
}

/// `?` on an `anyhow::Error` (feature `anyhow`): a [`StepError`] anywhere in its chain keeps
/// its class and builders (`retry_after`, `restart_from`, ...), else an I/O error in the chain
/// classifies it as `From<std::io::Error>` does, else it is [`Logical`](FailureClass::Logical).
/// The message is the whole chain (`"{:#}"`: each context, then the cause). Pick another class
/// with [`Classify`].
#[cfg(feature = "anyhow")]
impl From<anyhow::Error> for StepError {
    fn from(error: anyhow::Error) -> Self {
        let message = format!("{error:#}");
        if let Some(inner) = error.chain().find_map(|cause| cause.downcast_ref::<StepError>()) {
            return StepError { message, ..inner.clone() };
        }
        let class = error
            .chain()
            .find_map(|cause| cause.downcast_ref::<std::io::Error>())
            .map_or(FailureClass::Logical, |io| io_class(io.kind()));
        StepError::new(class, message)
    }
}

/// The class of an I/O error's kind: what may pass by itself is transient.
fn io_class(kind: std::io::ErrorKind) -> FailureClass {
    use std::io::ErrorKind::*;
    match kind {
        TimedOut | Interrupted | WouldBlock | ConnectionRefused | ConnectionReset | ConnectionAborted
        | NotConnected | BrokenPipe | UnexpectedEof | AddrNotAvailable | HostUnreachable | NetworkUnreachable
        | NetworkDown | ResourceBusy => FailureClass::Transient,
        _ => FailureClass::Logical,
    }
}

/// Picks the failure class of any error, for `?` in a step or an effect:
/// `call().await.transient()?`.
///
/// `?` alone converts `std::io::Error`, `serde_json::Error` and (feature `anyhow`)
/// `anyhow::Error` with a default class; these methods override it, and work for any error
/// that implements `Display`.
///
/// ```
/// use saga_runtime::prelude::*;
///
/// fn vendor_call() -> Result<String, std::io::Error> {
///     Err(std::io::Error::new(std::io::ErrorKind::NotFound, "503 from the vendor"))
/// }
/// fn step() -> StepResult<String> {
///     let answer = vendor_call().transient()?; // NotFound alone would be logical
///     Ok(answer)
/// }
/// assert_eq!(step().unwrap_err().class(), FailureClass::Transient);
/// ```
pub trait Classify<T> {
    /// The error as a [`StepError::transient`].
    fn transient(self) -> Result<T, StepError>;
    /// The error as a [`StepError::logical`].
    fn logical(self) -> Result<T, StepError>;
    /// The error as a [`StepError::environmental`].
    fn environmental(self) -> Result<T, StepError>;
}

impl<T, E: fmt::Display> Classify<T> for Result<T, E> {
    fn transient(self) -> Result<T, StepError> {
        self.map_err(StepError::transient)
    }
    fn logical(self) -> Result<T, StepError> {
        self.map_err(StepError::logical)
    }
    fn environmental(self) -> Result<T, StepError> {
        self.map_err(StepError::environmental)
    }
}

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
                    FailureKind::StoreUnavailable => "cannot be checkpointed",
                    FailureKind::TooLarge => "returned more than a checkpoint holds",
                    FailureKind::Misconfigured => "cannot run as the runtime is configured",
                    FailureKind::DeadlinePassed => "ran past the saga's deadline",
                    FailureKind::Cancelled => "was cancelled by an operator",
                    FailureKind::Error => "failed",
                };
                write!(f, "step `{}` {how} on attempt {} ({})", self.step, self.attempt, self.class)?
            }
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for Failure {}

/// `{:?}` of the runtime's error enums: the message and its causes, as anyhow prints an error,
/// so that `main` returning `Result<(), Box<dyn Error>>` shows the text that says what to do
/// instead of the variant's fields.
pub(crate) fn debug_message(error: &dyn std::error::Error, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    write!(f, "{error}")?;
    let causes: Vec<String> = std::iter::successors(error.source(), |e| e.source()).map(|e| e.to_string()).collect();
    // A cause whose text the message already contains adds nothing (the store's errors
    // include their backend's message).
    let message = error.to_string();
    let causes: Vec<&String> = causes.iter().filter(|c| !message.contains(c.as_str())).collect();
    if !causes.is_empty() {
        write!(f, "\n\nCaused by:")?;
        for (n, cause) in causes.iter().enumerate() {
            write!(f, "\n    {n}: {cause}")?;
        }
    }
    Ok(())
}

/// A checkpoint could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct CodecError(#[from] serde_json::Error);
