//! The operator inbox at `/inbox`: server-rendered pages (minijinja) with a
//! little plain JavaScript and live updates by server-sent events.
//!
//! Operators sign in with their email and password (argon2id). The session
//! lives in an HttpOnly, SameSite=Lax cookie (Secure when the request came
//! over TLS, as `X-Forwarded-Proto: https` says behind a proxy); only the
//! SHA-256 of its token is stored. Every form carries the session's CSRF
//! token (the sign-in form a token paired with a cookie), and a cross-site
//! `Origin` is refused. An operator only ever sees their own account.

use super::error::ApiError;
use super::threads::{self, ReplyInput, ThreadQuery};
use super::AppState;
use crate::config::Account;
use crate::store::inbox::Session;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use chrono::{DateTime, Utc};
use minijinja::Environment;
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
        ] {
            // The templates ship inside the binary; a syntax error in one is
            // a build-time bug that the inbox tests catch.
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "an inbox template does not parse");
            }
        }
        env.add_filter("when", when);
        env
    })
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

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
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

fn set_cookie(
    headers: &HeaderMap,
    name: &str,
    value: &str,
    max_age: i64,
    path: &str,
) -> HeaderValue {
    let secure = if over_tls(headers) { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Compares in constant time, so a token cannot be guessed byte by byte.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
async fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<(Session, Account), Refusal> {
    let token = cookie(headers, SESSION_COOKIE).ok_or(Refusal::SignIn)?;
    let session = state
        .store
        .session(&token_hash(&token))
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

/// The page context every signed-in page has.
fn base(session: &Session, account: &Account, page: &str) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("operator".into(), json!(session.operator));
    m.insert("account_name".into(), json!(account.name));
    m.insert("csrf".into(), json!(session.csrf));
    m.insert("page".into(), json!(page));
    m
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

/// The queues this account's threads and playbooks use, for filters and reassignment.
fn queues_of(state: &AppState, threads: &[Value]) -> Vec<String> {
    let mut queues: BTreeSet<String> = threads
        .iter()
        .filter_map(|t| t["queue"].as_str().map(str::to_string))
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
    headers: HeaderMap,
    Query(q): Query<ThreadQuery>,
) -> Result<Response, Refusal> {
    let (session, account) = signed_in(&state, &headers).await?;
    let filter = match q.filter() {
        Ok(f) => f,
        Err(_) => ThreadQuery::default().filter().unwrap_or_default(),
    };
    let threads = state
        .store
        .threads(&account.id, Some(&session.operator.id), &filter)
        .await
        .unwrap_or_default();
    // The rules' queues and those of the threads shown (a person may have
    // reassigned one to a queue no rule names).
    let queues = queues_of(&state, &threads);
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
    let mut context = base(&session, &account, "threads");
    context.insert("threads".into(), json!(shown));
    context.insert("queues".into(), json!(queues));
    context.insert("playbooks".into(), json!(playbooks));
    context.insert(
        "states".into(),
        json!([
            ["automated", "Automated"],
            ["human", "Taken over"],
            ["blocked", "Blocked"],
            ["failed", "Delivery failed"]
        ]),
    );
    context.insert(
        "filter".into(),
        json!({"q": filter.q, "queue": filter.queue, "state": filter.state, "playbook": filter.playbook}),
    );
    Ok(render("threads.html", Value::Object(context)))
}

/// The outcome of the last action, from its cookie: `(is_error, text)`.
fn flash(headers: &HeaderMap) -> Option<(bool, String)> {
    let value = cookie(headers, FLASH_COOKIE)?;
    let (kind, text) = value.split_once(':')?;
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
    let open = super::leads::window_open(last_inbound, now);
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

async fn thread(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Refusal> {
    let (session, account) = signed_in(&state, &headers).await?;
    let lead = match state.store.lead(&account.id, &id).await {
        Ok(Some(lead)) => lead,
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
    let mut context = base(&session, &account, "thread");
    context.insert("lead_id".into(), json!(lead_id));
    context.insert("badge".into(), json!(b));
    context.insert("badge_label".into(), json!(label));
    context.insert("stage".into(), json!(stage));
    context.insert("human".into(), json!(human));
    context.insert("window".into(), window_view(last_inbound));
    context.insert("outbound".into(), json!(outbound));
    context.insert("decisions".into(), json!(decisions));
    context.insert("events".into(), json!(events));
    context.insert("templates".into(), json!(templates));
    context.insert("queues".into(), json!(queues_of(&state, &[])));
    let shown = flash(&headers);
    let (error, notice) = match &shown {
        Some((true, text)) => (Some(text.clone()), None),
        Some((false, text)) => (None, Some(text.clone())),
        None => (None, None),
    };
    context.insert("error".into(), json!(error));
    context.insert("notice".into(), json!(notice));
    context.insert("lead".into(), lead);
    let mut response = render("thread.html", Value::Object(context));
    if shown.is_some() {
        response.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(&headers, FLASH_COOKIE, "", 0, "/inbox"),
        );
    }
    Ok(response)
}

/// The fields of every inbox form.
#[derive(Deserialize, Default)]
struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    queue: Option<String>,
}

fn back(headers: &HeaderMap, id: &str, result: Result<&str, String>) -> Response {
    let (kind, text) = match result {
        Ok(notice) => ("notice", notice.to_string()),
        Err(e) => ("error", e),
    };
    let mut response = Redirect::to(&format!("/inbox/threads/{id}")).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            headers,
            FLASH_COOKIE,
            &format!("{kind}:{}", hex::encode(text)),
            60,
            "/inbox",
        ),
    );
    response
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
    Form(form): Form<ActionForm>,
) -> Result<Response, Refusal> {
    let (session, account) = signed_in(&state, &headers).await?;
    if !same(&form.csrf, &session.csrf) || !same_origin(&headers) {
        return Err(Refusal::Forbidden);
    }
    let actor = session.operator.name.clone();
    let result: Result<&str, String> = match action.as_str() {
        "takeover" | "release" => {
            let human = action == "takeover";
            match state
                .store
                .set_thread_owner(&account.id, &id, human, &actor)
                .await
            {
                Ok(true) => {
                    state.announce(&account.id, &id);
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
            match threads::reply(&state, &account, &id, &actor, &input).await {
                Ok(_) => {
                    Ok("Sent: it goes out on WhatsApp now; automation is paused on this thread.")
                }
                Err(e) => Err(api_message(e)),
            }
        }
        "reassign" => match threads::clean_queue(form.queue.as_deref()) {
            Ok(queue) => match state.store.reassign(&account.id, &id, &queue, &actor).await {
                Ok(true) => {
                    state.announce(&account.id, &id);
                    Ok("Reassigned.")
                }
                Ok(false) => Err(format!("no lead `{id}`")),
                Err(e) => Err(api_message(e.into())),
            },
            Err(e) => Err(api_message(e)),
        },
        "note" => match threads::clean_text(form.text.as_deref(), "text", threads::MAX_TEXT) {
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
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(headers, LOGIN_COOKIE, &token, 1800, "/inbox/login"),
    );
    response
}

async fn login_page(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if signed_in(&state, &headers).await.is_ok() {
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
    Form(form): Form<LoginForm>,
) -> Response {
    let paired = cookie(&headers, LOGIN_COOKIE).is_some_and(|c| same(&c, &form.csrf));
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
    let mut response = Redirect::to("/inbox").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&headers, SESSION_COOKIE, &token, SESSION_HOURS * 3600, "/"),
    );
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&headers, LOGIN_COOKIE, "", 0, "/inbox/login"),
    );
    response
}

#[derive(Deserialize, Default)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Result<Response, Refusal> {
    let (session, _) = signed_in(&state, &headers).await?;
    if !same(&form.csrf, &session.csrf) || !same_origin(&headers) {
        return Err(Refusal::Forbidden);
    }
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        if let Err(e) = state.store.end_session(&token_hash(&token)).await {
            tracing::error!(error = %e, "ending a session failed");
        }
    }
    let mut response = Redirect::to("/inbox/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&headers, SESSION_COOKIE, "", 0, "/"),
    );
    Ok(response)
}

/// `GET /inbox/events`: a `thread` event (`{"lead_id"}`) whenever a thread
/// of the operator's account changes.
async fn events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let (_, account) = signed_in(&state, &headers).await?;
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
