//! Keeping secrets out of everything the runtime writes for people: [`Redacted`] for secret
//! fields, and the [`Scrubber`] that every text sink goes through (failure messages, recorded
//! prompts and responses, observations, reports, incidents, tracing fields, panic messages of
//! steps and compensations).
//!
//! The scrubber carries the rules of gitleaks' maintained set that matter for agent pipelines
//! (provider keys and tokens, JWTs, PEM private keys, presigned-URL signatures, passwords in
//! URLs, keyword-anchored values checked for entropy so that English words are left alone),
//! looks through the encodings agents use (JSON escaping, nested; URL encoding; `\u002d`-style
//! escapes; a secret wrapped over two lines), and takes user patterns and literal values. A
//! runtime also scrubs, exactly, every [`Redacted`] value of a saga's input wherever it shows
//! up in that saga's texts.

mod check;
pub(crate) mod panics;
mod rules;
mod scrubber;
mod view;

use std::cell::RefCell;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub(crate) use scrubber::default_scrubber;
pub use scrubber::{Finding, PatternError, REDACTED, Scrubber, ScrubberBuilder, scrub};

/// A secret field: `[redacted]` in `Debug` and `Display` (so in logs, traces, reports and the
/// journal's text), the real value when serialized (so in the checkpoint, which `SqliteStore`
/// encrypts when given a key). The runtime also scrubs the value itself, exactly, from every
/// text of a saga whose input holds it (a failure message or a prompt that quotes it).
///
/// ```
/// use saga_runtime::Redacted;
///
/// let token = Redacted::new("ghp_live_secret".to_owned());
/// assert_eq!(format!("{token:?}"), "[redacted]");
/// assert_eq!(token.expose(), "ghp_live_secret");
/// assert_eq!(serde_json::to_string(&token).unwrap(), "\"ghp_live_secret\"");
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Redacted<T>(T);

impl<T> Redacted<T> {
    /// Wraps a secret.
    pub fn new(secret: T) -> Self {
        Redacted(secret)
    }

    /// The secret itself: the one explicit way to read it.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// The secret, unwrapped.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Redacted<T> {
    fn from(secret: T) -> Self {
        Redacted(secret)
    }
}

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

thread_local! {
    /// While the runtime serializes a saga's input: the secrets of its `Redacted` fields.
    static COLLECTED: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

impl<T: Serialize> Serialize for Redacted<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if let Some(mut collected) = COLLECTED.with(|c| c.borrow_mut().take()) {
            // Taken out while the value is serialized, so that a `Redacted` inside it does not
            // borrow the list twice; its texts are among this value's anyway.
            if let Ok(value) = serde_json::to_value(&self.0) {
                leaves(&value, &mut collected);
            }
            COLLECTED.with(|c| *c.borrow_mut() = Some(collected));
        }
        self.0.serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Redacted<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Redacted)
    }
}

/// The texts (and numbers, as written) of a JSON value.
fn leaves(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Number(n) => out.push(n.to_string()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| leaves(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| leaves(v, out)),
        serde_json::Value::Bool(_) | serde_json::Value::Null => {}
    }
}

/// Runs `serialize` (a serialization of a saga's input) and returns its result with the
/// secrets of every `Redacted` field it met.
pub(crate) fn collect_redacted<R>(serialize: impl FnOnce() -> R) -> (R, Vec<String>) {
    let outer = COLLECTED.with(|c| c.borrow_mut().replace(Vec::new()));
    let result = serialize();
    let mut collected = COLLECTED.with(|c| std::mem::replace(&mut *c.borrow_mut(), outer)).unwrap_or_default();
    // A `Redacted` inside another is met twice.
    let mut seen = std::collections::HashSet::new();
    collected.retain(|secret| seen.insert(secret.clone()));
    (result, collected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Input {
        user: String,
        token: Redacted<String>,
        keys: Vec<Redacted<u64>>,
        nested: Redacted<Option<Redacted<String>>>,
    }

    #[test]
    fn the_secrets_of_an_input_are_collected_while_it_is_serialized() {
        let input = Input {
            user: "ada".into(),
            token: Redacted::new("tok-1234".into()),
            keys: vec![Redacted::new(424242)],
            nested: Redacted::new(Some(Redacted::new("inner-secret".into()))),
        };
        let (json, secrets) = collect_redacted(|| serde_json::to_string(&input).unwrap());
        assert!(json.contains("tok-1234"), "the checkpoint keeps the values");
        assert_eq!(secrets, ["tok-1234", "424242", "inner-secret"]);
        let (_, none) = collect_redacted(|| serde_json::to_string(&"plain").unwrap());
        assert!(none.is_empty());
        assert!(serde_json::to_string(&input).is_ok(), "outside a collection nothing is kept");
        COLLECTED.with(|c| assert!(c.borrow().is_none()));
    }
}
