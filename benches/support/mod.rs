//! What the benchmarks share: a fresh PostgreSQL schema on the server
//! `HANDOFF_BENCH_POSTGRES_URL` names, for the runs they make on PostgreSQL
//! too.

const ENV: &str = "HANDOFF_BENCH_POSTGRES_URL";

/// A schema of its own for one run, dropped with [`Schema::drop`].
pub struct Schema {
    base: String,
    name: String,
    /// The database URL with this schema as the search path.
    pub url: String,
}

impl Schema {
    /// A new schema, or `None` (saying so) when the variable is not set;
    /// `what` ends the message: "to measure `what` on it too".
    pub async fn create(what: &str) -> Option<Schema> {
        let base = match std::env::var(ENV) {
            Ok(url) if !url.is_empty() => url,
            _ => {
                eprintln!(
                    "skipping PostgreSQL: set {ENV}=postgres://... to measure {what} on it too"
                );
                return None;
            }
        };
        let name = format!("bench_{}", uuid::Uuid::now_v7().simple());
        execute(&base, &format!("CREATE SCHEMA {name}")).await;
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{name}");
        Some(Schema { base, name, url })
    }

    /// Drops the schema and everything in it.
    pub async fn drop(self) {
        execute(&self.base, &format!("DROP SCHEMA {} CASCADE", self.name)).await;
    }
}

/// Runs one statement on the PostgreSQL server at `url`.
async fn execute(url: &str, sql: &str) {
    use sqlx_core::connection::Connection;
    let mut c = sqlx_postgres::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("{ENV}: cannot connect: {e}"));
    sqlx_core::query::query::<sqlx_postgres::Postgres>(sql)
        .execute(&mut c)
        .await
        .expect("statement");
}
