//! Recall on generated secrets (every supported format, in context and in
//! disguise) and false positives on ordinary prompt text and code.
//!
//! `cargo test -p saga-tests --test redaction_corpus -- --nocapture` prints the figures.

#[path = "redaction/generators.rs"]
mod common;

use common::*;
use saga_runtime::redact::{REDACTED, Scrubber};

struct Case {
    label: String,
    text: String,
    /// Strings none of whose 8-byte windows may remain after scrubbing.
    needles: Vec<String>,
}

/// `s` with every `-` and `_` written as `escape(byte)`.
fn escape_dashes(s: &str, escape: fn(u8) -> String) -> String {
    s.chars()
        .map(|c| match c {
            '-' | '_' => escape(c as u8),
            _ => c.to_string(),
        })
        .collect()
}

fn split_in_middle(secret: &str) -> (String, String) {
    let mut mid = secret.len() / 2;
    while !secret.is_char_boundary(mid) {
        mid += 1;
    }
    (secret[..mid].to_owned(), secret[mid..].to_owned())
}

fn variants(s: &Secret) -> Vec<Case> {
    let mut out = Vec::new();
    let mut push = |label: &str, text: String, needles: Vec<String>| {
        out.push(Case { label: format!("{}/{label}", s.kind), text, needles });
    };
    let secret = || vec![s.secret.clone()];
    let json_inner = |x: &str| {
        let j = json_string(x);
        j[1..j.len() - 1].to_owned()
    };

    push("plain", s.snippet.clone(), secret());
    push("sentence", format!("The tool call failed: {} (retrying in 3s).", s.snippet), secret());
    push("quoted", format!("config = \"{}\"\nnext = 1", s.snippet), secret());

    let obs = serde_json::json!({"tool": "http_request", "observation": s.snippet}).to_string();
    push("json-field", obs.clone(), vec![s.secret.clone(), json_inner(&s.secret)]);
    let twice = json_string(&obs);
    push("json-double-escaped", twice, vec![s.secret.clone(), json_inner(&json_inner(&s.secret))]);

    push("html-escaped", obs.replace('"', "&quot;"), vec![s.secret.replace('"', "&quot;")]);
    push(
        "url-encoded",
        format!("GET https://agent.local/callback?state={}&ok=1", percent_encode(&s.snippet)),
        vec![percent_encode(&s.secret)],
    );

    if s.snippet.contains(['-', '_']) {
        let u = |b: u8| format!("\\u{b:04x}");
        let x = |b: u8| format!("\\x{b:02x}");
        push("u-escape", escape_dashes(&s.snippet, u), vec![escape_dashes(&s.secret, u)]);
        push("x-escape", escape_dashes(&s.snippet, x), vec![escape_dashes(&s.secret, x)]);
    }

    // A word of plain letters split over two lines reads as two words of prose: only values
    // that look like tokens are joined back.
    let splittable = (s.token || s.kind == "generic" || s.kind.starts_with("auth-") || s.kind.starts_with("json-"))
        && s.kind != "auth-header-letters";
    if splittable && s.secret.len() >= 16 {
        let (a, b) = split_in_middle(&s.secret);
        let lf = s.snippet.replacen(&s.secret, &format!("{a}\n{b}"), 1);
        push("newline-split", lf, vec![a.clone(), b.clone()]);
        let crlf = s.snippet.replacen(&s.secret, &format!("{a}\r\n{b}"), 1);
        push("crlf-split", crlf, vec![a.clone(), b.clone()]);
        let in_json = serde_json::json!({"api_key": format!("{a}\n{b}")}).to_string();
        if s.token {
            push("json-newline-split", in_json, vec![a, b]);
        }
    }

    if s.token {
        push("env-line", format!("RUST_LOG=info\nSERVICE_TOKEN={}\nPORT=8080", s.snippet), secret());
        push("generic-json", format!("{{\"api_key\": \"{}\"}}", s.snippet), secret());
        push("bearer", format!("Authorization: Bearer {}", s.snippet), secret());
        push("bearer-url-encoded", format!("Authorization=Bearer%20{}", percent_encode(&s.snippet)), secret());
        push("glued", format!("key:{}.", s.snippet), secret());
        push("markdown", format!("Use `{}` for the call.", s.snippet), secret());
    }
    out
}

/// Survivors: windows of the needles still present in `out`.
fn survivors(out: &str, needles: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for needle in needles {
        if needle.len() < 8 {
            if needle.len() >= 4 && out.contains(needle.as_str()) {
                found.push(needle.clone());
            }
            continue;
        }
        let bytes = needle.as_bytes();
        for w in bytes.windows(8) {
            if let Ok(w) = std::str::from_utf8(w)
                && out.contains(w)
            {
                found.push(w.to_owned());
                break;
            }
        }
    }
    found
}

