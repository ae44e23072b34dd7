use std::rc::Rc;

use saga_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Upload;

async fn delete_remote() {}

#[saga]
impl Upload {
    #[step(compensate = remove)]
    async fn put(&self, _cx: &StepContext) -> StepResult<u64> {
        Ok(1)
    }
    async fn remove(&self, _cx: &StepContext, _id: &u64) -> StepResult<()> {
        let log = Rc::new(Vec::<u64>::new());
        delete_remote().await;
        drop(log);
        Ok(())
    }
}

fn main() {}
