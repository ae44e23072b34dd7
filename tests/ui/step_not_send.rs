use std::rc::Rc;

use saga_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Summarize;

async fn call_model() {}

#[saga]
impl Summarize {
    #[step(idempotent)]
    async fn draft(&self, _cx: &StepContext) -> StepResult<String> {
        let notes = Rc::new(String::from("notes"));
        call_model().await;
        Ok(notes.to_string())
    }
}

fn main() {}
