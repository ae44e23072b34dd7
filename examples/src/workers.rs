//! Worker processes sharing one PostgreSQL database (schema `saga_workers`):
//!
//! - `worker`: claims the code-change sagas that are due, drives up to four at a time, renews
//!   its leases, and on Ctrl-C stops claiming, lets what it holds finish (10 s at most) and
//!   releases the rest;
//! - `enqueue`: starts sagas durably (`runtime.start`), waits for each outcome
//!   (`runtime.wait`), and checks the fakes' world: every pull request merged exactly once,
//!   none left open, one comment and one announcement per saga;
//! - `workers-demo`: the two together in one command: it starts worker processes, enqueues
//!   sagas, kills one worker with SIGKILL while it holds sagas, and checks the same.
//!
//! The fakes' state is shared by the processes through `workers.world.json` (changed under a
//! file lock), so a side effect made by a worker that was killed is seen by the one that takes
//! its saga over: the code host answers the replayed call from its idempotency table.

use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use saga_runtime::Redacted;
use saga_runtime::prelude::*;
use saga_runtime::store::PostgresStore;
use sqlx::Connection;
use tokio::io::AsyncReadExt;

use crate::agent::CodeChange;
use crate::fakes::{self, PrState, World};
use crate::{Args, demo_runtime, print_world};

/// The schema the workers share.
const SCHEMA: &str = "saga_workers";

/// How long a worker's claim lasts without renewal: a killed worker's sagas are taken over this
/// long after its last renewal. Short for the demo; the default is 30 s.
const LEASE: Duration = Duration::from_secs(3);

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Drops `schema` and everything in it (`--fresh`).
pub async fn drop_schema(url: &str, schema: &str) -> Result<()> {
    let mut connection = sqlx::PgConnection::connect(url).await.map_err(|e| unreachable(url, e))?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE")))
        .execute(&mut connection)
        .await?;
    Ok(())
}

fn unreachable(url: &str, error: sqlx::Error) -> String {
    format!(
        "cannot reach PostgreSQL at {url} ({error}): start it (on Debian/Ubuntu: `pg_ctlcluster --skip-systemctl-redirect 15 main start`) or pass another --pg URL"
    )
}

fn world_file(args: &Args) -> PathBuf {
    args.world.clone().unwrap_or_else(|| PathBuf::from("workers.world.json"))
}

async fn connect(url: &str) -> Result<PostgresStore> {
    Ok(PostgresStore::options(url).schema(SCHEMA).connect().await?)
}

/// `worker`: drives sagas until Ctrl-C (or, for the demo's children, until stdin closes).
pub async fn worker(args: &Args) -> Result<ExitCode> {
    fakes::name_process(&args.name);
    let (runtime, place) = match (&args.pg, &args.db) {
        (Some(url), _) => {
            let world = Arc::new(World::open(Some(&world_file(args))));
            let store = connect(url).await?;
            (demo_runtime(&world, Instant::now()).store(store).lease(LEASE).build(), format!("schema {SCHEMA}"))
        }
        // On the main job's SQLite file (and its fakes' world): the process that owns the
        // file, carrying out what `saga resolve`, `resume` or `cancel` ask for its sagas.
        (None, Some(db)) => {
            let world_file = args.world.clone().unwrap_or_else(|| crate::world_path(db));
            let world = Arc::new(World::open(Some(&world_file)));
            let store = saga_runtime::store::SqliteStore::open(db).await?;
            (demo_runtime(&world, Instant::now()).store(store).build(), db.display().to_string())
        }
        (None, None) => return Err("give the worker a store: --db PATH or --pg URL".into()),
    };
    let worker = runtime.worker().concurrency(4).spawn();
    println!(
        "{}worker up (owner {}): claiming code-change sagas from {place}; Ctrl-C stops it gracefully",
        fakes::process(),
        runtime.owner()
    );
    if args.stop_on_stdin_eof {
        let mut stdin = tokio::io::stdin();
        let mut buffer = [0u8; 64];
        while stdin.read(&mut buffer).await.map(|n| n > 0).unwrap_or(false) {}
    } else {
        tokio::signal::ctrl_c().await?;
    }
    println!("{}stopping: letting the sagas it holds finish, releasing the rest", fakes::process());
    let stats = worker.shutdown().await;
    println!(
        "{}worker stopped: claimed {}, finished {}, released {}, failed {}, operators' requests {}",
        fakes::process(),
        stats.claimed,
        stats.finished,
        stats.released,
        stats.failed,
        stats.requests
    );
    Ok(ExitCode::SUCCESS)
}

/// What the world looked like before a batch, to check what the batch did.
struct Before {
    merged: usize,
    comments: usize,
    announcements: usize,
    replays: u32,
}

fn before(world: &World) -> Before {
    world.with(|state| Before {
        merged: state.prs.values().filter(|(_, s)| *s == PrState::Merged).count(),
        comments: state.comments.len(),
        announcements: state.announcements.len(),
        replays: state.replays,
    })
}

