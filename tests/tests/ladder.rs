//! The escalation ladder, row by row (DESIGN.md §4). Every test runs on a paused clock and
//! asserts the whole sequence: which steps and compensations ran, in what order, how many
//! attempts, which levels were recorded, who was notified or paged, and how long it slept.

mod common;

use std::time::Duration;

use common::*;
use saga_runtime::journal::{Event, Next, Timeline};
use saga_runtime::prelude::*;
use saga_runtime::{BlameRecord, CompensationReason, FailureKind, StepRef};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;

const FULL_RUN_AFTER_OPEN: [&str; 4] = ["run_tests#1", "comment#1", "merge#1", "announce#1"];

fn with_tail(head: &[&str], tail: &[&str]) -> Vec<String> {
    head.iter().chain(tail).map(|s| (*s).to_owned()).collect()
}

/// Without failures every step runs once, in order, and nothing climbs the ladder.
#[tokio::test(start_paused = true)]
async fn a_saga_without_failures_runs_every_step_once_in_order() {
    let harness = Harness::default();
    let (runtime, incidents, store) = runtime(&harness, exact_backoff());
    let outcome = runtime.run(ReleasePr::new()).await.unwrap();
    assert_eq!(harness.log(), with_tail(&["open_pr#1"], &FULL_RUN_AFTER_OPEN));
    let output = outcome.output().unwrap();
    assert_eq!((output.open_pr.0, output.run_tests.passed), (42, 42));
    assert_eq!(output.announce, "released sha-of-42");
    let report = outcome.report();
    assert!(report.escalations.is_empty() && report.compensations.is_empty() && report.restarts.is_empty());
    assert_eq!(report.attempts.len(), 5);
    assert_eq!(report.slept, Duration::ZERO);
    assert!(incidents.all().is_empty());
    let summary = &listed(&store).await[0];
    assert_eq!((summary.status, summary.stage.as_str()), (Status::Completed, "completed"));
}

/// Row "transient": back off (500 ms, 1 s: exponential, capped) and run the step again with
/// the same inputs and the same idempotency key; each retry is recorded at level 0.
#[tokio::test(start_paused = true)]
async fn transient_failures_back_off_and_retry_the_same_step() {
    let harness = Harness::with_script(Script::new().then("open_pr", transient(2)));
    let (runtime, incidents, _) = runtime(&harness, exact_backoff());
    let start = Instant::now();
    let outcome = runtime.run(ReleasePr::new()).await.unwrap();

    assert!(outcome.is_completed());
    assert_eq!(harness.log(), with_tail(&["open_pr#1", "open_pr#2", "open_pr#3"], &FULL_RUN_AFTER_OPEN));
    assert_eq!(
        escalations(outcome.report()),
        [(0, FailureClass::Transient, "open_pr".into(), 1), (0, FailureClass::Transient, "open_pr".into(), 2)]
    );
    assert_eq!(outcome.report().slept, Duration::from_millis(1_500));
    assert_eq!(start.elapsed(), Duration::from_millis(1_500));
    let key = harness.key_of("open_pr#1");
    assert_eq!(harness.key_of("open_pr#2"), key);
    assert_eq!(harness.key_of("open_pr#3"), key);
    assert!(outcome.report().compensations.is_empty());
    assert!(incidents.all().is_empty());
}

/// Row "transient", past `transient_retries`: level 3 — notify once, compensate every
/// completed compensable step in reverse order, and return `Compensated`.
#[tokio::test(start_paused = true)]
async fn transient_failures_past_the_budget_roll_back_at_level_3() {
    let harness = Harness::with_script(Script::new().then("comment", transient(4)));
    let (runtime, incidents, _) = runtime(&harness, exact_backoff());
    let start = Instant::now();
    let outcome = runtime.run(ReleasePr::new()).await.unwrap();

    assert_eq!(
        harness.log(),
        strings(&["open_pr#1", "run_tests#1", "comment#1", "comment#2", "comment#3", "comment#4", "undo open_pr#1"])
    );
    let t = FailureClass::Transient;
    assert_eq!(
        escalations(outcome.report()),
        [
            (0, t, "comment".into(), 1),
            (0, t, "comment".into(), 2),
            (0, t, "comment".into(), 3),
            (3, t, "comment".into(), 4)
        ]
    );
    assert_eq!(start.elapsed(), Duration::from_millis(500 + 1_000 + 2_000));
    assert_eq!(outcome.report().slept, start.elapsed());
    let Outcome::Compensated { failure, report, .. } = &outcome else {
        panic!("expected Compensated, got {outcome:?}")
    };
    assert_eq!((failure.step.as_str(), failure.attempt, failure.class), ("comment", 4, t));
    assert_eq!(report.compensations.len(), 1);
    let undo = &report.compensations[0];
    assert_eq!(
        (undo.step.as_str(), undo.compensation.as_str(), undo.reason, undo.attempts, undo.done),
        ("open_pr", "close_pr", CompensationReason::RollBack, 1, true)
    );
    assert_eq!(incidents.all(), [(Level::Compensate, "comment".to_owned(), "503 from the vendor".to_owned())]);
    assert_eq!((report.notified, report.paged), (1, 0));
}

/// A transient failure that says how long to wait (`retry_after`) waits at least that long.
#[tokio::test(start_paused = true)]
async fn retry_after_is_a_floor_under_the_backoff() {
    let slow_down = StepError::transient("429 Too Many Requests").retry_after(Duration::from_secs(10));
    let harness = Harness::with_script(Script::new().then("run_tests", [Plan::Fail(slow_down)]));
    let (runtime, _, _) = runtime(&harness, Policy::default()); // full jitter: the floor still holds
    let start = Instant::now();
    let outcome = runtime.run(ReleasePr::new()).await.unwrap();
    assert!(outcome.is_completed());
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert_eq!(outcome.report().slept, Duration::from_secs(10));
    assert_eq!(
        harness.log(),
        strings(&["open_pr#1", "run_tests#1", "run_tests#2", "comment#1", "merge#1", "announce#1"])
    );
}