fn positives() -> Vec<Case> {
    let mut rng = Rng::new(0x05EC_2E75);
    let mut cases = Vec::new();
    for _ in 0..3 {
        for secret in all_secrets(&mut rng) {
            cases.extend(variants(&secret));
        }
    }
    cases
}

const FIXED_NEGATIVES: &[&str] = &[
    "Count each token separately",
    "token generation is slow",
    "Use Basic authentication for the admin API",
    "sk-learn-compatible-pipeline",
    "password: field must be at least 12 characters",
    "pwd=/home/agent/work",
    "the secret to good soup",
    "set the token limit to 4096",
    "Authorization header missing",
    "api_key: <your key here>",
    "password=${DB_PASSWORD}",
    "password=$DB_PASSWORD",
    "token: ${{ secrets.GITHUB_TOKEN }}",
    "api_key=%OPENAI_API_KEY%",
    "Authorization: Bearer $API_KEY",
    "Authorization: Bearer <token>",
    "Authorization: Token **********",
    "curl -H \"Authorization: Bearer $(gcloud auth print-access-token)\" https://example.com",
    "https://user@host.example.com/path",
    "https://example.com/a?b=c",
    "https://example.com:8080/api/v1/items?page=2&limit=50",
    "http://localhost:3000/@babel/core",
    "https://registry.npmjs.org:443/@scope/pkg",
    "git@github.com:org/repo.git",
    "ssh://git@github.com:22/org/repo.git",
    "/home/agent/work/src/main.rs:42:7",
    "C:\\Users\\agent\\AppData\\Local\\Temp\\run.log",
    "v1.24.3",
    "2.0.0-rc.1+build.5",
    "2024-05-01T10:30:00Z",
    "2024-05-01T10:30:00.123456+02:00",
    "commit 3f2a9c0d1e4b5a6978c8d7e6f5a4b3c2d1e0f9a8",
    "Merge: 3f2a9c0 1e4b5a6",
    "idempotency_key=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "{\"idempotency_key\": \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"}",
    "{\"sha256\": \"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"}",
    "request_id: 0b4f3a52-8c1e-4d3b-9a7e-2f6c1d8e9b10",
    "trace 01890a5d-ac96-774b-bcce-b302099a8057 span 01890a5d-ac96-7f00-8000-000000000001",
    "{\"max_tokens\": 4096, \"prompt_tokens\": 1234, \"completion_tokens\": 56, \"total_tokens\": 1290}",
    "{\"tokenizer\": \"cl100k_base\", \"token_limit\": 128000}",
    "secret_name = \"prod/db/password\"",
    "LLM_SECRET_NAME = \"NEXUS-GPT4-API-KEY\"",
    "access_key_id: AKIA_FIELD_NAME",
    "author = \"jane.doe@example.com\"",
    "client_id = \"73082700-1f09-405b-80d0-3131bfd6272d\"",
    "The password policy requires 12 characters, one digit and one symbol.",
    "Your API key is stored in the vault; never paste it into prompts.",
    "Tokens are billed per 1K; the auth service refreshes them every 3600 seconds.",
    "Use the Bearer scheme with a token obtained from /oauth/token.",
    "basic tokenization splits on whitespace",
    "The secret sauce: tomatoes, basil, garlic.",
    "password_min_length = 12",
    "auth_url: https://auth.example.com/oauth2/authorize",
    "token_endpoint: https://auth.example.com/oauth2/token",
    "OLDPWD=/home/agent",
    "HOME=/root\nPATH=/usr/local/bin:/usr/bin:/bin\nRUST_LOG=info\nMAX_TOKENS=4096\nTZ=UTC",
    "let api_key = std::env::var(\"OPENAI_API_KEY\")?;",
    "let token: String = read_token()?;",
    "fn verify(password: &str, hash: &PasswordHash) -> bool {",
    "password = os.environ[\"DB_PASSWORD\"]",
    "password_hash = hashlib.sha256(password.encode()).hexdigest()",
    "token = tokenizer.encode(text)",
    "const secret = process.env.SECRET;",
    "headers[\"Authorization\"] = f\"Bearer {token}\"",
    "auth = HTTPBasicAuth(user, password)",
    "api_key: Optional[str] = None",
    "def login(username: str, password: str) -> Token:",
    "SELECT id, email, password_hash FROM users WHERE email = $1 AND deleted_at IS NULL;",
    "UPDATE sessions SET token = $1, expires_at = now() + interval '1 hour' WHERE id = $2;",
    "if token_count > max_tokens { return Err(Error::TooLong); }",
    "let secret_key = Hmac::<Sha256>::new_from_slice(key_bytes)?;",
    "self.api_key = api_key or settings.OPENAI_API_KEY",
    "auth_mode: api_key",
    "sk-2024-Q3-Report-Final-Version",
    "task-2024-Q3-Report-Final-Version-Draft",
    "risk-assessment-2024-Q3-appendix-B-v2",
    "The model used 12,345 tokens (cost $0.37).",
    "Ask the user for their password; do not guess it.",
    "ASIAPACIFICREGIONALOFFICEHQ is the client name",
    "TODAYINASIAASACKOFRICEFELLOVER",
    "Step 3\nRun the tests\nThen commit the change",
    "Error: token expired at 2024-05-01T10:30:00Z; refreshing",
    "key: value\nsecret_ref: vault://prod/db\nauth: true\ntoken_ttl: 3600",
    "export PATH=\"$HOME/.cargo/bin:$PATH\"",
    "data = {\"password\": \"\", \"token\": null}",
    "Set-Cookie: theme=dark; Path=/; HttpOnly",
    "hf_transfer_enabled = true",
    "use_hf_hub = True",
    "disk-usage-monitoring-v2 reported 85%",
    "50%25 done, 100%3A complete",
    "{\"next_page_token\": \"eyJvZmZzZXQiOjEwMCwicGFnZSI6Mn0=\", \"items\": []}",
    "{\"pageToken\": \"CiAKGjBpNDd2Nmp2Zml2cXRwYjBpOXA\"}",
    "curl -i -u 'test:test' https://localhost",
    "curl -sL --user \"$1:$2\" \"$3\"",
    "curl -u <user:password> https://test.com/endpoint",
    "curl -u username:token https://test.com",
    "curl --user \"${USERNAME}:${PASSWORD}\" https://test.com",
    "docker run -u 1000:1000 -v /data:/data image:latest",
    "sudo -u postgres psql -c 'select 1'",
    "git push -u origin feature/auth-token-refresh",
    "thread 'main' panicked at src/saga/step.rs:142:17:\ncalled `Option::unwrap()` on a `None` value",
    "Traceback (most recent call last):\n  File \"/app/agent/tools.py\", line 88, in call_tool\n    token = self._refresh_token()\nKeyError: 'access_token'",
    "segfault at 0x00007f3a2b1c4d5e ip 0x000055d1c3a2b4f0 sp 0x00007ffd5e8c3a10",
    "{\"name\": \"get_weather\", \"parameters\": {\"api_key\": {\"type\": \"string\", \"description\": \"The API key to use\"}, \"password\": {\"type\": \"string\", \"minLength\": 12}}}",
    "| Field | Type |\n|---|---|\n| token | string |\n| secret_ref | string |",
    "The JWT header is eyJhbGciOiJIUzI1NiJ9 when decoded from base64.",
    "Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in your environment.",
    "Ask for an AIza key, an sk-ant key, or a ghp_ token from the vault.",
    "{\"args\": \"{\\\"query\\\": \\\"weather in Paris\\\", \\\"max_tokens\\\": 256}\"}",
];

