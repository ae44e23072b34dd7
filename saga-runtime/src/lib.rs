//! Compile-time checked sagas for AI-agent pipelines.
//!
//! Write a multi-step agent pipeline as an `impl` block of async methods, say how each step
//! is undone, and get a generated state machine that classifies failures, climbs an
//! escalation ladder (retry, re-prompt, stronger model, compensate, page a human), runs
//! compensations in reverse order, and checkpoints every step so that nothing runs twice.
//! A step that cannot be undone and is not declared a commit point does not compile.
//!
//! # Quickstart
//!
//! ```
//! use saga_runtime::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! struct Publish { title: String }
//!
//! #[saga]
//! impl Publish {
//!     /// Drafts the post (a model call): nothing to undo.
//!     #[step(idempotent)]
//!     async fn draft(&self, _cx: &StepContext) -> StepResult<String> {
//!         Ok(format!("# {}\n\nHello.", self.title))
//!     }
//!
//!     /// Uploads the draft; undone by deleting it.
//!     #[step(compensate = delete_upload)]
//!     async fn upload(&self, cx: &StepContext, draft: &String) -> StepResult<u64> {
//!         // Pass cx.idempotency_key() to the remote service as its dedupe key.
//!         assert_eq!(cx.idempotency_key().len(), 64);
//!         Ok(draft.len() as u64)
//!     }
//!     async fn delete_upload(&self, _cx: &StepContext, _upload: &u64) -> StepResult<()> {
//!         Ok(())
//!     }
//!
//!     /// Makes it public: the commit point, never rolled back once it succeeded.
//!     #[step(commit)]
//!     async fn go_live(&self, _cx: &StepContext, upload: &u64) -> StepResult<String> {
//!         Ok(format!("https://blog.example/{upload}"))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), RuntimeError> {
//! let runtime = Runtime::builder().build(); // in memory; see `Policy` for the ladder budgets
//! let outcome = runtime.run(Publish { title: "Sagas".into() }).await?;
//! let output = outcome.output().expect("every step succeeds");
//! assert_eq!(output.go_live, "https://blog.example/15");
//! assert!(outcome.report().escalations.is_empty());
//! # Ok(())
//! # }
//! ```
//!
//! Forgetting how a step is undone is a compile error:
//!
//! ```compile_fail
//! use saga_runtime::prelude::*;
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Serialize, Deserialize)] struct Publish;
//! #[saga]
//! impl Publish {
//!     #[step] // error: step `upload` does not say how it is undone
//!     async fn upload(&self, _cx: &StepContext) -> StepResult<u64> { Ok(1) }
//! }
//! ```
//!
//! # The DSL
//!
//! Steps run in the order they are written. Each is an `async fn(&self, cx: &StepContext,
//! <inputs>) -> StepResult<T>` (or `Result<T, E>` with `E: Into<StepError>`) whose output `T`
//! is `Serialize + DeserializeOwned + Send + Sync + 'static`, because it is checkpointed. A
//! parameter after `cx` named like an earlier step receives a reference to that step's
//! output. `#[step(...)]` takes exactly one of:
//!
//! - `compensate = method`: an `async fn method(&self, cx: &StepContext, output: &T) ->
//!   StepResult<()>` of the same impl undoes the step;
//! - `commit`: the pivot (at most one); steps after it must be `idempotent`;
//! - `idempotent`: nothing to undo, safe to run again;
//!
//! and optionally `validate = method` (a sync `fn(&self, &T) -> Result<(), String>`; a
//! rejected output is a logical failure, compensated before the re-prompt) and `timeout =
//! "30s"` (`"500ms"`, `"2m"`, `"1h"`). `#[saga(name = "...", version = N)]` names and versions
//! the saga. The macro generates `impl Saga`, a `<Type>Output` struct with one field per
//! step, and a `<Type>Step` enum of typed step names (see [`StepId`]) for
//! [`StepError::blame`] and [`StepError::restart_from`].
//!
//! # The ladder
//!
//! See the [`ladder`] module for the exact table the runtime follows. A `restart_from` naming
//! the commit step itself, once it has passed, restarts the failing step (a commit never runs
//! twice). A logical failure found by one step but made by an earlier one names it with
//! [`StepError::blame`]: the runtime undoes the steps back to it and re-prompts it with the
//! failure, on its own rungs.
//!
//! # Durability
//!
//! Every decision is a record of the saga's [`journal`]; a [`store`] keeps it.
//! [`store::SqliteStore`] (one SQLite file, WAL, group commit, optional encryption at rest) is
//! the embedded default for durable work; [`MemoryStore`] (the default of
//! `Runtime::builder()`) keeps nothing across processes. Each attempt's start is written with
//! the previous result, one write per step; a resumed saga ([`Runtime::recover`],
//! [`Runtime::resume`], [`Runtime::run_with_id`]) replays its journal and continues on the same
//! rung, counting an attempt the crash interrupted as a transient failure.
//!
//! Inside a step, [`StepContext::effect`] and [`StepContext::effect_with`] journal one side
//! effect each: the result is committed before the step goes on and returned, not run again,
//! on a retry or a resume. A compensation taking `Option<&T>` also undoes the effects of an
//! attempt that failed half-way, reading what landed from [`StepContext::effects`].

