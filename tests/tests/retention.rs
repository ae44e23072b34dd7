//! Retention: finished sagas are pruned by age or by count, never running or parked ones;
//! each can be archived first as one JSON line that reads back into the same timeline; a
//! pruned id keeps its tombstone, so `run_with_id` never runs it twice; freed space is reused
//! (and given back on files made by this version); bad settings and stores that cannot prune
//! are clear errors.

#[path = "common/pg.rs"]
mod pg;

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use saga_runtime::prelude::*;
use saga_runtime::retention::{Archive, ArchiveError, ArchiveReader, ArchivedSaga, Retention};
use saga_runtime::store::{
    Checkpoint, Claim, ClaimRequest, Claimed, Created, Fence, NewSaga, PostgresStore, RecordRow, SagaPage, SagaQuery,
    SagaSummary, StoreError, StoredSaga,
};
use saga_runtime::{BoxFuture, EncryptionKey, Keyring};
use serde::{Deserialize, Serialize};

/// An order whose fate is part of its input: `complete`, `compensate` (the charge is declined
/// and the reservation released) or `park` (declined, and the release keeps failing).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    id: u32,
    fate: String,
}

/// How many times `reserve` ran, over every saga of a runtime.
#[derive(Clone, Default)]
struct Runs(Arc<AtomicUsize>);

#[saga]
impl Order {
    #[step(compensate = release)]
    async fn reserve(&self, cx: &StepContext) -> StepResult<u32> {
        cx.resource::<Runs>().0.fetch_add(1, Ordering::SeqCst);
        Ok(self.id)
    }
    async fn release(&self, _cx: &StepContext, _reserve: &u32) -> StepResult<()> {
        match self.fate.as_str() {
            "park" => Err(StepError::transient("the warehouse API is down")),
            _ => Ok(()),
        }
    }

    #[step(commit)]
    async fn charge(&self, _cx: &StepContext, reserve: &u32) -> StepResult<u64> {
        match self.fate.as_str() {
            "complete" => Ok(u64::from(*reserve) * 100),
            _ => Err(StepError::logical("the card was declined")),
        }
    }
}

/// Another saga type, to run under an id an `Order` had.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Refund {
    id: u32,
}

#[saga]
impl Refund {
    #[step(idempotent)]
    async fn refund(&self, _cx: &StepContext) -> StepResult<u32> {
        Ok(self.id)
    }
}

fn order(id: u32, fate: &str) -> Order {
    Order { id, fate: fate.to_owned() }
}

fn quick() -> Policy {
    Policy {
        transient_retries: 0,
        reprompts: 0,
        model_tiers: 1,
        compensation_retries: 0,
        backoff: Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(1),
            jitter: Jitter::None,
            ..Backoff::default()
        },
        ..Policy::default()
    }
}

fn runtime_on(store: impl CheckpointStore) -> (Runtime, Runs) {
    let runs = Runs::default();
    let runtime = Runtime::builder()
        .store(store)
        .policy(quick())
        .notifier(|_: &Incident| {})
        .pager(|_: &Incident| {})
        .resource(runs.clone())
        .register::<Order>()
        .register::<Refund>()
        .build();
    (runtime, runs)
}

fn id(text: &str) -> SagaId {
    SagaId::new(text)
}

