//! Configuration errors (a resource nobody registered, a downstream without a declared rate
//! limit) are the deployment's fault, not the saga's: the saga is parked for a human at once,
//! with a failure that names what is missing and the fix, instead of climbing the ladder and
//! compensating with compensations that need the same runtime. After the fix, `resume`
//! finishes it.

use std::sync::{Arc, Mutex};

use saga_runtime::prelude::*;
use saga_runtime::{FailureKind, Limit};
use serde::{Deserialize, Serialize};

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, line: &str) {
        self.0.lock().unwrap().push(line.to_owned());
    }
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// A client the `publish` step needs.
struct Registry;
/// A client the `release` compensation needs.
struct Ledger;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Deploy {
    /// `publish` draws from the `registry` rate limit instead of asking for the `Registry`.
    via_limit: bool,
    /// `check` fails (a logical failure, which rolls the saga back).
    check_fails: bool,
}

#[saga]
impl Deploy {
    #[step(compensate = release)]
    async fn reserve(&self, cx: &StepContext) -> StepResult<u32> {
        cx.resource::<Log>().push("reserve");
        Ok(7)
    }
    async fn release(&self, cx: &StepContext, _slot: &u32) -> StepResult<()> {
        let _ledger = cx.resource::<Ledger>();
        cx.resource::<Log>().push("release");
        Ok(())
    }

    #[step(idempotent)]
    async fn publish(&self, cx: &StepContext) -> StepResult<String> {
        if self.via_limit {
            let _permit = cx.limit("registry").await?;
        } else {
            let _registry = cx.resource::<Registry>();
        }
        cx.resource::<Log>().push("publish");
        Ok("v1".into())
    }

    #[step(idempotent)]
    async fn check(&self, _cx: &StepContext) -> StepResult<()> {
        if self.check_fails { Err(StepError::logical("the release notes are wrong")) } else { Ok(()) }
    }
}

#[derive(Clone, Default)]
struct Incidents(Arc<Mutex<Vec<String>>>);

fn builder(store: &MemoryStore, log: &Log, incidents: &Incidents) -> saga_runtime::RuntimeBuilder {
    let (notified, paged) = (incidents.clone(), incidents.clone());
    Runtime::builder()
        .store(store.clone())
        .policy(Policy { reprompts: 0, model_tiers: 1, ..Policy::default() })
        .resource(log.clone())
        .notifier(move |i: &Incident| notified.0.lock().unwrap().push(format!("notify: {}", i.failure)))
        .pager(move |i: &Incident| paged.0.lock().unwrap().push(format!("page: {}", i.failure)))
}

fn escalations(report: &Report) -> Vec<(Level, FailureClass, FailureKind, String, u32)> {
    report.escalations.iter().map(|e| (e.level, e.class, e.kind, e.step.clone(), e.attempt)).collect()
}

/// A step asking for a resource nobody registered parks the saga at once: one attempt, no
/// re-prompt, no other model, no compensation of `reserve`, one page naming the type and the
/// fix. Registering it and resuming finishes the saga without running `reserve` again.
#[tokio::test(start_paused = true)]
async fn a_missing_resource_parks_the_saga_at_once_and_resume_finishes_it_after_the_fix() {
    let (store, log, incidents) = (MemoryStore::new(), Log::default(), Incidents::default());
    let runtime = builder(&store, &log, &incidents).build();
    let id = SagaId::new("deploy-1");
    let input = Deploy { via_limit: false, check_fails: false };
    let outcome = runtime.run_with_id(id.clone(), input.clone()).await.unwrap();

    let Outcome::NeedsHuman { failure, report, .. } = &outcome else { panic!("expected NeedsHuman, got {outcome:?}") };
    let message = "no resource of type `misconfigured::Registry` is registered on this Runtime: add `.resource(value)` to `Runtime::builder()`, then `resume` the saga (it is parked, nothing was compensated)";
    assert_eq!(
        (failure.step.as_str(), failure.compensation.as_deref(), failure.class, failure.kind, failure.attempt),
        ("publish", None, FailureClass::Logical, FailureKind::Misconfigured, 1)
    );
    assert_eq!(failure.message, message);
    assert_eq!(
        escalations(report),
        [(Level::PageHuman, FailureClass::Logical, FailureKind::Misconfigured, "publish".into(), 1)]
    );
    assert!(report.compensations.is_empty(), "nothing is compensated: {:?}", report.compensations);
    assert_eq!(log.lines(), ["reserve"]);
    assert_eq!(
        *incidents.0.lock().unwrap(),
        [format!("page: step `publish` cannot run as the runtime is configured on attempt 1 (logical): {message}")],
        "no rollback notice, one page"
    );

    // The fix: the same store, a runtime that registers the resource.
    let runtime = builder(&store, &log, &incidents).resource(Registry).build();
    let outcome = runtime.resume::<Deploy>(&id).await.unwrap();
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(log.lines(), ["reserve", "publish"], "`reserve` did not run again");
    let attempts: Vec<(String, u32)> = outcome.report().attempts.iter().map(|a| (a.step.clone(), a.attempt)).collect();
    assert_eq!(attempts, [("reserve".into(), 1), ("publish".into(), 1), ("publish".into(), 2), ("check".into(), 1)]);
}

