//! Costs that stay flat as history piles up, and a store that stays small with retention on.
//!
//! `cargo bench -p saga-runtime --bench scale` prints two tables:
//!
//! 1. **History.** For stores holding 10k, 100k and 1M finished five-step sagas (`--quick`:
//!    10k and 100k): the file's size, then, each in a fresh process (so that memory and the
//!    statement caches start cold; the operating system's file cache is warm, as after a
//!    restart): opening the store, `recover()` with nothing to recover, one claim of due work
//!    (there is none), the first page of a listing (100 sagas, newest first), one more saga's run
//!    (median of 21, one at a time) and the process's peak memory. Every figure is also given as
//!    a ratio to the 10k row, and a saga's run against the physical limit measured by the same
//!    process right after (six raw commits of one small row with the store's settings, on the
//!    same disk: fsync times drift on a shared machine, the ratio much less).
//!    The history is bulk-loaded: one real saga run through the store, then its saga row and
//!    journal rows copied under new ids (the same sizes and indexes as real sagas; the copies'
//!    hash chains are not valid, and nothing here reads them).
//! 2. **Steady load with retention.** 1M sagas (`--quick`: 100k), 64 in flight, through a new
//!    store with `Retention::keep_last(10_000)` (tombstones kept 10 s) pruned every second: the
//!    largest the database and its log got, sagas per second, the latency of a saga's run (p50,
//!    p99, max) and the longest write of pruning; and the same load for a tenth as many sagas
//!    without retention, for comparison.
//!
//! `--child <path>` and `--steady <path> <sagas> <retain>` are the measuring processes;
//! `--fill <path> <sagas>` only makes a store with history (to look at it with `sqlite3`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[path = "common/five_steps.rs"]
mod five_steps;

use five_steps::FiveSteps;
use saga_runtime::prelude::*;
use saga_runtime::retention::Retention;
use saga_runtime::store::{ClaimRequest, Order, SagaKind, SagaQuery, SqliteStore};

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// The process's peak resident memory, in MiB.
fn peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(f64::NAN);
    kib / 1024.0
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A store holding `sagas` finished sagas (plus the template they were copied from).
async fn fill(path: &Path, sagas: u64) {
    {
        let store = SqliteStore::open(path).await.unwrap();
        let runtime = Runtime::builder().store(store).build();
        let outcome = runtime.run_with_id(SagaId::new("template"), FiveSteps { order: 1 }).await.unwrap();
        assert!(outcome.is_completed());
    }
    let connection = rusqlite::Connection::open(path).unwrap();
    connection.pragma_update(None, "journal_mode", "WAL").unwrap();
    connection.pragma_update(None, "synchronous", "OFF").unwrap();
    const CHUNK: u64 = 50_000;
    let mut start = 0;
    while start < sagas {
        let end = (start + CHUNK).min(sagas);
        connection
            .execute_batch(&format!(
                "BEGIN;
                 WITH RECURSIVE n(i) AS (SELECT {start} UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {end})
                 INSERT INTO sagas (id, name, version, fingerprint, status, stage, input, records, head, created_at, updated_at, due_at, owner, lease_until, epoch)
                 SELECT printf('h-%09d', i), name, version, fingerprint, status, stage, input, records, head,
                        created_at - 10000000 + i * 10, updated_at - 10000000 + i * 10, due_at, NULL, NULL, epoch
                 FROM n, sagas WHERE sagas.id = 'template' ORDER BY i;
                 WITH RECURSIVE n(i) AS (SELECT {start} UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {end})
                 INSERT INTO journal (saga_id, seq, at, epoch, kind, step, body, hash)
                 SELECT printf('h-%09d', i), seq, at - 10000000 + i * 10, epoch, kind, step, body, hash
                 FROM n, journal WHERE journal.saga_id = 'template' ORDER BY i, seq;
                 COMMIT;"
            ))
            .unwrap();
        start = end;
    }
    connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
}

/// What a fresh process measures on a store with history.
#[derive(Debug)]
struct Costs {
    open: Duration,
    recover: Duration,
    claim: Duration,
    list: Duration,
    run: Duration,
    /// Six raw commits, measured right after the runs.
    raw: Duration,
    peak_mib: f64,
}

