//! The driver of one saga: it asks the journal's fold what comes next, records the start of
//! that action together with everything still pending (one store write per action), acts,
//! and records the result. Every decision is a journal record, so a driver rebuilt from the
//! store after a crash continues exactly where the journal stops.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::FutureExt;
use tracing::Instrument;

use crate::BoxFuture;
use crate::codec::{Codec, OpenedSaga};
use crate::context::{KeySource, Resources, StepContext};
use crate::definition::{Definition, StepKind};
use crate::error::{Failure, FailureKind, StepError};
use crate::faults::Faults;
use crate::id::SagaId;
use crate::idempotency;
use crate::journal::{CompensationNext, Event, JournalError, Next, Payload, Phase, Progress, Record, Then};
use crate::ladder;
use crate::limits::{LimitError, Limits, Permit};
use crate::notify::{Notifier, Observer, Pager};
use crate::outcome::{Incident, Level, Outcome, Status};
use crate::policy::Policy;
use crate::redact::Scrubber;
use crate::redact::panics::Scrubbed;
use crate::runtime::RuntimeError;
use crate::saga::Saga;
use crate::store::{ChainHash, CheckpointStore, Fence};
use crate::writer::{JournalWriter, Outages, Standing, now_ms};

/// What a driver needs from the runtime that runs it.
pub(crate) struct Engine {
    pub(crate) store: Arc<dyn CheckpointStore>,
    pub(crate) codec: Codec,
    pub(crate) policy: Policy,
    pub(crate) notifier: Box<dyn Notifier>,
    pub(crate) pager: Arc<dyn Pager>,
    pub(crate) observers: Arc<[Box<dyn Observer>]>,
    pub(crate) resources: Arc<Resources>,
    /// The largest step output or effect result a checkpoint takes, in bytes.
    pub(crate) max_payload: usize,
    /// What every text of a saga goes through before anyone sees it.
    pub(crate) scrubber: Scrubber,
    /// The rate limits of the downstreams.
    pub(crate) limits: Arc<Limits>,
    /// Faults injected by the test harness (`testing::FaultMatrix`); `None` in production.
    pub(crate) faults: Option<Arc<dyn Faults>>,
    /// Cancellations asked for sagas this runtime is driving: each driver looks before its
    /// next attempt.
    pub(crate) cancels: Mutex<std::collections::HashMap<SagaId, String>>,
}

/// What the driver does next.
enum Action {
    Finish(Status),
    Attempt(usize),
    Compensate(usize),
    Notify,
    Page,
    Return,
}

pub(crate) struct Driver<'r, S: Saga> {
    engine: &'r Engine,
    saga: S,
    saga_id: SagaId,
    definition: &'static Definition,
    input_digest: [u8; 32],
    pub(crate) progress: Progress,
    /// The typed outputs; in step with `progress.steps[i].output`.
    state: S::State,
    writer: Arc<JournalWriter>,
    span: tracing::Span,
    /// The span of the step being run, kept across its attempts.
    step_span: Option<(usize, tracing::Span)>,
    /// On a resume: what remains of a backoff that the stop cut short.
    resume_wait: Option<Duration>,
    /// The first attempt's start was written with the saga itself: it is open, not
    /// interrupted.
    started_first_attempt: bool,
    /// Events applied to the progress and not yet handed to the writer.
    staged: Vec<Event>,
    /// The runtime's scrubber, plus the `Redacted` values of this saga's input.
    scrubber: Scrubber,
    /// Under a worker: backoffs longer than this release the saga instead of holding a slot.
    release_over: Option<Duration>,
    /// The drive stopped to release the saga until its backoff ends.
    released: bool,
    /// The wall clock (ms since the epoch) and tokio's clock read together, to turn the
    /// journal's deadline into a tokio instant (so that a paused test clock drives it).
    clocks: (u64, tokio::time::Instant),
}

/// A saga just created: what the driver of its first run starts from.
pub(crate) struct Created<'a> {
    pub(crate) saga_id: SagaId,
    /// Its first claim.
    pub(crate) fence: Fence,
    /// Its serialized input.
    pub(crate) input: &'a Payload,
    /// The values of its input's `Redacted` fields.
    pub(crate) secrets: Vec<String>,
    /// `Started` and the start of the first attempt, written with the saga.
    pub(crate) records: &'a [Record],
    /// The hash of the last of them.
    pub(crate) head: ChainHash,
    /// The wall clock of the records and tokio's clock, read together (the deadline counts
    /// from the records' time).
    pub(crate) clocks: (u64, tokio::time::Instant),
}

