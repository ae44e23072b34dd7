//! OpenTelemetry export of one scenario of the example, `flaky-vendor` (the model vendor
//! answers 503 twice, the code host rate-limits once with `retry_after`): the span tree with
//! its model exchanges and the ladder's decisions, and every metric point, asserted whole
//! (a reviewed snapshot). In a test binary of its own, like `otel.rs`: tracing caches callsite
//! interest process-wide, so a thread-scoped subscriber is only reliable alone.

#[path = "common/otel.rs"]
mod otel_export;

use std::sync::Arc;
use std::time::Duration;

use otel_export::Capture;
use saga_examples::agent::CodeChange;
use saga_examples::fakes::{ModelFault, World};
use saga_runtime::Redacted;
use saga_runtime::prelude::*;

const HOST_TOKEN: &str = "ghp_0123456789abcdefghijABCDEFGHIJ";

#[tokio::test(start_paused = true)]
async fn the_flaky_vendor_scenario_exports_its_spans_exchanges_and_metrics() {
    let capture = Capture::install();

    // The scenario, as the example loads it.
    let world = Arc::new(World::open(None));
    world.with(|state| {
        state.scenario = "flaky-vendor".to_owned();
        state.model_faults.extend([ModelFault::Outage, ModelFault::Outage]);
        state.rate_limits = 1;
    });
    let runtime = Runtime::builder()
        .policy(Policy {
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(2),
                jitter: Jitter::None,
                ..Backoff::default()
            },
            ..Policy::default()
        })
        .register::<CodeChange>()
        .resource(world.clone())
        .observer(capture.metrics())
        .build();
    let input = CodeChange {
        repo: "acme/api".to_owned(),
        issue: 1234,
        request: "Fix the login bug reported in issue #1234".to_owned(),
        host_token: Redacted::new(HOST_TOKEN.to_owned()),
    };
    let outcome = runtime.run_with_id(SagaId::new("flaky-1"), input).await.unwrap();
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(outcome.report().levels(), [Level::Retry, Level::Retry, Level::Retry]);

    let rendered = capture.span_tree();
    assert!(!rendered.contains(HOST_TOKEN), "the host token is exported scrubbed:\n{rendered}");
    insta::assert_snapshot!("flaky_vendor_spans", rendered);

    insta::assert_snapshot!("flaky_vendor_metrics", capture.metric_points().join("\n"));
}
