//! Outbound webhooks to CRMs and AI agents, in the Standard Webhooks format
//! (<https://www.standardwebhooks.com>): signing and verifying
//! `webhook-signature`, checking that an endpoint's URL does not lead into
//! our own network, one delivery attempt and what its answer means, and the
//! retry schedule. Storing messages and running the retries (the outbox)
//! belongs to the caller; this module decides, it does not remember.
//!
//! The signing is written here rather than taken from the `standardwebhooks`
//! crate: it is one HMAC over `{id}.{timestamp}.{body}` with the `hmac` and
//! `sha2` crates we already trust for intake signatures, where the crate
//! would add a second HMAC and base64 for that one line; and [`verify`]
//! takes the time as an argument, where the crate's reads the clock. The
//! published test vectors below pin our output to the reference
//! implementations', and `tests/notify.rs` has the crate itself (a
//! dev-dependency) verify what we sign.

use crate::backoff::{Backoff, Jitter};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde::Serialize;
use sha2::Sha256;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument as _;

use crate::config::Secret;
use crate::intake::signature::constant_time_eq;

type HmacSha256 = Hmac<Sha256>;

/// The header carrying the message ID, the same on every attempt.
pub const WEBHOOK_ID: &str = "webhook-id";
/// The header carrying the attempt's Unix time in seconds.
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// The header carrying the space-separated `v1,<base64>` signatures.
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// How far `webhook-timestamp` may be from a receiver's clock before
/// [`verify`] calls the request a replay: the reference libraries' 5 minutes.
pub const TIMESTAMP_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// The request timeout the Standard Webhooks spec recommends (15 to 30 s),
/// for configuration that does not set one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// How many attempts a message gets, the first included, before the caller
/// gives up on it. See [`backoff`] for why this many.
pub const MAX_ATTEMPTS: u32 = 72;

/// The longest `Retry-After` honoured. A receiver asking for more than a day
/// is misconfigured rather than advising, and obeying it would park the
/// message beyond the whole retry schedule.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

const SECRET_PREFIX: &str = "whsec_";
const SIGNATURE_VERSION: &str = "v1";
const USER_AGENT: &str = concat!("handoff/", env!("CARGO_PKG_VERSION"));
const MAX_MESSAGE_ID_LEN: usize = 256;

/// Secrets are base64 with or without `=` padding: receivers' dashboards and
/// our own config files are not consistent about it, and the key is the same.
const SECRET_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A CRM or AI-agent endpoint that receives signed webhooks.
#[derive(Clone)]
pub struct Endpoint {
    /// The name used in logs and errors (URLs can carry tokens, so they are not).
    pub name: String,
    /// An `http` or `https` URL.
    pub url: String,
    /// The signing secret, `whsec_<base64 key>`.
    pub secret: Secret,
    /// Lets the URL resolve to loopback, private and other internal
    /// addresses; for agents running beside `handoff` on its own network.
    pub allow_private: bool,
    /// How long one attempt may take, name resolution included.
    pub timeout: Duration,
}

impl fmt::Debug for Endpoint {
    /// Shows the URL's scheme and host only: hook URLs of automation tools
    /// carry their credential in the path or query.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = match reqwest::Url::parse(self.url.trim()) {
            Ok(url) => format!(
                "{}://{}/…",
                url.scheme(),
                url.host_str().unwrap_or_default()
            ),
            Err(_) => "(not a URL)".to_string(),
        };
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("url", &url)
            .field("secret", &self.secret)
            .field("allow_private", &self.allow_private)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A delivery the endpoint answered with 2xx.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub status: u16,
    /// The `webhook-timestamp` this attempt was signed with.
    pub timestamp: i64,
    /// The address the request went to, when the transport reports it.
    pub remote_addr: Option<SocketAddr>,
    pub elapsed: Duration,
}

/// What kind of failure a [`NotifyError`] is; the caller's retry decision
/// depends on this alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The signing secret is empty or not base64: a configuration error.
    InvalidSecret,
    /// The message ID cannot be signed or sent, or the event does not encode.
    InvalidEvent,
    /// The URL is not an `http`/`https` URL with a host.
    InvalidUrl,
    /// The URL leads to an address that is not allowed without `allow_private`.
    DestinationRefused,
    /// The host name did not resolve (DNS can recover, so this is retried).
    Unresolved,
    /// No answer within the endpoint's timeout.
    Timeout,
    /// Connecting, TLS or the exchange itself failed.
    Transport,
    /// 408, 429 or 5xx: the receiver is busy or unwell.
    Unavailable,
    /// 410 Gone: the receiver wants no more webhooks; disable the endpoint.
    Disabled,
    /// A redirect or another 4xx: sending the same request again cannot help.
    Rejected,
    /// [`verify`]: no signature in the header matches.
    BadSignature,
    /// [`verify`]: the signature matches but the timestamp is too far from now.
    StaleTimestamp,
}

impl ErrorKind {
    /// Whether the same message may succeed on a later attempt.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Unresolved
                | ErrorKind::Timeout
                | ErrorKind::Transport
                | ErrorKind::Unavailable
        )
    }

    /// The stable name used in metrics and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidSecret => "invalid_secret",
            ErrorKind::InvalidEvent => "invalid_event",
            ErrorKind::InvalidUrl => "invalid_url",
            ErrorKind::DestinationRefused => "destination_refused",
            ErrorKind::Unresolved => "unresolved",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Transport => "transport",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Disabled => "disabled",
            ErrorKind::Rejected => "rejected",
            ErrorKind::BadSignature => "bad_signature",
            ErrorKind::StaleTimestamp => "stale_timestamp",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a webhook was not signed, sent, delivered or verified. Messages name
/// the endpoint and the host, never the secret, the URL's path or the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifyError {
    kind: ErrorKind,
    endpoint: Option<String>,
    message: String,
    help: Option<String>,
    status: Option<u16>,
    retry_after: Option<Duration>,
}

impl NotifyError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> NotifyError {
        NotifyError {
            kind,
            endpoint: None,
            message: message.into(),
            help: None,
            status: None,
            retry_after: None,
        }
    }

    fn with_help(mut self, help: impl Into<String>) -> NotifyError {
        self.help = Some(help.into());
        self
    }

    fn with_endpoint(mut self, name: &str) -> NotifyError {
        self.endpoint = Some(name.to_string());
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the caller should try the same message again later.
    pub fn retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    /// The receiver's `Retry-After`, when it sent one (capped at
    /// [`MAX_RETRY_AFTER`]); wait at least this long, and at least [`backoff`].
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The HTTP status the endpoint answered, when it answered.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The endpoint's name, for errors from [`Notifier::deliver`].
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// What went wrong, without the advice.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// What to do about it, when there is something to do.
    pub fn help(&self) -> Option<&str> {
        self.help.as_deref()
    }
}

