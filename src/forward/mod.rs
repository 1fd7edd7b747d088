//! The forwarder: drains the outbox into upstream JetStream, in order.
//!
//! It keeps publishes awaiting their PubAck, each with `Nats-Msg-Id` =
//! event id, within a congestion window (`window.rs`: bytes, paced by the
//! acks' round trip) and `max_in_flight`, and removes an outbox entry only
//! after its ack. On any failure it stops sending, settles what is in
//! flight, and starts again from the oldest entry still in the outbox after
//! a backoff, skipping what upstream acknowledged meanwhile; JetStream's
//! duplicate window drops any resend that had in fact landed, and when a
//! resend could come later than that window, `landed.rs` asks the stream
//! first.
//!
//! Invariants: this is the only task that removes outbox entries; it never
//! holds more than `max_in_flight` records and `max_in_flight_bytes` of
//! payload in flight, plus one read-ahead of the outbox.

use crate::config::UpstreamConfig;
use crate::metrics::Metrics;
use crate::store::{Forwarded, ParkReason, ParkedMeta, Pending, Position, Store, StoreError};
use crate::upstream::LinkState;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::{self, message::PublishMessage, stream};
use async_nats::HeaderMap;
use futures::stream::{FuturesOrdered, StreamExt};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Acknowledged outbox batches removed in one request to the committer.
const REMOVE_BATCH: usize = 16;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often a warning repeats while upstream stays unreachable or refusing.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// Outbox events read at once when the window has room.
const READ_AHEAD: usize = 256;
/// Least time between two reads of the stream's subjects.
const SUBJECTS_REFRESH: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("publish failed: {0}")]
    Publish(String),
    #[error("upstream refuses every event: {0}")]
    Held(String),
    #[error("cannot set up stream: {0}")]
    Stream(String),
}

/// Why upstream did not take one event.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// Worth a retry: a timeout, a lost connection, a stream between leaders.
    Transient(String),
    /// No ack within the publish's deadline.
    TimedOut(Duration),
    /// Nobody answered for the subject: a poison event if no stream
    /// captures it, a stream being set up otherwise.
    NoResponders,
    /// This event can never go (its size, a per-subject limit).
    Poison(ParkReason, String),
    /// Every event would be refused (a sealed or full stream, JetStream
    /// out of resources): not the event's fault, so the backlog is held in
    /// order rather than emptied into the parked events.
    Held(String),
}

pub struct Forwarder {
    pub store: Store,
    pub client: async_nats::Client,
    pub link: watch::Receiver<LinkState>,
    pub cfg: UpstreamConfig,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    /// How long a stop waits for in-flight publishes.
    pub drain_timeout: Duration,
    /// Resumes forwarding when set to `false`; pauses it when `true`.
    pub paused: watch::Receiver<bool>,
    /// Largest envelope upstream takes; ingest refuses larger ones. Set
    /// from the server's `max_payload` and the stream's `max_msg_size`,
    /// and remembered in the store for the next offline start.
    pub max_event: Arc<AtomicU64>,
    /// Sample subjects of routes with their own subject templates, by key
    /// path, checked against the stream's subjects at connect.
    pub route_subjects: Vec<(String, String)>,
    /// Why upstream refuses every event, while it does (for status).
    pub held: Arc<Mutex<Option<String>>>,
}

/// The stream's subjects as last read, and when: what decides whether an
/// event nobody answered for is poison.
#[derive(Default)]
struct StreamView {
    subjects: Vec<String>,
    read_at: Option<Instant>,
    duplicate_window: Duration,
}

impl StreamView {
    fn captures(&self, subject: &str) -> bool {
        self.subjects
            .iter()
            .any(|f| crate::envelope::subject_matches(f, subject))
    }
}

mod landed;
mod window;
use landed::Verify;
use window::Window;

/// One publish awaiting its ack.
struct Sent {
    p: Pending,
    /// Its payload bytes (0 for an event upstream took in an earlier pump).
    size: u64,
    at: Instant,
}

