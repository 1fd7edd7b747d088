//! NATS ingest: microapps and kiosks publish events on the site's own
//! nats-server, on `{prefix}.{source}[.…]` (`ingest.>` by default).
//!
//! The message body is a CloudEvent, a JSON array of them, or any other
//! JSON object (shaped like a webhook of that source). Each goes through the
//! same pipeline as HTTP ingest. When the message has a reply subject, the
//! reply carries the JSON an HTTP sender would get, and is sent only after
//! the event is durable. A publish without one is fire-and-forget: core
//! NATS delivers it at most once, and every message jetedge receives is
//! persisted like any other, including those still buffered when the node
//! stops (the subscription is drained, not dropped). The one loss jetedge
//! can cause is falling more than `[local] max_pending` messages behind,
//! when the client drops the excess: counted in
//! `jetedge_local_ingest_dropped_total` and logged.
//!
//! Messages are taken in bursts: whatever is waiting (up to `BURST`) is
//! grouped by source in arrival order, and each source's group is one
//! ordered persist call, so a kiosk's events keep their order while many
//! kiosks share each flush.

use super::answer::{answer_body, batch};
use super::{Answer, Ingest, Rejection, Via};
use crate::config::{LocalConfig, Scheme};
use crate::pipeline::{Invalid, Normalised};
use async_nats::{Client, Message};
use futures::{FutureExt, StreamExt};
use hyper::header::{HeaderName, HeaderValue};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

/// Events shaped from one message (each may still have been refused).
type Shaped = Vec<Result<Normalised, Rejection>>;

/// A message's source, its events, and whether it was a batch.
struct Parsed {
    source: String,
    events: Shaped,
    batch: bool,
}

/// Most messages taken in one burst.
const BURST: usize = 512;

/// Serves NATS ingest until `stop`.
pub async fn serve(
    client: Client,
    cfg: LocalConfig,
    live: Arc<crate::reload::Live<Ingest>>,
    stop: CancellationToken,
) {
    let allowed = allowed_sources(&cfg, &live.get());
    let prefix = cfg.ingest_prefix().to_string();
    let mut sub = match client
        .queue_subscribe(cfg.ingest_subject.clone(), cfg.queue.clone())
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(subject = %cfg.ingest_subject, error = %e, "cannot subscribe for local NATS ingest");
            return;
        }
    };
    tracing::info!(subject = %cfg.ingest_subject, queue = %cfg.queue, sources = ?allowed, "local NATS ingest ready");
    let mut draining = false;
    loop {
        let first = tokio::select! {
            m = sub.next() => match m { Some(m) => m, None => break },
            _ = stop.cancelled(), if !draining => {
                // Stop taking new messages, but keep every message the
                // server already sent: the subscription ends (`None`) once
                // the server confirmed the unsubscribe and all of them
                // were read.
                draining = true;
                if let Err(e) = sub.drain().await {
                    tracing::warn!(error = %e, "could not drain the local ingest subscription");
                    break;
                }
                continue;
            }
        };
        let mut burst = vec![first];
        while burst.len() < BURST {
            match sub.next().now_or_never() {
                Some(Some(m)) => burst.push(m),
                _ => break,
            }
        }
        // A reload may have changed the sources: each burst takes the
        // ingest of the moment, and who may publish with it.
        let ingest = live.get();
        let allowed = allowed_sources(&cfg, &ingest);
        handle_burst(&client, &ingest, &prefix, &allowed, burst).await;
    }
}

/// The sources that may be published over NATS.
fn allowed_sources(cfg: &LocalConfig, ingest: &Ingest) -> HashSet<String> {
    if !cfg.sources.is_empty() {
        return cfg.sources.iter().cloned().collect();
    }
    ingest
        .source_names()
        .filter(|name| {
            ingest
                .source(name)
                .is_ok_and(|s| s.verifier.scheme() == Scheme::None)
        })
        .map(str::to_string)
        .collect()
}

/// One message's events, waiting for their answers.
struct Pending {
    reply: Option<async_nats::Subject>,
    /// How many events the message held and whether it was a batch, or
    /// why it was refused whole.
    shape: Result<(usize, bool), Rejection>,
}

