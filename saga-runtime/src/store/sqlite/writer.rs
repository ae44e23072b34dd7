//! The writer thread: it owns the connection and runs every request in order. Writes queued
//! while a transaction commits go into the next one (group commit), each in a savepoint of its
//! own so that a failed write is rolled back alone, and each caller is answered only after
//! the transaction committed.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

use super::queries::QueryError;
use super::schema::FREE_CLAIMS;
use super::watch::Watch;
use crate::store::StoreError;

/// A read: told whether the store can still be read, then given the connection.
pub(super) type Read = Box<dyn FnOnce(Result<(), StoreError>, &Connection) + Send>;

/// One request to the writer thread.
pub(super) enum Command {
    /// Runs inside the group's transaction.
    Write(Box<dyn WriteJob>),
    /// Runs on the connection, outside any write transaction (or is told why it cannot).
    Read(Read),
}

/// A write: run in a savepoint, then answered with the transaction's fate.
pub(super) trait WriteJob: Send {
    /// Applies the write; an error rolls back its savepoint only.
    fn run(&mut self, connection: &Connection) -> Result<(), StoreError>;
    /// Answers the caller once the transaction committed (or failed to).
    fn answer(self: Box<Self>, committed: Result<(), StoreError>);
    /// About how many bytes it writes.
    fn size(&self) -> usize;
}

/// A write returning `T`.
pub(super) struct Job<T, F> {
    work: Option<F>,
    value: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
    size: usize,
}

impl<T, F> Job<T, F> {
    pub(super) fn new(work: F, reply: oneshot::Sender<Result<T, StoreError>>, size: usize) -> Self {
        Job { work: Some(work), value: None, reply, size }
    }
}

/// Turns a query's error into the store's, with the file and the action in the message.
pub(super) type Classify = std::sync::Arc<dyn Fn(rusqlite::Error) -> StoreError + Send + Sync>;

impl<T: Send, F> WriteJob for Job<T, F>
where
    F: FnOnce(&Connection) -> Result<T, QueryError> + Send,
{
    fn run(&mut self, connection: &Connection) -> Result<(), StoreError> {
        let Some(work) = self.work.take() else { return Ok(()) };
        match work(connection) {
            Ok(value) => {
                self.value = Some(Ok(value));
                Ok(())
            }
            Err(QueryError::Store(error)) => Err(error),
            Err(QueryError::Sql(error)) => Err(StoreError::backend(error)),
        }
    }

    fn answer(self: Box<Self>, committed: Result<(), StoreError>) {
        let Job { value, reply, .. } = *self;
        let result = match (committed, value) {
            (Ok(()), Some(value)) => value,
            (Ok(()), None) => Err(StoreError::backend("the write was not run; this is a bug of saga-runtime")),
            (Err(error), _) => Err(error),
        };
        let _ = reply.send(result);
    }

    fn size(&self) -> usize {
        self.size
    }
}

/// Waits for the next command. A saga's next write usually follows its last one within tens
/// of microseconds (the time its task needs to run the next step), which is shorter than
/// parking and waking this thread: so it first polls, yielding, for a short while. (Measured
/// on the benchmark's one-at-a-time case: about 10% more sagas per second.)
/// While idle, it wakes every [`IDLE_CHECK`] to look at the files (`idle`).
fn next_command(queue: &mpsc::Receiver<Command>, mut idle: impl FnMut()) -> Option<Command> {
    let polling = Instant::now();
    while polling.elapsed() < SPIN {
        match queue.try_recv() {
            Ok(command) => return Some(command),
            Err(mpsc::TryRecvError::Empty) => std::thread::yield_now(),
            Err(mpsc::TryRecvError::Disconnected) => return None,
        }
    }
    loop {
        match queue.recv_timeout(IDLE_CHECK) {
            Ok(command) => return Some(command),
            Err(mpsc::RecvTimeoutError::Timeout) => idle(),
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
        }
    }
}

