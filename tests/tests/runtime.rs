//! The runtime's contract beyond the ladder: idempotency keys, saga-level idempotency of
//! `run_with_id`, timeouts, caught panics, resources, definitions, bad input.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use saga_runtime::prelude::*;
use saga_runtime::{FailureKind, StepKind};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// The idempotency key is 64 lowercase hex characters; equal across retries of a step;
/// different for another step, another saga id or another input; a compensation has its
/// own key, equal across its retries.
#[tokio::test(start_paused = true)]
async fn idempotency_keys_are_stable_per_step_and_distinct_across_steps_ids_and_inputs() {
    let script =
        Script::new().then("open_pr", transient(1)).then("comment", logical(1)).then("undo comment", transient(1));
    let harness = Harness::with_script(script);
    let (runtime, _, _) = runtime(&harness, exact_backoff());
    runtime.run_with_id(SagaId::new("a"), ReleasePr::new()).await.unwrap();
    let a_open = harness.key_of("open_pr#1");
    assert_eq!(a_open.len(), 64);
    assert!(a_open.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')));
    assert_eq!(harness.key_of("open_pr#2"), a_open, "a retry reuses the key");
    assert_eq!(harness.key_of("comment#2"), harness.key_of("comment#1"), "a re-prompt of a failed step reuses the key");

    let all_a: HashSet<String> =
        ["open_pr#1", "run_tests#1", "comment#1", "merge#1", "announce#1"].iter().map(|e| harness.key_of(e)).collect();
    assert_eq!(all_a.len(), 5, "each step has its own key");

    let other_id = Harness::default();
    let (runtime, _, _) = common::runtime(&other_id, exact_backoff());
    runtime.run_with_id(SagaId::new("b"), ReleasePr::new()).await.unwrap();
    assert_ne!(other_id.key_of("open_pr#1"), a_open, "another saga id, another key");

    let other_input = Harness::default();
    let (runtime, _, _) = common::runtime(&other_input, exact_backoff());
    let input = ReleasePr { branch: "fix-logout".into(), ..ReleasePr::new() };
    runtime.run_with_id(SagaId::new("a"), input).await.unwrap();
    assert_ne!(other_input.key_of("open_pr#1"), a_open, "another input, another key");

    // A compensation's key is its own and stable across its retries.
    let undo = Harness::with_script(Script::new().then("comment", [Plan::Wrong]).then("undo comment", transient(1)));
    let (runtime, _, _) = common::runtime(&undo, exact_backoff());
    runtime.run_with_id(SagaId::new("a"), ReleasePr::new()).await.unwrap();
    assert_eq!(undo.key_of("undo comment#1"), undo.key_of("undo comment#2"));
    assert_ne!(undo.key_of("undo comment#1"), undo.key_of("comment#1"));
    assert_eq!(undo.key_of("open_pr#1"), a_open, "same id, input and step: same key in another process");
}

/// `run_with_id` never starts a second saga: a finished one returns its stored outcome
/// (running nothing), and the same id with another input is an error.
#[tokio::test(start_paused = true)]
async fn run_with_id_returns_the_stored_outcome_of_a_finished_saga() {
    let harness = Harness::default();
    let (runtime, _, store) = runtime(&harness, exact_backoff());
    let first = runtime.run_with_id(SagaId::new("pr-42"), ReleasePr::new()).await.unwrap();
    let second = runtime.run_with_id(SagaId::new("pr-42"), ReleasePr::new()).await.unwrap();
    assert_eq!(harness.log().len(), 5, "the second call ran nothing");
    assert_eq!(first.output().unwrap().announce, second.output().unwrap().announce);
    assert_eq!(first.report(), second.report());
    assert_eq!(listed(&store).await.len(), 1);

    let other = ReleasePr { branch: "other".into(), ..ReleasePr::new() };
    let error = runtime.run_with_id(SagaId::new("pr-42"), other).await.unwrap_err();
    assert!(matches!(error, RuntimeError::InputMismatch { .. }));
    assert_eq!(
        error.to_string(),
        "saga `pr-42` already exists with a different input: the same id never starts a second saga, so use a new SagaId for new input"
    );

    let compensated = Harness::with_script(Script::new().then("comment", transient(4)));
    let (runtime, _, _) = common::runtime(&compensated, exact_backoff());
    let first = runtime.run_with_id(SagaId::new("x"), ReleasePr::new()).await.unwrap();
    let second = runtime.run_with_id(SagaId::new("x"), ReleasePr::new()).await.unwrap();
    assert!(matches!(second, Outcome::Compensated { .. }));
    assert_eq!(first.failure(), second.failure());
    assert_eq!(compensated.log().len(), 7);
}

/// Two concurrent `run_with_id` calls with one id run the saga once; both get its outcome.
#[tokio::test(start_paused = true)]
async fn concurrent_run_with_id_calls_run_the_saga_once() {
    let harness = Harness::with_script(Script::new().then("run_tests", transient(2)));
    let (runtime, _, _) = runtime(&harness, exact_backoff());
    let (a, b) = tokio::join!(
        runtime.run_with_id(SagaId::new("once"), ReleasePr::new()),
        runtime.run_with_id(SagaId::new("once"), ReleasePr::new()),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.is_completed() && b.is_completed());
    assert_eq!(
        harness.log(),
        strings(&["open_pr#1", "run_tests#1", "run_tests#2", "run_tests#3", "comment#1", "merge#1", "announce#1"])
    );
    assert_eq!(a.report(), b.report());
}

/// Unknown ids, the wrong saga type and another definition of the same saga are clear
/// errors that change nothing.
#[tokio::test(start_paused = true)]
async fn resuming_with_bad_input_is_a_clear_error_that_changes_nothing() {
    let harness = Harness::with_script(Script::new().then("announce", logical(4)));
    let (runtime, _, _) = runtime(&harness, exact_backoff());
    let parked = runtime.run_with_id(SagaId::new("r-1"), ReleasePr::new()).await.unwrap();
    assert!(matches!(parked, Outcome::NeedsHuman { .. }));
    let journal = runtime.journal(&SagaId::new("r-1")).await.unwrap();

    let error = runtime.resume::<ReleasePr>(&SagaId::new("nope")).await.unwrap_err();
    assert_eq!(error.to_string(), "no saga with id `nope` is stored: check the id, or start it with `run_with_id`");

    let error = runtime.resume::<Slow>(&SagaId::new("r-1")).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "saga `r-1` is a `release-pr` saga, not a `slow-poke` one: resume it with its own type"
    );

    let error = runtime.resume::<ReleasePrV2>(&SagaId::new("r-1")).await.unwrap_err();
    let RuntimeError::DefinitionMismatch {
        stored_version,
        current_version,
        stored_fingerprint,
        current_fingerprint,
        ..
    } = &error
    else {
        panic!("expected DefinitionMismatch, got {error:?}")
    };
    assert_eq!((*stored_version, *current_version), (1, 2));
    assert_eq!(stored_fingerprint, ReleasePr::definition().fingerprint());
    assert_eq!(current_fingerprint, ReleasePrV2::definition().fingerprint());
    let message = error.to_string();
    assert!(message.contains("version 1") && message.contains("version 2"), "{message}");
    assert!(message.contains("nothing was changed"), "{message}");

    assert_eq!(runtime.journal(&SagaId::new("r-1")).await.unwrap(), journal, "the journal is untouched");
    assert_eq!(harness.log().len(), 8);
}