impl<'r, S: Saga> Driver<'r, S> {
    /// A driver for a saga just created with its first records, holding its first claim.
    pub(crate) fn start(engine: &'r Engine, saga: S, created: Created<'_>) -> Result<Self, RuntimeError> {
        let Created { saga_id, fence, input, secrets, records, head, clocks } = created;
        let definition = S::definition();
        let mut progress = Progress::new(definition);
        for record in records {
            progress.apply(&record.event).map_err(|error| RuntimeError::Journal { saga_id: saga_id.clone(), error })?;
        }
        let mut driver = Driver::new(engine, saga, saga_id, fence, input, secrets, progress, head);
        for record in records {
            driver.writer.observe(record);
        }
        driver.started_first_attempt = true;
        driver.clocks = clocks;
        Ok(driver)
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        engine: &'r Engine,
        saga: S,
        saga_id: SagaId,
        fence: Fence,
        input: &Payload,
        secrets: Vec<String>,
        progress: Progress,
        head: ChainHash,
    ) -> Self {
        let definition = S::definition();
        let span = tracing::info_span!("saga", saga_id = %saga_id, saga = definition.name());
        let standing = standing(&progress, None);
        let writer = Arc::new(JournalWriter::new(
            engine.store.clone(),
            engine.codec.clone(),
            saga_id.clone(),
            fence,
            definition,
            engine.observers.clone(),
            Outages {
                retry: engine.policy.store_retry,
                page_after: engine.policy.store_outage_page_after,
                pager: engine.pager.clone(),
            },
            progress.next_seq,
            head,
            standing,
        ));
        Driver {
            engine,
            saga,
            saga_id,
            definition,
            input_digest: idempotency::input_digest(input),
            progress,
            state: S::State::default(),
            writer,
            span,
            step_span: None,
            resume_wait: None,
            started_first_attempt: false,
            staged: Vec::new(),
            scrubber: engine.scrubber.with_literals(secrets),
            release_over: None,
            released: false,
            clocks: (now_ms(), tokio::time::Instant::now()),
        }
    }

    /// When the saga must be over, on tokio's clock.
    fn deadline(&self) -> Option<tokio::time::Instant> {
        let deadline_ms = self.progress.deadline_ms?;
        let (wall, instant) = self.clocks;
        Some(match deadline_ms.checked_sub(wall) {
            Some(ahead) => instant + Duration::from_millis(ahead),
            None => instant.checked_sub(Duration::from_millis(wall - deadline_ms)).unwrap_or(instant),
        })
    }

    fn past_deadline(&self) -> bool {
        self.deadline().is_some_and(|deadline| tokio::time::Instant::now() >= deadline)
    }

    /// Sleeps `delay` before a step's next attempt, but not past the deadline (the attempt
    /// then finds it passed).
    async fn sleep_forward(&self, delay: Duration) {
        let until = tokio::time::Instant::now() + delay;
        let until = match self.deadline() {
            Some(deadline) if matches!(self.progress.phase, Phase::Forward(_)) => until.min(deadline),
            _ => until,
        };
        tokio::time::sleep_until(until).await;
    }

    /// A driver for a stored saga, claimed with `fence`: its journal replayed, its outputs
    /// decoded.
    pub(crate) fn restore(engine: &'r Engine, saga: S, fence: Fence, stored: OpenedSaga) -> Result<Self, RuntimeError> {
        let definition = S::definition();
        let saga_id = stored.summary.id.clone();
        check_started(&saga_id, &stored)?;
        let progress = Progress::replay(definition, &stored.records)
            .map_err(|error| RuntimeError::Journal { saga_id: saga_id.clone(), error })?;
        // The secrets of the input: its `Redacted` fields, met while it is serialized again.
        let (_, secrets) = crate::redact::collect_redacted(|| serde_json::to_value(&saga));
        let mut driver =
            Driver::new(engine, saga, saga_id, fence, &stored.input, secrets, progress, stored.summary.head);
        for (i, step) in driver.progress.steps.iter().enumerate() {
            if let Some(output) = &step.output {
                S::__decode(i, &mut driver.state, output).map_err(|error| RuntimeError::Checkpoint {
                    saga_id: driver.saga_id.clone(),
                    step: definition.steps()[i].name().to_owned(),
                    error,
                })?;
            }
        }
        driver.resume_wait = remaining_backoff(stored.records.last());
        Ok(driver)
    }

    fn journal_error(&self, error: JournalError) -> RuntimeError {
        RuntimeError::Journal { saga_id: self.saga_id.clone(), error }
    }

    /// Applies an event and stages it for the next commit.
    pub(crate) fn record(&mut self, event: Event) -> Result<(), RuntimeError> {
        self.progress.apply(&event).map_err(|error| self.journal_error(error))?;
        self.staged.push(event);
        Ok(())
    }

    /// Applies what the effects of the last step attempt wrote; stops the saga with the
    /// store's error if one of their writes failed.
    fn fold_effects(&mut self) -> Result<(), RuntimeError> {
        for event in self.writer.take_unfolded() {
            self.progress.apply(&event).map_err(|error| self.journal_error(error))?;
        }
        match self.writer.take_failure() {
            Some(error) => Err(RuntimeError::store(&self.saga_id, error)),
            None => Ok(()),
        }
    }

