//! The HTTP service: `app(state)` builds the router that tests drive, and
//! `serve(config, listener, shutdown)` runs it until shutdown. Routes live in
//! the submodules; errors in [`error`].

pub mod error;
pub mod extract;
pub mod inbox;
mod leads;
pub mod metrics;
pub mod openapi;
pub mod queues;
pub mod threads;
mod webhooks;
pub mod workers;

// The delivery worker's routes and sandbox numbers, where callers knew them.
pub use workers::delivery;

use crate::config::{Account, Config};
use crate::dsl::diagnostic::{render, Diagnostic, Sources};
use crate::ruleset::{load, Ruleset};
use crate::store::Store;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::{Json, Router};
use error::ApiError;
use extract::ApiAccount;
use metrics::Labels;
use serde::Serialize;
use serde_json::Value;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The largest request body accepted.
pub const BODY_LIMIT: usize = 1 << 20;

/// The rules in force, and what the last load attempt found.
pub struct Rules {
    pub ruleset: Option<Arc<Ruleset>>,
    pub loaded_at: chrono::DateTime<chrono::Utc>,
    /// Diagnostics of the last attempt, rendered; errors mean the previous
    /// ruleset (if any) stayed in force.
    pub last_attempt: Vec<Value>,
    pub last_attempt_ok: bool,
}

/// Everything a request handler needs.
pub struct AppState {
    pub config: Config,
    pub store: Store,
    pub rules: RwLock<Rules>,
    /// Wakes the webhook worker when events are stored.
    pub work: tokio::sync::Notify,
    /// Wakes the delivery worker when messages are queued.
    pub outbox: tokio::sync::Notify,
    /// Wakes the queue worker: a thread waits, or someone became available.
    pub queues: tokio::sync::Notify,
    /// Changes on threads, for the inbox's live updates.
    pub thread_changes: tokio::sync::broadcast::Sender<threads::ThreadChanged>,
    pub metrics: metrics::Metrics,
}

impl AppState {
    /// Counts a recorded lead and its decision in the metrics.
    pub(crate) fn count_decision(&self, account: &str, channel: &str, response: &Value) {
        let created = if response["created"].as_bool().unwrap_or(false) {
            "true"
        } else {
            "false"
        };
        let decision = &response["decision"];
        self.metrics.add(
            "handoff_leads_total",
            &[
                ("account", account),
                ("channel", channel),
                ("created", created),
            ],
            1,
        );
        let rule = if decision["otherwise"].as_bool().unwrap_or(false) {
            "otherwise"
        } else {
            decision["rules"]
                .as_array()
                .and_then(|r| r.last())
                .and_then(Value::as_str)
                .unwrap_or("none")
        };
        let outcome = decision["handoff"]["outcome"].as_str().unwrap_or("none");
        let playbook = decision["playbook"].as_str().unwrap_or("");
        self.metrics.add(
            "handoff_decisions_total",
            &[("playbook", playbook), ("rule", rule), ("outcome", outcome)],
            1,
        );
    }

    /// The ruleset in force, if any loaded.
    pub fn ruleset(&self) -> Option<Arc<Ruleset>> {
        self.rules.read().ok().and_then(|r| r.ruleset.clone())
    }

