//! Storage faults: the disk itself fails, not the process. A deleted, moved or replaced
//! database file fails loudly before anything else is acknowledged (and its data can be copied
//! back while the process runs); a full store makes sagas wait, not fail, and not strand; a
//! file or directory that cannot be written is refused when the store opens; every error says
//! what happened and what to do, once; an output too large for a checkpoint is a clear failure
//! of its step; the write-ahead log does not stay at its peak size.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use saga_runtime::journal::Event;
use saga_runtime::prelude::*;
use saga_runtime::store::{SqliteOptions, SqliteStore, StoreError};
use saga_runtime::{FailureKind, StoreOutage};
use serde::{Deserialize, Serialize};

/// A report of work, with a payload of `size` bytes in its second step.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Report {
    size: usize,
}

/// Counts how often the `upload` effect's code ran (clones share the count).
#[derive(Clone, Default)]
struct Uploads(Arc<AtomicUsize>);

#[saga]
impl Report {
    #[step(idempotent)]
    async fn gather(&self, _cx: &StepContext) -> StepResult<u64> {
        Ok(7)
    }

    #[step(compensate = discard)]
    async fn upload(&self, cx: &StepContext, gather: &u64) -> StepResult<String> {
        let size = self.size;
        let uploaded: String = cx
            .effect("upload", async move {
                cx.resource::<Uploads>().0.fetch_add(1, Ordering::SeqCst);
                Ok::<_, StepError>("x".repeat(size))
            })
            .await?;
        Ok(format!("{gather}:{}", uploaded.len()))
    }
    async fn discard(&self, _cx: &StepContext, _upload: &String) -> StepResult<()> {
        Ok(())
    }

    #[step(idempotent)]
    async fn publish(&self, _cx: &StepContext, upload: &String) -> StepResult<String> {
        Ok(format!("published {upload}"))
    }
}

fn quick() -> Policy {
    let fast = Backoff {
        initial: Duration::from_millis(5),
        max: Duration::from_millis(20),
        jitter: Jitter::None,
        ..Backoff::default()
    };
    Policy { backoff: fast, store_retry: fast, ..Policy::default() }
}

fn runtime(store: SqliteStore, pages: Arc<Mutex<Vec<String>>>) -> Runtime {
    Runtime::builder()
        .store(store)
        .policy(quick())
        .resource(Uploads::default())
        .pager(move |i: &Incident| pages.lock().unwrap().push(i.failure.message.clone()))
        .register::<Report>()
        .build()
}

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("sagas.db")
}

fn wal(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}-wal", path.display()))
}

/// The `/proc/<pid>/fd/<n>` paths an error message tells to copy.
fn proc_paths(message: &str) -> Vec<String> {
    message.split('`').filter(|part| part.starts_with("/proc/")).map(str::to_owned).collect()
}