/// A step that hangs past its timeout is a logical failure (`TimedOut`): a per-step
/// `timeout` overrides the policy's, and the retry is a re-prompt.
#[tokio::test(start_paused = true)]
async fn a_step_past_its_timeout_is_a_logical_failure() {
    let runtime =
        Runtime::builder().policy(Policy { step_timeout: Some(Duration::from_secs(60)), ..Policy::default() }).build();
    let start = Instant::now();
    let outcome = runtime.run(Slow { hang_attempts: 1 }).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(2), "the step's 2s timeout beats the policy's 60s");
    assert_eq!(outcome.output().unwrap().think, 2);
    let escalation = &outcome.report().escalations[0];
    assert_eq!((escalation.level, escalation.class, escalation.attempt), (Level::Reprompt, FailureClass::Logical, 1));
    assert_eq!(escalation.error, "timed out after 2s");
    // The policy's timeout applies to steps without their own.
    let start = Instant::now();
    let outcome = runtime.run(Slow { hang_attempts: 0 }).await.unwrap();
    assert!(outcome.is_completed());
    assert_eq!(start.elapsed(), Duration::from_secs(60));
    assert_eq!(outcome.report().escalations[0].error, "timed out after 60s");
    assert_eq!(outcome.report().escalations[0].step, "ponder");
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Slow {
    hang_attempts: u32,
}

