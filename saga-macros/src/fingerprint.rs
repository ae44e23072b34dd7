//! The definition fingerprint: a hash of what makes checkpoints of one definition readable by
//! another (name, version, step names, kinds, order, output types and inputs).

use quote::ToTokens;
use sha2::{Digest, Sha256};

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
        let output = step.output.as_ref().map(|t| t.to_token_stream().to_string()).unwrap_or_default();
        let inputs: Vec<String> = step.inputs.iter().map(|i| i.ident.to_string()).collect();
        text.push_str(&format!("step {} {kind} -> {output} <- [{}]\n", step.ident, inputs.join(",")));
    }
    text
}

/// The first 16 hex digits of the SHA-256 of [`canonical`].
pub(crate) fn fingerprint(saga: &Saga) -> String {
    let digest = Sha256::digest(canonical(saga).as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}
