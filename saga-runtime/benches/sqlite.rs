//! The embedded store against the physical limit of the same disk, in one run.
//!
//! `cargo bench -p saga-runtime --bench sqlite` prints:
//! - raw loops committing one small row per transaction (WAL, `synchronous = FULL`), with
//!   rusqlite (the client the store uses, on its own thread) and with sqlx 0.9;
//! - five-step sagas per second (and steps per second) on `SqliteStore`, one at a time and
//!   with 16 and 256 in flight, with the store writes (commits) per saga;
//! - fsyncs per saga and per raw commit, counted by re-running each case under
//!   `strace -f -c -e trace=fsync,fdatasync` when strace is installed.
//!
//! `--only <case> --runs <n>` runs one case alone (what the strace pass uses).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[path = "common/five_steps.rs"]
mod five_steps;

use five_steps::FiveSteps;
use saga_runtime::prelude::*;
use saga_runtime::store::{
    Checkpoint, Claim, ClaimRequest, Claimed, Created, Fence, NewSaga, RecordRow, SagaPage, SagaQuery, SqliteOptions,
    SqliteStore, StoreError, StoredSaga,
};
use saga_runtime::{BoxFuture, CheckpointStore};
use serde::{Deserialize, Serialize};

/// A saga with one output of `bytes` bytes: the large write of the stall case.
#[derive(Clone, Serialize, Deserialize)]
struct BigOutput {
    bytes: usize,
}

#[saga]
impl BigOutput {
    #[step(idempotent)]
    async fn render(&self, _cx: &StepContext) -> StepResult<String> {
        Ok("r".repeat(self.bytes))
    }
}

/// Records how long each small append waited for its commit.
struct Latencies {
    inner: SqliteStore,
    small: Arc<std::sync::Mutex<Vec<Duration>>>,
}

impl CheckpointStore for Latencies {
    fn create<'a>(&'a self, saga: NewSaga) -> BoxFuture<'a, Result<Created, StoreError>> {
        self.inner.create(saga)
    }
    fn append<'a>(
        &'a self,
        id: &'a SagaId,
        fence: &'a Fence,
        records: Vec<RecordRow>,
        checkpoint: Checkpoint,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let small = records.iter().map(|r| r.body.len()).sum::<usize>() < 64 * 1024;
        Box::pin(async move {
            let started = Instant::now();
            let result = self.inner.append(id, fence, records, checkpoint).await;
            if small {
                self.small.lock().unwrap().push(started.elapsed());
            }
            result
        })
    }
    fn load<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<StoredSaga>, StoreError>> {
        self.inner.load(id)
    }
    fn list<'a>(&'a self, query: &'a SagaQuery) -> BoxFuture<'a, Result<SagaPage, StoreError>> {
        self.inner.list(query)
    }
    fn claim<'a>(&'a self, request: &'a ClaimRequest) -> BoxFuture<'a, Result<Vec<Claimed>, StoreError>> {
        self.inner.claim(request)
    }
    fn claim_saga<'a>(
        &'a self,
        id: &'a SagaId,
        owner: &'a str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> BoxFuture<'a, Result<Claim, StoreError>> {
        self.inner.claim_saga(id, owner, now_ms, lease_until_ms)
    }
    fn renew<'a>(&'a self, owner: &'a str, lease_until_ms: u64) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.inner.renew(owner, lease_until_ms)
    }
    fn release<'a>(&'a self, id: &'a SagaId, fence: &'a Fence) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.release(id, fence)
    }
}

