//! Chaos on PostgreSQL: four worker processes share one database while a random one is killed
//! with SIGKILL every 1–3 s and restarted, and once every connection of every worker is
//! terminated from the server side. Sagas of mixed fates (most complete, some are compensated,
//! a few park for a human) run to the outcome they would have had without the kills, checked
//! against a downstream ledger that the effects write (unique on the idempotency key, with a
//! count of raw executions):
//!
//! - every saga ends as its fate says;
//! - every effect of a completed saga is in the ledger exactly once, and a compensated saga
//!   left it clean (each effect undone);
//! - no journal holds a write from a stale epoch (a zombie's);
//! - the take-overs, raw re-executions and the time from a kill to its take-over are printed.
//!
//! `SAGA_CHAOS_SAGAS` sets the number of sagas (default 2000). The test binary is its own
//! worker: `chaos_worker` works when `SAGA_CHAOS_WORKER` holds a database URL, and does nothing
//! otherwise.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::pg::ScratchDb;
use saga_runtime::prelude::*;
use saga_runtime::store::PostgresStore;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

/// The downstream services: a table the effects write, unique on the idempotency key.
struct Ledger(PgPool);

impl Ledger {
    async fn apply(&self, saga: &str, name: &str, key: &str) {
        sqlx::query(
            "INSERT INTO ledger (key, saga, name, executions) VALUES ($1, $2, $3, 1)
             ON CONFLICT (key) DO UPDATE SET executions = ledger.executions + 1",
        )
        .bind(key)
        .bind(saga)
        .bind(name)
        .execute(&self.0)
        .await
        .expect("the ledger takes the write");
    }
}

