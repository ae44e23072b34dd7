//! The embedded store: one SQLite file in WAL mode, written by a dedicated thread.
//!
//! Why a thread of its own on rusqlite rather than sqlx: the benchmark
//! (`cargo bench -p saga-runtime --bench sqlite`) measures both clients committing one small
//! row per transaction on this machine, and a dedicated connection also lets the writer group
//! the commits of many sagas in flight into one transaction (group commit): every write that
//! is queued while a transaction commits goes into the next one, each in a savepoint of its
//! own, and each caller is answered only after that transaction committed. With
//! `synchronous = FULL` (the default) a committed checkpoint survives a power loss;
//! `NORMAL` keeps it across a process crash but may lose the last transactions on power loss.
//!
//! The schema is versioned with `PRAGMA user_version` and migrated on open; `PRAGMA
//! application_id` marks the file as a saga store. The process holds an exclusive lock on
//! `<file>.lock` while the store is open, so a second process gets [`StoreError::Locked`]
//! instead of driving the same sagas twice.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::{Checkpoint, CheckpointStore, Created, NewSaga, SagaSummary, StoreError, StoredSaga};
use crate::codec::{self, Keyring};
use crate::id::SagaId;
use crate::journal::{Event, Payload, Record};
use crate::outcome::Status;
use crate::saga::{BoxFuture, Definition};

/// 'SAGA' in ASCII: marks a SQLite file as a saga store.
const APPLICATION_ID: i64 = 0x5341_4741;

/// The migrations, in order; the schema version is the number applied.
const MIGRATIONS: &[&str] = &[
    // 1: sagas and their journals. Payloads (`input`, `body`) are sealed (see `codec`); the
    // name, status, stage, record kinds and step names stay queryable.
    "CREATE TABLE sagas (
        id          TEXT PRIMARY KEY NOT NULL,
        name        TEXT NOT NULL,
        version     INTEGER NOT NULL,
        fingerprint TEXT NOT NULL,
        status      TEXT NOT NULL,
        stage       TEXT NOT NULL,
        input       BLOB NOT NULL,
        records     INTEGER NOT NULL,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX sagas_by_status ON sagas (status, name);
    CREATE TABLE journal (
        saga_id TEXT NOT NULL,
        seq     INTEGER NOT NULL,
        at      INTEGER NOT NULL,
        kind    TEXT NOT NULL,
        step    TEXT,
        body    BLOB NOT NULL,
        PRIMARY KEY (saga_id, seq)
    ) WITHOUT ROWID;",
];

/// How hard SQLite syncs each commit to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
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
}

impl SqliteOptions {
    /// Options for the file at `path`, created if missing.
    pub fn new(path: impl AsRef<Path>) -> Self {
        SqliteOptions {
            path: path.as_ref().to_owned(),
            synchronous: Synchronous::Full,
            keys: None,
            busy_timeout: Duration::from_secs(5),
        }
    }

    /// How hard each commit is synced (default [`Synchronous::Full`]).
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// Encrypts inputs, outputs, effect results and failure messages at rest with the
    /// keyring's current key; rows sealed with its older keys stay readable.
    pub fn encryption(mut self, keys: Keyring) -> Self {
        self.keys = Some(keys);
        self
    }

    /// How long a write waits for a lock held by another connection (default 5 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Opens (creating and migrating if needed) the store.
    pub async fn open(self) -> Result<SqliteStore, StoreError> {
        let (ready, opened) = oneshot::channel();
        let (commands, queue) = mpsc::channel();
        let options = self.clone();
        let thread = std::thread::Builder::new()
            .name("saga-sqlite-writer".to_owned())
            .spawn(move || match open_connection(&options) {
                Ok((connection, lock)) => {
                    let _ = ready.send(Ok(()));
                    Writer { connection, path: options.path, _lock: lock }.run(queue);
                }
                Err(error) => {
                    let _ = ready.send(Err(error));
                }
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the SQLite writer thread: {e}")))?;
        opened
            .await
            .map_err(|_| StoreError::Backend("the SQLite writer thread stopped while opening".to_owned()))??;
        let store = SqliteStore {
            shared: Arc::new(Shared { commands, keys: self.keys, path: self.path, thread: Some(thread) }),
        };
        store.check_keys().await?;
        Ok(store)
    }
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
    keys: Option<Keyring>,
    path: PathBuf,
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
            .finish()
    }
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

    async fn call<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.shared
            .commands
            .send(command(reply))
            .map_err(|_| StoreError::Backend("the SQLite writer thread has stopped".to_owned()))?;
        answer.await.map_err(|_| StoreError::Backend("the SQLite writer thread stopped mid-request".to_owned()))?
    }

