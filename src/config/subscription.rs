//! Checks of `[[subscription]]` and `[admin]`, and the parsed form of
//! `deliver`.

use super::validate::{is_name, Problems};
use super::{AdminConfig, Config, SubscriptionConfig};
use crate::envelope::is_subject_filter;
use std::collections::HashSet;
use std::time::Duration;
use time::OffsetDateTime;

/// Where a new consumer starts (`deliver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deliver {
    New,
    All,
    Since(OffsetDateTime),
}

impl Deliver {
    /// Parses `deliver`; a duration after `since:` counts back from `now`.
    pub fn parse(s: &str, now: OffsetDateTime) -> Result<Self, String> {
        match s {
            "new" => return Ok(Self::New),
            "all" => return Ok(Self::All),
            _ => {}
        }
        let Some(when) = s.strip_prefix("since:") else {
            return Err("must be \"new\", \"all\" or \"since:<RFC 3339 time or duration>\"".into());
        };
        let format = &time::format_description::well_known::Rfc3339;
        if let Ok(t) = OffsetDateTime::parse(when, format) {
            return Ok(Self::Since(t));
        }
        match humantime::parse_duration(when) {
            Ok(d) => Ok(Self::Since(now - d)),
            Err(_) => Err(format!(
                "{when:?} is neither an RFC 3339 time nor a duration such as \"2h\""
            )),
        }
    }
}

impl SubscriptionConfig {
    /// The names of its targets, in delivery order.
    pub fn target_names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.to_subject.is_some() {
            names.push("subject");
        }
        if self.to_stream.is_some() {
            names.push("stream");
        }
        if self.to_webhook.is_some() {
            names.push("webhook");
        }
        names
    }
}

impl Config {
    pub(super) fn validate_subscriptions(&self, p: &mut Problems) {
        let mut names = HashSet::new();
        for (i, s) in self.subscriptions.iter().enumerate() {
            let at = format!("subscription[{i}]");
            if !names.insert(s.name.as_str()) {
                p.add(
                    format!("{at}.name"),
                    format!("duplicate subscription name {:?}", s.name),
                );
            }
            if !is_name(&s.name) || !is_name(&format!("{}-{}", self.node.id, s.name)) {
                p.add(
                    format!("{at}.name"),
                    "must be letters, digits, '-' or '_' (with node.id, at most 64: it names the upstream consumer)",
                );
            }
            if (s.to_subject.is_some() || s.to_stream.is_some()) && self.local.is_none() {
                p.add(
                    format!("{at}.to_subject"),
                    "publishing to the site's NATS needs a [local] section",
                );
            }
            validate_subscription(s, &at, p);
        }
    }

    pub(super) fn validate_admin(&self, p: &mut Problems) {
        let AdminConfig { listen, token, .. } = &self.admin;
        if listen.is_empty() {
            return;
        }
        match listen.parse::<std::net::SocketAddr>() {
            Err(_) => p.add(
                "admin.listen",
                "must be an address with a port, such as \"127.0.0.1:9090\" (or \"\" for none)",
            ),
            Ok(a) if !a.ip().is_loopback() && token.is_none() => p.add(
                "admin.token",
                "an admin listener off loopback needs a token, such as \"env:JETEDGE_ADMIN_TOKEN\"",
            ),
            Ok(_) => {}
        }
        if let Some(Err(e)) = token.as_ref().map(|t| t.resolve()) {
            p.add("admin.token", e);
        }
    }
}