/// What becomes of a saga, by its number: 85% complete, 13% compensate, 2% park.
fn fate(n: u32) -> &'static str {
    match n % 100 {
        0 | 50 => "park",
        n if n % 8 == 1 => "compensate",
        _ => "complete",
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Chaos {
    n: u32,
    fate: String,
}

async fn effect(cx: &StepContext, name: &'static str) -> StepResult<String> {
    let saga = cx.saga_id().to_string();
    cx.effect_with(name, name, |key| async move {
        cx.resource::<Ledger>().apply(&saga, name, &key).await;
        Ok::<_, StepError>(key)
    })
    .await
}

async fn undo(cx: &StepContext) -> StepResult<()> {
    let saga = cx.saga_id().to_string();
    for landed in cx.effects() {
        cx.resource::<Ledger>().apply(&saga, &format!("undo {}", landed.name), &format!("undo:{}", landed.key)).await;
    }
    Ok(())
}

/// A pause that spreads the kills over every point of a saga's life.
async fn work(n: u32, step: u32) {
    tokio::time::sleep(Duration::from_millis(u64::from((n * 7 + step * 13) % 40) + 5)).await;
}

#[saga]
impl Chaos {
    #[step(compensate = release)]
    async fn reserve(&self, cx: &StepContext) -> StepResult<String> {
        work(self.n, 1).await;
        effect(cx, "reserve").await
    }
    async fn release(&self, cx: &StepContext, _reserve: Option<&String>) -> StepResult<()> {
        if self.fate == "park" {
            return Err(StepError::transient("the reservation service refuses to release"));
        }
        undo(cx).await
    }

    #[step(compensate = void)]
    async fn charge(&self, cx: &StepContext, reserve: &str) -> StepResult<String> {
        work(self.n, 2).await;
        let key = effect(cx, "charge").await?;
        Ok(format!("{reserve}/{key}"))
    }
    async fn void(&self, cx: &StepContext, _charge: Option<&String>) -> StepResult<()> {
        undo(cx).await
    }

    #[step(idempotent)]
    async fn check(&self, _cx: &StepContext, charge: &str) -> StepResult<usize> {
        work(self.n, 3).await;
        if self.fate != "complete" {
            return Err(StepError::logical("the order does not add up"));
        }
        Ok(charge.len())
    }

    #[step(commit)]
    async fn ship(&self, cx: &StepContext, check: &usize) -> StepResult<String> {
        work(self.n, 4).await;
        effect(cx, "ship").await.map(|key| format!("{check}:{key}"))
    }

    #[step(idempotent)]
    async fn notify(&self, cx: &StepContext, ship: &str) -> StepResult<usize> {
        work(self.n, 5).await;
        effect(cx, "notify").await.map(|_| ship.len())
    }
}

fn policy() -> Policy {
    let quick = Backoff {
        initial: Duration::from_millis(5),
        max: Duration::from_millis(20),
        jitter: Jitter::None,
        ..Backoff::default()
    };
    Policy { backoff: quick, store_retry: quick, compensation_retries: 1, ..Policy::default() }
}

#[test]
fn chaos_worker() {
    let Ok(url) = std::env::var("SAGA_CHAOS_WORKER") else { return };
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    tokio.block_on(async {
        let store = PostgresStore::options(url.clone()).pool_size(6).connect().await.unwrap();
        let ledger = Ledger(sqlx::postgres::PgPoolOptions::new().max_connections(4).connect(&url).await.unwrap());
        let runtime = Runtime::builder()
            .store(store)
            .policy(policy())
            .lease(Duration::from_millis(1_500))
            .resource(ledger)
            .pager(|_: &Incident| {})
            .notifier(|_: &Incident| {})
            .register::<Chaos>()
            .build();
        println!("WORKER {}", runtime.owner());
        let _worker = runtime.worker().concurrency(24).poll_interval(Duration::from_millis(200)).spawn();
        std::future::pending::<()>().await;
    });
}

fn spawn_worker(url: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "chaos_worker", "--nocapture", "--test-threads=1"])
        .env("SAGA_CHAOS_WORKER", url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sagas_survive_killed_workers_and_dropped_connections() {
    if std::env::var_os("SAGA_CHAOS_WORKER").is_some() {
        return;
    }
    let total: u32 = std::env::var("SAGA_CHAOS_SAGAS").ok().and_then(|n| n.parse().ok()).unwrap_or(2_000);
    let db = ScratchDb::new().await;
    let store = PostgresStore::connect(db.url.clone()).await.unwrap();
    let pool = store.pool().clone();
    sqlx::raw_sql(
        "CREATE TABLE ledger (key TEXT PRIMARY KEY, saga TEXT NOT NULL, name TEXT NOT NULL, executions INT NOT NULL)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let enqueuer = Runtime::builder().store(store).register::<Chaos>().build();
    let mut workers: Vec<Child> = (0..4).map(|_| spawn_worker(&db.url)).collect();

    let started = Instant::now();
    let enqueue = tokio::spawn({
        let enqueuer = enqueuer.clone();
        async move {
            for n in 0..total {
                enqueuer
                    .start_with_id(SagaId::new(format!("chaos-{n:05}")), Chaos { n, fate: fate(n).to_owned() })
                    .await
                    .unwrap();
            }
        }
    });

    // Kill a random worker every 1–3 s and start another; once, drop every connection.
    let mut kills = 0;
    // Per kill: when (ms since the Unix epoch), and what the victim held (saga, epoch).
    let mut victims: Vec<(u64, Vec<(String, i64)>)> = Vec::new();
    let mut terminated = false;
    let mut rng = 0x9e37_79b9_u64;
    let mut next = |bound: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % bound
    };
    loop {
        let settled: i64 =
            sqlx::query_scalar("SELECT count(*) FROM saga.sagas WHERE due_at IS NULL").fetch_one(&pool).await.unwrap();
        if enqueue.is_finished() && settled == i64::from(total) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "the sagas did not settle: {settled} of {total}");
        tokio::time::sleep(Duration::from_millis(1_000 + next(2_000))).await;
        if !terminated && kills == 2 {
            terminated = true;
            let dropped: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = 'saga-runtime') t",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            println!("terminated {dropped} connections from the server side");
        }
        let victim = next(workers.len() as u64) as usize;
        let pid = workers[victim].id();
        // What the victim holds when it dies, to time its take-over.
        let held: Vec<(String, i64)> = sqlx::query_as("SELECT id, epoch FROM saga.sagas WHERE owner LIKE $1")
            .bind(format!("worker-{pid}-%"))
            .fetch_all(&pool)
            .await
            .unwrap();
        let killed_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        workers[victim].kill().unwrap();
        workers[victim].wait().unwrap();
        kills += 1;
        victims.push((killed_at, held));
        workers[victim] = spawn_worker(&db.url);
    }
    let elapsed = started.elapsed();
    for mut worker in workers {
        let _ = worker.kill();
        let _ = worker.wait();
    }
    assert!(kills >= 3, "only {kills} kills happened: make the run longer");
    assert!(terminated, "the connections were terminated once");

    // Every saga ended as its fate says.
    let statuses: Vec<(String, String)> =
        sqlx::query_as("SELECT id, status FROM saga.sagas ORDER BY id").fetch_all(&pool).await.unwrap();
    assert_eq!(statuses.len(), total as usize);
    for (id, status) in &statuses {
        let n: u32 = id.trim_start_matches("chaos-").parse().unwrap();
        let expected = match fate(n) {
            "complete" => "completed",
            "compensate" => "compensated",
            _ => "needs_human",
        };
        assert_eq!(status, expected, "{id}");
    }

    // The ledger: each effect once per completed saga; compensated sagas clean.
    let rows: Vec<(String, String, i32)> =
        sqlx::query_as("SELECT saga, name, executions FROM ledger").fetch_all(&pool).await.unwrap();
    let mut by_saga: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut executions = 0i64;
    for (saga, name, runs) in &rows {
        *by_saga.entry(saga.clone()).or_default().entry(name.clone()).or_default() += 1;
        executions += i64::from(*runs);
    }
    for (id, status) in &statuses {
        let effects = by_saga.get(id).cloned().unwrap_or_default();
        match status.as_str() {
            "completed" => {
                let expected: BTreeMap<String, usize> =
                    ["reserve", "charge", "ship", "notify"].iter().map(|e| (e.to_string(), 1)).collect();
                assert_eq!(effects, expected, "{id}: every effect exactly once");
            }
            "compensated" => {
                for done in ["reserve", "charge"] {
                    assert_eq!(
                        effects.get(done),
                        effects.get(&format!("undo {done}")),
                        "{id}: {done} undone: {effects:?}"
                    );
                }
                assert!(!effects.contains_key("ship"), "{id}: nothing past the commit point");
            }
            _ => assert!(
                effects.contains_key("undo charge") && !effects.contains_key("undo reserve"),
                "{id}: parked on `release`: {effects:?}"
            ),
        }
    }

    // No journal holds a write from a stale epoch.
    let stale: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT epoch < max(epoch) OVER (PARTITION BY saga_id ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS stale FROM saga.journal) t WHERE stale",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(stale, 0, "a write from a stale epoch");

    // Take-overs: for every saga a killed worker held, the time from the kill to the first
    // record written under a newer claim (enqueued sagas start at epoch 0, their first claim is
    // epoch 1; nothing here waits long enough to be released and claimed again).
    let mut takeovers: Vec<Duration> = Vec::new();
    for (killed_at, held) in &victims {
        for (id, epoch) in held {
            let next: Option<i64> =
                sqlx::query_scalar("SELECT min(at) FROM saga.journal WHERE saga_id = $1 AND epoch > $2")
                    .bind(id)
                    .bind(epoch)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            if let Some(at) = next {
                takeovers.push(Duration::from_millis((at as u64).saturating_sub(*killed_at)));
            }
        }
    }
    let taken_over: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT saga_id FROM saga.journal GROUP BY saga_id HAVING max(epoch) > 1) t",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    takeovers.sort();
    println!(
        "chaos: {total} sagas in {:.1} s, {kills} kills, {taken_over} sagas taken over, {} raw re-executions of {} ledger writes, kill to take-over p50 {:?} p99 {:?} over {} sagas (lease 1.5 s)",
        elapsed.as_secs_f64(),
        executions - rows.len() as i64,
        rows.len(),
        percentile(&takeovers, 0.5),
        percentile(&takeovers, 0.99),
        takeovers.len(),
    );
    assert!(!takeovers.is_empty(), "a killed worker held sagas that were taken over");
}
