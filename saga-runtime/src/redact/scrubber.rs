//! Credential scrubbing for every text sink of the runtime: failure messages,
//! recorded prompts and responses, JSON observations, incidents, tracing
//! fields and panic messages.
//!
//! [`Scrubber::scrub`] replaces each secret with [`REDACTED`] and leaves all
//! other bytes untouched. Detection runs in three steps:
//!
//! 1. A keyword prefilter (one Aho-Corasick pass) picks the rules that can
//!    possibly match, so clean prose costs one scan.
//! 2. The chosen rules, ported from gitleaks, run on the text and on decoded
//!    views of it (percent-encoding, JSON/backslash escapes up to four levels,
//!    HTML references, and tokens wrapped over two lines).
//! 3. Every match is mapped back to a span of the original text, overlapping
//!    spans are merged, and each merged span is replaced.
//!
//! Keyword-anchored values (`DB_PASSWORD=…`, `"token": "…"`) are only removed
//! when they look like credentials (length, character mix, Shannon entropy),
//! and template references such as `${DB_PASSWORD}` are kept: they say where
//! a secret lives, not what it is.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use regex::Regex;
use serde_json::Value;

use super::check;
use super::rules::{self, Hit, Rule};
use super::view::{self, Views};

/// The text that replaces each secret.
pub const REDACTED: &str = "[redacted]";

/// Rule id reported for matches of [`ScrubberBuilder::literal`] secrets.
const LITERAL_RULE: &str = "literal";

/// `Hit::rule` value for literal matches.
const LITERAL_INDEX: usize = usize::MAX;

/// Redaction can expose a new match (a secret glued to another one); a few
/// passes reach a fixed point, which makes scrubbing idempotent.
const MAX_PASSES: usize = 4;

/// One detected secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Finding {
    /// Id of the rule that matched (`"github-token"`, a user pattern's id, or
    /// `"literal"`).
    pub rule: String,
    /// Byte range of the secret in the scanned text.
    pub range: Range<usize>,
}

/// A user pattern that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    id: String,
    reason: String,
}

impl PatternError {
    /// Id of the rejected pattern.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redaction pattern `{}` is unusable: {}", self.id, self.reason)
    }
}

impl std::error::Error for PatternError {}

/// Compiled rules, user patterns and literal secrets.
///
/// Cheap to clone (the compiled state is shared) and `Send + Sync`.
#[derive(Clone)]
pub struct Scrubber {
    inner: Arc<Inner>,
    /// Literal secrets and their encoded forms: the part that differs between the scrubbers
    /// of one runtime (each saga adds the `Redacted` values of its input).
    literals: Option<Arc<Literals>>,
}

/// The literal secrets of a scrubber, and their encoded forms matched at once.
struct Literals {
    secrets: Vec<String>,
    automaton: AhoCorasick,
}

/// The compiled rules, shared by every scrubber made from one builder.
struct Inner {
    rules: Vec<Rule>,
    /// All keywords of all rules, matched ASCII case-insensitively.
    prefilter: Option<AhoCorasick>,
    /// Keyword index (pattern id in `prefilter`) to the rules it enables.
    keyword_rules: Vec<Vec<usize>>,
    /// Rules without keywords, run on every text.
    unkeyed: Vec<usize>,
    /// Base64 payloads of data URIs are opaque binary; random runs in them
    /// can spell `AIza…` and must not be cut.
    data_uri: Regex,
}

impl Default for Scrubber {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrubber")
            .field("rules", &self.inner.rules.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())
            .field("literals", &self.literals.as_ref().map_or(0, |l| l.secrets.len()))
            .finish()
    }
}

impl Scrubber {
    /// A scrubber with the default rule set.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Starts a scrubber with the default rules plus user patterns and
    /// literals.
    pub fn builder() -> ScrubberBuilder {
        ScrubberBuilder::default()
    }

