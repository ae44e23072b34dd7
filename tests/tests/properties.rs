//! Property test: random failure schedules (which step fails, how, how often; which
//! compensations fail; random ladder budgets) against a reference model of the ladder written
//! from the table of DESIGN.md §4, independently of the runtime.
//!
//! The model consumes the calls the steps and compensations recorded themselves and predicts,
//! call by call, what the runtime must do next. So every run checks that:
//! - every completed compensable step before a failure is compensated exactly once, in
//!   reverse order, and nothing that is not live is ever compensated;
//! - nothing at or after the commit point is compensated once the commit succeeded;
//! - each failure class climbs its own rows in order and never spends another's budget
//!   (the recorded levels equal the model's);
//! - level 4 is reached only by a failed compensation, or by an exhausted ladder after the
//!   commit point;
//! - a logical failure that blames an earlier step undoes the steps back to it and re-prompts
//!   it with the failure (naming the step that found it) on the blamed step's own rungs, while
//!   a blame that cannot be followed re-prompts the failing step;
//! - the outcome agrees with the journal (replayed independently) and with the store.

mod common;

use std::time::Duration;

use common::*;
use proptest::prelude::*;
use saga_runtime::journal::summarize;
use saga_runtime::prelude::*;

const STEPS: [&str; 5] = ["open_pr", "run_tests", "comment", "merge", "announce"];
const COMMIT: usize = 3;
const COMPENSABLE: [bool; 5] = [true, false, true, false, false];

fn step_plan() -> impl Strategy<Value = Plan> {
    let restart = prop_oneof![
        Just(None),
        (0..STEPS.len()).prop_map(|i| Some(STEPS[i].to_owned())),
        Just(Some("nope".to_owned())),
    ];
    prop_oneof![
        4 => Just(Plan::Ok),
        3 => Just(Plan::Fail(StepError::transient("flaky"))),
        3 => Just(Plan::Fail(StepError::logical("wrong tool"))),
        2 => restart.prop_map(|from| {
            let error = StepError::environmental("moved").with_observation(serde_json::json!({ "v": 2 }));
            Plan::Fail(match from { Some(step) => error.restart_from(step), None => error })
        }),
        3 => blamed().prop_map(|step| Plan::Fail(StepError::logical("built on a wrong input").blame(step))),
        1 => Just(Plan::Wrong),
        1 => Just(Plan::Panic),
        1 => Just(Plan::Hang),
    ]
}

/// The step a logical failure blames: any step (earlier, itself, later, across the commit
/// point), or one the saga does not have.
fn blamed() -> impl Strategy<Value = String> {
    prop_oneof![4 => (0..STEPS.len()).prop_map(|i| STEPS[i].to_owned()), 1 => Just("nope".to_owned())]
}

fn undo_plan() -> impl Strategy<Value = Plan> {
    prop_oneof![
        3 => Just(Plan::Ok),
        2 => Just(Plan::Fail(StepError::transient("down"))),
        1 => Just(Plan::Fail(StepError::logical("refused"))),
        1 => Just(Plan::Panic),
    ]
}

#[derive(Clone, Debug)]
struct Case {
    steps: Vec<Vec<Plan>>,
    undos: Vec<Vec<Plan>>,
    policy: Policy,
}

fn case() -> impl Strategy<Value = Case> {
    let steps = prop::collection::vec(prop::collection::vec(step_plan(), 0..7), STEPS.len());
    let undos = prop::collection::vec(prop::collection::vec(undo_plan(), 0..7), 2);
    let budgets = (0..4u32, 0..3u32, 1..4u32, 0..3u32, 0..4u32);
    (steps, undos, budgets).prop_map(|(steps, undos, (t, r, tiers, e, c))| Case {
        steps,
        undos,
        policy: Policy {
            transient_retries: t,
            reprompts: r,
            model_tiers: tiers,
            environment_restarts: e,
            compensation_retries: c,
            interruptions: 5,
            step_timeout: Some(Duration::from_secs(5)),
            backoff: Backoff { jitter: Jitter::Full, ..Backoff::default() },
            ..Policy::default()
        },
    })
}

