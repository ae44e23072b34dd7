//! The append-only journal of a saga and the fold that rebuilds its progress from it.
//!
//! The runtime never keeps state that the journal does not hold: every decision (a retry and
//! its delay, a re-prompt, a model switch, a restart, a rollback, a park) is an [`Event`]
//! that is applied to the saga's progress by one fold function, both while the saga runs and when
//! it is rebuilt from the store after a crash. The outcome and the [`Report`] are therefore
//! always what the journal says.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Failure, FailureKind};
use crate::outcome::{
    AttemptRecord, CompensationReason, CompensationRecord, Escalation, Level, Report, RestartRecord, Status,
};
use crate::saga::{Definition, StepKind};

/// Serialized bytes (a step output or the saga input, as JSON), shared without copying.
pub type Payload = Arc<[u8]>;

/// Serializes a [`Payload`] (JSON text) as raw JSON inside a record, not as an array of bytes.
mod raw_json {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::value::RawValue;

    use super::Payload;

    pub(super) fn serialize<S: Serializer>(payload: &Payload, serializer: S) -> Result<S::Ok, S::Error> {
        let text = std::str::from_utf8(payload).map_err(serde::ser::Error::custom)?;
        let raw: &RawValue = serde_json::from_str(text).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Payload, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer).map_err(D::Error::custom)?;
        Ok(Payload::from(raw.get().as_bytes()))
    }

    pub(super) mod option {
        use super::*;

        pub(in super::super) fn serialize<S: Serializer>(
            payload: &Option<Payload>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match payload {
                Some(payload) => super::serialize(payload, serializer),
                None => serializer.serialize_none(),
            }
        }

        pub(in super::super) fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<Payload>, D::Error> {
            let raw = Option::<Box<RawValue>>::deserialize(deserializer)?;
            Ok(raw.map(|raw| Payload::from(raw.get().as_bytes())))
        }
    }
}

/// One entry of the journal, as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Position in the saga's journal, from 0.
    pub seq: u64,
    /// Wall-clock time of the entry, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What happened.
    pub event: Event,
}

/// What happened. Steps are referred to by their index in the [`Definition`] (the
/// fingerprint guarantees that the definition reading a journal is the one that wrote it).
// Externally tagged (`{"step_completed": {...}}`): serde buffers internally tagged enums,
// which cannot carry the raw JSON of outputs and effect results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// The saga was created.
    Started {
        /// Saga name.
        saga: String,
        /// Definition version.
        version: u32,
        /// Definition fingerprint.
        fingerprint: String,
    },
    /// An attempt of a step began.
    AttemptStarted {
        /// Step index.
        step: u32,
        /// Attempt number (1-based).
        attempt: u32,
        /// Model tier.
        tier: u32,
    },
    /// A side effect inside a step landed (`StepContext::effect`); its result is returned
    /// instead of running it again on a retry or a resume.
    EffectLanded {
        /// Step index.
        step: u32,
        /// The attempt that ran it.
        attempt: u32,
        /// The effect's name.
        name: String,
        /// The effect's own idempotency key.
        key: String,
        /// The serialized result.
        #[serde(with = "raw_json")]
        result: Payload,
    },
    /// A prompt and the model's response, recorded with `StepContext::record_llm`, with
    /// common credential patterns scrubbed.
    LlmExchange {
        /// Step index.
        step: u32,
        /// The attempt.
        attempt: u32,
        /// The prompt, scrubbed.
        prompt: String,
        /// The response, scrubbed.
        response: String,
    },
    /// A step completed; its output is checkpointed.
    StepCompleted {
        /// Step index.
        step: u32,
        /// The attempt that completed it.
        attempt: u32,
        /// The serialized output.
        #[serde(with = "raw_json")]
        output: Payload,
    },
    /// A step attempt failed; `next` is what the ladder decided.
    StepFailed {
        /// Step index.
        step: u32,
        /// The failure.
        failure: Failure,
        /// The output its validator rejected, which is compensated before anything else.
        #[serde(with = "raw_json::option", default)]
        rejected_output: Option<Payload>,
        /// The ladder's decision.
        next: Next,
    },
    /// An attempt of a compensation began.
    CompensationStarted {
        /// Index of the step undone.
        step: u32,
        /// Compensation attempt (1-based).
        attempt: u32,
    },
    /// A compensation succeeded.
    CompensationDone {
        /// Index of the step undone.
        step: u32,
        /// The attempt that succeeded.
        attempt: u32,
    },
    /// A compensation attempt failed.
    CompensationFailed {
        /// Index of the step being undone.
        step: u32,
        /// The failure.
        failure: Failure,
        /// Retry, or page a human.
        next: CompensationNext,
    },
    /// The notifier was called (level 3).
    Notified,
    /// The pager was called (level 4).
    Paged,
    /// The saga finished (`Completed` or `Compensated`).
    Finished {
        /// The final status.
        status: Status,
    },
    /// A parked saga was resumed by `Runtime::resume`.
    Resumed,
    /// A human finished the parked compensation by hand (`Runtime::resolve`); the remaining
    /// compensations continue.
    Resolved {
        /// Index of the step whose compensation the human did.
        step: u32,
        /// What the human said they did.
        note: String,
    },
}

