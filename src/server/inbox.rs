//! The operator inbox at `/inbox`: server-rendered pages (minijinja) with a
//! little plain JavaScript and live updates by server-sent events.
//!
//! Operators sign in with their email and password (argon2id). The session
//! lives in an HttpOnly, SameSite=Lax cookie (Secure when the request came
//! over TLS, as `X-Forwarded-Proto: https` says behind a proxy); only the
//! SHA-256 of its token is stored. Every form carries the session's CSRF
//! token (the sign-in form a token paired with a cookie), and a cross-site
//! `Origin` is refused. An operator only ever sees their own account.
//!
//! In an account with queues the header shows whether the operator is
//! available for new threads, with a button to change it; every page they
//! open (and a ping the page sends each minute while they use it) is
//! activity, and a marked-available operator without any for the account's
//! `idle_minutes` gets no new threads. `/inbox/queues` shows who is in each
//! queue and who waits.

use super::error::ApiError;
use super::threads::{self, ReplyInput, ThreadQuery};
use super::AppState;
use crate::config::Account;
use crate::intake::signature::constant_time_eq;
use crate::store::inbox::Session;
use crate::store::queues::Presence;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use chrono::{DateTime, Utc};
use minijinja::Environment;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

const SESSION_COOKIE: &str = "handoff_session";
const LOGIN_COOKIE: &str = "handoff_login";
/// What the last action did, shown once on the next page. A cookie rather
/// than the URL, so that nobody can put words on the page with a link.
const FLASH_COOKIE: &str = "handoff_flash";
/// How long a sign-in lasts.
const SESSION_HOURS: i64 = 12;

/// The inbox's routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/inbox", get(list))
        .route("/inbox/login", get(login_page).post(login))
        .route("/inbox/logout", post(logout))
        .route("/inbox/events", get(events))
        .route("/inbox/threads/{id}", get(thread))
        .route("/inbox/threads/{id}/{action}", post(act))
        .route("/inbox/queues", get(queues))
        .route("/inbox/presence", post(presence))
        .route("/inbox/presence/ping", post(ping))
        .route("/inbox/static/inbox.css", get(css))
        .route("/inbox/static/inbox.js", get(js))
}

/// The page templates, parsed once.
fn pages() -> &'static Environment<'static> {
    static PAGES: OnceLock<Environment<'static>> = OnceLock::new();
    PAGES.get_or_init(|| {
        let mut env = Environment::new();
        // Every page is HTML: values are escaped, so a lead named
        // `<script>` is shown as text.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
        for (name, source) in [
            ("base.html", include_str!("inbox/base.html")),
            ("login.html", include_str!("inbox/login.html")),
            ("threads.html", include_str!("inbox/threads.html")),
            ("thread.html", include_str!("inbox/thread.html")),
            ("queues.html", include_str!("inbox/queues.html")),
        ] {
            // The templates ship inside the binary; a syntax error in one is
            // a build-time bug that the inbox tests catch.
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "an inbox template does not parse");
            }
        }
        env.add_filter("when", when);
        env.add_filter("ago", ago);
        env
    })
}

/// How long ago `2026-12-01T14:02:11Z` was: `under a minute`, `12 min`, `3 h 5 min`, `2 d`.
fn ago(value: Option<String>) -> String {
    let Some(value) = value else {
        return String::new();
    };
    let Ok(t) = DateTime::parse_from_rfc3339(&value) else {
        return value;
    };
    let minutes = (Utc::now() - t.with_timezone(&Utc)).num_minutes().max(0);
    match minutes {
        0 => "under a minute".to_string(),
        1..=59 => format!("{minutes} min"),
        60..=1439 if minutes % 60 == 0 => format!("{} h", minutes / 60),
        60..=1439 => format!("{} h {} min", minutes / 60, minutes % 60),
        _ => format!("{} d", minutes / 1440),
    }
}

/// `2026-12-01T14:02:11Z` as `1 Dec 14:02 UTC`.
fn when(value: String) -> String {
    DateTime::parse_from_rfc3339(&value)
        .map(|t| t.with_timezone(&Utc).format("%-d %b %H:%M UTC").to_string())
        .unwrap_or(value)
}

fn render(name: &str, context: Value) -> Response {
    match pages()
        .get_template(name)
        .and_then(|t| t.render(minijinja::Value::from_serialize(&context)))
    {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(template = name, error = %e, "rendering an inbox page failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<p>Something went wrong showing this page.</p>".to_string()),
            )
                .into_response()
        }
    }
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Whether the request reached us over TLS (directly or through a proxy).
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// An inbox cookie, set as every one of them is: for `path`, kept
/// `max_age` seconds, HttpOnly (no script reads it), SameSite=Lax (a
/// cross-site form post does not carry it), and Secure when the request came
/// over TLS.
fn cookie(
    headers: &HeaderMap,
    name: &'static str,
    value: String,
    max_age: i64,
    path: &'static str,
) -> Cookie<'static> {
    Cookie::build((name, value))
        .path(path)
        .max_age(time::Duration::seconds(max_age))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(over_tls(headers))
        .build()
}

