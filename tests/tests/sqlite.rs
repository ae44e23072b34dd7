//! The embedded SQLite store: checkpoints that survive the process, recovery, resolution by
//! a human, versioning, bad input (each a clear error that changes nothing), and secrets at
//! rest. These tests use real time (tiny backoffs): a writer thread and a paused clock do not
//! mix.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use saga_runtime::journal::Event;
use saga_runtime::prelude::*;
use saga_runtime::store::{SqliteStore, StoreError};
use saga_runtime::{EncryptionKey, FailureKind, Keyring, Redacted};
use serde::{Deserialize, Serialize};

fn fast() -> Policy {
    Policy {
        backoff: Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(4),
            jitter: Jitter::None,
            ..Backoff::default()
        },
        ..Policy::default()
    }
}

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("sagas.db")
}

async fn runtime_on(path: &Path, harness: &Harness) -> Runtime {
    Runtime::builder()
        .store(SqliteStore::open(path).await.unwrap())
        .policy(fast())
        .resource(harness.clone())
        .register::<ReleasePr>()
        .build()
}

/// A completed saga is on disk: reopening the file gives the same journal, and `run_with_id`
/// returns the stored outcome without running anything.
#[tokio::test]
async fn a_saga_on_sqlite_is_checkpointed_and_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let harness = Harness::with_script(Script::new().then("comment", transient(1)));
    let runtime = runtime_on(&db(&dir), &harness).await;
    let first = runtime.run_with_id(SagaId::new("pr-1"), ReleasePr::new()).await.unwrap();
    assert!(first.is_completed());
    let journal = runtime.journal(&SagaId::new("pr-1")).await.unwrap();
    drop(runtime);

    let runtime = runtime_on(&db(&dir), &harness).await;
    assert_eq!(runtime.journal(&SagaId::new("pr-1")).await.unwrap(), journal, "the same journal after reopening");
    let again = runtime.run_with_id(SagaId::new("pr-1"), ReleasePr::new()).await.unwrap();
    assert_eq!(harness.log().len(), 6, "nothing ran again");
    assert_eq!(again.output().unwrap().announce, first.output().unwrap().announce);
    assert_eq!(again.report(), first.report());
    let listed = runtime.list().await.unwrap();
    assert_eq!((listed.len(), listed[0].status, listed[0].stage.as_str()), (1, Status::Completed, "completed"));
    assert_eq!(listed[0].records, journal.len() as u64);
}

/// A run cut off in the middle of a step (the future dropped, as a crash would) is resumed by
/// `recover` on a fresh runtime: checkpointed steps do not run again, and the cut-off attempt
/// is recorded as interrupted (transient, level 0) and run again under the same key.
#[tokio::test]
async fn recover_resumes_an_interrupted_saga_without_rerunning_checkpointed_steps() {
    let dir = tempfile::tempdir().unwrap();
    let harness = Harness::with_script(Script::new().then("comment", [Plan::Hang]));
    let runtime = runtime_on(&db(&dir), &harness).await;
    let cut =
        tokio::time::timeout(Duration::from_millis(300), runtime.run_with_id(SagaId::new("pr-2"), ReleasePr::new()))
            .await;
    assert!(cut.is_err(), "the run hangs in `comment` and is cut off");
    drop(runtime);

    let runtime = runtime_on(&db(&dir), &harness).await;
    let recovery = runtime.recover().await.unwrap();
    assert_eq!(recovery.resumed, [(SagaId::new("pr-2"), Status::Completed)]);
    assert!(recovery.failed.is_empty() && recovery.unregistered.is_empty() && recovery.parked.is_empty());
    assert_eq!(
        harness.log(),
        strings(&["open_pr#1", "run_tests#1", "comment#1", "comment#2", "merge#1", "announce#1"])
    );
    assert_eq!(harness.key_of("comment#1"), harness.key_of("comment#2"));
    let journal = runtime.journal(&SagaId::new("pr-2")).await.unwrap();
    let interrupted: Vec<(String, u32)> = journal
        .iter()
        .filter_map(|r| match &r.event {
            Event::StepFailed { failure, .. } if failure.kind == FailureKind::Interrupted => {
                Some((failure.step.clone(), failure.attempt))
            }
            _ => None,
        })
        .collect();
    assert_eq!(interrupted, [("comment".to_owned(), 1)]);
    assert!(runtime.recover().await.unwrap().resumed.is_empty(), "nothing is left to recover");
}

