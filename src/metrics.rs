//! What the node measures, in Prometheus terms (prometheus-client):
//! counters and histograms updated on the data path (atomics, no lock),
//! and at each scrape the state held elsewhere (backlog and the age of its
//! oldest event, links, dead letters, subscriptions, rate limits) read
//! once and written beside them. Names follow Prometheus conventions:
//! `_total` counters, `_seconds` and `_bytes` units.

use crate::egress::SubscriptionStatus;
use crate::pipeline::redact::COUNTED;
use prometheus_client::encoding::prometheus_text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeMap;

/// Error codes of the ingress API, one counter each (see `ingress::http::ApiError`).
pub const ERROR_CODES: [&str; 20] = [
    "not_found",
    "method_not_allowed",
    "unknown_source",
    "unsupported_media_type",
    "body_too_large",
    "event_too_large",
    "body_timeout",
    "bad_request",
    "malformed_json",
    "invalid_event",
    "invalid_type",
    "unauthorized",
    "client_not_allowed",
    "rate_limited",
    "timestamp_out_of_tolerance",
    "schema_violation",
    "buffer_full",
    "disk_full",
    "unavailable",
    "tls_handshake_failed",
];

type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// Buckets for durations: 100 µs to ~52 s, doubling.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

/// Buckets for how many events one commit holds: 1 to 16,384.
fn group_sizes() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

pub struct Metrics {
    registry: Registry,
    pub events_accepted: Counter,
    pub events_duplicate: Counter,
    pub events_forwarded: Counter,
    pub publish_failures: Counter,
    pub events_parked: Counter,
    /// Local NATS ingest messages the client dropped (slow consumer).
    pub local_dropped: Counter,
    pub commit_errors: Counter,
    /// Events a routing rule (or the default action) dropped.
    pub events_filtered: Counter,
    /// Events stored for the quarantine subject (they broke their schema).
    pub events_quarantined: Counter,
    /// Config reloads applied, and refused (invalid) or failed.
    pub reloads: Counter,
    pub reloads_failed: Counter,
    /// Request received to answer sent, for ingest requests (HTTP).
    pub ingest_seconds: Histogram,
    /// Publish to upstream's acknowledgement, per event.
    pub forward_seconds: Histogram,
    /// One delivery attempt to one target, by subscription.
    pub delivery_seconds: Histograms,
    rejected: [Counter; ERROR_CODES.len()],
    /// Refusals of each configured source, by code, for the status page
    /// (a lock, but only on the refusal path).
    by_source: std::sync::Mutex<BTreeMap<String, BTreeMap<&'static str, u64>>>,
    redacted: [Counter; COUNTED.len()],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new((seconds(), group_sizes()))
    }
}

/// What the scrape reads from the parts that hold it.
#[derive(Debug, Default)]
pub struct Snapshot<'a> {
    /// Events and bytes waiting for upstream.
    pub backlog: (u64, u64),
    /// Age of the oldest of them, when there is one.
    pub oldest_age_seconds: Option<f64>,
    pub upstream_connected: bool,
    /// The site link's state, when `[local]` is set.
    pub local_connected: Option<bool>,
    pub dead_letters: u64,
    pub parked: u64,
    pub subscriptions: &'a [SubscriptionStatus],
    /// Requests refused by each rate limit (`None`: the listener's).
    pub rate_limited: &'a [(Option<&'a str>, u64)],
}

