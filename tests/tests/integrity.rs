//! A tamper-evident journal: every record is chained to the one before it by a hash (and the
//! saga row keeps the head of the chain and the count), checked on every load, so an edited,
//! reordered, deleted or inserted record, the tail included, is a clear error that names the
//! saga and the record, with or without a key, and changes nothing. Under a keyring, a record
//! that was moved, replaced with another one's ciphertext, or replaced with plaintext is refused
//! even when the tamperer rewrites the chain; a sealed store opened without its keyring writes
//! nothing.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::chain::rechain;
use common::*;
use saga_runtime::prelude::*;
use saga_runtime::store::{SqliteStore, StoreError};
use saga_runtime::{EncryptionKey, Keyring};

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

fn key() -> Keyring {
    Keyring::new(EncryptionKey::new("k1", [9; 32]).unwrap())
}

async fn runtime_on(path: &Path, keys: Option<Keyring>, harness: &Harness) -> Runtime {
    let mut options = SqliteStore::options(path);
    if let Some(keys) = keys {
        options = options.encryption(keys);
    }
    Runtime::builder()
        .store(options.open().await.unwrap())
        .policy(fast())
        .resource(harness.clone())
        .register::<ReleasePr>()
        .build()
}

/// Runs two sagas (`victim` and `bystander`) into a fresh file and returns it.
async fn two_sagas(dir: &tempfile::TempDir, keys: Option<Keyring>) -> PathBuf {
    let path = dir.path().join("sagas.db");
    let runtime = runtime_on(&path, keys, &Harness::default()).await;
    for id in ["victim", "bystander"] {
        assert!(runtime.run_with_id(SagaId::new(id), ReleasePr::new()).await.unwrap().is_completed());
    }
    path
}

/// Edits the file with SQL, then checks that loading `victim` fails with `expected` (a prefix
/// of the message), that `bystander` still loads, and that the failed load changed nothing.
async fn tampered(path: &Path, keys: Option<Keyring>, sql: &[&str], rewrite_chain: bool) -> String {
    let connection = rusqlite::Connection::open(path).unwrap();
    for statement in sql {
        connection.execute_batch(statement).unwrap();
    }
    if rewrite_chain {
        rechain(&connection, "victim");
    }
    let rows_before = snapshot(&connection);
    drop(connection);
    let harness = Harness::default();
    let runtime = runtime_on(path, keys, &harness).await;
    let error = runtime.run_with_id(SagaId::new("victim"), ReleasePr::new()).await.unwrap_err();
    assert!(matches!(error, RuntimeError::Store { error: StoreError::Unreadable { .. }, .. }), "{error}");
    assert_eq!(error.to_string(), runtime.journal(&SagaId::new("victim")).await.unwrap_err().to_string());
    assert!(runtime.run_with_id(SagaId::new("bystander"), ReleasePr::new()).await.unwrap().is_completed());
    assert!(harness.log().is_empty(), "nothing ran");
    drop(runtime);
    assert_eq!(snapshot(&rusqlite::Connection::open(path).unwrap()), rows_before, "nothing was changed");
    error.to_string()
}

/// A row of the file: `(saga, seq or record count, kind or status, body or input, hash or head)`.
type Row = (String, i64, String, Vec<u8>, Vec<u8>);