    /// Writes the staged records and the checkpoint they lead to, in one store transaction.
    /// They reach the writer together with where the saga stands after them, so that a
    /// background write (a model exchange) never carries a record with a stale checkpoint.
    async fn commit(&mut self) -> Result<(), RuntimeError> {
        if !self.staged.is_empty() {
            let standing = standing(&self.progress, self.staged.last());
            self.writer.push(std::mem::take(&mut self.staged), standing);
        }
        self.writer.commit(false).await.map_err(|error| RuntimeError::store(&self.saga_id, error))?;
        // What the writer itself recorded meanwhile (a store outage it waited out).
        for event in self.writer.take_unfolded() {
            self.progress.apply(&event).map_err(|error| self.journal_error(error))?;
        }
        Ok(())
    }

    fn next_action(&self) -> Action {
        match &self.progress.phase {
            Phase::Forward(i) if *i >= self.definition.steps().len() => Action::Finish(Status::Completed),
            Phase::Forward(i) => Action::Attempt(*i),
            Phase::Compensating { queue, then } => {
                if *then == Then::RollBack && !self.progress.notified {
                    Action::Notify
                } else {
                    match queue.last() {
                        Some(&step) => Action::Compensate(step),
                        None => Action::Finish(Status::Compensated),
                    }
                }
            }
            Phase::Parked(_) if !self.progress.paged => Action::Page,
            Phase::Parked(_) | Phase::Finished(_) => Action::Return,
        }
    }

    /// Whether the last write under this claim left the saga held by nobody.
    pub(crate) fn released_by_last_write(&self) -> bool {
        self.writer.released_by_last_write()
    }

    /// The outcome, when the saga has nothing left to do without a human (finished, or parked
    /// and paged): read without driving it.
    pub(crate) fn settled_outcome(&mut self) -> Result<Option<Outcome<S::Output>>, RuntimeError> {
        match self.next_action() {
            Action::Return => self.outcome().map(Some),
            _ => Ok(None),
        }
    }

    pub(crate) async fn drive(&mut self) -> Result<Outcome<S::Output>, RuntimeError> {
        match self.drive_until(None).await? {
            Some(outcome) => Ok(outcome),
            None => Err(self.journal_error(JournalError::new("a drive without a release point was released"))),
        }
    }

    /// Drives the saga until it waits for nothing but a human, or (with `release_over`) until
    /// it must wait longer than that for a backoff: then the wait's end is on record as the
    /// saga's due time, and `None` lets the worker release it instead of holding a slot.
    pub(crate) async fn drive_until(
        &mut self,
        release_over: Option<Duration>,
    ) -> Result<Option<Outcome<S::Output>>, RuntimeError> {
        self.release_over = release_over;
        let span = self.span.clone();
        async move {
            loop {
                if self.released {
                    return Ok(None);
                }
                match self.next_action() {
                    Action::Finish(status) => {
                        self.record(Event::Finished { status })?;
                        self.commit().await?;
                        return self.outcome().map(Some);
                    }
                    Action::Return => {
                        self.commit().await?;
                        return self.outcome().map(Some);
                    }
                    Action::Page => {
                        // The park is durable before anyone is paged.
                        self.commit().await?;
                        self.page()?;
                        self.commit().await?;
                        return self.outcome().map(Some);
                    }
                    Action::Notify => {
                        self.commit().await?;
                        self.notify()?;
                    }
                    Action::Attempt(step) => self.attempt(step).await?,
                    Action::Compensate(step) => self.compensate(step).await?,
                }
            }
        }
        .instrument(span)
        .await
    }

    fn context(&self, step: usize, attempt: u32, tier: u32, compensation: Option<&'static str>) -> StepContext {
        let step_def = &self.definition.steps()[step];
        let state = &self.progress.steps[step];
        let previous_error = match compensation {
            Some(_) => state.compensation_failure.clone(),
            None => state.last_failure.clone(),
        };
        // Inputs are earlier steps; compensations run in reverse order, so a step's inputs
        // are still checkpointed whenever it or its compensation runs.
        let reads = step_def.inputs().iter().filter_map(|&j| self.progress.steps[j].output.clone()).collect();
        StepContext {
            step_index: step as u32,
            pass: state.pass,
            writer: self.writer.clone(),
            used_keys: Mutex::new(Vec::new()),
            landed: Mutex::new(state.effects.clone()),
            saga_id: self.saga_id.clone(),
            saga: self.definition.name(),
            step: step_def.name(),
            compensation,
            attempt,
            tier,
            previous_error,
            observation: self.progress.observation.clone(),
            key_source: KeySource { input_digest: self.input_digest, reads, generation: state.generation },
            max_payload: self.engine.max_payload,
            scrubber: self.scrubber.clone(),
            key: OnceLock::new(),
            resources: self.engine.resources.clone(),
            limits: self.engine.limits.clone(),
            used_limits: Mutex::new(Vec::new()),
            misconfigured: OnceLock::new(),
        }
    }

