//! The [`Runtime`]: starts, drives and resumes sagas.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use tracing::Instrument;

use crate::context::{KeySource, Resources, StepContext};
use crate::error::{Failure, FailureKind, RuntimeError, StepError};
use crate::id::SagaId;
use crate::idempotency;
use crate::journal::{CompensationNext, Event, Next, Payload, Phase, Progress, Record, Then};
use crate::ladder;
use crate::notify::{LogNotifier, LogPager, Notifier, Observed, Observer, Pager};
use crate::outcome::{Incident, Level, Outcome, Status};
use crate::policy::Policy;
use crate::saga::{BoxFuture, Definition, Saga, StepKind};
use crate::store::{
    Checkpoint, CheckpointStore, Created, MemoryStore, NewSaga, SagaSummary, StoredSaga,
};

/// Starts, drives and resumes sagas. A cheap `Clone` handle: clones share the store, the
/// policy, the notifier, the pager and the resources.
///
/// ```
/// # use saga_runtime::prelude::*;
/// let runtime = Runtime::builder()
///     .policy(Policy { transient_retries: 5, ..Policy::default() })
///     .notifier(|incident: &Incident| eprintln!("rolled back: {incident}"))
///     .pager(|incident: &Incident| eprintln!("PAGE: {incident}"))
///     .build();
/// # let _ = runtime;
/// ```
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn CheckpointStore>,
    policy: Policy,
    notifier: Box<dyn Notifier>,
    pager: Box<dyn Pager>,
    observers: Vec<Box<dyn Observer>>,
    resources: Arc<Resources>,
    /// One lock per saga driven by this process, so that one id is never driven twice at once.
    active: Arc<Mutex<HashMap<SagaId, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Configures a [`Runtime`]. Every setting has a default: a [`MemoryStore`],
/// [`Policy::default`], and notifier and pager that log through `tracing`.
pub struct RuntimeBuilder {
    store: Option<Arc<dyn CheckpointStore>>,
    policy: Policy,
    notifier: Box<dyn Notifier>,
    pager: Box<dyn Pager>,
    observers: Vec<Box<dyn Observer>>,
    resources: Resources,
}

impl RuntimeBuilder {
    /// Where journals and checkpoints are kept (default: a new [`MemoryStore`]).
    pub fn store(mut self, store: impl CheckpointStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// A store that is already shared.
    pub fn shared_store(mut self, store: Arc<dyn CheckpointStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// The budgets of the escalation ladder.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Called once when a saga rolls back (level 3).
    pub fn notifier(mut self, notifier: impl Notifier) -> Self {
        self.notifier = Box::new(notifier);
        self
    }

    /// Called once when a saga is parked for a human (level 4).
    pub fn pager(mut self, pager: impl Pager) -> Self {
        self.pager = Box::new(pager);
        self
    }

    /// Sees every journal record as it is written (add as many as needed).
    pub fn observer(mut self, observer: impl Observer) -> Self {
        self.observers.push(Box::new(observer));
        self
    }

    /// A value steps reach with [`StepContext::resource`]: a client, a pool, a fake. One per
    /// type; a second value of the same type replaces the first.
    pub fn resource<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.resources.insert(value);
        self
    }

    /// The runtime.
    pub fn build(self) -> Runtime {
        Runtime {
            inner: Arc::new(Inner {
                store: self.store.unwrap_or_else(|| Arc::new(MemoryStore::new())),
                policy: self.policy,
                notifier: self.notifier,
                pager: self.pager,
                observers: self.observers,
                resources: Arc::new(self.resources),
                active: Arc::default(),
            }),
        }
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime::builder().build()
    }
}

impl Runtime {
    /// A builder with every default.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder {
            store: None,
            policy: Policy::default(),
            notifier: Box::new(LogNotifier),
            pager: Box::new(LogPager),
            observers: Vec::new(),
            resources: Resources::default(),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn CheckpointStore> {
        &self.inner.store
    }

    /// Runs a new saga under a fresh id (a UUIDv7) until it completes, is compensated, or
    /// needs a human.
    ///
    /// `Err` is for failures of the runtime itself (the store, a checkpoint that cannot be
    /// encoded); failures of steps are handled by the ladder and end in the [`Outcome`].
    pub async fn run<S: Saga>(&self, saga: S) -> Result<Outcome<S::Output>, RuntimeError> {
        self.run_with_id(SagaId::generate(), saga).await
    }

