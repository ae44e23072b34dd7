//! Rate limits shared by every worker of the store: one GCRA bucket per downstream, kept in
//! the `limits` table (the theoretical arrival time of the next token, and the end of a pause
//! a `retry_after` set), taken with one `UPDATE` on the server's clock so that workers on
//! machines whose clocks disagree still share one rate.
//!
//! The buckets' writes go through a small pool of their own with `synchronous_commit = off`:
//! a token is not a checkpoint, and losing the last few milliseconds of a bucket in a server
//! crash costs at most a burst, while a synchronous commit per token would cost a disk flush.

use std::time::Duration;

use sqlx::{PgPool, Row};

use super::{pg_error, safe};
use crate::BoxFuture;
use crate::limits::{Limit, SharedLimits};
use crate::store::StoreError;

/// The server's clock, in microseconds since the Unix epoch.
const NOW: &str = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint";

pub(super) struct PgLimits {
    pub(super) pool: PgPool,
    pub(super) schema: String,
    pub(super) location: String,
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX).max(1)
}

impl SharedLimits for PgLimits {
    fn take<'a>(
        &'a self,
        downstream: &'a str,
        limit: &'a Limit,
    ) -> BoxFuture<'a, Result<Option<Duration>, StoreError>> {
        Box::pin(async move {
            let schema = &self.schema;
            let interval = micros(limit.interval());
            let tolerance = interval.saturating_mul(i64::from(limit.burst_size()));
            // Granted when the bucket is not paused and taking a token keeps the theoretical
            // arrival time within `burst` tokens of now; the row as it was says how long to
            // wait otherwise (or that it does not exist yet).
            let row = sqlx::query(safe(format!(
                "WITH n AS (SELECT {NOW} AS t),
                 taken AS (
                     UPDATE {schema}.limits l SET tat = GREATEST(l.tat, n.t) + $2
                     FROM n
                     WHERE l.downstream = $1 AND l.paused_until <= n.t AND GREATEST(l.tat, n.t) + $2 - n.t <= $3
                     RETURNING 1
                 )
                 SELECT (SELECT count(*) FROM taken), l.tat, l.paused_until, n.t
                 FROM n LEFT JOIN {schema}.limits l ON l.downstream = $1"
            )))
            .bind(downstream)
            .bind(interval)
            .bind(tolerance)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| pg_error(&self.location, "taking a rate-limit token", e))?;
            if row.get::<i64, _>(0) > 0 {
                return Ok(None);
            }
            let (tat, paused_until, now): (Option<i64>, Option<i64>, i64) = (row.get(1), row.get(2), row.get(3));
            let (Some(tat), Some(paused_until)) = (tat, paused_until) else {
                // The downstream's first token ever: make its bucket, then ask again.
                sqlx::query(safe(format!(
                    "INSERT INTO {schema}.limits (downstream) VALUES ($1) ON CONFLICT (downstream) DO NOTHING"
                )))
                .bind(downstream)
                .execute(&self.pool)
                .await
                .map_err(|e| pg_error(&self.location, "creating a rate-limit bucket", e))?;
                return Ok(Some(Duration::ZERO));
            };
            let wait = if paused_until > now {
                paused_until - now
            } else {
                (tat.max(now) + interval - now - tolerance).max(0)
            };
            Ok(Some(Duration::from_micros(wait as u64)))
        })
    }

    fn pause<'a>(&'a self, downstream: &'a str, pause: Duration) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let schema = &self.schema;
            sqlx::query(safe(format!(
                "INSERT INTO {schema}.limits (downstream, paused_until) VALUES ($1, {NOW} + $2)
                 ON CONFLICT (downstream) DO UPDATE SET paused_until = GREATEST({schema}.limits.paused_until, EXCLUDED.paused_until)"
            )))
            .bind(downstream)
            .bind(micros(pause))
            .execute(&self.pool)
            .await
            .map_err(|e| pg_error(&self.location, "pausing a downstream", e))?;
            Ok(())
        })
    }
}
