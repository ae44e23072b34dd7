//! Retention: finished sagas are pruned once they are old enough or too many, optionally
//! archived first, and leave a tombstone that keeps their id from ever starting a second saga.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use saga_runtime::prelude::*;
//! use saga_runtime::retention::{Archive, Retention};
//!
//! let retention = Retention::older_than(Duration::from_secs(30 * 86_400))? // finished 30 days ago
//!     .or_beyond(1_000_000)?                                                  // or past the newest million
//!     .archive(Archive::file("sagas-archive.jsonl")?);                       // one JSON line per saga
//! let runtime = Runtime::builder().store(SqliteStore::open("sagas.db").await?).retention(retention).build();
//! # let _ = runtime;
//! # Ok(())
//! # }
//! ```
//!
//! What is pruned: sagas that finished (`Completed` or `Compensated`), by the time they
//! finished. Running sagas and sagas parked for a human (`NeedsHuman`) are never pruned,
//! however old. The runtime prunes in the background, every minute by default, in batches of
//! 100 sagas (each batch one short write: the other sagas' writes wait for at most one
//! batch); [`Runtime::prune`](crate::Runtime::prune) and
//! [`Runtime::prune_dry_run`](crate::Runtime::prune_dry_run) do one round on demand (what
//! `saga prune --older-than 30d --dry-run` calls).
//!
//! What is left: a [`Tombstone`](crate::store::Tombstone) per pruned saga (its id, name,
//! outcome status, the SHA-256 of its input and the head of its hash chain), kept for
//! [`Retention::tombstones_for`] after the pruning. While it is kept, `run_with_id` with that
//! id starts nothing: with the same input it returns [`RuntimeError::Pruned`] (saying how the
//! saga finished), with another input [`RuntimeError::InputMismatch`], as for a saga still
//! stored.
//!
//! [`RuntimeError::Pruned`]: crate::RuntimeError::Pruned
//! [`RuntimeError::InputMismatch`]: crate::RuntimeError::InputMismatch

mod archive;

use std::time::Duration;

pub use archive::{Archive, ArchiveError, ArchiveReader, ArchivedSaga};

use crate::id::SagaId;
use crate::outcome::Status;

/// Which finished sagas to prune, when, and where to archive them first. Cheap to clone.
///
/// Every value is checked when it is set: a retention of zero (which would prune each saga the
/// moment it finishes, and with it the outcome `run_with_id` returns) is an error that says
/// what to give instead.
#[derive(Clone, Debug)]
pub struct Retention {
    pub(crate) older_than: Option<Duration>,
    pub(crate) keep_last: Option<u64>,
    pub(crate) tombstones_for: Option<Duration>,
    pub(crate) every: Duration,
    pub(crate) batch: usize,
    pub(crate) archive: Option<Archive>,
}

/// A retention setting that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct RetentionError {
    reason: String,
}

impl RetentionError {
    fn new(reason: impl Into<String>) -> Self {
        RetentionError { reason: reason.into() }
    }
}

/// The default interval between two background rounds.
const EVERY: Duration = Duration::from_secs(60);
/// The default number of sagas pruned by one write.
const BATCH: usize = 100;
/// How long tombstones are kept by default when only a count limit is set.
const TOMBSTONES_FOR: Duration = Duration::from_secs(7 * 86_400);

fn positive(what: &str, age: Duration, example: &str) -> Result<Duration, RetentionError> {
    if age.is_zero() {
        return Err(RetentionError::new(format!(
            "{what} of zero would prune every saga the moment it finishes, and with it the outcome `run_with_id` returns: give a duration such as {example}"
        )));
    }
    Ok(age)
}

impl Retention {
    fn new() -> Self {
        Retention { older_than: None, keep_last: None, tombstones_for: None, every: EVERY, batch: BATCH, archive: None }
    }

    /// Prunes the sagas that finished longer than `age` ago.
    pub fn older_than(age: Duration) -> Result<Self, RetentionError> {
        Retention::new().or_older_than(age)
    }

    /// Prunes the finished sagas beyond the newest `count` (by the time they finished).
    pub fn keep_last(count: u64) -> Result<Self, RetentionError> {
        Retention::new().or_beyond(count)
    }