/// The message a failed call leaves in the journal (what `previous_error()` shows next).
fn failure_message(name: &str, result: &CallResult) -> Option<String> {
    match result {
        CallResult::Ok => None,
        CallResult::Wrong if name == "comment" => {
            Some("validator `non_empty` rejected the output: the comment is empty".to_owned())
        }
        CallResult::Wrong => None,
        CallResult::Failed(error) => Some(error.message().to_owned()),
        CallResult::Panicked => Some(format!("panicked: scripted panic in {name}")),
        CallResult::Hung => Some("timed out after 5s".to_owned()),
    }
}

/// The reference model: the ladder of DESIGN.md §4 as a plain interpreter of recorded calls.
#[derive(Debug)]
enum Phase {
    Forward(usize),
    Undo { queue: Vec<usize>, then: Then },
    ParkedAfterCommit(usize),
    ParkedUndo { queue: Vec<usize>, then: Then },
    Done(Status),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Then {
    RollBack,
    Reprompt(usize),
    Restart(usize),
    Blame(usize),
}

#[derive(Default, Clone, Debug)]
struct Budget {
    transient: u32,
    reprompts: u32,
    tier: u32,
    restarts: u32,
}

struct Model {
    policy: Policy,
    phase: Phase,
    live: [bool; 5],
    budgets: Vec<Budget>,
    compensation_failures: u32,
    committed: bool,
    /// `(level, class, step, blamed step)` of every escalation, as the model expects them.
    levels: Vec<(Level, FailureClass, String, Option<String>)>,
    /// `(found by, re-prompted)` of every blame.
    blames: Vec<(String, String)>,
    /// Attempts of each step so far, and of the current compensation of each step.
    attempts: [u32; 5],
    compensation_attempts: [u32; 5],
    /// The last failure message of each step, and of its current compensation.
    last_error: [Option<String>; 5],
    /// The step that found each step's last failure (a later one when it blamed this one).
    last_error_step: [Option<String>; 5],
    compensation_error: [Option<String>; 5],
    /// The compensations of the rollback, in order.
    rollback_undos: Vec<usize>,
    /// The live steps when the rollback started.
    live_at_rollback: Option<Vec<usize>>,
}

impl Model {
    fn new(policy: Policy) -> Self {
        Model {
            policy,
            phase: Phase::Forward(0),
            live: [false; 5],
            budgets: vec![Budget::default(); STEPS.len()],
            compensation_failures: 0,
            committed: false,
            levels: Vec::new(),
            blames: Vec::new(),
            attempts: [0; 5],
            compensation_attempts: [0; 5],
            last_error: Default::default(),
            last_error_step: Default::default(),
            compensation_error: Default::default(),
            rollback_undos: Vec::new(),
            live_at_rollback: None,
        }
    }

    fn live_in(&self, from: usize, to: usize) -> Vec<usize> {
        (from..to).filter(|&s| COMPENSABLE[s] && self.live[s]).collect()
    }

    fn exhausted(&mut self, step: usize, class: FailureClass) {
        if step > COMMIT {
            self.levels.push((Level::PageHuman, class, STEPS[step].into(), None));
            self.phase = Phase::ParkedAfterCommit(step);
        } else {
            self.levels.push((Level::Compensate, class, STEPS[step].into(), None));
            let queue = self.live_in(0, STEPS.len());
            self.live_at_rollback = Some(queue.iter().rev().copied().collect());
            self.phase = Phase::Undo { queue, then: Then::RollBack };
            self.settle();
        }
    }