/// `rm sagas.db` while a worker runs: the next write fails with a clear error (nothing more is
/// acknowledged), every later request too, and the message says how to copy the data back
/// while the process still holds it; doing so brings every acknowledged saga back. The next
/// process refuses to start an empty store where one lived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_database_fails_loudly_and_can_be_copied_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let runtime = runtime(SqliteStore::open(&path).await.unwrap(), Arc::default());
    let done = runtime.run_with_id(SagaId::new("before"), Report { size: 10 }).await.unwrap();
    assert!(done.is_completed());

    std::fs::remove_file(&path).unwrap();
    let error = runtime.run_with_id(SagaId::new("after"), Report { size: 10 }).await.unwrap_err();
    let RuntimeError::Store { error: StoreError::Gone { reason, .. }, saga_id } = &error else {
        panic!("expected the store to be gone, got {error}")
    };
    assert_eq!(saga_id.as_ref().map(SagaId::as_str), Some("after"), "the error names the saga");
    assert!(
        reason.starts_with("was deleted while the store was open: nothing written since was acknowledged"),
        "{reason}"
    );
    let message = error.to_string();
    assert_eq!(message.matches("was deleted").count(), 1, "said once: {message}");
    let copies = proc_paths(&message);
    assert_eq!(copies.len(), 2, "the database and its log: {message}");
    let again = runtime.list().await.unwrap_err();
    assert!(again.to_string().contains("was deleted while the store was open"), "every later request fails: {again}");

    // Copy back, as the message says: while the process still holds the files, under other
    // names; then stop it, and rename the copies into place.
    assert!(message.contains(&format!("copy `{}` to `{}.recovered`", copies[0], path.display())), "{message}");
    std::fs::copy(&copies[0], dir.path().join("sagas.db.recovered")).unwrap();
    std::fs::copy(&copies[1], dir.path().join("sagas.db.recovered-wal")).unwrap();
    drop(runtime);
    std::fs::rename(dir.path().join("sagas.db.recovered"), &path).unwrap();
    std::fs::rename(dir.path().join("sagas.db.recovered-wal"), wal(&path)).unwrap();
    let reopened = self::runtime(SqliteStore::open(&path).await.unwrap(), Arc::default());
    let back = reopened.run_with_id(SagaId::new("before"), Report { size: 10 }).await.unwrap();
    assert_eq!(back.output().unwrap().publish, done.output().unwrap().publish, "the acknowledged saga is back");
    assert!(reopened.journal(&SagaId::new("after")).await.is_err(), "the refused saga was never acknowledged");
    drop(reopened);

    // Deleted for good: the next process refuses to start an empty store in its place.
    std::fs::remove_file(&path).unwrap();
    let _ = std::fs::remove_file(wal(&path));
    let error = SqliteStore::open(&path).await.unwrap_err();
    assert!(matches!(error, StoreError::Gone { .. }), "{error}");
    assert!(error.to_string().contains("is missing, but `"), "{error}");
    assert!(
        error.to_string().contains("delete `") && error.to_string().ends_with("to start an empty store there"),
        "{error}"
    );
    std::fs::remove_file(format!("{}.lock", path.display())).unwrap();
    let fresh = SqliteStore::open(&path).await.expect("a new store once the lock file is gone");
    assert!(Runtime::builder().store(fresh).build().list().await.unwrap().is_empty());
}

/// `mv` or a file put in its place are caught the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_or_replaced_database_fails_loudly() {
    for (what, expected) in [
        ("moved", "was moved or renamed while the store was open"),
        ("replaced", "was replaced by another file while the store was open"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = db(&dir);
        let runtime = runtime(SqliteStore::open(&path).await.unwrap(), Arc::default());
        runtime.run_with_id(SagaId::new("one"), Report { size: 10 }).await.unwrap();
        match what {
            "moved" => std::fs::rename(&path, dir.path().join("elsewhere.db")).unwrap(),
            _ => {
                std::fs::write(dir.path().join("other.db"), b"not it").unwrap();
                std::fs::rename(dir.path().join("other.db"), &path).unwrap();
            }
        }
        let error = runtime.run_with_id(SagaId::new("two"), Report { size: 10 }).await.unwrap_err();
        assert!(matches!(&error, RuntimeError::Store { error: StoreError::Gone { .. }, .. }), "{what}: {error}");
        assert!(error.to_string().contains(expected), "{what}: {error}");
    }
}

/// The files as a crash would leave them: copied aside while the store is open, then opened.
fn crash_copy(path: &Path, to: &Path) -> PathBuf {
    let copy = to.join("copy.db");
    std::fs::copy(path, &copy).unwrap();
    if wal(path).exists() {
        std::fs::copy(wal(path), wal(&copy)).unwrap();
    }
    copy
}

