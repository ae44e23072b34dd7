//! Prove your compensations in CI (feature `testing`): the seed's first warning is that
//! compensations rot ("test compensations in CI like you test forward actions"). One test runs
//! your saga through every way it can fail and checks that the world is left clean.
//!
//! ```
//! # use saga_runtime::prelude::*;
//! # use serde::{Deserialize, Serialize};
//! # use std::sync::{Arc, Mutex};
//! use saga_runtime::testing::FaultMatrix;
//!
//! /// A fake of the world the saga changes.
//! #[derive(Default)]
//! struct Accounts { holds: Mutex<Vec<u64>>, charged: Mutex<u64> }
//!
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! struct Pay { cents: u64 }
//!
//! #[saga]
//! impl Pay {
//!     /// The hold is an effect: journaled as it lands, so that the rollback can undo it even
//!     /// when the step's answer was lost.
//!     #[step(compensate = release)]
//!     async fn hold(&self, cx: &StepContext) -> StepResult<u64> {
//!         cx.effect("hold", async {
//!             cx.resource::<Arc<Accounts>>().holds.lock().unwrap().push(self.cents);
//!             Ok(self.cents)
//!         })
//!         .await
//!     }
//!     async fn release(&self, cx: &StepContext, _hold: Option<&u64>) -> StepResult<()> {
//!         for effect in cx.effects() {
//!             let cents: u64 = effect.result().map_err(StepError::logical)?;
//!             cx.resource::<Arc<Accounts>>().holds.lock().unwrap().retain(|h| *h != cents);
//!         }
//!         Ok(())
//!     }
//!     #[step(commit)]
//!     async fn charge(&self, cx: &StepContext, hold: &u64) -> StepResult<u64> {
//!         *cx.resource::<Arc<Accounts>>().charged.lock().unwrap() = *hold;
//!         Ok(*hold)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! FaultMatrix::new(|| Pay { cents: 500 })
//!     .world(|| Arc::new(Accounts::default()))
//!     .done(|world, output| *world.charged.lock().unwrap() == output.charge)
//!     .clean(|world| world.holds.lock().unwrap().is_empty() && *world.charged.lock().unwrap() == 0)
//!     .run()
//!     .await
//!     .assert_all_pass();
//! # }
//! ```
//!
//! The cells, for every step (see [`Fault`]): each failure class exhausting its rungs of the
//! ladder (and a transient blip that recovers), a lost response (the body ran, its answer never
//! arrived), and for compensable steps every compensation failing for good (the saga parks and
//! the page names the compensation; once the cause is gone, resuming undoes the rest) and run
//! twice in a row ("run twice = run once"); plus an in-process crash at every journal write of
//! an uninterrupted run. Each cell's outcome and levels are checked against the ladder, and the
//! world against `done` (after a completion) or `clean` (after a rollback). Backoffs are zero,
//! so the whole matrix runs in moments; use a paused clock (`#[tokio::test(start_paused =
//! true)]`) for sagas that sleep.

mod crash;
mod report;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use report::{CellResult, MatrixReport};

use self::crash::CrashStore;
use crate::definition::{Definition, StepKind};
use crate::error::{FailureClass, StepError};
use crate::faults::Faults;
use crate::id::SagaId;
use crate::journal::Timeline;
use crate::outcome::{Incident, Level, Outcome, Status};
use crate::policy::{Backoff, Jitter, Policy};
use crate::runtime::{Runtime, RuntimeBuilder};
use crate::saga::Saga;
use crate::store::{CheckpointStore as _, MemoryStore};

#[doc(hidden)]
pub use insta as __insta;

/// Snapshots a saga's definition (its name, version and fingerprint, and each step's name,
/// output type, kind, compensation, validator, timeout and rate limit) with insta, so that a
/// change to the saga's shape shows up in code review. Accept a change with
/// `INSTA_UPDATE=always cargo test` (or `cargo insta review`).
///
/// ```ignore
/// #[test]
/// fn the_definition_is_reviewed() {
///     saga_runtime::assert_definition_snapshot!(ReleasePr);
/// }
/// ```
#[macro_export]
macro_rules! assert_definition_snapshot {
    ($saga:ty) => {{
        let definition = <$saga as $crate::Saga>::definition().to_string();
        $crate::testing::__insta::assert_snapshot!(definition)
    }};
}

