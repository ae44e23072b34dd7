//! The code-change agent through the fault matrix: every step × every failure class, lost
//! responses, failing and doubled compensations, and a crash at every journal write, each
//! checked against the ladder and the world (`done` after a completion, `clean` after a
//! rollback). Then the same matrix with the code host's delete tool rotted (it answers success
//! and keeps test files): exactly the cells that roll back through `delete_files` fail.

use std::collections::BTreeSet;
use std::sync::Arc;

use saga_examples::agent::CodeChange;
use saga_examples::fakes::{PrState, World};
use saga_runtime::Redacted;
use saga_runtime::testing::{Fault, FaultMatrix, MatrixReport};

fn input() -> CodeChange {
    CodeChange {
        repo: "acme/api".to_owned(),
        issue: 1234,
        request: "Fix the login bug reported in issue #1234".to_owned(),
        host_token: Redacted::new("ghp_0123456789abcdefghijABCDEFGHIJ".to_owned()),
    }
}

async fn matrix(rotted: bool) -> MatrixReport {
    FaultMatrix::new(input)
        .world(move || {
            let world = Arc::new(World::open(None));
            world.with(|state| state.rotted_delete = rotted);
            world
        })
        .done(|world, output| {
            world.with(|state| {
                state.prs.get(&output.open_pr).is_some_and(|(_, s)| *s == PrState::Merged)
                    && state.prs.values().filter(|(_, s)| *s == PrState::Merged).count() == 1
                    && state.prs.values().all(|(_, s)| *s != PrState::Open)
                    && state.comments.len() == 1
                    && state.announcements.len() == 1
            })
        })
        .clean(|world| {
            world.with(|state| {
                state.branches.is_empty()
                    && state.prs.values().all(|(_, s)| *s == PrState::Closed)
                    && state.comments.is_empty()
                    && state.announcements.is_empty()
            })
        })
        // What a crash or a doubled compensation must not change (counters of calls may).
        .state(|world| {
            world.with(|state| {
                format!("{:?} {:?} {:?} {:?}", state.branches, state.prs, state.comments, state.announcements)
            })
        })
        .run()
        .await
}

#[tokio::test(start_paused = true)]
async fn the_code_change_agent_passes_its_fault_matrix() {
    let report = matrix(false).await;
    report.assert_all_pass();
    assert!(report.cells.len() > 60, "{} cells", report.cells.len());
}

#[tokio::test(start_paused = true)]
async fn a_rotted_delete_tool_fails_exactly_the_rollbacks_through_delete_files() {
    let report = matrix(true).await;
    let failed: BTreeSet<(&str, String)> = report.failed().map(|c| (c.cell.step, c.cell.fault.to_string())).collect();
    let mut expected = BTreeSet::new();
    // A step after `write_files`, up to the commit point, failing for good rolls back through
    // `delete_files`.
    for step in ["open_pr", "run_tests", "comment_on_issue", "merge"] {
        for fault in [Fault::Transient, Fault::Logical, Fault::Environmental] {
            expected.insert((step, fault.to_string()));
        }
    }
    // So do the lost responses of `write_files` and of the compensable steps after it, and the
    // compensation cells whose rollback reaches `delete_files`.
    for step in ["write_files", "open_pr", "comment_on_issue"] {
        for fault in [Fault::LostResponses, Fault::CompensationFails, Fault::CompensationTwice] {
            expected.insert((step, fault.to_string()));
        }
    }
    assert_eq!(failed, expected, "{report}");
    for cell in report.failed() {
        assert!(
            cell.problems.iter().any(|p| p.contains("the world is not `clean`")),
            "{}: {:?}",
            cell.cell.step,
            cell.problems
        );
    }
    let message = std::panic::catch_unwind(|| report.assert_all_pass()).unwrap_err();
    let message = message.downcast_ref::<String>().unwrap();
    assert!(
        message.contains(
            "- `open_pr`, transient, every attempt:\n    the saga was rolled back but the world is not `clean`"
        )
    );
    assert!(message.contains("write_files: compensating with `delete_files`"), "the timeline shows the rollback");
}

/// The agent's shape (steps, kinds, compensations, validators, fingerprint) is reviewed like
/// code: a change fails here until the snapshot is accepted (`INSTA_UPDATE=always cargo test`
/// or `cargo insta review`).
#[test]
fn the_definition_is_reviewed() {
    saga_runtime::assert_definition_snapshot!(CodeChange);
}