    fn timeout(&self, step: usize) -> Option<Duration> {
        self.definition.steps()[step].timeout().or(self.engine.policy.step_timeout)
    }

    fn step_span(&mut self, i: usize) -> tracing::Span {
        match &self.step_span {
            Some((index, span)) if *index == i => span.clone(),
            _ => {
                let name = self.definition.steps()[i].name();
                let span = tracing::info_span!(parent: &self.span, "step", saga_id = %self.saga_id, step = name);
                self.step_span = Some((i, span.clone()));
                span
            }
        }
    }

    async fn attempt(&mut self, i: usize) -> Result<(), RuntimeError> {
        let cancel = self.engine.cancels.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.saga_id);
        if let Some(reason) = cancel
            && self.progress.cannot_cancel().is_none()
        {
            tracing::warn!(saga_id = %self.saga_id, %reason, "cancelled by an operator: rolling back");
            return self.record(Event::Cancelled { step: i as u32, reason });
        }
        let step_def = &self.definition.steps()[i];
        let tier = self.progress.steps[i].tier;
        let attempt = match self.progress.steps[i].open_attempt {
            Some(started) if std::mem::take(&mut self.started_first_attempt) => started,
            Some(interrupted) => {
                // Only a driver rebuilt from the store finds an attempt that started and has
                // no result: the process stopped during it.
                let in_a_row = self.progress.steps[i].interruptions_used + 1;
                let error = interruption("attempt", in_a_row, self.engine.policy.interruptions);
                let span = self.attempt_span(i, interrupted, tier);
                return self.step_failed(i, interrupted, error, None, &span).await;
            }
            None => {
                if let Some(wait) = self.resume_wait.take() {
                    self.sleep_forward(wait).await;
                }
                let attempt = self.progress.steps[i].attempts + 1;
                if self.past_deadline() {
                    let span = self.attempt_span(i, attempt, tier);
                    let error =
                        deadline_passed(format!("before attempt {attempt} of `{}` could start", step_def.name()));
                    return self.step_failed(i, attempt, error, None, &span).await;
                }
                self.record(Event::AttemptStarted { step: i as u32, attempt, tier })?;
                self.commit().await?;
                attempt
            }
        };
        if self.past_deadline() {
            let span = self.attempt_span(i, attempt, tier);
            let error = deadline_passed(format!("before attempt {attempt} of `{}` ran", step_def.name()));
            return self.step_failed(i, attempt, error, None, &span).await;
        }