/// One way a step can fail, injected by the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fault {
    /// The first attempt fails transiently, the retry succeeds: the saga completes.
    TransientBlip,
    /// Every attempt fails transiently: retries, then level 3 (level 4 after the commit point).
    Transient,
    /// Every attempt fails logically: re-prompts, stronger tiers, then level 3 (or 4).
    Logical,
    /// Every attempt fails environmentally: restarts, then level 3 (or 4).
    Environmental,
    /// The first attempt's body runs (its side effects land) and its answer is lost (a
    /// transient failure): the retry must not do the work twice, and the saga completes.
    LostResponse,
    /// Every attempt's body runs and its answer is lost (compensable steps): the rollback must
    /// undo what the attempts did without an output (a compensation taking `Option<&T>`).
    LostResponses,
    /// The step's compensation fails for good during a rollback (a later step fails): the saga
    /// parks and the page names the compensation; once the cause is gone, resuming it undoes
    /// the rest.
    CompensationFails,
    /// The step's compensation runs twice in a row during a rollback: the world must be as
    /// after one run.
    CompensationTwice,
    /// The process stops (in process: the runtime is dropped and a fresh one resumes on the
    /// same store) just before journal write `n` of an uninterrupted run.
    CrashBefore(u32),
    /// Like [`CrashBefore`](Self::CrashBefore), just after write `n` committed.
    CrashAfter(u32),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::TransientBlip => f.write_str("transient once"),
            Fault::Transient => f.write_str("transient, every attempt"),
            Fault::Logical => f.write_str("logical, every attempt"),
            Fault::Environmental => f.write_str("environmental, every attempt"),
            Fault::LostResponse => f.write_str("lost response once"),
            Fault::LostResponses => f.write_str("lost response, every attempt"),
            Fault::CompensationFails => f.write_str("compensation fails for good"),
            Fault::CompensationTwice => f.write_str("compensation runs twice"),
            Fault::CrashBefore(n) => write!(f, "crash before write {n}"),
            Fault::CrashAfter(n) => write!(f, "crash after write {n}"),
        }
    }
}

/// One cell of the matrix: a fault at a step (for a crash, the step the write belongs to).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Cell {
    /// The step.
    pub step: &'static str,
    /// The fault.
    pub fault: Fault,
}

type Predicate<W> = Box<dyn Fn(&W) -> bool + Send + Sync>;
type Done<W, O> = Box<dyn Fn(&W, &O) -> bool + Send + Sync>;
type Picture<W> = Box<dyn Fn(&W) -> String + Send + Sync>;
type Filter = Box<dyn Fn(&Cell) -> bool + Send + Sync>;

/// A fault matrix for saga type `S` in a world `W` (see the [module](self)).
pub struct FaultMatrix<S: Saga, W = ()> {
    input: Box<dyn Fn() -> S + Send + Sync>,
    world: Box<dyn Fn() -> W + Send + Sync>,
    configure: Box<dyn Fn(RuntimeBuilder) -> RuntimeBuilder + Send + Sync>,
    done: Option<Done<W, S::Output>>,
    clean: Option<Predicate<W>>,
    state: Option<Picture<W>>,
    filter: Option<Filter>,
    sample: Option<(usize, u64)>,
    policy: Policy,
}

impl<S: Saga> FaultMatrix<S, ()> {
    /// A matrix for the saga `input` makes (a fresh one for every cell).
    pub fn new(input: impl Fn() -> S + Send + Sync + 'static) -> Self {
        FaultMatrix {
            input: Box::new(input),
            world: Box::new(|| ()),
            configure: Box::new(|builder| builder),
            done: None,
            clean: None,
            state: None,
            filter: None,
            sample: None,
            policy: Policy::default(),
        }
    }
}

