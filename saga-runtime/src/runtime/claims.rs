//! This runtime's claims on sagas: a lock per saga id among its own tasks, the store's claim
//! (owner, lease, fencing epoch) among every runtime and process, the heartbeat that renews
//! the leases it holds, and the release when a drive ends (or its future is dropped).
//!
//! Nothing here is process-wide: two runtimes of one process are two owners, kept apart by
//! the store exactly as two processes are.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::FutureExt;

use super::{Inner, RuntimeError};
use crate::id::SagaId;
use crate::store::{Claim, Fence};
use crate::writer::now_ms;

type LocalLocks = HashMap<SagaId, Arc<tokio::sync::Mutex<()>>>;

/// The claims of one runtime.
pub(super) struct Claims {
    /// This runtime's name in the store: `worker-<pid>-<uuid v7>`.
    pub(super) owner: String,
    /// How long a claim lasts without renewal.
    pub(super) lease: Duration,
    local: Mutex<LocalLocks>,
    held: Arc<AtomicUsize>,
    /// The sagas this runtime holds now (what `cancel` looks at).
    holding: Mutex<std::collections::HashSet<SagaId>>,
    heartbeat: AtomicBool,
}

impl Claims {
    pub(super) fn new(lease: Duration) -> Self {
        Claims {
            owner: format!("worker-{}-{}", std::process::id(), uuid::Uuid::now_v7()),
            lease,
            local: Mutex::default(),
            held: Arc::default(),
            holding: Mutex::default(),
            heartbeat: AtomicBool::new(false),
        }
    }

    fn locks(&self) -> std::sync::MutexGuard<'_, LocalLocks> {
        self.local.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn lease_until(&self) -> u64 {
        now_ms().saturating_add(self.lease.as_millis() as u64)
    }
}

/// The right of one task of this runtime to drive one saga, with the store's fence. Dropping
/// it releases the store's claim and the local lock.
pub(super) struct Held {
    inner: Weak<Inner>,
    saga_id: SagaId,
    pub(super) fence: Fence,
    released: bool,
    _local: LocalGuard,
}

/// One task of this runtime per saga id: others wait for it.
pub(super) struct LocalGuard {
    inner: Weak<Inner>,
    saga_id: SagaId,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for LocalGuard {
    fn drop(&mut self) {
        if self.guard.is_none() {
            return;
        }
        drop(self.guard.take());
        if let Some(inner) = self.inner.upgrade() {
            let mut locks = inner.claims.locks();
            // Clones of a lock are only made under the map's mutex, so a count of one means no
            // task is waiting for it.
            if locks.get(&self.saga_id).is_some_and(|l| Arc::strong_count(l) == 1) {
                locks.remove(&self.saga_id);
            }
        }
    }
}

impl Held {
    /// Gives the claim back to the store once the drive is over, unless the drive's last write
    /// left the saga waiting for nothing but a human, which released it already (see
    /// `CheckpointStore::append`).
    pub(super) async fn release(mut self, released_by_last_write: bool) {
        self.released = true;
        let Some(inner) = self.inner.upgrade() else { return };
        inner.claims.held.fetch_sub(1, Ordering::Relaxed);
        inner.claims.holding.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.saga_id);
        if released_by_last_write {
            return;
        }
        if let Err(error) = inner.engine.store.release(&self.saga_id, &self.fence).await {
            tracing::warn!(saga_id = %self.saga_id, %error, "could not release the claim; it ends with its lease");
        }
    }
}

impl Drop for Held {
    /// A drive cut off mid-way (its future dropped, as by a timeout) releases here: the store's
    /// release is started at once (the embedded stores finish it on their first poll), and only
    /// what remains of it runs on a task of its own.
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let Some(inner) = self.inner.upgrade() else { return };
        inner.claims.held.fetch_sub(1, Ordering::Relaxed);
        inner.claims.holding.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.saga_id);
        let store = inner.engine.store.clone();
        let (saga_id, fence) = (self.saga_id.clone(), self.fence.clone());
        let mut release = Box::pin(async move {
            if let Err(error) = store.release(&saga_id, &fence).await {
                tracing::warn!(saga_id = %saga_id, %error, "could not release the claim; it ends with its lease");
            }
        });
        if release.as_mut().now_or_never().is_none()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            // Outside a runtime (a future dropped after its runtime shut down) the claim ends
            // with its lease, and this runtime's own later claims of the saga take it at once.
            drop(handle.spawn(release));
        }
    }
}

