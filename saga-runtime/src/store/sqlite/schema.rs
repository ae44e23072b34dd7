//! Opening the file: the process lock, what the file holds, the connection's settings, the
//! versioned migrations, the keyring check, and the claims of a process that died.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::watch::Watch;
use super::{SqliteOptions, Synchronous, sqlite_error};
use crate::codec::{self, Sealing};
use crate::id::SagaId;
use crate::store::StoreError;

/// 'SAGA' in ASCII: marks a SQLite file as a saga store.
const APPLICATION_ID: i64 = 0x5341_4741;

/// The newest schema version this build knows.
pub(super) const SCHEMA_VERSION: i64 = 4;

/// Schema 1: sagas and their journals. Payloads (`input`, `body`) are sealed (see `codec`);
/// the name, status, stage, record kinds and step names stay queryable.
const SCHEMA_1: &str = "CREATE TABLE sagas (
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
    ) WITHOUT ROWID;";

/// Schema 2: ownership (owner, lease, fencing epoch), due times for claims, the hash chain
/// (each row's hash, the saga's head), the epoch that wrote each record, indexes for listings
/// by creation time, and a `meta` table for the store's encryption marker.
const SCHEMA_2: &str = "ALTER TABLE sagas ADD COLUMN head BLOB NOT NULL DEFAULT x'';
    ALTER TABLE sagas ADD COLUMN due_at INTEGER;
    ALTER TABLE sagas ADD COLUMN owner TEXT;
    ALTER TABLE sagas ADD COLUMN lease_until INTEGER;
    ALTER TABLE sagas ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE journal ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE journal ADD COLUMN hash BLOB NOT NULL DEFAULT x'';
    DROP INDEX sagas_by_status;
    CREATE INDEX sagas_by_created ON sagas (created_at, id);
    CREATE INDEX sagas_by_status ON sagas (status, created_at, id);
    CREATE INDEX sagas_by_name ON sagas (name, created_at, id);
    CREATE INDEX sagas_due ON sagas (due_at) WHERE due_at IS NOT NULL;
    CREATE INDEX sagas_held ON sagas (owner) WHERE owner IS NOT NULL;
    CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value BLOB) WITHOUT ROWID;";

/// Schema 3: retention. Tombstones of pruned sagas (id, outcome, input hash: what a run of
/// the same id is answered with), and an index of finished sagas by the time they finished,
/// which is what pruning walks (running and parked sagas are not in it, so it costs nothing
/// until a saga finishes).
const SCHEMA_3: &str = "CREATE TABLE tombstones (
        id          TEXT PRIMARY KEY NOT NULL,
        name        TEXT NOT NULL,
        version     INTEGER NOT NULL,
        fingerprint TEXT NOT NULL,
        status      TEXT NOT NULL,
        input_hash  BLOB NOT NULL,
        head        BLOB NOT NULL,
        created_at  INTEGER NOT NULL,
        finished_at INTEGER NOT NULL,
        pruned_at   INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX tombstones_by_pruned ON tombstones (pruned_at, id);
    CREATE INDEX sagas_finished ON sagas (updated_at, id) WHERE status IN ('completed', 'compensated');";

/// Schema 4: for operators' tools. The definitions of the saga types the runtimes drive (so
/// that a tool without the code can name steps), and requests a tool leaves for the process
/// that owns the file (resume, resolve, cancel, sweep).
const SCHEMA_4: &str = "CREATE TABLE definitions (
        name        TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        version     INTEGER NOT NULL,
        body        TEXT NOT NULL,
        seen_at     INTEGER NOT NULL,
        PRIMARY KEY (name, fingerprint)
    ) WITHOUT ROWID;
    CREATE TABLE requests (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        action       TEXT NOT NULL,
        saga_id      TEXT,
        saga         TEXT,
        fingerprint  TEXT,
        note         TEXT NOT NULL,
        requested_at INTEGER NOT NULL,
        state        TEXT NOT NULL,
        taken_by     TEXT,
        taken_at     INTEGER,
        result       TEXT,
        done_at      INTEGER
    );
    CREATE INDEX requests_open ON requests (id) WHERE state IN ('pending', 'taken');";