    fn settle(&mut self) {
        if let Phase::Undo { queue, then } = &self.phase
            && queue.is_empty()
        {
            self.phase = match *then {
                Then::RollBack => Phase::Done(Status::Compensated),
                Then::Reprompt(step) => Phase::Forward(step),
                Then::Restart(from) => {
                    for b in &mut self.budgets[from..] {
                        (b.transient, b.reprompts, b.tier) = (0, 0, 0);
                    }
                    Phase::Forward(from)
                }
                Then::Blame(blamed) => {
                    // The steps after the blamed one run on a new input: fresh budgets. The
                    // blamed step keeps climbing.
                    for b in &mut self.budgets[blamed + 1..] {
                        (b.transient, b.reprompts, b.tier) = (0, 0, 0);
                    }
                    Phase::Forward(blamed)
                }
            };
        }
        if let Phase::Forward(n) = self.phase
            && n == STEPS.len()
        {
            self.phase = Phase::Done(Status::Completed);
        }
    }

    fn restart_point(step: usize, requested: Option<&str>) -> usize {
        match requested.and_then(|r| STEPS.iter().position(|s| *s == r)) {
            None => step,
            Some(from) if from > step => step,
            Some(from) if step > COMMIT && from <= COMMIT => step,
            Some(from) => from,
        }
    }

    fn step_failed(&mut self, step: usize, error: Option<&StepError>, rejected: bool) {
        let class = error.map_or(FailureClass::Logical, |e| e.class());
        let p = self.policy.clone();
        let b = &mut self.budgets[step];
        match class {
            FailureClass::Transient => {
                if b.transient < p.transient_retries {
                    b.transient += 1;
                    self.levels.push((Level::Retry, class, STEPS[step].into(), None));
                } else {
                    self.exhausted(step, class);
                }
            }
            FailureClass::Logical => {
                // A blame follows the rules of a restart point: an earlier step that may run
                // again, else the failing step itself.
                let requested = error.and_then(|e| e.blamed_step());
                let target = Self::restart_point(step, requested);
                let b = &mut self.budgets[target];
                let level = if b.reprompts < p.reprompts {
                    b.reprompts += 1;
                    Level::Reprompt
                } else if b.tier + 1 < p.model_tiers {
                    b.tier += 1;
                    Level::SwitchModel
                } else {
                    return self.exhausted(step, class);
                };
                let blamed = (target != step).then(|| STEPS[target].to_owned());
                self.levels.push((level, class, STEPS[step].into(), blamed));
                if requested.is_some_and(|r| r != STEPS[step]) {
                    self.blames.push((STEPS[step].into(), STEPS[target].into()));
                }
                if target != step {
                    self.last_error[target] = error.map(|e| e.message().to_owned());
                    self.last_error_step[target] = Some(STEPS[step].into());
                    let queue = self.live_in(target, step);
                    self.phase = Phase::Undo { queue, then: Then::Blame(target) };
                    self.settle();
                } else if rejected && COMPENSABLE[step] {
                    self.phase = Phase::Undo { queue: vec![step], then: Then::Reprompt(step) };
                }
            }
            FailureClass::Environmental => {
                if b.restarts < p.environment_restarts {
                    b.restarts += 1;
                    self.levels.push((Level::Retry, class, STEPS[step].into(), None));
                    let from = Self::restart_point(step, error.and_then(|e| e.restart_step()));
                    let queue = self.live_in(from, step);
                    self.phase = Phase::Undo { queue, then: Then::Restart(from) };
                    self.settle();
                } else {
                    self.exhausted(step, class);
                }
            }
        }
    }

