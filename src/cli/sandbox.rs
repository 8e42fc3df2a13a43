//! `handoff sandbox`: the WhatsApp Cloud API simulator on its own, loaded
//! with the approved templates of a templates directory, posting webhooks to
//! a URL, until Ctrl-C or SIGTERM.

use super::fail;
use crate::dsl::diagnostic::Sources;
use crate::render::{Templates, APPROVED_FILE};
use crate::whatsapp::sandbox::{self, Sandbox, SandboxConfig, SandboxTemplate, CONTROL_ROUTES};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct SandboxArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9090")]
    listen: String,
    /// Templates directory; its `whatsapp.yaml` lists the approved templates.
    #[arg(long, value_name = "DIR", default_value = "templates")]
    templates: PathBuf,
    /// Where status and inbound webhooks are POSTed, e.g.
    /// http://127.0.0.1:8080/webhooks/meta/acme.
    #[arg(long, value_name = "URL")]
    webhook: Option<String>,
    /// The environment variable holding the Meta app secret that signs webhooks.
    #[arg(long, value_name = "VAR")]
    app_secret_env: Option<String>,
}

pub fn run(args: SandboxArgs) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HANDOFF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let app_secret = match &args.app_secret_env {
        Some(var) => match std::env::var(var) {
            Ok(secret) if !secret.is_empty() => Some(secret),
            _ => {
                return fail(format!(
                    "`--app-secret-env {var}`: the environment variable `{var}` is not set; export the app secret in it"
                ))
            }
        },
        None => None,
    };
    let display = args.templates.display().to_string();
    if !args.templates.is_dir() {
        return fail(format!(
            "templates directory `{display}` does not exist; pass `--templates DIR`"
        ));
    }
    let mut sources = Sources::default();
    let (templates, diagnostics) = Templates::load(&args.templates, &display, &mut sources);
    let templates = SandboxTemplate::all_from(&templates);
    let problems = diagnostics.iter().filter(|d| d.is_error()).count();
    let config = SandboxConfig {
        templates,
        app_secret,
        webhook_url: args.webhook.clone(),
        ..SandboxConfig::default()
    };
    let template_count = config.templates.len();
    let sandbox = match Sandbox::new(config) {
        Ok(s) => Arc::new(s),
        Err(e) => return fail(e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start: {e}")),
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(&args.listen).await {
            Ok(l) => l,
            Err(e) => return fail(format!("cannot listen on {}: {e}", args.listen)),
        };
        let address = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| args.listen.clone());
        println!("handoff sandbox (WhatsApp Cloud API simulator) listening on http://{address}");
        println!("  base URL   http://{address}  (sends: POST /{{version}}/{{phone_number_id}}/messages, any token)");
        println!("  templates  {display}/{APPROVED_FILE}: {template_count} approved");
        if problems > 0 {
            println!("             {problems} left out with errors; `handoff check` shows them");
        }
        match (&args.webhook, &args.app_secret_env) {
            (Some(url), Some(var)) => println!("  webhooks   {url}, signed with ${var}"),
            (Some(url), None) => println!(
                "  webhooks   {url}, unsigned (handoff refuses them; pass --app-secret-env VAR)"
            ),
            (None, _) => println!("  webhooks   not sent (pass --webhook URL)"),
        }
        println!("  control API");
        for (method, path, what) in CONTROL_ROUTES {
            println!("    {method:<6} {path:<20} {what}");
        }
        match sandbox::serve(sandbox, listener, crate::server::shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(format!("sandbox error: {e}")),
        }
    })
}
