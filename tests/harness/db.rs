//! Databases for one test: SQLite always, PostgreSQL when
//! `HANDOFF_TEST_POSTGRES_URL` names a server (and a clear message that its
//! tests skip when it does not). Each is dropped when the test ends, however
//! it ends, so tests run in parallel.

use handoff::store::Store;
use sqlx_core::connection::Connection;
use sqlx_postgres::PgConnection;
use std::collections::BTreeMap;

pub const POSTGRES_ENV: &str = "HANDOFF_TEST_POSTGRES_URL";

/// The PostgreSQL server to test against, or `None` (having said so) to skip it.
pub fn postgres() -> Option<String> {
    match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("skipping PostgreSQL: set {POSTGRES_ENV}=postgres://...");
            None
        }
    }
}

/// A connection to the server the variable names; failing to reach it is a
/// failure, not a skip.
async fn connect(url: &str) -> PgConnection {
    PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("{POSTGRES_ENV} is set but PostgreSQL cannot be reached: {e}"))
}

async fn execute(c: &mut PgConnection, sql: &str) -> Result<(), sqlx_core::Error> {
    sqlx_core::query::query::<sqlx_postgres::Postgres>(sql)
        .execute(c)
        .await
        .map(|_| ())
}

/// Runs `sql` at `url`, ignoring failures, from a drop: that runs outside
/// any runtime, so on a thread of its own with one.
fn clean_up(url: String, sql: String) {
    let _ = std::thread::spawn(move || run_once(&url, &sql)).join();
}

fn run_once(url: &str, sql: &str) -> bool {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return false;
    };
    rt.block_on(async {
        match PgConnection::connect(url).await {
            Ok(mut c) => {
                let _ = execute(&mut c, "SET lock_timeout = '300ms'").await;
                execute(&mut c, sql).await.is_ok()
            }
            Err(_) => false,
        }
    })
}

/// Drops a test's schema without waiting for it. The service under test
/// runs on the test's own runtime, and its workers may hold a transaction
/// on the schema when the test ends: waiting for the drop there would
/// block the very thread they need to finish (the drop would wait on their
/// locks forever). So the drop runs beside the test, trying again until the
/// workers are gone; a schema it could not drop before the process ended is
/// dropped by a later run (see [`drop_stale_schemas`]).
fn drop_schema_later(url: String, schema: String) {
    let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
    // Mostly nothing holds the schema and it drops at once.
    let (first_url, first_sql) = (url.clone(), sql.clone());
    let dropped = std::thread::spawn(move || run_once(&first_url, &first_sql))
        .join()
        .unwrap_or(false);
    if dropped {
        return;
    }
    std::thread::spawn(move || {
        for _ in 0..60 {
            if run_once(&url, &sql) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    });
}

/// Drops test schemas (`t_` and a UUIDv7, which starts with its creation
/// time in milliseconds) more than an hour old: left by a run that ended
/// before its drops did.
async fn drop_stale_schemas(c: &mut PgConnection) {
    let Ok(rows) = sqlx_core::query::query::<sqlx_postgres::Postgres>(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\\_%'",
    )
    .fetch_all(&mut *c)
    .await
    else {
        return;
    };
    let hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis().saturating_sub(3_600_000))
        .unwrap_or(0);
    for row in rows {
        let Ok(name) = sqlx_core::row::Row::try_get::<String, _>(&row, 0) else {
            continue;
        };
        let created = name
            .get(2..14)
            .and_then(|hex| u128::from_str_radix(hex, 16).ok());
        if created.is_some_and(|ms| ms < hour_ago) {
            let _ = execute(c, "SET lock_timeout = '1s'").await;
            let _ = execute(c, &format!("DROP SCHEMA IF EXISTS {name} CASCADE")).await;
        }
    }
}

/// A database for one test: a SQLite file, or a PostgreSQL schema.
pub enum Db {
    Sqlite(tempfile::TempDir),
    Postgres { base: String, schema: String },
}

impl Db {
    /// A SQLite file in a directory of its own.
    pub fn sqlite() -> Db {
        Db::Sqlite(tempfile::tempdir().unwrap())
    }

    /// A fresh schema on the PostgreSQL server at `base`.
    pub async fn postgres(base: &str) -> Db {
        let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
        let mut c = connect(base).await;
        drop_stale_schemas(&mut c).await;
        execute(&mut c, &format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        Db::Postgres {
            base: base.to_string(),
            schema,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres { .. } => "postgres",
        }
    }

    pub fn url(&self) -> String {
        match self {
            Db::Sqlite(dir) => format!("sqlite://{}", dir.path().join("handoff.db").display()),
            Db::Postgres { base, schema } => {
                let sep = if base.contains('?') { '&' } else { '?' };
                format!("{base}{sep}options=-c%20search_path%3D{schema}")
            }
        }
    }

    /// The store on this database, as an instance of the service opens it.
    pub async fn open(&self) -> Store {
        Store::open(&self.url())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", self.name()))
    }

    /// How many rows `table` holds.
    pub async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT count(*) FROM {table}");
        match self {
            Db::Sqlite(dir) => {
                let c = rusqlite::Connection::open(dir.path().join("handoff.db")).unwrap();
                c.query_row(&sql, [], |r| r.get(0)).unwrap()
            }
            Db::Postgres { .. } => {
                let mut c = connect(&self.url()).await;
                let row = sqlx_core::query::query::<sqlx_postgres::Postgres>(&sql)
                    .fetch_one(&mut c)
                    .await
                    .unwrap();
                sqlx_core::row::Row::get::<i64, _>(&row, 0)
            }
        }
    }

    /// The row counts of the tables a lead or an event writes.
    pub async fn counts(&self) -> BTreeMap<&'static str, i64> {
        let mut out = BTreeMap::new();
        for table in [
            "leads",
            "identities",
            "messages",
            "decisions",
            "outbox",
            "processed",
            "webhook_events",
        ] {
            out.insert(table, self.count(table).await);
        }
        out
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Db::Postgres { base, schema } = self {
            drop_schema_later(base.clone(), schema.clone());
        }
    }
}

/// A fresh database of each kind there is.
pub async fn databases() -> Vec<Db> {
    let mut dbs = vec![Db::sqlite()];
    if let Some(base) = postgres() {
        dbs.push(Db::postgres(&base).await);
    }
    dbs
}

/// A whole database of its own on the PostgreSQL server, for the real
/// binaries to share; dropped, whoever is still connected, when the test ends.
pub struct PgDatabase {
    admin: String,
    name: String,
    pub url: String,
}

impl PgDatabase {
    pub async fn create(admin: &str) -> PgDatabase {
        let name = format!("handoff_test_{}", uuid::Uuid::now_v7().simple());
        let mut c = connect(admin).await;
        execute(&mut c, &format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let mut url = sqlx_core::Url::parse(admin).unwrap();
        url.set_path(&format!("/{name}"));
        PgDatabase {
            admin: admin.to_string(),
            name,
            url: url.to_string(),
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        clean_up(
            self.admin.clone(),
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}
