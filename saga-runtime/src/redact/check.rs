//! Judgement calls shared by the rules: is this key name about a credential,
//! does this value look like one, is it a placeholder.
//!
//! The thresholds follow gitleaks' generic rule (length, Shannon entropy,
//! "letters only is not a secret"), loosened for short passwords that mix
//! character classes and tightened against what agent prompts are full of:
//! paths, versions, dates, code expressions and template placeholders.

/// Shannon entropy in bits per byte.
pub(crate) fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for &b in s.as_bytes() {
        counts[usize::from(b)] += 1;
    }
    let len = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / len;
            -p * p.log2()
        })
        .sum()
}

#[derive(Default, Clone, Copy)]
struct Classes {
    lower: usize,
    upper: usize,
    digit: usize,
    other: usize,
}

impl Classes {
    fn of(s: &str) -> Self {
        let mut c = Self::default();
        for ch in s.chars() {
            match ch {
                'a'..='z' => c.lower += 1,
                'A'..='Z' => c.upper += 1,
                '0'..='9' => c.digit += 1,
                _ => c.other += 1,
            }
        }
        c
    }

    fn kinds(self) -> usize {
        [self.lower, self.upper, self.digit, self.other].iter().filter(|&&n| n > 0).count()
    }
}

/// Substrings that make a key name a credential wherever they appear, once
/// case and separators are dropped (`DB_PASSWORD`, `SENDGRID_API_KEY`,
/// `mySecretString`, `x-api-key`).
const KEY_WORDS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "credential",
    "apikey",
    "accesskey",
    "privatekey",
    "signingkey",
    "encryptionkey",
    "masterkey",
    "accountkey",
    "sessionkey",
    "authkey",
];

/// Segment endings that make a key a credential (`token`, `accessToken`,
/// `OAUTH`, `OLDPWD`); `tokens`, `tokenizer`, `author` do not qualify.
const SEGMENT_ENDINGS: &[&str] = &["token", "auth", "pwd", "authorization", "cookie"];

/// Segments that make a key a credential only when they are the whole segment.
const SEGMENTS: &[&str] = &["pass", "creds", "cred", "secrets", "bearer", "jwt"];

/// A key whose last segment is one of these names a property of the
/// credential, not the credential (`token_limit`, `secret_name`,
/// `access_key_id`, `auth_url`).
const NON_SECRET_LAST: &[&str] = &[
    "id",
    "ids",
    "url",
    "uri",
    "urls",
    "endpoint",
    "file",
    "path",
    "dir",
    "name",
    "names",
    "type",
    "types",
    "length",
    "len",
    "size",
    "count",
    "limit",
    "limits",
    "max",
    "min",
    "expiry",
    "expires",
    "expiration",
    "exp",
    "ttl",
    "at",
    "time",
    "timeout",
    "version",
    "enabled",
    "required",
    "header",
    "prefix",
    "algorithm",
    "alg",
    "format",
    "mode",
    "method",
    "scheme",
    "policy",
    "provider",
    "field",
    "label",
    "hint",
    "placeholder",
    "regex",
    "pattern",
    "env",
    "var",
    "scope",
    "scopes",
    "location",
    "source",
    "kind",
    "status",
    "usage",
    "budget",
    "rotation",
    "strategy",
    "manager",
    "store",
    "service",
    "backend",
    "config",
    "settings",
    "option",
    "options",
    "flag",
    "rules",
    "policy",
    "description",
    "desc",
];

/// Qualifiers that make any credential word harmless: `public_key`,
/// `publicToken`, `page_token`, `next_page_token`, `continuationToken`.
const NON_SECRET_ANY: &[&str] = &["public", "page", "pagination", "continuation", "cursor"];

