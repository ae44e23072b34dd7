//! The `saga` binary end to end: sagas in every state in a SQLite file, owned by a worker that
//! keeps running; the CLI reads next to it (list, show, stats, graph, the JSON forms), finds the
//! parked saga, reads why it parked, resolves it through a request the worker carries out, and
//! sees it finish. Outputs are snapshots (insta), with times masked.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use saga_runtime::prelude::*;
use saga_runtime::store::{SqliteOptions, SqliteStore};
use saga_runtime::{EncryptionKey, Keyring};
use serde::{Deserialize, Serialize};

/// A little world: what was reserved and charged.
#[derive(Default)]
struct Ledger {
    entries: Mutex<Vec<String>>,
    /// The refund endpoint answers 502 this many more times.
    refund_failures: Mutex<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    /// `complete`, `compensate` (the check fails for good) or `park` (and the refund fails).
    fate: String,
    cents: u64,
}

#[saga]
impl Order {
    #[step(compensate = refund)]
    async fn charge(&self, cx: &StepContext) -> StepResult<u64> {
        cx.resource::<Arc<Ledger>>().entries.lock().unwrap().push(format!("charged {}", self.cents));
        Ok(self.cents)
    }
    async fn refund(&self, cx: &StepContext, charge: &u64) -> StepResult<()> {
        let ledger = cx.resource::<Arc<Ledger>>();
        let mut failures = ledger.refund_failures.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            return Err(StepError::transient("the bank answered 502 Bad Gateway"));
        }
        ledger.entries.lock().unwrap().push(format!("refunded {charge}"));
        Ok(())
    }

    #[step(idempotent)]
    async fn check(&self, _cx: &StepContext, charge: &u64) -> StepResult<u64> {
        match self.fate.as_str() {
            "complete" => Ok(*charge),
            _ => Err(StepError::logical("the receipt names the wrong customer")),
        }
    }

    #[step(commit)]
    async fn ship(&self, _cx: &StepContext, check: &u64) -> StepResult<String> {
        Ok(format!("shipped for {check}"))
    }
}

fn runtime(store: impl CheckpointStore, ledger: &Arc<Ledger>) -> Runtime {
    Runtime::builder()
        .store(store)
        .resource(ledger.clone())
        .policy(Policy {
            reprompts: 0,
            model_tiers: 1,
            compensation_retries: 1,
            backoff: Backoff {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(2),
                jitter: Jitter::None,
                ..Backoff::default()
            },
            ..Policy::default()
        })
        .register::<Order>()
        .build()
}

/// Runs `saga --store <db> <args>`: (exit code, stdout, stderr).
fn saga(db: &Path, args: &[&str]) -> (i32, String, String) {
    saga_with_key(db, None, args)
}