impl<S: Saga, W: Clone + Send + Sync + 'static> FaultMatrix<S, W> {
    /// A fresh world for every cell (your fakes, or handles to sandboxes): registered as a
    /// resource of the runtime (`cx.resource::<W>()`), and handed to `done` and `clean`. Use a
    /// cheap handle (an `Arc`), as the matrix keeps a clone to look at after the run.
    pub fn world<W2: Clone + Send + Sync + 'static>(
        self,
        world: impl Fn() -> W2 + Send + Sync + 'static,
    ) -> FaultMatrix<S, W2> {
        FaultMatrix {
            input: self.input,
            world: Box::new(world),
            configure: self.configure,
            done: None,
            clean: None,
            state: None,
            filter: self.filter,
            sample: self.sample,
            policy: self.policy,
        }
    }

    /// Configures each cell's runtime further (resources, limits, a scrubber). The matrix sets
    /// the store, the pager, the notifier, the policy's backoffs and the faults itself.
    pub fn runtime(mut self, configure: impl Fn(RuntimeBuilder) -> RuntimeBuilder + Send + Sync + 'static) -> Self {
        self.configure = Box::new(configure);
        self
    }

    /// The budgets of the ladder (default [`Policy::default`]); backoffs are always zero.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// What "done" looks like after a completion.
    pub fn done(mut self, done: impl Fn(&W, &S::Output) -> bool + Send + Sync + 'static) -> Self {
        self.done = Some(Box::new(done));
        self
    }

    /// What "clean" looks like after a rollback: nothing the saga did is left.
    pub fn clean(mut self, clean: impl Fn(&W) -> bool + Send + Sync + 'static) -> Self {
        self.clean = Some(Box::new(clean));
        self
    }

    /// A comparable picture of the world (for "run twice = run once" and the crash cells, which
    /// compare worlds as well as the predicates). Without it they check the predicates only.
    pub fn state(mut self, state: impl Fn(&W) -> String + Send + Sync + 'static) -> Self {
        self.state = Some(Box::new(state));
        self
    }

    /// Only the cells `keep` keeps.
    pub fn only(mut self, keep: impl Fn(&Cell) -> bool + Send + Sync + 'static) -> Self {
        self.filter = Some(Box::new(keep));
        self
    }

    /// At most `cells` cells, drawn with `seed` (the same seed draws the same cells), for sagas
    /// too large to run whole on every commit.
    pub fn sample(mut self, cells: usize, seed: u64) -> Self {
        self.sample = Some((cells, seed));
        self
    }

    /// Runs every cell (one after the other, each on a fresh store and world) and returns the
    /// matrix.
    pub async fn run(&self) -> MatrixReport {
        let definition = S::definition();
        let baseline = self.baseline().await;
        let mut cells = self.cells(definition, &baseline);
        if let Some(keep) = &self.filter {
            cells.retain(|cell| keep(cell));
        }
        if let Some((count, seed)) = self.sample {
            let mut rng = fastrand::Rng::with_seed(seed);
            rng.shuffle(&mut cells);
            cells.truncate(count);
            cells.sort_by_key(|cell| (definition.position(cell.step), order(&cell.fault)));
        }
        let mut results = Vec::with_capacity(cells.len());
        for cell in cells {
            results.push(self.run_cell(definition, &baseline, cell).await);
        }
        MatrixReport { saga: definition.name(), cells: results }
    }

    fn policy_for_cells(&self) -> Policy {
        let zero =
            Backoff { initial: Duration::ZERO, max: Duration::ZERO, jitter: Jitter::None, ..self.policy.backoff };
        Policy { backoff: zero, ..self.policy.clone() }
    }

    /// A runtime on `store` with the world, the injected faults, and pages recorded.
    fn cell_runtime(
        &self,
        store: impl crate::CheckpointStore,
        world: &W,
        faults: Arc<Injected>,
        pages: &Pages,
    ) -> Runtime {
        let pages = pages.clone();
        (self.configure)(Runtime::builder())
            .store(store)
            .resource(world.clone())
            .policy(self.policy_for_cells())
            .notifier(|_: &Incident| {})
            .pager(move |incident: &Incident| pages.lock().unwrap_or_else(|e| e.into_inner()).push(incident.clone()))
            .register::<S>()
            .__faults(faults)
            .build()
    }

    /// The uninterrupted run: its outcome, world and journal writes (which the crash cells
    /// interrupt).
    async fn baseline(&self) -> Baseline {
        let world = (self.world)();
        let store = CrashStore::counting(MemoryStore::new(), S::definition());
        let runtime = self.cell_runtime(store.clone(), &world, Arc::new(Injected::none()), &Pages::default());
        let outcome = runtime.run_with_id(SagaId::new("matrix"), (self.input)()).await;
        let writes = store.writes();
        match outcome {
            Ok(outcome) => Baseline {
                status: Some(outcome.status()),
                state: self.state.as_ref().map(|state| state(&world)),
                writes,
                error: None,
            },
            Err(error) => Baseline { status: None, state: None, writes, error: Some(error.to_string()) },
        }
    }

    fn cells(&self, definition: &'static Definition, baseline: &Baseline) -> Vec<Cell> {
        let steps = definition.steps();
        let mut cells = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let name = step.name();
            for fault in
                [Fault::TransientBlip, Fault::Transient, Fault::Logical, Fault::Environmental, Fault::LostResponse]
            {
                cells.push(Cell { step: name, fault });
            }
            if step.kind() == StepKind::Compensable {
                cells.push(Cell { step: name, fault: Fault::LostResponses });
                // A rollback that reaches this compensation: a later step, up to the commit
                // point, fails for good.
                if rollback_trigger(definition, i).is_some() {
                    cells.push(Cell { step: name, fault: Fault::CompensationFails });
                    cells.push(Cell { step: name, fault: Fault::CompensationTwice });
                }
            }
        }
        for (n, write) in baseline.writes.iter().enumerate() {
            let n = n as u32 + 1;
            let step = write.step.and_then(|i| steps.get(i)).map_or("(create)", |s| s.name());
            cells.push(Cell { step, fault: Fault::CrashBefore(n) });
            cells.push(Cell { step, fault: Fault::CrashAfter(n) });
        }
        cells
    }

    async fn run_cell(&self, definition: &'static Definition, baseline: &Baseline, cell: Cell) -> CellResult {
        let mut result = CellResult::new(cell.clone());
        if let Some(error) = &baseline.error {
            result.problems.push(format!("the uninterrupted run failed: {error}"));
            return result;
        }
        let i = definition.position(cell.step);
        match cell.fault {
            Fault::CrashBefore(n) | Fault::CrashAfter(n) => self.crash_cell(baseline, n, &mut result).await,
            _ => {
                let i = i.expect("a step of the definition");
                self.fault_cell(definition, i, &mut result).await;
            }
        }
        result
    }

    /// A fault at step `i`: the run, the expected outcome and levels, the world.
    async fn fault_cell(&self, definition: &'static Definition, i: usize, result: &mut CellResult) {
        let fault = result.cell.fault;
        let trigger = rollback_trigger(definition, i);
        let faults = Arc::new(Injected::for_cell(i, fault, trigger));
        let world = (self.world)();
        let pages = Pages::default();
        let runtime = self.cell_runtime(MemoryStore::new(), &world, faults.clone(), &pages);
        let id = SagaId::new("matrix");
        let outcome = match runtime.run_with_id(id.clone(), (self.input)()).await {
            Ok(outcome) => outcome,
            Err(error) => {
                result.problems.push(format!("the runtime failed: {error}"));
                return;
            }
        };
        let expected = expectation(definition, &self.policy, i, fault);
        result.record(&outcome, expected.status);
        if outcome.report().levels() != expected.levels {
            result.problems.push(format!(
                "the ladder climbed {} where it should climb {}",
                levels(&outcome.report().levels()),
                levels(&expected.levels)
            ));
        }
        match fault {
            Fault::CompensationFails => {
                let compensation = definition.steps()[i].compensation().unwrap_or_default();
                let named = outcome.failure().and_then(|f| f.compensation.as_deref()) == Some(compensation);
                let paged = pages.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|incident| {
                    incident.failure.compensation.as_deref() == Some(compensation) && incident.level == Level::PageHuman
                });
                if !(named && paged) {
                    result.problems.push(format!(
                        "the park does not name compensation `{compensation}` (failure: {:?}; paged: {paged})",
                        outcome.failure().map(ToString::to_string)
                    ));
                }
                // The human fixes the cause and resumes: the compensation runs again, then the rest.
                faults.heal();
                match runtime.resume::<S>(&id).await {
                    Ok(resumed) => {
                        if resumed.status() != Status::Compensated {
                            result.problems.push(format!("after the fix, the resume ended {}", resumed.status()));
                        }
                        result.outcome = Some(resumed.status());
                        self.check_world(&world, &resumed, result);
                    }
                    Err(error) => result.problems.push(format!("resuming after the fix failed: {error}")),
                }
            }
            Fault::CompensationTwice => {
                self.check_world(&world, &outcome, result);
                if let Some(state) = &self.state {
                    // The same rollback with the compensation run once.
                    let once = (self.world)();
                    let single = Arc::new(Injected::rollback_only(trigger));
                    let runtime = self.cell_runtime(MemoryStore::new(), &once, single, &Pages::default());
                    if runtime.run_with_id(id.clone(), (self.input)()).await.is_ok() && state(&once) != state(&world) {
                        result.problems.push(format!(
                            "running the compensation twice left a different world than once:\n      once:  {}\n      twice: {}",
                            state(&once),
                            state(&world)
                        ));
                    }
                }
            }
            _ => self.check_world(&world, &outcome, result),
        }
        if !result.passed() {
            result.timeline = timeline::<S>(&runtime, &id).await;
        }
    }

    /// An in-process crash at write `n` of the uninterrupted run: the runtime is dropped
    /// there, a fresh one on the same store finishes the saga, and the outcome and the world
    /// must be those of the uninterrupted run.
    async fn crash_cell(&self, baseline: &Baseline, n: u32, result: &mut CellResult) {
        let after = matches!(result.cell.fault, Fault::CrashAfter(_));
        let world = (self.world)();
        let memory = MemoryStore::new();
        let store = CrashStore::crashing(memory.clone(), S::definition(), n, after);
        let id = SagaId::new("matrix");
        {
            let runtime = self.cell_runtime(store.clone(), &world, Arc::new(Injected::none()), &Pages::default());
            let run = runtime.run_with_id(id.clone(), (self.input)());
            tokio::select! {
                finished = run => {
                    if finished.is_ok() {
                        result.problems.push(format!("the run finished before write {n}: the saga writes differently from one run to the next"));
                    }
                }
                () = store.crashed() => {}
            }
            // The new process frees the claim the dead one held (as opening an embedded store
            // does), which a crash in the middle of the saga's creation leaves behind.
            if let Ok(Some(summary)) = memory.summary(&id).await
                && summary.owner.as_deref() == Some(runtime.owner())
            {
                let _ = memory.release(&id, &crate::store::Fence::new(runtime.owner(), summary.epoch)).await;
            }
        }
        let runtime = self.cell_runtime(memory, &world, Arc::new(Injected::none()), &Pages::default());
        match runtime.run_with_id(id.clone(), (self.input)()).await {
            Ok(outcome) => {
                result.record(&outcome, baseline.status.unwrap_or(Status::Completed));
                self.check_world(&world, &outcome, result);
                if let (Some(state), Some(expected)) = (&self.state, &baseline.state)
                    && state(&world) != *expected
                {
                    result.problems.push(format!(
                        "the world differs from the uninterrupted run's:\n      expected: {expected}\n      found:    {}",
                        state(&world)
                    ));
                }
            }
            Err(error) => result.problems.push(format!("resuming after the crash failed: {error}")),
        }
        if !result.passed() {
            result.timeline = timeline::<S>(&runtime, &id).await;
        }
    }

    /// `done` after a completion, `clean` after a rollback; nothing to check for a park after
    /// the commit point.
    fn check_world(&self, world: &W, outcome: &Outcome<S::Output>, result: &mut CellResult) {
        match outcome {
            Outcome::Completed { output, .. } => {
                if let Some(done) = &self.done {
                    let ok = done(world, output);
                    result.world = Some(ok);
                    if !ok {
                        result.problems.push("the saga completed but the world is not `done`".to_owned());
                    }
                }
            }
            Outcome::Compensated { .. } => {
                if let Some(clean) = &self.clean {
                    let ok = clean(world);
                    result.world = Some(ok);
                    if !ok {
                        result.problems.push("the saga was rolled back but the world is not `clean`".to_owned());
                    }
                }
            }
            Outcome::NeedsHuman { .. } => {}
        }
    }
}

