//! Durable formats, pinned: a journal written today must load tomorrow, and a toolchain or
//! library upgrade must never refuse an in-flight saga.
//!
//! - the JSON of every journal record kind;
//! - the hash chain of a journal, recomputed here independently of the library;
//! - the fingerprint of a fixed definition (`golden/saga.rs`, frozen);
//! - SQLite files written by schema 1 (the first release), migrated on open with every saga's
//!   journal, outcome and encryption intact, and files written by schema 2 (hash chains,
//!   ownership), opened as they are.

#[path = "golden/saga.rs"]
mod saga;

use std::path::{Path, PathBuf};
use std::time::Duration;

use saga::{Golden, Hold};
use saga_runtime::journal::{CompensationNext, Event, Next};
use saga_runtime::prelude::*;
use saga_runtime::store::{SagaQuery, SqliteStore, StoreError};
use saga_runtime::{EncryptionKey, Failure, FailureKind, Keyring};
use sha2::{Digest, Sha256};

/// The fingerprint schema 1 stored for `golden` version 3: the canonical walk of the definition
/// still computes it, so sagas checkpointed by the first release are resumed, not refused.
const GOLDEN_FINGERPRINT: &str = "9534e7c78a355667";

#[test]
fn the_fingerprint_of_a_fixed_definition_is_pinned() {
    let definition = Golden::definition();
    assert_eq!(definition.fingerprint(), GOLDEN_FINGERPRINT);
    let outputs: Vec<&str> = definition.steps().iter().map(|s| s.output_type()).collect();
    assert_eq!(
        outputs,
        ["Hold", "Vec < String >", "Option < (u64, String) >", "std :: collections :: BTreeMap < String, u64 >"]
    );
}

fn failure(step: &str, compensation: Option<&str>) -> Failure {
    Failure {
        step: step.to_owned(),
        compensation: compensation.map(str::to_owned),
        class: FailureClass::Transient,
        kind: FailureKind::Interrupted,
        attempt: 2,
        message: "the process stopped".to_owned(),
    }
}

