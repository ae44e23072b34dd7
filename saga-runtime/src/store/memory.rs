//! The in-memory store: the default, for tests and for runs that need no durability.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Checkpoint, CheckpointStore, Created, NewSaga, SagaSummary, StoreError, StoredSaga};
use crate::id::SagaId;
use crate::journal::Record;
use crate::outcome::Status;
use crate::saga::BoxFuture;

/// Keeps every saga in process memory. Cloning shares the same sagas, so a test can keep a
/// handle to inspect what the runtime wrote. Nothing survives the process.
#[derive(Clone, Default)]
pub struct MemoryStore {
    sagas: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<SagaId, StoredSaga>,
    order: Vec<SagaId>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave a half-written saga (every write is one
        // push or one field update), so a poisoned lock is still consistent.
        self.sagas.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").field("sagas", &self.lock().order.len()).finish()
    }
}

impl CheckpointStore for MemoryStore {
    fn create<'a>(&'a self, saga: NewSaga) -> BoxFuture<'a, Result<Created, StoreError>> {
        let mut inner = self.lock();
        let result = if let Some(existing) = inner.by_id.get(&saga.id) {
            Created::Existing(existing.clone())
        } else {
            let at = saga.records.first().map_or(0, |r| r.at_ms);
            let stored = StoredSaga {
                summary: SagaSummary {
                    id: saga.id.clone(),
                    name: saga.name,
                    version: saga.version,
                    fingerprint: saga.fingerprint,
                    status: Status::Running,
                    stage: saga.stage,
                    records: saga.records.len() as u64,
                    created_at_ms: at,
                    updated_at_ms: at,
                },
                input: saga.input,
                records: saga.records,
            };
            inner.order.push(saga.id.clone());
            inner.by_id.insert(saga.id, stored);
            Created::New
        };
        Box::pin(std::future::ready(Ok(result)))
    }

    fn append<'a>(
        &'a self,
        id: &'a SagaId,
        records: Vec<Record>,
        checkpoint: Checkpoint,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut inner = self.lock();
        let result = match inner.by_id.get_mut(id) {
            None => Err(StoreError::Missing { saga_id: id.clone() }),
            Some(saga) => {
                let found = saga.records.len() as u64;
                match records.first() {
                    Some(first) if first.seq != found => {
                        Err(StoreError::Conflict { saga_id: id.clone(), expected: first.seq, found })
                    }
                    _ => {
                        if let Some(last) = records.last() {
                            saga.summary.updated_at_ms = last.at_ms;
                        }
                        saga.records.extend(records);
                        saga.summary.records = saga.records.len() as u64;
                        saga.summary.status = checkpoint.status;
                        saga.summary.stage = checkpoint.stage;
                        Ok(())
                    }
                }
            }
        };
        Box::pin(std::future::ready(result))
    }

    fn load<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<StoredSaga>, StoreError>> {
        let found = self.lock().by_id.get(id).cloned();
        Box::pin(std::future::ready(Ok(found)))
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<SagaSummary>, StoreError>> {
        let inner = self.lock();
        let list = inner.order.iter().filter_map(|id| inner.by_id.get(id)).map(|s| s.summary.clone()).collect();
        Box::pin(std::future::ready(Ok(list)))
    }
}
