//! What landed: before resending events whose first publish may be older
//! than the stream's duplicate window, ask the stream which of them it
//! already stored, so a resend never stores an event twice.
//!
//! JetStream drops a repeated `Nats-Msg-Id` only within the duplicate
//! window counted from the first publish. A publish whose PubAck never came
//! back (link cut, node killed) is resent when the link returns; within the
//! window that is harmless, later it would be stored again. So, when a
//! resend could be late (the first pump after a start, whose earlier
//! publishes are unknown, or a pump after a failure that left publishes
//! unsettled for more than half the window), the forwarder reads the
//! `Nats-Msg-Id` headers the stream holds on the subjects of the outbox's
//! head, from the last sequence one of its publishes got, and settles the
//! events found there without sending them.

use super::{ForwardError, Forwarder};
use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use futures::StreamExt;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Whether the next pump must ask the stream before it resends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verify {
    /// Nothing sent is unsettled.
    No,
    /// Publishes sent at this time or later were left unsettled.
    Since(Instant),
    /// What was sent before is not known (the node started).
    Unknown,
}

impl Verify {
    /// Whether resending now could be later than `window` after a first
    /// publish: half the window, so the resend itself has time to land.
    pub fn due(self, window: Duration) -> bool {
        match self {
            Verify::No => false,
            Verify::Unknown => true,
            Verify::Since(at) => at.elapsed() >= window / 2,
        }
    }

    /// Records a publish sent at `at` that was left unsettled.
    pub fn unsettled(&mut self, at: Instant) {
        *self = match *self {
            Verify::No => Verify::Since(at),
            Verify::Since(t) => Verify::Since(t.min(at)),
            Verify::Unknown => Verify::Unknown,
        };
    }
}

/// Events of the outbox's head looked for: what can have been sent and
/// not yet removed (the window's publishes and the removals not yet
/// queued), with room to spare.
const EXTRA_CANDIDATES: usize = 16 * 512;
/// Subjects given to the stream as a filter; more than this, none (the
/// headers of every subject are read).
const MAX_FILTERS: usize = 64;
/// Stream messages read at most in one search.
const MAX_SCAN: u64 = 1_000_000;
/// Without a recorded sequence, how long before the oldest event's
/// acceptance time the search starts (clocks of edge devices drift).
const CLOCK_MARGIN: Duration = Duration::from_secs(3600);

/// The outbox's head: event ids by subject, and the oldest id.
struct Candidates {
    ids: HashSet<String>,
    subjects: HashSet<String>,
    oldest: Option<String>,
}

impl Forwarder {
    /// Ids of outbox events the stream already holds.
    pub(super) async fn what_landed(
        &self,
        js: &async_nats::jetstream::Context,
    ) -> Result<HashSet<String>, ForwardError> {
        let c = self.candidates()?;
        if c.ids.is_empty() {
            return Ok(HashSet::new());
        }
        let started = Instant::now();
        let found = match self.search(js, &c).await {
            Ok(found) => found,
            Err(Search::Link(e)) => return Err(ForwardError::Publish(e)),
            Err(Search::Refused(e)) => {
                // Without the right to read the stream (a publish-only
                // user), only the duplicate window protects resends.
                tracing::warn!(stream = %self.cfg.stream, error = %e,
                    "cannot read the stream to see which events landed; resends rely on its duplicate window");
                return Ok(HashSet::new());
            }
        };
        tracing::info!(stream = %self.cfg.stream, looked_for = c.ids.len(), found = found.len(),
            took = ?started.elapsed(), "asked the stream which unacknowledged events it already holds");
        Ok(found)
    }

    fn candidates(&self) -> Result<Candidates, ForwardError> {
        let limit = self.cfg.max_in_flight + EXTRA_CANDIDATES;
        let mut c = Candidates {
            ids: HashSet::new(),
            subjects: HashSet::new(),
            oldest: None,
        };
        let mut cursor = None;
        while c.ids.len() < limit {
            let more = self.store.pending(cursor, super::READ_AHEAD)?;
            let Some(last) = more.last() else { break };
            cursor = Some(crate::store::Position {
                seq: last.at.seq,
                index: last.at.index + 1,
            });
            for p in more {
                c.oldest.get_or_insert_with(|| p.record.id.clone());
                c.subjects.insert(p.record.subject);
                c.ids.insert(p.record.id);
            }
        }
        Ok(c)
    }

