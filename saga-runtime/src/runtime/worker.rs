//! Workers: enqueue sagas durably ([`Runtime::start`]), and let any number of worker processes
//! sharing the store claim and drive them ([`Runtime::worker`]); wait for an outcome from
//! anywhere ([`Runtime::wait`]).
//!
//! A worker claims due sagas of the types its runtime registered (name and fingerprint: old and
//! new binaries run side by side, each finishing its own), up to its concurrency, and drives
//! each on a task of its own. It wakes on the store's notifications (a saga was enqueued or
//! released, a slot freed) and polls at a bounded interval besides, so a lost notification only
//! delays. A saga that must wait out a long backoff is released with its wake-up time instead of
//! holding a slot. Its leases are renewed by the runtime's heartbeat; if it dies, its sagas are
//! taken over when their leases end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;

use super::{Runtime, RuntimeError};
use crate::id::SagaId;
use crate::outcome::{Outcome, Status};
use crate::saga::Saga;
use crate::store::Wakeup;
use crate::writer::now_ms;

/// Configures a [`Worker`]; from [`Runtime::worker`].
#[derive(Clone)]
pub struct WorkerBuilder {
    runtime: Runtime,
    concurrency: usize,
    poll_interval: Duration,
    release_over: Duration,
    grace: Duration,
    sweep_every: Option<Duration>,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("concurrency", &self.concurrency)
            .field("poll_interval", &self.poll_interval)
            .field("release_over", &self.release_over)
            .field("grace", &self.grace)
            .field("sweep_every", &self.sweep_every)
            .finish()
    }
}

impl WorkerBuilder {
    /// How many sagas it drives at once (default 16).
    pub fn concurrency(mut self, sagas: usize) -> Self {
        self.concurrency = sagas.max(1);
        self
    }

    /// How often it looks for due sagas without a notification (default 1 s): the longest a
    /// lost notification delays a saga.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// A saga that must wait longer than this for a backoff (a `retry_after`, a long transient
    /// retry) is released with its wake-up time instead of holding a slot (default 5 s).
    pub fn release_waits_over(mut self, wait: Duration) -> Self {
        self.release_over = wait;
        self
    }

    /// On [`Worker::shutdown`], how long the sagas in flight may take to reach their next
    /// stop before they are cut off and released (default 10 s).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// How often it sweeps (default every 60 s; `None`: never): pages again the sagas parked
    /// for a human too long and removes orphaned resources (see [`Runtime::sweep`]); resuming
    /// due sagas is its claim loop's job. Sweeps of many workers are safe together.
    pub fn sweep_every(mut self, every: Option<Duration>) -> Self {
        self.sweep_every = every.map(|every| every.max(Duration::from_millis(10)));
        self
    }

    /// Starts the worker on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn spawn(self) -> Worker {
        self.runtime.start_pruner();
        let (stop, stopped) = watch::channel(false);
        let stats = Arc::new(Counters::default());
        let task = tokio::spawn(run(self, stopped, stats.clone()));
        Worker { stop, task, stats }
    }
}

#[derive(Default)]
struct Counters {
    claimed: AtomicU64,
    finished: AtomicU64,
    released: AtomicU64,
    failed: AtomicU64,
    requests: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> WorkerStats {
        WorkerStats {
            claimed: self.claimed.load(Ordering::Relaxed),
            finished: self.finished.load(Ordering::Relaxed),
            released: self.released.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
        }
    }
}

/// What a worker did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Sagas it claimed.
    pub claimed: u64,
    /// Sagas it drove to an outcome (completed, compensated, parked).
    pub finished: u64,
    /// Sagas it released to wait out a long backoff.
    pub released: u64,
    /// Drives that stopped on an error of the runtime (a lost claim, a store error).
    pub failed: u64,
    /// Operators' requests it carried out (`saga resolve`, `resume`, `cancel`, `sweep`), done
    /// or failed.
    pub requests: u64,
}

/// A running worker; [`shutdown`](Self::shutdown) stops it.
pub struct Worker {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    stats: Arc<Counters>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("stats", &self.stats()).finish()
    }
}

impl Worker {
    /// What it did so far.
    pub fn stats(&self) -> WorkerStats {
        self.stats.snapshot()
    }