    /// With a keyring, opens the newest saga's input: a wrong key is an error when the store
    /// opens, not a surprise on the first read (and new sagas are never sealed with it).
    async fn check_keys(&self) -> Result<(), StoreError> {
        let Some(keys) = &self.shared.keys else { return Ok(()) };
        let Some((id, input)) = self.call(|reply| Command::Probe { reply }).await? else { return Ok(()) };
        match codec::open(Some(keys), &input_aad(&SagaId::new(id.clone())), &input) {
            Ok(_) => Ok(()),
            Err(error) => Err(StoreError::WrongKey {
                path: self.shared.path.clone(),
                saga_id: SagaId::new(id),
                reason: error.to_string(),
            }),
        }
    }

    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        codec::seal(self.shared.keys.as_ref(), aad, plaintext)
    }

    fn encode(&self, saga_id: &SagaId, record: &Record, definition: &Definition) -> Result<RawRecord, StoreError> {
        let kind = record.event.kind();
        let step = record.event.step().and_then(|i| definition.steps().get(i as usize)).map(|s| s.name().to_owned());
        let json = serde_json::to_vec(&record.event)
            .map_err(|e| StoreError::Backend(format!("cannot encode a `{kind}` record: {e}")))?;
        let body = self.seal(&record_aad(saga_id, record.seq, kind, step.as_deref()), &json);
        Ok(RawRecord { seq: record.seq, at: record.at_ms, kind: kind.to_owned(), step, body })
    }

    fn decode(&self, raw: RawSaga) -> Result<StoredSaga, StoreError> {
        let saga_id = SagaId::new(raw.id.clone());
        let unreadable =
            |what: String, reason: String| StoreError::Unreadable { saga_id: saga_id.clone(), what, reason };
        let input = codec::open(self.shared.keys.as_ref(), &input_aad(&saga_id), &raw.input)
            .map_err(|e| unreadable("the input".to_owned(), e.to_string()))?;
        if raw.journal.len() as u64 != raw.records {
            return Err(unreadable(
                "the journal".to_owned(),
                format!(
                    "it holds {} records where the saga row counts {}: records were lost or added outside saga-runtime, so restore the file from a backup",
                    raw.journal.len(),
                    raw.records
                ),
            ));
        }
        let mut records = Vec::with_capacity(raw.journal.len());
        for row in raw.journal {
            let what = || format!("record {} ({})", row.seq, row.kind);
            let json = codec::open(
                self.shared.keys.as_ref(),
                &record_aad(&saga_id, row.seq, &row.kind, row.step.as_deref()),
                &row.body,
            )
            .map_err(|e| unreadable(what(), e.to_string()))?;
            let event: Event = serde_json::from_slice(&json)
                .map_err(|e| unreadable(what(), format!("its contents are not a journal record ({e})")))?;
            if event.kind() != row.kind {
                return Err(unreadable(what(), format!("its contents are a `{}` record", event.kind())));
            }
            records.push(Record { seq: row.seq, at_ms: row.at, event });
        }
        let status = parse_status(&raw.status)
            .ok_or_else(|| unreadable("the saga row".to_owned(), format!("unknown status `{}`", raw.status)))?;
        Ok(StoredSaga {
            summary: SagaSummary {
                id: saga_id.clone(),
                name: raw.name,
                version: raw.version,
                fingerprint: raw.fingerprint,
                status,
                stage: raw.stage,
                records: raw.records,
                created_at_ms: raw.created_at,
                updated_at_ms: raw.updated_at,
            },
            input: Payload::from(input),
            records,
        })
    }
}

fn input_aad(saga_id: &SagaId) -> Vec<u8> {
    format!("saga-input\0{saga_id}").into_bytes()
}

/// The associated data of a journal row: the saga id, the record's position, kind and step,
/// so a sealed row decrypts only where it was written.
fn record_aad(saga_id: &SagaId, seq: u64, kind: &str, step: Option<&str>) -> Vec<u8> {
    format!("saga-journal\0{saga_id}\0{seq}\0{kind}\0{}", step.unwrap_or("")).into_bytes()
}

