//! Reading a journal: a record as one line of a timeline, and the summary a journal leads to.

use std::fmt;

use super::JournalError;
use super::fold::Progress;
use super::record::{CompensationNext, Event, Next, Record};
use crate::definition::Definition;
use crate::error::{Failure, FailureKind};
use crate::outcome::{Level, Report, Status};

/// A journal record, displayed as one line of a timeline with the definition's step names.
pub struct Timeline<'a> {
    /// The definition that wrote the record.
    pub definition: &'static Definition,
    /// The record.
    pub record: &'a Record,
}

impl fmt::Display for Timeline<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let steps = self.definition.steps();
        let names: Vec<&str> = steps.iter().map(|s| s.name()).collect();
        let compensations: Vec<Option<&str>> = steps.iter().map(|s| s.compensation()).collect();
        write_line(f, &names, &compensations, self.record)
    }
}

/// A journal record as one line of a timeline, for a tool that has the step names but not the
/// saga's code (the `saga` CLI reads them from the store's kept definitions).
pub struct TimelineLine<'a> {
    /// The step names, by index.
    pub steps: &'a [&'a str],
    /// The compensations, by step index.
    pub compensations: &'a [Option<&'a str>],
    /// The record.
    pub record: &'a Record,
}

impl fmt::Display for TimelineLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_line(f, self.steps, self.compensations, self.record)
    }
}

