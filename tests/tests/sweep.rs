//! The sweep: orphans found by joining what sagas created with the store (a compensation that
//! "rotted" and left a file, a saga parked past its grace period, a saga the store does not
//! know), removed with their own idempotency keys or only reported in a dry run, journaled in
//! their saga; never a resource of a running or completed saga. Parked sagas paged again; due
//! sagas resumed. Concurrent sweeps on PostgreSQL remove each orphan once.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::pg::ScratchDb;
use saga_runtime::journal::Event;
use saga_runtime::prelude::*;
use saga_runtime::store::PostgresStore;
use saga_runtime::{OrphanKind, OrphanReason, SweepOptions, Tagged};
use serde::{Deserialize, Serialize};

/// Files named `<saga id>/<name>`, and every removal a sweep made (path, key).
#[derive(Default)]
struct Files {
    paths: Mutex<BTreeSet<String>>,
    removals: Mutex<Vec<(String, String)>>,
}

impl Files {
    fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().iter().cloned().collect()
    }

    fn kind(files: &Arc<Files>) -> OrphanKind {
        let (listed, removed) = (files.clone(), files.clone());
        OrphanKind::new(
            "file",
            move || {
                let paths = listed.paths();
                async move {
                    Ok(paths
                        .into_iter()
                        .filter_map(|path| {
                            let saga = path.split_once('/')?.0.to_owned();
                            Some(Tagged::new(path, SagaId::new(saga)))
                        })
                        .collect())
                }
            },
            move |file: Tagged, key: String| {
                let removed = removed.clone();
                async move {
                    // A little latency, so that concurrent sweeps overlap.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    removed.paths.lock().unwrap().remove(&file.id);
                    removed.removals.lock().unwrap().push((file.id, key));
                    Ok(())
                }
            },
        )
    }
}

/// The files a job wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Written {
    files: Vec<String>,
}

/// Writes two files, then checks them; its compensation forgets the second file (the seed's
/// "compensations rot").
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    /// `ok`, `fail` (rolled back), `park` (its compensation fails: parked), `hang`.
    mode: String,
}

#[saga]
impl Job {
    #[step(compensate = unwrite)]
    async fn write(&self, cx: &StepContext) -> StepResult<Written> {
        let files = vec![format!("{}/a", cx.saga_id()), format!("{}/b", cx.saga_id())];
        cx.resource::<Arc<Files>>().paths.lock().unwrap().extend(files.iter().cloned());
        Ok(Written { files })
    }
    async fn unwrite(&self, cx: &StepContext, written: &Written) -> StepResult<()> {
        if self.mode == "park" {
            return Err(StepError::transient("the file server is down"));
        }
        // Rotted: `b` was added later, and nobody updated the compensation.
        cx.resource::<Arc<Files>>().paths.lock().unwrap().remove(&written.files[0]);
        Ok(())
    }

    #[step(idempotent)]
    async fn check(&self, _cx: &StepContext, write: &Written) -> StepResult<usize> {
        match self.mode.as_str() {
            "fail" | "park" => Err(StepError::logical("the files are wrong")),
            "hang" => std::future::pending().await,
            _ => Ok(write.files.len()),
        }
    }
}

