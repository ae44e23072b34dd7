//! The records of a journal: what happened, as the runtime writes it and the stores keep it.
//!
//! The JSON of each [`Event`] is the body of a journal row (sealed when the store has a
//! keyring). Its format is pinned by a golden test: a journal written today must load
//! tomorrow, so fields are only ever added, with `#[serde(default)]`.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Failure;
use crate::outcome::{Level, Status};

/// Serialized bytes (a step output or the saga input, as JSON), shared without copying.
pub type Payload = Arc<[u8]>;

/// Serializes a [`Payload`] (JSON text) as raw JSON inside a record, not as an array of bytes.
mod raw_json {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::value::RawValue;

    use super::Payload;

    pub(super) fn serialize<S: Serializer>(payload: &Payload, serializer: S) -> Result<S::Ok, S::Error> {
        let text = std::str::from_utf8(payload).map_err(serde::ser::Error::custom)?;
        let raw: &RawValue = serde_json::from_str(text).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Payload, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer).map_err(D::Error::custom)?;
        Ok(Payload::from(raw.get().as_bytes()))
    }

    pub(super) mod option {
        use super::*;

        pub(in super::super) fn serialize<S: Serializer>(
            payload: &Option<Payload>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match payload {
                Some(payload) => super::serialize(payload, serializer),
                None => serializer.serialize_none(),
            }
        }

        pub(in super::super) fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<Payload>, D::Error> {
            let raw = Option::<Box<RawValue>>::deserialize(deserializer)?;
            Ok(raw.map(|raw| Payload::from(raw.get().as_bytes())))
        }
    }
}

/// One entry of the journal, as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Position in the saga's journal, from 0.
    pub seq: u64,
    /// Wall-clock time of the entry, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What happened.
    pub event: Event,
}