/// A saga whose compensation failed for good stays parked across restarts; `recover` leaves
/// it parked, and `resolve` (a human closed the PR by hand) continues the rollback.
#[tokio::test]
async fn resolve_marks_a_parked_compensation_done_and_continues_the_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let stuck = vec![Plan::Fail(StepError::transient("GitHub is down")); 4];
    let harness = Harness::with_script(Script::new().then("merge", logical(4)).then("undo comment", stuck));
    let runtime = runtime_on(&db(&dir), &harness).await;
    let parked = runtime.run_with_id(SagaId::new("pr-3"), ReleasePr::new()).await.unwrap();
    assert!(matches!(parked, Outcome::NeedsHuman { .. }));
    drop(runtime);

    let runtime = runtime_on(&db(&dir), &harness).await;
    let recovery = runtime.recover().await.unwrap();
    assert_eq!(recovery.parked, [SagaId::new("pr-3")]);
    let status = runtime.resolve(&SagaId::new("pr-3"), "deleted the comment by hand").await.unwrap();
    assert_eq!(status, Status::Compensated);
    let log = harness.log();
    assert_eq!(
        &log[log.len() - 5..],
        strings(&["undo comment#1", "undo comment#2", "undo comment#3", "undo comment#4", "undo open_pr#1"])
    );
    let outcome = runtime.run_with_id(SagaId::new("pr-3"), ReleasePr::new()).await.unwrap();
    let Outcome::Compensated { report, failure, .. } = &outcome else {
        panic!("expected Compensated, got {outcome:?}")
    };
    assert_eq!(failure.step, "merge");
    assert_eq!(report.compensations[0].resolved_by_human.as_deref(), Some("deleted the comment by hand"));
    assert!(report.compensations.iter().all(|c| c.done));
    let error = runtime.resolve(&SagaId::new("pr-3"), "again").await.unwrap_err();
    assert_eq!(error.to_string(), "saga `pr-3` cannot be resolved: it is compensated, not waiting for a human");
}

/// The definition fingerprint is stored with each saga: resuming under another definition is
/// an error naming both versions, and the file is left as it was.
#[tokio::test]
async fn resuming_under_another_definition_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let harness = Harness::with_script(Script::new().then("announce", logical(4)));
    let runtime = runtime_on(&db(&dir), &harness).await;
    runtime.run_with_id(SagaId::new("pr-4"), ReleasePr::new()).await.unwrap();
    let before = runtime.journal(&SagaId::new("pr-4")).await.unwrap();
    drop(runtime);

    let store = SqliteStore::open(db(&dir)).await.unwrap();
    let v2 = Runtime::builder().store(store).register::<ReleasePrV2>().build();
    let error = v2.resume::<ReleasePrV2>(&SagaId::new("pr-4")).await.unwrap_err();
    let message = error.to_string();
    assert!(message.starts_with("saga `pr-4` was checkpointed by `release-pr` version 1 (fingerprint "), "{message}");
    assert!(message.contains("but this binary defines version 2"), "{message}");
    let recovery = v2.recover().await.unwrap();
    let [(id, error)] = recovery.failed.as_slice() else { panic!("one failure expected: {:?}", recovery.failed) };
    assert_eq!(id.as_str(), "pr-4");
    let message = error.to_string();
    assert!(
        message.starts_with("saga `pr-4` was checkpointed by `release-pr` version 1 (fingerprint ")
            && message.contains("and this runtime registers only version 2 (fingerprint ")
            && message.ends_with(
                "register the type that started it (keep the old definition as its own type); nothing was changed"
            ),
        "{message}"
    );
    assert_eq!(v2.journal(&SagaId::new("pr-4")).await.unwrap(), before, "nothing was changed");
}

