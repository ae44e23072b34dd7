//! Who hears about incidents: the [`Notifier`] (level 3), the [`Pager`] (level 4), and
//! [`Observer`]s of every journal record.

use crate::definition::Definition;
use crate::id::SagaId;
use crate::journal::{Record, Timeline};
use crate::outcome::Incident;

/// Called once when a saga rolls back (level 3).
///
/// Closures `Fn(&Incident) + Send + Sync + 'static` implement it. The default,
/// [`LogNotifier`], logs the incident through `tracing` at warn level, or writes it to stderr
/// when no tracing subscriber is installed.
pub trait Notifier: Send + Sync + 'static {
    /// Tells someone that the saga is being compensated.
    fn notify(&self, incident: &Incident);
}

/// Called once when a saga is parked for a human (level 4).
///
/// Closures `Fn(&Incident) + Send + Sync + 'static` implement it. The default, [`LogPager`],
/// logs the incident through `tracing` at error level, or writes it to stderr when no tracing
/// subscriber is installed.
pub trait Pager: Send + Sync + 'static {
    /// Pages a human.
    fn page(&self, incident: &Incident);
}

impl<F: Fn(&Incident) + Send + Sync + 'static> Notifier for F {
    fn notify(&self, incident: &Incident) {
        self(incident)
    }
}

impl<F: Fn(&Incident) + Send + Sync + 'static> Pager for F {
    fn page(&self, incident: &Incident) {
        self(incident)
    }
}

/// The default notifier: a `tracing` warning, or a line on stderr when no tracing subscriber
/// is installed (a rollback is never silent).
#[derive(Debug, Default, Clone, Copy)]
pub struct LogNotifier;

impl Notifier for LogNotifier {
    fn notify(&self, incident: &Incident) {
        if no_subscriber() {
            to_stderr("ROLLED BACK", incident);
        } else {
            tracing::warn!(saga_id = %incident.saga_id, saga = %incident.saga, ladder_level = incident.level as u8, "{incident}");
        }
    }
}

/// The default pager: a `tracing` error, or a line on stderr when no tracing subscriber is
/// installed (a page is never silent).
#[derive(Debug, Default, Clone, Copy)]
pub struct LogPager;

impl Pager for LogPager {
    fn page(&self, incident: &Incident) {
        if no_subscriber() {
            to_stderr("PAGE", incident);
        } else {
            tracing::error!(saga_id = %incident.saga_id, saga = %incident.saga, ladder_level = incident.level as u8, "{incident}");
        }
    }
}

/// Whether no tracing subscriber would see an event here (none set globally nor for this
/// thread): then the default notifier and pager write to stderr instead.
fn no_subscriber() -> bool {
    tracing::dispatcher::get_default(|dispatch| dispatch.is::<tracing::subscriber::NoSubscriber>())
}

/// One incident as a line on stderr; the first one of the process also says how to route
/// incidents elsewhere.
fn to_stderr(what: &str, incident: &Incident) {
    static HINT: std::sync::Once = std::sync::Once::new();
    HINT.call_once(|| {
        eprintln!(
            "saga-runtime: no tracing subscriber is installed, so incidents are written here; route them with `Runtime::builder().notifier(..)` and `.pager(..)`, or install a subscriber"
        )
    });
    eprintln!("saga-runtime {what}: {incident}");
}

/// One journal record as it is written, for observers.
pub struct Observed<'a> {
    /// The saga's id.
    pub saga_id: &'a SagaId,
    /// The saga's definition.
    pub definition: &'static Definition,
    /// The record.
    pub record: &'a Record,
}

impl Observed<'_> {
    /// The record as one line of a timeline.
    pub fn timeline(&self) -> Timeline<'_> {
        Timeline { definition: self.definition, record: self.record }
    }
}

/// Sees every journal record as the runtime writes it: progress bars, live timelines,
/// metrics. Closures `Fn(&Observed<'_>) + Send + Sync + 'static` implement it.
pub trait Observer: Send + Sync + 'static {
    /// Called for each record, in order, before it is committed to the store.
    fn observe(&self, event: &Observed<'_>);
}

impl<F: Fn(&Observed<'_>) + Send + Sync + 'static> Observer for F {
    fn observe(&self, event: &Observed<'_>) {
        self(event)
    }
}

/// An [`Observer`] that prints every journal record as a line of the saga's timeline (see
/// [`Timeline`]), as the runtime writes it: what the example prints, reusable.
///
/// Each line starts with the seconds since the printer was made (or since
/// [`since`](Self::since)); [`prefix`](Self::prefix) and [`saga_ids`](Self::saga_ids) tell apart
/// the lines of several processes or sagas. A record of several lines (a failure and the
/// ladder's decision) keeps its lines together, even with sagas running at once. A failed write
/// is ignored: printing never fails a saga.
///
/// ```
/// use saga_runtime::prelude::*;
/// use saga_runtime::TimelinePrinter;
///
/// let runtime = Runtime::builder().observer(TimelinePrinter::stdout()).build();
/// # let _ = runtime;
/// ```
pub struct TimelinePrinter {
    out: std::sync::Mutex<Box<dyn std::io::Write + Send>>,
    started: std::time::Instant,
    prefix: String,
    saga_ids: bool,
}

impl TimelinePrinter {
    /// Prints to stdout.
    pub fn stdout() -> Self {
        Self::to_writer(std::io::stdout())
    }

    /// Prints to stderr.
    pub fn stderr() -> Self {
        Self::to_writer(std::io::stderr())
    }

    /// Prints to `out` (a file, a buffer, a pipe).
    pub fn to_writer(out: impl std::io::Write + Send + 'static) -> Self {
        TimelinePrinter {
            out: std::sync::Mutex::new(Box::new(out)),
            started: std::time::Instant::now(),
            prefix: String::new(),
            saga_ids: false,
        }
    }

    /// Counts the seconds on each line from `started` instead of from the printer's creation.
    pub fn since(mut self, started: std::time::Instant) -> Self {
        self.started = started;
        self
    }

    /// Starts every line (after the time) with `prefix`, such as a worker's name.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Tags every line with the last four characters of its saga's id (`[saga …1f2e]`), for a
    /// process that runs many sagas at once.
    pub fn saga_ids(mut self, tag: bool) -> Self {
        self.saga_ids = tag;
        self
    }

    /// The lines of one record, as printed.
    fn render(&self, event: &Observed<'_>) -> String {
        let at = self.started.elapsed().as_secs_f64();
        let mut tag = self.prefix.clone();
        if self.saga_ids {
            let id = event.saga_id.as_str();
            let tail = id.char_indices().rev().nth(3).map_or(id, |(i, _)| &id[i..]);
            tag.push_str(&format!("[saga …{tail}] "));
        }
        let mut text = String::new();
        for (n, line) in event.timeline().to_string().lines().enumerate() {
            if n == 0 {
                text.push_str(&format!("{at:>7.3}s  {tag}{line}\n"));
            } else {
                text.push_str(&format!("{:>8}  {tag}{line}\n", ""));
            }
        }
        text
    }
}

impl Observer for TimelinePrinter {
    fn observe(&self, event: &Observed<'_>) {
        let text = self.render(event);
        let mut out = self.out.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    }
}

impl std::fmt::Debug for TimelinePrinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimelinePrinter")
            .field("prefix", &self.prefix)
            .field("saga_ids", &self.saga_ids)
            .finish_non_exhaustive()
    }
}
