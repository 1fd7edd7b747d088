//! The node's configuration: one TOML file, its types, and how it is loaded.
//!
//! Loading is a pipeline of its own: TOML text -> table -> environment
//! overrides (`JETEDGE_<SECTION>__<KEY>`) -> typed structs -> `validate()`.
//! Every step reports problems with the key path they belong to, and the
//! later steps collect *all* problems, so `jetedge check` lists everything
//! wrong at once. Nothing here does network I/O; secrets are only read to
//! check that they resolve.

mod contract;
mod env;
mod parse;
mod secret;
mod subscription;
mod units;
mod validate;

pub use contract::{is_bucket_name, ContractsConfig, OnViolation, SchemaConfig};
pub use parse::nearest;
pub use secret::{redact_url, token_eq, Secret, SecretRef, Url};
pub use subscription::Deliver;
pub use units::{parse_size, ByteSize, HumanDuration};
pub use validate::is_name;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// One problem found in a config, with the key path it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Everything wrong with a config file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} problem(s) in the configuration",
            self.file.display(),
            self.problems.len()
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
pub struct Config {
    #[serde(default)]
    pub node: NodeConfig,
    #[serde(default)]
    pub ingress: IngressConfig,
    #[serde(default)]
    pub upstream: UpstreamConfig,
    /// The site's own nats-server; absent: no local NATS at all.
    pub local: Option<LocalConfig>,
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceConfig>,
    #[serde(default)]
    pub routing: RoutingConfig,
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    #[serde(default, rename = "redact")]
    pub redactions: Vec<RedactConfig>,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default, rename = "subscription")]
    pub subscriptions: Vec<SubscriptionConfig>,
    #[serde(default)]
    pub contracts: ContractsConfig,
    #[serde(default, rename = "schema")]
    pub schemas: Vec<SchemaConfig>,
    /// The file it was read from (`Config::load`), which a reload reads again.
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

/// `[admin]`: the operators' listener (metrics, status, DLQ).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct AdminConfig {
    /// Empty: no admin listener.
    pub listen: String,
    /// Bearer token every request must carry; without one the listener must
    /// be on a loopback address.
    pub token: Option<SecretRef>,
    /// Host names the admin API may be addressed by, besides IP addresses
    /// and `localhost` (a request for any other name is refused, which
    /// stops DNS-rebinding pages).
    pub hosts: Vec<String>,
    /// Serve HTTPS, as `[ingress] tls`.
    pub tls: Option<TlsConfig>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9090".into(),
            token: None,
            hosts: Vec::new(),
            tls: None,
        }
    }
}

/// `[[subscription]]`: upstream subjects pushed out to the site's microapps.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct SubscriptionConfig {
    pub name: String,
    /// Upstream subject filters (NATS wildcards allowed).
    pub subjects: Vec<String>,
    /// Where a new consumer starts: "new", "all" or "since:<RFC 3339 time
    /// or a duration back from now>". An existing consumer keeps its place.
    #[serde(default = "default_deliver")]
    pub deliver: String,
    /// Deliver events ingested at this site to the targets at once, even
    /// with upstream down, and skip them when they come back from upstream.
    #[serde(default)]
    pub local_first: bool,
    /// How long a local-first event's id is remembered, to recognise its
    /// copy from upstream; it must outlast the longest upstream outage.
    #[serde(default = "default_local_first_ttl")]
    pub local_first_ttl: HumanDuration,
    /// Messages being delivered at once (1 keeps upstream order).
    #[serde(default = "default_sub_in_flight")]
    pub max_in_flight: usize,
    /// Upstream redelivers a message not acked (or kept alive) for this long.
    #[serde(default = "default_ack_wait")]
    pub ack_wait: HumanDuration,
    /// Core NATS subject on the site's server.
    pub to_subject: Option<String>,
    /// A stream on the site's JetStream, for apps that need durability.
    pub to_stream: Option<StreamTarget>,
    /// A microapp's HTTP endpoint, signed per Standard Webhooks.
    pub to_webhook: Option<WebhookTarget>,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub breaker: BreakerConfig,
}

