//! Queues end to end, with the real binary: operators created with
//! `handoff operator add`, signed in to the inbox over HTTP, going on and off
//! line; leads posted to `POST /v1/leads` and routed by a playbook to a
//! queue; the assignments, an escalation with a shortened time across a
//! SIGKILL and restart, `GET /v1/queues`, the metrics, and an AI agent
//! member receiving its threads as signed webhooks.

// Test code: a failed unwrap, expect or panic is how a test reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use harness::{binary, eventually, free_port, hook, until, Api, Operator, PgDatabase, Process};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const KEY: &str = "hk_queues_key";
const PASSWORD: &str = "a long enough password";
const AGENT_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

const PLAYBOOK: &str = r#"playbook sales {
  rule buyers {
    when intent == "buy"
    then assign "closers"
  }
  rule questions {
    when intent == "question"
    then assign "bot"
  }
  rule floor {
    when intent == "floor"
    then assign "floor"
  }
}
"#;

/// A directory with the playbook and a configuration: `closers` (Asha and
/// Bilal, one open thread each, escalating to `seniors` after 5 s without a
/// person), `seniors` (Chen), `floor` (all three, three threads each) and
/// `bot` (an AI agent at `agent_url`). The database is SQLite in `dir`
/// unless `database` names one.
fn setup(dir: &Path, agent_url: &str, database: Option<&str>) {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("sales.rules"), PLAYBOOK).unwrap();
    let database = database
        .map(str::to_string)
        .unwrap_or_else(|| format!("sqlite://{}", dir.join("handoff.db").display()));
    harness::process::write_config(
        dir,
        &database,
        &rules,
        None,
        &format!(
            r#"[[accounts]]
id = "acme"
api_keys = ["env:QUEUES_KEY"]
[accounts.routing]
default = "sales"
[accounts.endpoints.qualifier]
url = "{agent_url}"
secret = "env:AGENT_SECRET"
allow_private = true

[accounts.queues.closers]
members = ["asha@acme.example", "bilal@acme.example"]
strategy = "round_robin"
capacity = 1
escalate_after = "5s"
escalate_to = "seniors"

[accounts.queues.seniors]
members = ["chen@acme.example"]
strategy = "least_loaded"

[accounts.queues.floor]
members = ["asha@acme.example", "bilal@acme.example", "chen@acme.example"]
strategy = "least_loaded"
capacity = 3

[accounts.queues.bot]
members = ["agent:qualifier"]
"#
        ),
    );
    for (email, name) in [
        ("asha@acme.example", "Asha"),
        ("bilal@acme.example", "Bilal"),
        ("chen@acme.example", "Chen"),
    ] {
        operator(dir, &["add", "--email", email, "--name", name]);
    }
}

/// Runs `handoff operator <args> --account acme` on the directory's
/// configuration; what it printed.
fn operator(dir: &Path, args: &[&str]) -> String {
    let out = binary()
        .arg("operator")
        .args(args)
        .args(["--account", "acme", "--config"])
        .arg(dir.join("handoff.toml"))
        .env("HANDOFF_OPERATOR_PASSWORD", PASSWORD)
        .env("QUEUES_KEY", KEY)
        .env("AGENT_SECRET", AGENT_SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What `handoff operator list` prints for the account.
fn operator_list(dir: &Path) -> String {
    operator(dir, &["list"])
}

fn serve(dir: &Path, port: u16) -> Process {
    harness::process::serve(
        dir,
        port,
        &[("QUEUES_KEY", KEY), ("AGENT_SECRET", AGENT_SECRET)],
    )
}

/// Signs in at the instance at `base` as `email`.
async fn sign_in(base: &str, email: &str) -> Operator {
    Operator::sign_in(base, email, PASSWORD).await
}

/// `GET path` at one instance, with the account's key.
async fn api(base: &str, path: &str) -> Value {
    Api::new(base).json(path, KEY).await
}

async fn post_lead(base: &str, name: &str, phone: &str, intent: &str) -> String {
    let lead = json!({"name": name, "phone": phone, "channel": "web_form", "intent": intent});
    Api::new(base).new_lead(KEY, &lead).await
}

async fn thread(base: &str, id: &str) -> Value {
    api(base, &format!("/v1/leads/{id}")).await["thread"].clone()
}

/// Waits (up to 15 s) until the lead's thread satisfies `ready`.
async fn wait_thread(base: &str, id: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let (api, within) = (Api::new(base), Duration::from_secs(15));
    let lead = api
        .wait_lead(KEY, id, within, |l| ready(&l["thread"]))
        .await;
    lead["thread"].clone()
}

fn queue<'a>(queues: &'a Value, name: &str) -> &'a Value {
    queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == name)
        .unwrap_or_else(|| panic!("no queue {name} in {queues:#}"))
}

