//! Where journals and checkpoints live: the [`CheckpointStore`] trait and its
//! implementations.
//!
//! A saga is one row (name, version, fingerprint, sealed input, status, stage, owner) and an
//! append-only journal of [`RecordRow`]s. The store knows nothing of the engine: it never sees
//! a definition, never seals or opens a payload (the runtime seals every payload before it
//! reaches a store, in one place for every store), and never decides what a saga does next. It
//! keeps rows, answers queries, and arbitrates ownership:
//!
//! - **Appends are atomic and checked.** A batch of records is written with the checkpoint it
//!   leads to (status, stage, the head of the journal's hash chain, when the saga is next due)
//!   in one transaction, and only when its first sequence number is the journal's length
//!   ([`StoreError::Conflict`]) and the writer's [`Fence`] holds the saga's current epoch
//!   ([`StoreError::Fenced`]).
//! - **Ownership is a lease with a fencing epoch.** A worker claims a saga ([`claim`] for due
//!   sagas of the types it runs, [`claim_saga`] for one id), which sets the owner and a lease
//!   expiry and increments the epoch; it renews its leases while it works ([`renew`]) and
//!   releases a saga when it stops driving it ([`release`]). A claim succeeds only on a saga
//!   that nobody holds or whose lease expired, so a worker that died is taken over, and a
//!   worker that was paused past its lease (a zombie) is refused on its next append before any
//!   of its steps runs again.
//!
//! [`claim`]: CheckpointStore::claim
//! [`claim_saga`]: CheckpointStore::claim_saga
//! [`renew`]: CheckpointStore::renew
//! [`release`]: CheckpointStore::release
//!
//! - **Finished sagas can be pruned.** [`prunable`] lists finished sagas (completed or
//!   compensated, never running or parked ones) by the time they finished, oldest first;
//!   [`prune`] deletes a batch of them, each with its journal, and leaves a [`Tombstone`] in its
//!   place (its id, name, outcome status and input hash), so that the id is never used for a
//!   second saga: [`create`] answers [`Created::Pruned`] for it until the tombstone expires
//!   ([`expire_tombstones`]). The runtime's retention policy drives these
//!   (`saga_runtime::retention`).
//!
//! [`prunable`]: CheckpointStore::prunable
//! [`prune`]: CheckpointStore::prune
//! [`create`]: CheckpointStore::create
//! [`expire_tombstones`]: CheckpointStore::expire_tombstones
//!
//! [`MemoryStore`] keeps everything in the process; `SqliteStore` (feature `sqlite`, the
//! default) keeps one SQLite file for one process. The conformance suite in the tests crate
//! runs against every store.

mod error;
mod memory;
mod operator;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use error::{BackendError, StoreError};
pub use memory::MemoryStore;
pub use operator::{NewRequest, Request, RequestAction, RequestState, StoredDefinition, StoredStep};
#[cfg(feature = "postgres")]
pub use postgres::{PostgresOptions, PostgresStore};
#[cfg(feature = "sqlite")]
pub use sqlite::{Space, SqliteOptions, SqliteStore, Synchronous};

use std::borrow::Cow;

use crate::BoxFuture;
use crate::id::SagaId;
use crate::outcome::Status;

/// A link of a journal's hash chain: SHA-256 over the previous link and one row.
pub type ChainHash = [u8; 32];

/// The right to write one saga's journal: the claiming worker and the epoch its claim
/// received. Every append carries it; a store refuses an append whose epoch is not the saga's
/// current one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Fence {
    /// The worker that holds the claim.
    pub owner: String,
    /// The epoch of the claim: it grows by one with every claim of the saga.
    pub epoch: u64,
}

impl Fence {
    /// A fence for `owner` at `epoch`.
    pub fn new(owner: impl Into<String>, epoch: u64) -> Self {
        Fence { owner: owner.into(), epoch }
    }
}

/// One journal record as a store keeps it: position, time, epoch, kind and step in the clear
/// (so they can be queried), the body sealed, and the record's link in the hash chain.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordRow {
    /// Position in the journal, from 0.
    pub seq: u64,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The epoch of the claim that wrote it.
    pub epoch: u64,
    /// The record's kind (`step_completed`).
    pub kind: Cow<'static, str>,
    /// The name of the step it concerns, if any.
    pub step: Option<Cow<'static, str>>,
    /// The sealed body (the record's JSON, encrypted under a keyring).
    pub body: Vec<u8>,
    /// SHA-256 over the previous record's hash and this row.
    pub hash: ChainHash,
}

