//! Deterministic secret and text generators shared by the corpus test.
#![allow(dead_code)]

/// SplitMix64: tiny, seedable, good enough to vary test data.
pub struct Rng(u64);

pub const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
pub const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
pub const BASE32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
pub const HEX: &[u8] = b"0123456789abcdef";
pub const DIGITS: &[u8] = b"0123456789";
pub const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
pub const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
pub const PASSWORD: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789!@#%^*_+=-.~";

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn string(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len).map(|_| char::from(*self.pick(alphabet))).collect()
    }

    /// A random string that contains at least one digit, one upper and one
    /// lower-case letter, as real generated keys nearly always do.
    pub fn mixed(&mut self, alphabet: &[u8], len: usize) -> String {
        loop {
            let s = self.string(alphabet, len);
            let digit = s.bytes().any(|b| b.is_ascii_digit());
            let upper = s.bytes().any(|b| b.is_ascii_uppercase());
            let lower = s.bytes().any(|b| b.is_ascii_lowercase());
            if (digit || !alphabet.iter().any(u8::is_ascii_digit))
                && (upper || !alphabet.iter().any(u8::is_ascii_uppercase))
                && (lower || !alphabet.iter().any(u8::is_ascii_lowercase))
            {
                return s;
            }
        }
    }

    pub fn uuid(&mut self) -> String {
        let h = self.string(HEX, 32);
        format!("{}-{}-4{}-a{}-{}", &h[..8], &h[8..12], &h[13..16], &h[17..20], &h[20..])
    }
}

pub fn base64(bytes: &[u8], alphabet: &[u8], pad: bool) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize]));
        }
        if pad {
            out.extend(std::iter::repeat_n('=', 3 - chunk.len()));
        }
    }
    out
}

pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// A secret as written in a snippet, and the parts of it that must not
/// survive scrubbing.
#[derive(Clone, Debug)]
pub struct Secret {
    pub kind: &'static str,
    /// The text to embed (`ghp_…`, `DB_PASSWORD=…`, a PEM block, a URL).
    pub snippet: String,
    /// The credential inside `snippet`.
    pub secret: String,
    /// Whether the snippet is a bare token (it can be split by a newline,
    /// and used as a value in other shapes).
    pub token: bool,
}

fn tok(kind: &'static str, value: String) -> Secret {
    Secret { kind, snippet: value.clone(), secret: value, token: true }
}

fn shaped(kind: &'static str, snippet: String, secret: String) -> Secret {
    Secret { kind, snippet, secret, token: false }
}

pub const GENERIC_KEYS: &[&str] = &[
    "password",
    "DB_PASSWORD",
    "db_pass",
    "passwd",
    "pwd",
    "client_secret",
    "secret",
    "api_key",
    "apiKey",
    "API_KEY",
    "SENDGRID_API_KEY",
    "access_key",
    "auth_token",
    "AUTH",
    "credentials",
    "private_key",
    "x-api-key",
    "token",
    "access_token",
    "refresh_token",
    "MY_APP_SECRET",
    "secretKey",
    "AWS_SECRET_ACCESS_KEY",
    "POSTGRES_PASSWORD",
    "slack.bot.token",
    "auth",
];

/// `k = v` shapes; `{k}`/`{v}` are substituted.
pub const SHAPES: &[&str] = &[
    "{k}={v}",
    "{k} = {v}",
    "{k}: {v}",
    "\"{k}\": \"{v}\"",
    "'{k}': '{v}'",
    "{k} => \"{v}\"",
    "export {k}={v}",
    "{k} := \"{v}\"",
    "<{k}>{v}</{k}>",
    "https://api.example.com/v1/items?{k}={v}&page=2",
    "{k}='{v}'",
    "  {k}: \"{v}\"",
    "--{k}={v}",
];

pub fn generic_value(rng: &mut Rng) -> String {
    match rng.below(6) {
        0 => {
            let len = rng.range(20, 40);
            rng.mixed(ALNUM, len)
        }
        1 => rng.string(HEX, 40),
        2 => {
            let len = rng.range(10, 16);
            rng.mixed(PASSWORD, len)
        }
        3 => rng.uuid(),
        4 => rng.mixed(B64, 40),
        _ => format!("{}{}{}", rng.mixed(LETTERS, 6), rng.string(DIGITS, 3), rng.mixed(ALNUM, 8)),
    }
}