fn builder(files: &Arc<Files>) -> saga_runtime::RuntimeBuilder {
    Runtime::builder()
        .resource(files.clone())
        .policy(Policy {
            reprompts: 0,
            model_tiers: 1,
            compensation_retries: 0,
            backoff: Backoff { initial: Duration::from_millis(1), max: Duration::from_millis(2), ..Backoff::default() },
            ..Policy::default()
        })
        .register::<Job>()
        .orphans(Files::kind(files))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_removes_what_rotted_compensations_left_and_nothing_else() {
    let files = Arc::new(Files::default());
    let runtime = builder(&files).build();
    let ok = runtime.run_with_id(SagaId::new("ok"), Job { mode: "ok".into() }).await.unwrap();
    assert!(ok.is_completed());
    let failed = runtime.run_with_id(SagaId::new("fail"), Job { mode: "fail".into() }).await.unwrap();
    assert_eq!(failed.status(), Status::Compensated);
    let parked = runtime.run_with_id(SagaId::new("park"), Job { mode: "park".into() }).await.unwrap();
    assert_eq!(parked.status(), Status::NeedsHuman);
    let hanging = {
        let runtime = runtime.clone();
        tokio::spawn(async move { runtime.run_with_id(SagaId::new("hang"), Job { mode: "hang".into() }).await })
    };
    while !files.paths().contains(&"hang/b".to_owned()) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    files.paths.lock().unwrap().insert("ghost/x".to_owned());
    let all_but = |gone: &[&str]| -> Vec<String> {
        let mut all: Vec<String> =
            ["fail/b", "ghost/x", "hang/a", "hang/b", "ok/a", "ok/b", "park/a", "park/b"].map(str::to_owned).into();
        all.retain(|p| !gone.contains(&p.as_str()));
        all
    };
    assert_eq!(files.paths(), all_but(&[]), "the rotted compensation left `fail/b`");

    // A dry run reports, and changes nothing.
    let report = runtime.sweep_with(&SweepOptions::new().dry_run(true)).await.unwrap();
    let found: Vec<(String, OrphanReason, bool)> =
        report.orphans.iter().map(|o| (o.resource.id.clone(), o.reason.clone(), o.removed)).collect();
    assert_eq!(
        found,
        [
            ("fail/b".to_owned(), OrphanReason::Compensated, false),
            ("ghost/x".to_owned(), OrphanReason::UnknownSaga, false)
        ]
    );
    assert_eq!(files.paths(), all_but(&[]));
    assert!(files.removals.lock().unwrap().is_empty());

    // The sweep removes them: never a running saga's, a completed one's, or one parked within
    // its grace period.
    let report = runtime.sweep().await.unwrap();
    assert!(report.orphans.iter().all(|o| o.removed), "{report:?}");
    assert_eq!(report.orphans.len(), 2);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(files.paths(), all_but(&["fail/b", "ghost/x"]));
    let removals = files.removals.lock().unwrap().clone();
    assert_eq!(removals.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(), ["fail/b", "ghost/x"]);
    assert!(removals.iter().all(|(_, key)| key.len() == 64 && key.chars().all(|c| c.is_ascii_hexdigit())));
    assert_ne!(removals[0].1, removals[1].1, "each resource has its own key");

    // Journaled in the saga it belonged to, and in its report.
    let journal = runtime.journal(&SagaId::new("fail")).await.unwrap();
    assert!(matches!(
        &journal.last().unwrap().event,
        Event::OrphanRemoved { kind, resource } if kind == "file" && resource == "fail/b"
    ));
    let stored = runtime.run_with_id(SagaId::new("fail"), Job { mode: "fail".into() }).await.unwrap();
    assert_eq!(stored.status(), Status::Compensated);
    let removed: Vec<(&str, &str)> =
        stored.report().orphans_removed.iter().map(|o| (o.kind.as_str(), o.resource.as_str())).collect();
    assert_eq!(removed, [("file", "fail/b")]);

    // Nothing left to find; a parked saga's files go once its grace period is over.
    assert!(runtime.sweep().await.unwrap().orphans.is_empty());
    let report = runtime.sweep_with(&SweepOptions::new().parked_grace(Duration::ZERO)).await.unwrap();
    let found: Vec<(&str, &OrphanReason)> =
        report.orphans.iter().map(|o| (o.resource.id.as_str(), &o.reason)).collect();
    assert_eq!(found, [("park/a", &OrphanReason::ParkedPastGrace), ("park/b", &OrphanReason::ParkedPastGrace)]);
    assert_eq!(files.paths(), all_but(&["fail/b", "ghost/x", "park/a", "park/b"]), "the running saga's files stay");
    let journal = runtime.journal(&SagaId::new("park")).await.unwrap();
    assert_eq!(journal.iter().filter(|r| matches!(r.event, Event::OrphanRemoved { .. })).count(), 2);
    hanging.abort();
}

/// A saga parked for a human is paged again once it has waited `repage_after`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_pages_again_for_a_saga_parked_too_long() {
    let files = Arc::new(Files::default());
    let pages = Arc::new(AtomicU32::new(0));
    let paged = pages.clone();
    let runtime = builder(&files)
        .pager(move |_: &Incident| {
            paged.fetch_add(1, Ordering::SeqCst);
        })
        .policy(Policy {
            reprompts: 0,
            model_tiers: 1,
            compensation_retries: 0,
            repage_after: Some(Duration::from_millis(200)),
            backoff: Backoff { initial: Duration::from_millis(1), max: Duration::from_millis(2), ..Backoff::default() },
            ..Policy::default()
        })
        .build();
    let parked = runtime.run_with_id(SagaId::new("park"), Job { mode: "park".into() }).await.unwrap();
    assert_eq!(parked.status(), Status::NeedsHuman);
    assert_eq!(pages.load(Ordering::SeqCst), 1);
    assert!(runtime.sweep().await.unwrap().reminded.is_empty(), "paged just now");

    tokio::time::sleep(Duration::from_millis(250)).await;
    let dry = runtime.sweep_with(&SweepOptions::new().dry_run(true)).await.unwrap();
    assert_eq!(dry.reminded, [SagaId::new("park")]);
    assert_eq!(pages.load(Ordering::SeqCst), 1, "a dry run pages nobody");
    let report = runtime.sweep().await.unwrap();
    assert_eq!(report.reminded, [SagaId::new("park")]);
    assert_eq!(pages.load(Ordering::SeqCst), 2);
    assert!(runtime.sweep().await.unwrap().reminded.is_empty(), "the reminder restarted the wait");
    let journal = runtime.journal(&SagaId::new("park")).await.unwrap();
    assert!(matches!(journal.last().unwrap().event, Event::Reminded));
    let stored = runtime.run_with_id(SagaId::new("park"), Job { mode: "park".into() }).await.unwrap();
    assert_eq!(stored.report().paged, 2);
}