    /// Replaces every secret in `text` with [`REDACTED`]. Borrows `text`
    /// unchanged when nothing is found.
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let spans = merge(self.hits(text).into_iter().map(|(_, r)| r).collect(), text);
        if spans.is_empty() {
            return Cow::Borrowed(text);
        }
        let (mut out, mut marks) = replace(text, &spans);
        // A replacement changes only its neighbourhood, so only there can it
        // expose a new match (a boundary that appeared, a shorter value); look
        // there until nothing changes, which makes scrubbing idempotent.
        for _ in 1..MAX_PASSES {
            let mut found = Vec::new();
            for w in view::windows(&out, marks.iter().cloned(), view::WINDOW_CONTEXT) {
                found.extend(self.hits(&out[w.clone()]).into_iter().map(|(_, r)| r.start + w.start..r.end + w.start));
            }
            found.retain(|r| !marks.iter().any(|m| m.start <= r.start && r.end <= m.end));
            let spans = merge(found, &out);
            if spans.is_empty() {
                break;
            }
            (out, marks) = replace(&out, &spans);
        }
        Cow::Owned(out)
    }

    /// Scrubs a JSON value: values under credential-named keys (`password`,
    /// `api_key`, `id_token`, `client_secret`, …) are replaced whatever they
    /// look like, except empty strings and placeholders such as
    /// `${DB_PASSWORD}`; every other string, keys included, goes through
    /// [`Scrubber::scrub`].
    pub fn scrub_json(&self, value: &Value) -> Value {
        match value {
            Value::String(s) => Value::String(self.scrub(s).into_owned()),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.scrub_json(v)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        let v = if check::key_is_credential(k) { self.redact_by_key(v) } else { self.scrub_json(v) };
                        (self.scrub(k).into_owned(), v)
                    })
                    .collect(),
            ),
            Value::Null | Value::Bool(_) | Value::Number(_) => value.clone(),
        }
    }

    fn redact_by_key(&self, value: &Value) -> Value {
        match value {
            Value::String(s) if s.is_empty() || check::is_placeholder(s) => value.clone(),
            Value::String(_) | Value::Number(_) => Value::String(REDACTED.to_owned()),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.redact_by_key(v)).collect()),
            Value::Object(_) | Value::Null | Value::Bool(_) => self.scrub_json(value),
        }
    }

    /// Every secret found in `text`, as rule id and byte range, sorted by
    /// position. Ranges may overlap when several rules agree.
    pub fn findings(&self, text: &str) -> Vec<Finding> {
        let mut hits = self.hits(text);
        hits.sort_by_key(|(rule, r)| (r.start, r.end, *rule));
        hits.dedup();
        hits.into_iter().map(|(rule, range)| Finding { rule: self.rule_id(rule).to_owned(), range }).collect()
    }

    fn rule_id(&self, index: usize) -> &str {
        self.inner.rules.get(index).map_or(LITERAL_RULE, |r| r.id.as_str())
    }

    /// Hits on `text` and on its decoded views, in original-text bytes.
    fn hits(&self, text: &str) -> Vec<(usize, Range<usize>)> {
        let mut out: Vec<(usize, Range<usize>)> = Vec::new();
        let mut scratch = Vec::new();
        let views = Views::new(text);
        for target in views.targets(text) {
            for window in &target.windows {
                let Some(part) = target.text.get(window.clone()) else {
                    continue;
                };
                self.scan(part, &mut scratch);
                for hit in scratch.drain(..) {
                    let range = hit.range.start + window.start..hit.range.end + window.start;
                    let range = match target.layer {
                        Some(layer) => views.to_original(layer, range),
                        None => range,
                    };
                    out.push((hit.rule, range));
                }
            }
        }
        // Never report inside an earlier redaction, and never cut one: a hit
        // that runs into a marker swallows all of it.
        if text.contains(REDACTED) {
            let marks: Vec<Range<usize>> = text.match_indices(REDACTED).map(|(i, m)| i..i + m.len()).collect();
            out.retain(|(_, r)| !marks.iter().any(|m| m.start <= r.start && r.end <= m.end));
            for (_, r) in &mut out {
                for m in &marks {
                    if m.start < r.end && r.start < m.end {
                        *r = r.start.min(m.start)..r.end.max(m.end);
                    }
                }
            }
        }
        out
    }

    /// Runs the rules the prefilter selects, and the literals, on one text.
    fn scan(&self, text: &str, out: &mut Vec<Hit>) {
        let inner = &*self.inner;
        let mut active = vec![false; inner.rules.len()];
        for &i in &inner.unkeyed {
            active[i] = true;
        }
        if let Some(prefilter) = &inner.prefilter {
            for m in prefilter.find_overlapping_iter(text) {
                for &i in &inner.keyword_rules[m.pattern().as_usize()] {
                    active[i] = true;
                }
            }
        }
        let start = out.len();
        for (i, rule) in inner.rules.iter().enumerate() {
            if active[i] {
                rule.find_into(text, i, out);
            }
        }
        if let Some(literals) = &self.literals {
            out.extend(literals.automaton.find_iter(text).map(|m| Hit { rule: LITERAL_INDEX, range: m.range() }));
        }
        if out.len() > start && text.contains(";base64,") {
            let blobs: Vec<Range<usize>> = inner.data_uri.find_iter(text).map(|m| m.range()).collect();
            let mut kept = out.split_off(start);
            kept.retain(|h| {
                h.rule == LITERAL_INDEX || !blobs.iter().any(|b| b.start <= h.range.start && h.range.end <= b.end)
            });
            out.extend(kept);
        }
    }
}

