//! Filtering and redaction end to end, against a real JetStream server: a
//! dropped event is answered 202 `filtered` and never reaches upstream; a
//! redacted event's bytes on disk (every file of the sled store) and its
//! upstream message hold no raw personal data.

use crate::support;

use jetedge::Node;
use serde_json::json;
use std::time::Duration;
use support::http::Client;
use support::nats::{jetstream, read_stream, stream_count, NatsServer};
use support::{node_config, now, parse_config, sign, TempDir};

const KEY_ENV: &str = "JETEDGE_TEST_REDACT_KEY";
const RULES: &str = r#"
[[route]]
name = "no-debug"
match = { prefix = { type = "debug." } }
action = "drop"

[[redact]]
sources = ["shop"]
paths = ["/data/data/customer/email"]
action = "hash"
key = "env:JETEDGE_TEST_REDACT_KEY"

[[redact]]
sources = ["shop"]
detectors = ["payment_card", "phone", "ipv4"]
"#;

const EMAIL: &str = "ann.lee@example.com";
const CARD: &str = "4111 1111 1111 1111";
const PHONE: &str = "+14155552671";
const IP: &str = "203.0.113.77";

/// Every byte of every file under `dir`.
fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(all_bytes(&p));
        } else {
            out.extend(std::fs::read(&p).unwrap());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

async fn post(client: &Client, id: &str, body: serde_json::Value) -> support::http::Reply {
    let body = body.to_string().into_bytes();
    client
        .post("/v1/webhooks/shop", &sign(id, &body, now()), body)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_events_never_leave_and_raw_pii_never_reaches_disk_or_upstream() {
    std::env::set_var(KEY_ENV, "site-key-7");
    let nats = NatsServer::start();
    let dir = TempDir::new("filter-redact");
    let text = format!("{}\n{RULES}", node_config(dir.path(), &[nats.url()]));

    // Forwarding held: the event must sit in the outbox, on disk.
    let node = Node::start(parse_config(&text)).await.unwrap();
    node.pause_forwarding(true);
    let client = Client::new(node.ingress_addr);
    let dropped = post(
        &client,
        "d-1",
        json!({"type": "debug.trace", "data": {"email": EMAIL}}),
    )
    .await;
    assert_eq!(dropped.status, 202, "{dropped:?}");
    assert_eq!(dropped.body["status"], "filtered");
    let order = json!({"type": "order.created", "data": {
        "customer": {"email": EMAIL, "note": format!("call {PHONE}")},
        "payment": {"card": CARD, "ip": IP}, "order_id": "ORD-2026-000042"}});
    let kept = post(&client, "o-1", order).await;
    assert_eq!(kept.status, 202, "{kept:?}");
    assert_eq!(kept.body["status"], "accepted");
    assert_eq!(node.backlog().0, 1, "the dropped event is not stored");
    assert_eq!(node.metrics.events_filtered.get(), 1);
    assert_eq!(node.metrics.redactions("path"), 1);
    assert_eq!(node.metrics.redactions("payment_card"), 1);
    assert_eq!(node.metrics.redactions("phone"), 1);
    assert_eq!(node.metrics.redactions("ipv4"), 1);
    node.shutdown().await;

    let disk = all_bytes(dir.path());
    let token = jetedge::pipeline::redact::token(b"site-key-7", EMAIL);
    assert!(
        contains(&disk, &token),
        "the redacted event is not in the store"
    );
    assert!(contains(&disk, "ORD-2026-000042"));
    for raw in [EMAIL, CARD, "4111111111111111", PHONE, IP] {
        assert!(!contains(&disk, raw), "{raw} is on disk");
    }

    // Forwarding on: only the redacted event arrives upstream.
    let node = Node::start(parse_config(&text)).await.unwrap();
    let js = jetstream(&[nats.url()]).await;
    let msgs = read_stream(&js, "EDGE", 1, Duration::from_secs(20)).await;
    assert!(support::eventually(Duration::from_secs(10), async || node.backlog().0 == 0).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        stream_count(&js, "EDGE").await,
        1,
        "the dropped event reached upstream"
    );
    let ev = msgs[0].json();
    assert_eq!(msgs[0].subject, "events.shop.order.created");
    let payload = String::from_utf8(msgs[0].payload.to_vec()).unwrap();
    for raw in [EMAIL, CARD, PHONE, IP] {
        assert!(!payload.contains(raw), "{raw} reached upstream: {payload}");
    }
    assert_eq!(ev["data"]["data"]["customer"]["email"], token);
    assert_eq!(ev["data"]["data"]["payment"]["card"], "**** **** **** 1111");
    let redacted: Vec<String> = serde_json::from_value(ev["redacted"].clone()).unwrap();
    for place in [
        "path:/data/data/customer/email",
        "payment_card:/data/data/payment/card",
        "phone:/data/data/customer/note",
        "ipv4:/data/data/payment/ip",
    ] {
        assert!(
            redacted.iter().any(|r| r == place),
            "{place} not in {redacted:?}"
        );
    }
    node.shutdown().await;
}
