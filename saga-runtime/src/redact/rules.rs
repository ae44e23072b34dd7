//! The default rule set, ported from gitleaks' maintained rules and adapted
//! for scrubbing rather than scanning repositories.
//!
//! Differences from gitleaks, and why:
//! - No left word boundary on prefixed tokens: in agent output a key is often
//!   glued to the previous word (`key:ghp_…`, `\nsk-…` inside JSON strings).
//! - Open-ended lengths (`{36,}` rather than `{36}`): a scrubber must remove a
//!   token even when it runs into the next word; over-redacting the tail of a
//!   word that touches a secret is the cheaper mistake.
//! - Each rule names the capture group `s` that is removed, so context such as
//!   `Authorization: Bearer` or `hooks.slack.com/` survives.

use regex::{Captures, Regex};

use super::check;

/// Decides whether a regex match is a credential.
pub(crate) type Check = fn(&Captures<'_>) -> bool;

/// A compiled rule.
pub(crate) struct Rule {
    pub(crate) id: String,
    regex: Regex,
    /// Capture group holding the secret; 0 is the whole match.
    group: usize,
    /// Lower-case literals one of which must occur (ASCII case-insensitively)
    /// for the rule to possibly match; empty means "always run".
    pub(crate) keywords: Vec<String>,
    check: Option<Check>,
    /// Cheap test on the matched text that can reject a match before its
    /// capture groups are computed (capturing costs a second pass).
    quick: Option<fn(&str) -> bool>,
}

/// A rule match, in bytes of the scanned text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hit {
    pub(crate) rule: usize,
    pub(crate) range: std::ops::Range<usize>,
}

impl Rule {
    pub(crate) fn new(id: String, regex: Regex, group: usize, keywords: Vec<String>, check: Option<Check>) -> Self {
        Self { id, regex, group, keywords, check, quick: None }
    }

    /// Appends this rule's hits in `text` to `out`.
    pub(crate) fn find_into(&self, text: &str, index: usize, out: &mut Vec<Hit>) {
        if self.group == 0 && self.check.is_none() {
            out.extend(
                self.regex.find_iter(text).filter(|m| !m.is_empty()).map(|m| Hit { rule: index, range: m.range() }),
            );
            return;
        }
        if let Some(quick) = self.quick {
            let mut at = 0;
            while let Some(m) = self.regex.find_at(text, at) {
                at = if m.is_empty() { m.end() + 1 } else { m.end() };
                if !quick(m.as_str()) {
                    continue;
                }
                if let Some(caps) = self.regex.captures_at(text, m.start()) {
                    self.accept(&caps, index, out);
                    at = at.max(caps.get(0).map_or(at, |c| c.end()));
                }
                if at > text.len() {
                    break;
                }
            }
            return;
        }
        for caps in self.regex.captures_iter(text) {
            self.accept(&caps, index, out);
        }
    }

    fn accept(&self, caps: &Captures<'_>, index: usize, out: &mut Vec<Hit>) {
        if self.check.is_some_and(|check| !check(caps)) {
            return;
        }
        if let Some(m) = caps.get(self.group).or_else(|| caps.get(0))
            && !m.is_empty()
        {
            out.push(Hit { rule: index, range: m.range() });
        }
    }
}

struct Spec {
    id: &'static str,
    pattern: &'static str,
    keywords: &'static [&'static str],
    check: Option<Check>,
}

/// Generic matches start with their key; most keys (`max_tokens`,
/// `idempotency_key`) are not credentials, and rejecting those on the key
/// alone skips capturing.
fn generic_key_quick(matched: &str) -> bool {
    let key_len = matched.bytes().take_while(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')).count();
    check::key_is_credential(&matched[..key_len])
}

const fn spec(
    id: &'static str,
    pattern: &'static str,
    keywords: &'static [&'static str],
    check: Option<Check>,
) -> Spec {
    Spec { id, pattern, keywords, check }
}

