//! PostgreSQL against the physical limit of the same server, in one run.
//!
//! `cargo bench -p saga-runtime --bench postgres` (add `-- --quick` for
//! the short run CI makes) prints:
//! - raw loops committing one small `INSERT` per transaction, on 1 and on 16 connections;
//! - five-step sagas per second (`run`, in process) at 1, 16 and 64 in flight, with the write
//!   transactions per saga (`txid_current()` before and after) and the WAL bytes per saga;
//! - the latency from `start` to the end of the saga through a worker, one at a time.
//!
//! The server is `SAGA_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`);
//! the bench makes a scratch database and drops it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use saga_runtime::CheckpointStore;
use saga_runtime::prelude::*;
use saga_runtime::store::{Order, PostgresStore, SagaQuery};
use serde::{Deserialize, Serialize};
use sqlx::{Connection, PgConnection, PgPool};

#[derive(Clone, Serialize, Deserialize)]
struct FiveSteps {
    order: u64,
}

#[saga]
impl FiveSteps {
    #[step(compensate = release)]
    async fn reserve(&self, _cx: &StepContext) -> StepResult<u64> {
        Ok(self.order)
    }
    async fn release(&self, _cx: &StepContext, _r: &u64) -> StepResult<()> {
        Ok(())
    }
    #[step(compensate = refund)]
    async fn charge(&self, _cx: &StepContext, reserve: &u64) -> StepResult<u64> {
        Ok(reserve + 1)
    }
    async fn refund(&self, _cx: &StepContext, _r: &u64) -> StepResult<()> {
        Ok(())
    }
    #[step(idempotent)]
    async fn pack(&self, _cx: &StepContext, charge: &u64) -> StepResult<u64> {
        Ok(charge * 2)
    }
    #[step(commit)]
    async fn ship(&self, _cx: &StepContext, pack: &u64) -> StepResult<u64> {
        Ok(pack + 1)
    }
    #[step(idempotent)]
    async fn notify(&self, _cx: &StepContext, ship: &u64) -> StepResult<String> {
        Ok(format!("shipped {ship}"))
    }
}

