//! The places a subscription delivers to, and what "took it" means for each:
//! - `subject`: the publish was written to the site's server (the client's
//!   buffer flushed while connected). Core NATS has no acknowledgement:
//!   the upstream message is then acked, so delivery to core subscribers
//!   is at most once (a subscriber that is down, slow or reconnecting
//!   misses it). Apps that must not miss an event use `stream`;
//! - `stream`: the site's JetStream acknowledged it (`Nats-Msg-Id` = event
//!   id, so a repeat is stored once);
//! - `webhook`: the microapp answered 2xx to a POST signed per Standard
//!   Webhooks (`webhook-id` = event id, so it can dedupe; an id that is no
//!   header text becomes a digest of it, see [`webhook_id`]).

use super::breaker::Breaker;
use crate::config::{StreamTarget, SubscriptionConfig, WebhookTarget};
use crate::store::Record;
use crate::tls::HttpClient;
use crate::upstream::LinkState;
use async_nats::{jetstream, HeaderMap};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::watch;

/// Why a target did not take a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    /// What the target asked for with `Retry-After`.
    pub retry_after: Option<Duration>,
}

impl Failure {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry_after: None,
        }
    }
}

/// The site's NATS server, as the subject and stream targets use it.
#[derive(Clone)]
pub struct Site {
    pub client: async_nats::Client,
    pub link: watch::Receiver<LinkState>,
}

struct LocalStream {
    site: Site,
    js: jetstream::Context,
    cfg: StreamTarget,
}

enum Kind {
    Subject { site: Site, subject: String },
    Stream(Box<LocalStream>),
    Webhook(Webhook),
}

pub struct Target {
    /// "subject", "stream" or "webhook".
    pub name: &'static str,
    kind: Kind,
    pub breaker: Breaker,
}

impl Target {
    /// The targets of a subscription, in delivery order.
    pub fn all(
        cfg: &SubscriptionConfig,
        site: Option<&Site>,
        http: &HttpClient,
    ) -> Result<Vec<Target>, String> {
        let mut out = Vec::new();
        let target = |name, kind| Target {
            name,
            kind,
            breaker: Breaker::new(&cfg.breaker),
        };
        let need_site = || {
            site.cloned()
                .ok_or_else(|| format!("subscription {:?} needs [local]", cfg.name))
        };
        if let Some(subject) = &cfg.to_subject {
            let site = need_site()?;
            let subject = subject.clone();
            out.push(target("subject", Kind::Subject { site, subject }));
        }
        if let Some(s) = &cfg.to_stream {
            let site = need_site()?;
            let js = jetstream::new(site.client.clone());
            let cfg = s.clone();
            let stream = Box::new(LocalStream { site, js, cfg });
            out.push(target("stream", Kind::Stream(stream)));
        }
        if let Some(w) = &cfg.to_webhook {
            let hook = Webhook::new(w, http.clone())
                .map_err(|e| format!("subscription {:?}: {e}", cfg.name))?;
            out.push(target("webhook", Kind::Webhook(hook)));
        }
        Ok(out)
    }

    pub async fn send(&self, r: &Record) -> Result<(), Failure> {
        match &self.kind {
            Kind::Subject { site, subject } => {
                connected(site)?;
                site.client
                    .publish_with_headers(
                        subject.clone(),
                        nats_headers(r),
                        r.payload.clone().into(),
                    )
                    .await
                    .map_err(|e| Failure::new(format!("publish to {subject}: {e}")))?;
                tokio::time::timeout(Duration::from_secs(5), site.client.flush())
                    .await
                    .map_err(|_| {
                        Failure::new("the site's NATS server did not take the publish in 5s")
                    })?
                    .map_err(|e| Failure::new(format!("flush to the site's NATS server: {e}")))
            }
            Kind::Stream(stream) => {
                let LocalStream { site, js, cfg } = stream.as_ref();
                connected(site)?;
                let mut headers = nats_headers(r);
                if let Some(stream) = &cfg.stream {
                    headers.insert("Nats-Expected-Stream", stream.as_str());
                }
                let publish = async {
                    js.publish_with_headers(cfg.subject.clone(), headers, r.payload.clone().into())
                        .await?
                        .await
                };
                match tokio::time::timeout(cfg.timeout.0, publish).await {
                    Ok(Ok(_ack)) => Ok(()),
                    Ok(Err(e)) => Err(Failure::new(format!(
                        "local JetStream on {}: {e}",
                        cfg.subject
                    ))),
                    Err(_) => Err(Failure::new(format!(
                        "local JetStream did not acknowledge within {:?}",
                        cfg.timeout.0
                    ))),
                }
            }
            Kind::Webhook(w) => w.post(r).await,
        }
    }
}

fn connected(site: &Site) -> Result<(), Failure> {
    match *site.link.borrow() {
        LinkState::Connected => Ok(()),
        _ => Err(Failure::new("the site's NATS server is unreachable")),
    }
}

/// The same headers upstream messages carry.
pub fn nats_headers(r: &Record) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", r.id.as_str());
    h.insert("content-type", "application/cloudevents+json");
    for (name, value) in [
        ("ce-type", &r.type_),
        ("ce-source", &r.source),
        ("traceparent", &r.traceparent),
    ] {
        if !value.is_empty() {
            h.insert(name, value.as_str());
        }
    }
    h
}

