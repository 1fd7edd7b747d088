//! The core path benchmark, in one run against one local JetStream server:
//!
//! (a) a bare async-nats JetStream publisher (the ceiling): the same
//!     payloads, headers and in-flight window as the forwarder;
//! (b) jetedge's drain of a pre-filled outbox (forwarding paused while it
//!     fills, then timed from resume until the outbox is empty);
//! (c) jetedge's signed-webhook ingest over keep-alive HTTP with forwarding
//!     on, with request latency percentiles;
//! (d) the same with forwarding paused; (e)/(f) the filter and redaction
//!     pipeline (`core/pipeline.rs`); (g)-(i) egress: a bare pull consumer
//!     against jetedge delivering to a site subject and to a webhook
//!     (`core/egress.rs`, `JETEDGE_BENCH_EGRESS`, default 20000 events);
//! (k) (c) over TLS (rustls, ECDSA P-256 certificate), against (c);
//! (l) (c) with encryption at rest on (`[node] encryption_key`), against (c);
//! (m) a JSON Schema check of the pipeline's order, per event (`core/schema.rs`);
//! (j) the outbox drain over a slow uplink (256 kbit/s, 200 ms round trip,
//!     a bandwidth-limited proxy), as a share of the link's capacity
//!     (`JETEDGE_BENCH_SLOW_EVENTS`, default 1500).
//!
//! Run with `scripts/bench.sh` (or `cargo bench --bench core`). Sizes:
//! `JETEDGE_BENCH_EVENTS` (default 200000) for (a) and (b),
//! `JETEDGE_BENCH_REQUESTS` (default 100000) and `JETEDGE_BENCH_CONCURRENCY`
//! (default 64) for (c); `JETEDGE_BENCH_ROUNDS` (default 3) for the turns
//! (c), (k) and (l) take.

#[path = "../tests/it/support/mod.rs"]
mod support;

#[path = "core/pipeline.rs"]
mod pipeline;
#[path = "core/schema.rs"]
mod schema;

#[path = "core/egress.rs"]
mod egress;

use async_nats::jetstream::{self, message::PublishMessage, stream};
use futures::stream::{FuturesOrdered, StreamExt};
use jetedge::{Node, NodeHandle};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::http::Client;
use support::nats::NatsServer;
use support::{node_config, parse_config, sign, TempDir};

