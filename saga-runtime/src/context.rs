//! The [`StepContext`] every step and compensation receives, and the resources registered on
//! the runtime.

use std::any::{Any, TypeId, type_name};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Failure, StepError};
use crate::hooks::crash_point;
use crate::id::SagaId;
use crate::idempotency;
use crate::journal::{Event, LandedEffect, Payload};
use crate::writer::JournalWriter;

/// Values registered with `Runtime::builder().resource(value)`, one per type.
#[derive(Default)]
pub(crate) struct Resources {
    values: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
}

impl Resources {
    pub(crate) fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.values.insert(TypeId::of::<T>(), Box::new(value));
    }

    pub(crate) fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.values.get(&TypeId::of::<T>()).and_then(|v| v.downcast_ref())
    }
}

/// What the idempotency key of a context is derived from; hashed on first use only.
pub(crate) struct KeySource {
    pub(crate) input_digest: [u8; 32],
    /// The outputs the step reads.
    pub(crate) reads: Vec<Payload>,
    /// How many times the step's result was compensated.
    pub(crate) generation: u32,
}

/// What a step (or a compensation) knows about the run it belongs to.
///
/// A compensation gets a context too: [`step`](Self::step) is the step it undoes,
/// [`attempt`](Self::attempt) counts the compensation's attempts, and its
/// [`idempotency_key`](Self::idempotency_key) is its own, derived from the step's.
pub struct StepContext {
    pub(crate) step_index: u32,
    /// How many times the step was asked for a new answer (see `StepState::pass`).
    pub(crate) pass: u32,
    pub(crate) writer: Arc<JournalWriter>,
    /// The effect keys this attempt used, to refuse a second use of one key.
    pub(crate) used_keys: Mutex<Vec<String>>,
    /// The effects that landed for this step since its result was last compensated.
    pub(crate) landed: Mutex<Vec<LandedEffect>>,
    pub(crate) saga_id: SagaId,
    pub(crate) saga: &'static str,
    pub(crate) step: &'static str,
    pub(crate) compensation: Option<&'static str>,
    pub(crate) attempt: u32,
    pub(crate) tier: u32,
    pub(crate) previous_error: Option<Failure>,
    pub(crate) observation: Option<Arc<serde_json::Value>>,
    pub(crate) key_source: KeySource,
    pub(crate) key: OnceLock<String>,
    pub(crate) resources: Arc<Resources>,
    /// The largest effect result a checkpoint takes, in bytes.
    pub(crate) max_payload: usize,
    /// The saga's scrubber, for what the step records.
    pub(crate) scrubber: crate::redact::Scrubber,
    /// The runtime's rate limits.
    pub(crate) limits: Arc<crate::limits::Limits>,
    /// The downstreams this attempt drew tokens from (paused together on a `retry_after`).
    pub(crate) used_limits: Mutex<Vec<String>>,
    /// Set by [`resource`](StepContext::resource) before it panics for a missing resource: the
    /// driver turns that panic into a configuration error (see `FailureKind::Misconfigured`).
    pub(crate) misconfigured: OnceLock<String>,
}

impl StepContext {
    /// The saga's id.
    pub fn saga_id(&self) -> &SagaId {
        &self.saga_id
    }

