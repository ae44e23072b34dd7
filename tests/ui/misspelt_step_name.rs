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
        Ok(plan.len() as u32)
    }

    #[step(idempotent)]
    async fn run_tests(&self, _cx: &StepContext, write_files: &u32) -> StepResult<u32> {
        if *write_files == 0 {
            return Err(StepError::logical("2 tests failed").blame(CodeChangeStep::write_file));
        }
        if *write_files > 100 {
            return Err(StepError::environmental("schema v2").restart_from(CodeChangeStep::plann));
        }
        Ok(41)
    }
}

fn main() {}
