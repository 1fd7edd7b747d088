//! Secret references. The config never holds a secret inline: it names where
//! the secret lives (`env:NAME` or `file:/path`), and the value is read once at
//! start. `Secret` never prints its value, so it cannot leak through logs or
//! `Debug` output.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Where a secret is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(String),
}

impl SecretRef {
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(name) = s.strip_prefix("env:") {
            if name.is_empty() {
                return Err("empty variable name after \"env:\"".into());
            }
            Ok(Self::Env(name.to_string()))
        } else if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err("empty path after \"file:\"".into());
            }
            Ok(Self::File(path.to_string()))
        } else {
            Err("secrets are references, not values: write \"env:NAME\" or \"file:/path\"".into())
        }
    }

    /// Reads the secret. Surrounding whitespace (a trailing newline in a file)
    /// is not part of it.
    pub fn resolve(&self) -> Result<Secret, String> {
        match self {
            Self::Env(name) => match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => Ok(Secret(v.trim().to_string())),
                Ok(_) => Err(format!("environment variable {name} is empty")),
                Err(_) => Err(format!("environment variable {name} is not set")),
            },
            Self::File(path) => match std::fs::read_to_string(path) {
                Ok(v) if !v.trim().is_empty() => Ok(Secret(v.trim().to_string())),
                Ok(_) => Err(format!("secret file {path} is empty")),
                Err(e) => Err(format!("cannot read secret file {path}: {e}")),
            },
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(n) => write!(f, "env:{n}"),
            Self::File(p) => write!(f, "file:{p}"),
        }
    }
}

/// A reference, never a value: safe to print.
impl Serialize for SecretRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Shown redacted, as its `Display`.
impl Serialize for Url {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A URL from the config, which may carry credentials (`nats://user:pass@…`,
/// `?token=…`): its `Debug` and `Display` show it as [`redact_url`] does;
/// [`Url::as_str`] (or deref) is the URL itself, for connecting.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Url(String);

impl Url {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Url {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

impl std::ops::Deref for Url {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact_url(&self.0))
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

/// A resolved secret value. Its `Debug` and `Display` are redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Compares a presented token with a secret in time that depends on
/// neither's content nor length: both are hashed first (SHA-256), so the
/// comparison is always of 32 bytes (`subtle`'s `ct_eq` returns at once on
/// a length mismatch, which tells an attacker the token's length).
pub fn token_eq(given: &[u8], secret: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let (a, b) = (Sha256::digest(given), Sha256::digest(secret));
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

/// A URL fit for logs, status and dead letters: a password in it
/// (`nats://user:pass@host`) and every query value (`?token=…`) are
/// replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let authority = match authority.rsplit_once('@') {
                Some((user, host)) => match user.split_once(':') {
                    Some((name, _)) => format!("{name}:***@{host}"),
                    // A lone user part may be a token (`nats://token@host`).
                    None => format!("***@{host}"),
                },
                None => authority.to_string(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => base.to_string(),
    };
    if let Some(q) = query {
        let masked: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) => format!("{k}=***"),
                None => kv.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&masked.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials_and_query_values() {
        assert_eq!(
            redact_url("nats://app:s3cret@hub-1:4222"),
            "nats://app:***@hub-1:4222"
        );
        assert_eq!(
            redact_url("nats://tok3n@hub-1:4222"),
            "nats://***@hub-1:4222"
        );
        assert_eq!(
            redact_url("https://apps.local/hook?token=abc&v=1"),
            "https://apps.local/hook?token=***&v=***"
        );
        assert_eq!(
            redact_url("https://u:p@apps.local/a@b"),
            "https://u:***@apps.local/a@b"
        );
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }

    #[test]
    fn token_comparison_needs_the_whole_token() {
        assert!(token_eq(b"s3cret-token", b"s3cret-token"));
        assert!(!token_eq(b"s3cret", b"s3cret-token"));
        assert!(!token_eq(b"", b"s3cret-token"));
        assert!(!token_eq(b"s3cret-tokeN", b"s3cret-token"));
    }

    #[test]
    fn inline_secrets_are_refused() {
        assert!(SecretRef::parse("whsec_abc").is_err());
        assert_eq!(SecretRef::parse("env:X"), Ok(SecretRef::Env("X".into())));
        assert_eq!(
            SecretRef::parse("file:/run/s"),
            Ok(SecretRef::File("/run/s".into()))
        );
        assert!(SecretRef::parse("env:").is_err());
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }
}