impl Event {
    /// The event's kind, as stored in the queryable `kind` column.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Started { .. } => "started",
            Event::AttemptStarted { .. } => "attempt_started",
            Event::EffectLanded { .. } => "effect_landed",
            Event::LlmExchange { .. } => "llm_exchange",
            Event::StepCompleted { .. } => "step_completed",
            Event::StepFailed { .. } => "step_failed",
            Event::CompensationStarted { .. } => "compensation_started",
            Event::CompensationDone { .. } => "compensation_done",
            Event::CompensationFailed { .. } => "compensation_failed",
            Event::Notified => "notified",
            Event::Paged => "paged",
            Event::Finished { .. } => "finished",
            Event::Resumed => "resumed",
            Event::Resolved { .. } => "resolved",
        }
    }

    /// The index of the step the event concerns, if any.
    pub fn step(&self) -> Option<u32> {
        match self {
            Event::AttemptStarted { step, .. }
            | Event::EffectLanded { step, .. }
            | Event::LlmExchange { step, .. }
            | Event::StepCompleted { step, .. }
            | Event::StepFailed { step, .. }
            | Event::CompensationStarted { step, .. }
            | Event::CompensationDone { step, .. }
            | Event::CompensationFailed { step, .. }
            | Event::Resolved { step, .. } => Some(*step),
            Event::Started { .. } | Event::Notified | Event::Paged | Event::Finished { .. } | Event::Resumed => None,
        }
    }
}

/// The ladder's decision after a step failure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "then", rename_all = "snake_case")]
pub enum Next {
    /// Level 0: sleep, then run the step again with the same inputs.
    Retry {
        /// The backoff delay.
        delay: Duration,
    },
    /// Level 1: run again with `previous_error()` set.
    Reprompt,
    /// Level 2: run once on a stronger model tier.
    SwitchModel {
        /// The new tier.
        tier: u32,
    },
    /// Level 0 (environmental): compensate from `from` on, then run again from `from`.
    Restart {
        /// Index of the step to restart from.
        from: u32,
        /// The step the failure asked for, if any.
        requested: Option<String>,
        /// Why the request was not followed, when it was not.
        note: Option<String>,
        /// The new state, visible to every later step.
        observation: Option<Arc<serde_json::Value>>,
    },
    /// Level 3: notify, compensate everything, finish `Compensated`.
    RollBack,
    /// Level 4 after the commit point: page a human and park.
    Park,
}

impl Next {
    /// The level of the ladder this decision is.
    pub fn level(&self) -> Level {
        match self {
            Next::Retry { .. } | Next::Restart { .. } => Level::Retry,
            Next::Reprompt => Level::Reprompt,
            Next::SwitchModel { .. } => Level::SwitchModel,
            Next::RollBack => Level::Compensate,
            Next::Park => Level::PageHuman,
        }
    }
}