/// With full jitter, every delay is drawn below its cap: the recorded sleeps are what the
/// clock shows, and each is at most 500 ms, 1 s, 2 s.
#[tokio::test(start_paused = true)]
async fn full_jitter_sleeps_below_the_cap_of_each_retry() {
    let harness = Harness::with_script(Script::new().then("open_pr", transient(3)));
    let (runtime, _, store) = runtime(&harness, Policy::default());
    let start = Instant::now();
    let outcome = runtime.run(ReleasePr::new()).await.unwrap();
    assert!(outcome.is_completed());
    let journal = runtime.journal(outcome.saga_id()).await.unwrap();
    let delays: Vec<Duration> = journal
        .iter()
        .filter_map(|r| match &r.event {
            saga_runtime::journal::Event::StepFailed { next: saga_runtime::journal::Next::Retry { delay }, .. } => {
                Some(*delay)
            }
            _ => None,
        })
        .collect();
    assert_eq!(delays.len(), 3);
    for (delay, cap) in delays.iter().zip([500, 1_000, 2_000]) {
        assert!(*delay <= Duration::from_millis(cap), "{delay:?} above {cap} ms");
    }
    assert_eq!(start.elapsed(), delays.iter().sum::<Duration>());
    drop(store);
}

/// Full jitter really spreads the delays: over many draws of the first retry's delay (cap
/// 500 ms), they differ, and they cover the range below the cap.
#[test]
fn full_jitter_spreads_delays_below_the_cap() {
    let backoff = Backoff::default();
    let draws: Vec<Duration> = (0..200).map(|_| backoff.delay(1, None)).collect();
    let distinct: std::collections::BTreeSet<Duration> = draws.iter().copied().collect();
    assert!(distinct.len() > 50, "only {} distinct delays in 200 draws", distinct.len());
    assert!(draws.iter().any(|d| *d < Duration::from_millis(125)), "no draw in the lowest quarter");
    assert!(draws.iter().any(|d| *d > Duration::from_millis(375)), "no draw in the highest quarter");
    assert!(draws.iter().all(|d| *d <= Duration::from_millis(500)));
}

/// Rows "logical": re-prompt with `previous_error()` set (level 1) up to `reprompts` times,
/// then one attempt on each stronger tier (level 2); no backoff between them.
#[tokio::test(start_paused = true)]
async fn logical_failures_reprompt_with_the_error_then_switch_to_a_stronger_tier() {
    let harness = Harness::with_script(Script::new().then("run_tests", logical(3)));
    let (runtime, incidents, _) = runtime(&harness, exact_backoff());
    let start = Instant::now();
    let outcome = runtime.run(ReleasePr::new()).await.unwrap();

    assert!(outcome.is_completed());
    assert_eq!(
        harness.log(),
        strings(&[
            "open_pr#1",
            "run_tests#1",
            "run_tests#2",
            "run_tests#3",
            "run_tests#4",
            "comment#1",
            "merge#1",
            "announce#1"
        ])
    );
    let l = FailureClass::Logical;
    assert_eq!(
        escalations(outcome.report()),
        [(1, l, "run_tests".into(), 1), (1, l, "run_tests".into(), 2), (2, l, "run_tests".into(), 3)]
    );
    let seen = harness.seen.lock().unwrap().clone();
    let run_tests: Vec<(Option<String>, u32)> =
        seen.iter().filter(|s| s.0 == "run_tests").map(|s| (s.1.clone(), s.2)).collect();
    let error = Some("the model called a tool that does not exist".to_owned());
    assert_eq!(run_tests, [(None, 0), (error.clone(), 0), (error.clone(), 0), (error, 1)]);
    let tiers = tiers(outcome.report(), "run_tests");
    assert_eq!(tiers, [0, 0, 0, 1]);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(incidents.all().is_empty());
}

/// Row "logical, tiers used up": with three tiers, a logical failure gets two re-prompts,
/// then one attempt on tier 1 and one on tier 2; the fifth failure is level 3 and the
/// completed steps are compensated.
#[tokio::test(start_paused = true)]
async fn logical_failures_past_every_tier_roll_back() {
    let harness = Harness::with_script(Script::new().then("run_tests", logical(5)));
    let (runtime, incidents, _) = runtime(&harness, Policy { model_tiers: 3, ..exact_backoff() });
    let outcome = runtime.run(ReleasePr::new()).await.unwrap();

    assert_eq!(
        harness.log(),
        strings(&[
            "open_pr#1",
            "run_tests#1",
            "run_tests#2",
            "run_tests#3",
            "run_tests#4",
            "run_tests#5",
            "undo open_pr#1"
        ])
    );
    let l = FailureClass::Logical;
    assert_eq!(
        escalations(outcome.report()),
        [
            (1, l, "run_tests".into(), 1),
            (1, l, "run_tests".into(), 2),
            (2, l, "run_tests".into(), 3),
            (2, l, "run_tests".into(), 4),
            (3, l, "run_tests".into(), 5)
        ]
    );
    let tiers = tiers(outcome.report(), "run_tests");
    assert_eq!(tiers, [0, 0, 0, 1, 2]);
    let Outcome::Compensated { failure, .. } = &outcome else { panic!("expected Compensated, got {outcome:?}") };
    assert_eq!((failure.step.as_str(), failure.attempt), ("run_tests", 5));
    assert_eq!(
        incidents.all(),
        [(Level::Compensate, "run_tests".into(), "the model called a tool that does not exist".into())]
    );
}

/// A rejected output (`validate`) is a logical failure, and the rejected result is
/// compensated before the re-prompt, so a wrong answer leaves nothing behind. The re-prompt
/// sees the validator's message, and gets a new idempotency key (its earlier result was
/// undone, so a downstream service must not replay it).
#[tokio::test(start_paused = true)]
async fn a_rejected_output_is_compensated_before_the_reprompt() {
    let harness = Harness::with_script(Script::new().then("comment", [Plan::Wrong]));
    let (runtime, incidents, _) = runtime(&harness, exact_backoff());
    let outcome = runtime.run(ReleasePr::new()).await.unwrap();

    assert!(outcome.is_completed());
    assert_eq!(
        harness.log(),
        strings(&["open_pr#1", "run_tests#1", "comment#1", "undo comment#1", "comment#2", "merge#1", "announce#1"])
    );
    let report = outcome.report();
    assert_eq!(escalations(report), [(1, FailureClass::Logical, "comment".into(), 1)]);
    assert_eq!(report.compensations.len(), 1);
    assert_eq!(report.compensations[0].reason, CompensationReason::Rejected);
    assert_eq!(report.compensations[0].step, "comment");
    let seen = harness.seen.lock().unwrap().clone();
    let reprompt = seen.iter().filter(|s| s.0 == "comment").nth(2).unwrap();
    assert_eq!(reprompt.1.as_deref(), Some("validator `non_empty` rejected the output: the comment is empty"));
    let (first, undo, second) =
        (harness.key_of("comment#1"), harness.key_of("undo comment#1"), harness.key_of("comment#2"));
    assert_ne!(first, second, "a compensated result must not be replayed under the same key");
    assert_ne!(undo, first);
    assert_eq!(output_comment(&outcome), "42 tests passed");
    assert!(incidents.all().is_empty());
}

