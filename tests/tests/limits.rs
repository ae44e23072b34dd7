//! Rate limits keyed by downstream: the seed's "five agents each retrying three times against
//! the same overloaded API = 15× load". Five sagas, each allowed three transient retries, call
//! a fake API that counts requests per window and answers 429 above its quota: with a limit
//! the API never sees more than its quota plus the burst in any window (on one process, on a
//! paused clock, and with three workers sharing PostgreSQL); without it, the same test shows
//! the hammering. Also: a `retry_after` pauses the downstream for every saga, a concurrency cap
//! holds, compensations draw tokens too, waits are journaled and spend no budget, and an
//! undeclared downstream is a configuration error, not a ladder.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::pg::ScratchDb;
use saga_runtime::prelude::*;
use saga_runtime::store::PostgresStore;
use saga_runtime::{FailureKind, Limit};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// A fake API with a quota of `quota` calls per fixed `window`; above it, 429 with the time
/// until the window ends.
struct Api {
    quota: usize,
    window: Duration,
    started: Instant,
    /// When each call came, since `started`.
    calls: Mutex<Vec<Duration>>,
    rejected: AtomicU32,
    /// Calls still to answer with 429 and this wait, whatever the quota (an outage).
    outage: Mutex<Vec<Duration>>,
    in_flight: AtomicU32,
    max_in_flight: AtomicU32,
}

impl Api {
    fn new(quota: usize, window: Duration) -> Arc<Api> {
        Arc::new(Api {
            quota,
            window,
            started: Instant::now(),
            calls: Mutex::default(),
            rejected: AtomicU32::new(0),
            outage: Mutex::default(),
            in_flight: AtomicU32::new(0),
            max_in_flight: AtomicU32::new(0),
        })
    }

    fn call(&self) -> Result<(), Duration> {
        let at = self.started.elapsed();
        let index = at.as_nanos() / self.window.as_nanos();
        let mut calls = self.calls.lock().unwrap();
        let in_window = calls.iter().filter(|c| c.as_nanos() / self.window.as_nanos() == index).count();
        calls.push(at);
        if let Some(wait) = self.outage.lock().unwrap().pop() {
            self.rejected.fetch_add(1, Ordering::SeqCst);
            return Err(wait);
        }
        if in_window >= self.quota {
            self.rejected.fetch_add(1, Ordering::SeqCst);
            let window_end = self.window * (index as u32 + 1);
            return Err(window_end - at);
        }
        Ok(())
    }

    fn calls(&self) -> Vec<Duration> {
        self.calls.lock().unwrap().clone()
    }

    /// The most calls in any window of the API's length (sliding, not just the fixed ones).
    fn max_in_any_window(&self) -> usize {
        let calls = self.calls();
        calls
            .iter()
            .map(|start| calls.iter().filter(|c| **c >= *start && **c < *start + self.window).count())
            .max()
            .unwrap_or(0)
    }
}

fn api(cx: &StepContext) -> &Arc<Api> {
    cx.resource::<Arc<Api>>()
}

fn call_api(cx: &StepContext) -> StepResult<()> {
    api(cx).call().map_err(|wait| StepError::transient("429 Too Many Requests").retry_after(wait))
}

/// One call to the API per attempt, drawn from the `api` limit.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Limited {
    n: u32,
}

#[saga]
impl Limited {
    #[step(idempotent, limit = "api")]
    async fn call(&self, cx: &StepContext) -> StepResult<u32> {
        call_api(cx)?;
        Ok(self.n)
    }
}

/// The same call, with no limit: what agents do today.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Unlimited {
    n: u32,
}

#[saga]
impl Unlimited {
    #[step(idempotent)]
    async fn call(&self, cx: &StepContext) -> StepResult<u32> {
        call_api(cx)?;
        Ok(self.n)
    }
}

/// Three transient retries each, backoff no longer than the API's `retry_after`.
fn policy() -> Policy {
    Policy {
        transient_retries: 3,
        backoff: Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(10),
            jitter: Jitter::None,
            ..Backoff::default()
        },
        ..Policy::default()
    }
}

