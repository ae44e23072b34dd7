//! The [`Saga`] trait that `#[saga]` implements: the generated state machine the driver runs.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::BoxFuture;
use crate::context::StepContext;
use crate::definition::Definition;
use crate::error::{CodecError, StepError};

/// A saga: its input is `self`, its steps are the `#[step]` methods of its `#[saga]` impl.
///
/// Implemented by `#[saga]`; do not implement it by hand. The hidden methods are the
/// generated state machine: the runtime drives them by step index, and each dispatches to the
/// user's own typed method.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a saga",
    label = "not a saga",
    note = "put `#[saga]` on an `impl {Self}` block whose async methods are marked `#[step(...)]`"
)]
pub trait Saga: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The outputs of every step (the generated `<Type>Output` struct).
    type Output: Send + 'static;

    #[doc(hidden)]
    type State: Default + Send + Sync + 'static;

    /// The definition: name, version, fingerprint and the ordered steps.
    fn definition() -> &'static Definition;

    #[doc(hidden)]
    fn __run_step<'a>(
        &'a self,
        step: usize,
        cx: &'a StepContext,
        state: &'a mut Self::State,
    ) -> BoxFuture<'a, Result<(), StepError>>;

    #[doc(hidden)]
    fn __compensate<'a>(
        &'a self,
        step: usize,
        cx: &'a StepContext,
        state: &'a Self::State,
    ) -> BoxFuture<'a, Result<(), StepError>>;

    #[doc(hidden)]
    fn __validate(&self, step: usize, state: &Self::State) -> Result<(), String>;

    #[doc(hidden)]
    fn __encode(step: usize, state: &Self::State) -> Result<Vec<u8>, CodecError>;

    #[doc(hidden)]
    fn __decode(step: usize, state: &mut Self::State, bytes: &[u8]) -> Result<(), CodecError>;

    #[doc(hidden)]
    fn __clear(step: usize, state: &mut Self::State);

    #[doc(hidden)]
    fn __finish(state: Self::State) -> Option<Self::Output>;
}

/// Implemented by every type a step can return: it is checkpointed, so it must serialize.
#[diagnostic::on_unimplemented(
    message = "the output `{Self}` of a step must be `Serialize + DeserializeOwned + Send + Sync + 'static`, because it is checkpointed",
    label = "this step output cannot be checkpointed",
    note = "add `#[derive(serde::Serialize, serde::Deserialize)]` to `{Self}`"
)]
pub trait StepOutput: Serialize + DeserializeOwned + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> StepOutput for T {}
