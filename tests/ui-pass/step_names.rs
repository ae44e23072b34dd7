// Typed step ids work outside the `#[saga]` block too, strings stay for names known at run
// time, and a `blame` method of another type (a code host's `git blame`) is left alone.
use saga_runtime::prelude::*;
use saga_runtime::StepId;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct CodeChange;

struct Repo;

impl Repo {
    fn blame(&self, path: &str) -> String {
        format!("blame of {path}")
    }
}

#[saga]
impl CodeChange {
    #[step(idempotent)]
    async fn plan(&self, _cx: &StepContext) -> StepResult<String> {
        Ok(Repo.blame("src/lib.rs"))
    }

    #[step(idempotent)]
    async fn write_files(&self, _cx: &StepContext, plan: &str) -> StepResult<u32> {
        if plan.is_empty() {
            // Blaming itself is allowed: a plain re-prompt.
            return Err(StepError::logical("empty plan").blame(CodeChangeStep::write_files));
        }
        Ok(plan.len() as u32)
    }

    #[step(idempotent)]
    async fn run_tests(&self, _cx: &StepContext, write_files: &u32) -> StepResult<u32> {
        match *write_files {
            0 => Err(red(CodeChangeStep::write_files)),
            1 => Err(StepError::logical("the plan is wrong").blame(culprit_named_at_run_time())),
            2 => Err(StepError::environmental("schema v2").restart_from(CodeChangeStep::plan)),
            n => Ok(n),
        }
    }
}

fn red(culprit: CodeChangeStep) -> StepError {
    StepError::logical("2 tests failed").blame(culprit)
}

fn culprit_named_at_run_time() -> String {
    String::from("plan")
}

fn main() {
    assert_eq!(CodeChangeStep::ALL.len(), 3);
    assert_eq!(CodeChangeStep::run_tests.name(), "run_tests");
    assert_eq!(CodeChangeStep::write_files.index(), 1);
    assert_eq!(CodeChangeStep::plan.to_string(), "plan");
    assert_eq!(red(CodeChangeStep::write_files).blamed_step(), Some("write_files"));
}