/// What one publish settled to: the event, and the stream sequence
/// upstream stored it at (0 if taken in an earlier pump) or its refusal.
type Ack = (Sent, Result<u64, Refusal>);

/// The forwarder's view of upstream across pumps.
struct Link {
    /// API requests (stream info), bounded by `ack_timeout`.
    api: jetstream::Context,
    /// Publishes; their acks are bounded by the window's deadlines instead.
    publisher: jetstream::Context,
    view: StreamView,
    window: Window,
    /// Events upstream acknowledged after the pump that sent them failed:
    /// the next pump settles them without sending them again.
    acked: HashSet<Position>,
    /// Whether publishes were left unsettled, so that the next pump must
    /// ask the stream what landed before resending.
    verify: Verify,
    /// Ids the stream was found to hold: settled without sending.
    landed: HashSet<String>,
    /// The highest stream sequence acknowledged, and the one last kept
    /// in the store.
    last_seq: u64,
    kept_seq: u64,
}

/// What one pump has in flight and has read but not sent.
#[derive(Default)]
struct Flight {
    acks: FuturesOrdered<futures::future::BoxFuture<'static, Ack>>,
    bytes: u64,
    ready: VecDeque<Pending>,
    cursor: Option<Position>,
}

impl Forwarder {
    pub async fn run(mut self) {
        let api = jetstream::ContextBuilder::new()
            .timeout(self.cfg.ack_timeout.0)
            .build(self.client.clone());
        let publisher = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(3600))
            // A publish we gave up on keeps its permit this long at most.
            .ack_timeout(Duration::from_secs(1))
            // Our own window bounds what is in flight; the context's is only a backstop.
            .max_ack_inflight(self.cfg.max_in_flight * 2)
            .backpressure_on_inflight(true)
            .build(self.client.clone());
        let mut link = Link {
            api,
            publisher,
            view: StreamView::default(),
            window: Window::new(self.cfg.max_in_flight, self.cfg.max_in_flight_bytes.0),
            acked: HashSet::new(),
            // What an earlier run sent is unknown only if it may have
            // left publishes unsettled (a crash): a fresh node, or one
            // that stopped cleanly, has nothing to look for.
            verify: match self.store.in_doubt(&self.cfg.stream) {
                true => Verify::Unknown,
                false => Verify::No,
            },
            landed: HashSet::new(),
            last_seq: 0,
            kept_seq: 0,
        };
        let mut backoff = BACKOFF_MIN;
        let mut warned: Option<Instant> = None;
        loop {
            // After every reconnect the stream is checked again: the
            // server, and so its limits, may have changed.
            if !self.wait_until_ready(&mut link.view).await {
                return self.stopped(&link);
            }
            let result = match link.view.read_at {
                Some(_) => self.pump(&mut link).await,
                None => self.ensure_stream(&link.api, &mut link.view).await,
            };
            match result {
                Ok(()) if self.shutdown.is_cancelled() => return self.stopped(&link),
                Ok(()) => {
                    backoff = BACKOFF_MIN;
                    if self.held.lock().expect("held").take().is_some() {
                        tracing::info!("upstream takes events again; forwarding resumed");
                    }
                }
                Err(e) => {
                    Metrics::add(&self.metrics.publish_failures, 1);
                    self.report(&e, &mut warned, backoff);
                    if matches!(e, ForwardError::Stream(_)) {
                        link.view.read_at = None;
                    }
                    let jittered = backoff.mul_f64(0.5 + rand::random::<f64>() * 0.5);
                    tokio::select! {
                        _ = tokio::time::sleep(jittered) => {}
                        _ = self.shutdown.cancelled() => return self.stopped(&link),
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// The forwarder stops: when every publish of this run settled (no
    /// pump is running, and none left any unsettled), the next start need
    /// not ask the stream what landed.
    fn stopped(&self, link: &Link) {
        if link.verify == Verify::No {
            if let Err(e) = self.store.set_in_doubt(&self.cfg.stream, false) {
                tracing::warn!(error = %e, "could not record a clean stop");
            }
        }
    }

    /// Logs a failure once, then at most once a minute (a node cut off
    /// for a day must not write a line every few seconds).
    fn report(&self, e: &ForwardError, warned: &mut Option<Instant>, backoff: Duration) {
        if let ForwardError::Held(reason) = e {
            let mut held = self.held.lock().expect("held");
            if held.as_deref() != Some(reason.as_str()) {
                tracing::error!(stream = %self.cfg.stream, %reason,
                    "upstream refuses every event; holding the backlog in order and retrying");
                *held = Some(reason.clone());
                *warned = Some(Instant::now());
                return;
            }
        }
        if warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            tracing::warn!(error = %e, retry_in = ?backoff, "forwarding paused; will retry");
            *warned = Some(Instant::now());
        } else {
            tracing::debug!(error = %e, retry_in = ?backoff, "forwarding paused; will retry");
        }
    }

    /// Waits for a live upstream link (and for `resume` when paused).
    /// Returns false when the node is stopping.
    async fn wait_until_ready(&mut self, view: &mut StreamView) -> bool {
        let mut warned_at: Option<Instant> = None;
        loop {
            let connected = *self.link.borrow_and_update() == LinkState::Connected;
            let paused = *self.paused.borrow_and_update();
            if connected && !paused {
                return true;
            }
            if !connected {
                view.read_at = None;
            }
            if !connected && warned_at.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                let (events, bytes) = self.store.backlog();
                tracing::warn!(servers = ?self.cfg.servers,
                    backlog_events = events, backlog_bytes = bytes,
                    "upstream unreachable; accepting and buffering events until it returns");
                warned_at = Some(Instant::now());
            }
            tokio::select! {
                _ = self.link.changed() => {}
                _ = self.paused.changed() => {}
                _ = tokio::time::sleep(WARN_EVERY) => {}
                _ = self.shutdown.cancelled() => return false,
            }
        }
    }

    /// Creates or finds the stream, reads its subjects and limits, and
    /// checks the routes' subjects against them.
    async fn ensure_stream(
        &self,
        js: &jetstream::Context,
        view: &mut StreamView,
    ) -> Result<(), ForwardError> {
        let c = &self.cfg;
        let stream_err = |e: &dyn std::fmt::Display| ForwardError::Stream(e.to_string());
        let mut s = if c.create_stream {
            js.get_or_create_stream(stream::Config {
                name: c.stream.clone(),
                subjects: vec![format!("{}.>", c.subject_prefix)],
                storage: stream::StorageType::File,
                num_replicas: c.replicas,
                duplicate_window: c.duplicate_window.0,
                ..Default::default()
            })
            .await
            .map_err(|e| stream_err(&e))?
        } else {
            js.get_stream(&c.stream).await.map_err(|e| stream_err(&e))?
        };
        let info = s.info().await.map_err(|e| stream_err(&e))?;
        let window = info.config.duplicate_window;
        if window < Duration::from_secs(120) {
            tracing::warn!(stream = %c.stream, duplicate_window = ?window,
                "the stream's duplicate window is shorter than 2 minutes: resends after an outage may be stored twice");
        }
        view.subjects = info.config.subjects.clone();
        view.read_at = Some(Instant::now());
        view.duplicate_window = window;
        let last = info.state.last_sequence;
        if self.store.landed(&c.stream) > Some(last) {
            // The stream was made anew: its sequences started again.
            self.store.remember_landed(&c.stream, last)?;
        }
        for (key, sample) in &self.route_subjects {
            if !view.captures(sample) {
                tracing::error!(route = %key, subject = %sample, stream = %c.stream, stream_subjects = ?view.subjects,
                    "this route's subject is outside the upstream stream: its events will be parked (jetedge parked list)");
            }
        }
        self.learn_max_event(info.config.max_message_size);
        tracing::info!(stream = %c.stream, replicas = info.config.num_replicas, duplicate_window = ?window,
            max_event = self.max_event.load(Ordering::Relaxed), "upstream stream ready");
        Ok(())
    }

    /// The largest envelope upstream takes: the server's `max_payload`,
    /// or the stream's `max_msg_size` when smaller. Kept in the store, so
    /// an offline start refuses at the door what could never be forwarded.
    fn learn_max_event(&self, stream_max: i32) {
        let mut max = self.client.server_info().max_payload as u64;
        if stream_max > 0 {
            max = max.min(stream_max as u64);
        }
        if max > 0 && self.max_event.swap(max, Ordering::Relaxed) != max {
            if let Err(e) = self.store.remember_max_event(max) {
                tracing::warn!(error = %e, "could not keep upstream's size limit in the store");
            }
        }
    }

    /// Publishes until an error or a stop. Always starts from the oldest
    /// entry in the outbox, so nothing unacknowledged is skipped.
    async fn pump(&mut self, link: &mut Link) -> Result<(), ForwardError> {
        let mut f = Flight::default();
        let mut done = Vec::with_capacity(REMOVE_BATCH);
        let mut failure: Option<ForwardError> = None;
        // A crash from here on may leave publishes unsettled: the mark is
        // on disk (the sync below) before the first one goes out. (Pumps
        // start on a connect or after a failure, so this write is rare.)
        self.store.set_in_doubt(&self.cfg.stream, true)?;
        // Removals queued by an earlier pump are applied before the outbox
        // is read again, so nothing acknowledged is sent twice.
        self.store.sync().await?;
        if link.verify.due(link.view.duplicate_window) {
            link.landed = self.what_landed(&link.api).await?;
            link.verify = Verify::No;
        }
        loop {
            let stopping = self.shutdown.is_cancelled() || *self.paused.borrow();
            if failure.is_none() && !stopping {
                if let Err(e) = self.fill(link, &mut f).await {
                    failure = Some(e);
                }
            }
            if f.acks.is_empty() {
                self.remove(link, &mut done).await?;
                if let Some(e) = failure {
                    return Err(e);
                }
                if stopping {
                    return Ok(());
                }
                if f.ready.is_empty() {
                    // Idle: whatever was remembered as taken is gone from
                    // the outbox, and nothing sent is unsettled.
                    link.acked.clear();
                    link.landed.clear();
                    link.verify = Verify::No;
                }
                tokio::select! {
                    _ = self.store.wait_for_data(Duration::from_secs(1)) => {}
                    _ = self.shutdown.cancelled() => {}
                    _ = self.paused.changed() => {}
                }
                continue;
            }
            let next = if self.shutdown.is_cancelled() {
                tokio::time::timeout(self.drain_timeout, f.acks.next())
                    .await
                    .ok()
                    .flatten()
            } else {
                tokio::select! {
                    ack = f.acks.next() => ack,
                    _ = self.shutdown.cancelled() => continue,
                }
            };
            let Some((sent, result)) = next else {
                // Draining for a stop timed out: the rest is resent after restart.
                return Ok(());
            };
            f.bytes -= sent.size;
            // Acks settle in publish order, and after a failure nothing
            // more is removed or parked in this pump: a batch whose last
            // event is settled had every event before it settled. What
            // upstream still took is remembered, so it is not sent again.
            match &failure {
                None => match self.settle(link, &sent, result).await {
                    Ok(()) => done.extend(sent.p.batch_done),
                    Err(e) => {
                        link.verify.unsettled(sent.at);
                        failure = Some(e);
                    }
                },
                Some(_) if result.is_ok() => {
                    link.acked.insert(sent.p.at);
                }
                Some(_) => link.verify.unsettled(sent.at),
            }
            if done.len() >= REMOVE_BATCH {
                self.remove(link, &mut done).await?;
            }
        }
    }

    /// Sends outbox events while the window has room.
    async fn fill(&self, link: &mut Link, f: &mut Flight) -> Result<(), ForwardError> {
        loop {
            if f.ready.is_empty() {
                let more = self.store.pending(f.cursor, READ_AHEAD)?;
                let Some(last) = more.last() else {
                    return Ok(());
                };
                f.cursor = Some(Position {
                    seq: last.at.seq,
                    index: last.at.index + 1,
                });
                f.ready.extend(more);
            }
            let p = f.ready.front().expect("refilled above");
            if link.acked.remove(&p.at) || link.landed.remove(&p.record.id) {
                let sent = Sent {
                    p: f.ready.pop_front().expect("just seen"),
                    size: 0,
                    at: Instant::now(),
                };
                f.acks.push_back(Box::pin(async move { (sent, Ok(0)) }));
                continue;
            }
            let size = p.record.payload.len() as u64;
            if !link.window.has_room(f.acks.len(), f.bytes, size) {
                return Ok(());
            }
            let p = f.ready.pop_front().expect("just seen");
            let deadline = link.window.deadline(self.cfg.ack_timeout.0, f.bytes);
            let ack = self
                .publish(&link.publisher, p, size, deadline)
                .await
                .map_err(ForwardError::Publish)?;
            f.bytes += size;
            f.acks.push_back(ack);
        }
    }

    /// What to do with one settled publish: done (taken or parked), or the
    /// failure that ends this pump.
    async fn settle(
        &self,
        link: &mut Link,
        sent: &Sent,
        result: Result<u64, Refusal>,
    ) -> Result<(), ForwardError> {
        let p = &sent.p;
        let (js, view) = (&link.api, &mut link.view);
        match result {
            Ok(seq) => {
                link.last_seq = link.last_seq.max(seq);
                if sent.size > 0 {
                    let now = Instant::now();
                    link.window.on_ack(sent.size, now - sent.at, now);
                    let seconds = (now - sent.at).as_secs_f64();
                    self.metrics.forward_seconds.observe(seconds);
                }
                Ok(())
            }
            Err(Refusal::TimedOut(after)) => {
                link.window.on_timeout();
                Err(ForwardError::Publish(format!(
                    "no ack within {after:?} (window now {} bytes)",
                    link.window.bytes()
                )))
            }
            Err(Refusal::Poison(reason, error)) => self.park(p, reason, error),
            Err(Refusal::NoResponders) => {
                let subject = &p.record.subject;
                if !view.captures(subject)
                    && view.read_at.is_none_or(|t| t.elapsed() >= SUBJECTS_REFRESH)
                {
                    // The stream's subjects may have changed since they were read.
                    let fresh = js.get_stream(&self.cfg.stream).await;
                    if let Ok(mut s) = fresh {
                        if let Ok(info) = s.info().await {
                            view.subjects = info.config.subjects.clone();
                            view.read_at = Some(Instant::now());
                        }
                    }
                }
                if view.captures(subject) {
                    // The stream is there for it but did not answer: it is
                    // being (re)created or elected. Set it up again.
                    return Err(ForwardError::Stream(format!(
                        "no stream answered for {subject}"
                    )));
                }
                let error = format!(
                    "no stream captures subject {subject} (stream {} takes {:?})",
                    self.cfg.stream, view.subjects
                );
                self.park(p, ParkReason::NoStream, error)
            }
            Err(Refusal::Held(reason)) => Err(ForwardError::Held(reason)),
            Err(Refusal::Transient(e)) => Err(ForwardError::Publish(e)),
        }
    }

    /// Moves an event upstream will never take aside, counted and logged
    /// once; the forwarder then treats it as done.
    fn park(&self, p: &Pending, reason: ParkReason, error: String) -> Result<(), ForwardError> {
        let r = &p.record;
        let meta = ParkedMeta {
            reason,
            error: error.clone(),
            parked_at: crate::envelope::format_time(time::OffsetDateTime::now_utc()),
            times: 1,
        };
        let seq = self.store.park(meta, r)?;
        Metrics::add(&self.metrics.events_parked, 1);
        tracing::error!(parked = seq, event_id = %r.id, subject = %r.subject, %error,
            "upstream refuses this event for good; parked it and went on (jetedge parked show {seq})");
        Ok(())
    }

    /// Sends one event; the returned future resolves once upstream
    /// answered for it, at once for one the client refuses to send, or
    /// with `TimedOut` after `deadline`.
    async fn publish(
        &self,
        js: &jetstream::Context,
        p: Pending,
        size: u64,
        deadline: Duration,
    ) -> Result<futures::future::BoxFuture<'static, Ack>, String> {
        let r = &p.record;
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", r.id.as_str());
        headers.insert("ce-type", r.type_.as_str());
        headers.insert("ce-source", r.source.as_str());
        headers.insert("traceparent", r.traceparent.as_str());
        headers.insert("content-type", crate::envelope::CONTENT_TYPE);
        let msg = PublishMessage::build()
            .payload(r.payload.clone().into())
            .headers(headers);
        let at = Instant::now();
        match js.send_publish(r.subject.clone(), msg).await {
            Ok(ack) => Ok(Box::pin(async move {
                let result =
                    match tokio::time::timeout(deadline, std::future::IntoFuture::into_future(ack))
                        .await
                    {
                        Ok(r) => r.map(|a| a.sequence).map_err(|e| classify(&e)),
                        Err(_) => Err(Refusal::TimedOut(deadline)),
                    };
                (Sent { p, size, at }, result)
            })),
            Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                let refusal = Refusal::Poison(ParkReason::TooLarge, e.to_string());
                Ok(Box::pin(
                    async move { (Sent { p, size, at }, Err(refusal)) },
                ))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Queues the removal of acknowledged batches, and keeps the stream
    /// sequence they reached: where to look for what landed next time.
    async fn remove(&self, link: &mut Link, done: &mut Vec<Forwarded>) -> Result<(), ForwardError> {
        if !done.is_empty() {
            let events = done.iter().map(|d| d.events).sum();
            self.store.remove_forwarded(std::mem::take(done)).await?;
            Metrics::add(&self.metrics.events_forwarded, events);
        }
        if link.last_seq > link.kept_seq {
            self.store
                .remember_landed(&self.cfg.stream, link.last_seq)?;
            link.kept_seq = link.last_seq;
        }
        Ok(())
    }
}

/// Tells what upstream's answer means for the event. The JetStream error
/// codes are nats-server's (server/errors.json).
fn classify(e: &PublishError) -> Refusal {
    const MESSAGE_EXCEEDS_MAXIMUM: u64 = 10054;
    const STORE_FAILED: u64 = 10077;
    const SEALED: u64 = 10109;
    const INSUFFICIENT_RESOURCES: u64 = 10023;
    const STORAGE_EXCEEDED: u64 = 10047;
    match e.kind() {
        PublishErrorKind::StreamNotFound => return Refusal::NoResponders,
        PublishErrorKind::MaxPayloadExceeded => {
            return Refusal::Poison(ParkReason::TooLarge, e.to_string())
        }
        PublishErrorKind::Other => {}
        _ => return Refusal::Transient(e.to_string()),
    }
    let Some(api) =
        std::error::Error::source(e).and_then(|s| s.downcast_ref::<async_nats::jetstream::Error>())
    else {
        return Refusal::Transient(e.to_string());
    };
    let text = api.to_string();
    match api.error_code().0 {
        MESSAGE_EXCEEDS_MAXIMUM => Refusal::Poison(ParkReason::TooLarge, text),
        STORE_FAILED if text.contains("per subject") => Refusal::Poison(ParkReason::Refused, text),
        STORE_FAILED if text.contains("to large") || text.contains("too large") => {
            Refusal::Poison(ParkReason::TooLarge, text)
        }
        STORE_FAILED | SEALED | INSUFFICIENT_RESOURCES | STORAGE_EXCEEDED => Refusal::Held(text),
        _ => Refusal::Transient(text),
    }
}