/// What the store learned when it opened.
pub(super) struct Opened {
    pub(super) connection: Connection,
    /// The process lock (`None` for a reader).
    pub(super) lock: Option<File>,
    pub(super) watch: Watch,
    /// Why the store refuses writes, when it does.
    pub(super) read_only: Option<String>,
    /// The claims of the previous process could not be freed yet (the disk was full): the
    /// writer frees them with its first write.
    pub(super) free_claims: bool,
}

/// Freeing the claims of the process that had the file before this one: it is gone (this
/// process holds the lock), so its sagas can be recovered now rather than when their leases end.
pub(super) const FREE_CLAIMS: &str = "UPDATE sagas SET owner = NULL, lease_until = NULL WHERE owner IS NOT NULL";

/// Opens the file: takes the process lock, checks that the file is the store that lived here
/// and that it can be written, checks what it holds, sets WAL and the sync level, migrates,
/// checks the keyring, and frees the claims of the process that held the file before.
pub(super) fn open(options: &SqliteOptions) -> Result<Opened, StoreError> {
    let path = &options.path;
    let location = path.display().to_string();
    let io = |action: &str, e: std::io::Error| {
        StoreError::Backend(crate::store::BackendError::new(e).location(location.clone()).action(action.to_owned()))
    };
    // The lock is taken on a file of its own: closing a second descriptor of the database
    // itself would drop the POSIX locks SQLite holds on it. It also remembers which store
    // lives at the path, so that a deleted or moved database is not silently replaced by an
    // empty one.
    let lock_file = lock_path(path);
    let mut lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_file)
        .map_err(|e| unwritable(&location, &lock_file, e).unwrap_or_else(|e| io("creating the lock file", e)))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Err(StoreError::Locked { location }),
        Err(TryLockError::Error(e)) => return Err(io("locking the store", e)),
    }
    let mut remembered = String::new();
    lock.read_to_string(&mut remembered).map_err(|e| io("reading the lock file", e))?;
    let remembered = remembered.trim().strip_prefix("saga-store ").map(str::to_owned);
    if !path.exists()
        && let Some(store_id) = &remembered
    {
        return Err(StoreError::Gone {
            location: location.clone(),
            reason: format!(
                "is missing, but `{}` says a saga store lived there (store {store_id}): the file was deleted or moved, so its sagas would be lost; restore it from a backup, or delete `{}` to start an empty store there",
                lock_file.display(),
                lock_file.display()
            ),
        });
    }
    check_writable(path, &location)?;

    let sql = |e: rusqlite::Error| sqlite_error(path, "opening the store", e);
    let mut connection = Connection::open(path).map_err(sql)?;
    connection.busy_timeout(options.busy_timeout).map_err(sql)?;
    // First of all, before any read. By default the file is shared with readers (the `saga`
    // CLI, `SqliteOptions::reader`): SQLite keeps the log's index in a `-shm` file. With
    // `exclusive(true)`, or when that file cannot be made (a full disk), the process holds the
    // file alone and keeps the index in memory.
    if options.exclusive {
        connection.pragma_update(None, "locking_mode", "EXCLUSIVE").map_err(sql)?;
    }
    let application_id: i64 = match connection.pragma_query_value(None, "application_id", |r| r.get(0)) {
        Ok(id) => id,
        Err(error) if !options.exclusive && is_transient(&error) => {
            tracing::warn!(store = %location, %error, "cannot share the file with readers (the disk may be full): opening it exclusively");
            drop(connection);
            connection = Connection::open(path).map_err(sql)?;
            connection.busy_timeout(options.busy_timeout).map_err(sql)?;
            connection.pragma_update(None, "locking_mode", "EXCLUSIVE").map_err(sql)?;
            connection.pragma_query_value(None, "application_id", |r| r.get(0)).map_err(sql)?
        }
        Err(error) => return Err(sql(error)),
    };
    let version: i64 = connection.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sql)?;
    let tables: i64 = connection.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0)).map_err(sql)?;
    if application_id != 0 && application_id != APPLICATION_ID {
        return Err(StoreError::NotASagaStore {
            location,
            reason: format!("its application id is {application_id:#x}"),
        });
    }
    if application_id == 0 && tables > 0 {
        return Err(StoreError::NotASagaStore { location, reason: "it holds another application's tables".to_owned() });
    }
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema { location, found: version, supported: SCHEMA_VERSION });
    }
    if tables == 0 {
        // A new file: pages freed by pruning can be given back to the file system a few at a
        // time (`reclaim`). This can only be chosen before the first table exists; an older
        // file keeps reusing its free pages, and `SqliteStore::compact` switches it over.
        connection.pragma_update(None, "auto_vacuum", "INCREMENTAL").map_err(sql)?;
    }
    let mode: String = connection.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).map_err(sql)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::backend(format!("`{location}` cannot use WAL mode (it reported `{mode}`)")));
    }
    let synchronous = match options.synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    connection.pragma_update(None, "synchronous", synchronous).map_err(sql)?;
    // After a checkpoint, the log is cut back to this size instead of staying at its largest
    // (one 100 MB output would otherwise keep a 100 MB log for good).
    connection.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT).map_err(sql)?;
    if let Some(max_size) = options.max_size {
        set_max_size(&connection, max_size).map_err(sql)?;
    }

    let migrate = |e: rusqlite::Error| sqlite_error(path, "migrating the store to this version of saga-runtime", e);
    // Deferred: a store that needs no migration, no key check and no id is opened without a
    // single write, so a worker starts (to read, and to recover once space returns) on a full
    // disk.
    let tx = connection.transaction_with_behavior(TransactionBehavior::Deferred).map_err(migrate)?;
    if version < 1 {
        tx.execute_batch(SCHEMA_1).map_err(migrate)?;
    }
    if version < 2 {
        tx.execute_batch(SCHEMA_2).map_err(migrate)?;
        chain_existing_journals(&tx).map_err(migrate)?;
    }
    if version < 3 {
        tx.execute_batch(SCHEMA_3).map_err(migrate)?;
    }
    if version < 4 {
        tx.execute_batch(SCHEMA_4).map_err(migrate)?;
    }
    if version < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(migrate)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID).map_err(migrate)?;
    }
    let read_only = check_keys(&tx, options, &location)?;
    let store_id = store_id(&tx).map_err(sql)?;
    tx.commit().map_err(migrate)?;
    match &remembered {
        Some(remembered) if *remembered != store_id => {
            return Err(StoreError::Gone {
                location,
                reason: format!(
                    "is store {store_id}, but `{}` says store {remembered} lived there: the file was replaced; if that is intended, delete `{}` and open it again",
                    lock_file.display(),
                    lock_file.display()
                ),
            });
        }
        Some(_) => {}
        None => {
            lock.set_len(0)
                .and_then(|()| lock.write_all(format!("saga-store {store_id}\n").as_bytes()))
                .map_err(|e| io("writing the lock file", e))?;
        }
    }
    // A full disk must not keep a worker from starting (to read, and to recover once space
    // returns): if this write fails for that reason, the writer does it with its first write.
    let free_claims = match connection.execute(FREE_CLAIMS, []) {
        Ok(_) => false,
        Err(error) if is_transient(&error) => {
            tracing::warn!(store = %location, %error, "could not free the previous process's claims yet; the first write will");
            true
        }
        Err(error) => return Err(sql(error)),
    };
    let watch = Watch::new(path).map_err(|e| io("watching the database file", e))?;
    Ok(Opened { connection, lock: Some(lock), watch, read_only, free_claims })
}