fn parse_status(text: &str) -> Option<Status> {
    [Status::Running, Status::Completed, Status::Compensated, Status::NeedsHuman]
        .into_iter()
        .find(|s| s.as_str() == text)
}

impl CheckpointStore for SqliteStore {
    fn create<'a>(&'a self, saga: NewSaga) -> BoxFuture<'a, Result<Created, StoreError>> {
        Box::pin(async move {
            let rows = saga
                .records
                .iter()
                .map(|r| self.encode(&saga.id, r, saga.definition))
                .collect::<Result<Vec<_>, _>>()?;
            let new = RawNew {
                id: saga.id.to_string(),
                name: saga.name,
                version: saga.version,
                fingerprint: saga.fingerprint,
                input: self.seal(&input_aad(&saga.id), &saga.input),
                at: saga.records.first().map_or(0, |r| r.at_ms),
                stage: saga.stage,
                rows,
            };
            match self.call(|reply| Command::Create { new, reply }).await? {
                None => Ok(Created::New),
                Some(existing) => Ok(Created::Existing(self.decode(existing)?)),
            }
        })
    }

    fn append<'a>(
        &'a self,
        id: &'a SagaId,
        records: Vec<Record>,
        checkpoint: Checkpoint,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let Some(first) = records.first() else { return Ok(()) };
            let first_seq = first.seq;
            let updated = records.last().map_or(0, |r| r.at_ms);
            let rows =
                records.iter().map(|r| self.encode(id, r, checkpoint.definition)).collect::<Result<Vec<_>, _>>()?;
            let append = RawAppend {
                id: id.to_string(),
                first_seq,
                rows,
                status: checkpoint.status.as_str(),
                stage: checkpoint.stage,
                updated,
            };
            self.call(|reply| Command::Append { append, reply }).await
        })
    }

    fn load<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<StoredSaga>, StoreError>> {
        Box::pin(async move {
            let id_text = id.to_string();
            match self.call(|reply| Command::Load { id: id_text, reply }).await? {
                Some(raw) => Ok(Some(self.decode(raw)?)),
                None => Ok(None),
            }
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<SagaSummary>, StoreError>> {
        Box::pin(async move {
            let rows = self.call(|reply| Command::List { reply }).await?;
            rows.into_iter()
                .map(|row| {
                    let status = parse_status(&row.status).ok_or_else(|| StoreError::Unreadable {
                        saga_id: SagaId::new(row.id.clone()),
                        what: "the saga row".to_owned(),
                        reason: format!("unknown status `{}`", row.status),
                    })?;
                    Ok(SagaSummary {
                        id: SagaId::new(row.id),
                        name: row.name,
                        version: row.version,
                        fingerprint: row.fingerprint,
                        status,
                        stage: row.stage,
                        records: row.records,
                        created_at_ms: row.created_at,
                        updated_at_ms: row.updated_at,
                    })
                })
                .collect()
        })
    }
}

/// A journal row as stored.
struct RawRecord {
    seq: u64,
    at: u64,
    kind: String,
    step: Option<String>,
    body: Vec<u8>,
}

struct RawNew {
    id: String,
    name: String,
    version: u32,
    fingerprint: String,
    input: Vec<u8>,
    at: u64,
    stage: String,
    rows: Vec<RawRecord>,
}

struct RawAppend {
    id: String,
    first_seq: u64,
    rows: Vec<RawRecord>,
    status: &'static str,
    stage: String,
    updated: u64,
}

/// A saga row (with its journal, for `load`).
struct RawSaga {
    id: String,
    name: String,
    version: u32,
    fingerprint: String,
    status: String,
    stage: String,
    input: Vec<u8>,
    records: u64,
    created_at: u64,
    updated_at: u64,
    journal: Vec<RawRecord>,
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Command {
    /// The newest saga's id and sealed input, to check the keyring on open.
    Probe {
        reply: Reply<Option<(String, Vec<u8>)>>,
    },
    Create {
        new: RawNew,
        reply: Reply<Option<RawSaga>>,
    },
    Append {
        append: RawAppend,
        reply: Reply<()>,
    },
    Load {
        id: String,
        reply: Reply<Option<RawSaga>>,
    },
    List {
        reply: Reply<Vec<RawSaga>>,
    },
}

/// Opens the file: takes the process lock, checks what the file holds, sets WAL and the sync
/// level, and migrates.
fn open_connection(options: &SqliteOptions) -> Result<(Connection, File), StoreError> {
    let path = &options.path;
    let io = |e: std::io::Error| StoreError::Backend(format!("cannot open `{}`: {e}", path.display()));
    // The lock is taken on a file of its own: closing a second descriptor of the database
    // itself would drop the POSIX locks SQLite holds on it.
    let lock =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(lock_path(path)).map_err(io)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Err(StoreError::Locked { path: path.clone() }),
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    let sql = |e: rusqlite::Error| sqlite_error(path, e);
    let mut connection = Connection::open(path).map_err(sql)?;
    connection.busy_timeout(options.busy_timeout).map_err(sql)?;
    let application_id: i64 = connection.pragma_query_value(None, "application_id", |r| r.get(0)).map_err(sql)?;
    let version: i64 = connection.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sql)?;
    let tables: i64 = connection.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0)).map_err(sql)?;
    if application_id != 0 && application_id != APPLICATION_ID {
        return Err(StoreError::NotASagaStore {
            path: path.clone(),
            reason: format!("its application id is {application_id:#x}"),
        });
    }
    if application_id == 0 && tables > 0 {
        return Err(StoreError::NotASagaStore {
            path: path.clone(),
            reason: "it holds another application's tables".to_owned(),
        });
    }
    let supported = MIGRATIONS.len() as i64;
    if version > supported {
        return Err(StoreError::NewerSchema { path: path.clone(), found: version, supported });
    }
    // The process holds the file exclusively (the lock above), so SQLite need not take and
    // release its own file locks and shared-memory index locks on every transaction.
    connection.pragma_update(None, "locking_mode", "EXCLUSIVE").map_err(sql)?;
    let mode: String = connection.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).map_err(sql)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!("`{}` cannot use WAL mode (it reported `{mode}`)", path.display())));
    }
    let synchronous = match options.synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    connection.pragma_update(None, "synchronous", synchronous).map_err(sql)?;
    if version < supported {
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql)?;
        for migration in &MIGRATIONS[version as usize..] {
            tx.execute_batch(migration).map_err(sql)?;
        }
        tx.pragma_update(None, "user_version", supported).map_err(sql)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID).map_err(sql)?;
        tx.commit().map_err(sql)?;
    }
    Ok((connection, lock))
}