fn default_deliver() -> String {
    "new".into()
}
fn default_local_first_ttl() -> HumanDuration {
    HumanDuration::secs(7 * 24 * 3600)
}
fn default_sub_in_flight() -> usize {
    64
}
fn default_ack_wait() -> HumanDuration {
    HumanDuration::secs(30)
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct StreamTarget {
    /// Subject published on; a local stream must capture it.
    pub subject: String,
    /// When set, the publish is refused unless this stream takes it.
    pub stream: Option<String>,
    #[serde(default = "default_target_timeout")]
    pub timeout: HumanDuration,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct WebhookTarget {
    pub url: Url,
    /// Standard Webhooks key: a shared secret (`whsec_` + base64, signs
    /// `v1`) or an ed25519 private key (`whsk_` + base64, signs `v1a`).
    pub secret: SecretRef,
    /// More keys signing each request, during a rotation: the receiver
    /// accepts a request when any signature verifies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretRef>,
    #[serde(default = "default_target_timeout")]
    pub timeout: HumanDuration,
    /// https:// only: PEM CA certificate(s) to trust instead of the
    /// platform's roots.
    pub ca: Option<PathBuf>,
    /// https:// only: a client certificate chain and key (PEM) for a
    /// receiver that requires mTLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

fn default_target_timeout() -> HumanDuration {
    HumanDuration::secs(10)
}

/// Retries of one message: attempt n waits a random time up to
/// `min(max, initial * multiplier^(n-1))` (full jitter), or what a
/// `Retry-After` asks for.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct RetryConfig {
    pub initial: HumanDuration,
    pub max: HumanDuration,
    pub multiplier: f64,
    /// Attempts before the message goes to the dead-letter queue.
    pub max_attempts: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial: HumanDuration::millis(500),
            max: HumanDuration::secs(60),
            multiplier: 2.0,
            max_attempts: 10,
        }
    }
}

/// A target failing `failures` times in a row is left alone for
/// `cool_off`, then probed with one message.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct BreakerConfig {
    pub failures: u32,
    pub cool_off: HumanDuration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: 5,
            cool_off: HumanDuration::secs(30),
        }
    }
}

/// `[routing]`: what happens to an event no `[[route]]` matches.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(default)]
pub struct RoutingConfig {
    pub default_action: RouteAction,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RouteAction {
    #[default]
    Forward,
    Drop,
}

/// `[[route]]`: ordered, the first whose `match` holds decides.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct RouteConfig {
    /// A name for logs and metrics.
    pub name: Option<String>,
    /// A CloudEvents Subscriptions API filter (compiled in `pipeline::filter`);
    /// a rule without one matches every event.
    #[serde(rename = "match")]
    pub match_: Option<toml::Value>,
    pub action: RouteAction,
    /// Subject template for forwarded events, such as "{prefix}.{source}.{type}".
    pub subject: Option<String>,
}