    /// The account a request's bearer token belongs to.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<&Account, ApiError> {
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            // The scheme name is case-insensitive (RFC 9110).
            .and_then(|v| {
                v.get(..7)
                    .filter(|p| p.eq_ignore_ascii_case("bearer "))
                    .map(|_| &v[7..])
            })
            .map(str::trim)
            .ok_or(ApiError::Unauthorized)?;
        self.config
            .account_for_key(token)
            .ok_or(ApiError::Unauthorized)
    }

    /// Each playbook whose `sender` names a WhatsApp number that `account`
    /// (which may use the playbook) does not list: its messages would have
    /// no number to go from.
    fn unknown_senders(account: &Account, ruleset: &Ruleset) -> Vec<String> {
        if account.whatsapp.is_empty() {
            return Vec::new();
        }
        let mut found = Vec::new();
        for (name, playbook) in &ruleset.playbooks {
            let usable = account.playbooks.is_empty() || account.playbooks.contains(name);
            let Some(sender) = &playbook.compiled.schema.sender else {
                continue;
            };
            if usable && !account.whatsapp.iter().any(|w| &w.key == sender) {
                found.push(format!(
                    "playbook `{name}` sends from `{sender}`, which account `{}` does not list in `accounts.whatsapp`",
                    account.id
                ));
            }
        }
        found
    }

    fn warn_unknown_senders(&self, ruleset: &Ruleset) {
        for account in &self.config.accounts {
            let unmanaged = queues::unmanaged(account, ruleset);
            for warning in Self::unknown_senders(account, ruleset)
                .into_iter()
                .chain(unmanaged)
            {
                tracing::warn!(account = %account.id, "{warning}");
            }
        }
    }

    /// Loads the rules from disk and, when they check, swaps them in.
    /// A broken edit never replaces a working ruleset.
    pub fn reload(&self) -> bool {
        let loaded = load(&self.config.rules, self.config.templates.as_deref());
        let diagnostics = diagnostics_json(&loaded.diagnostics, &loaded.sources);
        let ok = loaded.ruleset.is_some();
        self.metrics.add(
            "handoff_rules_reloads_total",
            &[("result", if ok { "ok" } else { "rejected" })],
            1,
        );
        match &loaded.ruleset {
            Some(r) => {
                tracing::info!(ruleset = %&r.hash[..12], playbooks = r.playbooks.len(), "rules loaded")
            }
            None => {
                for d in loaded.diagnostics.iter().filter(|d| d.is_error()) {
                    tracing::warn!("{}", render(d, &loaded.sources).trim_end());
                }
                tracing::warn!("the edited rules do not check; the rules in force stay");
            }
        }
        if let Some(r) = &loaded.ruleset {
            self.warn_unknown_senders(r);
        }
        if let Ok(mut rules) = self.rules.write() {
            rules.last_attempt = diagnostics;
            rules.last_attempt_ok = ok;
            if let Some(r) = loaded.ruleset {
                rules.ruleset = Some(Arc::new(r));
                rules.loaded_at = chrono::Utc::now();
            }
        }
        ok
    }
}

fn diagnostics_json(diagnostics: &[Diagnostic], sources: &Sources) -> Vec<Value> {
    diagnostics
        .iter()
        .map(|d| {
            serde_json::to_value(crate::dsl::diagnostic::to_json(d, sources)).unwrap_or(Value::Null)
        })
        .collect()
}

/// The API's routes, each registered with its OpenAPI operation: the
/// document (`/openapi.json`, [`openapi::document`]) is made from this
/// very list, so a route cannot be served without being described.
pub fn api_routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics_text))
        .routes(routes!(openapi::serve))
        .routes(routes!(leads::create, leads::search))
        .routes(routes!(leads::get_lead))
        .routes(routes!(leads::takeover))
        .routes(routes!(leads::release))
        .routes(routes!(threads::api_reply))
        .routes(routes!(threads::api_note))
        .routes(routes!(threads::api_reassign))
        .routes(routes!(threads::api_templates))
        .routes(routes!(threads::list))
        .routes(routes!(queues::list))
        .routes(routes!(queues::api_close))
        .routes(routes!(leads::dry_run))
        .routes(routes!(rulesets))
        .routes(routes!(reload))
        .routes(routes!(webhooks::meta_verify, webhooks::meta_events))
        .routes(routes!(webhooks::form))
        .routes(routes!(webhooks::voice))
}

/// The router, for the server and for tests.
pub fn app(state: Arc<AppState>) -> Router {
    let (api, _) = api_routes().split_for_parts();
    api
        .merge(inbox::routes())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(10),
        ))
        .layer(axum::middleware::from_fn(error::json_errors))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
            // A request ID per request; paths carry no personal data, bodies are never logged.
            let id = uuid::Uuid::now_v7();
            tracing::info_span!("request", %id, method = %request.method(), path = %request.uri().path())
        }))
        .with_state(state)
}