/// Runs `saga --store <db> <args>` with `SAGA_KEY` set to `key`, or unset.
fn saga_with_key(db: &Path, key: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_saga"));
    command.arg("--store").arg(db).args(args).env_remove("SAGA_KEY");
    if let Some(key) = key {
        command.env("SAGA_KEY", key);
    }
    let output = command.output().expect("the saga binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Times and durations masked, so that snapshots are stable.
fn masked(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut line = line.to_owned();
        // `2026-12-02 05:01:04.969`
        while let Some(start) = find_time(&line) {
            line.replace_range(start..start + 23, "<time>");
        }
        // `+12 ms` / `+1.5 s` at the start of timeline lines.
        let trimmed = line.trim_start();
        if trimmed.starts_with('+') && trimmed.contains("  ") {
            let rest = trimmed.split_once("  ").map_or("", |(_, rest)| rest);
            line = format!("    +<t>  {rest}");
        }
        // How long an attempt took (`[took 3 ms]`).
        if let Some(at) = line.find("[took ") {
            let end = line[at..].find(']').map_or(line.len(), |e| at + e + 1);
            line.replace_range(at..end, "[took <d>]");
        }
        // Durations measured by the run (`"p50": 5`).
        for key in ["\"p50\": ", "\"p99\": ", "\"attempt_ms\": "] {
            if let Some(at) = line.find(key) {
                let start = at + key.len();
                let end = line[start..].find(|c: char| !c.is_ascii_digit()).map_or(line.len(), |e| start + e);
                line.replace_range(start..end, "<d>");
            }
        }
        out.push_str(&mask_millis(&line));
        out.push('\n');
    }
    out
}

fn find_time(line: &str) -> Option<usize> {
    let bytes = line.as_bytes();
    (0..bytes.len().saturating_sub(22)).find(|&i| {
        let s = &bytes[i..i + 23];
        s[4] == b'-'
            && s[7] == b'-'
            && s[10] == b' '
            && s[13] == b':'
            && s[16] == b':'
            && s[19] == b'.'
            && s.iter().enumerate().all(|(j, c)| matches!(j, 4 | 7 | 10 | 13 | 16 | 19) || c.is_ascii_digit())
    })
}

/// Epoch milliseconds (13 digits) and short durations in JSON and gantts.
fn mask_millis(line: &str) -> String {
    let mut out = String::new();
    let mut digits = String::new();
    for c in line.chars().chain(std::iter::once('\0')) {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        if digits.len() == 13 {
            out.push_str("<ms>");
        } else {
            out.push_str(&digits);
        }
        digits.clear();
        if c != '\0' {
            out.push(c);
        }
    }
    out
}

struct Fixture {
    _dir: tempfile::TempDir,
    db: PathBuf,
    ledger: Arc<Ledger>,
    worker_runtime: Runtime,
}

/// Three sagas (completed, compensated, parked), then a worker that owns the file.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sagas.db");
    let ledger = Arc::new(Ledger::default());
    {
        let runtime = runtime(SqliteStore::open(&db).await.unwrap(), &ledger);
        for fate in ["complete", "compensate"] {
            runtime
                .run_with_id(SagaId::new(format!("order-{fate}")), Order { fate: fate.into(), cents: 500 })
                .await
                .unwrap();
        }
        *ledger.refund_failures.lock().unwrap() = 2;
        let parked =
            runtime.run_with_id(SagaId::new("order-park"), Order { fate: "park".into(), cents: 700 }).await.unwrap();
        assert_eq!(parked.status(), Status::NeedsHuman);
    }
    let worker_runtime = runtime(SqliteStore::open(&db).await.unwrap(), &ledger);
    Fixture { _dir: dir, db, ledger, worker_runtime }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_finds_the_parked_saga_reads_why_resolves_it_and_sees_it_finish() {
    let fixture = fixture().await;
    let worker = fixture.worker_runtime.worker().poll_interval(Duration::from_millis(50)).spawn();
    let db = &fixture.db;

    let (code, list, _) = saga(db, &["list"]);
    assert_eq!(code, 0);
    insta::assert_snapshot!("list", masked(&list));

    let (code, parked, _) = saga(db, &["list", "--parked", "--format", "json"]);
    assert_eq!(code, 0);
    insta::assert_snapshot!("list_parked_json", masked(&parked));

    let (code, show, _) = saga(db, &["show", "order-park"]);
    assert_eq!(code, 0);
    insta::assert_snapshot!("show_parked", masked(&show));

    let (code, resolved, stderr) =
        saga(db, &["resolve", "order-park", "--note", "refunded by hand in the bank's console", "--wait"]);
    assert_eq!((code, stderr.as_str()), (0, ""), "{resolved}");
    assert_eq!(resolved, "request #1 done: resolve: the saga is compensated now\n");

    let (_, after, _) = saga(db, &["list", "--status", "needs_human"]);
    assert_eq!(after, "no saga matches\n");
    let (_, requests, _) = saga(db, &["requests", "--format", "json"]);
    insta::assert_snapshot!("requests_json", masked(&requests));
    let (_, show, _) = saga(db, &["show", "order-park"]);
    assert!(
        show.contains(
            "charge: compensated by hand (\"refunded by hand in the bank's console\"); the rollback continues"
        ),
        "{show}"
    );
    // Compensated after the human's resolve: explained by the failure that began the rollback.
    assert!(
        show.contains(
            "outcome: COMPENSATED (step `check` failed on attempt 1 (logical): the receipt names the wrong customer)"
        ),
        "{show}"
    );

    let (_, stats, _) = saga(db, &["stats", "--format", "json"]);
    insta::assert_snapshot!("stats_json", masked(&stats));
    assert_eq!(worker.shutdown().await.requests, 1, "the worker carried out the one request");
    assert_eq!(
        fixture.ledger.entries.lock().unwrap().clone(),
        ["charged 500", "charged 500", "refunded 500", "charged 700"],
        "the resolve refunded nothing itself (the human did)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pictures_and_bad_input() {
    let fixture = fixture().await;
    let db = &fixture.db;

    let (code, graph, _) = saga(db, &["graph", "order"]);
    assert_eq!(code, 0);
    insta::assert_snapshot!("graph_definition", graph);
    let (_, run, _) = saga(db, &["graph", "order-compensate"]);
    insta::assert_snapshot!("graph_run", run);
    let (code, run_json, _) = saga(db, &["graph", "order-compensate", "--format", "json"]);
    assert_eq!(code, 0);
    let run_json: serde_json::Value = serde_json::from_str(&run_json).unwrap();
    let states: Vec<(&str, &str, Option<&str>)> = run_json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["state"].as_str().unwrap(), s["compensation"].as_str()))
        .collect();
    assert_eq!(
        states,
        [("charge", "compensated", Some("refund")), ("check", "failed", None), ("ship", "pending", None)]
    );
    assert_eq!(run_json["mermaid"].as_str().unwrap(), run);
    let (code, _, error) = saga(db, &["list", "--format", "mermaid"]);
    assert_eq!(
        (code, error.as_str()),
        (1, "error: --format mermaid draws `show` (a gantt) and `graph`: use table or json here\n")
    );
    let (_, gantt, _) = saga(db, &["show", "order-compensate", "--format", "mermaid"]);
    insta::assert_snapshot!("show_gantt", masked(&gantt));

    let (code, _, error) = saga(db, &["show", "order-parc"]);
    assert_eq!(code, 1);
    assert_eq!(error, "error: no saga with id `order-parc` is stored; did you mean `order-park`?\n");
    // The start or the end of one id names it; of several, it asks for more.
    let (code, show, _) = saga(db, &["show", "park"]);
    assert_eq!(code, 0);
    assert!(show.starts_with("saga order-park (order v1,"), "{show}");
    let (code, _, error) = saga(db, &["show", "order"]);
    assert_eq!(code, 1);
    assert_eq!(
        error,
        "error: `order` is the start or the end of 3 saga ids (`order-park`, `order-compensate`, `order-complete`): give more of the id\n"
    );
    let (code, _, error) = saga(db, &["resume", "order-complete"]);
    assert_eq!(code, 1);
    assert_eq!(error, "error: saga `order-complete` cannot be resumed now: it is completed, not waiting for a human\n");
    let (code, _, error) = saga(&fixture._dir.path().join("nope.db"), &["list"]);
    assert_eq!(code, 1);
    assert!(error.starts_with("error: there is no store at"), "{error}");

    // A request with nobody to carry it out says so, and waits in the store.
    drop(fixture.worker_runtime);
    let (code, queued, _) = saga(db, &["resume", "order-park"]);
    assert_eq!(code, 0);
    assert!(
        queued.contains("no process owns the store now: it will be carried out when a worker opens it"),
        "{queued}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_owner_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sagas.db");
    let ledger = Arc::new(Ledger::default());
    let store = SqliteOptions::new(&db).exclusive(true).open().await.unwrap();
    let runtime = runtime(store, &ledger);
    runtime.run(Order { fate: "complete".into(), cents: 1 }).await.unwrap();
    let (code, _, error) = saga(&db, &["list"]);
    assert_eq!(code, 1);
    assert!(error.contains("is held exclusively by the process that owns it"), "{error}");
}