    /// Runs a saga under the caller's id, idempotently.
    ///
    /// An id that already exists never starts a second saga: a saga that is running or was
    /// interrupted by a crash is resumed (or, when this process is driving it, awaited); a
    /// finished or parked one (`Completed`, `Compensated`, `NeedsHuman`) returns its stored
    /// outcome, and only [`resume`](Self::resume) un-parks a parked one. The same id with a
    /// different input is [`RuntimeError::InputMismatch`].
    pub async fn run_with_id<S: Saga>(
        &self,
        saga_id: SagaId,
        saga: S,
    ) -> Result<Outcome<S::Output>, RuntimeError> {
        let definition = S::definition();
        let input = encode_input(&saga_id, &saga)?;
        let _active = self.claim(&saga_id).await;
        let started = Record {
            seq: 0,
            at_ms: now_ms(),
            event: Event::Started {
                saga: definition.name().to_owned(),
                version: definition.version(),
                fingerprint: definition.fingerprint().to_owned(),
            },
        };
        let new = NewSaga {
            id: saga_id.clone(),
            name: definition.name().to_owned(),
            version: definition.version(),
            fingerprint: definition.fingerprint().to_owned(),
            input: input.clone(),
            started: started.clone(),
        };
        match self.inner.store.create(new).await? {
            Created::New => {
                let mut driver =
                    Driver::new(&self.inner, saga, saga_id, input, Progress::new(definition));
                driver.observe(&started);
                driver
                    .progress
                    .apply(&started.event)
                    .map_err(|reason| driver.journal_error(reason))?;
                driver.drive().await
            }
            Created::Existing(stored) => {
                check_definition::<S>(&saga_id, &stored.summary)?;
                if stored.input != input {
                    return Err(RuntimeError::InputMismatch { saga_id });
                }
                let mut driver = Driver::restore(&self.inner, saga, saga_id, stored)?;
                if driver.progress.status() == Status::Running {
                    driver.drive().await
                } else {
                    driver.outcome()
                }
            }
        }
    }

    /// Resumes a saga after a crash, or un-parks one that needs a human: a parked saga
    /// continues from where it stopped with fresh budgets (the failed compensation is tried
    /// again, or the step after the commit point runs again). A finished saga returns its
    /// stored outcome.
    pub async fn resume<S: Saga>(
        &self,
        saga_id: &SagaId,
    ) -> Result<Outcome<S::Output>, RuntimeError> {
        let _active = self.claim(saga_id).await;
        let stored =
            self.inner
                .store
                .load(saga_id)
                .await?
                .ok_or_else(|| RuntimeError::UnknownSaga {
                    saga_id: saga_id.clone(),
                })?;
        check_definition::<S>(saga_id, &stored.summary)?;
        let saga: S =
            serde_json::from_slice(&stored.input).map_err(|e| RuntimeError::Checkpoint {
                saga_id: saga_id.clone(),
                step: "input".to_owned(),
                source: e.into(),
            })?;
        let mut driver = Driver::restore(&self.inner, saga, saga_id.clone(), stored)?;
        match driver.progress.status() {
            Status::Running => driver.drive().await,
            Status::NeedsHuman => {
                driver.record(Event::Resumed)?;
                driver.drive().await
            }
            Status::Completed | Status::Compensated => driver.outcome(),
        }
    }

    /// The journal of a saga, oldest record first.
    pub async fn journal(&self, saga_id: &SagaId) -> Result<Vec<Record>, RuntimeError> {
        let stored = self.inner.store.load(saga_id).await?;
        Ok(stored
            .ok_or_else(|| RuntimeError::UnknownSaga {
                saga_id: saga_id.clone(),
            })?
            .records)
    }

    /// Every stored saga, oldest first.
    pub async fn list(&self) -> Result<Vec<SagaSummary>, RuntimeError> {
        Ok(self.inner.store.list().await?)
    }

