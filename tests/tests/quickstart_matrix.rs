//! The README's "Proving your compensations", word for word: the quickstart's saga through the
//! fault matrix, then with `delete_account` broken.

use saga_runtime::prelude::*;
use saga_runtime::testing::{Fault, FaultMatrix};
use serde::{Deserialize, Serialize};

/// The quickstart's saga, with a switch that breaks its compensation.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Onboard {
    email: String,
    #[serde(default)]
    broken: bool,
}

#[saga]
impl Onboard {
    #[step(compensate = delete_account)]
    async fn create_account(&self, cx: &StepContext) -> StepResult<u64> {
        let _key = cx.idempotency_key();
        Ok(7)
    }
    async fn delete_account(&self, _cx: &StepContext, _account: &u64) -> StepResult<()> {
        if self.broken {
            return Err(StepError::logical("the accounts API changed: DELETE /accounts/7 answers 405"));
        }
        Ok(())
    }

    #[step(idempotent, validate = polite, timeout = "30s")]
    async fn write_welcome(&self, _cx: &StepContext, create_account: &u64) -> StepResult<String> {
        Ok(format!("Welcome, {} (account {create_account})!", self.email))
    }
    fn polite(&self, text: &str) -> Result<(), String> {
        if text.starts_with("Welcome") { Ok(()) } else { Err("the greeting is rude".into()) }
    }

    #[step(commit)]
    async fn activate(&self, _cx: &StepContext, create_account: &u64) -> StepResult<bool> {
        Ok(*create_account > 0)
    }
}

#[tokio::test(start_paused = true)]
async fn compensations_hold() {
    FaultMatrix::new(|| Onboard { email: "ada@example.com".into(), broken: false }).run().await.assert_all_pass(); // prints the matrix; fails naming each bad cell
}

#[tokio::test(start_paused = true)]
async fn a_broken_compensation_fails_the_cells_that_roll_back_through_it() {
    let report = FaultMatrix::new(|| Onboard { email: "ada@example.com".into(), broken: true }).run().await;
    assert_eq!(report.cells.len(), 26);
    let failed: Vec<(&str, Fault)> = report.failed().map(|c| (c.cell.step, c.cell.fault)).collect();
    assert_eq!(
        failed,
        [
            ("create_account", Fault::CompensationFails),
            ("create_account", Fault::CompensationTwice),
            ("write_welcome", Fault::Transient),
            ("write_welcome", Fault::Logical),
            ("write_welcome", Fault::Environmental),
            ("activate", Fault::Transient),
            ("activate", Fault::Logical),
            ("activate", Fault::Environmental),
        ]
    );
    let message = std::panic::catch_unwind(|| report.assert_all_pass()).unwrap_err();
    let message = message.downcast_ref::<String>().unwrap();
    assert!(message.starts_with("8 of 26 cells of `onboard` failed:"), "{message}");
    assert!(message.contains(
        "- `write_welcome`, transient, every attempt:\n    it ended needs_human (compensation `delete_account` of step `create_account` failed on attempt 4 (logical): the accounts API changed: DELETE /accounts/7 answers 405) where the ladder says compensated\n    the ladder climbed [0, 0, 0, 3, 4] where it should climb [0, 0, 0, 3]\n    timeline:\n      started onboard v1 ("
    ), "{message}");
}