fn code_snippets() -> Vec<String> {
    vec![
        r#"use std::collections::HashMap;

/// Counts tokens per message.
pub fn count_tokens(messages: &[Message], tokenizer: &Tokenizer) -> usize {
    let mut total = 0;
    for m in messages {
        let tokens = tokenizer.encode(&m.content);
        total += tokens.len();
    }
    total
}

#[derive(Debug, Deserialize)]
struct Config {
    api_key: Option<String>,
    auth_token_env: String,
    max_tokens: u32,
}
"#
        .to_owned(),
        r#"import os
import hashlib

API_KEY = os.environ.get("OPENAI_API_KEY")
SECRET_KEY = os.getenv("DJANGO_SECRET_KEY", default=None)

def hash_password(password: str, salt: bytes) -> str:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 100_000).hex()

def authorize(request):
    token = request.headers.get("Authorization", "").removeprefix("Bearer ")
    if not token:
        raise PermissionError("missing token")
    return verify_token(token)
"#
        .to_owned(),
        r#"CREATE TABLE api_keys (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    key_hash BYTEA NOT NULL,
    token_prefix TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO api_keys (key_hash, token_prefix) VALUES (digest($1, 'sha256'), $2);
"#
        .to_owned(),
        r#"const auth = require('./auth');
const secret = process.env.JWT_SECRET;
app.post('/login', async (req, res) => {
  const { username, password } = req.body;
  const token = await auth.sign({ sub: username }, secret, { expiresIn: '1h' });
  res.json({ token_type: 'Bearer', expires_in: 3600 });
});
"#
        .to_owned(),
        r#"steps:
  - name: Deploy
    env:
      API_TOKEN: ${{ secrets.API_TOKEN }}
      DB_PASSWORD: ${{ secrets.DB_PASSWORD }}
    run: ./deploy.sh --token "$API_TOKEN"
"#
        .to_owned(),
    ]
}