/// The lock file next to the database: `sagas.db.lock` for `sagas.db`.
fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".lock");
    path.with_file_name(name)
}

fn sqlite_error(path: &Path, error: rusqlite::Error) -> StoreError {
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Locked { path: path.to_owned() },
        Some(ErrorCode::NotADatabase) => StoreError::NotADatabase { path: path.to_owned() },
        Some(ErrorCode::DatabaseCorrupt) => StoreError::Backend(format!(
            "`{}` is corrupted ({error}): restore it from a backup; nothing was changed",
            path.display()
        )),
        _ => StoreError::Backend(format!("SQLite error on `{}`: {error}", path.display())),
    }
}

/// The writer thread: owns the connection and the process lock.
struct Writer {
    connection: Connection,
    path: PathBuf,
    _lock: File,
}

/// Waits for the next command. A saga's next write usually follows its last one within tens
/// of microseconds (the time its task needs to run the next step), which is shorter than
/// parking and waking this thread: so it first polls, yielding, for a short while. (Measured
/// on the benchmark's one-at-a-time case: about 10% more sagas per second.)
fn next_command(queue: &mpsc::Receiver<Command>) -> Option<Command> {
    let polling = std::time::Instant::now();
    while polling.elapsed() < SPIN {
        match queue.try_recv() {
            Ok(command) => return Some(command),
            Err(mpsc::TryRecvError::Empty) => std::thread::yield_now(),
            Err(mpsc::TryRecvError::Disconnected) => return None,
        }
    }
    queue.recv().ok()
}

/// How long the writer polls for the next command before it parks.
const SPIN: Duration = Duration::from_micros(200);

/// Most writes grouped into one transaction.
const MAX_GROUP: usize = 1024;