impl RecordRow {
    /// A row as read back from storage.
    pub fn new(
        seq: u64,
        at_ms: u64,
        epoch: u64,
        kind: impl Into<Cow<'static, str>>,
        step: Option<impl Into<Cow<'static, str>>>,
        body: Vec<u8>,
        hash: ChainHash,
    ) -> Self {
        RecordRow { seq, at_ms, epoch, kind: kind.into(), step: step.map(Into::into), body, hash }
    }
}

/// The state of a saga after a batch of records, written with them.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Checkpoint {
    /// The saga's status.
    pub status: Status,
    /// Where it stands, in words (`comment`, `compensating open_pr`, `parked at merge`).
    pub stage: String,
    /// The hash of the journal's last record.
    pub head: ChainHash,
    /// When the saga next has work to do (milliseconds since the Unix epoch), or `None` when it
    /// waits for nothing but a human (finished, or parked and paged). A worker claims due
    /// sagas only.
    pub due_at_ms: Option<u64>,
    /// The time of the batch's last record.
    pub at_ms: u64,
}

impl Checkpoint {
    /// A checkpoint: where the saga stands after a batch whose last record is at `at_ms`.
    pub fn new(status: Status, stage: impl Into<String>, head: ChainHash, due_at_ms: Option<u64>, at_ms: u64) -> Self {
        Checkpoint { status, stage: stage.into(), head, due_at_ms, at_ms }
    }
}

/// A new saga, with its first records, claimed by its creator.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NewSaga {
    /// Its id.
    pub id: SagaId,
    /// The saga name.
    pub name: String,
    /// The definition version.
    pub version: u32,
    /// The definition fingerprint.
    pub fingerprint: String,
    /// The sealed input.
    pub input: Vec<u8>,
    /// The first records (`started`, and the start of the first attempt).
    pub records: Vec<RecordRow>,
    /// The checkpoint they lead to.
    pub checkpoint: Checkpoint,
    /// The creating worker, which holds the first claim (epoch 1); `None` to enqueue the saga
    /// for any worker (epoch 0, nobody holds it).
    pub owner: Option<String>,
    /// When the creator's lease expires.
    pub lease_until_ms: u64,
}

impl NewSaga {
    /// A new saga (for stores that wrap another, and for tests of stores).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: SagaId,
        name: impl Into<String>,
        version: u32,
        fingerprint: impl Into<String>,
        input: Vec<u8>,
        records: Vec<RecordRow>,
        checkpoint: Checkpoint,
        owner: Option<String>,
        lease_until_ms: u64,
    ) -> Self {
        NewSaga {
            id,
            name: name.into(),
            version,
            fingerprint: fingerprint.into(),
            input,
            records,
            checkpoint,
            owner,
            lease_until_ms,
        }
    }
}

/// What [`CheckpointStore::create`] found.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Created {
    /// The saga was created, claimed by its creator with this fence (epoch 1), or enqueued
    /// unclaimed (a fence with no owner and epoch 0).
    New(Fence),
    /// A saga with this id already existed; nothing was written and nothing was claimed.
    Existing(Box<StoredSaga>),
    /// A saga with this id existed, finished, and was pruned: only its tombstone is left, and
    /// nothing was written.
    Pruned(Box<Tombstone>),
}

/// A saga as stored: its row, its sealed input and its whole journal.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoredSaga {
    /// The row.
    pub summary: SagaSummary,
    /// The sealed input.
    pub input: Vec<u8>,
    /// The journal, in order.
    pub records: Vec<RecordRow>,
}

impl StoredSaga {
    /// A saga as read back from storage.
    pub fn new(summary: SagaSummary, input: Vec<u8>, records: Vec<RecordRow>) -> Self {
        StoredSaga { summary, input, records }
    }
}