/// An unknown saga id is a clear error.
#[tokio::test]
async fn an_unknown_saga_id_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime_on(&db(&dir), &Harness::default()).await;
    let error = runtime.resume::<ReleasePr>(&SagaId::new("nope")).await.unwrap_err();
    assert_eq!(error.to_string(), "no saga with id `nope` is stored: check the id, or start it with `run_with_id`");
    let error = runtime.resolve(&SagaId::new("nope"), "x").await.unwrap_err();
    assert!(matches!(error, RuntimeError::UnknownSaga { .. }));
}

/// One process at a time owns the file: a second opener gets a clear error (the lock is an
/// exclusive `flock` on the file, which a second open in the same process meets exactly as
/// another process would; `crash.rs` also holds it from a second process).
#[tokio::test]
async fn a_file_held_by_another_store_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let first = SqliteStore::open(db(&dir)).await.unwrap();
    let error = SqliteStore::open(db(&dir)).await.unwrap_err();
    assert!(matches!(error, StoreError::Locked { .. }));
    assert!(error.to_string().ends_with(
        "is in use by another process: one process at a time owns an embedded saga store, so stop the other one or use another file (PostgreSQL serves many workers)"
    ));
    drop(first);
    SqliteStore::open(db(&dir)).await.expect("the lock is released when the store is dropped");
}

/// A file written by a newer schema is refused, and left as it was.
#[tokio::test]
async fn a_file_of_a_newer_schema_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(db(&dir)).await.unwrap());
    rusqlite::Connection::open(db(&dir)).unwrap().pragma_update(None, "user_version", 99).unwrap();
    let bytes = std::fs::read(db(&dir)).unwrap();
    let error = SqliteStore::open(db(&dir)).await.unwrap_err();
    assert!(matches!(error, StoreError::NewerSchema { found: 99, supported: 4, .. }), "{error}");
    assert!(
        error.to_string().contains("has schema version 99, newer than version 4 that this build of saga-runtime knows")
    );
    assert_eq!(std::fs::read(db(&dir)).unwrap(), bytes, "nothing was changed");
}

/// A file that is not a database, or a database of another application, is refused and left
/// as it was.
#[tokio::test]
async fn a_file_that_is_not_a_saga_store_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("notes.txt");
    std::fs::write(&garbage, vec![0xAB; 8192]).unwrap();
    let error = SqliteStore::open(&garbage).await.unwrap_err();
    assert!(matches!(error, StoreError::NotADatabase { .. }), "{error}");
    assert_eq!(std::fs::read(&garbage).unwrap(), vec![0xAB; 8192]);

    let other = dir.path().join("app.db");
    rusqlite::Connection::open(&other).unwrap().execute_batch("CREATE TABLE users (id INTEGER)").unwrap();
    let error = SqliteStore::open(&other).await.unwrap_err();
    assert!(error.to_string().ends_with("is not a saga store (it holds another application's tables): use a separate file or database for sagas; nothing was changed"), "{error}");
    let tables: i64 = rusqlite::Connection::open(&other)
        .unwrap()
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 1);
}

