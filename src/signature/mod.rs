//! Webhook signatures, one file per scheme: verification for ingress,
//! signing for egress's webhook targets and for `jetedge send`. Each scheme
//! is a pure function of (headers, raw body, now): no I/O, no HTTP server
//! types beyond the header map, so each is unit-tested with published
//! vectors.
//!
//! Invariants: signatures are compared in constant time; the signature is
//! checked before the timestamp, so an unauthenticated caller learns nothing
//! from a 422; several secrets may be active at once for rotation.

mod bearer;
mod github;
mod gitlab;
mod hmac_header;
mod linear;
mod paddle;
mod shopify;
mod sign;
mod slack;
mod square;
mod standard;
mod stripe;
mod twilio;
mod zoom;

pub use standard::{
    decode_secret as decode_standard_secret, signature as standard_signature, SigningKey,
};

use crate::config::{Encoding, Scheme, Secret, SourceConfig};
use hmac::{Hmac, Mac};
use hyper::HeaderMap;
use sha2::Sha256;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// Why a request did not authenticate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing header {0}")]
    Missing(String),
    #[error("malformed {0}")]
    Malformed(String),
    #[error("signature does not match")]
    Mismatch,
    #[error("timestamp is {skew_secs}s away from now, outside the tolerance of {tolerance_secs}s")]
    Stale { skew_secs: i64, tolerance_secs: u64 },
}

/// A source's verification, with its secrets decoded once at start.
#[derive(Clone)]
pub struct Verifier {
    scheme: Scheme,
    keys: Vec<Vec<u8>>,
    /// Standard Webhooks and Svix: `whpk_` ed25519 public keys (`v1a`).
    public_keys: Vec<Vec<u8>>,
    /// Twilio and Square: the URL they sign.
    url: String,
    tolerance: Duration,
    header: String,
    encoding: Encoding,
    prefix: String,
}

/// Shows everything but the keys.
impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("scheme", &self.scheme)
            .field("keys", &format_args!("[{} × ***]", self.keys.len()))
            .field("public_keys", &self.public_keys.len())
            .field("url", &self.url)
            .field("tolerance", &self.tolerance)
            .field("header", &self.header)
            .field("encoding", &self.encoding)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Verifier {
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Builds a verifier from a source's config and its resolved secrets.
    pub fn new(source: &SourceConfig, secrets: &[Secret]) -> Result<Self, String> {
        let standard = matches!(source.verify, Scheme::StandardWebhooks | Scheme::Svix);
        let (public, shared): (Vec<&Secret>, Vec<&Secret>) = secrets
            .iter()
            .partition(|s| standard && s.expose().starts_with("whpk_"));
        let keys = shared
            .iter()
            .map(|s| match standard {
                true => standard::decode_secret(s.expose()),
                false => Ok(s.expose().as_bytes().to_vec()),
            })
            .collect::<Result<_, _>>()?;
        let public_keys = public
            .iter()
            .map(|s| standard::decode_public_key(s.expose()))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            scheme: source.verify,
            keys,
            public_keys,
            url: source.url.clone().unwrap_or_default(),
            tolerance: source.tolerance.0,
            header: source.header.clone().unwrap_or_default(),
            encoding: source.encoding.unwrap_or_default(),
            prefix: source.prefix.clone().unwrap_or_default(),
        })
    }

    /// Checks a request; `now` is Unix seconds.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), VerifyError> {
        let tol = self.tolerance;
        match self.scheme {
            Scheme::StandardWebhooks | Scheme::Svix => {
                let keys = standard::Keys {
                    secrets: &self.keys,
                    public: &self.public_keys,
                };
                let prefix = match self.scheme {
                    Scheme::Svix => "svix",
                    _ => "webhook",
                };
                standard::verify(keys, prefix, headers, body, now, tol)
            }
            Scheme::Github => github::verify(&self.keys, headers, body),
            Scheme::Stripe => stripe::verify(&self.keys, headers, body, now, tol),
            Scheme::Shopify => shopify::verify(&self.keys, headers, body),
            Scheme::Slack => slack::verify(&self.keys, headers, body, now, tol),
            Scheme::HmacSha256 => hmac_header::verify(
                &self.keys,
                headers,
                body,
                &self.header,
                &self.prefix,
                self.encoding,
            ),
            Scheme::Bearer => bearer::verify(&self.keys, headers),
            Scheme::Gitlab => gitlab::verify(&self.keys, headers),
            Scheme::Twilio => twilio::verify(&self.keys, &self.url, headers, body),
            Scheme::Paddle => paddle::verify(&self.keys, headers, body, now, tol),
            Scheme::Linear => linear::verify(&self.keys, headers, body, now, tol),
            Scheme::Zoom => zoom::verify(&self.keys, headers, body, now, tol),
            Scheme::Square => square::verify(&self.keys, &self.url, headers, body),
            Scheme::None => Ok(()),
        }
    }

    /// Zoom's URL validation (`endpoint.url_validation`, signed like any
    /// event): the answer Zoom expects, for a Zoom source's verified body.
    pub fn zoom_challenge(&self, body: &serde_json::Value) -> Option<serde_json::Value> {
        let is_validation = body.get("event")? == "endpoint.url_validation";
        let plain = body.pointer("/payload/plainToken")?.as_str()?;
        let key = self.keys.first()?;
        (self.scheme == Scheme::Zoom && is_validation).then(|| zoom::challenge(key, plain))
    }
}

