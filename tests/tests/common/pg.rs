//! Scratch PostgreSQL databases for the tests: one per test, created on the server at
//! `SAGA_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`, trust auth) and
//! dropped afterwards.

use sqlx::{Connection, PgConnection};

/// The server tests use.
pub fn admin_url() -> String {
    std::env::var("SAGA_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database that exists for one test.
pub struct ScratchDb {
    pub name: String,
    pub url: String,
}

impl ScratchDb {
    /// Creates `saga_test_<random>`; fails with how to start the server when it is not running.
    pub async fn new() -> ScratchDb {
        let admin = admin_url();
        let mut connection = PgConnection::connect(&admin).await.unwrap_or_else(|error| {
            panic!(
                "PostgreSQL is not reachable at {admin} ({error}): start it with `pg_ctlcluster --skip-systemctl-redirect 15 main start` (what .ci/run does), or point SAGA_TEST_PG_URL at a server"
            )
        });
        let name = format!("saga_test_{}", uuid::Uuid::now_v7().simple());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut connection).await.unwrap();
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base);
        ScratchDb { url: format!("{base}/{name}"), name }
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let (admin, name) = (admin_url(), self.name.clone());
        // A runtime of its own: the test's may be shutting down.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                if let Ok(mut connection) = PgConnection::connect(&admin).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                        .execute(&mut connection)
                        .await;
                }
            });
        })
        .join();
    }
}