/// Times every request by its route pattern, and counts refusals.
async fn observe(
    State(state): State<Arc<AppState>>,
    matched: Option<axum::extract::MatchedPath>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = matched
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    state.metrics.observe(&route, started.elapsed());
    let status = response.status();
    if status.is_client_error() {
        state.metrics.add(
            "handoff_intake_errors_total",
            &[("route", &route), ("status", status.as_str())],
            1,
        );
    }
    response
}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    operation_id = "metrics",
    security(()),
    responses((status = 200, description = "Metrics in the Prometheus text exposition format.", body = String, content_type = "text/plain; version=0.0.4; charset=utf-8"))
)]
async fn metrics_text(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let webhooks = state.store.webhook_counts().await.unwrap_or_default();
    let outbox = state.store.outbox_counts().await.unwrap_or_default();
    let (waiting, assigned) = queue_gauges(&state).await;
    let hash = state
        .ruleset()
        .map(|r| r.hash[..12].to_string())
        .unwrap_or_default();
    let failing = state
        .rules
        .read()
        .map(|r| !r.last_attempt_ok)
        .unwrap_or(true);
    let text = state.metrics.render(&[
        (
            "handoff_webhook_events",
            "Stored webhook events by state.",
            webhooks
                .into_iter()
                .map(|(s, n)| (vec![("state", s)], n))
                .collect(),
        ),
        (
            "handoff_outbox_messages",
            "Outbox messages by kind and state (pending, sending, sent, failed, cancelled).",
            outbox
                .into_iter()
                .map(|(k, st, n)| (vec![("kind", k), ("state", st)], n))
                .collect(),
        ),
        (
            "handoff_threads_waiting",
            "Threads waiting in a queue with members for someone to be given them, by account and queue.",
            waiting,
        ),
        (
            "handoff_threads_assigned",
            "Open threads given to a queue's members, by account and queue.",
            assigned,
        ),
        (
            "handoff_rules_loaded",
            "The ruleset in force (value 1), by hash.",
            vec![(vec![("ruleset", hash)], 1)],
        ),
        (
            "handoff_rules_last_reload_failed",
            "1 when the last rules load was rejected (the previous rules stay in force).",
            vec![(Vec::new(), i64::from(failing))],
        ),
    ]);
    (
        [(axum::http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        text,
    )
}

/// Waiting and assigned threads per configured queue (zero included), and
/// per queue a person moved threads to outside the configuration.
async fn queue_gauges(state: &AppState) -> (Vec<(Labels, i64)>, Vec<(Labels, i64)>) {
    let mut counts: std::collections::BTreeMap<(String, String), [i64; 2]> = state
        .config
        .accounts
        .iter()
        .flat_map(|a| a.queues.keys().map(|q| ((a.id.clone(), q.clone()), [0; 2])))
        .collect();
    for (account, queue, queue_state, n) in state.store.queue_counts().await.unwrap_or_default() {
        let slot = counts.entry((account, queue)).or_default();
        slot[usize::from(queue_state == "assigned")] += n;
    }
    let labels = |a: &str, q: &str| vec![("account", a.to_string()), ("queue", q.to_string())];
    counts
        .iter()
        .map(|((a, q), [w, s])| ((labels(a, q), *w), (labels(a, q), *s)))
        .unzip()
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    operation_id = "healthz",
    security(()),
    responses((status = 200, description = "Always `ok`.", body = String, content_type = "text/plain", example = "ok"))
)]
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: a ruleset is loaded and the database answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// The database answers.
    database: bool,
    /// A ruleset is loaded.
    rules: bool,
}

/// Readiness: a ruleset is loaded and the database answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    operation_id = "readyz",
    security(()),
    responses(
        (status = 200, description = "Ready.", body = Readiness, example = json!({"database": true, "rules": true})),
        (status = 503, description = "Not ready: no ruleset is loaded or the database does not answer. The body says which.", body = Readiness, example = json!({"database": false, "rules": true})),
    )
)]
async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let rules = state.ruleset().is_some();
    let db = state.store.ping().await;
    let status = if rules && db {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            database: db,
            rules,
        }),
    )
}