/// Builds a [`Scrubber`] from the default rules, user patterns and literal
/// secrets.
#[derive(Default)]
pub struct ScrubberBuilder {
    without_defaults: bool,
    patterns: Vec<Rule>,
    literals: Vec<String>,
}

impl fmt::Debug for ScrubberBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScrubberBuilder")
            .field("without_defaults", &self.without_defaults)
            .field("patterns", &self.patterns.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())
            .field("literals", &self.literals.len())
            .finish()
    }
}

impl ScrubberBuilder {
    /// Adds a user pattern (Rust `regex` syntax) reported as `id`. The whole
    /// match is redacted, or only capture group 1 when the pattern has groups
    /// and group 1 took part in the match.
    pub fn pattern(mut self, id: &str, regex: &str) -> Result<Self, PatternError> {
        let compiled = Regex::new(regex).map_err(|e| PatternError {
            id: id.to_owned(),
            reason: format!(
                "it is not a valid regular expression ({e}); \
                 write it in Rust `regex` syntax, which has no look-around or \
                 backreferences, and escape literal `.`, `(`, `[`, `{{`, `\\`"
            ),
        })?;
        if compiled.is_match("") {
            return Err(PatternError {
                id: id.to_owned(),
                reason: format!(
                    "`{regex}` matches the empty string, so it would match \
                     everywhere; require at least one character (use `+` instead of `*`)"
                ),
            });
        }
        let group = usize::from(compiled.captures_len() > 1);
        self.patterns.push(Rule::new(id.to_owned(), compiled, group, Vec::new(), None));
        Ok(self)
    }

    /// Adds a known secret (for example a key the runtime itself holds),
    /// scrubbed wherever it appears, also percent-encoded or JSON-escaped.
    /// Values shorter than 4 characters are ignored: they would match
    /// ordinary text.
    pub fn literal(mut self, secret: impl Into<String>) -> Self {
        let secret = secret.into();
        if secret.chars().count() >= 4 {
            self.literals.push(secret);
        }
        self
    }

    /// Drops the default rules; only user patterns and literals remain.
    pub fn without_defaults(mut self) -> Self {
        self.without_defaults = true;
        self
    }