#[saga(name = "slow-poke", version = 3)]
impl Slow {
    #[step(idempotent, timeout = "2s")]
    async fn think(&self, cx: &StepContext) -> StepResult<u32> {
        if cx.attempt() <= self.hang_attempts {
            std::future::pending::<()>().await;
        }
        Ok(cx.attempt())
    }

    /// Hangs once when `hang_attempts` is 0 (so the first test never reaches its hang).
    #[step(idempotent)]
    async fn ponder(&self, cx: &StepContext, think: &u32) -> StepResult<u32> {
        if self.hang_attempts == 0 && cx.attempt() == 1 {
            std::future::pending::<()>().await;
        }
        Ok(*think)
    }
}

/// A panic inside a step is caught and is a logical failure of that step; a panic inside a
/// compensation is a failure of that compensation. The runtime keeps going.
#[tokio::test(start_paused = true)]
async fn panics_are_caught_as_failures() {
    let harness = Harness::with_script(
        Script::new()
            .then("run_tests", [Plan::Panic])
            .then("comment", transient(4))
            .then("undo open_pr", [Plan::Panic]),
    );
    let (runtime, incidents, _) = runtime(&harness, exact_backoff());
    let outcome = runtime.run(ReleasePr::new()).await.unwrap();
    assert_eq!(
        harness.log(),
        strings(&[
            "open_pr#1",
            "run_tests#1",
            "run_tests#2",
            "comment#1",
            "comment#2",
            "comment#3",
            "comment#4",
            "undo open_pr#1",
            "undo open_pr#2"
        ])
    );
    let (l, t) = (FailureClass::Logical, FailureClass::Transient);
    assert_eq!(
        escalations(outcome.report()),
        [
            (1, l, "run_tests".into(), 1),
            (0, t, "comment".into(), 1),
            (0, t, "comment".into(), 2),
            (0, t, "comment".into(), 3),
            (3, t, "comment".into(), 4)
        ]
    );
    let first = &outcome.report().escalations[0];
    assert_eq!(first.error, "panicked: scripted panic in run_tests");
    assert!(matches!(outcome, Outcome::Compensated { .. }));
    let undo = &outcome.report().compensations[0];
    assert_eq!((undo.attempts, undo.done), (2, true));
    assert_eq!(undo.errors, ["panicked: scripted panic in open_pr"]);
    assert_eq!(outcome.report().slept, Duration::from_millis(500 + 1_000 + 2_000 + 500));
    assert_eq!(incidents.all().len(), 1);
}

