//! `handoff operator add`: creates an operator who signs in to the inbox of
//! one account. The password comes from `HANDOFF_OPERATOR_PASSWORD` or, when
//! that is not set, the first line of standard input; it is never a flag, so
//! it stays out of shell history and process lists.

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
    }
}

fn add(args: AddArgs) -> ExitCode {
    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let flags = Overrides {
        database: args.database.clone(),
        ..Overrides::default()
    };
    let config = match Config::load(args.config.as_deref(), &env, &flags) {
        Ok(c) => c,
        Err(e) => return fail(format!("configuration: {e}")),
    };
    if !config.accounts.iter().any(|a| a.id == args.account) {
        let known: Vec<&str> = config.accounts.iter().map(|a| a.id.as_str()).collect();
        return fail(format!(
            "no account `{}` in the configuration; the accounts are: {}",
            args.account,
            known.join(", ")
        ));
    }
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
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start: {e}")),
    };
    runtime.block_on(async {
        let store = match crate::store::Store::open(&config.database).await {
            Ok(s) => s,
            Err(e) => {
                return fail(format!(
                    "cannot open the database `{}`: {e}",
                    crate::config::redact_url(&config.database)
                ))
            }
        };
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