fn negatives() -> Vec<(String, String)> {
    let mut rng = Rng::new(0xC1EA_17E5);
    let mut out: Vec<(String, String)> =
        FIXED_NEGATIVES.iter().map(|s| ("fixed".to_owned(), (*s).to_owned())).collect();
    out.extend(code_snippets().into_iter().map(|s| ("code".to_owned(), s)));
    for _ in 0..200 {
        out.push(("prose".to_owned(), prose(&mut rng)));
    }
    for _ in 0..30 {
        let digest = rng.string(HEX, 64);
        out.push(("sha256".to_owned(), format!("sha256:{digest}")));
        out.push(("idempotency".to_owned(), format!(r#"{{"idempotency_key": "{digest}", "step": "charge"}}"#)));
        out.push(("git-sha".to_owned(), format!("commit {}\nAuthor: Jane <jane@example.com>", rng.string(HEX, 40))));
        out.push(("uuid".to_owned(), format!("run_id={} saga={}", rng.uuid(), rng.uuid())));
        out.push((
            "tool-call".to_owned(),
            serde_json::json!({
                "tool": "search",
                "args": {"query": prose(&mut rng), "max_tokens": rng.range(16, 4096), "idempotency_key": rng.string(HEX, 64)},
                "sha256": rng.string(HEX, 64),
                "request_id": rng.uuid(),
            })
            .to_string(),
        ));
        out.push((
            "semver".to_owned(),
            format!(
                "upgraded serde from {}.{}.{} to {}.{}.{}",
                rng.below(3),
                rng.below(300),
                rng.below(30),
                rng.below(3),
                rng.below(300),
                rng.below(30)
            ),
        ));
        out.push((
            "url".to_owned(),
            format!(
                "https://docs.example.com/v{}/guide/{}?page={}#auth",
                rng.below(5),
                rng.string(b"abcdefghij", 8),
                rng.below(100)
            ),
        ));
        out.push(("path".to_owned(), format!("/var/lib/agent/{}/{}.json", rng.uuid(), rng.string(HEX, 16))));
    }
    for _ in 0..5 {
        let bytes: Vec<u8> = (0..30_000).map(|_| rng.next() as u8).collect();
        out.push((
            "base64-image".to_owned(),
            format!("![plot](data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAA{})", base64(&bytes, B64, true)),
        ));
    }
    out
}

#[test]
fn corpus_recall_and_false_positives() {
    let scrubber = Scrubber::new();

    let positives = positives();
    let mut missed = Vec::new();
    for case in &positives {
        let out = scrubber.scrub(&case.text);
        let left = survivors(&out, &case.needles);
        if !out.contains(REDACTED) || !left.is_empty() {
            missed.push(format!("{}: {:?}\n    -> {:?}\n    survivors {:?}", case.label, case.text, out, left));
        }
        assert_eq!(scrubber.scrub(&out), out, "not idempotent: {}", case.label);
    }

    let negatives = negatives();
    let mut false_positives = Vec::new();
    for (label, text) in &negatives {
        let out = scrubber.scrub(text);
        if out != *text {
            false_positives.push(format!("{label}: {text:?}\n    -> {out:?}\n    {:?}", scrubber.findings(text)));
        }
    }

    let caught = positives.len() - missed.len();
    println!(
        "positives: {} caught / {} total, recall {:.2}%",
        caught,
        positives.len(),
        100.0 * caught as f64 / positives.len() as f64
    );
    println!(
        "negatives: {} total, {} false positives ({} bytes of negative text)",
        negatives.len(),
        false_positives.len(),
        negatives.iter().map(|(_, t)| t.len()).sum::<usize>()
    );
    for m in &missed {
        println!("MISSED {m}");
    }
    for f in &false_positives {
        println!("FALSE POSITIVE {f}");
    }
    assert!(missed.is_empty(), "{} positives missed", missed.len());
    assert!(false_positives.is_empty(), "{} false positives", false_positives.len());
}

#[test]
fn every_positive_is_attributed_to_a_rule() {
    let scrubber = Scrubber::new();
    let mut rng = Rng::new(7);
    for secret in all_secrets(&mut rng) {
        let findings = scrubber.findings(&secret.snippet);
        assert!(!findings.is_empty(), "{}: {}", secret.kind, secret.snippet);
        for f in &findings {
            assert!(secret.snippet.get(f.range.clone()).is_some(), "{f:?} is not a char range");
        }
    }
}