        let cx = self.context(i, attempt, tier, None);
        let span = self.attempt_span(i, attempt, tier);
        let timeout = self.timeout(i);
        let result = match self.draw_token(i, attempt, false).instrument(span.clone()).await? {
            Ok(_) if let Some(fault) = self.fault(|f| f.before_attempt(i, attempt)) => Err(fault),
            Ok(permit) => {
                let deadline = self.deadline();
                let run = guarded(self.saga.__run_step(i, &cx, &mut self.state), timeout, &self.scrubber, "step")
                    .instrument(span.clone());
                let result = match deadline {
                    Some(deadline) => tokio::time::timeout_at(deadline, run).await.unwrap_or_else(|_| {
                        Err(deadline_passed(format!(
                            "while attempt {attempt} of `{}` ran: it was cut off",
                            step_def.name()
                        )))
                    }),
                    None => run.await,
                };
                drop(permit);
                match result {
                    // A lost response (injected by the test harness): the body ran, its output
                    // never arrived.
                    Ok(()) if let Some(fault) = self.fault(|f| f.after_attempt(i, attempt)) => {
                        S::__clear(i, &mut self.state);
                        Err(fault)
                    }
                    result => result,
                }
            }
            Err(error) => Err(error),
        };
        let result = misconfigured(result, &cx);
        let used_limits = std::mem::take(&mut *cx.used_limits.lock().unwrap_or_else(|e| e.into_inner()));
        drop(cx);
        self.fold_effects()?;
        if let Err(error) = &result {
            self.pause_downstreams(i, used_limits, error).await;
        }
        let result = result.and_then(|()| self.validate(i));
        match result {
            Ok(()) => {
                let output = self.encode(i)?;
                if output.len() > self.engine.max_payload {
                    // Checkpointing it would hold every saga of the store: a logical failure of
                    // the step, which may answer with a reference instead.
                    S::__clear(i, &mut self.state);
                    let what = format!("the output of step `{}`", step_def.name());
                    let error = too_large(&what, output.len(), self.engine.max_payload);
                    return self.step_failed(i, attempt, error, None, &span).await;
                }
                span.in_scope(|| tracing::debug!("step completed"));
                self.record(Event::StepCompleted { step: i as u32, attempt, output })
            }
            Err(error) => {
                let (error, rejected_output) = match error.kind() {
                    FailureKind::Rejected => {
                        let output = self.encode(i)?;
                        if output.len() > self.engine.max_payload {
                            S::__clear(i, &mut self.state);
                            let what = format!("the rejected output of step `{}`", step_def.name());
                            (too_large(&what, output.len(), self.engine.max_payload), None)
                        } else {
                            (error, Some(output))
                        }
                    }
                    _ => (error, None),
                };
                if rejected_output.is_some() && step_def.kind() != StepKind::Compensable {
                    S::__clear(i, &mut self.state);
                }
                self.step_failed(i, attempt, error, rejected_output, &span).await
            }
        }
    }

    /// What the test harness's injected faults say, if any are injected.
    fn fault<T>(&self, ask: impl FnOnce(&dyn Faults) -> Option<T>) -> Option<T> {
        self.engine.faults.as_deref().and_then(ask)
    }

    /// Before an attempt of step `i` (or of its compensation): a token of the step's
    /// `#[step(limit = ..)]` downstream, if it has one. The wait is journaled, not failed; an
    /// undeclared downstream fails the attempt for good (`Err` inside).
    async fn draw_token(
        &mut self,
        i: usize,
        attempt: u32,
        compensation: bool,
    ) -> Result<Result<Option<Permit>, StepError>, RuntimeError> {
        let Some(downstream) = self.definition.steps()[i].limit() else { return Ok(Ok(None)) };
        let permit = match self.engine.limits.acquire(downstream).await {
            Ok(permit) => permit,
            Err(LimitError::Unknown(name)) => {
                return Ok(Err(crate::context::unknown_limit(&name, &self.engine.limits.names())));
            }
        };
        if permit.waited() >= Duration::from_millis(1) {
            tracing::info!(downstream, waited_ms = permit.waited().as_millis() as u64, "waited for a rate-limit token");
            self.record(Event::Throttled {
                step: i as u32,
                attempt,
                compensation,
                downstream: downstream.to_owned(),
                waited_ms: permit.waited().as_millis() as u64,
            })?;
        }
        Ok(Ok(Some(permit)))
    }

    /// A failure that asked to wait (`retry_after`, a 429) pauses every downstream the attempt
    /// drew from, for every saga: the others wait for the pause instead of hammering.
    async fn pause_downstreams(&self, i: usize, mut used: Vec<String>, error: &StepError) {
        let Some(pause) = error.retry_after_delay() else { return };
        used.extend(self.definition.steps()[i].limit().map(str::to_owned));
        used.sort_unstable();
        used.dedup();
        for downstream in used {
            self.engine.limits.pause(&downstream, pause).await;
        }
    }

    /// The step's validator, with a panic caught as a rejection.
    fn validate(&self, i: usize) -> Result<(), StepError> {
        let validator = self.definition.steps()[i].validate().unwrap_or("validate");
        let verdict = std::panic::catch_unwind(AssertUnwindSafe(|| self.saga.__validate(i, &self.state)))
            .unwrap_or_else(|panic| Err(format!("it panicked: {}", panic_message(&*panic))));
        verdict.map_err(|rejection| {
            StepError::logical(format!("validator `{validator}` rejected the output: {rejection}"))
                .with_kind(FailureKind::Rejected)
        })
    }

    fn attempt_span(&mut self, i: usize, attempt: u32, tier: u32) -> tracing::Span {
        let step_span = self.step_span(i);
        let step = self.definition.steps()[i].name();
        // An attempt that answers a failure a later step found (and blamed on this one).
        let found_by = self.progress.steps[i].last_failure.as_ref().map(|f| f.step.as_str()).filter(|s| *s != step);
        tracing::info_span!(
            parent: &step_span,
            "attempt",
            step,
            attempt,
            tier,
            found_by,
            class = tracing::field::Empty,
            level = tracing::field::Empty,
            blamed = tracing::field::Empty,
            // The span's status for OpenTelemetry (feature `otel`): a failed attempt is an error.
            otel.status_code = tracing::field::Empty,
        )
    }

    async fn step_failed(
        &mut self,
        i: usize,
        attempt: u32,
        mut error: StepError,
        rejected_output: Option<Payload>,
        span: &tracing::Span,
    ) -> Result<(), RuntimeError> {
        let next = ladder::decide(&self.engine.policy, self.definition, &self.progress, i, &mut error);
        let failure = Failure {
            step: self.definition.steps()[i].name().to_owned(),
            compensation: None,
            class: error.class(),
            kind: error.kind(),
            attempt,
            message: self.scrubber.scrub(error.message()).into_owned(),
        };
        // An observation is journaled and shown like any text: scrubbed.
        let next = match next {
            Next::Restart { from, requested, note, observation: Some(observation) } => Next::Restart {
                from,
                requested,
                note,
                observation: Some(Arc::new(self.scrubber.scrub_json(&observation))),
            },
            // A step named at run time (by a model, say) is shown like any text: scrubbed.
            Next::Blame { blamed, tier, requested, note } => Next::Blame {
                blamed,
                tier,
                requested: requested.map(|r| self.scrubber.scrub(&r).into_owned()),
                note: note.map(|n| self.scrubber.scrub(&n).into_owned()),
            },
            next => next,
        };
        span.record("class", tracing::field::display(failure.class));
        span.record("level", next.level() as u8);
        span.record("otel.status_code", "error");
        // Who found the failure is the attempt's step; who was blamed for it, if another.
        let blamed = match &next {
            Next::Blame { blamed, .. } if *blamed as usize != i => {
                Some(self.definition.steps()[*blamed as usize].name())
            }
            _ => None,
        };
        span.record("blamed", blamed);
        span.in_scope(|| {
            tracing::warn!(
                class = %failure.class,
                ladder_level = next.level() as u8,
                blamed,
                error = %failure.message,
                "step failed: {}", next.level()
            )
        });
        let delay = match next {
            Next::Retry { delay } => Some(delay),
            _ => None,
        };
        self.record(Event::StepFailed { step: i as u32, failure, rejected_output, next })?;
        self.backoff(delay).await
    }

    /// Before sleeping, the failure is made durable, so that a stop during the sleep resumes
    /// with the rest of the delay.
    async fn backoff(&mut self, delay: Option<Duration>) -> Result<(), RuntimeError> {
        if let Some(delay) = delay.filter(|d| !d.is_zero()) {
            self.commit().await?;
            if self.release_over.is_some_and(|over| delay > over) {
                // The commit put the wait's end on record as the saga's due time: a worker
                // claims it again then, and the resume sleeps only what is left of it.
                self.released = true;
                self.resume_wait = Some(delay);
                return Ok(());
            }
            self.sleep_forward(delay).await;
        }
        Ok(())
    }

    async fn compensate(&mut self, i: usize) -> Result<(), RuntimeError> {
        let step_def = &self.definition.steps()[i];
        let compensation = step_def.compensation().unwrap_or_default();
        let span = tracing::info_span!(
            parent: &self.span,
            "compensation",
            saga_id = %self.saga_id,
            step = step_def.name(),
            compensation,
            attempt = tracing::field::Empty,
            class = tracing::field::Empty,
            level = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        if let Some(interrupted) = self.progress.steps[i].open_compensation_attempt {
            let in_a_row = self.progress.steps[i].compensation_interruptions_used + 1;
            let error = interruption("compensation", in_a_row, self.engine.policy.interruptions);
            return self.compensation_failed(i, interrupted, error, &span).await;
        }
        if let Some(wait) = self.resume_wait.take() {
            tokio::time::sleep(wait).await;
        }
        let attempt = self.progress.steps[i].compensation_attempts + 1;
        span.record("attempt", attempt);
        self.record(Event::CompensationStarted { step: i as u32, attempt })?;
        self.commit().await?;
        let cx = self.context(i, attempt, 0, Some(compensation));
        let timeout = self.timeout(i);
        let result = match self.draw_token(i, attempt, true).instrument(span.clone()).await? {
            Ok(_) if let Some(fault) = self.fault(|f| f.before_compensation(i, attempt)) => Err(fault),
            Ok(permit) => {
                let mut result =
                    guarded(self.saga.__compensate(i, &cx, &self.state), timeout, &self.scrubber, "compensation")
                        .instrument(span.clone())
                        .await;
                // Run again at once (the test harness's "run twice = run once" check).
                for _ in 1..self.fault(|f| Some(f.compensation_runs(i))).unwrap_or(1) {
                    if result.is_ok() {
                        result = guarded(
                            self.saga.__compensate(i, &cx, &self.state),
                            timeout,
                            &self.scrubber,
                            "compensation",
                        )
                        .instrument(span.clone())
                        .await;
                    }
                }
                drop(permit);
                result
            }
            Err(error) => Err(error),
        };
        let result = misconfigured(result, &cx);
        let used_limits = std::mem::take(&mut *cx.used_limits.lock().unwrap_or_else(|e| e.into_inner()));
        drop(cx);
        self.fold_effects()?;
        if let Err(error) = &result {
            self.pause_downstreams(i, used_limits, error).await;
        }
        match result {
            Ok(()) => {
                span.in_scope(|| tracing::info!("compensated"));
                self.record(Event::CompensationDone { step: i as u32, attempt })?;
                S::__clear(i, &mut self.state);
                Ok(())
            }
            Err(error) => self.compensation_failed(i, attempt, error, &span).await,
        }
    }

    async fn compensation_failed(
        &mut self,
        i: usize,
        attempt: u32,
        error: StepError,
        span: &tracing::Span,
    ) -> Result<(), RuntimeError> {
        let step_def = &self.definition.steps()[i];
        let next = ladder::decide_compensation(&self.engine.policy, &self.progress, i, &error);
        let failure = Failure {
            step: step_def.name().to_owned(),
            compensation: Some(step_def.compensation().unwrap_or_default().to_owned()),
            class: error.class(),
            kind: error.kind(),
            attempt,
            message: self.scrubber.scrub(error.message()).into_owned(),
        };
        span.record("class", tracing::field::display(failure.class));
        span.record("otel.status_code", "error");
        let delay = match next {
            CompensationNext::Retry { delay } => Some(delay),
            CompensationNext::Park => {
                span.record("level", Level::PageHuman as u8);
                None
            }
        };
        span.in_scope(|| tracing::warn!(class = %failure.class, error = %failure.message, "compensation failed"));
        self.record(Event::CompensationFailed { step: i as u32, failure, next })?;
        self.backoff(delay).await
    }

    fn encode(&self, i: usize) -> Result<Payload, RuntimeError> {
        let encoded =
            std::panic::catch_unwind(AssertUnwindSafe(|| S::__encode(i, &self.state))).unwrap_or_else(|panic| {
                Err(crate::CodecError::from(<serde_json::Error as serde::ser::Error>::custom(format!(
                    "Serialize panicked: {}",
                    panic_message(&*panic)
                ))))
            });
        encoded.map(Payload::from).map_err(|error| RuntimeError::Encode {
            saga_id: self.saga_id.clone(),
            step: self.definition.steps()[i].name().to_owned(),
            error,
        })
    }

    fn incident(&self, level: Level) -> Result<Incident, RuntimeError> {
        let failure = self
            .progress
            .outcome_failure()
            .cloned()
            .ok_or_else(|| self.journal_error(JournalError::new(format!("{level} without a failure"))))?;
        Ok(Incident {
            saga_id: self.saga_id.clone(),
            saga: self.definition.name().to_owned(),
            level,
            failure,
            report: self.progress.report.clone(),
        })
    }

    /// Level 3: the notifier is called once per rollback (again only if a stop lost the
    /// record of the first call).
    fn notify(&mut self) -> Result<(), RuntimeError> {
        let incident = self.incident(Level::Compensate)?;
        if std::panic::catch_unwind(AssertUnwindSafe(|| self.engine.notifier.notify(&incident))).is_err() {
            tracing::error!(saga_id = %self.saga_id, "the notifier panicked; the rollback goes on");
        }
        self.record(Event::Notified)
    }

    /// Writes what is staged now (for a sweep's chore outside a drive).
    pub(crate) async fn commit_now(&mut self) -> Result<(), RuntimeError> {
        self.commit().await
    }

    /// Pages again for a saga parked too long (a sweep's reminder; the caller records it).
    pub(crate) fn page_again(&self) {
        match self.incident(Level::PageHuman) {
            Ok(incident) => {
                if std::panic::catch_unwind(AssertUnwindSafe(|| self.engine.pager.page(&incident))).is_err() {
                    tracing::error!(saga_id = %self.saga_id, "the pager panicked; the saga stays parked");
                }
            }
            Err(error) => tracing::error!(saga_id = %self.saga_id, %error, "cannot page again"),
        }
    }

    /// Level 4: the pager is called once per park (again only if a stop lost the record).
    fn page(&mut self) -> Result<(), RuntimeError> {
        let incident = self.incident(Level::PageHuman)?;
        if std::panic::catch_unwind(AssertUnwindSafe(|| self.engine.pager.page(&incident))).is_err() {
            tracing::error!(saga_id = %self.saga_id, "the pager panicked; the saga stays parked");
        }
        self.record(Event::Paged)
    }

    pub(crate) fn outcome(&mut self) -> Result<Outcome<S::Output>, RuntimeError> {
        let saga_id = self.saga_id.clone();
        let report = self.progress.report.clone();
        let failure = || {
            self.progress
                .outcome_failure()
                .cloned()
                .ok_or_else(|| self.journal_error(JournalError::new("no failure recorded")))
        };
        match self.progress.status() {
            Status::Completed => {
                let state = std::mem::take(&mut self.state);
                let output = S::__finish(state)
                    .ok_or_else(|| self.journal_error(JournalError::new("a completed saga lacks a step output")))?;
                Ok(Outcome::Completed { saga_id, output, report })
            }
            Status::Compensated => Ok(Outcome::Compensated { saga_id, failure: failure()?, report }),
            Status::NeedsHuman => Ok(Outcome::NeedsHuman { saga_id, failure: failure()?, report }),
            Status::Running => Err(self.journal_error(JournalError::new("the saga stopped while running"))),
        }
    }
}

