//! Service configuration: defaults, then `handoff.toml`, then `HANDOFF_*`
//! environment variables, then command-line flags; validated at start with
//! errors that say which setting is wrong and how to fix it. Secrets (API
//! keys) are stored hashed and never printed.

use crate::intake::signature::constant_time_eq;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The whole configuration of `handoff serve`.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// `sqlite://PATH`, or `postgres://...` for one or many instances.
    pub database: DatabaseUrl,
    pub rules: PathBuf,
    pub templates: Option<PathBuf>,
    pub accounts: Vec<Account>,
    /// Set when no account was configured and the demo account was made;
    /// the key is printed once at start so a new user can call the API.
    pub demo_key: Option<Secret>,
    /// How the outbox is delivered: the Cloud API (or the sandbox), leases,
    /// retries.
    pub delivery: DeliveryConfig,
}

/// Outbox delivery settings (`[delivery]`).
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// The Cloud API base URL and version.
    pub whatsapp_base: String,
    pub whatsapp_version: String,
    /// Send to the built-in sandbox instead of Meta. By default, exactly when
    /// no WhatsApp number of any account has a token.
    pub sandbox: bool,
    /// How long a worker owns the messages it claimed.
    pub lease: std::time::Duration,
    /// How long a message whose send may have reached Meta (a crash or a
    /// timeout mid-send) waits for a status webhook carrying its outbox ID
    /// before it is sent again.
    pub grace: std::time::Duration,
    /// The least time between two messages from one number to one user
    /// (Meta's pair rate limit).
    pub pair_interval: std::time::Duration,
    /// A message still undelivered after this long fails.
    pub max_age: std::time::Duration,
    /// One Cloud API request's time limit.
    pub timeout: std::time::Duration,
    /// The first retry's delay; each later one doubles it (with jitter), up to `max_backoff`.
    pub backoff: std::time::Duration,
    pub max_backoff: std::time::Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            whatsapp_base: "https://graph.facebook.com".into(),
            whatsapp_version: "v23.0".into(),
            sandbox: true,
            lease: std::time::Duration::from_secs(60),
            grace: std::time::Duration::from_secs(600),
            pair_interval: std::time::Duration::from_secs(6),
            max_age: std::time::Duration::from_secs(24 * 3600),
            timeout: std::time::Duration::from_secs(15),
            backoff: std::time::Duration::from_secs(2),
            max_backoff: std::time::Duration::from_secs(600),
        }
    }
}

/// A CRM or AI-agent endpoint that receives signed lead records.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    pub url: String,
    /// The Standard Webhooks signing secret (`whsec_...`).
    pub secret: Secret,
    /// Loopback and private addresses are refused unless this is set.
    pub allow_private: bool,
}

/// A tenant: its API keys, its playbooks and how leads reach them.
#[derive(Clone, Debug)]
pub struct Account {
    pub id: String,
    pub name: String,
    /// SHA-256 of each API key, hex. Keys are high-entropy tokens, so a
    /// fast hash is the right tool (unlike passwords).
    pub api_key_hashes: Vec<String>,
    /// The playbooks this account may use; empty means every loaded playbook.
    pub playbooks: Vec<String>,
    pub routing: Routing,
    /// ISO region for phone numbers typed without a country code, e.g. `IN`.
    pub default_region: String,
    /// Meta app secrets (two during a rotation) and the webhook verify token.
    pub meta_app_secrets: Vec<Secret>,
    pub meta_verify_token: Option<Secret>,
    /// The Graph API for fetching lead-ad leads: base URL, version, page token,
    /// and how the lead form's fields map to the playbook's.
    pub graph: GraphConfig,
    /// Web forms by name: how their fields map, and their signing secret.
    pub forms: BTreeMap<String, FormConfig>,
    /// Words that, as a whole WhatsApp message, revoke the WhatsApp opt-in.
    pub opt_out_words: Vec<String>,
    /// The account's WhatsApp numbers; a playbook's `sender` names one by key.
    /// When any are listed, WhatsApp events for other numbers are refused.
    pub whatsapp: Vec<WhatsappNumber>,
    /// Endpoints by name, for `notify "<name>"` and `lead_updates`.
    pub endpoints: BTreeMap<String, EndpointConfig>,
    /// Endpoints that receive the lead record after every decision.
    pub lead_updates: Vec<String>,
    /// Queues with members, by name: the threads rules route to them are
    /// given to one available member. Other queue names stay labels.
    pub queues: BTreeMap<String, QueueConfig>,
    /// Endpoints (an SMS or email provider) that receive the lead record
    /// when WhatsApp cannot deliver to the lead.
    pub fallback: Vec<String>,
    /// An operator with no inbox activity for this long is not available.
    pub idle: std::time::Duration,
}

/// A queue with members: who takes its threads, how, and when it escalates.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    pub members: Vec<crate::queues::Member>,
    pub strategy: crate::queues::Strategy,
    /// Open threads per member before the queue passes them over.
    pub capacity: u32,
    /// The queue's own business hours; `None`: the playbook's.
    pub hours: Option<crate::queues::QueueHours>,
    /// A thread no person picked up within this much business time moves
    /// to `escalate_to`.
    pub escalate: Option<(std::time::Duration, String)>,
}

