//! `cargo bench --bench scrub`: nanoseconds per KiB for the texts the runtime
//! scrubs on every failure and model exchange.

use std::hint::black_box;
use std::time::{Duration, Instant};

use saga_runtime::redact::Scrubber;

struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const PLAIN_WORDS: &[&str] = &[
    "the",
    "customer",
    "asked",
    "for",
    "a",
    "refund",
    "because",
    "their",
    "order",
    "arrived",
    "late",
    "and",
    "damaged",
    "please",
    "summarize",
    "conversation",
    "then",
    "draft",
    "reply",
    "that",
    "apologizes",
    "offers",
    "discount",
    "on",
    "next",
    "purchase",
    "keep",
    "it",
    "short",
];

/// Prompt vocabulary full of words that wake up the keyword prefilter.
const PROMPT_WORDS: &[&str] = &[
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
    "step",
    "count",
    "limit",
    "cache",
    "Bearer",
    "credential",
    "access",
    "pipeline",
    "compensate",
    "rollback",
    "invoice",
    "4096",
    "sha256",
    "JSON",
    "is",
    "to",
    "of",
    "and",
];

fn prose(rng: &mut Lcg, words: &[&str], bytes: usize) -> String {
    let mut out = String::with_capacity(bytes + 64);
    while out.len() < bytes {
        out.push_str(rng.pick(words));
        out.push_str(match rng.below(14) {
            0 => ".\n",
            1 => ", ",
            _ => " ",
        });
    }
    out
}

fn tool_calls(rng: &mut Lcg, bytes: usize) -> String {
    let secrets = [
        r#""api_key": "sk-proj-Qx7vR2mN9pL4kT8wY3zB6cF1hJ5dG0sA2eU7iO4rV9nM3qW8xK1""#,
        r#""headers": {"Authorization": "Bearer ghp_R8mN2vQ7xL4kT9wY3zB6cF1hJ5dG0sA2eU7""#,
        r#""dsn": "postgres://app:S3cr3t-Pa55w0rd@db.internal:5432/orders""#,
    ];
    let mut calls = Vec::new();
    let mut size = 2;
    let mut i = 0;
    while size < bytes {
        let extra = if i % 20 == 7 { secrets[(i / 20) % secrets.len()] } else { r#""note": "none""# };
        let call = format!(
            r#"{{"id": "call_{i:04}", "tool": "http_request", "args": {{"url": "https://api.example.com/v1/orders/{}", "method": "GET", "max_tokens": 512, "idempotency_key": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", {extra}}}, "observation": "{}"}}"#,
            rng.below(100_000),
            prose(rng, PLAIN_WORDS, 200).replace('\n', "\\n"),
        );
        size += call.len() + 2;
        calls.push(call);
        i += 1;
    }
    format!("[{}]", calls.join(",\n"))
}

fn big_prompt(rng: &mut Lcg) -> String {
    let code = r#"
fn handle(req: Request) -> Result<Response> {
    let token = req.header("Authorization").ok_or(Error::Unauthorized)?;
    let claims = verify(token, &state.secret)?;
    let max_tokens = claims.limit.min(4096);
    Ok(Response::json(&serde_json::json!({"ok": true, "max_tokens": max_tokens})))
}
"#;
    let mut out = String::new();
    while out.len() < 100 * 1024 {
        out.push_str(&prose(rng, PROMPT_WORDS, 3000));
        out.push_str(code);
        out.push_str(&tool_calls(rng, 1500));
    }
    out.push_str("\nDB_PASSWORD=Xk9mPq2vLr7TzW4s\n");
    out
}

/// Mean time per call over at least `min` of wall time, after a warm-up.
fn time(scrubber: &Scrubber, text: &str, min: Duration) -> Duration {
    for _ in 0..3 {
        black_box(scrubber.scrub(black_box(text)));
    }
    let start = Instant::now();
    let mut iters = 0u32;
    while start.elapsed() < min {
        black_box(scrubber.scrub(black_box(text)));
        iters += 1;
    }
    start.elapsed() / iters
}

fn main() {
    let scrubber = Scrubber::new();
    let mut rng = Lcg(42);
    let cases = [
        ("(a) prose, no secrets", prose(&mut rng, PLAIN_WORDS, 16 * 1024)),
        ("(a') prompt prose, credential words, no secrets", prose(&mut rng, PROMPT_WORDS, 16 * 1024)),
        ("(b) JSON tool calls, a few secrets", tool_calls(&mut rng, 16 * 1024)),
        ("(c) 100 KB prompt (prose+code+JSON, 1 secret)", big_prompt(&mut rng)),
        (
            "(d) one-line failure message, 1 secret",
            "step `charge` failed: 401 from https://api.stripe.com (key sk_live_51Hq8xYz2eZvKYlo2C0a1b2c3d4e5)"
                .to_owned(),
        ),
    ];
    let min = Duration::from_millis(if cfg!(debug_assertions) { 50 } else { 400 });
    println!("{:<50} {:>9} {:>12} {:>10} {:>9}", "input", "size", "per call", "ns/KiB", "redacted");
    for (name, text) in &cases {
        let per_call = time(&scrubber, text, min);
        let kib = text.len() as f64 / 1024.0;
        let redactions = scrubber.scrub(text).matches(saga_runtime::redact::REDACTED).count();
        println!(
            "{:<50} {:>7.1}KiB {:>10.1}µs {:>10.0} {:>9}",
            name,
            kib,
            per_call.as_secs_f64() * 1e6,
            per_call.as_nanos() as f64 / kib,
            redactions,
        );
    }
}
