//! The main job: a code-change agent saga, checkpointed in `sagas.db` (or in PostgreSQL with
//! `--pg URL`), run against in-process fakes, printing a timeline of every step, attempt,
//! failure class, ladder level, compensation and the outcome.
//!
//! ```text
//! cargo run -p saga-examples -- --scenario NAME [--crash-after STEP] [--db PATH | --pg URL | --memory] [--fresh]
//! cargo run -p saga-examples -- workers-demo --pg URL [--workers N] [--sagas N]
//! cargo run -p saga-examples -- worker (--pg URL | --db PATH) [--name NAME]
//! cargo run -p saga-examples -- enqueue --pg URL [--sagas N]
//! ```
//!
//! Every run of the main job first resumes the sagas a crashed run left unfinished in the
//! database; only when there are none does it start a new one. The other commands show
//! worker processes sharing one PostgreSQL database (see `workers.rs`).

mod workers;

use saga_examples::{agent, fakes};

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use saga_runtime::journal::{Event, Record, Timeline};
use saga_runtime::prelude::*;
use saga_runtime::store::{
    Checkpoint, Claim, ClaimRequest, Claimed, Created, Fence, NewSaga, PostgresStore, RecordRow, SagaPage, SagaQuery,
    SagaSummary, SqliteStore, StoreError, StoredSaga,
};
use saga_runtime::{BoxFuture, EncryptionKey, Keyring, Redacted};

use agent::CodeChange;
use fakes::{CiResult, ModelFault, PrState, World, WorldState};

const SCENARIOS: [(&str, &str, Status); 8] = [
    ("happy", "every call succeeds", Status::Completed),
    ("flaky-vendor", "the model vendor answers 503 twice, the code host rate-limits once: level 0", Status::Completed),
    (
        "wrong-answer",
        "the model plans outside the repo until a stronger tier fixes it: levels 1, 1, 2",
        Status::Completed,
    ),
    (
        "schema-changed",
        "CI finds the schema migrated: undo, re-plan with the new schema (environmental, level 0)",
        Status::Completed,
    ),
    (
        "half-written",
        "3 of 4 files land, the 4th is refused: the 3 are deleted before each re-prompt, nothing is left (1, 1, 2, 3)",
        Status::Compensated,
    ),
    (
        "tests-fail",
        "the tests fail on the agent's code: run_tests blames write_files, the model rewrites the files with the failing tests in context, and the tests pass (level 1)",
        Status::Completed,
    ),
    (
        "stuck-compensation",
        "the tests stay red whatever the model rewrites (write_files blamed: levels 1, 1, 2, 3), then closing the PR keeps failing: level 4",
        Status::NeedsHuman,
    ),
    (
        "debris",
        "the tests stay red, and the delete tool silently keeps tests/login.rs on each undone branch: the sweep finds the orphan branches and removes them",
        Status::Compensated,
    ),
];

/// The PostgreSQL schema of the main job (`--pg`).
const MAIN_SCHEMA: &str = "saga_example";

/// What to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Command {
    /// The main job: resume what a crash left, or run one saga of a scenario.
    Main,
    /// A worker process: claims and drives sagas from PostgreSQL until stopped.
    Worker,
    /// Enqueues sagas for the workers and waits for their outcomes.
    Enqueue,
    /// Starts workers, enqueues sagas, kills one worker mid-run, checks every saga finished once.
    WorkersDemo,
}

struct Args {
    command: Command,
    scenario: String,
    db: Option<PathBuf>,
    pg: Option<String>,
    world: Option<PathBuf>,
    crash_after: Option<String>,
    fresh: bool,
    name: String,
    sagas: u32,
    workers: u32,
    latency_ms: u64,
    stop_on_stdin_eof: bool,
}

