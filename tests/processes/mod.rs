//! The real `handoff` binaries for the tests that kill and restart them
//! (`crash`, `instances`): each process ends with its handle, however the
//! test ends.

use sqlx_core::connection::Connection;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Kills the process when the test ends, however it ends.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads the first line the process prints, and keeps draining the rest.
fn first_line(process: &mut Process) -> String {
    let mut reader = BufReader::new(process.0.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    std::thread::spawn(move || for _ in reader.lines() {});
    line.trim().to_string()
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `handoff sandbox` sending its webhooks, signed with `secret`, to
/// `webhook`; returns it and its base URL.
#[allow(dead_code)] // not every test that starts the server needs a sandbox
pub fn sandbox(webhook: &str, secret: &str) -> (Process, String) {
    // Owned at once, so a failed start still ends the process.
    let mut child = Process(
        Command::new(env!("CARGO_BIN_EXE_handoff"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["sandbox", "--listen", "127.0.0.1:0", "--webhook", webhook])
            .args(["--app-secret-env", "SANDBOX_APP_SECRET"])
            .env("SANDBOX_APP_SECRET", secret)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let line = first_line(&mut child);
    let base = line
        .rsplit(' ')
        .next()
        .filter(|u| u.starts_with("http://"))
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_string();
    (child, base)
}

/// Starts `handoff serve --config DIR/handoff.toml` on `port`, with `env`
/// (the variables the configuration's `env:` references read).
pub fn serve(dir: &Path, port: u16, env: &[(&str, &str)]) -> Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_handoff"));
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["serve", "--config"])
        .arg(dir.join("handoff.toml"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("HANDOFF_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = Process(command.spawn().unwrap());
    let line = first_line(&mut child);
    assert!(line.starts_with("handoff listening on "), "{line}");
    child
}

#[allow(dead_code)] // only the PostgreSQL tests make databases
/// A fresh database on the test server, dropped when the test ends.
pub struct Database {
    admin: String,
    name: String,
    pub url: String,
}

#[allow(dead_code)]
impl Database {
    pub async fn create(admin: &str) -> Database {
        let name = format!("handoff_test_{}", uuid::Uuid::now_v7().simple());
        let mut c = sqlx_postgres::PgConnection::connect(admin)
            .await
            .unwrap_or_else(|e| {
                panic!("HANDOFF_TEST_POSTGRES_URL is set but PostgreSQL cannot be reached: {e}")
            });
        sqlx_core::query::query::<sqlx_postgres::Postgres>(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await
            .unwrap();
        let mut url = sqlx_core::Url::parse(admin).unwrap();
        url.set_path(&format!("/{name}"));
        Database {
            admin: admin.to_string(),
            name,
            url: url.to_string(),
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut c) = sqlx_postgres::PgConnection::connect(&admin).await {
                    let _ = sqlx_core::query::query::<sqlx_postgres::Postgres>(&format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    ))
                    .execute(&mut c)
                    .await;
                }
            });
        })
        .join();
    }
}
