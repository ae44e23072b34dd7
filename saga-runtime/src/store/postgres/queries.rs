//! The SQL of the PostgreSQL store, one function per operation. Every statement names the
//! store's schema; values are always bound, never formatted in.

use super::safe;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};

use crate::id::SagaId;
use crate::outcome::Status;
use crate::store::{
    Checkpoint, Claim, ClaimRequest, Claimed, Fence, NewRequest, NewSaga, Order, PruneCursor, PruneQuery, RecordRow,
    Request, RequestAction, RequestState, SagaKind, SagaQuery, SagaSummary, StoreError, StoredDefinition, StoredSaga,
    Tombstone,
};

const SAGA_COLUMNS: &str = "id, name, version, fingerprint, status, stage, records, head, created_at, updated_at, due_at, owner, lease_until, epoch";

fn parse_status(text: &str) -> Option<Status> {
    [Status::Running, Status::Completed, Status::Compensated, Status::NeedsHuman]
        .into_iter()
        .find(|s| s.as_str() == text)
}

fn hash(bytes: &[u8]) -> [u8; 32] {
    bytes.try_into().unwrap_or([0; 32])
}

fn summary(row: &PgRow) -> Result<SagaSummary, StoreError> {
    let id = SagaId::new(row.get::<String, _>(0));
    let status: String = row.get(4);
    let Some(status) = parse_status(&status) else {
        return Err(StoreError::Unreadable {
            saga_id: id,
            what: "the saga row".to_owned(),
            reason: format!("its status `{status}` is unknown: the row was edited outside saga-runtime"),
        });
    };
    let mut summary =
        SagaSummary::new(id, row.get::<String, _>(1), row.get::<i32, _>(2) as u32, row.get::<String, _>(3));
    summary.status = status;
    summary.stage = row.get(5);
    summary.records = row.get::<i64, _>(6) as u64;
    summary.head = hash(&row.get::<Vec<u8>, _>(7));
    summary.created_at_ms = row.get::<i64, _>(8) as u64;
    summary.updated_at_ms = row.get::<i64, _>(9) as u64;
    summary.due_at_ms = row.get::<Option<i64>, _>(10).map(|t| t as u64);
    summary.owner = row.get(11);
    summary.lease_until_ms = row.get::<Option<i64>, _>(12).map(|t| t as u64);
    summary.epoch = row.get::<i64, _>(13) as u64;
    Ok(summary)
}

/// Why an append wrote nothing: the saga is missing, was taken over (a stale epoch), or
/// another writer appended first; or it is this very write, already in (a commit whose answer
/// was lost to a dropped connection, retried), which is success.
pub(super) async fn why_not_appended(
    connection: &mut PgConnection,
    schema: &str,
    id: &SagaId,
    fence: &Fence,
    rows: &[RecordRow],
    checkpoint: &Checkpoint,
) -> sqlx::Result<Result<(), StoreError>> {
    let Some(first) = rows.first() else { return Ok(Ok(())) };
    let found = sqlx::query(safe(format!("SELECT records, epoch, head FROM {schema}.sagas WHERE id = $1")))
        .bind(id.as_str())
        .fetch_optional(&mut *connection)
        .await?;
    let saga_id = id.clone();
    Ok(Err(match found {
        None => StoreError::Missing { saga_id },
        Some(row) => {
            let (records, epoch, head): (i64, i64, Vec<u8>) = (row.get(0), row.get(1), row.get(2));
            if epoch as u64 != fence.epoch {
                StoreError::Fenced { saga_id, epoch: fence.epoch, current: epoch as u64 }
            } else if records as u64 == first.seq + rows.len() as u64
                && head == checkpoint.head
                && already_written(connection, schema, id, rows).await?
            {
                return Ok(Ok(()));
            } else {
                StoreError::Conflict { saga_id, expected: first.seq, found: records as u64 }
            }
        }
    }))
}

/// Whether the stored saga `new.id` is `new` itself (the same definition, input and first
/// records, hashes included): a creation that landed before its connection was lost.
pub(super) async fn already_created(connection: &mut PgConnection, schema: &str, new: &NewSaga) -> sqlx::Result<bool> {
    let found =
        sqlx::query(safe(format!("SELECT name, version, fingerprint, input FROM {schema}.sagas WHERE id = $1")))
            .bind(new.id.as_str())
            .fetch_optional(&mut *connection)
            .await?;
    let same = found.is_some_and(|row| {
        row.get::<String, _>(0) == new.name
            && row.get::<i32, _>(1) as u32 == new.version
            && row.get::<String, _>(2) == new.fingerprint
            && row.get::<Vec<u8>, _>(3) == new.input
    });
    Ok(same && already_written(connection, schema, &new.id, &new.records).await?)
}

