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
//! (c), (k), (l), (n) and (o) take. `JETEDGE_BENCH_LINES` picks lines by
//! letter (`JETEDGE_BENCH_LINES=cno` for the ingest comparison alone; (c)
//! runs whenever any of (k), (l), (n), (o), (p) does).

#[path = "../tests/it/support/mod.rs"]
mod support;

#[path = "core/pipeline.rs"]
mod pipeline;
#[path = "core/schema.rs"]
mod schema;

#[path = "core/egress.rs"]
mod egress;

#[path = "core/ceiling.rs"]
mod ceiling;
#[path = "core/load.rs"]
mod load;

use async_nats::jetstream::{self, message::PublishMessage, stream};
use futures::stream::{FuturesOrdered, StreamExt};
use jetedge::{Node, NodeHandle};
use std::sync::atomic::Ordering;
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
    let lines = Lines::from_env();
    println!("jetedge core benchmark: events of {EVENT_SIZE} B, one local JetStream server (file storage)");

    let mut a = None;
    if lines.any("ab") {
        let server = server_cpu(&nats);
        let bare = bare_publisher(&nats, events).await;
        let server = server_cpu(&nats) - server;
        println!(
            "(a) bare async-nats JetStream publisher  {bare:>10.0} events/s  ({events} events, window {WINDOW}; nats-server CPU {:.0} ms per 1,000 events)",
            server * 1e6 / events as f64
        );
        let b = drain(&nats, events).await;
        println!("(b) jetedge outbox drain                 {b:>10.0} events/s  ({events} events)");
        println!("ratio b/a = {:.2}  (target >= 0.80)", b / bare);
        a = Some(bare);
    }
    let load = Load {
        requests,
        concurrency,
        body: body_of,
        tls: None,
        node: "",
    };
    let mut c_rate = None;
    if lines.any("cklnop") {
        let rounds = support::setting::<usize>("JETEDGE_BENCH_ROUNDS", if full { 3 } else { 1 });
        let c = compare_ingest(&nats, &load, rounds, &lines).await;
        if let Some(a) = a {
            println!("ratio c/a = {:.2}  (c target >= 20000 events/s)", c / a);
        }
        c_rate = Some(c);
    }
    if lines.any("p") {
        let rate = c_rate.expect("(p) runs with (c)") / 2.0;
        let half = open_loop_half(&nats, &load, rate).await;
        println!(
            "(p) ingest at half of (c), {:.0} events/s open loop: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms (target p99 <= 5 ms)",
            half.rate,
            half.ms(0.5),
            half.ms(0.99),
            half.ms(0.999),
            half.ms(1.0)
        );
    }
    if lines.any("q") {
        let fair = fairness(&nats, &load).await;
        println!(
            "(q) fairness: one source at full blast ({:.0} events/s) and nine at {SLOW_RATE:.0}/s each: the slow ones' p99 {:.2} ms (alone: {:.2} ms)",
            fair.hot_rate, fair.slow_p99_ms, fair.alone_p99_ms
        );
    }
    if lines.any("d") {
        let d = ingest(&nats, &load, false, "").await;
        println!(
            "(d) the same ingest, forwarding paused   {:>10.0} events/s  (p50 {:.2} ms, p99 {:.2} ms)",
            d.rate, d.p50_ms, d.p99_ms
        );
    }
    if lines.any("j") {
        let slow_events =
            support::setting::<usize>("JETEDGE_BENCH_SLOW_EVENTS", 1_500 / scale.min(15));
        let (j, share) = slow_drain(&nats, slow_events).await;
        println!(
            "(j) outbox drain over a 256 kbit/s link, 100 ms each way: {j:.0} B/s on the wire = {:.0}% of the link  ({slow_events} events; target >= 50%)",
            share * 100.0
        );
    }
    if lines.any("e") {
        let p = pipeline::cost(events.min(50_000));
        println!(
            "(e) pipeline, 10 routes + 10 redaction rules, 1 KiB order with PII: {:.2} us/event (no rules: {:.2} us/event; target <= 8 us)",
            p.with_rules_us, p.without_us
        );
    }
    if lines.any("m") {
        println!(
            "(m) JSON Schema check of the same 1 KiB order (22 properties, patterns, formats): {:.2} us/event",
            schema::cost(events.min(50_000))
        );
    }
    if lines.any("f") {
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
    }
    if lines.any("ghi") {
        let egress_events = support::setting::<usize>("JETEDGE_BENCH_EGRESS", 20_000 / scale);
        let g = egress::rates(&nats, egress_events).await;
        println!(
            "(g) bare async-nats pull consumer (ack each)  {:>10.0} events/s  ({egress_events} events)",
            g.bare
        );
        println!(
            "(h) jetedge upstream -> site core subject     {:>10.0} events/s  (h/g = {:.2}, target >= 0.70)",
            g.subject,
            g.subject / g.bare
        );
        println!(
            "(i) jetedge upstream -> signed webhook        {:>10.0} events/s  (i/g = {:.2}, target >= 0.45; receiver verifies each signature)",
            g.webhook,
            g.webhook / g.bare
        );
    }
}