/// A WhatsApp Business number of an account.
#[derive(Clone, Debug)]
pub struct WhatsappNumber {
    /// The name playbooks use in `sender "<key>"`.
    pub key: String,
    /// Meta's phone number ID (digits).
    pub phone_number_id: String,
    /// The Cloud API token for this number.
    pub token: Option<Secret>,
    /// Messages per second this number may send (Meta's default is 80).
    pub rate: u32,
}

/// Where lead-ad leads are fetched from.
#[derive(Clone, Debug)]
pub struct GraphConfig {
    pub base: String,
    pub version: String,
    pub page_token: Option<Secret>,
    pub lead_fields: BTreeMap<String, String>,
}

impl Default for GraphConfig {
    fn default() -> Self {
        GraphConfig {
            base: "https://graph.facebook.com".into(),
            version: "v23.0".into(),
            page_token: None,
            lead_fields: BTreeMap::new(),
        }
    }
}

/// A web form's intake settings.
#[derive(Clone, Debug, Default)]
pub struct FormConfig {
    pub playbook: Option<String>,
    /// Form field -> target (`name`, `phone`, `email`, `intent`, `consent:whatsapp`, `field:<name>`).
    pub fields: BTreeMap<String, String>,
    /// When set, requests must carry an HMAC-SHA256 of the body in `signature_header`.
    pub secret: Option<Secret>,
    pub signature_header: String,
}

/// Opt-out words Meta leaves to the business, in the languages our users' buyers write.
pub const DEFAULT_OPT_OUT_WORDS: [&str; 14] = [
    "stop",
    "unsubscribe",
    "stop all",
    "opt out",
    "optout",
    "cancel",
    "baja",
    "parar",
    "pare",
    "sair",
    "arrêt",
    "arret",
    "توقف",
    "बंद",
];

/// Which playbook a lead goes to when it does not name one.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub by_channel: BTreeMap<String, String>,
    #[serde(default)]
    pub by_form: BTreeMap<String, String>,
    #[serde(default)]
    pub by_source: BTreeMap<String, String>,
}

