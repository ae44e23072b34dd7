//! The schema of the store in its PostgreSQL schema, migrated under an advisory lock.

use sqlx::{PgPool, Row};

use super::{pg_error, safe};
use crate::codec::{self, Sealing};
use crate::id::SagaId;
use crate::seal::Keyring;
use crate::store::StoreError;

/// The newest schema version this build knows.
pub(super) const SCHEMA_VERSION: i64 = 3;

/// What marks a PostgreSQL schema as a saga store.
const APPLICATION: &str = "saga-runtime";

/// The migrations, in order: version `n` is `MIGRATIONS[n - 1]`. `{s}` is the schema.
/// Version 2: the rate-limit buckets shared by every worker; tombstones of pruned sagas, and
/// the index of finished sagas by the time they finished that pruning walks. Version 3: the
/// saga types' definitions and operators' requests, for tools.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE {s}.sagas (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        version     INTEGER NOT NULL,
        fingerprint TEXT NOT NULL,
        status      TEXT NOT NULL,
        stage       TEXT NOT NULL,
        input       BYTEA NOT NULL,
        records     BIGINT NOT NULL,
        head        BYTEA NOT NULL,
        created_at  BIGINT NOT NULL,
        updated_at  BIGINT NOT NULL,
        due_at      BIGINT,
        owner       TEXT,
        lease_until BIGINT,
        epoch       BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX sagas_due ON {s}.sagas (due_at) WHERE due_at IS NOT NULL;
    CREATE INDEX sagas_by_created ON {s}.sagas (created_at, id);
    CREATE INDEX sagas_by_status ON {s}.sagas (status, created_at, id);
    CREATE INDEX sagas_by_name ON {s}.sagas (name, created_at, id);
    CREATE INDEX sagas_held ON {s}.sagas (owner) WHERE owner IS NOT NULL;
    CREATE TABLE {s}.journal (
        saga_id TEXT NOT NULL,
        seq     BIGINT NOT NULL,
        at      BIGINT NOT NULL,
        epoch   BIGINT NOT NULL,
        kind    TEXT NOT NULL,
        step    TEXT,
        body    BYTEA NOT NULL,
        hash    BYTEA NOT NULL,
        PRIMARY KEY (saga_id, seq)
    );
",
    "
    CREATE TABLE {s}.limits (
        downstream   TEXT PRIMARY KEY,
        tat          BIGINT NOT NULL DEFAULT 0,
        paused_until BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE {s}.tombstones (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        version     INTEGER NOT NULL,
        fingerprint TEXT NOT NULL,
        status      TEXT NOT NULL,
        input_hash  BYTEA NOT NULL,
        head        BYTEA NOT NULL,
        created_at  BIGINT NOT NULL,
        finished_at BIGINT NOT NULL,
        pruned_at   BIGINT NOT NULL
    );
    CREATE INDEX tombstones_by_pruned ON {s}.tombstones (pruned_at, id);
    CREATE INDEX sagas_finished ON {s}.sagas (updated_at, id) WHERE status IN ('completed', 'compensated');
",
    "
    CREATE TABLE {s}.definitions (
        name        TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        version     INTEGER NOT NULL,
        body        TEXT NOT NULL,
        seen_at     BIGINT NOT NULL,
        PRIMARY KEY (name, fingerprint)
    );
    CREATE TABLE {s}.requests (
        id           BIGSERIAL PRIMARY KEY,
        action       TEXT NOT NULL,
        saga_id      TEXT,
        saga         TEXT,
        fingerprint  TEXT,
        note         TEXT NOT NULL,
        requested_at BIGINT NOT NULL,
        state        TEXT NOT NULL,
        taken_by     TEXT,
        taken_at     BIGINT,
        result       TEXT,
        done_at      BIGINT
    );
    CREATE INDEX requests_open ON {s}.requests (id) WHERE state IN ('pending', 'taken');
",
];

