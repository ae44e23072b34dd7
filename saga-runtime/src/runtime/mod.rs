//! The [`Runtime`]: starts, drives, resumes and recovers sagas.

mod claims;
mod error;
mod prune;
mod recovery;
mod sweep;
mod worker;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use error::RuntimeError;
pub use recovery::Recovery;
pub use sweep::{Orphan, OrphanKind, OrphanReason, SweepOptions, SweepReport, Tagged};
pub use worker::{Worker, WorkerBuilder, WorkerStats};

use self::claims::{Claims, Held};
use crate::BoxFuture;
use crate::codec::{self, Codec, OpenedSaga};
use crate::context::Resources;
use crate::driver::{Driver, Engine};
use crate::hooks::crash_point;
use crate::id::SagaId;
use crate::journal::{Event, JournalError, Parked, Payload, Phase, Record};
use crate::limits::{Limit, Limits};
use crate::notify::{LogNotifier, LogPager, Notifier, Observer, Pager};
use crate::outcome::{Outcome, Status};
use crate::policy::Policy;
use crate::redact::Scrubber;
use crate::retention::Retention;
use crate::saga::Saga;
use crate::store::{
    Checkpoint, CheckpointStore, Created, Fence, MemoryStore, NewSaga, SagaKind, SagaPage, SagaQuery, SagaSummary,
};
use crate::writer::now_ms;

/// Starts, drives, resumes and recovers sagas. A cheap `Clone` handle: clones share the
/// store, the policy, the notifier, the pager, the registered saga types and the resources.
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

pub(crate) struct Inner {
    engine: Engine,
    registrations: Vec<Registration>,
    claims: Claims,
    /// The kinds of resource a sweep looks for orphans of.
    orphan_kinds: Vec<OrphanKind>,
    /// The fingerprints of the definitions this runtime has kept in the store already.
    defined: std::sync::Mutex<std::collections::HashSet<&'static str>>,
    /// The retention policy the background pruner applies, if any.
    retention: Option<Retention>,
    /// Whether the background pruner runs.
    pruner: std::sync::atomic::AtomicBool,
}

type Erased = fn(Runtime, SagaId, Option<String>) -> BoxFuture<'static, Result<Status, RuntimeError>>;

/// How a stored saga is driven by `recover` or a worker.
#[derive(Clone, Debug, Default)]
pub(crate) struct Attach {
    /// The claim the caller already took (a worker's batch claim), if any.
    pub(crate) fence: Option<Fence>,
    /// Release the saga for backoffs longer than this (a worker), instead of waiting them out.
    pub(crate) release_over: Option<Duration>,
}

type Attacher = fn(Runtime, SagaId, Attach) -> BoxFuture<'static, Result<Status, RuntimeError>>;

/// A saga type registered with [`RuntimeBuilder::register`]: what `recover`, workers and
/// `resolve` need to drive a stored saga of that type.
struct Registration {
    definition: &'static crate::definition::Definition,
    name: &'static str,
    version: u32,
    fingerprint: &'static str,
    /// Continues a stored saga as it is (`recover`, workers). `Running` means released.
    attach: Attacher,
    /// Marks the parked compensation as done by a human, then continues (`resolve`).
    resolve: Erased,
    /// A sweep's chore on a stored saga (a reminder, an orphan's removal).
    chore: sweep::Choreman,
    /// Rolls a stored saga back at once (`cancel`).
    cancel: Erased,
    /// Un-parks a stored saga (`resume`).
    resume: Erased,
}

fn attach_erased<S: Saga>(
    runtime: Runtime,
    saga_id: SagaId,
    how: Attach,
) -> BoxFuture<'static, Result<Status, RuntimeError>> {
    Box::pin(async move { runtime.attach::<S>(&saga_id, how).await })
}

fn resolve_erased<S: Saga>(
    runtime: Runtime,
    saga_id: SagaId,
    note: Option<String>,
) -> BoxFuture<'static, Result<Status, RuntimeError>> {
    Box::pin(async move {
        runtime.resolve_as::<S>(&saga_id, note.unwrap_or_default()).await.map(|outcome| outcome.status())
    })
}

fn resume_erased<S: Saga>(
    runtime: Runtime,
    saga_id: SagaId,
    _: Option<String>,
) -> BoxFuture<'static, Result<Status, RuntimeError>> {
    Box::pin(async move { runtime.resume::<S>(&saga_id).await.map(|outcome| outcome.status()) })
}

fn cancel_erased<S: Saga>(
    runtime: Runtime,
    saga_id: SagaId,
    reason: Option<String>,
) -> BoxFuture<'static, Result<Status, RuntimeError>> {
    Box::pin(async move { runtime.cancel_as::<S>(&saga_id, reason.unwrap_or_default()).await })
}