/// `[[redact]]`: what to hide in which events (see `pipeline::redact`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct RedactConfig {
    /// Sources the rule applies to; all when empty.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Event types the rule applies to ("payment.*" is a prefix); all when empty.
    #[serde(default)]
    pub types: Vec<String>,
    /// JSON pointers under /data, `*` for every member or element.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Built-in detectors: email, payment_card, phone, ipv4, ipv6, iban, us_ssn.
    #[serde(default)]
    pub detectors: Vec<String>,
    /// Custom regular expressions, run like detectors (reported as "regex").
    #[serde(default)]
    pub patterns: Vec<String>,
    #[serde(default)]
    pub action: RedactAction,
    /// The HMAC key of `action = "hash"`.
    pub key: Option<SecretRef>,
    /// `mask`: characters (digits, for cards) left visible at the end;
    /// 4 for cards and 0 for the rest unless set.
    pub keep_last: Option<usize>,
    /// `mask`: keep an email's domain.
    #[serde(default = "yes")]
    pub keep_domain: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RedactAction {
    #[default]
    Mask,
    Remove,
    Hash,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct NodeConfig {
    /// Names this node in event sources (`/jetedge/{id}/{source}`) and in
    /// upstream connection names. Letters, digits, `-` and `_`.
    pub id: String,
    /// Where sled keeps the outbox and the idempotency keys.
    pub data_dir: PathBuf,
    /// Disk quota for events waiting to be forwarded; past it ingest answers 503.
    pub max_buffer: ByteSize,
    /// Free space kept on the data dir's filesystem: new events that would
    /// eat into it are answered 503 `disk_full`, while forwarding (which
    /// frees space) goes on. "0" turns the check off.
    pub disk_reserve: ByteSize,
    /// `true` (default): every acknowledged batch is fdatasync'd, so a power
    /// loss cannot take it. `false`: sled's flush only, which survives a crash
    /// of the process but not of the machine.
    pub fsync: bool,
    /// How long an idempotency key is remembered, for every source that
    /// does not set its own; unset: each scheme's default, which outlasts
    /// its senders' retries (see [`Scheme::retry_window`]).
    pub dedupe_ttl: Option<HumanDuration>,
    /// How long a graceful stop waits for in-flight requests and publishes.
    pub shutdown_timeout: HumanDuration,
    /// Seals every event the store writes (outbox, dead letters, parked
    /// events, local-first records): a reference to 32 bytes in base64.
    pub encryption_key: Option<SecretRef>,
    /// Keys that sealed older values, still opened while those drain; new
    /// values always use `encryption_key`.
    pub previous_keys: Vec<SecretRef>,
    /// How log lines are written to stderr.
    pub log_format: LogFormat,
}

/// `[node] log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines for people (colours on a terminal).
    #[default]
    Text,
    /// One JSON object per line, with the fields of the spans it is in
    /// (source, subscription, event id), for log shippers.
    Json,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            id: "jetedge".into(),
            data_dir: PathBuf::from("data"),
            max_buffer: ByteSize::gib(1),
            disk_reserve: ByteSize::mib(64),
            fsync: true,
            dedupe_ttl: None,
            shutdown_timeout: HumanDuration::secs(10),
            encryption_key: None,
            previous_keys: Vec::new(),
            log_format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct IngressConfig {
    pub listen: String,
    /// Largest request body accepted; larger ones get 413.
    pub max_body: ByteSize,
    /// Time allowed for a client to send the request head.
    pub header_timeout: HumanDuration,
    /// Time allowed for a client to send the whole body; slower ones get 408.
    pub body_timeout: HumanDuration,
    /// Concurrent connections; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Request bodies held in memory at once, across connections (each
    /// counted at its declared length, or `max_body` when it declares
    /// none). A request waits for room before its body is read, so ingest
    /// memory stays bounded whatever the number of connections.
    pub body_memory: ByteSize,
    /// Requests per second over every ingest route together; unlimited when absent.
    pub rate_limit: Option<RateLimitConfig>,
    /// Serve HTTPS (and require client certificates with `client_ca`).
    pub tls: Option<TlsConfig>,
    /// The source whose verification and name apply to `POST /v1/events`
    /// when the request does not name one with `?source=`.
    pub events_source: String,
}

impl Default for IngressConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            max_body: ByteSize::mib(1),
            header_timeout: HumanDuration::secs(10),
            body_timeout: HumanDuration::secs(30),
            max_connections: 1024,
            body_memory: ByteSize::mib(8),
            rate_limit: None,
            tls: None,
            events_source: "events".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct UpstreamConfig {
    pub servers: Vec<Url>,
    pub stream: String,
    pub subject_prefix: String,
    /// Create the stream (subjects `{prefix}.>`) when it does not exist.
    pub create_stream: bool,
    /// Replicas of a stream jetedge creates; 3 makes an upstream ack durable
    /// on a quorum (R1 acks mean "in the server's memory").
    pub replicas: usize,
    /// Duplicate window of a stream jetedge creates. It must outlast the time
    /// between the first publish of an event and its last retry.
    pub duplicate_window: HumanDuration,
    /// Publishes awaiting their PubAck at once.
    pub max_in_flight: usize,
    /// Payload bytes awaiting their PubAck at once: the most the
    /// congestion window may open to (it starts at 64 KiB and follows the
    /// link), and what bounds the forwarder's memory.
    pub max_in_flight_bytes: ByteSize,
    /// How long to wait for one PubAck before resending.
    pub ack_timeout: HumanDuration,
    pub token: Option<SecretRef>,
    pub user: Option<String>,
    pub password: Option<SecretRef>,
    pub creds: Option<PathBuf>,
    pub nkey: Option<SecretRef>,
    pub tls: Option<UpstreamTls>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            servers: vec!["nats://127.0.0.1:4222".into()],
            stream: "EDGE".into(),
            subject_prefix: "events".into(),
            create_stream: true,
            replicas: 1,
            duplicate_window: HumanDuration::secs(2 * 3600),
            max_in_flight: 1024,
            max_in_flight_bytes: ByteSize::mib(4),
            ack_timeout: HumanDuration::secs(5),
            token: None,
            user: None,
            password: None,
            creds: None,
            nkey: None,
            tls: None,
        }
    }
}