    /// Stops claiming, lets the sagas in flight reach an outcome for up to the grace period,
    /// then cuts off the rest and releases them (their attempts in flight are resumed by the
    /// next worker under the same idempotency keys).
    pub async fn shutdown(self) -> WorkerStats {
        let Worker { stop, task, stats } = self;
        let _ = stop.send(true);
        let _ = task.await;
        stats.snapshot()
    }
}

async fn run(config: WorkerBuilder, mut stop: watch::Receiver<bool>, stats: Arc<Counters>) {
    let runtime = config.runtime;
    let mut wakeups = runtime.store().wakeups();
    let mut drives: JoinSet<()> = JoinSet::new();
    let mut sweeping: Option<tokio::task::JoinHandle<()>> = None;
    let mut serving: Option<tokio::task::JoinHandle<()>> = None;
    for registration in &runtime.inner.registrations {
        runtime.define(registration.definition).await;
    }
    let mut next_sweep = config.sweep_every.map(|every| tokio::time::Instant::now() + every);
    loop {
        if *stop.borrow() {
            break;
        }
        // Operators' requests (`saga resume`, `cancel`, ...), on a task of their own: one may
        // drive a saga for a while.
        if serving.as_ref().is_none_or(|task| task.is_finished()) {
            let (runtime, stats) = (runtime.clone(), stats.clone());
            serving = Some(tokio::spawn(async move {
                match runtime.serve_requests().await {
                    Ok(served) => {
                        stats.requests.fetch_add(served.len() as u64, Ordering::Relaxed);
                    }
                    Err(error) => tracing::debug!(%error, "could not take operators' requests"),
                }
            }));
        }
        if let (Some(every), Some(at)) = (config.sweep_every, next_sweep)
            && tokio::time::Instant::now() >= at
            && sweeping.as_ref().is_none_or(|task| task.is_finished())
        {
            next_sweep = Some(tokio::time::Instant::now() + every);
            let runtime = runtime.clone();
            sweeping = Some(tokio::spawn(async move {
                if let Err(error) = runtime.sweep_with(&super::SweepOptions::new().resume(false)).await {
                    tracing::warn!(%error, "the worker's sweep failed; the next one tries again");
                }
            }));
        }
        let free = config.concurrency.saturating_sub(drives.len());
        let mut claimed_all = false;
        if free > 0 {
            match runtime.claim_due(free, Some(now_ms()), &[]).await {
                Ok(claimed) => {
                    claimed_all = claimed.len() == free;
                    for claimed in claimed {
                        stats.claimed.fetch_add(1, Ordering::Relaxed);
                        let (runtime, stats) = (runtime.clone(), stats.clone());
                        let release_over = Some(config.release_over);
                        drives.spawn(async move {
                            let id = claimed.id.clone();
                            match runtime.drive_claimed(claimed, release_over).await {
                                Ok(Status::Running) => stats.released.fetch_add(1, Ordering::Relaxed),
                                Ok(_) => stats.finished.fetch_add(1, Ordering::Relaxed),
                                Err(error) => {
                                    tracing::warn!(saga_id = %id, %error, "the worker stopped driving a saga");
                                    stats.failed.fetch_add(1, Ordering::Relaxed)
                                }
                            };
                        });
                    }
                }
                Err(error) => tracing::warn!(%error, "the worker could not claim sagas; it tries again"),
            }
        }
        if claimed_all {
            // There may be more due: look again before waiting.
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = stop.changed() => {}
            Some(_) = drives.join_next(), if !drives.is_empty() => {}
            _ = due(&mut wakeups) => {}
            _ = tokio::time::sleep(config.poll_interval) => {}
        }
    }
    if let Some(sweep) = sweeping {
        sweep.abort();
    }
    if let Some(serve) = serving {
        let _ = serve.await;
    }
    let grace = tokio::time::sleep(config.grace);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            next = drives.join_next() => if next.is_none() { break },
            _ = &mut grace => {
                // Cut off: each drive's claim is released as its future is dropped.
                drives.abort_all();
                while drives.join_next().await.is_some() {}
                break;
            }
        }
    }
}

/// Resolves on the next wake-up that may mean work (never, without wake-ups).
async fn due(wakeups: &mut Option<broadcast::Receiver<Wakeup>>) {
    let Some(receiver) = wakeups else { return std::future::pending().await };
    loop {
        match receiver.recv().await {
            Ok(Wakeup::Due) | Err(broadcast::error::RecvError::Lagged(_)) => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Closed) => return std::future::pending().await,
        }
    }
}

