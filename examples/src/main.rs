//! The main job: a code-change agent saga run against in-process fakes, printing a timeline
//! of every step, attempt, failure class, ladder level, compensation and the outcome.
//!
//! ```text
//! cargo run -p saga-examples -- --scenario happy|flaky-vendor|wrong-answer|schema-changed|stuck-compensation
//! ```

mod agent;
mod fakes;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use saga_runtime::prelude::*;

use agent::{CodeChange, World};
use fakes::{Chat, Ci, CiResult, CodeHost, ModelFault, PrState, ScriptedModel};

const SCENARIOS: [(&str, &str); 5] = [
    ("happy", "every call succeeds"),
    ("flaky-vendor", "the model vendor answers 503 twice, the code host rate-limits once: level 0"),
    ("wrong-answer", "the model plans outside the repo until a stronger tier fixes it: levels 1 and 2"),
    (
        "schema-changed",
        "CI finds the schema migrated: compensate, re-plan with the new schema (level 0, environmental)",
    ),
    ("stuck-compensation", "the tests stay red (levels 1, 2, 3), then closing the PR keeps failing: level 4"),
];

fn usage() -> String {
    let mut text = String::from("usage: saga-examples [--scenario NAME]\n\nscenarios:\n");
    for (name, what) in SCENARIOS {
        text.push_str(&format!("  {name:<19} {what}\n"));
    }
    text
}

fn parse_args() -> Result<String, String> {
    let mut args = std::env::args().skip(1);
    let mut scenario = "happy".to_owned();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--scenario" | "-s" => scenario = args.next().ok_or("--scenario needs a name")?,
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if SCENARIOS.iter().any(|(name, _)| *name == scenario) {
        Ok(scenario)
    } else {
        Err(format!("unknown scenario {scenario:?}"))
    }
}

fn world_for(scenario: &str) -> World {
    let mut world =
        World { model: ScriptedModel::default(), host: CodeHost::default(), ci: Ci::default(), chat: Chat::default() };
    match scenario {
        "flaky-vendor" => {
            world.model = ScriptedModel::with([ModelFault::Outage, ModelFault::Outage]);
            world.host.state.lock().unwrap().rate_limits = 1;
        }
        "wrong-answer" => world.model = ScriptedModel::with([ModelFault::Hallucinate; 3]),
        "schema-changed" => world.ci = Ci::with([CiResult::SchemaMoved]),
        "stuck-compensation" => {
            world.ci = Ci::with([CiResult::Red; 4]);
            world.host.state.lock().unwrap().close_failures = 4;
        }
        _ => {}
    }
    world
}

#[tokio::main]
async fn main() -> ExitCode {
    let scenario = match parse_args() {
        Ok(scenario) => scenario,
        Err(error) if error.is_empty() => {
            print!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprint!("error: {error}\n\n{}", usage());
            return ExitCode::from(2);
        }
    };
    let world = Arc::new(world_for(&scenario));
    let started = Instant::now();
    let runtime = Runtime::builder()
        .policy(Policy {
            // Short delays keep the demo quick; the shape of the ladder is the default one.
            backoff: Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(2), ..Backoff::default() },
            ..Policy::default()
        })
        .resource(world.clone())
        .observer(move |event: &saga_runtime::Observed<'_>| {
            println!("{:>7.3}s  {}", started.elapsed().as_secs_f64(), event.timeline());
        })
        .notifier(|incident: &Incident| println!("           [notifier] {incident}"))
        .pager(|incident: &Incident| println!("           [pager] PAGE: {incident}"))
        .build();

    println!("scenario {scenario}: {}\n", SCENARIOS.iter().find(|(n, _)| *n == scenario).map_or("", |(_, w)| *w));
    println!("{}", CodeChange::definition());
    let input = CodeChange {
        repo: "acme/api".to_owned(),
        issue: 1234,
        request: "Fix the login bug reported in issue #1234".to_owned(),
    };
    let outcome = match runtime.run(input).await {
        Ok(outcome) => outcome,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };

    println!();
    print_outcome(&outcome);
    print_world(&world);
    let expected = match scenario.as_str() {
        "stuck-compensation" => Status::NeedsHuman,
        _ => Status::Completed,
    };
    if outcome.status() == expected {
        ExitCode::SUCCESS
    } else {
        eprintln!("scenario {scenario} should end {expected}, it ended {}", outcome.status());
        ExitCode::FAILURE
    }
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
    let host = world.host.state.lock().unwrap();
    let open: Vec<String> =
        host.prs.iter().filter(|(_, (_, s))| *s == PrState::Open).map(|(n, _)| format!("#{n}")).collect();
    let merged: Vec<String> =
        host.prs.iter().filter(|(_, (_, s))| *s == PrState::Merged).map(|(n, _)| format!("#{n}")).collect();
    println!(
        "world: branches {:?}, open PRs {:?}, merged PRs {:?}, comments {}, announcements {}, model calls {}",
        host.branches.keys().collect::<Vec<_>>(),
        open,
        merged,
        host.comments.len(),
        world.chat.posted.lock().unwrap().len(),
        world.model.calls.lock().unwrap()
    );
}