/// Runs `fates` in order under ids `o-1`, `o-2`, …, a millisecond apart so that their finish
/// times are distinct.
async fn run_orders(runtime: &Runtime, fates: &[&str]) {
    for (n, fate) in fates.iter().enumerate() {
        let outcome = runtime.run_with_id(id(&format!("o-{}", n + 1)), order(n as u32 + 1, fate)).await.unwrap();
        let expected = match *fate {
            "complete" => Status::Completed,
            "compensate" => Status::Compensated,
            _ => Status::NeedsHuman,
        };
        assert_eq!(outcome.status(), expected, "{fate}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn stored_ids(runtime: &Runtime) -> Vec<String> {
    runtime.list().await.unwrap().into_iter().map(|s| s.id.to_string()).collect()
}

fn pruned_ids(report: &saga_runtime::retention::PruneReport) -> Vec<String> {
    report.pruned.iter().map(|p| p.id.to_string()).collect()
}

fn days(n: u64) -> Duration {
    Duration::from_secs(n * 86_400)
}

/// A writer tests can read back: clones share the bytes.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

/// Finished sagas older than the policy's age are pruned, oldest finished first; a running
/// saga (enqueued, never claimed) and a saga parked for a human are kept however old, and the
/// sagas that finished since the cut are kept too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_takes_old_finished_sagas_and_never_running_or_parked_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (runtime, _) = runtime_on(SqliteStore::open(dir.path().join("sagas.db")).await.unwrap());
    let waiting = runtime.start_with_id(id("enqueued"), order(9, "complete")).await.unwrap();
    run_orders(&runtime, &["complete", "compensate", "park", "complete"]).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    run_orders_from(&runtime, 5, &["complete"]).await;

    let retention = Retention::older_than(Duration::from_millis(25)).unwrap();
    let report = runtime.prune(&retention).await.unwrap();
    assert_eq!(pruned_ids(&report), ["o-1", "o-2", "o-4"], "old finished sagas, oldest finished first");
    assert_eq!(report.count, 3);
    assert_eq!(
        report.pruned.iter().map(|p| p.status).collect::<Vec<_>>(),
        [Status::Completed, Status::Compensated, Status::Completed]
    );
    assert!(report.kept.is_empty() && report.archived == 0 && !report.dry_run);
    assert!(report.writes >= 1 && report.longest_write > Duration::ZERO);
    assert_eq!(stored_ids(&runtime).await, ["enqueued", "o-3", "o-5"], "running, parked and recent sagas stay");
    assert_eq!(runtime.store().summary(&waiting).await.unwrap().unwrap().status, Status::Running);

    let again = runtime.prune(&retention).await.unwrap();
    assert!(again.pruned.is_empty(), "a second round finds nothing: {:?}", again.pruned);
}

async fn run_orders_from(runtime: &Runtime, first: u32, fates: &[&str]) {
    for (n, fate) in fates.iter().enumerate() {
        let number = first + n as u32;
        runtime.run_with_id(id(&format!("o-{number}")), order(number, fate)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A count limit keeps the newest finished sagas (by the time they finished) and prunes the
/// rest; parked sagas neither count nor go. Both limits together prune what either selects.
#[tokio::test]
async fn a_count_limit_keeps_the_newest_finished_sagas() {
    let (runtime, _) = runtime_on(MemoryStore::new());
    run_orders(&runtime, &["complete", "park", "compensate", "complete", "complete", "complete"]).await;
    let report = runtime.prune(&Retention::keep_last(2).unwrap()).await.unwrap();
    assert_eq!(pruned_ids(&report), ["o-1", "o-3", "o-4"]);
    assert_eq!(stored_ids(&runtime).await, ["o-2", "o-5", "o-6"]);

    let both = Retention::keep_last(2).unwrap().or_older_than(Duration::from_millis(1)).unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let report = runtime.prune(&both).await.unwrap();
    assert_eq!(pruned_ids(&report), ["o-5", "o-6"], "old enough, though within the count");
    assert_eq!(stored_ids(&runtime).await, ["o-2"]);
}

/// A dry run lists what would go and changes nothing: no saga, no tombstone, no archive line.
#[tokio::test]
async fn a_dry_run_lists_what_would_be_pruned_and_changes_nothing() {
    let (runtime, _) = runtime_on(MemoryStore::new());
    run_orders(&runtime, &["complete", "park", "compensate"]).await;
    let archive = Shared::default();
    let retention = Retention::keep_last(1).unwrap().archive(Archive::writer(archive.clone()));
    let report = runtime.prune_dry_run(&retention).await.unwrap();
    assert!(report.dry_run);
    assert_eq!(pruned_ids(&report), ["o-1"]);
    assert_eq!((report.count, report.archived, report.writes), (1, 0, 0));
    assert_eq!(stored_ids(&runtime).await, ["o-1", "o-2", "o-3"]);
    assert!(runtime.store().tombstone(&id("o-1")).await.unwrap().is_none());
    assert!(archive.bytes().is_empty(), "nothing archived");
}

/// The archive holds each pruned saga as one JSON line, in the order pruned: its row (status,
/// head of the chain), its input and journal sealed as stored. Read back, each line verifies
/// against its chain and renders the same timeline the stored saga had; without the key its
/// journal stays sealed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archived_sagas_stay_sealed_and_read_back_into_the_same_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let key = Keyring::new(EncryptionKey::new("k1", [9; 32]).unwrap());
    let store = SqliteStore::options(dir.path().join("sagas.db")).encryption(key.clone()).open().await.unwrap();
    let (runtime, _) = runtime_on(store);
    run_orders(&runtime, &["complete", "compensate", "park", "complete"]).await;
    let mut timelines = Vec::new();
    for saga in ["o-1", "o-2"] {
        timelines.push(runtime.timeline(&id(saga)).await.unwrap());
    }
    assert!(timelines[1].iter().any(|line| line.contains("the card was declined")), "{:?}", timelines[1]);

    let path = dir.path().join("archive.jsonl");
    let retention = Retention::keep_last(1).unwrap().archive(Archive::file(&path).unwrap());
    let report = runtime.prune(&retention).await.unwrap();
    assert_eq!((pruned_ids(&report), report.archived), (vec!["o-1".to_owned(), "o-2".to_owned()], 2));

    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "one line per saga");
    for (line, (saga, status)) in lines.iter().zip([("o-1", "completed"), ("o-2", "compensated")]) {
        assert_eq!(line["format"], "saga-runtime/archive/v1");
        assert_eq!((line["saga"]["id"].as_str(), line["saga"]["status"].as_str()), (Some(saga), Some(status)));
        let stone = runtime.store().tombstone(&id(saga)).await.unwrap().unwrap();
        assert_eq!(line["saga"]["head"].as_str().unwrap(), hex(&stone.head), "the tombstone names the archived chain");
        let journal = line["journal"].as_array().unwrap();
        assert_eq!(journal.len() as u64, line["saga"]["records"].as_u64().unwrap());
    }
    assert!(!text.contains("declined") && !text.contains("fate"), "payloads stay sealed in the archive");

    let archived: Vec<ArchivedSaga> = ArchiveReader::open(&path).unwrap().map(Result::unwrap).collect();
    assert_eq!(archived.iter().map(|a| a.id().to_string()).collect::<Vec<_>>(), ["o-1", "o-2"]);
    for (saga, timeline) in archived.iter().zip(&timelines) {
        assert_eq!(&runtime.archived_timeline(saga).unwrap(), timeline, "{}", saga.id());
    }

    // Without the key: the chain still checks, the bodies do not open.
    let (keyless, _) = runtime_on(MemoryStore::new());
    let error = keyless.archived_timeline(&archived[0]).unwrap_err();
    assert!(error.to_string().contains("encrypted with key `k1`"), "{error}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A broken archive line is an error naming the line and what to do, and the lines after it
/// still read; an edited record is caught by the chain when the saga is opened.
#[tokio::test]
async fn a_damaged_archive_says_which_line_and_the_rest_reads() {
    let (runtime, _) = runtime_on(MemoryStore::new());
    run_orders(&runtime, &["complete", "complete"]).await;
    let archive = Shared::default();
    let retention = Retention::keep_last(1).unwrap().or_older_than(Duration::from_millis(1)).unwrap();
    tokio::time::sleep(Duration::from_millis(3)).await;
    runtime.prune(&retention.archive(Archive::writer(archive.clone()))).await.unwrap();
    let text = String::from_utf8(archive.bytes()).unwrap();
    let good: Vec<&str> = text.lines().collect();
    assert_eq!(good.len(), 2);

    let damaged = format!("{}\n{}\n\n{}\n", &good[0][..good[0].len() / 2], "not json at all", good[1]);
    let read: Vec<Result<ArchivedSaga, ArchiveError>> =
        ArchiveReader::new(damaged.as_bytes(), "orders.jsonl").collect();
    assert_eq!(read.len(), 3, "blank lines are skipped");
    for (n, result) in read.iter().take(2).enumerate() {
        let error = result.as_ref().unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("line {} of the archive `orders.jsonl` is not an archived saga", n + 1)),
            "{error}"
        );
        assert!(error.contains("the other lines still read"), "{error}");
    }
    let last = read[2].as_ref().unwrap();
    assert_eq!(last.id().as_str(), "o-2");
    assert_eq!(
        runtime.archived_timeline(last).unwrap()[0],
        format!("started order v1 ({})", Order::definition().fingerprint())
    );

    let mut edited: serde_json::Value = serde_json::from_str(good[1]).unwrap();
    edited["journal"][2]["at_ms"] = serde_json::json!(1);
    let edited = ArchiveReader::new(edited.to_string().as_bytes(), "x").next().unwrap().unwrap();
    let error = runtime.open_archived(&edited).unwrap_err().to_string();
    assert!(error.contains("record 2") && error.contains("hash chain"), "{error}");

    let wrong_format = good[0].replace("saga-runtime/archive/v1", "saga-runtime/archive/v9");
    let error = ArchiveReader::new(wrong_format.as_bytes(), "x").next().unwrap().unwrap_err().to_string();
    assert!(error.contains("its format is `saga-runtime/archive/v9`"), "{error}");
    let missing = ArchiveReader::open("/nonexistent/archive.jsonl").err().unwrap().to_string();
    assert!(missing.contains("cannot be opened"), "{missing}");
}

/// A pruned id keeps its word: the same input is answered with how the saga finished and
/// nothing runs again; another input is an input mismatch; another type is the wrong saga;
/// resuming it or reading its journal says it was pruned. Once its tombstone expires, the id
/// is free again and starts a new saga (documented).
async fn a_pruned_id_is_never_run_twice(store: impl CheckpointStore + Clone) {
    let (runtime, runs) = runtime_on(store);
    run_orders(&runtime, &["complete", "compensate"]).await;
    assert_eq!(runs.0.load(Ordering::SeqCst), 2);
    tokio::time::sleep(Duration::from_millis(3)).await;
    let retention = Retention::older_than(Duration::from_millis(1)).unwrap().tombstones_for(days(1)).unwrap();
    assert_eq!(pruned_ids(&runtime.prune(&retention).await.unwrap()), ["o-1", "o-2"]);

    for (saga, fate, status) in [("o-1", "complete", Status::Completed), ("o-2", "compensate", Status::Compensated)] {
        let number = saga[2..].parse().unwrap();
        let error = runtime.run_with_id(id(saga), order(number, fate)).await.unwrap_err();
        let RuntimeError::Pruned { saga_id, status: found, finished_at_ms, pruned_at_ms } = &error else {
            panic!("expected Pruned, got {error}")
        };
        assert_eq!((saga_id.as_str(), *found), (saga, status));
        assert!(finished_at_ms <= pruned_at_ms);
        assert!(error.to_string().contains(&format!("already ran: it finished {status}")), "{error}");
        assert!(error.to_string().contains("nothing was started again"), "{error}");
        let error = runtime.start_with_id(id(saga), order(number, fate)).await.unwrap_err();
        assert!(matches!(error, RuntimeError::Pruned { .. }), "{error}");
    }
    assert_eq!(runs.0.load(Ordering::SeqCst), 2, "nothing ran again");

    let error = runtime.run_with_id(id("o-1"), order(1, "compensate")).await.unwrap_err();
    assert!(matches!(error, RuntimeError::InputMismatch { .. }), "{error}");
    let error = runtime.run_with_id(id("o-1"), Refund { id: 1 }).await.unwrap_err();
    assert!(matches!(error, RuntimeError::WrongSaga { .. }), "{error}");
    let error = runtime.resume::<Order>(&id("o-1")).await.unwrap_err();
    assert!(matches!(error, RuntimeError::Pruned { status: Status::Completed, .. }), "{error}");
    let error = runtime.journal(&id("o-2")).await.unwrap_err();
    assert!(matches!(error, RuntimeError::Pruned { status: Status::Compensated, .. }), "{error}");
    let error = runtime.wait::<Order>(&id("o-2")).await.unwrap_err();
    assert!(matches!(error, RuntimeError::Pruned { .. }), "{error}");
    let error = runtime.journal(&id("never")).await.unwrap_err();
    assert!(matches!(error, RuntimeError::UnknownSaga { .. }), "{error}");
    assert_eq!(runs.0.load(Ordering::SeqCst), 2, "nothing ran again");

    // Tombstones kept for 1 ms: the next round expires them, and the id is new again.
    let short =
        Retention::older_than(Duration::from_millis(1)).unwrap().tombstones_for(Duration::from_millis(1)).unwrap();
    tokio::time::sleep(Duration::from_millis(3)).await;
    let report = runtime.prune(&short).await.unwrap();
    assert_eq!(report.tombstones_expired, 2);
    let outcome = runtime.run_with_id(id("o-1"), order(1, "complete")).await.unwrap();
    assert_eq!(outcome.output().map(|o| o.charge), Some(100));
    assert_eq!(runs.0.load(Ordering::SeqCst), 3, "an expired tombstone no longer guards the id");
}

#[tokio::test]
async fn a_pruned_id_is_never_run_twice_in_memory() {
    a_pruned_id_is_never_run_twice(MemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pruned_id_is_never_run_twice_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    a_pruned_id_is_never_run_twice(SqliteStore::open(dir.path().join("sagas.db")).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pruned_id_is_never_run_twice_on_postgres() {
    let db = pg::ScratchDb::new().await;
    a_pruned_id_is_never_run_twice(PostgresStore::connect(db.url.clone()).await.unwrap()).await;
}

/// On PostgreSQL too, the archive reads back into the stored timeline, and parked sagas stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_prunes_and_archives_like_sqlite() {
    let db = pg::ScratchDb::new().await;
    let (runtime, _) = runtime_on(PostgresStore::connect(db.url.clone()).await.unwrap());
    run_orders(&runtime, &["complete", "park", "compensate", "complete"]).await;
    let before = runtime.timeline(&id("o-3")).await.unwrap();
    let archive = Shared::default();
    let retention = Retention::keep_last(1).unwrap().batch(1).unwrap().archive(Archive::writer(archive.clone()));
    let report = runtime.prune(&retention).await.unwrap();
    assert_eq!((pruned_ids(&report), report.archived), (vec!["o-1".to_owned(), "o-3".to_owned()], 2));
    assert_eq!(report.writes, 3, "one write per batch of one, one to expire tombstones");
    assert_eq!(stored_ids(&runtime).await, ["o-2", "o-4"]);
    let text = archive.bytes();
    let archived: Vec<ArchivedSaga> = ArchiveReader::new(&text[..], "pg").map(Result::unwrap).collect();
    assert_eq!(runtime.archived_timeline(&archived[1]).unwrap(), before);
}

/// The background pruner prunes while sagas run, in rounds, with nobody calling it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_pruner_prunes_while_sagas_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("sagas.db")).await.unwrap();
    let retention = Retention::older_than(Duration::from_millis(20))
        .unwrap()
        .every(Duration::from_millis(10))
        .unwrap()
        .tombstones_for(days(1))
        .unwrap();
    let runtime = Runtime::builder()
        .store(store)
        .policy(quick())
        .resource(Runs::default())
        .register::<Order>()
        .retention(retention)
        .build();
    run_orders(&runtime, &["complete", "park", "complete", "compensate"]).await;
    let mut waited = Duration::ZERO;
    while stored_ids(&runtime).await != ["o-2"] {
        assert!(waited < Duration::from_secs(10), "still stored: {:?}", stored_ids(&runtime).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += Duration::from_millis(10);
    }
    for saga in ["o-1", "o-3", "o-4"] {
        assert!(runtime.store().tombstone(&id(saga)).await.unwrap().is_some(), "{saga}");
    }
}

/// Settings that cannot work are refused when they are made, saying what to give instead.
#[test]
fn bad_retention_settings_are_clear_errors() {
    let message = |r: Result<Retention, saga_runtime::retention::RetentionError>| r.unwrap_err().to_string();
    assert_eq!(
        message(Retention::older_than(Duration::ZERO)),
        "a retention of zero would prune every saga the moment it finishes, and with it the outcome `run_with_id` returns: give a duration such as `Duration::from_secs(30 * 86_400)` to keep 30 days"
    );
    assert!(message(Retention::keep_last(0)).contains("keep at least 1"));
    assert!(message(Retention::keep_last(5).unwrap().tombstones_for(Duration::ZERO)).contains("keeping tombstones"));
    assert!(message(Retention::keep_last(5).unwrap().every(Duration::ZERO)).contains("would never stop"));
    assert!(message(Retention::keep_last(5).unwrap().batch(0)).contains("give at least 1"));
    assert_eq!(Retention::keep_last(5).unwrap().interval(), Duration::from_secs(60));
}

/// A sealed store opened without its keyring can be read (a dry run works) but pruning it is
/// refused before anything changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_a_read_only_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sagas.db");
    let key = Keyring::new(EncryptionKey::new("k1", [9; 32]).unwrap());
    {
        let (runtime, _) = runtime_on(SqliteStore::options(&path).encryption(key).open().await.unwrap());
        run_orders(&runtime, &["complete", "complete"]).await;
    }
    let (runtime, _) = runtime_on(SqliteStore::open(&path).await.unwrap());
    let retention = Retention::keep_last(1).unwrap();
    let error = runtime.prune(&retention).await.unwrap_err();
    let RuntimeError::Store { error: StoreError::ReadOnly { reason, .. }, .. } = &error else {
        panic!("expected a read-only store, got {error}")
    };
    assert!(reason.contains("opened without a keyring"), "{reason}");
    let report = runtime.prune_dry_run(&retention).await.unwrap();
    assert_eq!(report.count, 0, "its inputs cannot be opened to hash them");
    assert_eq!(report.kept.iter().map(|(id, _)| id.to_string()).collect::<Vec<_>>(), ["o-1"]);
    assert!(report.kept[0].1.contains("opened without a keyring"), "{}", report.kept[0].1);
    assert_eq!(stored_ids(&runtime).await, ["o-1", "o-2"]);
}

/// A store written before pruning existed (it implements only the required methods) says
/// so, naming itself, instead of pretending.
#[tokio::test]
async fn a_store_that_cannot_prune_says_so() {
    let (runtime, _) = runtime_on(Forward(MemoryStore::new()));
    run_orders(&runtime, &["complete"]).await;
    let error = runtime.prune(&Retention::keep_last(1).unwrap()).await.unwrap_err().to_string();
    assert_eq!(
        error,
        "the forwarding store does not support pruning: implement that part of `CheckpointStore` for it, or use MemoryStore, SqliteStore or PostgresStore"
    );
}

/// Only the required methods, forwarded.
struct Forward(MemoryStore);

impl CheckpointStore for Forward {
    fn create<'a>(&'a self, saga: NewSaga) -> BoxFuture<'a, Result<Created, StoreError>> {
        self.0.create(saga)
    }
    fn append<'a>(
        &'a self,
        id: &'a SagaId,
        fence: &'a Fence,
        records: Vec<RecordRow>,
        checkpoint: Checkpoint,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.0.append(id, fence, records, checkpoint)
    }
    fn load<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<StoredSaga>, StoreError>> {
        self.0.load(id)
    }
    fn list<'a>(&'a self, query: &'a SagaQuery) -> BoxFuture<'a, Result<SagaPage, StoreError>> {
        self.0.list(query)
    }
    fn claim<'a>(&'a self, request: &'a ClaimRequest) -> BoxFuture<'a, Result<Vec<Claimed>, StoreError>> {
        self.0.claim(request)
    }
    fn claim_saga<'a>(
        &'a self,
        id: &'a SagaId,
        owner: &'a str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> BoxFuture<'a, Result<Claim, StoreError>> {
        self.0.claim_saga(id, owner, now_ms, lease_until_ms)
    }
    fn renew<'a>(&'a self, owner: &'a str, lease_until_ms: u64) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.0.renew(owner, lease_until_ms)
    }
    fn release<'a>(&'a self, id: &'a SagaId, fence: &'a Fence) -> BoxFuture<'a, Result<(), StoreError>> {
        self.0.release(id, fence)
    }
    fn location(&self) -> String {
        "the forwarding store".to_owned()
    }
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

