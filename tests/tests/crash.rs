//! Proof that nothing runs twice: each saga runs in a child process that is killed with
//! SIGKILL at every journal write point in turn (before and after each write, inside each
//! effect, inside each compensation: `saga_runtime::hooks`), then resumed by a fresh process.
//! An independent record that the effects write themselves (a second SQLite file, the
//! "world") is compared with a run that was never interrupted:
//!
//! - every saga ends `Completed`, `Compensated` or `NeedsHuman`, as it does without the crash;
//! - the world ends in the same state, and no effect was applied twice (the world dedupes on
//!   the effect's idempotency key, as real services do; an effect's code runs a second time
//!   only when the crash fell between the effect and its journal write);
//! - no step whose completion was checkpointed before the crash runs again;
//! - a compensation runs at most once more than without the crash.
//!
//! The test binary is its own child: `crash_child` does the work when `SAGA_CRASH_CHILD` is
//! set and nothing otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use saga_runtime::__private::hooks::{crash_point, points_reached};
use saga_runtime::prelude::*;
use saga_runtime::store::SqliteStore;
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------- the world (independent record)

/// The downstream services: a SQLite file of its own, written by the effects themselves.
struct World {
    db: Mutex<rusqlite::Connection>,
}

impl World {
    fn open(dir: &Path) -> World {
        let db = rusqlite::Connection::open(dir.join("world.db")).unwrap();
        db.busy_timeout(Duration::from_secs(5)).unwrap();
        db.execute_batch(
            "PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS executions (n INTEGER PRIMARY KEY AUTOINCREMENT, pid INTEGER, kind TEXT, name TEXT, key TEXT);
             CREATE TABLE IF NOT EXISTS applied (key TEXT PRIMARY KEY, name TEXT);",
        )
        .unwrap();
        World { db: Mutex::new(db) }
    }

    fn log(&self, kind: &str, name: &str, key: &str) {
        self.db
            .lock()
            .unwrap()
            .execute(
                "INSERT INTO executions (pid, kind, name, key) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![std::process::id(), kind, name, key],
            )
            .unwrap();
    }

    /// A downstream write, deduplicated on its idempotency key.
    fn apply(&self, name: &str, key: &str) -> String {
        self.log("effect", name, key);
        self.db
            .lock()
            .unwrap()
            .execute("INSERT OR IGNORE INTO applied (key, name) VALUES (?1, ?2)", [key, name])
            .unwrap();
        format!("{name}@{}", &key[..8])
    }

    /// A downstream undo (idempotent).
    fn undo(&self, name: &str, key: &str) {
        self.log("undo", name, key);
        self.db.lock().unwrap().execute("DELETE FROM applied WHERE key = ?1", [key]).unwrap();
    }

    fn step(&self, name: &str, attempt: u32) {
        self.log("step", name, &attempt.to_string());
    }
}

fn world(cx: &StepContext) -> &Arc<World> {
    cx.resource::<Arc<World>>()
}

/// One journaled effect that writes to the world.
async fn apply(cx: &StepContext, name: &str) -> Result<String, StepError> {
    cx.effect_with(name, name, |key| async move {
        let receipt = world(cx).apply(name, &key);
        crash_point("inside an effect");
        Ok::<_, StepError>(receipt)
    })
    .await
}

/// Undoes every landed effect of the step being compensated.
async fn undo_all(cx: &StepContext) -> StepResult<()> {
    for effect in cx.effects() {
        world(cx).undo(&effect.name, &effect.key);
        crash_point("inside a compensation");
    }
    Ok(())
}

// ---------------------------------------------------------------- the sagas

/// Completes: effects in several steps, a transient failure on the first attempt of `review`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ship {
    repo: String,
}

#[saga]
impl Ship {
    #[step(idempotent)]
    async fn prepare(&self, cx: &StepContext) -> StepResult<String> {
        world(cx).step("prepare", cx.attempt());
        // A plain effect (keyed on the step's answer rather than an input).
        let key = cx.effect_key("fetch", None);
        cx.effect("fetch", async move {
            let receipt = world(cx).apply("fetch", &key);
            crash_point("inside an effect");
            Ok::<_, StepError>(receipt)
        })
        .await
    }

