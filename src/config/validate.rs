//! Checks that go beyond types: names that end up in subjects and URLs,
//! scheme options that belong together, secrets that must resolve. Every
//! problem is collected with its key path and a hint.

use super::{Config, Problem, Scheme, SourceConfig};
use std::collections::HashSet;

impl Config {
    /// Returns every problem in the config; empty means valid.
    pub fn validate(&self) -> Vec<Problem> {
        let mut p = Problems::default();
        self.validate_node(&mut p);
        self.validate_ingress(&mut p);
        self.validate_upstream(&mut p);
        self.validate_admin(&mut p);
        self.validate_subscriptions(&mut p);
        let mut names = HashSet::new();
        let mtls = self
            .ingress
            .tls
            .as_ref()
            .is_some_and(|t| t.client_ca.is_some());
        for (i, s) in self.sources.iter().enumerate() {
            let at = format!("source[{i}]");
            if !s.client_identities.is_empty() && !mtls {
                p.add(
                    format!("{at}.client_identities"),
                    "needs client certificates: set [ingress] tls with a client_ca",
                );
            }
            if !names.insert(s.name.as_str()) {
                p.add(
                    format!("{at}.name"),
                    format!("duplicate source name {:?}", s.name),
                );
            }
            validate_source(s, &at, &mut p);
            if s.verify == Scheme::None && !s.allow_unauthenticated && !self.ingress_is_loopback() {
                p.add(
                    format!("{at}.verify"),
                    format!(
                        "verify = \"none\" lets anyone who reaches ingress.listen ({}) post events; \
                         choose a scheme, listen on loopback, or set allow_unauthenticated = true",
                        self.ingress.listen
                    ),
                );
            }
        }
        if let Some(l) = &self.local {
            validate_local(l, &names, &mut p);
        }
        for (i, r) in self.redactions.iter().enumerate() {
            for (j, name) in r.sources.iter().enumerate() {
                if !names.contains(name.as_str()) {
                    p.add(
                        format!("redact[{i}].sources[{j}]"),
                        format!("no [[source]] is named {name:?}"),
                    );
                }
            }
        }
        if let Err(problems) = crate::pipeline::Rules::compile(self) {
            p.0.extend(problems);
        }
        super::contract::validate(self, &names, &mut p.0);
        p.0
    }

    /// Settings that are valid but probably not what the user wants:
    /// `jetedge check` prints them and the node logs them at start.
    pub fn warnings(&self) -> Vec<Problem> {
        let mut p = Problems::default();
        for (i, r) in self.routes.iter().enumerate() {
            let Some(m) = &r.match_ else { continue };
            for (path, name, meant) in
                crate::pipeline::filter::misspelt_attributes(m, &format!("route[{i}].match"))
            {
                p.add(
                    path,
                    format!("no event carries an attribute `{name}`, so this never matches; did you mean `{meant}`?"),
                );
            }
        }
        for (i, s) in self.sources.iter().enumerate() {
            let ttl = self.dedupe_ttl(s);
            let window = s.verify.retry_window();
            if ttl < window {
                let key = match s.dedupe_ttl {
                    Some(_) => format!("source[{i}].dedupe_ttl"),
                    None => "node.dedupe_ttl".to_string(),
                };
                p.add(
                    key,
                    format!(
                        "source {:?}: keys are kept for {}, but {:?} senders retry for up to {}; \
                         a later retry would be stored as a new event",
                        s.name,
                        humantime::format_duration(ttl),
                        s.verify,
                        humantime::format_duration(window)
                    ),
                );
            }
        }
        p.0
    }