/// The node runs in this process: use the allocator the jetedge binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EVENT_SIZE: usize = 1024;
/// The forwarder's default `max_in_flight`, used for the bare publisher too.
const WINDOW: usize = 1024;
const BATCH: usize = 500;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not, and
    // then a small run checks that the benchmark still works.
    let full = std::env::args().any(|a| a == "--bench");
    let scale = if full { 1 } else { 100 };
    let events = support::setting::<usize>("JETEDGE_BENCH_EVENTS", 200_000 / scale);
    let requests = support::setting::<usize>("JETEDGE_BENCH_REQUESTS", 100_000 / scale);
    let concurrency = support::setting::<usize>("JETEDGE_BENCH_CONCURRENCY", 64);
    let nats = NatsServer::start();
    println!("jetedge core benchmark: events of {EVENT_SIZE} B, one local JetStream server (file storage)");

    let a = bare_publisher(&nats, events).await;
    println!("(a) bare async-nats JetStream publisher  {a:>10.0} events/s  ({events} events, window {WINDOW})");
    let b = drain(&nats, events).await;
    println!("(b) jetedge outbox drain                 {b:>10.0} events/s  ({events} events)");
    let load = Load {
        requests,
        concurrency,
        body: body_of,
        tls: None,
        node: "",
    };
    let pki = TempDir::new("bench-tls");
    let ca = support::tls::Ca::new("bench CA");
    let (cert, key) = ca.server().write(pki.path(), "server");
    let tls_line = format!(
        "tls = {{ cert = {:?}, key = {:?} }}",
        cert.display().to_string(),
        key.display().to_string()
    );
    let over_tls = Load {
        tls: Some((tls_line, support::tls::client_config(&ca, None))),
        ..load.clone()
    };
    std::env::set_var(BENCH_KEY_ENV, BENCH_KEY);
    let sealed = Load {
        node: AT_REST,
        ..load.clone()
    };
    let rounds = support::setting::<usize>("JETEDGE_BENCH_ROUNDS", if full { 3 } else { 1 });
    let [c, k, l] = best_of(&nats, [&load, &over_tls, &sealed], rounds).await;
    println!(
        "(c) jetedge signed-webhook ingest        {:>10.0} events/s  ({requests} requests, {concurrency} keep-alive connections, forwarding on; best of {rounds})",
        c.rate
    );
    println!(
        "    ingest latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        c.p50_ms, c.p99_ms, c.max_ms
    );
    println!(
        "    forwarding of (c) finished {:.2} s after the last request",
        c.drain_after_s
    );
    let d = ingest(&nats, &load, false, "").await;
    println!(
        "(d) the same ingest, forwarding paused   {:>10.0} events/s  (p50 {:.2} ms, p99 {:.2} ms)",
        d.rate, d.p50_ms, d.p99_ms
    );
    println!(
        "(k) the same ingest over TLS (rustls)    {:>10.0} events/s  (k/c = {:.2}, target >= 0.80; p50 {:.2} ms, p99 {:.2} ms)",
        k.rate,
        k.rate / c.rate,
        k.p50_ms,
        k.p99_ms
    );
    println!(
        "(l) the same ingest, encryption at rest  {:>10.0} events/s  (l/c = {:.2}, target >= 0.90; p50 {:.2} ms, p99 {:.2} ms)",
        l.rate,
        l.rate / c.rate,
        l.p50_ms,
        l.p99_ms
    );
    let slow_events = support::setting::<usize>("JETEDGE_BENCH_SLOW_EVENTS", 1_500 / scale.min(15));
    let (j, share) = slow_drain(&nats, slow_events).await;
    println!(
        "(j) outbox drain over a 256 kbit/s link, 100 ms each way: {j:.0} B/s on the wire = {:.0}% of the link  ({slow_events} events; target >= 50%)",
        share * 100.0
    );
    println!("ratio b/a = {:.2}  (target >= 0.70)", b / a);
    println!(
        "ratio c/a = {:.2}  (c target >= 20000 events/s)",
        c.rate / a
    );

    let p = pipeline::cost(events.min(50_000));
    println!(
        "(e) pipeline, 10 routes + 10 redaction rules, 1 KiB order with PII: {:.2} us/event (no rules: {:.2} us/event; target < 20 us)",
        p.with_rules_us, p.without_us
    );
    println!(
        "(m) JSON Schema check of the same 1 KiB order (22 properties, patterns, formats): {:.2} us/event",
        schema::cost(events.min(50_000))
    );
    let pii = Load {
        requests,
        concurrency,
        body: pipeline::body,
        tls: None,
        node: "",
    };
    let off = ingest(&nats, &pii, true, "").await;
    let on = ingest(&nats, &pii, true, pipeline::RULES).await;
    println!(
        "(f) ingest of the same PII orders, forwarding on: pipeline off {:.0} events/s, on {:.0} events/s (on/off = {:.2})",
        off.rate,
        on.rate,
        on.rate / off.rate
    );

    let egress_events = support::setting::<usize>("JETEDGE_BENCH_EGRESS", 20_000 / scale);
    let g = egress::rates(&nats, egress_events).await;
    println!(
        "(g) bare async-nats pull consumer (ack each)  {:>10.0} events/s  ({egress_events} events)",
        g.bare
    );
    println!(
        "(h) jetedge upstream -> site core subject     {:>10.0} events/s  (h/g = {:.2})",
        g.subject,
        g.subject / g.bare
    );
    println!(
        "(i) jetedge upstream -> signed webhook        {:>10.0} events/s  (i/g = {:.2}; receiver verifies each signature)",
        g.webhook,
        g.webhook / g.bare
    );
}

/// The shape of an ingest run.
#[derive(Clone)]
struct Load {
    requests: usize,
    concurrency: usize,
    body: fn(usize) -> Vec<u8>,
    /// Over TLS: the node's `tls` line and the client's config.
    tls: Option<(String, Arc<rustls::ClientConfig>)>,
    /// Extra `[node]` lines.
    node: &'static str,
}

/// The variable holding (l)'s key, and that key (32 bytes in base64).
const BENCH_KEY_ENV: &str = "JETEDGE_BENCH_AT_REST_KEY";
const BENCH_KEY: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
const AT_REST: &str = "encryption_key = \"env:JETEDGE_BENCH_AT_REST_KEY\"";

/// A 1 KiB order webhook body; `n` makes each one distinct.
fn body_of(n: usize) -> Vec<u8> {
    let mut v = serde_json::json!({"type": "order.created", "data": {"n": n, "sku": "SKU-1234", "note": ""}});
    let pad = EVENT_SIZE.saturating_sub(v.to_string().len());
    v["data"]["note"] = serde_json::Value::String("x".repeat(pad));
    v.to_string().into_bytes()
}

