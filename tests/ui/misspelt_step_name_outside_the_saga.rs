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
    #[step(idempotent)]
    async fn run_tests(&self, _cx: &StepContext, write_files: &u32) -> StepResult<u32> {
        red(*write_files)
    }
}

// Outside the `#[saga]` block the compiler checks the name, with its own message.
fn red(failed: u32) -> StepResult<u32> {
    Err(StepError::logical(format!("{failed} tests failed")).blame(CodeChangeStep::write_file))
}

fn main() {}