fn child(path: &Path) {
    tokio().block_on(async {
        let started = Instant::now();
        let store = SqliteStore::open(path).await.unwrap();
        let open = started.elapsed();
        let runtime = Runtime::builder().store(store.clone()).register::<FiveSteps>().build();
        let started = Instant::now();
        let recovery = runtime.recover().await.unwrap();
        let recover = started.elapsed();
        assert!(recovery.resumed.is_empty() && recovery.parked.is_empty());
        let definition = FiveSteps::definition();
        let kinds =
            vec![SagaKind { name: definition.name().to_owned(), fingerprint: definition.fingerprint().to_owned() }];
        let now = 1_900_000_000_000;
        let started = Instant::now();
        let claimed = store.claim(&ClaimRequest::new("bench", kinds, now, now + 30_000)).await.unwrap();
        let claim = started.elapsed();
        assert!(claimed.is_empty());
        let started = Instant::now();
        let page = runtime.list_page(&SagaQuery::new().order(Order::NewestFirst).limit(100)).await.unwrap();
        let list = started.elapsed();
        assert_eq!(page.sagas.len(), 100);
        let mut runs = Vec::new();
        for order in 0..21 {
            let started = Instant::now();
            assert!(runtime.run(FiveSteps { order }).await.unwrap().is_completed());
            runs.push(started.elapsed());
        }
        runs.sort();
        let peak = peak_mib();
        // The disk's own pace right now, next to the store: fsync times drift on a shared
        // machine, so a saga's run is also given against this.
        let raw = raw_six_commits(path.parent().unwrap_or(Path::new(".")));
        let costs = Costs { open, recover, claim, list, run: runs[runs.len() / 2], raw, peak_mib: peak };
        println!(
            "{} {} {} {} {} {} {}",
            costs.open.as_nanos(),
            costs.recover.as_nanos(),
            costs.claim.as_nanos(),
            costs.list.as_nanos(),
            costs.run.as_nanos(),
            costs.raw.as_nanos(),
            costs.peak_mib
        );
    });
}

fn measure(path: &Path) -> Costs {
    let output =
        Command::new(std::env::current_exe().unwrap()).arg("--child").arg(path).output().expect("the child runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    let numbers: Vec<f64> = text.split_whitespace().map(|n| n.parse().unwrap()).collect();
    let d = |i: usize| Duration::from_nanos(numbers[i] as u64);
    Costs { open: d(0), recover: d(1), claim: d(2), list: d(3), run: d(4), raw: d(5), peak_mib: numbers[6] }
}

/// Six raw commits of one small row with the store's settings: a five-step saga's writes at
/// the physical limit.
fn raw_six_commits(dir: &Path) -> Duration {
    let path = dir.join("raw.db");
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(dir.join("raw.db-wal"));
    let connection = rusqlite::Connection::open(&path).unwrap();
    connection.pragma_update(None, "locking_mode", "EXCLUSIVE").unwrap();
    connection.pragma_update(None, "journal_mode", "WAL").unwrap();
    connection.pragma_update(None, "synchronous", "FULL").unwrap();
    connection.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)").unwrap();
    let mut sixes = Vec::new();
    for _ in 0..21 {
        let started = Instant::now();
        for _ in 0..6 {
            connection.execute("INSERT INTO t (body) VALUES (zeroblob(200))", []).unwrap();
        }
        sixes.push(started.elapsed());
    }
    sixes.sort();
    sixes[sixes.len() / 2]
}

/// What the steady load measured.
struct Steady {
    sagas: u64,
    took: Duration,
    largest: u64,
    last: u64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    pruned: u64,
    longest_prune_write: Duration,
    peak_mib: f64,
}

fn steady_child(path: &Path, sagas: u64, retain: bool) {
    tokio().block_on(async {
        let store = SqliteStore::open(path).await.unwrap();
        let runtime = Runtime::builder().store(store.clone()).register::<FiveSteps>().build();
        let done = Arc::new(AtomicBool::new(false));
        let largest = Arc::new(AtomicU64::new(0));
        let wal = PathBuf::from(format!("{}-wal", path.display()));
        let sampler = {
            let (store, done, largest, wal) = (store.clone(), done.clone(), largest.clone(), wal.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    let bytes =
                        store.space().await.unwrap().bytes + std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
                    largest.fetch_max(bytes, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        let pruner = {
            let (runtime, done) = (runtime.clone(), done.clone());
            let retention = Retention::keep_last(10_000).unwrap().tombstones_for(Duration::from_secs(10)).unwrap();
            tokio::spawn(async move {
                let (mut pruned, mut longest) = (0, Duration::ZERO);
                while retain && !done.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let report = runtime.prune(&retention).await.unwrap();
                    pruned += report.count;
                    longest = longest.max(report.longest_write);
                }
                (pruned, longest)
            })
        };
        let next = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let workers = (0..64).map(|_| {
            let (runtime, next) = (runtime.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let order = next.fetch_add(1, Ordering::Relaxed);
                    if order >= sagas {
                        return latencies;
                    }
                    let began = Instant::now();
                    assert!(runtime.run(FiveSteps { order }).await.unwrap().is_completed());
                    latencies.push(began.elapsed());
                }
            })
        });
        let mut latencies: Vec<Duration> = Vec::with_capacity(sagas as usize);
        for worker in workers.collect::<Vec<_>>() {
            latencies.extend(worker.await.unwrap());
        }
        let took = started.elapsed();
        done.store(true, Ordering::Relaxed);
        let (pruned, longest) = pruner.await.unwrap();
        sampler.await.unwrap();
        latencies.sort();
        let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
        let last = store.space().await.unwrap().bytes + std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        println!(
            "{} {} {} {} {} {} {} {} {}",
            took.as_nanos(),
            largest.load(Ordering::Relaxed).max(last),
            last,
            at(0.5).as_nanos(),
            at(0.99).as_nanos(),
            at(1.0).as_nanos(),
            pruned,
            longest.as_nanos(),
            peak_mib()
        );
    });
}

