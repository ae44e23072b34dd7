//! The saga of DESIGN.md §3 compiles, with every key and data flow by name.
use saga_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleasePr {
    pub repo: String,
    pub branch: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrId(u64);
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestReport(u32);
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommentId(String);
#[derive(Debug)]
pub struct MyError;
impl From<MyError> for StepError {
    fn from(_: MyError) -> Self {
        StepError::transient("my error")
    }
}

#[saga(name = "release-pr", version = 2)]
impl ReleasePr {
    #[step(compensate = close_pr, timeout = "30s")]
    async fn open_pr(&self, cx: &StepContext) -> StepResult<PrId> {
        let _key = cx.idempotency_key();
        Ok(PrId(1))
    }
    async fn close_pr(&self, _cx: &StepContext, _pr: &PrId) -> StepResult<()> {
        Ok(())
    }

    #[step(idempotent)]
    async fn run_tests(&self, _cx: &StepContext, open_pr: &PrId) -> Result<TestReport, MyError> {
        Ok(TestReport(open_pr.0 as u32))
    }

    #[step(compensate = delete_comment, validate = non_empty)]
    async fn comment(&self, _cx: &StepContext, run_tests: &TestReport) -> StepResult<CommentId> {
        Ok(CommentId(format!("{} passed", run_tests.0)))
    }
    async fn delete_comment(&self, _cx: &StepContext, _c: &CommentId) -> StepResult<()> {
        Ok(())
    }
    fn non_empty(&self, c: &CommentId) -> Result<(), String> {
        if c.0.is_empty() { Err("empty".into()) } else { Ok(()) }
    }

    #[step(commit)]
    async fn merge(&self, _cx: &StepContext, open_pr: &PrId, comment: &CommentId) -> StepResult<String> {
        Ok(format!("{}-{}", open_pr.0, comment.0))
    }

    #[step(idempotent, timeout = "500ms")]
    async fn announce(&self, _cx: &StepContext, merge: &String) -> StepResult<usize> {
        Ok(merge.len())
    }
}

fn main() {
    let definition = ReleasePr::definition();
    assert_eq!(definition.name(), "release-pr");
    assert_eq!(definition.version(), 2);
    let _: fn(ReleasePrOutput) -> (PrId, TestReport, CommentId, String, usize) =
        |o| (o.open_pr, o.run_tests, o.comment, o.merge, o.announce);
}