fn output_comment(outcome: &Outcome<ReleasePrOutput>) -> String {
    outcome.output().unwrap().comment.0.clone()
}

/// A rejected output that exhausts the ladder is compensated like every other completed
/// step: each rejected result is undone once, and the rollback undoes the rest in reverse.
#[tokio::test(start_paused = true)]
async fn rejected_outputs_to_the_end_of_the_ladder_leave_nothing_behind() {
    let harness =
        Harness::with_script(Script::new().then("comment", [Plan::Wrong, Plan::Wrong, Plan::Wrong, Plan::Wrong]));
    let (runtime, incidents, _) = runtime(&harness, exact_backoff());
    let outcome = runtime.run(ReleasePr::new()).await.unwrap();

    assert_eq!(
        harness.log(),
        strings(&[
            "open_pr#1",
            "run_tests#1",
            "comment#1",
            "undo comment#1",
            "comment#2",
            "undo comment#1",
            "comment#3",
            "undo comment#1",
            "comment#4",
            "undo comment#1",
            "undo open_pr#1",
        ])
    );
    assert_eq!(outcome.report().levels(), [Level::Reprompt, Level::Reprompt, Level::SwitchModel, Level::Compensate]);
    let reasons: Vec<(String, CompensationReason)> =
        outcome.report().compensations.iter().map(|c| (c.step.clone(), c.reason)).collect();
    assert_eq!(
        reasons,
        [
            ("comment".into(), CompensationReason::Rejected),
            ("comment".into(), CompensationReason::Rejected),
            ("comment".into(), CompensationReason::Rejected),
            ("comment".into(), CompensationReason::RollBack),
            ("open_pr".into(), CompensationReason::RollBack),
        ]
    );
    assert_eq!(outcome.failure().unwrap().kind, FailureKind::Rejected);
    assert_eq!(incidents.all().len(), 1);
}

/// `(level as u8, found by, blamed)` of each escalation.
fn blamed_escalations(report: &Report) -> Vec<(u8, String, Option<String>)> {
    report.escalations.iter().map(|e| (e.level as u8, e.step.clone(), e.blamed.clone())).collect()
}

/// `(step, reason, done)` of each compensation.
fn compensations(report: &Report) -> Vec<(String, CompensationReason, bool)> {
    report.compensations.iter().map(|c| (c.step.clone(), c.reason, c.done)).collect()
}

/// The calls of `step` (not its compensation): `(attempt, tier, previous error, the step that
/// found it)`.
fn calls_of(harness: &Harness, step: &str) -> Vec<(u32, u32, Option<String>, Option<String>)> {
    let calls = harness.calls.lock().unwrap();
    calls
        .iter()
        .filter(|c| c.name == step && !c.undo)
        .map(|c| (c.attempt, c.tier, c.previous_error.clone(), c.previous_error_step.clone()))
        .collect()
}

fn red_tests() -> StepError {
    StepError::logical("2 of 41 tests failed: login_rejects_expired_tokens").blame(ReleasePrStep::open_pr)
}

/// Row "logical, blaming an earlier step": the step that found the mistake is not re-prompted.
/// The completed compensable steps from the blamed one to the failing one are undone (here
/// `open_pr`; `run_tests` is idempotent), the blamed step runs again with the downstream
/// failure as its `previous_error()` (naming the step that found it), and the steps after it
/// run again on its new output. Level 1, no backoff; journal, report and timeline say who found
/// the failure and who was blamed.
#[tokio::test(start_paused = true)]
async fn a_logical_failure_blaming_an_earlier_step_undoes_back_to_it_and_reprompts_it() {
    let harness = Harness::with_script(Script::new().then("comment", [Plan::Fail(red_tests())]));
    let (runtime, incidents, _) = runtime(&harness, exact_backoff());
    let start = Instant::now();
    let outcome = runtime.run(ReleasePr::new()).await.unwrap();

    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(
        harness.log(),
        strings(&[
            "open_pr#1",
            "run_tests#1",
            "comment#1",
            "undo open_pr#1",
            "open_pr#2",
            "run_tests#2",
            "comment#2",
            "merge#1",
            "announce#1"
        ])
    );
    let message = "2 of 41 tests failed: login_rejects_expired_tokens".to_owned();
    assert_eq!(
        calls_of(&harness, "open_pr"),
        [(1, 0, None, None), (2, 0, Some(message.clone()), Some("comment".into()))],
        "the blamed step is re-prompted with the failure the later step found"
    );
    assert_eq!(calls_of(&harness, "comment")[1], (2, 0, Some(message.clone()), Some("comment".into())));
    let report = outcome.report();
    assert_eq!(blamed_escalations(report), [(1, "comment".into(), Some("open_pr".into()))]);
    assert_eq!(escalations(report), [(1, FailureClass::Logical, "comment".into(), 1)]);
    assert_eq!(
        report.blames,
        [BlameRecord {
            found_by: "comment".into(),
            attempt: 1,
            blamed: "open_pr".into(),
            reprompted: "open_pr".into(),
            level: Level::Reprompt,
            note: None,
        }]
    );
    assert_eq!(compensations(report), [("open_pr".into(), CompensationReason::Blame, true)]);
    assert_eq!(tiers(report, "open_pr"), [0, 0]);
    assert!(report.restarts.is_empty());
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(report.slept, Duration::ZERO);
    assert_ne!(harness.key_of("open_pr#1"), harness.key_of("open_pr#2"), "an undone result gets a new key");
    assert!(incidents.all().is_empty());

    let journal = runtime.journal(outcome.saga_id()).await.unwrap();
    let decisions: Vec<&Next> = journal
        .iter()
        .filter_map(|r| match &r.event {
            Event::StepFailed { next, .. } => Some(next),
            _ => None,
        })
        .collect();
    assert_eq!(decisions, [&Next::Blame { blamed: 0, tier: None, requested: None, note: None }]);
    let lines: Vec<String> =
        journal.iter().map(|record| Timeline { definition: ReleasePr::definition(), record }.to_string()).collect();
    assert!(
        lines.contains(&format!(
            "comment: step `comment` failed on attempt 1 (logical): {message}\n    -> level 1 (re-prompt): `comment` blamed `open_pr`: undo back to it and re-prompt it with this failure"
        )),
        "{lines:#?}"
    );
}

