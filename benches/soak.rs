//! A long soak of the release binary as a separate process: steady mixed
//! traffic (signed webhooks from several senders, kiosk scans requested
//! over site NATS), an upstream outage every ten minutes, a `kill -9` of
//! the node every few minutes, egress to a signed webhook receiver the
//! whole time. At the end it prints events accepted, in the stream, lost
//! (must be 0), doubled (must be 0), delivered to the receiver, peak RSS,
//! peak data dir size, and ingest latency percentiles over the whole run;
//! it exits non-zero if anything was lost, doubled or never delivered.
//!
//! `scripts/soak.sh` runs it (an hour by default). Knobs:
//! `JETEDGE_SOAK_SECONDS` (3600), `JETEDGE_SOAK_RATE` (events/s per
//! webhook sender, 4 senders; 50), `JETEDGE_SOAK_OUTAGE_EVERY` (600 s),
//! `JETEDGE_SOAK_OUTAGE_FOR` (60 s), `JETEDGE_SOAK_KILL_EVERY` (170 s).
//! `cargo test --all-targets` runs a 20-second one.

#[path = "../tests/it/support/mod.rs"]
mod support;

use futures::StreamExt;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::http::Client;
use support::nats::{jetstream, NatsServer};
use support::node::Binary;
use support::webhook::{Mode, Receiver};
use support::{node_config, order_body, sign, TempDir, SECRET, SECRET_ENV};

const SENDERS: usize = 4;

/// What the senders saw: event ids acknowledged, and every 202/200's
/// latency in microseconds.
#[derive(Default)]
struct Seen {
    ids: Vec<String>,
    /// Of those, the ids of source `s0`, which the subscription delivers.
    s0: Vec<String>,
    latency_us: Vec<u64>,
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    std::process::exit(rt.block_on(run()));
}

async fn run() -> i32 {
    let full = std::env::args().any(|a| a == "--bench");
    let seconds = support::setting("JETEDGE_SOAK_SECONDS", if full { 3600 } else { 20 });
    let rate = support::setting("JETEDGE_SOAK_RATE", 50);
    let outage_every = Duration::from_secs(support::setting(
        "JETEDGE_SOAK_OUTAGE_EVERY",
        if full { 600 } else { 8 },
    ));
    let outage_for = Duration::from_secs(support::setting(
        "JETEDGE_SOAK_OUTAGE_FOR",
        if full { 60 } else { 3 },
    ));
    let kill_every = Duration::from_secs(support::setting(
        "JETEDGE_SOAK_KILL_EVERY",
        if full { 170 } else { 13 },
    ));
    let mut upstream = NatsServer::start();
    let site = NatsServer::start();
    let hook = Receiver::start(SECRET, Mode::Ok).await;
    let dir = TempDir::new("soak");
    let data = dir.path().join("data");
    let text = node_config(&data, &[upstream.url()])
        + &format!(
            "\n[local]\nservers = [{:?}]\n\
             [[subscription]]\nname = \"apps\"\nsubjects = [\"events.s0.>\"]\ndeliver = \"all\"\n\
             to_webhook = {{ url = {:?}, secret = \"env:{SECRET_ENV}\" }}\n",
            site.url(),
            hook.url
        );
    let mut node = Binary::configured(dir.path(), &text);
    node.start();
    let port = node.port;
    println!(
        "soak: {seconds} s, {SENDERS} webhook senders at {rate}/s and a kiosk at {}/s; \
         upstream down {outage_for:?} every {outage_every:?}; kill -9 every {kill_every:?}",
        rate / 5
    );

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let (stop, seen) = (stop.clone(), seen.clone());
        senders.push(tokio::spawn(post_webhooks(port, s, rate, stop, seen)));
    }
    senders.push(tokio::spawn(request_scans(
        site.url(),
        (rate / 5).max(1),
        stop.clone(),
        seen.clone(),
    )));

    let started = Instant::now();
    let (mut next_outage, mut next_kill) = (outage_every, kill_every);
    let (mut peak_rss, mut peak_disk, mut kills, mut outages) = (0u64, 0u64, 0, 0);
    let end = Duration::from_secs(seconds);
    while started.elapsed() < end {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak_rss = peak_rss.max(vm_hwm_kib(node.pid()));
        peak_disk = peak_disk.max(du(&data));
        let now = started.elapsed();
        // No outage that would outlast the run.
        if now >= next_outage && now + outage_for < end {
            upstream.stop();
            outages += 1;
            println!("soak: {:>5.0} s upstream down", now.as_secs_f64());
            next_outage += outage_every;
        }
        if !upstream.is_running() && now >= next_outage - outage_every + outage_for {
            upstream.restart();
            println!("soak: {:>5.0} s upstream back", now.as_secs_f64());
        }
        if now >= next_kill {
            node.kill9();
            kills += 1;
            node.start();
            println!(
                "soak: {:>5.0} s node killed (-9) and restarted",
                now.as_secs_f64()
            );
            next_kill += kill_every;
        }
    }
    if !upstream.is_running() {
        upstream.restart();
    }
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    let drain = Instant::now();
    while backlog(&node) != Some(0) && drain.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        peak_rss = peak_rss.max(vm_hwm_kib(node.pid()));
    }
    let drained_in = drain.elapsed();
    let runs = std::fs::read_dir(data.join("keys")).map_or(0, |d| d.count());
    let fds = std::fs::read_dir(format!("/proc/{}/fd", node.pid())).map_or(0, |d| d.count());
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    // Egress runs behind forwarding: give the receiver time to catch up.
    let wanted: std::collections::HashSet<&str> = seen.s0.iter().map(String::as_str).collect();
    let caught_up = Instant::now();
    while caught_up.elapsed() < Duration::from_secs(120) {
        let taken: std::collections::HashSet<String> = hook.taken().into_iter().collect();
        if wanted.iter().all(|id| taken.contains(*id)) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let stored = stream_ids(&upstream).await;
    let accepted: HashMap<&str, ()> = seen.ids.iter().map(|i| (i.as_str(), ())).collect();
    let lost = accepted
        .keys()
        .filter(|i| !stored.contains_key(**i))
        .count();
    let doubled = stored.values().filter(|&&n| n > 1).count();
    let unknown = stored
        .keys()
        .filter(|i| !accepted.contains_key(i.as_str()))
        .count();
    let taken = hook.taken();
    let delivered: HashMap<&str, ()> = taken.iter().map(|i| (i.as_str(), ())).collect();
    let undelivered = wanted
        .iter()
        .filter(|i| !delivered.contains_key(**i))
        .count();
    let mut lat = seen.latency_us;
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    println!(
        "soak: {} events accepted; {} in the stream; lost {lost}; doubled {doubled}; \
         in the stream but never acknowledged {unknown} (answers lost to a kill)",
        accepted.len(),
        stored.len()
    );
    println!(
        "soak: delivered to the webhook receiver {} distinct of {} subscribed, {undelivered} missing \
         ({} deliveries, {} bad requests); {kills} kills, {outages} outages; \
         drained in {drained_in:.1?} after the senders stopped",
        delivered.len(),
        wanted.len(),
        taken.len(),
        hook.bad_requests()
    );
    println!("soak: {runs} dedupe run files, {fds} open files in the node at the end");
    println!(
        "soak: peak RSS {:.1} MiB; peak data dir {:.1} MiB; ingest latency p50 {:.1} ms, \
         p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms ({} webhook answers)",
        peak_rss as f64 / 1024.0,
        peak_disk as f64 / (1 << 20) as f64,
        pct(0.5),
        pct(0.99),
        pct(0.999),
        pct(1.0),
        lat.len()
    );
    node.stop();
    i32::from(lost > 0 || doubled > 0 || undelivered > 0)
}