/// A corrupted journal row is a clear error naming the saga and the record (it breaks the
/// journal's hash chain); the file is left as it was, and other sagas stay readable.
#[tokio::test]
async fn a_corrupted_row_is_a_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let harness = Harness::default();
    let runtime = runtime_on(&db(&dir), &harness).await;
    runtime.run_with_id(SagaId::new("good"), ReleasePr::new()).await.unwrap();
    runtime.run_with_id(SagaId::new("bad"), ReleasePr::new()).await.unwrap();
    drop(runtime);
    let connection = rusqlite::Connection::open(db(&dir)).unwrap();
    let seq: i64 = connection
        .query_row("SELECT min(seq) FROM journal WHERE saga_id = 'bad' AND kind = 'step_completed'", [], |r| r.get(0))
        .unwrap();
    connection
        .execute("UPDATE journal SET body = x'007b2273746570' WHERE saga_id = 'bad' AND seq = ?1", [seq])
        .unwrap();
    let before = rows(&connection, "bad");
    drop(connection);

    let runtime = runtime_on(&db(&dir), &harness).await;
    let error = runtime.run_with_id(SagaId::new("bad"), ReleasePr::new()).await.unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "record {seq} (step_completed) of saga `bad` cannot be read: it does not match the journal's hash chain: it was edited, replaced or moved, so restore the store from a backup"
        )),
        "{message}"
    );
    assert!(message.ends_with("; nothing was changed"), "{message}");
    assert!(runtime.run_with_id(SagaId::new("good"), ReleasePr::new()).await.unwrap().is_completed());
    assert_eq!(harness.log().len(), 10, "nothing ran again");
    drop(runtime);
    assert_eq!(rows(&rusqlite::Connection::open(db(&dir)).unwrap(), "bad"), before, "nothing was changed");
}

/// A journal missing its last records (or holding extra ones) is a clear error, not a
/// conflict with a phantom runner; so is a saga row whose definition was edited.
#[tokio::test]
async fn a_truncated_journal_or_an_edited_row_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let harness = Harness::default();
    let runtime = runtime_on(&db(&dir), &harness).await;
    runtime.run_with_id(SagaId::new("cut"), ReleasePr::new()).await.unwrap();
    runtime.run_with_id(SagaId::new("edited"), ReleasePr::new()).await.unwrap();
    drop(runtime);
    let connection = rusqlite::Connection::open(db(&dir)).unwrap();
    connection
        .execute(
            "DELETE FROM journal WHERE saga_id = 'cut' AND seq = (SELECT max(seq) FROM journal WHERE saga_id = 'cut')",
            [],
        )
        .unwrap();
    let fingerprint = ReleasePrV2::definition().fingerprint();
    connection.execute("UPDATE sagas SET version = 2, fingerprint = ?1 WHERE id = 'edited'", [fingerprint]).unwrap();
    let records: i64 = connection.query_row("SELECT records FROM sagas WHERE id = 'cut'", [], |r| r.get(0)).unwrap();
    drop(connection);

    let runtime = runtime_on(&db(&dir), &harness).await;
    let error = runtime.run_with_id(SagaId::new("cut"), ReleasePr::new()).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "the journal of saga `cut` cannot be read: it holds {} records where the saga row counts {records}: records were lost or added outside saga-runtime, so restore the store from a backup; nothing was changed",
            records - 1
        )
    );
    drop(runtime);
    let v2 = Runtime::builder().store(SqliteStore::open(db(&dir)).await.unwrap()).build();
    let error = v2.resume::<ReleasePrV2>(&SagaId::new("edited")).await.unwrap_err();
    let message = error.to_string();
    assert_eq!(
        message,
        "record 0 (started) of saga `edited` cannot be read: it does not follow from the saga's row (its id, name, version, fingerprint or input was edited, or the record was), so restore the store from a backup; nothing was changed"
    );
}

