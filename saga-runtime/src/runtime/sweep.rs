//! The sweep: the seed's "partial commits accumulate … schedule cleanup jobs that find and
//! remove orphans", plus the sagas nobody drives any more.
//!
//! One sweep (`Runtime::sweep`) does, in order:
//! 1. resume what is due and held by nobody: sagas whose worker died (their lease ended),
//!    half-finished rollbacks, sagas released to wait out a backoff, sagas past their deadline
//!    (the driver takes those to level 3 as it resumes them): what `recover` does;
//! 2. page again the sagas parked for a human longer than `Policy::repage_after`;
//! 3. find orphans: every resource kind registered with `RuntimeBuilder::orphans` lists the
//!    resources sagas created, each tagged with its saga's id; joined with the store, a
//!    resource whose saga was compensated, is parked past the grace period, or is unknown to
//!    the store is an orphan, and is removed (with an idempotency key of its own) unless the
//!    sweep is a dry run.
//!
//! Every action on a saga is taken under the saga's claim (a sweep never waits for a saga that
//! someone drives: it skips it) and journaled in the saga's journal (`Reminded`,
//! `OrphanRemoved`); an orphan of a saga the store does not know is removed under the store's
//! item lock. So sweeps run concurrently on many workers safely: one wins each item, and none
//! touches a resource of a saga that is still running (or completed: its resources are its
//! results).

use std::fmt;
use std::future::Future;
use std::time::Duration;

use super::{Runtime, RuntimeError};
use crate::BoxFuture;
use crate::error::StepError;
use crate::id::SagaId;
use crate::journal::{Event, Phase};
use crate::outcome::Status;
use crate::saga::Saga;
use crate::store::{SagaQuery, SagaSummary};
use crate::writer::now_ms;

/// A resource a saga created, as a resource kind lists it: its id, and the saga it belongs
/// to (read from its tag: a branch named after the saga, a label, a path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tagged {
    /// The resource's id, as the kind's `remove` takes it.
    pub id: String,
    /// The saga that created it.
    pub saga_id: SagaId,
}

impl Tagged {
    /// A resource `id` created by saga `saga_id`.
    pub fn new(id: impl Into<String>, saga_id: SagaId) -> Self {
        Tagged { id: id.into(), saga_id }
    }
}

type Lister = Box<dyn Fn() -> BoxFuture<'static, Result<Vec<Tagged>, StepError>> + Send + Sync>;
type Remover = Box<dyn Fn(Tagged, String) -> BoxFuture<'static, Result<(), StepError>> + Send + Sync>;

/// A kind of resource that sagas create and a sweep may find orphaned: how to list them (with
/// the saga each belongs to) and how to remove one.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use saga_runtime::prelude::*;
/// use saga_runtime::{OrphanKind, Tagged};
///
/// // Files named `<saga id>/<name>`, in some store the steps write to.
/// let files: Arc<Mutex<Vec<String>>> = Arc::default();
/// let (listed, removed) = (files.clone(), files.clone());
/// let kind = OrphanKind::new(
///     "file",
///     move || {
///         let files = listed.lock().unwrap().clone();
///         async move {
///             Ok(files
///                 .iter()
///                 .filter_map(|path| path.split_once('/').map(|(saga, _)| Tagged::new(path, SagaId::new(saga))))
///                 .collect())
///         }
///     },
///     move |file: Tagged, _key: String| {
///         removed.lock().unwrap().retain(|path| *path != file.id);
///         async { Ok(()) }
///     },
/// );
/// let runtime = Runtime::builder().orphans(kind).build();
/// # let _ = runtime;
/// ```
pub struct OrphanKind {
    kind: String,
    list: Lister,
    remove: Remover,
}

impl OrphanKind {
    /// A kind named `kind` (`"branch"`, `"file"`): `list` returns every resource of the kind
    /// that sagas created, tagged with its saga; `remove` removes one, given its own
    /// idempotency key (the same every time this resource is removed), and must succeed when
    /// the resource is gone already.
    pub fn new<L, LF, R, RF>(kind: impl Into<String>, list: L, remove: R) -> Self
    where
        L: Fn() -> LF + Send + Sync + 'static,
        LF: Future<Output = Result<Vec<Tagged>, StepError>> + Send + 'static,
        R: Fn(Tagged, String) -> RF + Send + Sync + 'static,
        RF: Future<Output = Result<(), StepError>> + Send + 'static,
    {
        OrphanKind {
            kind: kind.into(),
            list: Box::new(move || Box::pin(list())),
            remove: Box::new(move |resource, key| Box::pin(remove(resource, key))),
        }
    }

    /// The kind's name.
    pub fn kind(&self) -> &str {
        &self.kind
    }
}

