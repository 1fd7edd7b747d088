//! The forwarder: drains the outbox into upstream JetStream, in order.
//!
//! It keeps up to `max_in_flight` publishes awaiting their PubAck, each with
//! `Nats-Msg-Id` = event id, and removes an outbox entry only after its ack.
//! On any failure it stops sending, settles what is in flight, and starts
//! again from the oldest entry still in the outbox after a backoff:
//! JetStream's duplicate window drops the resends that had in fact landed.
//!
//! Invariants: this is the only task that removes outbox entries; it never
//! holds more than `max_in_flight` records in memory.

use crate::config::UpstreamConfig;
use crate::metrics::Metrics;
use crate::store::{Forwarded, Pending, Position, Store, StoreError};
use crate::upstream::LinkState;
use async_nats::jetstream::{self, message::PublishMessage, stream};
use async_nats::HeaderMap;
use futures::stream::{FuturesOrdered, StreamExt};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Acknowledged outbox batches removed in one sled batch.
const REMOVE_BATCH: usize = 16;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often a warning repeats while upstream stays unreachable.
const OFFLINE_WARN_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("publish failed: {0}")]
    Publish(String),
    #[error("cannot set up stream: {0}")]
    Stream(String),
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
}

/// What one publish settled to: the batch it completes, if it is the last
/// of one, and whether upstream took it.
type Ack = (Option<Forwarded>, Result<(), String>);

