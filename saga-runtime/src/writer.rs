//! The journal writer of one running saga, shared by its driver and by the effects of its
//! steps: it numbers records, shows them to observers, seals and chains them (through the
//! codec), and commits them in order under the saga's fence, each batch with the checkpoint it
//! leads to.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::codec::Codec;
use crate::definition::Definition;
use crate::hooks::crash_point;
use crate::id::SagaId;
use crate::journal::{Event, Record};
use crate::notify::{Observed, Observer};
use crate::outcome::Status;
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

pub(crate) struct JournalWriter {
    store: Arc<dyn CheckpointStore>,
    codec: Codec,
    saga_id: SagaId,
    fence: Fence,
    definition: &'static Definition,
    observers: Arc<[Box<dyn Observer>]>,
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
    pub(crate) async fn commit(&self, effect: bool) -> Result<(), StoreError> {
        let _ordered = self.commit_lock.lock().await;
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
        let result = self.write(records, standing, head, effect).await;
        if result.is_err() {
            self.lock().poisoned = true;
        }
        result
    }

    async fn write(
        &self,
        records: Vec<Record>,
        standing: Standing,
        head: ChainHash,
        effect: bool,
    ) -> Result<(), StoreError> {
        let steps = self.definition.steps();
        let mut rows = Vec::with_capacity(records.len());
        let mut prev = head;
        for record in &records {
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
