//! The inbox in a real browser: Debian's Chromium, headless, driven through
//! ChromeDriver with the fantoccini WebDriver client. An operator signs in,
//! finds Aisha's thread, sees her city, date and earlier messages, takes
//! over, watches automation stay silent when she writes again, replies, and
//! releases. Screenshots of the thread view at desktop and phone widths go to
//! `target/test-output/screenshots/`. Then she marks herself available from
//! the header and watches the queues page list who waits, live (a screenshot
//! of it too).
//!
//! Without `/usr/bin/chromium` and `/usr/bin/chromedriver` the test says so
//! and passes, except under CI (`CI` set), where it fails: `.ci/run`
//! installs both.

// Test code: a failed unwrap, expect or panic is how a test reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use harness::{aisha, events_queues, free_port, root, until, Db, Server};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const KEY: &str = "hk_browser_key";
const META_SECRET: &str = "browser-app-secret";
const EMAIL: &str = "priya@acme.example";
const PASSWORD: &str = "correct horse battery";
/// How long the page gets to show an element or a text, and how often it is asked.
const PATIENCE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);

/// Whether the browser is here; under CI its absence is a failure.
fn browser_available() -> bool {
    let here =
        Path::new("/usr/bin/chromium").exists() && Path::new("/usr/bin/chromedriver").exists();
    if !here {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the browser tests: install the `chromium` and `chromium-driver` packages"
        );
        eprintln!("skipping the browser test: /usr/bin/chromium or /usr/bin/chromedriver is missing (apt-get install chromium chromium-driver)");
    }
    here
}

/// A Chromium session behind a chromedriver of its own, which is killed on
/// drop (and the browser with it).
struct Driver {
    client: Client,
    chromedriver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.chromedriver.kill();
        let _ = self.chromedriver.wait();
    }
}

impl Driver {
    async fn start() -> Driver {
        let port = free_port();
        let chromedriver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.path().display()),
                    "--window-size=1280,1000", "--force-device-scale-factor=1"
                ]
            }
        });
        // ChromeDriver speaks plain HTTP on the loopback: no TLS connector.
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps.as_object().unwrap().clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| panic!("no browser session: {e}"));
        Driver {
            client,
            chromedriver,
            _profile: profile,
        }
    }

    async fn go(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("going to {url}: {e}"));
    }

    async fn url(&self) -> String {
        self.client.current_url().await.unwrap().to_string()
    }

    /// The element `css` selects, waiting for it.
    async fn find(&self, css: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(PATIENCE)
            .every(POLL)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(e) => panic!("no element `{css}` ({e}) on {}", self.text("body").await),
        }
    }

    async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking `{css}`: {e}"));
    }

    async fn type_in(&self, css: &str, text: &str) {
        self.find(css)
            .await
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("typing in `{css}`: {e}"));
    }

    async fn select(&self, css: &str, value: &str) {
        self.find(css)
            .await
            .select_by_value(value)
            .await
            .unwrap_or_else(|e| panic!("choosing `{value}` in `{css}`: {e}"));
    }

    /// The text of `css`, or none while it is not on the page.
    async fn text(&self, css: &str) -> String {
        // The page may also have replaced the element between finding and
        // reading it (a navigation, a live update): that reads as no text
        // yet too, and the caller waits.
        let read = async { self.client.find(Locator::Css(css)).await?.text().await };
        match read.await {
            Ok(text) => text,
            Err(fantoccini::error::CmdError::Standard(_)) => String::new(),
            Err(e) => panic!("reading `{css}`: {e}"),
        }
    }

    /// Waits until the text of `css` contains `needle`.
    async fn wait_text(&self, css: &str, needle: &str) -> String {
        let mut text = String::new();
        for _ in 0..PATIENCE.as_millis() / POLL.as_millis() {
            text = self.text(css).await;
            if text.contains(needle) {
                return text;
            }
            tokio::time::sleep(POLL).await;
        }
        let url = self.url().await;
        panic!("`{needle}` never appeared in `{css}` of {url}: {text}");
    }

    async fn resize(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .unwrap_or_else(|e| panic!("resizing to {width}x{height}: {e}"));
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        let dir = root().join("target/test-output/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Ends the browser session (then drop stops chromedriver).
    async fn close(self) {
        self.client.clone().close().await.unwrap();
    }
}

/// Checks a screenshot is a real picture of a page: a PNG of the window's
/// width with many colours in it, not a blank or an error page.
fn check_rendered(path: &Path, width: u32) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert!(
        info.width.abs_diff(width) <= 20,
        "{}: {} px wide, expected about {width}",
        path.display(),
        info.width
    );
    let step = info.color_type.samples();
    let colours: std::collections::BTreeSet<&[u8]> = pixels[..info.buffer_size()]
        .chunks(step)
        .step_by(7)
        .collect();
    assert!(
        colours.len() > 30,
        "{} looks blank ({} colours)",
        path.display(),
        colours.len()
    );
}