async fn handle_burst(
    client: &Client,
    ingest: &Ingest,
    prefix: &str,
    allowed: &HashSet<String>,
    burst: Vec<Message>,
) {
    let now = OffsetDateTime::now_utc();
    let mut pending = Vec::with_capacity(burst.len());
    let mut by_source: HashMap<String, (Vec<usize>, Shaped)> = HashMap::new();
    for (i, msg) in burst.into_iter().enumerate() {
        let shaped = shape(ingest, prefix, allowed, &msg, now).map(|parsed| {
            let counts = (parsed.events.len(), parsed.batch);
            let entry = by_source.entry(parsed.source).or_default();
            entry.0.push(i);
            entry.1.extend(parsed.events);
            counts
        });
        if let Err(r) = &shaped {
            ingest.metrics.reject(None, r.code());
        }
        pending.push(Pending {
            reply: msg.reply.clone(),
            shape: shaped,
        });
    }
    // Sources persist concurrently; within one, in arrival order.
    let persisted = futures::future::join_all(by_source.into_iter().map(
        |(source, (owners, events))| async move { (owners, ingest.persist(&source, events).await) },
    ))
    .await;
    let mut answers: Vec<Vec<Answer>> = vec![Vec::new(); pending.len()];
    for (owners, mut results) in persisted {
        for i in owners {
            let n = pending[i].shape.as_ref().map_or(0, |(n, _)| *n);
            answers[i] = results.drain(..n).collect();
        }
    }
    for (p, answers) in pending.into_iter().zip(answers) {
        let Some(reply) = p.reply else { continue };
        let body = match p.shape {
            Err(r) => answer_body(&Answer::Rejected(r)).1,
            Ok((_, true)) => batch(&answers).1,
            Ok((_, false)) => answers
                .first()
                .map(|a| answer_body(a).1)
                .unwrap_or(Value::Null),
        };
        if let Err(e) = client.publish(reply, body.to_string().into()).await {
            tracing::warn!(error = %e, "could not send a local ingest reply");
        }
    }
}

/// The source and events of one message, or why it was refused whole.
fn shape(
    ingest: &Ingest,
    prefix: &str,
    allowed: &HashSet<String>,
    msg: &Message,
    now: OffsetDateTime,
) -> Result<Parsed, Rejection> {
    let name = msg
        .subject
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|rest| rest.split('.').next())
        .unwrap_or("");
    if !allowed.contains(name) {
        return Err(Rejection::UnknownSource(name.to_string()));
    }
    let source = ingest.admit(name, Via::Nats)?;
    let headers = http_headers(msg.headers.as_ref());
    let body: Value = serde_json::from_slice(&msg.payload)
        .map_err(|e| Rejection::Invalid(Invalid::Json(e.to_string())))?;
    let cloudevent = |v: Value| {
        source
            .shape
            .from_cloudevent(&headers, v, now)
            .map_err(Rejection::from)
    };
    let (events, batch) = match body {
        Value::Array(items) if items.is_empty() => {
            let empty = Invalid::CloudEvent("an empty batch holds no events".into());
            return Err(Rejection::Invalid(empty));
        }
        Value::Array(items) => (items.into_iter().map(cloudevent).collect(), true),
        v if v.get("specversion").is_some() => (vec![cloudevent(v)], false),
        v => {
            let ev = source
                .shape
                .from_webhook(&headers, v, now)
                .map(|mut n| {
                    n.keys.extend(source.shape.body_key(&msg.payload));
                    n
                })
                .map_err(Rejection::from);
            (vec![ev], false)
        }
    };
    Ok(Parsed {
        source: name.to_string(),
        events,
        batch,
    })
}

/// NATS headers as HTTP headers, for the shaping code both transports share.
fn http_headers(h: Option<&async_nats::HeaderMap>) -> hyper::HeaderMap {
    let mut out = hyper::HeaderMap::new();
    for (name, values) in h.into_iter().flat_map(|h| h.iter()) {
        let Ok(name) = HeaderName::from_bytes(name.to_string().as_bytes()) else {
            continue;
        };
        for v in values {
            if let Ok(v) = HeaderValue::from_str(v.as_str()) {
                out.append(name.clone(), v);
            }
        }
    }
    out
}
