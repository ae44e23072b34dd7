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
