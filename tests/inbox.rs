//! The inbox and the thread API over real HTTP: sign-in, sessions, CSRF,
//! one account never seeing another's threads, hostile names shown as text,
//! filters, replies inside and outside the window, notes, reassignment,
//! live updates, the `handoff operator add` command, and queues: the
//! availability toggle in the header, idleness, the queues page, and Done.

// Test code: a failed unwrap, expect or panic is how a test reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use harness::{aisha, binary, browser, events_queues, hidden, until, Db, Server, POLL};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

const KEY: &str = "hk_inbox_one";
const OTHER_KEY: &str = "hk_inbox_two";
const META_SECRET: &str = "inbox-app-secret";
const PASSWORD: &str = "a long enough password";
/// How long the service gets to come where a test waits for it.
const FIVE_SECONDS: Duration = Duration::from_secs(5);

/// Queues for Acme: `events-closers` (where Aisha's kind of lead goes)
/// with Priya and an email no operator has, one open thread each, always
/// open, escalating to `events-senior-closers` (Priya) after 2 h.
fn queues() -> String {
    events_queues(&["priya@acme.example", "nobody@acme.example"])
}

/// The configuration; `acme_keys` go in Acme's account table, `acme_tables`
/// after its subtables (its queues).
fn config(acme_keys: &str, acme_tables: &str) -> String {
    format!(
        r#"[[accounts]]
id = "acme"
name = "Acme Events"
api_keys = ["env:KEY_ONE"]
{acme_keys}
[accounts.routing]
default = "events"
[accounts.meta]
app_secrets = ["env:META_SECRET"]
{acme_tables}
[[accounts]]
id = "globex"
api_keys = ["env:KEY_TWO"]
playbooks = ["clinics"]
[accounts.routing]
default = "clinics"

[delivery]
pair_interval_seconds = 0.2
"#
    )
}

async fn start(db: &Db) -> Server {
    start_with(db, "", "").await
}

/// A server whose Acme account has `acme_keys` and `acme_tables` (see
/// [`config`]), with an operator at each account: Priya at Acme, Omar at
/// Globex.
async fn start_with(db: &Db, acme_keys: &str, acme_tables: &str) -> Server {
    let env = [
        ("KEY_ONE", KEY),
        ("KEY_TWO", OTHER_KEY),
        ("META_SECRET", META_SECRET),
    ];
    Server::setup(db, &config(acme_keys, acme_tables), &env)
        .operators(
            PASSWORD,
            &[
                ("acme", "priya@acme.example", "Priya"),
                ("globex", "omar@globex.example", "Omar"),
            ],
        )
        .start()
        .await
}

