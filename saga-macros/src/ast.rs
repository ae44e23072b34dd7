//! A private model of a saga, built from the user's impl block.
//!
//! Every node keeps the user's own tokens so that errors and generated checks can be spanned
//! on them. Building the model already reports the rules that concern one method alone (its
//! signature, its attribute); the rules across steps live in `validate`.

use std::time::Duration;

use heck::ToKebabCase;
use proc_macro2::{Span, TokenStream};
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ImplItem, ImplItemFn, ItemImpl, Meta, Pat, PathArguments, ReceiverKind,
    ReturnType, Type,
};

use crate::attr::{self, KindArg};
use crate::ctxt::Ctxt;

/// The whole saga.
pub(crate) struct Saga {
    /// The user's impl block with the `#[step]` attributes removed.
    pub(crate) item: ItemImpl,
    /// The identifier the generated items are named after (`ReleasePr` -> `ReleasePrOutput`).
    pub(crate) type_ident: Ident,
    /// The runtime name (`release-pr` unless `#[saga(name = ...)]`).
    pub(crate) name: String,
    pub(crate) version: u32,
    /// `#[saga(deadline = "1h")]`: how long a saga of this type may run, from its start.
    pub(crate) deadline: Option<Duration>,
    pub(crate) steps: Vec<Step>,
    /// Every method of the impl block that is not a step.
    pub(crate) methods: Vec<Method>,
}

/// A method of the impl block that is not a step (a compensation, a validator, a helper).
pub(crate) struct Method {
    pub(crate) ident: Ident,
    pub(crate) is_async: bool,
    /// Whether the parameter after `cx` is an `Option<...>`: a compensation written so also
    /// undoes the landed effects of an attempt that failed without an output.
    pub(crate) takes_option: bool,
    /// How many parameters it takes, `self` included.
    pub(crate) arity: usize,
    /// Its parameter list as written (its name when it takes none), for spans.
    pub(crate) params: proc_macro2::TokenStream,
}

/// Whether the third parameter of `method` (after `&self` and `cx`) is `Option<...>`.
fn third_param_is_option(method: &ImplItemFn) -> bool {
    let Some(FnArg::Typed(param)) = method.sig.inputs.iter().nth(2) else { return false };
    matches!(&*param.ty, Type::Path(path) if path.qself.is_none()
        && path.path.segments.last().is_some_and(|s| s.ident == "Option"))
}

/// One `#[step(...)]` method.
pub(crate) struct Step {
    pub(crate) ident: Ident,
    /// The `#[step(...)]` attribute, for spans.
    pub(crate) attr: Attribute,
    /// Every kind key given; validation requires exactly one.
    pub(crate) kinds: Vec<(KindArg, Ident)>,
    /// `validate = method`, with the `validate` key for spans.
    pub(crate) validate: Option<(Ident, Ident)>,
    pub(crate) timeout: Option<(Duration, Span)>,
    /// `limit = "github"`: the downstream whose rate limit the step draws from.
    pub(crate) limit: Option<(String, Span)>,
    /// The parameters after `cx`: each names an earlier step.
    pub(crate) inputs: Vec<Input>,
    /// `T` in `StepResult<T>` / `Result<T, E>`; `None` when the return type is not of that form.
    pub(crate) output: Option<Type>,
    /// The span of the whole return type.
    pub(crate) output_span: Span,
}

impl Step {
    /// The one kind of the step, once validation has checked there is exactly one.
    pub(crate) fn kind(&self) -> &KindArg {
        &self.kinds[0].0
    }
}

/// A parameter of a step that receives an earlier step's output: its name is the step's.
pub(crate) struct Input {
    pub(crate) ident: Ident,
}

fn is_step_attr(attr: &Attribute) -> bool {
    attr.path().segments.last().is_some_and(|s| s.ident == "step")
}

const STEP_FORM: &str = "#[step(compensate = <method>)]`, `#[step(commit)]` or `#[step(idempotent)]";

pub(crate) fn parse(cx: &mut Ctxt, args: TokenStream, mut item: ItemImpl) -> Option<Saga> {
    let args = attr::saga_args(cx, args);

    if let Some((_, for_token)) = &item.trait_ {
        let span = item.trait_.as_ref().map(|(path, _)| path.span()).unwrap_or(for_token.span);
        cx.error_at(
            span,
            "`#[saga]` goes on an inherent impl block, not a trait impl: write the steps in `impl MySaga { ... }`",
        );
        return None;
    }
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        cx.error(
            &item.generics,
            "a saga cannot be generic: implement `#[saga]` for a concrete type, and make a type per variant",
        );
        return None;
    }
    let type_ident = match &*item.self_ty {
        Type::Path(path) if path.qself.is_none() => {
            let last = path.path.segments.last().expect("a type path has a segment");
            if !last.arguments.is_none() {
                cx.error(
                    &item.self_ty,
                    "a saga cannot be generic: implement `#[saga]` for a concrete type without type arguments",
                );
                return None;
            }
            last.ident.clone()
        }
        other => {
            cx.error(other, "`#[saga]` needs a named struct or enum type, like `impl ReleasePr { ... }`");
            return None;
        }
    };

    let mut steps = Vec::new();
    let mut methods = Vec::new();
    for impl_item in &mut item.items {
        let ImplItem::Fn(method) = impl_item else {
            continue;
        };
        let step_attrs: Vec<Attribute> = method.attrs.iter().filter(|a| is_step_attr(a)).cloned().collect();
        method.attrs.retain(|a| !is_step_attr(a));
        let Some(attr) = step_attrs.first() else {
            methods.push(Method {
                ident: method.sig.ident.clone(),
                is_async: method.sig.asyncness.is_some(),
                takes_option: third_param_is_option(method),
                arity: method.sig.inputs.len(),
                params: if method.sig.inputs.is_empty() {
                    quote::ToTokens::to_token_stream(&method.sig.ident)
                } else {
                    quote::ToTokens::to_token_stream(&method.sig.inputs)
                },
            });
            continue;
        };
        for extra in &step_attrs[1..] {
            cx.error(
                extra,
                format!("`{}` has more than one `#[step]` attribute: merge them into one", method.sig.ident),
            );
        }
        steps.push(parse_step(cx, attr.clone(), method));
    }

    if steps.is_empty() {
        cx.error(
            &item.self_ty,
            format!("this impl block has no steps: mark the async methods of `{type_ident}` with `{STEP_FORM}`"),
        );
    }

    let name = args.name.map(|(name, _)| name).unwrap_or_else(|| type_ident.to_string().to_kebab_case());
    let deadline = args.deadline.map(|(deadline, _)| deadline);
    Some(Saga { item, type_ident, name, version: args.version.unwrap_or(1), deadline, steps, methods })
}