/// What happened. Steps are referred to by their index in the [`Definition`](crate::Definition) (the
/// fingerprint guarantees that the definition reading a journal is the one that wrote it).
// Externally tagged (`{"step_completed": {...}}`): serde buffers internally tagged enums,
// which cannot carry the raw JSON of outputs and effect results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// The saga was created.
    Started {
        /// Saga name.
        saga: String,
        /// Definition version.
        version: u32,
        /// Definition fingerprint.
        fingerprint: String,
        /// When the saga must be over (milliseconds since the Unix epoch), if it has a
        /// deadline: past it, it is rolled back (level 3), or parked after its commit point.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline_ms: Option<u64>,
    },
    /// An attempt of a step began.
    AttemptStarted {
        /// Step index.
        step: u32,
        /// Attempt number (1-based).
        attempt: u32,
        /// Model tier.
        tier: u32,
    },
    /// A side effect inside a step landed (`StepContext::effect`); its result is returned
    /// instead of running it again on a retry or a resume.
    EffectLanded {
        /// Step index.
        step: u32,
        /// The attempt that ran it.
        attempt: u32,
        /// The effect's name.
        name: String,
        /// The effect's own idempotency key.
        key: String,
        /// The serialized result.
        #[serde(with = "raw_json")]
        result: Payload,
    },
    /// A prompt and the model's response, recorded with `StepContext::record_llm`, with
    /// common credential patterns scrubbed.
    LlmExchange {
        /// Step index.
        step: u32,
        /// The attempt.
        attempt: u32,
        /// The prompt, scrubbed.
        prompt: String,
        /// The response, scrubbed.
        response: String,
    },
    /// A step completed; its output is checkpointed.
    StepCompleted {
        /// Step index.
        step: u32,
        /// The attempt that completed it.
        attempt: u32,
        /// The serialized output.
        #[serde(with = "raw_json")]
        output: Payload,
    },
    /// A step attempt failed; `next` is what the ladder decided.
    StepFailed {
        /// Step index.
        step: u32,
        /// The failure.
        failure: Failure,
        /// The output its validator rejected, which is compensated before anything else.
        #[serde(with = "raw_json::option", default)]
        rejected_output: Option<Payload>,
        /// The ladder's decision.
        next: Next,
    },
    /// An attempt of a compensation began.
    CompensationStarted {
        /// Index of the step undone.
        step: u32,
        /// Compensation attempt (1-based).
        attempt: u32,
    },
    /// A compensation succeeded.
    CompensationDone {
        /// Index of the step undone.
        step: u32,
        /// The attempt that succeeded.
        attempt: u32,
    },
    /// A compensation attempt failed.
    CompensationFailed {
        /// Index of the step being undone.
        step: u32,
        /// The failure.
        failure: Failure,
        /// Retry, or page a human.
        next: CompensationNext,
    },
    /// The notifier was called (level 3).
    Notified,
    /// The pager was called (level 4).
    Paged,
    /// The saga finished (`Completed` or `Compensated`).
    Finished {
        /// The final status.
        status: Status,
    },
    /// A parked saga was resumed by `Runtime::resume`.
    Resumed,
    /// The store refused the saga's writes for a while (a full disk, an I/O error); the saga
    /// waited, retrying, until it accepted them. Written with the first write after the outage.
    StoreOutage {
        /// How many writes the store refused.
        failures: u32,
        /// How long the saga waited, in milliseconds.
        waited_ms: u64,
        /// The store's last error.
        error: String,
        /// Whether a human was paged about it.
        paged: bool,
    },
    /// An operator cancelled the saga (`Runtime::cancel`, `saga cancel`): it is rolled back
    /// now (level 3), whatever step it stood at, as long as its commit point has not passed.
    Cancelled {
        /// The step it stood at.
        step: u32,
        /// Why, as the operator said.
        reason: String,
    },
    /// The pager was called again for a parked saga that had waited for a human longer than
    /// `Policy::repage_after` since its last page (by a sweep).
    Reminded,
    /// A sweep removed a resource the saga left behind (an orphan: the saga was compensated, or
    /// parked past the grace period), with the resource's own idempotency key.
    OrphanRemoved {
        /// The kind of resource (as registered with `RuntimeBuilder::orphans`).
        kind: String,
        /// The resource's id.
        resource: String,
    },
    /// A call to a rate-limited downstream waited for its token (or for a pause a
    /// `retry_after` set); not a failure, and no retry budget was spent.
    Throttled {
        /// Step index.
        step: u32,
        /// The attempt (of the step, or of its compensation).
        attempt: u32,
        /// Whether the compensation of the step waited.
        compensation: bool,
        /// The downstream.
        downstream: String,
        /// How long it waited, in milliseconds.
        waited_ms: u64,
    },
    /// A human finished the parked compensation by hand (`Runtime::resolve`); the remaining
    /// compensations continue.
    Resolved {
        /// Index of the step whose compensation the human did.
        step: u32,
        /// What the human said they did.
        note: String,
    },
}

impl Event {
    /// The event's kind, as stored in the queryable `kind` column.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Started { .. } => "started",
            Event::AttemptStarted { .. } => "attempt_started",
            Event::EffectLanded { .. } => "effect_landed",
            Event::LlmExchange { .. } => "llm_exchange",
            Event::StepCompleted { .. } => "step_completed",
            Event::StepFailed { .. } => "step_failed",
            Event::CompensationStarted { .. } => "compensation_started",
            Event::CompensationDone { .. } => "compensation_done",
            Event::CompensationFailed { .. } => "compensation_failed",
            Event::Notified => "notified",
            Event::Paged => "paged",
            Event::Finished { .. } => "finished",
            Event::Resumed => "resumed",
            Event::StoreOutage { .. } => "store_outage",
            Event::Resolved { .. } => "resolved",
            Event::Throttled { .. } => "throttled",
            Event::Reminded => "reminded",
            Event::Cancelled { .. } => "cancelled",
            Event::OrphanRemoved { .. } => "orphan_removed",
        }
    }

    /// The index of the step the event concerns, if any.
    pub fn step(&self) -> Option<u32> {
        match self {
            Event::AttemptStarted { step, .. }
            | Event::EffectLanded { step, .. }
            | Event::LlmExchange { step, .. }
            | Event::StepCompleted { step, .. }
            | Event::StepFailed { step, .. }
            | Event::CompensationStarted { step, .. }
            | Event::CompensationDone { step, .. }
            | Event::CompensationFailed { step, .. }
            | Event::Resolved { step, .. }
            | Event::Throttled { step, .. }
            | Event::Cancelled { step, .. } => Some(*step),
            Event::Started { .. }
            | Event::Notified
            | Event::Paged
            | Event::Finished { .. }
            | Event::Resumed
            | Event::StoreOutage { .. }
            | Event::Reminded
            | Event::OrphanRemoved { .. } => None,
        }
    }
}