impl Forwarder {
    pub async fn run(mut self) {
        let js = jetstream::ContextBuilder::new()
            .timeout(self.cfg.ack_timeout.0)
            // Our own window bounds what is in flight; the context's is only a backstop.
            .max_ack_inflight(self.cfg.max_in_flight * 2)
            .backpressure_on_inflight(true)
            .build(self.client.clone());
        let mut stream_ready = false;
        let mut backoff = BACKOFF_MIN;
        loop {
            if !self.wait_until_ready().await {
                return;
            }
            let result = match stream_ready {
                true => self.pump(&js).await,
                false => self.ensure_stream(&js).await.map(|()| stream_ready = true),
            };
            match result {
                Ok(()) if self.shutdown.is_cancelled() => return,
                Ok(()) => backoff = BACKOFF_MIN,
                Err(e) => {
                    Metrics::add(&self.metrics.publish_failures, 1);
                    tracing::warn!(error = %e, retry_in = ?backoff, "forwarding paused; will retry");
                    let jittered = backoff.mul_f64(0.5 + rand::random::<f64>() * 0.5);
                    tokio::select! {
                        _ = tokio::time::sleep(jittered) => {}
                        _ = self.shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Waits for a live upstream link (and for `resume` when paused).
    /// Returns false when the node is stopping.
    async fn wait_until_ready(&mut self) -> bool {
        let mut warned_at: Option<Instant> = None;
        loop {
            let connected = *self.link.borrow_and_update() == LinkState::Connected;
            let paused = *self.paused.borrow_and_update();
            if connected && !paused {
                return true;
            }
            if !connected && warned_at.is_none_or(|t| t.elapsed() >= OFFLINE_WARN_EVERY) {
                let (events, bytes) = self.store.backlog();
                tracing::warn!(servers = ?self.cfg.servers, backlog_events = events, backlog_bytes = bytes,
                    "upstream unreachable; accepting and buffering events until it returns");
                warned_at = Some(Instant::now());
            }
            tokio::select! {
                _ = self.link.changed() => {}
                _ = self.paused.changed() => {}
                _ = tokio::time::sleep(OFFLINE_WARN_EVERY) => {}
                _ = self.shutdown.cancelled() => return false,
            }
        }
    }

    async fn ensure_stream(&self, js: &jetstream::Context) -> Result<(), ForwardError> {
        let c = &self.cfg;
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
            .map_err(|e| ForwardError::Stream(e.to_string()))?
        } else {
            js.get_stream(&c.stream)
                .await
                .map_err(|e| ForwardError::Stream(e.to_string()))?
        };
        let info = s
            .info()
            .await
            .map_err(|e| ForwardError::Stream(e.to_string()))?;
        let window = info.config.duplicate_window;
        if window < Duration::from_secs(120) {
            tracing::warn!(stream = %c.stream, duplicate_window = ?window,
                "the stream's duplicate window is shorter than 2 minutes: resends after an outage may be stored twice");
        }
        tracing::info!(stream = %c.stream, replicas = info.config.num_replicas, duplicate_window = ?window, "upstream stream ready");
        Ok(())
    }

    /// Publishes until an error or a stop. Always starts from the oldest
    /// entry in the outbox, so nothing unacknowledged is skipped.
    async fn pump(&mut self, js: &jetstream::Context) -> Result<(), ForwardError> {
        let window = self.cfg.max_in_flight;
        let mut inflight: FuturesOrdered<futures::future::BoxFuture<'static, Ack>> =
            FuturesOrdered::new();
        let mut done = Vec::with_capacity(REMOVE_BATCH);
        let mut cursor = None;
        let mut failure: Option<String> = None;
        // Removals queued by an earlier pump are applied before the outbox
        // is read again, so nothing acknowledged is sent twice.
        self.store.sync().await?;
        loop {
            let stopping = self.shutdown.is_cancelled() || *self.paused.borrow();
            let room = window - inflight.len();
            if failure.is_none() && !stopping && (inflight.is_empty() || room >= window / 4) {
                for p in self.store.pending(cursor, room)? {
                    cursor = Some(Position {
                        seq: p.at.seq,
                        index: p.at.index + 1,
                    });
                    match self.publish(js, p).await {
                        Ok(fut) => inflight.push_back(fut),
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
            }
            if inflight.is_empty() {
                self.remove(&mut done).await?;
                if let Some(e) = failure {
                    return Err(ForwardError::Publish(e));
                }
                if stopping {
                    return Ok(());
                }
                tokio::select! {
                    _ = self.store.wait_for_data(Duration::from_secs(1)) => {}
                    _ = self.shutdown.cancelled() => {}
                    _ = self.paused.changed() => {}
                }
                continue;
            }
            let next = if self.shutdown.is_cancelled() {
                tokio::time::timeout(self.drain_timeout, inflight.next())
                    .await
                    .ok()
                    .flatten()
            } else {
                tokio::select! {
                    ack = inflight.next() => ack,
                    _ = self.shutdown.cancelled() => continue,
                }
            };
            let Some((batch_done, result)) = next else {
                // Draining for a stop timed out: the rest is resent after restart.
                return Ok(());
            };
            match result {
                // Acks settle in publish order, and any failure ends this
                // pump before later batches are removed: a batch whose last
                // event is acked had every event acked.
                Ok(()) if failure.is_none() => done.extend(batch_done),
                Ok(()) => {}
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
            if done.len() >= REMOVE_BATCH {
                self.remove(&mut done).await?;
            }
        }
    }

    /// Sends one event; the returned future resolves once upstream
    /// acknowledged it (or at once, for an event set aside because
    /// upstream can never take it).
    async fn publish(
        &self,
        js: &jetstream::Context,
        p: Pending,
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
        let batch_done = p.batch_done;
        match js.send_publish(r.subject.clone(), msg).await {
            Ok(ack) => Ok(Box::pin(async move {
                (batch_done, ack.await.map(drop).map_err(|e| e.to_string()))
            })),
            Err(e) if e.kind() == jetstream::context::PublishErrorKind::MaxPayloadExceeded => {
                tracing::error!(seq = p.at.seq, index = p.at.index, event_id = %r.id, error = %e,
                    "upstream refuses this event's size; a copy is kept in the store's corrupt tree");
                self.store.quarantine(p.at, r).map_err(|e| e.to_string())?;
                Metrics::add(&self.metrics.events_quarantined, 1);
                Ok(Box::pin(async move { (batch_done, Ok(())) }))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    async fn remove(&self, done: &mut Vec<Forwarded>) -> Result<(), ForwardError> {
        if !done.is_empty() {
            let events = done.iter().map(|d| d.events).sum();
            self.store.remove_forwarded(std::mem::take(done)).await?;
            Metrics::add(&self.metrics.events_forwarded, events);
        }
        Ok(())
    }
}
