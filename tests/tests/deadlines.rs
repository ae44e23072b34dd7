//! Deadlines: no saga runs or waits forever. A saga past its deadline (`#[saga(deadline = ..)]`
//! or a per-run one) goes to level 3 (its own escalation cause, `DeadlinePassed`): it is rolled
//! back, or parked for a human after its commit point. Paused clock where time matters; the
//! crash and the worker cases use the wall clock the journal keeps.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use saga_runtime::prelude::*;
use saga_runtime::{FailureKind, MemoryStore};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

#[derive(Default)]
struct Counts {
    reserve: AtomicU32,
    release: AtomicU32,
    work: AtomicU32,
    ship: AtomicU32,
}

fn counts(cx: &StepContext) -> &Arc<Counts> {
    cx.resource::<Arc<Counts>>()
}

/// A compensable step, then `work` (how it behaves is the input's), then the commit point and
/// a step after it that may hang.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    /// `hang`, `flaky` (transient, retry in 2 s), `late` (the step after the commit hangs) or `ok`.
    mode: String,
}

#[saga(deadline = "10s")]
impl Order {
    #[step(compensate = release)]
    async fn reserve(&self, cx: &StepContext) -> StepResult<u32> {
        counts(cx).reserve.fetch_add(1, Ordering::SeqCst);
        Ok(7)
    }
    async fn release(&self, cx: &StepContext, _hold: &u32) -> StepResult<()> {
        counts(cx).release.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    #[step(idempotent)]
    async fn work(&self, cx: &StepContext) -> StepResult<()> {
        counts(cx).work.fetch_add(1, Ordering::SeqCst);
        match self.mode.as_str() {
            "hang" => std::future::pending().await,
            "flaky" => Err(StepError::transient("busy").retry_after(Duration::from_secs(2))),
            _ => Ok(()),
        }
    }

    #[step(commit)]
    async fn ship(&self, cx: &StepContext) -> StepResult<()> {
        counts(cx).ship.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    #[step(idempotent)]
    async fn notify(&self, _cx: &StepContext) -> StepResult<()> {
        if self.mode == "late" && !_cx.previous_error().is_some_and(|f| f.kind == FailureKind::DeadlinePassed) {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

fn runtime(store: MemoryStore, counts: &Arc<Counts>) -> Runtime {
    Runtime::builder()
        .store(store)
        .resource(counts.clone())
        .policy(Policy { transient_retries: 100, ..Policy::default() })
        .register::<Order>()
        .build()
}

#[test]
fn the_definition_carries_its_deadline() {
    assert_eq!(Order::definition().deadline(), Some(Duration::from_secs(10)));
    assert!(Order::definition().to_string().starts_with("order v1 ("));
    assert!(Order::definition().to_string().lines().next().unwrap().ends_with(", deadline 10s"));
}

/// A step that never returns is cut off at the deadline, and the saga rolls back.
#[tokio::test(start_paused = true)]
async fn a_hung_step_is_cut_off_at_the_deadline_and_rolled_back() {
    let counts = Arc::new(Counts::default());
    let runtime = runtime(MemoryStore::new(), &counts);
    let started = Instant::now();
    let outcome = runtime.run(Order { mode: "hang".into() }).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(10), "cut off at the deadline exactly");
    assert_eq!(outcome.status(), Status::Compensated);
    let failure = outcome.failure().unwrap();
    assert_eq!((failure.step.as_str(), failure.kind), ("work", FailureKind::DeadlinePassed));
    assert!(
        failure.message.contains("ran past its deadline while attempt 1 of `work` ran: it was cut off"),
        "{failure}"
    );
    assert_eq!(outcome.report().levels(), [Level::Compensate], "its own cause, straight to level 3");
    assert_eq!(
        (
            counts.reserve.load(Ordering::SeqCst),
            counts.work.load(Ordering::SeqCst),
            counts.release.load(Ordering::SeqCst)
        ),
        (1, 1, 1)
    );
    assert_eq!(counts.ship.load(Ordering::SeqCst), 0);
    assert_eq!(outcome.report().notified, 1);
}

/// A per-run deadline, earlier than the definition's: backoffs end at the deadline, and the
/// retries left are not spent.
#[tokio::test(start_paused = true)]
async fn a_per_run_deadline_ends_the_retries_early() {
    let counts = Arc::new(Counts::default());
    let runtime = runtime(MemoryStore::new(), &counts);
    let started = Instant::now();
    let outcome = runtime.launch(Order { mode: "flaky".into() }).deadline(Duration::from_secs(5)).run().await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(5), "the third backoff was cut at the deadline");
    assert_eq!(outcome.status(), Status::Compensated);
    assert_eq!(counts.work.load(Ordering::SeqCst), 3, "attempts at 0, 2 and 4 s");
    let levels = outcome.report().levels();
    assert_eq!(levels, [Level::Retry, Level::Retry, Level::Retry, Level::Compensate]);
    let failure = outcome.failure().unwrap();
    assert_eq!(failure.kind, FailureKind::DeadlinePassed);
    assert!(failure.message.contains("before attempt 4 of `work` could start"), "{failure}");
    assert_eq!(counts.release.load(Ordering::SeqCst), 1);
}

/// Past the commit point nothing is undone: the saga is parked for a human, who resumes it
/// (lifting the deadline) once the cause is fixed.
#[tokio::test(start_paused = true)]
async fn after_the_commit_point_the_deadline_parks_the_saga() {
    let counts = Arc::new(Counts::default());
    let paged = Arc::new(AtomicU32::new(0));
    let pages = paged.clone();
    let runtime = Runtime::builder()
        .resource(counts.clone())
        .pager(move |_: &Incident| {
            pages.fetch_add(1, Ordering::SeqCst);
        })
        .register::<Order>()
        .build();
    let outcome = runtime.run(Order { mode: "late".into() }).await.unwrap();
    assert_eq!(outcome.status(), Status::NeedsHuman);
    assert_eq!(outcome.failure().unwrap().kind, FailureKind::DeadlinePassed);
    assert_eq!(outcome.report().levels(), [Level::PageHuman]);
    assert_eq!((counts.ship.load(Ordering::SeqCst), counts.release.load(Ordering::SeqCst)), (1, 0), "nothing undone");
    assert_eq!(paged.load(Ordering::SeqCst), 1);

    let resumed = runtime.resume::<Order>(outcome.saga_id()).await.unwrap();
    assert!(resumed.is_completed(), "the resume lifted the deadline: {:?}", resumed.failure());
}

/// A deadline already past when the saga starts: nothing runs but the rollback of nothing.
#[tokio::test]
async fn a_deadline_in_the_past_runs_nothing() {
    let counts = Arc::new(Counts::default());
    let runtime = runtime(MemoryStore::new(), &counts);
    let outcome = runtime
        .launch(Order { mode: "ok".into() })
        .deadline_at(SystemTime::now() - Duration::from_secs(1))
        .run()
        .await
        .unwrap();
    assert_eq!(outcome.status(), Status::Compensated);
    assert_eq!(counts.reserve.load(Ordering::SeqCst), 0, "the first step never ran");
    assert!(outcome.failure().unwrap().message.contains("before attempt 1 of `reserve` ran"));
}

/// The deadline is in the journal: a saga stopped by a crash and resumed after its deadline
/// rolls back at once.
#[tokio::test]
async fn the_deadline_survives_a_restart() {
    let counts = Arc::new(Counts::default());
    let store = MemoryStore::new();
    let first = runtime(store.clone(), &counts);
    let run =
        first.launch(Order { mode: "hang".into() }).id(SagaId::new("o-1")).deadline(Duration::from_millis(300)).run();
    assert!(tokio::time::timeout(Duration::from_millis(100), run).await.is_err(), "the crash: the run is dropped");
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let second = runtime(store, &counts);
    let outcome = second.resume::<Order>(&SagaId::new("o-1")).await.unwrap();
    assert_eq!(outcome.status(), Status::Compensated);
    let failure = outcome.failure().unwrap();
    assert_eq!(failure.kind, FailureKind::DeadlinePassed, "{failure}");
    assert_eq!(counts.release.load(Ordering::SeqCst), 1);
}

/// A worker releases a saga that must wait past its deadline; it is due again at the
/// deadline, not at the end of its wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_saga_is_due_again_at_its_deadline() {
    let counts = Arc::new(Counts::default());
    let runtime = Runtime::builder()
        .resource(counts.clone())
        .policy(Policy { transient_retries: 100, ..Policy::default() })
        .register::<Order>()
        .build();
    let worker = runtime
        .worker()
        .poll_interval(Duration::from_millis(20))
        .release_waits_over(Duration::from_millis(100))
        .spawn();
    let started = std::time::Instant::now();
    let id = runtime.launch(Order { mode: "flaky".into() }).deadline(Duration::from_millis(600)).start().await.unwrap();
    let outcome = runtime.wait::<Order>(&id).await.unwrap();
    let took = started.elapsed();
    assert_eq!(outcome.status(), Status::Compensated);
    assert_eq!(outcome.failure().unwrap().kind, FailureKind::DeadlinePassed);
    assert_eq!(counts.work.load(Ordering::SeqCst), 1, "released after the first failure, woken at the deadline");
    assert!(took >= Duration::from_millis(600) && took < Duration::from_millis(1900), "{took:?}");
    let stats = worker.shutdown().await;
    assert_eq!((stats.released, stats.finished), (1, 1));
}
