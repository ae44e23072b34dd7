//! The store that many workers share: one PostgreSQL database (through sqlx, with
//! runtime-checked queries, so building needs no database).
//!
//! - `schema`: migrations, embedded and versioned, run under an advisory lock so that ten
//!   workers starting at once migrate once; the marker that the schema is a saga store; the
//!   keyring check.
//! - `writer`: group commit: the appends and creations of many sagas in flight go into one
//!   transaction, each still checked on its own (sequence number and epoch, in the statement
//!   itself), so one conflict fails only its saga.
//! - `queries`: the SQL of each operation. Claims use `FOR UPDATE SKIP LOCKED` through a
//!   partial index of the sagas that have work to do, which finished sagas leave: claiming
//!   stays O(log n) however much history is kept.
//! - `listen`: LISTEN/NOTIFY wake-ups (a saga became due, a saga settled), forwarded to the
//!   runtimes of this process; listeners also poll, so a lost notification only delays.

mod limits;
mod listen;
mod queries;
mod schema;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use self::writer::Writer;
use super::{
    BackendError, Checkpoint, CheckpointStore, Claim, ClaimRequest, Claimed, Created, Fence, NewSaga, PruneCursor,
    PruneQuery, RecordRow, SagaPage, SagaQuery, SagaSummary, StoreError, StoredSaga, Tombstone, Wakeup,
};
use crate::BoxFuture;
use crate::id::SagaId;
use crate::seal::Keyring;
use crate::store::{NewRequest, StoredDefinition};

/// How to connect a [`PostgresStore`].
///
/// ```no_run
/// # async fn example() -> Result<(), saga_runtime::store::StoreError> {
/// use std::time::Duration;
/// use saga_runtime::store::PostgresStore;
///
/// let store = PostgresStore::options("postgres://app@db/agents")
///     .pool_size(16)
///     .schema("sagas")
///     .connect()
///     .await?;
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    url: String,
    pool_size: u32,
    schema: String,
    keys: Option<Keyring>,
    writers: usize,
    acquire_timeout: Duration,
    reader: bool,
}

impl PostgresOptions {
    /// Options for the database at `url` (`postgres://user:password@host:port/database`).
    pub fn new(url: impl Into<String>) -> Self {
        PostgresOptions {
            url: url.into(),
            pool_size: 10,
            schema: "saga".to_owned(),
            keys: None,
            writers: 2,
            acquire_timeout: Duration::from_secs(10),
            reader: false,
        }
    }

    /// Opens the store to read it next to the workers that own it (what the `saga` CLI does):
    /// it creates nothing and migrates nothing, so a schema without a store, or with a store of
    /// another version than this build's, is an error that says what to do. Writes (sagas,
    /// claims) are not for a reader; operators' requests are.
    pub fn reader(mut self) -> Self {
        self.reader = true;
        self
    }

    /// The most connections the store opens for reads, claims and leases (default 10). The
    /// [`writers`](Self::writers) and the notification listener have one each besides, so a
    /// store holds at most `pool_size + writers + 1` connections.
    pub fn pool_size(mut self, size: u32) -> Self {
        self.pool_size = size.max(2);
        self
    }

    /// The PostgreSQL schema the store's tables live in (default `saga`; letters, digits and
    /// `_`): separate stores can share a database.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Encrypts inputs, outputs, effect results and failure messages at rest with the
    /// keyring's current key; rows sealed with its older keys stay readable.
    #[cfg(feature = "encryption")]
    pub fn encryption(mut self, keys: Keyring) -> Self {
        self.keys = Some(keys);
        self
    }

    /// How many connections commit groups of writes in parallel (default 2). One is enough
    /// for throughput at any number of sagas in flight (a group takes every write waiting);
    /// a second one commits while the first waits for its flush.
    pub fn writers(mut self, writers: usize) -> Self {
        self.writers = writers.max(1);
        self
    }