/// Whether the journal holds exactly these rows (kind, body, hash) at their positions.
async fn already_written(
    connection: &mut PgConnection,
    schema: &str,
    id: &SagaId,
    rows: &[RecordRow],
) -> sqlx::Result<bool> {
    let first = rows.first().map_or(0, |r| r.seq) as i64;
    let stored = sqlx::query(safe(format!(
        "SELECT kind, body, hash FROM {schema}.journal WHERE saga_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3"
    )))
    .bind(id.as_str())
    .bind(first)
    .bind(rows.len() as i64)
    .fetch_all(&mut *connection)
    .await?;
    Ok(stored.len() == rows.len()
        && stored.iter().zip(rows).all(|(stored, row)| {
            stored.get::<String, _>(0) == row.kind
                && stored.get::<Vec<u8>, _>(1) == row.body
                && stored.get::<Vec<u8>, _>(2) == row.hash
        }))
}

pub(super) async fn load(
    pool: &PgPool,
    schema: &str,
    id: &SagaId,
) -> sqlx::Result<Result<Option<StoredSaga>, StoreError>> {
    let mut connection = pool.acquire().await?;
    let Some(row) = sqlx::query(safe(format!("SELECT {SAGA_COLUMNS}, input FROM {schema}.sagas WHERE id = $1")))
        .bind(id.as_str())
        .fetch_optional(&mut *connection)
        .await?
    else {
        return Ok(Ok(None));
    };
    let summary = match summary(&row) {
        Ok(summary) => summary,
        Err(error) => return Ok(Err(error)),
    };
    let input: Vec<u8> = row.get(14);
    let rows = sqlx::query(safe(format!(
        "SELECT seq, at, epoch, kind, step, body, hash FROM {schema}.journal WHERE saga_id = $1 ORDER BY seq"
    )))
    .bind(id.as_str())
    .fetch_all(&mut *connection)
    .await?;
    let records = rows.iter().map(|r| record_row(r, 0)).collect();
    Ok(Ok(Some(StoredSaga::new(summary, input, records))))
}

/// A journal row from columns `seq, at, epoch, kind, step, body, hash` starting at `from`.
fn record_row(r: &PgRow, from: usize) -> RecordRow {
    RecordRow::new(
        r.get::<i64, _>(from) as u64,
        r.get::<i64, _>(from + 1) as u64,
        r.get::<i64, _>(from + 2) as u64,
        r.get::<String, _>(from + 3),
        r.get::<Option<String>, _>(from + 4),
        r.get::<Vec<u8>, _>(from + 5),
        hash(&r.get::<Vec<u8>, _>(from + 6)),
    )
}

pub(super) async fn summary_of(
    pool: &PgPool,
    schema: &str,
    id: &SagaId,
) -> sqlx::Result<Result<Option<SagaSummary>, StoreError>> {
    let row = sqlx::query(safe(format!("SELECT {SAGA_COLUMNS} FROM {schema}.sagas WHERE id = $1")))
        .bind(id.as_str())
        .fetch_optional(pool)
        .await?;
    Ok(row.as_ref().map(summary).transpose())
}

pub(super) async fn list(
    pool: &PgPool,
    schema: &str,
    query: &SagaQuery,
) -> sqlx::Result<Result<Vec<SagaSummary>, StoreError>> {
    let (compare, direction) = match query.order {
        Order::OldestFirst => (">", "ASC"),
        Order::NewestFirst => ("<", "DESC"),
    };
    // Each filter is bound whatever it is (NULL when absent), so one statement serves all.
    let sql = format!(
        "SELECT {SAGA_COLUMNS} FROM {schema}.sagas
         WHERE ($1::text IS NULL OR status = $1)
           AND ($2::text IS NULL OR name = $2)
           AND ($3::bigint IS NULL OR created_at >= $3)
           AND ($4::bigint IS NULL OR (created_at, id) {compare} ($4, $5::text))
         ORDER BY created_at {direction}, id {direction}
         LIMIT $6"
    );
    let rows = sqlx::query(safe(sql))
        .bind(query.status.map(Status::as_str))
        .bind(query.name.as_deref())
        .bind(query.since_ms.map(|t| t as i64))
        .bind(query.after.as_ref().map(|c| c.created_at_ms as i64))
        .bind(query.after.as_ref().map(|c| c.id.as_str().to_owned()))
        .bind(query.limit as i64)
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(summary).collect())
}

