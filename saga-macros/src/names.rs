//! Step names written inside the impl block. `#[saga]` generates `<Type>Step`, one variant per
//! step; the typed step id passed to every `.blame(..)` and `.restart_from(..)` call of the
//! block must name a step, and inside a step it must name one the failing step may go back to
//! (not a later step, nor one at or before a commit point that has passed). Each mistake is a
//! spanned error that lists the steps to choose from.
//!
//! Only typed ids are checked here: a string argument is the run-time form, and a method of the
//! same name on another type (a code agent's `repo.blame("src/lib.rs")`) is none of our
//! business. A misspelt id is replaced by a valid one in the emitted item, so that rustc does
//! not report it a second time.

use quote::format_ident;
use syn::visit_mut::{self, VisitMut};
use syn::{Expr, ExprMethodCall, Ident, ImplItem};

use crate::ast::Saga;
use crate::attr::KindArg;
use crate::ctxt::Ctxt;

/// The identifier of the generated step enum: `ReleasePr` -> `ReleasePrStep`.
pub(crate) fn step_enum_ident(saga: &Saga) -> Ident {
    format_ident!("{}Step", saga.type_ident)
}

/// Checks the step names of every `.blame(..)` and `.restart_from(..)` in the impl block.
pub(crate) fn check(cx: &mut Ctxt, saga: &mut Saga) {
    let mut checker = Checker {
        cx,
        enum_ident: step_enum_ident(saga),
        type_ident: saga.type_ident.to_string(),
        steps: saga.steps.iter().map(|s| s.ident.to_string()).collect(),
        commit: saga.steps.iter().position(|s| matches!(s.kinds.first(), Some((KindArg::Commit, _)))),
        current: None,
    };
    for item in &mut saga.item.items {
        let ImplItem::Fn(method) = item else { continue };
        checker.current = checker.steps.iter().position(|s| method.sig.ident == s);
        checker.visit_block_mut(&mut method.block);
    }
}

/// The calls that take a step.
#[derive(Clone, Copy)]
enum Call {
    Blame,
    RestartFrom,
}

struct Checker<'a> {
    cx: &'a mut Ctxt,
    enum_ident: Ident,
    type_ident: String,
    steps: Vec<String>,
    commit: Option<usize>,
    /// The step whose body is being read (`None` in other methods: the failing step is not
    /// known there, and the run time applies the rules).
    current: Option<usize>,
}

impl VisitMut for Checker<'_> {
    fn visit_expr_method_call_mut(&mut self, call: &mut ExprMethodCall) {
        visit_mut::visit_expr_method_call_mut(self, call);
        let which = if call.method == "blame" {
            Call::Blame
        } else if call.method == "restart_from" {
            Call::RestartFrom
        } else {
            return;
        };
        if call.args.len() == 1
            && let Some(arg) = call.args.first_mut()
        {
            self.check_arg(which, arg);
        }
    }
}

impl Checker<'_> {
    fn check_arg(&mut self, call: Call, arg: &mut Expr) {
        let path = match arg {
            Expr::Paren(inner) => return self.check_arg(call, &mut inner.expr),
            Expr::Group(inner) => return self.check_arg(call, &mut inner.expr),
            Expr::Path(path) if path.qself.is_none() => path,
            _ => return,
        };
        let n = path.path.segments.len();
        if n < 2 || path.path.segments[n - 2].ident != self.enum_ident || !path.path.segments[n - 1].arguments.is_none()
        {
            return;
        }
        let name = path.path.segments[n - 1].ident.to_string();
        match self.steps.iter().position(|s| *s == name) {
            Some(index) => self.check_rules(call, index, &path.path),
            None => {
                self.cx.error(
                    &path.path,
                    format!(
                        "`{}::{name}` names no step of `{}`: use one of {}",
                        self.enum_ident,
                        self.type_ident,
                        listed(&self.steps, "or")
                    ),
                );
                let last = &mut path.path.segments[n - 1];
                if let Some(first) = self.steps.first() {
                    last.ident = Ident::new(first, last.ident.span());
                }
            }
        }
    }

    /// The rules of going back from the failing step (the one whose body this is).
    fn check_rules(&mut self, call: Call, index: usize, path: &syn::Path) {
        let Some(failing) = self.current else { return };
        let (step, target) = (&self.steps[failing], &self.steps[index]);
        let passed_commit = self.commit.filter(|&commit| failing > commit && index <= commit);
        let message = if index > failing {
            match call {
                Call::Blame => format!(
                    "step `{step}` blames `{target}`, which runs after it: {}",
                    self.blame_instead(failing, None)
                ),
                Call::RestartFrom => format!(
                    "step `{step}` restarts from `{target}`, which runs after it: restart from `{step}` or a step before it"
                ),
            }
        } else if let Some(commit) = passed_commit {
            let commit_step = &self.steps[commit];
            match call {
                Call::Blame => format!(
                    "step `{step}` runs after the commit point `{commit_step}`, so `{target}` can never run again to fix its mistake: {}",
                    self.blame_instead(failing, Some(commit))
                ),
                Call::RestartFrom => format!(
                    "step `{step}` runs after the commit point `{commit_step}`, so the saga cannot restart from `{target}`, which never runs again: restart from `{step}` or a step after `{commit_step}`"
                ),
            }
        } else {
            return;
        };
        self.cx.error(path, message);
    }

    /// What a step may blame instead: the steps before it that may run again.
    fn blame_instead(&self, failing: usize, commit: Option<usize>) -> String {
        let from = commit.map_or(0, |commit| commit + 1);
        let candidates = &self.steps[from..failing];
        if candidates.is_empty() {
            format!("no earlier step can run again, so drop the blame and let `{}` be re-prompted", self.steps[failing])
        } else {
            format!("blame {} instead", listed(candidates, "or"))
        }
    }
}

/// `` `a`, `b` or `c` `` (or with another last word).
fn listed(names: &[String], last: &str) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.as_slice() {
        [] => "no step".to_owned(),
        [one] => one.clone(),
        [rest @ .., end] => format!("{} {last} {end}", rest.join(", ")),
    }
}