impl fmt::Display for NotifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(endpoint) = &self.endpoint {
            write!(f, "webhook endpoint `{endpoint}`: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(help) = &self.help {
            write!(f, "; {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for NotifyError {}

// ---------------------------------------------------------------------------
// Signatures

/// The `webhook-signature` value for one attempt:
/// `v1,<base64 HMAC-SHA256(key, "{msg_id}.{timestamp}.{body}")>`, where the
/// key is the base64 after `whsec_` (a secret without the prefix is decoded
/// whole, as the reference libraries do).
pub fn sign(
    secret: &str,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, NotifyError> {
    let key = decode_secret(secret)?;
    check_message_id(msg_id)?;
    let mac = signed_content(&key, msg_id, timestamp, body);
    Ok(format!(
        "{SIGNATURE_VERSION},{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// Checks a `webhook-signature` header value (one or more space-separated
/// signatures, as during a secret rotation; other schemes such as `v1a` are
/// skipped) against `secret`, in constant time, and that `timestamp` is
/// within [`TIMESTAMP_TOLERANCE`] of `now` (Unix seconds).
pub fn verify(
    secret: &str,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
    signatures: &str,
    now: i64,
) -> Result<(), NotifyError> {
    let key = decode_secret(secret)?;
    let mismatch = || {
        NotifyError::new(
            ErrorKind::BadSignature,
            format!("no signature in `{WEBHOOK_SIGNATURE}` matches the message under the secret"),
        )
        .with_help(
            "check that the secret is the sender's current one and that the body \
             is checked exactly as received, before any JSON parsing",
        )
    };
    // An ID with a `.` would make `{id}.{timestamp}.{body}` ambiguous, so
    // nothing the sender could have signed carries one.
    check_message_id(msg_id).map_err(|_| mismatch())?;
    let expected = signed_content(&key, msg_id, timestamp, body)
        .finalize()
        .into_bytes();
    let matched = signatures
        .split(' ')
        .filter_map(|candidate| candidate.split_once(','))
        .filter(|(version, _)| *version == SIGNATURE_VERSION)
        .filter_map(|(_, encoded)| STANDARD.decode(encoded).ok())
        .any(|candidate| constant_time_eq(&expected, &candidate));
    if !matched {
        return Err(mismatch());
    }
    let skew = now.abs_diff(timestamp);
    if skew > TIMESTAMP_TOLERANCE.as_secs() {
        return Err(NotifyError::new(
            ErrorKind::StaleTimestamp,
            format!(
                "`{WEBHOOK_TIMESTAMP}` is {skew} seconds from now, more than the {} allowed",
                TIMESTAMP_TOLERANCE.as_secs()
            ),
        )
        .with_help("this is a replay, or the sender's or receiver's clock is wrong"));
    }
    Ok(())
}

/// [`verify`] over a request's `webhook-id`, `webhook-timestamp` and
/// `webhook-signature` headers, for receivers.
pub fn verify_headers(
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), NotifyError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .ok_or_else(|| {
                NotifyError::new(
                    ErrorKind::BadSignature,
                    format!("missing or unreadable `{name}` header"),
                )
                .with_help("Standard Webhooks senders set `webhook-id`, `webhook-timestamp` and `webhook-signature` on every request")
            })
    };
    let msg_id = header(WEBHOOK_ID)?;
    let timestamp = header(WEBHOOK_TIMESTAMP)?;
    let timestamp: i64 = timestamp.parse().map_err(|_| {
        NotifyError::new(
            ErrorKind::BadSignature,
            format!("`{WEBHOOK_TIMESTAMP}` is `{timestamp}`, not Unix seconds"),
        )
    })?;
    verify(
        secret,
        msg_id,
        timestamp,
        body,
        header(WEBHOOK_SIGNATURE)?,
        now,
    )
}

fn decode_secret(secret: &str) -> Result<Vec<u8>, NotifyError> {
    // Trimmed because a secret read from a file or an environment variable
    // often ends in a newline, and base64 never contains whitespace.
    let secret = secret.trim();
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    // The decoder's own error names the offending byte and its offset, which
    // would put part of the secret into logs; this message does not.
    let key = SECRET_ENGINE.decode(encoded).map_err(|_| {
        NotifyError::new(
            ErrorKind::InvalidSecret,
            "the signing secret is not base64 after its `whsec_` prefix",
        )
        .with_help("use the secret exactly as issued: `whsec_` followed by standard base64")
    })?;
    if key.is_empty() {
        return Err(
            NotifyError::new(ErrorKind::InvalidSecret, "the signing secret is empty").with_help(
                "set the endpoint's `secret` to the `whsec_` secret the receiver checks against",
            ),
        );
    }
    Ok(key)
}

fn check_message_id(msg_id: &str) -> Result<(), NotifyError> {
    let reason = if msg_id.is_empty() {
        Some("it is empty")
    } else if msg_id.len() > MAX_MESSAGE_ID_LEN {
        Some("it is longer than 256 characters")
    } else if msg_id.contains('.') {
        // The spec forbids `.`: it delimits the signed content's parts.
        Some("it contains `.`, which delimits the signed content")
    } else if !msg_id.bytes().all(|b| b.is_ascii_graphic()) {
        Some("it has characters other than visible ASCII, which a header cannot carry")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(NotifyError::new(
            ErrorKind::InvalidEvent,
            format!(
                "the message ID `{}` cannot be signed: {reason}",
                msg_id.escape_debug()
            ),
        )
        .with_help("use IDs such as `msg_<uuid>`")),
    }
}

fn signed_content(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = new_mac(key);
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

fn new_mac(key: &[u8]) -> HmacSha256 {
    // HMAC is defined for keys of any length (long keys are hashed, short
    // ones padded), so `new_from_slice` cannot fail; the fallback is
    // unreachable and would only make every signature mismatch.
    HmacSha256::new_from_slice(key)
        .unwrap_or_else(|_| <HmacSha256 as hmac::digest::KeyInit>::new(&Default::default()))
}

// ---------------------------------------------------------------------------
// Destinations

/// An endpoint URL taken apart: the host as written (for pinning name
/// resolution), the port, and the address when the host is an IP literal.
struct Destination {
    url: reqwest::Url,
    host: String,
    port: u16,
    literal: Option<IpAddr>,
}

fn parse_destination(url: &str) -> Result<Destination, NotifyError> {
    let invalid = |message: String| {
        NotifyError::new(ErrorKind::InvalidUrl, message)
            .with_help("set the endpoint's `url` to an `https://` URL, such as `https://crm.example.com/hooks/handoff`")
    };
    // The URL crate's parse errors ("empty host", "relative URL without a
    // base") never quote the input, which may carry a token in its path.
    let parsed = reqwest::Url::parse(url.trim())
        .map_err(|e| invalid(format!("the endpoint's url is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "the endpoint's url has the scheme `{}`; only `http` and `https` are sent to",
            parsed.scheme()
        )));
    }
    let host = parsed
        .host_str()
        .filter(|host| !host.is_empty())
        .ok_or_else(|| invalid("the endpoint's url has no host".to_string()))?
        .to_string();
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| invalid("the endpoint's url has no port".to_string()))?;
    // The URL crate writes IPv6 hosts in brackets and has already turned
    // IPv4 spellings such as `2130706433` or `0x7f.1` into dotted quads.
    let literal = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok();
    Ok(Destination {
        url: parsed,
        host,
        port,
        literal,
    })
}

/// Checks that `url` is an `http`/`https` URL with a host, resolves the host,
/// and refuses (unless `allow_private`) when any address it resolves to is
/// loopback, private, link-local, shared (CGNAT), unspecified, broadcast,
/// multicast, reserved for documentation or otherwise not on the public
/// internet, in IPv4, IPv6, or IPv4 embedded in IPv6. Returns the addresses,
/// which are the only ones a delivery may then connect to. Connects to none.
pub async fn check_destination(
    url: &str,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, NotifyError> {
    let destination = parse_destination(url)?;
    resolve_destination(&destination, allow_private).await
}

async fn resolve_destination(
    destination: &Destination,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, NotifyError> {
    let host = &destination.host;
    let resolved: Vec<SocketAddr> = match destination.literal {
        Some(ip) => vec![SocketAddr::new(ip, destination.port)],
        None => tokio::net::lookup_host((host.as_str(), destination.port))
            .await
            .map_err(|e| {
                NotifyError::new(
                    ErrorKind::Unresolved,
                    format!("`{host}` did not resolve: {e}"),
                )
                .with_help("check the host name in the endpoint's `url`")
            })?
            .collect(),
    };
    // Duplicates dropped in place: the resolver's order is its preference
    // between IPv6 and IPv4, which the connection should keep.
    let mut addrs: Vec<SocketAddr> = Vec::with_capacity(resolved.len());
    for addr in resolved {
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    if addrs.is_empty() {
        return Err(NotifyError::new(
            ErrorKind::Unresolved,
            format!("`{host}` resolved to no address"),
        )
        .with_help("check the host name in the endpoint's `url`"));
    }
    if !allow_private {
        // Every address, not just the first: the connection may go to any
        // of them, and a name that mixes public and internal addresses is
        // exactly what a rebinding attack looks like.
        for addr in &addrs {
            if let Some(reason) = refusal(addr.ip()) {
                let ip = addr.ip();
                let what = if destination.literal.is_some() {
                    format!("`{ip}`: it is {reason}")
                } else {
                    format!("`{host}`: it resolves to `{ip}`, {reason}")
                };
                // Public addresses only, so that an endpoint's URL cannot be
                // used to reach services on the network `handoff` runs in.
                return Err(NotifyError::new(
                    ErrorKind::DestinationRefused,
                    format!("refused to send to {what}, and webhooks go only to public addresses"),
                )
                .with_help("if this endpoint really is on your own network, set `allow_private = true` in the endpoint's configuration"));
            }
        }
    }
    Ok(addrs)
}

/// Why `ip` is not a public internet address, as a noun phrase; `None` when
/// it is one.
fn refusal(ip: IpAddr) -> Option<String> {
    match ip {
        IpAddr::V4(v4) => v4_refusal(v4).map(str::to_string),
        IpAddr::V6(v6) => v6_refusal(v6),
    }
}

fn v4_refusal(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip == Ipv4Addr::new(169, 254, 169, 254) => {
            "the cloud metadata service (link-local 169.254.169.254)"
        }
        _ if ip.is_broadcast() => "the broadcast address",
        _ if ip.is_unspecified() => "the unspecified address (it reaches this host)",
        (0, _, _) => "in 0.0.0.0/8, \"this network\"",
        (10, _, _) => "a private address (10.0.0.0/8)",
        (100, 64..=127, _) => "a shared address (100.64.0.0/10, carrier-grade NAT)",
        (127, _, _) => "a loopback address (127.0.0.0/8)",
        (169, 254, _) => "a link-local address (169.254.0.0/16)",
        (172, 16..=31, _) => "a private address (172.16.0.0/12)",
        (192, 0, 0) => "reserved for IETF protocols (192.0.0.0/24)",
        (192, 0, 2) => "reserved for documentation (192.0.2.0/24)",
        (192, 168, _) => "a private address (192.168.0.0/16)",
        (198, 18..=19, _) => "reserved for benchmarking (198.18.0.0/15)",
        (198, 51, 100) => "reserved for documentation (198.51.100.0/24)",
        (203, 0, 113) => "reserved for documentation (203.0.113.0/24)",
        (224..=239, _, _) => "a multicast address (224.0.0.0/4)",
        (240..=255, _, _) => "a reserved address (240.0.0.0/4)",
        _ => return None,
    })
}

fn v6_refusal(ip: Ipv6Addr) -> Option<String> {
    let segments = ip.segments();
    let embedded = |v4: Ipv4Addr, form: &str| {
        v4_refusal(v4).map(|reason| format!("{form} of `{v4}`, which is {reason}"))
    };
    if ip.is_loopback() {
        return Some("the IPv6 loopback address".into());
    }
    if ip.is_unspecified() {
        return Some("the IPv6 unspecified address (it reaches this host)".into());
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return embedded(v4, "the IPv4-mapped form");
    }
    let [.., seventh, eighth] = segments;
    let low_v4 = Ipv4Addr::from((u32::from(seventh) << 16) | u32::from(eighth));
    let reason = match segments {
        // NAT64 translates these to the IPv4 address in the low 32 bits, so
        // 64:ff9b::a9fe:a9fe reaches 169.254.169.254 on a NAT64 network.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => return embedded(low_v4, "the NAT64 form"),
        // 6to4 carries the IPv4 address in bits 16 to 48.
        [0x2002, high, low, ..] => {
            let v4 = Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
            return embedded(v4, "the 6to4 form");
        }
        [0, 0, 0, 0, 0, 0, _, _] => "an IPv4-compatible address (::/96, deprecated)",
        [0x64, 0xff9b, 1, ..] => "a local-use NAT64 address (64:ff9b:1::/48)",
        [0x100, 0, 0, 0, ..] => "a discard-only address (100::/64)",
        [0x2001, 0xdb8, ..] => "reserved for documentation (2001:db8::/32)",
        [0x3fff, second, ..] if second & 0xf000 == 0 => "reserved for documentation (3fff::/20)",
        [first, ..] if first & 0xfe00 == 0xfc00 => {
            "a unique local address (fc00::/7, the IPv6 private range)"
        }
        [first, ..] if first & 0xffc0 == 0xfe80 => "a link-local address (fe80::/10)",
        [first, ..] if first & 0xffc0 == 0xfec0 => "a site-local address (fec0::/10, deprecated)",
        [first, ..] if first & 0xff00 == 0xff00 => "a multicast address (ff00::/8)",
        _ => return None,
    };
    Some(reason.to_string())
}

/// Answers name lookups for the checked host with the checked addresses and
/// refuses every other name, so a delivery cannot resolve the host a second
/// time (a DNS rebinding attack answers the check with a public address and
/// the connection with an internal one).
struct PinnedResolver {
    host: String,
    addrs: Vec<SocketAddr>,
}

impl reqwest::dns::Resolve for PinnedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let result: Result<reqwest::dns::Addrs, Box<dyn std::error::Error + Send + Sync>> =
            if name.as_str().eq_ignore_ascii_case(&self.host) {
                Ok(Box::new(self.addrs.clone().into_iter()))
            } else {
                Err(format!("`{}` is not the checked destination", name.as_str()).into())
            };
        Box::pin(std::future::ready(result))
    }
}

// ---------------------------------------------------------------------------
// Delivery

/// The Standard Webhooks body: `{"type", "timestamp", "data"}`, in that order.
#[derive(Serialize)]
struct Payload<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    timestamp: String,
    data: &'a serde_json::Value,
}

/// What one attempt sends, besides the endpoint.
#[derive(Clone, Copy)]
struct Event<'a> {
    msg_id: &'a str,
    event_type: &'a str,
    data: &'a serde_json::Value,
}

/// Sends webhooks: one [`Notifier::deliver`] call is one attempt.
///
/// Each attempt gets its own HTTP client whose name resolution is pinned to
/// the addresses [`check_destination`] just approved. A shared, pooled
/// client would resolve the host again when it connects, and that second
/// answer is the one a rebinding attacker controls. The price is no
/// connection reuse between attempts, which webhooks (one request to a
/// host now and then) hardly have anyway.
#[derive(Clone, Debug, Default)]
pub struct Notifier {
    _private: (),
}

impl Notifier {
    /// A notifier with the defaults: no redirects, no proxies, no
    /// transport-level retries, `user-agent: handoff/<version>`.
    pub fn new() -> Notifier {
        Notifier::default()
    }

