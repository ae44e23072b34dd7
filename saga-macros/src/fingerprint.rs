//! The definition fingerprint: a hash of what makes checkpoints of one definition readable by
//! another (name, version, step names, kinds, order, output types and inputs).
//!
//! The hashed text is built by a canonical walk of the definition, never by a compiler's token
//! printer (which is not a stable format), so that a toolchain upgrade never changes a
//! fingerprint and never refuses in-flight sagas. The walk prints a type as written, with the
//! spacing of rustc's printer of 2026 (`std :: collections :: BTreeMap < String, u64 >`, `Vec <
//! String >`, `(u64, String)`), which is what fingerprints were computed from before: sagas
//! checkpointed then keep their fingerprint. A golden test pins the fingerprint of a fixed
//! definition.

use std::fmt::Write;

use quote::ToTokens;
use sha2::{Digest, Sha256};
use syn::{GenericArgument, PathArguments, ReturnType, Type};

use crate::ast::Saga;
use crate::attr::KindArg;

/// The canonical text the fingerprint hashes, one line per step.
pub(crate) fn canonical(saga: &Saga) -> String {
    let mut text = format!("saga {}\nversion {}\n", saga.name, saga.version);
    for step in &saga.steps {
        let kind = match step.kinds.first().map(|(k, _)| k) {
            Some(KindArg::Compensate(m)) => format!("compensate={m}"),
            Some(KindArg::Commit) => "commit".to_owned(),
            Some(KindArg::Idempotent) | None => "idempotent".to_owned(),
        };
        let output = step.output.as_ref().map(type_text).unwrap_or_default();
        let inputs: Vec<String> = step.inputs.iter().map(|i| i.ident.to_string()).collect();
        let _ = writeln!(text, "step {} {kind} -> {output} <- [{}]", step.ident, inputs.join(","));
    }
    text
}

/// The first 16 hex digits of the SHA-256 of [`canonical`].
pub(crate) fn fingerprint(saga: &Saga) -> String {
    let digest = Sha256::digest(canonical(saga).as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// A type as written, in the canonical spacing.
pub(crate) fn type_text(ty: &Type) -> String {
    let mut out = String::new();
    write_type(&mut out, ty);
    out
}

fn write_type(out: &mut String, ty: &Type) {
    match ty {
        Type::Path(path) => {
            if let Some(qself) = &path.qself {
                out.push_str("< ");
                write_type(out, &qself.ty);
                let segments: Vec<_> = path.path.segments.iter().collect();
                if qself.position > 0 {
                    out.push_str(" as ");
                    write_segments(out, path.path.leading_colon.is_some(), &segments[..qself.position]);
                }
                out.push_str(" >");
                for segment in &segments[qself.position..] {
                    out.push_str(" :: ");
                    write_segment(out, segment);
                }
            } else {
                let segments: Vec<_> = path.path.segments.iter().collect();
                write_segments(out, path.path.leading_colon.is_some(), &segments);
            }
        }
        Type::Reference(reference) => {
            out.push_str("& ");
            if let Some(lifetime) = &reference.lifetime {
                let _ = write!(out, "'{} ", lifetime.ident);
            }
            if reference.mutability.is_some() {
                out.push_str("mut ");
            }
            write_type(out, &reference.elem);
        }
        Type::Tuple(tuple) => {
            out.push('(');
            for (i, elem) in tuple.elems.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_type(out, elem);
            }
            if tuple.elems.len() == 1 {
                out.push(',');
            }
            out.push(')');
        }
        Type::Array(array) => {
            out.push('[');
            write_type(out, &array.elem);
            out.push_str("; ");
            out.push_str(&tokens_text(&array.len));
            out.push(']');
        }
        Type::Slice(slice) => {
            out.push('[');
            write_type(out, &slice.elem);
            out.push(']');
        }
        Type::Paren(paren) => {
            out.push('(');
            write_type(out, &paren.elem);
            out.push(')');
        }
        Type::Group(group) => write_type(out, &group.elem),
        Type::Never(_) => out.push('!'),
        // Function pointers, trait objects and the like are no checkpointable output; print
        // them token by token, single-spaced.
        other => out.push_str(&tokens_text(other)),
    }
}

fn write_segments(out: &mut String, leading_colon: bool, segments: &[&syn::PathSegment]) {
    if leading_colon {
        out.push_str(":: ");
    }
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            out.push_str(" :: ");
        }
        write_segment(out, segment);
    }
}