/// `rm sagas.db-wal` while the store is open would lose every write not yet checkpointed into
/// the database at the next stop. The store notices (at its next write, or within half a second
/// when idle), checkpoints the log it still holds into the database, and starts a new log: a
/// crash right after loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_log_is_rescued_before_anything_is_lost() {
    for idle in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = db(&dir);
        let runtime = runtime(SqliteStore::open(&path).await.unwrap(), Arc::default());
        runtime.run_with_id(SagaId::new("one"), Report { size: 10 }).await.unwrap();
        let journal = runtime.journal(&SagaId::new("one")).await.unwrap();
        std::fs::remove_file(wal(&path)).unwrap();
        if idle {
            tokio::time::sleep(Duration::from_millis(1_200)).await;
        } else {
            assert!(runtime.run_with_id(SagaId::new("two"), Report { size: 10 }).await.unwrap().is_completed());
        }
        let aside = tempfile::tempdir().unwrap();
        let copy = crash_copy(&path, aside.path());
        std::fs::remove_file(format!("{}.lock", path.display())).ok();
        let crashed = self::runtime(SqliteStore::open(&copy).await.unwrap(), Arc::default());
        let kept = crashed.journal(&SagaId::new("one")).await;
        assert_eq!(kept.ok().as_ref(), Some(&journal), "idle: {idle}: the saga before the deletion is kept whole");
        if !idle {
            assert!(crashed.journal(&SagaId::new("two")).await.is_ok(), "the saga after the rescue is kept too");
        }
        drop(runtime);
    }
}

/// A store at its size limit (as a full disk) makes the saga wait, retrying, instead of failing
/// or stranding it; the effect whose result waited is not run again; the outage is paged when it
/// lasts, and shows in the report and the timeline once space returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_makes_sagas_wait_until_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    drop(SqliteStore::open(&path).await.unwrap());
    let size = std::fs::metadata(&path).unwrap().len();
    let store = SqliteOptions::new(&path).max_size(size + 64 * 1024).open().await.unwrap();
    let pages = Arc::new(Mutex::new(Vec::new()));
    let uploads = Uploads::default();
    let runtime = Runtime::builder()
        .store(store.clone())
        .policy(Policy { store_outage_page_after: Duration::from_millis(200), ..quick() })
        .resource(uploads.clone())
        .pager({
            let pages = pages.clone();
            move |i: &Incident| pages.lock().unwrap().push(format!("{:?}: {}", i.failure.kind, i.failure.message))
        })
        .register::<Report>()
        .build();
    let run = tokio::spawn({
        let runtime = runtime.clone();
        async move { runtime.run_with_id(SagaId::new("big"), Report { size: 200 * 1024 }).await }
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    if run.is_finished() {
        panic!("the saga should wait for space: {:?}", run.await.unwrap());
    }
    assert_eq!(pages.lock().unwrap().len(), 1, "paged once the outage lasted");
    assert!(
        pages.lock().unwrap()[0].starts_with("StoreUnavailable: the store has refused the saga's writes for"),
        "{:?}",
        pages.lock().unwrap()
    );

    store.set_max_size(None).await.unwrap();
    let outcome = run.await.unwrap().unwrap();
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(uploads.0.load(Ordering::SeqCst), 1, "the effect whose result waited ran once");
    let outages: &Vec<StoreOutage> = &outcome.report().store_outages;
    assert_eq!(outages.len(), 1, "{outages:?}");
    assert!(outages[0].failures >= 3 && outages[0].paged, "{outages:?}");
    assert!(outages[0].waited >= Duration::from_millis(500));
    assert!(
        outages[0].error.contains("the disk is full (or the store reached its `max_size`): free space"),
        "{}",
        outages[0].error
    );
    assert_eq!(outages[0].error.matches("failed").count(), 1, "said once: {}", outages[0].error);
    assert!(outcome.report().escalations.is_empty(), "waiting for the store is not a failure of a step");
    let journal = runtime.journal(&SagaId::new("big")).await.unwrap();
    let line = journal
        .iter()
        .find(|r| matches!(r.event, Event::StoreOutage { .. }))
        .map(|r| saga_runtime::journal::Timeline { definition: Report::definition(), record: r }.to_string())
        .expect("the outage is journaled");
    assert!(line.starts_with("the store refused "), "{line}");
    assert!(line.ends_with("the saga waited and went on (a human was paged)"), "{line}");
}

/// A full store can still be opened, read, and recovered from once space returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_opens_and_recovers_once_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let runtime = runtime(SqliteStore::open(&path).await.unwrap(), Arc::default());
    runtime.run_with_id(SagaId::new("kept"), Report { size: 10 }).await.unwrap();
    drop(runtime);
    let size = std::fs::metadata(&path).unwrap().len();
    let full = SqliteOptions::new(&path).max_size(size).open().await.expect("a full store opens");
    let runtime = self::runtime(full.clone(), Arc::default());
    assert_eq!(runtime.list().await.unwrap().len(), 1, "and reads");
    assert!(runtime.recover().await.unwrap().resumed.is_empty());
    full.set_max_size(None).await.unwrap();
    assert!(runtime.run_with_id(SagaId::new("new"), Report { size: 10 }).await.unwrap().is_completed());
}

