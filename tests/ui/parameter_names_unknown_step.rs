use saga_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct ReleasePr;

#[derive(Serialize, Deserialize)]
struct PrId(u64);

#[saga]
impl ReleasePr {
    #[step(idempotent)]
    async fn open_pr(&self, _cx: &StepContext) -> StepResult<PrId> {
        Ok(PrId(1))
    }
    #[step(idempotent)]
    async fn run_tests(&self, _cx: &StepContext, open_prr: &PrId) -> StepResult<u64> {
        Ok(open_prr.0)
    }
}

fn main() {}
