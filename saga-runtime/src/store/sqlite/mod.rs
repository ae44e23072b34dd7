//! The embedded store: one SQLite file in WAL mode, written by a dedicated thread.
//!
//! Why a thread of its own on rusqlite rather than sqlx: the benchmark
//! (`cargo bench -p saga-runtime --bench sqlite`) measures both clients committing one small
//! row per transaction on this machine, and a dedicated connection also lets the writer group
//! the commits of many sagas in flight into one transaction (group commit, see `writer`).
//! With `synchronous = FULL` (the default) a committed checkpoint survives a power loss;
//! `NORMAL` keeps it across a process crash but may lose the last transactions on power loss.
//!
//! - `schema`: opening the file, migrations (`PRAGMA user_version`), the keyring check;
//! - `writer`: the thread and its group commit;
//! - `queries`: the SQL of each operation.
//!
//! `PRAGMA application_id` marks the file as a saga store. The process holds an exclusive lock
//! on `<file>.lock` while the store is open, so a second process gets [`StoreError::Locked`]
//! instead of driving the same sagas twice; claims, leases and fencing epochs (see the
//! [`store`](crate::store) module) keep the runtimes of this one process apart.

mod queries;
mod schema;
mod watch;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};
use tokio::sync::oneshot;

use self::queries::{Found, QueryError};
use self::writer::{Command, Job, Writer};
use super::{
    BackendError, Checkpoint, CheckpointStore, Claim, ClaimRequest, Claimed, Created, Fence, NewRequest, NewSaga,
    PruneCursor, PruneQuery, RecordRow, Request, RequestState, SagaKind, SagaPage, SagaQuery, SagaSummary, StoreError,
    StoredDefinition, StoredSaga, Tombstone, Wakeup,
};
use crate::BoxFuture;
use crate::id::SagaId;
use crate::seal::Keyring;

/// How hard SQLite syncs each commit to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Synchronous {
    /// `synchronous = FULL`: a committed checkpoint survives a power loss (the default).
    #[default]
    Full,
    /// `synchronous = NORMAL`: survives a crash of the process, but the last transactions may
    /// be lost on a power loss; fewer syncs.
    Normal,
}

/// How to open a [`SqliteStore`].
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    path: PathBuf,
    synchronous: Synchronous,
    keys: Option<Keyring>,
    busy_timeout: Duration,
    max_size: Option<u64>,
    pub(super) exclusive: bool,
    pub(super) reader: bool,
}

impl SqliteOptions {
    /// Options for the file at `path`, created if missing.
    pub fn new(path: impl AsRef<Path>) -> Self {
        SqliteOptions {
            path: path.as_ref().to_owned(),
            synchronous: Synchronous::Full,
            keys: None,
            busy_timeout: Duration::from_secs(5),
            max_size: None,
            exclusive: false,
            reader: false,
        }
    }

    /// Holds the file alone (`true`): no other process can read it while this one runs (the
    /// `saga` CLI cannot), and SQLite keeps the log's index in memory rather than in a `-shm`
    /// file. Default `false`: readers may look while this process writes (measured cost on the
    /// writer: see the README's Speed section). A disk too full for the `-shm` file falls back
    /// to exclusive by itself.
    pub fn exclusive(mut self, exclusive: bool) -> Self {
        self.exclusive = exclusive;
        self
    }

    /// Opens the file only to read it, next to the process that owns it (the `saga` CLI's
    /// way): no lock, no migration, no write; every write is refused with
    /// [`StoreError::ReadOnly`]. The owner must not hold it [`exclusive`](Self::exclusive)ly.
    pub fn reader(mut self) -> Self {
        self.reader = true;
        self
    }