/// The header a scheme's signature travels in and how it is made, for
/// documents that describe a source (AsyncAPI); `None` for no signature
/// header (`none`, and `bearer`, which AsyncAPI describes as HTTP bearer).
/// `header` is `hmac-sha256`'s configured one.
pub fn describe(scheme: Scheme, header: Option<&str>) -> Option<(String, String)> {
    let (name, how) = match scheme {
        Scheme::StandardWebhooks => (
            "webhook-signature",
            "Standard Webhooks: v1,base64(HMAC-SHA256(secret, id.timestamp.body)) or v1a (ed25519) with webhook-id and webhook-timestamp.",
        ),
        Scheme::Github => ("X-Hub-Signature-256", "GitHub: sha256=hex(HMAC-SHA256(secret, body))."),
        Scheme::Stripe => (
            "Stripe-Signature",
            "Stripe: t=timestamp,v1=hex(HMAC-SHA256(secret, timestamp.body)).",
        ),
        Scheme::Shopify => ("X-Shopify-Hmac-Sha256", "Shopify: base64(HMAC-SHA256(secret, body))."),
        Scheme::Slack => (
            "X-Slack-Signature",
            "Slack: v0=hex(HMAC-SHA256(secret, v0:timestamp:body)) with X-Slack-Request-Timestamp.",
        ),
        Scheme::HmacSha256 => (header?, "HMAC-SHA256 of the body under a shared secret."),
        Scheme::Svix => ("svix-signature", "Svix (Standard Webhooks under svix-* headers): v1 HMAC-SHA256 or v1a ed25519."),
        Scheme::Gitlab => ("X-Gitlab-Token", "GitLab: the webhook's secret token itself."),
        Scheme::Twilio => (
            "X-Twilio-Signature",
            "Twilio: base64(HMAC-SHA1(auth token, URL + sorted form parameters)).",
        ),
        Scheme::Paddle => ("Paddle-Signature", "Paddle: ts=timestamp;h1=hex(HMAC-SHA256(secret, ts:body))."),
        Scheme::Linear => ("Linear-Signature", "Linear: hex(HMAC-SHA256(secret, body)), webhookTimestamp in the body."),
        Scheme::Zoom => ("x-zm-signature", "Zoom: v0=hex(HMAC-SHA256(secret, v0:timestamp:body)) with x-zm-request-timestamp."),
        Scheme::Square => (
            "x-square-hmacsha256-signature",
            "Square: base64(HMAC-SHA256(signature key, notification URL + body)).",
        ),
        // A bearer token is an HTTP authentication scheme, not a signature header.
        Scheme::Bearer | Scheme::None => return None,
    };
    Some((name.to_string(), how.to_string()))
}

