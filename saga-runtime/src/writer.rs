//! The journal writer of one running saga, shared by its driver and by the effects of its
//! steps: it numbers records, shows them to observers, and commits them in order, each batch
//! with the checkpoint it leads to.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::hooks::crash_point;
use crate::id::SagaId;
use crate::journal::{Event, Record};
use crate::notify::{Observed, Observer};
use crate::outcome::Status;
use crate::saga::Definition;
use crate::store::{Checkpoint, CheckpointStore, StoreError};

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub(crate) struct JournalWriter {
    store: Arc<dyn CheckpointStore>,
    saga_id: SagaId,
    definition: &'static Definition,
    observers: Arc<[Box<dyn Observer>]>,
    state: Mutex<WriterState>,
    /// Held across a store write, so that batches reach the store in sequence order even when
    /// several effects of one step commit at once.
    commit_lock: tokio::sync::Mutex<()>,
}

struct WriterState {
    next_seq: u64,
    pending: Vec<Record>,
    /// Events that effects wrote during a step, for the driver to fold afterwards.
    unfolded: Vec<Event>,
    /// The status and stage of the latest batch.
    status: Status,
    stage: String,
    /// The error of a failed write: the journal is behind the driver's state, so the run
    /// must stop and be resumed from the store.
    failed: Option<String>,
}

impl JournalWriter {
    pub(crate) fn new(
        store: Arc<dyn CheckpointStore>,
        saga_id: SagaId,
        definition: &'static Definition,
        observers: Arc<[Box<dyn Observer>]>,
        next_seq: u64,
    ) -> Self {
        JournalWriter {
            store,
            saga_id,
            definition,
            observers,
            state: Mutex::new(WriterState {
                next_seq,
                pending: Vec::new(),
                unfolded: Vec::new(),
                status: Status::Running,
                stage: String::new(),
                failed: None,
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

    /// Numbers an event and queues it for the next commit.
    pub(crate) fn push(&self, event: Event) {
        let record = {
            let mut state = self.lock();
            let record = Record { seq: state.next_seq, at_ms: now_ms(), event };
            state.next_seq += 1;
            state.pending.push(record.clone());
            record
        };
        self.observe(&record);
    }

    /// Like [`push`](Self::push), for an event the driver has not applied yet (an effect's).
    pub(crate) fn push_unfolded(&self, event: Event) {
        self.lock().unfolded.push(event.clone());
        self.push(event);
    }

    pub(crate) fn take_unfolded(&self) -> Vec<Event> {
        std::mem::take(&mut self.lock().unfolded)
    }

    /// Sets the checkpoint the next batches lead to.
    pub(crate) fn set_checkpoint(&self, status: Status, stage: String) {
        let mut state = self.lock();
        state.status = status;
        state.stage = stage;
    }

    /// The error of a failed write, if one happened.
    pub(crate) fn failure(&self) -> Option<String> {
        self.lock().failed.clone()
    }

    /// Writes every queued record and the checkpoint, in one store transaction. `effect` says
    /// whether an effect is writing its own record (for the crash points' labels).
    pub(crate) async fn commit(&self, effect: bool) -> Result<(), StoreError> {
        let _ordered = self.commit_lock.lock().await;
        let (records, checkpoint) = {
            let mut state = self.lock();
            if let Some(failed) = &state.failed {
                return Err(StoreError::Backend(format!("an earlier journal write failed: {failed}")));
            }
            if state.pending.is_empty() {
                return Ok(());
            }
            let checkpoint =
                Checkpoint { status: state.status, stage: state.stage.clone(), definition: self.definition };
            (std::mem::take(&mut state.pending), checkpoint)
        };
        crash_point(if effect { "before an effect's journal write" } else { "before a journal write" });
        match self.store.append(&self.saga_id, records, checkpoint).await {
            Ok(()) => {
                crash_point(if effect { "after an effect's journal write" } else { "after a journal write" });
                Ok(())
            }
            Err(error) => {
                self.lock().failed = Some(error.to_string());
                Err(error)
            }
        }
    }
}