/// 16 five-step sagas in flight, `runs` in all, alongside (when `big` is given) sagas writing
/// one output of `big` bytes each, back to back: the commit latencies of the small appends.
async fn stall(path: &Path, runs: u64, big: Option<usize>) -> Vec<Duration> {
    let small = Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = Latencies { inner: SqliteStore::open(path).await.unwrap(), small: small.clone() };
    let runtime = Runtime::builder().store(store).max_payload(64 * 1024 * 1024).build();
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = big.map(|bytes| {
        let (runtime, done) = (runtime.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                assert!(runtime.run(BigOutput { bytes }).await.unwrap().is_completed());
            }
        })
    });
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (runtime, next) = (runtime.clone(), next.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < runs {
                    assert!(runtime.run(FiveSteps { order: 1 }).await.unwrap().is_completed());
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    if let Some(writer) = writer {
        writer.await.unwrap();
    }
    let mut latencies = small.lock().unwrap().clone();
    latencies.sort();
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Counts the store's writes (one transaction each, before group commit merges them): creates,
/// appends, and any claim, renewal or release.
struct Counting {
    inner: SqliteStore,
    writes: Arc<AtomicU64>,
}

impl CheckpointStore for Counting {
    fn create<'a>(&'a self, saga: NewSaga) -> BoxFuture<'a, Result<Created, StoreError>> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.create(saga)
    }
    fn append<'a>(
        &'a self,
        id: &'a SagaId,
        fence: &'a Fence,
        records: Vec<RecordRow>,
        checkpoint: Checkpoint,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.append(id, fence, records, checkpoint)
    }
    fn load<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<StoredSaga>, StoreError>> {
        self.inner.load(id)
    }
    fn list<'a>(&'a self, query: &'a SagaQuery) -> BoxFuture<'a, Result<SagaPage, StoreError>> {
        self.inner.list(query)
    }
    fn claim<'a>(&'a self, request: &'a ClaimRequest) -> BoxFuture<'a, Result<Vec<Claimed>, StoreError>> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.claim(request)
    }
    fn claim_saga<'a>(
        &'a self,
        id: &'a SagaId,
        owner: &'a str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> BoxFuture<'a, Result<Claim, StoreError>> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.claim_saga(id, owner, now_ms, lease_until_ms)
    }
    fn renew<'a>(&'a self, owner: &'a str, lease_until_ms: u64) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.renew(owner, lease_until_ms)
    }
    fn release<'a>(&'a self, id: &'a SagaId, fence: &'a Fence) -> BoxFuture<'a, Result<(), StoreError>> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.release(id, fence)
    }
}

fn raw_rusqlite(path: &Path, commits: u64) -> Duration {
    let connection = rusqlite::Connection::open(path).unwrap();
    connection.pragma_update(None, "locking_mode", "EXCLUSIVE").unwrap();
    let _: String = connection.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).unwrap();
    connection.pragma_update(None, "synchronous", "FULL").unwrap();
    connection.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL)").unwrap();
    let mut connection = connection;
    let start = Instant::now();
    for k in 0..commits {
        let tx = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).unwrap();
        tx.prepare_cached("INSERT INTO t (k, v) VALUES (?1, ?2)")
            .unwrap()
            .execute(rusqlite::params![k as i64, [7u8; 64]])
            .unwrap();
        tx.commit().unwrap();
    }
    start.elapsed()
}