fn usage() -> String {
    let mut text = String::from(
        "usage: saga-examples [--scenario NAME] [--crash-after STEP] [--db PATH | --pg URL | --memory] [--fresh]\n\
         \x20      saga-examples workers-demo --pg URL [--workers N] [--sagas N] [--latency-ms MS]\n\
         \x20      saga-examples worker (--pg URL | --db PATH) [--name NAME]\n\
         \x20      saga-examples enqueue --pg URL [--sagas N] [--latency-ms MS]\n\n\
         Runs a code-change agent saga checkpointed in sagas.db (--db to choose the file, --pg for a\n\
         PostgreSQL database, schema saga_example; --memory for none). Each run first resumes the sagas\n\
         a crashed run left unfinished; --crash-after STEP kills the process right after STEP's\n\
         checkpoint lands, so that the next run shows the resume. --fresh deletes the database (or the\n\
         schema) and the fakes' state first. With SAGA_KEY set to 64 hex digits (or `<key id>:<digits>`), inputs, outputs,\n\
         effect results and failure messages are encrypted at rest.\n\n\
         workers-demo starts worker processes on one PostgreSQL database (schema saga_workers), enqueues\n\
         sagas, kills one worker with SIGKILL mid-run and checks that every saga finished exactly once.\n\
         worker runs one worker until Ctrl-C (on sagas.db by default: it then owns the file and carries\n\
         out what `saga resolve`, `resume` and `cancel` ask); enqueue starts sagas for the workers and waits for them\n\
         (run several workers in other terminals, kill one, and watch the others finish its sagas).\n\
         Workers share the fakes' state in workers.world.json (--world to choose the file).\n\nscenarios:\n",
    );
    for (name, what, _) in SCENARIOS {
        text.push_str(&format!("  {name:<19} {what}\n"));
    }
    text.push_str("\nsteps: ");
    let steps: Vec<&str> = CodeChange::definition().steps().iter().map(|s| s.name()).collect();
    text.push_str(&steps.join(", "));
    text.push('\n');
    text
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1).peekable();
    let command = match args.peek().map(String::as_str) {
        Some("worker") => Command::Worker,
        Some("enqueue") => Command::Enqueue,
        Some("workers-demo") => Command::WorkersDemo,
        _ => Command::Main,
    };
    if command != Command::Main {
        args.next();
    }
    let mut parsed = Args {
        command,
        scenario: "happy".to_owned(),
        db: Some(PathBuf::from("sagas.db")),
        pg: None,
        world: None,
        crash_after: None,
        fresh: false,
        name: format!("worker-{}", std::process::id()),
        sagas: 12,
        workers: 2,
        latency_ms: 250,
        stop_on_stdin_eof: false,
    };
    let number = |value: Option<String>, flag: &str| -> Result<u64, String> {
        value.as_deref().and_then(|v| v.parse().ok()).ok_or_else(|| format!("{flag} needs a number"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--scenario" | "-s" => parsed.scenario = args.next().ok_or("--scenario needs a name")?,
            "--db" => parsed.db = Some(PathBuf::from(args.next().ok_or("--db needs a path")?)),
            "--pg" => {
                parsed.pg =
                    Some(args.next().ok_or("--pg needs a URL, like postgres://postgres@127.0.0.1:5432/postgres")?)
            }
            "--world" => parsed.world = Some(PathBuf::from(args.next().ok_or("--world needs a path")?)),
            "--memory" => parsed.db = None,
            "--crash-after" => parsed.crash_after = Some(args.next().ok_or("--crash-after needs a step name")?),
            "--fresh" => parsed.fresh = true,
            "--name" => parsed.name = args.next().ok_or("--name needs a name")?,
            "--sagas" => parsed.sagas = number(args.next(), "--sagas")?.clamp(1, 10_000) as u32,
            "--workers" => parsed.workers = number(args.next(), "--workers")?.clamp(2, 16) as u32,
            "--latency-ms" => parsed.latency_ms = number(args.next(), "--latency-ms")?,
            "--stop-on-stdin-eof" => parsed.stop_on_stdin_eof = true,
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if !SCENARIOS.iter().any(|(name, _, _)| *name == parsed.scenario) {
        return Err(format!("unknown scenario {:?}", parsed.scenario));
    }
    if !matches!(command, Command::Main | Command::Worker) && parsed.pg.is_none() {
        return Err("workers share a PostgreSQL database: add --pg URL (for example --pg postgres://postgres@127.0.0.1:5432/postgres)".to_owned());
    }
    if let Some(step) = &parsed.crash_after {
        if CodeChange::definition().step(step).is_none() {
            return Err(format!("--crash-after names no step: {step:?}"));
        }
        if parsed.db.is_none() && parsed.pg.is_none() {
            return Err("--crash-after needs a database to resume from: drop --memory".to_owned());
        }
    }
    Ok(parsed)
}

/// The fakes' state lives next to the database (`sagas.world.json` for `sagas.db`).
fn world_path(db: &Path) -> PathBuf {
    db.with_extension("world.json")
}

fn load_scenario(state: &mut WorldState, scenario: &str) {
    state.scenario = scenario.to_owned();
    state.model_faults.clear();
    state.ci_results.clear();
    state.rate_limits = 0;
    state.close_failures = 0;
    state.closes_before_outage = 0;
    state.buggy_code = false;
    state.plan_workflow_file = false;
    state.rotted_delete = false;
    match scenario {
        "flaky-vendor" => {
            state.model_faults.extend([ModelFault::Outage, ModelFault::Outage]);
            state.rate_limits = 1;
        }
        "wrong-answer" => state.model_faults.extend([ModelFault::Hallucinate; 3]),
        "schema-changed" => state.ci_results.push_back(CiResult::SchemaMoved),
        "half-written" => state.plan_workflow_file = true,
        "tests-fail" => state.buggy_code = true,
        "stuck-compensation" => {
            state.ci_results.extend([CiResult::Red; 4]);
            // The PR closes before each of the three re-prompts of write_files; the host goes
            // down for writes at the rollback.
            state.closes_before_outage = 3;
            state.close_failures = 4;
        }
        "debris" => {
            state.ci_results.extend([CiResult::Red; 4]);
            state.rotted_delete = true;
        }
        _ => {}
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) if error.is_empty() => {
            print!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprint!("error: {error}\n\n{}", usage());
            return ExitCode::from(2);
        }
    };
    let result = match args.command {
        Command::Main => run(args).await,
        Command::Worker => workers::worker(&args).await,
        Command::Enqueue => workers::enqueue(&args).await,
        Command::WorkersDemo => workers::demo(&args).await,
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let world_file = match (&args.world, &args.pg, &args.db) {
        (Some(path), _, _) => Some(path.clone()),
        (None, Some(_), _) => Some(PathBuf::from("pg.world.json")),
        (None, None, db) => db.as_deref().map(world_path),
    };
    if args.fresh {
        if let Some(url) = &args.pg {
            workers::drop_schema(url, MAIN_SCHEMA).await?;
        } else if let Some(db) = &args.db {
            let sidecar = |suffix: &str| {
                let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
                name.push(suffix);
                db.with_file_name(name)
            };
            for path in [db.clone(), sidecar("-wal"), sidecar("-shm"), sidecar(".lock")] {
                let _ = std::fs::remove_file(path);
            }
        }
        if let Some(world) = &world_file {
            let _ = std::fs::remove_file(world);
        }
    }
    let world = Arc::new(World::open(world_file.as_deref()));
    let started = Instant::now();
    let mut builder = demo_runtime(&world, started);
    let keyring = match std::env::var("SAGA_KEY") {
        // `<key id>:<64 hex digits>`, or the digits alone for key id `default`: the form the
        // `saga` CLI reads, so the same SAGA_KEY opens the database there.
        Ok(text) => {
            let (id, hex) = text.split_once(':').unwrap_or(("default", text.as_str()));
            println!("encrypting at rest with the key in SAGA_KEY (key id `{id}`)");
            Some(Keyring::new(EncryptionKey::from_hex(id, hex)?))
        }
        Err(_) => None,
    };
    let location = if let Some(url) = &args.pg {
        let mut options = PostgresStore::options(url).schema(MAIN_SCHEMA);
        if let Some(keyring) = keyring {
            options = options.encryption(keyring);
        }
        // A short lease: after a crash, the next run takes the saga over 5 s after the last
        // renewal of the stopped process (there is no lock file to tell it died).
        builder = with_store(builder.lease(Duration::from_secs(5)), options.connect().await?, &args.crash_after);
        format!("PostgreSQL (schema {MAIN_SCHEMA})")
    } else if let Some(db) = &args.db {
        let mut options = SqliteStore::options(db);
        if let Some(keyring) = keyring {
            options = options.encryption(keyring);
        }
        builder = with_store(builder, options.open().await?, &args.crash_after);
        db.display().to_string()
    } else {
        "memory".to_owned()
    };
    let runtime = builder.build();
    println!("{}", CodeChange::definition());

    // What a restarted worker does first: resume what a crash left unfinished.
    let unfinished: Vec<SagaSummary> = runtime.list_page(&SagaQuery::new().status(Status::Running)).await?.sagas;
    if !unfinished.is_empty() {
        for saga in &unfinished {
            let journal = runtime.journal(&saga.id).await?;
            println!("resuming saga {} from {location}: a previous run stopped at `{}`", saga.id, saga.stage);
            println!("  checkpointed steps (not run again): {}\n", checkpointed(&journal).join(", "));
        }
        // On PostgreSQL nothing tells that the stopped run died: its claim ends with its lease.
        let held_until = unfinished.iter().filter(|s| s.owner.is_some()).filter_map(|s| s.lease_until_ms).max();
        if let Some(until) = held_until {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
            if until > now {
                println!("the stopped run's lease ends in {:.1} s: waiting for it\n", (until - now) as f64 / 1000.0);
                tokio::time::sleep(Duration::from_millis(until - now + 50)).await;
            }
        }
        let recovery = runtime.recover().await?;
        let scenario = world.with(|state| state.scenario.clone());
        let mut code = ExitCode::SUCCESS;
        for (id, _) in recovery.resumed {
            let outcome = runtime.resume::<CodeChange>(&id).await?;
            println!();
            print_outcome(&outcome);
            code = check(&scenario, &outcome, code);
        }
        for id in &recovery.parked {
            println!(
                "saga {id} stays parked, waiting for a human (`resume` retries it, `resolve` records a fix by hand)"
            );
        }
        for (id, error) in recovery.failed {
            eprintln!("saga {id} could not be resumed: {error}");
            code = ExitCode::FAILURE;
        }
        print_world(&world);
        return Ok(code);
    }

    if args.db.is_some() || args.pg.is_some() {
        println!("no unfinished saga in {location}: starting a new one");
    }
    let scenario = args.scenario.clone();
    world.with(|state| load_scenario(state, &scenario));
    let (_, what, _) = SCENARIOS.iter().find(|(n, _, _)| *n == scenario).expect("checked scenario");
    println!("scenario {scenario}: {what}\n");
    let input = CodeChange {
        repo: "acme/api".to_owned(),
        issue: 1234,
        request: "Fix the login bug reported in issue #1234".to_owned(),
        host_token: Redacted::new("ghp_0123456789abcdefghijABCDEFGHIJ".to_owned()),
    };
    let outcome = runtime.run(input).await?;
    println!();
    print_outcome(&outcome);
    print_world(&world);
    let mut code = check(&scenario, &outcome, ExitCode::SUCCESS);
    if scenario == "debris" {
        code = sweep_debris(&runtime, &world, &outcome, code).await?;
    }
    Ok(code)
}

/// The cleanup job the seed asks for: a sweep joins the code host's branches with the store,
/// finds the branch the rotted compensation left behind, and removes it.
async fn sweep_debris(
    runtime: &Runtime,
    world: &World,
    outcome: &Outcome<agent::CodeChangeOutput>,
    code: ExitCode,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    println!("\nthe rollback said every file was deleted; the code host still has: {:?}", world.branches());
    println!("running a sweep (runtime.sweep()) to find resources whose saga was compensated:\n");
    let report = runtime.sweep().await?;
    for orphan in &report.orphans {
        println!(
            "  orphan {} `{}` of saga {}: {}; {}",
            orphan.kind,
            orphan.resource.id,
            orphan.resource.saga_id,
            orphan.reason,
            if orphan.removed { "removed" } else { "not removed" }
        );
    }
    println!("\n{report}");
    let journal = runtime.journal(outcome.saga_id()).await?;
    if let Some(last) = journal.last() {
        println!("the saga's journal ends with: {}", Timeline { definition: CodeChange::definition(), record: last });
    }
    print_world(world);
    if world.branches().is_empty() && report.orphans.iter().all(|o| o.removed) && !report.orphans.is_empty() {
        Ok(code)
    } else {
        eprintln!("the sweep should have removed the orphan branch");
        Ok(ExitCode::FAILURE)
    }
}

/// The code host's branches as a sweep sees them: each named `agent/<saga id>/...`.
fn branch_kind(world: &Arc<World>) -> saga_runtime::OrphanKind {
    let (listed, removed) = (world.clone(), world.clone());
    saga_runtime::OrphanKind::new(
        "branch",
        move || {
            let branches = listed.branches();
            async move {
                Ok(branches
                    .into_iter()
                    .filter_map(|(branch, _)| {
                        let saga = branch.strip_prefix("agent/")?.split('/').next()?.to_owned();
                        Some(saga_runtime::Tagged::new(branch, SagaId::new(saga)))
                    })
                    .collect())
            }
        },
        move |branch: saga_runtime::Tagged, key: String| {
            removed.delete_branch(&key, &branch.id);
            async { Ok(()) }
        },
    )
}

/// The runtime of the demo, without its store: short backoffs, the agent, the fakes, and a
/// timeline printed as it happens.
fn demo_runtime(world: &Arc<World>, started: Instant) -> saga_runtime::RuntimeBuilder {
    Runtime::builder()
        .policy(Policy {
            // Short delays keep the demo quick; the shape of the ladder is the default one.
            backoff: Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(2), ..Backoff::default() },
            ..Policy::default()
        })
        .register::<CodeChange>()
        .resource(world.clone())
        .orphans(branch_kind(world))
        // Every journal record as a line of the timeline; a worker runs many sagas at once, so
        // its lines name the process and the saga.
        .observer(
            saga_runtime::TimelinePrinter::stdout()
                .since(started)
                .prefix(fakes::process())
                .saga_ids(!fakes::process().is_empty()),
        )
        .notifier(|incident: &Incident| println!("           {}[notifier] {incident}", fakes::process()))
        .pager(|incident: &Incident| println!("           {}[pager] PAGE: {incident}", fakes::process()))
}

/// Puts `store` under the runtime, through the crash simulation when asked for.
fn with_store<S: CheckpointStore>(
    builder: saga_runtime::RuntimeBuilder,
    store: S,
    crash_after: &Option<String>,
) -> saga_runtime::RuntimeBuilder {
    match crash_after {
        Some(step) => builder.store(CrashAfter { inner: store, step: step.clone() }),
        None => builder.store(store),
    }
}

/// Exits non-zero when the scenario did not end as designed.
fn check(scenario: &str, outcome: &Outcome<agent::CodeChangeOutput>, code: ExitCode) -> ExitCode {
    let expected = SCENARIOS.iter().find(|(n, _, _)| *n == scenario).map_or(Status::Completed, |s| s.2);
    if outcome.status() != expected {
        eprintln!("scenario {scenario} should end {expected}, it ended {}", outcome.status());
        return ExitCode::FAILURE;
    }
    // The tests found the mistake once and blamed the code, which the rewrite fixed.
    let blames: Vec<(&str, &str)> =
        outcome.report().blames.iter().map(|b| (b.found_by.as_str(), b.reprompted.as_str())).collect();
    if scenario == "tests-fail" && blames != [("run_tests", "write_files")] {
        eprintln!("scenario tests-fail should re-prompt write_files once for run_tests, it blamed {blames:?}");
        return ExitCode::FAILURE;
    }
    code
}

fn checkpointed(journal: &[Record]) -> Vec<&'static str> {
    let steps = CodeChange::definition().steps();
    journal
        .iter()
        .filter_map(|r| match r.event {
            Event::StepCompleted { step, .. } => Some(steps[step as usize].name()),
            _ => None,
        })
        .collect()
}