#[tokio::test]
async fn signing_in_needs_the_right_password_and_the_forms_token() {
    let db = Db::sqlite();
    let s = start(&db).await;
    let client = browser();
    // Not signed in: every page leads to the sign-in page.
    let r = client.get(s.url("/inbox")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/inbox/login");
    let page = client
        .get(s.url("/inbox/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = hidden(&page, "csrf");
    // A wrong password, and an unknown email, read alike; each answer is a
    // fresh form with a fresh token.
    let mut csrf = csrf;
    for (email, password) in [
        ("priya@acme.example", "wrong password!"),
        ("nobody@acme.example", PASSWORD),
    ] {
        let r = client
            .post(s.url("/inbox/login"))
            .form(&[("email", email), ("password", password), ("csrf", &csrf)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let page = r.text().await.unwrap();
        assert!(page.contains("do not match"));
        csrf = hidden(&page, "csrf");
    }
    // Without the sign-in form's token (a forged cross-site form): refused.
    let r = browser()
        .post(s.url("/inbox/login"))
        .form(&[
            ("email", "priya@acme.example"),
            ("password", PASSWORD),
            ("csrf", "forged"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The right one: a session cookie that scripts cannot read.
    let page = client
        .get(s.url("/inbox/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = hidden(&page, "csrf");
    let r = client
        .post(s.url("/inbox/login"))
        .form(&[
            ("email", "Priya@Acme.example"),
            ("password", PASSWORD),
            ("csrf", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    // Two cookies are set, in no particular order: the session, and the
    // sign-in form's pairing cookie cleared.
    let set: Vec<&str> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(set.len(), 2, "{set:?}");
    let cookie = set
        .iter()
        .find(|c| c.starts_with("handoff_session="))
        .unwrap_or_else(|| panic!("no session cookie: {set:?}"));
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(
        cookie.contains("Path=/;") && cookie.contains("Max-Age=43200"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "plain HTTP here: {cookie}");
    assert!(
        set.iter()
            .any(|c| c.starts_with("handoff_login=;") && c.contains("Max-Age=0")),
        "{set:?}"
    );
    let page = client
        .get(s.url("/inbox"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Priya · Acme Events"));
    // Sign out: the session is over.
    let csrf = hidden(&page, "csrf");
    let r = client
        .post(s.url("/inbox/logout"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = client.get(s.url("/inbox")).send().await.unwrap();
    assert_eq!(r.headers()["location"], "/inbox/login");
    // Behind a TLS proxy the cookie is Secure.
    let page = client
        .get(s.url("/inbox/login"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert!(page.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Secure"));
}

#[tokio::test]
async fn an_operator_sees_only_their_accounts_threads_and_hostile_names_as_text() {
    let db = Db::sqlite();
    let s = start(&db).await;
    let acme = s
        .new_lead(KEY, &json!({"name": "<script>alert(1)</script>", "phone": "+919800000101", "intent": "pricing"}))
        .await;
    let globex = s
        .new_lead(
            OTHER_KEY,
            &json!({"name": "Globex Patient", "phone": "+919800000102", "intent": "appointment"}),
        )
        .await;
    let (priya, _) = sign_in(&s, "priya@acme.example").await;
    let list = priya
        .get(s.url("/inbox"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        list.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;")
            || list.contains("&lt;script&gt;"),
        "escaped"
    );
    assert!(!list.contains("<script>alert"), "never run");
    assert!(!list.contains("Globex Patient"));
    let r = priya
        .get(s.url(&format!("/inbox/threads/{globex}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "another account's thread does not exist"
    );
    let page = priya
        .get(s.url(&format!("/inbox/threads/{acme}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("<script>alert"));
    let (omar, csrf) = sign_in(&s, "omar@globex.example").await;
    let r = omar
        .post(s.url(&format!("/inbox/threads/{acme}/takeover")))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let flash = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        // `error:` and the text in hex, the `:` percent-encoded.
        flash.starts_with("handoff_flash=error%3A"),
        "refused: {flash}"
    );
    let (_, lead) = s.get(&format!("/v1/leads/{acme}"), KEY).await;
    assert_eq!(
        lead["thread"]["state"], "automated",
        "another account's operator changed nothing"
    );
}

#[tokio::test]
async fn forms_without_the_sessions_token_or_from_another_site_change_nothing() {
    let db = Db::sqlite();
    let s = start(&db).await;
    let id = s.new_lead(KEY, &aisha()).await;
    let (priya, csrf) = sign_in(&s, "priya@acme.example").await;
    let takeover = s.url(&format!("/inbox/threads/{id}/takeover"));
    let r = priya
        .post(&takeover)
        .form(&[("csrf", "not-the-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = priya
        .post(&takeover)
        .header("origin", "https://evil.example")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (_, lead) = s.get(&format!("/v1/leads/{id}"), KEY).await;
    assert_eq!(lead["thread"]["state"], "automated");
    // With the token: taken over, on the thread's trail.
    let r = priya
        .post(&takeover)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, lead) = s.get(&format!("/v1/leads/{id}"), KEY).await;
    assert_eq!(lead["thread"]["state"], "human");
    let page = priya
        .get(s.url(&format!("/inbox/threads/{id}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("takeover</span> Priya"), "the trail says who");
}

#[tokio::test]
async fn threads_filter_by_state_queue_playbook_and_search() {
    let db = Db::sqlite();
    let s = start(&db).await;
    let aisha = s.new_lead(KEY, &aisha()).await;
    // A big-event caller without an opt-in: the rules want WhatsApp, but
    // the handoff is blocked until she opts in.
    let caller = s
        .new_lead(KEY, &json!({"name": "Kabir Rao", "phone": "+919800000111", "channel": "voice", "intent": "event_enquiry", "fields": {"city": "Amritsar", "event_date": "2027-10-30", "guests": 800, "event_type": "wedding"}}))
        .await;
    let (st, _) = s
        .request(
            Method::POST,
            &format!("/v1/leads/{aisha}/takeover"),
            KEY,
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let ids = |v: &Value| -> Vec<String> {
        v["threads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["lead_id"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, all) = s.get("/v1/threads", KEY).await;
    assert_eq!(
        ids(&all),
        vec![caller.clone(), aisha.clone()],
        "newest activity first"
    );
    let (_, human) = s.get("/v1/threads?state=human", KEY).await;
    assert_eq!(ids(&human), vec![aisha.clone()]);
    let (_, blocked) = s.get("/v1/threads?state=blocked", KEY).await;
    assert_eq!(ids(&blocked), vec![caller.clone()]);
    let (_, queue) = s.get("/v1/threads?queue=events-senior-closers", KEY).await;
    assert_eq!(ids(&queue), vec![caller.clone()]);
    let (_, found) = s.get("/v1/threads?q=kabir", KEY).await;
    assert_eq!(ids(&found), vec![caller.clone()]);
    let (_, found) = s.get("/v1/threads?q=98123", KEY).await;
    assert_eq!(ids(&found), vec![aisha.clone()], "by phone");
    let (_, none) = s.get("/v1/threads?playbook=clinics", KEY).await;
    assert_eq!(ids(&none), Vec::<String>::new());
    let (st, e) = s.get("/v1/threads?state=sleeping", KEY).await;
    assert_eq!(
        (st, e["error"]["at"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("state"))
    );
    // Unread markers: new activity until the operator opens the thread.
    let (priya, _) = sign_in(&s, "priya@acme.example").await;
    let list = priya
        .get(s.url("/inbox"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(list.matches("class=\"thread unread\"").count(), 2);
    priya
        .get(s.url(&format!("/inbox/threads/{caller}")))
        .send()
        .await
        .unwrap();
    let list = priya
        .get(s.url("/inbox"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(list.matches("class=\"thread unread\"").count(), 1);
    let list = priya
        .get(s.url("/inbox?state=human"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(list.contains("Aisha Khan") && !list.contains("Kabir Rao"));
}

#[tokio::test]
async fn replies_are_free_text_only_inside_the_window_and_pause_automation() {
    let db = Db::sqlite();
    let s = start(&db).await;
    let id = s.new_lead(KEY, &aisha()).await;
    let sent = async || s.sandbox(KEY, "acme").await["accepted"].as_u64();
    let accepted = async |n: u64| until(FIVE_SECONDS, POLL, sent, |m| *m == Some(n)).await;
    // The rules' own template goes first.
    let _ = accepted(1).await;
    let path = format!("/v1/leads/{id}/reply");
    // Her window is closed: free text is refused, with why.
    let (st, e) = s.post(&path, KEY, &json!({"text": "Hello!"})).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("window is closed"));
    let (st, _) = s
        .post(&path, KEY, &json!({"template": "no_such_template"}))
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    // The templates, filled in for her.
    let (_, t) = s.get(&format!("/v1/leads/{id}/templates"), KEY).await;
    assert_eq!(t["window_open"], false);
    let options = t["templates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "event_options")
        .unwrap()
        .clone();
    assert_eq!(
        options["preview"],
        "Hi Aisha, here are options for your March 14 Goa event."
    );
    // An approved template goes; the thread is now a person's.
    let (st, r) = s
        .post(
            &path,
            KEY,
            &json!({"template": "event_options", "by": "Priya"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(r["thread"], "human");
    let (_, lead) = s.get(&format!("/v1/leads/{id}"), KEY).await;
    assert_eq!(lead["thread"]["state"], "human");
    let reply = lead["outbox"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["payload"]["by"] == "Priya")
        .unwrap()
        .clone();
    assert_eq!(
        reply["payload"]["template"]["params"],
        json!(["Aisha", "March 14", "Goa"])
    );
    assert!(lead["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["from"] == "operator:Priya"));
    // It is sent although the thread is taken over (a person's reply).
    let sent = accepted(2).await.is_ok();
    assert!(sent, "the automated template and the person's reply");
    // Notes and reassignment, on the trail.
    let (st, _) = s
        .post(
            &format!("/v1/leads/{id}/notes"),
            KEY,
            &json!({"text": "Prefers calls after 6pm", "by": "Priya"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, e) = s
        .post(
            &format!("/v1/leads/{id}/notes"),
            KEY,
            &json!({"text": "  "}),
        )
        .await;
    assert_eq!(
        (st, e["error"]["at"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("text"))
    );
    let (st, _) = s
        .post(
            &format!("/v1/leads/{id}/reassign"),
            KEY,
            &json!({"queue": "events-senior"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s
        .post(
            &format!("/v1/leads/{id}/reassign"),
            KEY,
            &json!({"queue": "bad queue!"}),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    let (priya, _) = sign_in(&s, "priya@acme.example").await;
    let page = priya
        .get(s.url(&format!("/inbox/threads/{id}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Prefers calls after 6pm"));
    assert!(page.contains("events-senior"));
    assert!(page.contains("Closed: the lead has never written on WhatsApp"));
}

#[tokio::test]
async fn open_pages_hear_of_changes_to_their_accounts_threads() {
    let db = Db::sqlite();
    let s = start(&db).await;
    let (priya, _) = sign_in(&s, "priya@acme.example").await;
    let mut events = priya.get(s.url("/inbox/events")).send().await.unwrap();
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    // Another account's lead first: not told. Then one of hers.
    s.new_lead(
        OTHER_KEY,
        &json!({"name": "Globex Patient", "phone": "+919800000131", "intent": "appointment"}),
    )
    .await;
    let id = s.new_lead(KEY, &aisha()).await;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains(&id) {
        let chunk = tokio::time::timeout_at(deadline, events.chunk())
            .await
            .expect("an event in time")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(seen.contains("event: thread"), "{seen}");
    assert_eq!(
        seen.matches("lead_id").count(),
        seen.matches(&id).count(),
        "only her account's threads: {seen}"
    );
}

#[test]
fn operator_add_creates_an_operator_who_can_sign_in() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("ops.db").display());
    let run = |password: &str, email: &str| {
        binary()
            .current_dir(dir.path())
            .args([
                "operator",
                "add",
                "--account",
                "demo",
                "--email",
                email,
                "--name",
                "Dev Das",
                "--database",
                &db,
            ])
            .env("HANDOFF_OPERATOR_PASSWORD", password)
            .env("HANDOFF_DEMO_API_KEY", "hk_demo")
            .output()
            .unwrap()
    };
    let short = run("short", "dev@example.com");
    assert_eq!(short.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 10"));
    let ok = run(PASSWORD, "Dev@Example.com");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("dev@example.com"));
    let again = run(PASSWORD, "dev@example.com");
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    let wrong = binary()
        .current_dir(dir.path())
        .args([
            "operator",
            "add",
            "--account",
            "nope",
            "--email",
            "x@example.com",
            "--name",
            "X",
            "--database",
            &db,
        ])
        .env("HANDOFF_OPERATOR_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("no account `nope`"));
}

#[tokio::test]
async fn a_reply_from_the_business_phone_pauses_automation() {
    let db = Db::sqlite();
    let s = start(&db).await;
    let id = s.new_lead(KEY, &aisha()).await;
    // Someone at the business answers from the WhatsApp Business app: Meta
    // echoes it (`smb_message_echoes`).
    let echo = json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"field": "smb_message_echoes", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        "message_echoes": [{"from": "15550783881", "to": "919812345678", "id": "wamid.echo-1", "timestamp": "1799999100", "type": "text", "text": {"body": "Hi Aisha, Dev here from the events team."}}]
    }}]}]});
    let body = serde_json::to_vec(&echo).unwrap();
    let (st, _) = s.post_meta("/webhooks/meta/acme", &body, META_SECRET).await;
    assert_eq!(st, StatusCode::OK);
    let lead = async || s.get(&format!("/v1/leads/{id}"), KEY).await.1;
    let lead = until(FIVE_SECONDS, POLL, lead, |l| {
        l["thread"]["state"] == "human"
    })
    .await
    .unwrap_or_else(|lead| lead);
    assert_eq!(lead["thread"]["state"], "human", "{lead:#}");
    let said = lead["transcript"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(said["from"], "business");
    assert_eq!(said["text"], "Hi Aisha, Dev here from the events team.");
    assert!(
        lead["thread"]["last_inbound_at"].is_null(),
        "the business writing opens no window"
    );
}

/// A page's text as `client` sees it.
async fn page(client: &reqwest::Client, url: &str) -> String {
    let r = client.get(url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{url}");
    r.text().await.unwrap()
}

/// Signs in as `email`: the browser and the session's form token.
async fn sign_in(s: &Server, email: &str) -> (reqwest::Client, String) {
    let operator = s.sign_in(email, PASSWORD).await;
    (operator.client, operator.csrf)
}

/// How `GET /v1/queues` shows the member `email` of `queue`.
async fn member(s: &Server, queue: &str, email: &str) -> Value {
    let (st, queues) = s.get("/v1/queues", KEY).await;
    assert_eq!(st, StatusCode::OK, "{queues}");
    queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == queue)
        .and_then(|q| {
            q["members"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["member"] == email)
        })
        .unwrap_or_else(|| panic!("no {email} in {queue}: {queues:#}"))
        .clone()
}

/// Waits (up to 10 s) until the lead's thread satisfies `ready`.
async fn wait_thread(s: &Server, id: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let within = Duration::from_secs(10);
    let lead = s.wait_lead(KEY, id, within, |l| ready(&l["thread"])).await;
    lead["thread"].clone()
}

/// Posts a header or thread form of the inbox, from the inbox page `from`.
async fn post_form(
    s: &Server,
    client: &reqwest::Client,
    path: &str,
    from: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    client
        .post(s.url(path))
        .header("referer", s.url(from))
        .header("origin", &s.base)
        .form(form)
        .send()
        .await
        .unwrap()
}

/// A lead like Aisha (a Goa wedding enquiry with a WhatsApp opt-in): the
/// rules put her in `events-closers`.
fn goa_lead(name: &str, phone: &str) -> Value {
    let mut lead = aisha();
    lead["name"] = json!(name);
    lead["phone"] = json!(phone);
    lead
}

#[tokio::test]
async fn operators_set_themselves_available_or_away_from_the_header() {
    let db = Db::sqlite();
    let s = start_with(&db, "", &queues()).await;
    let (priya, csrf) = sign_in(&s, "priya@acme.example").await;
    // Signed in, nobody is available until they say so.
    let list = page(&priya, &s.url("/inbox")).await;
    assert!(list.contains("id=\"presence-status\""), "{list}");
    assert!(list.contains(">Away</span>") && list.contains(">Set available</button>"));
    assert!(list.contains("href=\"/inbox/queues\""), "the Queues link");
    assert!(
        list.contains(&format!("data-csrf=\"{csrf}\"")),
        "for the ping"
    );
    let m = member(&s, "events-closers", "priya@acme.example").await;
    assert_eq!(
        (m["available"].clone(), m["status"].clone()),
        (json!(false), json!("away"))
    );
    // Globex has no queues: no availability, no Queues link.
    let (omar, _) = sign_in(&s, "omar@globex.example").await;
    let other = page(&omar, &s.url("/inbox")).await;
    assert!(!other.contains("presence-status") && !other.contains("/inbox/queues"));

    // Available, back on the page the button was pressed on.
    let r = post_form(
        &s,
        &priya,
        "/inbox/presence",
        "/inbox/queues",
        &[("csrf", &csrf), ("available", "1")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/inbox/queues");
    let queues = page(&priya, &s.url("/inbox/queues")).await;
    assert!(queues.contains("You are available"), "the flash: {queues}");
    assert!(queues.contains(">Available</span>") && queues.contains(">Set away</button>"));
    let m = member(&s, "events-closers", "priya@acme.example").await;
    assert_eq!(
        (m["available"].clone(), m["status"].clone()),
        (json!(true), json!("available"))
    );
    let again = page(&priya, &s.url("/inbox/queues")).await;
    assert!(!again.contains("You are available"), "a flash shows once");

    // Without the token, or from another site: nothing changes.
    for (token, origin) in [
        ("forged", s.base.as_str()),
        (csrf.as_str(), "https://evil.example"),
    ] {
        let r = priya
            .post(s.url("/inbox/presence"))
            .header("origin", origin)
            .form(&[("csrf", token), ("available", "0")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
    assert_eq!(
        member(&s, "events-closers", "priya@acme.example").await["status"],
        "available"
    );

    // Away; a page of another site as the referrer leads to the list.
    let r = priya
        .post(s.url("/inbox/presence"))
        .header("referer", "https://evil.example/inbox/queues")
        .form(&[("csrf", csrf.as_str()), ("available", "0")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/inbox");
    let list = page(&priya, &s.url("/inbox")).await;
    assert!(list.contains("You are away") && list.contains(">Away</span>"));
    let m = member(&s, "events-closers", "priya@acme.example").await;
    assert_eq!(
        (m["available"].clone(), m["status"].clone()),
        (json!(false), json!("away"))
    );

    // The page's activity ping: the session's token, else refused.
    let ping = |token: &str, client: &reqwest::Client| {
        client
            .post(s.url("/inbox/presence/ping"))
            .form(&[("csrf", token.to_string())])
            .send()
    };
    assert_eq!(
        ping(&csrf, &priya).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        ping("forged", &priya).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        ping(&csrf, &browser()).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn an_available_operator_without_activity_is_idle_until_the_page_pings() {
    let db = Db::sqlite();
    // Idle after 6 s without activity.
    let s = start_with(&db, "idle_minutes = 0.1", &queues()).await;
    let (priya, csrf) = sign_in(&s, "priya@acme.example").await;
    let r = post_form(
        &s,
        &priya,
        "/inbox/presence",
        "/inbox",
        &[("csrf", &csrf), ("available", "1")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        member(&s, "events-closers", "priya@acme.example").await["status"],
        "available"
    );
    tokio::time::sleep(Duration::from_millis(6500)).await;
    assert_eq!(
        member(&s, "events-closers", "priya@acme.example").await["status"],
        "idle"
    );
    // A lead comes in meanwhile: it waits, Priya being idle.
    let id = s.new_lead(KEY, &aisha()).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        s.get(&format!("/v1/leads/{id}"), KEY).await.1["thread"]["queue_state"],
        "waiting"
    );
    // An open page refreshing itself on a live update is not activity.
    let live = priya
        .get(s.url("/inbox"))
        .header("x-live", "1")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(live.contains("Available · idle"), "{live}");
    assert_eq!(
        member(&s, "events-closers", "priya@acme.example").await["status"],
        "idle"
    );
    // The page's ping (she moved the mouse): active again, and the thread is hers.
    let r = priya
        .post(s.url("/inbox/presence/ping"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        member(&s, "events-closers", "priya@acme.example").await["status"],
        "available"
    );
    let t = wait_thread(&s, &id, |t| t["queue_state"] == "assigned").await;
    assert_eq!(t["assignee"], "Priya");
}

#[tokio::test]
async fn the_queues_page_shows_members_and_who_waits_and_done_frees_capacity() {
    let db = Db::sqlite();
    let s = start_with(&db, "", &queues()).await;
    let (priya, csrf) = sign_in(&s, "priya@acme.example").await;
    // Priya is away: both leads wait, oldest first.
    let aisha = s.new_lead(KEY, &aisha()).await;
    let rohan = s
        .new_lead(KEY, &goa_lead("Rohan <b>Mehta</b>", "+919800000201"))
        .await;
    for id in [&aisha, &rohan] {
        wait_thread(&s, id, |t| t["queue_state"] == "waiting").await;
    }
    let queues = page(&priya, &s.url("/inbox/queues")).await;
    let closers = queues
        .split("id=\"queue-events-closers\"")
        .nth(1)
        .unwrap()
        .split("id=\"queue-events-senior-closers\"")
        .next()
        .unwrap();
    assert!(closers.contains("round robin"), "{closers}");
    assert!(closers.contains("1 open thread per member"), "{closers}");
    assert!(closers.contains("escalates to <a href=\"#queue-events-senior-closers\">events-senior-closers</a> after 2h"), "{closers}");
    assert!(closers.contains("open now"), "{closers}");
    assert!(
        closers.contains("Priya <span class=\"muted\">(you)</span>"),
        "{closers}"
    );
    assert!(closers.contains("nobody@acme.example") && closers.contains("No such operator"));
    assert!(closers.contains(">Away</span>") && closers.contains("0 of 1"));
    assert!(
        closers.contains("Waiting <span class=\"muted\">(2)"),
        "{closers}"
    );
    let (a, r) = (
        closers.find(&format!("href=\"/inbox/threads/{aisha}\">Aisha Khan</a>")),
        closers.find(&format!(
            "href=\"/inbox/threads/{rohan}\">Rohan &lt;b&gt;Mehta&lt;"
        )),
    );
    assert!(
        a.is_some() && r.is_some() && a < r,
        "oldest first, names as text: {closers}"
    );
    assert!(closers.contains("waiting under a minute"), "{closers}");
    assert!(queues.contains("least loaded"), "the senior queue");
    // The list: who waits where, and a filter for it.
    let list = page(&priya, &s.url("/inbox?state=waiting")).await;
    assert!(list.contains("<option value=\"waiting\" selected>Waiting</option>"));
    assert_eq!(
        list.matches("waiting in events-closers").count(),
        2,
        "{list}"
    );
    let thread = page(&priya, &s.url(&format!("/inbox/threads/{aisha}"))).await;
    assert!(
        thread.contains("Waiting for under a minute, since"),
        "{thread}"
    );
    assert!(
        thread.contains("id=\"done\""),
        "a waiting thread can be done"
    );
    assert!(
        thread.contains("queued</span> handoff"),
        "the trail: {thread}"
    );

    // Available: the oldest is hers; the other waits (capacity one).
    post_form(
        &s,
        &priya,
        "/inbox/presence",
        "/inbox",
        &[("csrf", &csrf), ("available", "1")],
    )
    .await;
    let t = wait_thread(&s, &aisha, |t| t["queue_state"] == "assigned").await;
    assert_eq!(t["assignee"], "Priya");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let m = member(&s, "events-closers", "priya@acme.example").await;
    assert_eq!(m["load"], 1);
    let list = page(&priya, &s.url("/inbox")).await;
    assert!(
        list.contains("with Priya") && list.contains("waiting in events-closers"),
        "{list}"
    );
    let thread = page(&priya, &s.url(&format!("/inbox/threads/{aisha}"))).await;
    assert!(thread.contains("With Priya since"), "{thread}");
    assert!(thread.contains("not picked up yet"));
    assert!(
        thread.contains("assigned</span> handoff"),
        "the trail: {thread}"
    );
    let queues = page(&priya, &s.url("/inbox/queues")).await;
    assert!(queues.contains("1 of 1") && !queues.contains(&format!("/inbox/threads/{aisha}\"")));

    // Done: off her load, so Rohan's thread comes to her.
    let r = post_form(
        &s,
        &priya,
        &format!("/inbox/threads/{aisha}/done"),
        &format!("/inbox/threads/{aisha}"),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers()["location"],
        format!("/inbox/threads/{aisha}").as_str()
    );
    let t = wait_thread(&s, &rohan, |t| t["queue_state"] == "assigned").await;
    assert_eq!(t["assignee"], "Priya");
    let (_, lead) = s.get(&format!("/v1/leads/{aisha}"), KEY).await;
    assert_eq!(lead["thread"]["queue_state"], "done");
    let thread = page(&priya, &s.url(&format!("/inbox/threads/{aisha}"))).await;
    assert!(
        thread.contains("Done: the conversation is closed"),
        "the flash: {thread}"
    );
    assert!(
        thread.contains("done</span> Priya"),
        "the trail says who: {thread}"
    );
    assert!(thread.contains("Done (Priya had it)"));
    assert!(!thread.contains("id=\"done\""), "not open: no Done button");
    // Done again: nothing to close.
    let r = post_form(
        &s,
        &priya,
        &format!("/inbox/threads/{aisha}/done"),
        &format!("/inbox/threads/{aisha}"),
        &[("csrf", &csrf)],
    )
    .await;
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .starts_with("handoff_flash=error%3A"));
    let thread = page(&priya, &s.url(&format!("/inbox/threads/{aisha}"))).await;
    assert!(
        thread.contains("the thread is not open: nothing to close"),
        "{thread}"
    );
    // Without the token: refused.
    let r = post_form(
        &s,
        &priya,
        &format!("/inbox/threads/{rohan}/done"),
        "/inbox",
        &[("csrf", "forged")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        member(&s, "events-closers", "priya@acme.example").await["load"],
        1
    );
}

#[tokio::test]
async fn the_thread_page_shows_the_conversation_the_answers_and_done_closes_any_open_thread() {
    let db = Db::sqlite();
    let s = start(&db).await;
    let mut lead = aisha();
    lead["answers"] = json!([
        {"question": "Which venue style?", "answer": "<b>Beach</b>"},
        {"question": "Any dietary needs?", "answer": "Jain food"},
    ]);
    let id = s.new_lead(KEY, &lead).await;
    let (priya, csrf) = sign_in(&s, "priya@acme.example").await;
    let path = format!("/inbox/threads/{id}");
    let url = s.url(&path);
    let thread = page(&priya, &url).await;
    assert!(
        thread.contains("id=\"conversation\">Open since"),
        "{thread}"
    );
    let venue = thread
        .find("Which venue style?")
        .expect("the answers are shown");
    let diet = thread.find("Any dietary needs?").unwrap();
    assert!(venue < diet, "in the order asked");
    assert!(thread.contains("&lt;b&gt;Beach&lt;&#x2f;b&gt;") || thread.contains("&lt;b&gt;Beach"));
    // Her thread is in a queue without members: Done still closes it.
    assert!(
        thread.contains("id=\"done\""),
        "Done is offered on any open thread"
    );
    let r = post_form(
        &s,
        &priya,
        &format!("{path}/done"),
        &path,
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let thread = page(&priya, &url).await;
    assert!(
        thread.contains("Done: the conversation is closed"),
        "{thread}"
    );
    assert!(thread.contains("id=\"conversation\">Closed"), "{thread}");
    assert!(!thread.contains("id=\"done\""));
    let (_, again) = s.post("/v1/leads", KEY, &aisha()).await;
    assert_eq!(
        again["decision"]["handoff"]["outcome"], "template",
        "a new conversation"
    );
}
