//! Recovery: what a restarted worker does first. It claims the sagas it can drive in bounded
//! batches (through the store's index of due sagas, never a scan of history) and drives each
//! to its outcome; the worker loop of a multi-worker store reuses [`Runtime::drive_due`].

use super::{Runtime, RuntimeError};
use crate::id::SagaId;
use crate::outcome::Status;
use crate::store::{ClaimRequest, Claimed, SagaQuery, SagaSummary};
use crate::writer::now_ms;

/// How many sagas one round of recovery claims and drives at once.
const BATCH: usize = 64;

/// What [`Runtime::recover`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Recovery {
    /// Sagas that were running (interrupted) and were driven to their outcome, with it.
    pub resumed: Vec<(SagaId, Status)>,
    /// Sagas parked for a human, left parked (and paged, if a stop had prevented it).
    pub parked: Vec<SagaId>,
    /// Sagas that could not be driven, with the reason (a definition mismatch, a store error).
    pub failed: Vec<(SagaId, RuntimeError)>,
    /// Unfinished sagas of types this runtime did not register.
    pub unregistered: Vec<SagaSummary>,
}

impl Runtime {
    /// What a restarted worker calls first: resumes every unfinished saga of the registered
    /// types and pages for parked ones whose page a stop prevented. Parked sagas stay parked
    /// until [`resume`](Self::resume) or [`resolve`](Self::resolve).
    ///
    /// It claims due sagas in batches through the store's index and drives each batch
    /// concurrently, so its cost follows the sagas in flight, not the history kept.
    pub async fn recover(&self) -> Result<Recovery, RuntimeError> {
        self.start_pruner();
        let mut recovery = Recovery::default();
        let parked = self.survey(&mut recovery).await?;
        let mut skip: Vec<SagaId> = Vec::new();
        loop {
            let driven = self.drive_due(None, &skip).await?;
            if driven.is_empty() {
                break;
            }
            for (id, result) in driven {
                skip.push(id.clone());
                match result {
                    Ok(Status::NeedsHuman) => recovery.parked.push(id),
                    Ok(status) => recovery.resumed.push((id, status)),
                    Err(error) => recovery.failed.push((id, error)),
                }
            }
        }
        for id in parked {
            if !recovery.parked.contains(&id) {
                recovery.parked.push(id);
            }
        }
        Ok(recovery)
    }

    /// Claims up to one batch of sagas with work to do (due by `due_by_ms`, or any when
    /// `None`), skipping `skip`, and drives them concurrently to their outcome.
    pub(crate) async fn drive_due(
        &self,
        due_by_ms: Option<u64>,
        skip: &[SagaId],
    ) -> Result<Vec<(SagaId, Result<Status, RuntimeError>)>, RuntimeError> {
        let claimed = self.claim_due(BATCH, due_by_ms, skip).await?;
        let jobs = claimed.into_iter().map(|claimed| {
            let runtime = self.clone();
            async move { (claimed.id.clone(), runtime.drive_claimed(claimed, None).await) }
        });
        Ok(futures::future::join_all(jobs).await)
    }

    /// Claims up to `limit` sagas of the registered types with work to do.
    pub(crate) async fn claim_due(
        &self,
        limit: usize,
        due_by_ms: Option<u64>,
        skip: &[SagaId],
    ) -> Result<Vec<Claimed>, RuntimeError> {
        let kinds = self.kinds();
        if kinds.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let claims = &self.inner.claims;
        let now = now_ms();
        let mut request = ClaimRequest::new(claims.owner.clone(), kinds, now, claims.lease_until());
        request.limit = limit;
        request.due_by_ms = due_by_ms;
        request.skip = skip.to_vec();
        Ok(self.inner.engine.store.claim(&request).await?)
    }

    /// Drives a saga this runtime claimed, under its registered type. `release_over`: a
    /// backoff longer than this releases it (`Ok(Running)`) instead of holding on to it.
    pub(crate) async fn drive_claimed(
        &self,
        claimed: Claimed,
        release_over: Option<std::time::Duration>,
    ) -> Result<Status, RuntimeError> {
        let registration = self
            .inner
            .registrations
            .iter()
            .find(|r| r.name == claimed.kind.name && r.fingerprint == claimed.kind.fingerprint);
        match registration {
            Some(registration) => {
                let how = super::Attach { fence: Some(claimed.fence), release_over };
                (registration.attach)(self.clone(), claimed.id, how).await
            }
            None => Err(RuntimeError::Unregistered { saga_id: claimed.id, name: claimed.kind.name }),
        }
    }

    /// Looks at the unfinished sagas (running or parked: never the finished history): reports
    /// those this runtime cannot drive (a type it did not register, a version it does not have)
    /// and returns the parked ones it can.
    async fn survey(&self, recovery: &mut Recovery) -> Result<Vec<SagaId>, RuntimeError> {
        let mut parked = Vec::new();
        for status in [Status::Running, Status::NeedsHuman] {
            let mut query = SagaQuery::new().status(status).limit(1_000);
            loop {
                let page = self.inner.engine.store.list(&query).await?;
                for summary in page.sagas {
                    match self.registration(&summary.id, &summary) {
                        Ok(_) if status == Status::NeedsHuman => parked.push(summary.id),
                        Ok(_) => {}
                        Err(RuntimeError::Unregistered { .. }) => recovery.unregistered.push(summary),
                        Err(error) => recovery.failed.push((summary.id.clone(), error)),
                    }
                }
                match page.next {
                    Some(cursor) => query = query.after(cursor),
                    None => break,
                }
            }
        }
        Ok(parked)
    }
}
