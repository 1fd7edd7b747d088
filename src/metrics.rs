//! Counters of what the node did, shared by every task and rendered as
//! Prometheus text. Plain atomics: counting must never slow the data path
//! or take a lock.

use crate::egress::SubscriptionStatus;
use crate::pipeline::redact::COUNTED;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Error codes of the ingress API, one counter each (see `ingress::http::ApiError`).
pub const ERROR_CODES: [&str; 19] = [
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
    "buffer_full",
    "disk_full",
    "unavailable",
    "tls_handshake_failed",
];

#[derive(Default)]
pub struct Metrics {
    pub events_accepted: AtomicU64,
    pub events_duplicate: AtomicU64,
    pub events_forwarded: AtomicU64,
    pub publish_failures: AtomicU64,
    pub events_parked: AtomicU64,
    /// Local NATS ingest messages the client dropped (slow consumer).
    pub local_dropped: AtomicU64,
    pub commit_errors: AtomicU64,
    /// Events a routing rule (or the default action) dropped.
    pub events_filtered: AtomicU64,
    /// Config reloads applied, and refused (invalid) or failed.
    pub reloads: AtomicU64,
    pub reloads_failed: AtomicU64,
    rejected: [AtomicU64; ERROR_CODES.len()],
    redacted: [AtomicU64; COUNTED.len()],
}

impl Metrics {
    /// Counts one rejected request or event by its error code.
    pub fn reject(&self, code: &str) {
        if let Some(i) = ERROR_CODES.iter().position(|c| *c == code) {
            self.rejected[i].fetch_add(1, Ordering::Relaxed);
        } else {
            self.commit_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Refusals so far, by error code.
    pub fn refusals(&self) -> [u64; ERROR_CODES.len()] {
        std::array::from_fn(|i| self.rejected[i].load(Ordering::Relaxed))
    }

    pub fn rejected(&self, code: &str) -> u64 {
        ERROR_CODES
            .iter()
            .position(|c| *c == code)
            .map_or(0, |i| self.rejected[i].load(Ordering::Relaxed))
    }

    /// Adds values redacted, by detector (`COUNTED` order).
    pub fn redacted(&self, counts: &[u64; COUNTED.len()]) {
        for (c, n) in self.redacted.iter().zip(counts) {
            if *n > 0 {
                c.fetch_add(*n, Ordering::Relaxed);
            }
        }
    }

    /// Values redacted so far by `detector` ("path" for whole-value rules).
    pub fn redactions(&self, detector: &str) -> u64 {
        COUNTED
            .iter()
            .position(|c| *c == detector)
            .map_or(0, |i| self.redacted[i].load(Ordering::Relaxed))
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Prometheus text exposition; `backlog` is (events, bytes) waiting for upstream.
    pub fn render(&self, backlog: (u64, u64), upstream_connected: bool) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}_total {v}"
            );
        };
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        counter(
            "jetedge_events_accepted",
            "Events made durable in the outbox.",
            load(&self.events_accepted),
        );
        counter(
            "jetedge_events_duplicate",
            "Events answered as duplicates of an earlier one.",
            load(&self.events_duplicate),
        );
        counter(
            "jetedge_events_forwarded",
            "Events acknowledged by upstream JetStream.",
            load(&self.events_forwarded),
        );
        counter(
            "jetedge_publish_failures",
            "Upstream publishes that failed and will be retried.",
            load(&self.publish_failures),
        );
        counter(
            "jetedge_events_parked",
            "Events upstream refused for good, moved aside (jetedge parked list).",
            load(&self.events_parked),
        );
        counter(
            "jetedge_local_ingest_dropped",
            "NATS ingest messages lost because jetedge fell behind (slow consumer).",
            load(&self.local_dropped),
        );
        counter(
            "jetedge_events_filtered",
            "Events dropped by a routing rule (answered 202 filtered).",
            load(&self.events_filtered),
        );
        counter(
            "jetedge_config_reloads",
            "Config reloads applied (SIGHUP, POST /admin/reload, jetedge reload).",
            load(&self.reloads),
        );
        counter(
            "jetedge_config_reloads_failed",
            "Config reloads refused (an invalid file) or failed; the running config was kept.",
            load(&self.reloads_failed),
        );
        let _ = writeln!(out, "# HELP jetedge_values_redacted Values redacted before the outbox, by detector (path: whole-value rules).\n# TYPE jetedge_values_redacted counter");
        for (i, d) in COUNTED.iter().enumerate() {
            let _ = writeln!(
                out,
                "jetedge_values_redacted_total{{detector=\"{d}\"}} {}",
                load(&self.redacted[i])
            );
        }
        let _ = writeln!(out, "# HELP jetedge_ingress_rejected Requests or events refused, by error code.\n# TYPE jetedge_ingress_rejected counter");
        for (i, code) in ERROR_CODES.iter().enumerate() {
            let _ = writeln!(
                out,
                "jetedge_ingress_rejected_total{{code=\"{code}\"}} {}",
                load(&self.rejected[i])
            );
        }
        let _ = writeln!(out, "# HELP jetedge_backlog_events Events waiting for upstream.\n# TYPE jetedge_backlog_events gauge\njetedge_backlog_events {}", backlog.0);
        let _ = writeln!(out, "# HELP jetedge_backlog_bytes Bytes waiting for upstream.\n# TYPE jetedge_backlog_bytes gauge\njetedge_backlog_bytes {}", backlog.1);
        let _ = writeln!(out, "# HELP jetedge_upstream_connected 1 while the upstream link is up.\n# TYPE jetedge_upstream_connected gauge\njetedge_upstream_connected {}", u8::from(upstream_connected));
        out
    }
}

