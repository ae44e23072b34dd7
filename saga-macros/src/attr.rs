//! Parsing of attribute arguments: `#[saga(name = "...", version = N, deadline = "1h")]` and
//! `#[step(compensate = m, commit, idempotent, validate = m, timeout = "30s", limit = "github")]`.
//!
//! Arguments are first read as a generic list of `key` / `key = value` entries, so that every
//! problem of an attribute (an unknown key, a duplicated key, a bad value) can be reported at
//! once instead of stopping at the first.

use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Expr, Ident, Lit, Token};

use crate::ctxt::Ctxt;

/// One `key` or `key = value` entry of an attribute.
pub(crate) struct Entry {
    pub(crate) key: Ident,
    pub(crate) value: Option<Expr>,
}

impl Parse for Entry {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let key: Ident = input.call(syn::ext::IdentExt::parse_any)?;
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            Some(input.parse()?)
        } else {
            None
        };
        Ok(Entry { key, value })
    }
}

fn entries(tokens: TokenStream) -> syn::Result<Vec<Entry>> {
    let list = Punctuated::<Entry, Token![,]>::parse_terminated.parse2(tokens)?;
    Ok(list.into_iter().collect())
}

/// Remembers which keys were seen, to report duplicates.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    fn first_time(&mut self, cx: &mut Ctxt, key: &Ident, attr: &str) -> bool {
        let name = key.to_string();
        if self.0.contains(&name) {
            cx.error(key, format!("`{name}` is given twice in `#[{attr}(...)]`: remove one"));
            false
        } else {
            self.0.push(name);
            true
        }
    }
}

/// The arguments of `#[saga(...)]`.
#[derive(Default)]
pub(crate) struct SagaArgs {
    pub(crate) name: Option<(String, Span)>,
    pub(crate) version: Option<u32>,
    pub(crate) deadline: Option<(Duration, Span)>,
}

const SAGA_KEYS: &str = "`name = \"...\"`, `version = N` and `deadline = \"1h\"`";

pub(crate) fn saga_args(cx: &mut Ctxt, tokens: TokenStream) -> SagaArgs {
    let mut args = SagaArgs::default();
    let entries = match entries(tokens) {
        Ok(entries) => entries,
        Err(err) => {
            cx.error_at(err.span(), format!("cannot read `#[saga(...)]`: {err}; the valid keys are {SAGA_KEYS}"));
            return args;
        }
    };
    let mut seen = Seen::default();
    for entry in entries {
        let key = entry.key.to_string();
        match key.as_str() {
            "name" => {
                let name = string_value(cx, &entry, "saga", "name = \"release-pr\"");
                if let Some(name) = name
                    && seen.first_time(cx, &entry.key, "saga")
                {
                    if name.0.trim().is_empty() {
                        cx.error_at(name.1, "the saga name is empty: give it a name like `name = \"release-pr\"`");
                    }
                    args.name = Some(name);
                }
            }
            "version" => {
                let version = match &entry.value {
                    Some(Expr::Lit(lit)) => match &lit.lit {
                        Lit::Int(int) => match int.base10_parse::<u32>() {
                            Ok(v) if v > 0 => Some(v),
                            _ => {
                                cx.error(int, "the saga version must be a whole number from 1 up, like `version = 2`");
                                None
                            }
                        },
                        other => {
                            cx.error(other, "the saga version must be a whole number from 1 up, like `version = 2`");
                            None
                        }
                    },
                    Some(other) => {
                        cx.error(other, "the saga version must be a whole number from 1 up, like `version = 2`");
                        None
                    }
                    None => {
                        cx.error(&entry.key, "`version` needs a value: write `version = 2`");
                        None
                    }
                };
                if let Some(version) = version
                    && seen.first_time(cx, &entry.key, "saga")
                {
                    args.version = Some(version);
                }
            }
            "deadline" => {
                if let Some((duration, span)) = duration_value(cx, &entry, "saga", "deadline", "deadline = \"1h\"")
                    && seen.first_time(cx, &entry.key, "saga")
                {
                    args.deadline = Some((duration, span));
                }
            }
            _ => cx.error(&entry.key, format!("unknown key `{key}` in `#[saga(...)]`: the valid keys are {SAGA_KEYS}")),
        }
    }
    args
}

fn string_value(cx: &mut Ctxt, entry: &Entry, attr: &str, example: &str) -> Option<(String, Span)> {
    match &entry.value {
        Some(Expr::Lit(lit)) => match &lit.lit {
            Lit::Str(s) => Some((s.value(), s.span())),
            other => {
                cx.error(other, format!("`{}` takes a string: write `{example}`", entry.key));
                None
            }
        },
        Some(other) => {
            cx.error(other, format!("`{}` takes a string: write `{example}`", entry.key));
            None
        }
        None => {
            cx.error(&entry.key, format!("`{}` needs a value in `#[{attr}(...)]`: write `{example}`", entry.key));
            None
        }
    }
}

/// How a step is undone: exactly one of these is required.
#[derive(Clone)]
pub(crate) enum KindArg {
    Compensate(Ident),
    Commit,
    Idempotent,
}

impl KindArg {
    pub(crate) fn key(&self) -> &'static str {
        match self {
            KindArg::Compensate(_) => "compensate",
            KindArg::Commit => "commit",
            KindArg::Idempotent => "idempotent",
        }
    }
}