/// How often an idle writer checks that its files are still where it opened them.
const IDLE_CHECK: Duration = Duration::from_millis(500);

/// How long the writer polls for the next command before it parks.
const SPIN: Duration = Duration::from_micros(200);

/// Most writes grouped into one transaction.
const MAX_GROUP: usize = 1024;

pub(super) struct Writer {
    /// First, so that it closes before the watch's descriptor of the same file (closing any
    /// descriptor of the file drops the POSIX locks SQLite holds on it).
    pub(super) connection: Connection,
    pub(super) watch: Watch,
    /// Keeps the process lock while the writer lives.
    pub(super) _lock: Option<std::fs::File>,
    pub(super) classify: Classify,
    /// Why the store refuses everything: its file was deleted, moved or replaced.
    pub(super) gone: Option<StoreError>,
    /// The previous process's claims are still to be freed (see `schema::open`).
    pub(super) free_claims: bool,
}

impl Writer {
    pub(super) fn run(mut self, queue: mpsc::Receiver<Command>) {
        while let Some(first) = next_command(&queue, || {
            let _ = self.still_there();
        }) {
            let mut writes = Vec::new();
            let mut reads = Vec::new();
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    Command::Write(job) => writes.push(job),
                    Command::Read(read) => reads.push(read),
                }
                if writes.len() + reads.len() < MAX_GROUP {
                    next = queue.try_recv().ok();
                }
            }
            if !writes.is_empty() {
                // A large write commits on its own, after the small ones: one big output does
                // not hold every other saga's checkpoint for the time its pages take to sync.
                let (large, small): (Vec<_>, Vec<_>) = writes.into_iter().partition(|w| w.size() >= LARGE_WRITE);
                if !small.is_empty() {
                    self.write_group(small);
                }
                for write in large {
                    self.write_group(vec![write]);
                }
            }
            for read in reads {
                if let Err(error) = self.still_there() {
                    read(Err(error), &self.connection);
                } else {
                    read(Ok(()), &self.connection);
                }
            }
        }
    }

    /// `Err` once the file was deleted, moved or replaced, from then on. A write-ahead log
    /// deleted under the store is rescued instead: its frames, which this process still holds,
    /// are checkpointed into the database, and a new log is started at its path.
    fn still_there(&mut self) -> Result<(), StoreError> {
        if self._lock.is_none() {
            // A reader: the owner watches the files (and may delete its log when it closes).
            return Ok(());
        }
        if self.gone.is_none() && self.watch.log_is_gone() && !self.watch.database_is_gone() {
            match self.rescue_log() {
                Ok(()) => tracing::warn!(
                    store = %self.watch.location(),
                    "the store's write-ahead log was deleted while the store was open: its contents were checkpointed into the database and a new log started"
                ),
                Err(error) => {
                    tracing::error!(store = %self.watch.location(), %error, "could not rescue the deleted write-ahead log")
                }
            }
        }
        if self.gone.is_none()
            && let Err(error) = self.watch.check()
        {
            tracing::error!(%error, "the saga store's file is gone");
            self.gone = Some(error);
        }
        match &self.gone {
            None => Ok(()),
            Some(StoreError::Gone { location, reason }) => {
                Err(StoreError::Gone { location: location.clone(), reason: reason.clone() })
            }
            Some(other) => Err(StoreError::backend(other.to_string())),
        }
    }

    /// Checkpoints the (deleted) log into the database and starts a new one at its path.
    fn rescue_log(&mut self) -> rusqlite::Result<()> {
        self.connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        let _: String = self.connection.pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get(0))?;
        let _: String = self.connection.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        // The new log exists once something is written to it.
        self.connection.execute("UPDATE meta SET value = value WHERE key = 'store_id'", [])?;
        self.watch.rewatch_log();
        Ok(())
    }

    /// Applies every queued write in one transaction, each in its own savepoint, and answers
    /// each only after the commit, and only while the file is still where the store opened it.
    fn write_group(&mut self, writes: Vec<Box<dyn WriteJob>>) {
        if let Err(error) = self.still_there() {
            return fail_all_with(writes, &error);
        }
        let classify = self.classify.clone();
        let mut tx = match self.connection.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(error) => return fail_all(writes, &error, &classify),
        };
        if self.free_claims {
            match tx.execute(FREE_CLAIMS, []) {
                Ok(_) => self.free_claims = false,
                Err(error) => {
                    drop(tx);
                    return fail_all(writes, &error, &classify);
                }
            }
        }
        let mut results: Vec<(Box<dyn WriteJob>, Result<(), StoreError>)> = Vec::with_capacity(writes.len());
        let mut writes = writes.into_iter();
        while let Some(mut write) = writes.next() {
            // A savepoint is rolled back when dropped without commit: a failed write leaves
            // the others of the group intact.
            let result = match tx.savepoint() {
                Ok(savepoint) => match write.run(&savepoint) {
                    Ok(()) => savepoint.commit().map_err(|e| classify(e)),
                    Err(error) => Err(error),
                },
                Err(error) => Err(classify(error)),
            };
            // Some errors (a full disk, an I/O error) make SQLite roll the whole transaction
            // back: then no write of the group is in it, and each fails with that error.
            if let Err(error) = &result
                && tx.is_autocommit()
            {
                let sql = sql_error_of(error);
                drop(tx);
                let failed = results.into_iter().map(|(w, _)| w).chain(std::iter::once(write)).chain(writes);
                for write in failed {
                    let error = match &sql {
                        Some(sql) => classify(clone_sql_error(sql)),
                        None => StoreError::backend(result.as_ref().err().map_or_else(String::new, |e| e.to_string())),
                    };
                    write.answer(Err(error));
                }
                return;
            }
            results.push((write, result.map_err(|error| reclassify(error, &classify))));
        }
        if let Err(error) = tx.commit() {
            return fail_all(results.into_iter().map(|(w, _)| w).collect(), &error, &classify);
        }
        // Committed: but into the file the path names? Nothing is acknowledged otherwise.
        if let Err(error) = self.still_there() {
            return fail_all_with(results.into_iter().map(|(w, _)| w).collect(), &error);
        }
        for (write, result) in results {
            write.answer(result);
        }
    }
}