    #[step(compensate = unpush)]
    async fn push(&self, cx: &StepContext, prepare: &str) -> StepResult<Vec<String>> {
        world(cx).step("push", cx.attempt());
        Ok(vec![apply(cx, "push a").await?, apply(cx, "push b").await?, prepare.to_owned()])
    }
    async fn unpush(&self, cx: &StepContext, _pushed: Option<&Vec<String>>) -> StepResult<()> {
        undo_all(cx).await
    }

    #[step(idempotent)]
    async fn review(&self, cx: &StepContext, push: &[String]) -> StepResult<usize> {
        world(cx).step("review", cx.attempt());
        if cx.attempt() == 1 {
            return Err(StepError::transient("reviewer bot timed out"));
        }
        Ok(push.len())
    }

    #[step(commit)]
    async fn merge(&self, cx: &StepContext, review: &usize) -> StepResult<String> {
        world(cx).step("merge", cx.attempt());
        Ok(format!("{} {}", apply(cx, "merge").await?, review))
    }

    #[step(idempotent)]
    async fn announce(&self, cx: &StepContext, merge: &String) -> StepResult<String> {
        world(cx).step("announce", cx.attempt());
        Ok(format!("{} {merge}", apply(cx, "announce").await?))
    }
}

/// Is compensated: `ship` always fails logically, so the ladder rolls back two steps. With
/// `release_fails`, releasing the reservation keeps failing too, and the saga needs a human.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Doomed {
    order: u32,
    release_fails: bool,
}

#[saga]
impl Doomed {
    #[step(compensate = release)]
    async fn reserve(&self, cx: &StepContext) -> StepResult<String> {
        world(cx).step("reserve", cx.attempt());
        apply(cx, "reserve").await
    }
    async fn release(&self, cx: &StepContext, _reserved: Option<&String>) -> StepResult<()> {
        if self.release_fails {
            world(cx).log("undo", "release (fails)", "-");
            crash_point("inside a compensation");
            return Err(StepError::transient("the warehouse API is down"));
        }
        undo_all(cx).await
    }

    #[step(compensate = refund)]
    async fn charge(&self, cx: &StepContext, reserve: &String) -> StepResult<String> {
        world(cx).step("charge", cx.attempt());
        Ok(format!("{} {reserve}", apply(cx, "charge").await?))
    }
    async fn refund(&self, cx: &StepContext, _charged: Option<&String>) -> StepResult<()> {
        undo_all(cx).await
    }

    #[step(idempotent)]
    async fn ship(&self, cx: &StepContext, charge: &String) -> StepResult<String> {
        world(cx).step("ship", cx.attempt());
        Err(StepError::logical(format!("the address of {charge} does not exist")))
    }
}

// ---------------------------------------------------------------- the child

fn say(line: &str) {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}").unwrap();
    stdout.flush().unwrap();
}

/// The child's work: open the store, recover what a killed predecessor left, then run the
/// scenario's saga (which returns the stored outcome when it already finished). The scenario
/// `hold` only opens the store and keeps it open until killed.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os("SAGA_CRASH_CHILD").map(PathBuf::from) else { return };
    let scenario = std::env::var("SAGA_CRASH_SCENARIO").unwrap();
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    tokio.block_on(async {
        let store = SqliteStore::open(dir.join("sagas.db")).await.unwrap();
        if scenario == "hold" {
            say("HOLDING");
            loop {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        }
        let runtime = Runtime::builder()
            .store(store)
            .policy(Policy {
                backoff: Backoff {
                    initial: Duration::from_millis(1),
                    max: Duration::from_millis(2),
                    jitter: Jitter::None,
                    ..Backoff::default()
                },
                compensation_retries: 1,
                ..Policy::default()
            })
            .resource(Arc::new(World::open(&dir)))
            .register::<Ship>()
            .register::<Doomed>()
            .build();
        let recovery = runtime.recover().await.unwrap();
        assert!(recovery.failed.is_empty(), "{:?}", recovery.failed);
        let id = SagaId::new(format!("crash-{scenario}"));
        let status = match scenario.as_str() {
            "ship" => runtime.run_with_id(id, Ship { repo: "acme/api".into() }).await.unwrap().status(),
            "doomed" => runtime.run_with_id(id, Doomed { order: 7, release_fails: false }).await.unwrap().status(),
            "stuck" => runtime.run_with_id(id, Doomed { order: 7, release_fails: true }).await.unwrap().status(),
            other => panic!("unknown scenario {other}"),
        };
        say(&format!("OUTCOME {status}"));
        say(&format!("POINTS {}", points_reached()));
    });
}