    /// How long an operation waits for a free connection (default 10 s).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Connects, migrating the schema if needed.
    pub async fn connect(self) -> Result<PostgresStore, StoreError> {
        let location = redacted_url(&self.url);
        if !valid_schema(&self.schema) {
            return Err(StoreError::NotASagaStore {
                location,
                reason: format!(
                    "`{}` is not a usable schema name: use letters, digits and `_`, starting with a letter",
                    self.schema
                ),
            });
        }
        let connect: PgConnectOptions = self.url.parse().map_err(|e| {
            StoreError::Backend(
                BackendError::new(e)
                    .location(&location)
                    .action("reading the database URL")
                    .advice("write it as postgres://user:password@host:port/database"),
            )
        })?;
        let connect = connect.application_name("saga-runtime");
        // Plans made for each execution: the store's reads and claims then follow the tables
        // as they grow, instead of a plan cached while they were small (the writer, whose
        // statements are the hot path, keeps cached plans on connections of its own).
        let reads = connect.clone().options([("plan_cache_mode", "force_custom_plan")]);
        let pool = PgPoolOptions::new()
            .max_connections(self.pool_size)
            .acquire_timeout(self.acquire_timeout)
            .connect_with(reads)
            .await
            .map_err(|e| pg_error(&location, "connecting to the database", e))?;
        let read_only = schema::migrate(&pool, &self.schema, &location, self.keys.as_ref(), !self.reader).await?;
        let (wakeups, listener) = listen::start(pool.clone(), &self.schema);
        let writer = Writer::start(&connect, self.acquire_timeout, &self.schema, &location, self.writers);
        // Rate-limit tokens: a pool of their own, opened on first use, without synchronous
        // commits (see `limits`).
        let limits = Arc::new(limits::PgLimits {
            pool: PgPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(self.acquire_timeout)
                .connect_lazy_with(connect.clone().options([("synchronous_commit", "off")])),
            schema: self.schema.clone(),
            location: location.clone(),
        });
        Ok(PostgresStore {
            shared: Arc::new(Shared {
                pool,
                schema: self.schema,
                location,
                keys: self.keys,
                read_only,
                writer,
                wakeups,
                listener,
                limits,
            }),
        })
    }
}

/// A session-level advisory lock, on the connection that took it: unlocked (and the connection
/// given back to the pool) when it drops.
struct AdvisoryLock {
    connection: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
    key: String,
}

impl Drop for AdvisoryLock {
    fn drop(&mut self) {
        let Some(mut connection) = self.connection.take() else { return };
        let key = std::mem::take(&mut self.key);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                drop(handle.spawn(async move {
                    if sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
                        .bind(&key)
                        .execute(&mut *connection)
                        .await
                        .is_err()
                    {
                        // A connection that cannot unlock must not go back to the pool holding it.
                        let _ = connection.close().await;
                    }
                }));
            }
            // Without a runtime the session ends with the connection, and its lock with it.
            Err(_) => drop(connection.detach()),
        }
    }
}

/// The store many worker processes share: one PostgreSQL database. Cloning shares the pool.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use saga_runtime::prelude::*;
/// use saga_runtime::store::PostgresStore;
///
/// let runtime = Runtime::builder().store(PostgresStore::connect("postgres://postgres@127.0.0.1/agents").await?).build();
/// # let _ = runtime;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    shared: Arc<Shared>,
}