fn jwt(rng: &mut Rng) -> String {
    let header = base64(br#"{"alg":"HS256","typ":"JWT"}"#, B64URL, false);
    let payload = format!(r#"{{"sub":"{}","iat":{}}}"#, rng.string(DIGITS, 8), 1_700_000_000 + rng.below(1_000_000));
    let payload = base64(payload.as_bytes(), B64URL, false);
    format!("{header}.{payload}.{}", rng.mixed(B64URL, 43))
}

fn pem_body(rng: &mut Rng) -> String {
    (0..rng.range(3, 6)).map(|_| rng.mixed(B64, 64)).collect::<Vec<_>>().join("\n")
}

/// Every format the default rules must catch.
pub fn all_secrets(rng: &mut Rng) -> Vec<Secret> {
    let mut v = Vec::new();
    let aws_id = |rng: &mut Rng, prefix: &str| loop {
        let body = rng.string(BASE32, 16);
        if body.bytes().any(|b| b.is_ascii_digit()) {
            return format!("{prefix}{body}");
        }
    };
    v.push(tok("aws-akia", aws_id(rng, "AKIA")));
    v.push(tok("aws-asia", aws_id(rng, "ASIA")));
    for key in ["aws_secret_access_key", "AWS_SECRET_ACCESS_KEY", "aws_secret_key"] {
        let s = rng.mixed(B64, 40);
        v.push(shaped("aws-secret", format!("{key} = {s}"), s));
    }
    for p in ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"] {
        v.push(tok("github", format!("{p}{}", rng.mixed(ALNUM, 36))));
    }
    v.push(tok("github-pat", format!("github_pat_{}_{}", rng.mixed(ALNUM, 22), rng.mixed(ALNUM, 59))));
    v.push(tok("gitlab", format!("glpat-{}", rng.mixed(B64URL, 20))));
    v.push(tok(
        "slack-bot",
        format!("xoxb-{}-{}-{}", rng.string(DIGITS, 11), rng.string(DIGITS, 12), rng.mixed(ALNUM, 24)),
    ));
    v.push(tok(
        "slack-user",
        format!(
            "xoxp-{}-{}-{}-{}",
            rng.string(DIGITS, 11),
            rng.string(DIGITS, 11),
            rng.string(DIGITS, 12),
            rng.string(HEX, 32)
        ),
    ));
    let path = format!(
        "T{}/B{}/{}",
        rng.mixed(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 8),
        rng.mixed(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 10),
        rng.mixed(ALNUM, 24)
    );
    v.push(shaped("slack-webhook", format!("https://hooks.slack.com/services/{path}"), path));
    v.push(tok("stripe-live", format!("sk_live_{}", rng.mixed(ALNUM, 24))));
    v.push(tok("stripe-restricted", format!("rk_test_{}", rng.mixed(ALNUM, 24))));
    v.push(tok("openai-proj", format!("sk-proj-{}T3BlbkFJ{}", rng.mixed(B64URL, 74), rng.mixed(B64URL, 74))));
    v.push(tok("openai-legacy", format!("sk-{}T3BlbkFJ{}", rng.mixed(ALNUM, 20), rng.mixed(ALNUM, 20))));
    v.push(tok("openai-48", format!("sk-{}", rng.mixed(ALNUM, 48))));
    v.push(tok("anthropic", format!("sk-ant-api03-{}AA", rng.mixed(B64URL, 93))));
    v.push(tok("anthropic-admin", format!("sk-ant-admin01-{}AA", rng.mixed(B64URL, 93))));
    v.push(tok("google", format!("AIza{}", rng.mixed(B64URL, 35))));
    v.push(tok("twilio", format!("SK{}", rng.mixed(HEX, 32))));
    v.push(tok("sendgrid", format!("SG.{}.{}", rng.mixed(B64URL, 22), rng.mixed(B64URL, 43))));
    v.push(tok("npm", format!("npm_{}", rng.mixed(ALNUM, 36))));
    v.push(tok("pypi", format!("pypi-AgEIcHlwaS5vcmc{}", rng.mixed(B64URL, 70))));
    v.push(tok("huggingface", format!("hf_{}", rng.mixed(LETTERS, 34))));
    v.push(tok("groq", format!("gsk_{}", rng.mixed(ALNUM, 52))));
    v.push(tok("jwt", jwt(rng)));
    for kind in ["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY", "ENCRYPTED PRIVATE KEY"] {
        let body = pem_body(rng);
        v.push(shaped("pem", format!("-----BEGIN {kind}-----\n{body}\n-----END {kind}-----"), body));
    }
    {
        let body = pem_body(rng);
        let pem = format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n");
        let sa = serde_json::json!({
            "type": "service_account",
            "project_id": "agent-prod",
            "private_key_id": rng.string(HEX, 40),
            "private_key": pem,
            "client_email": "runner@agent-prod.iam.gserviceaccount.com",
        });
        v.push(shaped("gcp-service-account", sa.to_string(), body));
    }
    let bearer = rng.mixed(B64URL, 40);
    v.push(shaped("auth-bearer", format!("Authorization: Bearer {bearer}"), bearer));
    let user_pass = format!("{}:{}", rng.string(LETTERS, 6).to_lowercase(), rng.mixed(PASSWORD, 12));
    let basic = base64(user_pass.as_bytes(), B64, true);
    v.push(shaped("auth-basic", format!("Authorization: Basic {basic}"), basic));
    let token = rng.string(HEX, 40);
    v.push(shaped("auth-token", format!("authorization: Token {token}"), token));
    // After an explicit header, a value of plain letters is a credential too.
    let letters = rng.string(LETTERS, 16).to_lowercase();
    v.push(shaped("auth-header-letters", format!("Authorization: Bearer {letters}"), letters));
    let jwt_bearer = jwt(rng);
    v.push(shaped("auth-bearer-jwt", format!("-H 'Authorization: Bearer {jwt_bearer}'"), jwt_bearer));
    for (scheme, user, pass) in [
        ("postgres", "app", rng.mixed(ALNUM, 16)),
        ("mysql", "root", format!("{}/{}", rng.mixed(ALNUM, 6), rng.mixed(ALNUM, 6))),
        ("redis", "", rng.mixed(ALNUM, 20)),
        ("mongodb+srv", "svc", format!("{}@{}", rng.mixed(ALNUM, 6), rng.mixed(ALNUM, 6))),
        ("amqp", "guest", rng.mixed(PASSWORD, 14).replace(['@', '#'], "x")),
        ("https", "deploy", format!("{}@/{}", rng.mixed(ALNUM, 5), rng.mixed(ALNUM, 7))),
    ] {
        let host = format!("db{}.internal.example.com", rng.below(9));
        v.push(shaped("url-password", format!("{scheme}://{user}:{pass}@{host}:5432/app"), pass));
    }
    let amz_id = aws_id(rng, "AKIA");
    let amz_sig = rng.string(HEX, 64);
    v.push(shaped(
        "s3-presigned",
        format!("https://bucket.s3.amazonaws.com/k.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={amz_id}%2F20240101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20240101T000000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature={amz_sig}"),
        amz_sig,
    ));
    let goog = rng.string(HEX, 128);
    v.push(shaped(
        "gcs-presigned",
        format!("https://storage.googleapis.com/b/o?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Signature={goog}"),
        goog,
    ));
    let sas = percent_encode(&rng.mixed(B64, 43));
    v.push(shaped(
        "azure-sas",
        format!("https://acct.blob.core.windows.net/c/b?sv=2022-11-02&ss=b&sp=r&se=2030-01-01T00:00:00Z&sig={sas}="),
        sas,
    ));
    for _ in 0..4 {
        let key = *rng.pick(GENERIC_KEYS);
        let shape = *rng.pick(SHAPES);
        let value = generic_value(rng);
        v.push(shaped("generic", shape.replace("{k}", key).replace("{v}", &value), value));
    }
    for shape in ["curl -u deploy:{p} https://ci.example.com/api", "curl -s --user '{u}:{p}' https://api.example.com"] {
        let user = rng.string(LETTERS, 6).to_lowercase();
        let pass = rng.mixed(PASSWORD, 12).replace(['\'', '"'], "x");
        v.push(shaped("curl-user", shape.replace("{u}", &user).replace("{p}", &pass), pass));
    }
    for key in ["password", "DB_PASSWORD", "pwd"] {
        let pass = format!("{}{}", rng.string(LETTERS, 6).to_lowercase(), rng.string(DIGITS, 2));
        v.push(shaped("short-password", format!("{key}: {pass}"), pass));
    }
    let hex = rng.string(HEX, 40);
    v.push(shaped("json-token-hex", format!(r#"{{"token": "{hex}", "expires_in": 3600}}"#), hex));
    let id_token = jwt(rng);
    v.push(shaped("json-id-token", format!(r#"{{"id_token": "{id_token}"}}"#), id_token));
    v
}

const WORDS: &[&str] = &[
    "the",
    "agent",
    "token",
    "tokens",
    "secret",
    "password",
    "key",
    "auth",
    "prompt",
    "model",
    "retry",
    "saga",
    "step",
    "count",
    "limit",
    "cache",
    "query",
    "result",
    "error",
    "timeout",
    "Please",
    "Summarize",
    "Bearer",
    "Basic",
    "credential",
    "access",
    "pipeline",
    "compensate",
    "rollback",
    "invoice",
    "customer",
    "order",
    "4096",
    "12",
    "v2",
    "sha256",
    "UTF-8",
    "JSON",
    "is",
    "to",
    "of",
    "and",
    "for",
    "with",
    "not",
    "must",
    "be",
    "at",
    "least",
    "characters",
];

/// A prompt-like paragraph over a vocabulary full of credential words.
pub fn prose(rng: &mut Rng) -> String {
    let mut out = String::new();
    for i in 0..rng.range(8, 40) {
        if i > 0 {
            out.push_str(match rng.below(12) {
                0 => "\n",
                1 => ", ",
                2 => ". ",
                3 => ": ",
                _ => " ",
            });
        }
        let word = *rng.pick(WORDS);
        out.push_str(word);
    }
    out
}