    /// One attempt to deliver the event `event_type` with `data` to
    /// `endpoint`, as message `msg_id`. Pass the same `msg_id` on every
    /// retry: receivers deduplicate on it. Each attempt is signed afresh
    /// with the current time, and its body's `timestamp` is that time too
    /// (the event's own times belong in `data`).
    pub async fn deliver(
        &self,
        endpoint: &Endpoint,
        msg_id: &str,
        event_type: &str,
        data: &serde_json::Value,
    ) -> Result<Delivered, NotifyError> {
        let span = tracing::debug_span!("webhook", endpoint = %endpoint.name, msg_id);
        let outcome = async {
            // Configuration errors first: they need no network.
            let key = decode_secret(endpoint.secret.expose())?;
            check_message_id(msg_id)?;
            let destination = parse_destination(&endpoint.url)?;
            let started = Instant::now();
            let addrs = tokio::time::timeout(
                endpoint.timeout,
                resolve_destination(&destination, endpoint.allow_private),
            )
            .await
            .map_err(|_| {
                NotifyError::new(
                    ErrorKind::Timeout,
                    format!(
                        "resolving `{}` took longer than {:?}",
                        destination.host, endpoint.timeout
                    ),
                )
            })??;
            // The timeout covers the whole attempt, resolution included.
            let remaining = endpoint.timeout.saturating_sub(started.elapsed());
            let event = Event {
                msg_id,
                event_type,
                data,
            };
            self.post(endpoint, &destination, &addrs, &key, &event, remaining)
                .await
        }
        .instrument(span.clone())
        .await;
        let _entered = span.enter();
        match &outcome {
            Ok(delivered) => tracing::debug!(
                status = delivered.status,
                elapsed_ms = delivered.elapsed.as_millis() as u64,
                "webhook delivered"
            ),
            Err(error) => tracing::debug!(
                kind = error.kind().as_str(),
                status = error.status(),
                retryable = error.retryable(),
                "webhook not delivered: {error}"
            ),
        }
        outcome.map_err(|error| error.with_endpoint(&endpoint.name))
    }