    /// Compiles the scrubber.
    pub fn build(self) -> Scrubber {
        let mut rules = if self.without_defaults { Vec::new() } else { rules::default_rules() };
        rules.extend(self.patterns);

        let mut keywords: Vec<String> = Vec::new();
        let mut keyword_rules: Vec<Vec<usize>> = Vec::new();
        let mut unkeyed = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            if rule.keywords.is_empty() {
                unkeyed.push(i);
            }
            for kw in &rule.keywords {
                match keywords.iter().position(|k| k == kw) {
                    Some(k) => keyword_rules[k].push(i),
                    None => {
                        keywords.push(kw.clone());
                        keyword_rules.push(vec![i]);
                    }
                }
            }
        }
        let prefilter = if keywords.is_empty() {
            None
        } else {
            // A DFA steps fastest, and the overlapping search it runs must
            // visit every byte; its size is trivial for a few dozen keywords.
            let built = AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .kind(Some(AhoCorasickKind::DFA))
                .build(&keywords)
                .ok();
            // Should the automaton ever fail to build, fall back to running
            // every rule: slower, never weaker.
            if built.is_none() {
                unkeyed = (0..rules.len()).collect();
            }
            built
        };

        Scrubber {
            inner: Arc::new(Inner {
                rules,
                prefilter,
                keyword_rules,
                unkeyed,
                data_uri: Regex::new(r"data:[A-Za-z0-9.+/-]+;base64,[A-Za-z0-9+/=]+")
                    .expect("constant pattern compiles"),
            }),
            literals: Literals::new(self.literals).map(Arc::new),
        }
    }
}

impl Literals {
    /// The automaton of `secrets` in every encoded form, or `None` without secrets.
    fn new(secrets: Vec<String>) -> Option<Literals> {
        let mut forms: Vec<String> = secrets.iter().flat_map(|s| encoded_forms(s)).collect();
        forms.sort();
        forms.dedup();
        if forms.is_empty() {
            return None;
        }
        let automaton = AhoCorasick::builder().match_kind(MatchKind::LeftmostLongest).build(&forms).ok()?;
        Some(Literals { secrets, automaton })
    }
}

impl Scrubber {
    /// This scrubber plus literal secrets: cheap (the compiled rules are shared, only the
    /// literals are matched anew), so a runtime makes one per saga, with the `Redacted`
    /// values of its input. Values shorter than 4 characters are ignored.
    pub fn with_literals(&self, secrets: impl IntoIterator<Item = String>) -> Scrubber {
        let mut all: Vec<String> = self.literals.as_ref().map(|l| l.secrets.clone()).unwrap_or_default();
        let before = all.len();
        all.extend(secrets.into_iter().filter(|s| s.chars().count() >= 4));
        if all.len() == before {
            return self.clone();
        }
        all.sort();
        all.dedup();
        Scrubber { inner: self.inner.clone(), literals: Literals::new(all).map(Arc::new) }
    }
}

/// A literal as it may appear in sinks: raw, percent-encoded (upper and lower
/// hex, `+` for space), JSON-escaped once and twice.
fn encoded_forms(secret: &str) -> Vec<String> {
    let percent = |upper: bool, plus: bool| {
        let mut out = String::with_capacity(secret.len() * 3);
        for b in secret.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(char::from(b)),
                b' ' if plus => out.push('+'),
                _ if upper => out.push_str(&format!("%{b:02X}")),
                _ => out.push_str(&format!("%{b:02x}")),
            }
        }
        out
    };
    let json = |s: &str| {
        let quoted = Value::String(s.to_owned()).to_string();
        quoted[1..quoted.len() - 1].to_owned()
    };
    let once = json(secret);
    let twice = json(&once);
    vec![secret.to_owned(), percent(true, false), percent(false, false), percent(true, true), once, twice]
}

