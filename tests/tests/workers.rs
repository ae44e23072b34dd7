//! Workers: sagas enqueued durably with `start`, claimed and driven by workers, awaited with
//! `wait` from anywhere; long waits released instead of holding a slot; graceful shutdown; on
//! PostgreSQL, several workers sharing one database, lost notifications made up by polling,
//! migrations run once however many workers start together, and bad input refused.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::pg::ScratchDb;
use saga_runtime::prelude::*;
use saga_runtime::store::{PostgresStore, StoreError};
use saga_runtime::{EncryptionKey, Keyring};
use serde::{Deserialize, Serialize};

/// Counts runs of each step, across every runtime of the test.
#[derive(Clone, Default)]
struct Counts {
    charge: Arc<AtomicU32>,
    ship: Arc<AtomicU32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Order {
    number: u32,
    /// `transient` failures of `charge` before it succeeds, each asking to wait `wait_ms`.
    flaky: u32,
    wait_ms: u64,
}

impl Order {
    fn new(number: u32) -> Self {
        Order { number, flaky: 0, wait_ms: 0 }
    }
}

#[saga]
impl Order {
    #[step(compensate = refund)]
    async fn charge(&self, cx: &StepContext) -> StepResult<u32> {
        cx.resource::<Counts>().charge.fetch_add(1, Ordering::SeqCst);
        if cx.attempt() <= self.flaky {
            return Err(StepError::transient("the bank is busy").retry_after(Duration::from_millis(self.wait_ms)));
        }
        Ok(self.number * 100)
    }
    async fn refund(&self, _cx: &StepContext, _cents: &u32) -> StepResult<()> {
        Ok(())
    }

    #[step(commit)]
    async fn ship(&self, cx: &StepContext, charge: &u32) -> StepResult<String> {
        cx.resource::<Counts>().ship.fetch_add(1, Ordering::SeqCst);
        Ok(format!("order {} shipped for {charge}", self.number))
    }
}

fn runtime(store: impl CheckpointStore, counts: &Counts) -> Runtime {
    let quick = Backoff {
        initial: Duration::from_millis(1),
        max: Duration::from_millis(5),
        jitter: Jitter::None,
        ..Backoff::default()
    };
    Runtime::builder()
        .store(store)
        .resource(counts.clone())
        .policy(Policy { backoff: quick, ..Policy::default() })
        .lease(Duration::from_secs(2))
        .register::<Order>()
        .build()
}

/// `start` returns at once with the saga enqueued (nothing ran); a worker runs it; `wait`
/// returns its outcome; the same id started again is the same saga, and with another input an
/// error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_sagas_are_run_by_a_worker_and_awaited() {
    let store = MemoryStore::new();
    let counts = Counts::default();
    let runtime = runtime(store.clone(), &counts);
    let id = runtime.start_with_id(SagaId::new("order-1"), Order::new(1)).await.unwrap();
    assert_eq!(id, SagaId::new("order-1"));
    let summary = store.summary(&id).await.unwrap().unwrap();
    assert_eq!(
        (summary.status, summary.owner.as_deref(), summary.records),
        (Status::Running, None, 1),
        "enqueued, unclaimed"
    );
    assert_eq!(counts.charge.load(Ordering::SeqCst), 0, "nothing ran yet");
    assert_eq!(runtime.start_with_id(SagaId::new("order-1"), Order::new(1)).await.unwrap(), id, "idempotent");
    let error = runtime.start_with_id(SagaId::new("order-1"), Order::new(2)).await.unwrap_err();
    assert!(matches!(error, RuntimeError::InputMismatch { .. }), "{error}");