/// What the API saw.
struct Load {
    calls: usize,
    rejected: u32,
    max_in_window: usize,
    completed: usize,
}

impl Load {
    fn of(api: &Api, completed: usize) -> Load {
        Load {
            calls: api.calls().len(),
            rejected: api.rejected.load(Ordering::SeqCst),
            max_in_window: api.max_in_any_window(),
            completed,
        }
    }

    fn line(&self, label: &str, quota: usize) -> String {
        format!(
            "{label}: {} API calls for 5 sagas ({} answered 429), at most {} in one window against a quota of {quota} ({:.0}×), {} of 5 sagas completed",
            self.calls,
            self.rejected,
            self.max_in_window,
            self.max_in_window as f64 / quota as f64,
            self.completed
        )
    }
}

#[tokio::test(start_paused = true)]
async fn five_sagas_draw_from_one_bucket_instead_of_hammering_the_api() {
    // With the limit: one call a second, as the API allows.
    let limited_api = Api::new(1, Duration::from_secs(1));
    let runtime = Runtime::builder()
        .policy(policy())
        .limit("api", Limit::per_second(1).burst(1))
        .resource(limited_api.clone())
        .build();
    let outcomes = futures::future::join_all((0..5).map(|n| runtime.run(Limited { n }))).await;
    let outcomes: Vec<_> = outcomes.into_iter().map(Result::unwrap).collect();
    let with = Load::of(&limited_api, outcomes.iter().filter(|o| o.is_completed()).count());
    assert_eq!(with.completed, 5, "every saga completed");
    assert_eq!((with.calls, with.rejected), (5, 0), "one call per saga, none refused");
    assert!(with.max_in_window <= 1 + 1, "never more than quota + burst in a window: {}", with.max_in_window);
    for outcome in &outcomes {
        let report = outcome.report();
        assert_eq!(report.attempts.len(), 1, "waiting for a token is not a retry");
        assert!(report.escalations.is_empty(), "and not a failure: {:?}", report.escalations);
    }
    let mut waits: Vec<u64> =
        outcomes.iter().flat_map(|o| o.report().throttled.iter().map(|t| t.waited.as_millis() as u64)).collect();
    waits.sort_unstable();
    assert_eq!(waits, [1000, 2000, 3000, 4000], "four sagas waited their turn, a second apart");
    assert!(outcomes.iter().flat_map(|o| &o.report().throttled).all(|t| t.downstream == "api" && !t.compensation));

    // Without: every saga calls at once, and every refused one retries at the window's end.
    let unlimited_api = Api::new(1, Duration::from_secs(1));
    let runtime = Runtime::builder().policy(policy()).resource(unlimited_api.clone()).build();
    let outcomes = futures::future::join_all((0..5).map(|n| runtime.run(Unlimited { n }))).await;
    let outcomes: Vec<_> = outcomes.into_iter().map(Result::unwrap).collect();
    let without = Load::of(&unlimited_api, outcomes.iter().filter(|o| o.is_completed()).count());
    assert_eq!((without.calls, without.rejected), (14, 10), "5 + 4 + 3 + 2 calls, each window refusing all but one");
    assert_eq!(without.max_in_window, 5, "all five agents in the first window");
    assert_eq!(without.completed, 4, "the last one ran out of retries and was rolled back");
    eprintln!("{}", with.line("with `limit = \"api\"` (1/s, burst 1), one process", 1));
    eprintln!("{}", without.line("without a limit, one process", 1));
}

