//! A subscription's durable pull consumer on upstream: created on first
//! start (`deliver` says where it begins), kept (and its filters updated)
//! afterwards, so a restarted node resumes where it stopped. Messages are
//! delivered `max_in_flight` at a time; each is kept alive upstream while
//! its retries run, and acked only once settled.

use super::{now_ms, Outcome, Stats, Subscription};
use crate::config::Deliver;
use crate::store::Record;
use crate::upstream::LinkState;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::{self, AckKind, Message};
use futures::StreamExt;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// Wait between attempts to set the consumer up while upstream refuses.
const SETUP_RETRY: Duration = Duration::from_secs(2);

pub(super) async fn run(
    sub: Arc<Subscription>,
    client: async_nats::Client,
    mut link: watch::Receiver<LinkState>,
    stream: String,
) {
    let js = jetstream::new(client);
    let mut warned = false;
    while !sub.stop.is_cancelled() {
        if !wait_connected(&sub, &mut link).await {
            return;
        }
        match consumer(&js, &stream, &sub).await {
            Ok(c) => {
                warned = false;
                pump(&sub, &c).await;
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(subscription = %sub.cfg.name, stream = %stream, error = %e,
                        "cannot set up the upstream consumer; retrying");
                    warned = true;
                }
                sub.pause(SETUP_RETRY).await;
            }
        }
    }
}

async fn wait_connected(sub: &Subscription, link: &mut watch::Receiver<LinkState>) -> bool {
    tokio::select! {
        r = link.wait_for(|s| *s == LinkState::Connected) => r.is_ok(),
        _ = sub.stop.cancelled() => false,
    }
}

/// Gets the durable consumer, creating it (from `deliver`) or updating its
/// filters and limits to the config.
async fn consumer(
    js: &jetstream::Context,
    stream: &str,
    sub: &Subscription,
) -> Result<PullConsumer, String> {
    let stream = js
        .get_stream(stream)
        .await
        .map_err(|e| format!("stream {stream}: {e}"))?;
    let cfg = &sub.cfg;
    let wanted = |mut c: pull::Config| {
        c.durable_name = Some(sub.consumer.clone());
        c.filter_subject = String::new();
        c.filter_subjects = cfg.subjects.clone();
        c.ack_policy = AckPolicy::Explicit;
        c.ack_wait = cfg.ack_wait.0;
        c.max_ack_pending = (cfg.max_in_flight * 2) as i64;
        c
    };
    match stream.get_consumer::<pull::Config>(&sub.consumer).await {
        Ok(mut existing) => {
            let now = existing.cached_info().config.clone();
            let update = wanted(pull::Config {
                deliver_policy: now.deliver_policy,
                ..Default::default()
            });
            let changed = now.filter_subjects != update.filter_subjects
                || now.ack_wait != update.ack_wait
                || now.max_ack_pending != update.max_ack_pending;
            if changed {
                existing = stream
                    .update_consumer(update)
                    .await
                    .map_err(|e| format!("updating consumer {}: {e}", sub.consumer))?;
            }
            Ok(existing)
        }
        Err(_) => {
            let deliver_policy =
                match Deliver::parse(&cfg.deliver, time::OffsetDateTime::now_utc())? {
                    Deliver::New => DeliverPolicy::New,
                    Deliver::All => DeliverPolicy::All,
                    Deliver::Since(start_time) => DeliverPolicy::ByStartTime { start_time },
                };
            let c = wanted(pull::Config {
                deliver_policy,
                ..Default::default()
            });
            let created = stream
                .create_consumer(c)
                .await
                .map_err(|e| format!("creating consumer {}: {e}", sub.consumer))?;
            tracing::info!(subscription = %cfg.name, consumer = %sub.consumer, deliver = %cfg.deliver, "upstream consumer created");
            Ok(created)
        }
    }
}

