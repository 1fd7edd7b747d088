//! The ingest pipeline: turn what a sender posted into the canonical
//! envelope and its upstream subject (this file), decide whether it leaves
//! the site (`filter.rs`) and hide personal data (`redact.rs`, with
//! `detect.rs`). Pure: it works on parsed JSON and header values, and never
//! touches disk or network. (Dedupe happens in the store, where it can be
//! atomic with the write.)

pub mod detect;
pub mod filter;
mod place;
pub mod redact;

pub use filter::Decision;
pub use place::Place;

use crate::config::{Config, Problem};

/// Routing and redaction, compiled once from the config.
#[derive(Debug, Clone)]
pub struct Rules {
    pub router: filter::Router,
    pub redactor: redact::Redactor,
    prefix: String,
}

impl Rules {
    /// Compiles `[[route]]` and `[[redact]]`, resolving hash keys; every
    /// problem comes with its key path.
    pub fn compile(cfg: &Config) -> Result<Rules, Vec<Problem>> {
        let mut problems = Vec::new();
        let router = filter::Router::compile(&cfg.routes, cfg.routing.default_action)
            .map_err(|p| problems.extend(p))
            .ok();
        let keys: Vec<Option<Vec<u8>>> = cfg
            .redactions
            .iter()
            .enumerate()
            .map(|(i, r)| match r.key.as_ref().map(|k| k.resolve()) {
                Some(Ok(secret)) => Some(secret.expose().as_bytes().to_vec()),
                Some(Err(e)) => {
                    problems.push(Problem {
                        path: format!("redact[{i}].key"),
                        message: e,
                    });
                    None
                }
                None => None,
            })
            .collect();
        let redactor = redact::Redactor::compile(&cfg.redactions, &keys)
            .map_err(|p| problems.extend(p))
            .ok();
        match (router, redactor) {
            (Some(router), Some(redactor)) if problems.is_empty() => Ok(Rules {
                router,
                redactor,
                prefix: cfg.upstream.subject_prefix.clone(),
            }),
            _ => Err(problems),
        }
    }

    /// Routes an event of `source`, then redacts it if it is forwarded.
    /// `counts` gains the values redacted, by `redact::COUNTED`.
    pub fn apply(
        &self,
        source: &str,
        n: &mut Normalised,
        counts: &mut [u64; redact::COUNTED.len()],
    ) -> Decision {
        let view = filter::EventView {
            envelope: &n.envelope,
            subject: &n.subject,
        };
        let decision = self.router.decide(&view, &self.prefix, source);
        if let Decision::Forward(subject) = &decision {
            if let Some(s) = subject {
                n.subject = s.clone();
            }
            self.redactor.apply(source, &mut n.envelope, counts);
        }
        decision
    }

    /// Redacts an event that no route decides about (a quarantined one).
    pub fn redact(
        &self,
        source: &str,
        n: &mut Normalised,
        counts: &mut [u64; redact::COUNTED.len()],
    ) {
        self.redactor.apply(source, &mut n.envelope, counts);
    }
}

use crate::config::{Scheme, SourceConfig};
use crate::envelope::{self, Envelope};
use hyper::HeaderMap;
use serde_json::{Map, Value};
use time::OffsetDateTime;

/// Why an event cannot be accepted as posted (all answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("no event type found at {0}")]
    MissingType(String),
    #[error(transparent)]
    UnsafeType(#[from] envelope::UnsafeType),
    #[error("event time {0} is neither RFC 3339 nor Unix seconds")]
    BadTime(String),
    #[error("not a CloudEvents 1.0 event: {0}")]
    CloudEvent(String),
}

impl Invalid {
    /// The machine-readable code in the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Json(_) => "malformed_json",
            Self::MissingType(_) | Self::CloudEvent(_) | Self::BadTime(_) => "invalid_event",
            Self::UnsafeType(_) => "invalid_type",
        }
    }
}

/// An event ready for the store: its envelope, where it goes upstream, and
/// the keys that make a repeat of it a duplicate.
#[derive(Debug, Clone)]
pub struct Normalised {
    pub envelope: Envelope,
    pub subject: String,
    /// Dedupe keys, unique within the source: the sender's event id (for a
    /// CloudEvent, its `source` and `id` together, which is what
    /// CloudEvents makes unique), and for schemes that sign no timestamp
    /// the digest of the signed body ([`SourceShape::body_key`]).
    pub keys: Vec<String>,
}

