//! OpenTelemetry export (feature `otel`), through the SDK's in-memory exporters: the spans,
//! span events and metrics of one saga with a transient retry, a model exchange and a rollback
//! whose compensation fails once, asserted whole. In a test binary of its own: tracing caches
//! callsite interest process-wide, so a thread-scoped subscriber is only reliable alone.

#[path = "common/otel.rs"]
mod otel_export;

use std::time::Duration;

use otel_export::Capture;
use saga_runtime::prelude::*;
use serde::{Deserialize, Serialize};

const TOKEN: &str = "ghp_R7sKx2Qm9VbL4tNw8ZcY1pHd6FjA3eUo5GiE";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Triage {
    issue: u64,
}

#[saga]
impl Triage {
    #[step(compensate = discard)]
    async fn draft(&self, cx: &StepContext) -> StepResult<String> {
        if cx.attempt() == 1 {
            return Err(StepError::transient("503 from the model vendor"));
        }
        let summary = "Login fails after the 2.3 upgrade.";
        cx.record_llm(&format!("Summarize issue #{} (tracker token {TOKEN})", self.issue), summary);
        Ok(summary.to_owned())
    }
    async fn discard(&self, cx: &StepContext, _draft: &String) -> StepResult<()> {
        if cx.attempt() == 1 { Err(StepError::transient("the tracker timed out")) } else { Ok(()) }
    }

    #[step(idempotent)]
    async fn post(&self, _cx: &StepContext) -> StepResult<u64> {
        Err(StepError::logical("the issue is locked"))
    }
}

#[tokio::test(start_paused = true)]
async fn a_saga_exports_its_spans_its_model_exchange_and_its_metrics() {
    let capture = Capture::install();
    let policy = Policy {
        reprompts: 0,
        model_tiers: 1,
        backoff: Backoff { jitter: Jitter::None, ..Backoff::default() },
        ..Policy::default()
    };
    let runtime = Runtime::builder().policy(policy).notifier(|_: &Incident| {}).observer(capture.metrics()).build();
    let outcome = runtime.run_with_id(SagaId::new("triage-7"), Triage { issue: 7 }).await.unwrap();
    assert!(matches!(outcome, Outcome::Compensated { .. }), "{outcome:?}");
    assert_eq!(outcome.report().slept, Duration::from_millis(1000), "one step retry, one compensation retry");

    let rendered = capture.span_tree();
    assert!(!rendered.contains(TOKEN), "the prompt is exported scrubbed:\n{rendered}");
    let prompt = saga_runtime::scrub(&format!("Summarize issue #7 (tracker token {TOKEN})"));
    let expected = EXPECTED.replace("{PROMPT}", &serde_json::to_string(&prompt).unwrap());
    assert_eq!(rendered, expected, "\n{rendered}");

    assert_eq!(
        capture.metric_points(),
        [
            "saga.compensation.failures{saga.compensation=discard saga.failure.class=transient saga.failure.kind=error saga.level=3 saga.name=triage saga.step=draft} = 1",
            "saga.compensations{saga.compensation=discard saga.name=triage saga.step=draft} = 1",
            "saga.escalations{saga.failure.class=logical saga.failure.kind=error saga.level=3 saga.name=triage saga.step=post} = 1",
            "saga.escalations{saga.failure.class=transient saga.failure.kind=error saga.level=0 saga.name=triage saga.step=draft} = 1",
            "saga.step.attempts{saga.name=triage saga.step=draft} = 2",
            "saga.step.attempts{saga.name=triage saga.step=post} = 1",
            "saga.step.duration{saga.attempt.outcome=completed saga.name=triage saga.step=draft} count 1",
            "saga.step.duration{saga.attempt.outcome=failed saga.name=triage saga.step=draft} count 1",
            "saga.step.duration{saga.attempt.outcome=failed saga.name=triage saga.step=post} count 1",
        ]
    );
}

/// The span tree: the saga, its steps, their attempts (the failed ones with an error status and
/// the ladder's decision as an event), the model exchange as a GenAI event of the attempt that
/// made it, and the compensation's two attempts under the saga.
const EXPECTED: &str = r#"saga [saga=triage saga_id=triage-7] Unset
  step [saga_id=triage-7 step=draft] Unset
    attempt [attempt=1 class=transient level=0 step=draft tier=0] Error { description: "" }
      * step failed: level 0 (retry) [class=transient error=503 from the model vendor ladder_level=0 level=WARN]
    attempt [attempt=2 step=draft tier=0] Unset
      * gen_ai.client.inference.operation.details [gen_ai.input.messages=[{"parts":[{"content":{PROMPT},"type":"text"}],"role":"user"}] gen_ai.operation.name=chat gen_ai.output.messages=[{"finish_reason":"stop","parts":[{"content":"Login fails after the 2.3 upgrade.","type":"text"}],"role":"assistant"}] gen_ai.output.type=text saga.model_tier=0]
      * step completed [level=DEBUG]
  step [saga_id=triage-7 step=post] Unset
    attempt [attempt=1 class=logical level=3 step=post tier=0] Error { description: "" }
      * step failed: level 3 (compensate) [class=logical error=the issue is locked ladder_level=3 level=WARN]
  compensation [attempt=1 class=transient compensation=discard saga_id=triage-7 step=draft] Error { description: "" }
    * compensation failed [class=transient error=the tracker timed out level=WARN]
  compensation [attempt=2 compensation=discard saga_id=triage-7 step=draft] Unset
    * compensated [level=INFO]
"#;
