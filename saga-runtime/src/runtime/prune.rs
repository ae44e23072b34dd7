//! Pruning by a [`Retention`] policy: on demand ([`Runtime::prune`], [`Runtime::prune_dry_run`])
//! and in the background, plus reading archived sagas back.
//!
//! A round reads finished sagas in batches through the store's index of finished sagas
//! (oldest finished first), opens each input to hash it for its tombstone, archives the batch
//! when asked (and synced) before anything of it is deleted, then deletes the batch in one
//! write. Tombstones past their age are expired, then the store gives freed space back, a
//! step at a time. Each write is short, so the writes of running sagas wait for at most one of
//! them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Runtime, RuntimeError};
use crate::id::SagaId;
use crate::idempotency::input_digest;
use crate::journal::{Record, Timeline};
use crate::retention::{ArchivedSaga, PruneReport, PrunedSaga, Retention};
use crate::store::{PruneCursor, PruneQuery, StoredSaga, Tombstone};
use crate::writer::now_ms;

/// Most tombstones expired by one write.
const EXPIRE_BATCH: usize = 1_000;
/// Most reclaim steps in one round (each a few milliseconds of the writer).
const RECLAIM_STEPS: usize = 64;

impl Runtime {
    /// Prunes, now, the finished sagas `retention` selects (archiving them first if it has an
    /// archive), expires old tombstones and gives freed space back; returns what it pruned,
    /// oldest finished first. Running and parked sagas are never pruned. This is what an
    /// operator's `saga prune` calls; the background pruner
    /// ([`RuntimeBuilder::retention`](crate::RuntimeBuilder::retention)) runs the same round.
    ///
    /// A store that cannot be written (a sealed store opened without its keyring) is refused
    /// before anything is read. The report lists every pruned saga: for a first round over a
    /// very large history, prefer the background pruner, which keeps only counts.
    pub async fn prune(&self, retention: &Retention) -> Result<PruneReport, RuntimeError> {
        self.prune_round(retention, false, true).await
    }

    /// What [`prune`](Self::prune) would prune now, changing nothing (no archive is written).
    pub async fn prune_dry_run(&self, retention: &Retention) -> Result<PruneReport, RuntimeError> {
        self.prune_round(retention, true, true).await
    }

    /// One round. `list`: keep every pruned saga in the report (otherwise only counts).
    async fn prune_round(&self, retention: &Retention, dry_run: bool, list: bool) -> Result<PruneReport, RuntimeError> {
        let store = self.store();
        let mut report = PruneReport { dry_run, ..PruneReport::default() };
        if !dry_run {
            // An empty batch writes nothing, and is refused by a store that refuses writes.
            store.prune(Vec::new()).await?;
        }
        let now = now_ms();
        let finished_before_ms = retention.older_than.map(|age| now.saturating_sub(age.as_millis() as u64));
        let through = match retention.keep_last {
            Some(keep) => store.nth_newest_finished(keep).await?,
            None => None,
        };
        let mut query = PruneQuery::new(finished_before_ms, through);
        query.limit = retention.batch;
        query.journals = retention.archive.is_some() && !dry_run;
        if query.bound().is_some() {
            loop {
                let batch = store.prunable(&query).await?;
                let Some(last) = batch.last() else { break };
                query.after = Some(PruneCursor::of(&last.summary));
                let full = batch.len() >= query.limit;
                self.prune_batch(retention, batch, now, list, &mut report).await?;
                if !full {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        if dry_run {
            return Ok(report);
        }
        let expire_before = now.saturating_sub(retention.tombstone_age().as_millis() as u64);
        loop {
            let started = Instant::now();
            let expired = store.expire_tombstones(expire_before, EXPIRE_BATCH).await?;
            report.note_write(started.elapsed());
            report.tombstones_expired += expired;
            if expired < EXPIRE_BATCH as u64 {
                break;
            }
            tokio::task::yield_now().await;
        }
        for _ in 0..RECLAIM_STEPS {
            let started = Instant::now();
            let reclaimed = store.reclaim().await?;
            if reclaimed == 0 {
                break;
            }
            report.note_write(started.elapsed());
            report.reclaimed_bytes += reclaimed;
            tokio::task::yield_now().await;
        }
        Ok(report)
    }

    /// Tombstones for a batch (sagas that cannot be read are kept, and said so), the archive,
    /// then the deletion.
    async fn prune_batch(
        &self,
        retention: &Retention,
        batch: Vec<StoredSaga>,
        now: u64,
        list: bool,
        report: &mut PruneReport,
    ) -> Result<(), RuntimeError> {
        let codec = &self.inner.engine.codec;
        let mut tombstones = Vec::with_capacity(batch.len());
        let mut sagas = Vec::with_capacity(batch.len());
        for saga in batch {
            let summary = &saga.summary;
            // An archived journal must read back: one that does not match its chain is kept
            // in the store, where it is evidence, rather than archived broken and deleted.
            if retention.archive.is_some()
                && !report.dry_run
                && let Err((what, reason)) = crate::codec::verify_chain(summary, &saga.input, &saga.records)
            {
                report.kept.push((summary.id.clone(), format!("{what} cannot be read: {reason}")));
                continue;
            }
            match codec.open_input(&summary.id, &saga.input) {
                Ok(input) => {
                    tombstones.push(Tombstone::of(summary, input_digest(&input), now));
                    sagas.push(saga);
                }
                Err(error) => report.kept.push((summary.id.clone(), error.to_string())),
            }
        }
        let described: HashMap<SagaId, PrunedSaga> = sagas
            .iter()
            .map(|s| {
                let s = &s.summary;
                let pruned = PrunedSaga {
                    id: s.id.clone(),
                    name: s.name.clone(),
                    status: s.status,
                    created_at_ms: s.created_at_ms,
                    finished_at_ms: s.updated_at_ms,
                };
                (s.id.clone(), pruned)
            })
            .collect();
        let order: Vec<SagaId> = sagas.iter().map(|s| s.summary.id.clone()).collect();
        if report.dry_run {
            report.count += order.len() as u64;
            if list {
                report.pruned.extend(order.iter().filter_map(|id| described.get(id).cloned()));
            }
            return Ok(());
        }
        if sagas.is_empty() {
            return Ok(());
        }
        if let Some(archive) = &retention.archive {
            let archive = archive.clone();
            // File writes and the sync block: off the async threads.
            let written = tokio::task::spawn_blocking(move || archive.append(&sagas, now))
                .await
                .map_err(|e| RuntimeError::Store { saga_id: None, error: crate::store::StoreError::backend(e) })??;
            report.archived += written;
        }
        let started = Instant::now();
        let pruned = self.store().prune(tombstones).await?;
        report.note_write(started.elapsed());
        report.count += pruned.len() as u64;
        if list {
            let pruned: std::collections::HashSet<&SagaId> = pruned.iter().collect();
            report
                .pruned
                .extend(order.iter().filter(|id| pruned.contains(id)).filter_map(|id| described.get(id).cloned()));
        }
        Ok(())
    }

    /// Starts the background pruner if a retention policy is set, it is not running yet, and
    /// this is called inside a Tokio runtime. It holds the runtime only while a round runs, and
    /// stops when the runtime is dropped.
    pub(super) fn start_pruner(&self) {
        let Some(retention) = self.inner.retention.clone() else { return };
        if self.inner.pruner.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            self.inner.pruner.store(false, Ordering::Release);
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        handle.spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let runtime = Runtime { inner };
                match runtime.prune_round(&retention, false, false).await {
                    Ok(report)
                        if report.count + report.tombstones_expired + report.reclaimed_bytes > 0
                            || !report.kept.is_empty() =>
                    {
                        tracing::info!(
                            pruned = report.count,
                            archived = report.archived,
                            kept = report.kept.len(),
                            tombstones_expired = report.tombstones_expired,
                            reclaimed_bytes = report.reclaimed_bytes,
                            longest_write_ms = report.longest_write.as_secs_f64() * 1e3,
                            "pruned finished sagas"
                        );
                        for (saga_id, reason) in &report.kept {
                            tracing::warn!(%saga_id, %reason, "a finished saga was not pruned: it cannot be read");
                        }
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "pruning failed; the next round tries again"),
                }
                drop(runtime);
                tokio::time::sleep(retention.every).await;
            }
        });
    }