/// `cx.resource::<T>()` returns what the builder registered; a missing resource is a
/// configuration bug: the saga parks at once (no re-prompt, no tier switch, no compensation)
/// with a message naming the type and the fix (tests/misconfigured.rs covers the resume).
#[tokio::test(start_paused = true)]
async fn resources_are_reached_by_type_and_a_missing_one_names_the_fix() {
    let outcome = Runtime::builder().resource(Greeting("hello".into())).build().run(Greeter).await.unwrap();
    assert_eq!(outcome.output().unwrap().greet, "hello, world");

    let paged = Arc::new(Mutex::new(Vec::new()));
    let sink = paged.clone();
    let runtime = Runtime::builder().pager(move |i: &Incident| sink.lock().unwrap().push(i.failure.clone())).build();
    let outcome = runtime.run(Greeter).await.unwrap();
    let Outcome::NeedsHuman { failure, report, .. } = &outcome else { panic!("expected NeedsHuman, got {outcome:?}") };
    assert_eq!((failure.kind, failure.class, failure.attempt), (FailureKind::Misconfigured, FailureClass::Logical, 1));
    assert_eq!(
        failure.message,
        "no resource of type `runtime::Greeting` is registered on this Runtime: add `.resource(value)` to `Runtime::builder()`, then `resume` the saga (it is parked, nothing was compensated)"
    );
    assert_eq!(report.levels(), [Level::PageHuman]);
    assert!(report.compensations.is_empty());
    assert_eq!(report.attempts.len(), 1);
    assert_eq!(paged.lock().unwrap().as_slice(), std::slice::from_ref(failure));
}

struct Greeting(String);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Greeter;

#[saga]
impl Greeter {
    #[step(idempotent)]
    async fn greet(&self, cx: &StepContext) -> StepResult<String> {
        Ok(format!("{}, world", cx.resource::<Greeting>().0))
    }
}

/// `(name, kind, compensation, validator, inputs)` of a step definition.
type StepRow = (&'static str, StepKind, Option<&'static str>, Option<&'static str>, &'static [usize]);

/// The definition is inspectable at run time: name, version, fingerprint, and the ordered
/// steps with their kind, compensation, validator, timeout and inputs.
#[test]
fn the_definition_describes_the_saga() {
    let d = ReleasePr::definition();
    assert_eq!((d.name(), d.version()), ("release-pr", 1));
    assert_eq!(d.fingerprint().len(), 16);
    let steps: Vec<StepRow> =
        d.steps().iter().map(|s| (s.name(), s.kind(), s.compensation(), s.validate(), s.inputs())).collect();
    assert_eq!(
        steps,
        [
            ("open_pr", StepKind::Compensable, Some("close_pr"), None, &[][..]),
            ("run_tests", StepKind::Idempotent, None, None, &[0][..]),
            ("comment", StepKind::Compensable, Some("delete_comment"), Some("non_empty"), &[1][..]),
            ("merge", StepKind::Commit, None, None, &[0][..]),
            ("announce", StepKind::Idempotent, None, None, &[3][..]),
        ]
    );
    assert_eq!(d.commit_index(), Some(3));
    assert_eq!(d.steps()[0].output_type(), "PrId");
    let slow = Slow::definition();
    assert_eq!((slow.name(), slow.version()), ("slow-poke", 3));
    assert_eq!(slow.steps()[0].timeout(), Some(Duration::from_secs(2)));
    assert_ne!(ReleasePrV2::definition().fingerprint(), d.fingerprint());
    assert_eq!(
        d.to_string(),
        format!(
            "release-pr v1 ({})\n  1. open_pr -> PrId: compensate = close_pr\n  2. run_tests -> TestReport: idempotent\n  3. comment -> CommentId: compensate = delete_comment, validate = non_empty\n  4. merge -> String: commit\n  5. announce -> String: idempotent\n",
            d.fingerprint()
        )
    );
}

/// The generated output struct prints every field.
#[tokio::test(start_paused = true)]
async fn the_generated_output_prints_and_serializes_every_step() {
    let harness = Harness::default();
    let (runtime, _, _) = runtime(&harness, exact_backoff());
    let output = runtime.run(ReleasePr::new()).await.unwrap().into_output().unwrap();
    assert_eq!(
        format!("{output:?}"),
        r#"ReleasePrOutput { open_pr: PrId(42), run_tests: TestReport { passed: 42 }, comment: CommentId("42 tests passed"), merge: "sha-of-42", announce: "released sha-of-42" }"#
    );
    assert_eq!(output.merge, "sha-of-42");
}