/// The blamed step climbs its own rungs, one per blame: re-prompts (level 1), then one attempt
/// on each stronger tier (level 2), then level 3, which undoes everything. The step that keeps
/// finding the mistake never climbs: each time it runs on a new output with fresh budgets.
#[tokio::test(start_paused = true)]
async fn a_step_blamed_again_and_again_climbs_its_own_rungs_to_level_3() {
    let harness = Harness::with_script(Script::new().then("comment", vec![Plan::Fail(red_tests()); 4]));
    let (runtime, incidents, _) = runtime(&harness, exact_backoff());
    let outcome = runtime.run(ReleasePr::new()).await.unwrap();

    let mut expected = strings(&["open_pr#1", "run_tests#1", "comment#1"]);
    for pass in 2..=4 {
        expected.push("undo open_pr#1".into());
        expected.extend(["open_pr", "run_tests", "comment"].map(|step| format!("{step}#{pass}")));
    }
    expected.push("undo open_pr#1".into());
    assert_eq!(harness.log(), expected);
    let report = outcome.report();
    let blamed = Some("open_pr".to_owned());
    assert_eq!(
        blamed_escalations(report),
        [
            (1, "comment".into(), blamed.clone()),
            (1, "comment".into(), blamed.clone()),
            (2, "comment".into(), blamed),
            (3, "comment".into(), None)
        ]
    );
    assert_eq!(tiers(report, "open_pr"), [0, 0, 0, 1], "the blamed step's tier climbs");
    assert_eq!(tiers(report, "comment"), [0, 0, 0, 0], "the step that found it does not");
    let levels: Vec<Level> = report.blames.iter().map(|b| b.level).collect();
    assert_eq!(levels, [Level::Reprompt, Level::Reprompt, Level::SwitchModel]);
    let b = CompensationReason::Blame;
    assert_eq!(
        compensations(report),
        [
            ("open_pr".into(), b, true),
            ("open_pr".into(), b, true),
            ("open_pr".into(), b, true),
            ("open_pr".into(), CompensationReason::RollBack, true)
        ]
    );
    let Outcome::Compensated { failure, .. } = &outcome else { panic!("expected Compensated, got {outcome:?}") };
    assert_eq!((failure.step.as_str(), failure.attempt), ("comment", 4));
    assert_eq!(incidents.all(), [(Level::Compensate, "comment".into(), red_tests().message().to_owned())]);
}

/// Budgets say who was blamed: the failing step's own re-prompts are its own, the blame spends
/// the blamed step's, and the steps after the blamed one get fresh budgets when they run again
/// (their inputs are new), so `comment`'s third own failure is a re-prompt, not a model switch.
#[tokio::test(start_paused = true)]
async fn a_blame_spends_the_blamed_steps_budget_and_refreshes_the_steps_after_it() {
    let wrong = || Plan::Fail(StepError::logical("the comment quotes the wrong PR"));
    let harness =
        Harness::with_script(Script::new().then("comment", [wrong(), wrong(), Plan::Fail(red_tests()), wrong()]));
    let (runtime, _, _) = runtime(&harness, exact_backoff());
    let outcome = runtime.run(ReleasePr::new()).await.unwrap();

    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(
        harness.log(),
        strings(&[
            "open_pr#1",
            "run_tests#1",
            "comment#1",
            "comment#2",
            "comment#3",
            "undo open_pr#1",
            "open_pr#2",
            "run_tests#2",
            "comment#4",
            "comment#5",
            "merge#1",
            "announce#1"
        ])
    );
    let blamed = Some("open_pr".to_owned());
    assert_eq!(
        blamed_escalations(outcome.report()),
        [
            (1, "comment".into(), None),
            (1, "comment".into(), None),
            (1, "comment".into(), blamed),
            (1, "comment".into(), None)
        ]
    );
    assert_eq!(tiers(outcome.report(), "comment"), [0, 0, 0, 0, 0]);
    assert_eq!(tiers(outcome.report(), "open_pr"), [0, 0]);
}

/// The rules: a blame is followed when it names an earlier step that may run again. Naming an
/// unknown step, a later step, or one at or before a commit point that has passed (it can
/// never run again) re-prompts the failing step itself on its own rungs, and the report and
/// the journal say why; blaming the failing step itself is a plain re-prompt. (A typed step id
/// in a step's body makes the later and commit cases compile errors: see `tests/ui`.)
#[tokio::test(start_paused = true)]
async fn a_blame_that_cannot_be_followed_reprompts_the_failing_step_and_says_why() {
    let blame = |step: StepRef| Plan::Fail(StepError::logical("wrong").blame(step));
    let harness = Harness::with_script(
        Script::new()
            .then("run_tests", [blame("deploy".into()), blame(ReleasePrStep::run_tests.into())])
            .then("comment", [blame(ReleasePrStep::merge.into())])
            .then("announce", [blame(ReleasePrStep::open_pr.into())]),
    );
    let (runtime, incidents, _) = runtime(&harness, exact_backoff());
    let outcome = runtime.run(ReleasePr::new()).await.unwrap();

    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(
        harness.log(),
        strings(&[
            "open_pr#1",
            "run_tests#1",
            "run_tests#2",
            "run_tests#3",
            "comment#1",
            "comment#2",
            "merge#1",
            "announce#1",
            "announce#2"
        ])
    );
    let report = outcome.report();
    assert_eq!(
        report.levels(),
        [Level::Reprompt; 4],
        "each failing step re-prompted on its own rungs (two for run_tests)"
    );
    assert!(report.escalations.iter().all(|e| e.blamed.is_none()));
    let notes: Vec<(String, String, String, String)> = report
        .blames
        .iter()
        .map(|b| (b.found_by.clone(), b.blamed.clone(), b.reprompted.clone(), b.note.clone().unwrap()))
        .collect();
    assert_eq!(
        notes,
        [
            (
                "run_tests".into(),
                "deploy".into(),
                "run_tests".into(),
                "`deploy` is not a step of `release-pr`, so the blame was not followed and `run_tests` itself was re-prompted"
                    .into()
            ),
            (
                "comment".into(),
                "merge".into(),
                "comment".into(),
                "`merge` runs after `comment`, so the blame was not followed and `comment` itself was re-prompted".into()
            ),
            (
                "announce".into(),
                "open_pr".into(),
                "announce".into(),
                "`open_pr` is not after the commit point `merge`, which has passed, so the blame was not followed and `announce` itself was re-prompted"
                    .into()
            ),
        ],
        "blaming itself (run_tests' second failure) is a plain re-prompt, with no blame record"
    );
    assert!(report.compensations.is_empty());
    let journal = runtime.journal(outcome.saga_id()).await.unwrap();
    let lines: Vec<String> =
        journal.iter().map(|record| Timeline { definition: ReleasePr::definition(), record }.to_string()).collect();
    assert!(
        lines.iter().any(|l| l.ends_with(
            "-> level 1 (re-prompt): re-prompt with the error (`merge` runs after `comment`, so the blame was not followed and `comment` itself was re-prompted)"
        )),
        "{lines:#?}"
    );
    assert!(incidents.all().is_empty());
}