fn member<'a>(q: &'a Value, name: &str) -> &'a Value {
    q["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no member {name} in {q:#}"))
}

/// The thread's inbox page, trail included, as a signed-in operator sees it.
async fn thread_page(op: &Operator, base: &str, id: &str) -> String {
    op.page(base, &format!("/inbox/threads/{id}")).await
}

#[tokio::test]
async fn threads_go_to_who_is_available_wait_for_who_comes_back_and_escalate_once_across_a_restart()
{
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), "http://127.0.0.1:9/unused", None);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let server = serve(dir.path(), port);
    let listed = operator_list(dir.path());
    assert!(
        listed
            .lines()
            .filter(|l| l.contains(" away ") && l.ends_with("never"))
            .count()
            == 3,
        "{listed}"
    );
    let asha = sign_in(&base, "asha@acme.example").await;
    let bilal = sign_in(&base, "bilal@acme.example").await;
    asha.available(&base, true).await;
    let listed = operator_list(dir.path());
    let line = listed
        .lines()
        .find(|l| l.starts_with("asha@acme.example"))
        .unwrap();
    assert!(
        line.contains(" available ") && line.contains(" UTC"),
        "{listed}"
    );

    // Asha is available, Bilal is not: the first thread is hers, the second
    // waits (her capacity is one open thread).
    let first = post_lead(&base, "Meera", "+919811000001", "buy").await;
    let t = wait_thread(&base, &first, |t| t["queue_state"] == "assigned").await;
    assert_eq!(t["assignee"], "Asha");
    let second = post_lead(&base, "Kabir", "+919811000002", "buy").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let queues = api(&base, "/v1/queues").await;
    let closers = queue(&queues, "closers");
    assert_eq!(
        closers["waiting"][0]["lead_id"],
        second.as_str(),
        "{closers:#}"
    );
    assert_eq!(member(closers, "Asha")["load"], 1);
    assert_eq!(member(closers, "Asha")["status"], "available");
    assert_eq!(member(closers, "Bilal")["status"], "away");
    assert_eq!(
        member(queue(&queues, "seniors"), "Chen")["status"],
        "signed_out"
    );

    // Asha takes her thread over: picked up, it will not escalate.
    asha.post(&base, &format!("/inbox/threads/{first}/takeover"), &[])
        .await;
    assert!(thread(&base, &first).await["picked_up_at"].is_string());

    // The server dies with the second thread waiting; it is down past the
    // escalation time. Restarted, it escalates the thread once.
    assert_eq!(
        thread(&base, &second).await["queue"],
        "closers",
        "not escalated yet"
    );
    drop(server);
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let server = serve(dir.path(), port);
    let t = wait_thread(&base, &second, |t| t["queue"] == "seniors").await;
    assert_eq!(t["queue_state"], "waiting", "Chen is not signed in");
    let t = thread(&base, &first).await;
    assert_eq!(
        (t["queue"].as_str(), t["assignee"].as_str()),
        (Some("closers"), Some("Asha"))
    );

    // Bilal coming back changes nothing for it; Chen signing in gets it.
    bilal.available(&base, true).await;
    let chen = sign_in(&base, "chen@acme.example").await;
    chen.available(&base, true).await;
    let t = wait_thread(&base, &second, |t| t["queue_state"] == "assigned").await;
    assert_eq!(t["assignee"], "Chen");
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let page = thread_page(&chen, &base, &second).await;
    assert_eq!(
        page.matches("nobody picked it up within 5s").count(),
        1,
        "escalated once: {page}"
    );
    let metrics = metrics_text(&base).await;
    assert!(
        metrics.contains(
            "handoff_escalations_total{account=\"acme\",queue=\"closers\",to=\"seniors\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("handoff_threads_waiting{account=\"acme\",queue=\"closers\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("handoff_threads_assigned{account=\"acme\",queue=\"seniors\"} 1"),
        "{metrics}"
    );

    // Chen closes his thread: his load drops, and a new one goes to him.
    chen.post(&base, &format!("/inbox/threads/{second}/done"), &[])
        .await;
    let queues = api(&base, "/v1/queues").await;
    assert_eq!(member(queue(&queues, "seniors"), "Chen")["load"], 0);
    // Asha goes away: her next lead goes to Bilal.
    asha.available(&base, false).await;
    let third = post_lead(&base, "Zoya", "+919811000003", "buy").await;
    let t = wait_thread(&base, &third, |t| t["queue_state"] == "assigned").await;
    assert_eq!(t["assignee"], "Bilal");
    // Bilal is full and Asha away: the fourth waits, visibly, and the
    // metric says so.
    let fourth = post_lead(&base, "Ira", "+919811000004", "buy").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(thread(&base, &fourth).await["queue_state"], "waiting");
    let metrics = metrics_text(&base).await;
    assert!(
        metrics.contains("handoff_threads_waiting{account=\"acme\",queue=\"closers\"} 1"),
        "{metrics}"
    );
    drop(server);
}

#[tokio::test]
async fn an_agent_member_receives_its_threads_as_signed_webhooks() {
    let agent = hook("/agent", AGENT_SECRET, vec![]).await;
    let agent_url = agent.url.clone();

    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), &agent_url, None);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = serve(dir.path(), port);
    let id = post_lead(&base, "Rohan", "+919811000010", "question").await;
    let t = wait_thread(&base, &id, |t| t["queue_state"] == "assigned").await;
    assert_eq!(t["assignee"], "qualifier");
    let event = eventually(
        Duration::from_secs(15),
        Duration::from_millis(100),
        async || agent.events().first().cloned().ok_or(()),
    )
    .await
    .unwrap_or_else(|()| panic!("the agent got nothing"));
    assert_eq!(event["type"], "thread.assigned");
    assert_eq!(event["data"]["id"], id.as_str());
    assert_eq!(
        event["data"]["assignment"],
        json!({"queue": "bot", "agent": "qualifier"})
    );
    assert_eq!(event["data"]["name"], "Rohan");
}

