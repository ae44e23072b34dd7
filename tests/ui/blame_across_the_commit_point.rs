use saga_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct CodeChange;

#[saga]
impl CodeChange {
    #[step(idempotent)]
    async fn write_files(&self, _cx: &StepContext) -> StepResult<u32> {
        Ok(3)
    }
    #[step(commit)]
    async fn merge(&self, _cx: &StepContext, write_files: &u32) -> StepResult<u32> {
        Ok(*write_files)
    }
    #[step(idempotent)]
    async fn write_notes(&self, _cx: &StepContext, merge: &u32) -> StepResult<String> {
        Ok(format!("merged {merge}"))
    }
    #[step(idempotent)]
    async fn announce(&self, _cx: &StepContext, write_notes: &str) -> StepResult<()> {
        if write_notes.is_empty() {
            return Err(StepError::logical("the notes are empty").blame(CodeChangeStep::write_files));
        }
        if write_notes.len() > 100 {
            return Err(StepError::environmental("chat moved").restart_from(CodeChangeStep::merge));
        }
        Ok(())
    }
}

fn main() {}