/// Keyword-anchored assignment in any of the shapes agents emit: `k=v`,
/// `k: v`, `"k": "v"`, `'k': 'v'`, `k => v`, `k := v`, `export K=v`,
/// `<k>v</k>`, `?k=v&`, with quotes optionally backslash-escaped (JSON inside
/// JSON). The key is matched loosely here and judged by
/// `check::key_is_credential`, because `\b` cannot see the `_` in
/// `DB_PASSWORD` and keyword lists cannot tell `token` from `max_tokens`.
const GENERIC: &str = concat!(
    r"(?i)(?P<key>[a-z0-9_.-]*(?:pass|pwd|secret|token|key|auth|cred|cookie|bearer|jwt)[a-z0-9_.-]*)",
    r#"(?:\\{0,7}["'`])?[ \t]{0,5}(?:=>|::?=|\?=|\+=|=|:|>)[ \t]{0,5}(?:\\{0,7}["'`])?"#,
    r#"(?P<s>[^\s"'`\\<>;,&(){}\[\]]+)(?P<call>[(\[])?"#,
);

const DEFAULTS: &[Spec] = &[
    spec(
        "private-key",
        r"(?P<s>-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----(?:(?s:.*?)-----END[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----|(?:\\[nr]|[A-Za-z0-9+/=\s:,.-])*))",
        &["private key"],
        None,
    ),
    spec(
        "aws-access-key-id",
        r"(?P<pre>[A-Z0-9])?(?P<s>(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16,})",
        &["akia", "asia", "abia", "acca", "a3t"],
        Some(aws_key_id),
    ),
    spec(
        "aws-secret-access-key",
        r#"(?i)(?:aws|amazon)[a-z0-9_.-]{0,40}?(?:secret|sk|key)[a-z0-9_.-]{0,20}(?:\\{0,7}["'`])?[ \t]{0,5}(?:=>|:=|=|:|,)[ \t]{0,5}(?:\\{0,7}["'`])?(?P<s>(?-i:[A-Za-z0-9/+]{40}))(?:[^A-Za-z0-9/+=]|$)"#,
        &["aws", "amazon"],
        Some(aws_secret),
    ),
    spec(
        "github-token",
        r"(?P<s>(?:ghp|gho|ghu|ghs|ghr)_(?P<body>[A-Za-z0-9]{30,}))",
        &["ghp_", "gho_", "ghu_", "ghs_", "ghr_"],
        Some(prefixed),
    ),
    spec("github-fine-grained-pat", r"(?P<s>github_pat_(?P<body>[A-Za-z0-9_]{40,}))", &["github_pat_"], Some(prefixed)),
    spec(
        "gitlab-token",
        r"(?P<s>gl(?:pat|dt|rt|ptt|ft|imt|oas|cbt|soat|agent)-(?P<body>[A-Za-z0-9_-]{20,}(?:\.[A-Za-z0-9_-]+)*))",
        &["glpat-", "gldt-", "glrt-", "glptt-", "glft-", "glimt-", "gloas-", "glcbt-", "glsoat-", "glagent-"],
        Some(prefixed),
    ),
    spec("slack-token", r"(?P<s>(?:xox[abposre]|xapp)-(?P<body>[A-Za-z0-9-]{10,}))", &["xox", "xapp-"], Some(slack)),
    spec(
        "slack-webhook",
        r"hooks\.slack\.com/(?P<s>(?:services|workflows|triggers)/[A-Za-z0-9+/_-]{20,})",
        &["hooks.slack.com"],
        None,
    ),
    spec(
        "stripe-key",
        r"(?P<s>(?:sk|rk)_(?:test|live|prod)_(?P<body>[A-Za-z0-9]{10,}))",
        &["_test_", "_live_", "_prod_"],
        Some(prefixed),
    ),
    spec("stripe-webhook-secret", r"(?P<s>whsec_(?P<body>[A-Za-z0-9+/=]{24,}))", &["whsec_"], Some(prefixed)),
    spec("anthropic-api-key", r"(?P<s>sk-ant-(?P<body>[A-Za-z0-9_-]{20,}))", &["sk-"], Some(prefixed)),
    spec(
        "openai-api-key",
        r"(?P<s>sk-(?:proj|svcacct|admin|None)-(?P<body>[A-Za-z0-9_-]{20,}))",
        &["sk-"],
        Some(prefixed),
    ),
    spec("sk-api-key", r"(?P<s>sk-(?P<body>[A-Za-z0-9_-]{20,}))", &["sk-"], Some(sk_generic)),
    spec("google-api-key", r"(?P<s>AIza(?P<body>[A-Za-z0-9_-]{35,}))", &["aiza"], Some(prefixed)),
    spec(
        "twilio-api-key",
        r"(?P<s>SK(?P<body>[0-9a-fA-F]{32}))",
        // `sk` is in "ask", "task", "risk"; the regex's own case-sensitive
        // `SK` prefilter is cheaper than waking the rule on every one.
        &[],
        Some(hex_body),
    ),
    spec("sendgrid-api-key", r"(?P<s>SG\.(?P<body>[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}))", &["sg."], Some(prefixed)),
    spec("npm-token", r"(?P<s>npm_(?P<body>[A-Za-z0-9]{36,}))", &["npm_"], Some(prefixed)),
    spec("pypi-token", r"(?P<s>pypi-(?P<body>AgE[A-Za-z0-9_-]{40,}))", &["pypi-age"], Some(prefixed)),
    spec(
        "huggingface-token",
        r"(?P<s>(?:hf|api_org)_(?P<body>[A-Za-z0-9]{30,}))",
        &["hf_", "api_org_"],
        Some(prefixed),
    ),
    spec("jwt", r"(?P<s>eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*)", &["eyj"], None),
    spec("groq-api-key", r"(?P<s>gsk_(?P<body>[A-Za-z0-9]{40,}))", &["gsk_"], Some(prefixed)),
    spec("xai-api-key", r"(?P<s>xai-(?P<body>[A-Za-z0-9]{60,}))", &["xai-"], Some(prefixed)),
    spec("replicate-api-token", r"(?P<s>r8_(?P<body>[A-Za-z0-9]{30,}))", &["r8_"], Some(prefixed)),
    spec("perplexity-api-key", r"(?P<s>pplx-(?P<body>[A-Za-z0-9]{40,}))", &["pplx-"], Some(prefixed)),
    spec("langsmith-api-key", r"(?P<s>lsv2_(?:pt|sk)_(?P<body>[a-f0-9]{32}_[a-f0-9]{10}))", &["lsv2_"], Some(prefixed)),
    spec("tavily-api-key", r"(?P<s>tvly-(?:dev-|prod-)?(?P<body>[A-Za-z0-9]{24,}))", &["tvly-"], Some(prefixed)),
    spec("hashicorp-vault-token", r"(?P<s>hv[sb]\.(?P<body>[A-Za-z0-9_-]{24,}))", &["hvs.", "hvb."], Some(prefixed)),
    spec("digitalocean-token", r"(?P<s>do[opr]_v1_(?P<body>[a-f0-9]{64}))", &["_v1_"], Some(prefixed)),
    spec("databricks-token", r"(?P<s>dapi(?P<body>[a-f0-9]{32})(?:-\d)?)", &["dapi"], Some(hex_body)),
    spec(
        "shopify-token",
        r"(?P<s>shp(?:at|ca|pa|ss)_(?P<body>[a-fA-F0-9]{32}))",
        &["shpat_", "shpca_", "shppa_", "shpss_"],
        Some(hex_body),
    ),
    spec("linear-api-key", r"(?P<s>lin_api_(?P<body>[A-Za-z0-9]{40,}))", &["lin_api_"], Some(prefixed)),
    spec("postman-api-key", r"(?P<s>PMAK-(?P<body>[a-f0-9]{24}-[a-f0-9]{34}))", &["pmak-"], Some(prefixed)),
    spec("notion-token", r"(?P<s>ntn_(?P<body>[A-Za-z0-9]{40,}))", &["ntn_"], Some(prefixed)),
    spec(
        "doppler-token",
        r"(?P<s>dp\.(?:pt|st|sa|ct|scim|audit)\.(?P<body>[A-Za-z0-9]{40,}))",
        &["dp."],
        Some(prefixed),
    ),
    spec("atlassian-api-token", r"(?P<s>ATATT3(?P<body>[A-Za-z0-9_=-]{100,}))", &["atatt3"], Some(prefixed)),
    spec(
        "grafana-token",
        r"(?P<s>(?:glc|glsa)_(?P<body>[A-Za-z0-9_+/]{32,}={0,2}))",
        &["glc_", "glsa_"],
        Some(prefixed),
    ),
    spec(
        "age-secret-key",
        r"(?P<s>AGE-SECRET-KEY-1(?P<body>[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}))",
        &["age-secret-key-1"],
        Some(prefixed),
    ),
    spec("heroku-api-key", r"(?P<s>HRKU-(?P<body>[A-Za-z0-9_-]{40,}))", &["hrku-"], Some(prefixed)),
    spec("sentry-token", r"(?P<s>sntry[su]_(?P<body>[A-Za-z0-9+/=_-]{40,}))", &["sntry"], Some(prefixed)),
    spec("supabase-token", r"(?P<s>sbp_(?P<body>[a-f0-9]{40}))", &["sbp_"], Some(hex_body)),
    spec(
        "azure-ad-client-secret",
        r"(?P<s>(?P<body>[A-Za-z0-9_~.]{3}\dQ~[A-Za-z0-9_~.-]{31,34}))",
        &["q~"],
        Some(prefixed),
    ),
    spec("telegram-bot-token", r"(?P<s>\d{8,10}:(?P<body>AA[A-Za-z0-9_-]{33}))", &[":aa"], Some(prefixed)),
    // After an explicit `Authorization:` header the value is a credential whatever it looks
    // like (a test token of plain letters included); elsewhere a scheme word needs a value that
    // looks like one ("Use Basic authentication" stays).
    spec(
        "authorization-header",
        r#"(?i)\b(?:proxy-)?authorization["']?[ \t]*[:=][ \t]*["']?(?:(?:bearer|basic|token|digest)[ \t]+)?(?P<s>[A-Za-z0-9._~+/=-]{6,})"#,
        &["authorization"],
        Some(header_value),
    ),
    spec(
        "authorization-scheme",
        r"(?i)(?P<scheme>bearer|basic|token|digest)[ \t]+(?P<s>[A-Za-z0-9._~+/=-]{8,})",
        &["bearer", "basic", "token", "digest"],
        Some(auth_scheme),
    ),
    spec(
        "cli-user-password",
        r#"(?:^|[\s"'])(?:-u|--user)(?:[ \t]+|=)["']?(?P<user>[^\s:"'$<>{}]+):(?P<s>[^\s"'<>]+)"#,
        &["-u"],
        Some(cli_user_password),
    ),
    spec(
        "url-password",
        r#"(?i)[a-z][a-z0-9+.-]{0,30}://(?P<user>[^\s/?#@:"'<>`]*):(?P<s>[^\s"'<>`]*)@[^\s@/?#"'<>`]"#,
        &["://"],
        Some(url_password),
    ),
    spec(
        "presigned-url-signature",
        r#"(?i)(?:x-amz-(?:signature|credential|security-token)|x-goog-(?:signature|credential)|[?&;]sig|[?&]signature)=(?P<s>[A-Za-z0-9%+/=._~-]{8,})"#,
        &["x-amz-", "x-goog-", "sig=", "signature="],
        Some(presigned),
    ),
    spec(
        "generic-credential",
        GENERIC,
        &["pass", "pwd", "secret", "token", "key", "auth", "cred", "cookie", "bearer", "jwt"],
        Some(generic),
    ),
];