/// `[local]`: the site's nats-server, where microapps and kiosks live.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct LocalConfig {
    pub servers: Vec<Url>,
    /// Subject events are published on for ingest: `{prefix}.{source}[.…]`.
    pub ingest_subject: String,
    /// Queue group, so several jetedge processes on one site share the work.
    pub queue: String,
    /// Sources that may be published over local NATS (no signatures there:
    /// the site server's own auth is the boundary). Empty: every source
    /// with `verify = "none"`.
    pub sources: Vec<String>,
    /// Messages received but not yet taken that jetedge buffers; a
    /// publisher that outruns it by more loses the excess (counted in
    /// `jetedge_local_ingest_dropped_total`). Request/reply never does.
    pub max_pending: usize,
    pub token: Option<SecretRef>,
    pub user: Option<String>,
    pub password: Option<SecretRef>,
    pub creds: Option<PathBuf>,
    pub nkey: Option<SecretRef>,
    pub tls: Option<UpstreamTls>,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            servers: vec!["nats://127.0.0.1:4222".into()],
            ingest_subject: "ingest.>".into(),
            queue: "jetedge".into(),
            sources: Vec::new(),
            max_pending: 65_536,
            token: None,
            user: None,
            password: None,
            creds: None,
            nkey: None,
            tls: None,
        }
    }
}

/// Where and how to connect to a NATS server: upstream or local.
pub struct Endpoint<'a> {
    /// "upstream" or "local", for logs and errors.
    pub role: &'static str,
    pub servers: &'a [Url],
    pub token: Option<&'a SecretRef>,
    pub user: Option<&'a str>,
    pub password: Option<&'a SecretRef>,
    pub creds: Option<&'a Path>,
    pub nkey: Option<&'a SecretRef>,
    pub tls: Option<&'a UpstreamTls>,
}

/// `[upstream]` and `[local]` connect the same way.
macro_rules! endpoint_of {
    ($section:ty, $role:literal) => {
        impl $section {
            pub fn endpoint(&self) -> Endpoint<'_> {
                Endpoint {
                    role: $role,
                    servers: &self.servers,
                    token: self.token.as_ref(),
                    user: self.user.as_deref(),
                    password: self.password.as_ref(),
                    creds: self.creds.as_deref(),
                    nkey: self.nkey.as_ref(),
                    tls: self.tls.as_ref(),
                }
            }
        }
    };
}
endpoint_of!(UpstreamConfig, "upstream");
endpoint_of!(LocalConfig, "local");