/// The cookie that clears `name` at `path`: empty, kept 0 seconds. Set
/// whether or not the request carried it (`CookieJar::remove` would only
/// clear a cookie the request sent), with the same attributes as when set.
fn cleared(headers: &HeaderMap, name: &'static str, path: &'static str) -> Cookie<'static> {
    cookie(headers, name, String::new(), 0, path)
}

/// A cross-site form post names another origin; same-site ones name ours or none.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.trim_end_matches('/') == host)
}

/// Why a page cannot be shown to this request.
enum Refusal {
    /// Not signed in: to the sign-in page.
    SignIn,
    /// A form without the session's token, or from another site.
    Forbidden,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::SignIn => Redirect::to("/inbox/login").into_response(),
            Refusal::Forbidden => (
                StatusCode::FORBIDDEN,
                Html("<p>This form has expired or came from another site. Go back, reload the page and try again.</p>".to_string()),
            )
                .into_response(),
        }
    }
}

/// The signed-in operator of this request, and their account.
async fn signed_in(state: &AppState, jar: &CookieJar) -> Result<(Session, Account), Refusal> {
    let token = jar.get(SESSION_COOKIE).ok_or(Refusal::SignIn)?.value();
    let session = state
        .store
        .session(&token_hash(token))
        .await
        .ok()
        .flatten()
        .ok_or(Refusal::SignIn)?;
    let account = state
        .config
        .accounts
        .iter()
        .find(|a| a.id == session.operator.account)
        .cloned()
        // An operator of an account no longer configured cannot sign in.
        .ok_or(Refusal::SignIn)?;
    Ok((session, account))
}

/// The signed-in operator of a request and their account: what every inbox
/// page reads. A request without a live session goes to the sign-in page.
struct Operator {
    session: Session,
    account: Account,
}

impl FromRequestParts<Arc<AppState>> for Operator {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Refusal> {
        let jar = CookieJar::from_headers(&parts.headers);
        let (session, account) = signed_in(state, &jar).await?;
        Ok(Operator { session, account })
    }
}

/// A form the signed-in operator sent: it carries the session's CSRF token
/// and comes from this site, or nothing in it is done (403).
struct OperatorForm<T> {
    operator: Operator,
    form: T,
}

/// Whether a form may act for `session`: it carries the session's CSRF
/// token and comes from this site.
fn form_allowed(headers: &HeaderMap, csrf: &str, session: &Session) -> Result<(), Refusal> {
    if same_origin(headers) && constant_time_eq(csrf.as_bytes(), session.csrf.as_bytes()) {
        Ok(())
    } else {
        Err(Refusal::Forbidden)
    }
}

/// A form's fields beside the CSRF token every inbox form carries.
#[derive(Deserialize)]
struct WithCsrf<T> {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    fields: T,
}

/// A form with nothing but its CSRF token.
#[derive(Deserialize, Default)]
struct NoFields {}

impl<T: DeserializeOwned + Send> FromRequest<Arc<AppState>> for OperatorForm<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let operator = Operator::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let headers = parts.headers.clone();
        let Form(WithCsrf { csrf, fields }) =
            Form::<WithCsrf<T>>::from_request(Request::from_parts(parts, body), state)
                .await
                .map_err(IntoResponse::into_response)?;
        form_allowed(&headers, &csrf, &operator.session).map_err(IntoResponse::into_response)?;
        Ok(OperatorForm {
            operator,
            form: fields,
        })
    }
}

/// Whether the request is a page refreshing itself on a live update (the
/// operator did nothing).
fn live(headers: &HeaderMap) -> bool {
    headers.contains_key("x-live")
}

/// The operator did something in the inbox: a marked-available operator
/// who was idle may be given waiting threads again.
async fn note_activity(state: &AppState, operator_id: &str, account: &Account) {
    match state.store.touch_presence(operator_id, account.idle).await {
        Ok(true) => state.queues.notify_one(),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "noting an operator's activity failed"),
    }
}

/// The operator's availability as the header shows it.
fn presence_view(presence: &Presence, idle: std::time::Duration) -> Value {
    let idle_since = Utc::now() - chrono::Duration::from_std(idle).unwrap_or_default();
    let active = presence
        .seen_at
        .as_deref()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .is_some_and(|s| s.with_timezone(&Utc) >= idle_since);
    let (status, label) = match (presence.available, active) {
        (true, true) => ("available", "Available"),
        (true, false) => ("idle", "Available · idle"),
        (false, _) => ("away", "Away"),
    };
    json!({"available": presence.available, "status": status, "label": label})
}