/// A playbook this account may use.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PlaybookSummary {
    name: String,
    file: String,
    /// How many rules it has.
    rules: usize,
}

/// The rules in force, the playbooks this account may use, and the last reload.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Rulesets {
    /// The hash of the ruleset in force.
    ruleset: Option<String>,
    loaded_at: chrono::DateTime<chrono::Utc>,
    /// The playbooks this account may use.
    playbooks: Vec<PlaybookSummary>,
    /// Problems that do not stop the rules but will stop messages, such as
    /// a playbook whose `sender` is not one of this account's WhatsApp
    /// numbers.
    warnings: Vec<String>,
    last_reload: LastReload,
}

/// How the last reload went.
#[derive(Serialize, utoipa::ToSchema)]
pub struct LastReload {
    ok: bool,
    #[schema(value_type = Vec<crate::dsl::diagnostic::JsonDiagnostic>)]
    diagnostics: Vec<Value>,
}

/// What a reload did.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ReloadResult {
    /// Whether the rules on disk checked and are now in force.
    ok: bool,
    /// The hash of the ruleset in force (the previous one when `ok` is false).
    ruleset: Option<String>,
    #[schema(value_type = Vec<crate::dsl::diagnostic::JsonDiagnostic>)]
    diagnostics: Vec<Value>,
}

/// The ruleset in force, the playbooks this account may use, and the last reload.
#[utoipa::path(
    get,
    path = "/v1/rulesets",
    tag = "rules",
    operation_id = "listRulesets",
    responses(
        (status = 200, description = "The rules in force.", body = Rulesets),
        openapi::KeyErrors,
    )
)]
async fn rulesets(
    State(state): State<Arc<AppState>>,
    account: ApiAccount,
) -> Result<Json<Rulesets>, ApiError> {
    let rules = state
        .rules
        .read()
        .map_err(|_| ApiError::Internal("rules lock poisoned".into()))?;
    let playbooks = rules
        .ruleset
        .iter()
        .flat_map(|r| r.playbooks.iter())
        .filter(|(name, _)| account.playbooks.is_empty() || account.playbooks.contains(name))
        .map(|(name, p)| PlaybookSummary {
            name: name.clone(),
            file: p.file.clone(),
            rules: p.compiled.rules.len(),
        })
        .collect();
    let warnings = rules
        .ruleset
        .as_ref()
        .map(|r| {
            let mut w = AppState::unknown_senders(&account, r);
            w.extend(queues::unmanaged(&account, r));
            w
        })
        .unwrap_or_default();
    Ok(Json(Rulesets {
        ruleset: rules.ruleset.as_ref().map(|r| r.hash.clone()),
        loaded_at: rules.loaded_at,
        playbooks,
        warnings,
        last_reload: LastReload {
            ok: rules.last_attempt_ok,
            diagnostics: rules.last_attempt.clone(),
        },
    }))
}

/// Load the rules from disk and, when they check, put them in force.
///
/// Any request body is ignored. Rules that do not check never replace the
/// rules in force. (The server also reloads on its own when a rules or
/// template file changes, and on SIGHUP.) Rules are global: any account's
/// key reloads them for every account.
#[utoipa::path(
    post,
    path = "/v1/rulesets/reload",
    tag = "rules",
    operation_id = "reloadRules",
    responses(
        (status = 200, description = "The rules checked and are in force.", body = ReloadResult),
        (status = 422, description = "The rules on disk do not check; the previous ruleset stays in force. The body is a reload result (with `ok: false` and the diagnostics), not an error body.", body = ReloadResult),
        openapi::KeyErrors,
    )
)]
async fn reload(
    State(state): State<Arc<AppState>>,
    _account: ApiAccount,
) -> Result<impl IntoResponse, ApiError> {
    let state2 = state.clone();
    let ok = tokio::task::spawn_blocking(move || state2.reload())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let rules = state
        .rules
        .read()
        .map_err(|_| ApiError::Internal("rules lock poisoned".into()))?;
    let body = ReloadResult {
        ok,
        ruleset: rules.ruleset.as_ref().map(|r| r.hash.clone()),
        diagnostics: rules.last_attempt.clone(),
    };
    Ok((
        if ok {
            StatusCode::OK
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        },
        Json(body),
    ))
}

