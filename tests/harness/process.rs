//! The real `handoff` binary, for the tests that run its commands or kill
//! and restart it: each process started here ends with its handle, however
//! the test ends.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The `handoff` binary, run from the project's root.
pub fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_handoff"));
    command.current_dir(super::root());
    command
}

/// Writes `DIR/handoff.toml` as `handoff serve --config` reads it: the
/// database at `database`, the rules in `rules`, the templates in
/// `templates` (else the built-in ones), then `rest`: the accounts and
/// settings, whose `env:NAME` secrets the process is given.
pub fn write_config(
    dir: &Path,
    database: &str,
    rules: &Path,
    templates: Option<&Path>,
    rest: &str,
) {
    let mut text = format!(
        "database = \"{database}\"\nrules = \"{}\"\n",
        rules.display()
    );
    if let Some(templates) = templates {
        text.push_str(&format!("templates = \"{}\"\n", templates.display()));
    }
    text.push('\n');
    text.push_str(rest);
    std::fs::write(dir.join("handoff.toml"), text).unwrap();
}

/// Kills the process when the test ends, however it ends.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `handoff args` with `env`; returns it once it has printed its first
/// line, with that line. The rest of its output is drained, so it never
/// blocks on a full pipe.
pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> (Process, String) {
    let mut command = binary();
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    // Owned at once, so a failed start still ends the process.
    let mut child = Process(command.spawn().unwrap());
    let mut reader = BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    std::thread::spawn(move || for _ in reader.lines() {});
    (child, line.trim().to_string())
}

/// Starts `handoff serve args` with `env` (and warnings only in its log);
/// returns it once it listens, with its base URL.
pub fn serve_with(args: &[&str], env: &[(&str, &str)]) -> (Process, String) {
    let env = [&[("HANDOFF_LOG", "warn")], env].concat();
    let (child, line) = spawn(&[&["serve"], args].concat(), &env);
    let base = line
        .strip_prefix("handoff listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_string();
    (child, base)
}

/// Starts `handoff serve --config DIR/handoff.toml` on `port`, with `env`
/// (the variables the configuration's `env:` references read).
pub fn serve(dir: &Path, port: u16, env: &[(&str, &str)]) -> Process {
    let config = dir.join("handoff.toml");
    let listen = format!("127.0.0.1:{port}");
    let args = ["--config", config.to_str().unwrap(), "--listen", &listen];
    serve_with(&args, env).0
}

/// Starts `handoff sandbox` sending its webhooks, signed with `secret`, to
/// `webhook`; returns it and its base URL.
pub fn sandbox(webhook: &str, secret: &str) -> (Process, String) {
    let args = ["sandbox", "--listen", "127.0.0.1:0", "--webhook", webhook];
    let (child, line) = spawn(
        &[&args[..], &["--app-secret-env", "SANDBOX_APP_SECRET"]].concat(),
        &[("SANDBOX_APP_SECRET", secret)],
    );
    let base = line
        .rsplit(' ')
        .next()
        .filter(|u| u.starts_with("http://"))
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_string();
    (child, base)
}
