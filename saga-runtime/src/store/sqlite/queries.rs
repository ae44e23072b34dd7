//! The SQL of the store, one function per operation, each run by the writer thread inside the
//! transaction (or for reads, on the connection) it is given.

use rusqlite::{Connection, OptionalExtension, ToSql, params, params_from_iter};

use crate::id::SagaId;
use crate::outcome::Status;
use crate::store::{
    Checkpoint, Claim, ClaimRequest, Claimed, Fence, NewRequest, NewSaga, Order, PruneCursor, PruneQuery, RecordRow,
    Request, RequestAction, RequestState, SagaKind, SagaQuery, SagaSummary, StoreError, StoredDefinition, StoredSaga,
    Tombstone,
};

const SAGA_COLUMNS: &str = "id, name, version, fingerprint, status, stage, records, head, created_at, updated_at, due_at, owner, lease_until, epoch";

/// A failure of a query: SQLite's own error, or a verdict of the store (a conflict).
pub(super) enum QueryError {
    Sql(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for QueryError {
    fn from(error: rusqlite::Error) -> Self {
        QueryError::Sql(error)
    }
}

type Result<T, E = QueryError> = std::result::Result<T, E>;

fn parse_status(text: &str) -> Option<Status> {
    [Status::Running, Status::Completed, Status::Compensated, Status::NeedsHuman]
        .into_iter()
        .find(|s| s.as_str() == text)
}

fn hash(bytes: &[u8]) -> [u8; 32] {
    // A missing or malformed hash reads as zeros, which no chain produces: the codec reports it.
    bytes.try_into().unwrap_or([0; 32])
}

fn blob(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Vec<u8>> {
    // Whatever type an edit of the file left in a payload column, as bytes.
    Ok(row.get_ref(index)?.as_bytes_or_null()?.unwrap_or_default().to_vec())
}

/// A saga row, or `Err` when its status is not one this build knows.
fn summary(row: &rusqlite::Row<'_>) -> rusqlite::Result<std::result::Result<SagaSummary, StoreError>> {
    let id = SagaId::new(row.get::<_, String>(0)?);
    let status: String = row.get(4)?;
    let Some(status) = parse_status(&status) else {
        return Ok(Err(StoreError::Unreadable {
            saga_id: id,
            what: "the saga row".to_owned(),
            reason: format!("its status `{status}` is unknown: the row was edited outside saga-runtime"),
        }));
    };
    let mut summary = SagaSummary::new(id, row.get::<_, String>(1)?, row.get(2)?, row.get::<_, String>(3)?);
    summary.status = status;
    summary.stage = row.get(5)?;
    summary.records = row.get::<_, i64>(6)? as u64;
    summary.head = hash(&blob(row, 7)?);
    summary.created_at_ms = row.get::<_, i64>(8)? as u64;
    summary.updated_at_ms = row.get::<_, i64>(9)? as u64;
    summary.due_at_ms = row.get::<_, Option<i64>>(10)?.map(|t| t as u64);
    summary.owner = row.get(11)?;
    summary.lease_until_ms = row.get::<_, Option<i64>>(12)?.map(|t| t as u64);
    summary.epoch = row.get::<_, i64>(13)? as u64;
    Ok(Ok(summary))
}

/// What a creation found under the id instead of creating the saga.
pub(super) enum Found {
    Existing(StoredSaga),
    Pruned(Tombstone),
}

pub(super) fn create(connection: &Connection, new: &NewSaga) -> Result<Option<Found>> {
    if let Some(existing) = load(connection, &new.id)? {
        return Ok(Some(Found::Existing(existing)));
    }
    if let Some(tombstone) = tombstone(connection, &new.id)? {
        return Ok(Some(Found::Pruned(tombstone)));
    }
    let created_at = new.records.first().map_or(new.checkpoint.at_ms, |r| r.at_ms) as i64;
    connection
        .prepare_cached(
            "INSERT INTO sagas (id, name, version, fingerprint, status, stage, input, records, head, created_at, updated_at, due_at, owner, lease_until, epoch)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        )?
        .execute(params![
            new.id.as_str(),
            new.name,
            new.version,
            new.fingerprint,
            new.checkpoint.status.as_str(),
            new.checkpoint.stage,
            new.input,
            new.records.len() as i64,
            &new.checkpoint.head[..],
            created_at,
            new.checkpoint.at_ms as i64,
            new.checkpoint.due_at_ms.map(|t| t as i64),
            new.owner,
            new.owner.as_ref().map(|_| new.lease_until_ms as i64),
            i64::from(new.owner.is_some()),
        ])?;
    for row in &new.records {
        insert_record(connection, new.id.as_str(), row)?;
    }
    Ok(None)
}

fn load_journal(connection: &Connection, id: &SagaId) -> Result<Vec<RecordRow>> {
    let mut statement = connection
        .prepare_cached("SELECT seq, at, epoch, kind, step, body, hash FROM journal WHERE saga_id = ?1 ORDER BY seq")?;
    let rows = statement.query_map([id.as_str()], |row| {
        Ok(RecordRow::new(
            row.get::<_, i64>(0)? as u64,
            row.get::<_, i64>(1)? as u64,
            row.get::<_, i64>(2)? as u64,
            row.get::<_, String>(3)?,
            row.get::<_, Option<String>>(4)?,
            blob(row, 5)?,
            hash(&blob(row, 6)?),
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn insert_record(connection: &Connection, id: &str, row: &RecordRow) -> rusqlite::Result<()> {
    connection
        .prepare_cached(
            "INSERT INTO journal (saga_id, seq, at, epoch, kind, step, body, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![id, row.seq as i64, row.at_ms as i64, row.epoch as i64, row.kind, row.step, row.body, &row.hash[..]])?;
    Ok(())
}

pub(super) fn append(
    connection: &Connection,
    id: &SagaId,
    fence: &Fence,
    rows: &[RecordRow],
    checkpoint: &Checkpoint,
) -> Result<()> {
    let Some(first) = rows.first() else { return Ok(()) };
    let changed = connection
        .prepare_cached(
            "UPDATE sagas SET records = records + ?1, stage = ?2, updated_at = ?3, head = ?4
             WHERE id = ?5 AND records = ?6 AND epoch = ?7",
        )?
        .execute(params![
            rows.len() as i64,
            checkpoint.stage,
            checkpoint.at_ms as i64,
            &checkpoint.head[..],
            id.as_str(),
            first.seq as i64,
            fence.epoch as i64,
        ])?;
    if changed == 0 {
        let found: Option<(i64, i64)> = connection
            .prepare_cached("SELECT records, epoch FROM sagas WHERE id = ?1")?
            .query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let saga_id = id.clone();
        return Err(QueryError::Store(match found {
            None => StoreError::Missing { saga_id },
            Some((_, current)) if current as u64 != fence.epoch => {
                StoreError::Fenced { saga_id, epoch: fence.epoch, current: current as u64 }
            }
            Some((found, _)) => StoreError::Conflict { saga_id, expected: first.seq, found: found as u64 },
        }));
    }
    // A statement of its own, so that the indexed columns are written only when they change
    // (a handful of times per saga), not on every checkpoint. A saga that waits for nothing but
    // a human is held by nobody.
    connection
        .prepare_cached(
            "UPDATE sagas SET status = ?1, due_at = ?2,
                 owner = CASE WHEN ?2 IS NULL THEN NULL ELSE owner END,
                 lease_until = CASE WHEN ?2 IS NULL THEN NULL ELSE lease_until END
             WHERE id = ?3 AND (status <> ?1 OR due_at IS NOT ?2)",
        )?
        .execute(params![checkpoint.status.as_str(), checkpoint.due_at_ms.map(|t| t as i64), id.as_str()])?;
    for row in rows {
        insert_record(connection, id.as_str(), row)?;
    }
    Ok(())
}

pub(super) fn load(connection: &Connection, id: &SagaId) -> Result<Option<StoredSaga>> {
    let found = connection
        .prepare_cached(&format!("SELECT {SAGA_COLUMNS}, input FROM sagas WHERE id = ?1"))?
        .query_row([id.as_str()], |row| Ok((summary(row)?, blob(row, 14)?)))
        .optional()?;
    let Some((summary, input)) = found else { return Ok(None) };
    let summary = summary.map_err(QueryError::Store)?;
    let records = load_journal(connection, id)?;
    Ok(Some(StoredSaga::new(summary, input, records)))
}

pub(super) fn summary_of(connection: &Connection, id: &SagaId) -> Result<Option<SagaSummary>> {
    let found = connection
        .prepare_cached(&format!("SELECT {SAGA_COLUMNS} FROM sagas WHERE id = ?1"))?
        .query_row([id.as_str()], summary)
        .optional()?;
    match found {
        Some(summary) => Ok(Some(summary.map_err(QueryError::Store)?)),
        None => Ok(None),
    }
}

pub(super) fn list(connection: &Connection, query: &SagaQuery) -> Result<Vec<SagaSummary>> {
    let mut sql = format!("SELECT {SAGA_COLUMNS} FROM sagas WHERE 1 = 1");
    let mut args: Vec<Box<dyn ToSql>> = Vec::new();
    if let Some(status) = query.status {
        sql.push_str(" AND status = ?");
        args.push(Box::new(status.as_str()));
    }
    if let Some(name) = &query.name {
        sql.push_str(" AND name = ?");
        args.push(Box::new(name.clone()));
    }
    if let Some(since) = query.since_ms {
        sql.push_str(" AND created_at >= ?");
        args.push(Box::new(since as i64));
    }
    let (compare, direction) = match query.order {
        Order::OldestFirst => (">", "ASC"),
        Order::NewestFirst => ("<", "DESC"),
    };
    if let Some(after) = &query.after {
        sql.push_str(&format!(" AND (created_at, id) {compare} (?, ?)"));
        args.push(Box::new(after.created_at_ms as i64));
        args.push(Box::new(after.id.as_str().to_owned()));
    }
    sql.push_str(&format!(" ORDER BY created_at {direction}, id {direction} LIMIT ?"));
    args.push(Box::new(query.limit as i64));
    let mut statement = connection.prepare_cached(&sql)?;
    let rows = statement.query_map(params_from_iter(args.iter()), summary)?;
    let mut sagas = Vec::new();
    for row in rows {
        sagas.push(row?.map_err(QueryError::Store)?);
    }
    Ok(sagas)
}

/// Takes the claim of one saga row: a new owner, lease and epoch.
fn take(connection: &Connection, id: &str, owner: &str, lease_until_ms: u64) -> rusqlite::Result<u64> {
    let epoch: i64 = connection
        .prepare_cached(
            "UPDATE sagas SET owner = ?1, lease_until = ?2, epoch = epoch + 1 WHERE id = ?3 RETURNING epoch",
        )?
        .query_row(params![owner, lease_until_ms as i64, id], |r| r.get(0))?;
    Ok(epoch as u64)
}

pub(super) fn claim(connection: &Connection, request: &ClaimRequest) -> Result<Vec<Claimed>> {
    if request.kinds.is_empty() || request.limit == 0 {
        return Ok(Vec::new());
    }
    // Through the index of due sagas, named: without statistics SQLite would rather take the
    // index by name, and read every saga of that name, finished ones included (measured: 36 ms
    // at 100,000 finished sagas).
    let mut sql = "SELECT id, name, fingerprint FROM sagas INDEXED BY sagas_due WHERE due_at IS NOT NULL".to_owned();
    let mut args: Vec<Box<dyn ToSql>> = Vec::new();
    if let Some(by) = request.due_by_ms {
        sql.push_str(" AND due_at <= ?");
        args.push(Box::new(by as i64));
    }
    sql.push_str(" AND (owner IS NULL OR lease_until IS NULL OR lease_until < ?)");
    args.push(Box::new(request.now_ms as i64));
    let kinds = vec!["(?, ?)"; request.kinds.len()].join(", ");
    sql.push_str(&format!(" AND (name, fingerprint) IN (VALUES {kinds})"));
    for kind in &request.kinds {
        args.push(Box::new(kind.name.clone()));
        args.push(Box::new(kind.fingerprint.clone()));
    }
    if !request.skip.is_empty() {
        sql.push_str(&format!(" AND id NOT IN ({})", vec!["?"; request.skip.len()].join(", ")));
        for id in &request.skip {
            args.push(Box::new(id.as_str().to_owned()));
        }
    }
    sql.push_str(" ORDER BY due_at LIMIT ?");
    args.push(Box::new(request.limit as i64));
    let due: Vec<(String, String, String)> = {
        let mut statement = connection.prepare_cached(&sql)?;
        let rows = statement.query_map(params_from_iter(args.iter()), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut claimed = Vec::with_capacity(due.len());
    for (id, name, fingerprint) in due {
        let epoch = take(connection, &id, &request.owner, request.lease_until_ms)?;
        claimed.push(Claimed::new(SagaId::new(id), SagaKind { name, fingerprint }, Fence::new(&request.owner, epoch)));
    }
    Ok(claimed)
}

pub(super) fn claim_saga(
    connection: &Connection,
    id: &SagaId,
    owner: &str,
    now_ms: u64,
    lease_until_ms: u64,
) -> Result<Claim> {
    let holder: Option<(Option<String>, Option<i64>)> = connection
        .prepare_cached("SELECT owner, lease_until FROM sagas WHERE id = ?1")?
        .query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(match holder {
        None => Claim::Missing,
        Some((Some(holder), Some(until))) if until as u64 >= now_ms && holder != owner => {
            Claim::Held { owner: holder, lease_until_ms: until as u64 }
        }
        Some(_) => Claim::Acquired(Fence::new(owner, take(connection, id.as_str(), owner, lease_until_ms)?)),
    })
}

pub(super) fn renew(connection: &Connection, owner: &str, lease_until_ms: u64) -> Result<u64> {
    let renewed = connection
        .prepare_cached("UPDATE sagas SET lease_until = ?1 WHERE owner = ?2")?
        .execute(params![lease_until_ms as i64, owner])?;
    Ok(renewed as u64)
}

pub(super) fn release(connection: &Connection, id: &SagaId, fence: &Fence) -> Result<()> {
    connection
        .prepare_cached("UPDATE sagas SET owner = NULL, lease_until = NULL WHERE id = ?1 AND epoch = ?2")?
        .execute(params![id.as_str(), fence.epoch as i64])?;
    Ok(())
}

/// The finished sagas, as the partial index `sagas_finished` holds them (the condition must be
/// written as the index's for SQLite to use it).
const FINISHED: &str = "status IN ('completed', 'compensated')";

pub(super) fn prunable(connection: &Connection, query: &PruneQuery) -> Result<Vec<StoredSaga>> {
    let Some((bound_at, bound_id, inclusive)) = query.bound() else { return Ok(Vec::new()) };
    let compare = if inclusive { "<=" } else { "<" };
    // Through the index of finished sagas, named (SQLite would otherwise take the index by
    // status and sort every finished saga for each batch).
    let mut sql = format!(
        "SELECT {SAGA_COLUMNS}, input FROM sagas INDEXED BY sagas_finished WHERE {FINISHED} AND (updated_at, id) {compare} (?, ?)"
    );
    let mut args: Vec<Box<dyn ToSql>> = vec![Box::new(bound_at as i64), Box::new(bound_id.to_owned())];
    if let Some(after) = &query.after {
        sql.push_str(" AND (updated_at, id) > (?, ?)");
        args.push(Box::new(after.finished_at_ms as i64));
        args.push(Box::new(after.id.as_str().to_owned()));
    }
    sql.push_str(" ORDER BY updated_at, id LIMIT ?");
    args.push(Box::new(query.limit as i64));
    let found: Vec<(std::result::Result<SagaSummary, StoreError>, Vec<u8>)> = {
        let mut statement = connection.prepare_cached(&sql)?;
        let rows = statement.query_map(params_from_iter(args.iter()), |row| Ok((summary(row)?, blob(row, 14)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut sagas = Vec::with_capacity(found.len());
    for (summary, input) in found {
        let summary = summary.map_err(QueryError::Store)?;
        let records = if query.journals { load_journal(connection, &summary.id)? } else { Vec::new() };
        sagas.push(StoredSaga::new(summary, input, records));
    }
    Ok(sagas)
}

pub(super) fn nth_newest_finished(connection: &Connection, skip: u64) -> Result<Option<PruneCursor>> {
    let found: Option<(i64, String)> = connection
        .prepare_cached(&format!(
            "SELECT updated_at, id FROM sagas INDEXED BY sagas_finished WHERE {FINISHED}
             ORDER BY updated_at DESC, id DESC LIMIT 1 OFFSET ?1"
        ))?
        .query_row([skip.min(i64::MAX as u64) as i64], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(found.map(|(at, id)| PruneCursor { finished_at_ms: at as u64, id: SagaId::new(id) }))
}

pub(super) fn prune(connection: &Connection, tombstones: &[Tombstone]) -> Result<Vec<SagaId>> {
    let mut pruned = Vec::with_capacity(tombstones.len());
    for tombstone in tombstones {
        let deleted = connection
            .prepare_cached(&format!("DELETE FROM sagas WHERE id = ?1 AND head = ?2 AND {FINISHED}"))?
            .execute(params![tombstone.id.as_str(), &tombstone.head[..]])?;
        if deleted == 0 {
            continue;
        }
        connection.prepare_cached("DELETE FROM journal WHERE saga_id = ?1")?.execute([tombstone.id.as_str()])?;
        connection
            .prepare_cached(
                "INSERT OR REPLACE INTO tombstones (id, name, version, fingerprint, status, input_hash, head, created_at, finished_at, pruned_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                tombstone.id.as_str(),
                tombstone.name,
                tombstone.version,
                tombstone.fingerprint,
                tombstone.status.as_str(),
                &tombstone.input_hash[..],
                &tombstone.head[..],
                tombstone.created_at_ms as i64,
                tombstone.finished_at_ms as i64,
                tombstone.pruned_at_ms as i64,
            ])?;
        pruned.push(tombstone.id.clone());
    }
    Ok(pruned)
}

pub(super) fn tombstone(connection: &Connection, id: &SagaId) -> Result<Option<Tombstone>> {
    let found = connection
        .prepare_cached(
            "SELECT name, version, fingerprint, status, input_hash, head, created_at, finished_at, pruned_at
             FROM tombstones WHERE id = ?1",
        )?
        .query_row([id.as_str()], |row| {
            let status: String = row.get(3)?;
            Ok((
                Tombstone {
                    id: id.clone(),
                    name: row.get(0)?,
                    version: row.get(1)?,
                    fingerprint: row.get(2)?,
                    status: Status::Completed,
                    input_hash: hash(&blob(row, 4)?),
                    head: hash(&blob(row, 5)?),
                    created_at_ms: row.get::<_, i64>(6)? as u64,
                    finished_at_ms: row.get::<_, i64>(7)? as u64,
                    pruned_at_ms: row.get::<_, i64>(8)? as u64,
                },
                status,
            ))
        })
        .optional()?;
    let Some((mut tombstone, status)) = found else { return Ok(None) };
    tombstone.status = parse_status(&status).ok_or_else(|| {
        QueryError::Store(StoreError::Unreadable {
            saga_id: id.clone(),
            what: "the tombstone".to_owned(),
            reason: format!("its status `{status}` is unknown: the row was edited outside saga-runtime"),
        })
    })?;
    Ok(Some(tombstone))
}

pub(super) fn expire_tombstones(connection: &Connection, pruned_before_ms: u64, limit: usize) -> Result<u64> {
    let expired = connection
        .prepare_cached(
            "DELETE FROM tombstones WHERE id IN
                 (SELECT id FROM tombstones WHERE pruned_at < ?1 ORDER BY pruned_at, id LIMIT ?2)",
        )?
        .execute(params![pruned_before_ms.min(i64::MAX as u64) as i64, limit as i64])?;
    Ok(expired as u64)
}

/// The file's free pages beyond a quarter of it (once shrunk), given back to the file system, at most
/// `most` pages at a time; returns how many bytes. Only a file with incremental auto-vacuum can
/// do this without rewriting itself; others keep their free pages for the next sagas.
pub(super) fn reclaim(connection: &Connection, most: i64) -> Result<u64> {
    let mode: i64 = connection.pragma_query_value(None, "auto_vacuum", |r| r.get(0))?;
    if mode != 2 {
        return Ok(0);
    }
    let free: i64 = connection.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
    let pages: i64 = connection.pragma_query_value(None, "page_count", |r| r.get(0))?;
    let page_size: i64 = connection.pragma_query_value(None, "page_size", |r| r.get(0))?;
    // A steady load reuses what the last round freed: keep up to a third of the pages in use
    // free (a quarter of the file) rather than shrinking the file only to grow it again.
    let excess = free - ((pages - free) / 3).max(RESERVE_PAGES);
    if excess <= 0 {
        return Ok(0);
    }
    let step = excess.min(most);
    // The pragma gives back one page per step of the statement: run it to its end.
    let mut statement = connection.prepare(&format!("PRAGMA incremental_vacuum({step})"))?;
    let mut rows = statement.query([])?;
    while rows.next()?.is_some() {}
    let after: i64 = connection.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
    Ok(((free - after).max(0) * page_size) as u64)
}

/// Free pages a file always keeps (1 MiB of 4 KiB pages).
const RESERVE_PAGES: i64 = 256;

// ------------------------------------------------------------------ operators' tables

pub(super) fn save_definition(connection: &Connection, definition: &StoredDefinition, now_ms: u64) -> Result<()> {
    let body = serde_json::to_string(definition).map_err(|e| QueryError::Store(StoreError::backend(e)))?;
    connection
        .prepare_cached(
            "INSERT INTO definitions (name, fingerprint, version, body, seen_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (name, fingerprint) DO UPDATE SET body = excluded.body, seen_at = excluded.seen_at",
        )?
        .execute(params![definition.name, definition.fingerprint, definition.version, body, now_ms as i64])?;
    Ok(())
}

pub(super) fn definitions(connection: &Connection) -> Result<Vec<StoredDefinition>> {
    let mut statement = connection.prepare_cached("SELECT body FROM definitions ORDER BY name, version")?;
    let bodies: Vec<String> = statement.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    bodies
        .iter()
        .map(|body| {
            serde_json::from_str(body).map_err(|e| {
                QueryError::Store(StoreError::backend(format!("a stored saga definition cannot be read ({e})")))
            })
        })
        .collect()
}

pub(super) fn submit(connection: &Connection, request: &NewRequest) -> Result<u64> {
    let (saga, fingerprint) = match &request.kind {
        Some((name, fingerprint)) => (Some(name.as_str()), Some(fingerprint.as_str())),
        None => (None, None),
    };
    connection
        .prepare_cached(
            "INSERT INTO requests (action, saga_id, saga, fingerprint, note, requested_at, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending')",
        )?
        .execute(params![
            request.action.as_str(),
            request.saga_id.as_ref().map(SagaId::as_str),
            saga,
            fingerprint,
            request.note,
            request.at_ms as i64
        ])?;
    Ok(connection.last_insert_rowid() as u64)
}

const REQUEST_COLUMNS: &str = "id, action, saga_id, saga, note, requested_at, state, taken_by, result, done_at";

fn request(row: &rusqlite::Row<'_>) -> rusqlite::Result<Request> {
    let action: String = row.get(1)?;
    let state: String = row.get(6)?;
    Ok(Request {
        id: row.get::<_, i64>(0)? as u64,
        action: RequestAction::parse(&action).unwrap_or(RequestAction::Sweep),
        saga_id: row.get::<_, Option<String>>(2)?.map(SagaId::new),
        saga: row.get(3)?,
        note: row.get(4)?,
        requested_at_ms: row.get::<_, i64>(5)? as u64,
        state: RequestState::parse(&state).unwrap_or(RequestState::Failed),
        taken_by: row.get(7)?,
        result: row.get(8)?,
        done_at_ms: row.get::<_, Option<i64>>(9)?.map(|t| t as u64),
    })
}

pub(super) fn take_requests(
    connection: &Connection,
    owner: &str,
    kinds: &[SagaKind],
    limit: usize,
    now_ms: u64,
    retake_after_ms: u64,
) -> Result<Vec<Request>> {
    let open: Vec<(i64, Option<String>, Option<String>)> = connection
        .prepare_cached(
            "SELECT id, saga, fingerprint FROM requests
             WHERE state = 'pending' OR (state = 'taken' AND taken_at <= ?1) ORDER BY id",
        )?
        .query_map([now_ms.saturating_sub(retake_after_ms) as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut taken = Vec::new();
    for (id, saga, fingerprint) in open {
        if taken.len() >= limit {
            break;
        }
        let ours = match (&saga, &fingerprint) {
            (Some(name), Some(fingerprint)) => kinds.iter().any(|k| k.name == *name && k.fingerprint == *fingerprint),
            _ => true,
        };
        if !ours {
            continue;
        }
        connection
            .prepare_cached("UPDATE requests SET state = 'taken', taken_by = ?2, taken_at = ?3 WHERE id = ?1")?
            .execute(params![id, owner, now_ms as i64])?;
        let row = connection
            .prepare_cached(&format!("SELECT {REQUEST_COLUMNS} FROM requests WHERE id = ?1"))?
            .query_row([id], request)?;
        taken.push(row);
    }
    Ok(taken)
}

pub(super) fn finish_request(
    connection: &Connection,
    id: u64,
    state: RequestState,
    result: &str,
    at_ms: u64,
) -> Result<()> {
    connection
        .prepare_cached("UPDATE requests SET state = ?2, result = ?3, done_at = ?4 WHERE id = ?1")?
        .execute(params![id as i64, state.as_str(), result, at_ms as i64])?;
    Ok(())
}

pub(super) fn requests(connection: &Connection, limit: usize) -> Result<Vec<Request>> {
    let mut statement =
        connection.prepare_cached(&format!("SELECT {REQUEST_COLUMNS} FROM requests ORDER BY id DESC LIMIT ?1"))?;
    Ok(statement.query_map([limit as i64], request)?.collect::<rusqlite::Result<_>>()?)
}
