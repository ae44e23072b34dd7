use saga_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct ReleasePr;

#[derive(Serialize, Deserialize)]
struct PrId(u64);

#[saga]
impl ReleasePr {
    #[step]
    async fn open_pr(&self, _cx: &StepContext) -> StepResult<PrId> {
        Ok(PrId(1))
    }
    #[step(idempotent, retry = 2)]
    fn run_tests(&self, _cx: &StepContext, merge: &PrId) -> StepResult<u64> {
        Ok(merge.0)
    }
    #[step(commit)]
    async fn merge(&self, _cx: &StepContext) -> StepResult<PrId> {
        Ok(PrId(1))
    }
}

fn main() {}
