//! Opening the store a command reads: a SQLite file next to the worker that owns it (a reader:
//! no lock, no write), or a PostgreSQL database; decrypting with `SAGA_KEY` when given.

use std::fs::{OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use saga_runtime::store::{PostgresStore, SqliteOptions, SqliteStore, StoreError};
use saga_runtime::{CheckpointStore, EncryptionKey, Keyring, Runtime};

/// The store a command works on, and a runtime over it (for reading journals: it drives
/// nothing, it registers no saga type).
pub struct Opened {
    pub store: Arc<dyn CheckpointStore>,
    pub runtime: Runtime,
    /// The SQLite file, when the store is one.
    pub sqlite: Option<PathBuf>,
}

/// `SAGA_KEY` as `<key id>:<64 hex digits>` (or the digits alone, for key id `default`).
pub fn keyring() -> Result<Option<Keyring>, String> {
    let Ok(text) = std::env::var("SAGA_KEY") else { return Ok(None) };
    let (id, hex) = match text.split_once(':') {
        Some((id, hex)) => (id.to_owned(), hex.to_owned()),
        None => ("default".to_owned(), text),
    };
    let key = EncryptionKey::from_hex(id, &hex)
        .map_err(|e| format!("SAGA_KEY cannot be used ({e}): give it as `<key id>:<64 hex digits>`"))?;
    Ok(Some(Keyring::new(key)))
}

fn is_postgres(store: &str) -> bool {
    store.starts_with("postgres://") || store.starts_with("postgresql://")
}

/// Opens the store named by `--store` (or `SAGA_STORE`) to read it.
pub async fn open(store: &str, schema: &str) -> Result<Opened, String> {
    let keys = keyring()?;
    let (store, sqlite): (Arc<dyn CheckpointStore>, Option<PathBuf>) = if is_postgres(store) {
        // An operator waits seconds, not the workers' ten, to learn that the server is away.
        let mut options =
            PostgresStore::options(store).schema(schema).reader().acquire_timeout(std::time::Duration::from_secs(4));
        if let Some(keys) = keys {
            options = options.encryption(keys);
        }
        (Arc::new(options.connect().await.map_err(explain)?), None)
    } else {
        let path = PathBuf::from(store);
        if path.is_dir() {
            return Err(format!(
                "`{store}` is a directory: give the store's file with --store PATH (or SAGA_STORE), such as `{}`",
                path.join("sagas.db").display()
            ));
        }
        if !path.exists() {
            return Err(format!(
                "there is no store at `{store}`: give the file with --store PATH (or SAGA_STORE), or a PostgreSQL URL"
            ));
        }
        let mut options = SqliteOptions::new(&path).reader();
        if let Some(keys) = keys {
            options = options.encryption(keys);
        }
        let opened: SqliteStore = options.open().await.map_err(explain)?;
        (Arc::new(opened), Some(path))
    };
    let runtime = Runtime::builder().shared_store(store.clone()).build();
    Ok(Opened { store, runtime, sqlite })
}

/// A store error, with what to do about it from this tool.
fn explain(error: StoreError) -> String {
    match error {
        StoreError::Locked { location } => format!(
            "`{location}` is held exclusively by the process that owns it (`SqliteOptions::exclusive(true)`): it cannot be read while that process runs; open it without `exclusive`, or stop the process"
        ),
        StoreError::NotASagaStore { location, reason } if reason.contains("holds no saga store") => {
            format!("`{location}`: {reason}; nothing was created")
        }
        other => other.to_string(),
    }
}

/// Whether a process owns the SQLite file now (holds its lock file).
pub fn owned(path: &Path) -> bool {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".lock");
    let Ok(lock) = OpenOptions::new().read(true).write(true).open(path.with_file_name(name)) else { return false };
    match lock.try_lock() {
        Ok(()) => {
            let _ = lock.unlock();
            false
        }
        Err(TryLockError::WouldBlock) => true,
        Err(TryLockError::Error(_)) => false,
    }
}