/// Starts `count` sagas; returns their ids.
async fn start_sagas(runtime: &Runtime, count: u32) -> Result<Vec<SagaId>> {
    let mut ids = Vec::new();
    for n in 0..count {
        let issue = 2000 + u64::from(n);
        let saga = CodeChange {
            repo: "acme/api".to_owned(),
            issue,
            request: format!("Fix the bug reported in issue #{issue}"),
            host_token: Redacted::new("ghp_0123456789abcdefghijABCDEFGHIJ".to_owned()),
        };
        ids.push(runtime.start(saga).await?);
    }
    println!("enqueued {count} sagas (runtime.start); waiting for their outcomes (runtime.wait)\n");
    Ok(ids)
}

/// Waits for every saga, prints its outcome and how many claims it took, and checks the world.
async fn finish(
    runtime: &Runtime,
    store: &PostgresStore,
    world: &World,
    ids: &[SagaId],
    was: Before,
) -> Result<ExitCode> {
    let mut completed = 0;
    let mut taken_over = 0;
    let mut prs = Vec::new();
    for id in ids {
        let outcome = runtime.wait::<CodeChange>(id).await?;
        let claims = store.summary(id).await?.map_or(0, |s| s.epoch);
        if claims > 1 {
            taken_over += 1;
        }
        match &outcome {
            Outcome::Completed { output, .. } => {
                completed += 1;
                prs.push(output.open_pr);
                println!(
                    "saga {id} (…{}): COMPLETED, PR #{} merged as {} ({claims} claim{})",
                    &id.as_str()[id.as_str().len().saturating_sub(4)..],
                    output.open_pr,
                    output.merge,
                    if claims == 1 { "" } else { "s: taken over from a worker that stopped" }
                );
            }
            other => println!("saga {id}: {} ({claims} claims)", other.status()),
        }
    }
    println!();
    print_world(world);
    let (merged, comments, announcements, replays, open) = world.with(|state| {
        (
            state.prs.values().filter(|(_, s)| *s == PrState::Merged).count() - was.merged,
            state.comments.len() - was.comments,
            state.announcements.len() - was.announcements,
            state.replays - was.replays,
            prs.iter().filter(|n| state.prs.get(n).is_none_or(|(_, s)| *s != PrState::Merged)).count(),
        )
    });
    prs.sort_unstable();
    prs.dedup();
    let total = ids.len();
    println!(
        "\n{completed} of {total} sagas completed, {taken_over} of them taken over after a worker stopped; \
         {merged} PRs merged, {comments} comments, {announcements} announcements; \
         {replays} calls replayed after a crash and answered from the host's idempotency table"
    );
    let once = completed == total
        && merged == total
        && prs.len() == total
        && open == 0
        && comments == total
        && announcements == total;
    if once {
        println!("every saga finished once: each effect happened exactly once");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("not every saga finished exactly once (see above)");
        Ok(ExitCode::FAILURE)
    }
}

/// `enqueue`: starts sagas for the workers and waits for them.
pub async fn enqueue(args: &Args) -> Result<ExitCode> {
    let url = args.pg.as_deref().expect("checked by parse_args");
    let world = Arc::new(World::open(Some(&world_file(args))));
    world.with(|state| state.latency_ms = args.latency_ms);
    let store = connect(url).await?;
    let runtime = Runtime::builder().store(store.clone()).build();
    let was = before(&world);
    let ids = start_sagas(&runtime, args.sagas).await?;
    finish(&runtime, &store, &world, &ids, was).await
}

/// `workers-demo`: workers in child processes, one killed mid-run.
pub async fn demo(args: &Args) -> Result<ExitCode> {
    let url = args.pg.as_deref().expect("checked by parse_args");
    let world_path = world_file(args);
    drop_schema(url, SCHEMA).await?;
    let _ = std::fs::remove_file(&world_path);
    let world = Arc::new(World::open(Some(&world_path)));
    world.with(|state| state.latency_ms = args.latency_ms);
    let store = connect(url).await?;
    let runtime = Runtime::builder().store(store.clone()).build();

    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for n in 1..=args.workers {
        let child = tokio::process::Command::new(&exe)
            .args(["worker", "--pg", url, "--name", &format!("w{n}"), "--stop-on-stdin-eof", "--world"])
            .arg(&world_path)
            .stdin(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        children.push(child);
    }
    println!("started {} worker processes (w1..w{}), lease {} s\n", args.workers, args.workers, LEASE.as_secs());
    let was = before(&world);
    let ids = start_sagas(&runtime, args.sagas).await?;

    // Kill w1 once it holds sagas in the middle of their steps.
    let victim = children.remove(0);
    let killed = tokio::spawn(async move {
        let mut victim = victim;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        println!(
            "\n*** killing worker w1 with SIGKILL while it holds sagas: the others take them over when its lease ends ***\n"
        );
        let _ = victim.kill().await;
    });

    let code = finish(&runtime, &store, &world, &ids, was).await?;
    killed.await?;
    for mut child in children {
        drop(child.stdin.take());
        child.wait().await?;
    }
    Ok(code)
}
