//! The main job: a code-change agent saga, checkpointed in `sagas.db`, run against in-process
//! fakes, printing a timeline of every step, attempt, failure class, ladder level,
//! compensation and the outcome.
//!
//! ```text
//! cargo run -p saga-examples -- --scenario NAME [--crash-after STEP] [--db PATH | --memory] [--fresh]
//! ```
//!
//! Every run first resumes the sagas a crashed run left unfinished in the database; only when
//! there are none does it start a new one.

mod agent;
mod fakes;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use saga_runtime::journal::{Event, Record};
use saga_runtime::prelude::*;
use saga_runtime::store::{
    Checkpoint, Claim, ClaimRequest, Claimed, Created, Fence, NewSaga, RecordRow, SagaPage, SagaQuery, SagaSummary,
    SqliteStore, StoreError, StoredSaga,
};
use saga_runtime::{BoxFuture, EncryptionKey, Keyring, Redacted};

use agent::CodeChange;
use fakes::{CiResult, ModelFault, PrState, World, WorldState};

const SCENARIOS: [(&str, &str, Status); 6] = [
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
        "stuck-compensation",
        "the tests stay red (levels 1, 1, 2, 3), then closing the PR keeps failing: level 4",
        Status::NeedsHuman,
    ),
];

struct Args {
    scenario: String,
    db: Option<PathBuf>,
    crash_after: Option<String>,
    fresh: bool,
}

fn usage() -> String {
    let mut text = String::from(
        "usage: saga-examples [--scenario NAME] [--crash-after STEP] [--db PATH | --memory] [--fresh]\n\n\
         Runs a code-change agent saga checkpointed in sagas.db (--db to choose the file, --memory for none).\n\
         Each run first resumes the sagas a crashed run left unfinished; --crash-after STEP kills the\n\
         process right after STEP's checkpoint lands, so that the next run shows the resume.\n\
         --fresh deletes the database and the fakes' state first. With SAGA_KEY set to 64 hex digits,\n\
         inputs, outputs, effect results and failure messages are encrypted at rest.\n\nscenarios:\n",
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
    let mut args = std::env::args().skip(1);
    let mut parsed =
        Args { scenario: "happy".to_owned(), db: Some(PathBuf::from("sagas.db")), crash_after: None, fresh: false };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--scenario" | "-s" => parsed.scenario = args.next().ok_or("--scenario needs a name")?,
            "--db" => parsed.db = Some(PathBuf::from(args.next().ok_or("--db needs a path")?)),
            "--memory" => parsed.db = None,
            "--crash-after" => parsed.crash_after = Some(args.next().ok_or("--crash-after needs a step name")?),
            "--fresh" => parsed.fresh = true,
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if !SCENARIOS.iter().any(|(name, _, _)| *name == parsed.scenario) {
        return Err(format!("unknown scenario {:?}", parsed.scenario));
    }
    if let Some(step) = &parsed.crash_after {
        if CodeChange::definition().step(step).is_none() {
            return Err(format!("--crash-after names no step: {step:?}"));
        }
        if parsed.db.is_none() {
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
    state.plan_workflow_file = false;
    match scenario {
        "flaky-vendor" => {
            state.model_faults.extend([ModelFault::Outage, ModelFault::Outage]);
            state.rate_limits = 1;
        }
        "wrong-answer" => state.model_faults.extend([ModelFault::Hallucinate; 3]),
        "schema-changed" => state.ci_results.push_back(CiResult::SchemaMoved),
        "half-written" => state.plan_workflow_file = true,
        "stuck-compensation" => {
            state.ci_results.extend([CiResult::Red; 4]);
            state.close_failures = 4;
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
    match run(args).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if let (true, Some(db)) = (args.fresh, &args.db) {
        let sidecar = |suffix: &str| {
            let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
            name.push(suffix);
            db.with_file_name(name)
        };
        for path in [db.clone(), sidecar("-wal"), sidecar("-shm"), sidecar(".lock"), world_path(db)] {
            let _ = std::fs::remove_file(path);
        }
    }
    let world = Arc::new(World::open(args.db.as_deref().map(world_path).as_deref()));
    let started = Instant::now();
    let mut builder = Runtime::builder()
        .policy(Policy {
            // Short delays keep the demo quick; the shape of the ladder is the default one.
            backoff: Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(2), ..Backoff::default() },
            ..Policy::default()
        })
        .register::<CodeChange>()
        .resource(world.clone())
        .observer(move |event: &saga_runtime::Observed<'_>| {
            println!("{:>7.3}s  {}", started.elapsed().as_secs_f64(), event.timeline());
        })
        .notifier(|incident: &Incident| println!("           [notifier] {incident}"))
        .pager(|incident: &Incident| println!("           [pager] PAGE: {incident}"));
    if let Some(db) = &args.db {
        let mut options = SqliteStore::options(db);
        if let Ok(hex) = std::env::var("SAGA_KEY") {
            options = options.encryption(Keyring::new(EncryptionKey::from_hex("demo", &hex)?));
            println!("encrypting at rest with the key in SAGA_KEY (key id `demo`)");
        }
        let store = options.open().await?;
        builder = match &args.crash_after {
            Some(step) => builder.store(CrashAfter { inner: store, step: step.clone() }),
            None => builder.store(store),
        };
    }
    let runtime = builder.build();
    println!("{}", CodeChange::definition());

    // What a restarted worker does first: resume what a crash left unfinished.
    let unfinished: Vec<SagaSummary> = runtime.list_page(&SagaQuery::new().status(Status::Running)).await?.sagas;
    if !unfinished.is_empty() {
        let db = args.db.as_deref().unwrap_or(Path::new("memory")).display().to_string();
        for saga in &unfinished {
            let journal = runtime.journal(&saga.id).await?;
            println!("resuming saga {} from {db}: a previous run stopped at `{}`", saga.id, saga.stage);
            println!("  checkpointed steps (not run again): {}\n", checkpointed(&journal).join(", "));
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

    if let Some(db) = &args.db {
        println!("no unfinished saga in {}: starting a new one", db.display());
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
    Ok(check(&scenario, &outcome, ExitCode::SUCCESS))
}

/// Exits non-zero when the scenario did not end as designed.
fn check(scenario: &str, outcome: &Outcome<agent::CodeChangeOutput>, code: ExitCode) -> ExitCode {
    let expected = SCENARIOS.iter().find(|(n, _, _)| *n == scenario).map_or(Status::Completed, |s| s.2);
    if outcome.status() == expected {
        code
    } else {
        eprintln!("scenario {scenario} should end {expected}, it ended {}", outcome.status());
        ExitCode::FAILURE
    }
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
        "  {} attempts, escalation levels [{}], {} compensation(s), {} restart(s), slept {:?}, notified {}, paged {}",
        report.attempts.len(),
        levels.join(", "),
        report.compensations.len(),
        report.restarts.len(),
        report.slept,
        report.notified,
        report.paged
    );
}

fn print_world(world: &World) {
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
struct CrashAfter {
    inner: SqliteStore,
    step: String,
}

impl CheckpointStore for CrashAfter {
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
}