/// Opens the file to read it while another process may own it (`SqliteOptions::reader`): no
/// process lock, a read-only connection, no migration and no write of any kind. The owner must
/// share the file with readers (its default), and the file must be of this version's schema.
pub(super) fn open_reader(options: &SqliteOptions) -> Result<Opened, StoreError> {
    let path = &options.path;
    let location = path.display().to_string();
    if !path.exists() {
        return Err(StoreError::backend(format!(
            "`{location}` does not exist: check the path (a saga store is created by the first runtime that opens it)"
        )));
    }
    let sql = |e: rusqlite::Error| sqlite_error(path, "opening the store to read it", e);
    let connection = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql)?;
    connection.busy_timeout(options.busy_timeout).map_err(sql)?;
    let version = match connection.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0)) {
        Ok(version) => version,
        Err(error) if error.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
            return Err(StoreError::Locked { location });
        }
        Err(error) => return Err(sql(error)),
    };
    let application_id: i64 = connection.pragma_query_value(None, "application_id", |r| r.get(0)).map_err(sql)?;
    if application_id != APPLICATION_ID {
        return Err(StoreError::NotASagaStore {
            location,
            reason: format!("its application id is {application_id:#x}, not a saga store's"),
        });
    }
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema { location, found: version, supported: SCHEMA_VERSION });
    }
    if version < SCHEMA_VERSION {
        return Err(StoreError::backend(format!(
            "`{location}` has schema version {version}, older than version {SCHEMA_VERSION} of this build: a reader changes nothing, so open it once with a runtime of this version (which migrates it), then read it"
        )));
    }
    let read_only = check_keys(&connection, options, &location)?.or_else(|| {
        Some("it was opened to read (`SqliteOptions::reader`): writes go through the process that owns it".to_owned())
    });
    let watch = Watch::new(path).map_err(|e| {
        StoreError::Backend(
            crate::store::BackendError::new(e).location(location.clone()).action("watching the database file"),
        )
    })?;
    Ok(Opened { connection, lock: None, watch, read_only, free_claims: false })
}