    /// Also prunes the sagas that finished longer than `age` ago.
    pub fn or_older_than(mut self, age: Duration) -> Result<Self, RetentionError> {
        self.older_than = Some(positive("a retention", age, "`Duration::from_secs(30 * 86_400)` to keep 30 days")?);
        Ok(self)
    }

    /// Also prunes the finished sagas beyond the newest `count`.
    pub fn or_beyond(mut self, count: u64) -> Result<Self, RetentionError> {
        if count == 0 {
            return Err(RetentionError::new(
                "a retention of zero sagas would prune every saga the moment it finishes, and with it the outcome `run_with_id` returns: keep at least 1 (e.g. 100_000)",
            ));
        }
        self.keep_last = Some(count);
        Ok(self)
    }

    /// How long a pruned saga's tombstone is kept after the pruning (default: as long as
    /// `older_than`, so an id is remembered for twice its journal's age; 7 days when only a
    /// count is set). Past it the id is forgotten, and `run_with_id` would start a new saga
    /// under it. A tombstone takes about 230 bytes.
    pub fn tombstones_for(mut self, age: Duration) -> Result<Self, RetentionError> {
        self.tombstones_for =
            Some(positive("keeping tombstones for a duration", age, "`Duration::from_secs(90 * 86_400)`")?);
        Ok(self)
    }

    /// How often the background pruner runs a round (default 60 s).
    pub fn every(mut self, interval: Duration) -> Result<Self, RetentionError> {
        if interval.is_zero() {
            return Err(RetentionError::new(
                "pruning every zero seconds would never stop: give an interval such as `Duration::from_secs(60)`",
            ));
        }
        self.every = interval;
        Ok(self)
    }

    /// How many sagas one write deletes (default 100): a larger batch prunes faster and holds
    /// the other sagas' writes longer.
    pub fn batch(mut self, sagas: usize) -> Result<Self, RetentionError> {
        if sagas == 0 {
            return Err(RetentionError::new("a batch of zero sagas prunes nothing: give at least 1 (e.g. 100)"));
        }
        self.batch = sagas;
        Ok(self)
    }

    /// Writes each saga to `archive` (its row and whole journal as one JSON line, sealed
    /// payloads still sealed, hash chain included) before it is pruned. A batch is pruned only
    /// after its lines were written and synced; an archive that cannot be written stops the
    /// round with nothing of that batch pruned.
    pub fn archive(mut self, archive: Archive) -> Self {
        self.archive = Some(archive);
        self
    }

    /// How long tombstones are kept.
    pub(crate) fn tombstone_age(&self) -> Duration {
        self.tombstones_for.or(self.older_than).unwrap_or(TOMBSTONES_FOR)
    }

    /// The interval of the background pruner.
    pub fn interval(&self) -> Duration {
        self.every
    }
}

/// A saga a pruning round removed (or, in a dry run, would remove).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PrunedSaga {
    /// Its id.
    pub id: SagaId,
    /// The saga name.
    pub name: String,
    /// How it finished.
    pub status: Status,
    /// When it was created (milliseconds since the Unix epoch).
    pub created_at_ms: u64,
    /// When it finished.
    pub finished_at_ms: u64,
}

/// What one pruning round did (or, in a dry run, would do).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct PruneReport {
    /// Whether nothing was changed (a dry run).
    pub dry_run: bool,
    /// How many sagas were pruned (would be pruned).
    pub count: u64,
    /// The sagas pruned (would be pruned), oldest finished first.
    pub pruned: Vec<PrunedSaga>,
    /// Sagas the policy selects that were kept because they cannot be read (their input does
    /// not open: tampered with, or sealed with a key the store was not opened with), with why.
    pub kept: Vec<(SagaId, String)>,
    /// Lines written to the archive.
    pub archived: u64,
    /// Tombstones that expired and were deleted (none in a dry run).
    pub tombstones_expired: u64,
    /// Bytes given back to the file system (none in a dry run).
    pub reclaimed_bytes: u64,
    /// The writes it took (deletions, expirations, reclaims).
    pub writes: u64,
    /// The longest of those writes, as the pruner waited for it: about the longest time another
    /// saga's write waited behind pruning.
    pub longest_write: Duration,
}