/// The lines a run prints: `JETEDGE_BENCH_LINES` (letters, e.g. `cno`),
/// or all of them.
struct Lines(Option<String>);

impl Lines {
    fn from_env() -> Self {
        Self(std::env::var("JETEDGE_BENCH_LINES").ok())
    }

    /// Whether any of `letters` is wanted.
    fn any(&self, letters: &str) -> bool {
        self.0
            .as_ref()
            .is_none_or(|wanted| letters.chars().any(|l| wanted.contains(l)))
    }
}

/// (c) against (n), (o), (k) and (l), in turns; prints them and returns (c)'s rate.
async fn compare_ingest(nats: &NatsServer, load: &Load, rounds: usize, lines: &Lines) -> f64 {
    let requests = load.requests;
    let concurrency = load.concurrency;
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
    let mut targets = vec![('c', Target::Node(load))];
    for (letter, target) in [
        ('k', Target::Node(&over_tls)),
        ('l', Target::Node(&sealed)),
        ('n', Target::Server(ceiling::Kind::Ceiling, load)),
        ('o', Target::Server(ceiling::Kind::Prototype, load)),
    ] {
        if lines.any(&letter.to_string()) {
            targets.push((letter, target));
        }
    }
    let best = best_of(nats, &targets, rounds).await;
    let figures = |letter| {
        targets
            .iter()
            .position(|(l, _)| *l == letter)
            .map(|i| &best[i])
    };
    let c = figures('c').expect("(c) always runs");
    if let Some(ceil) = figures('n') {
        println!(
            "(n) ceiling: bare hyper, the same HMAC and JSON, no disk  {:>8.0} events/s  (CPU {:.0} ms per 1,000 events)",
            ceil.rate,
            ceil.cpu_per_1000 * 1e3
        );
    }
    if let Some(proto) = figures('o') {
        println!(
            "(o) naive prototype: (n) + sled insert + group fdatasync  {:>8.0} events/s  (CPU {:.0} ms per 1,000 events)",
            proto.rate,
            proto.cpu_per_1000 * 1e3
        );
    }
    println!(
        "(c) jetedge signed-webhook ingest        {:>10.0} events/s  ({requests} requests, {concurrency} keep-alive connections, forwarding on; best of {rounds}; CPU {:.0} ms per 1,000 events, nats-server {:.0} ms)",
        c.rate,
        c.cpu_per_1000 * 1e3,
        c.server_cpu_per_1000 * 1e3
    );
    println!(
        "    ingest latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        c.p50_ms, c.p99_ms, c.max_ms
    );
    println!(
        "    forwarding of (c) finished {:.2} s after the last request",
        c.drain_after_s
    );
    if let (Some(ceil), Some(proto)) = (figures('n'), figures('o')) {
        println!(
            "ratio c/ceiling = {:.2} (target >= 0.50); c/prototype = {:.2} (target > 1)",
            c.rate / ceil.rate,
            c.rate / proto.rate
        );
    }
    for (letter, name, target) in [
        ('k', "over TLS (rustls)   ", 0.8),
        ('l', "encryption at rest  ", 0.9),
    ] {
        if let Some(f) = figures(letter) {
            println!(
                "({letter}) the same ingest, {name} {:>10.0} events/s  ({letter}/c = {:.2}, target >= {target:.2}; p50 {:.2} ms, p99 {:.2} ms)",
                f.rate,
                f.rate / c.rate,
                f.p50_ms,
                f.p99_ms
            );
        }
    }
    c.rate
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
    cpu_per_1000: f64,
    /// nats-server's CPU per 1,000 events, the forwarding included.
    server_cpu_per_1000: f64,
}