/// Splits an identifier into lower-cased segments at separators and at
/// lower-to-upper case changes (`mySecretKey` -> my, secret, key).
fn segments(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for ch in key.chars() {
        if !ch.is_ascii_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if ch.is_ascii_uppercase() && prev_lower && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        prev_lower = ch.is_ascii_lowercase() || ch.is_ascii_digit();
        cur.push(ch.to_ascii_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Whether a key (field, variable, header or parameter name) names a
/// credential.
pub(crate) fn key_is_credential(key: &str) -> bool {
    let segs = segments(key);
    let Some(last) = segs.last() else {
        return false;
    };
    if NON_SECRET_LAST.contains(&last.as_str()) || segs.iter().any(|s| NON_SECRET_ANY.contains(&s.as_str())) {
        return false;
    }
    let squashed: String = segs.concat();
    KEY_WORDS.iter().any(|w| squashed.contains(w))
        || segs.iter().any(|s| SEGMENTS.contains(&s.as_str()) || SEGMENT_ENDINGS.iter().any(|e| s.ends_with(e)))
}

/// Template references, documentation stand-ins and masked values: not
/// secrets, and redacting them would only hide useful context. A reference
/// such as `${DB_PASSWORD}` names where the secret lives, not the secret.
pub(crate) fn is_placeholder(v: &str) -> bool {
    const MARKERS: &[&str] = &[
        "xxxx",
        "****",
        "....",
        "your_",
        "your-",
        "yourkey",
        "example",
        "placeholder",
        "changeme",
        "change_me",
        "replace_me",
        "replaceme",
        "redacted",
        "dummy",
        "insert_",
    ];
    if is_template(v) {
        return true;
    }
    // Only ASCII changes case, so byte offsets in `lower` are offsets in `v`.
    let lower = v.to_ascii_lowercase();
    let mut masked = vec![false; v.len()];
    for marker in MARKERS {
        for (at, _) in lower.match_indices(marker) {
            masked[at..at + marker.len()].fill(true);
        }
    }
    if !masked.contains(&true) {
        return false;
    }
    // `your-api-key-here` is a stand-in; a real key that merely runs into
    // one of these words (`…9fQxxxxhcd`) is not.
    let rest: Vec<u8> = v.bytes().zip(&masked).filter(|&(_, &m)| !m).map(|(b, _)| b).collect();
    !String::from_utf8(rest).is_ok_and(|rest| looks_like_secret(&rest))
}

/// Template syntax, environment references, masks and earlier redactions:
/// text that cannot be a literal credential.
pub(crate) fn is_template(v: &str) -> bool {
    let env_reference =
        |name: &str| name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') && is_code_identifier(name);
    let shell_var = v.strip_prefix('$').is_some_and(env_reference);
    let windows_var = v.strip_prefix('%').and_then(|rest| rest.strip_suffix('%')).is_some_and(env_reference);
    if shell_var
        || windows_var
        || v.starts_with(['{', '<', '['])
        || v.contains("${")
        || v.contains("$(")
        || v.contains("{{")
        || v.contains(super::REDACTED)
    {
        return true;
    }
    // Masks: `xxxxxxxx`, `********`, `0000`.
    let mut chars = v.chars().filter(|c| c.is_ascii_alphanumeric());
    match chars.next() {
        Some(first) => v.len() >= 3 && chars.all(|c| c == first),
        None => true,
    }
}

fn is_path(v: &str) -> bool {
    let rooted = v.starts_with('/')
        || v.starts_with("~/")
        || v.starts_with("./")
        || v.starts_with("../")
        || (v.len() > 2 && v.as_bytes()[1] == b':' && matches!(v.as_bytes()[2], b'\\' | b'/'));
    // A random base64 value may start with '/'; real path segments do not mix
    // all three of upper, lower and digits.
    rooted
        && v.split(['/', '\\']).all(|seg| {
            let c = Classes::of(seg);
            !(c.lower > 0 && c.upper > 0 && c.digit > 0)
        })
}

/// `1.2.3`, `v2.0.0-rc.1`, `2024-05-01T10:00:00Z`, `12:30:00`.
fn is_version_or_date(v: &str) -> bool {
    let core = v.strip_prefix(['v', 'V']).unwrap_or(v);
    let b = core.as_bytes();
    let numeric_head = b.first().is_some_and(u8::is_ascii_digit);
    if !numeric_head {
        return false;
    }
    let dotted = core.split(['-', '+']).next().is_some_and(|head| {
        head.split('.').count() >= 2 && head.split('.').all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
    });
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let dated = digits(0..4) && b.get(4) == Some(&b'-') && digits(5..7) && b.get(7) == Some(&b'-') && digits(8..10);
    let timed = core.bytes().all(|c| c.is_ascii_digit() || matches!(c, b':' | b'.' | b'-' | b'T' | b'Z' | b'+'));
    dotted || dated || timed
}

/// A code identifier (`hashlib.sha256`, `settings.API_KEY_V2`, `getToken`):
/// every word is lower-case or upper-case letters optionally followed by
/// digits. Random tokens nearly always put a letter after a digit somewhere.
pub(crate) fn is_code_identifier(v: &str) -> bool {
    if v.is_empty() || v.starts_with(|c: char| c.is_ascii_digit()) {
        return false;
    }
    let word_ok = |w: &str| {
        let letters = w.trim_end_matches(|c: char| c.is_ascii_digit());
        !letters.is_empty()
            && letters.bytes().all(|c| c.is_ascii_alphabetic())
            && (letters[1..].bytes().all(|c| c.is_ascii_lowercase()) || letters.bytes().all(|c| c.is_ascii_uppercase()))
    };
    let words: Vec<&str> = v.split(['.', '_', '-', ':']).filter(|p| !p.is_empty()).flat_map(camel_words).collect();
    // Random tokens cut at separators leave one-letter scraps (`_f_D_s-`).
    let scraps = words.iter().filter(|w| w.len() == 1).count();
    scraps <= 1 && words.iter().all(|w| word_ok(w))
}

fn camel_words(part: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut start = 0;
    let b = part.as_bytes();
    for i in 1..b.len() {
        let upper_after_lower = b[i].is_ascii_uppercase() && b[i - 1].is_ascii_lowercase();
        if upper_after_lower {
            words.push(&part[start..i]);
            start = i;
        }
    }
    words.push(&part[start..]);
    words
}

/// Letters-only values are words or identifiers (gitleaks drops them all);
/// the exception is long, evenly mixed-case noise such as a base62 key that
/// happened to draw no digit.
fn is_random_letters(v: &str) -> bool {
    let letters: Vec<u8> = v.bytes().filter(u8::is_ascii_alphabetic).collect();
    if letters.len() < 16 || entropy(v) < 3.5 {
        return false;
    }
    let upper = letters.iter().filter(|b| b.is_ascii_uppercase()).count();
    let ratio = upper as f64 / letters.len() as f64;
    let flips = letters.windows(2).filter(|w| w[0].is_ascii_uppercase() != w[1].is_ascii_uppercase()).count();
    (0.25..=0.75).contains(&ratio) && flips * 4 >= letters.len()
}

/// Whether a value assigned to a credential-named key looks like an actual
/// credential rather than an English word, path, number, version, code
/// expression or placeholder.
pub(crate) fn looks_like_secret(v: &str) -> bool {
    if v.len() < 8 || is_path(v) || v.contains("://") {
        return false;
    }
    if is_version_or_date(v) {
        return false;
    }
    let c = Classes::of(v);
    let letters_only = c.digit == 0 && v.bytes().all(|b| b.is_ascii_alphabetic() || matches!(b, b'_' | b'.' | b'-'));
    if letters_only {
        return is_random_letters(v) && !is_placeholder(v);
    }
    // Digits and punctuation only (numbers, amounts, phone numbers), or one
    // letter case plus punctuation and no digit (`std::env::var`,
    // `os.environ.get`): generated credentials mix more than that.
    if c.lower + c.upper == 0 || (c.digit == 0 && (c.upper == 0 || c.lower == 0)) {
        return false;
    }
    if (v.contains('.') || v.contains('_')) && is_code_identifier(v) {
        return false;
    }
    // Short passwords cannot reach gitleaks' 3.5 bits (eight distinct
    // characters give exactly 3.0), so mixing letters with digits or
    // symbols lowers the bar.
    let h = entropy(v);
    let letters_and_digits = c.digit > 0 && c.lower + c.upper > 0;
    let random = if c.kinds() >= 3 || letters_and_digits { h >= 2.5 } else { h >= 3.0 };
    random && !is_placeholder(v)
}

/// A value after a well-known token prefix (`ghp_`, `sk-ant-`, `xoxb-`): not
/// a run of one character and not a word.
pub(crate) fn prefixed_body_ok(body: &str) -> bool {
    let c = Classes::of(body);
    entropy(body) >= 2.5 && (c.digit > 0 || (c.upper > 0 && c.lower > 0) || body.len() >= 32) && !is_placeholder(body)
}

/// `Basic` credentials are base64 of `user:password`.
pub(crate) fn is_basic_credential(v: &str) -> bool {
    decode_base64(v).is_some_and(|bytes| {
        bytes.len() >= 3 && bytes.contains(&b':') && bytes.iter().all(|&b| (0x20..0x7f).contains(&b))
    })
}

fn decode_base64(v: &str) -> Option<Vec<u8>> {
    let v = v.trim_end_matches('=');
    let mut out = Vec::with_capacity(v.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in v.bytes() {
        let val = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(val);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// `eyJ…` header and payload segments.
pub(crate) fn is_jwt(v: &str) -> bool {
    let mut parts = v.split('.');
    matches!((parts.next(), parts.next()), (Some(h), Some(p)) if h.starts_with("eyJ") && p.starts_with("eyJ"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_keys() {
        for key in [
            "password",
            "DB_PASSWORD",
            "client_secret",
            "AWS_SECRET_ACCESS_KEY",
            "SENDGRID_API_KEY",
            "api_key",
            "apiKey",
            "X-Api-Key",
            "token",
            "id_token",
            "accessToken",
            "GITHUB_TOKEN",
            "auth",
            "OAUTH",
            "pwd",
            "private_key",
            "mySecretString",
            "credentials",
            "Authorization",
            "db.pass",
            "x-auth-token",
            "heapi_key",
            "wordtoken",
        ] {
            assert!(key_is_credential(key), "{key}");
        }
        for key in [
            "max_tokens",
            "total_tokens",
            "tokenizer",
            "author",
            "authority",
            "token_limit",
            "secret_name",
            "access_key_id",
            "auth_url",
            "idempotency_key",
            "sha256",
            "key",
            "primary_key",
            "public_key",
            "publicToken",
            "client_id",
            "password_min_length",
            "next_page_token",
            "authentication",
            "bypass",
        ] {
            assert!(!key_is_credential(key), "{key}");
        }
    }

    #[test]
    fn secret_values() {
        for v in [
            "Zf3D0LXCM3EIMbgJpUNnkRtOfOueHznB",
            "P@ssw0rd!",
            "hunter22",
            "hunter2Hunter7x",
            "3f2a9c0d1e4b5a6978c8d7e6f5a4b3c2d1e0f9a8",
            "dafa7817-e246-48f3-91a7-e87653d587b8",
            "8-pN-5s--s-_4K-8SycF4W9_s_-E1VaFixoby",
            "_f_D_s-Rb-sG_uG2Vw4T0S-n3LpyLzp_-lh",
            "sha256~bRLFnzd59Z3XpZH5_seJPHALOuvbWiKwbFKSsoALkgp",
        ] {
            assert!(looks_like_secret(v), "{v}");
        }
        for v in [
            "separately",
            "authentication",
            "/home/agent/work",
            "${DB_PASSWORD}",
            "12345678901",
            "1.24.3",
            "v2.0.0-rc.1",
            "2024-05-01T10:00:00Z",
            "hashlib.sha256",
            "settings.API_KEY_V2",
            "XXXXXXXXXXXXXXXX",
            "TokenRefreshHandler",
            "2024-05-01",
            "your-api-key-here",
            "[redacted]",
        ] {
            assert!(!looks_like_secret(v), "{v}");
        }
    }

    #[test]
    fn basic_credentials_decode() {
        assert!(is_basic_credential("YWxhZGRpbjpvcGVuc2VzYW1l"));
        assert!(!is_basic_credential("authentication"));
    }
}
