//! Ownership of sagas through the store: claims, leases, fencing epochs. Two runners of one
//! saga can never both write it; a runner whose claim was taken over (a zombie: paused or cut
//! off past its lease) is refused before any of its steps runs again; a dead runner's saga is
//! taken over when its lease ends; two runtimes of one process share no hidden state.
//!
//! Leases run on the wall clock, so these tests use real time with short leases.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use saga_runtime::BoxFuture;
use saga_runtime::prelude::*;
use saga_runtime::store::{
    Checkpoint, Claim, ClaimRequest, Claimed, Created, Fence, NewSaga, RecordRow, SagaPage, SagaQuery, StoreError,
    StoredSaga,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// What ran, by which runner: `"a:book#1"`.
#[derive(Clone, Default)]
struct Runs(Arc<Mutex<Vec<String>>>);

impl Runs {
    fn push(&self, entry: String) {
        self.0.lock().unwrap().push(entry);
    }
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// Who a runtime is, and, for a zombie, the gate its `book` step waits behind.
struct Runner {
    name: &'static str,
    runs: Runs,
    gate: Option<Arc<Notify>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Trip {
    city: String,
}

#[saga]
impl Trip {
    #[step(compensate = cancel)]
    async fn book(&self, cx: &StepContext) -> StepResult<String> {
        let runner = cx.resource::<Runner>();
        runner.runs.push(format!("{}:book#{}", runner.name, cx.attempt()));
        if let Some(gate) = &runner.gate {
            gate.notified().await;
        }
        let key = cx.idempotency_key().to_owned();
        cx.effect("reserve", async move { Ok::<_, StepError>(format!("booking-{}", &key[..8])) }).await
    }
    async fn cancel(&self, _cx: &StepContext, _booking: &String) -> StepResult<()> {
        Ok(())
    }

    #[step(idempotent)]
    async fn pay(&self, cx: &StepContext, book: &String) -> StepResult<String> {
        let runner = cx.resource::<Runner>();
        runner.runs.push(format!("{}:pay#{}", runner.name, cx.attempt()));
        Ok(format!("paid for {book}"))
    }
}

/// A store shared by several runtimes, whose lease renewals can be cut off (a network
/// partition, or a process paused past its lease).
#[derive(Clone)]
struct Partitionable {
    inner: MemoryStore,
    cut: Arc<AtomicBool>,
    /// How many saga rows listings returned.
    listed: Arc<std::sync::atomic::AtomicUsize>,
}

impl Partitionable {
    fn new(inner: MemoryStore) -> Self {
        Partitionable { inner, cut: Arc::default(), listed: Arc::default() }
    }
}

impl CheckpointStore for Partitionable {
    fn create<'a>(&'a self, saga: NewSaga) -> BoxFuture<'a, Result<Created, StoreError>> {
        self.inner.create(saga)
    }
    fn append<'a>(
        &'a self,
        id: &'a SagaId,
        fence: &'a Fence,
        records: Vec<RecordRow>,
        checkpoint: Checkpoint,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.append(id, fence, records, checkpoint)
    }
    fn load<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<StoredSaga>, StoreError>> {
        self.inner.load(id)
    }
    fn list<'a>(&'a self, query: &'a SagaQuery) -> BoxFuture<'a, Result<SagaPage, StoreError>> {
        Box::pin(async move {
            let page = self.inner.list(query).await?;
            self.listed.fetch_add(page.sagas.len(), Ordering::SeqCst);
            Ok(page)
        })
    }
    fn claim<'a>(&'a self, request: &'a ClaimRequest) -> BoxFuture<'a, Result<Vec<Claimed>, StoreError>> {
        self.inner.claim(request)
    }
    fn claim_saga<'a>(
        &'a self,
        id: &'a SagaId,
        owner: &'a str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> BoxFuture<'a, Result<Claim, StoreError>> {
        self.inner.claim_saga(id, owner, now_ms, lease_until_ms)
    }
    fn renew<'a>(&'a self, owner: &'a str, lease_until_ms: u64) -> BoxFuture<'a, Result<u64, StoreError>> {
        if self.cut.load(Ordering::SeqCst) {
            return Box::pin(std::future::ready(Err(StoreError::backend("the network is partitioned"))));
        }
        self.inner.renew(owner, lease_until_ms)
    }
    fn release<'a>(&'a self, id: &'a SagaId, fence: &'a Fence) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.release(id, fence)
    }
}

