//! The service over HTTP, whether it runs in this process or as a child: its
//! API as an account's key calls it, webhooks signed as Meta signs them, and
//! the inbox signed in to as a browser would.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;

/// A response's status and JSON body (`Null` when it has none).
pub async fn answer(r: reqwest::Response) -> (u16, Value) {
    let (status, body) = status_and_json(r).await;
    (status.as_u16(), body)
}

async fn status_and_json(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The service at `base`.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
}

impl Api {
    pub fn new(base: impl Into<String>) -> Api {
        Api {
            base: base.into(),
            client: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `method path` with the account's `key` and, if any, a JSON `body`:
    /// the status and the JSON answer (`Null` when it is not JSON).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        key: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut r = self.client.request(method, self.url(path)).bearer_auth(key);
        if let Some(body) = body {
            r = r.json(body);
        }
        status_and_json(r.send().await.unwrap()).await
    }

    pub async fn post(&self, path: &str, key: &str, body: &Value) -> (StatusCode, Value) {
        self.request(Method::POST, path, key, Some(body)).await
    }

    pub async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.request(Method::GET, path, key, None).await
    }

    /// `GET path` with `key`, whose answer must be JSON.
    pub async fn json(&self, path: &str, key: &str) -> Value {
        json(self.client.get(self.url(path)).bearer_auth(key)).await
    }

    /// `GET path` without a key (the sandbox binary's control API), whose
    /// answer must be JSON.
    pub async fn open_json(&self, path: &str) -> Value {
        json(self.client.get(self.url(path))).await
    }

    /// `GET path` as text, without a key (`/metrics`, pages).
    pub async fn text(&self, path: &str) -> String {
        text(&self.client, &self.url(path)).await
    }

    /// Posts a lead with `key`; the ID of the lead it went to.
    pub async fn new_lead(&self, key: &str, body: &Value) -> String {
        let request = self.client.post(self.url("/v1/leads")).bearer_auth(key);
        let r = json(request.json(body)).await;
        r["lead_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{r}"))
            .to_string()
    }

    /// The lead record `GET /v1/leads/{id}` shows.
    pub async fn lead(&self, key: &str, id: &str) -> Value {
        self.json(&format!("/v1/leads/{id}"), key).await
    }

    /// The newest lead `GET /v1/leads?q=` finds for `q` (all leads when
    /// empty), in full, or `Null` when there is none.
    pub async fn find_lead(&self, key: &str, q: &str) -> Value {
        let list = self.json(&format!("/v1/leads?q={q}"), key).await;
        match list["leads"].as_array().and_then(|l| l.first()) {
            Some(first) => self.lead(key, first["id"].as_str().unwrap()).await,
            None => Value::Null,
        }
    }

    /// Waits (up to `within`) until `ready` holds for the lead; the lead.
    pub async fn wait_lead(
        &self,
        key: &str,
        id: &str,
        within: Duration,
        ready: impl Fn(&Value) -> bool,
    ) -> Value {
        let lead = async || self.lead(key, id).await;
        super::until(within, super::POLL, lead, ready)
            .await
            .unwrap_or_else(|lead| panic!("the lead never got there: {lead:#}"))
    }

    /// What the WhatsApp sandbox of `account` recorded: `accepted`,
    /// `rejected` and the `messages` sent.
    pub async fn sandbox(&self, key: &str, account: &str) -> Value {
        self.json(&format!("/sandbox/{account}/_sandbox/messages"), key)
            .await
    }

    /// Plays what happens at Meta through the sandbox of `account`, at its
    /// control route `route` (`inbound`: a user writes in; `preferences`: a
    /// user stops or resumes marketing messages). What the sandbox answered,
    /// once its signed webhook reached the service and was taken.
    pub async fn play(&self, key: &str, account: &str, route: &str, body: &Value) -> Value {
        let r = self
            .client
            .post(self.url(&format!("/sandbox/{account}/_sandbox/{route}")))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{:?}", r.text().await);
        let played: Value = r.json().await.unwrap();
        assert_eq!(played["webhook"]["status"], 200, "{played:#}");
        played
    }

    /// Posts `body` to `path` as Meta posts its webhooks, signed with `secret`.
    pub async fn post_meta(&self, path: &str, body: &[u8], secret: &str) -> (StatusCode, Value) {
        let r = meta_signed(&self.client, &self.url(path), body.to_vec(), secret)
            .send()
            .await
            .unwrap();
        status_and_json(r).await
    }

    /// Signs in to the inbox as `email`.
    pub async fn sign_in(&self, email: &str, password: &str) -> Operator {
        Operator::sign_in(&self.base, email, password).await
    }
}

/// A POST of `body` to `url` as Meta sends its webhooks: JSON, with the
/// HMAC-SHA256 of the body under the app `secret` in `X-Hub-Signature-256`.
pub fn meta_signed(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    secret: &str,
) -> reqwest::RequestBuilder {
    let signature = handoff::intake::signature::sign(&body, secret.as_bytes());
    client
        .post(url)
        .header("X-Hub-Signature-256", signature)
        .header("content-type", "application/json")
        .body(body)
}

/// The answer to `request`, which must be JSON.
async fn json(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

async fn text(client: &reqwest::Client, url: &str) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}

/// A browser-like client: keeps cookies, does not follow redirects.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of the first hidden input named `name`.
pub fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no `{name}` in {page}"))
        + marker.len();
    page[start..].split('"').next().unwrap().to_string()
}

/// An operator's browser: signed in, with the session's form token.
pub struct Operator {
    pub client: reqwest::Client,
    pub csrf: String,
}

impl Operator {
    /// Signs in at the inbox of the service at `base`, as a browser does:
    /// the sign-in form's token, the form, then the inbox's token.
    pub async fn sign_in(base: &str, email: &str, password: &str) -> Operator {
        let client = browser();
        let page = client
            .get(format!("{base}/inbox/login"))
            .send()
            .await
            .unwrap();
        let csrf = hidden(&page.text().await.unwrap(), "csrf");
        let r = client
            .post(format!("{base}/inbox/login"))
            .form(&[("email", email), ("password", password), ("csrf", &csrf)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{email} signed in");
        let page = client.get(format!("{base}/inbox")).send().await.unwrap();
        let csrf = hidden(&page.text().await.unwrap(), "csrf");
        Operator { client, csrf }
    }

    /// The inbox page at `path` of the service at `base`, as the operator sees it.
    pub async fn page(&self, base: &str, path: &str) -> String {
        text(&self.client, &format!("{base}{path}")).await
    }

    /// Posts an inbox form with the session's token, from the inbox's own
    /// origin; it must answer with a redirect.
    pub async fn post(&self, base: &str, path: &str, form: &[(&str, &str)]) {
        let mut fields = vec![("csrf", self.csrf.as_str())];
        fields.extend_from_slice(form);
        let r = self
            .client
            .post(format!("{base}{path}"))
            .header("origin", base)
            .form(&fields)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
    }

    /// Sets the operator available or away, from the header's toggle.
    pub async fn available(&self, base: &str, on: bool) {
        self.post(
            base,
            "/inbox/presence",
            &[("available", if on { "1" } else { "0" })],
        )
        .await;
    }
}