// ---------------------------------------------------------------- the parent

struct Run {
    /// `Some((n, label))` when the child stopped at crash point `n`.
    crashed: Option<(u64, String)>,
    outcome: Option<String>,
    points: Option<u64>,
}

/// Runs the child on `dir`; with `crash_at`, kills it with SIGKILL when it reaches that point.
fn child(dir: &Path, scenario: &str, crash_at: Option<u64>) -> Run {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env("SAGA_CRASH_CHILD", dir)
        .env("SAGA_CRASH_SCENARIO", scenario)
        .env_remove("SAGA_CRASH_POINT")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(point) = crash_at {
        command.env("SAGA_CRASH_POINT", point.to_string());
    }
    let mut process = command.spawn().unwrap();
    let stdout = BufReader::new(process.stdout.take().unwrap());
    let mut run = Run { crashed: None, outcome: None, points: None };
    for line in stdout.lines() {
        let line = line.unwrap();
        // libtest prints `test crash_child ... ` without a newline first: match anywhere.
        let marker = |name: &str| line.find(name).map(|at| line[at + name.len()..].to_owned());
        if let Some(rest) = marker("SAGA-CRASH-POINT ") {
            let (n, label) = rest.split_once(' ').unwrap();
            run.crashed = Some((n.parse().unwrap(), label.to_owned()));
            process.kill().unwrap(); // SIGKILL
            break;
        } else if let Some(outcome) = marker("OUTCOME ") {
            run.outcome = Some(outcome);
        } else if let Some(points) = marker("POINTS ") {
            run.points = Some(points.parse().unwrap());
        }
    }
    let status = process.wait().unwrap();
    if run.crashed.is_none() {
        assert!(status.success(), "the child failed on {scenario} (crash point {crash_at:?}): {status}");
    }
    run
}

/// What the world and the journal say after a run.
#[derive(Debug, PartialEq)]
struct Observed {
    applied: BTreeSet<String>,
    /// Per effect key, how many times the effect's code ran.
    effect_runs: BTreeMap<String, u32>,
    /// Per effect key, how many times an undo ran.
    undo_runs: BTreeMap<String, u32>,
}

fn observe(dir: &Path) -> Observed {
    let db = rusqlite::Connection::open(dir.join("world.db")).unwrap();
    let applied = db
        .prepare("SELECT name FROM applied")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut effect_runs = BTreeMap::new();
    let mut undo_runs = BTreeMap::new();
    let rows: Vec<(String, String, String)> = db
        .prepare("SELECT kind, name, key FROM executions ORDER BY n")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (kind, name, key) in rows {
        match kind.as_str() {
            "effect" => *effect_runs.entry(format!("{name}/{key}")).or_insert(0) += 1,
            "undo" => *undo_runs.entry(format!("{name}/{key}")).or_insert(0) += 1,
            _ => {}
        }
    }
    Observed { applied, effect_runs, undo_runs }
}