type Pages = Arc<Mutex<Vec<Incident>>>;

/// The uninterrupted run.
struct Baseline {
    status: Option<Status>,
    state: Option<String>,
    writes: Vec<crash::Write>,
    error: Option<String>,
}

/// The later step whose failure for good rolls back through step `i`'s compensation: the next
/// step, if it is not after the commit point.
fn rollback_trigger(definition: &Definition, i: usize) -> Option<usize> {
    let next = i + 1;
    let within = next < definition.steps().len() && definition.commit_index().is_none_or(|commit| next <= commit);
    within.then_some(next)
}

/// Where a fault sorts within a step.
fn order(fault: &Fault) -> (u8, u32) {
    match fault {
        Fault::TransientBlip => (0, 0),
        Fault::Transient => (1, 0),
        Fault::Logical => (2, 0),
        Fault::Environmental => (3, 0),
        Fault::LostResponse => (4, 0),
        Fault::LostResponses => (5, 0),
        Fault::CompensationFails => (6, 0),
        Fault::CompensationTwice => (7, 0),
        Fault::CrashBefore(n) => (8, *n * 2),
        Fault::CrashAfter(n) => (8, *n * 2 + 1),
    }
}

/// What the ladder must do with `fault` at step `i`.
struct Expected {
    status: Status,
    levels: Vec<Level>,
}

