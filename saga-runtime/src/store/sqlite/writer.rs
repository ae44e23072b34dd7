//! The writer thread: it owns the connection and runs every request in order. Writes queued
//! while a transaction commits go into the next one (group commit), each in a savepoint of its
//! own so that a failed write is rolled back alone, and each caller is answered only after
//! the transaction committed.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

use super::queries::QueryError;
use crate::store::StoreError;

/// One request to the writer thread.
pub(super) enum Command {
    /// Runs inside the group's transaction.
    Write(Box<dyn WriteJob>),
    /// Runs on the connection, outside any write transaction.
    Read(Box<dyn FnOnce(&Connection) + Send>),
}

/// A write: run in a savepoint, then answered with the transaction's fate.
pub(super) trait WriteJob: Send {
    /// Applies the write; an error rolls back its savepoint only.
    fn run(&mut self, connection: &Connection) -> Result<(), StoreError>;
    /// Answers the caller once the transaction committed (or failed to).
    fn answer(self: Box<Self>, committed: Result<(), StoreError>);
}

/// A write returning `T`.
pub(super) struct Job<T, F> {
    work: Option<F>,
    value: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job<T, F> {
    pub(super) fn new(work: F, reply: oneshot::Sender<Result<T, StoreError>>) -> Self {
        Job { work: Some(work), value: None, reply }
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
}

/// Waits for the next command. A saga's next write usually follows its last one within tens
/// of microseconds (the time its task needs to run the next step), which is shorter than
/// parking and waking this thread: so it first polls, yielding, for a short while. (Measured
/// on the benchmark's one-at-a-time case: about 10% more sagas per second.)
fn next_command(queue: &mpsc::Receiver<Command>) -> Option<Command> {
    let polling = Instant::now();
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

pub(super) struct Writer {
    pub(super) connection: Connection,
    /// Keeps the process lock while the writer lives.
    pub(super) _lock: std::fs::File,
    pub(super) classify: Classify,
}

impl Writer {
    pub(super) fn run(mut self, queue: mpsc::Receiver<Command>) {
        while let Some(first) = next_command(&queue) {
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
                self.write_group(writes);
            }
            for read in reads {
                read(&self.connection);
            }
        }
    }

    /// Applies every queued write in one transaction, each in its own savepoint, and answers
    /// each only after the commit.
    fn write_group(&mut self, writes: Vec<Box<dyn WriteJob>>) {
        let classify = self.classify.clone();
        let mut tx = match self.connection.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(error) => return fail_all(writes, &error, &classify),
        };
        let mut results: Vec<(Box<dyn WriteJob>, Result<(), StoreError>)> = Vec::with_capacity(writes.len());
        for mut write in writes {
            // A savepoint is rolled back when dropped without commit: a failed write leaves
            // the others of the group intact.
            let result = match tx.savepoint() {
                Ok(savepoint) => match write.run(&savepoint) {
                    Ok(()) => savepoint.commit().map_err(|e| classify(e)),
                    Err(error) => Err(reclassify(error, &classify)),
                },
                Err(error) => Err(classify(error)),
            };
            results.push((write, result));
        }
        match tx.commit() {
            Ok(()) => {
                for (write, result) in results {
                    write.answer(result);
                }
            }
            Err(error) => fail_all(results.into_iter().map(|(w, _)| w).collect(), &error, &classify),
        }
    }
}

/// A SQLite error raised inside a job travels as a generic backend error; give it the store's
/// classification (file, action, advice) now that the writer can.
fn reclassify(error: StoreError, classify: &Classify) -> StoreError {
    match error {
        StoreError::Backend(backend) => match backend.get_ref().downcast_ref::<rusqlite::Error>() {
            Some(sql) => classify(clone_sql_error(sql)),
            None => StoreError::Backend(backend),
        },
        other => other,
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
