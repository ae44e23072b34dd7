//! The journal writer of one running saga, shared by its driver and by the effects of its
//! steps: it numbers records, shows them to observers, seals and chains them (through the
//! codec), and commits them in order under the saga's fence, each batch with the checkpoint it
//! leads to.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use std::time::{Duration, Instant};

use crate::codec::Codec;
use crate::definition::Definition;
use crate::error::{Failure, FailureClass, FailureKind};
use crate::hooks::crash_point;
use crate::id::SagaId;
use crate::journal::{Event, Record};
use crate::notify::{Observed, Observer, Pager};
use crate::outcome::{Incident, Level, Report, Status};
use crate::policy::Backoff;
use crate::store::{ChainHash, Checkpoint, CheckpointStore, Fence, StoreError};

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Where the saga stands after the records pushed so far: the checkpoint of the next batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Standing {
    pub(crate) status: Status,
    pub(crate) stage: String,
    pub(crate) due_at_ms: Option<u64>,
}

/// What the writer does when the store refuses a write for a reason that may pass.
pub(crate) struct Outages {
    /// The delays between retries.
    pub(crate) retry: Backoff,
    /// How long an outage lasts before the pager is called.
    pub(crate) page_after: Duration,
    pub(crate) pager: Arc<dyn Pager>,
}

/// One outage of the store, as the writer lives through it.
struct Outage {
    since: Instant,
    failures: u32,
    error: String,
    paged: bool,
}

pub(crate) struct JournalWriter {
    store: Arc<dyn CheckpointStore>,
    codec: Codec,
    saga_id: SagaId,
    fence: Fence,
    definition: &'static Definition,
    observers: Arc<[Box<dyn Observer>]>,
    outages: Outages,
    state: Mutex<WriterState>,
    /// Held across a store write, so that batches reach the store in sequence order even when
    /// several effects of one step (or a model exchange written in the background) commit at
    /// once.
    commit_lock: tokio::sync::Mutex<()>,
}

struct WriterState {
    next_seq: u64,
    pending: Vec<Record>,
    /// Events that effects wrote during a step, for the driver to fold afterwards.
    unfolded: Vec<Event>,
    /// The checkpoint the pending records lead to.
    standing: Standing,
    /// The hash of the last committed record.
    head: ChainHash,
    /// A write failed: the journal is behind the driver's state, so the run must stop. The
    /// error waits here for the driver when an effect's write failed inside a step.
    failed: Option<StoreError>,
    poisoned: bool,
    /// The last committed checkpoint had no due time, which ends the claim in the store.
    released: bool,
}

