//! The escalation ladder, exactly as the table of DESIGN.md §4:
//!
//! | failure of a step | what the runtime does | level |
//! |---|---|---|
//! | transient | sleep (exponential backoff, full jitter, capped; at least `retry_after`), run again with the same inputs; after `transient_retries` retries: level 3 | 0 each retry |
//! | logical (a returned error, a rejected output, a timeout, a panic) | run again with `previous_error()` set, up to `reprompts` times | 1 |
//! | logical, re-prompts used up | one attempt on each stronger tier (`model_tier()` 1, 2, …) | 2 |
//! | logical, tiers used up | level 3 | |
//! | logical, blaming an earlier step (`blame`) | compensate the completed compensable steps from the blamed one up to the failing one (reverse order), then run the blamed step again with `previous_error()` = the downstream failure (naming the step that found it) on the blamed step's own rungs (re-prompts at 1, tiers at 2, then level 3); the steps after it run again on its new output | 1, then 2 |
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
//! A blame is followed when it names the failing step or an earlier one that may run again; an
//! unknown or later step, or one at or before a commit point that has passed, re-prompts the
//! failing step itself on its own rungs, and the journal says why (as for `restart_from`). The
//! steps after the blamed one get fresh budgets when they run again (their inputs are new),
//! while the blamed step keeps climbing: its re-prompts and tiers are shared by its own
//! failures and every blame, so a pipeline that keeps blaming it ends at level 3.
//!
//! Each failure class climbs its own rows, so a budget of one class is never spent by
//! another. After the commit point nothing is compensated: where the table says level 3, the
//! runtime pages a human and parks the saga instead (level 4).
//!
//! The decisions here are pure functions of the policy, the definition and the progress
//! folded from the journal; the driver records each decision in the journal before acting
//! on it, so a resumed saga continues on the same rung.

use crate::definition::{Definition, StepRef};
use crate::error::{FailureClass, FailureKind, StepError};
use crate::journal::{CompensationNext, Next, Progress, StepState};
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
            // A blame of an earlier step, or one that cannot be followed (said in the record);
            // blaming itself is a plain failure of the step.
            let blame = error
                .blame_ref()
                .map(|requested| (requested, blame_point(definition, step, requested)))
                .filter(|(_, (blamed, note))| *blamed != step || note.is_some());
            let Some((requested, (blamed, note))) = blame else {
                return match next_rung(policy, state) {
                    Some(None) => Next::Reprompt,
                    Some(Some(tier)) => Next::SwitchModel { tier },
                    None => exhausted,
                };
            };
            // The blamed step (the failing one when the blame is not followed) climbs its own
            // rungs: a blame spends them as a re-prompt of its own failure would.
            match next_rung(policy, &progress.steps[blamed]) {
                Some(tier) => Next::Blame {
                    blamed: blamed as u32,
                    tier,
                    requested: note.as_ref().map(|_| requested.name().to_owned()),
                    note,
                },
                None => exhausted,
            }
        }
        FailureClass::Environmental => {
            if state.restarts < policy.environment_restarts {
                let requested = error.restart_ref();
                let (from, note) = restart_point(definition, step, requested);
                let requested = requested.map(|r| r.name().to_owned());
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

/// The next logical rung of a step: `Some(None)` for a re-prompt (level 1), `Some(Some(tier))`
/// for the next stronger tier (level 2), `None` when both are used up.
fn next_rung(policy: &Policy, state: &StepState) -> Option<Option<u32>> {
    if state.reprompts_used < policy.reprompts {
        Some(None)
    } else if state.tier + 1 < policy.model_tiers.max(1) {
        Some(Some(state.tier + 1))
    } else {
        None
    }
}

/// Where an environmental failure of `step` restarts: the requested step when it is an
/// earlier step that may run again, else the failing step, with a note saying why.
fn restart_point(definition: &Definition, step: usize, requested: Option<&StepRef>) -> (usize, Option<String>) {
    let Some(requested) = requested else {
        return (step, None);
    };
    match earlier_step(definition, step, requested) {
        Ok(from) => (from, None),
        Err(why) => {
            let failing = definition.steps()[step].name();
            (step, Some(format!("{why}, so it restarted from the failing step `{failing}`")))
        }
    }
}

/// Which step a logical failure of `step` blaming `requested` re-prompts: the blamed step when
/// it is `step` or an earlier step that may run again, else `step` itself, with a note saying
/// why the blame was not followed.
fn blame_point(definition: &Definition, step: usize, requested: &StepRef) -> (usize, Option<String>) {
    match earlier_step(definition, step, requested) {
        Ok(blamed) => (blamed, None),
        Err(why) => {
            let failing = definition.steps()[step].name();
            (step, Some(format!("{why}, so the blame was not followed and `{failing}` itself was re-prompted")))
        }
    }
}

/// The index of `requested` when the saga may go back to it from a failure of `step`: a step
/// of this saga, not after `step`, and not at or before a commit point that has passed (a
/// commit never runs twice). Otherwise why not.
fn earlier_step(definition: &Definition, step: usize, requested: &StepRef) -> Result<usize, String> {
    let failing = definition.steps()[step].name();
    let index = definition.resolve(requested)?;
    if index > step {
        return Err(format!("`{requested}` runs after `{failing}`"));
    }
    match definition.commit_index() {
        Some(commit) if step > commit && index <= commit => Err(format!(
            "`{requested}` is not after the commit point `{}`, which has passed",
            definition.steps()[commit].name()
        )),
        _ => Ok(index),
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
