//! Group commit on PostgreSQL: the creations and appends of many sagas in flight are written
//! by one statement each kind (arrays of every saga's rows, `UNNEST`ed), so a group costs one
//! or two round trips and one WAL flush whatever its size. Each saga's append is still checked
//! on its own in the statement (sequence number and epoch): a conflict writes nothing for that
//! saga, fails only it, and never aborts the group. The notifications of the group are sent by
//! the same statements, so they go out with its commit.

use std::collections::HashSet;
use std::sync::Arc;

use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, Row};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{listen, pg_error, queries, safe};
use crate::id::SagaId;
use crate::store::{Checkpoint, Fence, NewSaga, RecordRow, StoreError};

/// Most writes in one group.
const MAX_GROUP: usize = 256;

enum Op {
    Create { new: NewSaga, reply: oneshot::Sender<Result<bool, StoreError>> },
    Append(Append),
}

struct Append {
    id: SagaId,
    fence: Fence,
    rows: Vec<RecordRow>,
    checkpoint: Checkpoint,
    reply: oneshot::Sender<Result<(), StoreError>>,
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
    /// `committers` tasks take groups from one queue, each on a connection of its own (outside
    /// the pool, so that reads never wait behind writes nor writes behind reads).
    ///
    /// The committers' statements find every saga by its primary key. Their connections are
    /// told so (no sequential scans, no hash or merge joins): a plan cached while the table was
    /// small, or before a bulk load was analyzed, would otherwise scan the whole table on every
    /// write until the next `ANALYZE`. With that settled, the plan is made once per connection
    /// (a custom plan per write would cost more than the write).
    pub(super) fn start(
        connect: &PgConnectOptions,
        timeout: Duration,
        schema: &str,
        location: &str,
        committers: usize,
    ) -> Writer {
        let connect = connect.clone().options([
            ("enable_seqscan", "off"),
            ("enable_hashjoin", "off"),
            ("enable_mergejoin", "off"),
            ("plan_cache_mode", "force_generic_plan"),
        ]);
        let (queue, receiver) = mpsc::unbounded_channel();
        let receiver = Arc::new(Mutex::new(receiver));
        let tasks = (0..committers)
            .map(|_| {
                let (connect, receiver) = (connect.clone(), receiver.clone());
                let (schema, location) = (schema.to_owned(), location.to_owned());
                tokio::spawn(async move { commit_groups(connect, timeout, receiver, schema, location).await })
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
        self.queue.send(Op::Append(Append { id, fence, rows, checkpoint, reply })).map_err(|_| self.stopped())?;
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

async fn commit_groups(
    connect: PgConnectOptions,
    timeout: Duration,
    receiver: Arc<Mutex<mpsc::UnboundedReceiver<Op>>>,
    schema: String,
    location: String,
) {
    let channel = listen::channel(&schema);
    let mut held_over: Vec<Op> = Vec::new();
    // The committer keeps its connection between groups; one that failed is closed and
    // replaced by the next group.
    let mut connection: Option<PgConnection> = None;
    loop {
        let mut group = std::mem::take(&mut held_over);
        // Writes held over go out without waiting for the queue: another committer may be
        // parked on it, waiting for new writes that never come.
        let receiver = match group.is_empty() {
            true => Some(receiver.lock().await),
            false => receiver.try_lock().ok(),
        };
        if let Some(mut receiver) = receiver {
            if group.is_empty() {
                match receiver.recv().await {
                    Some(op) => group.push(op),
                    None => return,
                }
            }
            while group.len() < MAX_GROUP {
                match receiver.try_recv() {
                    Ok(op) => group.push(op),
                    Err(_) => break,
                }
            }
        }
        // One write per saga in a group: a second one (only a zombie racing its successor can
        // make one) waits for the next group, where it meets the first one's verdict.
        let mut sagas = HashSet::new();
        let (group, later): (Vec<Op>, Vec<Op>) = group.into_iter().partition(|op| match op {
            Op::Create { new, .. } => sagas.insert(new.id.clone()),
            Op::Append(append) => sagas.insert(append.id.clone()),
        });
        held_over = later;
        commit_group(&connect, timeout, &mut connection, &schema, &location, &channel, group).await;
    }
}

/// Commits one group on `held` (connected when empty; dropped when it fails) and answers every
/// write of it.
///
/// A connection lost before or during the group (the server restarted, an idle connection
/// was terminated) is replaced and the group tried once more at once: each write's verdict is
/// then checked against the journal (a write that did land the first time is recognised as
/// this one, by its rows' hashes), so a lost connection costs the sagas nothing.
async fn commit_group(
    connect: &PgConnectOptions,
    timeout: Duration,
    held: &mut Option<PgConnection>,
    schema: &str,
    location: &str,
    channel: &str,
    group: Vec<Op>,
) {
    let mut creates = Vec::new();
    let mut appends = Vec::new();
    for op in group {
        match op {
            Op::Create { new, reply } => creates.push((new, reply)),
            Op::Append(append) => appends.push(append),
        }
    }
    let mut tries = 0;
    let (created, advanced) = loop {
        tries += 1;
        if held.is_none() {
            let connected = match tokio::time::timeout(timeout, connect.connect()).await {
                Ok(connected) => connected,
                Err(_) => Err(sqlx::Error::PoolTimedOut),
            };
            match connected {
                Ok(connection) => *held = Some(connection),
                Err(e) => {
                    fail(creates, appends, &pg_error(location, "connecting to write", e));
                    return;
                }
            }
        }
        let Some(connection) = held.as_mut() else { return };
        match write_group(connection, schema, channel, &creates, &appends).await {
            Ok(sets) => break sets,
            Err(e) => {
                let lost = lost_connection(&e);
                if lost && let Some(broken) = held.take() {
                    let _ = broken.close().await;
                }
                if lost && tries == 1 {
                    continue;
                }
                fail(creates, appends, &pg_error(location, "writing a group of journal records", e));
                return;
            }
        }
    };
    let Some(connection) = held.as_mut() else { return };
    let error = |action: &str, e: sqlx::Error| pg_error(location, action, e);
    for (new, reply) in creates {
        let result = if created.contains(new.id.as_str()) {
            Ok(true)
        } else {
            // It exists: made by this very write before a lost connection, or by someone else.
            queries::already_created(connection, schema, &new).await.map_err(|e| error("creating a saga", e))
        };
        let _ = reply.send(result);
    }
    for append in appends {
        let result = if advanced.contains(append.id.as_str()) {
            Ok(())
        } else {
            // Nothing was written for it: say why (a rare path, on its own round trip).
            match queries::why_not_appended(
                connection,
                schema,
                &append.id,
                &append.fence,
                &append.rows,
                &append.checkpoint,
            )
            .await
            {
                Ok(verdict) => verdict,
                Err(e) => Err(error("appending to a journal", e)),
            }
        };
        let _ = append.reply.send(result);
    }
}

/// Whether the connection itself failed (as opposed to a statement).
fn lost_connection(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}

/// Writes the group: one statement per kind of write, in a transaction when there are both.
/// Returns the ids created and the ids advanced.
async fn write_group(
    connection: &mut PgConnection,
    schema: &str,
    channel: &str,
    creates: &[(NewSaga, oneshot::Sender<Result<bool, StoreError>>)],
    appends: &[Append],
) -> sqlx::Result<(HashSet<String>, HashSet<String>)> {
    let both = !creates.is_empty() && !appends.is_empty();
    if both {
        sqlx::query("BEGIN").execute(&mut *connection).await?;
    }
    let written = async {
        let created = match creates.is_empty() {
            true => HashSet::new(),
            false => create_all(connection, schema, channel, creates).await?,
        };
        let advanced = match appends.is_empty() {
            true => HashSet::new(),
            false => append_all(connection, schema, channel, appends).await?,
        };
        Ok::<_, sqlx::Error>((created, advanced))
    }
    .await;
    match written {
        Ok(sets) => {
            if both {
                sqlx::query("COMMIT").execute(&mut *connection).await?;
            }
            Ok(sets)
        }
        Err(e) => {
            if both {
                let _ = sqlx::query("ROLLBACK").execute(&mut *connection).await;
            }
            Err(e)
        }
    }
}

fn fail(creates: Vec<(NewSaga, oneshot::Sender<Result<bool, StoreError>>)>, appends: Vec<Append>, error: &StoreError) {
    for (_, reply) in creates {
        let _ = reply.send(Err(error.duplicate()));
    }
    for append in appends {
        let _ = append.reply.send(Err(error.duplicate()));
    }
}

/// Every row of a group, by column, for one `UNNEST`.
#[derive(Default)]
struct Rows {
    saga: Vec<String>,
    seq: Vec<i64>,
    at: Vec<i64>,
    epoch: Vec<i64>,
    kind: Vec<String>,
    step: Vec<Option<String>>,
    body: Vec<Vec<u8>>,
    hash: Vec<Vec<u8>>,
}

impl Rows {
    fn push(&mut self, saga: &SagaId, rows: &[RecordRow]) {
        for row in rows {
            self.saga.push(saga.as_str().to_owned());
            self.seq.push(row.seq as i64);
            self.at.push(row.at_ms as i64);
            self.epoch.push(row.epoch as i64);
            self.kind.push(row.kind.to_string());
            self.step.push(row.step.as_ref().map(|s| s.to_string()));
            self.body.push(row.body.clone());
            self.hash.push(row.hash.to_vec());
        }
    }
}

/// The saga rows of a group of creations, by column.
#[derive(Default)]
struct NewSagaColumns {
    id: Vec<String>,
    name: Vec<String>,
    version: Vec<i32>,
    fingerprint: Vec<String>,
    status: Vec<String>,
    stage: Vec<String>,
    input: Vec<Vec<u8>>,
    records: Vec<i64>,
    head: Vec<Vec<u8>>,
    created_at: Vec<i64>,
    updated_at: Vec<i64>,
    due_at: Vec<Option<i64>>,
    owner: Vec<Option<String>>,
    lease_until: Vec<Option<i64>>,
    epoch: Vec<i64>,
}

impl NewSagaColumns {
    fn push(&mut self, new: &NewSaga) {
        self.id.push(new.id.as_str().to_owned());
        self.name.push(new.name.clone());
        self.version.push(new.version as i32);
        self.fingerprint.push(new.fingerprint.clone());
        self.status.push(new.checkpoint.status.as_str().to_owned());
        self.stage.push(new.checkpoint.stage.clone());
        self.input.push(new.input.clone());
        self.records.push(new.records.len() as i64);
        self.head.push(new.checkpoint.head.to_vec());
        self.created_at.push(new.records.first().map_or(new.checkpoint.at_ms, |r| r.at_ms) as i64);
        self.updated_at.push(new.checkpoint.at_ms as i64);
        self.due_at.push(new.checkpoint.due_at_ms.map(|t| t as i64));
        self.owner.push(new.owner.clone());
        // An enqueued saga (no owner) has no lease and epoch 0: its first claim makes it 1.
        self.lease_until.push(new.owner.as_ref().map(|_| new.lease_until_ms as i64));
        self.epoch.push(i64::from(new.owner.is_some()));
    }
}

/// The checkpoints of a group of appends, by column.
#[derive(Default)]
struct AppendColumns {
    id: Vec<String>,
    /// The sequence number of each append's first row: the journal's length it expects.
    first: Vec<i64>,
    epoch: Vec<i64>,
    count: Vec<i64>,
    stage: Vec<String>,
    at: Vec<i64>,
    head: Vec<Vec<u8>>,
    status: Vec<String>,
    due: Vec<Option<i64>>,
}

impl AppendColumns {
    fn push(&mut self, append: &Append) {
        self.id.push(append.id.as_str().to_owned());
        self.first.push(append.rows.first().map_or(0, |r| r.seq) as i64);
        self.epoch.push(append.fence.epoch as i64);
        self.count.push(append.rows.len() as i64);
        self.stage.push(append.checkpoint.stage.clone());
        self.at.push(append.checkpoint.at_ms as i64);
        self.head.push(append.checkpoint.head.to_vec());
        self.status.push(append.checkpoint.status.as_str().to_owned());
        self.due.push(append.checkpoint.due_at_ms.map(|t| t as i64));
    }
}

const JOURNAL_ROWS: &str =
    "UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::bytea[], $8::bytea[])
    AS r(saga_id, seq, at, epoch, kind, step, body, hash)";

/// Creates every saga of the group that does not exist yet (nor was pruned: its tombstone
/// keeps the id); returns the ids created. An
/// enqueued saga (no owner) is announced to the workers.
async fn create_all(
    connection: &mut PgConnection,
    schema: &str,
    channel: &str,
    creates: &[(NewSaga, oneshot::Sender<Result<bool, StoreError>>)],
) -> sqlx::Result<HashSet<String>> {
    let mut rows = Rows::default();
    let mut sagas = NewSagaColumns::default();
    for (new, _) in creates {
        rows.push(&new.id, &new.records);
        sagas.push(new);
    }
    let sql = format!(
        "WITH created AS (
            INSERT INTO {schema}.sagas (id, name, version, fingerprint, status, stage, input, records, head, created_at, updated_at, due_at, owner, lease_until, epoch)
            SELECT * FROM UNNEST($9::text[], $10::text[], $11::int[], $12::text[], $13::text[], $14::text[], $15::bytea[],
                                 $16::bigint[], $17::bytea[], $18::bigint[], $19::bigint[], $20::bigint[], $21::text[], $22::bigint[], $23::bigint[])
                AS n(id, name, version, fingerprint, status, stage, input, records, head, created_at, updated_at, due_at, owner, lease_until, epoch)
            WHERE NOT EXISTS (SELECT 1 FROM {schema}.tombstones t WHERE t.id = n.id)
            ON CONFLICT (id) DO NOTHING
            RETURNING id, owner
        ),
        journal AS (
            INSERT INTO {schema}.journal (saga_id, seq, at, epoch, kind, step, body, hash)
            SELECT * FROM {JOURNAL_ROWS} WHERE r.saga_id IN (SELECT id FROM created)
        ),
        announced AS (SELECT pg_notify($24, 'due') FROM (SELECT 1 FROM created WHERE owner IS NULL LIMIT 1) due)
        SELECT id, (SELECT count(*) FROM announced) FROM created"
    );
    let created = sqlx::query(safe(sql))
        .bind(&rows.saga)
        .bind(&rows.seq)
        .bind(&rows.at)
        .bind(&rows.epoch)
        .bind(&rows.kind)
        .bind(&rows.step)
        .bind(&rows.body)
        .bind(&rows.hash)
        .bind(&sagas.id)
        .bind(&sagas.name)
        .bind(&sagas.version)
        .bind(&sagas.fingerprint)
        .bind(&sagas.status)
        .bind(&sagas.stage)
        .bind(&sagas.input)
        .bind(&sagas.records)
        .bind(&sagas.head)
        .bind(&sagas.created_at)
        .bind(&sagas.updated_at)
        .bind(&sagas.due_at)
        .bind(&sagas.owner)
        .bind(&sagas.lease_until)
        .bind(&sagas.epoch)
        .bind(channel)
        .fetch_all(&mut *connection)
        .await?;
    Ok(created.iter().map(|row| row.get::<String, _>(0)).collect())
}

/// Appends the records of every saga of the group whose journal length and epoch are what its
/// writer expects, with their checkpoints; returns the ids advanced. A saga settled by its
/// append is held by nobody, and announced.
async fn append_all(
    connection: &mut PgConnection,
    schema: &str,
    channel: &str,
    appends: &[Append],
) -> sqlx::Result<HashSet<String>> {
    let mut rows = Rows::default();
    let mut batch = AppendColumns::default();
    for append in appends {
        rows.push(&append.id, &append.rows);
        batch.push(append);
    }
    let sql = format!(
        "WITH batch AS (
            SELECT * FROM UNNEST($9::text[], $10::bigint[], $11::bigint[], $12::bigint[], $13::text[], $14::bigint[], $15::bytea[], $16::text[], $17::bigint[])
                AS b(id, first, epoch, n, stage, at, head, status, due)
        ),
        advanced AS (
            UPDATE {schema}.sagas s SET records = s.records + b.n, stage = b.stage, updated_at = b.at, head = b.head,
                status = b.status, due_at = b.due,
                owner = CASE WHEN b.due IS NULL THEN NULL ELSE s.owner END,
                lease_until = CASE WHEN b.due IS NULL THEN NULL ELSE s.lease_until END
            FROM batch b
            WHERE s.id = ANY($9) AND s.id = b.id AND s.records = b.first AND s.epoch = b.epoch
            RETURNING s.id, b.due
        ),
        journal AS (
            INSERT INTO {schema}.journal (saga_id, seq, at, epoch, kind, step, body, hash)
            SELECT * FROM {JOURNAL_ROWS} WHERE r.saga_id IN (SELECT id FROM advanced)
        ),
        announced AS (SELECT pg_notify($18, 'settled:' || id) FROM advanced WHERE due IS NULL)
        SELECT id, (SELECT count(*) FROM announced) FROM advanced"
    );
    let advanced = sqlx::query(safe(sql))
        .bind(&rows.saga)
        .bind(&rows.seq)
        .bind(&rows.at)
        .bind(&rows.epoch)
        .bind(&rows.kind)
        .bind(&rows.step)
        .bind(&rows.body)
        .bind(&rows.hash)
        .bind(&batch.id)
        .bind(&batch.first)
        .bind(&batch.epoch)
        .bind(&batch.count)
        .bind(&batch.stage)
        .bind(&batch.at)
        .bind(&batch.head)
        .bind(&batch.status)
        .bind(&batch.due)
        .bind(channel)
        .fetch_all(&mut *connection)
        .await?;
    Ok(advanced.iter().map(|row| row.get::<String, _>(0)).collect())
}
