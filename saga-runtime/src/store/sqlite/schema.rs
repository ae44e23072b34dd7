//! Opening the file: the process lock, what the file holds, the connection's settings, the
//! versioned migrations, the keyring check, and the claims of a process that died.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{SqliteOptions, Synchronous, sqlite_error};
use crate::codec::{self, Sealing};
use crate::id::SagaId;
use crate::store::StoreError;

/// 'SAGA' in ASCII: marks a SQLite file as a saga store.
const APPLICATION_ID: i64 = 0x5341_4741;

/// The newest schema version this build knows.
pub(super) const SCHEMA_VERSION: i64 = 2;

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

/// What the store learned when it opened.
pub(super) struct Opened {
    pub(super) connection: Connection,
    pub(super) lock: File,
    /// Why the store refuses writes, when it does.
    pub(super) read_only: Option<String>,
}

/// Opens the file: takes the process lock, checks what the file holds, sets WAL and the sync
/// level, migrates, checks the keyring, and releases the claims of the process that held the
/// file before (it is gone: the lock says so).
pub(super) fn open(options: &SqliteOptions) -> Result<Opened, StoreError> {
    let path = &options.path;
    let location = path.display().to_string();
    let io = |e: std::io::Error| {
        StoreError::Backend(crate::store::BackendError::new(e).location(location.clone()).action("opening the store"))
    };
    // The lock is taken on a file of its own: closing a second descriptor of the database
    // itself would drop the POSIX locks SQLite holds on it.
    let lock =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(lock_path(path)).map_err(io)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Err(StoreError::Locked { location }),
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    let sql = |e: rusqlite::Error| sqlite_error(path, "opening the store", e);
    let mut connection = Connection::open(path).map_err(sql)?;
    connection.busy_timeout(options.busy_timeout).map_err(sql)?;
    let application_id: i64 = connection.pragma_query_value(None, "application_id", |r| r.get(0)).map_err(sql)?;
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
    // The process holds the file exclusively (the lock above), so SQLite need not take and
    // release its own file locks and shared-memory index locks on every transaction.
    connection.pragma_update(None, "locking_mode", "EXCLUSIVE").map_err(sql)?;
    let mode: String = connection.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).map_err(sql)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::backend(format!("`{location}` cannot use WAL mode (it reported `{mode}`)")));
    }
    let synchronous = match options.synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    connection.pragma_update(None, "synchronous", synchronous).map_err(sql)?;

    let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql)?;
    if version < 1 {
        tx.execute_batch(SCHEMA_1).map_err(sql)?;
    }
    if version < 2 {
        tx.execute_batch(SCHEMA_2).map_err(sql)?;
        chain_existing_journals(&tx).map_err(sql)?;
    }
    if version < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(sql)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID).map_err(sql)?;
    }
    let read_only = check_keys(&tx, options, &location)?;
    // Claims of the process that had the file before this one: it is gone (this process holds
    // the lock), so its sagas are free to be recovered now rather than when its leases end.
    tx.execute("UPDATE sagas SET owner = NULL, lease_until = NULL WHERE owner IS NOT NULL", []).map_err(sql)?;
    tx.commit().map_err(sql)?;
    Ok(Opened { connection, lock, read_only })
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
    if let Some(canary) = check.new_canary {
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
