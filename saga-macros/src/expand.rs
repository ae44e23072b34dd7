//! Code generation: the user's impl block (without its `#[step]` attributes), the
//! `<Type>Output` struct, the `<Type>Step` enum of typed step names, a hidden typed state
//! struct, and `impl Saga`, whose methods dispatch
//! on the step index to the user's own methods. Generated code names the runtime only through
//! `::saga_runtime::__private`, so user imports never break it.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::ItemImpl;

use crate::ast::{self, Saga};
use crate::attr::KindArg;
use crate::ctxt::Ctxt;
use crate::fingerprint;
use crate::names;
use crate::validate;

/// The pure core of `#[saga]`: attribute arguments and item in, generated code out.
pub(crate) fn saga(args: TokenStream, item: TokenStream) -> TokenStream {
    let item_impl: ItemImpl = match syn::parse2(item.clone()) {
        Ok(item_impl) => item_impl,
        Err(_) => {
            let span = item.clone().into_iter().next().map_or_else(Span::call_site, |token| token.span());
            let error = syn::Error::new(
                span,
                "`#[saga]` goes on an inherent impl block whose async methods are marked `#[step(...)]`, like `#[saga] impl ReleasePr { ... }`",
            );
            let mut tokens = error.to_compile_error();
            tokens.extend(item);
            return tokens;
        }
    };

    let mut cx = Ctxt::default();
    let Some(mut saga) = ast::parse(&mut cx, args, item_impl.clone()) else {
        return with_errors(cx, quote!(#item_impl));
    };
    validate::validate(&mut cx, &saga);
    names::check(&mut cx, &mut saga);
    let complete = saga.steps.iter().all(|s| s.output.is_some() && s.kinds.len() == 1);
    if cx.is_ok() && complete {
        generate(&saga, Mode::Full)
    } else {
        // The errors stop the build; the inert expansion only keeps the user's other code
        // (`runtime.run(saga)`, `output.field`) from piling unrelated errors on top of them.
        with_errors(cx, generate(&saga, Mode::Inert))
    }
}

/// What `generate` emits.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// The whole state machine.
    Full,
    /// Next to compile errors: the output struct and an `impl Saga` that never runs and
    /// calls none of the user's methods, so that no error cascades from the real ones.
    Inert,
}

/// `#[step]` outside of a `#[saga]` impl block.
pub(crate) fn stray_step(_args: TokenStream, item: TokenStream) -> TokenStream {
    let error = syn::Error::new(
        Span::call_site(),
        "`#[step]` only has a meaning on a method of an impl block marked `#[saga]`: add `#[saga]` to the impl block",
    );
    let mut tokens = error.to_compile_error();
    tokens.extend(item);
    tokens
}

/// The user's item (or the inert expansion) followed by every error, so that IDEs keep
/// working on the item.
fn with_errors(cx: Ctxt, item: TokenStream) -> TokenStream {
    let mut tokens = item;
    if let Some(error) = cx.finish() {
        tokens.extend(error.to_compile_error());
    }
    tokens
}

/// Whether the compensation `method` takes `Option<&T>` (see `ast::Method::takes_option`).
/// `Some(Duration::from_millis(..))` or `None`, as a constant expression.
fn duration_tokens(duration: Option<std::time::Duration>) -> TokenStream {
    match duration {
        Some(duration) => {
            let millis = duration.as_millis() as u64;
            quote!(::core::option::Option::Some(::core::time::Duration::from_millis(#millis)))
        }
        None => quote!(::core::option::Option::None),
    }
}

fn takes_option(saga: &Saga, method: &syn::Ident) -> bool {
    saga.methods.iter().any(|m| m.ident == *method && m.takes_option)
}

/// What the generated items share: the saga, the runtime path, the step outputs.
struct Gen<'a> {
    saga: &'a Saga,
    mode: Mode,
    rt: TokenStream,
    output_ident: syn::Ident,
    step_ident: syn::Ident,
    state_ident: syn::Ident,
    idents: Vec<&'a syn::Ident>,
    /// The output type of each step (`()` where the user's return type had none).
    outputs: Vec<syn::Type>,
}

fn generate(saga: &Saga, mode: Mode) -> TokenStream {
    let unit: syn::Type = syn::parse_quote!(());
    let emit = Gen {
        saga,
        mode,
        rt: quote!(::saga_runtime::__private),
        output_ident: format_ident!("{}Output", saga.type_ident),
        step_ident: names::step_enum_ident(saga),
        state_ident: format_ident!("__{}SagaState", saga.type_ident),
        idents: saga.steps.iter().map(|s| &s.ident).collect(),
        outputs: saga.steps.iter().map(|s| s.output.clone().unwrap_or_else(|| unit.clone())).collect(),
    };
    let item = &saga.item;
    let output_struct = emit.output_struct();
    let output_debug = emit.output_debug();
    let step_enum = emit.step_enum();
    let state_struct = emit.state_struct();
    let saga_impl = emit.saga_impl();
    quote! {
        #item
        #output_struct
        #output_debug
        #step_enum
        #state_struct
        #saga_impl
    }
}

impl Gen<'_> {
    /// Whether the step's arms of the state machine are emitted (not next to errors).
    fn full(&self) -> bool {
        self.mode == Mode::Full
    }

    /// `pub struct <Type>Output { pub step: T, ... }`.
    fn output_struct(&self) -> TokenStream {
        let (output_ident, idents, outputs) = (&self.output_ident, &self.idents, &self.outputs);
        let output_docs = self.saga.steps.iter().map(|step| format!("Output of step `{}`.", step.ident));
        let doc = format!(
            "The outputs of every step of [`{}`], in step order (generated by `#[saga]`).",
            self.saga.type_ident
        );
        quote! {
            #[doc = #doc]
            #[allow(private_interfaces)]
            pub struct #output_ident {
                #(
                    #[doc = #output_docs]
                    pub #idents: #outputs,
                )*
            }
        }
    }

    /// `Debug` for the output struct: each field with its own `Debug`, or its type name.
    fn output_debug(&self) -> TokenStream {
        let (rt, output_ident, idents) = (&self.rt, &self.output_ident, &self.idents);
        let output_name = output_ident.to_string();
        let step_names: Vec<String> = idents.iter().map(|i| i.to_string()).collect();
        quote! {
            impl ::core::fmt::Debug for #output_ident {
                fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    use #rt::{DebugViaDebug as _, DebugViaName as _};
                    f.debug_struct(#output_name)
                        #(.field(#step_names, &(&&#rt::DebugWrap(&self.#idents)).__saga_debug()))*
                        .finish()
                }
            }
        }
    }

    /// `pub enum <Type>Step { step, ... }`: one variant per step, named exactly like it, so
    /// that `StepError::blame` and `restart_from` name steps the compiler checks. Emitted next
    /// to errors too, so that code naming steps does not pile errors on the real ones.
    fn step_enum(&self) -> TokenStream {
        let (rt, step_ident, idents) = (&self.rt, &self.step_ident, &self.idents);
        let type_ident = &self.saga.type_ident;
        let self_ty = &self.saga.item.self_ty;
        let doc = format!(
            "The steps of [`{type_ident}`], in the order they run (generated by `#[saga]`): name a step with these in `StepError::blame` and `StepError::restart_from`, so that a misspelt step does not compile."
        );
        let step_docs = idents.iter().map(|ident| format!("Step `{ident}`."));
        let indices: Vec<usize> = (0..idents.len()).collect();
        quote! {
            #[doc = #doc]
            #[allow(non_camel_case_types)]
            #[derive(::core::clone::Clone, ::core::marker::Copy, ::core::fmt::Debug, ::core::cmp::PartialEq, ::core::cmp::Eq, ::core::hash::Hash, ::core::cmp::PartialOrd, ::core::cmp::Ord)]
            pub enum #step_ident {
                #(
                    #[doc = #step_docs]
                    #idents,
                )*
            }

            impl #rt::StepId for #step_ident {
                const ALL: &'static [Self] = &[#(Self::#idents),*];

                fn definition() -> &'static #rt::Definition {
                    <#self_ty as #rt::Saga>::definition()
                }

                fn index(self) -> usize {
                    match self {
                        #(Self::#idents => #indices,)*
                    }
                }
            }

            impl ::core::fmt::Display for #step_ident {
                fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    f.write_str(#rt::StepId::name(*self))
                }
            }
        }
    }

    /// The hidden state: one `Option` per step output, and one codec per output type.
    fn state_struct(&self) -> TokenStream {
        let (rt, state_ident, idents, outputs) = (&self.rt, &self.state_ident, &self.idents, &self.outputs);
        // The one place each output type is required to be checkpointable, spanned on the type
        // the user wrote, so that a non-serializable output is one clear error.
        let codecs = (0..outputs.len()).filter(|_| self.full()).map(|index| {
            let output = &outputs[index];
            let codec = format_ident!("__codec_{}", index);
            // Autoref specialization (see `__private::Probe`): one error for an output that
            // cannot be checkpointed, whichever of its bounds it misses.
            let span = syn::spanned::Spanned::span(output);
            let new = quote_spanned!(span=> (&#rt::Probe::<#output>::new()).codec());
            quote! {
                fn #codec() -> #rt::Codec<#output> {
                    use #rt::{NotCheckpointable as _, ViaStepOutput as _};
                    #new
                }
            }
        });
        quote! {
            #[doc(hidden)]
            #[allow(non_camel_case_types, private_interfaces)]
            pub struct #state_ident {
                #(#idents: ::core::option::Option<#outputs>,)*
            }

            impl ::core::default::Default for #state_ident {
                fn default() -> Self {
                    Self { #(#idents: ::core::option::Option::None,)* }
                }
            }

            impl #state_ident {
                #(#codecs)*
            }
        }
    }

    /// `impl Saga`: the definition and the state machine, dispatched by step index.
    fn saga_impl(&self) -> TokenStream {
        let (rt, state_ident, output_ident) = (&self.rt, &self.state_ident, &self.output_ident);
        let self_ty = &self.saga.item.self_ty;
        let definition = self.definition();
        let run_arms = self.run_arms();
        let compensate_arms = self.compensate_arms();
        let validate_arms = self.validate_arms();
        let codec_fns = self.codec_fns();
        let idents = &self.idents;
        let indices: Vec<usize> = (0..idents.len()).collect();
        quote! {
            #[automatically_derived]
            impl #rt::Saga for #self_ty {
                type Output = #output_ident;
                #[doc(hidden)]
                type State = #state_ident;

                #definition

                fn __run_step<'a>(
                    &'a self,
                    step: usize,
                    cx: &'a #rt::StepContext,
                    state: &'a mut Self::State,
                ) -> #rt::BoxFuture<'a, ::core::result::Result<(), #rt::StepError>> {
                    match step {
                        #(#run_arms)*
                        _ => #rt::no_such_step(step),
                    }
                }

                fn __compensate<'a>(
                    &'a self,
                    step: usize,
                    cx: &'a #rt::StepContext,
                    state: &'a Self::State,
                ) -> #rt::BoxFuture<'a, ::core::result::Result<(), #rt::StepError>> {
                    #[allow(unused_variables)]
                    let _ = (cx, state);
                    match step {
                        #(#compensate_arms)*
                        _ => #rt::no_such_step(step),
                    }
                }

                fn __validate(&self, step: usize, state: &Self::State) -> ::core::result::Result<(), ::std::string::String> {
                    #[allow(unused_variables)]
                    let _ = state;
                    match step {
                        #(#validate_arms)*
                        _ => ::core::result::Result::Ok(()),
                    }
                }

                #codec_fns

                fn __clear(step: usize, state: &mut Self::State) {
                    match step {
                        #(#indices => state.#idents = ::core::option::Option::None,)*
                        _ => #rt::no_such_step(step),
                    }
                }

                fn __finish(state: Self::State) -> ::core::option::Option<Self::Output> {
                    ::core::option::Option::Some(#output_ident {
                        #(#idents: state.#idents?,)*
                    })
                }
            }
        }
    }

    /// `fn definition()`: a static [`Definition`] with the fingerprint and the steps.
    fn definition(&self) -> TokenStream {
        let rt = &self.rt;
        let saga = self.saga;
        let (name, version) = (&saga.name, saga.version);
        let fingerprint = fingerprint::fingerprint(saga);
        let step_defs = saga.steps.iter().enumerate().map(|(index, step)| self.step_def(index, step));
        let deadline = duration_tokens(saga.deadline);
        quote! {
            fn definition() -> &'static #rt::Definition {
                static DEFINITION: #rt::Definition = #rt::Definition::__new(
                    #name,
                    #version,
                    #fingerprint,
                    &[#(#step_defs),*],
                    #deadline,
                );
                &DEFINITION
            }
        }
    }

    /// One `StepDef::__new(...)` of the definition.
    fn step_def(&self, index: usize, step: &ast::Step) -> TokenStream {
        let (rt, saga) = (&self.rt, self.saga);
        let none = quote!(::core::option::Option::None);
        let step_name = step.ident.to_string();
        let (kind, compensation) = match step.kinds.first().map_or(&KindArg::Idempotent, |(kind, _)| kind) {
            KindArg::Compensate(method) => {
                let method = method.to_string();
                (quote!(#rt::StepKind::Compensable), quote!(::core::option::Option::Some(#method)))
            }
            KindArg::Commit => (quote!(#rt::StepKind::Commit), none.clone()),
            KindArg::Idempotent => (quote!(#rt::StepKind::Idempotent), none.clone()),
        };
        let validate = match &step.validate {
            Some((method, _)) => {
                let method = method.to_string();
                quote!(::core::option::Option::Some(#method))
            }
            None => none.clone(),
        };
        let timeout = duration_tokens(step.timeout.map(|(duration, _)| duration));
        let limit = match &step.limit {
            Some((name, _)) => quote!(::core::option::Option::Some(#name)),
            None => none,
        };
        let inputs = step.inputs.iter().filter_map(|input| saga.steps.iter().position(|s| s.ident == input.ident));
        let output_type = fingerprint::type_text(&self.outputs[index]);
        let undoes_failed_attempts = match step.kinds.first() {
            Some((KindArg::Compensate(method), _)) => takes_option(saga, method),
            _ => false,
        };
        quote! {
            #rt::StepDef::__new(
                #step_name, #kind, #compensation, #validate, #timeout, &[#(#inputs),*], #output_type,
                #undoes_failed_attempts, #limit,
            )
        }
    }

    /// The arms of `__run_step`: each binds its inputs, awaits the user's step, and keeps the
    /// output.
    fn run_arms(&self) -> Vec<TokenStream> {
        let (rt, saga) = (&self.rt, self.saga);
        let self_ty = &saga.item.self_ty;
        saga.steps
            .iter()
            .enumerate()
            .filter(|_| self.full())
            .map(|(index, step)| {
                let ident = &step.ident;
                let output = &self.outputs[index];
                // Each input is bound to a local of its source step's type first, so that a
                // mismatch with the parameter's type is reported on the user's parameter in the
                // user's types.
                let bindings = step.inputs.iter().enumerate().map(|(n, input)| {
                    let source = &input.ident;
                    let source_index = saga.steps.iter().position(|s| s.ident == *source).expect("checked by validate");
                    let source_type = &self.outputs[source_index];
                    let local = format_ident!("__input_{}", n, span = input.ident.span());
                    quote!(let #local: &#source_type = #rt::input(&state.#source);)
                });
                let args = step.inputs.iter().enumerate().map(|(n, input)| {
                    let local = format_ident!("__input_{}", n, span = input.ident.span());
                    quote!(#local)
                });
                // Only the user's own tokens carry the user's spans: `self` and `cx` keep the
                // macro's, so that a saga written by a `macro_rules!` macro resolves them too.
                let callee = quote_spanned!(ident.span()=> <#self_ty>::#ident);
                let call = quote!(#callee(self, cx, #(#args),*).await);
                let result = syn::Ident::new("__result", step.output_span);
                let convert = quote_spanned!(step.output_span=> #rt::step_result::<#output, _>(#result)?);
                let body = quote! {
                    #(#bindings)*
                    let #result = #call;
                    let __output: #output = #convert;
                    state.#ident = ::core::option::Option::Some(__output);
                    ::core::result::Result::Ok(())
                };
                let future = boxed_future(ident.span(), body);
                quote!(#index => #future,)
            })
            .collect()
    }

    /// The arms of `__compensate`: each awaits the user's compensation with the step's output.
    fn compensate_arms(&self) -> Vec<TokenStream> {
        let (rt, saga) = (&self.rt, self.saga);
        let self_ty = &saga.item.self_ty;
        saga.steps
            .iter()
            .enumerate()
            .filter(|_| self.full())
            .filter_map(|(index, step)| {
                let KindArg::Compensate(method) = step.kind() else { return None };
                let ident = &step.ident;
                let output = &self.outputs[index];
                let local = syn::Ident::new("__output", method.span());
                let callee = quote_spanned!(method.span()=> <#self_ty>::#method);
                let call = quote!(#callee(self, cx, #local).await);
                // `Option<&T>`: the compensation also undoes a failed attempt's landed effects.
                let binding = if takes_option(saga, method) {
                    quote!(let #local: ::core::option::Option<&#output> = state.#ident.as_ref();)
                } else {
                    quote!(let #local: &#output = #rt::input(&state.#ident);)
                };
                let body = quote! {
                    #binding
                    #rt::compensation_result(#call)
                };
                // As for steps: a compensation that is not `Send` is reported on its own name.
                let defined_at =
                    saga.methods.iter().find(|m| m.ident == *method).map_or(method.span(), |m| m.ident.span());
                let future = boxed_future(defined_at, body);
                Some(quote!(#index => #future,))
            })
            .collect()
    }

    /// The arms of `__validate`: each calls the step's validator on its output.
    fn validate_arms(&self) -> Vec<TokenStream> {
        let (rt, saga) = (&self.rt, self.saga);
        let self_ty = &saga.item.self_ty;
        saga.steps
            .iter()
            .enumerate()
            .filter(|_| self.full())
            .filter_map(|(index, step)| {
                let (method, _) = step.validate.as_ref()?;
                let ident = &step.ident;
                let output = &self.outputs[index];
                let local = syn::Ident::new("__output", method.span());
                let callee = quote_spanned!(method.span()=> <#self_ty>::#method);
                let call = quote!(#callee(self, #local));
                Some(quote!(#index => {
                    let #local: &#output = #rt::input(&state.#ident);
                    #rt::validation(#call)
                }))
            })
            .collect()
    }

    /// `__encode` and `__decode`, through each step's codec.
    fn codec_fns(&self) -> TokenStream {
        let rt = &self.rt;
        let (indices, steps, codecs): (Vec<usize>, Vec<&syn::Ident>, Vec<syn::Ident>) = match self.mode {
            Mode::Full => (
                (0..self.idents.len()).collect(),
                self.idents.clone(),
                (0..self.idents.len()).map(|i| format_ident!("__codec_{}", i)).collect(),
            ),
            Mode::Inert => (Vec::new(), Vec::new(), Vec::new()),
        };
        quote! {
            fn __encode(step: usize, state: &Self::State) -> ::core::result::Result<::std::vec::Vec<u8>, #rt::CodecError> {
                match step {
                    #(#indices => (Self::State::#codecs().encode)(#rt::input(&state.#steps)),)*
                    _ => #rt::no_such_step(step),
                }
            }

            fn __decode(step: usize, state: &mut Self::State, bytes: &[u8]) -> ::core::result::Result<(), #rt::CodecError> {
                match step {
                    #(#indices => {
                        state.#steps = ::core::option::Option::Some((Self::State::#codecs().decode)(bytes)?);
                        ::core::result::Result::Ok(())
                    })*
                    _ => #rt::no_such_step(step),
                }
            }
        }
    }
}

/// The boxed future of a step or a compensation. The call and its `async move { }` take the
/// span of the user's method name (the tokens inside keep their own, so that hygiene resolves
/// them as before): the `Send` bound of `step_future` then reports a step holding an `Rc`
/// across an `.await` on the user's method, not on `#[saga]`.
fn boxed_future(span: Span, body: TokenStream) -> TokenStream {
    quote_spanned!(span=> ::saga_runtime::__private::step_future(async move { #body }))
}

#[cfg(test)]
mod tests {
    use super::saga;
    use quote::quote;
    use syn::{Item, ItemImpl, ItemStruct};

    fn release_pr() -> proc_macro2::TokenStream {
        quote! {
            impl ReleasePr {
                #[step(compensate = close_pr, timeout = "30s")]
                async fn open_pr(&self, cx: &StepContext) -> StepResult<PrId> { todo_body() }
                async fn close_pr(&self, cx: &StepContext, pr: &PrId) -> StepResult<()> { Ok(()) }

                #[step(idempotent)]
                async fn run_tests(&self, cx: &StepContext, open_pr: &PrId) -> Result<TestReport, MyError> { todo_body() }

                #[step(compensate = delete_comment, validate = non_empty)]
                async fn comment(&self, cx: &StepContext, run_tests: &TestReport) -> StepResult<CommentId> { todo_body() }
                async fn delete_comment(&self, cx: &StepContext, c: &CommentId) -> StepResult<()> { Ok(()) }
                fn non_empty(&self, c: &CommentId) -> Result<(), String> { Ok(()) }

                #[step(commit)]
                async fn merge(&self, cx: &StepContext, open_pr: &PrId) -> StepResult<MergeSha> { todo_body() }
            }
        }
    }

    fn expand(args: proc_macro2::TokenStream, item: proc_macro2::TokenStream) -> syn::File {
        syn::parse2(saga(args, item)).expect("the expansion parses as a file")
    }

    fn errors(file: &syn::File) -> Vec<String> {
        file.items
            .iter()
            .filter_map(|item| match item {
                Item::Macro(m) if m.mac.path.segments.last().is_some_and(|s| s.ident == "compile_error") => {
                    let lit: syn::LitStr = m.mac.parse_body().expect("a string");
                    Some(lit.value())
                }
                _ => None,
            })
            .collect()
    }

    /// The generated `impl Saga for ReleasePr`.
    fn saga_impl(file: &syn::File) -> &ItemImpl {
        file.items
            .iter()
            .find_map(|i| match i {
                Item::Impl(imp) if imp.trait_.is_some() && quote!(#imp).to_string().contains("Saga for ReleasePr") => {
                    Some(imp)
                }
                _ => None,
            })
            .expect("an impl Saga")
    }

    fn fingerprint_of(file: &syn::File) -> String {
        let text = prettyplease::unparse(file);
        let start = text.find("Definition::__new(").expect("a definition");
        let literals: Vec<&str> = text[start..].split('"').collect();
        // name, version, then the fingerprint literal
        literals[3].to_owned()
    }

    #[test]
    fn a_valid_saga_expands_to_the_impl_the_output_struct_and_the_saga_impl() {
        let file = expand(quote!(), release_pr());
        assert!(errors(&file).is_empty());

        let user_impl = file
            .items
            .iter()
            .find_map(|i| match i {
                Item::Impl(imp) if imp.trait_.is_none() && quote!(#imp).to_string().contains("open_pr") => Some(imp),
                _ => None,
            })
            .expect("the user's impl is kept");
        let user_impl_text = quote!(#user_impl).to_string();
        assert!(!user_impl_text.contains("# [step"), "the #[step] attributes are removed: {user_impl_text}");

        let output: &ItemStruct = file
            .items
            .iter()
            .find_map(|i| match i {
                Item::Struct(s) if s.ident == "ReleasePrOutput" => Some(s),
                _ => None,
            })
            .expect("the output struct");
        let fields: Vec<(String, String)> = output
            .fields
            .iter()
            .map(|f| {
                let ty = &f.ty;
                (f.ident.as_ref().unwrap().to_string(), quote!(#ty).to_string())
            })
            .collect();
        assert_eq!(
            fields,
            [
                ("open_pr".into(), "PrId".into()),
                ("run_tests".into(), "TestReport".into()),
                ("comment".into(), "CommentId".into()),
                ("merge".into(), "MergeSha".into())
            ]
        );

        let saga_impl = saga_impl(&file);
        let text = quote!(#saga_impl).to_string();
        assert!(text.contains("type Output = ReleasePrOutput"), "{text}");
        assert!(text.contains("\"release-pr\""), "the default name is the kebab-case type name");
        assert!(
            text.contains("StepKind :: Compensable , :: core :: option :: Option :: Some (\"close_pr\")"),
            "{text}"
        );
        assert!(text.contains("Duration :: from_millis (30000u64)"), "the timeout is parsed at compile time");
        assert!(text.contains("StepKind :: Commit"));
    }

    #[test]
    fn name_and_version_are_taken_from_the_attribute() {
        let file = expand(quote!(name = "ship-it", version = 7), release_pr());
        let text = prettyplease::unparse(&file);
        let definition = &text[text.find("Definition::__new(").expect("a definition")..];
        let arguments: Vec<&str> = definition.split(',').take(2).map(|a| a.trim()).collect();
        assert_eq!(arguments, ["Definition::__new(\n            \"ship-it\"", "7u32"], "{definition}");
    }

    #[test]
    fn every_error_of_an_impl_is_reported_at_once_and_the_item_is_kept() {
        let item = quote! {
            impl ReleasePr {
                #[step]
                async fn open_pr(&self, cx: &StepContext) -> StepResult<PrId> { x() }
                #[step(idempotent, retry = 2)]
                fn run_tests(&self, cx: &StepContext, merge: &PrId) -> StepResult<u64> { x() }
                #[step(commit)]
                async fn merge(&self, cx: &StepContext) -> StepResult<PrId> { x() }
                #[step(compensate = nope)]
                async fn notify(&self, cx: &StepContext) -> StepResult<()> { x() }
            }
        };
        let file = expand(quote!(), item);
        let errors = errors(&file);
        assert_eq!(errors.len(), 6, "{errors:#?}");
        assert!(errors.iter().any(|e| e.starts_with("step `open_pr` does not say how it is undone")));
        assert!(errors.iter().any(|e| e.starts_with("unknown key `retry`")));
        assert!(errors.iter().any(|e| e.starts_with("step `run_tests` must be an `async fn`")));
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("parameter `merge` of step `run_tests` names step `merge`, which runs after"))
        );
        assert!(errors.iter().any(|e| e.starts_with("step `notify` comes after the commit point `merge`")));
        assert!(errors.iter().any(|e| e.starts_with("`nope` is not a method of this impl block")));
        assert!(file.items.iter().any(|i| matches!(i, Item::Impl(_))), "the item is still emitted for IDEs");
        // The output struct and an inert `impl Saga` keep other code from cascading errors;
        // the inert impl calls none of the user's methods.
        assert!(file.items.iter().any(|i| matches!(i, Item::Struct(s) if s.ident == "ReleasePrOutput")));
        let saga_impl = saga_impl(&file);
        let text = quote!(#saga_impl).to_string();
        for method in ["open_pr", "run_tests", "merge", "notify", "nope"] {
            assert!(!text.contains(&format!(":: {method} (self")), "the inert impl calls `{method}`: {text}");
        }
    }

    #[test]
    fn the_fingerprint_follows_the_definition_not_the_bodies() {
        let base = fingerprint_of(&expand(quote!(), release_pr()));
        assert_eq!(base.len(), 16);
        assert!(base.chars().all(|c| c.is_ascii_hexdigit()));
        let other_body = release_pr().to_string().replace("{ Ok (()) }", "{ Ok (()) ; }");
        assert_eq!(fingerprint_of(&expand(quote!(), other_body.parse().unwrap())), base, "bodies do not count");
        let variants = [
            release_pr().to_string().replace("StepResult < MergeSha >", "StepResult < String >"),
            release_pr().to_string().replace("# [step (idempotent)]", "# [step (compensate = close_pr)]"),
            release_pr().to_string().replace(
                "async fn merge (& self , cx : & StepContext , open_pr : & PrId)",
                "async fn merge (& self , cx : & StepContext)",
            ),
        ];
        for variant in variants {
            assert_ne!(release_pr().to_string(), variant, "the variant changes the input");
            assert_ne!(fingerprint_of(&expand(quote!(), variant.parse().unwrap())), base, "{variant}");
        }
        assert_ne!(fingerprint_of(&expand(quote!(version = 2), release_pr())), base, "the version counts");
    }

    #[test]
    fn limits_and_deadlines_are_carried_and_leave_the_fingerprint_alone() {
        let base = fingerprint_of(&expand(quote!(), release_pr()));
        let limited: proc_macro2::TokenStream = release_pr()
            .to_string()
            .replacen("step (idempotent)", "step (idempotent , limit = \"ci\")", 1)
            .parse()
            .unwrap();
        let file = expand(quote!(deadline = "1h"), limited);
        assert!(errors(&file).is_empty(), "{:?}", errors(&file));
        let text = prettyplease::unparse(&file);
        assert!(text.contains("::core::option::Option::Some(\"ci\")"), "the step's limit is in its StepDef");
        assert!(text.contains("Duration::from_millis(3600000u64)"), "the deadline is parsed at compile time");
        assert_eq!(fingerprint_of(&file), base, "neither a limit nor a deadline changes the journal's meaning");
    }

    #[test]
    fn the_expansion_matches_the_reviewed_snapshot() {
        let text = prettyplease::unparse(&expand(quote!(), release_pr()));
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/snapshots/release_pr.rs.txt");
        if std::env::var_os("SAGA_MACROS_BLESS").is_some() {
            std::fs::write(path, &text).unwrap();
        }
        let expected = std::fs::read_to_string(path).expect("run with SAGA_MACROS_BLESS=1 to create the snapshot");
        assert_eq!(text, expected, "the generated code changed: review it, then run with SAGA_MACROS_BLESS=1");
    }

    #[test]
    fn step_names_given_to_blame_and_restart_from_are_checked() {
        let item = quote! {
            impl ReleasePr {
                #[step(idempotent)]
                async fn open_pr(&self, cx: &StepContext) -> StepResult<PrId> {
                    Err(StepError::logical("blaming itself is a plain re-prompt").blame(ReleasePrStep::open_pr))
                }
                #[step(commit)]
                async fn merge(&self, cx: &StepContext, open_pr: &PrId) -> StepResult<u8> { x() }
                #[step(idempotent)]
                async fn announce(&self, cx: &StepContext) -> StepResult<u8> {
                    Err(StepError::logical("x").blame(crate::ReleasePrStep::open_pr))
                }
                fn helper(&self) -> StepError {
                    // Outside a step the failing step is unknown: only the names are checked.
                    StepError::logical("x").blame(ReleasePrStep::announce).restart_from(ReleasePrStep::opn_pr)
                }
            }
        };
        let file = expand(quote!(), item);
        assert_eq!(
            errors(&file),
            [
                "step `announce` runs after the commit point `merge`, so `open_pr` can never run again to fix its mistake: no earlier step can run again, so drop the blame and let `announce` be re-prompted",
                "`ReleasePrStep::opn_pr` names no step of `ReleasePr`: use one of `open_pr`, `merge` or `announce`",
            ]
        );
        let user_impl = file
            .items
            .iter()
            .find_map(|i| match i {
                Item::Impl(imp) if imp.trait_.is_none() && quote!(#imp).to_string().contains("fn helper") => Some(imp),
                _ => None,
            })
            .expect("the user's impl is kept");
        let user_impl = quote!(#user_impl).to_string();
        assert!(!user_impl.contains("opn_pr"), "the misspelt id is replaced, so rustc does not report it again");
        assert!(user_impl.contains("restart_from (ReleasePrStep :: open_pr)"), "{user_impl}");
        assert!(
            file.items.iter().any(|i| matches!(i, Item::Enum(e) if e.ident == "ReleasePrStep")),
            "the step enum is emitted next to errors"
        );
    }

    #[test]
    fn a_stray_step_attribute_is_an_error() {
        let out = super::stray_step(
            quote!(idempotent),
            quote!(
                async fn f(&self) {}
            ),
        );
        let text = out.to_string();
        assert!(text.contains("compile_error"), "{text}");
        assert!(text.contains("only has a meaning on a method of an impl block marked `#[saga]`"));
        assert!(text.contains("async fn f"), "the item is kept");
    }
}