/// (a): publishes `n` events as the forwarder would, with nothing else.
async fn bare_publisher(nats: &NatsServer, n: usize) -> f64 {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::ContextBuilder::new()
        .max_ack_inflight(WINDOW * 2)
        .build(client);
    js.create_stream(stream::Config {
        name: "BARE".into(),
        subjects: vec!["bare.>".into()],
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(7200),
        ..Default::default()
    })
    .await
    .unwrap();
    let payloads: Vec<bytes::Bytes> = (0..n).map(|i| body_of(i).into()).collect();
    let started = Instant::now();
    let mut inflight: FuturesOrdered<futures::future::BoxFuture<'static, Result<_, _>>> =
        FuturesOrdered::new();
    for payload in payloads {
        if inflight.len() >= WINDOW {
            inflight.next().await.expect("in flight").unwrap();
        }
        let id = uuid::Uuid::now_v7().to_string();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        headers.insert("ce-type", "order.created");
        headers.insert("ce-source", "/jetedge/bench/bare");
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        headers.insert("content-type", "application/cloudevents+json");
        let msg = PublishMessage::build().payload(payload).headers(headers);
        let ack = js
            .send_publish("bare.orders.order.created", msg)
            .await
            .unwrap();
        inflight.push_back(Box::pin(async move { ack.await }));
    }
    while let Some(ack) = inflight.next().await {
        ack.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// A node on `nats` with `rules` (TOML) appended to the test config.
async fn start_node(dir: &TempDir, upstream: &str, rules: &str) -> NodeHandle {
    start_node_with(dir, upstream, rules, "", "").await
}

/// As [`start_node`], with `ingress` added to `[ingress]` (a `tls` line).
async fn start_node_with(
    dir: &TempDir,
    upstream: &str,
    rules: &str,
    ingress: &str,
    node: &str,
) -> NodeHandle {
    let text = node_config(dir.path(), &[upstream.to_string()])
        .replacen("[node]\n", &format!("[node]\n{node}\n"), 1)
        .replace("max_buffer = \"512MiB\"", "max_buffer = \"8GiB\"")
        .replace(
            "max_body = \"64KiB\"",
            &format!("max_body = \"4MiB\"\n{ingress}"),
        );
    Node::start(parse_config(&format!("{text}\n{rules}")))
        .await
        .unwrap()
}

async fn wait_drained(node: &NodeHandle) {
    while node.backlog().0 > 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// (b): fills the outbox with forwarding paused, then times the drain.
async fn drain(nats: &NatsServer, n: usize) -> f64 {
    n as f64 / drain_via(&nats.url(), n).await
}

/// (j): the same drain over a 256 kbit/s uplink with 100 ms each way (a
/// bandwidth-limited proxy); the wire bytes per second it carried, and
/// that as a share of the link.
async fn slow_drain(nats: &NatsServer, n: usize) -> (f64, f64) {
    const RATE: u64 = 32_000;
    let link = support::proxy::SlowLink::start(
        format!("127.0.0.1:{}", nats.port),
        RATE,
        Duration::from_millis(100),
    )
    .await;
    let before = link.upstream_bytes.load(Ordering::Relaxed);
    let secs = drain_via(&link.url(), n).await;
    let carried = (link.upstream_bytes.load(Ordering::Relaxed) - before) as f64;
    (carried / secs, carried / secs / RATE as f64)
}

/// Fills a node's outbox with `n` events while paused, then returns the
/// seconds it takes to drain into `upstream`.
async fn drain_via(upstream: &str, n: usize) -> f64 {
    let dir = TempDir::new("bench-drain");
    let node = start_node(&dir, upstream, "").await;
    node.pause_forwarding(true);
    let client = Client::new(node.ingress_addr);
    let headers = vec![(
        "content-type".to_string(),
        "application/cloudevents-batch+json".to_string(),
    )];
    for start in (0..n).step_by(BATCH) {
        let batch: Vec<serde_json::Value> = (start..(start + BATCH).min(n))
            .map(|i| {
                let mut ev: serde_json::Value = serde_json::from_slice(&body_of(i)).unwrap();
                ev["specversion"] = "1.0".into();
                ev["id"] = format!("drain-{i}").into();
                ev["source"] = "/bench".into();
                ev
            })
            .collect();
        let r = client
            .post("/v1/events", &headers, serde_json::to_vec(&batch).unwrap())
            .await;
        assert_eq!(r.status, 202, "filling the outbox: {r:?}");
    }
    assert_eq!(node.backlog().0, n as u64);
    let started = Instant::now();
    node.pause_forwarding(false);
    wait_drained(&node).await;
    let secs = started.elapsed().as_secs_f64();
    node.shutdown().await;
    secs
}

struct IngestFigures {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    drain_after_s: f64,
}

/// (c), (k) and (l), compared with each other: they run in turns, each
/// round in a rotated order, and each keeps its best round, so the host's
/// drift during the run does not fall on one of them.
async fn best_of(nats: &NatsServer, loads: [&Load; 3], rounds: usize) -> [IngestFigures; 3] {
    let mut best: [Option<IngestFigures>; 3] = Default::default();
    for round in 0..rounds {
        for i in 0..loads.len() {
            let v = (round + i) % loads.len();
            let f = ingest(nats, loads[v], true, "").await;
            if best[v].as_ref().is_none_or(|b| f.rate > b.rate) {
                best[v] = Some(f);
            }
        }
    }
    best.map(|b| b.expect("at least one round"))
}

/// (c): `n` signed webhooks from `concurrency` keep-alive connections.
async fn ingest(nats: &NatsServer, load: &Load, forwarding: bool, rules: &str) -> IngestFigures {
    let (n, concurrency) = (load.requests, load.concurrency);
    let dir = TempDir::new("bench-ingest");
    let tls_line = load.tls.as_ref().map_or("", |(line, _)| line.as_str());
    let node = start_node_with(&dir, &nats.url(), rules, tls_line, load.node).await;
    node.pause_forwarding(!forwarding);
    // Built and signed up front, so the load generator costs little more
    // than its socket calls (as wrk would) and is not counted against the node.
    let now = support::now();
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..n)
            .map(|i| signed_request(&(load.body)(i), i, now))
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (requests, next, addr) = (requests.clone(), next.clone(), node.ingress_addr);
            let tls = load.tls.as_ref().map(|(_, client)| client.clone());
            tokio::spawn(async move {
                let mut conn = load::Conn::open(addr, tls).await;
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(request) = requests.get(i) else {
                        break;
                    };
                    let t = Instant::now();
                    let status = conn.round_trip(request).await;
                    latencies.push(t.elapsed());
                    assert_eq!(status, 202, "request {i}");
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(n);
    for w in workers {
        latencies.extend(w.await.unwrap());
    }
    let elapsed = started.elapsed();
    let sent_at = Instant::now();
    node.pause_forwarding(false);
    wait_drained(&node).await;
    let drain_after_s = sent_at.elapsed().as_secs_f64();
    node.shutdown().await;
    latencies.sort();
    let ms = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    IngestFigures {
        rate: n as f64 / elapsed.as_secs_f64(),
        p50_ms: ms(0.50),
        p99_ms: ms(0.99),
        max_ms: ms(1.0),
        drain_after_s,
    }
}

/// The raw bytes of signed webhook `i`: an HTTP/1.1 keep-alive request.
fn signed_request(body: &[u8], i: usize, now: i64) -> Vec<u8> {
    let mut req = format!(
        "POST /v1/webhooks/shop HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in sign(&format!("bench-{i}"), body, now) {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A minimal HTTP/1.1 load client: one request at a time per connection,
/// reading just enough of each response to find its status and its end.
mod load {
    use std::sync::Arc;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::TcpStream;

    trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
    impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

    pub struct Conn {
        stream: Box<dyn Stream>,
        buf: Vec<u8>,
    }

    impl Conn {
        /// A connection, over TLS when `tls` is given (the handshake done here,
        /// before the clock starts on its first request).
        pub async fn open(
            addr: std::net::SocketAddr,
            tls: Option<Arc<rustls::ClientConfig>>,
        ) -> Self {
            let tcp = TcpStream::connect(addr).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let stream: Box<dyn Stream> = match tls {
                None => Box::new(tcp),
                Some(config) => {
                    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
                    Box::new(
                        tokio_rustls::TlsConnector::from(config)
                            .connect(name, tcp)
                            .await
                            .unwrap(),
                    )
                }
            };
            Self {
                stream,
                buf: Vec::with_capacity(4096),
            }
        }

        /// Sends one request and returns the response's status code.
        pub async fn round_trip(&mut self, request: &[u8]) -> u16 {
            self.stream.write_all(request).await.unwrap();
            self.buf.clear();
            loop {
                if let Some(total) = complete_len(&self.buf) {
                    let status = std::str::from_utf8(&self.buf[9..12])
                        .unwrap()
                        .parse()
                        .unwrap();
                    self.buf.drain(..total);
                    return status;
                }
                let mut chunk = [0u8; 4096];
                let n = self.stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the node closed the connection");
                self.buf.extend_from_slice(&chunk[..n]);
            }
        }
    }

    /// The length of the response at the start of `buf`, once all of it is there.
    fn complete_len(buf: &[u8]) -> Option<usize> {
        let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = std::str::from_utf8(&buf[..head_end]).ok()?;
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            })
            .map_or(0, |(_, v)| v.trim().parse().unwrap());
        (buf.len() >= head_end + length).then_some(head_end + length)
    }
}