impl Metrics {
    /// The node's metrics; `commit` are the store's commit histograms
    /// (duration, events per group).
    pub fn new(commit: (Histogram, Histogram)) -> Self {
        let mut registry = Registry::default();
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let events_accepted = counter(
            "jetedge_events_accepted",
            "Events made durable in the outbox.",
        );
        let events_duplicate = counter(
            "jetedge_events_duplicate",
            "Events answered as duplicates of an earlier one.",
        );
        let events_forwarded = counter(
            "jetedge_events_forwarded",
            "Events acknowledged by upstream JetStream.",
        );
        let publish_failures = counter(
            "jetedge_publish_failures",
            "Upstream publishes that failed and will be retried.",
        );
        let events_parked = counter(
            "jetedge_events_parked",
            "Events upstream refused for good, moved aside (jetedge parked list).",
        );
        let local_dropped = counter(
            "jetedge_local_ingest_dropped",
            "NATS ingest messages lost because jetedge fell behind (slow consumer).",
        );
        let commit_errors = counter(
            "jetedge_commit_errors",
            "Refusals with a code outside the documented list (a bug if it moves).",
        );
        let events_filtered = counter(
            "jetedge_events_filtered",
            "Events dropped by a routing rule (answered 202 filtered).",
        );
        let events_quarantined = counter(
            "jetedge_events_quarantined",
            "Events that broke their schema, stored for the quarantine subject.",
        );
        let reloads = counter(
            "jetedge_config_reloads",
            "Config reloads applied (SIGHUP, POST /admin/reload, jetedge reload).",
        );
        let reloads_failed = counter(
            "jetedge_config_reloads_failed",
            "Config reloads refused (an invalid file) or failed; the running config was kept.",
        );
        let rejected = labelled(
            &mut registry,
            "jetedge_ingress_rejected",
            "Requests or events refused, by error code.",
            "code",
            ERROR_CODES,
        );
        let redacted = labelled(
            &mut registry,
            "jetedge_values_redacted",
            "Values redacted before the outbox, by detector (path: whole-value rules).",
            "detector",
            COUNTED,
        );
        let ingest_seconds = seconds();
        registry.register_with_unit(
            "jetedge_ingest_duration",
            "Ingest requests, from receipt to the answer (202 means on disk).",
            Unit::Seconds,
            ingest_seconds.clone(),
        );
        let forward_seconds = seconds();
        registry.register_with_unit(
            "jetedge_forward_duration",
            "Events from publish to upstream's acknowledgement.",
            Unit::Seconds,
            forward_seconds.clone(),
        );
        let delivery_seconds: Histograms = Family::new_with_constructor(seconds);
        registry.register_with_unit(
            "jetedge_egress_delivery_duration",
            "Delivery attempts to a subscription's targets.",
            Unit::Seconds,
            delivery_seconds.clone(),
        );
        registry.register_with_unit(
            "jetedge_commit_duration",
            "Group commits: the outbox write and its flush (and fdatasync).",
            Unit::Seconds,
            commit.0.clone(),
        );
        registry.register(
            "jetedge_commit_events",
            "Events per group commit.",
            commit.1.clone(),
        );
        let build = Family::<Labels, Gauge>::default();
        build
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_string())])
            .set(1);
        registry.register("jetedge_build_info", "The running build (value 1).", build);
        Self {
            registry,
            events_accepted,
            events_duplicate,
            events_forwarded,
            publish_failures,
            events_parked,
            local_dropped,
            commit_errors,
            events_filtered,
            events_quarantined,
            reloads,
            reloads_failed,
            ingest_seconds,
            forward_seconds,
            delivery_seconds,
            rejected,
            by_source: Default::default(),
            redacted,
        }
    }

    /// Counts one rejected request or event by its error code, and by
    /// its source when it names a configured one.
    pub fn reject(&self, source: Option<&str>, code: &str) {
        let Some(i) = ERROR_CODES.iter().position(|c| *c == code) else {
            self.commit_errors.inc();
            return;
        };
        self.rejected[i].inc();
        if let Some(s) = source {
            let mut by_source = self.by_source.lock().expect("refusals");
            let codes = by_source.entry(s.to_string()).or_default();
            *codes.entry(ERROR_CODES[i]).or_default() += 1;
        }
    }

    /// Refusals so far of each source that had any, by code.
    pub fn refusals_by_source(&self) -> BTreeMap<String, BTreeMap<&'static str, u64>> {
        self.by_source.lock().expect("refusals").clone()
    }

    /// Refusals so far, by error code.
    pub fn refusals(&self) -> [u64; ERROR_CODES.len()] {
        std::array::from_fn(|i| self.rejected[i].get())
    }

    pub fn rejected(&self, code: &str) -> u64 {
        ERROR_CODES
            .iter()
            .position(|c| *c == code)
            .map_or(0, |i| self.rejected[i].get())
    }

    /// Adds values redacted, by detector (`COUNTED` order).
    pub fn redacted(&self, counts: &[u64; COUNTED.len()]) {
        for (c, n) in self.redacted.iter().zip(counts) {
            if *n > 0 {
                c.inc_by(*n);
            }
        }
    }

    /// Values redacted so far by `detector` ("path" for whole-value rules).
    pub fn redactions(&self, detector: &str) -> u64 {
        COUNTED
            .iter()
            .position(|c| *c == detector)
            .map_or(0, |i| self.redacted[i].get())
    }

    pub fn get(counter: &Counter) -> u64 {
        counter.get()
    }

    pub fn add(counter: &Counter, n: u64) {
        counter.inc_by(n);
    }

    /// The histogram of one subscription's delivery attempts.
    pub fn delivery(&self, subscription: &str) -> Histogram {
        let labels = vec![("subscription", subscription.to_string())];
        self.delivery_seconds.get_or_create(&labels).clone()
    }

    /// The Prometheus text exposition (format 0.0.4): the node's own
    /// metrics, then what `now` read from the rest of the node.
    pub fn render(&self, now: &Snapshot<'_>) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        let _ = encode(&mut out, &scrape(now));
        out
    }
}

