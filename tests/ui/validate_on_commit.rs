use saga_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct ReleasePr;

#[derive(Serialize, Deserialize)]
struct PrId(u64);

#[saga]
impl ReleasePr {
    #[step(commit, validate = merged)]
    async fn merge(&self, _cx: &StepContext) -> StepResult<PrId> {
        Ok(PrId(1))
    }
    fn merged(&self, _pr: &PrId) -> Result<(), String> {
        Ok(())
    }
}

fn main() {}