    let worker = runtime.worker().concurrency(4).spawn();
    let outcome = tokio::time::timeout(Duration::from_secs(5), runtime.wait::<Order>(&id)).await.unwrap().unwrap();
    assert_eq!(outcome.output().unwrap().ship, "order 1 shipped for 100");
    let more: Vec<SagaId> = futures::future::join_all((2..=20).map(|n| runtime.start(Order::new(n))))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for id in &more {
        assert!(runtime.wait::<Order>(id).await.unwrap().is_completed());
    }
    let stats = worker.shutdown().await;
    assert_eq!((stats.claimed, stats.finished, stats.failed), (20, 20, 0));
    assert_eq!(
        (counts.charge.load(Ordering::SeqCst), counts.ship.load(Ordering::SeqCst)),
        (20, 20),
        "each step ran once per saga"
    );
}

/// A saga that must wait out a long backoff is released with its wake-up time instead of
/// holding a worker's slot, and picked up again when due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_wait_releases_the_saga_instead_of_holding_a_slot() {
    let store = MemoryStore::new();
    let counts = Counts::default();
    let runtime = runtime(store.clone(), &counts);
    let worker = runtime
        .worker()
        .concurrency(1)
        .release_waits_over(Duration::from_millis(100))
        .poll_interval(Duration::from_millis(50))
        .spawn();
    let slow = runtime.start(Order { number: 1, flaky: 1, wait_ms: 600 }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let summary = store.summary(&slow).await.unwrap().unwrap();
    assert_eq!(summary.owner, None, "released while it waits");
    assert!(summary.due_at_ms.unwrap() > 0, "with its wake-up time on record");
    // Meanwhile the one slot serves others.
    let quick = runtime.start(Order::new(2)).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), runtime.wait::<Order>(&quick))
            .await
            .unwrap()
            .unwrap()
            .is_completed()
    );
    let started = Instant::now();
    let outcome = runtime.wait::<Order>(&slow).await.unwrap();
    assert!(outcome.is_completed());
    assert!(started.elapsed() < Duration::from_millis(900), "picked up when due");
    assert_eq!(outcome.report().levels(), [Level::Retry]);
    let stats = worker.shutdown().await;
    assert_eq!((stats.released, stats.finished), (1, 2));
}

/// A store without notifications strands nothing: the worker's poll finds the saga.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_notifications_the_poll_finds_the_work() {
    let counts = Counts::default();
    let runtime = runtime(common::FlakyStore::failing_append(u32::MAX), &counts);
    let worker = runtime.worker().poll_interval(Duration::from_millis(100)).spawn();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let started = Instant::now();
    let id = runtime.start(Order::new(1)).await.unwrap();
    assert!(runtime.wait::<Order>(&id).await.unwrap().is_completed());
    assert!(started.elapsed() < Duration::from_millis(1500), "found within the poll interval: {:?}", started.elapsed());
    worker.shutdown().await;
}

/// Shutdown lets the sagas in flight finish within the grace period, then cuts off and releases
/// the rest, which another worker finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_what_the_worker_holds() {
    let store = MemoryStore::new();
    let counts = Counts::default();
    let first = runtime(store.clone(), &counts);
    let worker =
        first.worker().release_waits_over(Duration::from_secs(60)).shutdown_grace(Duration::from_millis(50)).spawn();
    let id = first.start(Order { number: 9, flaky: 1, wait_ms: 1_000 }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(store.summary(&id).await.unwrap().unwrap().owner.is_some(), "held while it waits out its backoff");
    worker.shutdown().await;
    assert_eq!(store.summary(&id).await.unwrap().unwrap().owner, None, "released at shutdown");
    let second = runtime(store.clone(), &counts);
    let worker = second.worker().spawn();
    assert!(second.wait::<Order>(&id).await.unwrap().is_completed());
    worker.shutdown().await;
}

