//! Reading what the OpenTelemetry SDK's in-memory exporters received, as text to assert whole:
//! the span tree with its events, and every metric point.

use std::collections::HashMap;

use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt;

/// The runtime's spans (through `saga_runtime::otel::layer`, the subscriber of this thread
/// while it lives) and metrics (through the observer `metrics()` gives), kept in memory.
pub struct Capture {
    spans: InMemorySpanExporter,
    tracer: SdkTracerProvider,
    metrics: InMemoryMetricExporter,
    meter: SdkMeterProvider,
    _subscriber: tracing::subscriber::DefaultGuard,
}

impl Capture {
    pub fn install() -> Capture {
        let spans = InMemorySpanExporter::default();
        let tracer = SdkTracerProvider::builder().with_simple_exporter(spans.clone()).build();
        let metrics = InMemoryMetricExporter::default();
        let meter = SdkMeterProvider::builder().with_reader(PeriodicReader::builder(metrics.clone()).build()).build();
        let _subscriber =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(saga_runtime::otel::layer(&tracer)));
        Capture { spans, tracer, metrics, meter, _subscriber }
    }

    /// The observer to give `Runtime::builder().observer(..)`.
    pub fn metrics(&self) -> saga_runtime::otel::Metrics {
        saga_runtime::otel::metrics(&self.meter)
    }

    /// The spans exported so far, as a tree (see [`tree`]).
    pub fn span_tree(&self) -> String {
        self.tracer.force_flush().unwrap();
        tree(&self.spans.get_finished_spans().unwrap())
    }

    /// Every metric point so far (see [`points`]).
    pub fn metric_points(&self) -> Vec<String> {
        self.meter.force_flush().unwrap();
        points(&self.metrics)
    }
}

/// The attributes worth asserting (not the layer's code locations, threads and timings).
pub fn attributes(attributes: &[KeyValue]) -> String {
    let mut kept: Vec<String> = attributes
        .iter()
        .filter(|kv| !kv.key.as_str().starts_with("code.") && !kv.key.as_str().starts_with("thread."))
        .filter(|kv| !["busy_ns", "idle_ns", "target"].contains(&kv.key.as_str()))
        .map(|kv| format!("{}={}", kv.key, kv.value))
        .collect();
    kept.sort();
    kept.join(" ")
}

/// The spans as an indented tree (children in the order they started), each with its status
/// and its events.
pub fn tree(spans: &[SpanData]) -> String {
    let mut children: HashMap<_, Vec<&SpanData>> = HashMap::new();
    for span in spans {
        children.entry(span.parent_span_id).or_default().push(span);
    }
    for list in children.values_mut() {
        list.sort_by_key(|s| s.start_time);
    }
    fn render(
        span: &SpanData,
        depth: usize,
        children: &HashMap<opentelemetry::trace::SpanId, Vec<&SpanData>>,
        out: &mut String,
    ) {
        let pad = "  ".repeat(depth);
        out.push_str(&format!("{pad}{} [{}] {:?}\n", span.name, attributes(&span.attributes), span.status));
        for event in span.events.iter() {
            out.push_str(&format!("{pad}  * {} [{}]\n", event.name, attributes(&event.attributes)));
        }
        for child in children.get(&span.span_context.span_id()).into_iter().flatten() {
            render(child, depth + 1, children, out);
        }
    }
    let mut out = String::new();
    for root in children.get(&opentelemetry::trace::SpanId::INVALID).into_iter().flatten() {
        render(root, 0, &children, &mut out);
    }
    out
}

/// Every data point as `name{attributes} = value` (histograms: their count), sorted.
pub fn points(exporter: &InMemoryMetricExporter) -> Vec<String> {
    let mut out = Vec::new();
    let exported = exporter.get_finished_metrics().unwrap();
    let last = exported.last().expect("metrics were exported");
    for scope in last.scope_metrics() {
        assert_eq!(scope.scope().name(), "saga-runtime");
        for metric in scope.metrics() {
            match metric.data() {
                AggregatedMetrics::U64(MetricData::Sum(sum)) => {
                    for p in sum.data_points() {
                        let kvs: Vec<KeyValue> = p.attributes().cloned().collect();
                        out.push(format!("{}{{{}}} = {}", metric.name(), attributes(&kvs), p.value()));
                    }
                }
                AggregatedMetrics::F64(MetricData::Histogram(histogram)) => {
                    assert_eq!(metric.unit(), "s");
                    for p in histogram.data_points() {
                        let kvs: Vec<KeyValue> = p.attributes().cloned().collect();
                        assert!(p.sum() >= 0.0);
                        out.push(format!("{}{{{}}} count {}", metric.name(), attributes(&kvs), p.count()));
                    }
                }
                other => panic!("unexpected data for {}: {other:?}", metric.name()),
            }
        }
    }
    out.sort();
    out
}