fn steady(path: &Path, sagas: u64, retain: bool) -> Steady {
    let output = Command::new(std::env::current_exe().unwrap())
        .arg("--steady")
        .arg(path)
        .arg(sagas.to_string())
        .arg(if retain { "1" } else { "0" })
        .output()
        .expect("the child runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    let n: Vec<f64> = text.split_whitespace().map(|n| n.parse().unwrap()).collect();
    let d = |i: usize| Duration::from_nanos(n[i] as u64);
    Steady {
        sagas,
        took: d(0),
        largest: n[1] as u64,
        last: n[2] as u64,
        p50: d(3),
        p99: d(4),
        max: d(5),
        pruned: n[6] as u64,
        longest_prune_write: d(7),
        peak_mib: n[8],
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        return child(Path::new(&args[i + 1]));
    }
    if let Some(i) = args.iter().position(|a| a == "--fill") {
        return tokio().block_on(fill(Path::new(&args[i + 1]), args[i + 2].parse().unwrap()));
    }
    if let Some(i) = args.iter().position(|a| a == "--steady") {
        return steady_child(Path::new(&args[i + 1]), args[i + 2].parse().unwrap(), args[i + 3] == "1");
    }
    let quick = args.iter().any(|a| a == "--quick");
    let sizes: &[u64] = if quick { &[10_000, 100_000] } else { &[10_000, 100_000, 1_000_000] };
    let steady_sagas: u64 = if quick { 100_000 } else { 1_000_000 };
    // SAGA_BENCH_DIR: where the scratch files go (relative to the package, where cargo runs
    // benches), created if missing; by default the package directory.
    let base: std::path::PathBuf = std::env::var_os("SAGA_BENCH_DIR").unwrap_or_else(|| ".".into()).into();
    std::fs::create_dir_all(&base).unwrap_or_else(|e| panic!("cannot create SAGA_BENCH_DIR {}: {e}", base.display()));
    let dir = tempfile::tempdir_in(&base).unwrap();

    println!("History: costs with N finished five-step sagas in the store (each measured in a fresh process)");
    println!(
        "| finished sagas | file | open | recover() | claim | list, first page | one saga's run | raw limit (6 commits) | run ÷ raw | peak memory |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut first: Option<Costs> = None;
    for &n in sizes {
        let path = dir.path().join(format!("history-{n}.db"));
        let filled = Instant::now();
        tokio().block_on(fill(&path, n));
        let fill_took = filled.elapsed();
        let size = std::fs::metadata(&path).unwrap().len();
        let costs = measure(&path);
        let ratio = |now: Duration, then: fn(&Costs) -> Duration| match &first {
            Some(base) => format!(" ({:.2}×)", now.as_secs_f64() / then(base).as_secs_f64()),
            None => String::new(),
        };
        println!(
            "| {n} | {:.0} MiB | {:.2} ms{} | {:.2} ms{} | {:.3} ms{} | {:.2} ms{} | {:.2} ms{} | {:.2} ms | {:.2} | {:.1} MiB |",
            mib(size),
            ms(costs.open),
            ratio(costs.open, |c| c.open),
            ms(costs.recover),
            ratio(costs.recover, |c| c.recover),
            ms(costs.claim),
            ratio(costs.claim, |c| c.claim),
            ms(costs.list),
            ratio(costs.list, |c| c.list),
            ms(costs.run),
            ratio(costs.run, |c| c.run),
            ms(costs.raw),
            costs.run.as_secs_f64() / costs.raw.as_secs_f64(),
            costs.peak_mib,
        );
        eprintln!("(filled {n} sagas in {:.1} s)", fill_took.as_secs_f64());
        let _ = std::fs::remove_file(&path);
        first.get_or_insert(costs);
    }

    println!(
        "\nSteady load: five-step sagas, 64 in flight, on a new store; retention keeps the newest 10,000 finished sagas (tombstones 10 s), pruned every second"
    );
    println!(
        "| retention | sagas | sagas/s | largest file + log | at the end | run p50 | run p99 | run max | pruned | longest pruning write | peak memory |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (retain, sagas) in [(false, steady_sagas / 10), (true, steady_sagas)] {
        let path = dir.path().join(format!("steady-{retain}.db"));
        let s = steady(&path, sagas, retain);
        println!(
            "| {} | {} | {:.0} | {:.1} MiB | {:.1} MiB | {:.2} ms | {:.2} ms | {:.1} ms | {} | {} | {:.1} MiB |",
            if retain { "keep 10,000" } else { "none" },
            s.sagas,
            s.sagas as f64 / s.took.as_secs_f64(),
            mib(s.largest),
            mib(s.last),
            ms(s.p50),
            ms(s.p99),
            ms(s.max),
            s.pruned,
            if retain { format!("{:.1} ms", ms(s.longest_prune_write)) } else { "-".to_owned() },
            s.peak_mib,
        );
    }
}
