//! Every bad input gets its status code and JSON error body, is counted, and
//! the node keeps serving. Upstream is absent here: ingest does not need it.

use crate::support;

use jetedge::Node;
use serde_json::json;
use std::time::Duration;
use support::http::{post_order, Client, Reply};
use support::{node_config, now, parse_config, sign, TempDir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn offline_node(dir: &TempDir, extra: &str) -> jetedge::NodeHandle {
    let port = support::free_port(); // nothing listens there
    let text = node_config(dir.path(), &[format!("nats://127.0.0.1:{port}")])
        .replace("max_buffer = \"512MiB\"", extra);
    Node::start(parse_config(&text)).await.unwrap()
}

fn assert_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.body["error"]["code"], code, "{r:?}");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{r:?}"
    );
}

fn json_ct() -> Vec<(String, String)> {
    vec![("content-type".into(), "application/json".into())]
}

#[tokio::test]
async fn bad_requests_get_their_status_code_and_the_node_keeps_serving() {
    let dir = TempDir::new("ingress-bad");
    let node = offline_node(&dir, "max_buffer = \"512MiB\"").await;
    let c = Client::new(node.ingress_addr);
    let body = support::order_body("shop", 1);

    // 404: unknown source and unknown route; 405: wrong method.
    assert_error(
        &c.post("/v1/webhooks/nope", &sign("x", &body, now()), body.clone())
            .await,
        404,
        "unknown_source",
    );
    assert_error(&c.get("/v2/anything").await, 404, "not_found");
    assert_error(&c.get("/v1/events").await, 405, "method_not_allowed");

    // 415: wrong or missing content type.
    let mut h = sign("m1", &body, now());
    h[0].1 = "text/plain".into();
    assert_error(
        &c.post("/v1/webhooks/shop", &h, body.clone()).await,
        415,
        "unsupported_media_type",
    );
    assert_error(
        &c.post("/v1/webhooks/shop", &h[1..], body.clone()).await,
        415,
        "unsupported_media_type",
    );

    // 401: missing signature, wrong signature, signature of another body.
    assert_error(
        &c.post("/v1/webhooks/shop", &json_ct(), body.clone()).await,
        401,
        "unauthorized",
    );
    let mut h = sign("m2", &body, now());
    h[3].1 = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into();
    assert_error(
        &c.post("/v1/webhooks/shop", &h, body.clone()).await,
        401,
        "unauthorized",
    );
    let other = support::order_body("shop", 2);
    assert_error(
        &c.post(
            "/v1/webhooks/shop",
            &sign("m3", &other, now()),
            body.clone(),
        )
        .await,
        401,
        "unauthorized",
    );

    // 422: correctly signed, but stale or from the future.
    assert_error(
        &c.post(
            "/v1/webhooks/shop",
            &sign("m4", &body, now() - 3600),
            body.clone(),
        )
        .await,
        422,
        "timestamp_out_of_tolerance",
    );
    assert_error(
        &c.post(
            "/v1/webhooks/shop",
            &sign("m5", &body, now() + 3600),
            body.clone(),
        )
        .await,
        422,
        "timestamp_out_of_tolerance",
    );

    // 400: malformed JSON, no type, unsafe type (signed, so only the content is wrong).
    for (bad, code) in [
        (b"{\"type\": ".to_vec(), "malformed_json"),
        (br#"{"data": {}}"#.to_vec(), "invalid_event"),
        (br#"{"type": "order.*"}"#.to_vec(), "invalid_type"),
        (br#"{"type": "order created"}"#.to_vec(), "invalid_type"),
        (br#"{"type": "order..created"}"#.to_vec(), "invalid_type"),
    ] {
        let r = c
            .post("/v1/webhooks/shop", &sign("m6", &bad, now()), bad.clone())
            .await;
        assert_error(&r, 400, code);
    }
    // 400: CloudEvents that are not.
    let ce = |v: serde_json::Value| v.to_string().into_bytes();
    let r = c
        .post(
            "/v1/events",
            &json_ct(),
            ce(json!({"specversion": "0.3", "id": "1", "source": "/k", "type": "t"})),
        )
        .await;
    assert_error(&r, 400, "invalid_event");
    let r = c.post("/v1/events", &json_ct(), ce(json!([]))).await;
    assert_error(&r, 400, "bad_request");

    // 413: over max_body, declared up front or streamed without a length.
    let big = vec![b' '; 70 * 1024];
    assert_error(
        &c.post("/v1/webhooks/shop", &sign("m7", &big, now()), big.clone())
            .await,
        413,
        "body_too_large",
    );
    let chunked = chunked_post(node.ingress_addr, "/v1/events", &big).await;
    assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked}");
    assert!(chunked.contains("body_too_large"), "{chunked}");

    // The node still serves, and every refusal was counted.
    assert_eq!(post_order(&c, "shop", 1).await.status, 202);
    assert_eq!(c.get("/healthz").await.status, 200);
    assert_eq!(node.metrics.rejected("unauthorized"), 3);
    assert_eq!(node.metrics.rejected("timestamp_out_of_tolerance"), 2);
    assert_eq!(node.metrics.rejected("invalid_type"), 3);
    assert_eq!(node.metrics.rejected("body_too_large"), 2);
    assert_eq!(node.metrics.rejected("unsupported_media_type"), 2);
    node.shutdown().await;
}

#[tokio::test]
async fn a_slow_body_gets_408() {
    let dir = TempDir::new("ingress-slow");
    let node = offline_node(&dir, "max_buffer = \"512MiB\"").await;
    let mut s = tokio::net::TcpStream::connect(node.ingress_addr)
        .await
        .unwrap();
    let head = "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\":";
    s.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("no answer")
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_timeout"), "{text}");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "answered before the body timeout"
    );
    assert_eq!(
        Client::new(node.ingress_addr).get("/healthz").await.status,
        200
    );
    node.shutdown().await;
}

#[tokio::test]
async fn duplicates_are_answered_200_with_the_first_id() {
    let dir = TempDir::new("ingress-dup");
    let node = offline_node(&dir, "max_buffer = \"512MiB\"").await;
    let c = Client::new(node.ingress_addr);
    let first = post_order(&c, "shop", 7).await;
    assert_eq!(first.status, 202);
    assert_eq!(first.body["status"], "accepted");
    for _ in 0..3 {
        let again = post_order(&c, "shop", 7).await;
        assert_eq!(again.status, 200);
        assert_eq!(again.body["status"], "duplicate");
        assert_eq!(again.body["id"], first.body["id"]);
    }
    // The same sender id from another source is a different event.
    assert_eq!(post_order(&c, "s1", 7).await.status, 202);
    assert_eq!(node.backlog().0, 2);
    node.shutdown().await;
}

#[tokio::test]
async fn a_full_buffer_answers_503_with_retry_after() {
    let dir = TempDir::new("ingress-quota");
    let node = offline_node(&dir, "max_buffer = \"1MiB\"").await;
    let c = Client::new(node.ingress_addr);
    let mut accepted = 0;
    let mut full = None;
    for n in 0..5000 {
        let r = post_order(&c, "shop", n).await;
        match r.status {
            202 => accepted += 1,
            _ => {
                full = Some(r);
                break;
            }
        }
    }
    let r = full.expect("the buffer never filled");
    assert_error(&r, 503, "buffer_full");
    assert_eq!(r.headers.get("retry-after").unwrap(), "5");
    assert!(accepted > 100, "only {accepted} accepted before the quota");
    assert_eq!(node.backlog().0, accepted);
    assert_eq!(c.get("/readyz").await.status, 200);
    node.shutdown().await;
}

/// Sends `body` with chunked transfer encoding (no length up front).
async fn chunked_post(addr: std::net::SocketAddr, path: &str, body: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(8192) {
        let size = format!("{:x}\r\n", chunk.len());
        // The server may answer and close before the rest is sent.
        if s.write_all(size.as_bytes()).await.is_err()
            || s.write_all(chunk).await.is_err()
            || s.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A CloudEvents batch of `n` events from `from`, each padded to about 1 KiB.
fn padded_batch(from: usize, n: usize) -> Vec<u8> {
    let pad = "x".repeat(900);
    let events: Vec<_> = (from..from + n)
        .map(|i| {
            json!({"specversion": "1.0", "id": format!("b-{i}"), "source": "/kiosk",
                        "type": "kiosk.scan", "data": {"pad": pad}})
        })
        .collect();
    serde_json::to_vec(&events).unwrap()
}

#[tokio::test]
async fn bodies_wait_for_room_in_body_memory_and_none_is_refused() {
    let dir = TempDir::new("ingress-body-memory");
    let port = support::free_port(); // nothing listens there
    let text = node_config(dir.path(), &[format!("nats://127.0.0.1:{port}")]).replace(
        "max_body = \"64KiB\"",
        "max_body = \"64KiB\"\nbody_memory = \"48KiB\"",
    );
    let node = Node::start(parse_config(&text)).await.unwrap();
    let batch_ct = vec![(
        "content-type".to_string(),
        "application/cloudevents-batch+json".to_string(),
    )];

    // A body that is only partly sent holds its declared length.
    let (held, next) = (padded_batch(0, 40), padded_batch(100, 16));
    assert!(held.len() < 48 << 10 && held.len() + next.len() > 48 << 10);
    let mut slow = tokio::net::TcpStream::connect(node.ingress_addr)
        .await
        .unwrap();
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/cloudevents-batch+json\r\nContent-Length: {}\r\n\r\n",
        held.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&held[..1000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // The next cannot fit beside it: its body is not read (and so it is
    // not answered) while the first one holds the room.
    let c = Client::new(node.ingress_addr);
    let waiting = tokio::spawn({
        let (c, h) = (c.clone(), batch_ct.clone());
        async move { c.post("/v1/events", &h, next).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "a body was read beyond ingress.body_memory"
    );

    // Once the first is answered, the second gets its room.
    slow.write_all(&held[1000..]).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = slow.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let r = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting request was answered")
        .unwrap();
    assert_eq!(r.status, 202, "{r:?}");

    // Many at once, more than fits: all accepted, in turn. A body with no
    // declared length (chunked) counts as max_body, over the whole room,
    // and waits for all of it rather than forever.
    let posts: Vec<_> = (0..16)
        .map(|k| {
            let (c, h) = (c.clone(), batch_ct.clone());
            tokio::spawn(async move {
                c.post("/v1/events", &h, padded_batch(1000 + k * 20, 20))
                    .await
            })
        })
        .collect();
    let chunked = chunked_post(node.ingress_addr, "/v1/events", &padded_batch(5000, 10)).await;
    assert!(chunked.starts_with("HTTP/1.1 202"), "{chunked}");
    for p in posts {
        assert_eq!(p.await.unwrap().status, 202);
    }
    assert_eq!(node.backlog().0, 40 + 16 + 16 * 20 + 10);
    node.shutdown().await;
}

/// `name = "{source}"` of the test config, with `line` added to that source.
fn with_source_line(text: &str, source: &str, line: &str) -> String {
    let at = format!("name = \"{source}\"\n");
    assert!(text.contains(&at), "no source {source}");
    text.replacen(&at, &format!("{at}{line}\n"), 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_retry_after_per_source_and_for_the_listener() {
    let dir = TempDir::new("ingress-rate");
    let port = support::free_port(); // nothing listens there
    let text = node_config(dir.path(), &[format!("nats://127.0.0.1:{port}")]);
    // One token per 100 s: none comes back while the test runs.
    let text = with_source_line(&text, "s0", "rate_limit = { per_second = 0.01, burst = 3 }");
    let node = Node::start(parse_config(&text)).await.unwrap();
    let c = Client::new(node.ingress_addr);
    for n in 0..3 {
        assert_eq!(
            post_order(&c, "s0", n).await.status,
            202,
            "within the burst"
        );
    }
    let r = post_order(&c, "s0", 3).await;
    assert_error(&r, 429, "rate_limited");
    let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=100).contains(&wait), "Retry-After {wait}");
    // Other sources are not held back by s0's limit.
    for n in 0..10 {
        assert_eq!(post_order(&c, "s1", n).await.status, 202);
    }
    assert_eq!(node.backlog().0, 13);
    let admin = node.admin_addr.unwrap().port();
    let (_, metrics) = support::http::blocking_get(admin, "/metrics").unwrap();
    assert!(
        metrics.contains("jetedge_rate_limited_total{limit=\"source\",source=\"s0\"} 1")
            && metrics.contains("jetedge_ingress_rejected_total{code=\"rate_limited\"} 1"),
        "{metrics}"
    );
    node.shutdown().await;

    // The listener's limit covers every source together.
    let text = node_config(dir.path(), &[format!("nats://127.0.0.1:{port}")]).replace(
        "max_body = \"64KiB\"",
        "max_body = \"64KiB\"\nrate_limit = { per_second = 0.01, burst = 4 }",
    );
    let node = Node::start(parse_config(&text)).await.unwrap();
    let c = Client::new(node.ingress_addr);
    for (n, source) in ["s2", "s3", "s4", "s5"].iter().enumerate() {
        assert_eq!(post_order(&c, source, 100 + n).await.status, 202);
    }
    let r = post_order(&c, "s6", 200).await;
    assert_error(&r, 429, "rate_limited");
    assert!(r.headers.contains_key("retry-after"));
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("ingress listener"));
    node.shutdown().await;
}