fn print_outcome(outcome: &Outcome<agent::CodeChangeOutput>) {
    let report = outcome.report();
    match outcome {
        Outcome::Completed { saga_id, output, .. } => {
            println!("outcome: COMPLETED (saga {saga_id})");
            println!("  plan by {}: {}", output.plan.model, output.plan.summary);
            println!("  PR #{} merged as {}", output.open_pr, output.merge);
        }
        Outcome::Compensated { saga_id, failure, .. } => {
            println!("outcome: COMPENSATED (saga {saga_id}): {failure}");
        }
        Outcome::NeedsHuman { saga_id, failure, .. } => {
            println!("outcome: NEEDS A HUMAN (saga {saga_id}): {failure}");
        }
    }
    let levels: Vec<String> = report.levels().iter().map(|l| (*l as u8).to_string()).collect();
    println!(
        "  {} attempts, escalation levels [{}], {} compensation(s), {} restart(s), {} blame(s), slept {:?}, notified {}, paged {}",
        report.attempts.len(),
        levels.join(", "),
        report.compensations.len(),
        report.restarts.len(),
        report.blames.len(),
        report.slept,
        report.notified,
        report.paged
    );
}

pub(crate) fn print_world(world: &World) {
    world.with(|state| {
        let prs = |wanted: PrState| -> Vec<String> {
            state.prs.iter().filter(|(_, (_, s))| *s == wanted).map(|(n, _)| format!("#{n}")).collect()
        };
        let files: Vec<String> =
            state.branches.iter().flat_map(|(b, files)| files.keys().map(move |f| format!("{b}:{f}"))).collect();
        println!(
            "world: files {files:?}, open PRs {:?}, merged PRs {:?}, comments {}, announcements {}, model calls {}",
            prs(PrState::Open),
            prs(PrState::Merged),
            state.comments.len(),
            state.announcements.len(),
            state.model_calls
        );
    });
}