/// Secrets at rest: with a key, the input, outputs, effect results and failure messages are
/// ciphertext in the file, while the saga name, status, stage, record kinds and step names
/// stay queryable. A wrong key is an error, never garbage, and the right key still reads.
#[tokio::test]
async fn payloads_are_ciphertext_at_rest_and_only_the_right_key_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let key = || Keyring::new(EncryptionKey::new("2026-11", [7; 32]).unwrap());
    let store = SqliteStore::options(db(&dir)).encryption(key()).open().await.unwrap();
    let runtime = Runtime::builder().store(store).policy(fast()).build();
    let outcome = runtime.run_with_id(SagaId::new("acct-1"), Onboard::new()).await.unwrap();
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(
        format!("{:?}", outcome.output().unwrap().create_account),
        r#"Account { id: "acct-42", token: [redacted] }"#
    );
    drop(runtime);

    let raw = all_bytes(dir.path());
    for secret in ["ada@example.com", "tok-SECRET-1", "acct-42", "mailbox full", "welcome-mail-id"] {
        assert!(!contains(&raw, secret), "`{secret}` is in the file in clear");
    }
    let connection = rusqlite::Connection::open(db(&dir)).unwrap();
    let (name, status, stage): (String, String, String) = connection
        .query_row("SELECT name, status, stage FROM sagas", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap();
    assert_eq!((name.as_str(), status.as_str(), stage.as_str()), ("onboard", "completed", "completed"));
    let steps: Vec<(String, Option<String>)> = connection
        .prepare("SELECT kind, step FROM journal WHERE kind IN ('effect_landed', 'step_failed') ORDER BY seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        steps,
        [("effect_landed".into(), Some("create_account".into())), ("step_failed".into(), Some("send_welcome".into()))]
    );
    drop(connection);

    let error = SqliteStore::options(db(&dir))
        .encryption(Keyring::new(EncryptionKey::new("2026-11", [8; 32]).unwrap()))
        .open()
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::WrongKey { .. }), "{error}");
    assert!(
        error.to_string().ends_with(
            ": it cannot be decrypted with key `2026-11`: the key is wrong or the row was tampered with; nothing was changed"
        ),
        "a wrong key is refused when the store opens: {error}"
    );
    let unkeyed = Runtime::builder().store(SqliteStore::open(db(&dir)).await.unwrap()).build();
    let error = unkeyed.journal(&SagaId::new("acct-1")).await.unwrap_err();
    assert!(
        error.to_string().contains("it is encrypted with key `2026-11` and the store was opened without a keyring"),
        "{error}"
    );
    drop(unkeyed);

    let right =
        Runtime::builder().store(SqliteStore::options(db(&dir)).encryption(key()).open().await.unwrap()).build();
    let again = right.run_with_id(SagaId::new("acct-1"), Onboard::new()).await.unwrap();
    assert_eq!(again.output().unwrap().create_account.token.expose(), "tok-SECRET-1");
    assert_eq!(again.report(), outcome.report());
}

