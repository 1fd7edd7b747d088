//! A backlog drains over a slow, long link (a kiosk's LTE or satellite
//! uplink, played by a bandwidth-limited proxy): every event arrives once,
//! the connection is kept, and nothing acknowledged is sent again.

use crate::support;

use jetedge::Node;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::http::Client;
use support::nats::{jetstream, read_stream, NatsServer};
use support::proxy::SlowLink;
use support::{node_config, parse_config, TempDir};

const EVENTS: usize = 800;
/// 1 Mbit/s, 100 ms round trip.
const RATE: u64 = 128_000;

/// Posts `batches` CloudEvents batches of 100 kiosk scans of ~1 KiB.
pub async fn post_backlog(c: &Client, batches: usize) {
    for b in 0..batches {
        let events: Vec<Value> = (0..100)
            .map(|i| {
                json!({"specversion": "1.0", "id": format!("e{b}-{i}"), "source": "/kiosk/1",
                            "type": "kiosk.scan", "data": {"pad": "x".repeat(900)}})
            })
            .collect();
        let r = c
            .post(
                "/v1/events",
                &[(
                    "content-type".into(),
                    "application/cloudevents-batch+json".into(),
                )],
                serde_json::to_vec(&events).unwrap(),
            )
            .await;
        assert_eq!(r.status, 202, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_drains_over_a_slow_link_once_without_resending() {
    let upstream = NatsServer::start();
    let link = SlowLink::start(
        format!("127.0.0.1:{}", upstream.port),
        RATE,
        Duration::from_millis(50),
    )
    .await;
    let dir = TempDir::new("slow-link");
    let text = node_config(dir.path(), &[link.url()])
        .replace("max_body = \"64KiB\"", "max_body = \"1MiB\"");
    let node = Node::start(parse_config(&text)).await.unwrap();
    node.pause_forwarding(true);
    let c = Client::new(node.ingress_addr);
    post_backlog(&c, EVENTS / 100).await;
    let sent_before = link.upstream_bytes.load(Ordering::Relaxed);
    let started = Instant::now();
    node.pause_forwarding(false);
    let js = jetstream(&[upstream.url()]).await;
    let msgs = read_stream(&js, "EDGE", EVENTS, Duration::from_secs(240)).await;
    let took = started.elapsed();
    assert_eq!(msgs.len(), EVENTS, "every event arrived, once");
    let stored = support::nats::stream_info(&js, "EDGE").await.state.bytes;
    let carried = link.upstream_bytes.load(Ordering::Relaxed) - sent_before;
    eprintln!(
        "drained {EVENTS} events ({stored} B stored) in {took:.1?} over a {RATE} B/s link: \
         {:.0} B/s, {:.0}% of the link; {carried} B carried",
        stored as f64 / took.as_secs_f64(),
        100.0 * stored as f64 / took.as_secs_f64() / RATE as f64
    );
    assert_eq!(
        link.connections.load(Ordering::Relaxed),
        1,
        "the connection was kept"
    );
    // Protocol framing adds a little; a resent window would double it.
    assert!(
        (carried as f64) < 1.3 * stored as f64,
        "{carried} B sent for {stored} B stored: acknowledged events were sent again"
    );
    node.shutdown().await;
}