/// A saga whose impl block is written by a `macro_rules!` macro (hygienic identifiers)
/// expands and runs like any other.
#[tokio::test(start_paused = true)]
async fn a_saga_written_by_a_declarative_macro_runs() {
    macro_rules! counting_saga {
        ($name:ident: $($step:ident),+) => {
            #[derive(Debug, Clone, Serialize, Deserialize)]
            struct $name;

            #[saga]
            impl $name {
                $(
                    #[step(compensate = undo, validate = positive)]
                    async fn $step(&self, cx: &StepContext) -> StepResult<u32> {
                        Ok(cx.attempt())
                    }
                )+
                async fn undo(&self, _cx: &StepContext, _n: &u32) -> StepResult<()> {
                    Ok(())
                }
                fn positive(&self, n: &u32) -> Result<(), String> {
                    if *n > 0 { Ok(()) } else { Err("zero".into()) }
                }
            }
        };
    }
    counting_saga!(Counting: first, second);
    let outcome = Runtime::default().run(Counting).await.unwrap();
    let output = outcome.output().unwrap();
    assert_eq!((output.first, output.second), (1, 1));
    assert_eq!(Counting::definition().steps().len(), 2);
}

/// A saga interrupted between two journal writes is resumed by `run_with_id`: the steps whose
/// completion was journaled do not run again; the step that ran but whose completion was not
/// journaled had its start journaled, so the resume counts that attempt as interrupted (a
/// transient failure, level 0) and runs it again under the same idempotency key.
#[tokio::test(start_paused = true)]
async fn run_with_id_resumes_an_interrupted_saga_without_rerunning_journaled_steps() {
    let harness = Harness::default();
    // The saga is created with open_pr's start; then appends: 1 open_pr done + run_tests
    // starts; 2 run_tests done + comment starts; 3 comment done + merge starts (fails: the
    // process "dies" after comment ran).
    let store = FlakyStore::failing_append(3);
    let runtime = Runtime::builder().store(store.clone()).policy(exact_backoff()).resource(harness.clone()).build();
    let error = runtime.run_with_id(SagaId::new("job-9"), ReleasePr::new()).await.unwrap_err();
    assert_eq!(error.to_string(), format!("saga `{}`: disk full", error.saga_id().unwrap()));
    assert_eq!(harness.log(), strings(&["open_pr#1", "run_tests#1", "comment#1"]));
    let summary = &listed(&store.inner).await[0];
    assert_eq!((summary.status, summary.stage.as_str()), (Status::Running, "comment"));

    let start = Instant::now();
    let outcome = runtime.run_with_id(SagaId::new("job-9"), ReleasePr::new()).await.unwrap();
    assert!(outcome.is_completed());
    assert_eq!(
        harness.log(),
        strings(&["open_pr#1", "run_tests#1", "comment#1", "comment#2", "merge#1", "announce#1"])
    );
    assert_eq!(harness.key_of("comment#1"), harness.key_of("comment#2"), "the re-run reuses its key");
    let interrupted = &outcome.report().escalations;
    assert_eq!(escalations(outcome.report()), [(0, FailureClass::Transient, "comment".into(), 1)]);
    assert_eq!(interrupted[0].error, "the process stopped during this attempt (a crash or a shutdown)");
    assert_eq!(start.elapsed(), Duration::from_millis(500), "the interrupted attempt is retried with backoff");
    assert_eq!(outcome.output().unwrap().open_pr, PrId(42), "the journaled output is restored");
}

/// The runtime's futures are `Send`: a saga runs on a spawned task of a multi-threaded
/// runtime, and so do `resume`, `recover` and `resolve`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_runs_on_spawned_tasks() {
    fn assert_send<T: Send>(_: &T) {}
    let harness = Harness::default();
    let (runtime, _, _) = runtime(&harness, exact_backoff());
    let id = SagaId::new("spawned");
    assert_send(&runtime.resume::<ReleasePr>(&id));
    assert_send(&runtime.recover());
    assert_send(&runtime.resolve(&id, "note"));
    let task = tokio::spawn({
        let runtime = runtime.clone();
        async move { runtime.run_with_id(SagaId::new("spawned"), ReleasePr::new()).await }
    });
    let outcome = task.await.unwrap().unwrap();
    assert!(outcome.is_completed());
    assert_eq!(harness.log().len(), 5);
}