/// The most bytes the write-ahead log keeps after a checkpoint.
const JOURNAL_SIZE_LIMIT: i64 = 4 * 1024 * 1024;

/// Caps the database at `bytes` (rounded down to whole pages): writes past it fail as on a
/// full disk, and wait.
pub(super) fn set_max_size(connection: &Connection, bytes: u64) -> rusqlite::Result<()> {
    let page_size: i64 = connection.pragma_query_value(None, "page_size", |r| r.get(0))?;
    let pages = (bytes / page_size.max(512) as u64).max(1) as i64;
    connection.pragma_update(None, "max_page_count", pages)
}

/// Whether an error may pass by itself (a full disk, an I/O error, a busy file).
pub(super) fn is_transient(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::SystemIoFailure | rusqlite::ErrorCode::DatabaseBusy)
    )
}

/// The store's own id, made when the file is created.
fn store_id(tx: &Connection) -> rusqlite::Result<String> {
    let id: Option<Vec<u8>> =
        tx.query_row("SELECT value FROM meta WHERE key = 'store_id'", [], |r| r.get(0)).optional()?;
    match id.and_then(|id| String::from_utf8(id).ok()) {
        Some(id) => Ok(id),
        None => {
            let id = uuid::Uuid::now_v7().to_string();
            tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('store_id', ?1)", [id.as_bytes()])?;
            Ok(id)
        }
    }
}

/// Refuses a database file or directory that cannot be written, before SQLite accepts it and
/// every saga then fails on its first write.
fn check_writable(path: &Path, location: &str) -> Result<(), StoreError> {
    if path.exists()
        && let Err(error) = OpenOptions::new().read(true).write(true).open(path)
    {
        return Err(unwritable(location, path, error).unwrap_or_else(StoreError::backend));
    }
    // The directory must take the write-ahead log (`-wal`), which SQLite creates on the first
    // write: try a file of our own there.
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let probe = dir.join(format!(
        ".{}.probe-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("saga"),
        std::process::id()
    ));
    match OpenOptions::new().write(true).create(true).truncate(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(error) => Err(unwritable(location, dir, error).unwrap_or_else(StoreError::backend)),
    }
}

/// A clear refusal when `error` says `file` cannot be written; the error back otherwise.
fn unwritable(location: &str, file: &Path, error: std::io::Error) -> Result<StoreError, std::io::Error> {
    const EPERM: i32 = 1;
    const EACCES: i32 = 13;
    const EROFS: i32 = 30;
    // A file that could not be created names its directory.
    let file = if file.exists() {
        file
    } else {
        file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
    };
    let what = if file.is_dir() { "the directory" } else { "the file" };
    let file = file.display();
    let reason = match error.raw_os_error() {
        Some(EROFS) => format!("{what} `{file}` is on a read-only file system: mount it read-write, or move the store"),
        Some(EPERM) => format!(
            "{what} `{file}` cannot be written even by this user (it is probably immutable: `lsattr` shows an `i`): remove the flag with `chattr -i`"
        ),
        Some(EACCES) => format!(
            "{what} `{file}` is not writable by this user (the store also needs its directory for `-wal` and `.lock` files): fix its permissions"
        ),
        _ => return Err(error),
    };
    Ok(StoreError::ReadOnly { location: location.to_owned(), reason })
}