fn expectation(definition: &Definition, policy: &Policy, i: usize, fault: Fault) -> Expected {
    let after_commit = definition.commit_index().is_some_and(|commit| i > commit);
    let (end_status, end_level) =
        if after_commit { (Status::NeedsHuman, Level::PageHuman) } else { (Status::Compensated, Level::Compensate) };
    let repeat = |level: Level, n: u32| std::iter::repeat_n(level, n as usize);
    let logical: Vec<Level> = repeat(Level::Reprompt, policy.reprompts)
        .chain(repeat(Level::SwitchModel, policy.model_tiers.max(1) - 1))
        .collect();
    match fault {
        Fault::TransientBlip | Fault::LostResponse => {
            Expected { status: Status::Completed, levels: vec![Level::Retry] }
        }
        Fault::Transient | Fault::LostResponses => Expected {
            status: end_status,
            levels: repeat(Level::Retry, policy.transient_retries).chain([end_level]).collect(),
        },
        Fault::Logical => Expected { status: end_status, levels: logical.into_iter().chain([end_level]).collect() },
        Fault::Environmental => Expected {
            status: end_status,
            levels: repeat(Level::Retry, policy.environment_restarts).chain([end_level]).collect(),
        },
        // The later step fails logically for good; the compensation then fails every time.
        Fault::CompensationFails => Expected {
            status: Status::NeedsHuman,
            levels: logical.into_iter().chain([Level::Compensate]).chain([Level::PageHuman]).collect(),
        },
        Fault::CompensationTwice => {
            Expected { status: Status::Compensated, levels: logical.into_iter().chain([Level::Compensate]).collect() }
        }
        Fault::CrashBefore(_) | Fault::CrashAfter(_) => Expected { status: Status::Completed, levels: Vec::new() },
    }
}