/// The page of a park is sent after the park is journaled. If the process stops in between,
/// the next load of the saga (here `run_with_id`) pages, once.
#[tokio::test(start_paused = true)]
async fn a_page_lost_to_a_stop_is_sent_when_the_saga_is_next_loaded() {
    let harness = Harness::with_script(Script::new().then("announce", logical(4)));
    // The creation carries open_pr's start, then one append per step up to announce's
    // attempts: open_pr, run_tests, comment, merge, announce x4 (the 4th carries the park),
    // and the 9th write, carrying `paged`, fails.
    let store = FlakyStore::failing_append(9);
    let incidents = Incidents::default();
    let paged = incidents.clone();
    let runtime = Runtime::builder()
        .store(store.clone())
        .policy(exact_backoff())
        .resource(harness.clone())
        .pager(move |i: &Incident| {
            paged.0.lock().unwrap().push((i.level, i.failure.step.clone(), i.failure.message.clone()))
        })
        .build();
    let error = runtime.run_with_id(SagaId::new("lost-page"), ReleasePr::new()).await.unwrap_err();
    assert_eq!(error.to_string(), format!("saga `{}`: disk full", error.saga_id().unwrap()));
    assert_eq!(incidents.all().len(), 1, "the pager was called before the write failed");
    let journal = store.inner.load(&SagaId::new("lost-page")).await.unwrap().unwrap().records;
    assert!(!journal.iter().any(|r| r.kind == "paged"), "the page is not on record");

    let outcome = runtime.run_with_id(SagaId::new("lost-page"), ReleasePr::new()).await.unwrap();
    assert!(matches!(outcome, Outcome::NeedsHuman { .. }));
    assert_eq!(incidents.all().len(), 2, "paged again, since the first page is not on record");
    assert_eq!(outcome.report().paged, 1);
    let again = runtime.run_with_id(SagaId::new("lost-page"), ReleasePr::new()).await.unwrap();
    assert!(matches!(again, Outcome::NeedsHuman { .. }));
    assert_eq!(incidents.all().len(), 2, "a recorded page is not sent again");
    assert_eq!(harness.log().len(), 8, "no step ran again");
}

