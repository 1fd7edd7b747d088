//! Egress lines of the benchmark: upstream events delivered to the site.
//!
//! (g) a bare async-nats pull consumer on the upstream stream, acking each
//!     message (the ceiling);
//! (h) jetedge: upstream -> a core subject on a separate site nats-server,
//!     counted by a subscriber there;
//! (i) jetedge: upstream -> a signed webhook, received by a real HTTP
//!     server that checks every signature.
//! Each run reads the same `n` 1 KiB events from its own durable consumer,
//! timed from the first event delivered to the last (the steady rate: the
//! node's start and the consumer's creation are not counted, as the bare
//! consumer's are not).

use super::body_of;
use super::support::nats::NatsServer;
use super::support::webhook::{Mode, Receiver};
use super::support::{node_config, parse_config, TempDir, SECRET, SECRET_ENV};
use async_nats::jetstream::{self, consumer::pull, stream};
use futures::StreamExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Rates {
    pub bare: f64,
    pub subject: f64,
    pub webhook: f64,
}

pub async fn rates(upstream: &NatsServer, n: usize) -> Rates {
    let site = NatsServer::start();
    let js = jetstream::new(async_nats::connect(upstream.url()).await.unwrap());
    js.create_stream(stream::Config {
        name: "EGRESS".into(),
        subjects: vec!["egress.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut acks = Vec::new();
    for i in 0..n {
        let mut h = async_nats::HeaderMap::new();
        let id = format!("eg-{i}");
        h.insert("Nats-Msg-Id", id.as_str());
        h.insert("ce-type", "order.created");
        let mut event: serde_json::Value = serde_json::from_slice(&body_of(i)).unwrap();
        event["id"] = id.clone().into();
        let ack = js
            .publish_with_headers("egress.hub.order.created", h, event.to_string().into())
            .await
            .unwrap();
        acks.push(ack);
        if acks.len() == 1024 || i + 1 == n {
            for a in acks.drain(..) {
                a.await.unwrap();
            }
        }
    }
    let bare = bare_consumer(&js, n).await;
    Rates {
        bare,
        subject: to_subject(upstream, &site, n).await,
        webhook: to_webhook(upstream, n).await,
    }
}

/// (g): the same pull-and-ack loop with nothing behind it.
async fn bare_consumer(js: &jetstream::Context, n: usize) -> f64 {
    let stream = js.get_stream("EGRESS").await.unwrap();
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("bare".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(64)
        .messages()
        .await
        .unwrap();
    let mut started = None;
    for _ in 0..n {
        let m = messages.next().await.unwrap().unwrap();
        started.get_or_insert_with(Instant::now);
        m.ack().await.unwrap();
    }
    rate_after_first(n, started)
}

/// Events per second after the first: `n - 1` deliveries since `first`.
fn rate_after_first(n: usize, first: Option<Instant>) -> f64 {
    let secs = first.map_or(f64::NAN, |t| t.elapsed().as_secs_f64());
    (n - 1) as f64 / secs
}

/// A node whose subscription `name` (its own durable consumer) reads the whole stream.
fn node_text(dir: &TempDir, upstream: &NatsServer, name: &str, target: &str) -> String {
    node_config(dir.path(), &[upstream.url()]).replace("[upstream]\n", "[upstream]\nstream = \"EGRESS\"\nsubject_prefix = \"egress\"\n")
        + &format!("\n[[subscription]]\nname = \"{name}\"\nsubjects = [\"egress.>\"]\ndeliver = \"all\"\n{target}\n")
}

/// Starts a node with `text` and returns its delivery rate: `delivered()`
/// counts what arrived, timed from the first to the `n`th.
async fn time_node(text: &str, n: usize, delivered: impl Fn() -> usize) -> f64 {
    let node = jetedge::Node::start(parse_config(text)).await.unwrap();
    let mut first = None;
    loop {
        let got = delivered();
        if got > 0 {
            first.get_or_insert((Instant::now(), got));
        }
        if got >= n {
            break;
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let (at, got) = first.expect("the loop saw a delivery");
    let rate = (n - got) as f64 / at.elapsed().as_secs_f64();
    node.shutdown().await;
    rate
}

/// (h)
async fn to_subject(upstream: &NatsServer, site: &NatsServer, n: usize) -> f64 {
    let client = async_nats::connect(site.url()).await.unwrap();
    let mut sub = client.subscribe("site.bench").await.unwrap();
    client.flush().await.unwrap();
    let got = Arc::new(AtomicUsize::new(0));
    let counter = got.clone();
    let reader = tokio::spawn(async move {
        while sub.next().await.is_some() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    let dir = TempDir::new("bench-egress-subject");
    let text = node_text(&dir, upstream, "subject", "to_subject = \"site.bench\"")
        + &format!("[local]\nservers = [{:?}]\n", site.url());
    let rate = time_node(&text, n, || got.load(Ordering::Relaxed)).await;
    reader.abort();
    rate
}

/// (i)
async fn to_webhook(upstream: &NatsServer, n: usize) -> f64 {
    let hook = Receiver::start(SECRET, Mode::Ok).await;
    let dir = TempDir::new("bench-egress-webhook");
    let target = format!(
        "to_webhook = {{ url = \"{}\", secret = \"env:{SECRET_ENV}\" }}",
        hook.url
    );
    let rate = time_node(&node_text(&dir, upstream, "webhook", &target), n, || {
        hook.count()
    })
    .await;
    assert_eq!(hook.bad_requests(), 0);
    rate
}