/// A file or directory that cannot be written is refused when the store opens, saying why,
/// instead of being accepted and failing every saga later.
#[tokio::test]
async fn an_unwritable_file_or_directory_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    drop(SqliteStore::open(&path).await.unwrap());
    let chattr =
        |flag: &str, target: &Path| Command::new("chattr").arg(flag).arg(target).status().is_ok_and(|s| s.success());
    // As root, permissions do not stop a write: an immutable file does. As another user, a
    // file without write permission does.
    let (made_unwritable, expected) = if chattr("+i", &path) {
        (true, "cannot be written even by this user (it is probably immutable")
    } else {
        let mut permissions = std::fs::metadata(&path).unwrap().permissions();
        permissions.set_readonly(true);
        std::fs::set_permissions(&path, permissions).unwrap();
        (false, "is not writable by this user")
    };
    let error = SqliteStore::open(&path).await.unwrap_err();
    if made_unwritable {
        assert!(chattr("-i", &path));
    }
    assert!(matches!(error, StoreError::ReadOnly { .. }), "{error}");
    assert!(error.to_string().contains(expected), "{error}");
    assert!(error.to_string().starts_with(&format!("`{}` cannot be written: the file `", path.display())), "{error}");

    if chattr("+i", dir.path()) {
        let error = SqliteStore::open(dir.path().join("other.db")).await.unwrap_err();
        assert!(chattr("-i", dir.path()));
        assert!(matches!(error, StoreError::ReadOnly { .. }), "{error}");
        assert!(error.to_string().contains("the directory `"), "{error}");
    }
}

/// An output larger than a checkpoint takes is a logical failure of its step, saying what to do
/// instead; nothing of it reaches the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_over_the_payload_limit_is_a_clear_failure() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::builder()
        .store(SqliteStore::open(db(&dir)).await.unwrap())
        .policy(quick())
        .resource(Uploads::default())
        .max_payload(64 * 1024)
        .build();
    let outcome = runtime.run_with_id(SagaId::new("huge"), Report { size: 100 * 1024 }).await.unwrap();
    let Outcome::Compensated { failure, report, .. } = &outcome else { panic!("expected a rollback, got {outcome:?}") };
    assert_eq!(
        (failure.kind, failure.class, failure.step.as_str()),
        (FailureKind::TooLarge, FailureClass::Logical, "upload")
    );
    assert!(
        failure.message.starts_with("the result of effect `upload` is 102402 bytes, over the 65536-byte limit of a checkpoint: keep large artefacts elsewhere"),
        "{}",
        failure.message
    );
    assert_eq!(report.levels(), [Level::Reprompt, Level::Reprompt, Level::SwitchModel, Level::Compensate]);
    assert!(std::fs::metadata(db(&dir)).unwrap().len() < 64 * 1024 * 4, "nothing of it reached the file");
}

/// After a large write the log is cut back to its limit (4 MiB) at the next checkpoint, instead
/// of keeping its peak size for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_does_not_stay_at_its_peak() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let runtime = runtime(SqliteStore::open(&path).await.unwrap(), Arc::default());
    runtime.run_with_id(SagaId::new("big"), Report { size: 12 * 1024 * 1024 }).await.unwrap();
    let peak = std::fs::metadata(wal(&path)).map(|m| m.len()).unwrap_or(0);
    for n in 0..3 {
        runtime.run_with_id(SagaId::new(format!("small-{n}")), Report { size: 10 }).await.unwrap();
    }
    let after = std::fs::metadata(wal(&path)).unwrap().len();
    assert!(after <= 4 * 1024 * 1024 + 64 * 1024, "the log is {after} bytes after its peak of {peak}");
}
