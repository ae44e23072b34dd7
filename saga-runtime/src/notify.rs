//! Who hears about incidents: the [`Notifier`] (level 3), the [`Pager`] (level 4), and
//! [`Observer`]s of every journal record.

use crate::definition::Definition;
use crate::id::SagaId;
use crate::journal::{Record, Timeline};
use crate::outcome::Incident;

/// Called once when a saga rolls back (level 3).
///
/// Closures `Fn(&Incident) + Send + Sync + 'static` implement it. The default logs the
/// incident through `tracing` at warn level.
pub trait Notifier: Send + Sync + 'static {
    /// Tells someone that the saga is being compensated.
    fn notify(&self, incident: &Incident);
}

/// Called once when a saga is parked for a human (level 4).
///
/// Closures `Fn(&Incident) + Send + Sync + 'static` implement it. The default logs the
/// incident through `tracing` at error level.
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

/// The default notifier: a `tracing` warning.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogNotifier;

impl Notifier for LogNotifier {
    fn notify(&self, incident: &Incident) {
        tracing::warn!(saga_id = %incident.saga_id, saga = %incident.saga, level = incident.level as u8, "{incident}");
    }
}

/// The default pager: a `tracing` error.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogPager;

impl Pager for LogPager {
    fn page(&self, incident: &Incident) {
        tracing::error!(saga_id = %incident.saga_id, saga = %incident.saga, level = incident.level as u8, "{incident}");
    }
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