impl Writer {
    fn run(mut self, queue: mpsc::Receiver<Command>) {
        while let Some(first) = next_command(&queue) {
            let mut writes = Vec::new();
            let mut reads = Vec::new();
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    Command::Create { .. } | Command::Append { .. } => writes.push(command),
                    read => reads.push(read),
                }
                if writes.len() + reads.len() < MAX_GROUP {
                    next = queue.try_recv().ok();
                }
            }
            if !writes.is_empty() {
                self.write_group(writes);
            }
            for read in reads {
                self.read(read);
            }
        }
    }

    /// Applies every queued write in one transaction, each in its own savepoint (a failed
    /// write is rolled back alone), and answers each only after the commit.
    fn write_group(&mut self, writes: Vec<Command>) {
        let path = self.path.clone();
        let sql = |e: rusqlite::Error| sqlite_error(&path, e);
        let mut tx = match self.connection.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(error) => {
                let error = sql(error);
                for write in writes {
                    answer_with(write, || clone_error(&error));
                }
                return;
            }
        };
        let mut answers: Vec<(Command, Result<Option<RawSaga>, StoreError>)> = Vec::with_capacity(writes.len());
        for write in writes {
            // A savepoint is rolled back when dropped without commit: a failed write leaves
            // the others of the group intact.
            let result = tx.savepoint().map_err(sql).and_then(|savepoint| {
                let result = match &write {
                    Command::Create { new, .. } => create(&savepoint, new).map_err(sql),
                    Command::Append { append, .. } => append_rows(&savepoint, append, &path).map(|()| None),
                    _ => unreachable!("only writes are grouped"),
                };
                result.and_then(|value| savepoint.commit().map_err(sql).map(|()| value))
            });
            answers.push((write, result));
        }
        match tx.commit() {
            Ok(()) => {
                for (write, result) in answers {
                    answer(write, result);
                }
            }
            Err(error) => {
                let error = sql(error);
                for (write, _) in answers {
                    answer_with(write, || clone_error(&error));
                }
            }
        }
    }

    fn read(&mut self, read: Command) {
        let path = self.path.clone();
        let sql = |e: rusqlite::Error| sqlite_error(&path, e);
        match read {
            Command::Load { id, reply } => {
                let _ = reply.send(load(&self.connection, &id).map_err(sql));
            }
            Command::List { reply } => {
                let _ = reply.send(list(&self.connection).map_err(sql));
            }
            Command::Probe { reply } => {
                let newest = self
                    .connection
                    .query_row("SELECT id, input FROM sagas ORDER BY created_at DESC, id DESC LIMIT 1", [], |row| {
                        Ok((row.get::<_, String>(0)?, bytes(row, 1)?))
                    })
                    .optional();
                let _ = reply.send(newest.map_err(sql));
            }
            write => answer_with(write, || StoreError::Backend("a write reached the read path".to_owned())),
        }
    }
}

fn clone_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::Locked { path } => StoreError::Locked { path: path.clone() },
        StoreError::NotADatabase { path } => StoreError::NotADatabase { path: path.clone() },
        other => StoreError::Backend(other.to_string()),
    }
}

fn answer(write: Command, result: Result<Option<RawSaga>, StoreError>) {
    match write {
        Command::Create { reply, .. } => {
            let _ = reply.send(result);
        }
        Command::Append { reply, .. } => {
            let _ = reply.send(result.map(drop));
        }
        Command::Load { reply, .. } => {
            let _ = reply.send(result);
        }
        Command::List { reply } => {
            let _ = reply.send(result.map(|_| Vec::new()));
        }
        Command::Probe { reply } => {
            let _ = reply.send(result.map(|_| None));
        }
    }
}

fn answer_with(command: Command, error: impl FnOnce() -> StoreError) {
    answer(command, Err(error()));
}

fn create(connection: &Connection, new: &RawNew) -> rusqlite::Result<Option<RawSaga>> {
    if let Some(existing) = load(connection, &new.id)? {
        return Ok(Some(existing));
    }
    connection
        .prepare_cached(
            "INSERT INTO sagas (id, name, version, fingerprint, status, stage, input, records, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6, ?7, ?8, ?8)",
        )?
        .execute(params![
            new.id,
            new.name,
            new.version,
            new.fingerprint,
            new.stage,
            new.input,
            new.rows.len() as i64,
            new.at as i64
        ])?;
    for row in &new.rows {
        insert_record(connection, &new.id, row)?;
    }
    Ok(None)
}