    /// Whether ingress only listens on a loopback address.
    fn ingress_is_loopback(&self) -> bool {
        self.ingress
            .listen
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback())
    }

    fn validate_node(&self, p: &mut Problems) {
        if !is_name(&self.node.id) {
            p.add(
                "node.id",
                "must be 1-64 letters, digits, '-' or '_' (it names subjects and consumers)",
            );
        }
        if self.node.max_buffer.0 < 1 << 20 {
            p.add("node.max_buffer", "must be at least 1MiB");
        }
        if self.node.dedupe_ttl.is_some_and(|d| d.0.is_zero()) {
            p.add("node.dedupe_ttl", "must be longer than zero");
        }
        self.validate_keys(p);
    }

    /// Each key resolves to 32 bytes of base64; previous keys need a current one.
    fn validate_keys(&self, p: &mut Problems) {
        let node = &self.node;
        let keys = node
            .encryption_key
            .iter()
            .map(|k| ("node.encryption_key".to_string(), k));
        let previous = node.previous_keys.iter().enumerate();
        let previous = previous.map(|(i, k)| (format!("node.previous_keys[{i}]"), k));
        for (at, r) in keys.chain(previous) {
            let decoded = r
                .resolve()
                .and_then(|s| crate::store::decode_key(s.expose()));
            if let Err(e) = decoded {
                p.add(at, e);
            }
        }
        if node.encryption_key.is_none() && !node.previous_keys.is_empty() {
            p.add(
                "node.previous_keys",
                "needs node.encryption_key: new events are sealed with it while these open older ones",
            );
        }
    }

    fn validate_ingress(&self, p: &mut Problems) {
        if self.ingress.listen.parse::<std::net::SocketAddr>().is_err() {
            p.add(
                "ingress.listen",
                "must be an address with a port, such as \"127.0.0.1:8080\"",
            );
        }
        if self.ingress.max_body.0 == 0 {
            p.add("ingress.max_body", "must be larger than zero");
        }
        check_rate_limit(p, "ingress.rate_limit", self.ingress.rate_limit.as_ref());
        for (at, tls) in [
            ("ingress.tls", &self.ingress.tls),
            ("admin.tls", &self.admin.tls),
        ] {
            if let Some(Err(e)) = tls.as_ref().map(crate::tls::server_config) {
                p.add(at, e.to_string());
            }
        }
        if self.ingress.body_memory.0 == 0 {
            p.add("ingress.body_memory", "must be larger than zero");
        }
        if self.ingress.max_connections == 0 {
            p.add("ingress.max_connections", "must be at least 1");
        }
        for (key, d) in [
            ("ingress.header_timeout", self.ingress.header_timeout),
            ("ingress.body_timeout", self.ingress.body_timeout),
        ] {
            if d.0.is_zero() {
                p.add(key, "must be longer than zero");
            }
        }
    }

    fn validate_upstream(&self, p: &mut Problems) {
        let u = &self.upstream;
        validate_endpoint(&u.endpoint(), p);
        if u.stream.is_empty()
            || !u
                .stream
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            p.add("upstream.stream", "must be letters, digits, '-' or '_'");
        }
        if !crate::envelope::is_subject_safe(&u.subject_prefix) {
            p.add(
                "upstream.subject_prefix",
                "must be a literal subject: no spaces, wildcards or empty tokens",
            );
        }
        if !(1..=5).contains(&u.replicas) {
            p.add(
                "upstream.replicas",
                "must be between 1 and 5 (3 makes upstream acks durable)",
            );
        }
        if u.max_in_flight == 0 {
            p.add("upstream.max_in_flight", "must be at least 1");
        }
        if u.duplicate_window.0 < std::time::Duration::from_secs(120) {
            p.add(
                "upstream.duplicate_window",
                "must be at least 2m, or resends after an outage can be stored twice",
            );
        }
        if u.ack_timeout.0.is_zero() {
            p.add("upstream.ack_timeout", "must be longer than zero");
        }
        if u.create_stream {
            // The stream jetedge creates takes `{prefix}.>` and nothing else.
            let captured = format!("{}.>", u.subject_prefix);
            for (key, sample) in
                crate::pipeline::filter::route_subjects(&self.routes, &u.subject_prefix)
            {
                if !crate::envelope::subject_matches(&captured, &sample) {
                    p.add(
                        key,
                        format!(
                            "events on {sample:?} would be outside the stream {} jetedge creates \
                             (subjects {captured:?}) and could never be forwarded; start the subject \
                             with \"{{prefix}}.\", or set upstream.create_stream = false and \
                             create a stream that captures it",
                            u.stream
                        ),
                    );
                }
            }
        }
    }
}