/// A compensation that fails for good while undoing the steps back to the blamed one is level
/// 4: the saga parks instead of re-prompting over debris. Resumed, the compensation succeeds
/// and the blamed step is re-prompted with the downstream failure.
#[tokio::test(start_paused = true)]
async fn a_failed_compensation_before_a_blamed_reprompt_parks_the_saga() {
    let stuck = vec![Plan::Fail(StepError::transient("GitHub is down")); 4];
    let harness =
        Harness::with_script(Script::new().then("comment", [Plan::Fail(red_tests())]).then("undo open_pr", stuck));
    let (runtime, incidents, _) = runtime(&harness, exact_backoff());
    let start = Instant::now();
    let outcome = runtime.run(ReleasePr::new()).await.unwrap();

    assert_eq!(
        harness.log(),
        strings(&[
            "open_pr#1",
            "run_tests#1",
            "comment#1",
            "undo open_pr#1",
            "undo open_pr#2",
            "undo open_pr#3",
            "undo open_pr#4"
        ])
    );
    assert_eq!(outcome.report().levels(), [Level::Reprompt, Level::PageHuman]);
    assert_eq!(start.elapsed(), Duration::from_millis(500 + 1_000 + 2_000));
    let Outcome::NeedsHuman { failure, .. } = &outcome else { panic!("expected NeedsHuman, got {outcome:?}") };
    assert_eq!(failure.compensation.as_deref(), Some("close_pr"));
    assert_eq!(incidents.all(), [(Level::PageHuman, "open_pr".into(), "GitHub is down".into())]);

    let resumed = runtime.resume::<ReleasePr>(outcome.saga_id()).await.unwrap();
    assert!(resumed.is_completed(), "{resumed:?}");
    assert_eq!(
        &harness.log()[7..],
        strings(&["undo open_pr#5", "open_pr#2", "run_tests#2", "comment#2", "merge#1", "announce#1"])
    );
    assert_eq!(calls_of(&harness, "open_pr")[1].3.as_deref(), Some("comment"));
    assert_eq!(compensations(resumed.report()), [("open_pr".into(), CompensationReason::Blame, true)]);
}

/// A saga with two steps after its commit point, so that one can blame the other.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Release;

#[saga]
impl Release {
    #[step(commit)]
    async fn tag(&self, cx: &StepContext) -> StepResult<String> {
        cx.resource::<Harness>().call(cx, "tag").await?;
        Ok("v1.2.0".into())
    }

    #[step(idempotent)]
    async fn write_notes(&self, cx: &StepContext, tag: &str) -> StepResult<String> {
        cx.resource::<Harness>().call(cx, "write_notes").await?;
        Ok(format!("{tag}: fixes the login bug"))
    }

    #[step(idempotent)]
    async fn post_notes(&self, cx: &StepContext, write_notes: &str) -> StepResult<usize> {
        cx.resource::<Harness>().call(cx, "post_notes").await?;
        Ok(write_notes.len())
    }
}

/// After the commit point, a step may blame an earlier step after it; nothing is compensated.
/// When the blamed step's rungs are used up, the saga pages a human and parks (level 4) at the
/// failing step, and `resume` is a new pass through the ladder for every step: the blamed step
/// gets its rungs back.
#[tokio::test(start_paused = true)]
async fn after_the_commit_point_an_exhausted_blame_parks_and_resume_gives_the_rungs_back() {
    let rejected =
        || Plan::Fail(StepError::logical("the notes name the wrong version").blame(ReleaseStep::write_notes));
    let harness = Harness::with_script(Script::new().then("post_notes", vec![rejected(); 5]));
    let (runtime, incidents, _) = runtime(&harness, exact_backoff());
    let outcome = runtime.run(Release).await.unwrap();

    assert_eq!(
        harness.log(),
        strings(&[
            "tag#1",
            "write_notes#1",
            "post_notes#1",
            "write_notes#2",
            "post_notes#2",
            "write_notes#3",
            "post_notes#3",
            "write_notes#4",
            "post_notes#4"
        ])
    );
    let blamed = Some("write_notes".to_owned());
    assert_eq!(
        blamed_escalations(outcome.report()),
        [
            (1, "post_notes".into(), blamed.clone()),
            (1, "post_notes".into(), blamed.clone()),
            (2, "post_notes".into(), blamed.clone()),
            (4, "post_notes".into(), None)
        ]
    );
    assert_eq!(tiers(outcome.report(), "write_notes"), [0, 0, 0, 1]);
    assert!(outcome.report().compensations.is_empty());
    let Outcome::NeedsHuman { failure, .. } = &outcome else { panic!("expected NeedsHuman, got {outcome:?}") };
    assert_eq!((failure.step.as_str(), failure.attempt, failure.compensation.as_deref()), ("post_notes", 4, None));
    assert_eq!(incidents.all().iter().map(|i| i.0).collect::<Vec<_>>(), [Level::PageHuman]);

    let resumed = runtime.resume::<Release>(outcome.saga_id()).await.unwrap();
    assert!(resumed.is_completed(), "{resumed:?}");
    assert_eq!(&harness.log()[9..], strings(&["post_notes#5", "write_notes#5", "post_notes#6"]));
    assert_eq!(resumed.report().levels()[4..], [Level::Reprompt], "the blamed step climbs from its first rung again");
    assert_eq!(tiers(resumed.report(), "write_notes"), [0, 0, 0, 1, 0]);
}