async fn raw_sqlx(path: &Path, commits: u64) -> Duration {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .locking_mode(sqlx::sqlite::SqliteLockingMode::Exclusive)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await.unwrap();
    sqlx::query("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL)").execute(&pool).await.unwrap();
    let start = Instant::now();
    for k in 0..commits {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        sqlx::query("INSERT INTO t (k, v) VALUES (?, ?)")
            .bind(k as i64)
            .bind(vec![7u8; 64])
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let elapsed = start.elapsed();
    pool.close().await;
    elapsed
}

/// Runs `runs` sagas with `in_flight` at a time; returns the time and the store writes.
async fn sagas(path: &Path, runs: u64, in_flight: u64) -> (Duration, u64) {
    sagas_on(SqliteStore::open(path).await.unwrap(), runs, in_flight).await
}

/// How the file is shared while the sagas run: the locking cost of letting `saga` read it.
#[derive(Clone, Copy)]
enum Sharing {
    /// `exclusive(true)`: no reader can open the file.
    Exclusive,
    /// The default: readers may open the file, none does.
    Shared,
    /// The default, with a reader (what the `saga` CLI opens) listing the newest 50 sagas and
    /// reading one journal every 50 ms next to the writer.
    SharedWithReader,
}

async fn sagas_sharing(path: &Path, runs: u64, in_flight: u64, sharing: Sharing) -> Duration {
    let store = SqliteOptions::new(path).exclusive(matches!(sharing, Sharing::Exclusive)).open().await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = matches!(sharing, Sharing::SharedWithReader).then(|| {
        let (path, stop) = (path.to_owned(), stop.clone());
        tokio::spawn(async move {
            let reader = SqliteOptions::new(&path).reader().open().await.unwrap();
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let page = reader.list(&SagaQuery::new().limit(50)).await.unwrap();
                if let Some(saga) = page.sagas.first() {
                    reader.load(&saga.id).await.unwrap();
                }
                reads += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            reads
        })
    });
    let (elapsed, _) = sagas_on(store, runs, in_flight).await;
    stop.store(true, Ordering::Relaxed);
    if let Some(reader) = reader {
        assert!(reader.await.unwrap() > 0, "the reader read");
    }
    elapsed
}

async fn sagas_on(store: SqliteStore, runs: u64, in_flight: u64) -> (Duration, u64) {
    let writes = Arc::new(AtomicU64::new(0));
    let store = Counting { inner: store, writes: writes.clone() };
    let runtime = Runtime::builder().store(store).build();
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..in_flight)
        .map(|_| {
            let (runtime, next) = (runtime.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let order = next.fetch_add(1, Ordering::Relaxed);
                    if order >= runs {
                        break;
                    }
                    let outcome = runtime.run(FiveSteps { order }).await.unwrap();
                    assert!(outcome.is_completed());
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    (start.elapsed(), writes.load(Ordering::Relaxed))
}

/// Runs one case alone in this process: what the strace pass measures.
fn run_case(case: &str, runs: u64) -> Duration {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("bench.db");
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    match case {
        "rusqlite" => raw_rusqlite(&path, runs),
        "sqlx" => tokio.block_on(raw_sqlx(&path, runs)),
        _ => {
            let in_flight: u64 = case.strip_prefix("sagas-").and_then(|n| n.parse().ok()).expect("a case");
            tokio.block_on(sagas(&path, runs, in_flight)).0
        }
    }
}

/// fsyncs per unit of `case`, counted with strace, if it is installed.
fn fsyncs(case: &str, runs: u64) -> Option<f64> {
    let output = Command::new("strace")
        .args(["-f", "-c", "-e", "trace=fsync,fdatasync", "-o", "/dev/stderr"])
        .arg(std::env::current_exe().ok()?)
        .args(["--only", case, "--runs", &runs.to_string()])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let summary = String::from_utf8_lossy(&output.stderr);
    let calls: u64 = summary
        .lines()
        .filter(|line| line.trim_end().ends_with("fsync") || line.trim_end().ends_with("fdatasync"))
        .filter_map(|line| line.split_whitespace().nth(3)?.parse::<u64>().ok())
        .sum();
    Some(calls as f64 / runs as f64)
}

/// The median of a list.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// One round: a raw rusqlite loop and a saga run, back to back, so that their ratio is taken
/// from measurements a few hundred milliseconds apart on this shared, noisy machine. Returns
/// (raw commits/s, sagas/s, store writes per saga).
fn round(tokio: &tokio::runtime::Runtime, commits: u64, runs: u64, in_flight: u64) -> (f64, f64, f64) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let raw = commits as f64 / raw_rusqlite(&dir.path().join("raw.db"), commits).as_secs_f64();
    let (elapsed, writes) = tokio.block_on(sagas(&dir.path().join("bench.db"), runs, in_flight));
    (raw, runs as f64 / elapsed.as_secs_f64(), writes as f64 / runs as f64)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--only") {
        let case = &args[at + 1];
        let runs = args.iter().position(|a| a == "--runs").map_or(200, |i| args[i + 1].parse().unwrap());
        run_case(case, runs);
        return;
    }
    // `--quick` (what CI runs): fewer rounds and sagas, the same table.
    let quick = args.iter().any(|a| a == "--quick");
    let rounds = if quick { 3 } else { 7 };
    let commits = if quick { 300 } else { 1_000 };
    let raw_rusqlite = commits as f64 / run_case("rusqlite", commits).as_secs_f64();
    let raw_sqlx = commits as f64 / run_case("sqlx", commits).as_secs_f64();

    println!(
        "SQLite on this disk: WAL, synchronous = FULL, locking_mode = EXCLUSIVE (as the raw ceiling); one small row per transaction\n"
    );
    println!("| raw commit loop | commits/s | fsyncs/commit |");
    println!("|---|---:|---:|");
    let strace_runs = if quick { 100 } else { 500 };
    println!("| rusqlite (the store's client) | {raw_rusqlite:.0} | {} |", show(fsyncs("rusqlite", strace_runs)));
    println!("| sqlx 0.9 | {raw_sqlx:.0} | {} |", show(fsyncs("sqlx", strace_runs)));

    println!(
        "\nfive-step sagas on SqliteStore (each: create + one write per step, the last with `finished`), {rounds} rounds, \
         each a raw rusqlite loop then the sagas; medians, and the median of the per-round ratios\n"
    );
    println!(
        "| in flight | sagas/s | steps/s | store writes/saga | fsyncs/saga | raw commits/s (same rounds) | sagas/s ÷ (raw ÷ 6) | steps/s ÷ raw |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let cases: [(u64, u64); 3] =
        if quick { [(1, 100), (16, 400), (256, 1_024)] } else { [(1, 400), (16, 2_000), (256, 4_096)] };
    for (in_flight, runs) in cases {
        let measured: Vec<(f64, f64, f64)> = (0..rounds).map(|_| round(&tokio, commits, runs, in_flight)).collect();
        let raw = median(measured.iter().map(|m| m.0).collect());
        let per_second = median(measured.iter().map(|m| m.1).collect());
        let writes = median(measured.iter().map(|m| m.2).collect());
        let of_ceiling = median(measured.iter().map(|(raw, sagas, _)| sagas / (raw / 6.0)).collect());
        let steps_ratio = median(measured.iter().map(|(raw, sagas, _)| sagas * 5.0 / raw).collect());
        println!(
            "| {in_flight} | {per_second:.0} | {:.0} | {writes:.2} | {} | {raw:.0} | {of_ceiling:.3} | {steps_ratio:.3} |",
            per_second * 5.0,
            show(fsyncs(&format!("sagas-{in_flight}"), runs.min(if quick { 100 } else { 1_000 }))),
        );
    }
    println!(
        "\nsharing the file with readers (the `saga` CLI): the default (normal locking, a shared-memory WAL index) and \
         the default with a reader listing and loading every 50 ms, against exclusive(true), {rounds} rounds of each side by side (in alternating order); \
         medians of the per-round ratios\n"
    );
    println!("| in flight | exclusive sagas/s | shared ÷ exclusive | shared with a reader ÷ exclusive |");
    println!("|---:|---:|---:|---:|");
    for (in_flight, runs) in if quick { [(1, 100), (16, 400)] } else { [(1, 400), (16, 2_000)] } {
        let measured: Vec<[f64; 3]> = (0..rounds)
            .map(|round| {
                let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
                let mut rates = [0.0; 3];
                // Every other round in the opposite order, so that neither mode always runs first.
                let mut order: Vec<(usize, Sharing)> =
                    [Sharing::Exclusive, Sharing::Shared, Sharing::SharedWithReader].into_iter().enumerate().collect();
                if round % 2 == 1 {
                    order.reverse();
                }
                for (n, sharing) in order {
                    let path = dir.path().join(format!("sharing-{n}.db"));
                    rates[n] =
                        runs as f64 / tokio.block_on(sagas_sharing(&path, runs, in_flight, sharing)).as_secs_f64();
                }
                rates
            })
            .collect();
        println!(
            "| {in_flight} | {:.0} | {:.3} | {:.3} |",
            median(measured.iter().map(|r| r[0]).collect()),
            median(measured.iter().map(|r| r[1] / r[0]).collect()),
            median(measured.iter().map(|r| r[2] / r[0]).collect()),
        );
    }
    let runs = if quick { 400 } else { 2_000 };
    println!(
        "\nstalls: the commit latency of small appends with 16 five-step sagas in flight ({runs} sagas), alone and next to sagas writing one 10 MB output each, back to back\n"
    );
    println!("| next to | small appends | p50 (ms) | p99 (ms) | max (ms) |");
    println!("|---|---:|---:|---:|---:|");
    for (label, big) in [("nothing", None), ("10 MB outputs", Some(10 * 1024 * 1024))] {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let latencies = tokio.block_on(stall(&dir.path().join("stall.db"), runs, big));
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "| {label} | {} | {:.2} | {:.2} | {:.2} |",
            latencies.len(),
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.99)),
            ms(*latencies.last().unwrap())
        );
    }
    println!(
        "\nceiling one at a time: raw commits/s ÷ 6 (a five-step saga needs 6 durable writes: its creation with the first step's start, then one per step)"
    );
    println!(
        "peer (salvor 0.10, measured on this machine per the issue): ~650 five-step runs/s one at a time, ~430 with 16 in flight, 12 fsyncs per run"
    );
}

fn show(value: Option<f64>) -> String {
    value.map_or("n/a (no strace)".to_owned(), |v| format!("{v:.2}"))
}