/// What follows a failed compensation attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "then", rename_all = "snake_case")]
pub enum CompensationNext {
    /// Sleep, then try the compensation again.
    Retry {
        /// The backoff delay.
        delay: Duration,
    },
    /// Level 4: page a human and park; the remaining compensations wait.
    Park,
}

/// Where the saga is, derived from the journal.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Phase {
    /// The next step to attempt (`== steps.len()` when all completed).
    Forward(usize),
    /// Compensating `queue` from its end; then `then`.
    Compensating { queue: Vec<usize>, then: Then },
    /// Waiting for a human.
    Parked(Parked),
    /// Done.
    Finished(Status),
}

/// What follows a run of compensations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Then {
    /// Level 3: finish `Compensated`.
    RollBack,
    /// A rejected output was undone: run the step again.
    Reprompt(usize),
    /// An environmental restart: run again from this step with fresh budgets.
    Restart(usize),
}

impl Then {
    /// Why a compensation of step `i` runs, `has_output` telling a rejected output from the
    /// effects of a failed attempt.
    fn reason(self, has_output: bool) -> CompensationReason {
        match self {
            Then::RollBack => CompensationReason::RollBack,
            Then::Reprompt(_) if has_output => CompensationReason::Rejected,
            Then::Reprompt(_) => CompensationReason::HalfDone,
            Then::Restart(_) => CompensationReason::Restart,
        }
    }
}

/// Why a saga is parked, with the failure that parked it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Parked {
    /// A step after the commit point exhausted its ladder; `resume` runs it again.
    AfterCommit { step: usize, failure: Failure },
    /// A compensation failed for good; `resume` tries it again, then the rest.
    Compensation { queue: Vec<usize>, then: Then, failure: Failure },
}

impl Parked {
    pub(crate) fn failure(&self) -> &Failure {
        match self {
            Parked::AfterCommit { failure, .. } | Parked::Compensation { failure, .. } => failure,
        }
    }
}

/// The ladder budgets and history of one step.
#[derive(Clone, Debug, Default)]
pub(crate) struct StepState {
    /// The checkpointed output of the completed step (or its rejected output, until undone).
    pub(crate) output: Option<Payload>,
    /// How many times the step's result was compensated.
    pub(crate) generation: u32,
    /// Attempts so far (never reset).
    pub(crate) attempts: u32,
    /// The last failure of the step.
    pub(crate) last_failure: Option<Failure>,
    /// Transient retries used in this pass.
    pub(crate) transient_used: u32,
    /// Re-prompts used in this pass.
    pub(crate) reprompts_used: u32,
    /// The model tier in this pass.
    pub(crate) tier: u32,
    /// Environmental restarts this step caused.
    pub(crate) restarts: u32,
    /// Attempts of the current compensation of the step.
    pub(crate) compensation_attempts: u32,
    /// Retries of the current compensation used since it was (re)started.
    pub(crate) compensation_retries_used: u32,
    /// The last failure of the current compensation.
    pub(crate) compensation_failure: Option<Failure>,
    /// The report entry of the current compensation.
    open_compensation: Option<usize>,
    /// The effects that landed since the step's result was last compensated.
    pub(crate) effects: Vec<LandedEffect>,
    /// The attempt that started and has no result yet: on a resume, one a crash interrupted.
    pub(crate) open_attempt: Option<u32>,
    /// How many times the step was asked for a new answer: a re-prompt, a model switch, an
    /// environmental restart that runs it again, a resume from a park. Effects without an
    /// input are keyed on it, so a new answer runs its effects anew and a retry reuses them.
    pub(crate) pass: u32,
    /// Attempts of the step that a stop of the process interrupted, in this pass.
    pub(crate) interruptions_used: u32,
    /// Likewise for the current compensation of the step.
    pub(crate) compensation_interruptions_used: u32,
    /// Likewise for the compensation of the step.
    pub(crate) open_compensation_attempt: Option<u32>,
}

impl StepState {
    /// The step's result was compensated (or a human undid it): its output and effects are
    /// gone, its next result gets new idempotency keys, and the compensation's counters reset.
    fn undone(&mut self) {
        self.output = None;
        self.generation += 1;
        self.compensation_attempts = 0;
        self.compensation_retries_used = 0;
        self.compensation_interruptions_used = 0;
        self.compensation_failure = None;
        self.open_compensation = None;
        self.open_compensation_attempt = None;
        self.effects.clear();
    }