    /// Sends to `addrs` only, within `timeout`; the caller has checked them.
    async fn post(
        &self,
        endpoint: &Endpoint,
        destination: &Destination,
        addrs: &[SocketAddr],
        key: &[u8],
        event: &Event<'_>,
        timeout: Duration,
    ) -> Result<Delivered, NotifyError> {
        let Event {
            msg_id,
            event_type,
            data,
        } = *event;
        let host = &destination.host;
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(USER_AGENT)
            // A redirect could lead to an address the check refused, and the
            // spec counts 3xx as a failure to fix by updating the URL.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve the host itself, out of reach of the check.
            .no_proxy()
            // Retrying is the caller's decision, with a fresh timestamp.
            .retry(reqwest::retry::never())
            .timeout(timeout)
            .dns_resolver(Arc::new(PinnedResolver {
                host: host.clone(),
                addrs: addrs.to_vec(),
            }))
            .build()
            .map_err(|e| {
                NotifyError::new(
                    ErrorKind::Transport,
                    format!("cannot set up the HTTP client: {}", chain(&e.without_url())),
                )
            })?;
        let now = chrono::Utc::now();
        let timestamp = now.timestamp();
        let body = serde_json::to_vec(&Payload {
            event_type,
            timestamp: now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            data,
        })
        .map_err(|e| {
            NotifyError::new(
                ErrorKind::InvalidEvent,
                format!("the event cannot be encoded as JSON: {e}"),
            )
        })?;
        let mac = signed_content(key, msg_id, timestamp, &body);
        let signature = format!(
            "{SIGNATURE_VERSION},{}",
            STANDARD.encode(mac.finalize().into_bytes())
        );
        let started = Instant::now();
        let response = client
            .post(destination.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(WEBHOOK_ID, msg_id)
            .header(WEBHOOK_TIMESTAMP, timestamp.to_string())
            .header(WEBHOOK_SIGNATURE, signature)
            .body(body)
            .send()
            .await
            .map_err(|e| transport_error(host, endpoint.timeout, e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, chrono::Utc::now()));
        let remote_addr = response.remote_addr();
        // The answer's body is not read: nothing in it changes the outcome,
        // and a receiver's error page can echo the lead's details back.
        drop(response);
        answer(status, retry_after)?;
        Ok(Delivered {
            status: status.as_u16(),
            timestamp,
            remote_addr,
            elapsed: started.elapsed(),
        })
    }
}

/// What an endpoint's HTTP status means, following the Standard Webhooks
/// spec: 2xx delivered, 410 disable, 408/429/5xx retry, the rest fail.
fn answer(status: StatusCode, retry_after: Option<Duration>) -> Result<(), NotifyError> {
    let code = status.as_u16();
    let failure = |kind: ErrorKind, message: String| {
        let mut error = NotifyError::new(kind, message);
        error.status = Some(code);
        error
    };
    if status.is_success() {
        return Ok(());
    }
    Err(match code {
        410 => failure(
            ErrorKind::Disabled,
            format!("the endpoint answered {status}: it wants no more webhooks"),
        )
        .with_help("the endpoint should be disabled; re-enable it once the receiver is back"),
        // 408 is the receiver timing out on us, which is as transient as a 503.
        408 | 429 | 500.. => {
            let mut error = failure(
                ErrorKind::Unavailable,
                match retry_after {
                    Some(delay) => format!(
                        "the endpoint answered {status}, asking to retry after {}s",
                        delay.as_secs()
                    ),
                    None => format!("the endpoint answered {status}"),
                },
            );
            error.retry_after = retry_after;
            error
        }
        300..=399 => failure(
            ErrorKind::Rejected,
            format!("the endpoint answered {status}, a redirect, which webhooks do not follow"),
        )
        .with_help("set the endpoint's `url` to the address it redirects to"),
        _ => failure(
            ErrorKind::Rejected,
            format!("the endpoint answered {status}; the same request will not be retried"),
        )
        .with_help("check the receiver's logs for why it refused the webhook"),
    })
}

/// `Retry-After` as delay-seconds or an HTTP date, capped at
/// [`MAX_RETRY_AFTER`]; `None` when it is neither.
fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    let delay = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
            // A date already past means "now".
            (at.with_timezone(&chrono::Utc) - now)
                .to_std()
                .unwrap_or(Duration::ZERO)
        }
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

fn transport_error(host: &str, timeout: Duration, error: reqwest::Error) -> NotifyError {
    if error.is_timeout() {
        return NotifyError::new(
            ErrorKind::Timeout,
            format!("no answer from `{host}` within {timeout:?}"),
        )
        .with_help("the receiver should answer quickly and do slow work after answering");
    }
    // `without_url`: the URL's path and query can carry the receiver's token.
    NotifyError::new(
        ErrorKind::Transport,
        format!("could not reach `{host}`: {}", chain(&error.without_url())),
    )
}

/// An error with its sources, as one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    text
}