/// An encrypted store: without `SAGA_KEY` the list works and `show` gives each record's time,
/// kind and step with its payload sealed; with the key, the whole timeline; with a wrong key, a
/// clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_store_is_shown_sealed_without_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sagas.db");
    let hex = "ab".repeat(32);
    let keyring = Keyring::new(EncryptionKey::from_hex("ops", &hex).unwrap());
    let store = SqliteOptions::new(&db).encryption(keyring).open().await.unwrap();
    let ledger = Arc::new(Ledger::default());
    runtime(store, &ledger)
        .run_with_id(SagaId::new("order-secret"), Order { fate: "complete".into(), cents: 4242 })
        .await
        .unwrap();

    let (code, list, _) = saga(&db, &["list", "--format", "json"]);
    assert_eq!(code, 0);
    assert!(list.contains("\"id\": \"order-secret\""), "{list}");
    let (code, show, _) = saga(&db, &["show", "order-secret"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = show
        .lines()
        .skip(3)
        .take(8)
        .map(|l| l.trim_start().split_once("  ").map_or(l, |(_, r)| r.trim_start()))
        .collect();
    assert_eq!(
        lines,
        [
            "started [sealed]",
            "charge: attempt_started [sealed]",
            "charge: step_completed [sealed]",
            "check: attempt_started [sealed]",
            "check: step_completed [sealed]",
            "ship: attempt_started [sealed]",
            "ship: step_completed [sealed]",
            "finished [sealed]",
        ],
        "{show}"
    );
    assert!(!show.contains("4242"), "no payload leaks: {show}");
    assert!(show.contains("set SAGA_KEY=<key id>:<64 hex digits> to read them"), "{show}");

    let key = format!("ops:{hex}");
    let (code, show, _) = saga_with_key(&db, Some(&key), &["show", "order-secret"]);
    assert_eq!(code, 0);
    assert!(show.contains("outcome: COMPLETED"), "{show}");
    assert!(show.contains("ship: completed on attempt 1"), "{show}");
    let wrong = format!("ops:{}", "cd".repeat(32));
    let (code, _, error) = saga_with_key(&db, Some(&wrong), &["show", "order-secret"]);
    assert_eq!(code, 1);
    assert!(error.contains("cannot be decrypted with key `ops`: the key is wrong"), "{error}");
}

/// A schema of its own in the test server's database, dropped afterwards.
struct ScratchSchema {
    url: String,
    name: String,
}

impl ScratchSchema {
    fn new() -> ScratchSchema {
        let url = std::env::var("SAGA_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        ScratchSchema { url, name: format!("saga_cli_test_{}_{nanos}", std::process::id()) }
    }
}

impl Drop for ScratchSchema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                use sqlx::Connection;
                if let Ok(mut connection) = sqlx::PgConnection::connect(&url).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {name} CASCADE")))
                        .execute(&mut connection)
                        .await;
                }
            });
        })
        .join();
    }
}

