//! The fold that rebuilds a saga's progress from its journal: one function per event, the
//! only place where progress changes, used both while the saga runs and when it is rebuilt
//! from the store after a crash.

use std::sync::Arc;

use super::JournalError;
use super::record::{CompensationNext, Event, LandedEffect, Next, Payload, Record};
use crate::definition::{Definition, StepKind};
use crate::error::{Failure, FailureKind};
use crate::outcome::{
    AttemptRecord, BlameRecord, CompensationReason, CompensationRecord, Escalation, Level, RemovedOrphan, Report,
    RestartRecord, Status, StoreOutage, Throttle,
};

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
    /// A later step blamed this one (`StepError::blame`): re-prompt it, and give the steps
    /// after it fresh budgets.
    Blame(usize),
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
            Then::Blame(_) => CompensationReason::Blame,
        }
    }
}

/// Why a saga is parked, with the failure that parked it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Parked {
    /// A step cannot go on without a human: after the commit point it exhausted its ladder,
    /// or stops of the process interrupted it `Policy::interruptions` times in a row (it may
    /// be what kills the process). `resume` runs it again with fresh budgets.
    Step { step: usize, failure: Failure },
    /// A compensation failed for good; `resume` tries it again, then the rest.
    Compensation { queue: Vec<usize>, then: Then, failure: Failure },
}

impl Parked {
    pub(crate) fn failure(&self) -> &Failure {
        match self {
            Parked::Step { failure, .. } | Parked::Compensation { failure, .. } => failure,
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
    /// Attempts of the step that a stop of the process interrupted in a row: an attempt that
    /// ends any other way shows that the step does not kill its process, and resets it.
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
    /// When the saga must be over (ms since the Unix epoch); lifted by an operator's resume.
    pub(crate) deadline_ms: Option<u64>,
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
            deadline_ms: None,
        }
    }

