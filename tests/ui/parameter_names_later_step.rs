use saga_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct ReleasePr;

#[derive(Serialize, Deserialize)]
struct PrId(u64);

#[saga]
impl ReleasePr {
    #[step(idempotent)]
    async fn comment(&self, _cx: &StepContext, merge: &PrId) -> StepResult<u32> {
        Ok(merge.0 as u32)
    }
    #[step(commit)]
    async fn merge(&self, _cx: &StepContext) -> StepResult<PrId> {
        Ok(PrId(1))
    }
}

fn main() {}