pub(super) async fn claim(pool: &PgPool, schema: &str, request: &ClaimRequest) -> sqlx::Result<Vec<Claimed>> {
    if request.kinds.is_empty() || request.limit == 0 {
        return Ok(Vec::new());
    }
    let names: Vec<&str> = request.kinds.iter().map(|k| k.name.as_str()).collect();
    let fingerprints: Vec<&str> = request.kinds.iter().map(|k| k.fingerprint.as_str()).collect();
    let skip: Vec<&str> = request.skip.iter().map(SagaId::as_str).collect();
    let sql = format!(
        "UPDATE {schema}.sagas SET owner = $1, lease_until = $2, epoch = epoch + 1
         WHERE id IN (
             SELECT id FROM {schema}.sagas
             WHERE due_at IS NOT NULL
               AND ($3::bigint IS NULL OR due_at <= $3)
               AND (owner IS NULL OR lease_until IS NULL OR lease_until < $4)
               AND (name, fingerprint) IN (SELECT * FROM UNNEST($5::text[], $6::text[]))
               AND NOT (id = ANY($7::text[]))
             ORDER BY due_at
             LIMIT $8
             FOR UPDATE SKIP LOCKED
         )
         RETURNING id, name, fingerprint, epoch"
    );
    let rows = sqlx::query(safe(sql))
        .bind(&request.owner)
        .bind(request.lease_until_ms as i64)
        .bind(request.due_by_ms.map(|t| t as i64))
        .bind(request.now_ms as i64)
        .bind(&names)
        .bind(&fingerprints)
        .bind(&skip)
        .bind(request.limit as i64)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let kind = SagaKind { name: r.get(1), fingerprint: r.get(2) };
            let fence = Fence::new(&request.owner, r.get::<i64, _>(3) as u64);
            Claimed::new(SagaId::new(r.get::<String, _>(0)), kind, fence)
        })
        .collect())
}

pub(super) async fn claim_saga(
    pool: &PgPool,
    schema: &str,
    id: &SagaId,
    owner: &str,
    now_ms: u64,
    lease_until_ms: u64,
) -> sqlx::Result<Claim> {
    let taken: Option<i64> = sqlx::query_scalar(safe(format!(
        "UPDATE {schema}.sagas SET owner = $2, lease_until = $3, epoch = epoch + 1
         WHERE id = $1 AND (owner IS NULL OR lease_until IS NULL OR lease_until < $4 OR owner = $2)
         RETURNING epoch"
    )))
    .bind(id.as_str())
    .bind(owner)
    .bind(lease_until_ms as i64)
    .bind(now_ms as i64)
    .fetch_optional(pool)
    .await?;
    if let Some(epoch) = taken {
        return Ok(Claim::Acquired(Fence::new(owner, epoch as u64)));
    }
    let holder = sqlx::query(safe(format!("SELECT owner, lease_until FROM {schema}.sagas WHERE id = $1")))
        .bind(id.as_str())
        .fetch_optional(pool)
        .await?;
    Ok(match holder {
        None => Claim::Missing,
        Some(row) => Claim::Held {
            owner: row.get::<Option<String>, _>(0).unwrap_or_default(),
            lease_until_ms: row.get::<Option<i64>, _>(1).unwrap_or_default() as u64,
        },
    })
}

pub(super) async fn renew(pool: &PgPool, schema: &str, owner: &str, lease_until_ms: u64) -> sqlx::Result<u64> {
    let renewed = sqlx::query(safe(format!("UPDATE {schema}.sagas SET lease_until = $2 WHERE owner = $1")))
        .bind(owner)
        .bind(lease_until_ms as i64)
        .execute(pool)
        .await?;
    Ok(renewed.rows_affected())
}

/// Releases a claim; a saga that still has work to do is announced to the other workers.
pub(super) async fn release(pool: &PgPool, schema: &str, id: &SagaId, fence: &Fence) -> sqlx::Result<()> {
    sqlx::query(safe(format!(
        "WITH released AS (
            UPDATE {schema}.sagas SET owner = NULL, lease_until = NULL WHERE id = $1 AND epoch = $2 RETURNING due_at
        )
        SELECT pg_notify($3, 'due') FROM released WHERE due_at IS NOT NULL"
    )))
    .bind(id.as_str())
    .bind(fence.epoch as i64)
    .bind(super::listen::channel(schema))
    .execute(pool)
    .await?;
    Ok(())
}