fn validate_subscription(s: &SubscriptionConfig, at: &str, p: &mut Problems) {
    if s.subjects.is_empty() {
        p.add(
            format!("{at}.subjects"),
            "name at least one upstream subject, such as \"events.*.order.>\"",
        );
    }
    for (i, subject) in s.subjects.iter().enumerate() {
        if !is_subject_filter(subject) {
            p.add(
                format!("{at}.subjects[{i}]"),
                format!("{subject:?} is not a subject filter"),
            );
        }
    }
    if let Err(e) = Deliver::parse(&s.deliver, OffsetDateTime::now_utc()) {
        p.add(format!("{at}.deliver"), e);
    }
    if s.target_names().is_empty() {
        p.add(
            at.to_string(),
            "has no target: set to_subject, to_stream or to_webhook",
        );
    }
    let literal = |subject: &str| crate::envelope::is_subject_safe(subject);
    if let Some(subject) = s.to_subject.as_deref().filter(|x| !literal(x)) {
        p.add(
            format!("{at}.to_subject"),
            format!("{subject:?} must be a literal subject"),
        );
    }
    if let Some(t) = &s.to_stream {
        if !literal(&t.subject) {
            p.add(
                format!("{at}.to_stream.subject"),
                "must be a literal subject",
            );
        }
        positive(p, &format!("{at}.to_stream.timeout"), t.timeout.0);
    }
    if let Some(w) = &s.to_webhook {
        let https = match w.url.parse::<hyper::Uri>() {
            Ok(u) if u.host().is_some() && matches!(u.scheme_str(), Some("http" | "https")) => {
                u.scheme_str() == Some("https")
            }
            _ => {
                p.add(
                    format!("{at}.to_webhook.url"),
                    "must be an http:// or https:// URL with a host, such as \"https://apps.local/hook\"",
                );
                false
            }
        };
        let tls_set = w.ca.is_some() || w.client_cert.is_some() || w.client_key.is_some();
        if tls_set && !https {
            p.add(
                format!("{at}.to_webhook"),
                "ca, client_cert and client_key are for an https:// URL",
            );
        }
        if w.client_cert.is_some() != w.client_key.is_some() {
            p.add(
                format!("{at}.to_webhook"),
                "client_cert and client_key go together",
            );
        } else if https && tls_set {
            if let Err(e) = crate::tls::webhook(w) {
                p.add(format!("{at}.to_webhook"), e.to_string());
            }
        }
        let keys = std::iter::once(("secret".to_string(), &w.secret)).chain(
            w.secrets
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("secrets[{i}]"), r)),
        );
        for (key, r) in keys {
            let at = format!("{at}.to_webhook.{key}");
            match r.resolve() {
                Err(e) => p.add(at, e),
                Ok(secret) => {
                    if let Err(e) = crate::signature::SigningKey::decode(secret.expose()) {
                        p.add(at, e);
                    }
                }
            }
        }
        positive(p, &format!("{at}.to_webhook.timeout"), w.timeout.0);
    }
    if s.max_in_flight == 0 {
        p.add(format!("{at}.max_in_flight"), "must be at least 1");
    }
    positive(p, &format!("{at}.ack_wait"), s.ack_wait.0);
    positive(p, &format!("{at}.local_first_ttl"), s.local_first_ttl.0);
    let r = &s.retry;
    if r.max_attempts == 0 {
        p.add(format!("{at}.retry.max_attempts"), "must be at least 1");
    }
    if !(r.multiplier >= 1.0 && r.multiplier.is_finite()) {
        p.add(format!("{at}.retry.multiplier"), "must be 1 or more");
    }
    if r.max.0 < r.initial.0 {
        p.add(format!("{at}.retry.max"), "must be at least retry.initial");
    }
    if s.breaker.failures == 0 {
        p.add(format!("{at}.breaker.failures"), "must be at least 1");
    }
}

fn positive(p: &mut Problems, key: &str, d: Duration) {
    if d.is_zero() {
        p.add(key, "must be longer than zero");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliver_parses_every_form() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        assert_eq!(Deliver::parse("new", now), Ok(Deliver::New));
        assert_eq!(Deliver::parse("all", now), Ok(Deliver::All));
        assert_eq!(
            Deliver::parse("since:2h", now),
            Ok(Deliver::Since(now - Duration::from_secs(7200)))
        );
        let t = Deliver::parse("since:2026-01-02T03:04:05Z", now).unwrap();
        assert!(matches!(t, Deliver::Since(x) if x.unix_timestamp() == 1_767_323_045));
        assert!(Deliver::parse("since:yesterday", now).is_err());
        assert!(Deliver::parse("latest", now).is_err());
    }
}
