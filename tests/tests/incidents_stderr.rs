//! The default notifier and pager are never silent: without a tracing subscriber they write to
//! stderr. The saga runs in a child process (this test binary, run again for this one test) so
//! that its stderr can be read whole.

use std::process::Command;

use saga_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Doomed;

#[saga]
impl Doomed {
    #[step(compensate = undo)]
    async fn create(&self, _cx: &StepContext) -> StepResult<u32> {
        Ok(1)
    }
    async fn undo(&self, _cx: &StepContext, _created: &u32) -> StepResult<()> {
        Err(StepError::transient("the undo API is down"))
    }

    #[step(idempotent)]
    async fn check(&self, _cx: &StepContext) -> StepResult<u32> {
        Err(StepError::logical("the check is wrong"))
    }
}

/// A rollback (level 3) and a park (level 4) with the default notifier and pager: once with no
/// subscriber (two lines on stderr, after a one-time hint), once with a subscriber (nothing on
/// stderr: the incidents go to tracing).
fn child() {
    let policy = Policy { reprompts: 0, model_tiers: 1, compensation_retries: 0, ..Policy::default() };
    let run = |id: &str| {
        let runtime = Runtime::builder().policy(policy.clone()).build();
        let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let outcome = tokio.block_on(runtime.run_with_id(SagaId::new(id), Doomed)).unwrap();
        assert!(matches!(outcome, Outcome::NeedsHuman { .. }), "{outcome:?}");
    };
    run("no-subscriber");
    tracing::subscriber::with_default(tracing_subscriber::registry(), || run("with-subscriber"));
}

#[test]
fn without_a_tracing_subscriber_the_default_notifier_and_pager_write_to_stderr() {
    if std::env::var_os("SAGA_INCIDENTS_CHILD").is_some() {
        return child();
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "without_a_tracing_subscriber_the_default_notifier_and_pager_write_to_stderr", "--nocapture"])
        .env("SAGA_INCIDENTS_CHILD", "1")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("saga-runtime")).collect();
    assert_eq!(
        lines,
        [
            "saga-runtime: no tracing subscriber is installed, so incidents are written here; route them with `Runtime::builder().notifier(..)` and `.pager(..)`, or install a subscriber",
            "saga-runtime ROLLED BACK: saga `no-subscriber` (doomed) reached level 3 (compensate): step `check` failed on attempt 1 (logical): the check is wrong",
            "saga-runtime PAGE: saga `no-subscriber` (doomed) reached level 4 (page human): compensation `undo` of step `create` failed on attempt 1 (transient): the undo API is down",
        ],
        "{stderr}"
    );
}