/// The page context every signed-in page has. Opening a page is activity,
/// unless it is an open page refreshing itself.
async fn base(
    state: &AppState,
    headers: &HeaderMap,
    session: &Session,
    account: &Account,
    page: &str,
) -> serde_json::Map<String, Value> {
    if !live(headers) {
        note_activity(state, &session.operator.id, account).await;
    }
    let mut m = serde_json::Map::new();
    m.insert("operator".into(), json!(session.operator));
    m.insert("account_name".into(), json!(account.name));
    m.insert("csrf".into(), json!(session.csrf));
    m.insert("page".into(), json!(page));
    if !account.queues.is_empty() {
        let presence = match state.store.presence(&session.operator.id).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "reading an operator's availability failed");
                Presence::default()
            }
        };
        m.insert("presence".into(), presence_view(&presence, account.idle));
        m.insert("idle_seconds".into(), json!(account.idle.as_secs()));
    }
    m
}

/// Puts the last action's outcome (`error` or `notice`) in a page's
/// context; true when there was one, whose cookie the page then clears.
fn take_flash(jar: &CookieJar, context: &mut serde_json::Map<String, Value>) -> bool {
    let shown = flash(jar);
    let (error, notice) = match &shown {
        Some((true, text)) => (Some(text.clone()), None),
        Some((false, text)) => (None, Some(text.clone())),
        None => (None, None),
    };
    context.insert("error".into(), json!(error));
    context.insert("notice".into(), json!(notice));
    shown.is_some()
}

/// Renders a page that may show a flash, clearing its cookie when it did.
fn render_with_flash(
    headers: &HeaderMap,
    jar: CookieJar,
    name: &str,
    mut context: serde_json::Map<String, Value>,
) -> Response {
    let shown = take_flash(&jar, &mut context);
    let response = render(name, Value::Object(context));
    if shown {
        (jar.add(cleared(headers, FLASH_COOKIE, "/inbox")), response).into_response()
    } else {
        response
    }
}

/// The state a thread shows as: taken over, delivery failed, blocked, automated.
fn badge(state: &str, flag: Option<&str>, outcome: Option<&str>) -> (&'static str, &'static str) {
    if state == "human" {
        ("human", "taken over")
    } else if flag.is_some() {
        ("failed", "delivery failed")
    } else if outcome.is_some_and(|o| o.starts_with("blocked")) {
        ("blocked", "blocked")
    } else {
        ("automated", "automated")
    }
}

/// The queues this account's threads, playbooks and configuration use, for
/// filters and reassignment.
fn queues_of(state: &AppState, account: &Account, threads: &[Value]) -> Vec<String> {
    let mut queues: BTreeSet<String> = threads
        .iter()
        .filter_map(|t| t["queue"].as_str().map(str::to_string))
        .chain(account.queues.keys().cloned())
        .collect();
    if let Some(r) = state.ruleset() {
        for p in r.playbooks.values() {
            let otherwise = p.compiled.otherwise.iter().flatten();
            for action in p
                .compiled
                .rules
                .iter()
                .flat_map(|r| &r.actions)
                .chain(otherwise)
            {
                if let crate::dsl::ast::ActionKind::Assign(q)
                | crate::dsl::ast::ActionKind::Takeover(q) = action
                {
                    queues.insert(q.node.clone());
                }
            }
        }
    }
    queues.into_iter().collect()
}