/// The finished sagas, as the partial index `sagas_finished` holds them.
const FINISHED: &str = "status IN ('completed', 'compensated')";

pub(super) async fn prunable(
    pool: &PgPool,
    schema: &str,
    query: &PruneQuery,
) -> sqlx::Result<Result<Vec<StoredSaga>, StoreError>> {
    let Some((bound_at, bound_id, inclusive)) = query.bound() else { return Ok(Ok(Vec::new())) };
    let compare = if inclusive { "<=" } else { "<" };
    let mut connection = pool.acquire().await?;
    let rows = sqlx::query(safe(format!(
        "SELECT {SAGA_COLUMNS}, input FROM {schema}.sagas
         WHERE {FINISHED} AND (updated_at, id) {compare} ($1, $2::text)
           AND ($3::bigint IS NULL OR (updated_at, id) > ($3, $4::text))
         ORDER BY updated_at, id
         LIMIT $5"
    )))
    .bind(bound_at as i64)
    .bind(bound_id)
    .bind(query.after.as_ref().map(|a| a.finished_at_ms as i64))
    .bind(query.after.as_ref().map(|a| a.id.as_str()))
    .bind(query.limit as i64)
    .fetch_all(&mut *connection)
    .await?;
    let mut sagas = Vec::with_capacity(rows.len());
    for row in &rows {
        match summary(row) {
            Ok(summary) => sagas.push(StoredSaga::new(summary, row.get::<Vec<u8>, _>(14), Vec::new())),
            Err(error) => return Ok(Err(error)),
        }
    }
    if query.journals && !sagas.is_empty() {
        let ids: Vec<&str> = sagas.iter().map(|s| s.summary.id.as_str()).collect();
        let rows = sqlx::query(safe(format!(
            "SELECT saga_id, seq, at, epoch, kind, step, body, hash FROM {schema}.journal
             WHERE saga_id = ANY($1::text[]) ORDER BY saga_id, seq"
        )))
        .bind(&ids)
        .fetch_all(&mut *connection)
        .await?;
        let mut journals: std::collections::HashMap<String, Vec<RecordRow>> = std::collections::HashMap::new();
        for row in &rows {
            journals.entry(row.get::<String, _>(0)).or_default().push(record_row(row, 1));
        }
        for saga in &mut sagas {
            saga.records = journals.remove(saga.summary.id.as_str()).unwrap_or_default();
        }
    }
    Ok(Ok(sagas))
}

pub(super) async fn nth_newest_finished(pool: &PgPool, schema: &str, skip: u64) -> sqlx::Result<Option<PruneCursor>> {
    let row = sqlx::query(safe(format!(
        "SELECT updated_at, id FROM {schema}.sagas WHERE {FINISHED} ORDER BY updated_at DESC, id DESC LIMIT 1 OFFSET $1"
    )))
    .bind(skip.min(i64::MAX as u64) as i64)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| PruneCursor { finished_at_ms: r.get::<i64, _>(0) as u64, id: SagaId::new(r.get::<String, _>(1)) }))
}