/// Counters labelled `label` = each of `values`, registered as one family;
/// kept as an array so counting needs no lookup.
fn labelled<const N: usize>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    values: [&'static str; N],
) -> [Counter; N] {
    let family = Family::<Labels, Counter>::default();
    let out = values.map(|v| family.get_or_create(&vec![(label, v.to_string())]).clone());
    registry.register(name, help, family);
    out
}

/// The metrics read at scrape time, as a registry of their values.
fn scrape(now: &Snapshot<'_>) -> Registry {
    let mut r = Registry::default();
    let gauge = |v: i64| {
        let g = Gauge::<i64>::default();
        g.set(v);
        g
    };
    r.register(
        "jetedge_backlog_events",
        "Events waiting for upstream.",
        gauge(now.backlog.0 as i64),
    );
    r.register_with_unit(
        "jetedge_backlog",
        "Outbox bytes on disk waiting for upstream.",
        Unit::Bytes,
        gauge(now.backlog.1 as i64),
    );
    let age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    age.set(now.oldest_age_seconds.unwrap_or(0.0));
    r.register_with_unit(
        "jetedge_backlog_oldest_event_age",
        "Age of the oldest event waiting for upstream (0 when none waits).",
        Unit::Seconds,
        age,
    );
    r.register(
        "jetedge_upstream_connected",
        "1 while the upstream link is up.",
        gauge(i64::from(now.upstream_connected)),
    );
    if let Some(up) = now.local_connected {
        r.register(
            "jetedge_local_connected",
            "1 while the site's NATS link is up.",
            gauge(i64::from(up)),
        );
    }
    r.register(
        "jetedge_dlq_entries",
        "Dead letters waiting for replay or purge.",
        gauge(now.dead_letters as i64),
    );
    r.register(
        "jetedge_parked_entries",
        "Events upstream refused, waiting for replay or purge.",
        gauge(now.parked as i64),
    );
    egress(&mut r, now.subscriptions);
    let limited = Family::<Labels, Counter>::default();
    for (source, n) in now.rate_limited {
        let labels = match source {
            None => vec![("limit", "ingress".to_string())],
            Some(s) => vec![("limit", "source".to_string()), ("source", s.to_string())],
        };
        limited.get_or_create(&labels).inc_by(*n);
    }
    r.register(
        "jetedge_rate_limited",
        "Requests refused by a rate limit (429 rate_limited).",
        limited,
    );
    r
}