    /// Rebuilds the progress from a stored journal.
    pub(crate) fn replay(definition: &'static Definition, records: &[Record]) -> Result<Self, JournalError> {
        let mut progress = Progress::new(definition);
        for record in records {
            if record.seq != progress.next_seq {
                return Err(JournalError::new(format!(
                    "record {} follows record {}",
                    record.seq,
                    progress.next_seq.wrapping_sub(1)
                )));
            }
            progress.apply(&record.event)?;
        }
        if progress.next_seq == 0 {
            return Err(JournalError::new("the journal is empty"));
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
            Phase::Parked(Parked::Step { step, .. }) => {
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

    fn step_index(&self, step: u32) -> Result<usize, JournalError> {
        let index = step as usize;
        if index < self.steps.len() {
            Ok(index)
        } else {
            Err(JournalError::new(format!("step index {step} is out of range for `{}`", self.definition.name())))
        }
    }

    fn name(&self, index: usize) -> String {
        self.definition.steps()[index].name().to_owned()
    }

    /// Applies one event: the only place where progress changes.
    pub(crate) fn apply(&mut self, event: &Event) -> Result<(), JournalError> {
        match event {
            Event::Started { deadline_ms, .. } => {
                self.started()?;
                self.deadline_ms = *deadline_ms;
            }
            Event::AttemptStarted { step, attempt, tier } => self.attempt_started(*step, *attempt, *tier)?,
            Event::EffectLanded { step, attempt, name, key, result } => {
                self.effect_landed(*step, *attempt, name, key, result)?
            }
            Event::LlmExchange { step, .. } => {
                self.step_index(*step)?;
            }
            Event::StepCompleted { step, attempt, output } => self.step_completed(*step, *attempt, output)?,
            Event::StepFailed { step, failure, rejected_output, next } => {
                self.step_failed(*step, failure, rejected_output.as_ref(), next)?
            }
            Event::CompensationStarted { step, attempt } => self.compensation_started(*step, *attempt)?,
            Event::CompensationDone { step, attempt } => self.compensation_done(*step, *attempt)?,
            Event::CompensationFailed { step, failure, next } => self.compensation_failed(*step, failure, next)?,
            Event::Notified => {
                self.notified = true;
                self.report.notified += 1;
            }
            Event::Paged => self.paged()?,
            Event::Cancelled { step, reason } => self.cancelled(*step, reason)?,
            Event::Reminded => {
                if !(matches!(self.phase, Phase::Parked(_)) && self.paged) {
                    return Err(JournalError::new("a `reminded` record for a saga that is not parked and paged"));
                }
                self.report.paged += 1;
            }
            Event::OrphanRemoved { kind, resource } => {
                self.report.orphans_removed.push(RemovedOrphan { kind: kind.clone(), resource: resource.clone() });
            }
            Event::Finished { status } => self.finished(*status)?,
            Event::Resolved { step, note } => self.resolved(*step, note)?,
            Event::Resumed => self.resumed()?,
            Event::Throttled { step, attempt, compensation, downstream, waited_ms } => {
                let step_name = self.step_index(*step).map(|i| self.name(i))?;
                self.report.throttled.push(Throttle {
                    step: step_name,
                    attempt: *attempt,
                    compensation: *compensation,
                    downstream: downstream.clone(),
                    waited: std::time::Duration::from_millis(*waited_ms),
                });
            }
            Event::StoreOutage { failures, waited_ms, error, paged } => {
                self.report.store_outages.push(StoreOutage {
                    failures: *failures,
                    waited: std::time::Duration::from_millis(*waited_ms),
                    error: error.clone(),
                    paged: *paged,
                });
            }
        }
        self.next_seq += 1;
        Ok(())
    }

    fn started(&mut self) -> Result<(), JournalError> {
        if self.next_seq != 0 {
            return Err(JournalError::new("a second `started` record"));
        }
        Ok(())
    }

    fn attempt_started(&mut self, step: u32, attempt: u32, tier: u32) -> Result<(), JournalError> {
        let i = self.step_index(step)?;
        self.expect_forward(i)?;
        self.steps[i].attempts = attempt;
        self.steps[i].open_attempt = Some(attempt);
        self.report.attempts.push(AttemptRecord { step: self.name(i), attempt, tier });
        Ok(())
    }

    fn effect_landed(
        &mut self,
        step: u32,
        attempt: u32,
        name: &str,
        key: &str,
        result: &Payload,
    ) -> Result<(), JournalError> {
        let i = self.step_index(step)?;
        self.expect_forward(i)?;
        let state = &mut self.steps[i];
        state.attempts = state.attempts.max(attempt);
        state.effects.push(LandedEffect {
            name: name.to_owned(),
            key: key.to_owned(),
            attempt,
            result: result.clone(),
        });
        Ok(())
    }

    fn step_completed(&mut self, step: u32, attempt: u32, output: &Payload) -> Result<(), JournalError> {
        let i = self.step_index(step)?;
        self.expect_forward(i)?;
        let state = &mut self.steps[i];
        state.attempts = state.attempts.max(attempt);
        state.output = Some(output.clone());
        state.open_attempt = None;
        self.phase = Phase::Forward(i + 1);
        Ok(())
    }

    fn step_failed(
        &mut self,
        step: u32,
        failure: &Failure,
        rejected_output: Option<&Payload>,
        next: &Next,
    ) -> Result<(), JournalError> {
        let i = self.step_index(step)?;
        self.expect_forward(i)?;
        let compensable = self.definition.steps()[i].kind() == StepKind::Compensable;
        {
            let state = &mut self.steps[i];
            state.attempts = state.attempts.max(failure.attempt);
            state.last_failure = Some(failure.clone());
            state.open_attempt = None;
            if failure.kind != FailureKind::Interrupted {
                state.interruptions_used = 0;
            }
            if compensable && let Some(output) = rejected_output {
                state.output = Some(output.clone());
            }
        }
        let mut escalation = Escalation::of(failure, next.level());
        if let Next::Blame { blamed, .. } = next
            && *blamed != step
        {
            escalation.blamed = Some(self.name(self.step_index(*blamed)?));
        }
        self.report.escalations.push(escalation);
        // A rejected output, or the effects of a failed attempt that its compensation can
        // undo, are compensated before the step runs again (a transient retry reuses the
        // landed effects instead).
        let undo_now = compensable && self.needs_undo(i);
        match next {
            Next::Retry { delay } => {
                // A stop of the process has a budget of its own: crashes and deploys never
                // spend the retries of the step's transient failures.
                if failure.kind == FailureKind::Interrupted {
                    self.steps[i].interruptions_used += 1;
                } else {
                    self.steps[i].transient_used += 1;
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
            Next::Blame { blamed, tier, requested, note } => {
                let b = self.step_index(*blamed)?;
                if b > i {
                    return Err(JournalError::new(format!("step {i} blamed the later step {b}")));
                }
                self.report.blames.push(BlameRecord {
                    found_by: self.name(i),
                    attempt: failure.attempt,
                    blamed: requested.clone().unwrap_or_else(|| self.name(b)),
                    reprompted: self.name(b),
                    level: next.level(),
                    note: note.clone(),
                });
                // The blamed step climbs its own rungs.
                match tier {
                    Some(tier) => self.steps[b].tier = *tier,
                    None => self.steps[b].reprompts_used += 1,
                }
                for state in &mut self.steps[b..=i] {
                    state.pass += 1;
                }
                if b == i {
                    // Not followed: the failing step is re-prompted like for its own failure.
                    if undo_now {
                        self.phase = Phase::Compensating { queue: vec![i], then: Then::Reprompt(i) };
                    }
                } else {
                    // What the blamed step sees as its `previous_error()`: the failure found
                    // downstream, whose `step` names the step that found it.
                    self.steps[b].last_failure = Some(failure.clone());
                    let queue = self.undo_queue(b, i + usize::from(undo_now));
                    self.phase = Phase::Compensating { queue, then: Then::Blame(b) };
                }
            }
            Next::Restart { from, requested, note, observation } => {
                let from = self.step_index(*from)?;
                if from > i {
                    return Err(JournalError::new(format!("a restart of step {i} from the later step {from}")));
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
                let queue = self.undo_queue(0, self.steps.len());
                self.phase = Phase::Compensating { queue, then: Then::RollBack };
            }
            Next::Park => {
                self.paged = false;
                self.phase = Phase::Parked(Parked::Step { step: i, failure: failure.clone() });
            }
        }
        self.settle();
        Ok(())
    }

    /// Why the saga cannot be cancelled now, if it cannot: it finished, rolls back already, or
    /// passed its commit point (nothing after it is ever undone).
    pub(crate) fn cannot_cancel(&self) -> Option<String> {
        let commit_passed = self.definition.commit_index().is_some_and(|c| self.steps[c].output.is_some());
        match &self.phase {
            Phase::Finished(status) => Some(format!("it is {status} already")),
            Phase::Compensating { .. } | Phase::Parked(Parked::Compensation { .. }) => {
                Some("it is rolling back already (resume or resolve it to finish the rollback)".to_owned())
            }
            _ if commit_passed => Some(format!(
                "it passed its commit point `{}`, after which nothing is undone: resume it, or finish it by hand",
                self.definition.steps()[self.definition.commit_index().unwrap_or_default()].name()
            )),
            Phase::Forward(_) | Phase::Parked(Parked::Step { .. }) => None,
        }
    }

    /// The step a saga stands at (for a cancellation).
    pub(crate) fn current_step(&self) -> usize {
        match &self.phase {
            Phase::Forward(i) => (*i).min(self.steps.len().saturating_sub(1)),
            Phase::Parked(Parked::Step { step, .. }) => *step,
            _ => 0,
        }
    }

    fn cancelled(&mut self, step: u32, reason: &str) -> Result<(), JournalError> {
        let i = self.step_index(step)?;
        if let Some(why) = self.cannot_cancel() {
            return Err(JournalError::new(format!("a `cancelled` record while {why}")));
        }
        let failure = Failure {
            step: self.name(i),
            compensation: None,
            class: crate::error::FailureClass::Logical,
            kind: FailureKind::Cancelled,
            attempt: self.steps[i].attempts,
            message: format!("cancelled by an operator: {reason}"),
        };
        self.steps[i].open_attempt = None;
        self.report.escalations.push(Escalation::of(&failure, Level::Compensate));
        self.rollback_failure = Some(failure);
        self.notified = false;
        let queue = self.undo_queue(0, self.steps.len());
        self.phase = Phase::Compensating { queue, then: Then::RollBack };
        self.settle();
        Ok(())
    }

    fn compensation_started(&mut self, step: u32, attempt: u32) -> Result<(), JournalError> {
        let i = self.step_index(step)?;
        let then = self.expect_compensating(i)?;
        self.steps[i].compensation_attempts = attempt;
        self.steps[i].open_compensation_attempt = Some(attempt);
        let entry = self.open_compensation(i, then);
        self.report.compensations[entry].attempts = attempt;
        Ok(())
    }

    fn compensation_done(&mut self, step: u32, attempt: u32) -> Result<(), JournalError> {
        let i = self.step_index(step)?;
        let then = self.expect_compensating(i)?;
        let entry = self.open_compensation(i, then);
        let record = &mut self.report.compensations[entry];
        record.attempts = record.attempts.max(attempt);
        record.done = true;
        self.steps[i].undone();
        if let Phase::Compensating { queue, .. } = &mut self.phase {
            queue.pop();
        }
        self.settle();
        Ok(())
    }

    fn compensation_failed(
        &mut self,
        step: u32,
        failure: &Failure,
        next: &CompensationNext,
    ) -> Result<(), JournalError> {
        let i = self.step_index(step)?;
        let then = self.expect_compensating(i)?;
        let entry = self.open_compensation(i, then);
        let record = &mut self.report.compensations[entry];
        record.attempts = record.attempts.max(failure.attempt);
        record.errors.push(failure.message.clone());
        let state = &mut self.steps[i];
        state.compensation_attempts = state.compensation_attempts.max(failure.attempt);
        state.compensation_failure = Some(failure.clone());
        state.open_compensation_attempt = None;
        if failure.kind != FailureKind::Interrupted {
            state.compensation_interruptions_used = 0;
        }
        match next {
            CompensationNext::Retry { delay } => {
                match failure.kind {
                    FailureKind::Interrupted => state.compensation_interruptions_used += 1,
                    _ => state.compensation_retries_used += 1,
                }
                self.report.slept += *delay;
            }
            CompensationNext::Park => {
                self.report.escalations.push(Escalation::of(failure, Level::PageHuman));
                self.paged = false;
                let Phase::Compensating { queue, then } = std::mem::replace(&mut self.phase, Phase::Forward(0)) else {
                    unreachable!("checked by expect_compensating")
                };
                self.phase = Phase::Parked(Parked::Compensation { queue, then, failure: failure.clone() });
            }
        }
        Ok(())
    }

    fn paged(&mut self) -> Result<(), JournalError> {
        if !matches!(self.phase, Phase::Parked(_)) {
            return Err(JournalError::new("a `paged` record while not parked"));
        }
        self.paged = true;
        self.report.paged += 1;
        Ok(())
    }

    fn finished(&mut self, status: Status) -> Result<(), JournalError> {
        let consistent = match status {
            Status::Completed => matches!(self.phase, Phase::Forward(i) if i == self.steps.len()),
            Status::Compensated => {
                matches!(&self.phase, Phase::Compensating { queue, then: Then::RollBack } if queue.is_empty())
            }
            Status::Running | Status::NeedsHuman => false,
        };
        if !consistent {
            return Err(JournalError::new(format!("`finished {status}` does not follow from the records before it")));
        }
        self.phase = Phase::Finished(status);
        Ok(())
    }

    fn resolved(&mut self, step: u32, note: &str) -> Result<(), JournalError> {
        let i = self.step_index(step)?;
        let Phase::Parked(Parked::Compensation { queue, then, .. }) = &self.phase else {
            return Err(JournalError::new("a `resolved` record while no compensation was parked"));
        };
        if queue.last() != Some(&i) {
            return Err(JournalError::new(format!(
                "a `resolved` record for step `{}`, whose compensation was not parked",
                self.name(i)
            )));
        }
        let (mut queue, then) = (queue.clone(), *then);
        let entry = self.open_compensation(i, then);
        let record = &mut self.report.compensations[entry];
        record.done = true;
        record.resolved_by_human = Some(note.to_owned());
        self.steps[i].undone();
        queue.pop();
        self.paged = false;
        self.phase = Phase::Compensating { queue, then };
        self.settle();
        Ok(())
    }

    fn resumed(&mut self) -> Result<(), JournalError> {
        let Phase::Parked(parked) = &self.phase else {
            return Err(JournalError::new("a `resumed` record while not parked"));
        };
        // The operator who resumes a saga takes over its timing: a deadline that parked it
        // would park it again at once.
        self.deadline_ms = None;
        self.phase = match parked.clone() {
            Parked::Step { step: i, .. } => {
                // A new pass through the ladder for every step: a step after the commit point
                // that blames an earlier one whose rungs ran out gets them back too.
                for state in &mut self.steps {
                    state.fresh_budgets();
                }
                let state = &mut self.steps[i];
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
        Ok(())
    }

    fn expect_forward(&self, i: usize) -> Result<(), JournalError> {
        match self.phase {
            Phase::Forward(next) if next == i => Ok(()),
            _ => {
                Err(JournalError::new(format!("a record of step `{}` while the saga was not running it", self.name(i))))
            }
        }
    }

    fn expect_compensating(&self, i: usize) -> Result<Then, JournalError> {
        match &self.phase {
            Phase::Compensating { queue, then } if queue.last() == Some(&i) => Ok(*then),
            _ => Err(JournalError::new(format!("a compensation record of step `{}` out of order", self.name(i)))),
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
            Then::Blame(blamed) => {
                // The steps after the blamed one run again on its new output: a new problem
                // for them. The blamed step keeps climbing its own rungs.
                for state in &mut self.steps[blamed + 1..] {
                    state.fresh_budgets();
                }
                self.phase = Phase::Forward(blamed);
            }
        }
    }
}
