//! Events upstream refuses for good (a subject no stream captures, a size
//! over the stream's limit) are parked and the rest goes on in order; an
//! operator sees them and replays them once the cause is fixed. The size
//! limit learned from upstream is kept for offline starts.

use crate::support;

use async_nats::jetstream;
use jetedge::Node;
use serde_json::json;
use std::time::Duration;
use support::http::{call, Client};
use support::nats::{read_stream, NatsServer};
use support::{node_config, parse_config, TempDir};

fn ce(id: &str, type_: &str, pad: usize) -> Vec<u8> {
    json!({"specversion": "1.0", "id": id, "source": "/pos/1", "type": type_,
           "data": {"pad": "x".repeat(pad)}})
    .to_string()
    .into_bytes()
}

fn ce_headers() -> Vec<(String, String)> {
    vec![("content-type".into(), "application/cloudevents+json".into())]
}

/// The upstream stream made by hand (as an operator would, with
/// `create_stream = false`): these subjects and a 4 KiB message limit.
fn edge_config(subjects: &[&str]) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: "EDGE".into(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        max_message_size: 4096,
        duplicate_window: Duration::from_secs(7200),
        ..Default::default()
    }
}

async fn edge_stream(nats: &NatsServer, subjects: &[&str]) -> jetstream::Context {
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    js.create_stream(edge_config(subjects)).await.unwrap();
    js
}

const AUDIT_ROUTE: &str = r#"
[[route]]
match = { prefix = { type = "audit." } }
action = "forward"
subject = "audit.{source}.{type}"
"#;