/// One webhook sender at `rate` events a second, each retried with the
/// same webhook id until the node answers 202 or 200.
async fn post_webhooks(
    port: u16,
    s: usize,
    rate: u64,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
) {
    let client = Client::new(([127, 0, 0, 1], port).into());
    let source = format!("s{s}");
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let body = order_body(&source, n);
        let id = format!("{source}-{n}");
        loop {
            let at = Instant::now();
            let path = format!("/v1/webhooks/{source}");
            let reply = client
                .try_post(&path, &sign(&id, &body, support::now()), body.clone())
                .await;
            if let Ok(r) = reply {
                if r.status == 202 || r.status == 200 {
                    let mut seen = seen.lock().unwrap();
                    seen.latency_us.push(at.elapsed().as_micros() as u64);
                    let id = r.body["id"].as_str().unwrap_or_default().to_string();
                    if s == 0 {
                        seen.s0.push(id.clone());
                    }
                    seen.ids.push(id);
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        n += 1;
    }
}

/// A kiosk requesting scans over site NATS, each retried until the node
/// says it holds it.
async fn request_scans(url: String, rate: u64, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    let site = async_nats::connect(url).await.unwrap();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let ev = json!({"specversion": "1.0", "id": format!("scan-{n}"), "source": "/kiosk/1",
                        "type": "kiosk.scan", "data": {"n": n}});
        let body: bytes::Bytes = ev.to_string().into();
        loop {
            let ask = site.request("ingest.events.scan", body.clone());
            if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(5), ask).await {
                let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_default();
                if matches!(v["status"].as_str(), Some("accepted" | "duplicate")) {
                    let mut seen = seen.lock().unwrap();
                    seen.ids
                        .push(v["id"].as_str().unwrap_or_default().to_string());
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        n += 1;
    }
}

/// How many times each event id is in the stream (headers only: an hour's
/// stream is large).
async fn stream_ids(upstream: &NatsServer) -> HashMap<String, u32> {
    let js = jetstream(&[upstream.url()]).await;
    let stream = js.get_stream("EDGE").await.unwrap();
    let total = stream.cached_info().state.messages;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            headers_only: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut ids: HashMap<String, u32> = HashMap::new();
    for _ in 0..total {
        let m = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .expect("reading the stream timed out")
            .unwrap()
            .unwrap();
        let id = m.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id"));
        *ids.entry(id.map(|v| v.to_string()).unwrap_or_default())
            .or_default() += 1;
    }
    ids
}

fn backlog(node: &Binary) -> Option<u64> {
    let token = node.admin_token();
    let (_, body) =
        support::http::blocking_get_auth(node.admin_port, "/admin/status", Some(&token))?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["backlog"]["events"].as_u64()
}

/// Peak resident memory of a process so far (VmHWM), in KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Bytes under a directory.
fn du(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => du(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