/// A microapp's endpoint and its signing key.
struct Webhook {
    uri: Uri,
    /// The URL as logs, dead letters and the admin API show it.
    shown: String,
    /// Every key signs each request (`v1` HMAC, `v1a` ed25519).
    keys: Vec<crate::signature::SigningKey>,
    timeout: Duration,
    client: HttpClient,
}

/// Bytes of an error answer kept for the dead letter's last error.
const ERROR_SNIPPET: usize = 200;

impl Webhook {
    fn new(cfg: &WebhookTarget, plain: HttpClient) -> Result<Self, String> {
        let keys = std::iter::once(&cfg.secret)
            .chain(&cfg.secrets)
            .map(|r| crate::signature::SigningKey::decode(r.resolve()?.expose()))
            .collect::<Result<_, _>>()?;
        let client = match cfg.url.starts_with("https://") {
            true => crate::tls::http_client(
                crate::tls::webhook(cfg).map_err(|e| format!("to_webhook: {e}"))?,
            ),
            false => plain,
        };
        Ok(Self {
            shown: crate::config::redact_url(&cfg.url),
            uri: cfg
                .url
                .parse()
                .map_err(|e| format!("to_webhook.url: {e}"))?,
            keys,
            timeout: cfg.timeout.0,
            client,
        })
    }

    async fn post(&self, r: &Record) -> Result<(), Failure> {
        let ts = OffsetDateTime::now_utc().unix_timestamp().to_string();
        let id = webhook_id(&r.id);
        let sig = crate::signature::SigningKey::sign_all(&self.keys, &id, &ts, &r.payload);
        let req = Request::post(self.uri.clone())
            .header(CONTENT_TYPE, "application/cloudevents+json")
            .header(USER_AGENT, concat!("jetedge/", env!("CARGO_PKG_VERSION")))
            .header("webhook-id", id.as_ref())
            .header("webhook-timestamp", ts)
            .header("webhook-signature", sig)
            .body(Full::new(Bytes::from(r.payload.clone())))
            .map_err(|e| Failure::new(format!("cannot build the request: {e}")))?;
        let exchange = async {
            let resp =
                self.client.request(req).await.map_err(|e| {
                    Failure::new(format!("POST {}: {}", self.shown, error_chain(&e)))
                })?;
            let status = resp.status();
            let retry_after = retry_after(resp.headers().get(RETRY_AFTER), status);
            // Read the answer so the connection can be reused.
            let body = Limited::new(resp.into_body(), 64 << 10).collect().await;
            if status.is_success() {
                return Ok(());
            }
            let text = body.map(|b| b.to_bytes()).unwrap_or_default();
            let snippet = String::from_utf8_lossy(&text[..text.len().min(ERROR_SNIPPET)]);
            Err(Failure {
                message: format!("POST {} answered {status}: {}", self.shown, snippet.trim()),
                retry_after,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(Failure::new(format!(
                "POST {} got no answer within {:?}",
                self.shown, self.timeout
            ))),
        }
    }
}

/// A client error and its causes, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// `Retry-After` of a 429 or 503: seconds, or an HTTP date.
fn retry_after(value: Option<&HeaderValue>, status: StatusCode) -> Option<Duration> {
    if !matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        return None;
    }
    let text = value?.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc2822).ok()?;
    let wait = when - OffsetDateTime::now_utc();
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// The `webhook-id` of an event: its id, unless that is no plain header
/// text (an upstream message's id comes from whoever published it, and may
/// hold spaces, control or non-ASCII characters, which a request cannot
/// carry or a receiver's verifier cannot read); then `jetedge-` and the
/// SHA-256 of the id, the same for every attempt, so receivers still
/// dedupe on it.
fn webhook_id(id: &str) -> std::borrow::Cow<'_, str> {
    let plain = !id.is_empty() && id.len() <= 256 && id.bytes().all(|b| b.is_ascii_graphic());
    if plain {
        return id.into();
    }
    use sha2::Digest;
    format!(
        "jetedge-{}",
        hex::encode(sha2::Sha256::digest(id.as_bytes()))
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_that_is_no_header_text_becomes_a_stable_digest() {
        let uuid = "0193a1b2-0000-7000-8000-000000000001";
        assert_eq!(webhook_id(uuid), uuid);
        for odd in ["order 1", "order\n1", "bestellung-ü", ""] {
            let id = webhook_id(odd);
            assert!(id.starts_with("jetedge-") && id.len() == 8 + 64, "{id}");
            assert!(HeaderValue::from_str(&id).is_ok());
            assert_eq!(webhook_id(odd), id, "the same id every attempt");
        }
        assert_ne!(webhook_id("a b"), webhook_id("a  b"));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_on_429_and_503_only() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        let busy = StatusCode::TOO_MANY_REQUESTS;
        assert_eq!(
            retry_after(Some(&v("7")), busy),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after(Some(&v(" 3 ")), StatusCode::SERVICE_UNAVAILABLE),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after(Some(&v("7")), StatusCode::INTERNAL_SERVER_ERROR),
            None
        );
        assert_eq!(retry_after(None, busy), None);
        assert_eq!(retry_after(Some(&v("soon")), busy), None);
        let later = OffsetDateTime::now_utc() + Duration::from_secs(120);
        let date = later
            .format(&time::format_description::well_known::Rfc2822)
            .unwrap()
            .replace("+0000", "GMT");
        let d = retry_after(Some(&v(&date)), busy).expect("an HTTP date");
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        let past = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(retry_after(Some(&v(past)), busy), Some(Duration::ZERO));
    }
}