    /// Consumes one recorded call; panics (failing the case) where the runtime strayed.
    fn call(&mut self, call: &Call) {
        match &mut self.phase {
            Phase::Forward(step) => {
                let step = *step;
                assert!(!call.undo, "expected step `{}`, the runtime compensated `{}`", STEPS[step], call.name);
                assert_eq!(call.name, STEPS[step], "steps run in order");
                self.attempts[step] += 1;
                assert_eq!(call.attempt, self.attempts[step], "attempt numbers of `{}` count every attempt", call.name);
                assert_eq!(call.tier, self.budgets[step].tier, "the model tier of `{}`", call.name);
                assert_eq!(call.previous_error, self.last_error[step], "previous_error() of `{}`", call.name);
                assert_eq!(call.previous_error_step, self.last_error_step[step], "who found `{}`'s error", call.name);
                // "This step's last failure": kept across later successes (a restart re-runs it).
                if let Some(message) = failure_message(&call.name, &call.result) {
                    self.last_error[step] = Some(message);
                    self.last_error_step[step] = Some(call.name.clone());
                }
                match &call.result {
                    CallResult::Ok => self.completed(step),
                    CallResult::Wrong if step == 2 => {
                        self.live[step] = true;
                        self.step_failed(step, None, true);
                    }
                    CallResult::Wrong => self.completed(step),
                    CallResult::Failed(error) => self.step_failed(step, Some(error), false),
                    CallResult::Panicked | CallResult::Hung => self.step_failed(step, None, false),
                }
            }
            Phase::Undo { queue, then } => {
                let top = *queue.last().expect("settled queues are not empty");
                let then = *then;
                assert!(call.undo, "expected the compensation of `{}`, the runtime ran `{}`", STEPS[top], call.name);
                assert_eq!(call.name, STEPS[top], "compensations run in reverse order");
                assert!(self.live[top], "`{}` was compensated while not live", call.name);
                assert!(!self.committed || then != Then::RollBack, "a rollback after the commit point");
                self.compensation_attempts[top] += 1;
                assert_eq!(
                    call.attempt, self.compensation_attempts[top],
                    "attempt numbers of the compensation of `{}`",
                    call.name
                );
                assert_eq!(call.previous_error, self.compensation_error[top], "previous_error() of a compensation");
                self.compensation_error[top] = failure_message(&call.name, &call.result);
                match call.result {
                    CallResult::Ok => {
                        self.live[top] = false;
                        self.compensation_failures = 0;
                        self.compensation_attempts[top] = 0;
                        if then == Then::RollBack {
                            self.rollback_undos.push(top);
                        }
                        let Phase::Undo { queue, .. } = &mut self.phase else { unreachable!() };
                        queue.pop();
                        self.settle();
                    }
                    _ => {
                        self.compensation_failures += 1;
                        if self.compensation_failures > self.policy.compensation_retries {
                            let class = match &call.result {
                                CallResult::Failed(error) => error.class(),
                                _ => FailureClass::Logical,
                            };
                            self.levels.push((Level::PageHuman, class, STEPS[top].into(), None));
                            let Phase::Undo { queue, then } = std::mem::replace(&mut self.phase, Phase::Forward(0))
                            else {
                                unreachable!()
                            };
                            self.phase = Phase::ParkedUndo { queue, then };
                        }
                    }
                }
            }
            other => panic!("the runtime ran `{}` while the saga was {other:?}", call.name),
        }
    }

    fn completed(&mut self, step: usize) {
        if COMPENSABLE[step] {
            self.live[step] = true;
        }
        if step == COMMIT {
            self.committed = true;
        }
        self.phase = Phase::Forward(step + 1);
        self.settle();
    }

    fn resume(&mut self) {
        self.phase = match std::mem::replace(&mut self.phase, Phase::Forward(0)) {
            Phase::ParkedAfterCommit(step) => {
                // A new pass through the ladder for every step (a blamed step gets its rungs
                // back), and the parked step's restarts too.
                for b in &mut self.budgets {
                    (b.transient, b.reprompts, b.tier) = (0, 0, 0);
                }
                self.budgets[step].restarts = 0;
                Phase::Forward(step)
            }
            Phase::ParkedUndo { queue, then } => {
                self.compensation_failures = 0;
                Phase::Undo { queue, then }
            }
            other => panic!("resumed while {other:?}"),
        };
    }

    fn status(&self) -> Status {
        match self.phase {
            Phase::Done(status) => status,
            Phase::ParkedAfterCommit(_) | Phase::ParkedUndo { .. } => Status::NeedsHuman,
            _ => Status::Running,
        }
    }
}

/// Scripted panics are expected by the hundred here: keep them out of the test output.
fn quiet_scripted_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let scripted = info.payload().downcast_ref::<String>().is_some_and(|m| m.starts_with("scripted panic"));
            if !scripted {
                default(info);
            }
        }));
    });
}

