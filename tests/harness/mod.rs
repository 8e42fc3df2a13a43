//! What the integration tests share: a database of each kind there is (a
//! SQLite file; a PostgreSQL schema of its own, dropped when the test ends,
//! when `HANDOFF_TEST_POSTGRES_URL` names a server), the real server started
//! on `127.0.0.1:0` over it with the bundled rules, and counting the rows a
//! request left behind.

#![allow(dead_code)]

use handoff::config::{Config, Overrides};
use serde_json::Value;
use sqlx_core::connection::Connection;
use std::collections::BTreeMap;
use std::path::PathBuf;

pub const POSTGRES_ENV: &str = "HANDOFF_TEST_POSTGRES_URL";

/// The project's root, for the bundled rules and templates.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A database for one test.
pub enum Db {
    Sqlite(tempfile::TempDir),
    Postgres { base: String, schema: String },
}

impl Db {
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

    /// How many rows `table` holds.
    pub async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT count(*) FROM {table}");
        match self {
            Db::Sqlite(dir) => {
                let c = rusqlite::Connection::open(dir.path().join("handoff.db")).unwrap();
                c.query_row(&sql, [], |r| r.get(0)).unwrap()
            }
            Db::Postgres { .. } => {
                let mut c = sqlx_postgres::PgConnection::connect(&self.url())
                    .await
                    .unwrap();
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
            let (base, schema) = (base.clone(), schema.clone());
            // Drop runs outside any runtime: a thread of its own with one.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(mut c) = sqlx_postgres::PgConnection::connect(&base).await {
                        let _ = sqlx_core::query::query::<sqlx_postgres::Postgres>(&format!(
                            "DROP SCHEMA IF EXISTS {schema} CASCADE"
                        ))
                        .execute(&mut c)
                        .await;
                    }
                });
            })
            .join();
        }
    }
}

/// A fresh database of each kind there is; PostgreSQL says when it skips.
pub async fn databases() -> Vec<Db> {
    let mut dbs = vec![Db::Sqlite(tempfile::tempdir().unwrap())];
    match std::env::var(POSTGRES_ENV) {
        Ok(base) if !base.is_empty() => {
            let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
            let mut c = sqlx_postgres::PgConnection::connect(&base)
                .await
                .unwrap_or_else(|e| {
                    panic!("{POSTGRES_ENV} is set but PostgreSQL cannot be reached: {e}")
                });
            sqlx_core::query::query::<sqlx_postgres::Postgres>(&format!("CREATE SCHEMA {schema}"))
                .execute(&mut c)
                .await
                .unwrap();
            dbs.push(Db::Postgres { base, schema });
        }
        _ => eprintln!("skipping PostgreSQL: set {POSTGRES_ENV}=postgres://..."),
    }
    dbs
}

/// The service over real HTTP, stopped when dropped.
pub struct Server {
    pub base: String,
    pub client: reqwest::Client,
    _shutdown: tokio::sync::oneshot::Sender<()>,
    _config_dir: tempfile::TempDir,
}

impl Server {
    /// Starts the service on `db` with the configuration `toml` (its
    /// `env:NAME` secrets from `env`), the bundled rules and templates, and
    /// the WhatsApp sandbox.
    pub async fn start(db: &Db, toml: &str, env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("handoff.toml");
        std::fs::write(&file, toml).unwrap();
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let flags = Overrides {
            listen: Some("127.0.0.1:0".into()),
            database: Some(db.url()),
            rules: Some(root().join("rules")),
        };
        let mut config = Config::load(Some(&file), &env, &flags).unwrap();
        config.templates = Some(root().join("templates"));
        let state = handoff::server::state(config).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(handoff::server::serve(state, listener, async {
            let _ = rx.await;
        }));
        Server {
            base,
            client: reqwest::Client::new(),
            _shutdown: tx,
            _config_dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// A response's status and JSON body (`Null` when it has none).
pub async fn answer(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}
