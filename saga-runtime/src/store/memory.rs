//! The in-memory store: the default, for tests and for runs that need no durability.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    Checkpoint, CheckpointStore, Claim, ClaimRequest, Claimed, Created, Fence, NewRequest, NewSaga, Order, PruneCursor,
    PruneQuery, RecordRow, Request, RequestState, SagaKind, SagaPage, SagaQuery, SagaSummary, StoreError,
    StoredDefinition, StoredSaga, Tombstone, Wakeup,
};
use crate::BoxFuture;
use crate::id::SagaId;
use crate::outcome::Status;

/// Keeps every saga in process memory. Cloning shares the same sagas, so a test can keep a
/// handle to inspect what the runtime wrote. Nothing survives the process.
#[derive(Clone)]
pub struct MemoryStore {
    sagas: Arc<Mutex<Inner>>,
    wakeups: tokio::sync::broadcast::Sender<Wakeup>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore { sagas: Arc::default(), wakeups: tokio::sync::broadcast::channel(1024).0 }
    }
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<SagaId, StoredSaga>,
    /// `(created_at_ms, id)`: the order of listings.
    order: BTreeSet<(u64, SagaId)>,
    /// What is left of pruned sagas.
    tombstones: HashMap<SagaId, Tombstone>,
    /// The saga types' definitions, by name and fingerprint.
    definitions: BTreeMap<(String, String), StoredDefinition>,
    /// Operators' requests, oldest first, with the kind each is for and when it was taken.
    requests: Vec<QueuedRequest>,
}

/// A request, the saga kind (name, fingerprint) it is for, and when it was taken.
type QueuedRequest = (Request, Option<(String, String)>, Option<u64>);

/// A request taken by a process that did not finish it within this long is offered again.
pub(super) const REQUEST_RETAKE_MS: u64 = 60_000;

/// A finished saga's place in the order of pruning.
fn prune_key(summary: &SagaSummary) -> (u64, &str) {
    (summary.updated_at_ms, summary.id.as_str())
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every write below checks first and then changes the saga in one go, so a panic while
        // holding this lock cannot leave a half-written saga: a poisoned lock is consistent.
        self.sagas.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Edits a stored saga in place, as a person with access to the storage could: for tests
    /// of what the runtime does with tampered, truncated or foreign data.
    pub fn tamper(&self, id: &SagaId, edit: impl FnOnce(&mut StoredSaga)) -> bool {
        match self.lock().by_id.get_mut(id) {
            Some(saga) => {
                edit(saga);
                true
            }
            None => false,
        }
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").field("sagas", &self.lock().by_id.len()).finish()
    }
}

fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

/// Whether nobody holds the saga, or its holder's lease ended before `now_ms`.
fn free(summary: &SagaSummary, now_ms: u64) -> bool {
    summary.owner.is_none() || summary.lease_until_ms.is_none_or(|until| until < now_ms)
}

fn take(summary: &mut SagaSummary, owner: &str, lease_until_ms: u64) -> Fence {
    summary.epoch += 1;
    summary.owner = Some(owner.to_owned());
    summary.lease_until_ms = Some(lease_until_ms);
    Fence::new(owner, summary.epoch)
}

