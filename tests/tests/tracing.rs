//! Tracing spans of a run. In a test binary of its own: tracing caches callsite interest
//! process-wide, so a thread-scoped subscriber is only reliable without other tests running.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use saga_runtime::prelude::*;

/// Tracing: a `saga` span (saga id), a `step` span per step, an `attempt` span per attempt and
/// a `compensation` span per compensation attempt, recording the failure's class and level, and
/// for a blame, the step blamed and (on the blamed step's next attempt) the step that found it.
#[tokio::test(start_paused = true)]
async fn tracing_spans_name_the_saga_step_attempt_class_and_level() {
    use tracing_subscriber::layer::SubscriberExt;

    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let harness = Harness::with_script(Script::new().then("run_tests", transient(1)));
    let (runtime, _, _) = runtime(&harness, exact_backoff());
    runtime.run_with_id(SagaId::new("traced"), ReleasePr::new()).await.unwrap();

    let spans_store = spans;
    let spans = spans_of(&spans_store).clone();
    let saga = spans.iter().find(|s| s.0 == "saga").expect("a saga span");
    assert!(saga.1.contains(&("saga_id".into(), "traced".into())));
    assert!(saga.1.contains(&("saga".into(), "release-pr".into())));
    let steps: Vec<String> = spans.iter().filter(|s| s.0 == "step").map(|s| s.field("step")).collect();
    assert_eq!(steps, ["open_pr", "run_tests", "comment", "merge", "announce"]);
    let attempts: Vec<(String, String, String, String)> = spans
        .iter()
        .filter(|s| s.0 == "attempt")
        .map(|s| (s.field("step"), s.field("attempt"), s.field("class"), s.field("level")))
        .collect();
    assert_eq!(
        attempts,
        [
            ("open_pr".into(), "1".into(), String::new(), String::new()),
            ("run_tests".into(), "1".into(), "transient".into(), "0".into()),
            ("run_tests".into(), "2".into(), String::new(), String::new()),
            ("comment".into(), "1".into(), String::new(), String::new()),
            ("merge".into(), "1".into(), String::new(), String::new()),
            ("announce".into(), "1".into(), String::new(), String::new()),
        ]
    );

    // A rollback (level 3 on the attempt) whose compensation fails for good (level 4 on the
    // compensation's last attempt).
    spans_of(&spans_store).clear();
    let stuck = vec![Plan::Fail(StepError::transient("down")); 4];
    let harness = Harness::with_script(Script::new().then("run_tests", logical(4)).then("undo open_pr", stuck));
    let (runtime, _, _) = common::runtime(&harness, exact_backoff());
    runtime.run_with_id(SagaId::new("traced-2"), ReleasePr::new()).await.unwrap();
    let spans = spans_of(&spans_store).clone();
    let levels: Vec<(String, String, String)> = spans
        .iter()
        .filter(|s| s.0 == "attempt" && s.field("step") == "run_tests")
        .map(|s| (s.field("attempt"), s.field("class"), s.field("level")))
        .collect();
    assert_eq!(
        levels,
        [
            ("1".into(), "logical".into(), "1".into()),
            ("2".into(), "logical".into(), "1".into()),
            ("3".into(), "logical".into(), "2".into()),
            ("4".into(), "logical".into(), "3".into())
        ]
    );
    let compensations: Vec<(String, String, String, String, String)> = spans
        .iter()
        .filter(|s| s.0 == "compensation")
        .map(|s| (s.field("saga_id"), s.field("step"), s.field("attempt"), s.field("class"), s.field("level")))
        .collect();
    let c = |attempt: &str, level: &str| -> (String, String, String, String, String) {
        ("traced-2".into(), "open_pr".into(), attempt.into(), "transient".into(), level.into())
    };
    assert_eq!(compensations, [c("1", ""), c("2", ""), c("3", ""), c("4", "4")]);

    // A blame: the failing attempt names the step it blamed, and the blamed step's next attempt
    // names the step that found its mistake.
    spans_of(&spans_store).clear();
    let red = StepError::logical("tests failed").blame(ReleasePrStep::open_pr);
    let harness = Harness::with_script(Script::new().then("comment", [Plan::Fail(red)]));
    let (runtime, _, _) = common::runtime(&harness, exact_backoff());
    runtime.run_with_id(SagaId::new("traced-3"), ReleasePr::new()).await.unwrap();
    let spans = spans_of(&spans_store).clone();
    let attempts: Vec<(String, String, String, String, String)> = spans
        .iter()
        .filter(|s| s.0 == "attempt")
        .map(|s| (s.field("step"), s.field("attempt"), s.field("level"), s.field("blamed"), s.field("found_by")))
        .collect();
    let a = |step: &str, attempt: &str, level: &str, blamed: &str, found_by: &str| {
        (step.to_owned(), attempt.to_owned(), level.to_owned(), blamed.to_owned(), found_by.to_owned())
    };
    assert_eq!(
        attempts,
        [
            a("open_pr", "1", "", "", ""),
            a("run_tests", "1", "", "", ""),
            a("comment", "1", "1", "open_pr", ""),
            a("open_pr", "2", "", "", "comment"),
            a("run_tests", "2", "", "", ""),
            a("comment", "2", "", "", ""),
            a("merge", "1", "", "", ""),
            a("announce", "1", "", "", ""),
        ]
    );
    let compensations: Vec<(String, String)> =
        spans.iter().filter(|s| s.0 == "compensation").map(|s| (s.field("step"), s.field("attempt"))).collect();
    assert_eq!(compensations, [("open_pr".to_owned(), "1".to_owned())]);
}

fn spans_of(spans: &Spans) -> std::sync::MutexGuard<'_, Vec<SpanRecord>> {
    spans.0.lock().unwrap()
}

#[derive(Clone, Debug)]
struct SpanRecord(String, Vec<(String, String)>);

impl SpanRecord {
    fn field(&self, name: &str) -> String {
        self.1.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default()
    }
}

#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<SpanRecord>>>);

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

/// The index of a span's record in `Spans`, kept in the span's extensions.
struct SpanIndex(usize);

impl<S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>> tracing_subscriber::Layer<S>
    for Spans
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        cx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Vec::new();
        attrs.record(&mut Fields(&mut fields));
        let mut spans = self.0.lock().unwrap();
        spans.push(SpanRecord(attrs.metadata().name().to_owned(), fields));
        let index = SpanIndex(spans.len() - 1);
        cx.span(id).expect("a new span is registered").extensions_mut().insert(index);
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        cx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let span = cx.span(id).expect("a recorded span is registered");
        let extensions = span.extensions();
        let index = extensions.get::<SpanIndex>().expect("every span gets an index").0;
        values.record(&mut Fields(&mut self.0.lock().unwrap()[index].1));
    }
}
