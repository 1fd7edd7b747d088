//! NATS ingest on the site's own server: request/reply answers like HTTP,
//! only once the event is durable; fire-and-forget publishes are kept too.

use crate::support;

use futures::StreamExt;
use jetedge::metrics::Metrics;
use serde_json::{json, Value};
use std::time::Duration;
use support::nats::{assert_exactly_once, jetstream, read_stream, NatsServer};
use support::node::Binary;
use support::{node_config, TempDir};

fn local_section(site: &NatsServer) -> String {
    format!("\n[local]\nservers = [{:?}]\n", site.url())
}

async fn ask(site: &async_nats::Client, subject: &str, body: Value) -> Value {
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        site.request(subject.to_string(), body.to_string().into()),
    )
    .await
    .expect("no reply in time")
    .expect("request failed");
    serde_json::from_slice(&reply.payload).unwrap()
}

fn scan(kiosk: usize, n: usize) -> Value {
    json!({"specversion": "1.0", "id": format!("k{kiosk}-{n}"), "source": format!("/kiosk/{kiosk}"),
           "type": "kiosk.scan", "data": {"data": {"source": format!("k{kiosk}"), "n": n}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_come_after_the_event_is_durable_and_match_http_answers() {
    let mut upstream = NatsServer::start();
    upstream.stop(); // down: everything stays in the outbox while we kill the node
    let site = NatsServer::start();
    let dir = TempDir::new("local-ingest");
    let text = node_config(&dir.path().join("data"), &[upstream.url()]) + &local_section(&site);
    let mut node = Binary::configured(dir.path(), &text);
    node.start();
    let client = async_nats::connect(site.url()).await.unwrap();
    // The node subscribes once its local link is up.
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(Ok(_)) = tokio::time::timeout(
            Duration::from_millis(200),
            client.request("ingest.events.ping", "{\"type\":\"ping\"}".into()),
        )
        .await
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // "no responders" comes back at once
    }
    assert!(ready, "no local ingest reply");

    // 4 kiosks x 100 events, requested concurrently; then kill -9 at once.
    let mut tasks = Vec::new();
    for kiosk in 0..4 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..100 {
                let r = ask(
                    &client,
                    &format!("ingest.events.kiosk{kiosk}"),
                    scan(kiosk, n),
                )
                .await;
                assert_eq!(r["status"], "accepted", "{r}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    tokio::task::block_in_place(|| node.kill9());

    // Every replied event is forwarded after the restart.
    upstream.restart();
    tokio::task::block_in_place(|| node.start());
    let js = jetstream(&[upstream.url()]).await;
    let msgs = read_stream(&js, "EDGE", 401, Duration::from_secs(30)).await;
    let scans: Vec<_> = msgs
        .into_iter()
        .filter(|m| m.subject == "events.events.kiosk.scan")
        .collect();
    assert_exactly_once(&scans, 4, 100);

    // Answers as HTTP gives them.
    let again = ask(&client, "ingest.events.kiosk0", scan(0, 5)).await;
    assert_eq!(again["status"], "duplicate", "{again}");
    let unknown = ask(&client, "ingest.nosuch.x", scan(0, 1)).await;
    assert_eq!(unknown["error"]["code"], "unknown_source", "{unknown}");
    let signed_only = ask(&client, "ingest.shop", json!({"type": "order.created"})).await;
    assert_eq!(
        signed_only["error"]["code"], "unknown_source",
        "a signed source is not open over NATS: {signed_only}"
    );
    let bad = ask(&client, "ingest.events", json!({"type": "bad type"})).await;
    assert_eq!(bad["error"]["code"], "invalid_type", "{bad}");
    let batch = ask(
        &client,
        "ingest.events",
        json!([scan(9, 0), {"specversion": "1.0"}]),
    )
    .await;
    let statuses: Vec<_> = batch["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["http_status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [202, 400]);

    // Fire-and-forget: no reply subject, still forwarded.
    let mut sub = js.get_stream("EDGE").await.unwrap();
    let before = sub.info().await.unwrap().state.messages;
    client
        .publish(
            "ingest.events",
            json!({"type": "kiosk.heartbeat", "at": 1})
                .to_string()
                .into(),
        )
        .await
        .unwrap();
    client.flush().await.unwrap();
    let forwarded = support::eventually(Duration::from_secs(30), async || {
        sub.info().await.unwrap().state.messages == before + 1
    })
    .await;
    assert!(
        forwarded,
        "the fire-and-forget event was not forwarded; the node's log ends:\n{}",
        node.log_tail(40)
    );
    let mut consumer_msgs = js
        .get_stream("EDGE")
        .await
        .unwrap()
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: "events.events.kiosk.heartbeat".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .messages()
        .await
        .unwrap();
    let hb = consumer_msgs.next().await.unwrap().unwrap();
    let ev: Value = serde_json::from_slice(&hb.payload).unwrap();
    assert_eq!(ev["source"], "/jetedge/test-node/events");
    assert_eq!(ev["data"]["at"], 1);
}

/// Waits until the node answers on NATS ingest (its subscription is up);
/// the probe is one accepted event.
async fn wait_for_local_ingest(client: &async_nats::Client) {
    let ready = support::eventually(Duration::from_secs(10), async || {
        matches!(
            tokio::time::timeout(
                Duration::from_millis(200),
                client.request("ingest.events", scan(99, 0).to_string().into())
            )
            .await,
            Ok(Ok(_))
        )
    })
    .await;
    assert!(ready, "no local ingest reply");
}

/// What the site server sent to jetedge's local connection, once it closed.
fn delivered_to_jetedge(site: &NatsServer) -> u64 {
    let (_, body) =
        support::http::blocking_get(site.monitor_port, "/connz?state=closed&limit=1000").unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    v["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "jetedge-test-node-local")
        .map(|c| c["out_msgs"].as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fire_and_forget_messages_received_before_a_stop_are_all_kept() {
    let site = NatsServer::start();
    let dir = TempDir::new("local-drain");
    let offline = format!("nats://127.0.0.1:{}", support::free_port());
    // The drain may take a while on a busy machine: the stop waits for
    // it (shutdown_timeout bounds it, and a drain cut short is what this
    // test would report as lost).
    let text = node_config(dir.path(), &[offline])
        .replace("shutdown_timeout = \"5s\"", "shutdown_timeout = \"120s\"")
        + &local_section(&site);
    let node = jetedge::Node::start(support::parse_config(&text))
        .await
        .unwrap();
    let client = async_nats::connect(site.url()).await.unwrap();
    // Wait for the node's subscription, then flood it without replies.
    wait_for_local_ingest(&client).await;
    let publisher = {
        let client = client.clone();
        tokio::spawn(async move {
            for n in 0..20_000 {
                let body = scan(n % 8, n).to_string();
                client.publish("ingest.events", body.into()).await.unwrap();
            }
            client.flush().await.unwrap();
        })
    };
    // Stop the node while messages are still coming in and buffered.
    let accepted = support::eventually(Duration::from_secs(30), async || {
        Metrics::get(&node.metrics.events_accepted) > 2_000
    })
    .await;
    assert!(accepted, "ingest never got going");
    node.shutdown().await;
    publisher.await.unwrap();

    let sent = tokio::task::block_in_place(|| delivered_to_jetedge(&site));
    let node = jetedge::Node::start(support::parse_config(&text))
        .await
        .unwrap();
    let (kept, _) = node.backlog();
    assert!(sent > 2_000, "the server delivered {sent}");
    assert_eq!(
        kept, sent,
        "every message the server delivered to jetedge is in its store"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_beyond_max_pending_are_counted_as_dropped() {
    let site = NatsServer::start();
    let dir = TempDir::new("local-slow");
    let offline = format!("nats://127.0.0.1:{}", support::free_port());
    let text = node_config(dir.path(), &[offline]) + &local_section(&site) + "max_pending = 16\n";
    let node = jetedge::Node::start(support::parse_config(&text))
        .await
        .unwrap();
    let client = async_nats::connect(site.url()).await.unwrap();
    wait_for_local_ingest(&client).await;
    for n in 0..5_000 {
        let body = scan(n % 8, n).to_string();
        client.publish("ingest.events", body.into()).await.unwrap();
    }
    client.flush().await.unwrap();
    let counted = support::eventually(Duration::from_secs(10), async || {
        Metrics::get(&node.metrics.local_dropped) > 0
    })
    .await;
    let (kept, _) = node.backlog();
    assert!(
        counted,
        "a publisher 5,000 messages ahead of a 16-message buffer lost none? kept {kept}"
    );
    assert!(kept < 5_001);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sources_rate_limit_holds_over_nats_too() {
    let site = NatsServer::start();
    let dir = TempDir::new("local-rate");
    let offline = format!("nats://127.0.0.1:{}", support::free_port());
    // One token per 100 s: none comes back while the test runs.
    let text = (node_config(&dir.path().join("data"), &[offline]) + &local_section(&site))
        .replacen(
            "name = \"events\"\n",
            "name = \"events\"\nrate_limit = { per_second = 0.01, burst = 2 }\n",
            1,
        );
    let node = jetedge::Node::start(support::parse_config(&text))
        .await
        .unwrap();
    let kiosk = async_nats::connect(site.url()).await.unwrap();
    let mut answers = Vec::new();
    while answers.len() < 3 {
        let ask = kiosk.request(
            "ingest.events.k1",
            json!({"type": "kiosk.scan"}).to_string().into(),
        );
        match tokio::time::timeout(Duration::from_millis(500), ask).await {
            Ok(Ok(reply)) => answers.push(serde_json::from_slice::<Value>(&reply.payload).unwrap()),
            // "no responders" until the node's local link is up.
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(answers[0]["status"], "accepted", "{answers:?}");
    assert_eq!(answers[1]["status"], "accepted", "{answers:?}");
    assert_eq!(answers[2]["error"]["code"], "rate_limited", "{answers:?}");
    assert_eq!(node.backlog().0, 2);
    node.shutdown().await;
}