struct Shared {
    pool: PgPool,
    schema: String,
    location: String,
    keys: Option<Keyring>,
    read_only: Option<String>,
    writer: Writer,
    wakeups: tokio::sync::broadcast::Sender<Wakeup>,
    listener: tokio::task::JoinHandle<()>,
    limits: Arc<limits::PgLimits>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("location", &self.shared.location)
            .field("schema", &self.shared.schema)
            .field("encrypted", &self.shared.keys.is_some())
            .finish()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` with the default options (migrating if needed).
    pub async fn connect(url: impl Into<String>) -> Result<PostgresStore, StoreError> {
        PostgresOptions::new(url).connect().await
    }

    /// Options to connect to the database at `url` with.
    pub fn options(url: impl Into<String>) -> PostgresOptions {
        PostgresOptions::new(url)
    }

    /// The schema the store's tables live in.
    pub fn schema(&self) -> &str {
        &self.shared.schema
    }

    /// The pool, for what a test or a tool needs beyond the store (a ledger, a query).
    pub fn pool(&self) -> &PgPool {
        &self.shared.pool
    }

    fn refuse_writes(&self) -> Result<(), StoreError> {
        match &self.shared.read_only {
            Some(reason) => {
                Err(StoreError::ReadOnly { location: self.shared.location.clone(), reason: reason.clone() })
            }
            None => Ok(()),
        }
    }

    fn error(&self, action: &str, error: sqlx::Error) -> StoreError {
        pg_error(&self.shared.location, action, error)
    }
}

impl CheckpointStore for PostgresStore {
    fn create<'a>(&'a self, saga: NewSaga) -> BoxFuture<'a, Result<Created, StoreError>> {
        Box::pin(async move {
            self.refuse_writes()?;
            check_sealed(self, std::iter::once(&saga.input[..]).chain(saga.records.iter().map(|r| &r.body[..])))?;
            let id = saga.id.clone();
            let fence = match &saga.owner {
                Some(owner) => Fence::new(owner.clone(), 1),
                None => Fence::new("", 0),
            };
            if self.shared.writer.create(saga).await? {
                return Ok(Created::New(fence));
            }
            if let Some(existing) = self.load(&id).await? {
                return Ok(Created::Existing(Box::new(existing)));
            }
            match self.tombstone(&id).await? {
                Some(tombstone) => Ok(Created::Pruned(Box::new(tombstone))),
                None => Err(StoreError::backend(format!(
                    "saga `{id}` was neither created nor found: the database changed under the store; try again"
                ))),
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
            self.refuse_writes()?;
            check_sealed(self, records.iter().map(|r| &r.body[..]))?;
            self.shared.writer.append(id.clone(), fence.clone(), records, checkpoint).await
        })
    }

    fn load<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<StoredSaga>, StoreError>> {
        Box::pin(async move {
            queries::load(&self.shared.pool, &self.shared.schema, id)
                .await
                .map_err(|e| self.error("loading a saga", e))?
        })
    }

    fn summary<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<SagaSummary>, StoreError>> {
        Box::pin(async move {
            queries::summary_of(&self.shared.pool, &self.shared.schema, id)
                .await
                .map_err(|e| self.error("reading a saga", e))?
        })
    }

    fn list<'a>(&'a self, query: &'a SagaQuery) -> BoxFuture<'a, Result<SagaPage, StoreError>> {
        Box::pin(async move {
            let sagas = queries::list(&self.shared.pool, &self.shared.schema, query)
                .await
                .map_err(|e| self.error("listing sagas", e))??;
            Ok(SagaPage::new(sagas, query.limit))
        })
    }

    fn claim<'a>(&'a self, request: &'a ClaimRequest) -> BoxFuture<'a, Result<Vec<Claimed>, StoreError>> {
        Box::pin(async move {
            self.refuse_writes()?;
            queries::claim(&self.shared.pool, &self.shared.schema, request)
                .await
                .map_err(|e| self.error("claiming sagas", e))
        })
    }

    fn claim_saga<'a>(
        &'a self,
        id: &'a SagaId,
        owner: &'a str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> BoxFuture<'a, Result<Claim, StoreError>> {
        Box::pin(async move {
            self.refuse_writes()?;
            queries::claim_saga(&self.shared.pool, &self.shared.schema, id, owner, now_ms, lease_until_ms)
                .await
                .map_err(|e| self.error("claiming a saga", e))
        })
    }

    fn renew<'a>(&'a self, owner: &'a str, lease_until_ms: u64) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            self.refuse_writes()?;
            queries::renew(&self.shared.pool, &self.shared.schema, owner, lease_until_ms)
                .await
                .map_err(|e| self.error("renewing leases", e))
        })
    }

    fn release<'a>(&'a self, id: &'a SagaId, fence: &'a Fence) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            if self.shared.read_only.is_some() {
                return Ok(());
            }
            queries::release(&self.shared.pool, &self.shared.schema, id, fence)
                .await
                .map_err(|e| self.error("releasing a saga", e))
        })
    }

    fn prunable<'a>(&'a self, query: &'a PruneQuery) -> BoxFuture<'a, Result<Vec<StoredSaga>, StoreError>> {
        Box::pin(async move {
            queries::prunable(&self.shared.pool, &self.shared.schema, query)
                .await
                .map_err(|e| self.error("listing finished sagas to prune", e))?
        })
    }

    fn nth_newest_finished<'a>(&'a self, skip: u64) -> BoxFuture<'a, Result<Option<PruneCursor>, StoreError>> {
        Box::pin(async move {
            queries::nth_newest_finished(&self.shared.pool, &self.shared.schema, skip)
                .await
                .map_err(|e| self.error("counting finished sagas", e))
        })
    }

    /// Deletes in one statement per batch (a transaction of its own, next to the writer's): a
    /// batch of 100 sagas holds no lock another saga's write waits for. The space is reused by
    /// the next rows once autovacuum has seen the deleted ones.
    fn prune<'a>(&'a self, tombstones: Vec<Tombstone>) -> BoxFuture<'a, Result<Vec<SagaId>, StoreError>> {
        Box::pin(async move {
            self.refuse_writes()?;
            queries::prune(&self.shared.pool, &self.shared.schema, &tombstones)
                .await
                .map_err(|e| self.error("pruning finished sagas", e))
        })
    }

    fn tombstone<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<Tombstone>, StoreError>> {
        Box::pin(async move {
            queries::tombstone(&self.shared.pool, &self.shared.schema, id)
                .await
                .map_err(|e| self.error("reading a tombstone", e))?
        })
    }

    fn expire_tombstones<'a>(&'a self, pruned_before_ms: u64, limit: usize) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            self.refuse_writes()?;
            queries::expire_tombstones(&self.shared.pool, &self.shared.schema, pruned_before_ms, limit)
                .await
                .map_err(|e| self.error("expiring tombstones", e))
        })
    }

    fn wakeups(&self) -> Option<tokio::sync::broadcast::Receiver<Wakeup>> {
        Some(self.shared.wakeups.subscribe())
    }

    #[cfg(feature = "encryption")]
    fn keyring(&self) -> Option<&Keyring> {
        self.shared.keys.as_ref()
    }

    fn save_definition(&self, definition: StoredDefinition) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.refuse_writes()?;
            queries::save_definition(&self.shared.pool, &self.shared.schema, &definition, crate::writer::now_ms())
                .await
                .map_err(|e| self.error("keeping a saga definition", e))
        })
    }

    fn definitions(&self) -> BoxFuture<'_, Result<Vec<StoredDefinition>, StoreError>> {
        Box::pin(async move {
            queries::definitions(&self.shared.pool, &self.shared.schema)
                .await
                .map_err(|e| self.error("reading the saga definitions", e))?
        })
    }

    fn submit(&self, request: NewRequest) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let channel = listen::channel(&self.shared.schema);
            queries::submit(&self.shared.pool, &self.shared.schema, &channel, &request)
                .await
                .map_err(|e| self.error("leaving a request for the workers", e))
        })
    }

    fn take_requests<'a>(
        &'a self,
        owner: &'a str,
        kinds: &'a [super::SagaKind],
        limit: usize,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<super::Request>, StoreError>> {
        Box::pin(async move {
            self.refuse_writes()?;
            queries::take_requests(
                &self.shared.pool,
                &self.shared.schema,
                owner,
                kinds,
                limit,
                now_ms,
                super::memory::REQUEST_RETAKE_MS,
            )
            .await
            .map_err(|e| self.error("taking operators' requests", e))
        })
    }

    fn finish_request(
        &self,
        id: u64,
        state: super::RequestState,
        result: String,
        at_ms: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            queries::finish_request(&self.shared.pool, &self.shared.schema, id, state, &result, at_ms)
                .await
                .map_err(|e| self.error("recording how a request ended", e))
        })
    }

    fn requests(&self, limit: usize) -> BoxFuture<'_, Result<Vec<super::Request>, StoreError>> {
        Box::pin(async move {
            queries::requests(&self.shared.pool, &self.shared.schema, limit)
                .await
                .map_err(|e| self.error("reading operators' requests", e))
        })
    }

    fn lock_item<'a>(&'a self, item: &'a str) -> BoxFuture<'a, Result<Option<super::ItemLock>, StoreError>> {
        Box::pin(async move {
            let location = &self.shared.location;
            let key = format!("saga-runtime {} {item}", self.shared.schema);
            let mut connection =
                self.shared.pool.acquire().await.map_err(|e| pg_error(location, "locking a sweep item", e))?;
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
                .bind(&key)
                .fetch_one(&mut *connection)
                .await
                .map_err(|e| pg_error(location, "locking a sweep item", e))?;
            Ok(locked.then(|| super::ItemLock::new(AdvisoryLock { connection: Some(connection), key })))
        })
    }

    fn shared_limits(&self) -> Option<Arc<dyn crate::SharedLimits>> {
        Some(self.shared.limits.clone())
    }

    fn location(&self) -> String {
        self.shared.location.clone()
    }
}

/// Under a keyring, refuses a payload that is not sealed (see `SqliteStore`).
fn check_sealed<'a>(store: &PostgresStore, payloads: impl IntoIterator<Item = &'a [u8]>) -> Result<(), StoreError> {
    if store.shared.keys.is_none() || payloads.into_iter().all(crate::codec::is_encrypted) {
        return Ok(());
    }
    Err(StoreError::ReadOnly {
        location: store.shared.location.clone(),
        reason: "a plaintext payload was sent to this encrypted store and refused: a store that wraps it must forward `keyring()`".to_owned(),
    })
}

/// A statement whose only interpolations are the store's schema name (checked to be a plain
/// identifier when the store connects) and fixed fragments: values are always bound.
fn safe(sql: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql)
}

fn valid_schema(schema: &str) -> bool {
    let mut chars = schema.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && schema.len() <= 48
}

/// The URL without its password, for messages.
fn redacted_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:[redacted]{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// A sqlx error as the store's error: what happened, where, whether it may pass, what to do.
pub(super) fn pg_error(location: &str, action: &str, error: sqlx::Error) -> StoreError {
    let (retryable, code, advice) = match &error {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let retryable = code.starts_with("08") // connection exception
                || code.starts_with("53") // insufficient resources (disk full, out of memory, too many connections)
                || code.starts_with("57P") // the server is shutting down or restarting
                || code == "40001" // serialization failure
                || code == "40P01"; // deadlock
            let advice = match code.as_str() {
                "53100" => "the database server's disk is full: free space; the sagas writing wait and retry",
                c if c.starts_with("53") => {
                    "the database server is out of a resource: the sagas writing wait and retry"
                }
                c if c.starts_with("08") || c.starts_with("57P") => {
                    "the connection to the database was lost: the sagas writing wait and retry"
                }
                "42501" => "the database user lacks a privilege on the store's schema: grant it",
                _ => "see PostgreSQL's message",
            };
            (retryable, Some(code), advice)
        }
        // Opening the store, nothing waits yet: the caller decides whether to try again.
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed | sqlx::Error::Tls(_)
            if action.starts_with("connecting") =>
        {
            (true, None, "the database cannot be reached: is it running, and is the URL right?")
        }
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed | sqlx::Error::Tls(_) => (
            true,
            None,
            "the database cannot be reached (is it running, and is the URL right?): the sagas writing wait and retry",
        ),
        sqlx::Error::PoolClosed => (false, None, "the store was closed"),
        _ => (false, None, "see the driver's message"),
    };
    let mut backend = BackendError::new(error).location(location).action(action).retryable(retryable).advice(advice);
    if let Some(code) = code {
        backend = backend.code(code);
    }
    StoreError::Backend(backend)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password_in_messages() {
        assert_eq!(redacted_url("postgres://app:s3cret@db:5432/agents"), "postgres://app:[redacted]@db:5432/agents");
        assert_eq!(redacted_url("postgres://app@db/agents"), "postgres://app@db/agents");
        assert_eq!(redacted_url("postgres://db/agents"), "postgres://db/agents");
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(valid_schema("saga") && valid_schema("saga_2"));
        assert!(
            !valid_schema("") && !valid_schema("2saga") && !valid_schema("saga; drop table x") && !valid_schema("a-b")
        );
    }
}