fn levels(levels: &[Level]) -> String {
    let numbers: Vec<String> = levels.iter().map(|l| (*l as u8).to_string()).collect();
    format!("[{}]", numbers.join(", "))
}

async fn timeline<S: Saga>(runtime: &Runtime, id: &SagaId) -> Vec<String> {
    match runtime.journal(id).await {
        Ok(journal) => {
            journal.iter().map(|record| Timeline { definition: S::definition(), record }.to_string()).collect()
        }
        Err(error) => vec![format!("(the journal cannot be read: {error})")],
    }
}

/// The faults of one cell.
struct Injected {
    /// The step the fault is at, and the fault.
    at: Option<(usize, Fault)>,
    /// The later step that fails for good to roll back through `at`'s compensation.
    trigger: Option<usize>,
    /// The cause was fixed (`CompensationFails`, before the resume).
    healed: AtomicBool,
    blips: AtomicU32,
}

impl Injected {
    fn none() -> Self {
        Injected { at: None, trigger: None, healed: AtomicBool::new(false), blips: AtomicU32::new(0) }
    }

    fn for_cell(step: usize, fault: Fault, trigger: Option<usize>) -> Self {
        // The compensation faults need a rollback through the step: a later step fails.
        let trigger = trigger.filter(|_| matches!(fault, Fault::CompensationFails | Fault::CompensationTwice));
        Injected { at: Some((step, fault)), trigger, ..Injected::none() }
    }