/// The queryable row of a saga.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SagaSummary {
    /// Its id.
    pub id: SagaId,
    /// The saga name.
    pub name: String,
    /// The definition version.
    pub version: u32,
    /// The definition fingerprint.
    pub fingerprint: String,
    /// Where it stands.
    pub status: Status,
    /// The step it is at, in words.
    pub stage: String,
    /// How many journal records it has.
    pub records: u64,
    /// The hash of its last journal record.
    pub head: ChainHash,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Time of the last write, milliseconds since the Unix epoch.
    pub updated_at_ms: u64,
    /// When it next has work to do, if it has any without a human.
    pub due_at_ms: Option<u64>,
    /// The worker holding its claim, if any.
    pub owner: Option<String>,
    /// When that claim's lease expires.
    pub lease_until_ms: Option<u64>,
    /// The epoch of its latest claim (0: never claimed).
    pub epoch: u64,
}

impl SagaSummary {
    /// A row with these identifying fields, running, with no records yet; set the other
    /// fields as read back from storage.
    pub fn new(id: SagaId, name: impl Into<String>, version: u32, fingerprint: impl Into<String>) -> Self {
        SagaSummary {
            id,
            name: name.into(),
            version,
            fingerprint: fingerprint.into(),
            status: Status::Running,
            stage: String::new(),
            records: 0,
            head: [0; 32],
            created_at_ms: 0,
            updated_at_ms: 0,
            due_at_ms: None,
            owner: None,
            lease_until_ms: None,
            epoch: 0,
        }
    }
}

/// The order of a listing, by creation time (then id).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    /// The oldest saga first.
    #[default]
    OldestFirst,
    /// The newest saga first.
    NewestFirst,
}

/// Where a page of a listing ends: the next page starts after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// The creation time of the last saga of the page.
    pub created_at_ms: u64,
    /// Its id.
    pub id: SagaId,
}

/// Which sagas to list, and one page of them.
///
/// ```
/// use saga_runtime::store::{Order, SagaQuery};
/// use saga_runtime::Status;
///
/// let parked = SagaQuery::new().status(Status::NeedsHuman).name("release-pr").order(Order::NewestFirst).limit(20);
/// assert_eq!(parked.limit, 20);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SagaQuery {
    /// Only sagas with this status.
    pub status: Option<Status>,
    /// Only sagas with this name.
    pub name: Option<String>,
    /// Only sagas created at or after this time (milliseconds since the Unix epoch).
    pub since_ms: Option<u64>,
    /// The page after this cursor (from the previous page's [`SagaPage::next`]).
    pub after: Option<Cursor>,
    /// The most sagas in a page (at least 1).
    pub limit: usize,
    /// The order.
    pub order: Order,
}

impl Default for SagaQuery {
    fn default() -> Self {
        SagaQuery { status: None, name: None, since_ms: None, after: None, limit: 100, order: Order::OldestFirst }
    }
}

impl SagaQuery {
    /// Every saga, oldest first, 100 to a page.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only sagas with this status.
    pub fn status(mut self, status: Status) -> Self {
        self.status = Some(status);
        self
    }

    /// Only sagas with this name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Only sagas created at or after this time (milliseconds since the Unix epoch).
    pub fn since_ms(mut self, since_ms: u64) -> Self {
        self.since_ms = Some(since_ms);
        self
    }

    /// The page after `cursor`.
    pub fn after(mut self, cursor: Cursor) -> Self {
        self.after = Some(cursor);
        self
    }

    /// The most sagas in a page.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit.max(1);
        self
    }

    /// The order of the listing.
    pub fn order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    /// Whether a summary passes the filters (not the cursor): what every store's query does.
    pub fn matches(&self, summary: &SagaSummary) -> bool {
        self.status.is_none_or(|s| s == summary.status)
            && self.name.as_ref().is_none_or(|n| *n == summary.name)
            && self.since_ms.is_none_or(|t| summary.created_at_ms >= t)
    }
}

/// One page of a listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SagaPage {
    /// The sagas, in the query's order.
    pub sagas: Vec<SagaSummary>,
    /// Where the next page starts, when there may be one.
    pub next: Option<Cursor>,
}

impl SagaPage {
    /// A page of `sagas`; `limit` is the query's, to tell whether another page may follow.
    pub fn new(sagas: Vec<SagaSummary>, limit: usize) -> Self {
        let next = (sagas.len() >= limit.max(1))
            .then(|| sagas.last().map(|s| Cursor { created_at_ms: s.created_at_ms, id: s.id.clone() }))
            .flatten();
        SagaPage { sagas, next }
    }
}

