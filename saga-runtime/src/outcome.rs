//! What a run returns: the [`Outcome`], and the [`Report`] of every failure and the path its
//! recovery took.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Failure, FailureClass, FailureKind};
use crate::id::SagaId;

/// The rungs of the escalation ladder. `level as u8` gives the number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u8)]
pub enum Level {
    /// 0: back off and retry (transient failures; environmental restarts).
    Retry = 0,
    /// 1: re-prompt with the error included.
    Reprompt = 1,
    /// 2: switch to a stronger model tier.
    SwitchModel = 2,
    /// 3: compensate every completed step and notify.
    Compensate = 3,
    /// 4: page a human and park the saga.
    PageHuman = 4,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Level::Retry => "retry",
            Level::Reprompt => "re-prompt",
            Level::SwitchModel => "switch model",
            Level::Compensate => "compensate",
            Level::PageHuman => "page human",
        };
        write!(f, "level {} ({text})", *self as u8)
    }
}

/// Where a saga stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Status {
    /// Running, or interrupted by a crash: `resume` continues it.
    Running,
    /// Every step completed.
    Completed,
    /// Rolled back cleanly (level 3).
    Compensated,
    /// Parked, waiting for a human (level 4).
    NeedsHuman,
}

impl Status {
    /// Whether the saga will not move again without a human (`Completed`, `Compensated`,
    /// `NeedsHuman`).
    pub fn is_settled(self) -> bool {
        !matches!(self, Status::Running)
    }

    /// The status as lowercase text (`running`, `completed`, `compensated`, `needs_human`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Compensated => "compensated",
            Status::NeedsHuman => "needs_human",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a saga ended.
#[derive(Debug)]
pub enum Outcome<O> {
    /// Every step completed.
    Completed {
        /// The saga's id.
        saga_id: SagaId,
        /// The outputs of every step.
        output: O,
        /// What happened on the way.
        report: Report,
    },
    /// A step failed past its ladder and every completed step was compensated (level 3).
    Compensated {
        /// The saga's id.
        saga_id: SagaId,
        /// The failure that started the rollback.
        failure: Failure,
        /// What happened on the way.
        report: Report,
    },
    /// A compensation failed, or a step after the commit point exhausted its ladder: a human
    /// was paged and the saga is parked until `resume` (level 4).
    NeedsHuman {
        /// The saga's id.
        saga_id: SagaId,
        /// The compensation's failure, or the failure of the step after the commit point.
        failure: Failure,
        /// What happened on the way.
        report: Report,
    },
}

impl<O> Outcome<O> {
    /// The saga's id.
    pub fn saga_id(&self) -> &SagaId {
        match self {
            Outcome::Completed { saga_id, .. }
            | Outcome::Compensated { saga_id, .. }
            | Outcome::NeedsHuman { saga_id, .. } => saga_id,
        }
    }

    /// The report of the run.
    pub fn report(&self) -> &Report {
        match self {
            Outcome::Completed { report, .. }
            | Outcome::Compensated { report, .. }
            | Outcome::NeedsHuman { report, .. } => report,
        }
    }

    /// The outputs, when the saga completed.
    pub fn output(&self) -> Option<&O> {
        match self {
            Outcome::Completed { output, .. } => Some(output),
            _ => None,
        }
    }

    /// The failure that ended the saga, unless it completed.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Outcome::Completed { .. } => None,
            Outcome::Compensated { failure, .. } | Outcome::NeedsHuman { failure, .. } => Some(failure),
        }
    }

    /// Whether every step completed.
    pub fn is_completed(&self) -> bool {
        matches!(self, Outcome::Completed { .. })
    }

    /// The status this outcome corresponds to.
    pub fn status(&self) -> Status {
        match self {
            Outcome::Completed { .. } => Status::Completed,
            Outcome::Compensated { .. } => Status::Compensated,
            Outcome::NeedsHuman { .. } => Status::NeedsHuman,
        }
    }

    /// The outputs, consuming the outcome.
    pub fn into_output(self) -> Option<O> {
        match self {
            Outcome::Completed { output, .. } => Some(output),
            _ => None,
        }
    }
}

/// Every failure of a run and the path its recovery took, rebuilt from the journal.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Report {
    /// Every step failure with the level of the ladder it led to, in order; a compensation
    /// that failed for good appears as level 4.
    pub escalations: Vec<Escalation>,
    /// Every compensation that ran, in order.
    pub compensations: Vec<CompensationRecord>,
    /// Every attempt of a step, in order.
    pub attempts: Vec<AttemptRecord>,
    /// Every environmental restart, in order.
    pub restarts: Vec<RestartRecord>,
    /// Every logical failure that blamed an earlier step (`StepError::blame`), in order: who
    /// found the mistake, who was blamed, and who was re-prompted for it.
    #[serde(default)]
    pub blames: Vec<BlameRecord>,
    /// The total time spent in backoff before retries (of steps and of compensations).
    pub slept: Duration,
    /// How many times the notifier was called (level 3).
    pub notified: u32,
    /// How many times the pager was called (level 4), reminders of a sweep included.
    pub paged: u32,
    /// Every time the store refused the saga's writes for a while and the saga waited.
    #[serde(default)]
    pub store_outages: Vec<StoreOutage>,
    /// Every call to a rate-limited downstream that waited for its token: not a failure, and
    /// no retry budget was spent.
    #[serde(default)]
    pub throttled: Vec<Throttle>,
    /// The resources a sweep removed after the saga left them behind (orphans).
    #[serde(default)]
    pub orphans_removed: Vec<RemovedOrphan>,
}

