//! Egress against real servers: an upstream JetStream server, a separate
//! site nats-server, and microapp stand-ins that are real HTTP servers
//! (checking signatures with the reference Standard Webhooks library) and
//! real NATS subscribers.

use crate::support;

use async_nats::jetstream;
use futures::StreamExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};
use support::nats::NatsServer;
use support::node::Binary;
use support::webhook::{Mode, Receiver};
use support::{node_config, TempDir, SECRET, SECRET_ENV};

/// The upstream stream as the node creates it, made by the test first so
/// events can be published before the node runs.
async fn upstream_stream(url: &str) -> jetstream::Context {
    let js = support::nats::jetstream(&[url.to_string()]).await;
    js.get_or_create_stream(jetstream::stream::Config {
        name: "EDGE".into(),
        subjects: vec!["events.>".into()],
        duplicate_window: Duration::from_secs(7200),
        ..Default::default()
    })
    .await
    .unwrap();
    js
}

/// Publishes `n` CloudEvents on `events.{source}.order.created`, as other
/// sites' nodes would; returns their ids.
async fn publish(js: &jetstream::Context, source: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    let mut acks = Vec::new();
    for i in 0..n {
        let id = format!("{source}-{i}-{}", uuid::Uuid::now_v7().simple());
        let event = json!({"specversion": "1.0", "id": id, "source": format!("/jetedge/hub/{source}"),
                           "type": "order.created", "datacontenttype": "application/json",
                           "data": {"n": i, "sku": "SKU-1"}});
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", id.as_str());
        h.insert("ce-type", "order.created");
        h.insert("ce-source", format!("/jetedge/hub/{source}").as_str());
        let subject = format!("events.{source}.order.created");
        acks.push(
            js.publish_with_headers(subject, h, event.to_string().into())
                .await
                .unwrap(),
        );
        if acks.len() == 512 {
            for a in acks.drain(..) {
                a.await.unwrap();
            }
        }
        ids.push(id);
    }
    for a in acks {
        a.await.unwrap();
    }
    ids
}

fn subscription(name: &str, subjects: &str, extra: &str) -> String {
    format!(
        "\n[[subscription]]\nname = \"{name}\"\nsubjects = [\"{subjects}\"]\ndeliver = \"all\"\nack_wait = \"5s\"\n{extra}\n"
    )
}

fn webhook(url: &str) -> String {
    format!("to_webhook = {{ url = \"{url}\", secret = \"env:{SECRET_ENV}\", timeout = \"5s\" }}\n")
}

