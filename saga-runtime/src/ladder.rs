//! The escalation ladder, exactly as the table of DESIGN.md §4:
//!
//! | failure of a step | what the runtime does | level |
//! |---|---|---|
//! | transient | sleep (exponential backoff, full jitter, capped; at least `retry_after`), run again with the same inputs; after `transient_retries` retries: level 3 | 0 each retry |
//! | logical (a returned error, a rejected output, a timeout, a panic) | run again with `previous_error()` set, up to `reprompts` times | 1 |
//! | logical, re-prompts used up | one attempt on each stronger tier (`model_tier()` 1, 2, …) | 2 |
//! | logical, tiers used up | level 3 | |
//! | environmental | compensate the completed compensable steps from the restart point on (reverse order), run again from `restart_from` with `observation()` set and fresh budgets; after `environment_restarts` restarts caused by the same step: level 3 | 0 |
//! | level 3 | notify once, compensate every completed compensable step in reverse order (each compensation retried with the same backoff), return `Compensated` | 3 |
//! | a compensation fails `compensation_retries + 1` times | stop, page once, park the saga, return `NeedsHuman` | 4 |
//! | a configuration error (`FailureKind::Misconfigured`: a resource nobody registered, a downstream without a declared rate limit), of a step or a compensation | stop at once, page once, park the saga, return `NeedsHuman`; nothing is retried or compensated | 4 |
//!
//! An attempt (or a compensation) that a stop of the process interrupted is found on resume
//! and retried with backoff (level 0) under its own budget, `interruptions`, which counts the
//! interruptions of one step in a row: crashes and deploys never spend the budgets above, an
//! attempt that ends any other way resets the count, and a stop the saga did not cause never
//! rolls it back. A step that keeps dying with its process (it may be what kills it: an OOM,
//! an abort) is stopped after `interruptions` stops in a row and parked for a human (level 4),
//! before or after the commit point alike, with a failure that names it.
//!
//! Each failure class climbs its own rows, so a budget of one class is never spent by
//! another. After the commit point nothing is compensated: where the table says level 3, the
//! runtime pages a human and parks the saga instead (level 4).
//!
//! The decisions here are pure functions of the policy, the definition and the progress
//! folded from the journal; the driver records each decision in the journal before acting
//! on it, so a resumed saga continues on the same rung.

use crate::definition::Definition;
use crate::error::{FailureClass, FailureKind, StepError};
use crate::journal::{CompensationNext, Next, Progress};
use crate::policy::Policy;

/// What to do after step `step` failed with `error`.
pub(crate) fn decide(
    policy: &Policy,
    definition: &Definition,
    progress: &Progress,
    step: usize,
    error: &mut StepError,
) -> Next {
    let state = &progress.steps[step];
    let after_commit = definition.commit_index().is_some_and(|commit| step > commit);
    let exhausted = if after_commit { Next::Park } else { Next::RollBack };
    if error.kind() == FailureKind::Misconfigured {
        // A configuration error (a resource nobody registered, a downstream without a declared
        // rate limit) is the deployment's fault, not the saga's: retrying, re-prompting or
        // another model cannot help, and rolling back would undo good work with compensations
        // that need the same runtime (and usually fail the same way). So the saga is parked at
        // once for a human, with the failure naming what is missing and the fix; after the fix,
        // `resume` continues from this step with fresh budgets.
        return Next::Park;
    }
    if error.kind() == FailureKind::DeadlinePassed {
        // Retrying cannot help: the time is up.
        return exhausted;
    }
    if error.kind() == FailureKind::Interrupted {
        // The process stopped during the attempt: retried under a budget of its own, so that
        // deploys and crashes never spend the step's retries, while a step that crashes the
        // process every time still ends on the ladder instead of looping.
        return if state.interruptions_used < policy.interruptions {
            Next::Retry { delay: policy.backoff.delay(state.interruptions_used + 1, None) }
        } else {
            Next::Park
        };
    }
    match error.class() {
        FailureClass::Transient => {
            if state.transient_used < policy.transient_retries {
                Next::Retry { delay: policy.backoff.delay(state.transient_used + 1, error.retry_after_delay()) }
            } else {
                exhausted
            }
        }
        FailureClass::Logical => {
            if state.reprompts_used < policy.reprompts {
                Next::Reprompt
            } else if state.tier + 1 < policy.model_tiers.max(1) {
                Next::SwitchModel { tier: state.tier + 1 }
            } else {
                exhausted
            }
        }
        FailureClass::Environmental => {
            if state.restarts < policy.environment_restarts {
                let requested = error.restart_step().map(str::to_owned);
                let (from, note) = restart_point(definition, step, requested.as_deref());
                Next::Restart {
                    from: from as u32,
                    requested,
                    note,
                    observation: error.take_observation().map(std::sync::Arc::new),
                }
            } else {
                exhausted
            }
        }
    }
}

/// Where an environmental failure of `step` restarts: the requested step when it is an
/// earlier step that may run again, else the failing step, with a note saying why.
fn restart_point(definition: &Definition, step: usize, requested: Option<&str>) -> (usize, Option<String>) {
    let Some(requested) = requested else {
        return (step, None);
    };
    let failing = definition.steps()[step].name();
    match definition.position(requested) {
        None => (
            step,
            Some(format!(
                "`{requested}` is not a step of `{}`, so it restarted from the failing step `{failing}`",
                definition.name()
            )),
        ),
        Some(from) if from > step => (
            step,
            Some(format!("`{requested}` runs after `{failing}`, so it restarted from the failing step `{failing}`")),
        ),
        Some(from) => match definition.commit_index() {
            Some(commit) if step > commit && from <= commit => (
                step,
                Some(format!(
                    "`{requested}` is not after the commit point `{}`, which has passed, so it restarted from the failing step `{failing}`",
                    definition.steps()[commit].name()
                )),
            ),
            _ => (from, None),
        },
    }
}

/// What to do after a compensation of `step` failed with `error`.
pub(crate) fn decide_compensation(
    policy: &Policy,
    progress: &Progress,
    step: usize,
    error: &StepError,
) -> CompensationNext {
    let state = &progress.steps[step];
    if error.kind() == FailureKind::Misconfigured {
        // As for a step: retrying cannot fix the configuration; a human fixes it and resumes.
        return CompensationNext::Park;
    }
    if error.kind() == FailureKind::Interrupted {
        let used = state.compensation_interruptions_used;
        return if used < policy.interruptions {
            CompensationNext::Retry { delay: policy.backoff.delay(used + 1, None) }
        } else {
            CompensationNext::Park
        };
    }
    let used = state.compensation_retries_used;
    if used < policy.compensation_retries {
        CompensationNext::Retry { delay: policy.backoff.delay(used + 1, error.retry_after_delay()) }
    } else {
        CompensationNext::Park
    }
}
