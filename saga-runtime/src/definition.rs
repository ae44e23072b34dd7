//! The inspectable [`Definition`] of a saga, as `#[saga]` generated it: its name, version,
//! fingerprint and ordered steps.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// The definition of a saga, as `#[saga]` generated it.
///
/// ```
/// # use saga_runtime::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)] struct Greet;
/// # #[saga] impl Greet {
/// #     #[step(idempotent)] async fn hello(&self, _cx: &StepContext) -> StepResult<String> { Ok("hi".into()) }
/// # }
/// let definition = Greet::definition();
/// assert_eq!(definition.name(), "greet");
/// assert_eq!(definition.steps()[0].name(), "hello");
/// ```
#[derive(Debug)]
pub struct Definition {
    name: &'static str,
    version: u32,
    fingerprint: &'static str,
    steps: &'static [StepDef],
    deadline: Option<Duration>,
}

impl Definition {
    #[doc(hidden)]
    pub const fn __new(
        name: &'static str,
        version: u32,
        fingerprint: &'static str,
        steps: &'static [StepDef],
        deadline: Option<Duration>,
    ) -> Self {
        Definition { name, version, fingerprint, steps, deadline }
    }

    /// How long a saga of this type may run from its start (`#[saga(deadline = "1h")]`), if
    /// bounded: past it the saga is rolled back (level 3), or parked after its commit point.
    /// Not part of the fingerprint: changing it never refuses a saga in flight.
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// The saga name (the type's name in kebab case unless `#[saga(name = "...")]`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The version (`#[saga(version = N)]`, default 1).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// A hash of the name, version, step names, kinds, order, inputs and output types: a
    /// checkpoint is resumed only by a definition with the same fingerprint.
    pub fn fingerprint(&self) -> &'static str {
        self.fingerprint
    }

    /// The steps, in the order they run.
    pub fn steps(&self) -> &'static [StepDef] {
        self.steps
    }

    /// The step with this name.
    pub fn step(&self, name: &str) -> Option<&'static StepDef> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The index of the step with this name.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }

    /// The index of the commit point, if the saga has one.
    pub fn commit_index(&self) -> Option<usize> {
        self.steps.iter().position(|s| s.kind == StepKind::Commit)
    }

    /// The index of the step `step` refers to, or why it refers to none of this saga's steps
    /// (a typed id of another saga, or a name no step has).
    pub(crate) fn resolve(&self, step: &StepRef) -> Result<usize, String> {
        if let Some(saga) = step.saga.filter(|saga| *saga != self.name) {
            return Err(format!("`{}` is a step of `{saga}`, not of `{}`", step.name, self.name));
        }
        self.position(&step.name).ok_or_else(|| format!("`{}` is not a step of `{}`", step.name, self.name))
    }
}

impl fmt::Display for Definition {
    /// One line per step: `open_pr  compensate = close_pr`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} v{} ({})", self.name, self.version, self.fingerprint)?;
        if let Some(deadline) = self.deadline {
            write!(f, ", deadline {deadline:?}")?;
        }
        writeln!(f)?;
        for (i, step) in self.steps.iter().enumerate() {
            write!(f, "  {}. {} -> {}: ", i + 1, step.name, step.output_type)?;
            match (step.kind, step.compensation) {
                (StepKind::Compensable, Some(c)) => write!(f, "compensate = {c}")?,
                (kind, _) => write!(f, "{kind}")?,
            }
            if let Some(v) = step.validate {
                write!(f, ", validate = {v}")?;
            }
            if let Some(t) = step.timeout {
                write!(f, ", timeout = {t:?}")?;
            }
            if let Some(limit) = step.limit {
                write!(f, ", limit = {limit}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// How a step is undone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepKind {
    /// Undone by its compensation.
    Compensable,
    /// The commit point: once it succeeds the saga never rolls back.
    Commit,
    /// Nothing to undo; safe to run again.
    Idempotent,
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StepKind::Compensable => "compensable",
            StepKind::Commit => "commit",
            StepKind::Idempotent => "idempotent",
        })
    }
}

/// One step of a [`Definition`].
#[derive(Debug)]
pub struct StepDef {
    name: &'static str,
    kind: StepKind,
    compensation: Option<&'static str>,
    validate: Option<&'static str>,
    timeout: Option<Duration>,
    inputs: &'static [usize],
    output_type: &'static str,
    undoes_failed_attempts: bool,
    limit: Option<&'static str>,
}

impl StepDef {
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    pub const fn __new(
        name: &'static str,
        kind: StepKind,
        compensation: Option<&'static str>,
        validate: Option<&'static str>,
        timeout: Option<Duration>,
        inputs: &'static [usize],
        output_type: &'static str,
        undoes_failed_attempts: bool,
        limit: Option<&'static str>,
    ) -> Self {
        StepDef { name, kind, compensation, validate, timeout, inputs, output_type, undoes_failed_attempts, limit }
    }