/// Builds the state: opens the store and loads the rules. Rules that do not
/// check stop the start (there is nothing to route with).
pub async fn state(config: Config) -> Result<Arc<AppState>, String> {
    let store = Store::open(&config.database).await.map_err(|e| {
        format!(
            "cannot open the database `{}`: {e}",
            crate::config::redact_url(&config.database)
        )
    })?;
    let state = Arc::new(AppState {
        config,
        store,
        rules: RwLock::new(Rules {
            ruleset: None,
            loaded_at: chrono::Utc::now(),
            last_attempt: Vec::new(),
            last_attempt_ok: false,
        }),
        work: tokio::sync::Notify::new(),
        outbox: tokio::sync::Notify::new(),
        queues: tokio::sync::Notify::new(),
        thread_changes: tokio::sync::broadcast::channel(1024).0,
        metrics: metrics::Metrics::default(),
    });
    if !state.reload() {
        let rules = state
            .rules
            .read()
            .map_err(|_| "rules lock poisoned".to_string())?;
        let first = rules
            .last_attempt
            .iter()
            .find(|d| d["severity"] == "error")
            .and_then(|d| d["rendered"].as_str())
            .unwrap_or("")
            .to_string();
        return Err(format!(
            "the rules in `{}` do not check:\n{first}(`handoff check {}` lists every problem)",
            state.config.rules.display(),
            state.config.rules.display()
        ));
    }
    Ok(state)
}

/// Serves until `shutdown` completes, then finishes requests in flight.
pub async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    spawn_rules_watch(state.clone());
    workers::webhooks::spawn_worker(state.clone());
    workers::queues::spawn_worker(state.clone());
    let local = listener.local_addr()?;
    let (routes, sandboxes) = whatsapp_routes(&state, local).map_err(std::io::Error::other)?;
    delivery::spawn_worker(
        state.clone(),
        delivery::Delivery {
            owner: format!("{}-{}", local, uuid::Uuid::now_v7()),
            routes,
            limiter: crate::whatsapp::Limiter::new(state.config.delivery.pair_interval),
            notifier: crate::notify::Notifier::new(),
        },
    );
    let mut router = app(state.clone());
    for (account, sandbox) in sandboxes {
        let guard = (state.clone(), account.clone());
        router = router.nest(
            &format!("/sandbox/{account}"),
            crate::whatsapp::sandbox::router(sandbox)
                .layer(axum::middleware::from_fn_with_state(guard, sandbox_key)),
        );
    }
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Guards an account's sandbox control routes (`/_sandbox/...`: the
/// messages sent to its buyers' numbers, forged inbound messages and
/// preferences) with the account's API key. The Cloud API route beside
/// them takes the account's WhatsApp token, as Meta's does.
async fn sandbox_key(
    State((state, account)): State<(Arc<AppState>, String)>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if request.uri().path().starts_with("/_sandbox") {
        match state.authenticate(request.headers()) {
            Ok(a) if a.id == account => {}
            Ok(_) => {
                return ApiError::NotFound(format!(
                    "no sandbox for this key at `/sandbox/{account}`"
                ))
                .into_response()
            }
            Err(e) => return e.into_response(),
        }
    }
    next.run(request).await
}

/// Where each account's WhatsApp messages go. In sandbox mode each account
/// gets its own simulator under `/sandbox/{account}` on this server, which
/// signs its webhooks with the account's app secret and sends them to the
/// account's `/webhooks/meta/{account}`, as Meta would.
#[allow(clippy::type_complexity)]
fn whatsapp_routes(
    state: &AppState,
    local: std::net::SocketAddr,
) -> Result<
    (
        std::collections::BTreeMap<String, delivery::Route>,
        Vec<(String, Arc<crate::whatsapp::Sandbox>)>,
    ),
    String,