fn parse_step(cx: &mut Ctxt, attr: Attribute, method: &ImplItemFn) -> Step {
    let sig = &method.sig;
    let ident = sig.ident.clone();

    let args = match &attr.meta {
        Meta::List(list) => attr::step_args(cx, list.tokens.clone(), &ident),
        Meta::Path(_) => attr::step_args(cx, TokenStream::new(), &ident),
        Meta::NameValue(nv) => {
            cx.error(nv, format!("write the arguments of step `{ident}` in parentheses: `{STEP_FORM}`"));
            attr::step_args(cx, TokenStream::new(), &ident)
        }
    };

    if sig.asyncness.is_none() {
        cx.error(sig.fn_token, format!("step `{ident}` must be an `async fn`: write `async fn {ident}`"));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        cx.error(
            &sig.generics,
            format!("step `{ident}` cannot be generic: its output is checkpointed and must have one concrete type"),
        );
    }

    let mut params = sig.inputs.iter();
    match params.next() {
        Some(FnArg::Receiver(receiver)) => match &receiver.kind {
            ReceiverKind::Reference(_, _, None) => {}
            ReceiverKind::Reference(_, _, Some(_)) => cx.error(
                receiver,
                format!("step `{ident}` must take `&self`, not `&mut self`: the saga input is shared by every step"),
            ),
            _ => cx.error(receiver, format!("step `{ident}` must take `&self` as its receiver")),
        },
        _ => cx.error(
            &sig.ident,
            format!("step `{ident}` must be a method: write `async fn {ident}(&self, cx: &StepContext)`"),
        ),
    }
    match params.next() {
        Some(FnArg::Typed(cx_arg)) => {
            if !matches!(&*cx_arg.ty, Type::Reference(r) if r.mutability.is_none()) {
                cx.error(
                    &cx_arg.ty,
                    format!("the second parameter of step `{ident}` is its context: write `cx: &StepContext`"),
                );
            }
        }
        _ => cx.error(
            &sig.ident,
            format!(
                "step `{ident}` must take the step context after `&self`: write `async fn {ident}(&self, cx: &StepContext)`"
            ),
        ),
    }
    let mut inputs = Vec::new();
    for param in params {
        let FnArg::Typed(param) = param else { continue };
        let Pat::Ident(pat) = &*param.pat else {
            cx.error(
                &param.pat,
                format!(
                    "a parameter of step `{ident}` after `cx` must be the plain name of an earlier step, like `open_pr: &PrId`"
                ),
            );
            continue;
        };
        if pat.by_ref.is_some() || pat.subpat.is_some() {
            cx.error(&param.pat, "write the parameter as a plain name, like `open_pr: &PrId`");
            continue;
        }
        match &*param.ty {
            Type::Reference(reference) if reference.mutability.is_none() => {}
            other => {
                let shown = match other {
                    Type::Reference(r) => quote::ToTokens::to_token_stream(&r.elem).to_string(),
                    other => quote::ToTokens::to_token_stream(other).to_string(),
                };
                cx.error(
                    other,
                    format!(
                        "parameter `{}` of step `{ident}` receives an earlier step's output by shared reference: write `{}: &{shown}`",
                        pat.ident, pat.ident
                    ),
                );
                continue;
            }
        }
        inputs.push(Input { ident: pat.ident.clone() });
    }

    let (output, output_span) = match &sig.output {
        ReturnType::Type(_, ty) => {
            let output = result_ok_type(ty);
            if output.is_none() {
                cx.error(
                    ty,
                    format!(
                        "step `{ident}` must return `StepResult<T>` or `Result<T, E>`, where `T` is its checkpointed output"
                    ),
                );
            }
            (output, ty.span())
        }
        ReturnType::Default => {
            cx.error(
                &sig.ident,
                format!("step `{ident}` must return `StepResult<T>` or `Result<T, E>`: add `-> StepResult<T>`"),
            );
            (None, sig.ident.span())
        }
    };

    Step {
        ident,
        attr,
        kinds: args.kinds,
        validate: args.validate,
        timeout: args.timeout,
        limit: args.limit,
        inputs,
        output,
        output_span,
    }
}

/// `T` of `StepResult<T>`, `Result<T, E>` or a path ending in one of them.
fn result_ok_type(ty: &Type) -> Option<Type> {
    let ty = match ty {
        Type::Group(group) => &*group.elem,
        Type::Paren(paren) => &*paren.elem,
        other => other,
    };
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Result" && last.ident != "StepResult" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first()? {
        GenericArgument::Type(ty) => Some(ty.clone()),
        _ => None,
    }
}