#[test]
fn check_refuses_a_route_subject_outside_the_stream_jetedge_creates() {
    let text = node_config(
        std::path::Path::new("/tmp/unused"),
        &["nats://127.0.0.1:4222".into()],
    ) + AUDIT_ROUTE;
    let problems = jetedge::config::Config::from_toml(&text, std::iter::empty()).unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| p.path == "route[0].subject" && p.message.contains("outside the stream")),
        "{problems:?}"
    );
    let inside = text.replace("audit.{source}", "{prefix}.audit.{source}");
    assert!(jetedge::config::Config::from_toml(&inside, std::iter::empty()).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_events_are_parked_and_the_rest_is_forwarded_in_order() {
    let nats = NatsServer::start();
    let js = edge_stream(&nats, &["events.>"]).await;
    let dir = TempDir::new("poison");
    let text = node_config(dir.path(), &[nats.url()])
        .replace("[upstream]\n", "[upstream]\ncreate_stream = false\n")
        .replace("max_body = \"64KiB\"", "max_body = \"1MiB\"")
        + AUDIT_ROUTE;
    let node = Node::start(parse_config(&text)).await.unwrap();
    let c = Client::new(node.ingress_addr);
    // Once the node forwarded its first event it knows the stream's limit.
    let r = c
        .post("/v1/events", &ce_headers(), ce("a0", "pos.sale", 10))
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    read_stream(&js, "EDGE", 1, Duration::from_secs(20)).await;
    let r = c
        .post("/v1/events", &ce_headers(), ce("big", "pos.sale", 5000))
        .await;
    assert_eq!(
        r.status, 413,
        "the stream's max_msg_size is ingest's limit: {r:?}"
    );

    // Paused, so that the big event is accepted (as it would be by a node
    // that had not learned the limit yet) and all wait in the outbox.
    node.pause_forwarding(true);
    let admin = node.admin_addr.unwrap();
    for (id, type_, pad) in [
        ("a1", "pos.sale", 10),
        ("a2", "audit.login", 10),
        ("a3", "pos.sale", 10),
    ] {
        let r = c
            .post("/v1/events", &ce_headers(), ce(id, type_, pad))
            .await;
        assert_eq!(r.status, 202, "{r:?}");
    }
    node.pause_forwarding(false);
    let msgs = read_stream(&js, "EDGE", 3, Duration::from_secs(20)).await;
    let keys: Vec<_> = msgs
        .iter()
        .map(|m| m.json()["idempotencykey"].clone())
        .collect();
    assert_eq!(
        keys,
        [json!("a0"), json!("a1"), json!("a3")],
        "the events behind the refused one went on, in order"
    );
    assert!(support::eventually(Duration::from_secs(10), async || node.backlog().0 == 0).await);

    // The operator sees the parked event, with why.
    let bearer = format!("Bearer {}", node.admin_token);
    let auth = [("authorization", bearer.as_str())];
    let (status, list) = call(admin, "GET", "/admin/parked", &auth).await;
    assert_eq!(status, 200, "{list}");
    let entries = list["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{list}");
    assert_eq!(entries[0]["reason"], "no_stream");
    assert_eq!(entries[0]["subject"], "audit.events.audit.login");
    let (_, status_doc) = call(admin, "GET", "/admin/status", &auth).await;
    assert_eq!(status_doc["parked"], 1);
    let (_, metrics) =
        tokio::task::block_in_place(|| support::http::blocking_get(admin.port(), "/metrics"))
            .unwrap();
    assert!(
        metrics.contains("jetedge_events_parked_total 1"),
        "{metrics}"
    );

    // And so does `jetedge parked list`, from the same config file.
    let conf = dir.path().join("node.toml");
    std::fs::write(&conf, &text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jetedge"))
        .args(["parked", "list", "-c"])
        .arg(&conf)
        .args(["--admin", &format!("http://{admin}")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("no_stream") && stdout.contains("audit.events.audit.login"),
        "{stdout}"
    );

    // Fixed upstream: the stream takes audit.> too; a replay delivers it.
    js.update_stream(edge_config(&["events.>", "audit.>"]))
        .await
        .unwrap();
    let id = entries[0]["id"].as_u64().unwrap();
    let (status, replay) = call(admin, "POST", &format!("/admin/parked/{id}/replay"), &auth).await;
    assert_eq!(
        (status, replay["status"].as_str()),
        (200, Some("requeued")),
        "{replay}"
    );
    let msgs = read_stream(&js, "EDGE", 4, Duration::from_secs(20)).await;
    assert_eq!(msgs.len(), 4);
    assert_eq!(msgs[3].subject, "audit.events.audit.login");
    let (_, list) = call(admin, "GET", "/admin/parked", &auth).await;
    assert!(list["entries"].as_array().unwrap().is_empty(), "{list}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_the_streams_size_limit_is_parked_and_the_limit_holds_offline() {
    let mut nats = NatsServer::start();
    let js = edge_stream(&nats, &["events.>"]).await;
    let dir = TempDir::new("poison-size");
    let text = node_config(dir.path(), &[nats.url()])
        .replace("[upstream]\n", "[upstream]\ncreate_stream = false\n")
        .replace("max_body = \"64KiB\"", "max_body = \"1MiB\"");
    // A node that has not met upstream yet takes a big event (1 MiB is
    // NATS's default limit); upstream then refuses it.
    nats.stop();
    let node = Node::start(parse_config(&text)).await.unwrap();
    let c = Client::new(node.ingress_addr);
    for (id, pad) in [("b1", 10), ("b2", 6000), ("b3", 10)] {
        let r = c
            .post("/v1/events", &ce_headers(), ce(id, "pos.sale", pad))
            .await;
        assert_eq!(r.status, 202, "{r:?}");
    }
    nats.restart();
    let msgs = read_stream(&js, "EDGE", 2, Duration::from_secs(30)).await;
    let keys: Vec<_> = msgs
        .iter()
        .map(|m| m.json()["idempotencykey"].clone())
        .collect();
    assert_eq!(keys, [json!("b1"), json!("b3")]);
    let admin = node.admin_addr.unwrap();
    let bearer = format!("Bearer {}", node.admin_token);
    let auth = [("authorization", bearer.as_str())];
    let ok = support::eventually(Duration::from_secs(10), async || {
        let (_, list) = call(admin, "GET", "/admin/parked", &auth).await;
        list["entries"]
            .as_array()
            .is_some_and(|e| e.len() == 1 && e[0]["reason"] == "too_large")
    })
    .await;
    assert!(ok, "the big event was not parked as too large");
    node.shutdown().await;

    // Offline again: the limit upstream gave is still enforced at the door.
    nats.stop();
    let node = Node::start(parse_config(&text)).await.unwrap();
    let c = Client::new(node.ingress_addr);
    let r = c
        .post("/v1/events", &ce_headers(), ce("b4", "pos.sale", 6000))
        .await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.body["error"]["code"], "event_too_large");
    let r = c
        .post("/v1/events", &ce_headers(), ce("b5", "pos.sale", 10))
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    node.shutdown().await;
}