/// The journal's first record names the definition that wrote it: it must agree with the saga
/// row (which `check_definition` compared with this binary), or the row was edited.
fn check_started(saga_id: &SagaId, stored: &OpenedSaga) -> Result<(), RuntimeError> {
    let summary = &stored.summary;
    match stored.records.first().map(|r| &r.event) {
        Some(Event::Started { saga, version, fingerprint, .. })
            if *saga == summary.name && *version == summary.version && *fingerprint == summary.fingerprint =>
        {
            Ok(())
        }
        Some(Event::Started { saga, version, fingerprint, .. }) => Err(RuntimeError::Journal {
            saga_id: saga_id.clone(),
            error: JournalError::new(format!(
                "its first record was written by `{saga}` version {version} (fingerprint {fingerprint}), but the saga row says `{}` version {} (fingerprint {}): the row was edited",
                summary.name, summary.version, summary.fingerprint
            )),
        }),
        _ => Err(RuntimeError::Journal {
            saga_id: saga_id.clone(),
            error: JournalError::new("it does not start with a `started` record"),
        }),
    }
}

/// What remains of the backoff decided by the last record, when a stop cut it short.
fn remaining_backoff(last: Option<&Record>) -> Option<Duration> {
    let last = last?;
    let delay = match &last.event {
        Event::StepFailed { next: Next::Retry { delay }, .. } => *delay,
        Event::CompensationFailed { next: CompensationNext::Retry { delay }, .. } => *delay,
        _ => return None,
    };
    let due = last.at_ms.saturating_add(delay.as_millis() as u64);
    let now = now_ms();
    (due > now).then(|| Duration::from_millis(due - now))
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-text payload".to_owned())
}