fn admin_url() -> String {
    std::env::var("SAGA_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

async fn scratch(name: &str) -> String {
    let admin = admin_url();
    let mut connection = PgConnection::connect(&admin).await.unwrap_or_else(|error| {
        panic!("PostgreSQL is not reachable at {admin} ({error}): start it with `pg_ctlcluster --skip-systemctl-redirect 15 main start`")
    });
    for statement in [format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"), format!("CREATE DATABASE {name}")] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&mut connection).await.unwrap();
    }
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base);
    format!("{base}/{name}")
}

async fn drop_scratch(name: &str) {
    let mut connection = PgConnection::connect(&admin_url()).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
        .execute(&mut connection)
        .await
        .unwrap();
}

/// Commits of one small row per transaction on `connections` connections, per second.
async fn raw_inserts(url: &str, connections: usize, commits: u64) -> f64 {
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(connections as u32).connect(url).await.unwrap();
    sqlx::raw_sql("DROP TABLE IF EXISTS raw; CREATE TABLE raw (k BIGINT PRIMARY KEY, v BYTEA NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (pool, next) = (pool.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= commits {
                        break;
                    }
                    sqlx::query("INSERT INTO raw (k, v) VALUES ($1, $2)")
                        .bind(k as i64)
                        .bind(vec![7u8; 64])
                        .execute(&pool)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let per_second = commits as f64 / started.elapsed().as_secs_f64();
    pool.close().await;
    per_second
}

/// `(txid, WAL position)`: `txid_current()` assigns an id, so the difference of two readings
/// minus one counts the write transactions in between.
async fn counters(pool: &PgPool) -> (i64, i64) {
    let txid: i64 = sqlx::query_scalar("SELECT txid_current()").fetch_one(pool).await.unwrap();
    let wal: i64 = sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")
        .fetch_one(pool)
        .await
        .unwrap();
    (txid, wal)
}

/// Runs `runs` sagas with `in_flight` at a time: (sagas/s, write transactions per saga, WAL
/// bytes per saga).
async fn sagas(url: &str, runs: u64, in_flight: u64) -> (f64, f64, f64) {
    let store = PostgresStore::options(url).pool_size(16).connect().await.unwrap();
    let pool = store.pool().clone();
    let runtime = Runtime::builder().store(store).build();
    let (txid_before, wal_before) = counters(&pool).await;
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let (runtime, next) = (runtime.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let order = next.fetch_add(1, Ordering::Relaxed);
                    if order >= runs {
                        break;
                    }
                    assert!(runtime.run(FiveSteps { order }).await.unwrap().is_completed());
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let (txid_after, wal_after) = counters(&pool).await;
    (
        runs as f64 / elapsed.as_secs_f64(),
        (txid_after - txid_before - 1) as f64 / runs as f64,
        (wal_after - wal_before) as f64 / runs as f64,
    )
}

/// Adds `count` finished sagas (two journal rows each) straight through SQL, without
/// `ANALYZE`.
async fn bulk_history(url: &str, count: u64) {
    let mut connection = PgConnection::connect(url).await.unwrap();
    let sql = format!(
        "SET synchronous_commit = off;
         INSERT INTO saga.sagas (id, name, version, fingerprint, status, stage, input, records, head, created_at, updated_at)
         SELECT 'history-' || g, 'History', 1, 'fp', 'completed', 'done', '\\x00', 2, '\\x00', g, g
         FROM generate_series(1, {count}) g;
         INSERT INTO saga.journal (saga_id, seq, at, epoch, kind, step, body, hash)
         SELECT 'history-' || g, s, g, 1, 'step_completed', 'done', '\\x00', '\\x00'
         FROM generate_series(1, {count}) g, generate_series(0, 1) s;"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut connection).await.unwrap();
}

/// The time of `list`'s first page (median of 20), unfiltered and filtered by status.
async fn list_latency(url: &str) -> (Duration, Duration) {
    let store = PostgresStore::connect(url).await.unwrap();
    let mut median = Vec::new();
    for query in
        [SagaQuery::new().order(Order::NewestFirst).limit(50), SagaQuery::new().status(Status::Running).limit(50)]
    {
        let mut times = Vec::new();
        for _ in 0..20 {
            let started = Instant::now();
            store.list(&query).await.unwrap();
            times.push(started.elapsed());
        }
        times.sort();
        median.push(times[times.len() / 2]);
    }
    (median[0], median[1])
}

/// Rate-limit tokens taken from the store's shared bucket (a limit far above the rate, so
/// that every take is granted), by `tasks` tasks at once: tokens per second.
async fn shared_tokens(url: &str, tasks: usize, takes: u64) -> f64 {
    let store = PostgresStore::connect(url).await.unwrap();
    let shared = store.shared_limits().expect("PostgreSQL shares limits");
    let limit = saga_runtime::Limit::per_second(1_000_000).burst(1_000_000);
    shared.take("bench", &limit).await.unwrap();
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..tasks)
        .map(|_| {
            let (shared, next, limit) = (shared.clone(), next.clone(), limit.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < takes {
                    assert!(shared.take("bench", &limit).await.unwrap().is_none(), "granted");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    takes as f64 / started.elapsed().as_secs_f64()
}

/// The latency from `start` to the outcome through a worker, one saga at a time.
async fn start_to_finish(url: &str, runs: u64) -> Vec<Duration> {
    let store = PostgresStore::connect(url).await.unwrap();
    let runtime = Runtime::builder().store(store).register::<FiveSteps>().build();
    let worker = runtime.worker().concurrency(4).spawn();
    let mut latencies = Vec::with_capacity(runs as usize);
    // Warm-up (connections opened, statements prepared), not counted.
    for order in 0..5 {
        let id = runtime.start(FiveSteps { order }).await.unwrap();
        assert!(runtime.wait::<FiveSteps>(&id).await.unwrap().is_completed());
    }
    for order in 0..runs {
        let started = Instant::now();
        let id = runtime.start(FiveSteps { order }).await.unwrap();
        assert!(runtime.wait::<FiveSteps>(&id).await.unwrap().is_completed());
        latencies.push(started.elapsed());
    }
    worker.shutdown().await;
    latencies.sort();
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    tokio.block_on(async {
        let url = scratch("saga_bench").await;
        let commits = if quick { 500 } else { 3_000 };
        let raw_1 = raw_inserts(&url, 1, commits).await;
        let raw_16 = raw_inserts(&url, 16, commits * 4).await;
        println!("PostgreSQL on this machine ({}), one small INSERT per transaction\n", admin_url());
        println!("| raw commit loop | commits/s |");
        println!("|---|---:|");
        println!("| 1 connection | {raw_1:.0} |");
        println!("| 16 connections | {raw_16:.0} |");

        println!("\nfive-step sagas (`run`, in process) on PostgresStore\n");
        println!("| in flight | sagas/s | steps/s | write transactions/saga | WAL bytes/saga | against the limit |");
        println!("|---:|---:|---:|---:|---:|---|");
        let cases: [(u64, u64); 3] = if quick { [(1, 100), (16, 400), (64, 1_000)] } else { [(1, 500), (16, 3_000), (64, 6_000)] };
        for (in_flight, runs) in cases {
            let (per_second, writes, wal) = sagas(&url, runs, in_flight).await;
            let limit = match in_flight {
                1 => format!("{:.2} × (raw 1-connection ÷ 6) (target ≥ 0.8)", per_second / (raw_1 / 6.0)),
                _ => format!("steps/s {:.2} × raw 16-connection commits/s (target ≥ 1 at 64)", per_second * 5.0 / raw_16),
            };
            println!("| {in_flight} | {per_second:.0} | {:.0} | {writes:.2} | {wal:.0} | {limit} |", per_second * 5.0);
        }

        // History: finished sagas loaded in bulk and not analyzed yet (a restore, an import,
        // the first minute of a busy system). Every statement must still find its rows by
        // index, not by scanning the table.
        let history: u64 = if quick { 200_000 } else { 1_000_000 };
        bulk_history(&url, history).await;
        println!("\nwith {history} finished sagas in the table, loaded in bulk and not analyzed\n");
        let (per_second, writes, _) = sagas(&url, if quick { 100 } else { 500 }, 1).await;
        println!(
            "- one at a time: {per_second:.0} sagas/s, {writes:.2} write transactions/saga, {:.2} × (raw 1-connection ÷ 6)",
            per_second / (raw_1 / 6.0)
        );
        let (first_page, filtered) = list_latency(&url).await;
        println!(
            "- `list` first page of 50, newest first: {:.2} ms; of the running sagas only: {:.2} ms",
            first_page.as_secs_f64() * 1000.0,
            filtered.as_secs_f64() * 1000.0
        );

        let takes = if quick { 1_000 } else { 5_000 };
        let (one, many) = (shared_tokens(&url, 1, takes).await, shared_tokens(&url, 16, takes * 4).await);
        println!(
            "\nrate-limit tokens from the bucket shared by every worker (one UPDATE each, without a synchronous commit): \
             {one:.0}/s from one task ({:.2} × raw 1-connection commits/s), {many:.0}/s from 16 tasks on one downstream",
            one / raw_1
        );

        let runs = if quick { 50 } else { 300 };
        let latencies = start_to_finish(&url, runs).await;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "\n`start` to outcome through a worker, one at a time ({runs} sagas): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target: p99 within 3× p50)",
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.99)),
            ms(*latencies.last().unwrap())
        );
        println!("\nfor scale: DBOS's Rust library spends 7 transactions per five-step workflow, about 0.16 steps per raw commit at 16 connections");
        drop_scratch("saga_bench").await;
    });
}