// ---------------------------------------------------------------------------
// Retry schedule

/// How long to wait after `attempt` failed attempts (1 after the first)
/// before the next: [`Backoff`] with full jitter, a uniformly random delay
/// between 1 s and a ceiling that starts at 5 s, doubles per attempt and
/// stops at 1 h. Full jitter spreads the retries of many messages that
/// failed together, so a receiver coming back up is not hit by all at once.
///
/// | after attempt | ceiling | mean wait |
/// |---------------|---------|-----------|
/// | 1             | 5 s     | 2.5 s     |
/// | 2             | 10 s    | 5 s       |
/// | 5             | 80 s    | 40 s      |
/// | 8             | 640 s   | 5.3 min   |
/// | 10            | 2560 s  | 21 min    |
/// | 11 and later  | 1 h     | 30 min    |
///
/// The cap keeps a recovered receiver from waiting more than an hour for a
/// lead; the number of attempts is what makes the retries span a day. The
/// first ten waits add up to about 43 minutes on average, and each later
/// one to 30, so the [`MAX_ATTEMPTS`] of 72 (71 waits) spans about 31 hours
/// on average; with the jitter's spread it falls short of 24 hours less
/// than once in a thousand messages. Wait for [`NotifyError::retry_after`]
/// instead when the receiver asked for longer.
pub const BACKOFF: Backoff = Backoff {
    first: Duration::from_secs(5),
    max: Duration::from_secs(3600),
    floor: Duration::from_secs(1),
    jitter: Jitter::Full,
};