    fn fresh_budgets(&mut self) {
        self.transient_used = 0;
        self.reprompts_used = 0;
        self.tier = 0;
        self.interruptions_used = 0;
    }
}

/// A side effect of a step that landed: what `StepContext::effects` shows a compensation,
/// so that it can undo exactly what happened, even when the step failed half-way.
#[derive(Clone, Debug, PartialEq)]
pub struct LandedEffect {
    /// The effect's name.
    pub name: String,
    /// The effect's own idempotency key.
    pub key: String,
    /// The attempt of the step that ran it.
    pub attempt: u32,
    /// The serialized result.
    pub(crate) result: Payload,
}

impl LandedEffect {
    /// The effect's result, deserialized.
    pub fn result<R: serde::de::DeserializeOwned>(&self) -> Result<R, crate::CodecError> {
        Ok(serde_json::from_slice(&self.result)?)
    }

    /// The effect's result as JSON text.
    pub fn result_json(&self) -> &str {
        std::str::from_utf8(&self.result).unwrap_or("<not utf-8>")
    }
}

/// The fold of a journal: everything the driver needs to continue, and the report.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    definition: &'static Definition,
    pub(crate) steps: Vec<StepState>,
    pub(crate) phase: Phase,
    /// The observation of the latest environmental restart.
    pub(crate) observation: Option<Arc<serde_json::Value>>,
    /// Whether the notifier was called for the rollback.
    pub(crate) notified: bool,
    /// Whether the pager was called for the current park.
    pub(crate) paged: bool,
    /// The failure that started the rollback.
    pub(crate) rollback_failure: Option<Failure>,
    pub(crate) report: Report,
    /// The sequence number of the next record.
    pub(crate) next_seq: u64,
}

impl Progress {
    /// The progress of a saga that has not started.
    pub(crate) fn new(definition: &'static Definition) -> Self {
        Progress {
            definition,
            steps: vec![StepState::default(); definition.steps().len()],
            phase: Phase::Forward(0),
            observation: None,
            notified: false,
            paged: false,
            rollback_failure: None,
            report: Report::default(),
            next_seq: 0,
        }
    }

    /// Rebuilds the progress from a stored journal.
    pub(crate) fn replay(definition: &'static Definition, records: &[Record]) -> Result<Self, String> {
        let mut progress = Progress::new(definition);
        for record in records {
            if record.seq != progress.next_seq {
                return Err(format!("record {} follows record {}", record.seq, progress.next_seq.wrapping_sub(1)));
            }
            progress.apply(&record.event)?;
        }
        if progress.next_seq == 0 {
            return Err("the journal is empty".to_owned());
        }
        Ok(progress)
    }

    /// The saga's status.
    pub(crate) fn status(&self) -> Status {
        match &self.phase {
            Phase::Forward(_) | Phase::Compensating { .. } => Status::Running,
            Phase::Parked(_) => Status::NeedsHuman,
            Phase::Finished(status) => *status,
        }
    }

    /// A short text of where the saga is, for the store's queryable `stage` column.
    pub(crate) fn stage(&self) -> String {
        let steps = self.definition.steps();
        match &self.phase {
            Phase::Forward(i) if *i >= steps.len() => "done".to_owned(),
            Phase::Forward(i) => steps[*i].name().to_owned(),
            Phase::Compensating { queue, .. } => match queue.last() {
                Some(s) => format!("compensating {}", steps[*s].name()),
                None => "compensated".to_owned(),
            },
            Phase::Parked(Parked::AfterCommit { step, .. }) => {
                format!("parked at {}", steps[*step].name())
            }
            Phase::Parked(Parked::Compensation { queue, .. }) => match queue.last() {
                Some(s) => format!("parked compensating {}", steps[*s].name()),
                None => "parked".to_owned(),
            },
            Phase::Finished(status) => status.as_str().to_owned(),
        }
    }