/// How one source's requests become envelopes; built once at start.
#[derive(Debug, Clone)]
pub struct SourceShape {
    pub name: String,
    ce_source: String,
    prefix: String,
    id: Option<Place>,
    type_: Place,
    time: Option<Place>,
    /// Allow-listed request headers and the extension each becomes.
    headers: Vec<(String, String)>,
    by_body: bool,
}

impl SourceShape {
    pub fn new(node: &str, prefix: &str, cfg: &SourceConfig) -> Result<Self, String> {
        let (d_id, d_type, d_time) = defaults(cfg.verify);
        let parse =
            |set: &Option<String>, default: Option<&str>| -> Result<Option<Place>, String> {
                set.as_deref().or(default).map(Place::parse).transpose()
            };
        Ok(Self {
            name: cfg.name.clone(),
            ce_source: envelope::event_source(node, &cfg.name),
            prefix: prefix.to_string(),
            id: parse(&cfg.id, d_id)?,
            type_: parse(&cfg.type_, Some(d_type))?.expect("a type place always has a default"),
            time: parse(&cfg.time, d_time)?,
            headers: cfg
                .headers
                .iter()
                .map(|h| (h.to_ascii_lowercase(), header_extension(h)))
                .collect(),
            by_body: cfg.verify.dedupes_by_body(),
        })
    }

    /// The dedupe key of a webhook's raw body, for schemes whose signature
    /// covers the body but neither a timestamp nor the id header: the same
    /// signed body is a repeat whatever its unsigned headers say.
    pub fn body_key(&self, raw: &[u8]) -> Option<String> {
        use sha2::Digest;
        self.by_body
            .then(|| format!("\u{1}body\u{1}{}", hex::encode(sha2::Sha256::digest(raw))))
    }

    /// A webhook body becomes the `data` of a new event.
    pub fn from_webhook(
        &self,
        headers: &HeaderMap,
        body: Value,
        now: OffsetDateTime,
    ) -> Result<Normalised, Invalid> {
        let type_ = self
            .type_
            .get(headers, &body)
            .and_then(|v| as_text(&v))
            .ok_or_else(|| Invalid::MissingType(self.type_.to_string()))?;
        let time = match self.time.as_ref().and_then(|p| p.get(headers, &body)) {
            None | Some(Value::Null) => now,
            Some(v) => envelope::parse_time(&v).ok_or_else(|| Invalid::BadTime(v.to_string()))?,
        };
        let key = self
            .id
            .as_ref()
            .and_then(|p| p.get(headers, &body))
            .and_then(|v| as_text(&v));
        let key = key.or_else(|| header(headers, "idempotency-key").map(str::to_string));
        let fields = Fields {
            type_,
            time,
            dedupe: key.clone().into_iter().collect(),
            key,
            datacontenttype: "application/json".into(),
            correlation: header(headers, "x-correlation-id").map(str::to_string),
            trace: header(headers, "traceparent").map(str::to_string),
            extensions: self.copied_headers(headers),
            data: Some(body),
        };
        self.build(fields)
    }

    /// A posted CloudEvent is re-sourced to this node: its id becomes the
    /// idempotency key and its source is kept as `originsource`.
    pub fn from_cloudevent(
        &self,
        headers: &HeaderMap,
        event: Value,
        now: OffsetDateTime,
    ) -> Result<Normalised, Invalid> {
        let Value::Object(mut ev) = event else {
            return Err(Invalid::CloudEvent("expected a JSON object".into()));
        };
        match ev.remove("specversion") {
            Some(Value::String(v)) if v == envelope::SPEC_VERSION => {}
            _ => return Err(Invalid::CloudEvent("specversion must be \"1.0\"".into())),
        }
        let mut required = |name: &str| match ev.remove(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            _ => Err(Invalid::CloudEvent(format!(
                "{name} must be a non-empty string"
            ))),
        };
        let (id, origin, type_) = (required("id")?, required("source")?, required("type")?);
        let time = match ev.remove("time") {
            None | Some(Value::Null) => now,
            Some(v) => envelope::parse_time(&v).ok_or_else(|| Invalid::BadTime(v.to_string()))?,
        };
        let text = |ev: &mut Map<String, Value>, k: &str| match ev.remove(k) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        let datacontenttype =
            text(&mut ev, "datacontenttype").unwrap_or_else(|| "application/json".into());
        let correlation = text(&mut ev, "correlationid")
            .or_else(|| header(headers, "x-correlation-id").map(str::to_string));
        let trace = text(&mut ev, "traceparent")
            .or_else(|| header(headers, "traceparent").map(str::to_string));
        ev.remove("idempotencykey");
        ev.remove("redacted");
        let data = ev.remove("data");
        if data.is_some() && ev.contains_key("data_base64") {
            return Err(Invalid::CloudEvent(
                "data and data_base64 are mutually exclusive".into(),
            ));
        }
        // CloudEvents makes source + id unique, not id alone: two kiosks
        // may both send "scan-1".
        let dedupe = vec![cloudevent_key(&origin, &id)];
        ev.insert("originsource".into(), Value::String(origin));
        let fields = Fields {
            type_,
            time,
            dedupe,
            key: Some(id),
            datacontenttype,
            correlation,
            trace,
            extensions: ev,
            data,
        };
        self.build(fields)
    }

