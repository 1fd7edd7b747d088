//! The canonical envelope: a CloudEvents 1.0 event in structured JSON mode,
//! and the upstream subject it travels on. Everything that leaves the node
//! upstream is one of these; this module only builds and checks values, it
//! never does I/O.

use serde::Serialize;
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub const SPEC_VERSION: &str = "1.0";
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// A CloudEvent as jetedge forwards it. Field order is the order on the wire.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Envelope {
    pub specversion: &'static str,
    /// Unique across every node: a UUIDv7 minted at acceptance. It is the
    /// upstream `Nats-Msg-Id`, so JetStream drops resends of the same event.
    pub id: String,
    /// `/jetedge/{node}/{source}`.
    pub source: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub time: String,
    pub datacontenttype: String,
    pub correlationid: String,
    pub traceparent: String,
    /// The sender's own id for the event, used to drop repeats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotencykey: Option<String>,
    /// What redaction rules removed or masked (names and paths, never values).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redacted: Vec<String>,
    /// Extensions the sender set on a CloudEvent, kept as they came.
    #[serde(flatten)]
    pub extensions: Map<String, Value>,
    /// Absent when a posted CloudEvent carried `data_base64` (kept in extensions) or no data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl Envelope {
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing a struct of strings and a `Value` cannot fail.
        serde_json::to_vec(self).expect("envelope serializes")
    }

    /// As [`Envelope::to_json`], appended to `out` (a buffer reused across
    /// events saves growing a fresh one for each).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(out, self).expect("envelope serializes");
    }
}

/// A fresh event id: UUIDv7, so ids sort by acceptance time.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// `/jetedge/{node}/{source}`, the CloudEvents `source` of every event a node accepts.
pub fn event_source(node: &str, source: &str) -> String {
    format!("/jetedge/{node}/{source}")
}

/// Builds `{prefix}.{source}.{type}`, refusing a type that would not be a
/// literal subject (it would then match or leak into other subjects).
pub fn subject(prefix: &str, source: &str, type_: &str) -> Result<String, UnsafeType> {
    if !is_subject_safe(type_) {
        return Err(UnsafeType);
    }
    Ok(format!("{prefix}.{source}.{type_}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the event type is not a safe subject: no spaces, wildcards ('*', '>') or empty tokens, at most 256 characters")]
pub struct UnsafeType;

/// True when `s` is a literal NATS subject: non-empty dot-separated tokens,
/// with no whitespace or control characters and no wildcards.
/// A subscription filter: tokens, `*` for one token, `>` for the rest.
pub fn is_subject_filter(s: &str) -> bool {
    let tokens: Vec<&str> = s.split('.').collect();
    let last = tokens.len() - 1;
    !s.is_empty()
        && tokens
            .iter()
            .enumerate()
            .all(|(i, t)| *t == "*" || (*t == ">" && i == last) || is_subject_safe(t))
}

/// Whether `subject` (literal) matches `filter` (NATS wildcards).
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// An event type as rules name it: exact, or a prefix written with a
/// trailing `*` (`"order.*"` covers `order.created` and `order.paid`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeMatch {
    Exact(String),
    Prefix(String),
}

impl TypeMatch {
    pub fn parse(pattern: &str) -> Self {
        match pattern.strip_suffix('*') {
            Some(p) => Self::Prefix(p.to_string()),
            None => Self::Exact(pattern.to_string()),
        }
    }

    pub fn matches(&self, type_: &str) -> bool {
        match self {
            Self::Exact(x) => x == type_,
            Self::Prefix(p) => type_.starts_with(p.as_str()),
        }
    }

    /// The pattern as written.
    pub fn pattern(&self) -> String {
        match self {
            Self::Exact(x) => x.clone(),
            Self::Prefix(p) => format!("{p}*"),
        }
    }
}

pub fn is_subject_safe(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.split('.').all(|t| {
            !t.is_empty()
                && t != "*"
                && t != ">"
                && !t
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '*' || c == '>')
        })
}

/// Formats a time as RFC 3339 UTC.
pub fn format_time(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .expect("a UTC time formats as RFC 3339")
}

/// Reads an event time: RFC 3339 text, or Unix seconds as a number or digit string.
pub fn parse_time(v: &Value) -> Option<OffsetDateTime> {
    match v {
        Value::String(s) => OffsetDateTime::parse(s, &Rfc3339).ok().or_else(|| {
            s.parse::<i64>()
                .ok()
                .and_then(|n| OffsetDateTime::from_unix_timestamp(n).ok())
        }),
        Value::Number(n) => n
            .as_i64()
            .and_then(|n| OffsetDateTime::from_unix_timestamp(n).ok()),
        _ => None,
    }
}

/// W3C trace context: keeps a valid incoming `traceparent`, or starts a new
/// trace so every event can be followed across the mesh.
pub fn traceparent(incoming: Option<&str>) -> String {
    match incoming {
        Some(t) if is_valid_traceparent(t) => t.to_ascii_lowercase(),
        _ => {
            let trace: u128 = rand::random::<u128>() | 1;
            let span: u64 = rand::random::<u64>() | 1;
            format!("00-{trace:032x}-{span:016x}-01")
        }
    }
}

fn is_valid_traceparent(t: &str) -> bool {
    let parts: Vec<&str> = t.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_filters_match_like_nats() {
        assert!(subject_matches(
            "events.*.order.>",
            "events.shop.order.created"
        ));
        assert!(subject_matches("events.>", "events.a"));
        assert!(!subject_matches("events.>", "events"));
        assert!(!subject_matches("events.*", "events.a.b"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.b.c"));
        assert!(!subject_matches("a.b.c", "a.b"));
        assert!(is_subject_filter("events.*.order.>"));
        assert!(!is_subject_filter("events.>.x"));
        assert!(!is_subject_filter("events..x"));
        assert!(!is_subject_filter(""));
        assert!(!is_subject_filter("a b"));
    }

    #[test]
    fn subject_safety() {
        assert!(is_subject_safe("order.created"));
        assert!(is_subject_safe("orders/create"));
        for bad in [
            "",
            "order..created",
            ".order",
            "order.",
            "order.*",
            "a.>",
            "a b",
            "a\tb",
            "x*y",
        ] {
            assert!(!is_subject_safe(bad), "{bad:?} should be unsafe");
        }
        assert_eq!(
            subject("events", "shop", "order.created").unwrap(),
            "events.shop.order.created"
        );
        assert_eq!(subject("events", "shop", "order.>"), Err(UnsafeType));
    }

    #[test]
    fn traceparent_is_kept_or_started() {
        let t = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(traceparent(Some(t)), t);
        let fresh = traceparent(Some("garbage"));
        assert!(is_valid_traceparent(&fresh), "{fresh}");
        assert_ne!(traceparent(None), traceparent(None));
    }

    #[test]
    fn times_parse_from_rfc3339_and_unix_seconds() {
        let a = parse_time(&Value::from("2024-05-01T12:00:00+02:00")).unwrap();
        assert_eq!(format_time(a), "2024-05-01T10:00:00Z");
        let b = parse_time(&Value::from(1714557600)).unwrap();
        assert_eq!(format_time(b), "2024-05-01T10:00:00Z");
        assert!(parse_time(&Value::from("yesterday")).is_none());
    }
}