/// What `GET /metrics` says at one instance.
async fn metrics_text(base: &str) -> String {
    Api::new(base).text("/metrics").await
}

/// `handoff_assignments_total` for a queue at one instance.
async fn assignments(base: &str, queue: &str) -> u64 {
    let text = metrics_text(base).await;
    let series = format!("handoff_assignments_total{{account=\"acme\",queue=\"{queue}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |n| n.parse().unwrap())
}

/// Every member's load in `queue` stays within `capacity` in this sample.
async fn loads_within(base: &str, name: &str, capacity: u64) -> (Vec<u64>, usize) {
    let queues = api(base, "/v1/queues").await;
    let q = queue(&queues, name);
    let loads: Vec<u64> = q["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["load"].as_u64().unwrap())
        .collect();
    for load in &loads {
        assert!(
            *load <= capacity,
            "a member holds {load} of {capacity}: {q:#}"
        );
    }
    (loads, q["waiting"].as_array().unwrap().len())
}

/// Samples `floor` at `base` (every member within capacity each time) until
/// everyone holds three and `waiting` wait; fails after 15 s.
async fn settles(base: &str, waiting: usize) {
    let sample = async || loads_within(base, "floor", 3).await;
    let every = Duration::from_millis(100);
    until(
        Duration::from_secs(15),
        every,
        sample,
        |(loads, now_waiting)| loads == &[3, 3, 3] && *now_waiting == waiting,
    )
    .await
    .unwrap_or_else(|(loads, now_waiting)| panic!("{loads:?} {now_waiting}"));
}

#[tokio::test]
async fn two_instances_on_postgresql_never_give_a_member_more_than_capacity() {
    let Some(admin) = harness::postgres() else {
        return;
    };
    let db = PgDatabase::create(&admin).await;
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), "http://127.0.0.1:9/unused", Some(&db.url));
    let (port_a, port_b) = (free_port(), free_port());
    let (a, b) = (
        format!("http://127.0.0.1:{port_a}"),
        format!("http://127.0.0.1:{port_b}"),
    );
    let _server_a = serve(dir.path(), port_a);
    let _server_b = serve(dir.path(), port_b);
    // Each signs in at a different instance; sessions live in the database.
    let asha = sign_in(&a, "asha@acme.example").await;
    let bilal = sign_in(&b, "bilal@acme.example").await;
    let chen = sign_in(&a, "chen@acme.example").await;
    // Thirty leads at once, half to each instance, before anyone is there.
    let posts = (0..30).map(|i| {
        let base = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move {
            post_lead(
                &base,
                &format!("Floor {i}"),
                &format!("+91982{i:07}"),
                "floor",
            )
            .await
        }
    });
    let leads = futures_util::future::join_all(posts).await;
    assert_eq!(leads.len(), 30);
    // Everyone comes on line at once, at both instances: both workers race.
    tokio::join!(
        asha.available(&a, true),
        bilal.available(&b, true),
        chen.available(&a, true)
    );
    settles(&b, 21).await;
    // Each closes one of their threads at the same moment, at either
    // instance (a session lives in the database, not in a process).
    let mut mine: Vec<(String, &Operator)> = Vec::new();
    for id in &leads {
        let t = thread(&a, id).await;
        let who = match t["assignee"].as_str() {
            Some("Asha") => &asha,
            Some("Bilal") => &bilal,
            Some("Chen") => &chen,
            _ => continue,
        };
        if !mine.iter().any(|(_, o)| std::ptr::eq(*o, who)) {
            mine.push((id.clone(), who));
        }
    }
    assert_eq!(mine.len(), 3);
    let closes = mine.iter().enumerate().map(|(i, (id, who))| {
        let base = if i % 2 == 0 { b.clone() } else { a.clone() };
        async move {
            who.post(&base, &format!("/inbox/threads/{id}/done"), &[])
                .await
        }
    });
    futures_util::future::join_all(closes).await;
    settles(&a, 18).await;
    // Nine, then three more: twelve assignments between the two, no thread twice.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let total = assignments(&a, "floor").await + assignments(&b, "floor").await;
    assert_eq!(total, 12);
    let (loads, waiting) = loads_within(&b, "floor", 3).await;
    assert_eq!((loads, waiting), (vec![3, 3, 3], 18));
}