    /// The failure an outcome reports: the park's while parked, else the rollback's.
    pub(crate) fn outcome_failure(&self) -> Option<&Failure> {
        match &self.phase {
            Phase::Parked(parked) => Some(parked.failure()),
            _ => self.rollback_failure.as_ref(),
        }
    }

    fn step_index(&self, step: u32) -> Result<usize, String> {
        let index = step as usize;
        if index < self.steps.len() {
            Ok(index)
        } else {
            Err(format!("step index {step} is out of range for `{}`", self.definition.name()))
        }
    }

    fn name(&self, index: usize) -> String {
        self.definition.steps()[index].name().to_owned()
    }

    /// Applies one event: the only place where progress changes.
    pub(crate) fn apply(&mut self, event: &Event) -> Result<(), String> {
        let steps = self.definition.steps();
        match event {
            Event::Started { .. } => {
                if self.next_seq != 0 {
                    return Err("a second `started` record".to_owned());
                }
            }
            Event::AttemptStarted { step, attempt, tier } => {
                let i = self.step_index(*step)?;
                self.expect_forward(i)?;
                self.steps[i].attempts = *attempt;
                self.steps[i].open_attempt = Some(*attempt);
                self.report.attempts.push(AttemptRecord { step: self.name(i), attempt: *attempt, tier: *tier });
            }
            Event::EffectLanded { step, attempt, name, key, result } => {
                let i = self.step_index(*step)?;
                self.expect_forward(i)?;
                let state = &mut self.steps[i];
                state.attempts = state.attempts.max(*attempt);
                state.effects.push(LandedEffect {
                    name: name.clone(),
                    key: key.clone(),
                    attempt: *attempt,
                    result: result.clone(),
                });
            }
            Event::LlmExchange { step, .. } => {
                self.step_index(*step)?;
            }
            Event::StepCompleted { step, attempt, output } => {
                let i = self.step_index(*step)?;
                self.expect_forward(i)?;
                let state = &mut self.steps[i];
                state.attempts = state.attempts.max(*attempt);
                state.output = Some(output.clone());
                state.open_attempt = None;
                self.phase = Phase::Forward(i + 1);
            }
            Event::StepFailed { step, failure, rejected_output, next } => {
                let i = self.step_index(*step)?;
                self.expect_forward(i)?;
                let compensable = steps[i].kind() == StepKind::Compensable;
                {
                    let state = &mut self.steps[i];
                    state.attempts = state.attempts.max(failure.attempt);
                    state.last_failure = Some(failure.clone());
                    state.open_attempt = None;
                    if compensable && let Some(output) = rejected_output {
                        state.output = Some(output.clone());
                    }
                }
                self.report.escalations.push(Escalation {
                    level: next.level(),
                    class: failure.class,
                    step: failure.step.clone(),
                    attempt: failure.attempt,
                    error: failure.message.clone(),
                });
                // A rejected output, or the effects of a failed attempt that its compensation can
                // undo, are compensated before the step runs again (a transient retry reuses
                // the landed effects instead).
                let undo_now = compensable && self.needs_undo(i);
                match next {
                    Next::Retry { delay } => {
                        // A stop of the process has a budget of its own: crashes and deploys
                        // never spend the retries of the step's transient failures.
                        match failure.kind {
                            FailureKind::Interrupted => self.steps[i].interruptions_used += 1,
                            _ => self.steps[i].transient_used += 1,
                        }
                        self.report.slept += *delay;
                    }
                    Next::Reprompt | Next::SwitchModel { .. } => {
                        match next {
                            Next::SwitchModel { tier } => self.steps[i].tier = *tier,
                            _ => self.steps[i].reprompts_used += 1,
                        }
                        self.steps[i].pass += 1;
                        if undo_now {
                            self.phase = Phase::Compensating { queue: vec![i], then: Then::Reprompt(i) };
                        }
                    }
                    Next::Restart { from, requested, note, observation } => {
                        let from = self.step_index(*from)?;
                        if from > i {
                            return Err(format!("a restart of step {i} from the later step {from}"));
                        }
                        self.steps[i].restarts += 1;
                        for state in &mut self.steps[from..=i] {
                            state.pass += 1;
                        }
                        if observation.is_some() {
                            self.observation = observation.clone();
                        }
                        self.report.restarts.push(RestartRecord {
                            failed_step: self.name(i),
                            from: self.name(from),
                            requested: requested.clone(),
                            note: note.clone(),
                        });
                        let queue = self.undo_queue(from, i + usize::from(undo_now));
                        self.phase = Phase::Compensating { queue, then: Then::Restart(from) };
                    }
                    Next::RollBack => {
                        self.rollback_failure = Some(failure.clone());
                        let queue = self.undo_queue(0, steps.len());
                        self.phase = Phase::Compensating { queue, then: Then::RollBack };
                    }
                    Next::Park => {
                        self.paged = false;
                        self.phase = Phase::Parked(Parked::AfterCommit { step: i, failure: failure.clone() });
                    }
                }
                self.settle();
            }
            Event::CompensationStarted { step, attempt } => {
                let i = self.step_index(*step)?;
                let then = self.expect_compensating(i)?;
                self.steps[i].compensation_attempts = *attempt;
                self.steps[i].open_compensation_attempt = Some(*attempt);
                let entry = self.open_compensation(i, then);
                self.report.compensations[entry].attempts = *attempt;
            }
            Event::CompensationDone { step, attempt } => {
                let i = self.step_index(*step)?;
                let then = self.expect_compensating(i)?;
                let entry = self.open_compensation(i, then);
                let record = &mut self.report.compensations[entry];
                record.attempts = record.attempts.max(*attempt);
                record.done = true;
                self.steps[i].undone();
                if let Phase::Compensating { queue, .. } = &mut self.phase {
                    queue.pop();
                }
                self.settle();
            }
            Event::CompensationFailed { step, failure, next } => {
                let i = self.step_index(*step)?;
                let then = self.expect_compensating(i)?;
                let entry = self.open_compensation(i, then);
                let record = &mut self.report.compensations[entry];
                record.attempts = record.attempts.max(failure.attempt);
                record.errors.push(failure.message.clone());
                let state = &mut self.steps[i];
                state.compensation_attempts = state.compensation_attempts.max(failure.attempt);
                state.compensation_failure = Some(failure.clone());
                state.open_compensation_attempt = None;
                match next {
                    CompensationNext::Retry { delay } => {
                        match failure.kind {
                            FailureKind::Interrupted => state.compensation_interruptions_used += 1,
                            _ => state.compensation_retries_used += 1,
                        }
                        self.report.slept += *delay;
                    }
                    CompensationNext::Park => {
                        self.report.escalations.push(Escalation {
                            level: Level::PageHuman,
                            class: failure.class,
                            step: failure.step.clone(),
                            attempt: failure.attempt,
                            error: failure.message.clone(),
                        });
                        self.paged = false;
                        let Phase::Compensating { queue, then } = std::mem::replace(&mut self.phase, Phase::Forward(0))
                        else {
                            unreachable!("checked by expect_compensating")
                        };
                        self.phase = Phase::Parked(Parked::Compensation { queue, then, failure: failure.clone() });
                    }
                }
            }
            Event::Notified => {
                self.notified = true;
                self.report.notified += 1;
            }
            Event::Paged => {
                if !matches!(self.phase, Phase::Parked(_)) {
                    return Err("a `paged` record while not parked".to_owned());
                }
                self.paged = true;
                self.report.paged += 1;
            }
            Event::Finished { status } => {
                let consistent = match status {
                    Status::Completed => {
                        matches!(self.phase, Phase::Forward(i) if i == steps.len())
                    }
                    Status::Compensated => matches!(
                        &self.phase,
                        Phase::Compensating { queue, then: Then::RollBack } if queue.is_empty()
                    ),
                    Status::Running | Status::NeedsHuman => false,
                };
                if !consistent {
                    return Err(format!("`finished {status}` does not follow from the records before it"));
                }
                self.phase = Phase::Finished(*status);
            }
            Event::Resolved { step, note } => {
                let i = self.step_index(*step)?;
                let Phase::Parked(Parked::Compensation { queue, then, .. }) = &self.phase else {
                    return Err("a `resolved` record while no compensation was parked".to_owned());
                };
                if queue.last() != Some(&i) {
                    return Err(format!(
                        "a `resolved` record for step `{}`, whose compensation was not parked",
                        self.name(i)
                    ));
                }
                let (mut queue, then) = (queue.clone(), *then);
                let entry = self.open_compensation(i, then);
                let record = &mut self.report.compensations[entry];
                record.done = true;
                record.resolved_by_human = Some(note.clone());
                self.steps[i].undone();
                queue.pop();
                self.paged = false;
                self.phase = Phase::Compensating { queue, then };
                self.settle();
            }
            Event::Resumed => {
                let Phase::Parked(parked) = &self.phase else {
                    return Err("a `resumed` record while not parked".to_owned());
                };
                self.phase = match parked.clone() {
                    Parked::AfterCommit { step: i, .. } => {
                        let state = &mut self.steps[i];
                        state.fresh_budgets();
                        state.restarts = 0;
                        state.pass += 1;
                        Phase::Forward(i)
                    }
                    Parked::Compensation { queue, then, .. } => {
                        if let Some(&top) = queue.last() {
                            self.steps[top].compensation_retries_used = 0;
                            self.steps[top].compensation_interruptions_used = 0;
                        }
                        Phase::Compensating { queue, then }
                    }
                };
                self.paged = false;
            }
        }
        self.next_seq += 1;
        Ok(())
    }