    /// Reads the stream's `Nats-Msg-Id` headers from where this node's
    /// publishes last landed and keeps those among the candidates.
    async fn search(
        &self,
        js: &async_nats::jetstream::Context,
        c: &Candidates,
    ) -> Result<HashSet<String>, Search> {
        let stream = js.get_stream(&self.cfg.stream).await.map_err(Search::api)?;
        let deliver_policy = self.start_of_search(c);
        let filter_subjects = if c.subjects.len() <= MAX_FILTERS {
            c.subjects.iter().cloned().collect()
        } else {
            Vec::new()
        };
        // The stream just answered: a consumer request that fails now is
        // refused (a user without the right to read it gets no answer at
        // all, only a permissions error in the server's log).
        let refused = |e: &dyn std::fmt::Display| Search::Refused(e.to_string());
        let mut consumer = stream
            .create_consumer(OrderedConfig {
                filter_subjects,
                headers_only: true,
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| refused(&e))?;
        let info = consumer.info().await.map_err(|e| refused(&e))?;
        let (name, pending) = (info.name.clone(), info.num_pending);
        let found = match pending {
            0 => Ok(HashSet::new()),
            _ => self.read_ids(consumer, c).await,
        };
        // A hub serves many nodes: the consumer goes now rather than
        // after its inactivity threshold.
        let _ = stream.delete_consumer(&name).await;
        found
    }

    /// The candidates' ids among the `Nats-Msg-Id`s the consumer delivers.
    async fn read_ids(
        &self,
        consumer: async_nats::jetstream::consumer::Consumer<OrderedConfig>,
        c: &Candidates,
    ) -> Result<HashSet<String>, Search> {
        let mut found = HashSet::new();
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| Search::Refused(e.to_string()))?;
        let wait = self.cfg.ack_timeout.0;
        for scanned in 1..=MAX_SCAN {
            let next = tokio::time::timeout(wait, messages.next()).await;
            let msg = match next {
                Err(_) => return Err(Search::Link(format!("no message within {wait:?}"))),
                Ok(None) => return Err(Search::Link("the search ended early".into())),
                Ok(Some(m)) => m.map_err(|e| Search::Link(e.to_string()))?,
            };
            if let Some(id) = msg.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")) {
                if c.ids.contains(id.as_str()) {
                    found.insert(id.to_string());
                }
            }
            let pending = msg.info().map(|i| i.pending).unwrap_or(0);
            if pending == 0 || found.len() == c.ids.len() {
                return Ok(found);
            }
            if scanned == MAX_SCAN {
                tracing::warn!(stream = %self.cfg.stream, scanned, pending,
                    "stopped looking for landed events: the stream holds too many messages on these subjects since the last acknowledged one");
            }
        }
        Ok(found)
    }

    /// From the sequence the last acknowledged publish got, less the most
    /// that can be in flight (a leader change can store a resend after a
    /// later event); without one, from the oldest event's time less a
    /// margin; without that, the whole stream.
    fn start_of_search(&self, c: &Candidates) -> DeliverPolicy {
        if let Some(seq) = self.store.landed(&self.cfg.stream) {
            let start_sequence = seq.saturating_sub(self.cfg.max_in_flight as u64).max(1);
            return DeliverPolicy::ByStartSequence { start_sequence };
        }
        match c.oldest.as_deref().and_then(accepted_at) {
            Some(at) => DeliverPolicy::ByStartTime {
                start_time: at - CLOCK_MARGIN,
            },
            None => DeliverPolicy::All,
        }
    }
}

/// Why the search did not finish.
enum Search {
    /// The link failed; try again later.
    Link(String),
    /// Upstream refuses the request itself (permissions, an API error).
    Refused(String),
}

impl Search {
    fn api<E: std::error::Error>(e: E) -> Search {
        let text = e.to_string();
        // A JetStream API answer carries an error code; anything else is
        // the link (a timeout, a lost connection).
        let api = std::error::Error::source(&e)
            .is_some_and(|s| s.downcast_ref::<async_nats::jetstream::Error>().is_some())
            || text.contains("permissions violation");
        if api {
            Search::Refused(text)
        } else {
            Search::Link(text)
        }
    }
}

/// When an event was accepted, from its UUIDv7 id.
fn accepted_at(id: &str) -> Option<time::OffsetDateTime> {
    let (secs, nanos) = uuid::Uuid::parse_str(id).ok()?.get_timestamp()?.to_unix();
    let at = time::OffsetDateTime::from_unix_timestamp(secs as i64).ok()?;
    Some(at + Duration::from_nanos(nanos as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_is_due_after_a_start_and_after_half_the_window_of_unsettled_publishes() {
        let window = Duration::from_secs(120);
        assert!(Verify::Unknown.due(window));
        assert!(!Verify::No.due(window));
        let mut v = Verify::No;
        v.unsettled(Instant::now());
        assert!(
            !v.due(window),
            "a resend well inside the window needs no check"
        );
        let long_ago = Instant::now() - Duration::from_secs(61);
        v.unsettled(long_ago);
        assert_eq!(
            v,
            Verify::Since(long_ago),
            "the oldest unsettled publish counts"
        );
        assert!(v.due(window));
    }

    #[test]
    fn an_event_id_tells_when_it_was_accepted() {
        let id = uuid::Uuid::now_v7().to_string();
        let at = accepted_at(&id).expect("a v7 id");
        let age = time::OffsetDateTime::now_utc() - at;
        assert!(age.whole_seconds().abs() < 5, "{age}");
        assert!(accepted_at("order-17").is_none());
    }
}
