//! `handoff serve`: the service. With no configuration it listens on
//! 127.0.0.1:8080 with SQLite in `handoff.db`, the bundled rules, and a demo
//! account whose API key it prints.

use super::fail;
use crate::config::{Config, Overrides};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The configuration file [default: handoff.toml when present].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Database URL: sqlite://PATH, or postgres://USER:PASSWORD@HOST/DB for many instances.
    #[arg(long, value_name = "URL")]
    database: Option<String>,
    /// The rules directory.
    #[arg(long, value_name = "DIR")]
    rules: Option<PathBuf>,
}

pub fn run(args: ServeArgs) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HANDOFF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=info")),
        )
        // Logs on standard error; standard output carries the start banner.
        .with_writer(std::io::stderr)
        .try_init();
    // All of the environment: `HANDOFF_*` overrides, and the variables that
    // `env:VAR` secret references in the file name.
    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let flags = Overrides {
        listen: args.listen,
        database: args.database,
        rules: args.rules,
    };
    let config = match Config::load(args.config.as_deref(), &env, &flags) {
        Ok(c) => c,
        Err(e) => return fail(format!("configuration: {e}")),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start: {e}")),
    };
    runtime.block_on(async move {
        let listen = config.listen;
        let demo = config.demo_key.clone();
        let database = crate::config::redact_url(&config.database);
        let rules = config.rules.display().to_string();
        let state = match crate::server::state(config).await {
            Ok(s) => s,
            Err(e) => return fail(e),
        };
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => return fail(format!("cannot listen on {listen}: {e}")),
        };
        let address = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| listen.to_string());
        let hash = state.ruleset().map(|r| r.hash[..12].to_string()).unwrap_or_default();
        println!("handoff listening on http://{address}");
        println!("  database  {database}");
        println!("  rules     {rules} (ruleset {hash})");
        let delivery = &state.config.delivery;
        if delivery.sandbox {
            let first = state.config.accounts.first().map(|a| a.id.clone()).unwrap_or_default();
            println!("  whatsapp  sandbox (no token configured): every send goes to the simulator at http://{address}/sandbox/{{account}}");
            let key = demo.as_ref().map_or("<the account's API key>", |k| k.expose());
            println!("            what it received: curl -s http://{address}/sandbox/{first}/_sandbox/messages -H 'Authorization: Bearer {key}'");
        } else {
            println!("  whatsapp  {} {}", delivery.whatsapp_base, delivery.whatsapp_version);
        }
        if let Some(key) = demo {
            println!("  demo account API key: {}", key.expose());
            println!("  try: curl -s http://{address}/v1/leads -H 'Authorization: Bearer {}' -H 'Content-Type: application/json' -d @examples/leads/aisha-api.json", key.expose());
        }
        match crate::server::serve(state, listener, crate::server::shutdown_signal()).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => fail(format!("server error: {e}")),
        }
    })
}

/// `handoff api-key`: a new API key and the hash to put in `handoff.toml`.
pub fn api_key() -> ExitCode {
    let key = crate::config::new_api_key();
    println!("key:   {key}");
    println!("hash:  sha256:{}", crate::config::hash_api_key(&key));
    println!(
        "Give the key to the client; put the hash in the account's `api_keys` in handoff.toml."
    );
    ExitCode::SUCCESS
}