    fn expect_forward(&self, i: usize) -> Result<(), String> {
        match self.phase {
            Phase::Forward(next) if next == i => Ok(()),
            _ => Err(format!("a record of step `{}` while the saga was not running it", self.name(i))),
        }
    }

    fn expect_compensating(&self, i: usize) -> Result<Then, String> {
        match &self.phase {
            Phase::Compensating { queue, then } if queue.last() == Some(&i) => Ok(*then),
            _ => Err(format!("a compensation record of step `{}` out of order", self.name(i))),
        }
    }

    fn open_compensation(&mut self, i: usize, then: Then) -> usize {
        if let Some(entry) = self.steps[i].open_compensation {
            return entry;
        }
        let compensation = self.definition.steps()[i].compensation().unwrap_or_default().to_owned();
        self.report.compensations.push(CompensationRecord {
            step: self.name(i),
            compensation,
            reason: then.reason(self.steps[i].output.is_some()),
            attempts: 0,
            errors: Vec::new(),
            done: false,
            resolved_by_human: None,
        });
        let entry = self.report.compensations.len() - 1;
        self.steps[i].open_compensation = Some(entry);
        entry
    }

    /// The completed compensable steps in `from..to`, the last one first (a stack whose top
    /// is the next to compensate).
    fn undo_queue(&self, from: usize, to: usize) -> Vec<usize> {
        (from..to.min(self.steps.len())).filter(|&s| self.needs_undo(s)).collect()
    }

