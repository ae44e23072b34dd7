//! The [`StepContext`] every step and compensation receives, and the resources registered on
//! the runtime.

use std::any::{Any, TypeId, type_name};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use crate::error::Failure;
use crate::id::SagaId;
use crate::idempotency;
use crate::journal::Payload;

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
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|v| v.downcast_ref())
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
    /// compensation) that reached the journal. An attempt's start is journaled together with
    /// its result (one write per attempt), so an attempt cut short by a crash before it wrote
    /// anything is not counted, and the resumed attempt has its number.
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
    /// When no value of type `T` is registered; the message names the type and the fix. Use
    /// [`try_resource`](Self::try_resource) for optional resources.
    pub fn resource<T: Send + Sync + 'static>(&self) -> &T {
        match self.resources.get::<T>() {
            Some(value) => value,
            None => panic!(
                "no resource of type `{}` is registered on this Runtime: add `.resource(value)` to `Runtime::builder()`",
                type_name::<T>()
            ),
        }
    }

    /// A resource registered with `Runtime::builder().resource(value)`, if there is one.
    pub fn try_resource<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.resources.get::<T>()
    }
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