impl JournalWriter {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        store: Arc<dyn CheckpointStore>,
        codec: Codec,
        saga_id: SagaId,
        fence: Fence,
        definition: &'static Definition,
        observers: Arc<[Box<dyn Observer>]>,
        outages: Outages,
        next_seq: u64,
        head: ChainHash,
        standing: Standing,
    ) -> Self {
        JournalWriter {
            store,
            codec,
            saga_id,
            fence,
            definition,
            observers,
            outages,
            state: Mutex::new(WriterState {
                next_seq,
                pending: Vec::new(),
                unfolded: Vec::new(),
                standing,
                head,
                failed: None,
                poisoned: false,
                released: false,
            }),
            commit_lock: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WriterState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn observe(&self, record: &Record) {
        for observer in self.observers.iter() {
            let observed = Observed { saga_id: &self.saga_id, definition: self.definition, record };
            if std::panic::catch_unwind(AssertUnwindSafe(|| observer.observe(&observed))).is_err() {
                tracing::error!(saga_id = %self.saga_id, "an observer panicked; the saga goes on");
            }
        }
    }

    /// Numbers events applied by the driver and queues them for the next commit, with where
    /// the saga stands after them.
    pub(crate) fn push(&self, events: Vec<Event>, standing: Standing) {
        let observed: Vec<Record> = {
            let mut state = self.lock();
            state.standing = standing;
            let first = state.pending.len();
            for event in events {
                Self::queue(&mut state, event);
            }
            if self.observers.is_empty() { Vec::new() } else { state.pending[first..].to_vec() }
        };
        for record in &observed {
            self.observe(record);
        }
    }

    /// Like [`push`](Self::push), for an event the driver has not applied yet (an effect's, a
    /// model exchange): it does not change where the saga stands.
    pub(crate) fn push_unfolded(&self, event: Event) {
        let record = {
            let mut state = self.lock();
            state.unfolded.push(event.clone());
            Self::queue(&mut state, event);
            state.pending.last().cloned()
        };
        if let Some(record) = record {
            self.observe(&record);
        }
    }

    fn queue(state: &mut WriterState, event: Event) {
        let record = Record { seq: state.next_seq, at_ms: now_ms(), event };
        state.next_seq += 1;
        state.pending.push(record);
    }

    pub(crate) fn take_unfolded(&self) -> Vec<Event> {
        std::mem::take(&mut self.lock().unfolded)
    }

    /// The error of an effect's write that failed during a step, for the driver.
    pub(crate) fn take_failure(&self) -> Option<StoreError> {
        self.lock().failed.take()
    }

    /// Writes every queued record and the checkpoint, in one store transaction. `effect` says
    /// whether an effect is writing its own record (for the crash points' labels).
    ///
    /// A write the store refuses for a reason that may pass (a full disk, an I/O error, a busy
    /// database) is retried with `Policy::store_retry` until the store accepts it: the saga
    /// waits, it is neither failed nor stranded, and an effect whose result waits here is not
    /// run again. The outage is logged, paged if it lasts, and journaled with the write that
    /// ends it. Any other failure (a lost claim, a conflict, a corrupted file) stops the saga.
    pub(crate) async fn commit(&self, effect: bool) -> Result<(), StoreError> {
        let _ordered = self.commit_lock.lock().await;
        let mut outage: Option<Outage> = None;
        loop {
            let (records, standing, head) = {
                let mut state = self.lock();
                if state.poisoned {
                    return Err(StoreError::backend(
                        "an earlier journal write of this saga failed, so nothing more is written: the saga stops here and is resumed from the store",
                    ));
                }
                if state.pending.is_empty() {
                    return Ok(());
                }
                (std::mem::take(&mut state.pending), state.standing.clone(), state.head)
            };
            match self.write(&records, standing, head, effect).await {
                Ok(()) => {
                    if let Some(outage) = outage {
                        self.recovered(outage);
                    }
                    return Ok(());
                }
                Err(error) if error.is_retryable() => {
                    {
                        // Back in front of whatever was queued meanwhile, in order.
                        let mut state = self.lock();
                        let queued = std::mem::replace(&mut state.pending, records);
                        state.pending.extend(queued);
                    }
                    let outage = outage.get_or_insert_with(|| Outage {
                        since: Instant::now(),
                        failures: 0,
                        error: String::new(),
                        paged: false,
                    });
                    outage.failures += 1;
                    outage.error = error.to_string();
                    let delay = self.outages.retry.delay(outage.failures, None);
                    if outage.failures == 1 || outage.failures.is_multiple_of(10) {
                        tracing::warn!(
                            saga_id = %self.saga_id,
                            failures = outage.failures,
                            waited_ms = outage.since.elapsed().as_millis() as u64,
                            %error,
                            "the store refused a journal write; the saga waits and retries in {delay:?}"
                        );
                    }
                    if !outage.paged && outage.since.elapsed() >= self.outages.page_after {
                        outage.paged = true;
                        self.page_outage(outage);
                    }
                    tokio::time::sleep(delay).await;
                }
                Err(error) => {
                    self.lock().poisoned = true;
                    return Err(error);
                }
            }
        }
    }

    /// The store accepts writes again: say so, and journal the outage with the next write.
    fn recovered(&self, outage: Outage) {
        let waited = outage.since.elapsed();
        tracing::info!(
            saga_id = %self.saga_id,
            failures = outage.failures,
            waited_ms = waited.as_millis() as u64,
            "the store accepts the saga's writes again"
        );
        self.push_unfolded(Event::StoreOutage {
            failures: outage.failures,
            waited_ms: waited.as_millis() as u64,
            error: outage.error,
            paged: outage.paged,
        });
    }

    /// A store outage that lasts: a human should free the disk (or fix the database).
    fn page_outage(&self, outage: &Outage) {
        let step = {
            let state = self.lock();
            state.pending.iter().rev().find_map(|r| r.event.step())
        };
        let step = step.and_then(|i| self.definition.steps().get(i as usize)).map_or("", |s| s.name());
        let incident = Incident {
            saga_id: self.saga_id.clone(),
            saga: self.definition.name().to_owned(),
            level: Level::PageHuman,
            failure: Failure {
                step: step.to_owned(),
                compensation: None,
                class: FailureClass::Transient,
                kind: FailureKind::StoreUnavailable,
                attempt: outage.failures,
                message: format!(
                    "the store has refused the saga's writes for {} s ({}): the saga waits and retries; free the disk or fix the store",
                    outage.since.elapsed().as_secs(),
                    outage.error
                ),
            },
            report: Report::default(),
        };
        if std::panic::catch_unwind(AssertUnwindSafe(|| self.outages.pager.page(&incident))).is_err() {
            tracing::error!(saga_id = %self.saga_id, "the pager panicked; the saga goes on waiting for the store");
        }
    }

    async fn write(
        &self,
        records: &[Record],
        standing: Standing,
        head: ChainHash,
        effect: bool,
    ) -> Result<(), StoreError> {
        let steps = self.definition.steps();
        let mut rows = Vec::with_capacity(records.len());
        let mut prev = head;
        for record in records {
            let step = record.event.step().and_then(|i| steps.get(i as usize)).map(|s| s.name());
            let row = self.codec.seal_record(&self.saga_id, &prev, self.fence.epoch, record, step)?;
            prev = row.hash;
            rows.push(row);
        }
        let at_ms = records.last().map_or_else(now_ms, |r| r.at_ms);
        let checkpoint = Checkpoint {
            status: standing.status,
            stage: standing.stage,
            head: prev,
            due_at_ms: standing.due_at_ms,
            at_ms,
        };
        crash_point(if effect { "before an effect's journal write" } else { "before a journal write" });
        let released = checkpoint.due_at_ms.is_none();
        self.store.append(&self.saga_id, &self.fence, rows, checkpoint).await?;
        crash_point(if effect { "after an effect's journal write" } else { "after a journal write" });
        let mut state = self.lock();
        state.head = prev;
        state.released = released;
        Ok(())
    }

    /// Whether the last committed checkpoint ended the claim (the saga waits for nothing but a
    /// human).
    pub(crate) fn released_by_last_write(&self) -> bool {
        self.lock().released
    }

    /// An effect's commit: on failure the typed error is kept for the driver, which stops the
    /// saga with it once the step returns (the step itself only sees that the effect could not
    /// be journaled).
    pub(crate) async fn commit_effect(&self) -> Result<(), ()> {
        match self.commit(true).await {
            Ok(()) => Ok(()),
            Err(error) => {
                let mut state = self.lock();
                if state.failed.is_none() {
                    state.failed = Some(error);
                }
                Err(())
            }
        }
    }

    /// Starts writing what is queued without waiting: a model exchange is journaled at once
    /// rather than with the step's next write, so a kill during a long step keeps it.
    pub(crate) fn commit_soon(self: &Arc<Self>) {
        // A weak handle: once the saga's driver is done with the writer, there is nothing left
        // to write, and the task must not keep the store open.
        let writer = Arc::downgrade(self);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Some(writer) = writer.upgrade() {
                    let _ = writer.commit_effect().await;
                }
            });
        }
    }
}
