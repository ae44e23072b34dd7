//! Group commit on PostgreSQL: the creations and appends of many sagas in flight share one
//! transaction (and one WAL flush). Each statement checks its own saga (sequence number and
//! epoch) and writes nothing on a conflict, without failing the transaction, so one conflict
//! fails only its saga; the notifications of the group are sent with its commit.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{listen, pg_error, queries};
use crate::id::SagaId;
use crate::store::{Checkpoint, Fence, NewSaga, RecordRow, StoreError};

/// Most writes in one transaction.
const MAX_GROUP: usize = 256;

enum Op {
    Create {
        new: NewSaga,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    Append {
        id: SagaId,
        fence: Fence,
        rows: Vec<RecordRow>,
        checkpoint: Checkpoint,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// The queue of writes and the tasks that commit it.
pub(super) struct Writer {
    queue: mpsc::UnboundedSender<Op>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    location: String,
}

impl Drop for Writer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Writer {
    /// `committers` tasks take groups from one queue, each on a connection of its own.
    pub(super) fn start(pool: PgPool, schema: &str, location: &str, committers: usize) -> Writer {
        let (queue, receiver) = mpsc::unbounded_channel();
        let receiver = Arc::new(Mutex::new(receiver));
        let tasks = (0..committers)
            .map(|_| {
                let (pool, receiver) = (pool.clone(), receiver.clone());
                let (schema, location) = (schema.to_owned(), location.to_owned());
                tokio::spawn(async move { commit_groups(pool, receiver, schema, location).await })
            })
            .collect();
        Writer { queue, tasks, location: location.to_owned() }
    }

    /// Creates a saga; `false` when the id exists.
    pub(super) async fn create(&self, new: NewSaga) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Op::Create { new, reply }).map_err(|_| self.stopped())?;
        answer.await.map_err(|_| self.stopped())?
    }

    pub(super) async fn append(
        &self,
        id: SagaId,
        fence: Fence,
        rows: Vec<RecordRow>,
        checkpoint: Checkpoint,
    ) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Op::Append { id, fence, rows, checkpoint, reply }).map_err(|_| self.stopped())?;
        answer.await.map_err(|_| self.stopped())?
    }

    fn stopped(&self) -> StoreError {
        StoreError::Backend(
            crate::store::BackendError::new("the store's writer stopped")
                .location(&self.location)
                .advice("the store was dropped or its runtime shut down; open it again"),
        )
    }
}

/// What one write of a group produced, before the commit decides its fate.
enum Done {
    Create(oneshot::Sender<Result<bool, StoreError>>, Result<bool, StoreError>),
    Append(oneshot::Sender<Result<(), StoreError>>, Result<(), StoreError>),
}

async fn commit_groups(
    pool: PgPool,
    receiver: Arc<Mutex<mpsc::UnboundedReceiver<Op>>>,
    schema: String,
    location: String,
) {
    let channel = listen::channel(&schema);
    loop {
        let mut group = Vec::new();
        {
            let mut receiver = receiver.lock().await;
            match receiver.recv().await {
                Some(op) => group.push(op),
                None => return,
            }
            while group.len() < MAX_GROUP {
                match receiver.try_recv() {
                    Ok(op) => group.push(op),
                    Err(_) => break,
                }
            }
        }
        commit_group(&pool, &schema, &location, &channel, group).await;
    }
}

async fn commit_group(pool: &PgPool, schema: &str, location: &str, channel: &str, group: Vec<Op>) {
    let error = |action: &str, e: sqlx::Error| pg_error(location, action, e);
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(e) => {
            let e = error("writing to the store", e);
            return fail(group, || e.duplicate());
        }
    };
    let mut done = Vec::with_capacity(group.len());
    let mut notices: Vec<String> = Vec::new();
    let mut broken: Option<StoreError> = None;
    for op in group {
        if let Some(first) = &broken {
            // The transaction is aborted: the rest of the group is answered with its error.
            let message = first.to_string();
            let collateral = || {
                StoreError::Backend(
                    crate::store::BackendError::new(format!("another write of the same group failed ({message})"))
                        .location(location)
                        .action("writing to the store")
                        .retryable(true)
                        .advice("the sagas writing wait and retry"),
                )
            };
            match op {
                Op::Create { reply, .. } => done.push(Done::Create(reply, Err(collateral()))),
                Op::Append { reply, .. } => done.push(Done::Append(reply, Err(collateral()))),
            }
            continue;
        }
        match op {
            Op::Create { new, reply } => match queries::create(&mut tx, schema, &new).await {
                Ok(created) => {
                    if created && new.owner.is_none() {
                        notices.push("due".to_owned());
                    }
                    done.push(Done::Create(reply, Ok(created)));
                }
                Err(e) => {
                    let e = error("creating a saga", e);
                    done.push(Done::Create(reply, Err(e.duplicate())));
                    broken = Some(e);
                }
            },
            Op::Append { id, fence, rows, checkpoint, reply } => {
                match queries::append(&mut tx, schema, &id, &fence, &rows, &checkpoint).await {
                    Ok(result) => {
                        if result.is_ok() && checkpoint.due_at_ms.is_none() {
                            notices.push(format!("settled:{id}"));
                        }
                        done.push(Done::Append(reply, result));
                    }
                    Err(e) => {
                        let e = error("appending to a journal", e);
                        done.push(Done::Append(reply, Err(e.duplicate())));
                        broken = Some(e);
                    }
                }
            }
        }
    }
    if broken.is_none()
        && !notices.is_empty()
        && let Err(e) = sqlx::query("SELECT pg_notify($1, payload) FROM UNNEST($2::text[]) AS payload")
            .bind(channel)
            .bind(&notices)
            .execute(&mut *tx)
            .await
    {
        broken = Some(error("notifying the other workers", e));
    }
    let committed = match broken {
        Some(_) => {
            let _ = tx.rollback().await;
            None
        }
        None => tx.commit().await.err().map(|e| error("committing a group of writes", e)),
    };
    for done in done {
        match (done, &committed) {
            (Done::Create(reply, result), None) => {
                let _ = reply.send(result);
            }
            (Done::Append(reply, result), None) => {
                let _ = reply.send(result);
            }
            (Done::Create(reply, _), Some(e)) => {
                let _ = reply.send(Err(e.duplicate()));
            }
            (Done::Append(reply, _), Some(e)) => {
                let _ = reply.send(Err(e.duplicate()));
            }
        }
    }
}

fn fail(group: Vec<Op>, error: impl Fn() -> StoreError) {
    for op in group {
        match op {
            Op::Create { reply, .. } => {
                let _ = reply.send(Err(error()));
            }
            Op::Append { reply, .. } => {
                let _ = reply.send(Err(error()));
            }
        }
    }
}