    /// How hard each commit is synced (default [`Synchronous::Full`]).
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// Encrypts inputs, outputs, effect results and failure messages at rest with the
    /// keyring's current key; rows sealed with its older keys stay readable.
    #[cfg(feature = "encryption")]
    pub fn encryption(mut self, keys: Keyring) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Caps the database file at about `bytes`: a write past it is refused as on a full disk
    /// (and the sagas writing wait, see `Policy::store_retry`) until the cap is raised with
    /// [`SqliteStore::set_max_size`] or space is freed. Default: no cap.
    pub fn max_size(mut self, bytes: u64) -> Self {
        self.max_size = Some(bytes);
        self
    }

    /// How long a write waits for a lock held by another connection (default 5 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    pub(crate) fn keyring(&self) -> Option<&Keyring> {
        self.keys.as_ref()
    }

    /// Opens (creating and migrating if needed) the store.
    pub async fn open(self) -> Result<SqliteStore, StoreError> {
        let (ready, opened) = oneshot::channel();
        let (commands, queue) = mpsc::channel();
        let options = self.clone();
        let location = self.path.display().to_string();
        let thread = std::thread::Builder::new()
            .name("saga-sqlite-writer".to_owned())
            .spawn(move || match if options.reader { schema::open_reader(&options) } else { schema::open(&options) } {
                Ok(opened) => {
                    let _ = ready.send(Ok(opened.read_only));
                    let path = options.path.clone();
                    let classify = Arc::new(move |error| sqlite_error(&path, "writing to the store", error));
                    Writer {
                        connection: opened.connection,
                        watch: opened.watch,
                        _lock: opened.lock,
                        classify,
                        gone: None,
                        free_claims: opened.free_claims,
                    }
                    .run(queue);
                }
                Err(error) => {
                    let _ = ready.send(Err(error));
                }
            })
            .map_err(|e| {
                StoreError::Backend(BackendError::new(e).location(&location).action("starting the writer thread"))
            })?;
        let read_only = opened.await.map_err(|_| stopped(&location))??;
        Ok(SqliteStore {
            shared: Arc::new(Shared {
                commands,
                wakeups: tokio::sync::broadcast::channel(1024).0,
                keys: self.keys,
                path: self.path,
                location,
                read_only,
                thread: Some(thread),
            }),
        })
    }
}

/// How much room a [`SqliteStore`]'s database takes ([`SqliteStore::space`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Space {
    /// The database's size: every page, in use or free.
    pub bytes: u64,
    /// The free pages' share of it: reused by the next writes, or given back to the file system
    /// by [`CheckpointStore::reclaim`] when `gives_space_back`.
    pub free_bytes: u64,
    /// Whether the file has incremental auto-vacuum (every file created since schema 3; older
    /// ones after [`SqliteStore::compact`]).
    pub gives_space_back: bool,
}

/// The embedded default store: one SQLite file (WAL), durable across crashes, optionally
/// encrypted at rest. Cloning shares the same file and writer thread.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use saga_runtime::prelude::*;
/// use saga_runtime::store::SqliteStore;
///
/// let runtime = Runtime::builder().store(SqliteStore::open("sagas.db").await?).build();
/// # let _ = runtime;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    shared: Arc<Shared>,
}

struct Shared {
    commands: mpsc::Sender<Command>,
    wakeups: tokio::sync::broadcast::Sender<Wakeup>,
    keys: Option<Keyring>,
    path: PathBuf,
    location: String,
    read_only: Option<String>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Shared {
    /// Closing the last handle stops the writer thread after its current group and waits for
    /// it, so the file is closed and unlocked when the store is dropped.
    fn drop(&mut self) {
        drop(std::mem::replace(&mut self.commands, mpsc::channel().0));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.shared.path)
            .field("encrypted", &self.shared.keys.is_some())
            .field("read_only", &self.shared.read_only.is_some())
            .finish()
    }
}

fn stopped(location: &str) -> StoreError {
    StoreError::Backend(
        BackendError::new("the SQLite writer thread has stopped")
            .location(location)
            .advice("a panic stopped it; restart the process"),
    )
}