/// A store that kills the process right after the checkpoint of one step landed, to show a
/// crash and the resume (the demo's `--crash-after`).
struct CrashAfter<S> {
    inner: S,
    step: String,
}

impl<S: CheckpointStore> CheckpointStore for CrashAfter<S> {
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
        let lands = records.iter().any(|r| r.kind == "step_completed" && r.step.as_deref() == Some(self.step.as_str()));
        Box::pin(async move {
            self.inner.append(id, fence, records, checkpoint).await?;
            if lands {
                println!(
                    "\n*** simulated crash: the process dies right after the checkpoint of `{}` landed; run the same command again to resume ***",
                    self.step
                );
                std::process::exit(3);
            }
            Ok(())
        })
    }

    fn load<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<StoredSaga>, StoreError>> {
        self.inner.load(id)
    }

    fn list<'a>(&'a self, query: &'a SagaQuery) -> BoxFuture<'a, Result<SagaPage, StoreError>> {
        self.inner.list(query)
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
        self.inner.renew(owner, lease_until_ms)
    }

    fn release<'a>(&'a self, id: &'a SagaId, fence: &'a Fence) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.release(id, fence)
    }

    fn keyring(&self) -> Option<&Keyring> {
        self.inner.keyring()
    }

    fn location(&self) -> String {
        self.inner.location()
    }

    fn shared_limits(&self) -> Option<Arc<dyn saga_runtime::SharedLimits>> {
        self.inner.shared_limits()
    }
}
