use saga_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct ReleasePr;

#[saga(deadline = "soon")]
impl ReleasePr {
    #[step(idempotent, limit = "git hub")]
    async fn open_pr(&self, _cx: &StepContext) -> StepResult<u64> {
        Ok(1)
    }

    #[step(idempotent, limit = github)]
    async fn comment(&self, _cx: &StepContext) -> StepResult<u64> {
        Ok(2)
    }
}

fn main() {}