    /// Waits until no other task of this process drives `saga_id`, then holds it.
    async fn claim(&self, saga_id: &SagaId) -> Claim {
        let lock = {
            let mut active = lock(&self.inner.active);
            active.entry(saga_id.clone()).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        Claim {
            active: self.inner.active.clone(),
            saga_id: saga_id.clone(),
            guard: Some(guard),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The claim of this process on one saga id; released on drop.
struct Claim {
    active: Arc<Mutex<HashMap<SagaId, Arc<tokio::sync::Mutex<()>>>>>,
    saga_id: SagaId,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut active = lock(&self.active);
        // Clones of the lock are only made under the map's mutex, so a count of one means no
        // task is waiting for it.
        if active
            .get(&self.saga_id)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            active.remove(&self.saga_id);
        }
    }
}

fn check_definition<S: Saga>(saga_id: &SagaId, summary: &SagaSummary) -> Result<(), RuntimeError> {
    let definition = S::definition();
    if summary.name != definition.name() {
        return Err(RuntimeError::WrongSaga {
            saga_id: saga_id.clone(),
            stored: summary.name.clone(),
            requested: definition.name().to_owned(),
        });
    }
    if summary.fingerprint != definition.fingerprint() || summary.version != definition.version() {
        return Err(RuntimeError::DefinitionMismatch {
            saga_id: saga_id.clone(),
            name: summary.name.clone(),
            stored_version: summary.version,
            stored_fingerprint: summary.fingerprint.clone(),
            current_version: definition.version(),
            current_fingerprint: definition.fingerprint().to_owned(),
        });
    }
    Ok(())
}

/// The saga input as canonical JSON (object keys sorted), so that equal inputs give equal
/// bytes, equal idempotency keys and a reliable same-input check in every process.
fn encode_input<S: Saga>(saga_id: &SagaId, saga: &S) -> Result<Payload, RuntimeError> {
    let encode_error = |e: serde_json::Error| RuntimeError::Encode {
        saga_id: saga_id.clone(),
        step: "input".to_owned(),
        source: e.into(),
    };
    let value = serde_json::to_value(saga).map_err(encode_error)?;
    Ok(serde_json::to_vec(&value).map_err(encode_error)?.into())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Drives one saga: runs what its progress says is next, records each result and decision,
/// and commits the records to the store.
struct Driver<'r, S: Saga> {
    rt: &'r Inner,
    saga: S,
    saga_id: SagaId,
    definition: &'static Definition,
    input_digest: [u8; 32],
    progress: Progress,
    /// The typed outputs; in step with `progress.steps[i].output`.
    state: S::State,
    /// Records applied to `progress` but not yet committed.
    pending: Vec<Record>,
    span: tracing::Span,
    /// The span of the step being run, kept across its attempts.
    step_span: Option<(usize, tracing::Span)>,
}

impl<'r, S: Saga> Driver<'r, S> {
    fn new(rt: &'r Inner, saga: S, saga_id: SagaId, input: Payload, progress: Progress) -> Self {
        let definition = S::definition();
        let span = tracing::info_span!("saga", saga_id = %saga_id, saga = definition.name());
        Driver {
            rt,
            saga,
            saga_id,
            definition,
            input_digest: idempotency::input_digest(&input),
            progress,
            state: S::State::default(),
            pending: Vec::new(),
            span,
            step_span: None,
        }
    }

    /// A driver for a stored saga: its journal replayed, its outputs decoded.
    fn restore(
        rt: &'r Inner,
        saga: S,
        saga_id: SagaId,
        stored: StoredSaga,
    ) -> Result<Self, RuntimeError> {
        let definition = S::definition();
        let progress = Progress::replay(definition, &stored.records).map_err(|reason| {
            RuntimeError::Journal {
                saga_id: saga_id.clone(),
                reason,
            }
        })?;
        let mut driver = Driver::new(rt, saga, saga_id, stored.input, progress);
        for (i, step) in driver.progress.steps.iter().enumerate() {
            if let Some(output) = &step.output {
                S::__decode(i, &mut driver.state, output).map_err(|source| {
                    RuntimeError::Checkpoint {
                        saga_id: driver.saga_id.clone(),
                        step: definition.steps()[i].name().to_owned(),
                        source,
                    }
                })?;
            }
        }
        Ok(driver)
    }

    fn journal_error(&self, reason: String) -> RuntimeError {
        RuntimeError::Journal {
            saga_id: self.saga_id.clone(),
            reason,
        }
    }

    fn observe(&self, record: &Record) {
        for observer in &self.rt.observers {
            observer.observe(&Observed {
                saga_id: &self.saga_id,
                definition: self.definition,
                record,
            });
        }
    }

    /// Applies an event and queues it for the next commit.
    fn record(&mut self, event: Event) -> Result<(), RuntimeError> {
        let record = Record {
            seq: self.progress.next_seq,
            at_ms: now_ms(),
            event,
        };
        self.progress
            .apply(&record.event)
            .map_err(|reason| self.journal_error(reason))?;
        self.observe(&record);
        self.pending.push(record);
        Ok(())
    }

    /// Writes the queued records and the checkpoint they lead to, in one store transaction.
    async fn commit(&mut self) -> Result<(), RuntimeError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let records = std::mem::take(&mut self.pending);
        let checkpoint = Checkpoint {
            status: self.progress.status(),
            stage: self.progress.stage(),
        };
        self.rt
            .store
            .append(&self.saga_id, records, checkpoint)
            .await?;
        Ok(())
    }

    async fn drive(&mut self) -> Result<Outcome<S::Output>, RuntimeError> {
        let span = self.span.clone();
        async move {
            let steps = self.definition.steps().len();
            loop {
                match &self.progress.phase {
                    Phase::Forward(i) if *i >= steps => {
                        self.record(Event::Finished {
                            status: Status::Completed,
                        })?;
                        self.commit().await?;
                    }
                    Phase::Forward(i) => {
                        let i = *i;
                        self.run_step(i).await?;
                    }
                    Phase::Compensating { queue, then } => {
                        let (top, then) = (queue.last().copied(), *then);
                        if then == Then::RollBack && !self.progress.notified {
                            self.notify()?;
                        }
                        match top {
                            Some(step) => self.compensate(step).await?,
                            None => {
                                self.record(Event::Finished {
                                    status: Status::Compensated,
                                })?;
                                self.commit().await?;
                            }
                        }
                    }
                    Phase::Parked(_) => {
                        if !self.progress.paged {
                            self.page()?;
                        }
                        self.commit().await?;
                        return self.outcome();
                    }
                    Phase::Finished(_) => {
                        self.commit().await?;
                        return self.outcome();
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    fn context(
        &self,
        step: usize,
        attempt: u32,
        tier: u32,
        compensation: Option<&'static str>,
    ) -> StepContext {
        let step_def = &self.definition.steps()[step];
        let state = &self.progress.steps[step];
        let previous_error = match compensation {
            Some(_) => state.compensation_failure.clone(),
            None => state.last_failure.clone(),
        };
        // Inputs are earlier steps; compensations run in reverse order, so a step's inputs
        // are still checkpointed whenever it or its compensation runs.
        let reads = step_def
            .inputs()
            .iter()
            .filter_map(|&j| self.progress.steps[j].output.clone())
            .collect();
        StepContext {
            saga_id: self.saga_id.clone(),
            saga: self.definition.name(),
            step: step_def.name(),
            compensation,
            attempt,
            tier,
            previous_error,
            observation: self.progress.observation.clone(),
            key_source: KeySource {
                input_digest: self.input_digest,
                reads,
                generation: state.generation,
            },
            key: OnceLock::new(),
            resources: self.rt.resources.clone(),
        }
    }

    fn timeout(&self, step: usize) -> Option<Duration> {
        self.definition.steps()[step]
            .timeout()
            .or(self.rt.policy.step_timeout)
    }

    async fn run_step(&mut self, i: usize) -> Result<(), RuntimeError> {
        let step_def = &self.definition.steps()[i];
        let attempt = self.progress.steps[i].attempts + 1;
        let tier = self.progress.steps[i].tier;
        self.record(Event::AttemptStarted {
            step: i as u32,
            attempt,
            tier,
        })?;
        let cx = self.context(i, attempt, tier, None);
        let step_span = match &self.step_span {
            Some((index, span)) if *index == i => span.clone(),
            _ => {
                let span = tracing::info_span!(parent: &self.span, "step", saga_id = %self.saga_id, step = step_def.name());
                self.step_span = Some((i, span.clone()));
                span
            }
        };
        let span = tracing::info_span!(
            parent: &step_span,
            "attempt",
            step = step_def.name(),
            attempt,
            tier,
            class = tracing::field::Empty,
            level = tracing::field::Empty,
        );
        let timeout = self.timeout(i);
        let result = guarded(self.saga.__run_step(i, &cx, &mut self.state), timeout)
            .instrument(span.clone())
            .await;
        let result = result.and_then(|()| {
            self.saga.__validate(i, &self.state).map_err(|rejection| {
                StepError::logical(format!(
                    "validator `{}` rejected the output: {rejection}",
                    step_def.validate().unwrap_or("validate")
                ))
                .with_kind(FailureKind::Rejected)
            })
        });
        match result {
            Ok(()) => {
                let output = self.encode(i)?;
                span.in_scope(|| tracing::debug!("step completed"));
                self.record(Event::StepCompleted {
                    step: i as u32,
                    attempt,
                    output,
                })?;
                self.commit().await
            }
            Err(mut error) => {
                let rejected_output = match error.kind() {
                    FailureKind::Rejected => Some(self.encode(i)?),
                    _ => None,
                };
                if rejected_output.is_some() && step_def.kind() != StepKind::Compensable {
                    S::__clear(i, &mut self.state);
                }
                let next = ladder::decide(
                    &self.rt.policy,
                    self.definition,
                    &self.progress,
                    i,
                    &mut error,
                );
                let failure = Failure {
                    step: step_def.name().to_owned(),
                    compensation: None,
                    class: error.class(),
                    kind: error.kind(),
                    attempt,
                    message: error.message().to_owned(),
                };
                span.record("class", tracing::field::display(failure.class));
                span.record("level", next.level() as u8);
                span.in_scope(|| {
                    tracing::warn!(
                        class = %failure.class,
                        level = next.level() as u8,
                        error = %failure.message,
                        "step failed: {}", next.level()
                    )
                });
                let delay = match next {
                    Next::Retry { delay } => Some(delay),
                    _ => None,
                };
                self.record(Event::StepFailed {
                    step: i as u32,
                    failure,
                    rejected_output,
                    next,
                })?;
                self.commit().await?;
                backoff(delay).await;
                Ok(())
            }
        }
    }

    async fn compensate(&mut self, i: usize) -> Result<(), RuntimeError> {
        let step_def = &self.definition.steps()[i];
        let compensation = step_def.compensation().unwrap_or_default();
        let attempt = self.progress.steps[i].compensation_attempts + 1;
        self.record(Event::CompensationStarted {
            step: i as u32,
            attempt,
        })?;
        let cx = self.context(i, attempt, 0, Some(compensation));
        let span = tracing::info_span!(
            parent: &self.span,
            "compensation",
            saga_id = %self.saga_id,
            step = step_def.name(),
            compensation,
            attempt,
            class = tracing::field::Empty,
            level = tracing::field::Empty,
        );
        let timeout = self.timeout(i);
        let result = guarded(self.saga.__compensate(i, &cx, &self.state), timeout)
            .instrument(span.clone())
            .await;
        match result {
            Ok(()) => {
                span.in_scope(|| tracing::info!("compensated"));
                self.record(Event::CompensationDone {
                    step: i as u32,
                    attempt,
                })?;
                S::__clear(i, &mut self.state);
                self.commit().await
            }
            Err(error) => {
                let next = ladder::decide_compensation(&self.rt.policy, &self.progress, i, &error);
                let failure = Failure {
                    step: step_def.name().to_owned(),
                    compensation: Some(compensation.to_owned()),
                    class: error.class(),
                    kind: error.kind(),
                    attempt,
                    message: error.message().to_owned(),
                };
                let level = match next {
                    CompensationNext::Park => Some(Level::PageHuman as u8),
                    CompensationNext::Retry { .. } => None,
                };
                span.record("class", tracing::field::display(failure.class));
                if let Some(level) = level {
                    span.record("level", level);
                }
                span.in_scope(|| tracing::warn!(class = %failure.class, level, error = %failure.message, "compensation failed"));
                let delay = match next {
                    CompensationNext::Retry { delay } => Some(delay),
                    CompensationNext::Park => None,
                };
                self.record(Event::CompensationFailed {
                    step: i as u32,
                    failure,
                    next,
                })?;
                self.commit().await?;
                backoff(delay).await;
                Ok(())
            }
        }
    }

    fn encode(&self, i: usize) -> Result<Payload, RuntimeError> {
        S::__encode(i, &self.state)
            .map(Payload::from)
            .map_err(|source| RuntimeError::Encode {
                saga_id: self.saga_id.clone(),
                step: self.definition.steps()[i].name().to_owned(),
                source,
            })
    }

    fn incident(&self, level: Level) -> Result<Incident, RuntimeError> {
        let failure = self
            .progress
            .outcome_failure()
            .cloned()
            .ok_or_else(|| self.journal_error(format!("{level} without a failure")))?;
        Ok(Incident {
            saga_id: self.saga_id.clone(),
            saga: self.definition.name().to_owned(),
            level,
            failure,
            report: self.progress.report.clone(),
        })
    }

    /// Level 3: the notifier is called once per rollback (again only if a crash lost the
    /// record of the first call).
    fn notify(&mut self) -> Result<(), RuntimeError> {
        let incident = self.incident(Level::Compensate)?;
        if std::panic::catch_unwind(AssertUnwindSafe(|| self.rt.notifier.notify(&incident)))
            .is_err()
        {
            tracing::error!(saga_id = %self.saga_id, "the notifier panicked; the rollback goes on");
        }
        self.record(Event::Notified)
    }

    /// Level 4: the pager is called once per park.
    fn page(&mut self) -> Result<(), RuntimeError> {
        let incident = self.incident(Level::PageHuman)?;
        if std::panic::catch_unwind(AssertUnwindSafe(|| self.rt.pager.page(&incident))).is_err() {
            tracing::error!(saga_id = %self.saga_id, "the pager panicked; the saga stays parked");
        }
        self.record(Event::Paged)
    }

    fn outcome(&mut self) -> Result<Outcome<S::Output>, RuntimeError> {
        let saga_id = self.saga_id.clone();
        let report = self.progress.report.clone();
        let failure = || {
            self.progress
                .outcome_failure()
                .cloned()
                .ok_or_else(|| self.journal_error("no failure recorded".to_owned()))
        };
        match self.progress.status() {
            Status::Completed => {
                let state = std::mem::take(&mut self.state);
                let output = S::__finish(state).ok_or_else(|| {
                    self.journal_error("a completed saga lacks a step output".to_owned())
                })?;
                Ok(Outcome::Completed {
                    saga_id,
                    output,
                    report,
                })
            }
            Status::Compensated => Ok(Outcome::Compensated {
                saga_id,
                failure: failure()?,
                report,
            }),
            Status::NeedsHuman => Ok(Outcome::NeedsHuman {
                saga_id,
                failure: failure()?,
                report,
            }),
            Status::Running => Err(self.journal_error("the saga stopped while running".to_owned())),
        }
    }
}

/// Sleeps before a retry. A zero delay does not touch the timer, whose resolution is a
/// millisecond.
async fn backoff(delay: Option<Duration>) {
    if let Some(delay) = delay.filter(|d| !d.is_zero()) {
        tokio::time::sleep(delay).await;
    }
}

/// Runs one attempt with its timeout; a panic or a timeout becomes a logical failure.
async fn guarded(
    attempt: BoxFuture<'_, Result<(), StepError>>,
    timeout: Option<Duration>,
) -> Result<(), StepError> {
    let caught = AssertUnwindSafe(attempt).catch_unwind();
    let result = match timeout {
        Some(limit) => match tokio::time::timeout(limit, caught).await {
            Ok(result) => result,
            Err(_) => {
                return Err(StepError::logical(format!("timed out after {limit:?}"))
                    .with_kind(FailureKind::TimedOut));
            }
        },
        None => caught.await,
    };
    result.unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic with a non-text payload".to_owned());
        Err(StepError::logical(format!("panicked: {message}")).with_kind(FailureKind::Panicked))
    })
}