/// Where the demo account routes what buyers write on WhatsApp and
/// Instagram, which name no playbook of their own: the bundled `events`
/// playbook when the rules directory has it, else its first playbook.
fn demo_routing(rules: &std::path::Path) -> Routing {
    let mut stems: Vec<String> = std::fs::read_dir(rules)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    name.strip_suffix(".rules").map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    stems.sort();
    let chosen = stems
        .iter()
        .find(|s| *s == "events")
        .or_else(|| stems.first())
        .cloned();
    let mut routing = Routing::default();
    if let Some(playbook) = chosen {
        for channel in ["whatsapp", "instagram"] {
            routing
                .by_channel
                .insert(channel.to_string(), playbook.clone());
        }
    }
    routing
}

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the few places that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The hex SHA-256 of an API key, as stored.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new random API key: `hk_` and 32 random bytes, hex.
pub fn new_api_key() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("hk_{}", hex::encode(bytes))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    database: Option<String>,
    rules: Option<PathBuf>,
    templates: Option<PathBuf>,
    #[serde(default)]
    accounts: Vec<FileAccount>,
    #[serde(default)]
    delivery: FileDelivery,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileDelivery {
    whatsapp_base: Option<String>,
    whatsapp_version: Option<String>,
    sandbox: Option<bool>,
    lease_seconds: Option<f64>,
    grace_seconds: Option<f64>,
    pair_interval_seconds: Option<f64>,
    max_age_hours: Option<f64>,
    timeout_seconds: Option<f64>,
    backoff_seconds: Option<f64>,
    max_backoff_seconds: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEndpoint {
    url: String,
    secret: String,
    #[serde(default)]
    allow_private: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAccount {
    id: String,
    name: Option<String>,
    /// Hashes (`sha256:<hex>`) or, for local setups, keys given through an
    /// environment variable: `env:VAR_NAME`.
    #[serde(default)]
    api_keys: Vec<String>,
    #[serde(default)]
    playbooks: Vec<String>,
    #[serde(default)]
    routing: Routing,
    default_region: Option<String>,
    #[serde(default)]
    meta: FileMeta,
    #[serde(default)]
    forms: BTreeMap<String, FileForm>,
    #[serde(default)]
    opt_out_words: Option<Vec<String>>,
    #[serde(default)]
    whatsapp: Vec<FileNumber>,
    #[serde(default)]
    endpoints: BTreeMap<String, FileEndpoint>,
    #[serde(default)]
    lead_updates: Vec<String>,
    #[serde(default)]
    queues: BTreeMap<String, FileQueue>,
    #[serde(default)]
    fallback: Vec<String>,
    idle_minutes: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileQueue {
    members: Vec<String>,
    strategy: Option<String>,
    capacity: Option<u32>,
    hours: Option<String>,
    timezone: Option<String>,
    escalate_after: Option<String>,
    escalate_to: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNumber {
    key: String,
    phone_number_id: String,
    token: Option<String>,
    rate: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileMeta {
    /// `env:VAR` references.
    #[serde(default)]
    app_secrets: Vec<String>,
    verify_token: Option<String>,
    graph_base: Option<String>,
    graph_version: Option<String>,
    page_token: Option<String>,
    #[serde(default)]
    lead_fields: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileForm {
    playbook: Option<String>,
    #[serde(default)]
    fields: BTreeMap<String, String>,
    secret: Option<String>,
    signature_header: Option<String>,
}

/// Checks an account's queues: members that exist, a known strategy,
/// hours that read as a playbook's, escalation to another configured queue.
fn queue_configs(
    file: &BTreeMap<String, FileQueue>,
    endpoints: &BTreeMap<String, EndpointConfig>,
    i: usize,
) -> Result<BTreeMap<String, QueueConfig>, ConfigError> {
    use crate::queues::{Member, Strategy};
    let mut out = BTreeMap::new();
    for (name, q) in file {
        let at = format!("accounts[{i}].queues.{name}");
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return err(format!(
                "{at}: a queue's name is letters, digits, `-`, `_` or `.`, as rules write it"
            ));
        }
        if q.members.is_empty() {
            return err(format!(
                "{at}.members is empty; list the operators' emails (or `agent:<endpoint>` for an AI agent)"
            ));
        }
        let mut members = Vec::new();
        for (m, member) in q.members.iter().enumerate() {
            let member = member.trim();
            let parsed = if let Some(endpoint) = member.strip_prefix("agent:") {
                if !endpoints.contains_key(endpoint) {
                    return err(format!(
                        "{at}.members[{m}] is the agent `{endpoint}`, which is not in `accounts.endpoints`"
                    ));
                }
                Member::Agent(endpoint.to_string())
            } else if member.contains('@') && !member.contains(char::is_whitespace) {
                Member::Operator(member.to_lowercase())
            } else {
                return err(format!(
                    "{at}.members[{m}] is `{member}`; give an operator's email (as in `handoff operator add`) or `agent:<endpoint>`"
                ));
            };
            if members.contains(&parsed) {
                return err(format!("{at}.members lists `{member}` twice"));
            }
            members.push(parsed);
        }
        let strategy = match q.strategy.as_deref().unwrap_or("round_robin") {
            "round_robin" => Strategy::RoundRobin,
            "least_loaded" => Strategy::LeastLoaded,
            other => {
                return err(format!(
                    "{at}.strategy is `{other}`; give `round_robin` or `least_loaded`"
                ))
            }
        };
        let capacity = q.capacity.unwrap_or(10);
        if capacity == 0 {
            return err(format!(
                "{at}.capacity is 0; give the open threads a member may hold (1 or more)"
            ));
        }
        let hours = match (&q.hours, &q.timezone) {
            (Some(h), Some(tz)) => Some(
                crate::queues::parse_hours(h, tz)
                    .map_err(|e| ConfigError::Invalid(format!("{at}.hours: {e}")))?,
            ),
            (Some(_), None) => {
                return err(format!(
                    "{at}.hours needs `timezone` beside it (an IANA name such as `Asia/Kolkata`)"
                ))
            }
            (None, Some(_)) => {
                return err(format!(
                    "{at}.timezone is given without `hours`; without hours the queue keeps its playbook's"
                ))
            }
            (None, None) => None,
        };
        let escalate = match (&q.escalate_after, &q.escalate_to) {
            (Some(after), Some(to)) => {
                let after = crate::queues::parse_duration(after)
                    .map_err(|e| ConfigError::Invalid(format!("{at}.escalate_after: {e}")))?;
                if to == name {
                    return err(format!("{at}.escalate_to names the queue itself"));
                }
                if !file.contains_key(to) {
                    return err(format!(
                        "{at}.escalate_to names `{to}`, which is not a queue of this account; add `[accounts.queues.{to}]` with its members"
                    ));
                }
                Some((after, to.clone()))
            }
            (None, None) => None,
            _ => {
                return err(format!(
                    "{at}: give `escalate_after` and `escalate_to` together"
                ))
            }
        };
        out.insert(
            name.clone(),
            QueueConfig {
                members,
                strategy,
                capacity,
                hours,
                escalate,
            },
        );
    }
    // A thread nobody picks up would go round a loop of escalations forever.
    for start in out.keys() {
        let mut path = vec![start.as_str()];
        let mut at = start.as_str();
        while let Some((_, to)) = out.get(at).and_then(|q| q.escalate.as_ref()) {
            if to == start {
                path.push(to);
                return err(format!(
                    "accounts[{i}].queues: escalation goes round in a loop ({}); end it at a queue without `escalate_to`",
                    path.join(" -> ")
                ));
            }
            if path.contains(&to.as_str()) {
                break;
            }
            path.push(to);
            at = to;
        }
    }
    Ok(out)
}

fn delivery_config(
    file: &FileDelivery,
    accounts: &[Account],
) -> Result<DeliveryConfig, ConfigError> {
    let mut d = DeliveryConfig::default();
    if let Some(base) = &file.whatsapp_base {
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return err("delivery.whatsapp_base must be an http(s) URL".to_string());
        }
        d.whatsapp_base = base.trim_end_matches('/').to_string();
    }
    if let Some(v) = &file.whatsapp_version {
        d.whatsapp_version = v.clone();
    }
    let live = accounts
        .iter()
        .flat_map(|a| &a.whatsapp)
        .any(|n| n.token.is_some());
    d.sandbox = file.sandbox.unwrap_or(!live);
    let seconds = |value: Option<f64>, name: &str, default: std::time::Duration| match value {
        None => Ok(default),
        Some(v) if v > 0.0 && v.is_finite() => Ok(std::time::Duration::from_secs_f64(v)),
        Some(v) => err(format!("delivery.{name} is {v}; give a number above 0")),
    };
    d.lease = seconds(file.lease_seconds, "lease_seconds", d.lease)?;
    d.grace = seconds(file.grace_seconds, "grace_seconds", d.grace)?;
    d.pair_interval = seconds(
        file.pair_interval_seconds,
        "pair_interval_seconds",
        d.pair_interval,
    )?;
    d.max_age = seconds(
        file.max_age_hours.map(|h| h * 3600.0),
        "max_age_hours",
        d.max_age,
    )?;
    d.timeout = seconds(file.timeout_seconds, "timeout_seconds", d.timeout)?;
    d.backoff = seconds(file.backoff_seconds, "backoff_seconds", d.backoff)?;
    d.max_backoff = seconds(
        file.max_backoff_seconds,
        "max_backoff_seconds",
        d.max_backoff,
    )?;
    if d.lease <= d.timeout {
        return err(format!(
            "delivery.lease_seconds ({:?}) must be more than delivery.timeout_seconds ({:?}): a worker must be able to finish a send within its lease",
            d.lease, d.timeout
        ));
    }
    if d.grace < d.lease {
        return err(format!(
            "delivery.grace_seconds ({:?}) must be at least delivery.lease_seconds ({:?})",
            d.grace, d.lease
        ));
    }
    if d.grace < d.timeout {
        return err(format!(
            "delivery.grace_seconds ({:?}) must be at least delivery.timeout_seconds ({:?}): a status webhook for a send that timed out can only come after it",
            d.grace, d.timeout
        ));
    }
    Ok(d)
}

/// Reads an `env:VAR` secret reference.
fn secret_ref(
    value: &str,
    at: &str,
    env: &BTreeMap<String, String>,
) -> Result<Secret, ConfigError> {
    match value.strip_prefix("env:") {
        Some(var) => match env.get(var) {
            Some(v) if !v.is_empty() => Ok(Secret::new(v.clone())),
            _ => err(format!("{at} reads `{var}`, which is not set")),
        },
        None => err(format!(
            "{at} must be `env:VAR`: secrets are never written in the file"
        )),
    }
}

/// Overrides from the command line.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub database: Option<String>,
    pub rules: Option<PathBuf>,
}

/// A configuration problem, naming the file or the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file named cannot be read.
    #[error("cannot read the configuration `{file}`: {reason}")]
    Read { file: String, reason: String },
    /// The file is not TOML, or not of the configuration's shape.
    #[error("`{file}`: {reason}")]
    Syntax { file: String, reason: String },
    /// A setting's value cannot be used; the message names it.
    #[error("{0}")]
    Invalid(String),
}

fn err<T>(message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid(message.into()))
}

impl Config {
    /// Loads the configuration: `file` when given (it must exist), else
    /// `handoff.toml` in the working directory when present, else defaults;
    /// then `env` (`HANDOFF_*`) and `flags` on top.
    pub fn load(
        file: Option<&Path>,
        env: &BTreeMap<String, String>,
        flags: &Overrides,
    ) -> Result<Config, ConfigError> {
        let (text, shown) = match file {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(t) => (Some(t), path.display().to_string()),
                Err(e) => {
                    return Err(ConfigError::Read {
                        file: path.display().to_string(),
                        reason: e.to_string(),
                    })
                }
            },
            None => match std::fs::read_to_string("handoff.toml") {
                Ok(t) => (Some(t), "handoff.toml".to_string()),
                Err(_) => (None, String::new()),
            },
        };
        let parsed: FileConfig = match &text {
            Some(t) => toml::from_str(t).map_err(|e| ConfigError::Syntax {
                file: shown.clone(),
                reason: e.to_string().trim().to_string(),
            })?,
            None => FileConfig::default(),
        };
        let pick =
            |flag: &Option<String>, var: &str, file: &Option<String>, default: &str| -> String {
                flag.clone()
                    .or_else(|| env.get(var).cloned())
                    .or_else(|| file.clone())
                    .unwrap_or_else(|| default.to_string())
            };
        let listen_text = pick(
            &flags.listen,
            "HANDOFF_LISTEN",
            &parsed.listen,
            "127.0.0.1:8080",
        );
        let listen: SocketAddr = match listen_text.parse() {
            Ok(a) => a,
            Err(_) => {
                return err(format!(
                "`listen` is `{listen_text}`; give an address and port such as `127.0.0.1:8080`"
            ))
            }
        };
        let database = pick(
            &flags.database,
            "HANDOFF_DATABASE",
            &parsed.database,
            "sqlite://handoff.db",
        );
        if !database.starts_with("sqlite:") && !crate::store::is_postgres_url(&database) {
            return err(format!(
                "`database` is `{}`; give `sqlite://PATH` (one instance) or `postgres://USER:PASSWORD@HOST:PORT/DATABASE` (one or many instances)",
                redact_url(&database)
            ));
        }
        let database = DatabaseUrl(database);
        let rules = flags
            .rules
            .clone()
            .or_else(|| env.get("HANDOFF_RULES").map(PathBuf::from))
            .or(parsed.rules)
            .unwrap_or_else(|| PathBuf::from("rules"));
        let templates = env
            .get("HANDOFF_TEMPLATES")
            .map(PathBuf::from)
            .or(parsed.templates);
        let mut accounts = Vec::new();
        let mut ids = std::collections::BTreeSet::new();
        for (i, a) in parsed.accounts.into_iter().enumerate() {
            if a.id.is_empty()
                || !a
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return err(format!(
                    "accounts[{i}].id `{}` must be letters, digits, `-` or `_`",
                    a.id
                ));
            }
            if !ids.insert(a.id.clone()) {
                return err(format!("accounts[{i}].id `{}` is used twice", a.id));
            }
            let mut hashes = Vec::new();
            for (k, key) in a.api_keys.iter().enumerate() {
                if let Some(hash) = key.strip_prefix("sha256:") {
                    if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
                        return err(format!("accounts[{i}].api_keys[{k}] is not a SHA-256 hash (64 hex digits after `sha256:`)"));
                    }
                    hashes.push(hash.to_ascii_lowercase());
                } else if let Some(var) = key.strip_prefix("env:") {
                    match env.get(var) {
                        Some(value) if !value.is_empty() => hashes.push(hash_api_key(value)),
                        _ => {
                            return err(format!(
                                "accounts[{i}].api_keys[{k}] reads `{var}`, which is not set"
                            ))
                        }
                    }
                } else {
                    return err(format!(
                        "accounts[{i}].api_keys[{k}] must be `sha256:<hex>` or `env:VAR`; never write a key itself in the file (`handoff api-key` makes a new key and prints its hash)"
                    ));
                }
            }
            if hashes.is_empty() {
                return err(format!("accounts[{i}] (`{}`) has no `api_keys`", a.id));
            }
            let mut meta_app_secrets = Vec::new();
            for (k, v) in a.meta.app_secrets.iter().enumerate() {
                meta_app_secrets.push(secret_ref(
                    v,
                    &format!("accounts[{i}].meta.app_secrets[{k}]"),
                    env,
                )?);
            }
            let meta_verify_token = match &a.meta.verify_token {
                Some(v) => Some(secret_ref(
                    v,
                    &format!("accounts[{i}].meta.verify_token"),
                    env,
                )?),
                None => None,
            };
            let page_token = match &a.meta.page_token {
                Some(v) => Some(secret_ref(
                    v,
                    &format!("accounts[{i}].meta.page_token"),
                    env,
                )?),
                None => None,
            };
            let mut graph = GraphConfig {
                page_token,
                lead_fields: a.meta.lead_fields.clone(),
                ..GraphConfig::default()
            };
            if let Some(base) = &a.meta.graph_base {
                if !(base.starts_with("https://") || base.starts_with("http://")) {
                    return err(format!(
                        "accounts[{i}].meta.graph_base must be an http(s) URL"
                    ));
                }
                graph.base = base.trim_end_matches('/').to_string();
            }
            if let Some(v) = &a.meta.graph_version {
                graph.version = v.clone();
            }
            let mut whatsapp: Vec<WhatsappNumber> = Vec::new();
            for (n, number) in a.whatsapp.iter().enumerate() {
                let at = format!("accounts[{i}].whatsapp[{n}]");
                if number.phone_number_id.is_empty()
                    || !number.phone_number_id.chars().all(|c| c.is_ascii_digit())
                {
                    return err(format!(
                        "{at}.phone_number_id must be Meta's numeric phone number ID"
                    ));
                }
                if whatsapp.iter().any(|w| w.key == number.key) {
                    return err(format!("{at}.key `{}` is used twice", number.key));
                }
                let token = match &number.token {
                    Some(v) => Some(secret_ref(v, &format!("{at}.token"), env)?),
                    None => None,
                };
                let rate = number.rate.unwrap_or(80);
                if !(1..=1000).contains(&rate) {
                    return err(format!(
                        "{at}.rate is {rate}; Meta allows 1 to 1,000 messages a second per number"
                    ));
                }
                whatsapp.push(WhatsappNumber {
                    key: number.key.clone(),
                    phone_number_id: number.phone_number_id.clone(),
                    token,
                    rate,
                });
            }
            let mut forms = BTreeMap::new();
            for (name, f) in a.forms {
                let secret = match &f.secret {
                    Some(v) => Some(secret_ref(
                        v,
                        &format!("accounts[{i}].forms.{name}.secret"),
                        env,
                    )?),
                    None => None,
                };
                forms.insert(
                    name,
                    FormConfig {
                        playbook: f.playbook,
                        fields: f.fields,
                        secret,
                        signature_header: f
                            .signature_header
                            .unwrap_or_else(|| "x-signature-256".into()),
                    },
                );
            }
            let mut endpoints = BTreeMap::new();
            for (name, e) in &a.endpoints {
                let at = format!("accounts[{i}].endpoints.{name}");
                if !(e.url.starts_with("https://") || e.url.starts_with("http://")) {
                    return err(format!("{at}.url must be an http(s) URL"));
                }
                endpoints.insert(
                    name.clone(),
                    EndpointConfig {
                        url: e.url.clone(),
                        secret: secret_ref(&e.secret, &format!("{at}.secret"), env)?,
                        allow_private: e.allow_private,
                    },
                );
            }
            for (k, name) in a.lead_updates.iter().enumerate() {
                if !endpoints.contains_key(name) {
                    return err(format!(
                        "accounts[{i}].lead_updates[{k}] names `{name}`, which is not in `accounts.endpoints`"
                    ));
                }
            }
            for (k, name) in a.fallback.iter().enumerate() {
                if !endpoints.contains_key(name) {
                    return err(format!(
                        "accounts[{i}].fallback[{k}] names `{name}`, which is not in `accounts.endpoints`"
                    ));
                }
            }
            let queues = queue_configs(&a.queues, &endpoints, i)?;
            let idle_minutes = a.idle_minutes.unwrap_or(15.0);
            if !(idle_minutes.is_finite() && idle_minutes > 0.0 && idle_minutes <= 24.0 * 60.0) {
                return err(format!(
                    "accounts[{i}].idle_minutes is {idle_minutes}; give minutes between 1 and 1440"
                ));
            }
            accounts.push(Account {
                queues,
                fallback: a.fallback.clone(),
                idle: std::time::Duration::from_secs_f64(idle_minutes * 60.0),
                whatsapp,
                endpoints,
                lead_updates: a.lead_updates.clone(),
                meta_app_secrets,
                meta_verify_token,
                graph,
                forms,
                opt_out_words: a.opt_out_words.unwrap_or_else(|| {
                    DEFAULT_OPT_OUT_WORDS
                        .iter()
                        .map(|w| w.to_string())
                        .collect()
                }),
                name: a.name.unwrap_or_else(|| a.id.clone()),
                id: a.id,
                api_key_hashes: hashes,
                playbooks: a.playbooks,
                routing: a.routing,
                default_region: a
                    .default_region
                    .unwrap_or_else(|| "IN".into())
                    .to_ascii_uppercase(),
            });
        }
        let mut demo_key = None;
        if accounts.is_empty() {
            let key = env
                .get("HANDOFF_DEMO_API_KEY")
                .filter(|k| !k.is_empty())
                .cloned()
                .unwrap_or_else(new_api_key);
            accounts.push(Account {
                id: "demo".into(),
                name: "Demo".into(),
                api_key_hashes: vec![hash_api_key(&key)],
                playbooks: Vec::new(),
                routing: demo_routing(&rules),
                default_region: "IN".into(),
                meta_app_secrets: env
                    .get("HANDOFF_DEMO_META_APP_SECRET")
                    .filter(|s| !s.is_empty())
                    .map(|s| vec![Secret::new(s.clone())])
                    // The sandbox signs its webhooks with the account's app
                    // secret; a demo without one gets a random one.
                    .unwrap_or_else(|| vec![Secret::new(hex::encode(rand::random::<[u8; 16]>()))]),
                meta_verify_token: env
                    .get("HANDOFF_DEMO_META_VERIFY_TOKEN")
                    .filter(|s| !s.is_empty())
                    .map(|s| Secret::new(s.clone())),
                graph: GraphConfig::default(),
                whatsapp: Vec::new(),
                endpoints: BTreeMap::new(),
                lead_updates: Vec::new(),
                queues: BTreeMap::new(),
                fallback: Vec::new(),
                idle: std::time::Duration::from_secs(15 * 60),
                forms: BTreeMap::new(),
                opt_out_words: DEFAULT_OPT_OUT_WORDS
                    .iter()
                    .map(|w| w.to_string())
                    .collect(),
            });
            demo_key = Some(Secret::new(key));
        }
        let delivery = delivery_config(&parsed.delivery, &accounts)?;
        if delivery.sandbox {
            // The sandbox signs its status webhooks with the account's app
            // secret, as Meta does; an account without one gets a random one
            // for this process, or its statuses would be refused.
            for account in accounts
                .iter_mut()
                .filter(|a| a.meta_app_secrets.is_empty())
            {
                account
                    .meta_app_secrets
                    .push(Secret::new(hex::encode(rand::random::<[u8; 16]>())));
            }
        }
        Ok(Config {
            listen,
            database,
            rules,
            templates,
            accounts,
            demo_key,
            delivery,
        })
    }

    /// The account an API key belongs to.
    pub fn account_for_key(&self, key: &str) -> Option<&Account> {
        let hash = hash_api_key(key);
        self.accounts.iter().find(|a| {
            a.api_key_hashes
                .iter()
                .any(|h| constant_time_eq(h.as_bytes(), hash.as_bytes()))
        })
    }

    /// The account with this id.
    pub fn account(&self, id: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.id == id)
    }
}

