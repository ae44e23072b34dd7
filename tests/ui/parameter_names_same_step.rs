use saga_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct ReleasePr;

#[derive(Serialize, Deserialize)]
struct PrId(u64);

#[saga]
impl ReleasePr {
    #[step(idempotent)]
    async fn open_pr(&self, _cx: &StepContext, open_pr: &PrId) -> StepResult<PrId> {
        Ok(PrId(open_pr.0))
    }
}

fn main() {}