//! # Layout
//!
//! Dependencies run one way, each layer using only those before it: the model (`id`,
//! `definition`, `error`, `outcome`, `policy`) → the [`journal`] (records and the fold) → the
//! [`ladder`] → sealing (`seal`, `codec`) → the [`store`] → execution (`context`, `writer`,
//! `saga`) → the `driver` → the [`Runtime`]. A store compiles without the engine; the driver
//! gets what it needs from the runtime as one value and never reaches into it.
//!
//! # Features
//!
//! - `sqlite` (default): [`store::SqliteStore`], the embedded store.
//! - `encryption`: `Keyring` and `EncryptionKey`, to seal payloads at rest.
//! - `postgres`: `store::PostgresStore`, the store many worker processes share.
//! - `otel`: `otel::layer` and `otel::metrics`, OpenTelemetry export of spans and metrics.
//! - `anyhow`: `?` on an `anyhow::Error` in a step or an effect.
//! - `testing`: `testing::FaultMatrix`, to prove your compensations in CI.

#![warn(missing_docs)]

mod codec;
mod context;
mod definition;
mod driver;
mod error;
mod faults;
mod hooks;
mod id;
mod idempotency;
pub mod journal;
pub mod ladder;
mod limits;
mod notify;
#[cfg(feature = "otel")]
pub mod otel;
mod outcome;
mod policy;
pub mod redact;
pub mod retention;
mod runtime;
mod saga;
mod seal;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod writer;

#[doc(inline)]
pub use saga_macros::{saga, step};

pub use context::StepContext;
pub use definition::{Definition, StepDef, StepId, StepKind, StepRef};
pub use error::{Classify, CodecError, Failure, FailureClass, FailureKind, StepError};
pub use id::SagaId;
pub use journal::{JournalError, LandedEffect};
pub use limits::{Limit, Permit, SharedLimits};
pub use notify::{LogNotifier, LogPager, Notifier, Observed, Observer, Pager, TimelinePrinter};
pub use outcome::{
    AttemptRecord, BlameRecord, CompensationReason, CompensationRecord, Escalation, Incident, Level, Outcome,
    RemovedOrphan, Report, RestartRecord, Status, StoreOutage, Throttle,
};
pub use policy::{Backoff, Jitter, Policy};
pub use redact::{Redacted, Scrubber, scrub};
pub use runtime::{
    Launch, Orphan, OrphanKind, OrphanReason, Recovery, Runtime, RuntimeBuilder, RuntimeError, SweepOptions,
    SweepReport, Tagged, Worker, WorkerBuilder, WorkerStats,
};
pub use saga::{Saga, StepOutput};
pub use seal::SealError;
#[cfg(feature = "encryption")]
pub use seal::{EncryptionKey, KeyError, Keyring};
pub use store::{CheckpointStore, MemoryStore};