/// A database URL as configured. `Debug` hides its password, so that a
/// configuration printed whole never shows it; read it as `&str`.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl std::ops::Deref for DatabaseUrl {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact_url(&self.0))
    }
}

impl PartialEq<&str> for DatabaseUrl {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// Database URLs are the store's to read; messages show them redacted.
pub use crate::store::redact_url;

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_configuration_gives_a_demo_account_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.toml");
        assert!(Config::load(Some(&missing), &env(&[]), &Overrides::default()).is_err());
        let c = Config::load(
            None,
            &env(&[("HANDOFF_DEMO_API_KEY", "k1")]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database, "sqlite://handoff.db");
        assert_eq!(c.account_for_key("k1").unwrap().id, "demo");
        assert!(c.account_for_key("k2").is_none());
        assert!(!format!("{c:?}").contains("k1"), "secrets never print");
    }

    #[test]
    fn file_then_environment_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("handoff.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\n[[accounts]]\nid = \"acme\"\napi_keys = [\"env:ACME_KEY\"]\nplaybooks = [\"events\"]\n[accounts.routing]\ndefault = \"events\"\n",
        )
        .unwrap();
        let e = env(&[("ACME_KEY", "secret"), ("HANDOFF_LISTEN", "127.0.0.1:9100")]);
        let c = Config::load(Some(&file), &e, &Overrides::default()).unwrap();
        assert_eq!(c.listen.port(), 9100);
        assert_eq!(
            c.account_for_key("secret")
                .unwrap()
                .routing
                .default
                .as_deref(),
            Some("events")
        );
        assert!(c.demo_key.is_none());
        let flags = Overrides {
            listen: Some("127.0.0.1:9200".into()),
            ..Overrides::default()
        };
        assert_eq!(
            Config::load(Some(&file), &e, &flags).unwrap().listen.port(),
            9200
        );
    }

    #[test]
    fn bad_settings_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("h.toml");
        std::fs::write(
            &file,
            "[[accounts]]\nid = \"a\"\napi_keys = [\"plain-key\"]\n",
        )
        .unwrap();
        let e = Config::load(Some(&file), &env(&[]), &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("accounts[0].api_keys[0]"), "{e}");
        std::fs::write(&file, "lisen = \"x\"\n").unwrap();
        let e = Config::load(Some(&file), &env(&[]), &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("lisen"), "{e}");
        let flags = Overrides {
            database: Some("mysql://u:pw@h/db".into()),
            ..Overrides::default()
        };
        let e = Config::load(None, &env(&[]), &flags).unwrap_err();
        assert!(
            e.to_string().contains("u:***@h") && !e.to_string().contains("pw"),
            "{e}"
        );
    }

    /// Loads an account `a` with `extra` appended to its section.
    fn with_account(extra: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("h.toml");
        std::fs::write(
            &file,
            format!("[[accounts]]\nid = \"a\"\napi_keys = [\"env:K\"]\n{extra}"),
        )
        .unwrap();
        Config::load(
            Some(&file),
            &env(&[("K", "k"), ("S", "whsec_x")]),
            &Overrides::default(),
        )
    }

    #[test]
    fn queues_are_read_with_their_defaults() {
        let c = with_account(
            "fallback = [\"sms\"]\nidle_minutes = 5\n[accounts.endpoints.sms]\nurl = \"https://sms.example\"\nsecret = \"env:S\"\n[accounts.endpoints.bot]\nurl = \"https://bot.example\"\nsecret = \"env:S\"\n\
             [accounts.queues.closers]\nmembers = [\"Aisha@Acme.example\", \"agent:bot\"]\nstrategy = \"least_loaded\"\nescalate_after = \"1h30m\"\nescalate_to = \"seniors\"\nhours = \"mon-fri 09:00-18:00\"\ntimezone = \"Asia/Kolkata\"\n\
             [accounts.queues.seniors]\nmembers = [\"kabir@acme.example\"]\n",
        )
        .unwrap();
        let a = &c.accounts[0];
        assert_eq!(a.fallback, ["sms"]);
        assert_eq!(a.idle, std::time::Duration::from_secs(300));
        let q = &a.queues["closers"];
        assert_eq!(
            q.members,
            [
                crate::queues::Member::Operator("aisha@acme.example".into()),
                crate::queues::Member::Agent("bot".into())
            ]
        );
        assert_eq!(q.strategy, crate::queues::Strategy::LeastLoaded);
        assert_eq!(q.capacity, 10);
        assert_eq!(
            q.escalate,
            Some((std::time::Duration::from_secs(5400), "seniors".to_string()))
        );
        assert!(q.hours.is_some());
        let s = &a.queues["seniors"];
        assert_eq!(
            (s.strategy, s.escalate.is_none(), s.hours.is_none()),
            (crate::queues::Strategy::RoundRobin, true, true)
        );
        // The demo account has none.
        let demo = Config::load(None, &env(&[]), &Overrides::default()).unwrap();
        assert!(demo.accounts[0].queues.is_empty() && demo.accounts[0].fallback.is_empty());
    }

    #[test]
    fn in_sandbox_mode_an_account_without_an_app_secret_gets_one_for_the_sandbox() {
        let c = with_account("").unwrap();
        assert!(c.delivery.sandbox);
        assert_eq!(c.accounts[0].meta_app_secrets.len(), 1);
        let c = with_account(
            "[[accounts.whatsapp]]\nkey = \"main\"\nphone_number_id = \"1065\"\ntoken = \"env:S\"\n",
        )
        .unwrap();
        assert!(!c.delivery.sandbox);
        assert!(
            c.accounts[0].meta_app_secrets.is_empty(),
            "real webhooks need the real secret"
        );
    }

    #[test]
    fn bad_queues_are_named_with_what_to_do() {
        let cases = [
            ("[accounts.queues.q]\nmembers = []\n", "accounts[0].queues.q.members is empty"),
            ("[accounts.queues.q]\nmembers = [\"aisha\"]\n", "give an operator's email"),
            ("[accounts.queues.q]\nmembers = [\"agent:ghost\"]\n", "`ghost`, which is not in `accounts.endpoints`"),
            ("[accounts.queues.q]\nmembers = [\"a@x.io\", \"A@x.io\"]\n", "twice"),
            ("[accounts.queues.q]\nmembers = [\"a@x.io\"]\nstrategy = \"random\"\n", "`round_robin` or `least_loaded`"),
            ("[accounts.queues.q]\nmembers = [\"a@x.io\"]\ncapacity = 0\n", "capacity is 0"),
            ("[accounts.queues.q]\nmembers = [\"a@x.io\"]\nescalate_after = \"15m\"\n", "together"),
            ("[accounts.queues.q]\nmembers = [\"a@x.io\"]\nescalate_after = \"soon\"\nescalate_to = \"r\"\n", "escalate_after: `soon` is not a duration"),
            ("[accounts.queues.q]\nmembers = [\"a@x.io\"]\nescalate_after = \"15m\"\nescalate_to = \"r\"\n", "`r`, which is not a queue of this account"),
            ("[accounts.queues.q]\nmembers = [\"a@x.io\"]\nescalate_after = \"15m\"\nescalate_to = \"q\"\n", "names the queue itself"),
            ("[accounts.queues.q]\nmembers = [\"a@x.io\"]\nhours = \"mon-fri 09:00-18:00\"\n", "needs `timezone`"),
            ("[accounts.queues.q]\nmembers = [\"a@x.io\"]\nhours = \"mon-fri 18:00-09:00\"\ntimezone = \"UTC\"\n", "queues.q.hours: business hours close"),
            ("[accounts.queues.\"a b\"]\nmembers = [\"a@x.io\"]\n", "letters, digits"),
            ("[accounts.queues.q]\nmembers = [\"a@x.io\"]\nsize = 3\n", "unknown field `size`"),
            ("[accounts.queues.a]\nmembers = [\"a@x.io\"]\nescalate_after = \"5m\"\nescalate_to = \"b\"\n[accounts.queues.b]\nmembers = [\"b@x.io\"]\nescalate_after = \"5m\"\nescalate_to = \"a\"\n", "loop (a -> b -> a)"),
            ("fallback = [\"sms\"]\n", "accounts[0].fallback[0] names `sms`"),
            ("idle_minutes = 0\n", "idle_minutes is 0"),
        ];
        for (extra, expected) in cases {
            let e = with_account(extra).unwrap_err();
            assert!(e.to_string().contains(expected), "{extra}: {e}");
        }
    }

    #[test]
    fn postgres_urls_are_accepted_and_their_password_never_printed() {
        for url in [
            "postgres://handoff:s3cret@db.internal:5432/handoff",
            "postgresql://handoff:s3cret@db.internal/handoff?sslmode=verify-full",
            "postgres://handoff@db.internal/handoff?password=s3cret&sslmode=require",
        ] {
            let flags = Overrides {
                database: Some(url.into()),
                ..Overrides::default()
            };
            let c = Config::load(None, &env(&[("HANDOFF_DEMO_API_KEY", "k1")]), &flags).unwrap();
            assert_eq!(c.database, url);
            assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
            assert!(!redact_url(url).contains("s3cret"), "{}", redact_url(url));
        }
        assert_eq!(
            redact_url("postgres://h:pw@db/x?sslmode=require&password=pw"),
            "postgres://h:***@db/x?sslmode=require&password=***"
        );
        let flags = Overrides {
            database: Some("postgres-ish://u:pw@h/db".into()),
            ..Overrides::default()
        };
        let e = Config::load(None, &env(&[]), &flags).unwrap_err();
        assert!(
            e.to_string().contains("postgres://USER:PASSWORD@HOST")
                && !e.to_string().contains("pw@"),
            "{e}"
        );
    }
}