impl fmt::Debug for OrphanKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrphanKind").field("kind", &self.kind).finish_non_exhaustive()
    }
}

/// What a sweep does (see [`Runtime::sweep_with`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SweepOptions {
    /// Report what would be done, and change nothing.
    pub dry_run: bool,
    /// Resume the sagas that are due and held by nobody (what `recover` does). A worker's
    /// periodic sweep leaves that to its claim loop.
    pub resume: bool,
    /// How long a saga parked for a human keeps the resources it created before they count
    /// as orphans (default 24 h): the human may need them to finish by hand.
    pub parked_grace: Duration,
}

impl Default for SweepOptions {
    fn default() -> Self {
        SweepOptions { dry_run: false, resume: true, parked_grace: Duration::from_secs(24 * 3600) }
    }
}

impl SweepOptions {
    /// Every action, for real.
    pub fn new() -> Self {
        SweepOptions::default()
    }

    /// Only report (`true`).
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Whether to resume due sagas.
    pub fn resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }

    /// The grace period of parked sagas' resources.
    pub fn parked_grace(mut self, grace: Duration) -> Self {
        self.parked_grace = grace;
        self
    }
}

/// Why a resource is an orphan.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OrphanReason {
    /// Its saga was rolled back: its compensation missed it.
    Compensated,
    /// Its saga has waited for a human longer than the grace period.
    ParkedPastGrace,
    /// The store knows no saga of that id (it was never stored, or was pruned).
    UnknownSaga,
}

impl fmt::Display for OrphanReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OrphanReason::Compensated => "its saga was compensated",
            OrphanReason::ParkedPastGrace => "its saga is parked past the grace period",
            OrphanReason::UnknownSaga => "the store knows no such saga",
        })
    }
}

/// A resource a sweep found orphaned.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Orphan {
    /// Its kind.
    pub kind: String,
    /// The resource.
    pub resource: Tagged,
    /// Why it is an orphan.
    pub reason: OrphanReason,
    /// Whether this sweep removed it (`false` in a dry run, or when another sweeper held it).
    pub removed: bool,
}

/// What a sweep did (or, dry, would do).
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct SweepReport {
    /// Sagas resumed, with where they stand now.
    pub resumed: Vec<(SagaId, Status)>,
    /// In a dry run: the sagas that are due and held by nobody, which a sweep would resume.
    pub due: Vec<SagaId>,
    /// Parked sagas whose pager was called again.
    pub reminded: Vec<SagaId>,
    /// Orphaned resources, removed or (dry run, or held by another sweeper) not.
    pub orphans: Vec<Orphan>,
    /// What failed, and why (the sweep goes on with the rest).
    pub failed: Vec<(String, String)>,
}

impl fmt::Display for SweepReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sweep: {} resumed, {} due, {} reminded, {} orphan(s) ({} removed), {} failure(s)",
            self.resumed.len(),
            self.due.len(),
            self.reminded.len(),
            self.orphans.len(),
            self.orphans.iter().filter(|o| o.removed).count(),
            self.failed.len()
        )
    }
}

/// What a sweep asks of a saga, under its claim.
pub(super) enum Chore {
    /// Page it again if it still waits for a human and its last page is older than this.
    Remind(Duration),
    /// Remove the orphan `resource` of kind `kind` (an index into the runtime's kinds) if the
    /// saga still is what made it an orphan.
    RemoveOrphan { kind: usize, resource: Tagged, grace: Duration },
}

pub(super) type Choreman = fn(Runtime, SagaId, Chore) -> BoxFuture<'static, Result<bool, RuntimeError>>;

pub(super) fn chore_erased<S: Saga>(
    runtime: Runtime,
    saga_id: SagaId,
    chore: Chore,
) -> BoxFuture<'static, Result<bool, RuntimeError>> {
    Box::pin(async move { runtime.chore::<S>(&saga_id, chore).await })
}

/// The idempotency key of removing `resource` of `kind`: the same whoever removes it, however
/// often.
fn orphan_key(kind: &str, resource: &str) -> String {
    crate::idempotency::hex_digest(format!("orphan\n{kind}\n{resource}").as_bytes())
}

impl Runtime {
    /// One sweep with every action: resumes the due sagas nobody drives, pages again the ones
    /// parked too long, and removes orphans (see [`sweep_with`](Self::sweep_with)).
    pub async fn sweep(&self) -> Result<SweepReport, RuntimeError> {
        self.sweep_with(&SweepOptions::default()).await
    }

