//! Where a value is found in a request: a header (`header:webhook-id`), a JSON
//! pointer into the body (`/data/id`), or a constant (`const:order.created`).

use hyper::HeaderMap;
use serde_json::Value;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Header(String),
    Pointer(String),
    Const(String),
}

impl Place {
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(h) = s.strip_prefix("header:") {
            if h.is_empty() || hyper::header::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(format!("{h:?} is not a valid header name"));
            }
            Ok(Self::Header(h.to_ascii_lowercase()))
        } else if let Some(c) = s.strip_prefix("const:") {
            Ok(Self::Const(c.to_string()))
        } else if s.starts_with('/') {
            Ok(Self::Pointer(s.to_string()))
        } else {
            Err(format!(
                "{s:?} is not a place: write a JSON pointer (\"/type\"), \"header:NAME\" or \"const:VALUE\""
            ))
        }
    }

    pub fn get(&self, headers: &HeaderMap, body: &Value) -> Option<Value> {
        match self {
            Self::Header(h) => headers
                .get(h.as_str())
                .and_then(|v| v.to_str().ok())
                .map(|s| Value::String(s.to_string())),
            Self::Pointer(p) => body.pointer(p).cloned(),
            Self::Const(c) => Some(Value::String(c.clone())),
        }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Header(h) => write!(f, "header:{h}"),
            Self::Pointer(p) => write!(f, "{p}"),
            Self::Const(c) => write!(f, "const:{c}"),
        }
    }
}