/// A saga that fails once with a long `retry_after` (an outage) pauses the downstream for the
/// others, which wait for the pause instead of calling into the outage.
#[tokio::test(start_paused = true)]
async fn a_retry_after_pauses_the_downstream_for_every_saga() {
    let api = Api::new(100, Duration::from_secs(1));
    api.outage.lock().unwrap().push(Duration::from_secs(2));
    let runtime =
        Runtime::builder().policy(policy()).limit("api", Limit::per_second(100)).resource(api.clone()).build();
    let first = runtime.run(Limited { n: 0 });
    let others = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        futures::future::join_all((1..4).map(|n| runtime.run(Limited { n }))).await
    };
    let (first, others) = tokio::join!(first, others);
    let first = first.unwrap();
    assert!(first.is_completed());
    assert_eq!(first.report().escalations.len(), 1, "the 429 was one transient failure");
    let calls = api.calls();
    assert_eq!(calls.len(), 5, "one refused call, then one per saga");
    assert!(
        calls[1..].iter().all(|c| *c >= Duration::from_secs(2)),
        "no call while the downstream was paused: {calls:?}"
    );
    for outcome in others {
        let outcome = outcome.unwrap();
        assert!(outcome.is_completed());
        assert!(outcome.report().escalations.is_empty(), "the others never failed");
        let waited: Duration = outcome.report().throttled.iter().map(|t| t.waited).sum();
        assert!(waited >= Duration::from_millis(1900), "they waited out the pause: {waited:?}");
    }
}

/// A saga whose step holds the API for a while, to watch a concurrency cap.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Slow {
    n: u32,
}

#[saga]
impl Slow {
    #[step(idempotent, limit = "api")]
    async fn call(&self, cx: &StepContext) -> StepResult<u32> {
        let api = api(cx);
        let now = api.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        api.max_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        api.in_flight.fetch_sub(1, Ordering::SeqCst);
        Ok(self.n)
    }
}

#[tokio::test(start_paused = true)]
async fn a_concurrency_cap_holds_across_sagas() {
    let api = Api::new(100, Duration::from_secs(1));
    let runtime = Runtime::builder().limit("api", Limit::per_second(1000).concurrency(2)).resource(api.clone()).build();
    let started = Instant::now();
    let outcomes = futures::future::join_all((0..6).map(|n| runtime.run(Slow { n }))).await;
    assert!(outcomes.iter().all(|o| o.as_ref().unwrap().is_completed()));
    assert_eq!(api.max_in_flight.load(Ordering::SeqCst), 2, "never more than two calls at once");
    assert_eq!(started.elapsed(), Duration::from_millis(300), "six calls of 100 ms, two at a time");
}

/// A compensable step whose compensation calls the same API, and a later step that fails for
/// good: the rollback draws its token too.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Rollback;

#[saga]
impl Rollback {
    #[step(compensate = undo, limit = "api")]
    async fn create(&self, cx: &StepContext) -> StepResult<u32> {
        call_api(cx)?;
        Ok(1)
    }
    async fn undo(&self, cx: &StepContext, _created: &u32) -> StepResult<()> {
        call_api(cx)
    }

    #[step(idempotent)]
    async fn check(&self, _cx: &StepContext, create: &u32) -> StepResult<()> {
        assert_eq!(*create, 1);
        Err(StepError::logical("the result is wrong"))
    }
}

#[tokio::test(start_paused = true)]
async fn compensations_draw_from_the_same_bucket() {
    let api = Api::new(100, Duration::from_secs(1));
    let runtime = Runtime::builder()
        .policy(Policy { reprompts: 0, model_tiers: 1, ..policy() })
        .limit("api", Limit::per_second(1).burst(1))
        .resource(api.clone())
        .build();
    let outcome = runtime.run(Rollback).await.unwrap();
    assert_eq!(outcome.status(), Status::Compensated);
    assert_eq!(api.calls(), [Duration::ZERO, Duration::from_secs(1)], "the undo waited for the next token");
    let throttled = &outcome.report().throttled;
    assert_eq!(throttled.len(), 1, "{throttled:?}");
    assert_eq!((throttled[0].step.as_str(), throttled[0].compensation), ("create", true));
    assert_eq!(throttled[0].waited, Duration::from_secs(1));
    let journal = runtime.journal(outcome.saga_id()).await.unwrap();
    let timeline: Vec<String> = journal
        .iter()
        .map(|r| saga_runtime::journal::Timeline { definition: Rollback::definition(), record: r }.to_string())
        .filter(|l| l.contains("token"))
        .collect();
    assert_eq!(timeline, ["create (compensating): waited 1.000 s for a `api` token (rate limit; not a failure)"]);
}

/// A step naming a downstream nobody declared.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Misnamed;

#[saga]
impl Misnamed {
    #[step(idempotent, limit = "githb")]
    async fn call(&self, _cx: &StepContext) -> StepResult<()> {
        Ok(())
    }
}