/// Compiles the default rules.
pub(crate) fn default_rules() -> Vec<Rule> {
    DEFAULTS
        .iter()
        .map(|s| {
            // The patterns are constants covered by tests; failing here is a
            // programming error, not bad input.
            let regex = Regex::new(s.pattern).expect("default rule pattern compiles");
            let group = regex.capture_names().position(|n| n == Some("s")).unwrap_or(0);
            let mut rule = Rule::new(
                s.id.to_owned(),
                regex,
                group,
                s.keywords.iter().map(|k| k.to_ascii_lowercase()).collect(),
                s.check,
            );
            if s.pattern == GENERIC {
                rule.quick = Some(generic_key_quick);
            }
            rule
        })
        .collect()
}

fn named<'h>(caps: &Captures<'h>, name: &str) -> &'h str {
    caps.name(name).map_or("", |m| m.as_str())
}

fn prefixed(caps: &Captures<'_>) -> bool {
    check::prefixed_body_ok(named(caps, "body"))
}

fn hex_body(caps: &Captures<'_>) -> bool {
    let body = named(caps, "body");
    body.bytes().any(|b| b.is_ascii_digit()) && body.bytes().any(|b| b.is_ascii_alphabetic())
}

fn slack(caps: &Captures<'_>) -> bool {
    let body = named(caps, "body");
    body.bytes().any(|b| b.is_ascii_digit()) && check::prefixed_body_ok(body)
}