/// Configures a [`Runtime`]. Every setting has a default: a [`MemoryStore`],
/// [`Policy::default`], and a notifier and a pager that log through `tracing`.
pub struct RuntimeBuilder {
    store: Option<Arc<dyn CheckpointStore>>,
    policy: Policy,
    notifier: Box<dyn Notifier>,
    pager: Arc<dyn Pager>,
    observers: Vec<Box<dyn Observer>>,
    resources: Resources,
    registrations: Vec<Registration>,
    lease: Duration,
    max_payload: usize,
    scrubber: Scrubber,
    limits: Vec<(String, Limit)>,
    orphan_kinds: Vec<OrphanKind>,
    faults: Option<Arc<dyn crate::faults::Faults>>,
    retention: Option<Retention>,
}

impl RuntimeBuilder {
    /// Prunes finished sagas in the background by `retention` (see
    /// [`retention`](crate::retention)): every [`Retention::interval`], from the moment the
    /// runtime is built inside a Tokio runtime (or its first saga, recovery or worker
    /// otherwise), for as long as the runtime lives. Default: nothing is ever pruned.
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = Some(retention);
        self
    }

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
        self.pager = Arc::new(pager);
        self
    }

    /// Sees every journal record as it is written (add as many as needed).
    pub fn observer(mut self, observer: impl Observer) -> Self {
        self.observers.push(Box::new(observer));
        self
    }

    /// A value steps reach with [`StepContext::resource`](crate::StepContext::resource): a
    /// client, a pool, a fake. One per type; a second value of the same type replaces the
    /// first.
    pub fn resource<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.resources.insert(value);
        self
    }

    /// Registers a saga type, so that [`Runtime::recover`] resumes its unfinished sagas and
    /// [`Runtime::resolve`] can continue its parked ones. Register every version still in
    /// flight (each version is its own type).
    pub fn register<S: Saga>(mut self) -> Self {
        let definition = S::definition();
        self.registrations.retain(|r| r.fingerprint != definition.fingerprint() || r.name != definition.name());
        self.registrations.push(Registration {
            definition,
            name: definition.name(),
            version: definition.version(),
            fingerprint: definition.fingerprint(),
            attach: attach_erased::<S>,
            resolve: resolve_erased::<S>,
            chore: sweep::chore_erased::<S>,
            cancel: cancel_erased::<S>,
            resume: resume_erased::<S>,
        });
        self
    }

    /// How long this runtime's claim on a saga lasts without renewal (default 30 s): a worker
    /// that dies is taken over this long after its last heartbeat, and a worker paused longer
    /// than this (a zombie) loses its sagas. It renews every third of it while it drives.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(30));
        self
    }

    /// The largest step output or effect result a checkpoint takes, in bytes (default 16 MiB).
    /// A step whose output is larger fails logically, saying to keep large artefacts elsewhere
    /// and return a reference: a checkpoint of tens of megabytes holds every other saga's
    /// writes while it syncs.
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// What every text of every saga goes through before it is journaled, logged, reported or
    /// handed to the notifier or the pager (default: [`Scrubber::new`], the default rules).
    /// Add your own patterns and the secrets your process holds:
    ///
    /// ```
    /// # use saga_runtime::prelude::*;
    /// # fn main() -> Result<(), saga_runtime::redact::PatternError> {
    /// let scrubber = saga_runtime::Scrubber::builder()
    ///     .pattern("employee-id", r"EMP-\d{6}")?
    ///     .literal(std::env::var("VENDOR_KEY").unwrap_or_default())
    ///     .build();
    /// let runtime = Runtime::builder().scrubber(scrubber).build();
    /// # let _ = runtime;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Each saga's scrubber also removes, exactly, the `Redacted` values of its input.
    pub fn scrubber(mut self, scrubber: Scrubber) -> Self {
        self.scrubber = scrubber;
        self
    }

    /// The rate limit of a downstream (`"github"`, `"openai"`): every call to it, from any
    /// saga of this runtime (and, when the store shares limits, from every worker of the
    /// store), draws a token from one bucket. Steps draw one per attempt with
    /// `#[step(limit = "github")]`, or one per call with `cx.limit("github").await?`; a
    /// `retry_after` answered by a limited call pauses the downstream for all of them.
    ///
    /// ```
    /// # use saga_runtime::prelude::*;
    /// use saga_runtime::Limit;
    ///
    /// let runtime = Runtime::builder()
    ///     .limit("github", Limit::per_second(10).burst(20))
    ///     .limit("openai", Limit::per_minute(500).concurrency(8))
    ///     .build();
    /// # let _ = runtime;
    /// ```
    ///
    /// # Panics
    /// When the name is empty or has characters other than letters, digits, `-`, `_` and `.`
    /// (the names `#[step(limit = ..)]` accepts).
    pub fn limit(mut self, downstream: impl Into<String>, limit: Limit) -> Self {
        let downstream = downstream.into();
        assert!(
            !downstream.is_empty()
                && downstream.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')),
            "invalid downstream name {downstream:?}: use letters, digits, `-`, `_` or `.`, like \"github\""
        );
        self.limits.retain(|(name, _)| *name != downstream);
        self.limits.push((downstream, limit));
        self
    }

    /// A kind of resource that sagas create, which sweeps look for orphans of: resources whose
    /// saga was compensated, is parked past the grace period, or is unknown to the store (see
    /// [`Runtime::sweep`]). A second kind of the same name replaces the first.
    pub fn orphans(mut self, kind: OrphanKind) -> Self {
        self.orphan_kinds.retain(|k| k.kind() != kind.kind());
        self.orphan_kinds.push(kind);
        self
    }

    /// Faults to inject (the test harness's; see `testing::FaultMatrix`).
    #[doc(hidden)]
    pub fn __faults(mut self, faults: Arc<dyn crate::faults::Faults>) -> Self {
        self.faults = Some(faults);
        self
    }

    /// The runtime.
    pub fn build(self) -> Runtime {
        let store = self.store.unwrap_or_else(|| Arc::new(MemoryStore::new()));
        #[cfg(feature = "encryption")]
        let codec = Codec::new(store.keyring().cloned());
        #[cfg(not(feature = "encryption"))]
        let codec = Codec::new(None);
        let limits = Arc::new(Limits::new(self.limits, store.shared_limits()));
        let runtime = Runtime {
            inner: Arc::new(Inner {
                engine: Engine {
                    limits,
                    faults: self.faults,
                    cancels: Default::default(),
                    store,
                    codec,
                    policy: self.policy,
                    notifier: self.notifier,
                    pager: self.pager,
                    observers: self.observers.into(),
                    resources: Arc::new(self.resources),
                    max_payload: self.max_payload,
                    scrubber: self.scrubber,
                },
                registrations: self.registrations,
                claims: Claims::new(self.lease),
                orphan_kinds: self.orphan_kinds,
                defined: Default::default(),
                retention: self.retention,
                pruner: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        runtime.start_pruner();
        runtime
    }
}

/// A run's deadline, as given.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RunDeadline {
    /// This long after the saga's creation.
    Within(Duration),
    /// At this time.
    At(SystemTime),
}

/// A saga with its options, from [`Runtime::launch`]: run it here, or enqueue it for a
/// worker.
#[must_use = "a launch does nothing until `.run()` or `.start()` is awaited"]
pub struct Launch<'r, S> {
    runtime: &'r Runtime,
    saga: S,
    id: Option<SagaId>,
    deadline: Option<RunDeadline>,
}

