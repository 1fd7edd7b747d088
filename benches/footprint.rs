//! The buffer's footprint at edge scale, with the release binary run as a
//! separate process, in one run:
//!
//! 1. idle: RSS of a fresh node with an empty store;
//! 2. buffering offline: N events of about 1 KiB (CloudEvents batches of
//!    500 from 4 connections, every event with its own id, so every one
//!    has a dedupe key), the ingest rate, peak RSS, and the data dir's
//!    bytes per backlog byte;
//! 3. restart: `kill -9`, then the time from exec to a ready `/readyz` and
//!    the peak RSS of the new process while it starts; then the same after
//!    a clean stop;
//! 4. drain: upstream appears; the drain rate against a bare async-nats
//!    publisher of the same events measured in the same run, peak RSS, and
//!    the data dir's size once drained, without a restart;
//! 5. live ingest: signed webhooks of about 1 KiB, one event per request,
//!    from 64 keep-alive connections with upstream up and forwarding on:
//!    the rate and peak RSS.
//!
//! `scripts/footprint.sh` runs it (`JETEDGE_FOOTPRINT_EVENTS`, default
//! 1,000,000; `JETEDGE_FOOTPRINT_SEALED=1` with encryption at rest on);
//! `cargo test --all-targets` runs a small one.

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::http::{blocking_get, Client};
use support::nats::{jetstream, stream_count, NatsServer};
use support::node::Binary;
use support::{node_config, TempDir};

const BATCH: usize = 500;
const PAD: usize = 900;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("JETEDGE_FOOTPRINT_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 1_000_000 } else { 5_000 });
    let mut upstream = NatsServer::start();
    upstream.stop();
    let dir = TempDir::new("footprint");
    let data = dir.path().join("data");
    // JETEDGE_FOOTPRINT_SEALED=1: the same with encryption at rest on.
    let sealed = std::env::var("JETEDGE_FOOTPRINT_SEALED").is_ok_and(|v| v == "1");
    let key_line = match sealed {
        true => {
            std::env::set_var(
                "JETEDGE_FOOTPRINT_KEY",
                "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=",
            );
            "[node]\nencryption_key = \"env:JETEDGE_FOOTPRINT_KEY\"\n"
        }
        false => "[node]\n",
    };
    let text = node_config(&data, &[upstream.url()])
        .replacen("[node]\n", key_line, 1)
        .replace("max_buffer = \"512MiB\"", "max_buffer = \"64GiB\"")
        .replace("max_body = \"64KiB\"", "max_body = \"4MiB\"");
    let mut node = Binary::configured(dir.path(), &text);
    println!("jetedge footprint: {n} events of about 1 KiB, the jetedge binary of this build (release under cargo bench), upstream down while buffering{}",
        if sealed { ", encryption at rest on" } else { "" });

    tokio::task::block_in_place(|| node.start());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss(node.pid());
    println!(
        "idle                  RSS {:>7.1} MiB  data dir {:>8.1} MiB",
        mib(idle.1),
        mib(du(&data))
    );

    let sampler = Sampler::start(node.pid());
    let started = Instant::now();
    fill(node.port, n).await;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let (events, bytes) = backlog(node.port);
    let disk = du(&data);
    let now = kinds(node.pid());
    println!(
        "buffering             {rate:>7.0} events/s  peak RSS {:>7.1} MiB  backlog {events} events, {:.1} MiB  data dir {:.1} MiB ({:.2}x the backlog)",
        mib(sampler.stop().max(rss(node.pid()).0)),
        mib(bytes),
        mib(disk),
        disk as f64 / bytes.max(1) as f64
    );
    println!("                      now: {now}");

    node.kill9();
    restart(&mut node, "restart (kill -9)");
    node.stop();
    restart(&mut node, "restart (clean stop)");

    let sampler = Sampler::start(node.pid());
    upstream.restart();
    let started = Instant::now();
    let js = jetstream(&[upstream.url()]).await;
    while backlog(node.port).0 > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain = n as f64 / started.elapsed().as_secs_f64();
    let stored = stream_count(&js, "EDGE").await;
    let peak = sampler.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bare = bare_rate(&upstream, n.min(200_000)).await;
    println!(
        "drain                 {drain:>7.0} events/s  ({:.2}x a bare publisher's {bare:.0}/s)  peak RSS {:>7.1} MiB  {stored} in the stream",
        drain / bare,
        mib(peak)
    );
    println!(
        "drained               data dir {:>8.1} MiB  RSS {:>7.1} MiB (no restart)",
        mib(du(&data)),
        mib(rss(node.pid()).1)
    );

    let requests = (n / 10).max(1_000);
    let sampler = Sampler::start(node.pid());
    let started = Instant::now();
    webhooks(node.port, requests, 64).await;
    let rate = requests as f64 / started.elapsed().as_secs_f64();
    println!(
        "live ingest           {rate:>7.0} events/s  peak RSS {:>7.1} MiB  ({requests} signed webhooks, 64 connections, forwarding on)",
        mib(sampler.stop().max(rss(node.pid()).1))
    );
    node.stop();
}