/// Deletes the batch's sagas that are still finished with the same head, their journals, and
/// keeps their tombstones, in one statement (one transaction).
pub(super) async fn prune(pool: &PgPool, schema: &str, tombstones: &[Tombstone]) -> sqlx::Result<Vec<SagaId>> {
    if tombstones.is_empty() {
        return Ok(Vec::new());
    }
    let column = |f: fn(&Tombstone) -> String| tombstones.iter().map(f).collect::<Vec<String>>();
    let ids = column(|t| t.id.as_str().to_owned());
    let names = column(|t| t.name.clone());
    let fingerprints = column(|t| t.fingerprint.clone());
    let statuses = column(|t| t.status.as_str().to_owned());
    let versions: Vec<i32> = tombstones.iter().map(|t| t.version as i32).collect();
    let input_hashes: Vec<Vec<u8>> = tombstones.iter().map(|t| t.input_hash.to_vec()).collect();
    let heads: Vec<Vec<u8>> = tombstones.iter().map(|t| t.head.to_vec()).collect();
    let times = |f: fn(&Tombstone) -> u64| tombstones.iter().map(|t| f(t) as i64).collect::<Vec<i64>>();
    let sql = format!(
        "WITH t AS (
            SELECT * FROM UNNEST($1::text[], $2::text[], $3::int[], $4::text[], $5::text[], $6::bytea[], $7::bytea[],
                                 $8::bigint[], $9::bigint[], $10::bigint[])
                AS t(id, name, version, fingerprint, status, input_hash, head, created_at, finished_at, pruned_at)
        ),
        deleted AS (
            DELETE FROM {schema}.sagas s USING t
            WHERE s.id = ANY($1) AND s.id = t.id AND s.head = t.head AND s.{FINISHED}
            RETURNING s.id
        ),
        journal AS (DELETE FROM {schema}.journal WHERE saga_id IN (SELECT id FROM deleted)),
        stones AS (
            INSERT INTO {schema}.tombstones (id, name, version, fingerprint, status, input_hash, head, created_at, finished_at, pruned_at)
            SELECT * FROM t WHERE t.id IN (SELECT id FROM deleted)
            ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, input_hash = EXCLUDED.input_hash,
                head = EXCLUDED.head, finished_at = EXCLUDED.finished_at, pruned_at = EXCLUDED.pruned_at
        )
        SELECT id FROM deleted"
    );
    let rows = sqlx::query(safe(sql))
        .bind(&ids)
        .bind(&names)
        .bind(&versions)
        .bind(&fingerprints)
        .bind(&statuses)
        .bind(&input_hashes)
        .bind(&heads)
        .bind(times(|t| t.created_at_ms))
        .bind(times(|t| t.finished_at_ms))
        .bind(times(|t| t.pruned_at_ms))
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(|r| SagaId::new(r.get::<String, _>(0))).collect())
}

pub(super) async fn tombstone(
    pool: &PgPool,
    schema: &str,
    id: &SagaId,
) -> sqlx::Result<Result<Option<Tombstone>, StoreError>> {
    let row = sqlx::query(safe(format!(
        "SELECT name, version, fingerprint, status, input_hash, head, created_at, finished_at, pruned_at
         FROM {schema}.tombstones WHERE id = $1"
    )))
    .bind(id.as_str())
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(Ok(None)) };
    let status: String = row.get(3);
    let Some(status) = parse_status(&status) else {
        return Ok(Err(StoreError::Unreadable {
            saga_id: id.clone(),
            what: "the tombstone".to_owned(),
            reason: format!("its status `{status}` is unknown: the row was edited outside saga-runtime"),
        }));
    };
    Ok(Ok(Some(Tombstone {
        id: id.clone(),
        name: row.get(0),
        version: row.get::<i32, _>(1) as u32,
        fingerprint: row.get(2),
        status,
        input_hash: hash(&row.get::<Vec<u8>, _>(4)),
        head: hash(&row.get::<Vec<u8>, _>(5)),
        created_at_ms: row.get::<i64, _>(6) as u64,
        finished_at_ms: row.get::<i64, _>(7) as u64,
        pruned_at_ms: row.get::<i64, _>(8) as u64,
    })))
}