> {
    let d = &state.config.delivery;
    let mut routes = std::collections::BTreeMap::new();
    let mut sandboxes = Vec::new();
    // The sandbox is reached over loopback even when the server listens on every address.
    let loopback = match local.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            std::net::SocketAddr::from(([127, 0, 0, 1], local.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, local.port()))
        }
        _ => local,
    };
    let templates = state
        .ruleset()
        .map(|r| crate::whatsapp::SandboxTemplate::all_from(&r.templates))
        .unwrap_or_default();
    let senders: Vec<String> = state
        .ruleset()
        .map(|r| {
            r.playbooks
                .values()
                .filter_map(|p| p.compiled.schema.sender.clone())
                .collect()
        })
        .unwrap_or_default();
    for account in &state.config.accounts {
        let base = if d.sandbox {
            // The account's numbers, and a sandbox number for each sender it does not list.
            let mut numbers: Vec<(String, String)> = account
                .whatsapp
                .iter()
                .map(|n| n.phone_number_id.clone())
                .chain(
                    senders
                        .iter()
                        .filter(|key| !account.whatsapp.iter().any(|n| &&n.key == key))
                        .map(|key| delivery::sandbox_number_id(key)),
                )
                .map(|id| {
                    let display = format!("1555{}", &id[id.len().saturating_sub(7)..]);
                    (id, display)
                })
                .collect();
            numbers.dedup();
            let sandbox = crate::whatsapp::Sandbox::new(crate::whatsapp::SandboxConfig {
                templates: templates.clone(),
                numbers,
                app_secret: account
                    .meta_app_secrets
                    .first()
                    .map(|s| s.expose().to_string()),
                webhook_url: Some(format!("http://{loopback}/webhooks/meta/{}", account.id)),
                ..crate::whatsapp::SandboxConfig::default()
            })?;
            sandboxes.push((account.id.clone(), Arc::new(sandbox)));
            format!("http://{loopback}/sandbox/{}", account.id)
        } else {
            d.whatsapp_base.clone()
        };
        let client = crate::whatsapp::CloudClient::new(&base, &d.whatsapp_version, d.timeout)?;
        routes.insert(
            account.id.clone(),
            delivery::Route {
                client,
                sandbox: d.sandbox,
            },
        );
    }
    Ok((routes, sandboxes))
}

/// Reloads the rules when a file under the rules or templates directory
/// changes (polled every two seconds), and on SIGHUP.
fn spawn_rules_watch(state: Arc<AppState>) {
    let watched = {
        let rules = state.config.rules.clone();
        let templates = state
            .config
            .templates
            .clone()
            .unwrap_or_else(|| crate::ruleset::default_templates_dir(&rules));
        vec![rules, templates]
    };
    let poll_state = state.clone();
    tokio::spawn(async move {
        let mut last = fingerprint(&watched);
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let now = fingerprint(&watched);
            if now != last {
                last = now;
                tracing::info!("rules changed on disk; reloading");
                let s = poll_state.clone();
                let _ = tokio::task::spawn_blocking(move || s.reload()).await;
            }
        }
    });
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the rules");
            let s = state.clone();
            let _ = tokio::task::spawn_blocking(move || s.reload()).await;
        }
    });
}

/// Names, sizes and modification times of every file under `dirs`.
fn fingerprint(
    dirs: &[std::path::PathBuf],
) -> Vec<(std::path::PathBuf, u64, Option<std::time::SystemTime>)> {
    fn walk(
        dir: &std::path::Path,
        out: &mut Vec<(std::path::PathBuf, u64, Option<std::time::SystemTime>)>,
    ) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if let Ok(meta) = entry.metadata() {
                out.push((path, meta.len(), meta.modified().ok()));
            }
        }
    }
    let mut out = Vec::new();
    for d in dirs {
        walk(d, &mut out);
    }
    out.sort();
    out
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