/// A validator that panics is caught: its output counts as rejected (a logical failure).
#[tokio::test(start_paused = true)]
async fn a_panicking_validator_rejects_the_output() {
    let outcome = Runtime::default().run(Touchy).await.unwrap();
    let escalation = &outcome.report().escalations[0];
    assert_eq!((escalation.level, escalation.class), (Level::Reprompt, FailureClass::Logical));
    assert_eq!(escalation.error, "validator `sane` rejected the output: it panicked: cannot judge 1");
    assert_eq!(outcome.output().unwrap().pick, 2, "the re-prompt's output passed");
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Touchy;

#[saga]
impl Touchy {
    #[step(idempotent, validate = sane)]
    async fn pick(&self, cx: &StepContext) -> StepResult<u32> {
        Ok(cx.attempt())
    }
    fn sane(&self, pick: &u32) -> Result<(), String> {
        assert!(*pick > 1, "cannot judge {pick}");
        Ok(())
    }
}

/// Interruptions by a stop of the process have a budget of their own: a step that spent its
/// transient retries is still resumed after crashes (level 0, kind `Interrupted`); a step that
/// is interrupted every time is parked for a human (level 4) instead of looping, and never
/// rolled back; a crash loop that interrupts one step after another never stops the saga.
#[tokio::test(start_paused = true)]
async fn interruptions_have_a_budget_of_their_own() {
    let mut plans = transient(3);
    plans.extend([Plan::Hang, Plan::Hang]);
    let harness = Harness::with_script(Script::new().then("comment", plans));
    let (runtime, _, _) = runtime(&harness, exact_backoff());
    let id = SagaId::new("crashy");
    for _ in 0..2 {
        let cut =
            tokio::time::timeout(Duration::from_secs(100), runtime.run_with_id(id.clone(), ReleasePr::new())).await;
        assert!(cut.is_err(), "the run hangs in `comment` and is cut off, as by a crash");
    }
    let outcome = runtime.run_with_id(id.clone(), ReleasePr::new()).await.unwrap();
    assert!(outcome.is_completed(), "{outcome:?}");
    let kinds: Vec<(u8, FailureKind)> = runtime
        .journal(&id)
        .await
        .unwrap()
        .iter()
        .filter_map(|r| match &r.event {
            saga_runtime::journal::Event::StepFailed { failure, next, .. } => Some((next.level() as u8, failure.kind)),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (0, FailureKind::Error),
            (0, FailureKind::Error),
            (0, FailureKind::Error),
            (0, FailureKind::Interrupted),
            (0, FailureKind::Interrupted)
        ],
        "the transient budget (3) was spent, and the interruptions did not need it"
    );
    // The report says the same: an interrupted attempt does not read as a plain transient one.
    let escalations: Vec<(Level, FailureClass, FailureKind, &str, u32)> =
        outcome.report().escalations.iter().map(|e| (e.level, e.class, e.kind, e.step.as_str(), e.attempt)).collect();
    assert_eq!(
        escalations,
        [
            (Level::Retry, FailureClass::Transient, FailureKind::Error, "comment", 1),
            (Level::Retry, FailureClass::Transient, FailureKind::Error, "comment", 2),
            (Level::Retry, FailureClass::Transient, FailureKind::Error, "comment", 3),
            (Level::Retry, FailureClass::Transient, FailureKind::Interrupted, "comment", 4),
            (Level::Retry, FailureClass::Transient, FailureKind::Interrupted, "comment", 5),
        ]
    );

    // A step that dies with its process every time is parked for a human after
    // `interruptions` stops in a row: never rolled back (a crash it did not cause looks the
    // same), and the page names the step.
    let harness = Harness::with_script(Script::new().then("run_tests", vec![Plan::Hang; 3]));
    let (runtime, incidents, _) = common::runtime(&harness, Policy { interruptions: 2, ..exact_backoff() });
    let id = SagaId::new("always-crashes");
    for _ in 0..3 {
        let cut =
            tokio::time::timeout(Duration::from_secs(100), runtime.run_with_id(id.clone(), ReleasePr::new())).await;
        assert!(cut.is_err());
    }
    let outcome = runtime.run_with_id(id.clone(), ReleasePr::new()).await.unwrap();
    let Outcome::NeedsHuman { failure, report, .. } = &outcome else { panic!("expected NeedsHuman, got {outcome:?}") };
    assert_eq!((failure.kind, failure.step.as_str(), failure.attempt), (FailureKind::Interrupted, "run_tests", 3));
    assert!(
        failure.message.starts_with(
            "the process stopped during this attempt 3 times in a row, so it may be what kills the process"
        ),
        "{}",
        failure.message
    );
    assert_eq!(report.levels(), [Level::Retry, Level::Retry, Level::PageHuman]);
    assert!(report.compensations.is_empty(), "nothing is rolled back");
    assert_eq!(harness.log(), strings(&["open_pr#1", "run_tests#1", "run_tests#2", "run_tests#3"]));
    assert_eq!(incidents.all(), [(Level::PageHuman, "run_tests".to_owned(), failure.message.clone())]);
    // Once the cause is fixed, `resume` runs the step again with fresh budgets.
    let outcome = runtime.resume::<ReleasePr>(&id).await.unwrap();
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(&harness.log()[4..], strings(&["run_tests#4", "comment#1", "merge#1", "announce#1"]));

    // A crash loop of the whole process interrupts a healthy saga at one step after another:
    // each attempt that ends resets the count, so it never reaches the budget.
    let plans = [("open_pr", 2), ("run_tests", 2), ("comment", 2), ("merge", 2)];
    let script = plans.iter().fold(Script::new(), |script, (step, n)| script.then(step, vec![Plan::Hang; *n]));
    let harness = Harness::with_script(script);
    let (runtime, _, _) = common::runtime(&harness, Policy { interruptions: 2, ..exact_backoff() });
    let id = SagaId::new("crash-loop");
    for _ in 0..8 {
        let cut =
            tokio::time::timeout(Duration::from_secs(100), runtime.run_with_id(id.clone(), ReleasePr::new())).await;
        assert!(cut.is_err(), "each run is cut off while a step hangs");
    }
    let outcome = runtime.run_with_id(id.clone(), ReleasePr::new()).await.unwrap();
    assert!(outcome.is_completed(), "eight kills in a row never rolled it back nor parked it: {outcome:?}");
    assert_eq!(outcome.report().levels(), [Level::Retry; 8]);
}

/// A report serialized before escalations carried their kind still reads: the kind is `Error`.
#[test]
fn an_escalation_serialized_without_its_kind_reads_as_a_returned_error() {
    let old = r#"{"level":"Retry","class":"Transient","step":"comment","attempt":1,"error":"503"}"#;
    let escalation: Escalation = serde_json::from_str(old).unwrap();
    assert_eq!(
        (escalation.level, escalation.class, escalation.kind, escalation.step.as_str(), escalation.error.as_str()),
        (Level::Retry, FailureClass::Transient, FailureKind::Error, "comment", "503")
    );
    let written = serde_json::to_value(&escalation).unwrap();
    assert_eq!(written["kind"], "Error", "the kind is written from now on");
}

/// A writer into a shared buffer, to read what a printer wrote.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `TimelinePrinter` prints every journal record as the runtime writes it, one timeline line
/// each (a failure with the ladder's decision on a second line), after the seconds since it
/// started and the prefix and saga tag asked for.
#[tokio::test(start_paused = true)]
async fn the_timeline_printer_prints_every_record_as_it_is_written() {
    let harness = Harness::with_script(Script::new().then("run_tests", transient(1)));
    let buffer = Buffer::default();
    let printer = saga_runtime::TimelinePrinter::to_writer(buffer.clone()).prefix("[w1] ").saga_ids(true);
    let runtime = Runtime::builder().policy(exact_backoff()).resource(harness.clone()).observer(printer).build();
    runtime.run_with_id(SagaId::new("printed-1f2e"), ReleasePr::new()).await.unwrap();

    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    // The seconds column (`  0.002s  `) varies; the rest is exact.
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let (clock, rest) = line.split_at(10);
            assert!(clock.trim().is_empty() || clock.trim().trim_end_matches('s').parse::<f64>().is_ok(), "{line}");
            rest.to_owned()
        })
        .collect();
    let fingerprint = ReleasePr::definition().fingerprint().to_owned();
    let tag = "[w1] [saga …1f2e] ";
    let expected: Vec<String> = [
        format!("started release-pr v1 ({fingerprint})"),
        "open_pr: attempt 1".into(),
        "open_pr: completed on attempt 1".into(),
        "run_tests: attempt 1".into(),
        "run_tests: step `run_tests` failed on attempt 1 (transient): 503 from the vendor".into(),
        "    -> level 0 (retry): retry in 500ms".into(),
        "run_tests: attempt 2".into(),
        "run_tests: completed on attempt 2".into(),
        "comment: attempt 1".into(),
        "comment: completed on attempt 1".into(),
        "merge: attempt 1".into(),
        "merge: completed on attempt 1".into(),
        "announce: attempt 1".into(),
        "announce: completed on attempt 1".into(),
        "finished: completed".into(),
    ]
    .into_iter()
    .map(|line| format!("{tag}{line}"))
    .collect();
    assert_eq!(lines, expected, "\n{text}");
}