/// Every record kind, as its JSON is stored (inside the sealed body of a journal row).
#[test]
fn every_record_kind_keeps_its_json() {
    let payload = |json: &str| -> saga_runtime::journal::Payload { json.as_bytes().into() };
    let cases: Vec<(Event, &str)> = vec![
        (
            Event::Started {
                saga: "golden".into(),
                version: 3,
                fingerprint: GOLDEN_FINGERPRINT.into(),
                deadline_ms: None,
            },
            r#"{"started":{"saga":"golden","version":3,"fingerprint":"9534e7c78a355667"}}"#,
        ),
        (
            Event::Started {
                saga: "golden".into(),
                version: 3,
                fingerprint: GOLDEN_FINGERPRINT.into(),
                deadline_ms: Some(1_700_000_600_000),
            },
            r#"{"started":{"saga":"golden","version":3,"fingerprint":"9534e7c78a355667","deadline_ms":1700000600000}}"#,
        ),
        (
            Event::AttemptStarted { step: 1, attempt: 2, tier: 1 },
            r#"{"attempt_started":{"step":1,"attempt":2,"tier":1}}"#,
        ),
        (
            Event::EffectLanded {
                step: 0,
                attempt: 1,
                name: "hold".into(),
                key: "ab12".into(),
                result: payload(r#""hold-7""#),
            },
            r#"{"effect_landed":{"step":0,"attempt":1,"name":"hold","key":"ab12","result":"hold-7"}}"#,
        ),
        (
            Event::LlmExchange { step: 1, attempt: 1, prompt: "Write".into(), response: "Dear".into() },
            r#"{"llm_exchange":{"step":1,"attempt":1,"prompt":"Write","response":"Dear"}}"#,
        ),
        (
            Event::StepCompleted { step: 0, attempt: 2, output: payload(r#"{"id":"hold-7","cents":700}"#) },
            r#"{"step_completed":{"step":0,"attempt":2,"output":{"id":"hold-7","cents":700}}}"#,
        ),
        (
            Event::StepFailed {
                step: 0,
                failure: failure("reserve", None),
                rejected_output: None,
                next: Next::Retry { delay: Duration::from_millis(1500) },
            },
            r#"{"step_failed":{"step":0,"failure":{"step":"reserve","compensation":null,"class":"Transient","kind":"Interrupted","attempt":2,"message":"the process stopped"},"rejected_output":null,"next":{"then":"retry","delay":{"secs":1,"nanos":500000000}}}}"#,
        ),
        (
            Event::StepFailed {
                step: 1,
                failure: failure("draft", None),
                rejected_output: Some(payload("[]")),
                next: Next::Restart {
                    from: 0,
                    requested: Some("reserve".into()),
                    note: None,
                    observation: Some(std::sync::Arc::new(serde_json::json!({"schema": 7}))),
                },
            },
            r#"{"step_failed":{"step":1,"failure":{"step":"draft","compensation":null,"class":"Transient","kind":"Interrupted","attempt":2,"message":"the process stopped"},"rejected_output":[],"next":{"then":"restart","from":0,"requested":"reserve","note":null,"observation":{"schema":7}}}}"#,
        ),
        (
            Event::StepFailed {
                step: 2,
                failure: failure("charge", None),
                rejected_output: None,
                next: Next::Blame { blamed: 0, tier: None, requested: None, note: None },
            },
            r#"{"step_failed":{"step":2,"failure":{"step":"charge","compensation":null,"class":"Transient","kind":"Interrupted","attempt":2,"message":"the process stopped"},"rejected_output":null,"next":{"then":"blame","blamed":0}}}"#,
        ),
        (
            Event::StepFailed {
                step: 2,
                failure: failure("charge", None),
                rejected_output: None,
                next: Next::Blame {
                    blamed: 2,
                    tier: Some(1),
                    requested: Some("notify".into()),
                    note: Some("`notify` runs after `charge`".into()),
                },
            },
            r#"{"step_failed":{"step":2,"failure":{"step":"charge","compensation":null,"class":"Transient","kind":"Interrupted","attempt":2,"message":"the process stopped"},"rejected_output":null,"next":{"then":"blame","blamed":2,"tier":1,"requested":"notify","note":"`notify` runs after `charge`"}}}"#,
        ),
        (
            Event::StepFailed { step: 3, failure: failure("notify", None), rejected_output: None, next: Next::Park },
            r#"{"step_failed":{"step":3,"failure":{"step":"notify","compensation":null,"class":"Transient","kind":"Interrupted","attempt":2,"message":"the process stopped"},"rejected_output":null,"next":{"then":"park"}}}"#,
        ),
        (Event::CompensationStarted { step: 0, attempt: 1 }, r#"{"compensation_started":{"step":0,"attempt":1}}"#),
        (Event::CompensationDone { step: 0, attempt: 1 }, r#"{"compensation_done":{"step":0,"attempt":1}}"#),
        (
            Event::CompensationFailed {
                step: 0,
                failure: failure("reserve", Some("release")),
                next: CompensationNext::Park,
            },
            r#"{"compensation_failed":{"step":0,"failure":{"step":"reserve","compensation":"release","class":"Transient","kind":"Interrupted","attempt":2,"message":"the process stopped"},"next":{"then":"park"}}}"#,
        ),
        (Event::Notified, r#""notified""#),
        (Event::Paged, r#""paged""#),
        (Event::Finished { status: Status::Compensated }, r#"{"finished":{"status":"Compensated"}}"#),
        (Event::Resumed, r#""resumed""#),
        (
            Event::Resolved { step: 0, note: "released by hand".into() },
            r#"{"resolved":{"step":0,"note":"released by hand"}}"#,
        ),
        (Event::Reminded, r#""reminded""#),
        (
            Event::OrphanRemoved { kind: "branch".into(), resource: "agent/x/1".into() },
            r#"{"orphan_removed":{"kind":"branch","resource":"agent/x/1"}}"#,
        ),
        (
            Event::Cancelled { step: 1, reason: "not needed".into() },
            r#"{"cancelled":{"step":1,"reason":"not needed"}}"#,
        ),
        (
            Event::Throttled { step: 0, attempt: 2, compensation: false, downstream: "bank".into(), waited_ms: 1250 },
            r#"{"throttled":{"step":0,"attempt":2,"compensation":false,"downstream":"bank","waited_ms":1250}}"#,
        ),
    ];
    for (event, json) in cases {
        assert_eq!(serde_json::to_string(&event).unwrap(), json, "{}", event.kind());
        assert_eq!(serde_json::from_str::<Event>(json).unwrap(), event, "{json} reads back");
    }
}

fn field(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

/// The chain of a journal, recomputed from the rows as stored by the formula the docs give:
/// `genesis = SHA-256("saga-runtime/journal/v2\0" ‖ id ‖ name ‖ version ‖ fingerprint ‖ sealed
/// input)` and `hash = SHA-256(previous ‖ seq ‖ at ‖ epoch ‖ kind ‖ step ‖ sealed body)`,
/// strings and byte strings length-prefixed, integers little-endian.
#[tokio::test]
async fn the_hash_chain_follows_the_documented_formula() {
    let store = MemoryStore::new();
    let runtime = Runtime::builder().store(store.clone()).policy(quick()).build();
    let outcome =
        runtime.run_with_id(SagaId::new("chain"), Golden { mode: "complete".into(), amount: 3 }).await.unwrap();
    assert!(outcome.is_completed());
    let stored = store.load(&SagaId::new("chain")).await.unwrap().unwrap();
    let summary = &stored.summary;
    let mut hasher = Sha256::new();
    hasher.update(b"saga-runtime/journal/v2\0");
    field(&mut hasher, b"chain");
    field(&mut hasher, b"golden");
    hasher.update(3u32.to_le_bytes());
    field(&mut hasher, GOLDEN_FINGERPRINT.as_bytes());
    field(&mut hasher, &stored.input);
    let mut prev: [u8; 32] = hasher.finalize().into();
    for row in &stored.records {
        let mut hasher = Sha256::new();
        hasher.update(prev);
        hasher.update(row.seq.to_le_bytes());
        hasher.update(row.at_ms.to_le_bytes());
        hasher.update(row.epoch.to_le_bytes());
        field(&mut hasher, row.kind.as_bytes());
        match &row.step {
            Some(step) => {
                hasher.update([1]);
                field(&mut hasher, step.as_bytes());
            }
            None => hasher.update([0]),
        }
        field(&mut hasher, &row.body);
        prev = hasher.finalize().into();
        assert_eq!(row.hash, prev, "record {} ({})", row.seq, row.kind);
        assert_eq!(row.body[0], 0x00, "a plaintext body starts with 0x00");
    }
    assert_eq!(summary.head, prev, "the saga row keeps the head of the chain");
    assert_eq!(summary.records, stored.records.len() as u64);
}

fn quick() -> Policy {
    Policy {
        backoff: Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(2),
            jitter: Jitter::None,
            ..Backoff::default()
        },
        ..Policy::default()
    }
}

fn fixture(name: &str, dir: &Path) -> PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name);
    let to = dir.join(name);
    std::fs::copy(from, &to).unwrap();
    to
}

fn golden_key() -> Keyring {
    Keyring::new(EncryptionKey::new("golden-key", [7; 32]).unwrap())
}

/// The schema the store writes today.
const SCHEMA_NOW: i64 = 4;

/// A file written by an earlier release: opening migrates it (for schema 1: hash chains
/// computed, due times set, the encryption marker kept), every saga keeps its outcome and
/// journal, and the one a crash interrupted is recovered.
async fn a_stored_file_opens(name: &str, keys: Option<Keyring>) {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(name, dir.path());
    let before = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT count(*) FROM journal", [], |r| r.get::<_, i64>(0))
        .unwrap();
    let mut options = SqliteStore::options(&path);
    if let Some(keys) = keys {
        options = options.encryption(keys);
    }
    let runtime = Runtime::builder().store(options.open().await.unwrap()).policy(quick()).register::<Golden>().build();
    let listed: Vec<(String, Status, String)> = runtime
        .list_page(&SagaQuery::new())
        .await
        .unwrap()
        .sagas
        .into_iter()
        .map(|s| (s.id.to_string(), s.status, s.fingerprint))
        .collect();
    assert_eq!(listed.len(), 4);
    assert!(listed.iter().all(|(_, _, fingerprint)| fingerprint == GOLDEN_FINGERPRINT));

    let completed = runtime
        .run_with_id(SagaId::new("golden-complete"), Golden { mode: "complete".into(), amount: 7 })
        .await
        .unwrap();
    let output = completed.output().expect("completed");
    assert_eq!(output.reserve, Hold { id: "hold-7".into(), cents: 700 });
    assert_eq!(output.draft, ["receipt for hold-7", "700 cents"]);
    assert_eq!(output.notify.get("charged"), Some(&700));
    assert_eq!(completed.report().levels(), [Level::Retry]);
    let journal = runtime.journal(&SagaId::new("golden-complete")).await.unwrap();
    assert_eq!(journal.len(), 14);
    assert!(
        journal
            .iter()
            .any(|r| matches!(&r.event, Event::LlmExchange { response, .. } if response.contains("[redacted]")))
    );

    let compensated = runtime
        .run_with_id(SagaId::new("golden-compensate"), Golden { mode: "compensate".into(), amount: 7 })
        .await
        .unwrap();
    assert_eq!(compensated.status(), Status::Compensated);
    assert_eq!(compensated.failure().unwrap().step, "draft");
    let parked =
        runtime.run_with_id(SagaId::new("golden-park"), Golden { mode: "park".into(), amount: 7 }).await.unwrap();
    assert_eq!(parked.status(), Status::NeedsHuman);
    assert_eq!(parked.failure().unwrap().compensation.as_deref(), Some("release"));

    let recovery = runtime.recover().await.unwrap();
    assert_eq!(recovery.resumed, [(SagaId::new("golden-interrupt"), Status::Completed)]);
    assert_eq!(recovery.parked, [SagaId::new("golden-park")]);
    let journal = runtime.journal(&SagaId::new("golden-interrupt")).await.unwrap();
    assert!(
        journal.iter().any(|r| matches!(&r.event, Event::StepFailed { failure, .. } if failure.kind == FailureKind::Interrupted && failure.step == "draft")),
        "the attempt the crash cut off is recorded as interrupted"
    );
    drop(runtime);

    let connection = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = connection.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, SCHEMA_NOW);
    let after: i64 = connection.query_row("SELECT count(*) FROM journal", [], |r| r.get(0)).unwrap();
    assert!(after > before, "the interrupted saga went on ({before} -> {after} records)");
    let unchained: i64 =
        connection.query_row("SELECT count(*) FROM journal WHERE length(hash) <> 32", [], |r| r.get(0)).unwrap();
    assert_eq!(unchained, 0, "every record of the file is chained");
    let retention: i64 = connection
        .query_row("SELECT count(*) FROM sqlite_master WHERE name IN ('tombstones', 'sagas_finished')", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(retention, 2, "schema 3 adds the tombstones and the index of finished sagas");
}

#[tokio::test]
async fn a_schema_1_file_is_migrated_and_keeps_its_sagas() {
    a_stored_file_opens("v1-plain.db", None).await;
}

#[tokio::test]
async fn a_schema_2_file_opens_and_keeps_its_sagas() {
    a_stored_file_opens("v2-plain.db", None).await;
}

#[tokio::test]
async fn a_sealed_schema_1_file_is_migrated_and_stays_sealed() {
    a_stored_file_opens("v1-sealed.db", Some(golden_key())).await;
    opened_without_its_key("v1-sealed.db").await;
}

#[tokio::test]
async fn a_sealed_schema_2_file_opens_and_stays_sealed() {
    a_stored_file_opens("v2-sealed.db", Some(golden_key())).await;
    opened_without_its_key("v2-sealed.db").await;
}

/// Opened without its key, a sealed file reads (payloads stay sealed) and writes nothing.
async fn opened_without_its_key(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(name, dir.path());
    let store = SqliteStore::open(&path).await.unwrap();
    assert!(store.is_read_only());
    let runtime = Runtime::builder().store(store).register::<Golden>().build();
    let listed = runtime.list().await.unwrap();
    assert_eq!(listed.len(), 4, "the rows are listed without a key");
    let error = runtime.journal(&SagaId::new("golden-complete")).await.unwrap_err();
    assert!(
        error.to_string().contains("it is encrypted with key `golden-key` and the store was opened without a keyring"),
        "{error}"
    );
    let error = runtime.run(Golden { mode: "complete".into(), amount: 1 }).await.unwrap_err();
    let RuntimeError::Store { error: StoreError::ReadOnly { reason, .. }, .. } = &error else {
        panic!("expected a read-only store, got {error}")
    };
    assert!(reason.starts_with("it holds encrypted sagas and was opened without a keyring"), "{reason}");
}
