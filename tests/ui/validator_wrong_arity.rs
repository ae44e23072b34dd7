use saga_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct ReleasePr;

#[saga]
impl ReleasePr {
    #[step(idempotent, validate = non_empty)]
    async fn comment(&self, _cx: &StepContext) -> StepResult<String> {
        Ok("42 tests passed".into())
    }
    fn non_empty(&self, _cx: &StepContext, comment: &str) -> Result<(), String> {
        if comment.is_empty() { Err("the comment is empty".into()) } else { Ok(()) }
    }
}

fn main() {}