/// A saga type a worker can drive: its name and the fingerprint of its definition.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SagaKind {
    /// The saga name.
    pub name: String,
    /// The definition fingerprint.
    pub fingerprint: String,
}

/// Which sagas a worker claims with [`CheckpointStore::claim`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClaimRequest {
    /// The claiming worker.
    pub owner: String,
    /// The types it runs (name and fingerprint): it claims no other saga.
    pub kinds: Vec<SagaKind>,
    /// The most sagas to claim.
    pub limit: usize,
    /// The current time (milliseconds since the Unix epoch): leases that end before it have
    /// expired.
    pub now_ms: u64,
    /// When the new leases expire.
    pub lease_until_ms: u64,
    /// Only sagas due by this time; `None`: every saga with work to do, however far off.
    pub due_by_ms: Option<u64>,
    /// Sagas not to claim (the ones this worker just gave up on).
    pub skip: Vec<SagaId>,
}

impl ClaimRequest {
    /// A request for `owner`, for sagas of `kinds` due by `now_ms`, with a lease until
    /// `lease_until_ms`.
    pub fn new(owner: impl Into<String>, kinds: Vec<SagaKind>, now_ms: u64, lease_until_ms: u64) -> Self {
        ClaimRequest {
            owner: owner.into(),
            kinds,
            limit: 64,
            now_ms,
            lease_until_ms,
            due_by_ms: Some(now_ms),
            skip: Vec::new(),
        }
    }
}

/// A saga claimed by [`CheckpointStore::claim`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Claimed {
    /// Its id.
    pub id: SagaId,
    /// Its type.
    pub kind: SagaKind,
    /// The claim.
    pub fence: Fence,
}

impl Claimed {
    /// A claimed saga.
    pub fn new(id: SagaId, kind: SagaKind, fence: Fence) -> Self {
        Claimed { id, kind, fence }
    }
}

/// What [`CheckpointStore::claim_saga`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Claim {
    /// The saga is now held by the caller.
    Acquired(Fence),
    /// Another worker (or another task of the caller) holds it until its lease expires.
    Held {
        /// The holder.
        owner: String,
        /// When its lease expires.
        lease_until_ms: u64,
    },
    /// No saga has this id.
    Missing,
}

/// What a store tells the runtimes that listen to it, so that a waiting worker or a
/// [`Runtime::wait`](crate::Runtime::wait) wakes at once instead of at its next poll. Wake-ups
/// may be lost (a dropped connection): listeners always poll as well, at a bounded interval.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Wakeup {
    /// A saga may have become due (it was enqueued, or released with work to do).
    Due,
    /// This saga waits for nothing but a human now (it finished, or parked and paged).
    Settled(SagaId),
}

/// A lock on an item of a sweep, from [`CheckpointStore::lock_item`]: the item is free again
/// once it drops.
pub struct ItemLock {
    _guard: Box<dyn Send + Sync>,
}

impl ItemLock {
    /// A lock held as long as `guard` lives (a store's own guard, which unlocks on drop).
    pub fn new(guard: impl Send + Sync + 'static) -> Self {
        ItemLock { _guard: Box::new(guard) }
    }

    /// Locks `key` among the tasks of this process; `None` when it is held already.
    fn in_process(key: String) -> Option<ItemLock> {
        static HELD: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
        struct Unlock(String);
        impl Drop for Unlock {
            fn drop(&mut self) {
                HELD.lock().unwrap_or_else(|e| e.into_inner()).retain(|held| *held != self.0);
            }
        }
        let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        if held.contains(&key) {
            return None;
        }
        held.push(key.clone());
        Some(ItemLock::new(Unlock(key)))
    }
}

impl std::fmt::Debug for ItemLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ItemLock")
    }
}

/// What is left of a pruned saga: enough to keep its id from being reused and to tell a caller
/// who runs it again what became of it, long after its journal is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tombstone {
    /// The saga's id.
    pub id: SagaId,
    /// The saga name.
    pub name: String,
    /// The definition version.
    pub version: u32,
    /// The definition fingerprint.
    pub fingerprint: String,
    /// How it finished (`Completed` or `Compensated`).
    pub status: Status,
    /// SHA-256 of the saga's input as the runtime encodes it (canonical JSON, unsealed): a run
    /// of the same id with the same input is recognised without keeping the input.
    pub input_hash: [u8; 32],
    /// The head of its journal's hash chain when it was pruned: matches the archive's line.
    pub head: ChainHash,
    /// When it was created (milliseconds since the Unix epoch).
    pub created_at_ms: u64,
    /// When it finished.
    pub finished_at_ms: u64,
    /// When it was pruned.
    pub pruned_at_ms: u64,
}