/// Sagas that are due and held by nobody (enqueued, or left by a dead worker) are resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_resumes_what_nobody_drives() {
    let files = Arc::new(Files::default());
    let runtime = builder(&files).build();
    let id = runtime.start(Job { mode: "ok".into() }).await.unwrap();
    let dry = runtime.sweep_with(&SweepOptions::new().dry_run(true)).await.unwrap();
    assert_eq!(dry.due, std::slice::from_ref(&id));
    assert!(files.paths().is_empty(), "a dry run runs nothing");
    let report = runtime.sweep().await.unwrap();
    assert_eq!(report.resumed, [(id.clone(), Status::Completed)]);
    assert_eq!(files.paths(), [format!("{id}/a"), format!("{id}/b")]);
}

/// Two workers sweeping one PostgreSQL store at once: every orphan is removed exactly once,
/// and journaled once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sweeps_remove_each_orphan_once() {
    let db = ScratchDb::new().await;
    let files = Arc::new(Files::default());
    let mut runtimes = Vec::new();
    for _ in 0..2 {
        let store = PostgresStore::connect(db.url.clone()).await.unwrap();
        runtimes.push(builder(&files).store(store).build());
    }
    let mut failed = Vec::new();
    for n in 0..12 {
        let id = SagaId::new(format!("fail-{n:02}"));
        let outcome = runtimes[n % 2].run_with_id(id.clone(), Job { mode: "fail".into() }).await.unwrap();
        assert_eq!(outcome.status(), Status::Compensated);
        failed.push(id);
        files.paths.lock().unwrap().insert(format!("ghost-{n:02}/x"));
    }
    assert_eq!(runtimes[0].run(Job { mode: "ok".into() }).await.unwrap().status(), Status::Completed);
    assert_eq!(files.paths().len(), 12 + 12 + 2);

    let (a, b) = tokio::join!(runtimes[0].sweep(), runtimes[1].sweep());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.failed.is_empty() && b.failed.is_empty(), "{:?} {:?}", a.failed, b.failed);
    assert!(!a.orphans.is_empty() && !b.orphans.is_empty(), "both sweeps found the orphans");
    let removed = a.orphans.iter().chain(&b.orphans).filter(|o| o.removed).count();
    assert_eq!(removed, 24, "each orphan removed by one of the two");
    let removals = files.removals.lock().unwrap().clone();
    let unique: BTreeSet<&str> = removals.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!((removals.len(), unique.len()), (24, 24), "no orphan removed twice: {removals:?}");
    assert_eq!(files.paths().len(), 2, "only the completed saga's files are left");
    for id in &failed {
        let journal = runtimes[0].journal(id).await.unwrap();
        assert_eq!(journal.iter().filter(|r| matches!(r.event, Event::OrphanRemoved { .. })).count(), 1, "{id}");
    }
}

/// A worker sweeps by itself, every `sweep_every`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_sweep_periodically() {
    let files = Arc::new(Files::default());
    let runtime = builder(&files).build();
    let outcome = runtime.run_with_id(SagaId::new("fail"), Job { mode: "fail".into() }).await.unwrap();
    assert_eq!(outcome.status(), Status::Compensated);
    assert_eq!(files.paths(), ["fail/b"]);
    let worker =
        runtime.worker().poll_interval(Duration::from_millis(20)).sweep_every(Some(Duration::from_millis(50))).spawn();
    let started = std::time::Instant::now();
    while !files.paths().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(5), "the worker's sweep never came");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.shutdown().await;
    assert_eq!(files.removals.lock().unwrap().len(), 1, "removed once, however many sweeps ran");
}