/// Row "environmental": compensate the completed compensable steps from the restart point on
/// (reverse order), run again from `restart_from` with `observation()` set for every step
/// that runs after it, and record level 0.
#[tokio::test(start_paused = true)]
async fn an_environmental_failure_compensates_and_restarts_with_the_observation() {
    let moved = StepError::environmental("CI moved to a new runner image")
        .restart_from("open_pr")
        .with_observation(json!({ "ci": "v2" }));
    let harness = Harness::with_script(Script::new().then("comment", [Plan::Fail(moved)]));
    let (runtime, incidents, _) = runtime(&harness, exact_backoff());
    let start = Instant::now();
    let outcome = runtime.run(ReleasePr::new()).await.unwrap();

    assert!(outcome.is_completed());
    assert_eq!(
        harness.log(),
        strings(&[
            "open_pr#1",
            "run_tests#1",
            "comment#1",
            "undo open_pr#1",
            "open_pr#2",
            "run_tests#2",
            "comment#2",
            "merge#1",
            "announce#1"
        ])
    );
    assert_eq!(escalations(outcome.report()), [(0, FailureClass::Environmental, "comment".into(), 1)]);
    let restart = &outcome.report().restarts[0];
    assert_eq!(
        (restart.failed_step.as_str(), restart.from.as_str(), restart.note.as_deref()),
        ("comment", "open_pr", None)
    );
    assert_eq!(outcome.report().compensations[0].reason, CompensationReason::Restart);
    let observations: Vec<(String, Option<serde_json::Value>)> =
        harness.seen.lock().unwrap().iter().map(|s| (s.0.clone(), s.3.clone())).collect();
    let v2 = Some(json!({ "ci": "v2" }));
    assert_eq!(
        observations,
        [
            ("open_pr".into(), None),
            ("run_tests".into(), None),
            ("comment".into(), None),
            ("open_pr".into(), v2.clone()),
            ("open_pr".into(), v2.clone()),
            ("run_tests".into(), v2.clone()),
            ("comment".into(), v2.clone()),
            ("merge".into(), v2.clone()),
            ("announce".into(), v2),
        ]
    );
    assert_ne!(harness.key_of("open_pr#1"), harness.key_of("open_pr#2"), "open_pr was compensated in between");
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(incidents.all().is_empty());
}

/// After a restart the budgets are fresh, and the budget of one class is never spent by
/// another: three transient retries, a restart, then three more transient retries all stay
/// at level 0.
#[tokio::test(start_paused = true)]
async fn a_restart_gives_fresh_budgets_and_classes_never_share_one() {
    let mut plans = transient(3);
    plans.push(Plan::Fail(StepError::environmental("the branch was force-pushed")));
    plans.extend(transient(3));
    plans.extend(logical(2));
    let harness = Harness::with_script(Script::new().then("comment", plans));
    let (runtime, _, _) = runtime(&harness, exact_backoff());
    let start = Instant::now();
    let outcome = runtime.run(ReleasePr::new()).await.unwrap();

    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(
        outcome.report().levels(),
        [
            Level::Retry,
            Level::Retry,
            Level::Retry,
            Level::Retry,
            Level::Retry,
            Level::Retry,
            Level::Retry,
            Level::Reprompt,
            Level::Reprompt
        ]
    );
    let comment_attempts = harness.log().iter().filter(|e| e.starts_with("comment#")).count();
    assert_eq!(comment_attempts, 10);
    assert_eq!(start.elapsed(), Duration::from_millis(2 * (500 + 1_000 + 2_000)));
}

/// Row "environmental", past `environment_restarts` restarts caused by the same step: level 3.
#[tokio::test(start_paused = true)]
async fn environmental_restarts_past_the_budget_roll_back() {
    let gone = || Plan::Fail(StepError::environmental("the issue tracker API was removed"));
    let harness = Harness::with_script(Script::new().then("comment", [gone(), gone(), gone()]));
    let (runtime, incidents, _) = runtime(&harness, exact_backoff());
    let outcome = runtime.run(ReleasePr::new()).await.unwrap();

    assert_eq!(
        harness.log(),
        strings(&["open_pr#1", "run_tests#1", "comment#1", "comment#2", "comment#3", "undo open_pr#1"])
    );
    let e = FailureClass::Environmental;
    assert_eq!(
        escalations(outcome.report()),
        [(0, e, "comment".into(), 1), (0, e, "comment".into(), 2), (3, e, "comment".into(), 3)]
    );
    assert_eq!(outcome.report().restarts.len(), 2);
    assert!(matches!(outcome, Outcome::Compensated { .. }));
    assert_eq!(incidents.all().len(), 1);
}

/// `restart_from` naming an unknown step, a later step, or a step at or before a commit point
/// that has passed restarts from the failing step, and the report says why.
#[tokio::test(start_paused = true)]
async fn an_impossible_restart_point_restarts_the_failing_step_and_says_so() {
    let unknown = StepError::environmental("stale").restart_from("deploy");
    let later = StepError::environmental("stale").restart_from("merge");
    let before_commit = StepError::environmental("stale").restart_from("open_pr");
    let harness = Harness::with_script(
        Script::new()
            .then("run_tests", [Plan::Fail(unknown)])
            .then("comment", [Plan::Fail(later)])
            .then("announce", [Plan::Fail(before_commit)]),
    );
    let (runtime, _, _) = runtime(&harness, exact_backoff());
    let outcome = runtime.run(ReleasePr::new()).await.unwrap();

    assert!(outcome.is_completed());
    assert_eq!(
        harness.log(),
        strings(&[
            "open_pr#1",
            "run_tests#1",
            "run_tests#2",
            "comment#1",
            "comment#2",
            "merge#1",
            "announce#1",
            "announce#2"
        ])
    );
    let restarts: Vec<(String, String, String)> = outcome
        .report()
        .restarts
        .iter()
        .map(|r| (r.failed_step.clone(), r.from.clone(), r.note.clone().unwrap()))
        .collect();
    assert_eq!(restarts[0].0, "run_tests");
    assert_eq!(restarts[0].1, "run_tests");
    assert_eq!(
        restarts[0].2,
        "`deploy` is not a step of `release-pr`, so it restarted from the failing step `run_tests`"
    );
    assert_eq!(restarts[1].2, "`merge` runs after `comment`, so it restarted from the failing step `comment`");
    assert_eq!(
        restarts[2].2,
        "`open_pr` is not after the commit point `merge`, which has passed, so it restarted from the failing step `announce`"
    );
    assert!(outcome.report().compensations.is_empty());
}

