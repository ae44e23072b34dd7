//! The rules of the DSL that concern more than one method (DESIGN.md §3), each reported with
//! a spanned, one-sentence error that says how to fix it. Every rule is checked even after
//! another has failed, so that the user sees all problems at once.

use crate::ast::{Saga, Step};
use crate::attr::KindArg;
use crate::ctxt::Ctxt;

pub(crate) fn validate(cx: &mut Ctxt, saga: &Saga) {
    let mut commit: Option<&Step> = None;
    for (index, step) in saga.steps.iter().enumerate() {
        let name = &step.ident;
        match step.kinds.as_slice() {
            [] => cx.error(
                &step.attr,
                format!(
                    "step `{name}` does not say how it is undone: add `compensate = <method>`, `commit` or `idempotent` to its `#[step(...)]`"
                ),
            ),
            [_] => {}
            [(first, _), rest @ ..] => {
                for (other, key) in rest {
                    cx.error(
                        key,
                        format!(
                            "step `{name}` is both `{}` and `{}`: a step is exactly one of `compensate = <method>`, `commit` or `idempotent`, so keep one",
                            first.key(),
                            other.key()
                        ),
                    );
                }
            }
        }
        if let Some((kind, key)) = step.kinds.first() {
            match kind {
                KindArg::Commit => match commit {
                    Some(first) => cx.error(
                        key,
                        format!(
                            "step `{name}` is a second commit point after `{}`: a saga has at most one, so make `{name}` `idempotent` or fold it into `{}`",
                            first.ident, first.ident
                        ),
                    ),
                    None => commit = Some(step),
                },
                KindArg::Compensate(method) => {
                    if let Some(commit) = commit {
                        cx.error(
                            key,
                            format!(
                                "step `{name}` comes after the commit point `{}` and so is never compensated: mark it `#[step(idempotent)]` or move it before `{}`",
                                commit.ident, commit.ident
                            ),
                        );
                    }
                    check_method(cx, saga, method, Role::Compensation, step);
                }
                KindArg::Idempotent => {}
            }
        }
        if let Some((validator, key)) = &step.validate {
            if matches!(step.kinds.first(), Some((KindArg::Commit, _))) {
                cx.error(
                    key,
                    format!(
                        "`validate` is not allowed on the commit step `{name}`: a commit cannot be run twice, so validate its inputs in an earlier step"
                    ),
                );
            } else {
                check_method(cx, saga, validator, Role::Validator, step);
            }
        }
        for input in &step.inputs {
            let wanted = &input.ident;
            match saga.steps.iter().position(|s| s.ident == *wanted) {
                Some(j) if j == index => cx.error(
                    wanted,
                    format!("step `{name}` cannot read its own output: remove the parameter `{wanted}`"),
                ),
                Some(j) if j > index => cx.error(
                    wanted,
                    format!(
                        "parameter `{wanted}` of step `{name}` names step `{wanted}`, which runs after `{name}`: a step reads only earlier outputs, so move `{wanted}` before `{name}` or drop the parameter"
                    ),
                ),
                Some(_) => {}
                None => {
                    let earlier: Vec<String> =
                        saga.steps[..index].iter().map(|s| format!("`{}`", s.ident)).collect();
                    let hint = if earlier.is_empty() {
                        format!("`{name}` is the first step, so it can read no output; remove the parameter")
                    } else {
                        format!("rename it to one of {}", earlier.join(", "))
                    };
                    cx.error(
                        wanted,
                        format!(
                            "parameter `{wanted}` of step `{name}` names no step: a parameter after `cx` receives the output of the earlier step of that name, so {hint}"
                        ),
                    );
                }
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Role {
    Compensation,
    Validator,
}

fn check_method(cx: &mut Ctxt, saga: &Saga, method: &syn::Ident, role: Role, step: &Step) {
    let output = step
        .output
        .as_ref()
        .map(|ty| quote::ToTokens::to_token_stream(ty).to_string())
        .unwrap_or_else(|| "T".to_owned());
    let form = match role {
        Role::Compensation => {
            format!("async fn {method}(&self, cx: &StepContext, output: &{output}) -> StepResult<()>")
        }
        Role::Validator => format!("fn {method}(&self, output: &{output}) -> Result<(), String>"),
    };
    let what = match role {
        Role::Compensation => "compensation",
        Role::Validator => "validator",
    };
    if saga.steps.iter().any(|s| s.ident == *method) {
        cx.error(
            method,
            format!(
                "`{method}` is a step, so it cannot also be the {what} of step `{}`: write a separate `{form}`",
                step.ident
            ),
        );
        return;
    }
    match saga.methods.iter().find(|m| m.ident == *method) {
        None => cx.error(method, format!("`{method}` is not a method of this impl block: add `{form}` to it")),
        Some(found) => match role {
            Role::Compensation if !found.is_async => {
                cx.error(method, format!("compensation `{method}` must be an `async fn`: write `{form}`"))
            }
            Role::Validator if found.is_async => {
                cx.error(method, format!("validator `{method}` must be a plain `fn`, not `async fn`: write `{form}`"))
            }
            // Spanned on the parameters the user wrote: rustc would otherwise say only "takes 2
            // arguments but 3 were supplied" on `#[saga]`.
            Role::Compensation if found.arity != 3 => cx.error(
                &found.params,
                format!(
                    "compensation `{method}` takes {}, but a compensation receives `&self`, its context and the output of step `{}`: write `{form}`",
                    parameters(found.arity),
                    step.ident
                ),
            ),
            Role::Validator if found.arity != 2 => cx.error(
                &found.params,
                format!(
                    "validator `{method}` takes {}, but a validator receives `&self` and the output of step `{}`: write `{form}`",
                    parameters(found.arity),
                    step.ident
                ),
            ),
            _ => {}
        },
    }
}

/// "no parameter", "1 parameter", "2 parameters" (`self` counted).
fn parameters(n: usize) -> String {
    match n {
        0 => "no parameter".to_owned(),
        1 => "1 parameter".to_owned(),
        n => format!("{n} parameters"),
    }
}
