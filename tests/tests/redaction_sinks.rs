//! No credential reaches any sink: the journal (failure messages, model exchanges,
//! observations, step names blamed at run time), the report, the incidents handed to the notifier and the pager, `tracing`
//! events, the timeline, and the panic messages of steps and compensations, which Rust's panic
//! hook would print raw. Ordinary prompt text comes through untouched. In a test binary of its
//! own: it installs a tracing subscriber for the whole process and runs itself as a child.

use std::io::Write;
use std::sync::{Arc, Mutex};

use saga_runtime::journal::{Event, Timeline};
use saga_runtime::prelude::*;
use saga_runtime::{Redacted, Scrubber};
use serde::{Deserialize, Serialize};

/// The formats and evasions an audit found leaking, each with the secret that must not survive.
fn secrets() -> Vec<(&'static str, String, String)> {
    let aws_secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ9aLm3kT2";
    let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZ2VudC03IiwiaWF0IjoxNzAwMDAwMDAwfQ.Xk2p9Qm4vTz8LqW1sYb3NcR7dJf0HgK6aE5uIoPyS0w";
    let pem_body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKjMzEfYyjiWA4R4";
    let hex40 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b";
    vec![
        ("aws secret access key", format!("aws_secret_access_key = {aws_secret}"), aws_secret.to_owned()),
        ("bare jwt", format!("the id token was {jwt}"), jwt.to_owned()),
        ("jwt as id_token", format!(r#"{{"id_token": "{jwt}"}}"#), jwt.to_owned()),
        (
            "pem private key",
            format!("-----BEGIN PRIVATE KEY-----\n{pem_body}\n-----END PRIVATE KEY-----"),
            pem_body.to_owned(),
        ),
        ("hex token in json", format!(r#"{{"token": "{hex40}"}}"#), hex40.to_owned()),
        ("DB_PASSWORD", "DB_PASSWORD=Qx7!vR2#pL9mZ4".to_owned(), "Qx7!vR2#pL9mZ4".to_owned()),
        ("client_secret", "client_secret=8dF3kQ9zLm2Vb7Xn".to_owned(), "8dF3kQ9zLm2Vb7Xn".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", format!("AWS_SECRET_ACCESS_KEY={aws_secret}"), aws_secret.to_owned()),
        (
            "SENDGRID_API_KEY",
            "SENDGRID_API_KEY=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".to_owned(),
            "TwL2iGABf9DHoTf-09kqeF8tAmbihYzrnopKc-1s5cr".to_owned(),
        ),
        (
            "presigned url",
            "https://bucket.s3.amazonaws.com/a.txt?X-Amz-Signature=2f8c3e9d1a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d".to_owned(),
            "2f8c3e9d1a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d".to_owned(),
        ),
        ("url password, empty user", "redis://:Zk8mQ2xV9pL4@cache:6379".to_owned(), "Zk8mQ2xV9pL4".to_owned()),
        ("url password with / and @", "postgres://app:pa/ss@w0rd9X@db:5432/app".to_owned(), "pa/ss@w0rd9X".to_owned()),
        (
            "split by a newline",
            "key sk-ant-api03-AbCdEfGhIjKl\nMnOpQrStUvWxYz0123456789".to_owned(),
            "MnOpQrStUvWxYz0123456789".to_owned(),
        ),
        (
            "nested json escaping",
            r#"{"tool_call": "{\"api_key\":\"hX9vQ2mZ7kL4pR8w\"}"}"#.to_owned(),
            "hX9vQ2mZ7kL4pR8w".to_owned(),
        ),
        ("url-encoded bearer", "Authorization: Bearer%20tKq9Zx7LmV2pR8wN4bY6".to_owned(), "tKq9Zx7LmV2pR8wN4bY6".to_owned()),
        (
            "url-encoded url",
            "postgres%3A%2F%2Fadmin%3AUy7Rt2Qp9Vm4%40db%3A5432".to_owned(),
            "Uy7Rt2Qp9Vm4".to_owned(),
        ),
        ("\\u002d escapes", r"sk\u002dproj\u002dT8kQ2xL9mV4pR7wZ3nB6yC1dF5gH0jK".to_owned(), "T8kQ2xL9mV4pR7wZ3nB6yC1dF5gH0jK".to_owned()),
        ("a Redacted value of the input, quoted verbatim", "the vendor said: unknown key tok-VENDOR-0001".to_owned(), "tok-VENDOR-0001".to_owned()),
    ]
}

/// Ordinary prompt text that must come through unchanged.
const PROSE: &[&str] = &[
    "Count each token separately",
    "token generation is slow today",
    "Use Basic authentication for the admin API",
    "pin sk-learn-compatible-pipeline to 1.4",
    "password: field must be at least 12 characters",
    "cd pwd=/home/agent/work",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Leaky {
    vendor_key: Redacted<String>,
}

#[saga]
impl Leaky {
    /// Fails once per format (each failure message carries one), records every format and the
    /// prose in model exchanges, surfaces one in an environmental observation, and panics with
    /// one; then succeeds.
    #[step(compensate = undo)]
    async fn call(&self, cx: &StepContext) -> StepResult<u32> {
        let all = secrets();
        let attempt = cx.attempt() as usize;
        if attempt == 1 {
            for (_, text, _) in &all {
                cx.record_llm(text, &format!("{text} / {}", PROSE.join(" / ")));
            }
            cx.record_llm(&PROSE.join("\n"), "ok");
            return Err(StepError::environmental(format!("the vendor changed: {}", all[0].1)).with_observation(
                serde_json::json!({ "config": all[4].1, "password": "Qx7!vR2#pL9mZ4", "note": all[10].1 }),
            ));
        }
        if attempt == 2 {
            panic!("the client blew up holding {}", all[1].1);
        }
        match all.get(attempt - 3) {
            Some((_, text, _)) => Err(StepError::transient(format!("503: {text}"))),
            None => Ok(7),
        }
    }
    async fn undo(&self, _cx: &StepContext, _n: &u32) -> StepResult<()> {
        panic!("undo failed with {}", secrets()[5].1)
    }

    /// Fails for good, blaming a "step" whose name (picked at run time, by a model say) is a
    /// credential: the blame is not followed, and the name is shown scrubbed.
    #[step(idempotent)]
    async fn fail(&self, _cx: &StepContext, call: &u32) -> StepResult<u32> {
        Err(StepError::logical(format!("rejected {call}: {}", secrets()[2].1)).blame(secrets()[6].1.clone()))
    }
}

/// Everything written to the test's tracing subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn leaks(haystack: &str) -> Vec<&'static str> {
    secrets().into_iter().filter(|(_, _, secret)| haystack.contains(secret.as_str())).map(|(name, _, _)| name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_any_sink() {
    if std::env::var_os("SAGA_REDACTION_CHILD").is_some() {
        return child().await;
    }
    // In a child, so that its stderr (where a panic hook prints) is captured whole.
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "no_secret_reaches_any_sink", "--nocapture", "--test-threads=1"])
        .env("SAGA_REDACTION_CHILD", "1")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("CHILD DONE"), "{stdout}");
    assert!(stderr.contains("panicked at"), "the panics were printed: {stderr}");
    assert!(stderr.contains("saga-runtime caught it"), "{stderr}");
    assert_eq!(leaks(&stderr), Vec::<&str>::new(), "panic messages on stderr:\n{stderr}");
}

async fn child() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let incidents = Arc::new(Mutex::new(Vec::<String>::new()));
    let (notified, paged) = (incidents.clone(), incidents.clone());
    let runtime = Runtime::builder()
        .policy(Policy {
            transient_retries: 30,
            compensation_retries: 0,
            backoff: Backoff {
                initial: std::time::Duration::from_millis(1),
                max: std::time::Duration::from_millis(2),
                jitter: Jitter::None,
                ..Backoff::default()
            },
            ..Policy::default()
        })
        .scrubber(Scrubber::new())
        .notifier(move |i: &Incident| notified.lock().unwrap().push(format!("{i} {i:?}")))
        .pager(move |i: &Incident| paged.lock().unwrap().push(format!("{i} {i:?}")))
        .build();
    let saga_id = SagaId::new("leaky");
    let outcome = runtime
        .run_with_id(saga_id.clone(), Leaky { vendor_key: Redacted::new("tok-VENDOR-0001".into()) })
        .await
        .unwrap();
    assert_eq!(outcome.status(), Status::NeedsHuman, "{outcome:?}");

    let journal = runtime.journal(&saga_id).await.unwrap();
    let timeline: Vec<String> =
        journal.iter().map(|record| Timeline { definition: Leaky::definition(), record }.to_string()).collect();
    let sinks = [
        ("the journal", format!("{journal:?}")),
        ("the timeline", timeline.join("\n")),
        ("the report", format!("{:?}", outcome.report())),
        ("the outcome", format!("{outcome:?}")),
        ("the incidents", incidents.lock().unwrap().join("\n")),
        ("tracing", String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned()),
    ];
    for (sink, text) in &sinks {
        assert!(!text.is_empty(), "{sink} is empty");
        assert_eq!(leaks(text), Vec::<&str>::new(), "{sink} leaks:\n{text}");
    }
    let exchanges: Vec<&str> = journal
        .iter()
        .filter_map(|r| match &r.event {
            Event::LlmExchange { prompt, .. } => Some(prompt.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(*exchanges.last().unwrap(), PROSE.join("\n"), "ordinary prompt text is untouched");
    assert_eq!(exchanges.len(), secrets().len() + 1);
    let observation = journal.iter().find_map(|r| match &r.event {
        Event::StepFailed { next: saga_runtime::journal::Next::Restart { observation, .. }, .. } => observation.clone(),
        _ => None,
    });
    assert_eq!(observation.unwrap()["password"], "[redacted]", "an observation is scrubbed by its keys too");
    let blamed: Vec<String> = journal
        .iter()
        .filter_map(|r| match &r.event {
            Event::StepFailed { next: saga_runtime::journal::Next::Blame { requested, .. }, .. } => requested.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(blamed.len(), 3, "the unfollowed blame of each re-prompt of `fail`: {blamed:?}");
    assert!(blamed.iter().all(|name| name.starts_with("client_secret=") && name.contains("redacted")), "{blamed:?}");
    println!("CHILD DONE");
}