/// Ids a core NATS subscriber received, in arrival order, gathered in the background.
struct Subscriber {
    ids: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Subscriber {
    async fn start(url: &str, subject: &str) -> Self {
        let client = async_nats::connect(url).await.unwrap();
        let mut sub = client.subscribe(subject.to_string()).await.unwrap();
        client.flush().await.unwrap();
        let ids = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = ids.clone();
        tokio::spawn(async move {
            let _client = client;
            while let Some(m) = sub.next().await {
                let id = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Msg-Id"))
                    .map(|v| v.to_string());
                let ev: Value = serde_json::from_slice(&m.payload).unwrap();
                assert_eq!(
                    id.as_deref(),
                    ev["id"].as_str(),
                    "Nats-Msg-Id is the event id"
                );
                seen.lock().unwrap().push(id.unwrap());
            }
        });
        Self { ids }
    }
    fn ids(&self) -> Vec<String> {
        self.ids.lock().unwrap().clone()
    }
}

/// Each of `want` exactly once in `got`.
fn assert_once(got: &[String], want: &[String], what: &str) {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in got {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let missing = want
        .iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .count();
    let doubled = counts.values().filter(|c| **c > 1).count();
    assert_eq!(
        (missing, doubled, got.len()),
        (0, 0, want.len()),
        "{what}: missing, doubled, total"
    );
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn admin_get(node: &Binary, path: &str) -> Value {
    node.admin_json(path)
}

fn cli(node: &Binary, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_jetedge"))
        .args(args)
        .arg("-c")
        .arg(node.config_path())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_events_reach_subject_and_webhook_once_across_restarts() {
    let upstream = NatsServer::start();
    let site = NatsServer::start();
    let js = upstream_stream(&upstream.url()).await;
    let hook = Receiver::start(SECRET, Mode::Ok).await;
    let local = Subscriber::start(&site.url(), "site.orders").await;
    // A site stream for apps that need durability; its duplicate window
    // drops the repeats a crash causes.
    let site_js = support::nats::jetstream(&[site.url()]).await;
    site_js
        .create_stream(jetstream::stream::Config {
            name: "SITE".into(),
            subjects: vec!["site.durable.>".into()],
            duplicate_window: Duration::from_secs(600),
            ..Default::default()
        })
        .await
        .unwrap();
    let dir = TempDir::new("egress");
    let targets = String::from("to_subject = \"site.orders\"\n")
        + "to_stream = { subject = \"site.durable.orders\", stream = \"SITE\" }\n"
        + &webhook(&hook.url);
    let text = node_config(&dir.path().join("data"), &[upstream.url()])
        + &format!("\n[local]\nservers = [{:?}]\n", site.url())
        + &subscription("orders", "events.shop.>", &targets);
    let mut node = Binary::configured(dir.path(), &text);
    tokio::task::block_in_place(|| node.start());

    let first = publish(&js, "shop", 4_000).await;
    // Other subjects are not this subscription's.
    publish(&js, "other", 100).await;
    wait_for("part of the first batch", Duration::from_secs(60), || {
        hook.taken().len() >= 1_500
    })
    .await;
    // A graceful restart in the middle: unsettled messages go back upstream.
    tokio::task::block_in_place(|| node.stop());
    let second = publish(&js, "shop", 3_000).await;
    tokio::task::block_in_place(|| node.start());
    wait_for("part of the second batch", Duration::from_secs(60), || {
        hook.taken().len() >= 5_500
    })
    .await;
    // A crash: what was delivered but not acked comes again (same ids).
    tokio::task::block_in_place(|| node.kill9());
    let third = publish(&js, "shop", 3_000).await;
    tokio::task::block_in_place(|| node.start());

    let all: Vec<String> = [first, second, third].concat();
    assert_eq!(all.len(), 10_000);
    wait_for(
        "every event at the webhook",
        Duration::from_secs(120),
        || dedupe(&hook.taken()).len() == all.len(),
    )
    .await;
    wait_for(
        "every event at the subscriber",
        Duration::from_secs(60),
        || dedupe(&local.ids()).len() == all.len(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        hook.bad_requests(),
        0,
        "every request had a valid signature and content type"
    );
    let (hook_ids, local_ids) = (hook.taken(), local.ids());
    // Targets dedupe by the stable id; after it, each event exactly once.
    assert_once(&dedupe(&hook_ids), &all, "webhook");
    assert_once(&dedupe(&local_ids), &all, "subscriber");
    // Repeats come only from the kill -9 window: at most what was in flight.
    let repeats = hook_ids.len() - all.len();
    println!(
        "repeats after kill -9: webhook {repeats}, subscriber {}",
        local_ids.len() - all.len()
    );
    assert!(repeats <= 128, "{repeats} repeats at the webhook");
    // Before the crash, nothing twice: the graceful restart lost and doubled nothing.
    let before_crash = &hook_ids[..5_500];
    assert_eq!(
        dedupe(before_crash).len(),
        before_crash.len(),
        "a repeat before the crash"
    );
    // The site stream holds each event exactly once, even across the crash.
    let stored =
        support::nats::read_stream(&site_js, "SITE", all.len(), Duration::from_secs(30)).await;
    let stored_ids: Vec<String> = stored
        .iter()
        .map(|m| m.header("Nats-Msg-Id").unwrap())
        .collect();
    assert_once(&stored_ids, &all, "site stream");
    assert_eq!(stored[0].json()["type"], "order.created");
    let status = admin_get(&node, "/admin/status");
    assert_eq!(status["subscriptions"][0]["consumer"], "test-node-orders");
    assert_eq!(status["dlq"], 0);
}

fn dedupe(ids: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    ids.iter()
        .filter(|id| seen.insert(id.as_str()))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_dead_letters_replay_breakers_and_isolation() {
    let upstream = NatsServer::start();
    let js = upstream_stream(&upstream.url()).await;
    let flaky = Receiver::start(SECRET, Mode::FailFirst(3)).await;
    let dead = Receiver::start(SECRET, Mode::Always(503, Some(1))).await;
    let broken = Receiver::start(SECRET, Mode::Always(500, None)).await;
    let slow = Receiver::start(SECRET, Mode::Slow(Duration::from_secs(2))).await;
    let fast = Receiver::start(SECRET, Mode::Ok).await;
    // Five events failing together would trip the default breaker (5 in a row).
    let quick_retry = "[subscription.retry]\ninitial = \"20ms\"\nmax = \"100ms\"\nmax_attempts = 5\n[subscription.breaker]\nfailures = 100\n";
    let dir = TempDir::new("egress-retry");
    let text = node_config(&dir.path().join("data"), &[upstream.url()])
        + &subscription("flaky", "events.flaky.>", &(webhook(&flaky.url) + quick_retry))
        + &subscription("dead", "events.dead.>", &(webhook(&format!("{}?token=hunter2", dead.url)) + "[subscription.retry]\ninitial = \"10ms\"\nmax = \"10ms\"\nmax_attempts = 3\n"))
        + &subscription("broken", "events.broken.>", &(webhook(&broken.url) + "max_in_flight = 1\n[subscription.retry]\ninitial = \"10ms\"\nmax = \"10ms\"\nmax_attempts = 100\n[subscription.breaker]\nfailures = 3\ncool_off = \"1h\"\n"))
        + &subscription("slow", "events.slow.>", &(webhook(&slow.url) + "max_in_flight = 1\n"))
        + &subscription("fast", "events.fast.>", &webhook(&fast.url));
    let mut node = Binary::configured(dir.path(), &text);
    tokio::task::block_in_place(|| node.start());

    // Fails 3 times, then gets the event once.
    let flaky_ids = publish(&js, "flaky", 5).await;
    wait_for("the flaky target", Duration::from_secs(30), || {
        flaky.taken().len() == 5
    })
    .await;
    assert_once(&flaky.taken(), &flaky_ids, "flaky webhook");
    for id in &flaky_ids {
        assert_eq!(flaky.tries(id), 4, "3 failures and one success for {id}");
    }

    // A slow target does not hold back another subscription.
    publish(&js, "slow", 10).await;
    let started = Instant::now();
    let fast_ids = publish(&js, "fast", 500).await;
    wait_for("the fast target", Duration::from_secs(30), || {
        fast.taken().len() == 500
    })
    .await;
    assert_once(&fast.taken(), &fast_ids, "fast webhook");
    assert!(
        slow.taken().len() < 10,
        "the fast subscription finished while the slow one was still busy ({} of 10 done after {:?})",
        slow.taken().len(),
        started.elapsed()
    );

    // Always 503 with Retry-After: 1 -> dead letter after 3 attempts, with
    // the waits Retry-After asked for (not the 10 ms backoff).
    let t0 = Instant::now();
    let dead_ids = publish(&js, "dead", 1).await;
    wait_for("the dead letter", Duration::from_secs(30), || {
        admin_get(&node, "/admin/status")["dlq"] == 1
    })
    .await;
    assert!(
        t0.elapsed() >= Duration::from_secs(2),
        "Retry-After was honoured"
    );
    assert_eq!(dead.tries(&dead_ids[0]), 3);
    let (ok, listing) = cli(&node, &["dlq", "list"]);
    assert!(ok, "{listing}");
    assert!(
        listing.contains(&dead_ids[0]) && listing.contains("503"),
        "{listing}"
    );
    // The webhook's query token shows nowhere: dead letters, API, log.
    assert!(listing.contains("token=***"), "{listing}");
    assert!(!listing.contains("hunter2") && !node.log().contains("hunter2"));
    let (ok, json_list) = cli(&node, &["dlq", "list", "--json"]);
    assert!(ok, "{json_list}");
    let list: Value = serde_json::from_str(&json_list).unwrap();
    let entry = &list["entries"][0];
    assert_eq!(entry["attempts"], 3);
    assert_eq!(entry["subscription"], "dead");
    assert_eq!(entry["targets"], json!(["webhook"]));
    let letter = entry["id"].as_u64().unwrap().to_string();
    let (ok, shown) = cli(&node, &["dlq", "show", &letter]);
    assert!(ok, "{shown}");
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["event"]["id"], dead_ids[0].as_str());
    // Replay while still broken: it stays, with one more attempt.
    let (ok, out) = cli(&node, &["dlq", "replay", &letter]);
    assert!(ok && out.contains("failed again"), "{out}");
    // Fixed: the replay delivers it, and the queue is empty.
    dead.set_mode(Mode::Ok);
    let (ok, out) = cli(&node, &["dlq", "replay", "--all"]);
    assert!(ok && out.contains("1 delivered, 0 failed"), "{out}");
    assert_eq!(dead.taken(), dead_ids);
    assert_eq!(admin_get(&node, "/admin/status")["dlq"], 0);

    // A target failing 3 times in a row is paused: no 4th request for the cool-off.
    publish(&js, "broken", 3).await;
    wait_for("the breaker to open", Duration::from_secs(30), || {
        broken.requests() >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        broken.requests(),
        3,
        "the open breaker holds deliveries back"
    );
    let status = admin_get(&node, "/admin/status");
    let sub = status["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "broken")
        .unwrap()
        .clone();
    assert_eq!(sub["targets"][0]["breaker"]["state"], "open", "{sub}");
    let (ok, out) = cli(&node, &["status"]);
    assert!(ok && out.contains("webhook=open"), "{out}");
    let metrics = support::http::blocking_get(node.admin_port, "/metrics")
        .unwrap()
        .1;
    assert!(
        metrics
            .contains("jetedge_egress_circuit_open{subscription=\"broken\",target=\"webhook\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("jetedge_egress_dead_lettered_total{subscription=\"dead\"} 1"));

    // Purge: one letter in, none out.
    let (ok, out) = cli(&node, &["dlq", "purge", "--all"]);
    assert!(ok && out.contains("\"purged\": 0"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_first_delivers_offline_and_once_after_upstream_returns() {
    let mut upstream = NatsServer::start();
    upstream.stop();
    let site = NatsServer::start();
    let hook = Receiver::start(SECRET, Mode::Ok).await;
    let local = Subscriber::start(&site.url(), "site.kiosk").await;
    let dir = TempDir::new("egress-local-first");
    let text = node_config(&dir.path().join("data"), &[upstream.url()])
        + &format!("\n[local]\nservers = [{:?}]\n", site.url())
        + &subscription(
            "kiosk",
            "events.events.kiosk.>",
            &(String::from("local_first = true\nto_subject = \"site.kiosk\"\n")
                + &webhook(&hook.url)),
        );
    let mut node = Binary::configured(dir.path(), &text);
    tokio::task::block_in_place(|| node.start());
    let kiosk = async_nats::connect(site.url()).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..50 {
        let event = json!({"type": "kiosk.scan", "data": {"n": n}});
        let reply = loop {
            match kiosk
                .request("ingest.events.kiosk1", event.to_string().into())
                .await
            {
                Ok(r) => break r,
                // The node subscribes once its local link is up.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let answer: Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(answer["status"], "accepted", "{answer}");
        ids.push(answer["id"].as_str().unwrap().to_string());
    }
    // Upstream is down, yet the site's microapps have every event.
    wait_for("local-first delivery", Duration::from_secs(30), || {
        local.ids().len() >= 50 && hook.taken().len() >= 50
    })
    .await;
    assert_once(&local.ids(), &ids, "subscriber while offline");

    // Upstream returns: the events are forwarded and come back, and are skipped.
    upstream.restart();
    let js = support::nats::jetstream(&[upstream.url()]).await;
    let msgs = support::nats::read_stream(&js, "EDGE", 50, Duration::from_secs(30)).await;
    assert_eq!(msgs.len(), 50);
    let mut consumer = js
        .get_stream("EDGE")
        .await
        .unwrap()
        .get_consumer::<jetstream::consumer::pull::Config>("test-node-kiosk")
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(c) = &mut consumer {
            let info = c.info().await.unwrap();
            if info.ack_floor.stream_sequence >= 50 {
                break;
            }
        } else {
            consumer = js
                .get_stream("EDGE")
                .await
                .unwrap()
                .get_consumer("test-node-kiosk")
                .await;
        }
        assert!(
            Instant::now() < deadline,
            "the upstream copies were not settled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_once(&local.ids(), &ids, "subscriber after upstream returned");
    assert_once(&hook.taken(), &ids, "webhook after upstream returned");
    let status = admin_get(&node, "/admin/status");
    assert_eq!(
        status["subscriptions"][0]["skipped_as_delivered_locally"], 50,
        "{status}"
    );
    assert_eq!(
        status["subscriptions"][0]["local_first_delivered"], 50,
        "{status}"
    );

    // Upstream goes away mid-run and comes back: the consumer picks up again,
    // and events published elsewhere (no local mark) are delivered once.
    upstream.restart();
    let js = support::nats::jetstream(&[upstream.url()]).await;
    let mut remote = Vec::new();
    for n in 0..20 {
        let id = format!("remote-{n}");
        let event = json!({"specversion": "1.0", "id": id, "source": "/jetedge/other/events",
                           "type": "kiosk.scan", "data": {"n": n}});
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", id.as_str());
        js.publish_with_headers("events.events.kiosk.scan", h, event.to_string().into())
            .await
            .unwrap()
            .await
            .unwrap();
        remote.push(id);
    }
    let want: Vec<String> = [ids, remote].concat();
    wait_for(
        "events after the upstream restart",
        Duration::from_secs(60),
        || local.ids().len() >= want.len(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_once(&local.ids(), &want, "subscriber after an upstream restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_waiting_for_a_slot_are_kept_alive_and_not_redelivered() {
    let upstream = NatsServer::start();
    let js = upstream_stream(&upstream.url()).await;
    // Each delivery takes longer than ack_wait: a message that waits for
    // the one slot without progress acks would be redelivered meanwhile.
    let hook = Receiver::start(SECRET, Mode::Slow(Duration::from_millis(1500))).await;
    let dir = TempDir::new("egress-wait");
    let text = node_config(&dir.path().join("data"), &[upstream.url()])
        + &subscription(
            "queued",
            "events.queued.>",
            &(webhook(&hook.url) + "max_in_flight = 2\n"),
        )
        .replace("ack_wait = \"5s\"", "ack_wait = \"1s\"");
    let node = jetedge::Node::start(support::parse_config(&text))
        .await
        .unwrap();
    let ids = publish(&js, "queued", 4).await;
    wait_for("four deliveries", Duration::from_secs(30), || {
        hook.count() >= 4
    })
    .await;
    // Time for a redelivery to show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_once(&hook.taken(), &ids, "webhook behind one slot");
    assert_eq!(hook.requests(), 4, "no event was sent twice");
    let consumer: jetstream::consumer::PullConsumer = js
        .get_stream("EDGE")
        .await
        .unwrap()
        .get_consumer("test-node-queued")
        .await
        .unwrap();
    let info = consumer.cached_info();
    assert_eq!(info.num_redelivered, 0, "{info:?}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_id_that_is_no_header_text_is_still_delivered_signed() {
    // Whoever publishes upstream chooses the id: here one with a space, a
    // newline and a non-ASCII letter, in the payload only.
    let upstream = NatsServer::start();
    let js = upstream_stream(&upstream.url()).await;
    let hook = Receiver::start(SECRET, Mode::Ok).await;
    let dir = TempDir::new("egress-odd-id");
    let text = node_config(&dir.path().join("data"), &[upstream.url()])
        + &subscription("odd", "events.legacy.>", &webhook(&hook.url));
    let mut node = Binary::configured(dir.path(), &text);
    tokio::task::block_in_place(|| node.start());
    let event = json!({"specversion": "1.0", "id": "bestellung 17\nü", "source": "/legacy",
                       "type": "order.created", "data": {"n": 1}});
    js.publish("events.legacy.order", event.to_string().into())
        .await
        .unwrap()
        .await
        .unwrap();
    wait_for("the delivery", Duration::from_secs(30), || {
        hook.count() == 1
    })
    .await;
    let taken = hook.taken();
    assert!(
        taken[0].starts_with("jetedge-"),
        "webhook-id {:?}",
        taken[0]
    );
    assert_eq!(hook.bad_requests(), 0, "the signature verifies");
    assert_eq!(node.admin_json("/admin/status")["dlq"], 0);
    tokio::task::block_in_place(|| node.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_signed_with_an_ed25519_key_and_a_secret_verifies_with_the_secret() {
    // Moving receivers to asymmetric signing: the node signs with its
    // ed25519 key (v1a) and, until every receiver has the public key, with
    // the shared secret too. A receiver that knows only the secret (the
    // reference library here) takes every request.
    use base64::Engine;
    let upstream = NatsServer::start();
    let js = upstream_stream(&upstream.url()).await;
    let hook = Receiver::start(SECRET, Mode::Ok).await;
    let dir = TempDir::new("egress-v1a");
    let b64 = base64::engine::general_purpose::STANDARD;
    std::env::set_var(
        "JETEDGE_TEST_WHSK",
        format!("whsk_{}", b64.encode([3u8; 32])),
    );
    let target = format!(
        "to_webhook = {{ url = \"{}\", secret = \"env:JETEDGE_TEST_WHSK\", secrets = [\"env:{SECRET_ENV}\"] }}\n",
        hook.url
    );
    let text = node_config(&dir.path().join("data"), &[upstream.url()])
        + &subscription("moving", "events.shop.>", &target);
    let mut node = Binary::configured(dir.path(), &text);
    tokio::task::block_in_place(|| node.start());
    let ids = publish(&js, "shop", 20).await;
    wait_for("the deliveries", Duration::from_secs(30), || {
        hook.count() == 20
    })
    .await;
    assert_once(&hook.taken(), &ids, "webhook");
    assert_eq!(
        hook.bad_requests(),
        0,
        "the HMAC signature verifies beside the v1a one"
    );
    tokio::task::block_in_place(|| node.stop());
}