    /// Only a rollback through `trigger`'s failure, without a fault of its own (the single run
    /// `CompensationTwice` compares itself with).
    fn rollback_only(trigger: Option<usize>) -> Self {
        Injected { trigger, ..Injected::none() }
    }

    fn heal(&self) {
        self.healed.store(true, Ordering::SeqCst);
    }

    fn fault_at(&self, step: usize) -> Option<Fault> {
        match self.at {
            Some((at, fault)) if at == step => Some(fault),
            _ => None,
        }
    }
}

fn injected(class: FailureClass, what: &str) -> StepError {
    let message = format!("injected by the fault matrix: {what}");
    match class {
        FailureClass::Transient => StepError::transient(message),
        FailureClass::Logical => StepError::logical(message),
        FailureClass::Environmental => StepError::environmental(message),
    }
}

impl Faults for Injected {
    fn before_attempt(&self, step: usize, _attempt: u32) -> Option<StepError> {
        if self.trigger == Some(step) {
            return Some(injected(FailureClass::Logical, "a later step finds the result wrong, to roll back"));
        }
        match self.fault_at(step)? {
            Fault::TransientBlip if self.blips.fetch_add(1, Ordering::SeqCst) == 0 => {
                Some(injected(FailureClass::Transient, "503 Service Unavailable, once"))
            }
            Fault::Transient => Some(injected(FailureClass::Transient, "503 Service Unavailable")),
            Fault::Logical => Some(injected(FailureClass::Logical, "the answer is wrong")),
            Fault::Environmental => Some(injected(FailureClass::Environmental, "the environment changed")),
            _ => None,
        }
    }

    fn after_attempt(&self, step: usize, _attempt: u32) -> Option<StepError> {
        match self.fault_at(step)? {
            Fault::LostResponse if self.blips.fetch_add(1, Ordering::SeqCst) == 0 => {
                Some(injected(FailureClass::Transient, "the connection dropped before the answer arrived, once"))
            }
            Fault::LostResponses => {
                Some(injected(FailureClass::Transient, "the connection dropped before the answer arrived"))
            }
            _ => None,
        }
    }

    fn before_compensation(&self, step: usize, _attempt: u32) -> Option<StepError> {
        match self.fault_at(step)? {
            Fault::CompensationFails if !self.healed.load(Ordering::SeqCst) => {
                Some(injected(FailureClass::Transient, "the undo endpoint answers 502"))
            }
            _ => None,
        }
    }

    fn compensation_runs(&self, step: usize) -> u32 {
        match self.fault_at(step) {
            Some(Fault::CompensationTwice) => 2,
            _ => 1,
        }
    }
}