/// Steps whose completion is in the journal, and the steps a given process ran.
fn completed_steps(dir: &Path, scenario: &str) -> BTreeSet<String> {
    let db = rusqlite::Connection::open_with_flags(dir.join("sagas.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let mut statement = db.prepare("SELECT step FROM journal WHERE saga_id = ?1 AND kind = 'step_completed'").unwrap();
    statement.query_map([format!("crash-{scenario}")], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
}

fn steps_run_after(dir: &Path, first_row_of_resume: i64) -> Vec<String> {
    let db = rusqlite::Connection::open(dir.join("world.db")).unwrap();
    db.prepare("SELECT name FROM executions WHERE kind = 'step' AND n >= ?1")
        .unwrap()
        .query_map([first_row_of_resume], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn world_rows(dir: &Path) -> i64 {
    let db = rusqlite::Connection::open(dir.join("world.db")).unwrap();
    db.query_row("SELECT coalesce(max(n), 0) FROM executions", [], |r| r.get(0)).unwrap()
}

/// A database held by another process is a clear error; once that process is gone (even
/// killed), the file opens again.
#[test]
fn a_store_held_by_another_process_is_a_clear_error() {
    if std::env::var_os("SAGA_CRASH_CHILD").is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut holder = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env("SAGA_CRASH_CHILD", dir.path())
        .env("SAGA_CRASH_SCENARIO", "hold")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    assert!(lines.any(|line| line.unwrap().contains("HOLDING")), "the holder opened the store");
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let error = tokio.block_on(SqliteStore::open(dir.path().join("sagas.db"))).unwrap_err();
    assert!(matches!(error, saga_runtime::store::StoreError::Locked { .. }), "{error}");
    assert!(error.to_string().contains("is in use by another process"), "{error}");
    holder.kill().unwrap();
    holder.wait().unwrap();
    tokio.block_on(SqliteStore::open(dir.path().join("sagas.db"))).expect("the lock dies with its process");
}

/// Crash points between an effect's code and its journal write: the only window in which the
/// effect's code runs again on resume (under the same key, so the world applies it once).
const EFFECT_WINDOW: [&str; 3] =
    ["inside an effect", "an effect ran, before its journal write", "before an effect's journal write"];

#[test]
fn killing_the_process_at_any_journal_write_runs_nothing_twice() {
    if std::env::var_os("SAGA_CRASH_CHILD").is_some() {
        return;
    }
    let mut covered = BTreeMap::new();
    let mut rerun_effects = 0;
    for (scenario, expected) in [("ship", "completed"), ("doomed", "compensated"), ("stuck", "needs_human")] {
        let reference_dir = tempfile::tempdir().unwrap();
        let reference = child(reference_dir.path(), scenario, None);
        assert_eq!(reference.outcome.as_deref(), Some(expected), "{scenario} without a crash");
        let points = reference.points.unwrap();
        let reference_world = observe(reference_dir.path());
        assert!(reference_world.effect_runs.values().all(|n| *n == 1));

        for point in 1..=points {
            let dir = tempfile::tempdir().unwrap();
            let crashed = child(dir.path(), scenario, Some(point));
            let (n, label) =
                crashed.crashed.clone().unwrap_or_else(|| panic!("{scenario}: point {point} was never reached"));
            assert_eq!(n, point);
            let checkpointed = completed_steps(dir.path(), scenario);
            let resume_from = world_rows(dir.path()) + 1;

            let resumed = child(dir.path(), scenario, None);
            let context = format!("{scenario}, killed at point {point} ({label})");
            assert_eq!(resumed.outcome.as_deref(), Some(expected), "{context}: the outcome");
            let world = observe(dir.path());
            assert_eq!(world.applied, reference_world.applied, "{context}: the world ends as without the crash");
            for (effect, runs) in &world.effect_runs {
                let allowed = if EFFECT_WINDOW.contains(&label.as_str()) { 2 } else { 1 };
                assert!(*runs <= allowed, "{context}: effect {effect} ran {runs} times");
                if *runs == 2 {
                    rerun_effects += 1;
                }
            }
            assert_eq!(
                world.effect_runs.keys().collect::<Vec<_>>(),
                reference_world.effect_runs.keys().collect::<Vec<_>>(),
                "{context}: the same effects, under the same keys"
            );
            for (undo, runs) in &world.undo_runs {
                let reference_runs = reference_world.undo_runs.get(undo).copied().unwrap_or(0);
                assert!(
                    *runs <= reference_runs + 1,
                    "{context}: compensation {undo} ran {runs} times ({reference_runs} without the crash)"
                );
            }
            for step in steps_run_after(dir.path(), resume_from) {
                assert!(!checkpointed.contains(&step), "{context}: step {step} ran again after its checkpoint landed");
            }
            *covered.entry(scenario).or_insert(0) += 1;
        }
    }
    let total: u32 = covered.values().sum();
    println!(
        "crash test: {total} crash points covered {covered:?}; every effect applied once downstream; effect code re-run (only between an effect and its journal write, under the same key): {rerun_effects}"
    );
    assert!(total >= 100, "fewer crash points than the scenarios have: {covered:?}");
}