    /// One sweep. Errors about one saga or one resource are in the report's `failed`, and the
    /// sweep goes on; `Err` is for a store that cannot be read at all.
    ///
    /// ```
    /// # use saga_runtime::prelude::*;
    /// # async fn example(runtime: Runtime) -> Result<(), RuntimeError> {
    /// use saga_runtime::SweepOptions;
    ///
    /// let report = runtime.sweep_with(&SweepOptions::new().dry_run(true)).await?;
    /// for orphan in &report.orphans {
    ///     println!("{} `{}` of saga {}: {}", orphan.kind, orphan.resource.id, orphan.resource.saga_id, orphan.reason);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn sweep_with(&self, options: &SweepOptions) -> Result<SweepReport, RuntimeError> {
        let mut report = SweepReport::default();
        if options.resume {
            if options.dry_run {
                report.due = self.due_and_free().await?;
            } else {
                let recovery = self.recover().await?;
                report.resumed = recovery.resumed;
                report
                    .failed
                    .extend(recovery.failed.into_iter().map(|(id, e)| (format!("resuming saga {id}"), e.to_string())));
            }
        }
        if let Some(after) = self.inner.engine.policy.repage_after {
            self.remind(after, options, &mut report).await?;
        }
        for kind in 0..self.inner.orphan_kinds.len() {
            self.sweep_kind(kind, options, &mut report).await;
        }
        if !report.resumed.is_empty()
            || !report.reminded.is_empty()
            || !report.orphans.is_empty()
            || !report.failed.is_empty()
        {
            tracing::info!(dry_run = options.dry_run, "{report}");
        }
        Ok(report)
    }

    /// Every page of sagas with `status`.
    async fn all_with(&self, status: Status) -> Result<Vec<SagaSummary>, RuntimeError> {
        let mut all = Vec::new();
        let mut query = SagaQuery::new().status(status).limit(500);
        loop {
            let page = self.inner.engine.store.list(&query).await?;
            let next = page.next.clone();
            all.extend(page.sagas);
            match next {
                Some(cursor) => query = query.after(cursor),
                None => return Ok(all),
            }
        }
    }

    /// The running sagas that are due and held by nobody (a dry run's `due`).
    async fn due_and_free(&self) -> Result<Vec<SagaId>, RuntimeError> {
        let now = now_ms();
        Ok(self
            .all_with(Status::Running)
            .await?
            .into_iter()
            .filter(|s| s.due_at_ms.is_some_and(|due| due <= now))
            .filter(|s| s.owner.is_none() || s.lease_until_ms.is_none_or(|until| until < now))
            .map(|s| s.id)
            .collect())
    }

    async fn remind(
        &self,
        after: Duration,
        options: &SweepOptions,
        report: &mut SweepReport,
    ) -> Result<(), RuntimeError> {
        let now = now_ms();
        for saga in self.all_with(Status::NeedsHuman).await? {
            // The last write of a paged saga is its last page (or reminder).
            let waited = now.saturating_sub(saga.updated_at_ms);
            if saga.due_at_ms.is_some() || waited < after.as_millis() as u64 {
                continue;
            }
            if options.dry_run {
                report.reminded.push(saga.id);
                continue;
            }
            let registration = match self.registration(&saga.id, &saga) {
                Ok(registration) => registration,
                Err(error) => {
                    report.failed.push((format!("paging saga {} again", saga.id), error.to_string()));
                    continue;
                }
            };
            match (registration.chore)(self.clone(), saga.id.clone(), Chore::Remind(after)).await {
                Ok(true) => report.reminded.push(saga.id),
                Ok(false) => {}
                Err(error) => report.failed.push((format!("paging saga {} again", saga.id), error.to_string())),
            }
        }
        Ok(())
    }

    async fn sweep_kind(&self, index: usize, options: &SweepOptions, report: &mut SweepReport) {
        let kind = &self.inner.orphan_kinds[index];
        let resources = match (kind.list)().await {
            Ok(resources) => resources,
            Err(error) => {
                report.failed.push((format!("listing the {} resources", kind.kind), error.message().to_owned()));
                return;
            }
        };
        let now = now_ms();
        for resource in resources {
            let summary = match self.inner.engine.store.summary(&resource.saga_id).await {
                Ok(summary) => summary,
                Err(error) => {
                    report.failed.push((format!("looking up saga {}", resource.saga_id), error.to_string()));
                    continue;
                }
            };
            let reason = match &summary {
                None => OrphanReason::UnknownSaga,
                Some(s) if s.status == Status::Compensated => OrphanReason::Compensated,
                Some(s)
                    if s.status == Status::NeedsHuman
                        && now.saturating_sub(s.updated_at_ms) >= options.parked_grace.as_millis() as u64 =>
                {
                    OrphanReason::ParkedPastGrace
                }
                // Running or completed: its resources are in use, or are its results.
                Some(_) => continue,
            };
            let mut orphan = Orphan { kind: kind.kind.clone(), resource: resource.clone(), reason, removed: false };
            if !options.dry_run {
                let what = format!("removing {} `{}` of saga {}", kind.kind, resource.id, resource.saga_id);
                let removed = match &summary {
                    None => self.remove_unclaimed(index, &resource).await,
                    Some(summary) => match self.registration(&resource.saga_id, summary) {
                        Ok(registration) => {
                            let chore = Chore::RemoveOrphan { kind: index, resource, grace: options.parked_grace };
                            (registration.chore)(self.clone(), summary.id.clone(), chore).await
                        }
                        Err(error) => Err(error),
                    },
                };
                match removed {
                    Ok(removed) => orphan.removed = removed,
                    Err(error) => report.failed.push((what, error.to_string())),
                }
            }
            report.orphans.push(orphan);
        }
    }

    /// Removes an orphan of a saga the store does not know, under the store's item lock (one
    /// sweeper wins), if the saga is still unknown once the lock is held.
    async fn remove_unclaimed(&self, index: usize, resource: &Tagged) -> Result<bool, RuntimeError> {
        let kind = &self.inner.orphan_kinds[index];
        let key = orphan_key(&kind.kind, &resource.id);
        let Some(_lock) = self.inner.engine.store.lock_item(&format!("orphan {key}")).await? else {
            return Ok(false);
        };
        if self.inner.engine.store.summary(&resource.saga_id).await?.is_some() {
            return Ok(false);
        }
        // Another sweeper may have removed it between our listing and our lock: look again
        // (orphans of unknown sagas are rare, so the second listing is cheap overall).
        let still_there = (kind.list)().await.map_err(|error| RuntimeError::Sweep {
            saga_id: resource.saga_id.clone(),
            reason: format!("listing the {} resources failed: {}", kind.kind, error.message()),
        })?;
        if !still_there.contains(resource) {
            return Ok(false);
        }
        (kind.remove)(resource.clone(), key).await.map_err(|error| RuntimeError::Sweep {
            saga_id: resource.saga_id.clone(),
            reason: format!("removing {} `{}` failed: {}", kind.kind, resource.id, error.message()),
        })?;
        tracing::info!(kind = %kind.kind, resource = %resource.id, saga_id = %resource.saga_id, "sweep removed an orphan of an unknown saga");
        Ok(true)
    }

    /// A sweep's chore on one saga of type `S`, under its claim (skipped when someone holds
    /// it): `Ok(true)` when it was done.
    async fn chore<S: Saga>(&self, saga_id: &SagaId, chore: Chore) -> Result<bool, RuntimeError> {
        super::check_limits(S::definition(), &self.inner.engine.limits)?;
        let Some(held) = self.inner.try_claim(saga_id).await? else { return Ok(false) };
        let (held, mut driver) = self.load_held::<S>(saga_id, held).await?;
        let now = now_ms();
        let done = match chore {
            Chore::Remind(after) => {
                let parked_and_paged = matches!(driver.progress.phase, Phase::Parked(_)) && driver.progress.paged;
                let summary = self.inner.engine.store.summary(saga_id).await?;
                let waited = summary.map_or(0, |s| now.saturating_sub(s.updated_at_ms));
                if parked_and_paged && waited >= after.as_millis() as u64 {
                    // Paged first, then recorded, as every page: a stop in between pages again.
                    driver.page_again();
                    driver.record(Event::Reminded)?;
                    driver.commit_now().await?;
                    true
                } else {
                    false
                }
            }
            Chore::RemoveOrphan { kind, resource, grace } => {
                let status = driver.progress.status();
                let summary = self.inner.engine.store.summary(saga_id).await?;
                let parked_for = summary.map_or(0, |s| now.saturating_sub(s.updated_at_ms));
                let kind_name = &self.inner.orphan_kinds[kind].kind;
                let removed_already = driver
                    .progress
                    .report
                    .orphans_removed
                    .iter()
                    .any(|o| o.kind == *kind_name && o.resource == resource.id);
                let still = !removed_already
                    && (status == Status::Compensated
                        || (status == Status::NeedsHuman && parked_for >= grace.as_millis() as u64));
                if still {
                    let kind = &self.inner.orphan_kinds[kind];
                    let key = orphan_key(&kind.kind, &resource.id);
                    (kind.remove)(resource.clone(), key).await.map_err(|error| RuntimeError::Sweep {
                        saga_id: saga_id.clone(),
                        reason: format!("removing {} `{}` failed: {}", kind.kind, resource.id, error.message()),
                    })?;
                    driver.record(Event::OrphanRemoved { kind: kind.kind.clone(), resource: resource.id.clone() })?;
                    driver.commit_now().await?;
                    tracing::info!(saga_id = %saga_id, kind = %kind.kind, resource = %resource.id, "sweep removed an orphan");
                }
                still
            }
        };
        held.release(driver.released_by_last_write()).await;
        Ok(done)
    }
}