impl Inner {
    /// Waits until no other task of this runtime drives `saga_id`, then holds it locally.
    pub(super) async fn lock_locally(self: &Arc<Self>, saga_id: &SagaId) -> LocalGuard {
        let lock = self.claims.locks().entry(saga_id.clone()).or_default().clone();
        let guard = lock.lock_owned().await;
        LocalGuard { inner: Arc::downgrade(self), saga_id: saga_id.clone(), guard: Some(guard) }
    }

    /// No lock, for a saga id this runtime just made up: no other task can know it yet.
    pub(super) fn unshared(self: &Arc<Self>, saga_id: &SagaId) -> LocalGuard {
        LocalGuard { inner: Arc::downgrade(self), saga_id: saga_id.clone(), guard: None }
    }

    /// A saga this runtime just created (epoch 1), held from now on.
    pub(super) fn hold(self: &Arc<Self>, saga_id: &SagaId, fence: Fence, local: LocalGuard) -> Held {
        self.claims.held.fetch_add(1, Ordering::Relaxed);
        self.claims.holding.lock().unwrap_or_else(|e| e.into_inner()).insert(saga_id.clone());
        self.start_heartbeat();
        Held { inner: Arc::downgrade(self), saga_id: saga_id.clone(), fence, released: false, _local: local }
    }

    /// Whether a task of this runtime drives (or waits to drive) `saga_id` now.
    pub(super) fn drives(&self, saga_id: &SagaId) -> bool {
        self.claims.holding.lock().unwrap_or_else(|e| e.into_inner()).contains(saga_id)
            || self.claims.locks().contains_key(saga_id)
    }

    /// Claims an existing saga if nobody holds it now (a sweep's way: it never waits for a
    /// saga someone is driving). `None` when another task or runtime holds it.
    pub(super) async fn try_claim(self: &Arc<Self>, saga_id: &SagaId) -> Result<Option<Held>, RuntimeError> {
        let lock = self.claims.locks().entry(saga_id.clone()).or_default().clone();
        let Ok(guard) = lock.try_lock_owned() else { return Ok(None) };
        let local = LocalGuard { inner: Arc::downgrade(self), saga_id: saga_id.clone(), guard: Some(guard) };
        let claim = self
            .engine
            .store
            .claim_saga(saga_id, &self.claims.owner, now_ms(), self.claims.lease_until())
            .await
            .map_err(|error| RuntimeError::store(saga_id, error))?;
        match claim {
            Claim::Acquired(fence) => Ok(Some(self.hold(saga_id, fence, local))),
            Claim::Missing => Err(RuntimeError::UnknownSaga { saga_id: saga_id.clone() }),
            Claim::Held { .. } => Ok(None),
        }
    }

    /// Claims an existing saga: waits while another runtime or process holds it (until it
    /// releases it, or its lease ends because it died).
    pub(super) async fn claim(self: &Arc<Self>, saga_id: &SagaId) -> Result<Held, RuntimeError> {
        let local = self.lock_locally(saga_id).await;
        let mut wait = Duration::from_millis(10);
        loop {
            let claim = self
                .engine
                .store
                .claim_saga(saga_id, &self.claims.owner, now_ms(), self.claims.lease_until())
                .await
                .map_err(|error| RuntimeError::store(saga_id, error))?;
            match claim {
                Claim::Acquired(fence) => return Ok(self.hold(saga_id, fence, local)),
                Claim::Missing => return Err(RuntimeError::UnknownSaga { saga_id: saga_id.clone() }),
                Claim::Held { owner, lease_until_ms } => {
                    tracing::debug!(saga_id = %saga_id, holder = %owner, lease_until_ms, "waiting for the saga's holder");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Renews this runtime's leases every third of a lease while it holds any, for as long as
    /// the runtime lives.
    fn start_heartbeat(self: &Arc<Self>) {
        if self.claims.heartbeat.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            self.claims.heartbeat.store(false, Ordering::Release);
            return;
        };
        let weak = Arc::downgrade(self);
        let period = (self.claims.lease / 3).max(Duration::from_millis(10));
        /// Lets the next claim start a new heartbeat if this one's runtime shuts down.
        struct Beating(Weak<Inner>);
        impl Drop for Beating {
            fn drop(&mut self) {
                if let Some(inner) = self.0.upgrade() {
                    inner.claims.heartbeat.store(false, Ordering::Release);
                }
            }
        }
        let beating = Beating(weak.clone());
        handle.spawn(async move {
            let _beating = beating;
            loop {
                tokio::time::sleep(period).await;
                let Some(inner) = weak.upgrade() else { return };
                if inner.claims.held.load(Ordering::Relaxed) == 0 {
                    continue;
                }
                if let Err(error) = inner.engine.store.renew(&inner.claims.owner, inner.claims.lease_until()).await {
                    tracing::warn!(%error, "could not renew this worker's leases; it retries at the next beat");
                }
            }
        });
    }
}
