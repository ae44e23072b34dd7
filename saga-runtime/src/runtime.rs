//! The [`Runtime`]: starts, drives, resumes and recovers sagas.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use crate::context::Resources;
use crate::driver::Driver;
use crate::error::RuntimeError;
use crate::hooks::crash_point;
use crate::id::SagaId;
use crate::journal::{Event, Parked, Payload, Phase, Record};
use crate::notify::{LogNotifier, LogPager, Notifier, Observer, Pager};
use crate::outcome::{Outcome, Status};
use crate::policy::Policy;
use crate::saga::{BoxFuture, Saga};
use crate::store::{CheckpointStore, Created, MemoryStore, NewSaga, SagaSummary, StoredSaga};
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
    pub(crate) store: Arc<dyn CheckpointStore>,
    pub(crate) policy: Policy,
    pub(crate) notifier: Box<dyn Notifier>,
    pub(crate) pager: Box<dyn Pager>,
    pub(crate) observers: Arc<[Box<dyn Observer>]>,
    pub(crate) resources: Arc<Resources>,
    registrations: Vec<Registration>,
}

type Erased = fn(Runtime, SagaId, Option<String>) -> BoxFuture<'static, Result<Status, RuntimeError>>;

/// A saga type registered with [`RuntimeBuilder::register`]: what `recover` and `resolve`
/// need to drive a stored saga of that type.
struct Registration {
    name: &'static str,
    version: u32,
    fingerprint: &'static str,
    /// Continues a stored saga as it is (`recover`).
    attach: Erased,
    /// Marks the parked compensation as done by a human, then continues (`resolve`).
    resolve: Erased,
}

fn attach_erased<S: Saga>(
    runtime: Runtime,
    saga_id: SagaId,
    _: Option<String>,
) -> BoxFuture<'static, Result<Status, RuntimeError>> {
    Box::pin(async move { runtime.attach::<S>(&saga_id).await.map(|outcome| outcome.status()) })
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

/// Configures a [`Runtime`]. Every setting has a default: a [`MemoryStore`],
/// [`Policy::default`], and a notifier and a pager that log through `tracing`.
pub struct RuntimeBuilder {
    store: Option<Arc<dyn CheckpointStore>>,
    policy: Policy,
    notifier: Box<dyn Notifier>,
    pager: Box<dyn Pager>,
    observers: Vec<Box<dyn Observer>>,
    resources: Resources,
    registrations: Vec<Registration>,
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
            name: definition.name(),
            version: definition.version(),
            fingerprint: definition.fingerprint(),
            attach: attach_erased::<S>,
            resolve: resolve_erased::<S>,
        });
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
                observers: self.observers.into(),
                resources: Arc::new(self.resources),
                registrations: self.registrations,
            }),
        }
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime::builder().build()
    }
}

