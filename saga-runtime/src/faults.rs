//! Faults injected into runs by the test harness (`testing::FaultMatrix`, feature `testing`):
//! the hook the driver consults around each step attempt and compensation. Not an API for
//! production code: a runtime without injected faults never consults it.

use crate::error::StepError;

/// What to inject around the attempts and compensations of a saga's steps.
#[doc(hidden)]
pub trait Faults: Send + Sync + 'static {
    /// Before attempt `attempt` of step `step` runs: fail it with this error instead (the body
    /// does not run).
    fn before_attempt(&self, _step: usize, _attempt: u32) -> Option<StepError> {
        None
    }

    /// After the body of the attempt succeeded: drop its output and fail with this error (a
    /// lost response: the step's side effects landed, its answer never arrived).
    fn after_attempt(&self, _step: usize, _attempt: u32) -> Option<StepError> {
        None
    }

    /// Before attempt `attempt` of the compensation of `step`: fail it with this error instead.
    fn before_compensation(&self, _step: usize, _attempt: u32) -> Option<StepError> {
        None
    }

    /// How many times in a row a successful compensation of `step` runs (1 normally).
    fn compensation_runs(&self, _step: usize) -> u32 {
        1
    }
}
