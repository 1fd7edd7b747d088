//! The core path against a real JetStream server: signed webhooks in,
//! everything in the stream exactly once, in order per source, with the
//! envelope and headers DESIGN.md specifies; and offline buffering.

use crate::support;

use jetedge::Node;
use std::time::Duration;
use support::http::{post_order, Client};
use support::nats::{assert_once_in_order, jetstream, read_stream, NatsServer};
use support::{node_config, parse_config, TempDir};

/// Posts `per_source` orders from each of `sources` concurrently (each source
/// sequentially, so its order is the posting order); returns how many got 202.
async fn post_all(client: &Client, sources: usize, per_source: usize) -> usize {
    let mut tasks = Vec::new();
    for s in 0..sources {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let source = format!("s{s}");
            let mut ok = 0;
            for n in 0..per_source {
                let r = post_order(&c, &source, n).await;
                assert_eq!(r.status, 202, "{source} #{n}: {r:?}");
                ok += 1;
            }
            ok
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_signed_webhooks_arrive_once_in_order_with_envelope_and_headers() {
    let nats = NatsServer::start();
    let dir = TempDir::new("fwd-1000");
    let node = Node::start(parse_config(&node_config(dir.path(), &[nats.url()])))
        .await
        .unwrap();
    let client = Client::new(node.ingress_addr);
    assert_eq!(post_all(&client, 8, 125).await, 1000);
    // Repeats of delivered webhooks are answered 200 and not stored again.
    for n in 0..50 {
        assert_eq!(post_order(&client, "s3", n).await.status, 200);
    }

    let js = jetstream(&[nats.url()]).await;
    let msgs = read_stream(&js, "EDGE", 1000, Duration::from_secs(30)).await;
    assert_eq!(msgs.len(), 1000);
    assert_once_in_order(&msgs, 8, 125);
    for m in &msgs {
        let ev = m.json();
        let source = ev["data"]["data"]["source"].as_str().unwrap();
        let n = ev["data"]["data"]["n"].as_u64().unwrap();
        assert_eq!(m.subject, format!("events.{source}.order.created"));
        assert_eq!(ev["specversion"], "1.0");
        assert_eq!(ev["source"], format!("/jetedge/test-node/{source}"));
        assert_eq!(ev["type"], "order.created");
        assert_eq!(ev["datacontenttype"], "application/json");
        assert_eq!(ev["idempotencykey"], format!("{source}-{n}"));
        assert!(ev["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(m.header("Nats-Msg-Id").unwrap(), ev["id"].as_str().unwrap());
        assert_eq!(m.header("ce-type").unwrap(), "order.created");
        assert_eq!(
            m.header("ce-source").unwrap(),
            ev["source"].as_str().unwrap()
        );
        assert_eq!(
            m.header("traceparent").unwrap(),
            ev["traceparent"].as_str().unwrap()
        );
        assert_eq!(
            m.header("content-type").unwrap(),
            "application/cloudevents+json"
        );
    }
    assert!(support::eventually(Duration::from_secs(10), async || node.backlog().0 == 0).await);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_node_buffers_20000_events_and_forwards_them_once_in_order_when_upstream_appears() {
    let mut nats = NatsServer::start();
    nats.stop(); // keep its ports, so the node points at a server that is down
    let dir = TempDir::new("fwd-offline");
    let node = Node::start(parse_config(&node_config(dir.path(), &[nats.url()])))
        .await
        .unwrap();
    let client = Client::new(node.ingress_addr);
    assert_eq!(post_all(&client, 8, 2500).await, 20_000);
    assert_eq!(node.backlog().0, 20_000);
    let ready = client.get("/readyz").await;
    assert_eq!(ready.status, 200);
    assert_ne!(ready.body["upstream"], "connected");

    nats.restart();
    assert!(
        support::eventually(Duration::from_secs(120), async || node.backlog().0 == 0).await,
        "backlog not drained: {:?}",
        node.backlog()
    );
    let js = jetstream(&[nats.url()]).await;
    let msgs = read_stream(&js, "EDGE", 20_000, Duration::from_secs(30)).await;
    assert_eq!(msgs.len(), 20_000);
    assert_once_in_order(&msgs, 8, 2500);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudevents_batch_is_answered_per_element_and_forwarded() {
    let nats = NatsServer::start();
    let dir = TempDir::new("fwd-batch");
    let node = Node::start(parse_config(&node_config(dir.path(), &[nats.url()])))
        .await
        .unwrap();
    let client = Client::new(node.ingress_addr);
    let batch = serde_json::json!([
        {"specversion": "1.0", "id": "k-1", "source": "/kiosk/7", "type": "kiosk.scan", "data": {"code": 1}},
        {"specversion": "1.0", "id": "k-2", "source": "/kiosk/7", "type": "kiosk.scan", "data": {"code": 2}},
        {"specversion": "1.0", "id": "k-3", "source": "/kiosk/7", "type": "bad type"},
        {"specversion": "1.0", "id": "k-1", "source": "/kiosk/7", "type": "kiosk.scan", "data": {"code": 1}}
    ]);
    let headers = vec![(
        "content-type".to_string(),
        "application/cloudevents-batch+json".to_string(),
    )];
    let r = client
        .post("/v1/events", &headers, batch.to_string().into_bytes())
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let results = r.body["results"].as_array().unwrap();
    let statuses: Vec<u64> = results
        .iter()
        .map(|x| x["http_status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [202, 202, 400, 200]);
    assert_eq!(results[2]["error"]["code"], "invalid_type");
    assert_eq!(results[3]["id"], results[0]["id"]);

    let js = jetstream(&[nats.url()]).await;
    let msgs = read_stream(&js, "EDGE", 2, Duration::from_secs(20)).await;
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].subject, "events.events.kiosk.scan");
    let first = msgs[0].json();
    assert_eq!(first["originsource"], "/kiosk/7");
    assert_eq!(first["idempotencykey"], "k-1");
    assert_eq!(first["data"]["code"], 1);
    node.shutdown().await;
}
