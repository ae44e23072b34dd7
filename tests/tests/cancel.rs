//! Cancelling a saga: an operator rolls it back now (level 3, `FailureKind::Cancelled`), as
//! long as its commit point has not passed; a saga being driven rolls back before its next
//! attempt; a finished one, or one past its commit point, is refused and left as it was.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use saga_runtime::FailureKind;
use saga_runtime::journal::Event;
use saga_runtime::prelude::*;
use serde::{Deserialize, Serialize};

/// What ran, in order.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, what: &str) {
        self.0.lock().unwrap().push(what.to_owned());
    }
    fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ship {
    /// How long `pack` takes.
    pack_ms: u64,
}

#[saga]
impl Ship {
    #[step(compensate = unreserve)]
    async fn reserve(&self, cx: &StepContext) -> StepResult<u32> {
        cx.resource::<Log>().push("reserve");
        Ok(1)
    }
    async fn unreserve(&self, cx: &StepContext, _r: &u32) -> StepResult<()> {
        cx.resource::<Log>().push("unreserve");
        Ok(())
    }

    #[step(compensate = unpack)]
    async fn pack(&self, cx: &StepContext) -> StepResult<u32> {
        tokio::time::sleep(Duration::from_millis(self.pack_ms)).await;
        cx.resource::<Log>().push("pack");
        Ok(2)
    }
    async fn unpack(&self, cx: &StepContext, _p: &u32) -> StepResult<()> {
        cx.resource::<Log>().push("unpack");
        Ok(())
    }

    #[step(commit)]
    async fn send(&self, cx: &StepContext) -> StepResult<u32> {
        cx.resource::<Log>().push("send");
        Ok(3)
    }

    #[step(idempotent)]
    async fn notify(&self, cx: &StepContext) -> StepResult<()> {
        cx.resource::<Log>().push("notify");
        Ok(())
    }
}

fn runtime(log: &Log) -> Runtime {
    Runtime::builder().resource(log.clone()).register::<Ship>().build()
}

#[tokio::test(start_paused = true)]
async fn a_saga_being_driven_rolls_back_before_its_next_step() {
    let log = Log::default();
    let runtime = runtime(&log);
    let run = {
        let runtime = runtime.clone();
        tokio::spawn(async move { runtime.run_with_id(SagaId::new("s1"), Ship { pack_ms: 1_000 }).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = runtime.cancel(&SagaId::new("s1"), "the customer withdrew the order").await.unwrap();
    assert_eq!(status, Status::Running, "the driving task rolls it back");
    let outcome = run.await.unwrap().unwrap();
    assert_eq!(outcome.status(), Status::Compensated);
    let failure = outcome.failure().unwrap();
    assert_eq!((failure.kind, failure.step.as_str()), (FailureKind::Cancelled, "send"));
    assert_eq!(failure.message, "cancelled by an operator: the customer withdrew the order");
    assert_eq!(
        log.entries(),
        ["reserve", "pack", "unpack", "unreserve"],
        "the step in flight finished, then the rollback"
    );
    assert_eq!(outcome.report().levels(), [Level::Compensate]);
    let journal = runtime.journal(&SagaId::new("s1")).await.unwrap();
    assert!(
        journal.iter().any(
            |r| matches!(&r.event, Event::Cancelled { reason, .. } if reason == "the customer withdrew the order")
        )
    );
}

#[tokio::test]
async fn a_saga_nobody_drives_is_claimed_and_rolled_back() {
    let log = Log::default();
    let runtime = runtime(&log);
    let id = runtime.start(Ship { pack_ms: 0 }).await.unwrap();
    let status = runtime.cancel(&id, "not needed any more").await.unwrap();
    assert_eq!(status, Status::Compensated);
    assert!(log.entries().is_empty(), "nothing had run, so nothing to undo");
    let outcome = runtime.run_with_id(id, Ship { pack_ms: 0 }).await.unwrap();
    assert_eq!(outcome.failure().unwrap().kind, FailureKind::Cancelled);
}

#[tokio::test]
async fn past_the_commit_point_or_finished_a_saga_is_not_cancelled() {
    let log = Log::default();
    let runtime = runtime(&log);
    let done = runtime.run_with_id(SagaId::new("done"), Ship { pack_ms: 0 }).await.unwrap();
    assert!(done.is_completed());
    let error = runtime.cancel(&SagaId::new("done"), "too late").await.unwrap_err();
    assert!(matches!(error, RuntimeError::CannotCancel { .. }), "{error}");
    assert_eq!(error.to_string(), "saga `done` cannot be cancelled: it is completed already");
    let journal = runtime.journal(&SagaId::new("done")).await.unwrap();
    assert!(!journal.iter().any(|r| matches!(r.event, Event::Cancelled { .. })), "nothing was written");

    let error = runtime.cancel(&SagaId::new("nope"), "no such saga").await.unwrap_err();
    assert!(matches!(error, RuntimeError::UnknownSaga { .. }), "{error}");
}