fn check(case: Case) -> Result<(), TestCaseError> {
    quiet_scripted_panics();
    let mut script = Script::new();
    for (step, plans) in STEPS.iter().zip(&case.steps) {
        script = script.then(step, plans.clone());
    }
    script = script.then("undo open_pr", case.undos[0].clone()).then("undo comment", case.undos[1].clone());
    let harness = Harness::with_script(script);
    let (runtime, incidents, store) = runtime(&harness, case.policy.clone());
    let tokio = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();

    let mut model = Model::new(case.policy.clone());
    let mut consumed = 0;
    let mut outcome = tokio.block_on(runtime.run(ReleasePr::new())).unwrap();
    for round in 0.. {
        let calls = harness.calls.lock().unwrap().clone();
        for call in &calls[consumed..] {
            model.call(call);
        }
        consumed = calls.len();

        // The outcome is what the model predicts, and what the journal and the store say.
        prop_assert_eq!(outcome.status(), model.status());
        let report = outcome.report();
        let recorded: Vec<(Level, FailureClass, String, Option<String>)> =
            report.escalations.iter().map(|e| (e.level, e.class, e.step.clone(), e.blamed.clone())).collect();
        prop_assert_eq!(&recorded, &model.levels);
        let blames: Vec<(String, String)> =
            report.blames.iter().map(|b| (b.found_by.clone(), b.reprompted.clone())).collect();
        prop_assert_eq!(&blames, &model.blames);
        let journal = tokio.block_on(runtime.journal(outcome.saga_id())).unwrap();
        let summary = summarize(ReleasePr::definition(), &journal).unwrap();
        prop_assert_eq!(summary.status, outcome.status());
        prop_assert_eq!(&summary.report, report);
        prop_assert_eq!(summary.failure.as_ref(), outcome.failure());
        let stored = tokio.block_on(listed(&store));
        prop_assert_eq!(stored[0].status, outcome.status());

        match &outcome {
            Outcome::Completed { .. } => {
                prop_assert!(model.live[0] && model.live[2], "a completed saga keeps every output");
                prop_assert!(model.rollback_undos.is_empty());
            }
            Outcome::Compensated { failure, .. } => {
                prop_assert!(!model.live.iter().any(|l| *l), "a compensated saga leaves nothing live");
                let expected = model.live_at_rollback.clone().unwrap_or_default();
                prop_assert_eq!(&model.rollback_undos, &expected, "each live step undone once, last first");
                prop_assert!(STEPS.iter().position(|s| *s == failure.step).unwrap() <= COMMIT);
            }
            Outcome::NeedsHuman { failure, .. } => {
                let last = report.escalations.last().unwrap();
                prop_assert_eq!(last.level, Level::PageHuman);
                let after_commit = STEPS.iter().position(|s| *s == failure.step).unwrap() > COMMIT;
                prop_assert!(
                    failure.compensation.is_some() || after_commit,
                    "level 4 only through a failed compensation or after the commit point: {}",
                    failure
                );
            }
        }
        // Notified once per rollback, paged once per park.
        let levels: Vec<Level> = incidents.all().iter().map(|i| i.0).collect();
        prop_assert_eq!(
            levels.iter().filter(|l| **l == Level::Compensate).count(),
            usize::from(model.live_at_rollback.is_some())
        );
        prop_assert_eq!(
            levels.iter().filter(|l| **l == Level::PageHuman).count(),
            report.escalations.iter().filter(|e| e.level == Level::PageHuman).count()
        );

        if !matches!(outcome, Outcome::NeedsHuman { .. }) || round == 3 {
            break;
        }
        model.resume();
        outcome = tokio.block_on(runtime.resume::<ReleasePr>(outcome.saga_id())).unwrap();
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_failure_schedules_keep_the_ladder_invariants(case in case()) {
        check(case)?;
    }
}