fn fail_all_with(writes: Vec<Box<dyn WriteJob>>, error: &StoreError) {
    for write in writes {
        let copy = match error {
            StoreError::Gone { location, reason } => {
                StoreError::Gone { location: location.clone(), reason: reason.clone() }
            }
            other => StoreError::backend(other.to_string()),
        };
        write.answer(Err(copy));
    }
}

/// Writes at least this large (in bytes of rows) commit in a transaction of their own.
const LARGE_WRITE: usize = 1024 * 1024;

/// A SQLite error raised inside a job travels as a generic backend error; give it the store's
/// classification (file, action, advice) now that the writer can.
fn reclassify(error: StoreError, classify: &Classify) -> StoreError {
    match sql_error_of(&error) {
        Some(sql) => classify(clone_sql_error(sql)),
        None => error,
    }
}

/// The SQLite error inside a job's error, if that is what it is.
fn sql_error_of(error: &StoreError) -> Option<&rusqlite::Error> {
    match error {
        StoreError::Backend(backend) => backend.get_ref().downcast_ref::<rusqlite::Error>(),
        _ => None,
    }
}

/// `rusqlite::Error` is not `Clone`: a copy with the same code and message, for each caller
/// of a failed group.
fn clone_sql_error(error: &rusqlite::Error) -> rusqlite::Error {
    match error {
        rusqlite::Error::SqliteFailure(code, message) => rusqlite::Error::SqliteFailure(*code, message.clone()),
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

fn fail_all(writes: Vec<Box<dyn WriteJob>>, error: &rusqlite::Error, classify: &Classify) {
    for write in writes {
        write.answer(Err(classify(clone_sql_error(error))));
    }
}