/// The wait after `attempt` failed attempts: [`BACKOFF`].
pub fn backoff(attempt: u32) -> Duration {
    BACKOFF.wait(attempt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: i64 = 1614265330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signatures_match_the_standard_webhooks_test_vectors() {
        // The "sign function works" test of the Standard Webhooks reference
        // JavaScript library (standard-webhooks/standard-webhooks,
        // libraries/javascript/src/webhook.test.ts; the PHP library's
        // testSignFunctionWorks uses the same vector). Recomputed
        // independently with Python's hmac and base64 modules: equal.
        assert_eq!(
            sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY).unwrap(),
            SPEC_SIGNATURE
        );
        // The reference Rust library's `test_sign` (libraries/rust/src/lib.rs),
        // also recomputed with Python.
        assert_eq!(
            sign(
                "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                br#"{"email":"test@example.com","username":"test_user"}"#,
            )
            .unwrap(),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn a_secret_without_the_prefix_is_the_same_key() {
        let bare = SPEC_SECRET.trim_start_matches("whsec_");
        assert_eq!(
            sign(bare, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY).unwrap(),
            SPEC_SIGNATURE
        );
        // A trailing newline from a secrets file does not change the key.
        let with_newline = format!("{SPEC_SECRET}\n");
        assert_eq!(
            sign(&with_newline, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY).unwrap(),
            SPEC_SIGNATURE
        );
    }

    #[test]
    fn a_secret_that_is_not_base64_is_a_configuration_error_that_does_not_quote_it() {
        for secret in ["whsec_not base64!", "whsec_", "", "whsec_@@@@"] {
            let error = sign(secret, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::InvalidSecret, "{secret:?}");
            assert!(!error.retryable());
            let shown = format!("{error} {error:?}");
            assert!(!shown.contains("not base64!"), "{shown}");
            assert!(!shown.contains("@@@@"), "{shown}");
        }
        let error = sign("whsec_@@@@", SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the signing secret is not base64 after its `whsec_` prefix; use the secret \
             exactly as issued: `whsec_` followed by standard base64"
        );
    }

    #[test]
    fn a_message_id_with_a_dot_cannot_be_signed() {
        for id in ["msg.1", "", "msg 1", "msg_é"] {
            let error = sign(SPEC_SECRET, id, SPEC_TIMESTAMP, SPEC_BODY).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::InvalidEvent, "{id:?}");
        }
    }

    #[test]
    fn verify_accepts_the_right_signature() {
        assert_eq!(
            verify(
                SPEC_SECRET,
                SPEC_ID,
                SPEC_TIMESTAMP,
                SPEC_BODY,
                SPEC_SIGNATURE,
                SPEC_TIMESTAMP
            ),
            Ok(())
        );
        // Within the tolerance either way.
        for now in [SPEC_TIMESTAMP - 300, SPEC_TIMESTAMP + 300] {
            assert_eq!(
                verify(
                    SPEC_SECRET,
                    SPEC_ID,
                    SPEC_TIMESTAMP,
                    SPEC_BODY,
                    SPEC_SIGNATURE,
                    now
                ),
                Ok(())
            );
        }
    }

    #[test]
    fn verify_accepts_any_of_several_signatures() {
        // As during a secret rotation, with another scheme's signature mixed in.
        let header = format!(
            "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v1a,bm9wZQ== {SPEC_SIGNATURE} v1,garbage"
        );
        assert_eq!(
            verify(
                SPEC_SECRET,
                SPEC_ID,
                SPEC_TIMESTAMP,
                SPEC_BODY,
                &header,
                SPEC_TIMESTAMP
            ),
            Ok(())
        );
        let without = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v1a,bm9wZQ==";
        assert_eq!(
            verify(
                SPEC_SECRET,
                SPEC_ID,
                SPEC_TIMESTAMP,
                SPEC_BODY,
                without,
                SPEC_TIMESTAMP
            )
            .unwrap_err()
            .kind(),
            ErrorKind::BadSignature
        );
    }

    #[test]
    fn verify_refuses_a_wrong_signature_body_timestamp_id_or_secret() {
        let bad = |secret: &str, id: &str, timestamp: i64, body: &[u8], signature: &str| {
            verify(secret, id, timestamp, body, signature, SPEC_TIMESTAMP)
                .unwrap_err()
                .kind()
        };
        let other_secret = format!("whsec_{}", STANDARD.encode([7u8; 24]));
        let wrong_signature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OF=";
        let cases = [
            bad(
                SPEC_SECRET,
                SPEC_ID,
                SPEC_TIMESTAMP,
                SPEC_BODY,
                wrong_signature,
            ),
            bad(
                SPEC_SECRET,
                SPEC_ID,
                SPEC_TIMESTAMP,
                br#"{"test": 2432232315}"#,
                SPEC_SIGNATURE,
            ),
            bad(
                SPEC_SECRET,
                SPEC_ID,
                SPEC_TIMESTAMP + 1,
                SPEC_BODY,
                SPEC_SIGNATURE,
            ),
            bad(
                SPEC_SECRET,
                "msg_other",
                SPEC_TIMESTAMP,
                SPEC_BODY,
                SPEC_SIGNATURE,
            ),
            bad(
                &other_secret,
                SPEC_ID,
                SPEC_TIMESTAMP,
                SPEC_BODY,
                SPEC_SIGNATURE,
            ),
            // The signature without its version, or under another version.
            bad(
                SPEC_SECRET,
                SPEC_ID,
                SPEC_TIMESTAMP,
                SPEC_BODY,
                &SPEC_SIGNATURE[3..],
            ),
            bad(
                SPEC_SECRET,
                SPEC_ID,
                SPEC_TIMESTAMP,
                SPEC_BODY,
                &SPEC_SIGNATURE.replace("v1,", "v2,"),
            ),
            bad(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, ""),
        ];
        for (index, kind) in cases.iter().enumerate() {
            assert_eq!(*kind, ErrorKind::BadSignature, "case {index}");
        }
    }

    #[test]
    fn verify_refuses_a_replayed_timestamp_even_with_a_good_signature() {
        for now in [
            SPEC_TIMESTAMP + 301,
            SPEC_TIMESTAMP - 301,
            SPEC_TIMESTAMP + 86_400,
        ] {
            let error = verify(
                SPEC_SECRET,
                SPEC_ID,
                SPEC_TIMESTAMP,
                SPEC_BODY,
                SPEC_SIGNATURE,
                now,
            )
            .unwrap_err();
            assert_eq!(error.kind(), ErrorKind::StaleTimestamp, "{now}");
        }
    }

    #[test]
    fn verify_headers_reads_the_three_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(WEBHOOK_ID, SPEC_ID.parse().unwrap());
        headers.insert(
            WEBHOOK_TIMESTAMP,
            SPEC_TIMESTAMP.to_string().parse().unwrap(),
        );
        headers.insert(WEBHOOK_SIGNATURE, SPEC_SIGNATURE.parse().unwrap());
        assert_eq!(
            verify_headers(SPEC_SECRET, &headers, SPEC_BODY, SPEC_TIMESTAMP),
            Ok(())
        );
        for name in [WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE] {
            let mut missing = headers.clone();
            missing.remove(name);
            let error =
                verify_headers(SPEC_SECRET, &missing, SPEC_BODY, SPEC_TIMESTAMP).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::BadSignature);
            assert!(error.message().contains(name), "{error}");
        }
    }

    async fn refused(url: &str) -> NotifyError {
        match check_destination(url, false).await {
            Ok(addrs) => panic!("{url} should be refused, not pass as {addrs:?}"),
            Err(error) => error,
        }
    }

    #[tokio::test]
    async fn each_internal_range_is_refused_and_says_why() {
        let cases = [
            ("http://127.0.0.1/", "loopback"),
            ("http://127.8.9.10:8080/", "loopback"),
            ("http://10.1.2.3/", "private address (10.0.0.0/8)"),
            ("http://172.16.0.1/", "private address (172.16.0.0/12)"),
            ("http://172.31.255.255/", "private address (172.16.0.0/12)"),
            ("http://192.168.1.1/", "private address (192.168.0.0/16)"),
            ("http://169.254.10.20/", "link-local"),
            ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
            ("http://100.64.0.1/", "carrier-grade NAT"),
            ("http://100.127.255.254/", "carrier-grade NAT"),
            ("http://0.0.0.0/", "unspecified"),
            ("http://0.1.2.3/", "this network"),
            ("http://255.255.255.255/", "broadcast"),
            ("http://224.0.0.1/", "multicast"),
            ("http://239.255.255.250/", "multicast"),
            ("http://240.0.0.1/", "reserved"),
            ("http://192.0.2.10/", "documentation"),
            ("http://198.51.100.7/", "documentation"),
            ("http://203.0.113.99/", "documentation"),
            ("http://198.18.0.1/", "benchmarking"),
            ("http://192.0.0.8/", "IETF protocols"),
            ("http://[::1]/", "IPv6 loopback"),
            ("http://[::]/", "IPv6 unspecified"),
            ("http://[fc00::1]/", "unique local"),
            ("http://[fd00:ec2::254]/", "unique local"),
            ("http://[fe80::1]/", "link-local address (fe80::/10)"),
            ("http://[febf:ffff::1]/", "link-local address (fe80::/10)"),
            ("http://[fec0::1]/", "site-local"),
            ("http://[ff02::1]/", "multicast"),
            ("http://[2001:db8::1]/", "documentation"),
            (
                "http://[::ffff:127.0.0.1]/",
                "IPv4-mapped form of `127.0.0.1`",
            ),
            ("http://[::ffff:169.254.169.254]/", "cloud metadata"),
            (
                "http://[::ffff:10.0.0.1]/",
                "IPv4-mapped form of `10.0.0.1`",
            ),
            ("http://[::ffff:192.168.0.1]/", "private"),
            (
                "http://[64:ff9b::a9fe:a9fe]/",
                "NAT64 form of `169.254.169.254`",
            ),
            ("http://[2002:7f00:1::]/", "6to4 form of `127.0.0.1`"),
            ("http://[::7f00:1]/", "IPv4-compatible"),
            // The URL crate reads other IPv4 spellings as the dotted quad.
            ("http://2130706433/", "loopback"),
            ("http://0x7f.1/", "loopback"),
            ("https://017700000001/", "loopback"),
        ];
        for (url, reason) in cases {
            let error = refused(url).await;
            assert_eq!(error.kind(), ErrorKind::DestinationRefused, "{url}");
            assert!(!error.retryable(), "{url}");
            assert!(error.message().contains(reason), "{url}: {error}");
            assert!(
                error
                    .help()
                    .is_some_and(|help| help.contains("`allow_private = true`")),
                "{url}: {error}"
            );
        }
    }

    #[tokio::test]
    async fn a_refusal_names_the_address_and_how_to_allow_it() {
        let error = refused("http://169.254.169.254/latest/meta-data/").await;
        assert_eq!(
            error.to_string(),
            "refused to send to `169.254.169.254`: it is the cloud metadata service (link-local \
             169.254.169.254), and webhooks go only to public addresses; if this endpoint \
             really is on your own network, set `allow_private = true` in the endpoint's \
             configuration"
        );
        // The path, which can carry a token, is not repeated.
        assert!(!error.to_string().contains("meta-data"));
    }

    #[tokio::test]
    async fn public_addresses_pass_without_a_connection() {
        // Nothing listens for us at these; the check resolves, never connects.
        for (url, expected) in [
            ("http://93.184.216.34/hook", "93.184.216.34:80"),
            ("https://93.184.216.34/hook", "93.184.216.34:443"),
            ("https://1.1.1.1:8443/", "1.1.1.1:8443"),
            (
                "https://[2606:4700:4700::1111]/",
                "[2606:4700:4700::1111]:443",
            ),
            ("http://172.32.0.1/", "172.32.0.1:80"),
            ("http://100.128.0.1/", "100.128.0.1:80"),
        ] {
            let addrs = check_destination(url, false).await.unwrap();
            assert_eq!(
                addrs,
                vec![expected.parse::<SocketAddr>().unwrap()],
                "{url}"
            );
        }
    }

    #[tokio::test]
    async fn allow_private_lets_internal_addresses_through() {
        for (url, expected) in [
            ("http://127.0.0.1:9000/", "127.0.0.1:9000"),
            ("http://169.254.169.254/", "169.254.169.254:80"),
            ("http://[::1]:9000/", "[::1]:9000"),
        ] {
            let addrs = check_destination(url, true).await.unwrap();
            assert_eq!(
                addrs,
                vec![expected.parse::<SocketAddr>().unwrap()],
                "{url}"
            );
        }
    }

    #[tokio::test]
    async fn urls_without_a_host_or_with_another_scheme_are_refused() {
        for url in [
            "file:///etc/passwd",
            "ftp://93.184.216.34/",
            "gopher://93.184.216.34/",
            "http://",
            "https://:443/",
            "/hooks/crm",
            "not a url",
            "",
        ] {
            let error = match check_destination(url, true).await {
                Ok(addrs) => panic!("{url:?} should be refused, not pass as {addrs:?}"),
                Err(error) => error,
            };
            assert_eq!(error.kind(), ErrorKind::InvalidUrl, "{url:?}: {error}");
            assert!(!error.retryable());
        }
        let error = check_destination("file:///etc/passwd", true)
            .await
            .unwrap_err();
        assert!(error.message().contains("scheme `file`"), "{error}");
    }

    #[test]
    fn answers_are_classified_as_the_spec_suggests() {
        let kind = |code: u16, retry_after: Option<Duration>| {
            answer(StatusCode::from_u16(code).unwrap(), retry_after).map_err(|e| {
                assert_eq!(e.status(), Some(code));
                (e.kind(), e.retryable(), e.retry_after())
            })
        };
        for code in [200, 201, 202, 204, 299] {
            assert_eq!(kind(code, None), Ok(()), "{code}");
        }
        assert_eq!(kind(410, None), Err((ErrorKind::Disabled, false, None)));
        let later = Some(Duration::from_secs(30));
        for code in [408, 429, 500, 502, 503, 504, 599] {
            assert_eq!(
                kind(code, later),
                Err((ErrorKind::Unavailable, true, later)),
                "{code}"
            );
        }
        for code in [301, 302, 307, 308, 400, 401, 403, 404, 405, 413, 422] {
            assert_eq!(
                kind(code, later),
                Err((ErrorKind::Rejected, false, None)),
                "{code}"
            );
        }
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_a_date_and_capped() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 01 Mar 2026 12:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Sun, 01 Mar 2026 11:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("99999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn backoff_grows_and_stays_capped() {
        let ceilings: Vec<u64> = (1..=14).map(|n| BACKOFF.ceiling(n).as_secs()).collect();
        assert_eq!(
            ceilings,
            [5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600, 3600, 3600]
        );
        assert_eq!(BACKOFF.ceiling(0), Duration::from_secs(5));
        assert_eq!(BACKOFF.ceiling(u32::MAX), Duration::from_secs(3600));
        for attempt in [0, 1, 2, 5, 10, 11, 40, MAX_ATTEMPTS, u32::MAX] {
            for _ in 0..200 {
                let delay = backoff(attempt);
                assert!(delay >= Duration::from_secs(1), "{attempt}: {delay:?}");
                assert!(delay <= BACKOFF.ceiling(attempt), "{attempt}: {delay:?}");
            }
        }
        // Jittered: two hundred draws at the cap are not all the same.
        let draws: std::collections::BTreeSet<Duration> = (0..200).map(|_| backoff(30)).collect();
        assert!(draws.len() > 100);
    }

    #[test]
    fn the_retry_schedule_spans_more_than_a_day() {
        let day = Duration::from_secs(24 * 60 * 60);
        // The expected span: each wait is uniform between 1 s and its ceiling.
        let mean: Duration = (1..MAX_ATTEMPTS)
            .map(|n| (BACKOFF.ceiling(n) + Duration::from_secs(1)) / 2)
            .sum();
        assert!(mean > day + Duration::from_secs(6 * 3600), "{mean:?}");
        // And the drawn schedules: their average is within minutes of the
        // mean, so this cannot fail by bad luck.
        let runs = 100;
        let total: Duration = (0..runs)
            .map(|_| (1..MAX_ATTEMPTS).map(backoff).sum::<Duration>())
            .sum();
        assert!(total / runs > day, "{:?}", total / runs);
    }

    #[test]
    fn the_secret_never_shows_in_debug_output() {
        let endpoint = Endpoint {
            name: "crm".into(),
            url: "https://crm.example.com/hook".into(),
            secret: Secret::new(SPEC_SECRET),
            allow_private: false,
            timeout: DEFAULT_TIMEOUT,
        };
        let shown = format!("{endpoint:?}");
        assert!(!shown.contains("MfKQ9r8"), "{shown}");
        assert!(shown.contains("Secret(***)"), "{shown}");
        // Nor does a credential in the URL's path or query.
        let zap = Endpoint {
            url: "https://hooks.zapier.com/hooks/catch/123/tok_5f2e9a/?key=abc".into(),
            ..endpoint
        };
        let shown = format!("{zap:?}");
        assert!(shown.contains("https://hooks.zapier.com/…"), "{shown}");
        assert!(
            !shown.contains("tok_5f2e9a") && !shown.contains("abc"),
            "{shown}"
        );
    }

    #[test]
    fn the_pinned_resolver_answers_only_for_the_checked_host() {
        use reqwest::dns::Resolve as _;
        let addr: SocketAddr = "93.184.216.34:443".parse().unwrap();
        let resolver = PinnedResolver {
            host: "crm.example.com".into(),
            addrs: vec![addr],
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let answer = runtime
            .block_on(resolver.resolve("CRM.example.com".parse().unwrap()))
            .unwrap();
        assert_eq!(answer.collect::<Vec<_>>(), vec![addr]);
        let other = runtime.block_on(resolver.resolve("internal.example.com".parse().unwrap()));
        assert!(other.is_err());
    }

    #[tokio::test]
    async fn a_delivery_connects_to_the_checked_addresses_without_resolving_again() {
        // `.invalid` never resolves (RFC 6761), so this succeeds only if the
        // request goes to the pinned address instead of asking DNS.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(|headers: axum::http::HeaderMap| async move {
                let host = headers
                    .get("host")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                (StatusCode::OK, host)
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let url = format!("http://crm.invalid:{}/hook", addr.port());
        let endpoint = Endpoint {
            name: "crm".into(),
            url: url.clone(),
            secret: Secret::new(SPEC_SECRET),
            allow_private: true,
            timeout: Duration::from_secs(5),
        };
        let destination = parse_destination(&url).unwrap();
        let key = decode_secret(SPEC_SECRET).unwrap();
        let data = json!({});
        let event = Event {
            msg_id: "msg_1",
            event_type: "lead.created",
            data: &data,
        };
        let delivered = Notifier::new()
            .post(
                &endpoint,
                &destination,
                &[addr],
                &key,
                &event,
                endpoint.timeout,
            )
            .await
            .unwrap();
        assert_eq!(delivered.status, 200);
        assert_eq!(delivered.remote_addr, Some(addr));
        // Through `deliver`, the same name is looked up and fails: the pin
        // is what made the difference.
        let error = Notifier::new()
            .deliver(&endpoint, "msg_1", "lead.created", &json!({}))
            .await
            .unwrap_err();
        // Unresolved, or Timeout where DNS servers are unreachable and slow.
        assert!(
            matches!(error.kind(), ErrorKind::Unresolved | ErrorKind::Timeout),
            "{error}"
        );
        assert!(error.retryable());
        assert!(
            error.to_string().starts_with("webhook endpoint `crm`: "),
            "{error}"
        );
        assert!(error.to_string().contains("`crm.invalid`"), "{error}");
    }
}