    /// Reads an archived saga back: checks it against its hash chain (an edited line is an
    /// error naming the record) and opens its journal with this runtime's keyring.
    pub fn open_archived(&self, archived: &ArchivedSaga) -> Result<Vec<Record>, RuntimeError> {
        let opened =
            self.inner.engine.codec.open(archived.saga.clone()).map_err(|e| RuntimeError::store(archived.id(), e))?;
        Ok(opened.records)
    }

    /// An archived saga's timeline, one line per record, as [`timeline`](Self::timeline) shows
    /// a stored one. Its type must be registered (for its step names).
    pub fn archived_timeline(&self, archived: &ArchivedSaga) -> Result<Vec<String>, RuntimeError> {
        let definition = self.registration(archived.id(), &archived.saga.summary)?.definition;
        let records = self.open_archived(archived)?;
        Ok(records.iter().map(|record| Timeline { definition, record }.to_string()).collect())
    }

    /// A stored saga's timeline, one line per record of its journal. Its type must be
    /// registered (for its step names).
    pub async fn timeline(&self, saga_id: &SagaId) -> Result<Vec<String>, RuntimeError> {
        let stored = self.load(saga_id).await?;
        let definition = self.registration(saga_id, &stored.summary)?.definition;
        Ok(stored.records.iter().map(|record| Timeline { definition, record }.to_string()).collect())
    }

    /// The error for an id the store does not hold: [`RuntimeError::Pruned`] when a tombstone
    /// says it was pruned, [`RuntimeError::UnknownSaga`] otherwise.
    pub(super) async fn missing(&self, saga_id: &SagaId) -> RuntimeError {
        match self.store().tombstone(saga_id).await {
            Ok(Some(tombstone)) => RuntimeError::Pruned {
                saga_id: saga_id.clone(),
                status: tombstone.status,
                finished_at_ms: tombstone.finished_at_ms,
                pruned_at_ms: tombstone.pruned_at_ms,
            },
            Ok(None) => RuntimeError::UnknownSaga { saga_id: saga_id.clone() },
            Err(error) => RuntimeError::store(saga_id, error),
        }
    }
}

impl PruneReport {
    fn note_write(&mut self, took: Duration) {
        self.writes += 1;
        self.longest_write = self.longest_write.max(took);
    }
}