fn runtime(store: impl CheckpointStore, runner: Runner, lease: Duration) -> Runtime {
    Runtime::builder()
        .store(store)
        .resource(runner)
        .lease(lease)
        .policy(Policy {
            backoff: Backoff { initial: Duration::from_millis(1), jitter: Jitter::None, ..Backoff::default() },
            ..Policy::default()
        })
        .register::<Trip>()
        .build()
}

/// A runner whose lease ran out while its step was blocked (a zombie) is taken over; when it
/// wakes, its next write is refused (stale epoch) and it stops at once: the new owner's run is
/// the only one that completes the saga, the zombie's step never runs again, and no journal
/// record was written with the zombie's epoch after the take-over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_of_one_saga_never_both_write() {
    let shared = MemoryStore::new();
    let partitionable = Partitionable::new(shared.clone());
    let cut = partitionable.cut.clone();
    let runs = Runs::default();
    let gate = Arc::new(Notify::new());
    let lease = Duration::from_millis(200);
    let zombie = runtime(partitionable, Runner { name: "a", runs: runs.clone(), gate: Some(gate.clone()) }, lease);
    let id = SagaId::new("trip-1");
    let zombie_run = tokio::spawn({
        let (zombie, id) = (zombie.clone(), id.clone());
        async move { zombie.run_with_id(id, Trip { city: "Lisbon".into() }).await }
    });
    while runs.all().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cut.store(true, Ordering::SeqCst); // `a` can no longer renew its lease

    let successor = runtime(shared.clone(), Runner { name: "b", runs: runs.clone(), gate: None }, lease);
    let started = Instant::now();
    let outcome = successor.run_with_id(id.clone(), Trip { city: "Lisbon".into() }).await.unwrap();
    assert!(outcome.is_completed(), "{outcome:?}");
    assert!(started.elapsed() >= Duration::from_millis(100), "b waited for a's lease to end");
    assert_eq!(runs.all(), ["a:book#1", "b:book#2", "b:pay#1"]);

    gate.notify_one(); // the zombie wakes up and tries to journal its effect
    let error = zombie_run.await.unwrap().unwrap_err();
    assert!(
        matches!(error, RuntimeError::Store { error: StoreError::Fenced { epoch: 1, current: 2, .. }, .. }),
        "{error}"
    );
    assert_eq!(error.saga_id(), Some(&id));
    assert_eq!(runs.all(), ["a:book#1", "b:book#2", "b:pay#1"], "the zombie ran nothing more");

    let stored = shared.load(&id).await.unwrap().unwrap();
    let epochs: Vec<u64> = stored.records.iter().map(|r| r.epoch).collect();
    let first_b = epochs.iter().position(|&e| e == 2).expect("b wrote");
    assert!(epochs[..first_b].iter().all(|&e| e == 1) && epochs[first_b..].iter().all(|&e| e == 2), "{epochs:?}");
    let journal = successor.journal(&id).await.unwrap();
    let effects: Vec<&str> = journal
        .iter()
        .filter_map(|r| match &r.event {
            saga_runtime::journal::Event::EffectLanded { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(effects, ["reserve"], "the effect was journaled once, by b");
    let interrupted = outcome.report().escalations.iter().filter(|e| e.step == "book").count();
    assert_eq!(interrupted, 1, "b found a's attempt interrupted and ran it again under the same key");
}

/// A runner that dies (its runtime and its drive gone without releasing anything) is taken
/// over when its lease ends; before that, another runtime waits instead of driving twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_runner_is_taken_over_when_its_lease_ends() {
    let shared = MemoryStore::new();
    let runs = Runs::default();
    let gate = Arc::new(Notify::new());
    let lease = Duration::from_millis(300);
    let dead = runtime(shared.clone(), Runner { name: "a", runs: runs.clone(), gate: Some(gate) }, lease);
    let id = SagaId::new("trip-2");
    let run = Box::pin(dead.run_with_id(id.clone(), Trip { city: "Porto".into() }));
    let mut run = run;
    // Drive it until the step blocks, then lose the future without dropping it (as a killed
    // process would: no release), and the runtime with it.
    tokio::select! {
        _ = &mut run => panic!("the step is blocked"),
        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
    }
    std::mem::forget(run);
    drop(dead);
    let held = shared.load(&id).await.unwrap().unwrap().summary;
    assert!(held.owner.is_some(), "the dead runner still holds the saga");

    let heir = runtime(shared.clone(), Runner { name: "b", runs: runs.clone(), gate: None }, lease);
    let started = Instant::now();
    let recovery = heir.recover().await.unwrap();
    assert!(recovery.resumed.is_empty(), "recover does not take a saga whose lease is live");
    let outcome = heir.run_with_id(id.clone(), Trip { city: "Porto".into() }).await.unwrap();
    assert!(outcome.is_completed());
    assert!(started.elapsed() >= Duration::from_millis(150), "taken over only when the lease ended");
    assert_eq!(runs.all(), ["a:book#1", "b:book#2", "b:pay#1"]);
}

/// Two runtimes of one process on one store are two owners: the same id started on both runs
/// once, and both get its outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runtimes_of_one_process_share_no_hidden_state() {
    let shared = MemoryStore::new();
    let runs = Runs::default();
    let one = runtime(shared.clone(), Runner { name: "one", runs: runs.clone(), gate: None }, Duration::from_secs(30));
    let two = runtime(shared.clone(), Runner { name: "two", runs: runs.clone(), gate: None }, Duration::from_secs(30));
    assert_ne!(one.owner(), two.owner());
    let id = SagaId::new("trip-3");
    let trip = || Trip { city: "Faro".into() };
    let (a, b) = tokio::join!(one.run_with_id(id.clone(), trip()), two.run_with_id(id.clone(), trip()));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.output().unwrap().pay, b.output().unwrap().pay);
    let entries = runs.all();
    assert_eq!(entries.len(), 2, "book and pay ran once: {entries:?}");
    let summary = shared.load(&id).await.unwrap().unwrap().summary;
    assert_eq!((summary.status, summary.owner), (Status::Completed, None), "nobody holds a finished saga");
}