#[test]
fn the_example_configuration_gives_the_events_playbooks_closers_members() {
    let root = harness::root();
    let env = [("HANDOFF_DEMO_KEY".to_string(), "hk_example".to_string())].into();
    let config = handoff::config::Config::load(
        Some(&root.join("examples/queues.toml")),
        &env,
        &handoff::config::Overrides::default(),
    )
    .unwrap();
    let account = &config.accounts[0];
    let names: Vec<&str> = account.queues.keys().map(String::as_str).collect();
    assert_eq!(names, ["events-closers", "events-senior-closers"]);
    let ruleset = handoff::ruleset::load(&root.join("rules"), None)
        .ruleset
        .expect("the bundled rules load");
    // Both are queues the events playbook routes to, not typos.
    let unmanaged = handoff::server::queues::unmanaged(account, &ruleset).join("\n");
    assert!(unmanaged.contains("`events-triage`"), "{unmanaged}");
    for name in names {
        assert!(!unmanaged.contains(&format!("`{name}`")), "{unmanaged}");
    }
    let closers = &account.queues["events-closers"];
    assert!(
        closers.hours.as_ref().unwrap().contains(chrono::Utc::now()),
        "open around the clock"
    );
}

#[test]
fn the_readme_queue_configuration_loads() {
    let root = harness::root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let section = &readme[readme.find("## Queues").expect("a Queues section")..];
    let start = section.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let block = &section[start..start + section[start..].find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("handoff.toml");
    std::fs::write(&file, block).unwrap();
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string();
    let env = [
        ("ACME_KEY".to_string(), "hk_readme".to_string()),
        ("SMS_WEBHOOK_SECRET".to_string(), secret.clone()),
        ("AGENT_WEBHOOK_SECRET".to_string(), secret),
    ]
    .into();
    let config =
        handoff::config::Config::load(Some(&file), &env, &handoff::config::Overrides::default())
            .unwrap_or_else(|e| panic!("the README's example: {e}"));
    let account = &config.accounts[0];
    assert_eq!(account.fallback, ["sms"]);
    assert_eq!(
        account.queues["events-closers"]
            .escalate
            .as_ref()
            .map(|e| e.1.as_str()),
        Some("events-senior-closers")
    );
    assert_eq!(
        account.queues["ai-qualifier"].members,
        [handoff::queues::Member::Agent("qualifier-bot".into())]
    );
}