impl LocalConfig {
    /// The literal subject prefix of `ingest_subject` ("ingest" for "ingest.>").
    pub fn ingest_prefix(&self) -> &str {
        self.ingest_subject
            .strip_suffix(".>")
            .unwrap_or(&self.ingest_subject)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct UpstreamTls {
    /// PEM file of the CA that signed the servers' certificates.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// How a source proves that a request came from it.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    StandardWebhooks,
    Github,
    Stripe,
    Shopify,
    Slack,
    HmacSha256,
    Bearer,
    Gitlab,
    Twilio,
    Paddle,
    Linear,
    Zoom,
    Square,
    Svix,
    None,
}

impl Scheme {
    /// Every scheme that authenticates a request (all but `none`).
    pub const VERIFYING: [Scheme; 14] = [
        Scheme::StandardWebhooks,
        Scheme::Github,
        Scheme::Stripe,
        Scheme::Shopify,
        Scheme::Slack,
        Scheme::HmacSha256,
        Scheme::Bearer,
        Scheme::Gitlab,
        Scheme::Twilio,
        Scheme::Paddle,
        Scheme::Linear,
        Scheme::Zoom,
        Scheme::Square,
        Scheme::Svix,
    ];

    pub fn has_timestamp(self) -> bool {
        matches!(
            self,
            Self::StandardWebhooks
                | Self::Stripe
                | Self::Slack
                | Self::Paddle
                | Self::Linear
                | Self::Zoom
                | Self::Svix
        )
    }

    /// Schemes whose signature covers the URL the sender called (the
    /// source's `url`).
    pub fn signs_url(self) -> bool {
        matches!(self, Self::Twilio | Self::Square)
    }

    /// How long this scheme's senders keep retrying (or redelivering) one
    /// event: a dedupe TTL shorter than this takes a late retry as new.
    /// Stripe and Paddle retry for up to 3 days; GitHub lets a delivery be
    /// redelivered for 3 days; Shopify retries for 48 hours; Svix-style
    /// Standard Webhooks senders for about 28 hours; Slack for an hour.
    /// Generic schemes get a day.
    pub fn retry_window(self) -> std::time::Duration {
        const H: u64 = 3600;
        std::time::Duration::from_secs(match self {
            Self::Stripe | Self::Github | Self::Paddle => 72 * H,
            Self::Shopify => 48 * H,
            Self::StandardWebhooks | Self::Svix => 28 * H,
            Self::Slack => H,
            Self::HmacSha256
            | Self::Bearer
            | Self::Gitlab
            | Self::Twilio
            | Self::Linear
            | Self::Zoom
            | Self::Square
            | Self::None => 24 * H,
        })
    }

    /// The dedupe TTL a source of this scheme gets unless configured: its
    /// senders' retry window plus a day of margin.
    pub fn default_dedupe_ttl(self) -> std::time::Duration {
        self.retry_window() + std::time::Duration::from_secs(24 * 3600)
    }

    /// Schemes that sign the body but no timestamp, and take the event id
    /// from an unsigned header: a captured request could be replayed with
    /// a fresh id, so the body's digest is a dedupe key as well.
    pub fn dedupes_by_body(self) -> bool {
        matches!(self, Self::Github | Self::Shopify | Self::HmacSha256)
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Hex,
    Base64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct SourceConfig {
    pub name: String,
    pub verify: Scheme,
    #[serde(default)]
    pub secrets: Vec<SecretRef>,
    #[serde(default = "default_tolerance")]
    pub tolerance: HumanDuration,
    /// `hmac-sha256` only: the header carrying the signature.
    pub header: Option<String>,
    /// `hmac-sha256` only: how the signature is written.
    pub encoding: Option<Encoding>,
    /// `hmac-sha256` only: a prefix before the signature, such as `sha256=`.
    pub prefix: Option<String>,
    /// `twilio` and `square`: the URL the sender calls, exactly as
    /// registered with it (their signatures cover it; behind a proxy the
    /// node cannot know it).
    pub url: Option<String>,
    /// Where the sender's event id is (the idempotency key).
    pub id: Option<String>,
    /// Where the event type is.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// Where the event time is (RFC 3339 text or Unix seconds); reception
    /// time when absent.
    pub time: Option<String>,
    /// How long this source's idempotency keys are remembered; default:
    /// `[node] dedupe_ttl`, else the scheme's (its senders' retry window
    /// plus a day).
    pub dedupe_ttl: Option<HumanDuration>,
    /// Allow `verify = "none"` although the ingress listens beyond loopback.
    #[serde(default)]
    pub allow_unauthenticated: bool,
    /// Request headers copied into the event, as extensions named after
    /// them (lowercase letters and digits only: "x-shop-domain" becomes
    /// "xshopdomain"). No other header is ever copied.
    #[serde(default)]
    pub headers: Vec<String>,
    /// Requests (HTTP) or messages (NATS) per second this source takes;
    /// unlimited when absent.
    pub rate_limit: Option<RateLimitConfig>,
    /// Under mTLS (`[ingress] tls.client_ca`): the client certificates
    /// (subject CN or DNS SAN) allowed to post to this source over HTTP;
    /// any client of the CA when empty.
    #[serde(default)]
    pub client_identities: Vec<String>,
}

impl SourceConfig {
    /// A source with every option at its default.
    pub fn new(name: &str, verify: Scheme) -> Self {
        Self {
            name: name.into(),
            verify,
            secrets: Vec::new(),
            tolerance: default_tolerance(),
            header: None,
            encoding: None,
            prefix: None,
            url: None,
            id: None,
            type_: None,
            time: None,
            dedupe_ttl: None,
            allow_unauthenticated: false,
            headers: Vec::new(),
            rate_limit: None,
            client_identities: Vec::new(),
        }
    }
}

/// A listener's TLS: PEM files of the certificate chain and its key (RSA
/// or ECDSA), and of the CAs a client certificate must chain to (mTLS).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// A token bucket: `per_second` tokens come back each second, up to
/// `burst` (default: one second's worth) at once. Over it, 429.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub per_second: f64,
    pub burst: Option<u32>,
}

impl RateLimitConfig {
    pub fn burst(&self) -> u32 {
        self.burst
            .unwrap_or_else(|| self.per_second.ceil().clamp(1.0, u32::MAX as f64) as u32)
    }
}

fn default_tolerance() -> HumanDuration {
    HumanDuration::secs(300)
}

impl Config {
    /// How long a source's idempotency keys are remembered.
    pub fn dedupe_ttl(&self, s: &SourceConfig) -> std::time::Duration {
        s.dedupe_ttl
            .or(self.node.dedupe_ttl)
            .map_or_else(|| s.verify.default_dedupe_ttl(), |d| d.0)
    }

    /// Reads, overrides from the environment, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let mut cfg = Self::read(path, |text| Self::from_toml(text, std::env::vars()))?;
        cfg.path = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// Reads, overrides and parses a config file without validating it:
    /// what the commands that only talk to a running node's admin API
    /// need. They resolve the admin token and nothing else, so they work
    /// in a shell that has none of the service's secrets.
    pub fn load_for_admin(path: &Path) -> Result<Config, ConfigError> {
        Self::read(path, |text| {
            let mut table = parse_text(text)?;
            env::apply_overrides(&mut table, std::env::vars())?;
            match parse::parse(table) {
                (config, problems) if problems.is_empty() => Ok(config),
                (_, problems) => Err(problems),
            }
        })
    }

    /// The config as the node runs it (every default filled in, the
    /// environment's overrides applied) as TOML, for `jetedge check
    /// --print`. Secrets are shown as the references they are; a URL's
    /// password or token as `***`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot be shown as TOML: {e}\n"))
    }

    fn read(
        path: &Path,
        parse: impl FnOnce(&str) -> Result<Config, Vec<Problem>>,
    ) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError {
            file: path.to_path_buf(),
            problems,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            fail(vec![Problem {
                path: String::new(),
                message: format!("cannot read the file: {e}"),
            }])
        })?;
        parse(&text).map_err(fail)
    }

    /// Parses config text with the given environment (for overrides), and validates it.
    pub fn from_toml(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, Vec<Problem>> {
        let mut table = parse_text(text)?;
        env::apply_overrides(&mut table, env)?;
        // Values of the wrong type, unknown keys and what the values mean
        // are reported together: one run finds every mistake.
        let (config, mut problems) = parse::parse(table);
        problems.extend(config.validate());
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }
}

fn parse_text(text: &str) -> Result<toml::Table, Vec<Problem>> {
    toml::from_str(text).map_err(|e| {
        vec![Problem {
            path: String::new(),
            message: format!("not valid TOML: {}", e.to_string().trim()),
        }]
    })
}