impl Tombstone {
    /// The tombstone of a stored, finished saga whose decoded input hashes to `input_hash`.
    pub fn of(summary: &SagaSummary, input_hash: [u8; 32], pruned_at_ms: u64) -> Self {
        Tombstone {
            id: summary.id.clone(),
            name: summary.name.clone(),
            version: summary.version,
            fingerprint: summary.fingerprint.clone(),
            status: summary.status,
            input_hash,
            head: summary.head,
            created_at_ms: summary.created_at_ms,
            finished_at_ms: summary.updated_at_ms,
            pruned_at_ms,
        }
    }
}

/// Where a finished saga stands in the order of pruning: by the time it finished, then id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PruneCursor {
    /// When it finished (its last write), milliseconds since the Unix epoch.
    pub finished_at_ms: u64,
    /// Its id.
    pub id: SagaId,
}

impl PruneCursor {
    /// The cursor of a finished saga's row.
    pub fn of(summary: &SagaSummary) -> Self {
        PruneCursor { finished_at_ms: summary.updated_at_ms, id: summary.id.clone() }
    }
}

/// Which finished sagas [`CheckpointStore::prunable`] returns: those that finished before
/// `finished_before_ms`, or that stand at or before `through` (in the order of
/// [`PruneCursor`]), after `after`, oldest first, at most `limit`. Running and parked sagas are
/// never returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PruneQuery {
    /// Finished sagas whose last write is older than this (milliseconds since the Unix epoch).
    pub finished_before_ms: Option<u64>,
    /// Finished sagas up to and including this one (from
    /// [`CheckpointStore::nth_newest_finished`]: what a count limit prunes).
    pub through: Option<PruneCursor>,
    /// Only sagas after this one (the last of the previous batch).
    pub after: Option<PruneCursor>,
    /// The most sagas to return.
    pub limit: usize,
    /// Whether to load each saga's journal (to archive it); otherwise `records` is empty.
    pub journals: bool,
}

impl PruneQuery {
    /// Finished sagas older than `finished_before_ms` and/or at or before `through`, 100 at a
    /// time, without their journals.
    pub fn new(finished_before_ms: Option<u64>, through: Option<PruneCursor>) -> Self {
        PruneQuery { finished_before_ms, through, after: None, limit: 100, journals: false }
    }

    /// Whether a saga passes the bounds (not `after`): what every store's query does.
    pub fn matches(&self, summary: &SagaSummary) -> bool {
        let finished = matches!(summary.status, Status::Completed | Status::Compensated);
        let old = self.finished_before_ms.is_some_and(|t| summary.updated_at_ms < t);
        let counted = self.through.as_ref().is_some_and(|through| {
            (summary.updated_at_ms, summary.id.as_str()) <= (through.finished_at_ms, through.id.as_str())
        });
        finished && (old || counted)
    }

    /// The bound a store applies: whichever of the two reaches further, as
    /// `(finished_at_ms, id, inclusive)`; `None` when neither is set.
    pub fn bound(&self) -> Option<(u64, &str, bool)> {
        let time = self.finished_before_ms.map(|t| (t, "", false));
        let count = self.through.as_ref().map(|c| (c.finished_at_ms, c.id.as_str(), true));
        match (time, count) {
            // Every key of the count bound's time is past the time bound's, whose id is empty.
            (Some(time), Some(count)) => Some(if count.0 >= time.0 { count } else { time }),
            (time, count) => time.or(count),
        }
    }
}

/// What a store that predates pruning answers for its methods.
fn unsupported<'a, T: Send + 'a>(
    store: &(impl CheckpointStore + ?Sized),
    what: &str,
) -> BoxFuture<'a, Result<T, StoreError>> {
    let error = StoreError::Unsupported { location: store.location(), what: what.to_owned() };
    Box::pin(std::future::ready(Err(error)))
}