impl<S: Saga> Launch<'_, S> {
    /// Its id (default: a fresh UUIDv7). The same id never starts a second saga: see
    /// [`Runtime::run_with_id`].
    pub fn id(mut self, saga_id: SagaId) -> Self {
        self.id = Some(saga_id);
        self
    }

    /// It must be over within `within` from now: past that, it is rolled back (level 3), or
    /// parked for a human after its commit point (the earlier of this and the definition's
    /// `#[saga(deadline = ..)]` counts).
    pub fn deadline(mut self, within: Duration) -> Self {
        self.deadline = Some(RunDeadline::Within(within));
        self
    }

    /// Like [`deadline`](Self::deadline), at a given time.
    pub fn deadline_at(mut self, at: SystemTime) -> Self {
        self.deadline = Some(RunDeadline::At(at));
        self
    }

    /// Runs it here until it completes, is compensated, or needs a human (see
    /// [`Runtime::run`]). A saga that exists already under the id keeps its own deadline.
    pub async fn run(self) -> Result<Outcome<S::Output>, RuntimeError> {
        let (fresh, saga_id) = match self.id {
            Some(id) => (false, id),
            None => (true, SagaId::generate()),
        };
        self.runtime.run_new(saga_id, self.saga, fresh, self.deadline).await
    }

    /// Enqueues it durably for a worker and returns its id at once (see [`Runtime::start`]).
    pub async fn start(self) -> Result<SagaId, RuntimeError> {
        let saga_id = self.id.unwrap_or_else(SagaId::generate);
        self.runtime.enqueue(saga_id, self.saga, self.deadline).await
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
            pager: Arc::new(LogPager),
            observers: Vec::new(),
            resources: Resources::default(),
            registrations: Vec::new(),
            lease: Duration::from_secs(30),
            max_payload: 16 * 1024 * 1024,
            scrubber: crate::redact::default_scrubber().clone(),
            limits: Vec::new(),
            orphan_kinds: Vec::new(),
            faults: None,
            retention: None,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.inner.engine.policy
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn CheckpointStore> {
        &self.inner.engine.store
    }

    /// This runtime's name as the owner of its claims in the store.
    pub fn owner(&self) -> &str {
        &self.inner.claims.owner
    }

    /// Runs a new saga under a fresh id (a UUIDv7) until it completes, is compensated, or
    /// needs a human.
    ///
    /// `Err` is for failures of the runtime itself (the store, a checkpoint that cannot be
    /// encoded); failures of steps are handled by the ladder and end in the [`Outcome`].
    pub async fn run<S: Saga>(&self, saga: S) -> Result<Outcome<S::Output>, RuntimeError> {
        self.run_new(SagaId::generate(), saga, true, None).await
    }

    /// A saga with options, to [`run`](Launch::run) or [`start`](Launch::start): its id, and a
    /// deadline for this run.
    ///
    /// ```
    /// # use saga_runtime::prelude::*;
    /// # use serde::{Deserialize, Serialize};
    /// # use std::time::Duration;
    /// # #[derive(Debug, Clone, Serialize, Deserialize)] struct Onboard { email: String }
    /// # #[saga] impl Onboard {
    /// #     #[step(idempotent)] async fn hello(&self, _cx: &StepContext) -> StepResult<u8> { Ok(1) }
    /// # }
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let runtime = Runtime::builder().build();
    /// let outcome = runtime
    ///     .launch(Onboard { email: "ada@example.com".into() })
    ///     .id(SagaId::new("onboard-ada"))
    ///     .deadline(Duration::from_secs(600))
    ///     .run()
    ///     .await?;
    /// # let _ = outcome; Ok(()) }
    /// ```
    pub fn launch<S: Saga>(&self, saga: S) -> Launch<'_, S> {
        Launch { runtime: self, saga, id: None, deadline: None }
    }

    /// Runs a saga under the caller's id, idempotently.
    ///
    /// An id that already exists never starts a second saga: a saga that is running or was
    /// interrupted by a crash is resumed (when another task, runtime or worker is driving it,
    /// this waits for it to finish and returns the outcome); a finished or parked one
    /// (`Completed`, `Compensated`, `NeedsHuman`) returns its stored outcome, and only
    /// [`resume`](Self::resume) un-parks a parked one. The same id with a different input is
    /// [`RuntimeError::InputMismatch`].
    ///
    /// A saga pruned by a retention policy (see [`retention`](crate::retention)) is not run
    /// again either, for as long as its tombstone is kept: with the same input this returns
    /// [`RuntimeError::Pruned`] (how it finished; its output is no longer kept), with another
    /// input [`RuntimeError::InputMismatch`].
    pub async fn run_with_id<S: Saga>(&self, saga_id: SagaId, saga: S) -> Result<Outcome<S::Output>, RuntimeError> {
        self.run_new(saga_id, saga, false, None).await
    }

    /// Creates the saga (or finds the stored one) and drives it. `fresh`: the id was just
    /// generated, so no other task of this runtime can be driving it.
    async fn run_new<S: Saga>(
        &self,
        saga_id: SagaId,
        saga: S,
        fresh: bool,
        deadline: Option<RunDeadline>,
    ) -> Result<Outcome<S::Output>, RuntimeError> {
        check_limits(S::definition(), &self.inner.engine.limits)?;
        self.start_pruner();
        self.define(S::definition()).await;
        let (input, secrets) = encode_input(&saga_id, &saga)?;
        let local = if fresh { self.inner.unshared(&saga_id) } else { self.inner.lock_locally(&saga_id).await };
        let engine = &self.inner.engine;
        let NewRecords { saga: new, records, head, clocks } =
            self.new_saga::<S>(&saga_id, &input, Some(self.inner.claims.owner.clone()), deadline)?;
        crash_point("before creating a saga");
        let created = engine.store.create(new).await.map_err(|e| RuntimeError::store(&saga_id, e))?;
        crash_point("after creating a saga");
        match created {
            Created::New(fence) => {
                let held = self.inner.hold(&saga_id, fence, local);
                let fence = held.fence.clone();
                let created =
                    crate::driver::Created { saga_id, fence, input: &input, secrets, records: &records, head, clocks };
                let mut driver = Driver::start(engine, saga, created)?;
                let outcome = driver.drive().await;
                held.release(driver.released_by_last_write()).await;
                outcome
            }
            Created::Existing(stored) => {
                drop(local);
                let stored = engine.codec.open(*stored).map_err(|e| RuntimeError::store(&saga_id, e))?;
                check_definition::<S>(&saga_id, &stored.summary)?;
                if stored.input != input {
                    return Err(RuntimeError::InputMismatch { saga_id });
                }
                if let Some(outcome) = self.settled_outcome::<S>(saga, stored)? {
                    return Ok(outcome);
                }
                let (held, mut driver) = self.claim_and_load::<S>(&saga_id).await?;
                let outcome = driver.drive().await;
                held.release(driver.released_by_last_write()).await;
                outcome
            }
            Created::Pruned(tombstone) => Err(pruned_answer::<S>(&tombstone, &input)),
        }
    }

    /// A new saga of type `S` with its first records, sealed and chained: claimed by `owner`
    /// with the start of its first attempt (a run), or unclaimed with `Started` alone (an
    /// enqueued saga, whose worker starts the attempt).
    fn new_saga<S: Saga>(
        &self,
        saga_id: &SagaId,
        input: &Payload,
        owner: Option<String>,
        deadline: Option<RunDeadline>,
    ) -> Result<NewRecords, RuntimeError> {
        let definition = S::definition();
        let codec = &self.inner.engine.codec;
        let at_ms = now_ms();
        let clocks = (at_ms, tokio::time::Instant::now());
        // The earlier of the definition's deadline and this run's.
        let by_definition = definition.deadline().map(|d| at_ms.saturating_add(d.as_millis() as u64));
        let by_run = deadline.map(|deadline| match deadline {
            RunDeadline::Within(within) => at_ms.saturating_add(within.as_millis() as u64),
            RunDeadline::At(at) => at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        });
        let deadline_ms = match (by_definition, by_run) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let started = Event::Started {
            saga: definition.name().to_owned(),
            version: definition.version(),
            fingerprint: definition.fingerprint().to_owned(),
            deadline_ms,
        };
        let mut records = vec![Record { seq: 0, at_ms, event: started }];
        if owner.is_some() {
            records.push(Record { seq: 1, at_ms, event: Event::AttemptStarted { step: 0, attempt: 1, tier: 0 } });
        }
        let sealed_input = codec.seal_input(saga_id, input);
        let mut head =
            codec::genesis(saga_id, definition.name(), definition.version(), definition.fingerprint(), &sealed_input);
        let first_step = definition.steps()[0].name();
        let epoch = u64::from(owner.is_some());
        let mut rows = Vec::with_capacity(records.len());
        for record in &records {
            let step = record.event.step().map(|_| first_step);
            let row =
                codec.seal_record(saga_id, &head, epoch, record, step).map_err(|e| RuntimeError::store(saga_id, e))?;
            head = row.hash;
            rows.push(row);
        }
        let checkpoint =
            Checkpoint { status: Status::Running, stage: first_step.to_owned(), head, due_at_ms: Some(0), at_ms };
        let lease_until_ms = self.inner.claims.lease_until();
        let saga = NewSaga {
            id: saga_id.clone(),
            name: definition.name().to_owned(),
            version: definition.version(),
            fingerprint: definition.fingerprint().to_owned(),
            input: sealed_input,
            records: rows,
            checkpoint,
            owner,
            lease_until_ms,
        };
        Ok(NewRecords { saga, records, head, clocks })
    }

    /// The outcome of a stored saga that waits for nothing but a human (finished, or parked
    /// and paged): read without claiming it.
    fn settled_outcome<S: Saga>(
        &self,
        saga: S,
        stored: OpenedSaga,
    ) -> Result<Option<Outcome<S::Output>>, RuntimeError> {
        if stored.summary.due_at_ms.is_some() {
            return Ok(None);
        }
        let fence = crate::store::Fence::new("", 0);
        let mut driver = Driver::restore(&self.inner.engine, saga, fence, stored)?;
        driver.settled_outcome()
    }

    /// Resumes a saga after a crash, or un-parks one that needs a human: a parked saga
    /// continues from where it stopped with fresh budgets (the failed compensation is tried
    /// again, or the parked step runs again). A finished saga returns its stored outcome.
    pub async fn resume<S: Saga>(&self, saga_id: &SagaId) -> Result<Outcome<S::Output>, RuntimeError> {
        let (held, mut driver) = self.claim_and_load::<S>(saga_id).await?;
        if driver.progress.status() == Status::NeedsHuman {
            driver.record(Event::Resumed)?;
        }
        let outcome = driver.drive().await;
        held.release(driver.released_by_last_write()).await;
        outcome
    }

    /// Drives a stored saga as it stands: continues a running one, pages for a parked one
    /// if nobody was paged yet, returns the outcome of a finished one.
    async fn attach<S: Saga>(&self, saga_id: &SagaId, how: Attach) -> Result<Status, RuntimeError> {
        let (held, mut driver) = match how.fence {
            Some(fence) => self.adopt_and_load::<S>(saga_id, fence).await?,
            None => self.claim_and_load::<S>(saga_id).await?,
        };
        let driven = driver.drive_until(how.release_over).await;
        held.release(driver.released_by_last_write()).await;
        Ok(driven?.map_or(Status::Running, |outcome| outcome.status()))
    }

    /// Marks the compensation a parked saga waits on as done by a human (`note` says what
    /// they did), then continues the remaining compensations. The saga's type must be
    /// registered ([`RuntimeBuilder::register`]); this is what an operator's CLI calls.
    pub async fn resolve(&self, saga_id: &SagaId, note: impl Into<String>) -> Result<Status, RuntimeError> {
        let summary = self.summary(saga_id).await?;
        let registration = self.registration(saga_id, &summary)?;
        (registration.resolve)(self.clone(), saga_id.clone(), Some(note.into())).await
    }

    /// Keeps `definition` in the store for tools (once per runtime and type; a store that
    /// cannot keep definitions, or refuses writes, is fine: tools then show step numbers).
    pub(crate) async fn define(&self, definition: &'static crate::Definition) {
        let first = self.inner.defined.lock().unwrap_or_else(|e| e.into_inner()).insert(definition.fingerprint());
        if !first {
            return;
        }
        let stored = crate::store::StoredDefinition::of(definition);
        if let Err(error) = self.inner.engine.store.save_definition(stored).await {
            tracing::debug!(saga = definition.name(), %error, "the store does not keep the saga's definition");
        }
    }

    /// Carries out the operators' requests this runtime can (`saga resume`, `resolve`,
    /// `cancel`, `sweep` leave them in the store for the process that owns the saga): those of
    /// sagas of its registered types, and sweeps. Workers do it by themselves; a process that
    /// owns an embedded store without running a worker calls this now and then. Returns the
    /// requests it carried out, with how each ended.
    pub async fn serve_requests(&self) -> Result<Vec<crate::store::Request>, RuntimeError> {
        use crate::store::{RequestAction, RequestState};
        let taken =
            self.inner.engine.store.take_requests(&self.inner.claims.owner, &self.kinds(), 16, now_ms()).await?;
        let mut served = Vec::with_capacity(taken.len());
        for mut request in taken {
            let outcome: Result<String, RuntimeError> = match (request.action, &request.saga_id) {
                (RequestAction::Sweep, _) => self.sweep().await.map(|report| report.to_string()),
                (_, None) => Err(RuntimeError::Store {
                    saga_id: None,
                    error: crate::store::StoreError::backend("the request names no saga"),
                }),
                (action, Some(saga_id)) => {
                    let note = request.note.clone();
                    let done = async {
                        let summary = self.summary(saga_id).await?;
                        let registration = self.registration(saga_id, &summary)?;
                        match action {
                            RequestAction::Resume => (registration.resume)(self.clone(), saga_id.clone(), None).await,
                            RequestAction::Resolve => self.resolve(saga_id, note).await,
                            _ => self.cancel(saga_id, note).await,
                        }
                    };
                    done.await.map(|status| match status {
                        Status::Running => format!("{}: the saga rolls back before its next step", action.as_str()),
                        status => format!("{}: the saga is {status} now", action.as_str()),
                    })
                }
            };
            let (state, result) = match outcome {
                Ok(text) => (RequestState::Done, text),
                Err(error) => (RequestState::Failed, error.to_string()),
            };
            tracing::info!(request = request.id, action = request.action.as_str(), state = state.as_str(), %result, "carried out an operator's request");
            self.inner.engine.store.finish_request(request.id, state, result.clone(), now_ms()).await?;
            request.state = state;
            request.result = Some(result);
            served.push(request);
        }
        Ok(served)
    }

    /// Cancels a saga: rolls it back now (level 3, failure kind `Cancelled`), compensating
    /// every completed step in reverse order, whatever step it stands at, as long as its commit
    /// point has not passed (after it nothing is undone: [`RuntimeError::CannotCancel`]). A saga
    /// this runtime is driving right now rolls back before its next attempt, and `Running` is
    /// returned; another saga is claimed (waiting while another process holds it), rolled back,
    /// and its final status returned. The saga's type must be registered.
    pub async fn cancel(&self, saga_id: &SagaId, reason: impl Into<String>) -> Result<Status, RuntimeError> {
        let reason = reason.into();
        let summary = self.summary(saga_id).await?;
        let registration = self.registration(saga_id, &summary)?;
        if self.inner.drives(saga_id) {
            self.inner.engine.cancels.lock().unwrap_or_else(|e| e.into_inner()).insert(saga_id.clone(), reason);
            return Ok(Status::Running);
        }
        (registration.cancel)(self.clone(), saga_id.clone(), Some(reason)).await
    }

    async fn cancel_as<S: Saga>(&self, saga_id: &SagaId, reason: String) -> Result<Status, RuntimeError> {
        let (held, mut driver) = self.claim_and_load::<S>(saga_id).await?;
        if let Some(why) = driver.progress.cannot_cancel() {
            held.release(false).await;
            return Err(RuntimeError::CannotCancel { saga_id: saga_id.clone(), reason: why });
        }
        let step = driver.progress.current_step();
        driver.record(Event::Cancelled { step: step as u32, reason })?;
        let outcome = driver.drive().await;
        held.release(driver.released_by_last_write()).await;
        outcome.map(|outcome| outcome.status())
    }

    async fn resolve_as<S: Saga>(&self, saga_id: &SagaId, note: String) -> Result<Outcome<S::Output>, RuntimeError> {
        let (held, mut driver) = self.claim_and_load::<S>(saga_id).await?;
        let step = match &driver.progress.phase {
            Phase::Parked(Parked::Compensation { queue, .. }) => match queue.last() {
                Some(&step) => step,
                None => {
                    return Err(RuntimeError::Journal {
                        saga_id: saga_id.clone(),
                        error: JournalError::new("a parked compensation with nothing to compensate"),
                    });
                }
            },
            Phase::Parked(Parked::Step { step, .. }) => {
                let step = S::definition().steps()[*step].name();
                return Err(RuntimeError::CannotResolve {
                    saga_id: saga_id.clone(),
                    reason: format!(
                        "it is parked at step `{step}`, not on a compensation: fix the cause and `resume` it to run `{step}` again"
                    ),
                });
            }
            _ => {
                return Err(RuntimeError::CannotResolve {
                    saga_id: saga_id.clone(),
                    reason: format!("it is {}, not waiting for a human", driver.progress.status()),
                });
            }
        };
        driver.record(Event::Resolved { step: step as u32, note })?;
        let outcome = driver.drive().await;
        held.release(driver.released_by_last_write()).await;
        outcome
    }

    fn registration(&self, saga_id: &SagaId, summary: &SagaSummary) -> Result<&Registration, RuntimeError> {
        let same_name: Vec<&Registration> =
            self.inner.registrations.iter().filter(|r| r.name == summary.name).collect();
        if let Some(registration) = same_name.iter().find(|r| r.fingerprint == summary.fingerprint) {
            return Ok(registration);
        }
        if same_name.is_empty() {
            return Err(RuntimeError::Unregistered { saga_id: saga_id.clone(), name: summary.name.clone() });
        }
        let registered: Vec<String> =
            same_name.iter().map(|r| format!("version {} (fingerprint {})", r.version, r.fingerprint)).collect();
        Err(RuntimeError::NoMatchingVersion {
            saga_id: saga_id.clone(),
            name: summary.name.clone(),
            stored_version: summary.version,
            stored_fingerprint: summary.fingerprint.clone(),
            registered: registered.join(", "),
        })
    }

    /// The kinds of saga this runtime drives: what it claims.
    fn kinds(&self) -> Vec<SagaKind> {
        self.inner
            .registrations
            .iter()
            .map(|r| SagaKind { name: r.name.to_owned(), fingerprint: r.fingerprint.to_owned() })
            .collect()
    }

    async fn summary(&self, saga_id: &SagaId) -> Result<SagaSummary, RuntimeError> {
        Ok(self.load(saga_id).await?.summary)
    }

    /// Loads, checks and opens a stored saga.
    async fn load(&self, saga_id: &SagaId) -> Result<OpenedSaga, RuntimeError> {
        let engine = &self.inner.engine;
        let stored = engine.store.load(saga_id).await.map_err(|e| RuntimeError::store(saga_id, e))?;
        let Some(stored) = stored else { return Err(self.missing(saga_id).await) };
        engine.codec.open(stored).map_err(|e| RuntimeError::store(saga_id, e))
    }

    /// Claims a stored saga (waiting while another runtime or worker holds it), then loads it
    /// as it is now and rebuilds its driver.
    async fn claim_and_load<S: Saga>(&self, saga_id: &SagaId) -> Result<(Held, Driver<'_, S>), RuntimeError> {
        check_limits(S::definition(), &self.inner.engine.limits)?;
        let held = match self.inner.claim(saga_id).await {
            Ok(held) => held,
            Err(RuntimeError::UnknownSaga { saga_id }) => return Err(self.missing(&saga_id).await),
            Err(error) => return Err(error),
        };
        self.load_held::<S>(saga_id, held).await
    }

    /// Like [`claim_and_load`](Self::claim_and_load) for a saga this runtime claimed already.
    async fn adopt_and_load<S: Saga>(
        &self,
        saga_id: &SagaId,
        fence: Fence,
    ) -> Result<(Held, Driver<'_, S>), RuntimeError> {
        check_limits(S::definition(), &self.inner.engine.limits)?;
        let local = self.inner.lock_locally(saga_id).await;
        let held = self.inner.hold(saga_id, fence, local);
        self.load_held::<S>(saga_id, held).await
    }

    async fn load_held<S: Saga>(&self, saga_id: &SagaId, held: Held) -> Result<(Held, Driver<'_, S>), RuntimeError> {
        let stored = self.load(saga_id).await?;
        check_definition::<S>(saga_id, &stored.summary)?;
        let saga: S = serde_json::from_slice(&stored.input).map_err(|e| RuntimeError::Checkpoint {
            saga_id: saga_id.clone(),
            step: "input".to_owned(),
            error: e.into(),
        })?;
        let driver = Driver::restore(&self.inner.engine, saga, held.fence.clone(), stored)?;
        Ok((held, driver))
    }

    /// The journal of a saga, oldest record first, checked against its hash chain.
    pub async fn journal(&self, saga_id: &SagaId) -> Result<Vec<Record>, RuntimeError> {
        Ok(self.load(saga_id).await?.records)
    }

    /// Every stored saga, oldest first. This reads every row: prefer
    /// [`list_page`](Self::list_page) on a store that keeps history.
    pub async fn list(&self) -> Result<Vec<SagaSummary>, RuntimeError> {
        let mut all = Vec::new();
        let mut query = SagaQuery::new().limit(1_000);
        loop {
            let page = self.inner.engine.store.list(&query).await?;
            all.extend(page.sagas);
            match page.next {
                Some(cursor) => query = query.after(cursor),
                None => return Ok(all),
            }
        }
    }

    /// One page of the stored sagas that pass `query`'s filters (status, name, creation time),
    /// in its order; pass [`SagaPage::next`] to [`SagaQuery::after`] for the next page.
    pub async fn list_page(&self, query: &SagaQuery) -> Result<SagaPage, RuntimeError> {
        Ok(self.inner.engine.store.list(query).await?)
    }
}

