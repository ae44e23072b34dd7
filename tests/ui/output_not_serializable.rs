use saga_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct ReleasePr;

#[derive(Serialize, Deserialize)]
struct PrId(u64);

struct Handle(u64);

#[saga]
impl ReleasePr {
    #[step(idempotent)]
    async fn open_pr(&self, _cx: &StepContext) -> StepResult<Handle> {
        Ok(Handle(1))
    }
}

fn main() {}
