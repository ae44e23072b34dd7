//! Collects every error of one expansion so that they are all reported at once.

use std::fmt::Display;

use quote::ToTokens;

/// An error collector, in the manner of serde_derive's `internals::Ctxt`.
#[derive(Default)]
pub(crate) struct Ctxt {
    errors: Option<syn::Error>,
}

impl Ctxt {
    /// Records an error spanned on `tokens`.
    pub(crate) fn error(&mut self, tokens: impl ToTokens, message: impl Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// Records an error spanned on `span`.
    pub(crate) fn error_at(&mut self, span: proc_macro2::Span, message: impl Display) {
        self.push(syn::Error::new(span, message));
    }

    /// Records an already built error (possibly holding several).
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.errors {
            Some(errors) => errors.combine(error),
            None => self.errors = Some(error),
        }
    }

    /// Whether no error has been recorded.
    pub(crate) fn is_ok(&self) -> bool {
        self.errors.is_none()
    }

    /// Every recorded error, combined, if there is one.
    pub(crate) fn finish(self) -> Option<syn::Error> {
        self.errors
    }
}
