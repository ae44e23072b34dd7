//! Procedural macros of [`saga-runtime`](https://docs.rs/saga-runtime): `#[saga]` and the
//! inert `#[step]`.
//!
//! Use them through `saga_runtime::prelude::*`; the generated code names the runtime by
//! absolute path (`::saga_runtime::__private`), so this crate is not meant to be used alone.
//!
//! The work happens in four phases, one module each: `attr` parses attribute arguments,
//! `ast` builds a private model of the saga that keeps the user's tokens for spans,
//! `validate` enforces the rules of the DSL (collecting every error), and `expand`
//! generates the state machine; `names` checks the typed step ids (`<Type>Step::step`) that
//! the block gives to `StepError::blame` and `StepError::restart_from`.

mod ast;
mod attr;
mod ctxt;
mod expand;
mod fingerprint;
mod names;
mod validate;

use proc_macro::TokenStream;

/// Turns an inherent `impl` block whose async methods are marked `#[step(...)]` into a saga.
///
/// See the crate documentation of `saga-runtime` for the DSL.
#[proc_macro_attribute]
pub fn saga(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::saga(args.into(), item.into()).into()
}

/// Marks a step of a `#[saga]` impl block.
///
/// `#[saga]` reads and removes these attributes; reaching this macro means the method is not
/// inside a `#[saga]` impl block, which is an error.
#[proc_macro_attribute]
pub fn step(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::stray_step(args.into(), item.into()).into()
}