/// What [`Runtime::recover`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Recovery {
    /// Sagas that were running (interrupted) and were driven to their outcome, with it.
    pub resumed: Vec<(SagaId, Status)>,
    /// Sagas parked for a human, left parked (and paged, if a stop had prevented it).
    pub parked: Vec<SagaId>,
    /// Sagas that could not be driven, with the reason (a definition mismatch, a store error).
    pub failed: Vec<(SagaId, RuntimeError)>,
    /// Unfinished sagas of types this runtime did not register.
    pub unregistered: Vec<SagaSummary>,
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
            registrations: Vec::new(),
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
    /// interrupted by a crash is resumed (when a task of this process is driving it, this
    /// waits for that task and returns its outcome); a finished or parked one (`Completed`,
    /// `Compensated`, `NeedsHuman`) returns its stored outcome, and only
    /// [`resume`](Self::resume) un-parks a parked one. The same id with a different input is
    /// [`RuntimeError::InputMismatch`].
    pub async fn run_with_id<S: Saga>(&self, saga_id: SagaId, saga: S) -> Result<Outcome<S::Output>, RuntimeError> {
        let definition = S::definition();
        let input = encode_input(&saga_id, &saga)?;
        let _claim = Claim::acquire(&saga_id).await;
        let at_ms = now_ms();
        let records = vec![
            Record {
                seq: 0,
                at_ms,
                event: Event::Started {
                    saga: definition.name().to_owned(),
                    version: definition.version(),
                    fingerprint: definition.fingerprint().to_owned(),
                },
            },
            Record { seq: 1, at_ms, event: Event::AttemptStarted { step: 0, attempt: 1, tier: 0 } },
        ];
        let new = NewSaga {
            id: saga_id.clone(),
            name: definition.name().to_owned(),
            version: definition.version(),
            fingerprint: definition.fingerprint().to_owned(),
            input: input.clone(),
            records: records.clone(),
            stage: definition.steps()[0].name().to_owned(),
            definition,
        };
        crash_point("before creating a saga");
        let created = self.inner.store.create(new).await?;
        crash_point("after creating a saga");
        match created {
            Created::New => Driver::start(&self.inner, saga, saga_id, &input, &records)?.drive().await,
            Created::Existing(stored) => {
                check_definition::<S>(&saga_id, &stored.summary)?;
                if stored.input != input {
                    return Err(RuntimeError::InputMismatch { saga_id });
                }
                Driver::restore(&self.inner, saga, saga_id, stored)?.drive().await
            }
        }
    }

    /// Resumes a saga after a crash, or un-parks one that needs a human: a parked saga
    /// continues from where it stopped with fresh budgets (the failed compensation is tried
    /// again, or the step after the commit point runs again). A finished saga returns its
    /// stored outcome.
    pub async fn resume<S: Saga>(&self, saga_id: &SagaId) -> Result<Outcome<S::Output>, RuntimeError> {
        let _claim = Claim::acquire(saga_id).await;
        let mut driver = self.load::<S>(saga_id).await?;
        if driver.progress.status() == Status::NeedsHuman {
            driver.record(Event::Resumed)?;
        }
        driver.drive().await
    }

    /// Drives a stored saga as it stands: continues a running one, pages for a parked one
    /// if nobody was paged yet, returns the outcome of a finished one.
    async fn attach<S: Saga>(&self, saga_id: &SagaId) -> Result<Outcome<S::Output>, RuntimeError> {
        let _claim = Claim::acquire(saga_id).await;
        self.load::<S>(saga_id).await?.drive().await
    }

    /// Marks the compensation a parked saga waits on as done by a human (`note` says what
    /// they did), then continues the remaining compensations. The saga's type must be
    /// registered ([`RuntimeBuilder::register`]); this is what an operator's CLI calls.
    pub async fn resolve(&self, saga_id: &SagaId, note: impl Into<String>) -> Result<Status, RuntimeError> {
        let summary = self.summary(saga_id).await?;
        let registration = self.registration(saga_id, &summary)?;
        (registration.resolve)(self.clone(), saga_id.clone(), Some(note.into())).await
    }

    async fn resolve_as<S: Saga>(&self, saga_id: &SagaId, note: String) -> Result<Outcome<S::Output>, RuntimeError> {
        let _claim = Claim::acquire(saga_id).await;
        let mut driver = self.load::<S>(saga_id).await?;
        let step = match &driver.progress.phase {
            Phase::Parked(Parked::Compensation { queue, .. }) => *queue.last().expect("a parked compensation"),
            Phase::Parked(Parked::AfterCommit { step, .. }) => {
                let step = S::definition().steps()[*step].name();
                return Err(RuntimeError::CannotResolve {
                    saga_id: saga_id.clone(),
                    reason: format!(
                        "it is parked at step `{step}` after the commit point, not on a compensation: fix the cause and `resume` it to run `{step}` again"
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
        driver.drive().await
    }

    /// What a restarted worker calls first: resumes every unfinished saga of the registered
    /// types (concurrently) and pages for parked ones whose page a stop prevented. Parked
    /// sagas stay parked until [`resume`](Self::resume) or [`resolve`](Self::resolve).
    pub async fn recover(&self) -> Result<Recovery, RuntimeError> {
        let mut recovery = Recovery::default();
        let mut jobs = Vec::new();
        for summary in self.inner.store.list().await? {
            if matches!(summary.status, Status::Completed | Status::Compensated) {
                continue;
            }
            let id = summary.id.clone();
            match self.registration(&id, &summary) {
                Ok(registration) => {
                    let job = (registration.attach)(self.clone(), id.clone(), None);
                    jobs.push(async move { (id, job.await) });
                }
                Err(RuntimeError::Unregistered { .. }) => recovery.unregistered.push(summary),
                Err(error) => recovery.failed.push((id, error)),
            }
        }
        for (id, result) in futures::future::join_all(jobs).await {
            match result {
                Ok(Status::NeedsHuman) => recovery.parked.push(id),
                Ok(status) => recovery.resumed.push((id, status)),
                Err(error) => recovery.failed.push((id, error)),
            }
        }
        Ok(recovery)
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

    async fn summary(&self, saga_id: &SagaId) -> Result<SagaSummary, RuntimeError> {
        let stored = self.inner.store.load(saga_id).await?;
        Ok(stored.ok_or_else(|| RuntimeError::UnknownSaga { saga_id: saga_id.clone() })?.summary)
    }

    async fn load<S: Saga>(&self, saga_id: &SagaId) -> Result<Driver<'_, S>, RuntimeError> {
        let stored: StoredSaga = self
            .inner
            .store
            .load(saga_id)
            .await?
            .ok_or_else(|| RuntimeError::UnknownSaga { saga_id: saga_id.clone() })?;
        check_definition::<S>(saga_id, &stored.summary)?;
        let saga: S = serde_json::from_slice(&stored.input).map_err(|e| RuntimeError::Checkpoint {
            saga_id: saga_id.clone(),
            step: "input".to_owned(),
            source: e.into(),
        })?;
        Driver::restore(&self.inner, saga, saga_id.clone(), stored)
    }

    /// The journal of a saga, oldest record first.
    pub async fn journal(&self, saga_id: &SagaId) -> Result<Vec<Record>, RuntimeError> {
        let stored = self.inner.store.load(saga_id).await?;
        Ok(stored.ok_or_else(|| RuntimeError::UnknownSaga { saga_id: saga_id.clone() })?.records)
    }

    /// Every stored saga, oldest first.
    pub async fn list(&self) -> Result<Vec<SagaSummary>, RuntimeError> {
        Ok(self.inner.store.list().await?)
    }
}

type Claims = Mutex<HashMap<SagaId, Arc<tokio::sync::Mutex<()>>>>;

/// The sagas driven by this process, one lock per id: a saga is never driven by two tasks of
/// one process at once, whichever `Runtime` they use. (Processes are kept apart by the
/// store: `SqliteStore` admits one writer process per file.)
static CLAIMS: LazyLock<Claims> = LazyLock::new(Claims::default);

fn lock_claims() -> std::sync::MutexGuard<'static, HashMap<SagaId, Arc<tokio::sync::Mutex<()>>>> {
    CLAIMS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The claim of this process on one saga id; released on drop.
struct Claim {
    saga_id: SagaId,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Claim {
    /// Waits until no other task of this process drives `saga_id`, then holds it.
    async fn acquire(saga_id: &SagaId) -> Claim {
        let lock = lock_claims().entry(saga_id.clone()).or_default().clone();
        let guard = lock.lock_owned().await;
        Claim { saga_id: saga_id.clone(), guard: Some(guard) }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut claims = lock_claims();
        // Clones of the lock are only made under the map's mutex, so a count of one means no
        // task is waiting for it.
        if claims.get(&self.saga_id).is_some_and(|l| Arc::strong_count(l) == 1) {
            claims.remove(&self.saga_id);
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

/// The saga input as canonical JSON (object keys sorted at every depth), so that equal inputs
/// give equal bytes, equal idempotency keys and a reliable same-input check in every process,
/// whatever the order of a map's keys.
fn encode_input<S: Saga>(saga_id: &SagaId, saga: &S) -> Result<Payload, RuntimeError> {
    let encode_error = |e: serde_json::Error| RuntimeError::Encode {
        saga_id: saga_id.clone(),
        step: "input".to_owned(),
        source: e.into(),
    };
    let value = canonical(serde_json::to_value(saga).map_err(encode_error)?);
    Ok(serde_json::to_vec(&value).map_err(encode_error)?.into())
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