/// Prometheus text for the requests each rate limit refused (`limit` is
/// `ingress` for the listener's, `source` with the source's name else).
pub fn render_rate_limited(limits: &[(Option<&str>, u64)]) -> String {
    let mut out = String::from("# HELP jetedge_rate_limited Requests refused by a rate limit (429 rate_limited).\n# TYPE jetedge_rate_limited counter\n");
    for (source, n) in limits {
        let _ = match source {
            None => writeln!(out, "jetedge_rate_limited_total{{limit=\"ingress\"}} {n}"),
            Some(s) => writeln!(
                out,
                "jetedge_rate_limited_total{{limit=\"source\",source=\"{s}\"}} {n}"
            ),
        };
    }
    out
}

/// A counter family of subscriptions: name, help, and how to read it.
type Family = (&'static str, &'static str, fn(&SubscriptionStatus) -> u64);

/// Prometheus text for the subscriptions and the dead-letter queue.
pub fn render_egress(subs: &[SubscriptionStatus], dead_letters: usize, parked: u64) -> String {
    let mut out = String::new();
    let families: [Family; 5] = [
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
    for (name, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for s in subs {
            let _ = writeln!(
                out,
                "{name}_total{{subscription=\"{}\"}} {}",
                s.name,
                value(s)
            );
        }
    }
    let _ = writeln!(out, "# HELP jetedge_egress_circuit_open 1 while a target's circuit breaker holds deliveries back.\n# TYPE jetedge_egress_circuit_open gauge");
    for s in subs {
        for t in &s.targets {
            let open = u8::from(t.breaker.state != "closed");
            let _ = writeln!(
                out,
                "jetedge_egress_circuit_open{{subscription=\"{}\",target=\"{}\"}} {open}",
                s.name, t.target
            );
        }
    }
    let _ = writeln!(out, "# HELP jetedge_dlq_entries Dead letters waiting for replay or purge.\n# TYPE jetedge_dlq_entries gauge\njetedge_dlq_entries {dead_letters}");
    let _ = writeln!(out, "# HELP jetedge_parked_entries Events upstream refused, waiting for replay or purge.\n# TYPE jetedge_parked_entries gauge\njetedge_parked_entries {parked}");
    out
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
        m.reject("unauthorized");
        m.reject("unauthorized");
        Metrics::add(&m.events_accepted, 3);
        assert_eq!(m.rejected("unauthorized"), 2);
        let text = m.render((5, 500), true);
        assert!(text.contains("jetedge_ingress_rejected_total{code=\"unauthorized\"} 2"));
        assert!(text.contains("jetedge_events_accepted_total 3"));
        assert!(text.contains("jetedge_backlog_events 5"));
    }
}
