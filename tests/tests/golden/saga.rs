//! The saga the golden files were written with. Frozen: its fingerprint and the journals in
//! `tests/fixtures/` depend on every token of its definition, so never edit it (write a new
//! saga for new golden files).

// The validator and the inputs take the outputs as declared (`&Vec<String>`), as the first
// release required; the file is frozen, so clippy's advice to take slices does not apply.
#![allow(clippy::ptr_arg)]

use saga_runtime::prelude::*;
use serde::{Deserialize, Serialize};

/// When registered as a resource, `draft` hangs (to leave a saga interrupted in a fixture).
pub struct HangInDraft;

/// How the golden saga's steps behave, chosen by its input.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Golden {
    /// `complete`, `compensate`, `park` or `interrupt`.
    pub mode: String,
    pub amount: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hold {
    pub id: String,
    pub cents: u64,
}

#[saga(name = "golden", version = 3)]
impl Golden {
    #[step(compensate = release)]
    async fn reserve(&self, cx: &StepContext) -> StepResult<Hold> {
        if cx.attempt() == 1 {
            return Err(StepError::transient("503 from the bank").retry_after(std::time::Duration::from_millis(1)));
        }
        let id: String = cx.effect("hold", async { Ok::<_, StepError>(format!("hold-{}", self.amount)) }).await?;
        Ok(Hold { id, cents: self.amount * 100 })
    }
    async fn release(&self, _cx: &StepContext, _hold: &Hold) -> StepResult<()> {
        if self.mode == "park" { Err(StepError::transient("the bank is down")) } else { Ok(()) }
    }

    #[step(idempotent, validate = polite)]
    async fn draft(&self, cx: &StepContext, reserve: &Hold) -> StepResult<Vec<String>> {
        cx.record_llm("Write a receipt for {hold}", "Dear customer, token sk-ant-api03-AbCdEfGhIjKlMnOpQrSt");
        if cx.try_resource::<HangInDraft>().is_some() {
            std::future::pending::<()>().await;
        }
        if self.mode == "compensate" || self.mode == "park" {
            return Err(StepError::logical("the receipt names the wrong customer"));
        }
        Ok(vec![format!("receipt for {}", reserve.id), format!("{} cents", reserve.cents)])
    }
    fn polite(&self, lines: &Vec<String>) -> Result<(), String> {
        if lines.is_empty() { Err("no receipt".into()) } else { Ok(()) }
    }

    #[step(commit)]
    async fn charge(
        &self,
        _cx: &StepContext,
        reserve: &Hold,
        draft: &Vec<String>,
    ) -> StepResult<Option<(u64, String)>> {
        Ok(Some((reserve.cents, draft.join("\n"))))
    }

    #[step(idempotent)]
    async fn notify(
        &self,
        _cx: &StepContext,
        charge: &Option<(u64, String)>,
    ) -> StepResult<std::collections::BTreeMap<String, u64>> {
        Ok(charge.iter().map(|(c, _)| ("charged".to_owned(), *c)).collect())
    }
}