impl IngestFigures {
    fn of(run: &load::Run, drain_after_s: f64) -> Self {
        Self {
            rate: run.rate,
            p50_ms: run.ms(0.5),
            p99_ms: run.ms(0.99),
            max_ms: run.ms(1.0),
            drain_after_s,
            cpu_per_1000: run.cpu_per_1000,
            server_cpu_per_1000: 0.0,
        }
    }
}

/// One line of the ingest comparison: jetedge with a load, or one of the
/// servers it is measured against.
enum Target<'a> {
    Node(&'a Load),
    Server(ceiling::Kind, &'a Load),
}

/// The lines compared with each other: they run in turns, each round in
/// a rotated order, and each keeps its best round, so the host's drift
/// during the run does not fall on one of them.
async fn best_of(
    nats: &NatsServer,
    targets: &[(char, Target<'_>)],
    rounds: usize,
) -> Vec<IngestFigures> {
    let mut best: Vec<Option<IngestFigures>> = targets.iter().map(|_| None).collect();
    for round in 0..rounds {
        for i in 0..targets.len() {
            let v = (round + i) % targets.len();
            let f = match &targets[v].1 {
                Target::Node(load) => ingest(nats, load, true, "").await,
                Target::Server(kind, load) => against(*kind, load).await,
            };
            if best[v].as_ref().is_none_or(|b| f.rate > b.rate) {
                best[v] = Some(f);
            }
        }
    }
    best.into_iter()
        .map(|b| b.expect("at least one round"))
        .collect()
}

/// Every request of `load`, signed now (built up front, so the load
/// generator costs little more than its socket calls, as wrk would).
fn requests_for(load: &Load, source: &str) -> Arc<Vec<Vec<u8>>> {
    requests_tagged(load, source, "")
}

/// As [`requests_for`], with `tag` in every event id (distinct events
/// for a second run on the same node).
fn requests_tagged(load: &Load, source: &str, tag: &str) -> Arc<Vec<Vec<u8>>> {
    let now = support::now();
    let id = |i| format!("bench-{source}{tag}-{i}");
    Arc::new(
        (0..load.requests)
            .map(|i| signed_request(source, &(load.body)(i), &id(i), now))
            .collect(),
    )
}

/// (c): `n` signed webhooks from `concurrency` keep-alive connections.
async fn ingest(nats: &NatsServer, load: &Load, forwarding: bool, rules: &str) -> IngestFigures {
    let dir = TempDir::new("bench-ingest");
    let tls_line = load.tls.as_ref().map_or("", |(line, _)| line.as_str());
    let node = start_node_with(&dir, &nats.url(), rules, tls_line, load.node).await;
    node.pause_forwarding(!forwarding);
    let tls = load.tls.as_ref().map(|(_, client)| client.clone());
    let requests = requests_for(load, "shop");
    let server_cpu_at_start = server_cpu(nats);
    let run = load::closed_loop(node.ingress_addr, requests, load.concurrency, tls).await;
    let sent_at = Instant::now();
    node.pause_forwarding(false);
    wait_drained(&node).await;
    let drain_after_s = sent_at.elapsed().as_secs_f64();
    let server_cpu = server_cpu(nats) - server_cpu_at_start;
    node.shutdown().await;
    IngestFigures {
        server_cpu_per_1000: server_cpu * 1000.0 / load.requests as f64,
        ..IngestFigures::of(&run, drain_after_s)
    }
}

/// nats-server's CPU seconds so far.
fn server_cpu(nats: &NatsServer) -> f64 {
    nats.pid()
        .map_or(0.0, |pid| load::cpu_seconds_of(&pid.to_string()))
}

/// (n) and (o): the same load against a ceiling server.
async fn against(kind: ceiling::Kind, load: &Load) -> IngestFigures {
    let server = ceiling::start(kind).await;
    let run = load::closed_loop(
        server.addr,
        requests_for(load, "shop"),
        load.concurrency,
        None,
    )
    .await;
    IngestFigures::of(&run, 0.0)
}

/// (p): signed webhooks at a fixed `rate` (half of the maximum), for
/// about as long as (c) ran, forwarding on.
async fn open_loop_half(nats: &NatsServer, load: &Load, rate: f64) -> load::Run {
    let dir = TempDir::new("bench-open-loop");
    let node = start_node(&dir, &nats.url(), "").await;
    let n = (load.requests / 2).max(100);
    let requests = requests_for(
        &Load {
            requests: n,
            ..load.clone()
        },
        "shop",
    );
    let run = load::open_loop(node.ingress_addr, requests, load.concurrency, rate).await;
    wait_drained(&node).await;
    node.shutdown().await;
    run
}

/// Each slow source's pace in (q).
const SLOW_RATE: f64 = 20.0;

struct Fairness {
    hot_rate: f64,
    slow_p99_ms: f64,
    alone_p99_ms: f64,
}

/// (q): `shop` at full blast from all but nine connections while nine
/// other sources post at [`SLOW_RATE`] each; their p99, and the same
/// without the hot source.
async fn fairness(nats: &NatsServer, load: &Load) -> Fairness {
    let dir = TempDir::new("bench-fairness");
    let extra = format!(
        "[[source]]\nname = \"s8\"\nverify = \"standard-webhooks\"\nsecrets = [\"env:{}\"]\n",
        support::SECRET_ENV
    );
    let node = start_node(&dir, &nats.url(), &extra).await;
    let hot_requests = requests_for(load, "shop");
    let seconds = (load.requests as f64 / 15_000.0).max(2.0);
    let slow = |load: &Load, tag: &str| {
        let per_source = (SLOW_RATE * seconds) as usize;
        (0..9)
            .map(|s| {
                let slow_load = Load {
                    requests: per_source,
                    ..load.clone()
                };
                requests_tagged(&slow_load, &format!("s{s}"), tag)
            })
            .collect::<Vec<_>>()
    };
    let addr = node.ingress_addr;
    let run_slow = |sets: Vec<Arc<Vec<Vec<u8>>>>| async move {
        let tasks: Vec<_> = sets
            .into_iter()
            .map(|r| tokio::spawn(load::open_loop(addr, r, 1, SLOW_RATE)))
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap().latencies);
        }
        all.sort();
        all[(all.len() - 1) * 99 / 100].as_secs_f64() * 1e3
    };
    let alone_p99_ms = run_slow(slow(load, "-alone")).await;
    let slow_sets = slow(load, "-beside");
    let hot = tokio::spawn(load::closed_loop(
        addr,
        hot_requests,
        load.concurrency - 9,
        None,
    ));
    let slow_p99_ms = run_slow(slow_sets).await;
    let hot = hot.await.unwrap();
    wait_drained(&node).await;
    node.shutdown().await;
    Fairness {
        hot_rate: hot.rate,
        slow_p99_ms,
        alone_p99_ms,
    }
}

/// The raw bytes of a signed webhook of `source` with event id `id`: an
/// HTTP/1.1 keep-alive request.
fn signed_request(source: &str, body: &[u8], id: &str, now: i64) -> Vec<u8> {
    let mut req = format!(
        "POST /v1/webhooks/{source} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in sign(id, body, now) {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}