/// The ladder's decision after a step failure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "then", rename_all = "snake_case")]
pub enum Next {
    /// Level 0: sleep, then run the step again with the same inputs.
    Retry {
        /// The backoff delay.
        delay: Duration,
    },
    /// Level 1: run again with `previous_error()` set.
    Reprompt,
    /// Level 2: run once on a stronger model tier.
    SwitchModel {
        /// The new tier.
        tier: u32,
    },
    /// Level 0 (environmental): compensate from `from` on, then run again from `from`.
    Restart {
        /// Index of the step to restart from.
        from: u32,
        /// The step the failure asked for, if any.
        requested: Option<String>,
        /// Why the request was not followed, when it was not.
        note: Option<String>,
        /// The new state, visible to every later step.
        observation: Option<Arc<serde_json::Value>>,
    },
    /// Level 1 or 2 (logical, blaming an earlier step with `StepError::blame`): compensate the
    /// completed compensable steps from `blamed` to the failing step (last first), then run
    /// `blamed` again with the failure as its `previous_error()`, on its own rungs; the steps
    /// after it run again on its new output. A blame that cannot be followed names the failing
    /// step as `blamed`, with the step it asked for in `requested` and why in `note`.
    Blame {
        /// Index of the step that runs again: the blamed one, or the failing one when the blame
        /// was not followed.
        blamed: u32,
        /// Level 2: the stronger model tier the blamed step runs on (its re-prompts are used
        /// up); `None` for a re-prompt (level 1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tier: Option<u32>,
        /// The step the failure blamed, when the blame was not followed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        requested: Option<String>,
        /// Why the blame was not followed, when it was not.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// Level 3: notify, compensate everything, finish `Compensated`.
    RollBack,
    /// Level 4: page a human and park (a step after the commit point out of its ladder, a step
    /// interrupted too often, or a configuration error).
    Park,
}

impl Next {
    /// The level of the ladder this decision is.
    pub fn level(&self) -> Level {
        match self {
            Next::Retry { .. } | Next::Restart { .. } => Level::Retry,
            Next::Reprompt | Next::Blame { tier: None, .. } => Level::Reprompt,
            Next::SwitchModel { .. } | Next::Blame { tier: Some(_), .. } => Level::SwitchModel,
            Next::RollBack => Level::Compensate,
            Next::Park => Level::PageHuman,
        }
    }
}

/// What follows a failed compensation attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "then", rename_all = "snake_case")]
pub enum CompensationNext {
    /// Sleep, then try the compensation again.
    Retry {
        /// The backoff delay.
        delay: Duration,
    },
    /// Level 4: page a human and park; the remaining compensations wait.
    Park,
}

/// A side effect of a step that landed: what `StepContext::effects` shows a compensation,
/// so that it can undo exactly what happened, even when the step failed half-way.
#[derive(Clone, Debug, PartialEq)]
pub struct LandedEffect {
    /// The effect's name.
    pub name: String,
    /// The effect's own idempotency key.
    pub key: String,
    /// The attempt of the step that ran it.
    pub attempt: u32,
    /// The serialized result.
    pub(crate) result: Payload,
}

impl LandedEffect {
    /// The effect's result, deserialized.
    pub fn result<R: serde::de::DeserializeOwned>(&self) -> Result<R, crate::CodecError> {
        Ok(serde_json::from_slice(&self.result)?)
    }

    /// The effect's result as JSON text.
    pub fn result_json(&self) -> &str {
        std::str::from_utf8(&self.result).unwrap_or("<not utf-8>")
    }
}