/// Acme with its events queues (Priya and Dev, who is no operator, its
/// closers), and Priya, an operator.
async fn start_server(db: &Db) -> Server {
    let config = format!(
        r#"[[accounts]]
id = "acme"
name = "Acme Events"
api_keys = ["env:KEY"]
[accounts.routing]
default = "events"
[accounts.meta]
app_secrets = ["env:META_SECRET"]

{}"#,
        events_queues(&["priya@acme.example", "dev@acme.example"])
    );
    Server::setup(db, &config, &[("KEY", KEY), ("META_SECRET", META_SECRET)])
        .operators(PASSWORD, &[("acme", EMAIL, "Priya Nair")])
        .start()
        .await
}

/// What the sandbox sent.
async fn sandbox_messages(s: &Server) -> Vec<Value> {
    s.sandbox(KEY, "acme").await["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// What the sandbox sent, once it is `n` messages or 5 s have passed.
async fn wait_messages(s: &Server, n: usize) -> Vec<Value> {
    let sent = async || sandbox_messages(s).await;
    until(Duration::from_secs(5), harness::POLL, sent, |sent| {
        sent.len() == n
    })
    .await
    .unwrap_or_else(|sent| sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_takes_over_aishas_thread_replies_and_releases_it() {
    if !browser_available() {
        return;
    }
    let db = Db::sqlite();
    let s = start_server(&db).await;
    let base = &s.base;
    let aisha = aisha();
    let lead_id = s.new_lead(KEY, &aisha).await;
    // The rules sent her the approved template (her window is closed).
    assert_eq!(wait_messages(&s, 1).await.len(), 1);

    let browser = Driver::start().await;
    browser.go(&format!("{base}/inbox")).await;
    // Not signed in: the sign-in page. A wrong password is refused.
    browser.type_in("input[name=email]", EMAIL).await;
    browser
        .type_in("input[name=password]", "not the password")
        .await;
    browser.click("button[type=submit]").await;
    browser.wait_text("main", "do not match").await;
    browser.type_in("input[name=password]", PASSWORD).await;
    browser.click("button[type=submit]").await;

    // Find Aisha's thread by searching for her.
    browser.wait_text("header", "Priya Nair").await;
    browser.type_in("input[name=q]", "Aisha").await;
    browser.click(".filters button[type=submit]").await;
    browser.wait_text("#live", "Aisha Khan").await;
    browser.click(".thread a").await;

    // Her city, date and earlier message, and why she came here.
    let card = browser.wait_text("#lead-card", "Goa").await;
    assert!(card.contains("2027-03-14"), "{card}");
    assert!(card.contains("instagram"), "{card}");
    let said = browser
        .wait_text("#transcript", "Planning a wedding in Goa")
        .await;
    assert!(said.contains("March 14"), "{said}");
    browser.wait_text("#decisions", "goa_options fired").await;
    browser.wait_text("#outbound", "event_options").await;

    // Take over; she writes again on WhatsApp; automation stays silent.
    browser.click("#takeover").await;
    browser.wait_text("main", "automation is paused").await;
    let number = handoff::server::delivery::sandbox_number_id("events-main");
    let inbound = json!({"phone_number_id": number, "from": "919812345678", "name": "Aisha Khan", "text": "Is the beach venue free that weekend?"});
    s.play(KEY, "acme", "inbound", &inbound).await;
    // The page updates by itself (server-sent events) with her new message.
    browser.wait_text("#transcript", "beach venue").await;
    browser.wait_text("#window", "Open").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        sandbox_messages(&s).await.len(),
        1,
        "automation must not reply on a thread a person took over"
    );

    // Reload for the reply form of an open window, and reply.
    browser.go(&format!("{base}/inbox/threads/{lead_id}")).await;
    browser
        .type_in(
            "#reply-text",
            "Yes, it is! Sending you the beach options now.",
        )
        .await;
    browser.click("#send").await;
    browser.wait_text("main", "Sent").await;
    let sent = wait_messages(&s, 2).await;
    assert_eq!(sent.len(), 2, "the reply was sent");
    assert_eq!(sent[1]["type"], "text");
    assert_eq!(
        sent[1]["body"]["text"]["body"],
        "Yes, it is! Sending you the beach options now."
    );
    browser.wait_text("#outbound", "Priya Nair").await;

    // The template picker shows the preview with her values filled in.
    browser.select("#reply-template", "event_options").await;
    browser
        .wait_text(
            "#template-preview",
            "Hi Aisha, here are options for your March 14 Goa event.",
        )
        .await;

    // Screenshots of the thread view, desktop and phone width.
    let desktop = browser.screenshot("thread-desktop.png").await;
    check_rendered(&desktop, 1280);
    browser.resize(390, 844).await;
    browser.go(&format!("{base}/inbox/threads/{lead_id}")).await;
    browser.wait_text("#lead-card", "Goa").await;
    let phone = browser.screenshot("thread-phone.png").await;
    check_rendered(&phone, 390);
    browser.resize(1280, 1000).await;

    // Release: automation has the thread again.
    browser.go(&format!("{base}/inbox/threads/{lead_id}")).await;
    browser.click("#release").await;
    browser
        .wait_text("main", "automation handles the thread again")
        .await;
    let lead = s.lead(KEY, &lead_id).await;
    assert_eq!(lead["thread"]["state"], "automated");
    // Taking it over gave it to her: it stays hers in its queue.
    assert_eq!(lead["thread"]["queue_state"], "assigned");
    browser.wait_text("#queue-state", "With Priya Nair").await;

    // Available, from the header; back on the same page.
    browser.wait_text("#presence-status", "Away").await;
    browser.click("#presence-toggle").await;
    browser.wait_text("main", "You are available").await;
    browser.wait_text("#presence-status", "Available").await;
    assert_eq!(
        browser.url().await,
        format!("{base}/inbox/threads/{lead_id}")
    );

    // The queues page: she holds Aisha's thread, her one; Rohan waits.
    let mut rohan = aisha.clone();
    rohan["name"] = json!("Rohan Mehta");
    rohan["phone"] = json!("+91 98123 40001");
    let (st, _) = s.post("/v1/leads", KEY, &rohan).await;
    assert!(st.is_success());
    browser.click("nav a[href=\"/inbox/queues\"]").await;
    let closers = browser
        .wait_text("#queue-events-closers", "Rohan Mehta")
        .await;
    assert!(closers.contains("1 of 1"), "{closers}");
    assert!(closers.contains("No such operator"), "{closers}");
    assert!(
        closers.contains("escalates to events-senior-closers after 2h"),
        "{closers}"
    );
    // Another lead comes in: the page shows it by itself.
    let mut kiara = aisha.clone();
    kiara["name"] = json!("Kiara Shah");
    kiara["phone"] = json!("+91 98123 40002");
    s.post("/v1/leads", KEY, &kiara).await;
    browser
        .wait_text("#queue-events-closers", "Kiara Shah")
        .await;
    let desktop = browser.screenshot("queues-desktop.png").await;
    check_rendered(&desktop, 1280);
    browser.resize(390, 844).await;
    browser.go(&format!("{base}/inbox/queues")).await;
    browser
        .wait_text("#queue-events-closers", "Kiara Shah")
        .await;
    let phone = browser.screenshot("queues-phone.png").await;
    check_rendered(&phone, 390);
    browser.resize(1280, 1000).await;

    // Away again.
    browser.click("#presence-toggle").await;
    browser.wait_text("main", "You are away").await;
    browser.wait_text("#presence-status", "Away").await;
    browser.close().await;
}