/// Runs one attempt with its timeout; a panic or a timeout becomes a logical failure.
async fn guarded(
    attempt: BoxFuture<'_, Result<(), StepError>>,
    timeout: Option<Duration>,
    scrubber: &Scrubber,
    what: &'static str,
) -> Result<(), StepError> {
    let caught = AssertUnwindSafe(Scrubbed::new(attempt, scrubber.clone(), what)).catch_unwind();
    let result = match timeout {
        Some(limit) => match tokio::time::timeout(limit, caught).await {
            Ok(result) => result,
            Err(_) => {
                return Err(StepError::logical(format!("timed out after {limit:?}")).with_kind(FailureKind::TimedOut));
            }
        },
        None => caught.await,
    };
    result.unwrap_or_else(|panic| {
        Err(StepError::logical(format!("panicked: {}", panic_message(&*panic))).with_kind(FailureKind::Panicked))
    })
}

/// A panic of `cx.resource` for a resource nobody registered is a configuration error, not a
/// logical failure: the ladder parks the saga at once instead of re-prompting (see
/// `ladder::decide`).
fn misconfigured(result: Result<(), StepError>, cx: &StepContext) -> Result<(), StepError> {
    match result {
        Err(error) if error.kind() == FailureKind::Panicked => Err(cx.misconfiguration().unwrap_or(error)),
        result => result,
    }
}

