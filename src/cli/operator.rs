//! `handoff operator add`: creates an operator who signs in to the inbox of
//! one account. The password comes from `HANDOFF_OPERATOR_PASSWORD` or, when
//! that is not set, the first line of standard input; it is never a flag, so
//! it stays out of shell history and process lists. `handoff operator list`:
//! an account's operators, with whether they are available for queues.

use super::fail;
use crate::config::{Config, Overrides};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

/// The shortest password accepted.
const MIN_PASSWORD: usize = 10;

#[derive(clap::Subcommand, Debug)]
pub enum OperatorCommand {
    /// Create an operator of an account.
    Add(AddArgs),
    /// List an account's operators and their availability.
    List(ListArgs),
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// The account (its `id` in handoff.toml; `demo` without one).
    #[arg(long)]
    account: String,
    /// The configuration file [default: handoff.toml when present].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Database URL [default: the configuration's].
    #[arg(long, value_name = "URL")]
    database: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct AddArgs {
    /// The account the operator works for (its `id` in handoff.toml; `demo` without one).
    #[arg(long)]
    account: String,
    /// The email the operator signs in with.
    #[arg(long)]
    email: String,
    /// The name shown to colleagues on threads.
    #[arg(long)]
    name: String,
    /// The configuration file [default: handoff.toml when present].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Database URL [default: the configuration's].
    #[arg(long, value_name = "URL")]
    database: Option<String>,
}

pub fn run(command: OperatorCommand) -> ExitCode {
    match command {
        OperatorCommand::Add(args) => add(args),
        OperatorCommand::List(args) => list(args),
    }
}

/// The configuration, with `database` over it, and `account` in it.
fn account_config(
    config: Option<&std::path::Path>,
    database: Option<String>,
    account: &str,
) -> Result<(Config, std::collections::BTreeMap<String, String>), ExitCode> {
    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let flags = Overrides {
        database,
        ..Overrides::default()
    };
    let config =
        Config::load(config, &env, &flags).map_err(|e| fail(format!("configuration: {e}")))?;
    if !config.accounts.iter().any(|a| a.id == account) {
        let known: Vec<&str> = config.accounts.iter().map(|a| a.id.as_str()).collect();
        return Err(fail(format!(
            "no account `{account}` in the configuration; the accounts are: {}",
            known.join(", ")
        )));
    }
    Ok((config, env))
}

/// Runs `work` with the store on a runtime of its own.
fn with_store(
    config: &Config,
    work: impl AsyncFnOnce(crate::store::Store) -> ExitCode,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start: {e}")),
    };
    runtime.block_on(async {
        match crate::store::Store::open(&config.database).await {
            Ok(store) => work(store).await,
            Err(e) => fail(format!(
                "cannot open the database `{}`: {e}",
                crate::config::redact_url(&config.database)
            )),
        }
    })
}

fn list(args: ListArgs) -> ExitCode {
    let (config, _) =
        match account_config(args.config.as_deref(), args.database.clone(), &args.account) {
            Ok(c) => c,
            Err(code) => return code,
        };
    let idle = config
        .account(&args.account)
        .map(|a| a.idle)
        .unwrap_or_default();
    with_store(&config, async |store| {
        match store.operators(&args.account).await {
            Ok(operators) if operators.is_empty() => {
                println!(
                    "account `{}` has no operators yet; add one with `handoff operator add`",
                    args.account
                );
                ExitCode::SUCCESS
            }
            Ok(operators) => {
                let since =
                    chrono::Utc::now() - chrono::Duration::from_std(idle).unwrap_or_default();
                let width = operators
                    .iter()
                    .map(|(o, _)| o.email.len())
                    .max()
                    .unwrap_or(5)
                    .max(5);
                println!(
                    "{:<width$}  {:<20}  {:<9}  last active in the inbox",
                    "email", "name", "status"
                );
                for (o, p) in operators {
                    let seen = p
                        .seen_at
                        .as_deref()
                        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
                    let active = seen.is_some_and(|s| s >= since);
                    let status = match (p.available, active) {
                        (true, true) => "available",
                        (true, false) => "idle",
                        (false, _) => "away",
                    };
                    let seen = seen.map_or("never".to_string(), |s| {
                        s.format("%Y-%m-%d %H:%M UTC").to_string()
                    });
                    println!("{:<width$}  {:<20}  {status:<9}  {seen}", o.email, o.name);
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e.to_string()),
        }
    })
}

fn add(args: AddArgs) -> ExitCode {
    let (config, env) =
        match account_config(args.config.as_deref(), args.database.clone(), &args.account) {
            Ok(c) => c,
            Err(code) => return code,
        };
    let email = args.email.trim().to_lowercase();
    if !email.contains('@') || email.len() > 254 || email.chars().any(char::is_whitespace) {
        return fail(format!("`{}` is not an email address", args.email));
    }
    let name = args.name.trim();
    if name.is_empty() || name.chars().count() > 80 || name.chars().any(char::is_control) {
        return fail("`--name` must be 1 to 80 printable characters");
    }
    let password = match env.get("HANDOFF_OPERATOR_PASSWORD") {
        Some(p) => p.clone(),
        None => {
            eprintln!("password for {email} (then Enter):");
            let mut line = String::new();
            if let Err(e) = std::io::stdin().lock().read_line(&mut line) {
                return fail(format!("cannot read the password: {e}"));
            }
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    if password.chars().count() < MIN_PASSWORD {
        return fail(format!(
            "the password must have at least {MIN_PASSWORD} characters"
        ));
    }
    let hash = match crate::server::inbox::hash_password(&password) {
        Ok(h) => h,
        Err(e) => return fail(e),
    };
    with_store(&config, async |store| {
        match store
            .create_operator(&args.account, &email, name, &hash)
            .await
        {
            Ok(operator) => {
                println!(
                    "operator {} ({}) of account `{}` can sign in at /inbox",
                    operator.name, operator.email, operator.account
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(e.to_string()),
        }
    })
}