impl CheckpointStore for MemoryStore {
    fn create<'a>(&'a self, saga: NewSaga) -> BoxFuture<'a, Result<Created, StoreError>> {
        let mut inner = self.lock();
        if let Some(existing) = inner.by_id.get(&saga.id) {
            return ready(Ok(Created::Existing(Box::new(existing.clone()))));
        }
        if let Some(tombstone) = inner.tombstones.get(&saga.id) {
            return ready(Ok(Created::Pruned(Box::new(tombstone.clone()))));
        }
        let created_at = saga.records.first().map_or(saga.checkpoint.at_ms, |r| r.at_ms);
        let mut summary = SagaSummary::new(saga.id.clone(), saga.name, saga.version, saga.fingerprint);
        summary.status = saga.checkpoint.status;
        summary.stage = saga.checkpoint.stage;
        summary.records = saga.records.len() as u64;
        summary.head = saga.checkpoint.head;
        summary.created_at_ms = created_at;
        summary.updated_at_ms = saga.checkpoint.at_ms;
        summary.due_at_ms = saga.checkpoint.due_at_ms;
        let fence = match &saga.owner {
            Some(owner) => take(&mut summary, owner, saga.lease_until_ms),
            None => Fence::new("", 0),
        };
        let enqueued = saga.owner.is_none();
        inner.order.insert((created_at, saga.id.clone()));
        inner.by_id.insert(saga.id, StoredSaga::new(summary, saga.input, saga.records));
        if enqueued {
            let _ = self.wakeups.send(Wakeup::Due);
        }
        ready(Ok(Created::New(fence)))
    }

    fn append<'a>(
        &'a self,
        id: &'a SagaId,
        fence: &'a Fence,
        records: Vec<RecordRow>,
        checkpoint: Checkpoint,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut inner = self.lock();
        let Some(saga) = inner.by_id.get_mut(id) else {
            return ready(Err(StoreError::Missing { saga_id: id.clone() }));
        };
        let summary = &mut saga.summary;
        if summary.epoch != fence.epoch {
            return ready(Err(StoreError::Fenced { saga_id: id.clone(), epoch: fence.epoch, current: summary.epoch }));
        }
        let found = saga.records.len() as u64;
        if let Some(first) = records.first()
            && first.seq != found
        {
            return ready(Err(StoreError::Conflict { saga_id: id.clone(), expected: first.seq, found }));
        }
        saga.records.extend(records);
        summary.records = saga.records.len() as u64;
        summary.status = checkpoint.status;
        summary.stage = checkpoint.stage;
        summary.head = checkpoint.head;
        summary.due_at_ms = checkpoint.due_at_ms;
        summary.updated_at_ms = checkpoint.at_ms;
        if checkpoint.due_at_ms.is_none() {
            summary.owner = None;
            summary.lease_until_ms = None;
            let _ = self.wakeups.send(Wakeup::Settled(id.clone()));
        }
        ready(Ok(()))
    }

    fn load<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<StoredSaga>, StoreError>> {
        ready(Ok(self.lock().by_id.get(id).cloned()))
    }

    fn summary<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<SagaSummary>, StoreError>> {
        ready(Ok(self.lock().by_id.get(id).map(|s| s.summary.clone())))
    }

    fn list<'a>(&'a self, query: &'a SagaQuery) -> BoxFuture<'a, Result<SagaPage, StoreError>> {
        let inner = self.lock();
        let after = query.after.as_ref().map(|c| (c.created_at_ms, c.id.clone()));
        let in_range = |key: &&(u64, SagaId)| match (&after, query.order) {
            (None, _) => true,
            (Some(after), Order::OldestFirst) => *key > after,
            (Some(after), Order::NewestFirst) => *key < after,
        };
        let matching = |key: &&(u64, SagaId)| inner.by_id.get(&key.1).is_some_and(|s| query.matches(&s.summary));
        let keys: Vec<&(u64, SagaId)> = match query.order {
            Order::OldestFirst => inner.order.iter().filter(in_range).filter(matching).take(query.limit).collect(),
            Order::NewestFirst => {
                inner.order.iter().rev().filter(in_range).filter(matching).take(query.limit).collect()
            }
        };
        let sagas = keys.into_iter().filter_map(|(_, id)| inner.by_id.get(id)).map(|s| s.summary.clone()).collect();
        ready(Ok(SagaPage::new(sagas, query.limit)))
    }

    fn claim<'a>(&'a self, request: &'a ClaimRequest) -> BoxFuture<'a, Result<Vec<Claimed>, StoreError>> {
        let mut inner = self.lock();
        let mut due: Vec<(u64, SagaId)> = inner
            .by_id
            .values()
            .map(|s| &s.summary)
            .filter(|s| {
                s.due_at_ms.is_some_and(|due| request.due_by_ms.is_none_or(|by| due <= by))
                    && free(s, request.now_ms)
                    && request.kinds.iter().any(|k| k.name == s.name && k.fingerprint == s.fingerprint)
                    && !request.skip.contains(&s.id)
            })
            .map(|s| (s.due_at_ms.unwrap_or(0), s.id.clone()))
            .collect();
        due.sort();
        due.truncate(request.limit);
        let claimed = due
            .into_iter()
            .filter_map(|(_, id)| {
                let summary = &mut inner.by_id.get_mut(&id)?.summary;
                let fence = take(summary, &request.owner, request.lease_until_ms);
                let kind = SagaKind { name: summary.name.clone(), fingerprint: summary.fingerprint.clone() };
                Some(Claimed::new(id, kind, fence))
            })
            .collect();
        ready(Ok(claimed))
    }

    fn claim_saga<'a>(
        &'a self,
        id: &'a SagaId,
        owner: &'a str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> BoxFuture<'a, Result<Claim, StoreError>> {
        let mut inner = self.lock();
        let claim = match inner.by_id.get_mut(id) {
            None => Claim::Missing,
            Some(saga) if free(&saga.summary, now_ms) || saga.summary.owner.as_deref() == Some(owner) => {
                Claim::Acquired(take(&mut saga.summary, owner, lease_until_ms))
            }
            Some(saga) => Claim::Held {
                owner: saga.summary.owner.clone().unwrap_or_default(),
                lease_until_ms: saga.summary.lease_until_ms.unwrap_or_default(),
            },
        };
        ready(Ok(claim))
    }

    fn renew<'a>(&'a self, owner: &'a str, lease_until_ms: u64) -> BoxFuture<'a, Result<u64, StoreError>> {
        let mut inner = self.lock();
        let mut renewed = 0;
        for saga in inner.by_id.values_mut() {
            if saga.summary.owner.as_deref() == Some(owner) {
                saga.summary.lease_until_ms = Some(lease_until_ms);
                renewed += 1;
            }
        }
        ready(Ok(renewed))
    }

    fn release<'a>(&'a self, id: &'a SagaId, fence: &'a Fence) -> BoxFuture<'a, Result<(), StoreError>> {
        if let Some(saga) = self.lock().by_id.get_mut(id)
            && saga.summary.epoch == fence.epoch
        {
            saga.summary.owner = None;
            saga.summary.lease_until_ms = None;
            let _ = self.wakeups.send(Wakeup::Due);
        }
        ready(Ok(()))
    }

    fn prunable<'a>(&'a self, query: &'a PruneQuery) -> BoxFuture<'a, Result<Vec<StoredSaga>, StoreError>> {
        let inner = self.lock();
        let after = query.after.as_ref().map(|a| (a.finished_at_ms, a.id.as_str()));
        let mut found: Vec<&StoredSaga> = inner
            .by_id
            .values()
            .filter(|s| query.matches(&s.summary) && after.is_none_or(|after| prune_key(&s.summary) > after))
            .collect();
        found.sort_by(|a, b| prune_key(&a.summary).cmp(&prune_key(&b.summary)));
        let sagas = found
            .into_iter()
            .take(query.limit)
            .map(|s| {
                let records = if query.journals { s.records.clone() } else { Vec::new() };
                StoredSaga::new(s.summary.clone(), s.input.clone(), records)
            })
            .collect();
        ready(Ok(sagas))
    }

    fn nth_newest_finished<'a>(&'a self, skip: u64) -> BoxFuture<'a, Result<Option<PruneCursor>, StoreError>> {
        let inner = self.lock();
        let mut finished: Vec<&SagaSummary> = inner
            .by_id
            .values()
            .map(|s| &s.summary)
            .filter(|s| matches!(s.status, Status::Completed | Status::Compensated))
            .collect();
        finished.sort_by(|a, b| prune_key(b).cmp(&prune_key(a)));
        ready(Ok(finished.get(skip as usize).map(|s| PruneCursor::of(s))))
    }

    fn prune<'a>(&'a self, tombstones: Vec<Tombstone>) -> BoxFuture<'a, Result<Vec<SagaId>, StoreError>> {
        let mut inner = self.lock();
        let mut pruned = Vec::new();
        for tombstone in tombstones {
            let still = inner.by_id.get(&tombstone.id).is_some_and(|s| {
                matches!(s.summary.status, Status::Completed | Status::Compensated) && s.summary.head == tombstone.head
            });
            if !still {
                continue;
            }
            if let Some(saga) = inner.by_id.remove(&tombstone.id) {
                inner.order.remove(&(saga.summary.created_at_ms, saga.summary.id));
            }
            pruned.push(tombstone.id.clone());
            inner.tombstones.insert(tombstone.id.clone(), tombstone);
        }
        ready(Ok(pruned))
    }

    fn tombstone<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<Tombstone>, StoreError>> {
        ready(Ok(self.lock().tombstones.get(id).cloned()))
    }

    fn expire_tombstones<'a>(&'a self, pruned_before_ms: u64, limit: usize) -> BoxFuture<'a, Result<u64, StoreError>> {
        let mut inner = self.lock();
        let mut old: Vec<(u64, SagaId)> = inner
            .tombstones
            .values()
            .filter(|t| t.pruned_at_ms < pruned_before_ms)
            .map(|t| (t.pruned_at_ms, t.id.clone()))
            .collect();
        old.sort();
        old.truncate(limit);
        for (_, id) in &old {
            inner.tombstones.remove(id);
        }
        ready(Ok(old.len() as u64))
    }

    fn wakeups(&self) -> Option<tokio::sync::broadcast::Receiver<Wakeup>> {
        Some(self.wakeups.subscribe())
    }

    fn save_definition(&self, definition: StoredDefinition) -> BoxFuture<'_, Result<(), StoreError>> {
        let key = (definition.name.clone(), definition.fingerprint.clone());
        self.lock().definitions.insert(key, definition);
        ready(Ok(()))
    }

    fn definitions(&self) -> BoxFuture<'_, Result<Vec<StoredDefinition>, StoreError>> {
        ready(Ok(self.lock().definitions.values().cloned().collect()))
    }

    fn submit(&self, request: NewRequest) -> BoxFuture<'_, Result<u64, StoreError>> {
        let mut inner = self.lock();
        let id = inner.requests.len() as u64 + 1;
        let stored = Request {
            id,
            action: request.action,
            saga_id: request.saga_id,
            saga: request.kind.as_ref().map(|(name, _)| name.clone()),
            note: request.note,
            requested_at_ms: request.at_ms,
            state: RequestState::Pending,
            taken_by: None,
            result: None,
            done_at_ms: None,
        };
        inner.requests.push((stored, request.kind, None));
        drop(inner);
        let _ = self.wakeups.send(Wakeup::Due);
        ready(Ok(id))
    }

    fn take_requests<'a>(
        &'a self,
        owner: &'a str,
        kinds: &'a [SagaKind],
        limit: usize,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Request>, StoreError>> {
        let mut inner = self.lock();
        let mut taken = Vec::new();
        for (request, kind, taken_at) in &mut inner.requests {
            if taken.len() >= limit {
                break;
            }
            let offered = request.state == RequestState::Pending
                || (request.state == RequestState::Taken
                    && taken_at.is_some_and(|at| at + REQUEST_RETAKE_MS <= now_ms));
            let ours = match kind {
                None => true,
                Some((name, fingerprint)) => kinds.iter().any(|k| k.name == *name && k.fingerprint == *fingerprint),
            };
            if offered && ours {
                request.state = RequestState::Taken;
                request.taken_by = Some(owner.to_owned());
                *taken_at = Some(now_ms);
                taken.push(request.clone());
            }
        }
        ready(Ok(taken))
    }

    fn finish_request(
        &self,
        id: u64,
        state: RequestState,
        result: String,
        at_ms: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        if let Some((request, _, _)) = self.lock().requests.iter_mut().find(|(r, _, _)| r.id == id) {
            request.state = state;
            request.result = Some(result);
            request.done_at_ms = Some(at_ms);
        }
        ready(Ok(()))
    }

    fn requests(&self, limit: usize) -> BoxFuture<'_, Result<Vec<Request>, StoreError>> {
        ready(Ok(self.lock().requests.iter().rev().take(limit).map(|(r, _, _)| r.clone()).collect()))
    }

    fn location(&self) -> String {
        "the in-memory store".to_owned()
    }
}