/// Runs the keyring check of `codec` against the file's marker, and marks the file.
fn check_keys(tx: &Connection, options: &SqliteOptions, location: &str) -> Result<Option<String>, StoreError> {
    let sql = |e: rusqlite::Error| sqlite_error(&options.path, "checking the keyring", e);
    let meta = |key: &str| -> Result<Option<Vec<u8>>, StoreError> {
        tx.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional().map_err(sql)
    };
    let sealed = meta("sealed")?.is_some_and(|v| v == b"1");
    let canary = meta("key_check")?;
    let sample: Option<(String, Vec<u8>)> = tx
        .query_row("SELECT id, input FROM sagas ORDER BY created_at DESC, id DESC LIMIT 1", [], |row| {
            Ok((row.get(0)?, row.get_ref(1)?.as_bytes_or_null()?.unwrap_or_default().to_vec()))
        })
        .optional()
        .map_err(sql)?;
    let sample_id = sample.as_ref().map(|(id, _)| SagaId::new(id.clone()));
    let sealing = Sealing {
        sealed,
        canary: canary.as_deref(),
        sample: sample_id.as_ref().zip(sample.as_ref().map(|(_, input)| input.as_slice())),
    };
    let check = codec::check_keys(location, options.keyring(), sealing)?;
    if let Some(canary) = check.new_canary.filter(|_| !options.reader) {
        tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('sealed', x'31'), ('key_check', ?1)", [canary])
            .map_err(sql)?;
    }
    Ok(check.read_only)
}

/// A journal row as schema 1 stored it: `(seq, at, kind, step, body)`.
type RowV1 = (i64, i64, String, Option<String>, Vec<u8>);

/// The migration to schema 2: every existing journal gets its hash chain (over the rows as
/// stored, so no key is needed), its head, and its due time; a file of sealed sagas is marked.
fn chain_existing_journals(tx: &Connection) -> rusqlite::Result<()> {
    #[allow(clippy::type_complexity)]
    let sagas: Vec<(String, String, u32, String, Vec<u8>, String)> = {
        let mut statement = tx.prepare("SELECT id, name, version, fingerprint, input, status FROM sagas")?;
        let rows = statement.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get_ref(4)?.as_bytes_or_null()?.unwrap_or_default().to_vec(),
                r.get(5)?,
            ))
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut sealed = false;
    for (id, name, version, fingerprint, input, status) in sagas {
        sealed |= codec::is_encrypted(&input);
        let mut prev = codec::genesis(&SagaId::new(id.clone()), &name, version, &fingerprint, &input);
        let rows: Vec<RowV1> = {
            let mut statement =
                tx.prepare("SELECT seq, at, kind, step, body FROM journal WHERE saga_id = ?1 ORDER BY seq")?;
            let rows = statement.query_map([&id], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get_ref(4)?.as_bytes_or_null()?.unwrap_or_default().to_vec(),
                ))
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut last_kind = String::new();
        for (seq, at, kind, step, body) in &rows {
            prev = codec::link(&prev, *seq as u64, *at as u64, 0, kind, step.as_deref(), body);
            tx.execute("UPDATE journal SET hash = ?1 WHERE saga_id = ?2 AND seq = ?3", params![&prev[..], &id, seq])?;
            last_kind.clone_from(kind);
        }
        // A running saga has work to do now; a parked one only until its page is on record.
        let due: Option<i64> = match status.as_str() {
            "running" => Some(0),
            "needs_human" if last_kind != "paged" => Some(0),
            _ => None,
        };
        tx.execute("UPDATE sagas SET head = ?1, due_at = ?2 WHERE id = ?3", params![&prev[..], due, &id])?;
    }
    if sealed {
        tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('sealed', x'31')", [])?;
    }
    Ok(())
}

/// The lock file next to the database: `sagas.db.lock` for `sagas.db`.
fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".lock");
    path.with_file_name(name)
}
