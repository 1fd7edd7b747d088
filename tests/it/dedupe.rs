//! What counts as a repeat: CloudEvents are the same event only when both
//! `source` and `id` match; a body signed without a timestamp is a repeat
//! whatever unsigned id header it is sent with.

use crate::support;

use hmac::{Hmac, Mac};
use jetedge::Node;
use serde_json::{json, Value};
use sha2::Sha256;
use std::time::Duration;
use support::http::Client;
use support::nats::NatsServer;
use support::{node_config, parse_config, TempDir};

const GITHUB_SECRET: &str = "gh-test-secret";

fn scan(kiosk: &str, id: &str) -> Vec<u8> {
    json!({"specversion": "1.0", "id": id, "source": kiosk, "type": "kiosk.scan", "data": {"k": kiosk}})
        .to_string()
        .into_bytes()
}

fn ce_headers() -> Vec<(String, String)> {
    vec![("content-type".into(), "application/cloudevents+json".into())]
}

async fn ask(site: &async_nats::Client, body: Vec<u8>) -> Value {
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        site.request("ingest.events", body.into()),
    )
    .await
    .expect("no reply in time")
    .expect("request failed");
    serde_json::from_slice(&reply.payload).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_kiosks_with_the_same_event_id_are_two_events_over_http_and_nats() {
    let site = NatsServer::start();
    let dir = TempDir::new("dedupe-ce");
    let offline = format!("nats://127.0.0.1:{}", support::free_port());
    let text =
        node_config(dir.path(), &[offline]) + &format!("\n[local]\nservers = [{:?}]\n", site.url());
    let node = Node::start(parse_config(&text)).await.unwrap();
    let c = Client::new(node.ingress_addr);

    let first = c
        .post("/v1/events", &ce_headers(), scan("/kiosk/7", "scan-1"))
        .await;
    let second = c
        .post("/v1/events", &ce_headers(), scan("/kiosk/8", "scan-1"))
        .await;
    assert_eq!(first.status, 202, "{first:?}");
    assert_eq!(
        second.status, 202,
        "another kiosk's scan-1 is a new event: {second:?}"
    );
    assert_ne!(first.body["id"], second.body["id"]);
    let again = c
        .post("/v1/events", &ce_headers(), scan("/kiosk/7", "scan-1"))
        .await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.body["id"], first.body["id"]);

    // The same over NATS ingest (the keys are shared with HTTP: one source).
    let client = async_nats::connect(site.url()).await.unwrap();
    let mut answer = Value::Null;
    for _ in 0..100 {
        match tokio::time::timeout(
            Duration::from_millis(300),
            client.request("ingest.events", scan("/kiosk/9", "scan-1").into()),
        )
        .await
        {
            Ok(Ok(m)) => {
                answer = serde_json::from_slice(&m.payload).unwrap();
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(answer["status"], "accepted", "{answer}");
    let dup = ask(&client, scan("/kiosk/9", "scan-1")).await;
    assert_eq!(dup["status"], "duplicate", "{dup}");
    assert_eq!(dup["id"], answer["id"]);
    let other = ask(&client, scan("/kiosk/10", "scan-1")).await;
    assert_eq!(other["status"], "accepted", "{other}");
    assert_eq!(node.backlog().0, 4);
    node.shutdown().await;
}

fn github_headers(delivery: &str, body: &[u8]) -> Vec<(String, String)> {
    let mut mac = Hmac::<Sha256>::new_from_slice(GITHUB_SECRET.as_bytes()).unwrap();
    mac.update(body);
    let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    vec![
        ("content-type".into(), "application/json".into()),
        ("x-github-event".into(), "push".into()),
        ("x-github-delivery".into(), delivery.into()),
        ("x-hub-signature-256".into(), sig),
    ]
}

#[tokio::test]
async fn a_captured_github_delivery_sent_again_with_a_new_delivery_id_is_a_duplicate() {
    std::env::set_var("JETEDGE_TEST_GITHUB_SECRET", GITHUB_SECRET);
    let dir = TempDir::new("dedupe-body");
    let offline = format!("nats://127.0.0.1:{}", support::free_port());
    let text = node_config(dir.path(), &[offline])
        + "\n[[source]]\nname = \"gh\"\nverify = \"github\"\nsecrets = [\"env:JETEDGE_TEST_GITHUB_SECRET\"]\n";
    let node = Node::start(parse_config(&text)).await.unwrap();
    let c = Client::new(node.ingress_addr);
    let body = br#"{"ref":"refs/heads/main","after":"9f1c"}"#.to_vec();

    let first = c
        .post(
            "/v1/webhooks/gh",
            &github_headers("d-1", &body),
            body.clone(),
        )
        .await;
    assert_eq!(first.status, 202, "{first:?}");
    // An attacker replays the captured body and signature with a fresh,
    // unsigned delivery id.
    let replay = c
        .post(
            "/v1/webhooks/gh",
            &github_headers("d-2", &body),
            body.clone(),
        )
        .await;
    assert_eq!(replay.status, 200, "{replay:?}");
    assert_eq!(replay.body["status"], "duplicate");
    assert_eq!(replay.body["id"], first.body["id"]);
    // A new push (another body) under the replayed id header is new.
    let other = br#"{"ref":"refs/heads/main","after":"a7e2"}"#.to_vec();
    let fresh = c
        .post("/v1/webhooks/gh", &github_headers("d-3", &other), other)
        .await;
    assert_eq!(fresh.status, 202, "{fresh:?}");
    assert_eq!(node.backlog().0, 2);
    node.shutdown().await;
}