impl SqliteStore {
    /// Opens the file at `path` with the default options (created and migrated if needed).
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        SqliteOptions::new(path).open().await
    }

    /// Options to open the file at `path` with.
    pub fn options(path: impl AsRef<Path>) -> SqliteOptions {
        SqliteOptions::new(path)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Whether the store refuses writes (it holds encrypted sagas and was opened without a
    /// keyring).
    pub fn is_read_only(&self) -> bool {
        self.shared.read_only.is_some()
    }

    /// Changes the cap on the database's size (see [`SqliteOptions::max_size`]); `None` lifts
    /// it. Sagas waiting for space go on with their next retry.
    pub async fn set_max_size(&self, bytes: Option<u64>) -> Result<(), StoreError> {
        self.read(move |c| match bytes {
            Some(bytes) => schema::set_max_size(c, bytes).map_err(QueryError::Sql),
            None => c.pragma_update(None, "max_page_count", i64::from(u32::MAX)).map_err(QueryError::Sql),
        })
        .await
    }

    /// How much room the database takes: its pages, and how many of them are free (freed by
    /// pruning and not yet reused or given back). The file on disk is this size once the
    /// write-ahead log is checkpointed into it (the log itself is at most a few MiB besides).
    pub async fn space(&self) -> Result<Space, StoreError> {
        self.read(|c| {
            let pages: i64 = c.pragma_query_value(None, "page_count", |r| r.get(0))?;
            let free: i64 = c.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
            let page_size: i64 = c.pragma_query_value(None, "page_size", |r| r.get(0))?;
            let auto_vacuum: i64 = c.pragma_query_value(None, "auto_vacuum", |r| r.get(0))?;
            Ok(Space {
                bytes: (pages * page_size) as u64,
                free_bytes: (free * page_size) as u64,
                gives_space_back: auto_vacuum == 2,
            })
        })
        .await
    }

    /// Rewrites the whole file without its free pages and switches it to incremental
    /// auto-vacuum, so that from then on pruning gives space back a few pages at a time
    /// ([`CheckpointStore::reclaim`]). Files created by this version have it already; a file
    /// created before schema 3 reuses the pages pruning frees (it stops growing) but never
    /// shrinks until compacted once. Returns the file's size before and after, in bytes.
    ///
    /// This holds every other write of the store until it is done (about the time to copy the
    /// file; run it when the store is quiet, e.g. right after opening) and needs free disk
    /// space about the size of the file.
    pub async fn compact(&self) -> Result<(u64, u64), StoreError> {
        if let Some(reason) = &self.shared.read_only {
            return Err(StoreError::ReadOnly { location: self.shared.location.clone(), reason: reason.clone() });
        }
        self.read(|c| {
            let size = |c: &Connection| -> rusqlite::Result<u64> {
                let pages: i64 = c.pragma_query_value(None, "page_count", |r| r.get(0))?;
                let page_size: i64 = c.pragma_query_value(None, "page_size", |r| r.get(0))?;
                Ok((pages * page_size) as u64)
            };
            let before = size(c)?;
            c.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")?;
            Ok((before, size(c)?))
        })
        .await
    }

    /// Runs `work` in the writer's next transaction; `size` is about how many bytes it writes.
    async fn write<T, F>(&self, size: usize, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, QueryError> + Send + 'static,
    {
        if let Some(reason) = &self.shared.read_only {
            return Err(StoreError::ReadOnly { location: self.shared.location.clone(), reason: reason.clone() });
        }
        let (reply, answer) = oneshot::channel();
        self.shared
            .commands
            .send(Command::Write(Box::new(Job::new(work, reply, size))))
            .map_err(|_| stopped(&self.shared.location))?;
        answer.await.map_err(|_| stopped(&self.shared.location))?
    }

    /// Runs `work` on the writer's connection, between transactions.
    async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, QueryError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let path = self.shared.path.clone();
        let read = move |there: Result<(), StoreError>, connection: &Connection| {
            let result = there.and_then(|()| {
                work(connection).map_err(|error| match error {
                    QueryError::Store(error) => error,
                    QueryError::Sql(error) => sqlite_error(&path, "reading the store", error),
                })
            });
            let _ = reply.send(result);
        };
        self.shared.commands.send(Command::Read(Box::new(read))).map_err(|_| stopped(&self.shared.location))?;
        answer.await.map_err(|_| stopped(&self.shared.location))?
    }
}

impl SqliteStore {
    /// Under a keyring, refuses a payload that is not sealed: a store that wraps this one and
    /// forgot to forward `keyring()` would otherwise write secrets in clear next to sealed rows.
    fn check_sealed<'a>(&self, payloads: impl IntoIterator<Item = &'a [u8]>) -> Result<(), StoreError> {
        if self.shared.keys.is_none() || payloads.into_iter().all(crate::codec::is_encrypted) {
            return Ok(());
        }
        Err(StoreError::ReadOnly {
            location: self.shared.location.clone(),
            reason: "a plaintext payload was sent to this encrypted store and refused: a store that wraps it must forward `keyring()`".to_owned(),
        })
    }
}