/// Row "level 4": a compensation that fails `compensation_retries + 1` times (retried with
/// the same backoff) stops the rollback, pages once, and parks the saga as `NeedsHuman` with
/// the compensation's failure. `resume` tries the compensation again and finishes the
/// rollback; nobody is notified or paged twice.
#[tokio::test(start_paused = true)]
async fn a_compensation_that_keeps_failing_pages_once_and_parks_until_resumed() {
    let stuck = vec![Plan::Fail(StepError::transient("GitHub is down")); 4];
    let harness = Harness::with_script(Script::new().then("comment", logical(4)).then("undo open_pr", stuck));
    let (runtime, incidents, store) = runtime(&harness, exact_backoff());
    let start = Instant::now();
    let outcome = runtime.run(ReleasePr::new()).await.unwrap();

    let saga_id = outcome.saga_id().clone();
    let Outcome::NeedsHuman { failure, report, .. } = &outcome else { panic!("expected NeedsHuman, got {outcome:?}") };
    assert_eq!(failure.compensation.as_deref(), Some("close_pr"));
    assert_eq!((failure.step.as_str(), failure.attempt, failure.class), ("open_pr", 4, FailureClass::Transient));
    assert_eq!(
        harness.log(),
        strings(&[
            "open_pr#1",
            "run_tests#1",
            "comment#1",
            "comment#2",
            "comment#3",
            "comment#4",
            "undo open_pr#1",
            "undo open_pr#2",
            "undo open_pr#3",
            "undo open_pr#4",
        ])
    );
    let (l, t) = (FailureClass::Logical, FailureClass::Transient);
    assert_eq!(
        escalations(report),
        [
            (1, l, "comment".into(), 1),
            (1, l, "comment".into(), 2),
            (2, l, "comment".into(), 3),
            (3, l, "comment".into(), 4),
            (4, t, "open_pr".into(), 4)
        ]
    );
    assert_eq!(start.elapsed(), Duration::from_millis(500 + 1_000 + 2_000));
    assert_eq!(report.compensations[0].errors.len(), 4);
    assert!(!report.compensations[0].done);
    assert_eq!(
        incidents.all(),
        [
            (Level::Compensate, "comment".into(), "the model called a tool that does not exist".into()),
            (Level::PageHuman, "open_pr".into(), "GitHub is down".into())
        ]
    );
    let summary = &listed(&store).await[0];
    assert_eq!((summary.status, summary.stage.as_str()), (Status::NeedsHuman, "parked compensating open_pr"));

    // run_with_id on a parked saga returns the stored outcome and runs nothing.
    let again = runtime.run_with_id(saga_id.clone(), ReleasePr::new()).await.unwrap();
    assert!(matches!(again, Outcome::NeedsHuman { .. }));
    assert_eq!(harness.log().len(), 10);

    let resumed = runtime.resume::<ReleasePr>(&saga_id).await.unwrap();
    let Outcome::Compensated { failure, report, .. } = &resumed else {
        panic!("expected Compensated, got {resumed:?}")
    };
    assert_eq!(failure.step, "comment", "the outcome names the failure that started the rollback");
    assert_eq!(harness.log().last().unwrap(), "undo open_pr#5");
    assert_eq!(harness.log().len(), 11);
    assert!(report.compensations[0].done);
    assert_eq!((report.notified, report.paged), (1, 1));
    assert_eq!(incidents.all().len(), 2, "no second notification or page");
}

/// A failure of the commit step rolls back like any other: everything before it is undone.
#[tokio::test(start_paused = true)]
async fn a_failing_commit_step_rolls_back_like_any_other() {
    let harness = Harness::with_script(Script::new().then("merge", transient(4)));
    let (runtime, incidents, _) = runtime(&harness, exact_backoff());
    let outcome = runtime.run(ReleasePr::new()).await.unwrap();
    assert_eq!(
        harness.log(),
        strings(&[
            "open_pr#1",
            "run_tests#1",
            "comment#1",
            "merge#1",
            "merge#2",
            "merge#3",
            "merge#4",
            "undo comment#1",
            "undo open_pr#1"
        ])
    );
    assert_eq!(outcome.report().levels(), [Level::Retry, Level::Retry, Level::Retry, Level::Compensate]);
    assert_eq!(outcome.report().slept, Duration::from_millis(500 + 1_000 + 2_000));
    let Outcome::Compensated { failure, report, .. } = &outcome else {
        panic!("expected Compensated, got {outcome:?}")
    };
    assert_eq!((failure.step.as_str(), failure.attempt), ("merge", 4));
    let undone: Vec<&str> = report.compensations.iter().map(|c| c.step.as_str()).collect();
    assert_eq!(undone, ["comment", "open_pr"]);
    assert_eq!(incidents.all(), [(Level::Compensate, "merge".into(), "503 from the vendor".into())]);
}

/// After the commit point nothing is compensated: where the ladder says level 3, the runtime
/// pages a human (level 4) and parks the saga with the step's failure. `resume` runs that
/// step again with fresh budgets, under the same idempotency key.
#[tokio::test(start_paused = true)]
async fn a_failure_after_the_commit_point_pages_and_parks_instead_of_compensating() {
    let harness = Harness::with_script(Script::new().then("announce", logical(4)));
    let (runtime, incidents, _) = runtime(&harness, exact_backoff());
    let outcome = runtime.run(ReleasePr::new()).await.unwrap();

    let Outcome::NeedsHuman { saga_id, failure, report } = &outcome else {
        panic!("expected NeedsHuman, got {outcome:?}")
    };
    assert_eq!((failure.step.as_str(), failure.attempt, failure.compensation.as_deref()), ("announce", 4, None));
    assert_eq!(report.levels(), [Level::Reprompt, Level::Reprompt, Level::SwitchModel, Level::PageHuman]);
    assert!(report.compensations.is_empty(), "nothing is compensated after the commit point");
    assert!(!harness.log().iter().any(|e| e.starts_with("undo")));
    assert_eq!(
        incidents.all(),
        [(Level::PageHuman, "announce".into(), "the model called a tool that does not exist".into())]
    );

    let resumed = runtime.resume::<ReleasePr>(saga_id).await.unwrap();
    assert!(resumed.is_completed());
    assert_eq!(
        harness.log(),
        strings(&[
            "open_pr#1",
            "run_tests#1",
            "comment#1",
            "merge#1",
            "announce#1",
            "announce#2",
            "announce#3",
            "announce#4",
            "announce#5"
        ])
    );
    let tiers = tiers(resumed.report(), "announce");
    assert_eq!(tiers, [0, 0, 0, 1, 0], "resume is a new pass through the ladder");
    assert_eq!(harness.key_of("announce#1"), harness.key_of("announce#5"));
    assert_eq!(incidents.all().len(), 1);
}