/// Posts `n` signed webhooks of about 1 KiB from `connections` keep-alive
/// connections; signed up front, so the load generator costs little.
async fn webhooks(port: u16, n: usize, connections: usize) {
    let now = support::now();
    let pad = "x".repeat(PAD);
    let requests: Arc<Vec<_>> = Arc::new(
        (0..n)
            .map(|i| {
                let body = serde_json::json!({"type": "kiosk.scan", "data": {"n": i, "pad": pad}})
                    .to_string()
                    .into_bytes();
                (support::sign(&format!("live-{i}"), &body, now), body)
            })
            .collect(),
    );
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (next, requests) = (next.clone(), requests.clone());
        tasks.push(tokio::spawn(async move {
            let c = Client::new(([127, 0, 0, 1], port).into());
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some((headers, body)) = requests.get(i) else {
                    return;
                };
                let r = c.post("/v1/webhooks/shop", headers, body.clone()).await;
                assert_eq!(r.status, 202, "{:?}", r.body);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Starts the node again and prints the time from exec to a ready
/// `/readyz` and the peak RSS while it starts.
fn restart(node: &mut Binary, label: &str) {
    let exec = Instant::now();
    node.spawn();
    let sampler = Sampler::start(node.pid());
    while blocking_get(node.port, "/readyz").is_none_or(|(s, _)| s != 200) {
        std::thread::sleep(Duration::from_millis(2));
    }
    let ready = exec.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "{label:<22}ready in {:>6.3} s  peak RSS {:>7.1} MiB",
        ready.as_secs_f64(),
        mib(sampler.stop().max(rss(node.pid()).0))
    );
    println!("                      now: {}", kinds(node.pid()));
}

/// Posts `n` CloudEvents in batches from four connections.
async fn fill(port: u16, n: usize) {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let c = Client::new(([127, 0, 0, 1], port).into());
            let headers = vec![(
                "content-type".to_string(),
                "application/cloudevents-batch+json".to_string(),
            )];
            loop {
                let start = next.fetch_add(BATCH as u64, Ordering::Relaxed) as usize;
                if start >= n {
                    return;
                }
                let body = batch(start, (start + BATCH).min(n));
                let r = c.post("/v1/events", &headers, body).await;
                assert_eq!(r.status, 202, "{:?}", r.body);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn batch(from: usize, to: usize) -> Vec<u8> {
    let pad = "x".repeat(PAD);
    let events: Vec<serde_json::Value> = (from..to)
        .map(|i| {
            serde_json::json!({"specversion": "1.0", "id": format!("fp-{i}"), "source": "/kiosk/1",
                                    "type": "kiosk.scan", "data": {"n": i, "pad": pad}})
        })
        .collect();
    serde_json::to_vec(&events).unwrap()
}

/// A bare async-nats publisher of `n` events of the same size, with the
/// forwarder's headers and window: events per second.
async fn bare_rate(nats: &NatsServer, n: usize) -> f64 {
    use async_nats::jetstream::{message::PublishMessage, stream};
    use futures::stream::{FuturesOrdered, StreamExt};
    let js = jetstream(&[nats.url()]).await;
    js.create_stream(stream::Config {
        name: "BARE".into(),
        subjects: vec!["bare.>".into()],
        duplicate_window: Duration::from_secs(7200),
        ..Default::default()
    })
    .await
    .unwrap();
    let payload = bytes::Bytes::from(vec![b'x'; PAD + 300]);
    let started = Instant::now();
    let mut inflight = FuturesOrdered::new();
    for _ in 0..n {
        if inflight.len() >= 1024 {
            let ack: Result<_, _> = inflight.next().await.expect("in flight");
            ack.unwrap();
        }
        let id = uuid::Uuid::now_v7().to_string();
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", id.as_str());
        h.insert("ce-type", "kiosk.scan");
        h.insert("content-type", "application/cloudevents+json");
        let msg = PublishMessage::build().payload(payload.clone()).headers(h);
        let ack = js.send_publish("bare.kiosk.scan", msg).await.unwrap();
        inflight.push_back(std::future::IntoFuture::into_future(ack));
    }
    while let Some(ack) = inflight.next().await {
        ack.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn backlog(port: u16) -> (u64, u64) {
    let (_, body) = blocking_get(port, "/readyz").expect("readyz");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    (
        v["backlog_events"].as_u64().unwrap_or(0),
        v["backlog_bytes"].as_u64().unwrap_or(0),
    )
}

/// (VmHWM, VmRSS) of a process, in bytes.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// A process's resident anonymous and file-backed memory, as a line.
fn kinds(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kinds: Vec<&str> = status
        .lines()
        .filter(|l| l.starts_with("RssAnon") || l.starts_with("RssFile"))
        .collect();
    kinds
        .join(", ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Disk space used under `dir` (allocated blocks, as `du` counts).
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        total += if meta.is_dir() {
            du(&entry.path())
        } else {
            meta.blocks() * 512
        };
    }
    total
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// Samples a process's RSS every 20 ms until stopped; the peak seen.
struct Sampler {
    stop: Arc<AtomicBool>,
    task: std::thread::JoinHandle<u64>,
}

impl Sampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let task = std::thread::spawn(move || {
            let mut peak = 0;
            while !s.load(Ordering::Relaxed) {
                peak = peak.max(rss(pid).1);
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        });
        Self { stop, task }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.join().unwrap()
    }
}