impl CheckpointStore for SqliteStore {
    fn create<'a>(&'a self, saga: NewSaga) -> BoxFuture<'a, Result<Created, StoreError>> {
        Box::pin(async move {
            self.check_sealed(std::iter::once(&saga.input[..]).chain(saga.records.iter().map(|r| &r.body[..])))?;
            let fence = match &saga.owner {
                Some(owner) => Fence::new(owner.clone(), 1),
                None => Fence::new("", 0),
            };
            let enqueued = saga.owner.is_none();
            let size = saga.input.len() + saga.records.iter().map(|r| r.body.len()).sum::<usize>();
            match self.write(size, move |c| queries::create(c, &saga)).await? {
                None => {
                    if enqueued {
                        let _ = self.shared.wakeups.send(Wakeup::Due);
                    }
                    Ok(Created::New(fence))
                }
                Some(Found::Existing(existing)) => Ok(Created::Existing(Box::new(existing))),
                Some(Found::Pruned(tombstone)) => Ok(Created::Pruned(Box::new(tombstone))),
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
        let (id, fence) = (id.clone(), fence.clone());
        Box::pin(async move {
            self.check_sealed(records.iter().map(|r| &r.body[..]))?;
            let size = records.iter().map(|r| r.body.len()).sum();
            let settled = checkpoint.due_at_ms.is_none();
            let wakeup_id = id.clone();
            self.write(size, move |c| queries::append(c, &id, &fence, &records, &checkpoint)).await?;
            if settled {
                let _ = self.shared.wakeups.send(Wakeup::Settled(wakeup_id));
            }
            Ok(())
        })
    }

    fn load<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<StoredSaga>, StoreError>> {
        let id = id.clone();
        Box::pin(self.read(move |c| queries::load(c, &id)))
    }

    fn summary<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<SagaSummary>, StoreError>> {
        let id = id.clone();
        Box::pin(self.read(move |c| queries::summary_of(c, &id)))
    }

    fn list<'a>(&'a self, query: &'a SagaQuery) -> BoxFuture<'a, Result<SagaPage, StoreError>> {
        let query = query.clone();
        Box::pin(async move {
            let limit = query.limit;
            let sagas = self.read(move |c| queries::list(c, &query)).await?;
            Ok(SagaPage::new(sagas, limit))
        })
    }

    fn claim<'a>(&'a self, request: &'a ClaimRequest) -> BoxFuture<'a, Result<Vec<Claimed>, StoreError>> {
        let request = request.clone();
        Box::pin(self.write(0, move |c| queries::claim(c, &request)))
    }

    fn claim_saga<'a>(
        &'a self,
        id: &'a SagaId,
        owner: &'a str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> BoxFuture<'a, Result<Claim, StoreError>> {
        let (id, owner) = (id.clone(), owner.to_owned());
        Box::pin(self.write(0, move |c| queries::claim_saga(c, &id, &owner, now_ms, lease_until_ms)))
    }

    fn renew<'a>(&'a self, owner: &'a str, lease_until_ms: u64) -> BoxFuture<'a, Result<u64, StoreError>> {
        let owner = owner.to_owned();
        Box::pin(self.write(0, move |c| queries::renew(c, &owner, lease_until_ms)))
    }

    /// Queues the release and returns: the writer thread applies commands in order, so any
    /// later claim sees it, and dropping the store waits for it. (A release that fails leaves
    /// the claim to end with its lease.)
    fn release<'a>(&'a self, id: &'a SagaId, fence: &'a Fence) -> BoxFuture<'a, Result<(), StoreError>> {
        let (id, fence) = (id.clone(), fence.clone());
        if self.shared.read_only.is_none() {
            let (reply, _) = oneshot::channel();
            let job = Job::new(move |c: &Connection| queries::release(c, &id, &fence), reply, 0);
            let _ = self.shared.commands.send(Command::Write(Box::new(job)));
            let _ = self.shared.wakeups.send(Wakeup::Due);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn prunable<'a>(&'a self, query: &'a PruneQuery) -> BoxFuture<'a, Result<Vec<StoredSaga>, StoreError>> {
        let query = query.clone();
        Box::pin(self.read(move |c| queries::prunable(c, &query)))
    }

    fn nth_newest_finished<'a>(&'a self, skip: u64) -> BoxFuture<'a, Result<Option<PruneCursor>, StoreError>> {
        Box::pin(self.read(move |c| queries::nth_newest_finished(c, skip)))
    }

    fn prune<'a>(&'a self, tombstones: Vec<Tombstone>) -> BoxFuture<'a, Result<Vec<SagaId>, StoreError>> {
        if tombstones.is_empty() {
            let refused = self
                .shared
                .read_only
                .as_ref()
                .map(|reason| StoreError::ReadOnly { location: self.shared.location.clone(), reason: reason.clone() });
            return Box::pin(std::future::ready(refused.map_or(Ok(Vec::new()), Err)));
        }
        Box::pin(self.write(0, move |c| queries::prune(c, &tombstones)))
    }

    fn tombstone<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<Tombstone>, StoreError>> {
        let id = id.clone();
        Box::pin(self.read(move |c| queries::tombstone(c, &id)))
    }

    fn expire_tombstones<'a>(&'a self, pruned_before_ms: u64, limit: usize) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(self.write(0, move |c| queries::expire_tombstones(c, pruned_before_ms, limit)))
    }

    /// Gives free pages back to the file system, 2,048 pages (8 MiB) at a time, on a file with
    /// incremental auto-vacuum (every file created since schema 3; see
    /// [`compact`](SqliteStore::compact) for older ones), keeping a quarter of the file free for
    /// the next sagas.
    fn reclaim(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.write(0, |c| queries::reclaim(c, RECLAIM_STEP)))
    }

    fn save_definition(&self, definition: StoredDefinition) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(0, move |c| queries::save_definition(c, &definition, crate::writer::now_ms())))
    }

    fn definitions(&self) -> BoxFuture<'_, Result<Vec<StoredDefinition>, StoreError>> {
        Box::pin(self.read(queries::definitions))
    }

    /// Through the writer of the process that owns the file; from a reader
    /// ([`SqliteOptions::reader`]), on a short connection of its own: a request is not a saga,
    /// and SQLite orders the two writers.
    fn submit(&self, request: NewRequest) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            if self.shared.read_only.is_none() {
                let id = self.write(0, move |c| queries::submit(c, &request)).await?;
                let _ = self.shared.wakeups.send(Wakeup::Due);
                return Ok(id);
            }
            let path = self.shared.path.clone();
            tokio::task::spawn_blocking(move || {
                let sql = |e: rusqlite::Error| {
                    sqlite_error(&path, "leaving a request for the process that owns the store", e)
                };
                let connection =
                    Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(sql)?;
                connection.busy_timeout(Duration::from_secs(10)).map_err(sql)?;
                queries::submit(&connection, &request).map_err(|error| match error {
                    QueryError::Store(error) => error,
                    QueryError::Sql(error) => sql(error),
                })
            })
            .await
            .map_err(|e| StoreError::backend(format!("the request could not be written: {e}")))?
        })
    }

    fn take_requests<'a>(
        &'a self,
        owner: &'a str,
        kinds: &'a [SagaKind],
        limit: usize,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Request>, StoreError>> {
        let (owner, kinds) = (owner.to_owned(), kinds.to_vec());
        Box::pin(self.write(0, move |c| {
            queries::take_requests(c, &owner, &kinds, limit, now_ms, super::memory::REQUEST_RETAKE_MS)
        }))
    }

    fn finish_request(
        &self,
        id: u64,
        state: RequestState,
        result: String,
        at_ms: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(0, move |c| queries::finish_request(c, id, state, &result, at_ms)))
    }

    fn requests(&self, limit: usize) -> BoxFuture<'_, Result<Vec<Request>, StoreError>> {
        Box::pin(self.read(move |c| queries::requests(c, limit)))
    }

    fn wakeups(&self) -> Option<tokio::sync::broadcast::Receiver<Wakeup>> {
        Some(self.shared.wakeups.subscribe())
    }

    #[cfg(feature = "encryption")]
    fn keyring(&self) -> Option<&Keyring> {
        self.shared.keys.as_ref()
    }

    fn location(&self) -> String {
        self.shared.location.clone()
    }
}