fn validate_source(s: &SourceConfig, at: &str, p: &mut Problems) {
    check_rate_limit(p, &format!("{at}.rate_limit"), s.rate_limit.as_ref());
    for (i, h) in s.headers.iter().enumerate() {
        if hyper::header::HeaderName::from_bytes(h.as_bytes()).is_err()
            || crate::pipeline::header_extension(h).is_empty()
        {
            p.add(
                format!("{at}.headers[{i}]"),
                format!("{h:?} is not a header name"),
            );
        }
    }
    if !is_name(&s.name) {
        p.add(
            format!("{at}.name"),
            "must be 1-64 letters, digits, '-' or '_' (it is a subject token and a URL path)",
        );
    }
    let needs_secret = !matches!(s.verify, Scheme::None);
    if needs_secret && s.secrets.is_empty() {
        p.add(
            format!("{at}.secrets"),
            format!(
                "verify = {:?} needs at least one secret reference, such as \"env:NAME\"",
                s.verify
            ),
        );
    }
    if !needs_secret && !s.secrets.is_empty() {
        p.add(
            format!("{at}.secrets"),
            "verify = \"none\" takes no secrets; did you mean another scheme?",
        );
    }
    for (i, r) in s.secrets.iter().enumerate() {
        if let Err(e) = r.resolve() {
            p.add(format!("{at}.secrets[{i}]"), e);
        }
    }
    let hmac_only = [
        ("header", s.header.is_some()),
        ("encoding", s.encoding.is_some()),
        ("prefix", s.prefix.is_some()),
    ];
    if s.verify == Scheme::HmacSha256 {
        if s.header.is_none() {
            p.add(
                format!("{at}.header"),
                "verify = \"hmac-sha256\" needs the name of the signature header",
            );
        }
    } else {
        for (key, set) in hmac_only {
            if set {
                p.add(
                    format!("{at}.{key}"),
                    "only applies to verify = \"hmac-sha256\"",
                );
            }
        }
    }
    match (s.verify.signs_url(), &s.url) {
        (true, None) => p.add(
            format!("{at}.url"),
            format!(
                "verify = {:?} signs the URL it calls: give it, as registered with the sender",
                s.verify
            ),
        ),
        (true, Some(u)) if !(u.starts_with("https://") || u.starts_with("http://")) => {
            p.add(format!("{at}.url"), "must be an http:// or https:// URL")
        }
        (false, Some(_)) => p.add(
            format!("{at}.url"),
            "only applies to verify = \"twilio\" or \"square\"",
        ),
        _ => {}
    }
    if !s.verify.has_timestamp() && s.tolerance != super::HumanDuration::secs(300) {
        p.add(
            format!("{at}.tolerance"),
            "this scheme signs no timestamp, so a tolerance has no effect",
        );
    }
    if s.dedupe_ttl.is_some_and(|d| d.0.is_zero()) {
        p.add(format!("{at}.dedupe_ttl"), "must be longer than zero");
    }
    if s.allow_unauthenticated && s.verify != Scheme::None {
        p.add(
            format!("{at}.allow_unauthenticated"),
            "only applies to verify = \"none\"",
        );
    }
    for (key, place) in [("id", &s.id), ("type", &s.type_), ("time", &s.time)] {
        if let Some(Err(e)) = place.as_deref().map(crate::pipeline::Place::parse) {
            p.add(format!("{at}.{key}"), e);
        }
    }
}

/// Names that become subject tokens, URL path segments and consumer names.
pub fn is_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn check_rate_limit(p: &mut Problems, at: &str, limit: Option<&super::RateLimitConfig>) {
    let Some(l) = limit else { return };
    if !(l.per_second.is_finite() && l.per_second > 0.0) {
        p.add(
            format!("{at}.per_second"),
            "must be a number of requests per second larger than zero",
        );
    }
    if l.burst == Some(0) {
        p.add(format!("{at}.burst"), "must be at least 1");
    }
}

#[derive(Default)]
pub(super) struct Problems(Vec<Problem>);

impl Problems {
    pub(super) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Servers, credentials that go together, and secrets that must resolve,
/// for `[upstream]` and `[local]` alike.
fn validate_endpoint(e: &super::Endpoint<'_>, p: &mut Problems) {
    let role = e.role;
    if e.servers.is_empty() {
        p.add(
            format!("{role}.servers"),
            "name at least one server, such as \"nats://127.0.0.1:4222\"",
        );
    }
    for (i, s) in e.servers.iter().enumerate() {
        if s.parse::<async_nats::ServerAddr>().is_err() {
            p.add(
                format!("{role}.servers[{i}]"),
                format!("{:?} is not a NATS server address", super::redact_url(s)),
            );
        }
    }
    if e.user.is_some() != e.password.is_some() {
        p.add(format!("{role}.password"), "user and password go together");
    }
    for (key, secret) in [
        ("token", e.token),
        ("password", e.password),
        ("nkey", e.nkey),
    ] {
        if let Some(Err(err)) = secret.map(|s| s.resolve()) {
            p.add(format!("{role}.{key}"), err);
        }
    }
    if let Some(tls) = e.tls {
        if tls.cert.is_some() != tls.key.is_some() {
            p.add(format!("{role}.tls"), "cert and key go together");
        }
    }
}

fn validate_local(l: &super::LocalConfig, names: &HashSet<&str>, p: &mut Problems) {
    validate_endpoint(&l.endpoint(), p);
    let prefix = l.ingest_subject.strip_suffix(".>");
    if !prefix.is_some_and(crate::envelope::is_subject_safe) {
        p.add(
            "local.ingest_subject",
            "must be a literal prefix followed by \".>\", such as \"ingest.>\"",
        );
    }
    if l.queue.is_empty() || !crate::envelope::is_subject_safe(&l.queue) {
        p.add(
            "local.queue",
            "must be a queue group name: no spaces or wildcards",
        );
    }
    if l.max_pending == 0 {
        p.add("local.max_pending", "must be at least 1");
    }
    for (i, name) in l.sources.iter().enumerate() {
        if !names.contains(name.as_str()) {
            p.add(
                format!("local.sources[{i}]"),
                format!("no [[source]] is named {name:?}"),
            );
        }
    }
}
