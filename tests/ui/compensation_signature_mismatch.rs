use saga_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct ReleasePr;

#[derive(Serialize, Deserialize)]
struct PrId(u64);

#[derive(Serialize, Deserialize)]
struct CommentId(String);

#[saga]
impl ReleasePr {
    #[step(compensate = delete_comment)]
    async fn open_pr(&self, _cx: &StepContext) -> StepResult<PrId> {
        Ok(PrId(1))
    }
    async fn delete_comment(&self, _cx: &StepContext, _comment: &CommentId) -> StepResult<()> {
        Ok(())
    }
}

fn main() {}
