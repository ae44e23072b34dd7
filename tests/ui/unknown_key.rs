use saga_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct ReleasePr;

#[derive(Serialize, Deserialize)]
struct PrId(u64);

#[saga]
impl ReleasePr {
    #[step(idempotent, retries = 3)]
    async fn open_pr(&self, _cx: &StepContext) -> StepResult<PrId> {
        Ok(PrId(1))
    }
}

fn main() {}