/// The same for a downstream whose rate limit was never declared (`cx.limit`): the two
/// configuration errors behave alike.
#[tokio::test(start_paused = true)]
async fn an_undeclared_rate_limit_parks_the_saga_at_once_like_a_missing_resource() {
    let (store, log, incidents) = (MemoryStore::new(), Log::default(), Incidents::default());
    let runtime = builder(&store, &log, &incidents).build();
    let id = SagaId::new("deploy-2");
    let outcome = runtime.run_with_id(id.clone(), Deploy { via_limit: true, check_fails: false }).await.unwrap();
    let Outcome::NeedsHuman { failure, report, .. } = &outcome else { panic!("expected NeedsHuman, got {outcome:?}") };
    assert_eq!(
        failure.message,
        "no rate limit is declared for downstream `registry` (none is declared): add `Runtime::builder().limit(\"registry\", Limit::per_second(..))`, then `resume` the saga (it is parked, nothing was compensated)"
    );
    assert_eq!(
        escalations(report),
        [(Level::PageHuman, FailureClass::Logical, FailureKind::Misconfigured, "publish".into(), 1)]
    );
    assert!(report.compensations.is_empty());
    assert_eq!(incidents.0.lock().unwrap().len(), 1);

    let runtime = builder(&store, &log, &incidents).limit("registry", Limit::per_second(10)).build();
    let outcome = runtime.resume::<Deploy>(&id).await.unwrap();
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(log.lines(), ["reserve", "publish"]);
}

/// A compensation asking for a resource nobody registered is parked at once too: its retries
/// would fail the same way. The rollback's notice went out first (level 3), then one page.
#[tokio::test(start_paused = true)]
async fn a_compensation_missing_a_resource_parks_at_once_without_retries() {
    let (store, log, incidents) = (MemoryStore::new(), Log::default(), Incidents::default());
    let runtime = builder(&store, &log, &incidents).resource(Registry).build();
    let id = SagaId::new("deploy-3");
    let outcome = runtime.run_with_id(id.clone(), Deploy { via_limit: false, check_fails: true }).await.unwrap();
    let Outcome::NeedsHuman { failure, report, .. } = &outcome else { panic!("expected NeedsHuman, got {outcome:?}") };
    assert_eq!(
        (failure.step.as_str(), failure.compensation.as_deref(), failure.kind, failure.attempt),
        ("reserve", Some("release"), FailureKind::Misconfigured, 1)
    );
    assert!(failure.message.starts_with("no resource of type `misconfigured::Ledger` is registered"), "{failure}");
    assert_eq!(
        escalations(report),
        [
            (Level::Compensate, FailureClass::Logical, FailureKind::Error, "check".into(), 1),
            (Level::PageHuman, FailureClass::Logical, FailureKind::Misconfigured, "reserve".into(), 1),
        ]
    );
    assert_eq!(report.compensations.len(), 1);
    assert_eq!((report.compensations[0].attempts, report.compensations[0].done), (1, false), "no retry");
    let seen = incidents.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0].starts_with("notify: step `check` failed on attempt 1"), "{seen:?}");
    assert!(seen[1].starts_with("page: compensation `release` of step `reserve` failed on attempt 1"), "{seen:?}");

    let runtime = builder(&store, &log, &incidents).resource(Registry).resource(Ledger).build();
    let outcome = runtime.resume::<Deploy>(&id).await.unwrap();
    assert!(matches!(outcome, Outcome::Compensated { .. }), "{outcome:?}");
    assert_eq!(log.lines(), ["reserve", "publish", "release"]);
}