/// Sorts and merges overlapping or touching ranges, widened to character
/// boundaries so replacement can never split a UTF-8 sequence.
fn merge(mut ranges: Vec<Range<usize>>, text: &str) -> Vec<Range<usize>> {
    for r in &mut ranges {
        r.end = r.end.min(text.len());
        r.start = r.start.min(r.end);
        while !text.is_char_boundary(r.start) {
            r.start -= 1;
        }
        while !text.is_char_boundary(r.end) {
            r.end += 1;
        }
    }
    ranges.retain(|r| !r.is_empty());
    ranges.sort_by_key(|r| (r.start, r.end));
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

/// Replaces `spans` (sorted, disjoint, on character boundaries) and returns
/// the new text with the ranges its markers occupy.
fn replace(text: &str, spans: &[Range<usize>]) -> (String, Vec<Range<usize>>) {
    let mut out = String::with_capacity(text.len());
    let mut marks = Vec::with_capacity(spans.len());
    let mut pos = 0;
    for span in spans {
        out.push_str(&text[pos..span.start]);
        marks.push(out.len()..out.len() + REDACTED.len());
        out.push_str(REDACTED);
        pos = span.end;
    }
    out.push_str(&text[pos..]);
    (out, marks)
}

/// `text` with every credential the default rules find replaced by `[redacted]` (a
/// process-wide, lazily built [`Scrubber`]; the runtime itself scrubs with its own, which adds
/// the patterns and literals it was given).
///
/// ```
/// use saga_runtime::scrub;
///
/// assert_eq!(
///     scrub("curl -H 'Authorization: Bearer eyJhbGciOi.JIUzI1NiJ9.c2VjcmV0X3BheWxvYWQ' https://bot:hunter22@api.example.com"),
///     "curl -H 'Authorization: Bearer [redacted]' https://bot:[redacted]@api.example.com"
/// );
/// assert_eq!(scrub("Count each token separately"), "Count each token separately");
/// ```
pub fn scrub(text: &str) -> String {
    default_scrubber().scrub(text).into_owned()
}

/// The scrubber with the default rules, built once.
pub(crate) fn default_scrubber() -> &'static Scrubber {
    static DEFAULT: OnceLock<Scrubber> = OnceLock::new();
    DEFAULT.get_or_init(Scrubber::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubber_is_send_sync_and_cheap_to_clone() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<Scrubber>();
    }

    #[test]
    fn clean_text_is_borrowed() {
        let s = Scrubber::new();
        assert!(matches!(s.scrub("token generation is slow"), Cow::Borrowed(_)));
    }

    #[test]
    fn user_pattern_redacts_whole_match_or_group_one() {
        let s = Scrubber::builder()
            .without_defaults()
            .pattern("employee-id", r"EMP-\d{6}")
            .expect("valid")
            .pattern("ticket-secret", r"ticket=(\w{6,})")
            .expect("valid")
            .build();
        assert_eq!(s.scrub("see EMP-123456 now"), "see [redacted] now");
        assert_eq!(s.scrub("ticket=abcdef99 ok"), "ticket=[redacted] ok");
        let f = s.findings("x EMP-000001");
        assert_eq!(f, vec![Finding { rule: "employee-id".into(), range: 2..12 }]);
    }

    #[test]
    fn user_patterns_add_to_defaults() {
        let s = Scrubber::builder().pattern("emp", r"EMP-\d{6}").expect("valid").build();
        let out = s.scrub("EMP-123456 ghp_0123456789abcdefghijABCDEFGHIJklmnopqr");
        assert_eq!(out, "[redacted] [redacted]");
    }

    #[test]
    fn literals_are_found_raw_percent_encoded_and_json_escaped() {
        let secret = "p@ss w/\"rd\"+1";
        let s = Scrubber::builder().without_defaults().literal(secret).build();
        let encoded = "p%40ss%20w%2F%22rd%22%2B1";
        let json = Value::String(secret.into()).to_string();
        let nested = Value::String(format!("{{\"k\":{json}}}")).to_string();
        for text in [
            format!("raw {secret} end"),
            format!("url ?q={encoded}&x=1"),
            format!("url ?q={}&x=1", encoded.to_lowercase()),
            format!("json {json}"),
            format!("nested {nested}"),
        ] {
            let out = s.scrub(&text);
            assert!(out.contains(REDACTED), "{text} -> {out}");
            assert!(!out.contains("ss w"), "{text} -> {out}");
            assert!(!out.contains("ss%20w"), "{text} -> {out}");
        }
    }

    #[test]
    fn short_literals_are_ignored() {
        let s = Scrubber::builder().without_defaults().literal("abc").build();
        assert_eq!(s.scrub("abc abc"), "abc abc");
    }

    #[test]
    fn bad_regex_reports_what_to_fix() {
        let err = Scrubber::builder().pattern("broken", r"(unclosed").expect_err("invalid");
        assert_eq!(err.id(), "broken");
        let msg = err.to_string();
        assert!(msg.contains("`broken`"), "{msg}");
        assert!(msg.contains("not a valid regular expression"), "{msg}");
        assert!(msg.contains("unclosed"), "{msg}");

        let err = Scrubber::builder().pattern("lookahead", r"a(?=b)").expect_err("unsupported");
        assert!(err.to_string().contains("look-around"), "{err}");

        let err = Scrubber::builder().pattern("empty", r"x*").expect_err("matches empty");
        assert!(err.to_string().contains("empty string"), "{err}");
    }

    #[test]
    fn json_values_are_redacted_by_key_name() {
        let s = Scrubber::new();
        let v: Value = serde_json::json!({
            "password": "hunter2",
            "api_key": "${OPENAI_API_KEY}",
            "token": "3f2a9c0d1e4b5a6978c8d7e6f5a4b3c2d1e0f9a8",
            "max_tokens": 4096,
            "idempotency_key": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "nested": {"client_secret": 12345678, "note": "key is ghp_0123456789abcdefghijABCDEFGHIJklmnopqr"},
            "list": [{"id_token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"}],
        });
        let out = s.scrub_json(&v);
        assert_eq!(out["password"], REDACTED);
        assert_eq!(out["api_key"], "${OPENAI_API_KEY}");
        assert_eq!(out["token"], REDACTED);
        assert_eq!(out["max_tokens"], 4096);
        assert_eq!(out["idempotency_key"], v["idempotency_key"]);
        assert_eq!(out["nested"]["client_secret"], REDACTED);
        assert_eq!(out["nested"]["note"], "key is [redacted]");
        assert_eq!(out["list"][0]["id_token"], REDACTED);
    }

    #[test]
    fn evasions_from_the_audit() {
        let key = "sk-ant-api03-AbCdEfGh1234IjKlMnOp5678QrStUvWx9012YzAb3456CdEf";
        let cases = [
            (format!("key {}\n{} end", &key[..17], &key[17..]), "key [redacted] end".to_owned()),
            (
                r#"{\"api_key\":\"Zf3D0LXCM3EIMbgJpUNnkRtOfOueHznB\"}"#.to_owned(),
                r#"{\"api_key\":\"[redacted]\"}"#.to_owned(),
            ),
            (
                r#"{\\\"api_key\\\":\\\"Zf3D0LXCM3EIMbgJpUNnkRtOfOueHznB\\\"}"#.to_owned(),
                r#"{\\\"api_key\\\":\\\"[redacted]\\\"}"#.to_owned(),
            ),
            ("Authorization: Bearer%20abcDEF123456ghiJKL".to_owned(), "Authorization: [redacted]".to_owned()),
            (
                "dsn=postgres%3A%2F%2Fuser%3AS3cretPw9%40db%2Fapp".to_owned(),
                "dsn=postgres%3A%2F%2Fuser%3A[redacted]%40db%2Fapp".to_owned(),
            ),
            ("GET /x?api_key%3DZf3D0LXCM3EIMbgJpUNnkRtOfOueHznB".to_owned(), "GET /x?api_key%3D[redacted]".to_owned()),
            (key.replace('-', "\\u002d"), REDACTED.to_owned()),
            (key.replace('-', "\\x2d"), REDACTED.to_owned()),
            ("redis://:pass@cache:6379".to_owned(), "redis://:[redacted]@cache:6379".to_owned()),
            ("mysql://root:p@ss/w0rd@db:3306/app".to_owned(), "mysql://root:[redacted]@db:3306/app".to_owned()),
            (
                "DB_PASSWORD=Xk9mPq2vLr7T\nREDIS_URL=redis://localhost".to_owned(),
                "DB_PASSWORD=[redacted]\nREDIS_URL=redis://localhost".to_owned(),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(scrub(&input), expected, "{input}");
        }
    }

    #[test]
    fn global_scrub_uses_defaults() {
        assert_eq!(scrub("AKIA2345ABCDEFGH67QZ"), REDACTED);
    }
}
