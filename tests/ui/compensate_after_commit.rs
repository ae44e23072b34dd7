use saga_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct ReleasePr;

#[derive(Serialize, Deserialize)]
struct PrId(u64);

#[saga]
impl ReleasePr {
    #[step(commit)]
    async fn merge(&self, _cx: &StepContext) -> StepResult<PrId> {
        Ok(PrId(1))
    }
    #[step(compensate = unannounce)]
    async fn notify(&self, _cx: &StepContext) -> StepResult<u32> {
        Ok(1)
    }
    async fn unannounce(&self, _cx: &StepContext, _n: &u32) -> StepResult<()> {
        Ok(())
    }
}

fn main() {}