/// The journal and the saga rows, without the claim bookkeeping (owner, lease, epoch).
fn snapshot(connection: &rusqlite::Connection) -> Vec<Row> {
    let mut rows: Vec<Row> = connection
        .prepare("SELECT saga_id, seq, kind, body, hash FROM journal ORDER BY saga_id, seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let sagas: Vec<Row> = connection
        .prepare("SELECT id, records, status, input, head FROM sagas ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows.extend(sagas);
    rows
}

const RESTORE: &str = "so restore the store from a backup; nothing was changed";

#[tokio::test]
async fn an_edited_record_breaks_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = two_sagas(&dir, None).await;
    // A valid record, written in place of the real one: the body still decodes, the chain does not.
    let sql = "UPDATE journal SET body = CAST(replace(CAST(body AS TEXT), '42', '43') AS BLOB)
               WHERE saga_id = 'victim' AND kind = 'step_completed' AND seq = 2";
    let message = tampered(&path, None, &[sql], false).await;
    assert_eq!(
        message,
        format!(
            "record 2 (step_completed) of saga `victim` cannot be read: it does not match the journal's hash chain: it was edited, replaced or moved, {RESTORE}"
        )
    );
}

#[tokio::test]
async fn reordered_records_break_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = two_sagas(&dir, None).await;
    let swap = [
        "UPDATE journal SET seq = -1 WHERE saga_id = 'victim' AND seq = 3",
        "UPDATE journal SET seq = 3 WHERE saga_id = 'victim' AND seq = 4",
        "UPDATE journal SET seq = 4 WHERE saga_id = 'victim' AND seq = -1",
    ];
    let message = tampered(&path, None, &swap, false).await;
    assert!(
        message.starts_with(
            "record 3 (step_completed) of saga `victim` cannot be read: it does not match the journal's hash chain"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn a_deleted_record_is_found_wherever_it_was() {
    // In the middle, with the count made to agree.
    let dir = tempfile::tempdir().unwrap();
    let path = two_sagas(&dir, None).await;
    let middle = [
        "DELETE FROM journal WHERE saga_id = 'victim' AND seq = 4",
        "UPDATE sagas SET records = records - 1 WHERE id = 'victim'",
    ];
    let message = tampered(&path, None, &middle, false).await;
    assert_eq!(
        message,
        format!(
            "record 5 (attempt_started) of saga `victim` cannot be read: it stands at position 4: records before it were deleted, {RESTORE}"
        )
    );

    // At the end, with the count made to agree: the head of the chain says more was written.
    let dir = tempfile::tempdir().unwrap();
    let path = two_sagas(&dir, None).await;
    let tail = [
        "DELETE FROM journal WHERE saga_id = 'victim' AND seq = (SELECT max(seq) FROM journal WHERE saga_id = 'victim')",
        "UPDATE sagas SET records = records - 1, status = 'running' WHERE id = 'victim'",
    ];
    let message = tampered(&path, None, &tail, false).await;
    assert_eq!(
        message,
        format!(
            "the journal of saga `victim` cannot be read: its last record is not the last one written: records were deleted from its end, {RESTORE}"
        )
    );
}

#[tokio::test]
async fn an_edited_input_or_saga_row_breaks_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = two_sagas(&dir, None).await;
    let sql = "UPDATE sagas SET input = CAST(replace(CAST(input AS TEXT), 'acme', 'evil') AS BLOB) WHERE id = 'victim'";
    let message = tampered(&path, None, &[sql], false).await;
    assert!(
        message
            .starts_with("record 0 (started) of saga `victim` cannot be read: it does not follow from the saga's row"),
        "{message}"
    );
}

/// With a key, a tamperer who rewrites the chain still cannot move a sealed record, put another
/// saga's ciphertext in its place, or put plaintext there.
#[tokio::test]
async fn under_a_key_a_rewritten_chain_does_not_hide_a_forgery() {
    let dir = tempfile::tempdir().unwrap();
    let path = two_sagas(&dir, Some(key())).await;
    let borrowed = "UPDATE journal SET body = (SELECT body FROM journal WHERE saga_id = 'bystander' AND seq = 2)
                    WHERE saga_id = 'victim' AND seq = 2";
    let message = tampered(&path, Some(key()), &[borrowed], true).await;
    assert_eq!(
        message,
        "record 2 (step_completed) of saga `victim` cannot be read: it cannot be decrypted with key `k1`: the key is wrong or the row was tampered with; nothing was changed"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = two_sagas(&dir, Some(key())).await;
    let plaintext = r#"UPDATE journal SET body = CAST(x'00' || '{"step_completed":{"step":0,"attempt":1,"output":7}}' AS BLOB)
                       WHERE saga_id = 'victim' AND seq = 2"#;
    let message = tampered(&path, Some(key()), &[plaintext], true).await;
    assert_eq!(
        message,
        "record 2 (step_completed) of saga `victim` cannot be read: it is stored in plaintext while the store is encrypted: it was written without the key or replaced by hand, so it is not trusted; nothing was changed"
    );
}

/// The check is above every store: a journal cut short in memory is caught the same way.
#[tokio::test]
async fn the_memory_store_is_checked_the_same_way() {
    let harness = Harness::default();
    let (runtime, _, store) = runtime(&harness, exact_backoff());
    runtime.run_with_id(SagaId::new("victim"), ReleasePr::new()).await.unwrap();
    assert!(store.tamper(&SagaId::new("victim"), |saga| {
        saga.records.pop();
        saga.summary.records -= 1;
    }));
    let error = runtime.journal(&SagaId::new("victim")).await.unwrap_err();
    assert!(error.to_string().contains("records were deleted from its end"), "{error}");
    assert!(store.tamper(&SagaId::new("victim"), |saga| saga.records[1].body[5] ^= 1));
    let error = runtime.journal(&SagaId::new("victim")).await.unwrap_err();
    assert!(error.to_string().starts_with("record 1 (attempt_started) of saga `victim` cannot be read"), "{error}");
}

/// A store of sealed sagas opened without its keyring reads but never writes: the next saga's
/// secrets never land in clear next to the sealed rows.
#[tokio::test]
async fn a_sealed_store_opened_without_its_keyring_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = two_sagas(&dir, Some(key())).await;
    let before = snapshot(&rusqlite::Connection::open(&path).unwrap());
    let runtime = runtime_on(&path, None, &Harness::default()).await;
    let error = runtime.run_with_id(SagaId::new("new"), ReleasePr::new()).await.unwrap_err();
    assert!(matches!(error, RuntimeError::Store { error: StoreError::ReadOnly { .. }, .. }), "{error}");
    assert!(error.to_string().contains("open it with its keyring to run sagas"), "{error}");
    assert_eq!(runtime.list().await.unwrap().len(), 2, "it still reads");
    drop(runtime);
    assert_eq!(snapshot(&rusqlite::Connection::open(&path).unwrap()), before, "nothing was written");

    // And a plain store that holds sagas cannot be switched to encryption by opening it with a key.
    let dir = tempfile::tempdir().unwrap();
    let path = two_sagas(&dir, None).await;
    let error = SqliteStore::options(&path).encryption(key()).open().await.unwrap_err();
    assert!(matches!(error, StoreError::WrongKey { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("it holds sagas stored in plaintext, and encryption is turned on for a new store only"),
        "{error}"
    );
}