/// Creates or migrates the store's schema (once, however many workers start at once: under a
/// transaction-scoped advisory lock), checks that it belongs to a saga store of a version this
/// build knows, and runs the keyring check. Returns why the store refuses writes, if it does.
/// Without `create` (a reader) it creates and migrates nothing: a schema without a store, or of
/// an older version, is an error.
pub(super) async fn migrate(
    pool: &PgPool,
    schema: &str,
    location: &str,
    keys: Option<&Keyring>,
    create: bool,
) -> Result<Option<String>, StoreError> {
    let error = |action: &'static str| move |e: sqlx::Error| pg_error(location, action, e);
    let mut tx = pool.begin().await.map_err(error("migrating the store"))?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(format!("saga-runtime migration {schema}"))
        .execute(&mut *tx)
        .await
        .map_err(error("locking the migration"))?;
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1")
            .bind(schema)
            .fetch_all(&mut *tx)
            .await
            .map_err(error("reading the schema"))?;
    let version: i64 = if tables.iter().any(|t| t == "meta") {
        let marker: Option<String> = sqlx::query_scalar(safe(format!(
            "SELECT convert_from(value, 'UTF8') FROM {schema}.meta WHERE key = 'application'"
        )))
        .fetch_optional(&mut *tx)
        .await
        .map_err(error("reading the store's marker"))?;
        if marker.as_deref() != Some(APPLICATION) {
            return Err(StoreError::NotASagaStore {
                location: location.to_owned(),
                reason: format!("schema `{schema}` has a `meta` table that is not a saga store's"),
            });
        }
        let version: Option<String> = sqlx::query_scalar(safe(format!(
            "SELECT convert_from(value, 'UTF8') FROM {schema}.meta WHERE key = 'schema_version'"
        )))
        .fetch_optional(&mut *tx)
        .await
        .map_err(error("reading the schema version"))?;
        version.and_then(|v| v.parse().ok()).unwrap_or(0)
    } else if tables.is_empty() {
        0
    } else {
        return Err(StoreError::NotASagaStore {
            location: location.to_owned(),
            reason: format!("schema `{schema}` holds another application's tables ({})", tables.join(", ")),
        });
    };
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            location: location.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if !create && version == 0 {
        return Err(StoreError::NotASagaStore {
            location: location.to_owned(),
            reason: format!(
                "schema `{schema}` holds no saga store: name the schema your workers use (`PostgresOptions::schema`, the CLI's --schema)"
            ),
        });
    }
    if !create && version < SCHEMA_VERSION {
        return Err(StoreError::backend(format!(
            "`{location}` (schema `{schema}`) has schema version {version}, older than version {SCHEMA_VERSION} of this build: a reader changes nothing, so start a worker of this version once (it migrates the schema), then read it"
        )));
    }
    if version == 0 {
        sqlx::raw_sql(safe(format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE {schema}.meta (key TEXT PRIMARY KEY, value BYTEA);
             INSERT INTO {schema}.meta (key, value) VALUES ('application', convert_to('{APPLICATION}', 'UTF8'));"
        )))
        .execute(&mut *tx)
        .await
        .map_err(error("creating the store's schema"))?;
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        sqlx::raw_sql(safe(migration.replace("{s}", schema)))
            .execute(&mut *tx)
            .await
            .map_err(error("migrating the store to this version of saga-runtime"))?;
        sqlx::query(safe(format!(
            "INSERT INTO {schema}.meta (key, value) VALUES ('schema_version', convert_to($1, 'UTF8'))
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
        )))
        .bind((index + 1).to_string())
        .execute(&mut *tx)
        .await
        .map_err(error("recording the schema version"))?;
    }
    let read_only = check_keys(&mut tx, schema, location, keys).await?;
    tx.commit().await.map_err(error("migrating the store"))?;
    Ok(read_only)
}

/// Runs the keyring check of `codec` against the store's marker, and marks the store.
async fn check_keys(
    tx: &mut sqlx::PgConnection,
    schema: &str,
    location: &str,
    keys: Option<&Keyring>,
) -> Result<Option<String>, StoreError> {
    let error = |e: sqlx::Error| pg_error(location, "checking the keyring", e);
    let meta = sqlx::query(safe(format!("SELECT key, value FROM {schema}.meta WHERE key IN ('sealed', 'key_check')")))
        .fetch_all(&mut *tx)
        .await
        .map_err(error)?;
    let value =
        |key: &str| meta.iter().find(|r| r.get::<String, _>(0) == key).and_then(|r| r.get::<Option<Vec<u8>>, _>(1));
    let sealed = value("sealed").is_some_and(|v| v == b"1");
    let canary = value("key_check");
    let sample =
        sqlx::query(safe(format!("SELECT id, input FROM {schema}.sagas ORDER BY created_at DESC, id DESC LIMIT 1")))
            .fetch_optional(&mut *tx)
            .await
            .map_err(error)?
            .map(|row| (SagaId::new(row.get::<String, _>(0)), row.get::<Vec<u8>, _>(1)));
    let sealing = Sealing {
        sealed,
        canary: canary.as_deref(),
        sample: sample.as_ref().map(|(id, input)| (id, input.as_slice())),
    };
    let check = codec::check_keys(location, keys, sealing)?;
    if let Some(canary) = check.new_canary {
        sqlx::query(safe(format!(
            "INSERT INTO {schema}.meta (key, value) VALUES ('sealed', '\\x31'), ('key_check', $1)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
        )))
        .bind(canary)
        .execute(&mut *tx)
        .await
        .map_err(error)?;
    }
    Ok(check.read_only)
}