/// Each subscription's counters, its consumer's lag and its breakers.
fn egress(r: &mut Registry, subs: &[SubscriptionStatus]) {
    type Value = fn(&SubscriptionStatus) -> u64;
    let counters: [(&str, &str, Value); 5] = [
        (
            "jetedge_egress_delivered",
            "Events every target of a subscription took.",
            |s| s.delivered,
        ),
        (
            "jetedge_egress_failed_attempts",
            "Deliveries to a target that failed (and were retried or dead-lettered).",
            |s| s.failed_attempts,
        ),
        (
            "jetedge_egress_dead_lettered",
            "Events moved to the dead-letter queue after their retries.",
            |s| s.dead_lettered,
        ),
        (
            "jetedge_egress_local_first",
            "Events delivered locally before upstream saw them.",
            |s| s.local_first_delivered,
        ),
        (
            "jetedge_egress_skipped",
            "Upstream copies of events already delivered locally.",
            |s| s.skipped_as_delivered_locally,
        ),
    ];
    let by_sub = |s: &SubscriptionStatus| vec![("subscription", s.name.clone())];
    for (name, help, value) in counters {
        let family = Family::<Labels, Counter>::default();
        for s in subs {
            family.get_or_create(&by_sub(s)).inc_by(value(s));
        }
        r.register(name, help, family);
    }
    let pending = Family::<Labels, Gauge>::default();
    let open = Family::<Labels, Gauge>::default();
    for s in subs {
        pending
            .get_or_create(&by_sub(s))
            .set(s.pending_upstream as i64);
        for t in &s.targets {
            let labels = vec![
                ("subscription", s.name.clone()),
                ("target", t.target.to_string()),
            ];
            open.get_or_create(&labels)
                .set(i64::from(t.breaker.state != "closed"));
        }
    }
    r.register(
        "jetedge_egress_consumer_pending",
        "Messages waiting upstream for a subscription's consumer (its lag), as last reported.",
        pending,
    );
    r.register(
        "jetedge_egress_circuit_open",
        "1 while a target's circuit breaker holds deliveries back.",
        open,
    );
}

/// Logs, once a minute and only when there were any, how many requests or
/// events were refused and why: a sender storm or a full disk must not
/// write a log line per refusal.
pub async fn report_refusals(
    metrics: std::sync::Arc<Metrics>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut before = metrics.refusals();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
            _ = stop.cancelled() => return,
        }
        let now = metrics.refusals();
        let delta: Vec<String> = ERROR_CODES
            .iter()
            .zip(now.iter().zip(before))
            .filter(|(_, (n, b))| **n > *b)
            .map(|(code, (n, b))| format!("{code}={}", n - b))
            .collect();
        if !delta.is_empty() {
            tracing::info!(refused = %delta.join(" "), "refused in the last minute");
        }
        before = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_are_counted_by_code_and_rendered() {
        let m = Metrics::default();
        m.reject(Some("shop"), "unauthorized");
        m.reject(None, "unauthorized");
        assert_eq!(m.refusals_by_source()["shop"]["unauthorized"], 1);
        Metrics::add(&m.events_accepted, 3);
        m.ingest_seconds.observe(0.003);
        assert_eq!(m.rejected("unauthorized"), 2);
        let now = Snapshot {
            backlog: (5, 500),
            oldest_age_seconds: Some(2.5),
            upstream_connected: true,
            ..Snapshot::default()
        };
        let text = m.render(&now);
        for line in [
            "jetedge_ingress_rejected_total{code=\"unauthorized\"} 2",
            "jetedge_events_accepted_total 3",
            "jetedge_backlog_events 5",
            "jetedge_backlog_bytes 500",
            "jetedge_backlog_oldest_event_age_seconds 2.5",
            "jetedge_ingest_duration_seconds_count 1",
            "jetedge_build_info{version=\"",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