/// The most pages one `reclaim` gives back: about 8 MiB, a few milliseconds of the writer.
const RECLAIM_STEP: i64 = 2048;

/// Whether the disk holding `path` is full: SQLite reports some writes that found no space as
/// plain I/O errors, which would point the wrong way. Checked by writing a small file next to
/// the database, on that error path only.
fn disk_is_full(path: &Path) -> bool {
    const ENOSPC: i32 = 28;
    let probe = path.with_extension("space-probe");
    let full = match std::fs::write(&probe, [0u8; 64 * 1024]) {
        Err(error) => error.raw_os_error() == Some(ENOSPC),
        Ok(()) => false,
    };
    let _ = std::fs::remove_file(&probe);
    full
}

/// A SQLite error as the store's error: what happened, on which file, and what to do.
pub(super) fn sqlite_error(path: &Path, action: &str, error: rusqlite::Error) -> StoreError {
    let location = path.display().to_string();
    // While sagas write, a failure that may pass makes them wait; anywhere else (opening the
    // store), the caller tries again.
    let then = if action.starts_with("writing") { "the sagas writing wait and retry" } else { "then try again" };
    let backend = |error: rusqlite::Error, retryable: bool, advice: String| {
        let code = error.sqlite_error_code().map(|c| format!("{c:?}"));
        let mut backend =
            BackendError::new(error).location(&location).action(action).retryable(retryable).advice(advice);
        if let Some(code) = code {
            backend = backend.code(code);
        }
        StoreError::Backend(backend)
    };
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Locked { location },
        Some(ErrorCode::NotADatabase) => StoreError::NotADatabase { location },
        Some(ErrorCode::DatabaseCorrupt) => {
            backend(error, false, "the file is corrupted: restore it from a backup".to_owned())
        }
        Some(ErrorCode::DiskFull) => {
            backend(error, true, format!("the disk is full (or the store reached its `max_size`): free space; {then}"))
        }
        Some(ErrorCode::SystemIoFailure) if disk_is_full(path) => {
            backend(error, true, format!("the disk is full: free space; {then}"))
        }
        Some(ErrorCode::SystemIoFailure) => {
            backend(error, true, format!("check the disk and the file (`dmesg`); {then}"))
        }
        Some(ErrorCode::ReadOnly) => StoreError::ReadOnly {
            location,
            reason: "the file or its directory is read-only: make both writable".to_owned(),
        },
        _ => backend(error, false, "see SQLite's message".to_owned()),
    }
}
