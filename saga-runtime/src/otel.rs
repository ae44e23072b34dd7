//! OpenTelemetry export (feature `otel`): the runtime's tracing spans as OpenTelemetry spans,
//! model exchanges as span events following OpenTelemetry's GenAI semantic conventions, and
//! metrics through the OpenTelemetry metrics API.
//!
//! Two lines turn it on, with the providers your application already builds (an OTLP
//! exporter, a Prometheus reader, ...):
//!
//! ```no_run
//! use opentelemetry_sdk::metrics::SdkMeterProvider;
//! use opentelemetry_sdk::trace::SdkTracerProvider;
//! use saga_runtime::prelude::*;
//! use tracing_subscriber::layer::SubscriberExt;
//! use tracing_subscriber::util::SubscriberInitExt;
//!
//! let tracer_provider = SdkTracerProvider::builder().build(); // .with_batch_exporter(otlp)
//! let meter_provider = SdkMeterProvider::builder().build(); // .with_periodic_exporter(otlp)
//!
//! tracing_subscriber::registry().with(saga_runtime::otel::layer(&tracer_provider)).init();
//! let runtime = Runtime::builder().observer(saga_runtime::otel::metrics(&meter_provider)).build();
//! # let _ = runtime;
//! ```
//!
//! **Spans.** `saga` (attributes `saga_id`, `saga`), its `step` spans (`step`), their `attempt`
//! spans (`attempt`, `tier`; on failure `class`, `level` and the error status) and the
//! `compensation` spans (`step`, `compensation`, `attempt`; on failure `class`, `level`). The
//! runtime's log events (a failed attempt, a compensation) are span events of the span they
//! happen in.
//!
//! **Model exchanges.** Each [`StepContext::record_llm`](crate::StepContext::record_llm) adds a
//! `gen_ai.client.inference.operation.details` event to the current span (the attempt's), with
//! `gen_ai.operation.name` = `chat`, `gen_ai.output.type` = `text`, `gen_ai.input.messages` and
//! `gen_ai.output.messages` (the conventions' JSON message form, the prompt as a `user` message
//! and the response as an `assistant` one), and `saga.model_tier`. The texts are the journaled
//! ones: credentials already scrubbed (see [`scrub`](crate::scrub)). The runtime knows neither
//! the provider nor the model, so `gen_ai.provider.name` and `gen_ai.request.model` are left for
//! your own model-call span.
//!
//! **Metrics** (meter `saga-runtime`), each with `saga.name` and `saga.step`:
//!
//! | instrument | kind | more attributes |
//! |---|---|---|
//! | `saga.step.attempts` | counter | |
//! | `saga.escalations` | counter | `saga.level` (0–4), `saga.failure.class`, `saga.failure.kind` |
//! | `saga.compensations` | counter (compensations that succeeded) | `saga.compensation` |
//! | `saga.compensation.failures` | counter (failed compensation attempts) | `saga.compensation`, `saga.level` (3: retried, 4: parked), `saga.failure.class`, `saga.failure.kind` |
//! | `saga.step.duration` | histogram, seconds, one value per attempt | `saga.attempt.outcome` (`completed`, `failed`) |

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;

use opentelemetry::metrics::{Counter, Histogram, Meter, MeterProvider};
use opentelemetry::trace::{Tracer, TracerProvider};
use opentelemetry::{InstrumentationScope, KeyValue};
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};

use crate::error::{Failure, FailureKind};
use crate::id::SagaId;
use crate::journal::{CompensationNext, Event};
use crate::notify::{Observed, Observer};
use crate::outcome::Level;

/// The instrumentation scope of the spans and metrics.
fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("saga-runtime").with_version(env!("CARGO_PKG_VERSION")).build()
}

/// The tracing layer that exports the runtime's spans (and every other span of the
/// subscriber) through `provider`: `tracing_subscriber::registry().with(otel::layer(&p))`.
///
/// It is `tracing_opentelemetry::layer()` with a tracer of scope `saga-runtime`; configure it
/// further with that crate's builder methods.
pub fn layer<S, P>(provider: &P) -> OpenTelemetryLayer<S, P::Tracer>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    P: TracerProvider,
    P::Tracer: Tracer + 'static,
    <P::Tracer as Tracer>::Span: Send + Sync,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer_with_scope(scope()))
}

/// The metrics observer, on a meter of `provider`: `Runtime::builder().observer(otel::metrics(&p))`.
pub fn metrics(provider: &impl MeterProvider) -> Metrics {
    Metrics::new(&provider.meter_with_scope(scope()))
}

/// An [`Observer`] that records the runtime's metrics (see the [module](self) for the list).
pub struct Metrics {
    attempts: Counter<u64>,
    escalations: Counter<u64>,
    compensations: Counter<u64>,
    compensation_failures: Counter<u64>,
    step_duration: Histogram<f64>,
    /// When each running attempt started (ms since the epoch), to time it. An attempt whose
    /// result this process never sees (a stop, a lost claim) leaves its entry until its saga
    /// finishes or parks here.
    started: Mutex<HashMap<(SagaId, u32), u64>>,
}