/// Pulls and delivers until the node stops or the pull breaks down.
async fn pump(sub: &Arc<Subscription>, consumer: &PullConsumer) {
    let batch = sub.cfg.max_in_flight.clamp(1, 256);
    let messages = consumer
        .stream()
        .max_messages_per_batch(batch)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await;
    let mut messages = match messages {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(subscription = %sub.cfg.name, error = %e, "pull failed");
            sub.pause(SETUP_RETRY).await;
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(sub.cfg.max_in_flight));
    // Stream sequences being handled: a redelivery of one of them is
    // ignored, the first copy settles it.
    let busy = Arc::new(Mutex::new(HashSet::new()));
    let mut tasks = JoinSet::new();
    loop {
        // Messages are taken as upstream sends them (at most the
        // consumer's max_ack_pending, twice max_in_flight, are out at
        // once); each waits for a delivery slot in its own task, kept
        // alive upstream meanwhile, so a long retry of one message does
        // not let the ack_wait of those queued behind it run out.
        let next = tokio::select! {
            m = messages.next() => m,
            _ = sub.stop.cancelled() => break,
        };
        while tasks.try_join_next().is_some() {}
        let msg = match next {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                use async_nats::jetstream::consumer::pull::MessagesErrorKind as K;
                tracing::debug!(subscription = %sub.cfg.name, error = %e, "pull error");
                if matches!(
                    e.kind(),
                    K::ConsumerDeleted | K::RequestLimitExceeded | K::PushBasedConsumer
                ) {
                    break;
                }
                continue;
            }
            None => break,
        };
        let info = msg.info().ok();
        let seq = info.as_ref().map_or(0, |i| i.stream_sequence);
        if let Some(i) = &info {
            sub.note_pending(i.pending);
        }
        if !busy.lock().expect("busy set").insert(seq) {
            continue;
        }
        let (sub, busy, slots) = (sub.clone(), busy.clone(), slots.clone());
        tasks.spawn(async move {
            let wait = keep_alive(&msg, sub.cfg.ack_wait.0, slots.acquire_owned());
            let permit = tokio::select! {
                p = wait => p.expect("never closed"),
                _ = sub.stop.cancelled() => {
                    let _ = msg.ack_with(AckKind::Nak(None)).await;
                    busy.lock().expect("busy set").remove(&seq);
                    return;
                }
            };
            settle(&sub, msg).await;
            busy.lock().expect("busy set").remove(&seq);
            drop(permit);
        });
    }
    // Unsettled messages are nak'd by their tasks once they see the stop.
    while tasks.join_next().await.is_some() {}
}

/// Delivers one upstream message and settles it upstream.
async fn settle(sub: &Subscription, msg: Message) {
    let record = record_of(&msg);
    let outcome = if sub.cfg.local_first
        && sub
            .store
            .local_marked(&sub.cfg.name, &record.id, now_ms())
            .unwrap_or(false)
    {
        Stats::add(&sub.stats.skipped);
        Outcome::Delivered
    } else {
        keep_alive(&msg, sub.cfg.ack_wait.0, sub.deliver(&record)).await
    };
    let settled = match outcome {
        Outcome::Delivered => msg.ack().await,
        Outcome::Dead(meta) => match sub.bury(meta, record).await {
            Ok(()) => msg.ack().await,
            Err(e) => {
                tracing::error!(subscription = %sub.cfg.name, error = %e, "cannot store the dead letter; upstream will redeliver");
                msg.ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                    .await
            }
        },
        Outcome::Stopped => msg.ack_with(AckKind::Nak(None)).await,
    };
    if let Err(e) = settled {
        // Upstream redelivers after ack_wait; targets see the event twice.
        tracing::debug!(subscription = %sub.cfg.name, error = %e, "ack failed");
    }
}

/// Runs `work` (a delivery, or the wait for a slot), telling upstream every
/// third of `ack_wait` that the message is still in hand, so long retries
/// do not cause redeliveries.
async fn keep_alive<T>(
    msg: &Message,
    ack_wait: Duration,
    work: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(work);
    let every = (ack_wait / 3).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => { let _ = msg.ack_with(AckKind::Progress).await; }
        }
    }
}

/// The event in an upstream message: the headers jetedge's forwarder sets,
/// with fallbacks for messages other publishers put in the stream.
fn record_of(msg: &Message) -> Record {
    let header = |name: &str| {
        msg.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_string())
    };
    let id = header("Nats-Msg-Id")
        .or_else(|| {
            serde_json::from_slice::<serde_json::Value>(&msg.payload)
                .ok()
                .and_then(|v| v.get("id")?.as_str().map(str::to_string))
        })
        .unwrap_or_else(|| match msg.info() {
            Ok(i) => format!("{}-{}", i.stream, i.stream_sequence),
            Err(_) => format!("upstream-{}", uuid::Uuid::now_v7()),
        });
    Record {
        subject: msg.subject.to_string(),
        id,
        type_: header("ce-type").unwrap_or_default(),
        source: header("ce-source").unwrap_or_default(),
        traceparent: header("traceparent").unwrap_or_default(),
        payload: msg.payload.to_vec(),
    }
}