/// Several workers sharing one PostgreSQL database run every saga once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_sharing_postgres_run_every_saga_once() {
    let db = ScratchDb::new().await;
    let counts = Counts::default();
    let mut runtimes = Vec::new();
    for _ in 0..3 {
        runtimes.push(runtime(PostgresStore::connect(db.url.clone()).await.unwrap(), &counts));
    }
    let workers: Vec<_> = runtimes.iter().map(|r| r.worker().concurrency(8).spawn()).collect();
    let ids: Vec<SagaId> = futures::future::join_all((0..60).map(|n| runtimes[n as usize % 3].start(Order::new(n))))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for (n, id) in ids.iter().enumerate() {
        let outcome = runtimes[(n + 1) % 3].wait::<Order>(id).await.unwrap();
        assert_eq!(outcome.output().unwrap().charge, n as u32 * 100);
    }
    let mut finished = 0;
    for worker in workers {
        finished += worker.shutdown().await.finished;
    }
    assert_eq!(finished, 60);
    assert_eq!(
        (counts.charge.load(Ordering::SeqCst), counts.ship.load(Ordering::SeqCst)),
        (60, 60),
        "each step ran once per saga"
    );
}

/// A notification lost with its connection (`pg_terminate_backend` of the listener) delays a
/// saga by at most the poll interval and never strands it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_notification_only_delays() {
    let db = ScratchDb::new().await;
    let counts = Counts::default();
    let store = PostgresStore::connect(db.url.clone()).await.unwrap();
    let runtime = runtime(store.clone(), &counts);
    let worker = runtime.worker().poll_interval(Duration::from_millis(300)).spawn();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(store.pool())
    .await
    .unwrap_or_default();
    assert!(!killed.is_empty(), "the store's connections were terminated");
    for n in 0..5 {
        let started = Instant::now();
        let id = runtime.start(Order::new(n)).await.unwrap();
        assert!(runtime.wait::<Order>(&id).await.unwrap().is_completed());
        assert!(started.elapsed() < Duration::from_secs(3), "saga {n} took {:?}", started.elapsed());
    }
    worker.shutdown().await;
}