fn write_segment(out: &mut String, segment: &syn::PathSegment) {
    out.push_str(&segment.ident.to_string());
    match &segment.arguments {
        PathArguments::None => {}
        PathArguments::AngleBracketed(arguments) => {
            if arguments.colon2_token.is_some() {
                out.push_str(" ::");
            }
            out.push_str(" < ");
            for (i, argument) in arguments.args.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                match argument {
                    GenericArgument::Type(ty) => write_type(out, ty),
                    GenericArgument::Lifetime(lifetime) => {
                        let _ = write!(out, "'{}", lifetime.ident);
                    }
                    other => out.push_str(&tokens_text(other)),
                }
            }
            out.push_str(" >");
        }
        PathArguments::Parenthesized(arguments) => {
            out.push('(');
            for (i, input) in arguments.inputs.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_type(out, &input.ty);
            }
            out.push(')');
            if let ReturnType::Type(_, ty) = &arguments.output {
                out.push_str(" -> ");
                write_type(out, ty);
            }
        }
    }
}

/// Tokens joined by single spaces: a stable rendering for what the walk does not model.
fn tokens_text(tokens: &impl ToTokens) -> String {
    let mut out = String::new();
    flatten(&mut out, tokens.to_token_stream());
    out
}

fn flatten(out: &mut String, stream: proc_macro2::TokenStream) {
    use proc_macro2::{Delimiter, TokenTree};
    for tree in stream {
        if !out.is_empty() && !out.ends_with(['(', '[', '{', ' ']) {
            out.push(' ');
        }
        match tree {
            TokenTree::Group(group) => {
                let (open, close) = match group.delimiter() {
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Bracket => ("[", "]"),
                    Delimiter::Brace => ("{", "}"),
                    Delimiter::None => ("", ""),
                };
                out.push_str(open);
                flatten(out, group.stream());
                out.push_str(close);
            }
            TokenTree::Ident(ident) => out.push_str(&ident.to_string()),
            TokenTree::Punct(punct) => out.push(punct.as_char()),
            TokenTree::Literal(literal) => out.push_str(&literal.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::type_text;

    #[test]
    fn types_are_printed_in_the_canonical_spacing() {
        let cases = [
            ("Hold", "Hold"),
            ("Vec<String>", "Vec < String >"),
            ("Option<(u64, String)>", "Option < (u64, String) >"),
            ("std::collections::BTreeMap<String, u64>", "std :: collections :: BTreeMap < String, u64 >"),
            ("Vec<Vec<u8>>", "Vec < Vec < u8 > >"),
            ("::std::string::String", ":: std :: string :: String"),
            ("(u32,)", "(u32,)"),
            ("()", "()"),
            ("[u8; 32]", "[u8; 32]"),
            ("&'static str", "& 'static str"),
            ("Box<[u8]>", "Box < [u8] >"),
            ("Result<Vec<u8>, std::io::Error>", "Result < Vec < u8 >, std :: io :: Error >"),
            ("<T as Trait>::Assoc", "< T as Trait > :: Assoc"),
            ("Cow<'static, str>", "Cow < 'static, str >"),
        ];
        for (written, canonical) in cases {
            let ty: syn::Type = syn::parse_str(written).unwrap();
            assert_eq!(type_text(&ty), canonical, "{written}");
        }
    }

    #[test]
    fn whitespace_and_comments_as_written_do_not_matter() {
        let a: syn::Type = syn::parse_str("std::collections::BTreeMap<String,u64>").unwrap();
        let b: syn::Type = syn::parse_str("std :: collections :: BTreeMap < String , /* keys */ u64 >").unwrap();
        assert_eq!(type_text(&a), type_text(&b));
    }
}
