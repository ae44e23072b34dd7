use saga_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct ReleasePr;

#[derive(Serialize, Deserialize)]
struct PrId(u64);

#[saga]
impl ReleasePr {
    #[step(idempotent, validate = looks_right)]
    async fn open_pr(&self, _cx: &StepContext) -> StepResult<PrId> {
        Ok(PrId(1))
    }
    fn looks_right(&self, title: &String) -> Result<(), String> {
        if title.is_empty() { Err("empty".into()) } else { Ok(()) }
    }
}

fn main() {}
