//! The append-only journal of a saga and the fold that rebuilds its progress from it.
//!
//! The runtime never keeps state that the journal does not hold: every decision (a retry and
//! its delay, a re-prompt, a model switch, a restart, a rollback, a park) is an [`Event`]
//! that is applied to the saga's progress by one fold function per event, both while the saga
//! runs and when it is rebuilt from the store after a crash. The outcome and the
//! [`Report`](crate::Report) are therefore always what the journal says.
//!
//! - `record`: the [`Record`]s and [`Event`]s, as written;
//! - `fold`: the progress they lead to (private);
//! - `timeline`: reading a journal back ([`Timeline`], [`summarize`]).

mod fold;
mod record;
mod timeline;

pub(crate) use fold::{Parked, Phase, Progress, StepState, Then};
pub use record::{CompensationNext, Event, LandedEffect, Next, Payload, Record};
pub use timeline::{Summary, Timeline, TimelineLine, summarize};

/// A journal that contradicts itself: records out of order, or a record that does not follow
/// from the ones before it (it was edited, or written by a buggy version).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct JournalError {
    reason: String,
}

impl JournalError {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        JournalError { reason: reason.into() }
    }

    /// What is wrong, in words.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}