/// gitleaks bounds AWS key ids with `\b` and an entropy floor of 3.0. Real
/// ids almost always mix letters and digits, and that mix is the better
/// evidence: it holds for ids that happen to repeat characters (entropy 2.8)
/// and for ids glued to surrounding capitals (`HAKIA…`), and it rejects runs
/// of capitals such as `ASIAPACIFICREGIONOFFICE`. An id without a digit is
/// only accepted standing alone and with gitleaks' entropy.
fn aws_key_id(caps: &Captures<'_>) -> bool {
    let s = named(caps, "s");
    let Some(id) = s.get(..20) else {
        return false;
    };
    let body = &id[4..];
    let mixed = body.bytes().any(|b| b.is_ascii_digit()) && body.bytes().any(|b| b.is_ascii_uppercase());
    let bounded = caps.name("pre").is_none() && s.len() == 20;
    let h = check::entropy(id);
    (mixed && h >= 2.5) || (bounded && h >= 3.0)
}

fn aws_secret(caps: &Captures<'_>) -> bool {
    let s = named(caps, "s");
    check::entropy(s) >= 3.0 && !check::is_placeholder(s) && s.bytes().any(|b| b.is_ascii_digit())
}

/// Bare `sk-` is also the tail of `task-`, `disk-`, `risk-`; require a long
/// unbroken random-looking run as in real keys (`sk-<48 base62>`,
/// `sk-<32 hex>`, `sk-or-v1-<64 hex>`), not `sk-learn-compatible-pipeline`.
fn sk_generic(caps: &Captures<'_>) -> bool {
    named(caps, "body").split(['-', '_']).any(|piece| {
        piece.len() >= 20
            && piece.bytes().any(|b| b.is_ascii_digit())
            && piece.bytes().any(|b| b.is_ascii_alphabetic())
            && check::entropy(piece) >= 3.0
    })
}

