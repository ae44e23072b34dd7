use saga_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct ReleasePr;

#[derive(Serialize, Deserialize)]
struct PrId(u64);

#[saga]
impl ReleasePr {
    #[step(compensate = close_pr)]
    async fn open_pr(&self, _cx: &StepContext) -> StepResult<PrId> {
        Ok(PrId(1))
    }
    async fn close_pr(&self, _pr: &PrId) -> StepResult<()> {
        Ok(())
    }
}

fn main() {}
