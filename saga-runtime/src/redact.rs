//! Keeping secrets out of logs: [`Redacted`] for secret fields, and [`scrub`] for free text
//! (prompts and responses) recorded in the journal.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret field: `[redacted]` in `Debug` and `Display` (so in logs, traces, reports and the
/// journal's text), the real value when serialized (so in the checkpoint, which
/// `SqliteStore` encrypts when given a key).
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
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T: Serialize> Serialize for Redacted<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Redacted<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Redacted)
    }
}

/// Credential patterns removed by [`scrub`], each with its replacement.
static PATTERNS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        // user:password@ in URLs (keeps the user name).
        (r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+):[^@\s/]+@", "$1:[redacted]@"),
        // Authorization headers and bearer tokens.
        (r"(?i)\b(bearer|basic|token)\s+[a-z0-9._~+/=-]{8,}", "$1 [redacted]"),
        // Provider API keys: OpenAI / Anthropic (sk-...), GitHub (ghp_, gho_, ghs_, github_pat_),
        // Slack (xox?-), AWS access key ids, Google API keys, Stripe live and test keys.
        (r"\bsk-[A-Za-z0-9_-]{16,}", "[redacted]"),
        (r"\b(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})", "[redacted]"),
        (r"\bxox[abprs]-[A-Za-z0-9-]{10,}", "[redacted]"),
        (r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", "[redacted]"),
        (r"\bAIza[0-9A-Za-z_-]{35}", "[redacted]"),
        (r"\b(sk|rk|pk)_(live|test)_[0-9A-Za-z]{16,}", "[redacted]"),
        // key=value and "key": "value" assignments of secrets.
        (
            r#"(?i)\b(api[_-]?key|secret|password|passwd|pwd|access[_-]?token|auth[_-]?token)(["']?\s*[:=]\s*["']?)[^\s"',;&]{4,}"#,
            "$1$2[redacted]",
        ),
    ]
    .into_iter()
    .map(|(pattern, replacement)| (Regex::new(pattern).expect("a valid pattern"), replacement))
    .collect()
});

/// `text` with common credential patterns replaced by `[redacted]`: API keys (OpenAI,
/// Anthropic, GitHub, Slack, AWS, Google, Stripe), bearer and basic tokens, passwords in
/// URLs, and `password=`, `api_key: ...` style assignments.
///
/// ```
/// use saga_runtime::scrub;
///
/// assert_eq!(
///     scrub("curl -H 'Authorization: Bearer eyJhbGciOi.JIUzI1NiJ9' https://bot:hunter2@api.example.com"),
///     "curl -H 'Authorization: Bearer [redacted]' https://bot:[redacted]@api.example.com"
/// );
/// ```
pub fn scrub(text: &str) -> String {
    let mut text = text.to_owned();
    for (pattern, replacement) in PATTERNS.iter() {
        if pattern.is_match(&text) {
            text = pattern.replace_all(&text, *replacement).into_owned();
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::scrub;

    #[test]
    fn credentials_are_scrubbed_and_ordinary_text_is_kept() {
        let cases = [
            ("use sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv to call", "use [redacted] to call"),
            ("token ghp_0123456789abcdefghijABCDEFGHIJ", "token [redacted]"),
            ("key AKIAABCDEFGHIJKLMNOP here", "key [redacted] here"),
            ("postgres://admin:s3cr3t@db:5432/app", "postgres://admin:[redacted]@db:5432/app"),
            ("password=hunter22 and api_key: 'abcd1234efgh'", "password=[redacted] and api_key: '[redacted]'"),
            ("Authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l", "Authorization: Basic [redacted]"),
            ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc", "stripe [redacted]"),
            ("slack xoxb-123456789012-abcdefABCDEF", "slack [redacted]"),
        ];
        for (input, expected) in cases {
            assert_eq!(scrub(input), expected, "{input}");
        }
        let ordinary = "Fix the login bug: the token expiry check uses < instead of <=; see https://example.com/a";
        assert_eq!(scrub(ordinary), ordinary);
    }
}