/// Resolves when `saga_id` may have settled (never, without wake-ups).
async fn settled(wakeups: &mut Option<broadcast::Receiver<Wakeup>>, saga_id: &SagaId) {
    let Some(receiver) = wakeups else { return std::future::pending().await };
    loop {
        match receiver.recv().await {
            Ok(Wakeup::Settled(id)) if id == *saga_id => return,
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Closed) => return std::future::pending().await,
        }
    }
}

impl Runtime {
    /// A worker that claims and drives the sagas of this runtime's registered types; configure
    /// it, then [`spawn`](WorkerBuilder::spawn) it.
    ///
    /// ```no_run
    /// # use saga_runtime::prelude::*;
    /// # async fn example(runtime: Runtime) {
    /// let worker = runtime.worker().concurrency(32).spawn();
    /// // ... until the process is asked to stop:
    /// let stats = worker.shutdown().await;
    /// println!("finished {} sagas", stats.finished);
    /// # }
    /// ```
    pub fn worker(&self) -> WorkerBuilder {
        WorkerBuilder {
            runtime: self.clone(),
            concurrency: 16,
            poll_interval: Duration::from_secs(1),
            release_over: Duration::from_secs(5),
            grace: Duration::from_secs(10),
            sweep_every: Some(Duration::from_secs(60)),
        }
    }

    /// Enqueues a new saga under a fresh id for a worker to run, durably, and returns its id at
    /// once. [`wait`](Self::wait) returns its outcome.
    pub async fn start<S: Saga>(&self, saga: S) -> Result<SagaId, RuntimeError> {
        self.start_with_id(SagaId::generate(), saga).await
    }

    /// Enqueues a saga under the caller's id, idempotently: an id that exists with the same
    /// input is not enqueued again (whatever became of it), and with another input it is
    /// [`RuntimeError::InputMismatch`].
    pub async fn start_with_id<S: Saga>(&self, saga_id: SagaId, saga: S) -> Result<SagaId, RuntimeError> {
        self.enqueue(saga_id, saga, None).await
    }

    pub(super) async fn enqueue<S: Saga>(
        &self,
        saga_id: SagaId,
        saga: S,
        deadline: Option<super::RunDeadline>,
    ) -> Result<SagaId, RuntimeError> {
        super::check_limits(S::definition(), &self.inner.engine.limits)?;
        self.define(S::definition()).await;
        let (input, _) = super::encode_input(&saga_id, &saga)?;
        let new = self.new_saga::<S>(&saga_id, &input, None, deadline)?.saga;
        match self.store().create(new).await.map_err(|e| RuntimeError::store(&saga_id, e))? {
            crate::store::Created::New(_) => Ok(saga_id),
            crate::store::Created::Existing(stored) => {
                let stored = self.inner.engine.codec.open(*stored).map_err(|e| RuntimeError::store(&saga_id, e))?;
                super::check_definition::<S>(&saga_id, &stored.summary)?;
                if stored.input != input {
                    return Err(RuntimeError::InputMismatch { saga_id });
                }
                Ok(saga_id)
            }
            crate::store::Created::Pruned(tombstone) => Err(super::pruned_answer::<S>(&tombstone, &input)),
        }
    }

    /// Waits until the saga waits for nothing but a human (it completed, was compensated, or
    /// is parked and its page sent), whoever drives it, and returns its outcome. Woken by the
    /// store's notifications, and polling besides (at most every second).
    pub async fn wait<S: Saga>(&self, saga_id: &SagaId) -> Result<Outcome<S::Output>, RuntimeError> {
        let mut wakeups = self.store().wakeups();
        let mut delay = Duration::from_millis(5);
        loop {
            let summary = self.store().summary(saga_id).await.map_err(|e| RuntimeError::store(saga_id, e))?;
            let Some(summary) = summary else { return Err(self.missing(saga_id).await) };
            super::check_definition::<S>(saga_id, &summary)?;
            if summary.due_at_ms.is_none() {
                let stored = self.load(saga_id).await?;
                let saga: S = serde_json::from_slice(&stored.input).map_err(|e| RuntimeError::Checkpoint {
                    saga_id: saga_id.clone(),
                    step: "input".to_owned(),
                    error: e.into(),
                })?;
                if let Some(outcome) = self.settled_outcome::<S>(saga, stored)? {
                    return Ok(outcome);
                }
            }
            tokio::select! {
                _ = settled(&mut wakeups, saga_id) => {}
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }
}
