//! A poor cellular uplink (64 kbit/s, 200 ms each way) in front of a
//! server that drops clients whose PONGs wait too long: the backlog drains
//! at the link's pace on one connection while ingest goes on. (In a module
//! of its own so that the suite starts it early: it runs for minutes.)

use crate::slow_link::post_backlog;
use crate::support;

use jetedge::Node;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::http::{post_order, Client};
use support::nats::{jetstream, read_stream, NatsServer};
use support::proxy::SlowLink;
use support::{node_config, parse_config, TempDir};

/// Posts orders `range` of `s0` one every 200 ms; each answer's latency
/// in milliseconds.
async fn paced_posts(c: &Client, range: std::ops::Range<usize>) -> Vec<f64> {
    let mut latencies = Vec::new();
    for n in range {
        let at = Instant::now();
        assert_eq!(post_order(c, "s0", n).await.status, 202, "#{n}");
        latencies.push(at.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    latencies
}

/// Milliseconds at the given percentile of `v` (sorted in place).
fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// A cellular uplink: 64 kbit/s with 200 ms each way, and a server that
/// drops a client whose PONGs stay queued for 10 s (nats-server's
/// `ping_interval` 5 s, `ping_max` 2). A leaf node on such a link cycles
/// disconnect/reconnect because keepalives wait behind bulk data; the
/// forwarder's window keeps the link's queue short instead. The backlog
/// (`JETEDGE_TEST_CELLULAR_BATCHES` × 100 events of ~1 KiB; 6 by default,
/// about 100 s of the link) drains at the link's pace on one connection
/// while new events keep being accepted at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cellular_link_drains_at_its_pace_on_one_connection_while_ingest_goes_on() {
    const CELLULAR: u64 = 8_000;
    let batches = support::setting::<usize>("JETEDGE_TEST_CELLULAR_BATCHES", 6);
    let upstream = NatsServer::start_with("ping_interval: \"5s\"\nping_max: 2\n");
    let link = SlowLink::start(
        format!("127.0.0.1:{}", upstream.port),
        CELLULAR,
        Duration::from_millis(200),
    )
    .await;
    let dir = TempDir::new("cellular");
    let text = node_config(dir.path(), &[link.url()])
        .replace("max_body = \"64KiB\"", "max_body = \"1MiB\"");
    let node = Node::start(parse_config(&text)).await.unwrap();
    node.pause_forwarding(true);
    let c = Client::new(node.ingress_addr);
    post_backlog(&c, batches).await;
    // Orders at 5 a second: 100 with forwarding held (the baseline, over
    // a comparable span of time), then 200 while the backlog drains.
    let mut idle = paced_posts(&c, 0..100).await;
    let started = Instant::now();
    node.pause_forwarding(false);
    let mut during = paced_posts(&c, 100..300).await;
    let total = batches * 100 + 300;
    let js = jetstream(&[upstream.url()]).await;
    let msgs = read_stream(&js, "EDGE", total, Duration::from_secs(600)).await;
    let took = started.elapsed();
    assert_eq!(msgs.len(), total, "every event arrived, once");
    let stored = support::nats::stream_info(&js, "EDGE").await.state.bytes;
    let reconnects = link.connections.load(Ordering::Relaxed) - 1;
    let (p50, p99) = (percentile(&mut during, 0.5), percentile(&mut during, 0.99));
    eprintln!(
        "cellular link {CELLULAR} B/s, 200 ms each way: {total} events ({stored} B) drained in \
         {took:.1?}: {:.0} B/s, {:.0}% of the link; {reconnects} reconnects; ingest while \
         draining p50 {p50:.1} ms, p99 {p99:.1} ms (idle p50 {:.1} ms, p99 {:.1} ms)",
        stored as f64 / took.as_secs_f64(),
        100.0 * stored as f64 / took.as_secs_f64() / CELLULAR as f64,
        percentile(&mut idle, 0.5),
        percentile(&mut idle, 0.99),
    );
    assert_eq!(reconnects, 0, "the connection was kept");
    assert_eq!(node.link_state(), "connected");
    node.shutdown().await;
}