fn auth_scheme(caps: &Captures<'_>) -> bool {
    let value = named(caps, "s");
    if check::is_placeholder(value) {
        return false;
    }
    let basic = named(caps, "scheme").eq_ignore_ascii_case("basic");
    (basic && check::is_basic_credential(value)) || check::looks_like_secret(value) || check::is_jwt(value)
}

/// The value of an `Authorization` header, unless it is a placeholder (`<token>`, `${TOKEN}`)
/// or a scheme word alone.
fn header_value(caps: &Captures<'_>) -> bool {
    let value = named(caps, "s");
    !check::is_placeholder(value)
        && !["bearer", "basic", "token", "digest", "header", "required", "missing"]
            .iter()
            .any(|word| value.eq_ignore_ascii_case(word))
}

/// The match runs to the last `@` (passwords may contain `@` and `/`), but a
/// URL glued to following text can push that `@` too far; judge the part up
/// to the first `@`, which is password for sure.
fn url_password(caps: &Captures<'_>) -> bool {
    let full = named(caps, "s");
    let pass = full.split('@').next().unwrap_or(full);
    // `https://host:8080/@scope/pkg` has a port and a path, not a password.
    let digits = pass.bytes().take_while(u8::is_ascii_digit).count();
    let port_then_path = (1..=5).contains(&digits) && pass.as_bytes().get(digits) == Some(&b'/');
    !pass.is_empty() && !check::is_template(pass) && !port_then_path
}

/// `curl -u user:password`; gitleaks' curl rule lists the stand-ins that
/// documentation uses instead of real passwords.
fn cli_user_password(caps: &Captures<'_>) -> bool {
    let pass = named(caps, "s");
    let stand_in = ["password", "pass", "passwd", "pwd", "secret", "token", "test", "changeit", "changeme"]
        .iter()
        .any(|w| pass.eq_ignore_ascii_case(w));
    pass.len() >= 6 && !stand_in && !check::is_placeholder(pass) && !pass.bytes().all(|b| b.is_ascii_digit())
}

fn presigned(caps: &Captures<'_>) -> bool {
    !check::is_placeholder(named(caps, "s"))
}

fn generic(caps: &Captures<'_>) -> bool {
    let value = named(caps, "s");
    let is_call = caps.name("call").is_some() && check::is_code_identifier(value);
    !is_call && check::key_is_credential(named(caps, "key")) && check::looks_like_secret(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_rule_compiles_and_names_its_secret() {
        let rules = default_rules();
        assert_eq!(rules.len(), DEFAULTS.len());
        for rule in &rules {
            assert!(rule.group > 0, "{} has no `s` group", rule.id);
            assert!(!rule.keywords.is_empty() || rule.id == "twilio-api-key", "{} has no keywords", rule.id);
        }
    }
}