/// The failure of a saga that ran past its deadline, `when` (before an attempt, or cutting
/// one off): no budget is spent on it; the ladder goes to level 3 (or parks after the commit
/// point).
fn deadline_passed(when: String) -> StepError {
    StepError::logical(format!("the saga ran past its deadline {when}")).with_kind(FailureKind::DeadlinePassed)
}

/// The failure of a step whose output (or effect result, `what`) is over the payload limit.
pub(crate) fn too_large(what: &str, size: usize, limit: usize) -> StepError {
    StepError::logical(format!(
        "{what} is {size} bytes, over the {limit}-byte limit of a checkpoint: keep large artefacts elsewhere (an object store, a file) and return a reference to them (a URL, a path, a content hash)"
    ))
    .with_kind(FailureKind::TooLarge)
}

/// The failure of an attempt (or a compensation) that a stop of the process cut short: the
/// `in_a_row`-th such stop. Past the budget the message says why the saga is parked.
fn interruption(what: &str, in_a_row: u32, budget: u32) -> StepError {
    let message = if in_a_row > budget {
        format!(
            "the process stopped during this {what} {in_a_row} times in a row, so it may be what kills the process (an OOM, an abort, a crash in native code): find out why, then `resume` the saga"
        )
    } else {
        format!("the process stopped during this {what} (a crash or a shutdown)")
    };
    StepError::transient(message).with_kind(FailureKind::Interrupted)
}

/// Where the saga stands after `event` (the last one applied): the checkpoint written with it.
/// A saga with work to do is due now, or when the backoff it just decided ends; a finished
/// saga, or a parked one whose page is on record, waits for nothing but a human.
fn standing(progress: &Progress, event: Option<&Event>) -> Standing {
    let status = progress.status();
    let waits = match event {
        Some(Event::StepFailed { next: Next::Retry { delay }, .. })
        | Some(Event::CompensationFailed { next: CompensationNext::Retry { delay }, .. }) => Some(*delay),
        _ => None,
    };
    let forward = matches!(progress.phase, Phase::Forward(_));
    let due_at_ms = match status {
        Status::Running => Some(waits.map_or(0, |delay| {
            let due = now_ms().saturating_add(delay.as_millis() as u64);
            // A saga released to wait out a backoff is due again by its deadline at the latest.
            match progress.deadline_ms {
                Some(deadline) if forward => due.min(deadline),
                _ => due,
            }
        })),
        Status::NeedsHuman if !progress.paged => Some(0),
        Status::NeedsHuman | Status::Completed | Status::Compensated => None,
    };
    Standing { status, stage: progress.stage(), due_at_ms }
}