/// A new saga for the store, with the records it starts with and the head of their chain.
struct NewRecords {
    saga: NewSaga,
    records: Vec<Record>,
    head: crate::store::ChainHash,
    /// The wall clock of the records and tokio's clock, read together.
    clocks: (u64, tokio::time::Instant),
}

/// Every downstream the definition's steps draw from must be declared on the runtime: a
/// misspelt or forgotten limit is a configuration error found before anything runs.
fn check_limits(definition: &crate::Definition, limits: &Limits) -> Result<(), RuntimeError> {
    for step in definition.steps() {
        if let Some(downstream) = step.limit()
            && !limits.knows(downstream)
        {
            let declared = limits.names();
            return Err(RuntimeError::UnknownLimit {
                saga: definition.name().to_owned(),
                step: step.name().to_owned(),
                downstream: downstream.to_owned(),
                declared: if declared.is_empty() {
                    "it declares none".to_owned()
                } else {
                    format!("it declares {}", declared.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "))
                },
            });
        }
    }
    Ok(())
}

/// What `run_with_id` (or `start_with_id`) answers for the id of a pruned saga: it never
/// starts a second saga. The same type and input: [`RuntimeError::Pruned`] with how it
/// finished; another input: [`RuntimeError::InputMismatch`]; another type or version: as for a
/// stored saga.
fn pruned_answer<S: Saga>(tombstone: &crate::store::Tombstone, input: &[u8]) -> RuntimeError {
    let saga_id = tombstone.id.clone();
    let mut summary = SagaSummary::new(saga_id.clone(), &tombstone.name, tombstone.version, &tombstone.fingerprint);
    summary.status = tombstone.status;
    if let Err(error) = check_definition::<S>(&saga_id, &summary) {
        return error;
    }
    if crate::idempotency::input_digest(input) != tombstone.input_hash {
        return RuntimeError::InputMismatch { saga_id };
    }
    RuntimeError::Pruned {
        saga_id,
        status: tombstone.status,
        finished_at_ms: tombstone.finished_at_ms,
        pruned_at_ms: tombstone.pruned_at_ms,
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

/// The saga input as canonical JSON (object keys sorted at every depth), so that equal inputs
/// give equal bytes, equal idempotency keys and a reliable same-input check in every process,
/// whatever the order of a map's keys.
/// Also returns the values of its `Redacted` fields, which the saga's scrubber removes from
/// every text of the saga.
fn encode_input<S: Saga>(saga_id: &SagaId, saga: &S) -> Result<(Payload, Vec<String>), RuntimeError> {
    let encode_error = |e: serde_json::Error| RuntimeError::Encode {
        saga_id: saga_id.clone(),
        step: "input".to_owned(),
        error: e.into(),
    };
    let (value, secrets) = crate::redact::collect_redacted(|| serde_json::to_value(saga));
    let value = canonical(value.map_err(encode_error)?);
    Ok((serde_json::to_vec(&value).map_err(encode_error)?.into(), secrets))
}

fn canonical(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(String, serde_json::Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, canonical(v))).collect())
        }
        serde_json::Value::Array(items) => serde_json::Value::Array(items.into_iter().map(canonical).collect()),
        other => other,
    }
}