    /// The downstream whose rate limit each attempt of the step and of its compensation draws
    /// a token from (`#[step(limit = "github")]`).
    pub fn limit(&self) -> Option<&'static str> {
        self.limit
    }

    /// Whether the compensation takes `Option<&T>`, and so also undoes the landed effects of
    /// an attempt that failed without an output (half-success).
    pub fn undoes_failed_attempts(&self) -> bool {
        self.undoes_failed_attempts
    }

    /// The step (method) name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// How it is undone.
    pub fn kind(&self) -> StepKind {
        self.kind
    }

    /// The compensation method, for a compensable step.
    pub fn compensation(&self) -> Option<&'static str> {
        self.compensation
    }

    /// The validator method, if any.
    pub fn validate(&self) -> Option<&'static str> {
        self.validate
    }

    /// The step's own timeout (`#[step(timeout = "...")]`).
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The indices of the earlier steps whose outputs it reads.
    pub fn inputs(&self) -> &'static [usize] {
        self.inputs
    }

    /// The output type, as written.
    pub fn output_type(&self) -> &'static str {
        self.output_type
    }
}

/// The typed names of a saga's steps. `#[saga]` on `impl ReleasePr` generates `enum
/// ReleasePrStep`, with one variant per step named exactly like it (`ReleasePrStep::open_pr`),
/// implementing this trait: pass a variant to [`StepError::blame`](crate::StepError::blame)
/// or [`StepError::restart_from`](crate::StepError::restart_from) and a misspelt step does not
/// compile (inside the `#[saga]` block, the error lists the steps).
///
/// ```
/// use saga_runtime::StepId;
/// # use saga_runtime::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)] struct Review;
/// #[saga]
/// impl Review {
///     #[step(idempotent)]
///     async fn draft(&self, _cx: &StepContext) -> StepResult<String> { Ok("text".into()) }
///     #[step(idempotent)]
///     async fn critique(&self, _cx: &StepContext, draft: &String) -> StepResult<()> {
///         if draft.is_empty() {
///             return Err(StepError::logical("the draft is empty").blame(ReviewStep::draft));
///         }
///         Ok(())
///     }
/// }
///
/// assert_eq!(ReviewStep::critique.name(), "critique");
/// assert_eq!(ReviewStep::critique.index(), 1);
/// assert_eq!(ReviewStep::ALL, [ReviewStep::draft, ReviewStep::critique]);
/// assert_eq!(ReviewStep::draft.to_string(), "draft");
/// ```
pub trait StepId: Copy + fmt::Debug + fmt::Display + Eq + std::hash::Hash + Send + Sync + 'static {
    /// Every step, in the order they run.
    const ALL: &'static [Self];

    /// The definition of the saga the steps belong to.
    fn definition() -> &'static Definition;

    /// The step's index in the definition (the order it runs in, from 0).
    fn index(self) -> usize;

    /// The step's name (its method's name).
    fn name(self) -> &'static str {
        Self::definition().steps()[self.index()].name()
    }
}

/// A step named by a failure, as [`StepError::blame`](crate::StepError::blame) and
/// [`StepError::restart_from`](crate::StepError::restart_from) take it: a typed step id
/// (`ReleasePrStep::open_pr`, checked at compile time) or, for a name known only at run time,
/// a string (checked when the failure is handled: a name the saga does not have is not
/// followed, and the journal says why).
///
/// ```
/// use saga_runtime::StepRef;
///
/// let by_name = StepRef::from("open_pr");
/// assert_eq!(by_name.name(), "open_pr");
/// assert_eq!(by_name.saga(), None);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StepRef {
    name: Cow<'static, str>,
    /// For a typed id: the name of the saga it belongs to.
    saga: Option<&'static str>,
}

impl StepRef {
    /// The step's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// For a typed step id, the name of the saga it belongs to (`None` for a name).
    pub fn saga(&self) -> Option<&'static str> {
        self.saga
    }
}

impl fmt::Display for StepRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl<S: StepId> From<S> for StepRef {
    fn from(step: S) -> Self {
        StepRef { name: Cow::Borrowed(step.name()), saga: Some(S::definition().name()) }
    }
}

impl From<&str> for StepRef {
    fn from(name: &str) -> Self {
        StepRef { name: Cow::Owned(name.to_owned()), saga: None }
    }
}

impl From<String> for StepRef {
    fn from(name: String) -> Self {
        StepRef { name: Cow::Owned(name), saga: None }
    }
}

impl From<&String> for StepRef {
    fn from(name: &String) -> Self {
        StepRef { name: Cow::Owned(name.clone()), saga: None }
    }
}