/// Runs `saga --store <url> --schema <schema> <args>`: (exit code, stdout, stderr).
fn saga_pg(scratch: &ScratchSchema, schema: &str, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_saga"))
        .args(["--store", &scratch.url, "--schema", schema])
        .args(args)
        .env_remove("SAGA_KEY")
        .env_remove("SAGA_STORE")
        .output()
        .expect("the saga binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The same session on PostgreSQL: the CLI reads next to a worker, finds the parked saga,
/// resolves it through the worker, and sees it finish; a schema without a store is an error that
/// creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_the_operator_resolves_a_parked_saga_through_a_worker() {
    let scratch = ScratchSchema::new();
    let store =
        saga_runtime::store::PostgresStore::options(&scratch.url).schema(&scratch.name).connect().await.unwrap();
    let ledger = Arc::new(Ledger::default());
    let runtime = runtime(store, &ledger);
    runtime.run_with_id(SagaId::new("pg-complete"), Order { fate: "complete".into(), cents: 100 }).await.unwrap();
    *ledger.refund_failures.lock().unwrap() = 2;
    let parked = runtime.run_with_id(SagaId::new("pg-park"), Order { fate: "park".into(), cents: 300 }).await.unwrap();
    assert_eq!(parked.status(), Status::NeedsHuman);
    let worker = runtime.worker().poll_interval(Duration::from_millis(50)).spawn();

    let (code, list, error) = saga_pg(&scratch, &scratch.name, &["list", "--parked", "--format", "json"]);
    assert_eq!(code, 0, "{error}");
    assert!(list.contains("\"id\": \"pg-park\"") && !list.contains("pg-complete"), "{list}");
    let (code, show, _) = saga_pg(&scratch, &scratch.name, &["show", "pg-park"]);
    assert_eq!(code, 0);
    assert!(show.contains("charge: compensation `refund` of step `charge` failed on attempt 2 (transient): the bank answered 502 Bad Gateway"), "{show}");
    assert!(show.contains("outcome: NEEDS_HUMAN"), "{show}");
    let (code, resolved, error) =
        saga_pg(&scratch, &scratch.name, &["resolve", "pg-park", "--note", "refunded by hand", "--wait"]);
    assert_eq!((code, error.as_str()), (0, ""), "{resolved}");
    assert_eq!(resolved, "request #1 done: resolve: the saga is compensated now\n");
    let (_, show, _) = saga_pg(&scratch, &scratch.name, &["show", "pg-park"]);
    assert!(show.contains("outcome: COMPENSATED (step `check` failed on attempt 1 (logical)"), "{show}");
    assert_eq!(worker.shutdown().await.requests, 1, "the worker carried out the one request");
    assert_eq!(
        ledger.entries.lock().unwrap().clone(),
        ["charged 100", "charged 300"],
        "the human refunded, not the tool"
    );

    let missing = format!("{}_missing", scratch.name);
    let (code, _, error) = saga_pg(&scratch, &missing, &["list"]);
    assert_eq!(code, 1);
    assert!(error.contains(&format!("schema `{missing}` holds no saga store")), "{error}");
    use sqlx::Connection;
    let mut connection = sqlx::PgConnection::connect(&scratch.url).await.unwrap();
    let created: Option<String> = sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname = $1")
        .bind(&missing)
        .fetch_optional(&mut connection)
        .await
        .unwrap();
    assert_eq!(created, None, "reading created nothing");
}