    /// Whether step `s` left something to compensate: an output (completed or rejected), or
    /// landed effects of a failed attempt when its compensation accepts a missing output.
    fn needs_undo(&self, s: usize) -> bool {
        let def = &self.definition.steps()[s];
        let state = &self.steps[s];
        def.kind() == StepKind::Compensable
            && (state.output.is_some() || (def.undoes_failed_attempts() && !state.effects.is_empty()))
    }

    /// Leaves a finished run of compensations for what follows it (a rollback waits for its
    /// `finished` record).
    fn settle(&mut self) {
        let Phase::Compensating { queue, then } = &self.phase else {
            return;
        };
        if !queue.is_empty() {
            return;
        }
        match *then {
            Then::RollBack => {}
            Then::Reprompt(i) => self.phase = Phase::Forward(i),
            Then::Restart(from) => {
                for state in &mut self.steps[from..] {
                    state.fresh_budgets();
                }
                self.phase = Phase::Forward(from);
            }
        }
    }
}

/// A journal record, displayed as one line of a timeline with the definition's step names.
pub struct Timeline<'a> {
    /// The definition that wrote the record.
    pub definition: &'static Definition,
    /// The record.
    pub record: &'a Record,
}

impl fmt::Display for Timeline<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let steps = self.definition.steps();
        let name = |i: &u32| steps.get(*i as usize).map_or("?", |s| s.name());
        let compensation = |i: &u32| steps.get(*i as usize).and_then(|s| s.compensation()).unwrap_or("?");
        match &self.record.event {
            Event::Started { saga, version, fingerprint } => {
                write!(f, "started {saga} v{version} ({fingerprint})")
            }
            Event::AttemptStarted { step, attempt, tier } => {
                write!(f, "{}: attempt {attempt}", name(step))?;
                if *tier > 0 {
                    write!(f, " on model tier {tier}")?;
                }
                Ok(())
            }
            Event::EffectLanded { step, name: effect, key, .. } => {
                write!(f, "{}: effect `{effect}` landed (key {})", name(step), &key[..key.len().min(8)])
            }
            Event::LlmExchange { step, prompt, response, .. } => {
                let clip = |text: &str| -> String {
                    let mut clipped: String = text.chars().take(60).collect();
                    if clipped.len() < text.len() {
                        clipped.push('…');
                    }
                    clipped
                };
                write!(f, "{}: model exchange: {:?} -> {:?}", name(step), clip(prompt), clip(response))
            }
            Event::StepCompleted { step, attempt, .. } => {
                write!(f, "{}: completed on attempt {attempt}", name(step))
            }
            Event::StepFailed { failure, next, .. } => {
                write!(f, "{}: {failure}\n    -> {}: ", failure.step, next.level())?;
                match next {
                    Next::Retry { delay } => write!(f, "retry in {delay:?}"),
                    Next::Reprompt => write!(f, "re-prompt with the error"),
                    Next::SwitchModel { tier } => write!(f, "retry on model tier {tier}"),
                    Next::Restart { from, note, observation, .. } => {
                        write!(f, "environment changed: restart from `{}`", name(from))?;
                        if let Some(observation) = observation {
                            write!(f, " with observation {observation}")?;
                        }
                        if let Some(note) = note {
                            write!(f, " ({note})")?;
                        }
                        Ok(())
                    }
                    Next::RollBack => write!(f, "roll back: compensate every completed step"),
                    Next::Park => write!(f, "after the commit point: page a human and park"),
                }
            }
            Event::CompensationStarted { step, attempt } => {
                write!(f, "{}: compensating with `{}` (attempt {attempt})", name(step), compensation(step))
            }
            Event::CompensationDone { step, .. } => write!(f, "{}: compensated", name(step)),
            Event::CompensationFailed { failure, next, .. } => {
                write!(f, "{}: {failure}\n    -> ", failure.step)?;
                match next {
                    CompensationNext::Retry { delay } => {
                        write!(f, "retry the compensation in {delay:?}")
                    }
                    CompensationNext::Park => {
                        write!(f, "{}: page a human and park", Level::PageHuman)
                    }
                }
            }
            Event::Notified => write!(f, "notifier called: {}", Level::Compensate),
            Event::Paged => write!(f, "pager called: {}", Level::PageHuman),
            Event::Finished { status } => write!(f, "finished: {status}"),
            Event::Resumed => write!(f, "resumed by an operator"),
            Event::Resolved { step, note } => {
                write!(f, "{}: compensated by hand ({note:?}); the rollback continues", name(step))
            }
        }
    }
}

/// What a journal says about a saga, rebuilt by replaying it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Summary {
    /// Where the saga stands.
    pub status: Status,
    /// The failure behind a rollback (`Compensated`) or a park (`NeedsHuman`).
    pub failure: Option<Failure>,
    /// The report: escalations, compensations, attempts, restarts.
    pub report: Report,
}

/// Replays a journal written under `definition`: what the runtime would conclude from it.
///
/// An error says how the journal contradicts itself (records out of order, a record that
/// does not follow from the ones before it).
pub fn summarize(definition: &'static Definition, records: &[Record]) -> Result<Summary, String> {
    let progress = Progress::replay(definition, records)?;
    Ok(Summary { status: progress.status(), failure: progress.outcome_failure().cloned(), report: progress.report })
}