/// A tampered ciphertext is an error (see `integrity.rs` for a tamperer who also rewrites the
/// hash chain), and rotated keys keep older sagas readable while new writes use the current
/// key.
#[tokio::test]
async fn tampering_is_detected_and_rotated_keys_keep_old_sagas_readable() {
    let dir = tempfile::tempdir().unwrap();
    let old = || EncryptionKey::new("k1", [1; 32]).unwrap();
    let store = SqliteStore::options(db(&dir)).encryption(Keyring::new(old())).open().await.unwrap();
    Runtime::builder()
        .store(store)
        .policy(fast())
        .build()
        .run_with_id(SagaId::new("old"), Onboard::new())
        .await
        .unwrap();

    let rotated = Keyring::new(EncryptionKey::new("k2", [2; 32]).unwrap()).with_older(old());
    let store = SqliteStore::options(db(&dir)).encryption(rotated.clone()).open().await.unwrap();
    let runtime = Runtime::builder().store(store).policy(fast()).build();
    runtime.run_with_id(SagaId::new("new"), Onboard::new()).await.unwrap();
    assert!(
        runtime.run_with_id(SagaId::new("old"), Onboard::new()).await.unwrap().is_completed(),
        "old rows read with k1"
    );
    drop(runtime);
    let connection = rusqlite::Connection::open(db(&dir)).unwrap();
    let key_ids: Vec<(String, Vec<u8>)> = connection
        .prepare("SELECT saga_id, substr(body, 3, 2) FROM journal WHERE seq = 0 ORDER BY saga_id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(key_ids, [("new".to_owned(), b"k2".to_vec()), ("old".to_owned(), b"k1".to_vec())]);
    let flipped = connection
        .execute(
            "UPDATE journal SET body = CAST(substr(body, 1, 40) || x'00' || substr(body, 42) AS BLOB) WHERE saga_id = 'new' AND kind = 'effect_landed'",
            [],
        )
        .unwrap();
    assert_eq!(flipped, 1);
    let seq: i64 = connection
        .query_row("SELECT seq FROM journal WHERE saga_id = 'new' AND kind = 'effect_landed'", [], |r| r.get(0))
        .unwrap();
    drop(connection);

    let runtime =
        Runtime::builder().store(SqliteStore::options(db(&dir)).encryption(rotated).open().await.unwrap()).build();
    let error = runtime.journal(&SagaId::new("new")).await.unwrap_err();
    assert!(
        error.to_string().starts_with(&format!(
            "record {seq} (effect_landed) of saga `new` cannot be read: it does not match the journal's hash chain"
        )),
        "{error}"
    );
    assert!(runtime.journal(&SagaId::new("old")).await.is_ok());
}

/// Every row of a saga, as stored.
fn rows(connection: &rusqlite::Connection, saga_id: &str) -> Vec<(i64, String, Vec<u8>)> {
    let mut rows: Vec<(i64, String, Vec<u8>)> = connection
        .prepare("SELECT seq, kind, body FROM journal WHERE saga_id = ?1 ORDER BY seq")
        .unwrap()
        .query_map([saga_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let saga: (i64, String, String) = connection
        .query_row("SELECT records, status, stage FROM sagas WHERE id = ?1", [saga_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    rows.push((saga.0, saga.1, saga.2.into_bytes()));
    rows
}

fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// A saga with secrets in its input, an effect result, an output and a failure message.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Onboard {
    email: String,
    api_token: Redacted<String>,
}

impl Onboard {
    fn new() -> Self {
        Onboard { email: "ada@example.com".into(), api_token: Redacted::new("tok-SECRET-1".into()) }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Account {
    id: String,
    token: Redacted<String>,
}

#[saga]
impl Onboard {
    #[step(compensate = close_account)]
    async fn create_account(&self, cx: &StepContext) -> StepResult<Account> {
        let id: String = cx.effect("create", async { Ok::<_, StepError>("acct-42".to_owned()) }).await?;
        Ok(Account { id, token: self.api_token.clone() })
    }
    async fn close_account(&self, _cx: &StepContext, _account: &Account) -> StepResult<()> {
        Ok(())
    }

    #[step(idempotent)]
    async fn send_welcome(&self, cx: &StepContext, create_account: &Account) -> StepResult<String> {
        if cx.attempt() == 1 {
            return Err(StepError::transient(format!("mailbox full for {}", self.email)));
        }
        Ok(format!("welcome-mail-id for {}", create_account.id))
    }
}

/// An error returned from `main` through `Box<dyn Error>` is printed with `{:?}`: it shows the
/// message that says what to do, not the variant's fields; `{:#?}` keeps the structured form.
#[tokio::test]
async fn errors_returned_from_main_print_their_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, vec![0xAB; 8192]).unwrap();
    let store_error = SqliteStore::open(&path).await.map(|_| ()).unwrap_err();
    let message = format!(
        "`{}` is not a SQLite database: point the store at a new file or at one it created; nothing was changed",
        path.display()
    );
    assert_eq!(store_error.to_string(), message);
    assert_eq!(format!("{store_error:?}"), message);
    let structured = format!("{store_error:#?}");
    assert!(structured.starts_with("NotADatabase {\n    location: \""), "{structured}");

    let runtime_error = RuntimeError::from(store_error);
    assert_eq!(format!("{runtime_error:?}"), message);
    let boxed: Box<dyn std::error::Error> = Box::new(runtime_error);
    assert_eq!(format!("{boxed:?}"), message, "what `main` prints");

    let unknown = Runtime::default().resume::<Onboard>(&SagaId::new("nope")).await.unwrap_err();
    assert_eq!(
        format!("{unknown:?}"),
        "no saga with id `nope` is stored: check the id, or start it with `run_with_id`"
    );
    assert_eq!(format!("{unknown:#?}"), "UnknownSaga {\n    saga_id: SagaId(\"nope\"),\n}");
}