    /// The allow-listed headers present in the request, as extensions.
    fn copied_headers(&self, headers: &HeaderMap) -> Map<String, Value> {
        self.headers
            .iter()
            .filter_map(|(name, ext)| {
                Some((
                    ext.clone(),
                    Value::String(header(headers, name)?.to_string()),
                ))
            })
            .collect()
    }

    fn build(&self, f: Fields) -> Result<Normalised, Invalid> {
        let subject = envelope::subject(&self.prefix, &self.name, &f.type_)?;
        let id = envelope::new_id();
        let envelope = Envelope {
            specversion: envelope::SPEC_VERSION,
            correlationid: f
                .correlation
                .or_else(|| f.key.clone())
                .unwrap_or_else(|| id.clone()),
            traceparent: envelope::traceparent(f.trace.as_deref()),
            id,
            source: self.ce_source.clone(),
            type_: f.type_,
            time: envelope::format_time(f.time),
            datacontenttype: f.datacontenttype,
            idempotencykey: f.key,
            redacted: Vec::new(),
            extensions: f.extensions,
            data: f.data,
        };
        Ok(Normalised {
            envelope,
            subject,
            keys: f.dedupe,
        })
    }
}

/// A header name as a CloudEvents extension name: lowercase letters and
/// digits only ("X-Shop-Domain" becomes "xshopdomain").
pub fn header_extension(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The dedupe key of a CloudEvent: its source and id, length-prefixed so
/// that no two pairs make the same key.
fn cloudevent_key(source: &str, id: &str) -> String {
    format!("\u{1}ce\u{1}{}\u{1}{source}{id}", source.len())
}

struct Fields {
    type_: String,
    time: OffsetDateTime,
    key: Option<String>,
    dedupe: Vec<String>,
    datacontenttype: String,
    correlation: Option<String>,
    trace: Option<String>,
    extensions: Map<String, Value>,
    data: Option<Value>,
}

/// Where each scheme's senders put the event id, type and time.
fn defaults(scheme: Scheme) -> (Option<&'static str>, &'static str, Option<&'static str>) {
    match scheme {
        Scheme::StandardWebhooks => (Some("header:webhook-id"), "/type", Some("/timestamp")),
        Scheme::Github => (
            Some("header:x-github-delivery"),
            "header:x-github-event",
            None,
        ),
        Scheme::Stripe => (Some("/id"), "/type", Some("/created")),
        Scheme::Shopify => (
            Some("header:x-shopify-webhook-id"),
            "header:x-shopify-topic",
            Some("header:x-shopify-triggered-at"),
        ),
        Scheme::Slack => (Some("/event_id"), "/event/type", Some("/event_time")),
        Scheme::Svix => (Some("header:svix-id"), "/type", Some("/timestamp")),
        Scheme::Gitlab => (Some("header:x-gitlab-event-uuid"), "/object_kind", None),
        // Twilio's form posts carry no event type: name one (`/SmsStatus`, a const).
        Scheme::Twilio => (
            Some("header:i-twilio-idempotency-token"),
            "const:twilio.webhook",
            None,
        ),
        Scheme::Paddle => (Some("/event_id"), "/event_type", Some("/occurred_at")),
        Scheme::Linear => (Some("header:linear-delivery"), "/type", Some("/createdAt")),
        Scheme::Zoom => (Some("header:x-zm-trackingid"), "/event", None),
        Scheme::Square => (Some("/event_id"), "/type", Some("/created_at")),
        Scheme::HmacSha256 | Scheme::Bearer | Scheme::None => {
            (Some("header:idempotency-key"), "/type", None)
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
}

/// Text of a scalar: strings as they are, numbers written out.
fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod rules_tests;