fn pragma(path: &Path, name: &str) -> i64 {
    let connection = rusqlite::Connection::open(path).unwrap();
    connection.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0)).unwrap()
}

/// Under a steady load with a count limit, the file stops growing: each round's sagas reuse
/// the pages the previous round's pruning freed. A new file gives pages back to the file
/// system when the limit falls, keeping a quarter of it free for the next sagas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_file_stays_flat_under_steady_load_and_shrinks_when_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sagas.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let (runtime, _) = runtime_on(store.clone());
    // Tombstones are kept one round here, so that they too stay level.
    let retention = Retention::keep_last(1_500).unwrap().tombstones_for(Duration::from_millis(1)).unwrap();
    let mut sizes = Vec::new();
    for round in 0..6u32 {
        let jobs = (0..1_500u32).map(|n| {
            let runtime = runtime.clone();
            async move { runtime.run(order(round * 1000 + n, "complete")).await.unwrap() }
        });
        futures::future::join_all(jobs).await;
        let report = runtime.prune(&retention).await.unwrap();
        assert_eq!(report.count, if round == 0 { 0 } else { 1_500 }, "round {round}");
        sizes.push(page_bytes(&store).await);
    }
    let (early, late) = (sizes[2], *sizes[2..].iter().max().unwrap());
    assert!(late <= early + early / 10, "the file grew under a steady load: {sizes:?}");

    drop(runtime);
    drop(store);
    assert_eq!(pragma(&path, "auto_vacuum"), 2, "a new file has incremental auto-vacuum");
    let store = SqliteStore::open(&path).await.unwrap();
    let (runtime, _) = runtime_on(store.clone());
    let before = page_bytes(&store).await;
    assert!(store.space().await.unwrap().gives_space_back);
    let report = runtime.prune(&Retention::keep_last(10).unwrap()).await.unwrap();
    assert_eq!(report.count, 1_490);
    assert!(report.reclaimed_bytes > 0, "{report:?}");
    let after = store.space().await.unwrap();
    assert!(after.bytes < before / 2, "{before} -> {after:?}");
    assert!(after.free_bytes <= after.bytes / 4 + 256 * 4096, "a quarter of the file kept free at most: {after:?}");
}

/// The database's size (what the file is once the log is checkpointed).
async fn page_bytes(store: &SqliteStore) -> u64 {
    store.space().await.unwrap().bytes
}

/// A file created before schema 3 has no auto-vacuum: it reuses freed pages, and `compact`
/// rewrites it once with incremental auto-vacuum, keeping every saga.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_file_is_compacted_once_and_keeps_its_sagas() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2-plain.db");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/v2-plain.db"), &path).unwrap();
    let store = SqliteStore::open(&path).await.unwrap();
    let before = runtime_on(store.clone()).0.list().await.unwrap();
    assert!(!store.space().await.unwrap().gives_space_back, "schema 2 files had no auto-vacuum");
    let (_, compacted) = store.compact().await.unwrap();
    let space = store.space().await.unwrap();
    assert_eq!((space.bytes, space.free_bytes), (compacted, 0), "rewritten without free pages");
    let after: Vec<SagaSummary> = runtime_on(store.clone()).0.list().await.unwrap();
    assert_eq!(before, after);
    drop(store);
    assert_eq!(pragma(&path, "auto_vacuum"), 2);
    assert!(file_size(&path) > 0);
    let store = SqliteStore::open(&path).await.unwrap();
    assert!(store.space().await.unwrap().gives_space_back);
}
