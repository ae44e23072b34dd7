//! Idempotency keys: deterministic tokens a downstream service uses as a dedupe key.
//!
//! A step's key is `sha256("{saga_id}:{step}:{input_hash}")` in lowercase hex, where
//! `input_hash` hashes the saga input, the outputs the step reads and how many times the
//! step's earlier result was compensated. It is the same across retries and resumes of the
//! step, different for another step, saga id or input, and new after a compensation, so that
//! a downstream service never replays an effect that was undone. A compensation's key is
//! derived from the key of the step result it undoes.

use sha2::{Digest, Sha256};

/// Lowercase hex of a byte string.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

/// The SHA-256 digest of `bytes`, in lowercase hex.
pub(crate) fn hex_digest(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The SHA-256 digest of the saga input.
pub(crate) fn input_digest(input: &[u8]) -> [u8; 32] {
    Sha256::digest(input).into()
}

/// `input_hash`: the saga input, the outputs the step reads (length-prefixed, so that no two
/// lists collide), and the step's compensation count.
pub(crate) fn input_hash(input_digest: &[u8; 32], reads: &[&[u8]], generation: u32) -> String {
    let mut hasher = Sha256::new();
    hasher.update(input_digest);
    for read in reads {
        hasher.update((read.len() as u64).to_le_bytes());
        hasher.update(read);
    }
    hasher.update(generation.to_le_bytes());
    hex(&hasher.finalize())
}

/// The key of a step: `sha256("{saga_id}:{step}:{input_hash}")`.
pub(crate) fn step_key(saga_id: &str, step: &str, input_hash: &str) -> String {
    hex(&Sha256::digest(format!("{saga_id}:{step}:{input_hash}").as_bytes()))
}

/// The key of the compensation of a step result, derived from the step's key.
pub(crate) fn compensation_key(step_key: &str) -> String {
    hex(&Sha256::digest(format!("{step_key}:compensate").as_bytes()))
}

/// The key of one effect of a step: `sha256("{step_key}:{name}:{input_hash}")`. For an effect
/// with an input, `input_hash` is the SHA-256 of the input; for an effect without one it is
/// `pass-{n}`, the step's pass (see `StepState::pass`), so that a new answer of the step (a
/// re-prompt, another tier, a restart) runs its effects anew while a retry reuses them.
pub(crate) fn effect_key(step_key: &str, name: &str, input: Option<&[u8]>, pass: u32) -> String {
    let input_hash = match input {
        Some(input) => hex(&Sha256::digest(input)),
        None => format!("pass-{pass}"),
    };
    hex(&Sha256::digest(format!("{step_key}:{name}:{input_hash}").as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_keys_follow_the_documented_formula() {
        let hash = input_hash(&input_digest(b"{}"), &[], 0);
        let key = step_key("pr-42", "open_pr", &hash);
        let expected = hex(&Sha256::digest(format!("pr-42:open_pr:{hash}").as_bytes()));
        assert_eq!(key, expected);
        assert_eq!(key.len(), 64);
        assert!(key.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }

    #[test]
    fn input_hashes_separate_reads_and_generations() {
        let digest = input_digest(b"{\"repo\":\"x\"}");
        let a = input_hash(&digest, &[b"ab", b"c"], 0);
        assert_ne!(a, input_hash(&digest, &[b"a", b"bc"], 0));
        assert_ne!(a, input_hash(&digest, &[b"ab", b"c"], 1));
        assert_ne!(a, input_hash(&input_digest(b"{}"), &[b"ab", b"c"], 0));
        assert_eq!(a, input_hash(&digest, &[b"ab", b"c"], 0));
    }
}
