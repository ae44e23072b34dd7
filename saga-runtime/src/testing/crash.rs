//! The store of the crash cells: a [`MemoryStore`] that counts the journal's writes (creations
//! and appends) and, when asked, stops at one of them as a crashed process would: before the
//! write, or just after it committed. From then on every write hangs (the process is gone);
//! reads and claims still answer, so that the runtime dropped at the crash gives its claims back
//! as a new process opening an embedded store does.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::BoxFuture;
use crate::definition::Definition;
use crate::id::SagaId;
use crate::store::{
    Checkpoint, CheckpointStore, Claim, ClaimRequest, Claimed, Created, Fence, ItemLock, MemoryStore, NewSaga,
    RecordRow, SagaPage, SagaQuery, SagaSummary, StoreError, StoredSaga, Wakeup,
};

/// One journal write of a run: the step its first record belongs to (a write checkpoints a
/// step's result with the start of the next; `None`: the creation).
#[derive(Clone, Debug)]
pub(super) struct Write {
    pub(super) step: Option<usize>,
}

#[derive(Clone)]
pub(super) struct CrashStore {
    inner: MemoryStore,
    definition: &'static Definition,
    /// Crash at this write (1-based), after it committed (`true`) or before it.
    at: Option<(u32, bool)>,
    writes: Arc<Mutex<Vec<Write>>>,
    crashed: Arc<watch::Sender<bool>>,
}

impl CrashStore {
    /// Counts the writes of an uninterrupted run.
    pub(super) fn counting(inner: MemoryStore, definition: &'static Definition) -> Self {
        CrashStore { inner, definition, at: None, writes: Arc::default(), crashed: Arc::new(watch::channel(false).0) }
    }

    /// Stops at write `n`.
    pub(super) fn crashing(inner: MemoryStore, definition: &'static Definition, n: u32, after: bool) -> Self {
        CrashStore { at: Some((n, after)), ..CrashStore::counting(inner, definition) }
    }

    pub(super) fn writes(&self) -> Vec<Write> {
        self.writes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Resolves once the crash happened.
    pub(super) async fn crashed(&self) {
        let mut crashed = self.crashed.subscribe();
        let _ = crashed.wait_for(|crashed| *crashed).await;
    }

    /// Counts a write; says whether it is the crash's and whether it goes through first.
    fn count(&self, step: Option<usize>) -> Option<bool> {
        if *self.crashed.borrow() {
            return Some(false);
        }
        let mut writes = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        writes.push(Write { step });
        match self.at {
            Some((n, after)) if writes.len() as u32 == n => Some(after),
            _ => None,
        }
    }
}

/// The step of the first row of a write that has one, by index in the saga's definition.
fn step_of(rows: &[RecordRow], definition: &Definition) -> Option<usize> {
    definition.position(rows.iter().find_map(|row| row.step.as_deref())?)
}

impl CheckpointStore for CrashStore {
    fn create<'a>(&'a self, saga: NewSaga) -> BoxFuture<'a, Result<Created, StoreError>> {
        Box::pin(async move {
            match self.count(None) {
                None => self.inner.create(saga).await,
                Some(after) => {
                    if after {
                        let _ = self.inner.create(saga).await;
                    }
                    self.crashed.send_replace(true);
                    std::future::pending().await
                }
            }
        })
    }

    fn append<'a>(
        &'a self,
        id: &'a SagaId,
        fence: &'a Fence,
        records: Vec<RecordRow>,
        checkpoint: Checkpoint,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let step = step_of(&records, self.definition);
            match self.count(step) {
                None => self.inner.append(id, fence, records, checkpoint).await,
                Some(after) => {
                    if after {
                        let _ = self.inner.append(id, fence, records, checkpoint).await;
                    }
                    self.crashed.send_replace(true);
                    std::future::pending().await
                }
            }
        })
    }

    fn load<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<StoredSaga>, StoreError>> {
        self.inner.load(id)
    }

    fn summary<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<SagaSummary>, StoreError>> {
        self.inner.summary(id)
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

    fn wakeups(&self) -> Option<tokio::sync::broadcast::Receiver<Wakeup>> {
        self.inner.wakeups()
    }

    fn lock_item<'a>(&'a self, item: &'a str) -> BoxFuture<'a, Result<Option<ItemLock>, StoreError>> {
        self.inner.lock_item(item)
    }

    fn location(&self) -> String {
        self.inner.location()
    }
}