fn insert_record(connection: &Connection, id: &str, row: &RawRecord) -> rusqlite::Result<()> {
    connection
        .prepare_cached("INSERT INTO journal (saga_id, seq, at, kind, step, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
        .execute(params![id, row.seq as i64, row.at as i64, row.kind, row.step, row.body])?;
    Ok(())
}

fn append_rows(connection: &Connection, append: &RawAppend, path: &Path) -> Result<(), StoreError> {
    let sql = |e: rusqlite::Error| sqlite_error(path, e);
    let changed = connection
        .prepare_cached(
            "UPDATE sagas SET records = records + ?1, stage = ?2, updated_at = ?3 WHERE id = ?4 AND records = ?5",
        )
        .map_err(sql)?
        .execute(params![
            append.rows.len() as i64,
            append.stage,
            append.updated as i64,
            append.id,
            append.first_seq as i64
        ])
        .map_err(sql)?;
    if changed == 1 {
        // A separate statement, so that the status index is written only when the status
        // changes (a handful of times per saga), not on every checkpoint.
        connection
            .prepare_cached("UPDATE sagas SET status = ?1 WHERE id = ?2 AND status <> ?1")
            .map_err(sql)?
            .execute(params![append.status, append.id])
            .map_err(sql)?;
    }
    if changed == 0 {
        let found: Option<i64> = connection
            .prepare_cached("SELECT records FROM sagas WHERE id = ?1")
            .map_err(sql)?
            .query_row([&append.id], |r| r.get(0))
            .optional()
            .map_err(sql)?;
        let saga_id = SagaId::new(append.id.clone());
        return Err(match found {
            None => StoreError::Missing { saga_id },
            Some(found) => StoreError::Conflict { saga_id, expected: append.first_seq, found: found as u64 },
        });
    }
    for row in &append.rows {
        insert_record(connection, &append.id, row).map_err(sql)?;
    }
    Ok(())
}

fn saga_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawSaga> {
    Ok(RawSaga {
        id: row.get(0)?,
        name: row.get(1)?,
        version: row.get(2)?,
        fingerprint: row.get(3)?,
        status: row.get(4)?,
        stage: row.get(5)?,
        input: bytes(row, 6)?,
        records: row.get::<_, i64>(7)? as u64,
        created_at: row.get::<_, i64>(8)? as u64,
        updated_at: row.get::<_, i64>(9)? as u64,
        journal: Vec::new(),
    })
}

/// A payload column as bytes, whatever type an edit of the file left in it.
fn bytes(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Vec<u8>> {
    Ok(row.get_ref(index)?.as_bytes_or_null()?.unwrap_or_default().to_vec())
}

const SAGA_COLUMNS: &str = "id, name, version, fingerprint, status, stage, input, records, created_at, updated_at";

fn load(connection: &Connection, id: &str) -> rusqlite::Result<Option<RawSaga>> {
    let mut saga = match connection
        .prepare_cached(&format!("SELECT {SAGA_COLUMNS} FROM sagas WHERE id = ?1"))?
        .query_row([id], saga_row)
        .optional()?
    {
        Some(saga) => saga,
        None => return Ok(None),
    };
    let mut statement =
        connection.prepare_cached("SELECT seq, at, kind, step, body FROM journal WHERE saga_id = ?1 ORDER BY seq")?;
    let rows = statement.query_map([id], |row| {
        Ok(RawRecord {
            seq: row.get::<_, i64>(0)? as u64,
            at: row.get::<_, i64>(1)? as u64,
            kind: row.get(2)?,
            step: row.get(3)?,
            body: bytes(row, 4)?,
        })
    })?;
    saga.journal = rows.collect::<rusqlite::Result<_>>()?;
    Ok(Some(saga))
}

fn list(connection: &Connection) -> rusqlite::Result<Vec<RawSaga>> {
    // Every column but the input, which a listing does not need.
    let mut statement = connection.prepare_cached(
        "SELECT id, name, version, fingerprint, status, stage, x'', records, created_at, updated_at
         FROM sagas ORDER BY created_at, id",
    )?;
    let rows = statement.query_map([], saga_row)?;
    rows.collect()
}