/// The arguments of one `#[step(...)]`.
pub(crate) struct StepArgs {
    /// Every kind key given, with the key's token (for spans): validation wants exactly one.
    pub(crate) kinds: Vec<(KindArg, Ident)>,
    pub(crate) validate: Option<(Ident, Ident)>,
    pub(crate) timeout: Option<(Duration, Span)>,
    /// `limit = "github"`: the downstream whose rate limit the step and its compensation draw
    /// from.
    pub(crate) limit: Option<(String, Span)>,
}

pub(crate) const STEP_KEYS: &str = "`compensate = <method>`, `commit`, `idempotent`, `validate = <method>`, \
     `timeout = \"30s\"` and `limit = \"<downstream>\"`";

pub(crate) fn step_args(cx: &mut Ctxt, tokens: TokenStream, step: &Ident) -> StepArgs {
    let mut args = StepArgs { kinds: Vec::new(), validate: None, timeout: None, limit: None };
    let entries = match entries(tokens) {
        Ok(entries) => entries,
        Err(err) => {
            cx.error_at(
                err.span(),
                format!("cannot read `#[step(...)]` of `{step}`: {err}; the valid keys are {STEP_KEYS}"),
            );
            return args;
        }
    };
    let mut seen = Seen::default();
    for entry in entries {
        let key = entry.key.to_string();
        match key.as_str() {
            "compensate" => {
                if let Some(method) = method_value(cx, &entry, "compensate = close_pr")
                    && seen.first_time(cx, &entry.key, "step")
                {
                    args.kinds.push((KindArg::Compensate(method), entry.key.clone()));
                }
            }
            "commit" | "idempotent" => {
                if let Some(value) = &entry.value {
                    cx.error(value, format!("`{key}` takes no value: write just `{key}`"));
                } else if seen.first_time(cx, &entry.key, "step") {
                    let kind = if key == "commit" { KindArg::Commit } else { KindArg::Idempotent };
                    args.kinds.push((kind, entry.key.clone()));
                }
            }
            "validate" => {
                if let Some(method) = method_value(cx, &entry, "validate = non_empty")
                    && seen.first_time(cx, &entry.key, "step")
                {
                    args.validate = Some((method, entry.key.clone()));
                }
            }
            "timeout" => {
                if let Some(timeout) = duration_value(cx, &entry, "step", "timeout", "timeout = \"30s\"")
                    && seen.first_time(cx, &entry.key, "step")
                {
                    args.timeout = Some(timeout);
                }
            }
            "limit" => {
                if let Some((name, span)) = string_value(cx, &entry, "step", "limit = \"github\"") {
                    if !valid_downstream(&name) {
                        cx.error_at(
                            span,
                            format!(
                                "invalid downstream name \"{name}\": use letters, digits, `-`, `_` or `.`, like \
                                 `limit = \"github\"`, the name given to `Runtime::builder().limit(..)`"
                            ),
                        );
                    } else if seen.first_time(cx, &entry.key, "step") {
                        args.limit = Some((name, span));
                    }
                }
            }
            _ => cx.error(&entry.key, format!("unknown key `{key}` in `#[step(...)]`: the valid keys are {STEP_KEYS}")),
        }
    }
    args
}

/// A downstream's name: what `Runtime::builder().limit(name, ..)` accepts.
fn valid_downstream(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A `key = "30s"` duration (a whole number above zero and `ms`, `s`, `m` or `h`).
fn duration_value(cx: &mut Ctxt, entry: &Entry, attr: &str, what: &str, example: &str) -> Option<(Duration, Span)> {
    let (text, span) = string_value(cx, entry, attr, example)?;
    match parse_duration(&text) {
        Some(duration) => Some((duration, span)),
        None => {
            cx.error_at(
                span,
                format!(
                    "invalid {what} \"{text}\": write a whole number above zero followed by \
                     `ms`, `s`, `m` or `h`, like `{example}`"
                ),
            );
            None
        }
    }
}

fn method_value(cx: &mut Ctxt, entry: &Entry, example: &str) -> Option<Ident> {
    match &entry.value {
        Some(Expr::Path(path)) if path.qself.is_none() && path.path.get_ident().is_some() => {
            path.path.get_ident().cloned()
        }
        Some(Expr::Lit(lit)) if matches!(&lit.lit, Lit::Str(_)) => {
            let Lit::Str(s) = &lit.lit else { unreachable!("matched a string literal above") };
            cx.error(s, format!("`{}` takes a method name, not a string: write `{example}`", entry.key));
            None
        }
        Some(other) => {
            cx.error(
                other,
                format!("`{}` takes the name of a method of this impl block: write `{example}`", entry.key),
            );
            None
        }
        None => {
            cx.error(&entry.key, format!("`{}` needs a method name: write `{example}`", entry.key));
            None
        }
    }
}

/// Parses `"500ms"`, `"30s"`, `"2m"` or `"1h"`: a whole number above zero and a unit.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return None;
    }
    let n: u64 = number.parse().ok()?;
    if n == 0 {
        return None;
    }
    let millis = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    }?;
    Some(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_take_a_whole_number_and_a_unit() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        for bad in ["", "s", "30", "0s", "30 s", "1.5s", "-1s", "30sec", "ms30", "99999999999999999999s"] {
            assert_eq!(parse_duration(bad), None, "{bad:?} must be rejected");
        }
    }
}