/// A resource a sweep removed because the saga that created it left it behind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedOrphan {
    /// The kind of resource (`RuntimeBuilder::orphans`).
    pub kind: String,
    /// The resource's id.
    pub resource: String,
}

/// A call to a rate-limited downstream that waited for its token (or for a pause that a
/// `retry_after` set).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throttle {
    /// The step (for a compensation, the step it undoes).
    pub step: String,
    /// The attempt (of the step, or of its compensation).
    pub attempt: u32,
    /// Whether the compensation waited.
    pub compensation: bool,
    /// The downstream.
    pub downstream: String,
    /// How long it waited.
    pub waited: Duration,
}

/// A time the checkpoint store refused a saga's writes (a full disk, an I/O error) and the saga
/// waited, retrying, until it accepted them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreOutage {
    /// How many writes the store refused.
    pub failures: u32,
    /// How long the saga waited.
    pub waited: Duration,
    /// The store's last error.
    pub error: String,
    /// Whether a human was paged about it.
    pub paged: bool,
}

impl Report {
    /// The levels of the escalations, in order.
    pub fn levels(&self) -> Vec<Level> {
        self.escalations.iter().map(|e| e.level).collect()
    }

    /// The highest level reached, if anything failed.
    pub fn highest_level(&self) -> Option<Level> {
        self.escalations.iter().map(|e| e.level).max()
    }
}

/// One failure and the level of the ladder it led to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    /// The level of the ladder.
    pub level: Level,
    /// The failure class.
    pub class: FailureClass,
    /// How the failure came about: a returned error, a rejected output, a timeout, a panic,
    /// an attempt interrupted by a stop of the process, a configuration error, … (reports
    /// written before this field existed read as [`FailureKind::Error`]).
    #[serde(default)]
    pub kind: FailureKind,
    /// The step that failed (for a failed compensation, the step it undoes).
    pub step: String,
    /// The attempt that failed (of the step, or of the compensation).
    pub attempt: u32,
    /// The error message.
    pub error: String,
    /// The earlier step re-prompted for this failure, when the failure blamed one
    /// (`StepError::blame`): `step` found the mistake, `blamed` made it and climbs the level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blamed: Option<String>,
}

impl Escalation {
    /// The escalation a recorded failure led to.
    pub(crate) fn of(failure: &Failure, level: Level) -> Self {
        Escalation {
            level,
            class: failure.class,
            kind: failure.kind,
            step: failure.step.clone(),
            attempt: failure.attempt,
            error: failure.message.clone(),
            blamed: None,
        }
    }
}

/// A logical failure that blamed an earlier step (`StepError::blame`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlameRecord {
    /// The step whose logical failure found the mistake.
    pub found_by: String,
    /// The attempt of `found_by` that failed.
    pub attempt: u32,
    /// The step the failure blamed, as it named it.
    pub blamed: String,
    /// The step that ran again for it: `blamed`, or `found_by` when the blame was not followed.
    pub reprompted: String,
    /// The rung the re-prompted step climbed: [`Level::Reprompt`] or [`Level::SwitchModel`].
    pub level: Level,
    /// Why the blame was not followed, when it was not.
    pub note: Option<String>,
}

/// Why a compensation ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompensationReason {
    /// Level 3: the saga is rolled back.
    RollBack,
    /// The step's output was rejected by its `validate` method, before the re-prompt.
    Rejected,
    /// The step failed after some of its effects landed (half-success), before it runs again.
    HalfDone,
    /// An environmental failure restarts the saga from an earlier step.
    Restart,
    /// A later step's logical failure blamed this step or an earlier one (`StepError::blame`):
    /// the steps from the blamed one on are undone before it is re-prompted.
    Blame,
}

/// One compensation and its result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompensationRecord {
    /// The step undone.
    pub step: String,
    /// The compensation method.
    pub compensation: String,
    /// Why it ran.
    pub reason: CompensationReason,
    /// How many attempts it took (so far).
    pub attempts: u32,
    /// The errors of its failed attempts, in order.
    pub errors: Vec<String>,
    /// Whether it succeeded.
    pub done: bool,
    /// A note from a human who resolved it by hand (`Runtime::resolve`).
    pub resolved_by_human: Option<String>,
}

/// One attempt of a step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The step.
    pub step: String,
    /// The attempt number (1-based, counting every attempt of the step).
    pub attempt: u32,
    /// The model tier it ran on.
    pub tier: u32,
}

/// One environmental restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartRecord {
    /// The step whose environmental failure caused it.
    pub failed_step: String,
    /// The step the saga restarted from.
    pub from: String,
    /// What the failure asked for with `restart_from`, if anything.
    pub requested: Option<String>,
    /// Why the request was not followed, when it was not.
    pub note: Option<String>,
}

/// What the notifier (level 3) and the pager (level 4) receive.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Incident {
    /// The saga's id.
    pub saga_id: SagaId,
    /// The saga's name.
    pub saga: String,
    /// [`Level::Compensate`] for the notifier, [`Level::PageHuman`] for the pager.
    pub level: Level,
    /// The failure that caused the incident.
    pub failure: Failure,
    /// The report so far.
    pub report: Report,
}

impl fmt::Display for Incident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "saga `{}` ({}) reached {}: {}", self.saga_id, self.saga, self.level, self.failure)
    }
}