/// A step asking for an undeclared downstream at run time.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AsksAtRunTime;

#[saga]
impl AsksAtRunTime {
    #[step(idempotent)]
    async fn call(&self, cx: &StepContext) -> StepResult<()> {
        let _permit = cx.limit("githb").await?;
        Ok(())
    }
}

#[tokio::test]
async fn an_undeclared_downstream_is_a_configuration_error() {
    let runtime = Runtime::builder().limit("github", Limit::per_second(5)).build();
    let error = runtime.run(Misnamed).await.unwrap_err();
    assert!(matches!(error, RuntimeError::UnknownLimit { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "step `call` of `misnamed` draws from the rate limit of downstream `githb`, which this runtime does not declare (it declares `github`): add `Runtime::builder().limit(\"githb\", Limit::per_second(..))`; nothing was started"
    );
    assert!(runtime.list().await.unwrap().is_empty(), "nothing was stored");
    let error = runtime.start(Misnamed).await.unwrap_err();
    assert!(matches!(error, RuntimeError::UnknownLimit { .. }));

    let outcome = runtime.run(AsksAtRunTime).await.unwrap();
    assert_eq!(outcome.status(), Status::NeedsHuman, "no ladder for a configuration error: parked at once");
    let failure = outcome.failure().unwrap();
    assert_eq!(failure.kind, FailureKind::Misconfigured);
    assert!(failure.message.contains("no rate limit is declared for downstream `githb`"), "{}", failure.message);
    assert_eq!(outcome.report().attempts.len(), 1, "not retried");
}

/// Three workers sharing PostgreSQL draw from one bucket kept in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_on_postgres_share_one_bucket() {
    let db = ScratchDb::new().await;
    // The API allows 1 call per 250 ms; the limit spaces calls 300 ms apart, so that the
    // network's jitter never puts two in one window.
    let window = Duration::from_millis(250);

    let limited_api = Api::new(1, window);
    let load = run_on_workers(&db, &limited_api, true).await;
    assert_eq!(load.completed, 5);
    assert_eq!((load.calls, load.rejected), (5, 0), "no call refused");
    assert!(load.max_in_window <= 2, "never more than quota + burst in a window: {}", load.max_in_window);

    let unlimited_api = Api::new(1, window);
    let unlimited = run_on_workers(&db, &unlimited_api, false).await;
    assert!(unlimited.rejected > 0, "without the limit the API refuses calls");
    assert!(unlimited.max_in_window >= 3, "and sees a burst: {}", unlimited.max_in_window);
    eprintln!("{}", load.line("with `limit = \"api\"`, 3 workers on PostgreSQL", 1));
    eprintln!("{}", unlimited.line("without a limit, 3 workers on PostgreSQL", 1));
}

async fn run_on_workers(db: &ScratchDb, api: &Arc<Api>, limited: bool) -> Load {
    let mut runtimes = Vec::new();
    for _ in 0..3 {
        let store = PostgresStore::connect(db.url.clone()).await.unwrap();
        let runtime = Runtime::builder()
            .store(store)
            .policy(policy())
            .limit("api", Limit::per(1, Duration::from_millis(300)).burst(1))
            .resource(api.clone())
            .register::<Limited>()
            .register::<Unlimited>()
            .build();
        runtimes.push(runtime);
    }
    let workers: Vec<_> = runtimes.iter().map(|r| r.worker().concurrency(4).spawn()).collect();
    let mut completed = 0;
    let mut ids = Vec::new();
    for n in 0..5 {
        let id = if limited {
            runtimes[0].start(Limited { n }).await.unwrap()
        } else {
            runtimes[0].start(Unlimited { n }).await.unwrap()
        };
        ids.push(id);
    }
    for id in &ids {
        let status = if limited {
            runtimes[1].wait::<Limited>(id).await.unwrap().status()
        } else {
            runtimes[1].wait::<Unlimited>(id).await.unwrap().status()
        };
        completed += usize::from(status == Status::Completed);
    }
    for worker in workers {
        worker.shutdown().await;
    }
    Load::of(api, completed)
}