/// Transient failures after the commit point climb level 0 (with backoff) and then page
/// (level 4) instead of compensating; `resume` runs the step again with fresh budgets.
#[tokio::test(start_paused = true)]
async fn transient_failures_after_the_commit_point_end_in_a_page() {
    let harness = Harness::with_script(Script::new().then("announce", transient(5)));
    let (runtime, incidents, _) = runtime(&harness, exact_backoff());
    let start = Instant::now();
    let outcome = runtime.run(ReleasePr::new()).await.unwrap();
    assert_eq!(
        harness.log(),
        with_tail(
            &["open_pr#1", "run_tests#1", "comment#1", "merge#1"],
            &["announce#1", "announce#2", "announce#3", "announce#4"]
        )
    );
    let t = FailureClass::Transient;
    assert_eq!(
        escalations(outcome.report()),
        [
            (0, t, "announce".into(), 1),
            (0, t, "announce".into(), 2),
            (0, t, "announce".into(), 3),
            (4, t, "announce".into(), 4)
        ]
    );
    assert_eq!(start.elapsed(), Duration::from_millis(500 + 1_000 + 2_000));
    assert!(outcome.report().compensations.is_empty());
    assert!(matches!(outcome, Outcome::NeedsHuman { .. }));
    assert_eq!(incidents.all(), [(Level::PageHuman, "announce".into(), "503 from the vendor".into())]);

    // One scripted failure is left: the resumed pass retries once (level 0), then succeeds.
    let resumed = runtime.resume::<ReleasePr>(outcome.saga_id()).await.unwrap();
    assert!(resumed.is_completed());
    assert_eq!(&harness.log()[8..], strings(&["announce#5", "announce#6"]));
    assert_eq!(resumed.report().levels()[4..], [Level::Retry]);
    assert_eq!(start.elapsed(), Duration::from_millis(3_500 + 500), "the fresh budget starts the backoff over");
    assert_eq!(incidents.all().len(), 1);
}

/// A compensation that fails for good while undoing a rejected output, before the re-prompt,
/// is level 4 too: the saga parks rather than re-prompting over debris.
#[tokio::test(start_paused = true)]
async fn a_failed_compensation_of_a_rejected_output_parks_the_saga() {
    let stuck = vec![Plan::Fail(StepError::logical("comment is locked")); 4];
    let harness = Harness::with_script(Script::new().then("comment", [Plan::Wrong]).then("undo comment", stuck));
    let (runtime, incidents, _) = runtime(&harness, exact_backoff());
    let outcome = runtime.run(ReleasePr::new()).await.unwrap();
    assert_eq!(
        harness.log(),
        strings(&[
            "open_pr#1",
            "run_tests#1",
            "comment#1",
            "undo comment#1",
            "undo comment#2",
            "undo comment#3",
            "undo comment#4"
        ])
    );
    assert_eq!(outcome.report().levels(), [Level::Reprompt, Level::PageHuman]);
    assert!(matches!(outcome, Outcome::NeedsHuman { .. }));
    assert_eq!(incidents.all().iter().map(|i| i.0).collect::<Vec<_>>(), [Level::PageHuman]);

    // Resumed, the compensation succeeds and the re-prompt goes ahead.
    let resumed = runtime.resume::<ReleasePr>(outcome.saga_id()).await.unwrap();
    assert!(resumed.is_completed());
    assert_eq!(&harness.log()[7..], strings(&["undo comment#5", "comment#2", "merge#1", "announce#1"]));
}

/// A compensation that fails for good during an environmental restart parks the saga too;
/// resumed, the compensation succeeds and the restart goes on from the requested step.
#[tokio::test(start_paused = true)]
async fn a_failed_compensation_during_a_restart_parks_the_saga() {
    let moved = StepError::environmental("repo renamed").restart_from("open_pr");
    let stuck = vec![Plan::Fail(StepError::transient("timeout")); 4];
    let harness =
        Harness::with_script(Script::new().then("run_tests", [Plan::Fail(moved)]).then("undo open_pr", stuck));
    let (runtime, incidents, _) = runtime(&harness, exact_backoff());
    let start = Instant::now();
    let outcome = runtime.run(ReleasePr::new()).await.unwrap();
    assert_eq!(
        harness.log(),
        strings(&["open_pr#1", "run_tests#1", "undo open_pr#1", "undo open_pr#2", "undo open_pr#3", "undo open_pr#4"])
    );
    let (e, t) = (FailureClass::Environmental, FailureClass::Transient);
    assert_eq!(escalations(outcome.report()), [(0, e, "run_tests".into(), 1), (4, t, "open_pr".into(), 4)]);
    assert_eq!(start.elapsed(), Duration::from_millis(500 + 1_000 + 2_000), "the compensation's retries back off");
    let Outcome::NeedsHuman { failure, .. } = &outcome else { panic!("expected NeedsHuman, got {outcome:?}") };
    assert_eq!(failure.compensation.as_deref(), Some("close_pr"));
    assert_eq!(incidents.all(), [(Level::PageHuman, "open_pr".into(), "timeout".into())]);

    let resumed = runtime.resume::<ReleasePr>(outcome.saga_id()).await.unwrap();
    assert!(resumed.is_completed());
    assert_eq!(
        &harness.log()[6..],
        strings(&["undo open_pr#5", "open_pr#2", "run_tests#2", "comment#1", "merge#1", "announce#1"])
    );
    assert_eq!(resumed.report().restarts[0].from, "open_pr");
}