/// Kills every connection of the database but the caller's, as a server restart or an idle
/// timeout does.
async fn terminate_connections(url: &str) -> usize {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(url).await.unwrap();
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid")
        .bind(&pids)
        .execute(&mut admin)
        .await
        .unwrap();
    // Termination is a signal: wait until the backends are gone, so the next write surely
    // meets a dead connection.
    loop {
        let alive: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)")
            .bind(&pids)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        if alive == 0 {
            return pids.len();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A saga whose step has every connection of the store terminated while it runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CutOff {
    url: String,
}

#[saga]
impl CutOff {
    #[step(idempotent)]
    async fn before(&self, cx: &StepContext) -> StepResult<u32> {
        cx.resource::<Counts>().charge.fetch_add(1, Ordering::SeqCst);
        let killed = terminate_connections(&self.url).await;
        Ok(killed as u32)
    }
    #[step(idempotent)]
    async fn after(&self, cx: &StepContext, before: &u32) -> StepResult<u32> {
        cx.resource::<Counts>().ship.fetch_add(1, Ordering::SeqCst);
        Ok(*before)
    }
}

/// Connections terminated from the server side between two writes (a restart, an idle
/// timeout, a failover) cost no saga anything: the next write reconnects and lands, no step
/// runs twice, and `start` right after the cut works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_connections_cost_no_write() {
    let db = ScratchDb::new().await;
    let counts = Counts::default();
    // One committer, so the writes after the cut surely meet its dead connection.
    let store = PostgresStore::options(db.url.clone()).writers(1).connect().await.unwrap();
    let runtime = Runtime::builder().store(store.clone()).resource(counts.clone()).register::<CutOff>().build();
    let outcome = runtime.run(CutOff { url: db.url.clone() }).await.unwrap();
    let killed = outcome.output().expect("completed").after;
    assert!(killed >= 2, "the writer's and the pool's connections were terminated ({killed})");
    assert_eq!(
        (counts.charge.load(Ordering::SeqCst), counts.ship.load(Ordering::SeqCst)),
        (1, 1),
        "each step ran once"
    );
    let journal = runtime.journal(outcome.saga_id()).await.unwrap();
    let completed =
        journal.iter().filter(|r| matches!(r.event, saga_runtime::journal::Event::StepCompleted { .. })).count();
    assert_eq!(completed, 2, "one completion per step");
    assert!(
        outcome.report().store_outages.is_empty(),
        "the write was not even retried by the saga: {:?}",
        outcome.report().store_outages
    );

    terminate_connections(&db.url).await;
    let id = runtime.start(Order::new(7)).await.expect("enqueued after the cut");
    let summary = store.summary(&id).await.unwrap().expect("stored");
    assert_eq!(
        (summary.status, summary.records, summary.owner.as_deref(), summary.due_at_ms.is_some()),
        (Status::Running, 1, None, true),
        "enqueued (its `started` record) for any worker"
    );
}

/// Ten workers starting at once against a new database migrate it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_workers_starting_at_once_migrate_once() {
    let db = ScratchDb::new().await;
    let stores = futures::future::join_all((0..10).map(|_| PostgresStore::connect(db.url.clone()))).await;
    assert!(
        stores.iter().all(Result::is_ok),
        "{:?}",
        stores.iter().filter_map(|s| s.as_ref().err()).map(|e| e.to_string()).collect::<Vec<_>>()
    );
    let store = stores.into_iter().next().unwrap().unwrap();
    let version: String =
        sqlx::query_scalar("SELECT convert_from(value, 'UTF8') FROM saga.meta WHERE key = 'schema_version'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(version, "3", "migrated once, through every version");
}

/// Bad input on PostgreSQL is a clear error that changes nothing: a schema of another
/// application, a newer schema, a wrong key, a tampered row, an unknown id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_postgres_is_a_clear_error() {
    let db = ScratchDb::new().await;
    let admin = PostgresStore::connect(db.url.clone()).await.unwrap();
    sqlx::raw_sql("CREATE SCHEMA other; CREATE TABLE other.users (id INT)").execute(admin.pool()).await.unwrap();
    let error = PostgresStore::options(db.url.clone()).schema("other").connect().await.unwrap_err();
    assert!(matches!(error, StoreError::NotASagaStore { .. }), "{error}");
    assert!(error.to_string().contains("schema `other` holds another application's tables (users)"), "{error}");

    let key = |byte| Keyring::new(EncryptionKey::new("k1", [byte; 32]).unwrap());
    let sealed = PostgresStore::options(db.url.clone()).schema("sealed").encryption(key(1)).connect().await.unwrap();
    let counts = Counts::default();
    let runtime = runtime(sealed, &counts);
    runtime.run_with_id(SagaId::new("o-1"), Order::new(1)).await.unwrap();
    let error = PostgresStore::options(db.url.clone()).schema("sealed").encryption(key(2)).connect().await.unwrap_err();
    assert!(matches!(error, StoreError::WrongKey { .. }), "{error}");
    sqlx::query("UPDATE sealed.journal SET body = (SELECT body FROM sealed.journal WHERE seq = 0) WHERE seq = 2")
        .execute(admin.pool())
        .await
        .unwrap();
    let error = runtime.journal(&SagaId::new("o-1")).await.unwrap_err();
    assert!(
        error.to_string().starts_with(
            "record 2 (step_completed) of saga `o-1` cannot be read: it does not match the journal's hash chain"
        ),
        "{error}"
    );
    let error = runtime.resume::<Order>(&SagaId::new("nope")).await.unwrap_err();
    assert!(matches!(error, RuntimeError::UnknownSaga { .. }), "{error}");

    sqlx::query("UPDATE saga.meta SET value = convert_to('9', 'UTF8') WHERE key = 'schema_version'")
        .execute(admin.pool())
        .await
        .unwrap();
    let error = PostgresStore::connect(db.url.clone()).await.unwrap_err();
    assert!(matches!(error, StoreError::NewerSchema { found: 9, supported: 3, .. }), "{error}");
    assert!(error.to_string().contains("has schema version 9, newer than version 3"), "{error}");
}