pub(super) async fn expire_tombstones(
    pool: &PgPool,
    schema: &str,
    pruned_before_ms: u64,
    limit: usize,
) -> sqlx::Result<u64> {
    let done = sqlx::query(safe(format!(
        "DELETE FROM {schema}.tombstones WHERE id IN
             (SELECT id FROM {schema}.tombstones WHERE pruned_at < $1 ORDER BY pruned_at, id LIMIT $2)"
    )))
    .bind(pruned_before_ms.min(i64::MAX as u64) as i64)
    .bind(limit as i64)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

// ------------------------------------------------------------------ operators' tables

pub(super) async fn save_definition(
    pool: &PgPool,
    schema: &str,
    definition: &StoredDefinition,
    now_ms: u64,
) -> sqlx::Result<()> {
    let body = serde_json::to_string(definition).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(safe(format!(
        "INSERT INTO {schema}.definitions (name, fingerprint, version, body, seen_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (name, fingerprint) DO UPDATE SET body = EXCLUDED.body, seen_at = EXCLUDED.seen_at"
    )))
    .bind(&definition.name)
    .bind(&definition.fingerprint)
    .bind(definition.version as i32)
    .bind(body)
    .bind(now_ms as i64)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn definitions(
    pool: &PgPool,
    schema: &str,
) -> sqlx::Result<Result<Vec<StoredDefinition>, StoreError>> {
    let bodies: Vec<String> =
        sqlx::query_scalar(safe(format!("SELECT body FROM {schema}.definitions ORDER BY name, version")))
            .fetch_all(pool)
            .await?;
    Ok(bodies
        .iter()
        .map(|body| {
            serde_json::from_str(body)
                .map_err(|e| StoreError::backend(format!("a stored saga definition cannot be read ({e})")))
        })
        .collect())
}

pub(super) async fn submit(pool: &PgPool, schema: &str, channel: &str, request: &NewRequest) -> sqlx::Result<u64> {
    let (saga, fingerprint) = match &request.kind {
        Some((name, fingerprint)) => (Some(name.as_str()), Some(fingerprint.as_str())),
        None => (None, None),
    };
    let id: i64 = sqlx::query_scalar(safe(format!(
        "WITH made AS (
             INSERT INTO {schema}.requests (action, saga_id, saga, fingerprint, note, requested_at, state)
             VALUES ($1, $2, $3, $4, $5, $6, 'pending') RETURNING id
         ), announced AS (SELECT pg_notify($7, 'due'))
         SELECT id FROM made, announced"
    )))
    .bind(request.action.as_str())
    .bind(request.saga_id.as_ref().map(SagaId::as_str))
    .bind(saga)
    .bind(fingerprint)
    .bind(&request.note)
    .bind(request.at_ms as i64)
    .bind(channel)
    .fetch_one(pool)
    .await?;
    Ok(id as u64)
}

const REQUEST_COLUMNS: &str = "id, action, saga_id, saga, note, requested_at, state, taken_by, result, done_at";

fn request(row: &PgRow) -> Request {
    let action: String = row.get(1);
    let state: String = row.get(6);
    Request {
        id: row.get::<i64, _>(0) as u64,
        action: RequestAction::parse(&action).unwrap_or(RequestAction::Sweep),
        saga_id: row.get::<Option<String>, _>(2).map(SagaId::new),
        saga: row.get(3),
        note: row.get(4),
        requested_at_ms: row.get::<i64, _>(5) as u64,
        state: RequestState::parse(&state).unwrap_or(RequestState::Failed),
        taken_by: row.get(7),
        result: row.get(8),
        done_at_ms: row.get::<Option<i64>, _>(9).map(|t| t as u64),
    }
}

/// Takes open requests of the given kinds (and the sagaless ones), one taker each (`SKIP
/// LOCKED`); a request taken longer ago than `retake_after_ms` is offered again.
pub(super) async fn take_requests(
    pool: &PgPool,
    schema: &str,
    owner: &str,
    kinds: &[SagaKind],
    limit: usize,
    now_ms: u64,
    retake_after_ms: u64,
) -> sqlx::Result<Vec<Request>> {
    let names: Vec<&str> = kinds.iter().map(|k| k.name.as_str()).collect();
    let fingerprints: Vec<&str> = kinds.iter().map(|k| k.fingerprint.as_str()).collect();
    let rows = sqlx::query(safe(format!(
        "UPDATE {schema}.requests SET state = 'taken', taken_by = $1, taken_at = $2
         WHERE id IN (
             SELECT id FROM {schema}.requests
             WHERE (state = 'pending' OR (state = 'taken' AND taken_at <= $3))
               AND (saga IS NULL OR (saga, fingerprint) IN (SELECT * FROM UNNEST($4::text[], $5::text[])))
             ORDER BY id LIMIT $6 FOR UPDATE SKIP LOCKED
         )
         RETURNING {REQUEST_COLUMNS}"
    )))
    .bind(owner)
    .bind(now_ms as i64)
    .bind(now_ms.saturating_sub(retake_after_ms) as i64)
    .bind(&names)
    .bind(&fingerprints)
    .bind(limit as i64)
    .fetch_all(pool)
    .await?;
    let mut taken: Vec<Request> = rows.iter().map(request).collect();
    taken.sort_by_key(|r| r.id);
    Ok(taken)
}

pub(super) async fn finish_request(
    pool: &PgPool,
    schema: &str,
    id: u64,
    state: RequestState,
    result: &str,
    at_ms: u64,
) -> sqlx::Result<()> {
    sqlx::query(safe(format!("UPDATE {schema}.requests SET state = $2, result = $3, done_at = $4 WHERE id = $1")))
        .bind(id as i64)
        .bind(state.as_str())
        .bind(result)
        .bind(at_ms as i64)
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn requests(pool: &PgPool, schema: &str, limit: usize) -> sqlx::Result<Vec<Request>> {
    let rows = sqlx::query(safe(format!("SELECT {REQUEST_COLUMNS} FROM {schema}.requests ORDER BY id DESC LIMIT $1")))
        .bind(limit as i64)
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(request).collect())
}