async fn list(
    State(state): State<Arc<AppState>>,
    Operator { session, account }: Operator,
    headers: HeaderMap,
    jar: CookieJar,
    Query(q): Query<ThreadQuery>,
) -> Result<Response, Refusal> {
    let filter = match q.filter() {
        Ok(f) => f,
        Err(_) => ThreadQuery::default().filter().unwrap_or_default(),
    };
    let threads = state
        .store
        .threads(&account.id, Some(&session.operator.id), &filter)
        .await
        .unwrap_or_default();
    // As the page's template reads them, with their badges added below.
    let threads: Vec<Value> = threads.iter().map(|t| json!(t)).collect();
    // The rules' queues and those of the threads shown (a person may have
    // reassigned one to a queue no rule names).
    let queues = queues_of(&state, &account, &threads);
    let shown: Vec<Value> = threads
        .into_iter()
        .map(|mut t| {
            let (b, label) = badge(
                t["state"].as_str().unwrap_or_default(),
                t["flag"].as_str(),
                t["outcome"].as_str(),
            );
            t["badge"] = json!(b);
            t["badge_label"] = json!(label);
            t
        })
        .collect();
    let playbooks: Vec<String> = state
        .ruleset()
        .map(|r| {
            r.playbooks
                .keys()
                .filter(|p| account.playbooks.is_empty() || account.playbooks.contains(p))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let mut context = base(&state, &headers, &session, &account, "threads").await;
    context.insert("threads".into(), json!(shown));
    context.insert("queues".into(), json!(queues));
    context.insert("playbooks".into(), json!(playbooks));
    context.insert(
        "states".into(),
        json!([
            ["automated", "Automated"],
            ["human", "Taken over"],
            ["blocked", "Blocked"],
            ["failed", "Delivery failed"],
            ["waiting", "Waiting"]
        ]),
    );
    context.insert(
        "filter".into(),
        json!({"q": filter.q, "queue": filter.queue, "state": filter.state, "playbook": filter.playbook}),
    );
    Ok(render_with_flash(&headers, jar, "threads.html", context))
}

/// The outcome of the last action, from its cookie: `(is_error, text)`.
fn flash(jar: &CookieJar) -> Option<(bool, String)> {
    let (kind, text) = jar.get(FLASH_COOKIE)?.value().split_once(':')?;
    let bytes = hex::decode(text).ok()?;
    Some((kind == "error", String::from_utf8(bytes).ok()?))
}

/// What an outbox message says, for the thread view.
fn outbound_view(o: &Value) -> Value {
    let payload = &o["payload"];
    let kind = o["kind"].as_str().unwrap_or_default();
    let (what, text) = if kind == "notify" {
        (
            format!(
                "to {}",
                payload["endpoint"].as_str().unwrap_or("an endpoint")
            ),
            payload["event"].as_str().unwrap_or_default().to_string(),
        )
    } else if payload["outcome"] == "template" {
        (
            format!(
                "WhatsApp template {}",
                payload["template"]["name"].as_str().unwrap_or_default()
            ),
            payload["template"]["preview"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    } else {
        (
            "WhatsApp message".to_string(),
            payload["text"].as_str().unwrap_or_default().to_string(),
        )
    };
    let state = o["state"].as_str().unwrap_or_default();
    let delivery = o["delivery"].as_str();
    let label = match (state, delivery) {
        ("sent", Some(d)) => d.to_string(),
        ("pending", _) if o["attempts"].as_i64().unwrap_or(0) > 0 => "retrying".to_string(),
        (s, _) => s.to_string(),
    };
    json!({
        "what": what,
        "text": text,
        "by": payload["by"].as_str().unwrap_or("automation"),
        "created_at": o["created_at"],
        "state": label.clone(),
        "state_label": label,
        "error": o["error"],
    })
}

/// The 24-hour window in words, with the time left.
fn window_view(last_inbound: Option<DateTime<Utc>>) -> Value {
    let now = Utc::now();
    let open = crate::pipeline::window_open(last_inbound, now);
    let text = match (last_inbound, open) {
        (Some(t), true) => {
            let left = (t + chrono::Duration::hours(24)) - now;
            format!(
                "Open: {} h {} min left (the lead last wrote {}). Free text can be sent.",
                left.num_hours(),
                left.num_minutes() % 60,
                t.format("%-d %b %H:%M UTC")
            )
        }
        (Some(t), false) => format!(
            "Closed: the lead last wrote {}. Only an approved template can be sent.",
            t.format("%-d %b %H:%M UTC")
        ),
        (None, _) => {
            "Closed: the lead has never written on WhatsApp. Only an approved template can be sent."
                .to_string()
        }
    };
    json!({"open": open, "text": text})
}

/// A stored decision in a line, and its trace's rules.
fn decision_view(d: &Value) -> Value {
    let decision = &d["decision"];
    let rules: Vec<&str> = decision["rules"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut summary = if rules.is_empty() {
        "no rule fired".to_string()
    } else {
        format!("{} fired", rules.join(", "))
    };
    if let Some(outcome) = decision["handoff"]["outcome"].as_str() {
        summary.push_str(&format!(" · {}", outcome.replace('_', " ")));
    }
    if let Some(queue) = decision["actions"]["assign"].as_str() {
        summary.push_str(&format!(" · to {queue}"));
    }
    if let Some(e) = decision["error"].as_str() {
        summary = format!("error: {e}");
    }
    json!({"at": d["at"], "summary": summary, "rules": d["trace"]["rules"]})
}

/// The words for a kind of entry on a thread's trail (`takeover`, `release`, `reply`,
/// `note`, `reassign`, `queued` and `done` read as they are).
fn event_label(kind: &str) -> String {
    match kind {
        "assign" => "assigned".to_string(),
        "escalate" => "escalated".to_string(),
        "fallback" => "WhatsApp fallback".to_string(),
        other => other.replace('_', " "),
    }
}

/// Where the thread stands in its queue: waiting since when, whose it is
/// and since when, or done; `null` without a queue.
fn queue_view(account: &Account, thread: &Value) -> Value {
    let Some(name) = thread["queue"].as_str() else {
        return Value::Null;
    };
    let state = thread["queue_state"].as_str();
    json!({
        "name": name,
        "managed": account.queues.contains_key(name),
        "state": state,
        "open": matches!(state, Some("waiting" | "assigned")),
        "assignee": thread["assignee"],
        "queued_at": thread["queued_at"],
        "assigned_at": thread["assigned_at"],
        "picked_up_at": thread["picked_up_at"],
    })
}

async fn thread(
    State(state): State<Arc<AppState>>,
    Operator { session, account }: Operator,
    headers: HeaderMap,
    jar: CookieJar,
    Path(id): Path<String>,
) -> Result<Response, Refusal> {
    let lead = match state.store.lead(&account.id, &id).await {
        Ok(Some(lead)) => lead.to_value(),
        // Another account's lead looks exactly like one that does not exist.
        _ => {
            return Ok((
                StatusCode::NOT_FOUND,
                Html("<p>No such thread. <a href=\"/inbox\">All threads</a></p>".to_string()),
            )
                .into_response())
        }
    };
    let lead_id = lead["id"].as_str().unwrap_or(&id).to_string();
    let events = state
        .store
        .thread_events(&account.id, &lead_id)
        .await
        .unwrap_or_default();
    let (templates, last_inbound) = match threads::templates_for(&state, &account, &lead_id).await {
        Ok((l, _, choices)) => (
            choices
                .into_iter()
                .map(|c| match c.rendered {
                    Ok(r) => json!({"name": c.name, "preview": r.preview, "error": null}),
                    Err(e) => json!({"name": c.name, "preview": null, "error": e}),
                })
                .collect::<Vec<_>>(),
            l.last_inbound_at,
        ),
        Err(_) => (Vec::new(), None),
    };
    if let Err(e) = state.store.mark_read(&session.operator.id, &lead_id).await {
        tracing::warn!(error = %e, "marking a thread read failed");
    }
    let thread = &lead["thread"];
    let human = thread["state"] == "human";
    let last_outcome = lead["decisions"]
        .as_array()
        .and_then(|d| d.last())
        .and_then(|d| {
            d["decision"]["handoff"]["outcome"]
                .as_str()
                .map(str::to_string)
        });
    let (b, label) = badge(
        thread["state"].as_str().unwrap_or("automated"),
        thread["flag"].as_str(),
        last_outcome.as_deref(),
    );
    let outbound: Vec<Value> = lead["outbox"]
        .as_array()
        .map(|o| o.iter().map(outbound_view).collect())
        .unwrap_or_default();
    let contacted = lead["outbox"].as_array().is_some_and(|o| {
        o.iter()
            .any(|m| m["kind"] == "whatsapp" && m["state"] == "sent")
    });
    let stage = if human {
        "with a person"
    } else if contacted {
        "contacted on WhatsApp"
    } else if b == "blocked" {
        "waiting: no WhatsApp handoff possible"
    } else {
        "new"
    };
    let decisions: Vec<Value> = lead["decisions"]
        .as_array()
        .map(|d| d.iter().map(decision_view).collect())
        .unwrap_or_default();
    let mut context = base(&state, &headers, &session, &account, "thread").await;
    context.insert("lead_id".into(), json!(lead_id));
    context.insert("badge".into(), json!(b));
    context.insert("badge_label".into(), json!(label));
    context.insert("stage".into(), json!(stage));
    context.insert("human".into(), json!(human));
    context.insert("window".into(), window_view(last_inbound));
    context.insert("outbound".into(), json!(outbound));
    context.insert("decisions".into(), json!(decisions));
    let events: Vec<Value> = events
        .into_iter()
        .map(|mut e| {
            let label = event_label(e["kind"].as_str().unwrap_or_default());
            e["label"] = json!(label);
            e
        })
        .collect();
    context.insert("events".into(), json!(events));
    context.insert("templates".into(), json!(templates));
    context.insert("queues".into(), json!(queues_of(&state, &account, &[])));
    context.insert("queue".into(), queue_view(&account, thread));
    context.insert("lead".into(), lead);
    Ok(render_with_flash(&headers, jar, "thread.html", context))
}

/// The fields of every inbox form.
#[derive(Deserialize, Default)]
struct ActionForm {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    queue: Option<String>,
}

fn back(headers: &HeaderMap, id: &str, result: Result<&str, String>) -> Response {
    back_to(headers, &format!("/inbox/threads/{id}"), result)
}

/// Redirects to `location`, which then shows what the action did.
fn back_to(headers: &HeaderMap, location: &str, result: Result<&str, String>) -> Response {
    let (kind, text) = match result {
        Ok(notice) => ("notice", notice.to_string()),
        Err(e) => ("error", e),
    };
    let flash = cookie(
        headers,
        FLASH_COOKIE,
        format!("{kind}:{}", hex::encode(text)),
        60,
        "/inbox",
    );
    (CookieJar::new().add(flash), Redirect::to(location)).into_response()
}

fn api_message(e: ApiError) -> String {
    match e {
        ApiError::BadRequest { message, .. } | ApiError::Unprocessable { message, .. } => message,
        ApiError::NotFound(m) => m,
        other => {
            let _ = other.into_response();
            "something went wrong; nothing was changed".to_string()
        }
    }
}

async fn act(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    OperatorForm {
        operator: Operator { session, account },
        form,
    }: OperatorForm<ActionForm>,
) -> Result<Response, Refusal> {
    let actor = session.operator.name.clone();
    let result: Result<&str, String> = match action.as_str() {
        "takeover" | "release" => {
            let human = action == "takeover";
            match state
                .store
                .set_thread_owner(&account.id, &id, human, &actor, Some(&session.operator.id))
                .await
            {
                Ok(true) => {
                    state.announce(&account.id, &id);
                    state.queues.notify_one();
                    Ok(if human {
                        "You have the thread: automation is paused on it."
                    } else {
                        "Released: automation handles the thread again."
                    })
                }
                Ok(false) => Err(format!("no lead `{id}`")),
                Err(e) => Err(api_message(e.into())),
            }
        }
        "reply" => {
            let input = ReplyInput {
                text: form.text.clone(),
                template: form.template.clone(),
                by: None,
                agent: None,
            };
            // A written message wins over the template select left on "none".
            let input = if input.text.as_deref().is_some_and(|t| !t.trim().is_empty()) {
                ReplyInput {
                    template: None,
                    ..input
                }
            } else {
                input
            };
            match threads::reply(
                &state,
                &account,
                &id,
                &actor,
                Some(&session.operator.id),
                &input,
            )
            .await
            {
                Ok(_) => {
                    Ok("Sent: it goes out on WhatsApp now; automation is paused on this thread.")
                }
                Err(e) => Err(api_message(e)),
            }
        }
        "reassign" => match super::extract::clean_queue(form.queue.as_deref()) {
            Ok(queue) => match state
                .store
                .reassign(
                    &account.id,
                    &id,
                    &queue,
                    &actor,
                    account.queues.contains_key(&queue),
                )
                .await
            {
                Ok(true) => {
                    state.announce(&account.id, &id);
                    state.queues.notify_one();
                    Ok("Reassigned.")
                }
                Ok(false) => Err(format!("no lead `{id}`")),
                Err(e) => Err(api_message(e.into())),
            },
            Err(e) => Err(api_message(e)),
        },
        "done" => match state.store.close_thread(&account.id, &id, &actor).await {
            Ok(true) => {
                state.announce(&account.id, &id);
                state.queues.notify_one();
                Ok("Done: the conversation is closed, and the thread left its queue if it was in one. The next handoff opens a new conversation.")
            }
            Ok(false) => Err("the thread is not open: nothing to close".to_string()),
            Err(e) => Err(api_message(e.into())),
        },
        "note" => match super::extract::clean_text(form.text.as_deref(), "text", threads::MAX_TEXT)
        {
            Ok(text) => match state.store.add_note(&account.id, &id, &actor, &text).await {
                Ok(true) => {
                    state.announce(&account.id, &id);
                    Ok("Note added.")
                }
                Ok(false) => Err(format!("no lead `{id}`")),
                Err(e) => Err(api_message(e.into())),
            },
            Err(e) => Err(api_message(e)),
        },
        _ => {
            return Ok((
                StatusCode::NOT_FOUND,
                Html("<p>No such action.</p>".to_string()),
            )
                .into_response())
        }
    };
    Ok(back(&headers, &id, result))
}

/// Where a form in the header goes back to: the inbox page it was sent
/// from (the `Referer`, when it is of this site), else the thread list.
fn came_from(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.split_once("://"))
        .and_then(|(_, rest)| {
            let (authority, path) = rest.split_at(rest.find('/')?);
            (!host.is_empty() && authority == host).then_some(path)
        })
        .map(|path| path.split('#').next().unwrap_or_default())
        .filter(|path| {
            let inbox =
                *path == "/inbox" || path.starts_with("/inbox/") || path.starts_with("/inbox?");
            inbox && !path.starts_with("/inbox/login") && !path.contains('\\')
        })
        .map_or_else(|| "/inbox".to_string(), str::to_string)
}

#[derive(Deserialize, Default)]
struct PresenceForm {
    #[serde(default)]
    available: String,
}

/// `POST /inbox/presence`: the operator marks themselves available for
/// new threads (`available=1`) or away (`available=0`).
async fn presence(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    OperatorForm {
        operator: Operator { session, .. },
        form,
    }: OperatorForm<PresenceForm>,
) -> Result<Response, Refusal> {
    let available = match form.available.as_str() {
        "1" => true,
        "0" => false,
        _ => {
            return Ok(back_to(
                &headers,
                &came_from(&headers),
                Err("say `available=1` or `available=0`".to_string()),
            ))
        }
    };
    let result = match state
        .store
        .set_available(&session.operator.id, available)
        .await
    {
        Ok(_) => {
            tracing::info!(operator = %session.operator.id, available, "an operator changed their availability");
            // Someone available may take waiting threads now.
            state.queues.notify_one();
            Ok(if available {
                "You are available: threads waiting in your queues come to you."
            } else {
                "You are away: no new threads come to you. Threads you have stay yours."
            })
        }
        Err(e) => Err(api_message(e.into())),
    };
    Ok(back_to(&headers, &came_from(&headers), result))
}

/// `POST /inbox/presence/ping`: an open page says the operator is using it
/// (sent at most once a minute, and only after some activity). 204.
async fn ping(
    State(state): State<Arc<AppState>>,
    operator: Result<Operator, Refusal>,
    headers: HeaderMap,
    Form(form): Form<WithCsrf<NoFields>>,
) -> Response {
    // The page's script asks, not a person: a lapsed session is a 401
    // for it to act on, not a redirect to follow.
    let Operator { session, account } = match operator {
        Ok(o) => o,
        Err(Refusal::SignIn) => return StatusCode::UNAUTHORIZED.into_response(),
        Err(r) => return r.into_response(),
    };
    if let Err(r) = form_allowed(&headers, &form.csrf, &session) {
        return r.into_response();
    }
    note_activity(&state, &session.operator.id, &account).await;
    StatusCode::NO_CONTENT.into_response()
}

/// What a member's status reads as on the queues page.
fn member_status(status: &str) -> &'static str {
    match status {
        "available" => "Available",
        "idle" => "Idle",
        "away" => "Away",
        "signed_out" => "Signed out",
        "unknown" => "No such operator",
        "agent" => "AI agent",
        _ => "Unknown",
    }
}

/// `GET /inbox/queues`: each queue of the account with members: how it
/// assigns, whether it is open, who is in it and how busy, who waits.
async fn queues(
    State(state): State<Arc<AppState>>,
    Operator { session, account }: Operator,
    headers: HeaderMap,
    jar: CookieJar,
) -> Result<Response, Refusal> {
    let mut shown = Vec::new();
    for (name, queue) in &account.queues {
        let mut q = match super::queues::overview(&state, &account, name, queue).await {
            Ok(q) => json!(q),
            Err(e) => {
                tracing::error!(queue = %name, error = ?e, "showing a queue failed");
                shown.push(json!({"name": name, "failed": true}));
                continue;
            }
        };
        q["strategy_label"] = json!(match queue.strategy {
            crate::queues::Strategy::RoundRobin => "round robin: each member in turn",
            crate::queues::Strategy::LeastLoaded =>
                "least loaded: the member with the fewest open threads",
        });
        if let Some(members) = q["members"].as_array_mut() {
            for m in members {
                let label = member_status(m["status"].as_str().unwrap_or_default());
                m["status_label"] = json!(label);
                m["you"] = json!(m["key"] == session.operator.id.as_str());
            }
        }
        shown.push(q);
    }
    let mut context = base(&state, &headers, &session, &account, "queues").await;
    context.insert("queues".into(), json!(shown));
    Ok(render_with_flash(&headers, jar, "queues.html", context))
}

#[derive(Deserialize, Default)]
struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

fn login_form(
    headers: &HeaderMap,
    status: StatusCode,
    email: &str,
    error: Option<&str>,
) -> Response {
    let token = random_token();
    let mut response = render(
        "login.html",
        json!({"page": "login", "login_csrf": token, "email": email, "error": error}),
    );
    *response.status_mut() = status;
    let paired = cookie(headers, LOGIN_COOKIE, token, 1800, "/inbox/login");
    (CookieJar::new().add(paired), response).into_response()
}

async fn login_page(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    jar: CookieJar,
) -> Response {
    if signed_in(&state, &jar).await.is_ok() {
        return Redirect::to("/inbox").into_response();
    }
    login_form(&headers, StatusCode::OK, "", None)
}

/// A hash to verify against when no operator has the email, so that a
/// wrong email takes as long as a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not a password of anyone").unwrap_or_default())
}

/// An argon2id hash of `password`, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| format!("cannot make a salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

async fn login(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    jar: CookieJar,
    Form(form): Form<LoginForm>,
) -> Response {
    let paired = jar
        .get(LOGIN_COOKIE)
        .is_some_and(|c| constant_time_eq(c.value().as_bytes(), form.csrf.as_bytes()));
    if !paired || !same_origin(&headers) {
        return login_form(
            &headers,
            StatusCode::FORBIDDEN,
            &form.email,
            Some("The sign-in form expired. Please try again."),
        );
    }
    let found = state.store.operator_login(&form.email).await.ok().flatten();
    let (hash, operator) = match &found {
        Some(f) => (f.password_hash.clone(), Some(f.operator.clone())),
        None => (dummy_hash().to_string(), None),
    };
    let password = form.password.clone();
    let verified = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    let operator = match operator {
        Some(o) if verified && state.config.accounts.iter().any(|a| a.id == o.account) => o,
        _ => {
            tracing::info!("an inbox sign-in was refused");
            return login_form(
                &headers,
                StatusCode::UNAUTHORIZED,
                &form.email,
                Some("That email and password do not match an operator."),
            );
        }
    };
    let token = random_token();
    let csrf = random_token();
    let expires = Utc::now() + chrono::Duration::hours(SESSION_HOURS);
    if let Err(e) = state
        .store
        .create_session(&operator.id, &token_hash(&token), &csrf, expires)
        .await
    {
        tracing::error!(error = %e, "starting a session failed");
        return login_form(
            &headers,
            StatusCode::INTERNAL_SERVER_ERROR,
            &form.email,
            Some("Signing in failed on our side; please try again."),
        );
    }
    tracing::info!(operator = %operator.id, account = %operator.account, "an operator signed in");
    // Signing in is activity: one who left themselves available gets
    // threads again.
    if let Some(account) = state
        .config
        .accounts
        .iter()
        .find(|a| a.id == operator.account)
    {
        note_activity(&state, &operator.id, account).await;
    }
    let jar = jar
        .add(cookie(
            &headers,
            SESSION_COOKIE,
            token,
            SESSION_HOURS * 3600,
            "/",
        ))
        .add(cleared(&headers, LOGIN_COOKIE, "/inbox/login"));
    (jar, Redirect::to("/inbox")).into_response()
}

async fn logout(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    jar: CookieJar,
    _: OperatorForm<NoFields>,
) -> Result<Response, Refusal> {
    if let Some(token) = jar.get(SESSION_COOKIE) {
        if let Err(e) = state.store.end_session(&token_hash(token.value())).await {
            tracing::error!(error = %e, "ending a session failed");
        }
    }
    let jar = jar.add(cleared(&headers, SESSION_COOKIE, "/"));
    Ok((jar, Redirect::to("/inbox/login")).into_response())
}

/// `GET /inbox/events`: a `thread` event (`{"lead_id"}`) whenever a thread
/// of the operator's account changes.
async fn events(
    State(state): State<Arc<AppState>>,
    Operator { account, .. }: Operator,
) -> Result<Response, Refusal> {
    let receiver = state.thread_changes.subscribe();
    let stream = futures_util::stream::unfold(receiver, move |mut rx| {
        let account = account.id.clone();
        async move {
            loop {
                match rx.recv().await {
                    Ok(change) if change.account == account => {
                        let event = Event::default()
                            .event("thread")
                            .data(json!({"lead_id": change.lead_id}).to_string());
                        return Some((Ok::<_, std::convert::Infallible>(event), rx));
                    }
                    Ok(_) => continue,
                    // Missed some: the page refreshes as if one changed.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let event = Event::default().event("thread").data("{\"lead_id\":null}");
                        return Some((Ok(event), rx));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("inbox/inbox.css"),
    )
}

async fn js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("inbox/inbox.js"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `Set-Cookie` value a response carries for `cookie`.
    fn sent(cookie: Cookie<'static>) -> String {
        let response = CookieJar::new().add(cookie).into_response();
        response.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn cookies_carry_every_attribute_and_secure_only_over_tls() {
        let plain = HeaderMap::new();
        let mut tls = HeaderMap::new();
        tls.insert("x-forwarded-proto", "https".parse().unwrap());
        let token = "ab".repeat(32);
        assert_eq!(
            sent(cookie(&plain, SESSION_COOKIE, token.clone(), 43200, "/")),
            format!("handoff_session={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age=43200")
        );
        assert_eq!(
            sent(cookie(&tls, SESSION_COOKIE, token.clone(), 43200, "/")),
            format!(
                "handoff_session={token}; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=43200"
            )
        );
        assert_eq!(
            sent(cookie(
                &plain,
                LOGIN_COOKIE,
                token.clone(),
                1800,
                "/inbox/login"
            )),
            format!(
                "handoff_login={token}; HttpOnly; SameSite=Lax; Path=/inbox/login; Max-Age=1800"
            )
        );
        assert_eq!(
            sent(cleared(&tls, LOGIN_COOKIE, "/inbox/login")),
            "handoff_login=; HttpOnly; SameSite=Lax; Secure; Path=/inbox/login; Max-Age=0"
        );
    }

    #[test]
    fn a_flash_survives_the_round_trip_through_its_cookie() {
        let response = back_to(&HeaderMap::new(), "/inbox", Err("no lead `x`".to_string()));
        let set = response.headers()[header::SET_COOKIE].to_str().unwrap();
        // The `:` between the kind and the hex text is percent-encoded.
        assert_eq!(
            set,
            format!(
                "handoff_flash=error%3A{}; HttpOnly; SameSite=Lax; Path=/inbox; Max-Age=60",
                hex::encode("no lead `x`")
            )
        );
        let mut request = HeaderMap::new();
        let pair = set.split(';').next().unwrap();
        request.insert(header::COOKIE, pair.parse().unwrap());
        let jar = CookieJar::from_headers(&request);
        assert_eq!(flash(&jar), Some((true, "no lead `x`".to_string())));
        // A flash cookie set before its `:` was encoded reads the same.
        let mut request = HeaderMap::new();
        let old = format!("handoff_flash=notice:{}", hex::encode("Note added."));
        request.insert(header::COOKIE, old.parse().unwrap());
        let jar = CookieJar::from_headers(&request);
        assert_eq!(flash(&jar), Some((false, "Note added.".to_string())));
    }
}