/// A boxed, `Send` future, as the generated state machine and the stores return them.
pub type BoxFuture<'a, T> = futures::future::BoxFuture<'a, T>;

/// The README's Rust examples, compiled and run as doctests so that the README never lies.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// The result of a step or a compensation.
pub type StepResult<T> = Result<T, StepError>;

/// Everything a saga author needs: `use saga_runtime::prelude::*;`.
pub mod prelude {
    #[cfg(feature = "sqlite")]
    pub use crate::store::SqliteStore;
    pub use crate::{
        Backoff, CheckpointStore, Classify, Escalation, Failure, FailureClass, Incident, Jitter, Level, MemoryStore,
        Outcome, Policy, Report, Runtime, RuntimeError, Saga, SagaId, Status, StepContext, StepError, StepResult, saga,
        step,
    };
}

/// Items the generated code uses. Not a public API: it changes without notice.
#[doc(hidden)]
pub mod __private {
    use std::fmt::Display;

    pub use crate::definition::{Definition, StepDef, StepId, StepKind};
    pub use crate::saga::Saga;
    pub use crate::{BoxFuture, CodecError, StepContext, StepError};
    pub use serde;

    /// Crash points for the crash test (inert unless the `test-hooks` feature is on).
    pub mod hooks {
        pub use crate::hooks::*;
    }

    /// Boxes the future of one step attempt. Its `Send` bound is what a step holding a
    /// non-`Send` value across an `.await` fails, spanned on the step by the generated code.
    #[inline]
    pub fn step_future<'a, F>(future: F) -> BoxFuture<'a, Result<(), StepError>>
    where
        F: std::future::Future<Output = Result<(), StepError>> + Send + 'a,
    {
        Box::pin(future)
    }

    /// Converts a step's result, whatever its error type.
    #[inline]
    pub fn step_result<T, E: Into<StepError>>(result: Result<T, E>) -> Result<T, StepError> {
        result.map_err(Into::into)
    }

    /// Converts a compensation's result, discarding its value.
    #[inline]
    pub fn compensation_result<T, E: Into<StepError>>(result: Result<T, E>) -> Result<(), StepError> {
        result.map(drop).map_err(Into::into)
    }

    /// Converts a validator's result.
    #[inline]
    pub fn validation<E: Display>(result: Result<(), E>) -> Result<(), String> {
        result.map_err(|e| e.to_string())
    }

    /// How one step output is checkpointed. Built once per step by the generated code, the
    /// only place that requires the output to be [`StepOutput`](crate::StepOutput).
    pub struct Codec<T> {
        /// Serializes the output.
        pub encode: fn(&T) -> Result<Vec<u8>, CodecError>,
        /// Deserializes the output.
        pub decode: fn(&[u8]) -> Result<T, CodecError>,
    }

    /// The codec of `T`.
    pub const fn codec<T: crate::saga::StepOutput>() -> Codec<T> {
        Codec { encode: encode::<T>, decode: decode::<T> }
    }

    /// Asks for the codec of a step's output `T` by autoref specialization:
    /// `(&Probe::<T>::new()).codec()` takes [`ViaStepOutput`] when `T` can be checkpointed, and
    /// [`NotCheckpointable`] otherwise, whose one bound is one error saying what `T` lacks. (A
    /// bound on `StepOutput` itself would report each missing trait of its blanket impl, with
    /// rustc's list of the types that do implement `Serialize`: twice the error, 150 types.)
    pub struct Probe<T>(std::marker::PhantomData<T>);