fn write_line(
    f: &mut fmt::Formatter<'_>,
    steps: &[&str],
    compensations: &[Option<&str>],
    record: &Record,
) -> fmt::Result {
    {
        let name = |i: &u32| steps.get(*i as usize).copied().unwrap_or("?");
        let compensation = |i: &u32| compensations.get(*i as usize).copied().flatten().unwrap_or("?");
        let this = record;
        match &this.event {
            Event::Started { saga, version, fingerprint, deadline_ms } => {
                write!(f, "started {saga} v{version} ({fingerprint})")?;
                if let Some(deadline) = deadline_ms {
                    let left = deadline.saturating_sub(this.at_ms);
                    write!(f, ", deadline in {:.1} s", left as f64 / 1000.0)?;
                }
                Ok(())
            }
            Event::AttemptStarted { step, attempt, tier } => {
                write!(f, "{}: attempt {attempt}", name(step))?;
                if *tier > 0 {
                    write!(f, " on model tier {tier}")?;
                }
                Ok(())
            }
            Event::EffectLanded { step, name: effect, key, .. } => {
                write!(f, "{}: effect `{effect}` landed (key {})", name(step), &key[..key.len().min(8)])
            }
            Event::LlmExchange { step, prompt, response, .. } => {
                // In full: clipping would show whatever a scrubber missed in the part shown and
                // only make the rest look clean. (The texts were scrubbed when recorded.)
                write!(f, "{}: model exchange: {prompt:?} -> {response:?}", name(step))
            }
            Event::StepCompleted { step, attempt, .. } => {
                write!(f, "{}: completed on attempt {attempt}", name(step))
            }
            Event::StepFailed { failure, next, .. } => {
                write!(f, "{}: {failure}\n    -> {}: ", failure.step, next.level())?;
                match next {
                    Next::Retry { delay } => write!(f, "retry in {delay:?}"),
                    Next::Reprompt => write!(f, "re-prompt with the error"),
                    Next::SwitchModel { tier } => write!(f, "retry on model tier {tier}"),
                    Next::Blame { blamed, tier, requested, note } => {
                        match (requested, tier) {
                            (Some(_), None) => write!(f, "re-prompt with the error")?,
                            (Some(_), Some(tier)) => write!(f, "retry on model tier {tier}")?,
                            (None, None) => write!(
                                f,
                                "`{}` blamed `{}`: undo back to it and re-prompt it with this failure",
                                failure.step,
                                name(blamed)
                            )?,
                            (None, Some(tier)) => write!(
                                f,
                                "`{}` blamed `{}`: undo back to it and run it on model tier {tier} with this failure",
                                failure.step,
                                name(blamed)
                            )?,
                        }
                        if let Some(note) = note {
                            write!(f, " ({note})")?;
                        }
                        Ok(())
                    }
                    Next::Restart { from, note, observation, .. } => {
                        write!(f, "environment changed: restart from `{}`", name(from))?;
                        if let Some(observation) = observation {
                            write!(f, " with observation {observation}")?;
                        }
                        if let Some(note) = note {
                            write!(f, " ({note})")?;
                        }
                        Ok(())
                    }
                    Next::RollBack => write!(f, "roll back: compensate every completed step"),
                    Next::Park => match failure.kind {
                        FailureKind::Misconfigured => {
                            write!(f, "a configuration error: page a human and park (nothing is compensated)")
                        }
                        FailureKind::Interrupted => write!(f, "page a human and park"),
                        _ => write!(f, "after the commit point: page a human and park"),
                    },
                }
            }
            Event::CompensationStarted { step, attempt } => {
                write!(f, "{}: compensating with `{}` (attempt {attempt})", name(step), compensation(step))
            }
            Event::CompensationDone { step, .. } => write!(f, "{}: compensated", name(step)),
            Event::CompensationFailed { failure, next, .. } => {
                write!(f, "{}: {failure}\n    -> ", failure.step)?;
                match next {
                    CompensationNext::Retry { delay } => {
                        write!(f, "retry the compensation in {delay:?}")
                    }
                    CompensationNext::Park => {
                        write!(f, "{}: page a human and park", Level::PageHuman)
                    }
                }
            }
            Event::Notified => write!(f, "notifier called: {}", Level::Compensate),
            Event::Paged => write!(f, "pager called: {}", Level::PageHuman),
            Event::Finished { status } => write!(f, "finished: {status}"),
            Event::Resumed => write!(f, "resumed by an operator"),
            Event::StoreOutage { failures, waited_ms, error, paged } => {
                write!(
                    f,
                    "the store refused {failures} write(s) over {:.1} s ({error}); the saga waited and went on",
                    *waited_ms as f64 / 1000.0
                )?;
                if *paged {
                    write!(f, " (a human was paged)")?;
                }
                Ok(())
            }
            Event::Resolved { step, note } => {
                write!(f, "{}: compensated by hand ({note:?}); the rollback continues", name(step))
            }
            Event::Cancelled { step, reason } => {
                write!(
                    f,
                    "{}: cancelled by an operator ({reason:?})\n    -> {}: roll back: compensate every completed step",
                    name(step),
                    Level::Compensate
                )
            }
            Event::Reminded => write!(f, "pager called again: still waiting for a human"),
            Event::OrphanRemoved { kind, resource } => {
                write!(f, "sweep: removed {kind} `{resource}`, left behind by the saga")
            }
            Event::Throttled { step, compensation: undoing, downstream, waited_ms, .. } => {
                let who = if *undoing { format!("{} (compensating)", name(step)) } else { name(step).to_owned() };
                write!(
                    f,
                    "{who}: waited {:.3} s for a `{downstream}` token (rate limit; not a failure)",
                    *waited_ms as f64 / 1000.0
                )
            }
        }
    }
}

/// What a journal says about a saga, rebuilt by replaying it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Summary {
    /// Where the saga stands.
    pub status: Status,
    /// The failure behind a rollback (`Compensated`) or a park (`NeedsHuman`).
    pub failure: Option<Failure>,
    /// The report: escalations, compensations, attempts, restarts.
    pub report: Report,
}

/// Replays a journal written under `definition`: what the runtime would conclude from it.
///
/// An error says how the journal contradicts itself (records out of order, a record that
/// does not follow from the ones before it).
pub fn summarize(definition: &'static Definition, records: &[Record]) -> Result<Summary, JournalError> {
    let progress = Progress::replay(definition, records)?;
    Ok(Summary { status: progress.status(), failure: progress.outcome_failure().cloned(), report: progress.report })
}