/// Persists sagas and their journals, and arbitrates who drives each. The runtime drives it;
/// users pick one with `Runtime::builder().store(...)`.
///
/// Every method may be called from many tasks at once. New methods will come with default
/// implementations, so that a store written today keeps compiling.
pub trait CheckpointStore: Send + Sync + 'static {
    /// Creates the saga with its first records, claimed by `saga.owner` at epoch 1 (or
    /// unclaimed, epoch 0, without an owner), or returns the stored one when the id exists
    /// (writing and claiming nothing).
    fn create<'a>(&'a self, saga: NewSaga) -> BoxFuture<'a, Result<Created, StoreError>>;

    /// Appends records and writes the checkpoint they lead to, atomically, if `fence` holds
    /// the saga's current epoch ([`StoreError::Fenced`] otherwise) and the first record's
    /// sequence number is the journal's length ([`StoreError::Conflict`] otherwise). A
    /// checkpoint with no due time (the saga waits for nothing but a human) also ends the
    /// claim: such a saga is held by nobody, and its last write needs no release after it.
    fn append<'a>(
        &'a self,
        id: &'a SagaId,
        fence: &'a Fence,
        records: Vec<RecordRow>,
        checkpoint: Checkpoint,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Loads a saga with its whole journal.
    fn load<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<StoredSaga>, StoreError>>;

    /// The row of one saga, without its input or journal (what a waiter polls). The default
    /// loads the whole saga; stores override it with a query of the row alone.
    fn summary<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<SagaSummary>, StoreError>> {
        Box::pin(async move { Ok(self.load(id).await?.map(|saga| saga.summary)) })
    }

    /// One page of the sagas that pass the query's filters, in its order, without loading
    /// their inputs or journals.
    fn list<'a>(&'a self, query: &'a SagaQuery) -> BoxFuture<'a, Result<SagaPage, StoreError>>;

    /// Claims up to `request.limit` sagas of the requested kinds that have work to do (due by
    /// `request.due_by_ms`) and that nobody holds (or whose lease expired), earliest due first;
    /// each claim increments the saga's epoch.
    fn claim<'a>(&'a self, request: &'a ClaimRequest) -> BoxFuture<'a, Result<Vec<Claimed>, StoreError>>;

    /// Claims one saga, whatever it is due, unless another owner's lease is live. A saga its
    /// own owner holds is claimed again (with a new epoch): an owner keeps its own tasks apart.
    fn claim_saga<'a>(
        &'a self,
        id: &'a SagaId,
        owner: &'a str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> BoxFuture<'a, Result<Claim, StoreError>>;

    /// Extends the leases of every saga `owner` holds to `lease_until_ms`; returns how many.
    fn renew<'a>(&'a self, owner: &'a str, lease_until_ms: u64) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Gives up a claim (when `fence` still holds it; otherwise does nothing).
    fn release<'a>(&'a self, id: &'a SagaId, fence: &'a Fence) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Finished sagas (completed or compensated) that `query` selects, oldest finished first,
    /// with their inputs (and journals when `query.journals`): what a pruning round reads.
    /// Running and parked sagas are never returned. The default says the store cannot prune.
    fn prunable<'a>(&'a self, query: &'a PruneQuery) -> BoxFuture<'a, Result<Vec<StoredSaga>, StoreError>> {
        let _ = query;
        unsupported(self, "pruning (listing finished sagas to prune)")
    }

    /// The finished saga with `skip` newer finished sagas before it (by finish time, then id),
    /// if there are that many: with a limit of `skip` finished sagas, it and every older one
    /// are beyond the limit. The default says the store cannot prune.
    fn nth_newest_finished<'a>(&'a self, skip: u64) -> BoxFuture<'a, Result<Option<PruneCursor>, StoreError>> {
        let _ = skip;
        unsupported(self, "pruning (counting finished sagas)")
    }

    /// Deletes each saga of `tombstones` with its journal and keeps the tombstone in its place,
    /// in one transaction, provided the saga is still finished with the same head (it was read
    /// by [`prunable`](Self::prunable) and nothing changed since); returns the ids deleted. An
    /// id that is gone already (another pruner) is skipped. The default says the store cannot
    /// prune.
    fn prune<'a>(&'a self, tombstones: Vec<Tombstone>) -> BoxFuture<'a, Result<Vec<SagaId>, StoreError>> {
        let _ = tombstones;
        unsupported(self, "pruning")
    }

    /// The tombstone of a pruned saga, if the id names one (and it has not expired).
    /// The default: no store that cannot prune holds tombstones.
    fn tombstone<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<Tombstone>, StoreError>> {
        let _ = id;
        Box::pin(std::future::ready(Ok(None)))
    }

    /// Deletes up to `limit` tombstones of sagas pruned before `pruned_before_ms`, oldest
    /// first; returns how many. The default says the store cannot prune.
    fn expire_tombstones<'a>(&'a self, pruned_before_ms: u64, limit: usize) -> BoxFuture<'a, Result<u64, StoreError>> {
        let _ = (pruned_before_ms, limit);
        unsupported(self, "expiring tombstones")
    }

    /// Gives space freed by pruning back to the file system, in a step short enough not to
    /// hold other writes for long; returns how many bytes it gave back (0 when the store has
    /// nothing to do, or leaves it to the database, which the default does).
    fn reclaim(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(std::future::ready(Ok(0)))
    }

    /// Wake-ups about sagas that became due or settled (see [`Wakeup`]), if the store gives
    /// them; `None` (the default) means listeners only poll.
    fn wakeups(&self) -> Option<tokio::sync::broadcast::Receiver<Wakeup>> {
        None
    }

    /// The keys the store was opened with: the runtime seals every payload with them before it
    /// reaches the store, and opens what the store returns.
    #[cfg(feature = "encryption")]
    fn keyring(&self) -> Option<&crate::seal::Keyring> {
        None
    }

    /// Locks `item` (a resource that an orphan sweep is about to remove) so that one sweeper at
    /// a time handles it: `None` when another holds it. The default locks among the tasks of
    /// this process, which is enough for a store one process owns; a store shared by
    /// processes locks across them. Dropping the lock frees the item.
    fn lock_item<'a>(&'a self, item: &'a str) -> BoxFuture<'a, Result<Option<ItemLock>, StoreError>> {
        let key = format!("{}\n{item}", self.location());
        Box::pin(async move { Ok(ItemLock::in_process(key)) })
    }

    /// Keeps the definition of a saga type a runtime drives (the same one again changes
    /// nothing), so that tools without the code (the `saga` CLI) can name steps and draw
    /// graphs.
    fn save_definition(&self, definition: StoredDefinition) -> BoxFuture<'_, Result<(), StoreError>> {
        let _ = definition;
        unsupported(self, "keeping saga definitions")
    }

    /// Every definition kept by [`save_definition`](Self::save_definition).
    fn definitions(&self) -> BoxFuture<'_, Result<Vec<StoredDefinition>, StoreError>> {
        unsupported(self, "keeping saga definitions")
    }

    /// Leaves a request (resume, resolve, cancel, sweep) for a process that can carry it out,
    /// and returns its number. A tool may submit next to the process that owns the store.
    fn submit(&self, request: NewRequest) -> BoxFuture<'_, Result<u64, StoreError>> {
        let _ = request;
        unsupported(self, "operators' requests")
    }

    /// Takes up to `limit` pending requests that `owner` can carry out: those of sagas of
    /// `kinds`, and those of no saga (a sweep). A request taken by a process that died is
    /// offered again after a minute.
    fn take_requests<'a>(
        &'a self,
        owner: &'a str,
        kinds: &'a [SagaKind],
        limit: usize,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Request>, StoreError>> {
        let _ = (owner, kinds, limit, now_ms);
        unsupported(self, "operators' requests")
    }

    /// Records how a taken request ended.
    fn finish_request(
        &self,
        id: u64,
        state: RequestState,
        result: String,
        at_ms: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let _ = (id, state, result, at_ms);
        unsupported(self, "operators' requests")
    }

    /// The newest `limit` requests, newest first.
    fn requests(&self, limit: usize) -> BoxFuture<'_, Result<Vec<Request>, StoreError>> {
        let _ = limit;
        unsupported(self, "operators' requests")
    }

    /// Rate limits shared by every process that uses this store, so that all the workers of
    /// a fleet draw from one bucket per downstream. `None` (the default) when one process owns
    /// the store: the runtime then limits in process.
    fn shared_limits(&self) -> Option<std::sync::Arc<dyn crate::SharedLimits>> {
        None
    }

    /// Where the store keeps its data, for messages (a file path, a database URL without its
    /// password).
    fn location(&self) -> String {
        "the checkpoint store".to_owned()
    }
}