impl Metrics {
    /// The instruments, created on `meter`.
    pub fn new(meter: &Meter) -> Self {
        Metrics {
            attempts: meter.u64_counter("saga.step.attempts").with_description("Attempts of saga steps").build(),
            escalations: meter
                .u64_counter("saga.escalations")
                .with_description("Failures of saga steps, by the ladder level they led to")
                .build(),
            compensations: meter
                .u64_counter("saga.compensations")
                .with_description("Compensations that undid a step")
                .build(),
            compensation_failures: meter
                .u64_counter("saga.compensation.failures")
                .with_description("Failed attempts of compensations")
                .build(),
            step_duration: meter
                .f64_histogram("saga.step.duration")
                .with_unit("s")
                .with_description("Duration of each attempt of a saga step")
                .build(),
            started: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(SagaId, u32), u64>> {
        self.started.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn attempt_ended(&self, observed: &Observed<'_>, step: u32, names: &[KeyValue], outcome: &'static str) {
        let Some(started) = self.lock().remove(&(observed.saga_id.clone(), step)) else { return };
        let seconds = observed.record.at_ms.saturating_sub(started) as f64 / 1000.0;
        let mut attributes = names.to_vec();
        attributes.push(KeyValue::new("saga.attempt.outcome", outcome));
        self.step_duration.record(seconds, &attributes);
    }
}

impl Observer for Metrics {
    fn observe(&self, observed: &Observed<'_>) {
        let definition = observed.definition;
        let names = |step: u32| -> Vec<KeyValue> {
            let step = definition.steps().get(step as usize).map_or("?", |s| s.name());
            vec![KeyValue::new("saga.name", definition.name()), KeyValue::new("saga.step", step)]
        };
        let compensation = |step: u32| -> KeyValue {
            let method = definition.steps().get(step as usize).and_then(|s| s.compensation()).unwrap_or("?");
            KeyValue::new("saga.compensation", method)
        };
        match &observed.record.event {
            Event::AttemptStarted { step, .. } => {
                self.attempts.add(1, &names(*step));
                self.lock().insert((observed.saga_id.clone(), *step), observed.record.at_ms);
            }
            Event::StepCompleted { step, .. } => self.attempt_ended(observed, *step, &names(*step), "completed"),
            Event::StepFailed { step, failure, next, .. } => {
                let names = names(*step);
                let mut attributes = names.clone();
                attributes.extend(failure_attributes(failure, next.level()));
                self.escalations.add(1, &attributes);
                self.attempt_ended(observed, *step, &names, "failed");
            }
            Event::CompensationDone { step, .. } => {
                let mut attributes = names(*step);
                attributes.push(compensation(*step));
                self.compensations.add(1, &attributes);
            }
            Event::CompensationFailed { step, failure, next } => {
                let level = match next {
                    CompensationNext::Retry { .. } => Level::Compensate,
                    CompensationNext::Park => Level::PageHuman,
                };
                let mut attributes = names(*step);
                attributes.push(compensation(*step));
                attributes.extend(failure_attributes(failure, level));
                self.compensation_failures.add(1, &attributes);
            }
            Event::Finished { .. } | Event::Paged => {
                self.lock().retain(|(saga_id, _), _| saga_id != observed.saga_id);
            }
            _ => {}
        }
    }
}

fn failure_attributes(failure: &Failure, level: Level) -> [KeyValue; 3] {
    [
        KeyValue::new("saga.level", level as u8 as i64),
        KeyValue::new("saga.failure.class", failure.class.to_string()),
        KeyValue::new("saga.failure.kind", kind_name(failure.kind)),
    ]
}

/// The kind as a snake_case attribute value.
fn kind_name(kind: FailureKind) -> &'static str {
    match kind {
        FailureKind::Error => "error",
        FailureKind::Rejected => "rejected",
        FailureKind::TimedOut => "timed_out",
        FailureKind::Panicked => "panicked",
        FailureKind::Interrupted => "interrupted",
        FailureKind::StoreUnavailable => "store_unavailable",
        FailureKind::TooLarge => "too_large",
        FailureKind::Misconfigured => "misconfigured",
        FailureKind::DeadlinePassed => "deadline_passed",
        FailureKind::Cancelled => "cancelled",
    }
}

/// The GenAI event of one model exchange, on the current span (the attempt's). `prompt` and
/// `response` are the scrubbed texts, as journaled.
pub(crate) fn llm_exchange(prompt: &str, response: &str, tier: u32) {
    let input = serde_json::json!([{ "role": "user", "parts": [{ "type": "text", "content": prompt }] }]);
    let output = serde_json::json!([{
        "role": "assistant",
        "parts": [{ "type": "text", "content": response }],
        "finish_reason": "stop",
    }]);
    tracing::Span::current().add_event(
        Cow::Borrowed("gen_ai.client.inference.operation.details"),
        vec![
            KeyValue::new("gen_ai.operation.name", "chat"),
            KeyValue::new("gen_ai.output.type", "text"),
            KeyValue::new("gen_ai.input.messages", input.to_string()),
            KeyValue::new("gen_ai.output.messages", output.to_string()),
            KeyValue::new("saga.model_tier", i64::from(tier)),
        ],
    );
}