    /// The saga's name.
    pub fn saga_name(&self) -> &'static str {
        self.saga
    }

    /// The step running (for a compensation: the step it undoes).
    pub fn step(&self) -> &'static str {
        self.step
    }

    /// The compensation method running, when this is a compensation's context.
    pub fn compensation(&self) -> Option<&'static str> {
        self.compensation
    }

    /// The attempt, 1-based: counts every attempt of this step (for a compensation: of this
    /// compensation), including one that a stop of the process interrupted: an attempt's start
    /// is journaled (together with the previous result) before the attempt runs.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The idempotency key: 64 lowercase hex characters, `sha256("{saga_id}:{step}:{input_hash}")`.
    ///
    /// Pass it to every external action as its dedupe key. It is equal across retries and
    /// resumes of the same step, different for another step, saga id or input, and new each
    /// time the step's earlier result was compensated. A compensation's key is its own,
    /// derived from the key of the step result it undoes.
    pub fn idempotency_key(&self) -> &str {
        self.key.get_or_init(|| {
            let source = &self.key_source;
            let reads: Vec<&[u8]> = source.reads.iter().map(|r| &r[..]).collect();
            let hash = idempotency::input_hash(&source.input_digest, &reads, source.generation);
            let step_key = idempotency::step_key(self.saga_id.as_str(), self.step, &hash);
            match self.compensation {
                Some(_) => idempotency::compensation_key(&step_key),
                None => step_key,
            }
        })
    }

    /// This step's last failure, on every attempt after its first: what a re-prompt includes.
    /// For a compensation: the compensation's last failure.
    pub fn previous_error(&self) -> Option<&Failure> {
        self.previous_error.as_ref()
    }

    /// The model tier to use: 0 is the default tier; the ladder raises it after the
    /// re-prompts are used up.
    pub fn model_tier(&self) -> u32 {
        self.tier
    }

    /// The new state surfaced by the latest environmental restart, visible to every step that
    /// runs after it.
    pub fn observation(&self) -> Option<&serde_json::Value> {
        self.observation.as_deref()
    }

    /// A resource registered with `Runtime::builder().resource(value)`.
    ///
    /// # Panics
    ///
    /// When no value of type `T` is registered; the message names the type and the fix. The
    /// runtime catches that panic as what it is, a configuration error
    /// ([`FailureKind::Misconfigured`](crate::FailureKind::Misconfigured)): the saga is parked
    /// for a human at once, without retries and without compensations (which would need the
    /// same runtime); once the resource is registered, `resume` continues it from this step.
    /// Use [`try_resource`](Self::try_resource) for optional resources.
    pub fn resource<T: Send + Sync + 'static>(&self) -> &T {
        match self.resources.get::<T>() {
            Some(value) => value,
            None => {
                let message = missing_resource(type_name::<T>());
                let _ = self.misconfigured.set(message.clone());
                panic!("{message}")
            }
        }
    }

    /// The configuration error a missing resource caused in this attempt, if any.
    pub(crate) fn misconfiguration(&self) -> Option<StepError> {
        self.misconfigured.get().map(|message| StepError::logical(message).with_kind(crate::FailureKind::Misconfigured))
    }

    /// A resource registered with `Runtime::builder().resource(value)`, if there is one.
    pub fn try_resource<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.resources.get::<T>()
    }

    /// Runs one side effect of the step, journaled: its result is committed to the store
    /// before the step goes on, and when the same answer of the step runs again (a transient
    /// retry, or a resume after a crash) the stored result is returned and `run` is not
    /// polled. A new answer of the step (a re-prompt, another model tier, an environmental
    /// restart, a resume from a park) runs the effect anew. The effect's own idempotency key
    /// is derived from the step's key, `name` and that answer (see
    /// [`effect_with`](Self::effect_with) for effects keyed on their input instead).
    ///
    /// If `run` fails, nothing is journaled and the error is returned (classify it as for a
    /// step). Each effect of an attempt needs its own name: using one name twice in an attempt
    /// is a logical failure. Inside a compensation, effects are not journaled: `run` simply
    /// runs (compensations are retried, so make them idempotent).
    ///
    /// `run` returns a [`StepResult`](crate::StepResult), so `Ok(value)` needs no annotation
    /// and `?` converts the common errors (`std::io::Error`, `serde_json::Error`, and
    /// `anyhow::Error` with the `anyhow` feature) with a default class; pick another with
    /// [`Classify`](crate::Classify):
    ///
    /// ```
    /// # use saga_runtime::prelude::*;
    /// # async fn step(cx: &StepContext) -> StepResult<usize> {
    /// let notes = cx.effect("read_notes", async {
    ///     let text = std::fs::read_to_string("NOTES.md")?; // io::Error: class by its kind
    ///     Ok(text.len())
    /// }).await?;
    /// let reply = cx.effect("post", async {
    ///     let status = std::fs::metadata("out.txt").transient()?.len(); // the class you pick
    ///     Ok(status)
    /// }).await?;
    /// # Ok(notes + reply as usize) }
    /// ```
    pub async fn effect<R, F>(&self, name: &str, run: F) -> Result<R, StepError>
    where
        R: Serialize + DeserializeOwned,
        F: Future<Output = Result<R, StepError>>,
    {
        self.effect_keyed(name, None, |_key| run).await
    }

    /// Like [`effect`](Self::effect), for an effect that depends on `input`: its idempotency
    /// key (passed to `run`, to give the downstream service) hashes `input`, so running the
    /// step again (a retry, a re-prompt, a resume) with a different input runs the new effect,
    /// while the same input returns the stored result.
    pub async fn effect_with<I, R, F, Fut>(&self, name: &str, input: &I, run: F) -> Result<R, StepError>
    where
        I: Serialize + ?Sized,
        R: Serialize + DeserializeOwned,
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<R, StepError>>,
    {
        let input = serde_json::to_vec(input)
            .map_err(|e| StepError::logical(format!("the input of effect `{name}` cannot be serialized: {e}")))?;
        self.effect_keyed(name, Some(&input), run).await
    }

    /// The idempotency key of the effect `name` in this attempt: with `input` (the JSON bytes
    /// of what [`effect_with`] hashes) or without (as [`effect`] keys it).
    ///
    /// [`effect`]: Self::effect
    /// [`effect_with`]: Self::effect_with
    pub fn effect_key(&self, name: &str, input: Option<&[u8]>) -> String {
        idempotency::effect_key(self.idempotency_key(), name, input, self.pass)
    }

    async fn effect_keyed<R, F, Fut>(&self, name: &str, input: Option<&[u8]>, run: F) -> Result<R, StepError>
    where
        R: Serialize + DeserializeOwned,
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<R, StepError>>,
    {
        let key = self.effect_key(name, input);
        if self.compensation.is_some() {
            return run(key).await;
        }
        {
            let mut used = self.used_keys.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if used.contains(&key) {
                return Err(StepError::logical(format!(
                    "effect `{name}` ran twice in one attempt with the same input: give each effect its own name, or key it on its input with `effect_with`"
                )));
            }
            used.push(key.clone());
        }
        let landed = self.lock_landed().iter().find(|e| e.key == key).map(|e| e.result.clone());
        if let Some(result) = landed {
            return serde_json::from_slice(&result).map_err(|e| {
                StepError::logical(format!("the stored result of effect `{name}` no longer fits its type: {e}"))
            });
        }
        let result = run(key.clone()).await?;
        crash_point("an effect ran, before its journal write");
        let bytes = serde_json::to_vec(&result)
            .map_err(|e| StepError::logical(format!("the result of effect `{name}` cannot be serialized: {e}")))?;
        if bytes.len() > self.max_payload {
            // The effect ran, but its result cannot be journaled: a compensation taking
            // `Option<&T>` does not see it, so keep effect results small.
            return Err(crate::driver::too_large(
                &format!("the result of effect `{name}`"),
                bytes.len(),
                self.max_payload,
            ));
        }
        let bytes: Payload = bytes.into();
        self.writer.push_unfolded(Event::EffectLanded {
            step: self.step_index,
            attempt: self.attempt,
            name: name.to_owned(),
            key: key.clone(),
            result: bytes.clone(),
        });
        // A failed write stops the saga with the store's error once the step returns (a lost
        // claim or a full disk is not a failure of the step, and is never retried as one).
        self.writer.commit_effect().await.map_err(|()| {
            StepError::transient(format!("the journal could not record effect `{name}`: the saga stops here"))
        })?;
        self.lock_landed().push(LandedEffect { name: name.to_owned(), key, attempt: self.attempt, result: bytes });
        Ok(result)
    }

    fn lock_landed(&self) -> std::sync::MutexGuard<'_, Vec<LandedEffect>> {
        self.landed.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The effects that landed for this step since its result was last compensated, in
    /// order, over all its attempts. A compensation uses them to undo exactly what happened,
    /// including the effects of an attempt that failed half-way.
    pub fn effects(&self) -> Vec<LandedEffect> {
        self.lock_landed().clone()
    }

    /// Records a prompt and the model's response in the journal, with credentials scrubbed
    /// (see [`scrub`](crate::scrub)). The write starts at once in the background (it does not
    /// wait for the step to finish): the exchange is durable within one commit of the store,
    /// and the step's next write waits for it.
    ///
    /// With the `otel` feature, the exchange is also an OpenTelemetry span event of the attempt
    /// (GenAI conventions, the scrubbed texts; see the `otel` module).
    pub fn record_llm(&self, prompt: &str, response: &str) {
        let prompt = self.scrubber.scrub(prompt).into_owned();
        let response = self.scrubber.scrub(response).into_owned();
        #[cfg(feature = "otel")]
        crate::otel::llm_exchange(&prompt, &response, self.tier);
        self.writer.push_unfolded(Event::LlmExchange {
            step: self.step_index,
            attempt: self.attempt,
            prompt,
            response,
        });
        self.writer.commit_soon();
    }

    /// Waits for a token of `downstream`'s rate limit (declared with
    /// `Runtime::builder().limit(..)`) before a call to it: one bucket for every saga of the
    /// process, and of every worker when the store shares limits. Take one per call; the
    /// returned [`Permit`](crate::Permit) holds the call's concurrency slot, if the limit caps
    /// concurrency, until it drops.
    ///
    /// The wait is not a failure and spends no retry budget: it is journaled (and shows in the
    /// timeline and the report's `throttled`). When the attempt fails with a `retry_after`,
    /// every downstream it drew from is paused for every saga. A downstream that was never
    /// declared is a configuration error: the step fails at once, without climbing the ladder.
    ///
    /// ```
    /// # use saga_runtime::prelude::*;
    /// # async fn create_issue(cx: &StepContext) -> StepResult<u64> {
    /// let _permit = cx.limit("github").await?;
    /// // ... call the API ...
    /// # Ok(1) }
    /// ```
    pub async fn limit(&self, downstream: &str) -> Result<crate::Permit, StepError> {
        let permit = self
            .limits
            .acquire(downstream)
            .await
            .map_err(|crate::limits::LimitError::Unknown(name)| unknown_limit(&name, &self.limits.names()))?;
        self.used_limits.lock().unwrap_or_else(|e| e.into_inner()).push(downstream.to_owned());
        if permit.waited() >= std::time::Duration::from_millis(1) {
            self.writer.push_unfolded(Event::Throttled {
                step: self.step_index,
                attempt: self.attempt,
                compensation: self.compensation.is_some(),
                downstream: downstream.to_owned(),
                waited_ms: permit.waited().as_millis() as u64,
            });
        }
        Ok(permit)
    }
}

/// The message of a missing resource: the type, the fix, and what happens to the saga.
fn missing_resource(type_name: &str) -> String {
    format!(
        "no resource of type `{type_name}` is registered on this Runtime: add `.resource(value)` to `Runtime::builder()`, then `resume` the saga (it is parked, nothing was compensated)"
    )
}

/// The failure of a call to a downstream no limit was declared for.
pub(crate) fn unknown_limit(name: &str, declared: &[&str]) -> StepError {
    let declared = match declared {
        [] => "none is declared".to_owned(),
        names => {
            format!("the declared ones are {}", names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "))
        }
    };
    StepError::logical(format!(
        "no rate limit is declared for downstream `{name}` ({declared}): add `Runtime::builder().limit(\"{name}\", Limit::per_second(..))`, then `resume` the saga (it is parked, nothing was compensated)"
    ))
    .with_kind(crate::FailureKind::Misconfigured)
}

impl std::fmt::Debug for StepContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepContext")
            .field("saga_id", &self.saga_id)
            .field("step", &self.step)
            .field("compensation", &self.compensation)
            .field("attempt", &self.attempt)
            .field("model_tier", &self.tier)
            .field("previous_error", &self.previous_error)
            .finish_non_exhaustive()
    }
}