    impl<T> Probe<T> {
        /// The probe.
        pub const fn new() -> Self {
            Probe(std::marker::PhantomData)
        }
    }

    impl<T> Default for Probe<T> {
        fn default() -> Self {
            Self::new()
        }
    }

    /// The codec of an output that can be checkpointed.
    pub trait ViaStepOutput<T> {
        /// The codec.
        fn codec(&self) -> Codec<T>;
    }

    impl<T: crate::saga::StepOutput> ViaStepOutput<T> for Probe<T> {
        fn codec(&self) -> Codec<T> {
            codec::<T>()
        }
    }

    /// The fallback for an output that cannot be checkpointed: its bound fails, once.
    pub trait NotCheckpointable<T> {
        /// Never compiles: `T` is not [`Checkpointable`].
        fn codec(&self) -> Codec<T>
        where
            T: Checkpointable;
    }

    impl<T> NotCheckpointable<T> for &Probe<T> {
        fn codec(&self) -> Codec<T>
        where
            T: Checkpointable,
        {
            codec::<T>()
        }
    }

    /// What the error of an output that cannot be checkpointed names. No type implements it:
    /// an output that can be checkpointed never gets this far.
    #[diagnostic::on_unimplemented(
        message = "the output `{Self}` of a step must be `Serialize + DeserializeOwned + Send + Sync + 'static`, because it is checkpointed",
        label = "this step output cannot be checkpointed",
        note = "add `#[derive(serde::Serialize, serde::Deserialize)]` to `{Self}` (and keep it free of `Rc`, `RefCell` and borrowed data)"
    )]
    pub trait Checkpointable: crate::saga::StepOutput {}

    /// The output of an earlier step. The runtime only runs a step (or a compensation) when
    /// the outputs it reads are present.
    #[inline]
    pub fn input<T>(slot: &Option<T>) -> &T {
        match slot {
            Some(value) => value,
            None => {
                panic!("saga-runtime bug: a step ran before an output it reads was checkpointed")
            }
        }
    }

    fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
        Ok(serde_json::to_vec(value)?)
    }

    fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        Ok(serde_json::from_slice(bytes)?)
    }

    /// Debug formatting of a step output that may not implement `Debug`: the generated
    /// `<Type>Output` prints each field with its `Debug` when it has one, else its type name
    /// (autoref specialization, resolved at the call site where the type is concrete).
    pub struct DebugWrap<'a, T>(pub &'a T);

    /// A field printed with its own `Debug`, or as its type name.
    pub enum DebugValue<'a> {
        /// The value's own `Debug`.
        Debug(&'a dyn std::fmt::Debug),
        /// The type name, for a value without `Debug`.
        Opaque(&'static str),
    }

    impl std::fmt::Debug for DebugValue<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                DebugValue::Debug(value) => value.fmt(f),
                DebugValue::Opaque(name) => write!(f, "<{name}>"),
            }
        }
    }

    /// Chosen when the field implements `Debug`.
    pub trait DebugViaDebug<'a> {
        /// The field's debug view.
        fn __saga_debug(&self) -> DebugValue<'a>;
    }

    impl<'a, T: std::fmt::Debug> DebugViaDebug<'a> for &DebugWrap<'a, T> {
        fn __saga_debug(&self) -> DebugValue<'a> {
            DebugValue::Debug(self.0)
        }
    }

    /// The fallback for fields without `Debug`.
    pub trait DebugViaName<'a> {
        /// The field's debug view.
        fn __saga_debug(&self) -> DebugValue<'a>;
    }

    impl<'a, T> DebugViaName<'a> for DebugWrap<'a, T> {
        fn __saga_debug(&self) -> DebugValue<'a> {
            DebugValue::Opaque(std::any::type_name::<T>())
        }
    }

    /// A step index the definition does not have.
    #[cold]
    pub fn no_such_step(step: usize) -> ! {
        panic!("saga-runtime bug: step index {step} is not in the definition")
    }
}
