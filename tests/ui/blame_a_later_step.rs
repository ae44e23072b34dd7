use saga_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct CodeChange;

#[saga]
impl CodeChange {
    #[step(idempotent)]
    async fn plan(&self, _cx: &StepContext) -> StepResult<String> {
        Ok("plan".into())
    }

    #[step(idempotent)]
    async fn write_files(&self, _cx: &StepContext, plan: &str) -> StepResult<u32> {
        if plan.is_empty() {
            return Err(StepError::logical("nothing to write").blame(CodeChangeStep::run_tests));
        }
        if plan.len() > 100 {
            return Err(StepError::environmental("repo moved").restart_from(CodeChangeStep::run_tests));
        }
        Ok(plan.len() as u32)
    }

    #[step(idempotent)]
    async fn run_tests(&self, _cx: &StepContext, write_files: &u32) -> StepResult<u32> {
        Ok(*write_files)
    }
}

fn main() {}