/// Recovery claims what has work to do through the store's index of due sagas and lists only
/// the unfinished ones: its cost follows the sagas in flight, not the history kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_never_reads_the_finished_history() {
    let shared = MemoryStore::new();
    let runs = Runs::default();
    let finished =
        runtime(shared.clone(), Runner { name: "a", runs: runs.clone(), gate: None }, Duration::from_secs(30));
    for n in 0..300 {
        finished.run_with_id(SagaId::new(format!("done-{n}")), Trip { city: format!("city-{n}") }).await.unwrap();
    }
    let gate = Arc::new(Notify::new());
    let crashed =
        runtime(shared.clone(), Runner { name: "a", runs: runs.clone(), gate: Some(gate) }, Duration::from_secs(30));
    let cut = tokio::time::timeout(
        Duration::from_millis(50),
        crashed.run_with_id(SagaId::new("open"), Trip { city: "Braga".into() }),
    )
    .await;
    assert!(cut.is_err());
    drop(crashed);

    let store = Partitionable::new(shared.clone());
    let listed = store.listed.clone();
    let restarted = runtime(store, Runner { name: "b", runs: runs.clone(), gate: None }, Duration::from_secs(30));
    let recovery = restarted.recover().await.unwrap();
    assert_eq!(recovery.resumed, [(SagaId::new("open"), Status::Completed)]);
    assert_eq!(listed.load(Ordering::SeqCst), 1, "only the one unfinished saga was listed, not the 300 finished ones");
}
