use saga_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct ReleasePr;

#[derive(Serialize, Deserialize)]
struct PrId(u64);

trait Pipeline {
    fn go(&self);
}

#[saga]
impl Pipeline for ReleasePr {
    fn go(&self) {}
}

fn main() {}