/// HMAC-SHA256 over the concatenation of `parts`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// `Ok` when the HMAC of `parts` under any active key equals any of the
/// candidate signatures; every comparison runs, in constant time.
fn any_matches(
    keys: &[Vec<u8>],
    parts: &[&[u8]],
    candidates: &[Vec<u8>],
) -> Result<(), VerifyError> {
    let matched = keys.iter().fold(false, |ok, key| {
        mac_matches(&hmac_sha256(key, parts), candidates) | ok
    });
    match matched {
        true => Ok(()),
        false => Err(VerifyError::Mismatch),
    }
}

/// `Ok` when `token` equals any key; every key is compared, in constant
/// time, so the time does not tell which one matched (bearer, GitLab).
fn any_token(keys: &[Vec<u8>], token: &[u8]) -> Result<(), VerifyError> {
    let matched = keys
        .iter()
        .fold(false, |ok, key| crate::config::token_eq(token, key) | ok);
    match matched {
        true => Ok(()),
        false => Err(VerifyError::Mismatch),
    }
}

/// `Ok` when any candidate equals `mac`, compared in constant time.
fn mac_matches(mac: &[u8], candidates: &[Vec<u8>]) -> bool {
    let mut ok = subtle::Choice::from(0);
    for c in candidates {
        ok |= mac.ct_eq(c.as_slice());
    }
    bool::from(ok)
}

/// A header listing a timestamp and hex signatures of `{ts}{joiner}{body}`:
/// Stripe's `Stripe-Signature: t=…,v1=…,v1=…` and Paddle's
/// `Paddle-Signature: ts=…;h1=…` (several signatures during a rotation).
struct ListedHeader {
    /// As the senders' documentation spells it (header lookups ignore case).
    name: &'static str,
    sep: char,
    ts_key: &'static str,
    sig_key: &'static str,
    joiner: &'static [u8],
}

fn verify_listed(
    spec: &ListedHeader,
    keys: &[Vec<u8>],
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let (name, ts_key, sig_key) = (spec.name, spec.ts_key, spec.sig_key);
    let value = header(headers, &name.to_ascii_lowercase())?;
    let mut ts = None;
    let mut sigs = Vec::new();
    for item in value.split(spec.sep) {
        match item.trim().split_once('=') {
            Some((k, t)) if k == ts_key => ts = Some(t),
            Some((k, sig)) if k == sig_key => {
                sigs.push(decode_hex(sig, &format!("{name} {sig_key}"))?)
            }
            _ => {} // other schemes and versions are ignored, as the senders' libraries do
        }
    }
    let ts_text = ts.ok_or_else(|| VerifyError::Malformed(format!("{name} (no {ts_key}=)")))?;
    let ts = parse_timestamp(ts_text, &format!("{name} {ts_key}"))?;
    if sigs.is_empty() {
        return Err(VerifyError::Malformed(format!("{name} (no {sig_key}=)")));
    }
    any_matches(keys, &[ts_text.as_bytes(), spec.joiner, body], &sigs)?;
    check_tolerance(ts, now, tolerance)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, VerifyError> {
    headers
        .get(name)
        .ok_or_else(|| VerifyError::Missing(name.to_string()))?
        .to_str()
        .map_err(|_| VerifyError::Malformed(name.to_string()))
}

fn parse_timestamp(s: &str, name: &str) -> Result<i64, VerifyError> {
    s.trim()
        .parse()
        .map_err(|_| VerifyError::Malformed(format!("{name} (expected Unix seconds)")))
}

fn check_tolerance(ts: i64, now: i64, tolerance: Duration) -> Result<(), VerifyError> {
    let skew = now.saturating_sub(ts);
    if skew.unsigned_abs() > tolerance.as_secs() {
        return Err(VerifyError::Stale {
            skew_secs: skew,
            tolerance_secs: tolerance.as_secs(),
        });
    }
    Ok(())
}

fn decode_hex(s: &str, what: &str) -> Result<Vec<u8>, VerifyError> {
    hex::decode(s.trim()).map_err(|_| VerifyError::Malformed(format!("{what} (expected hex)")))
}

fn decode_b64(s: &str, what: &str) -> Result<Vec<u8>, VerifyError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|_| VerifyError::Malformed(format!("{what} (expected base64)")))
}

#[cfg(test)]
pub(crate) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    h
}
