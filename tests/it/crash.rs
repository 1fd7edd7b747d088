//! `kill -9` of the real binary while 20,000 signed webhooks are being
//! posted and forwarded; after a restart every event that was acknowledged
//! is in the stream exactly once, in order per source.
//!
//! The posters behave like real webhook senders: a request that fails
//! (connection refused or reset) is retried with the same webhook id until
//! it is answered 202 (stored) or 200 (stored before, answer lost).

use crate::support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::http::{post_until_stored, Client};
use support::nats::{assert_once_in_order, jetstream, read_stream, NatsServer};
use support::node::Binary;
use support::{node_config, TempDir};

const SOURCES: usize = 8;
const PER_SOURCE: usize = 2500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_and_doubles_nothing() {
    let nats = NatsServer::start();
    let dir = TempDir::new("crash");
    let text = node_config(&dir.path().join("data"), &[nats.url()]);
    let mut node = Binary::configured(dir.path(), &text);
    node.start();
    let port = node.port;

    let client = Client::new(([127, 0, 0, 1], port).into());
    let stored = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let mut posters = Vec::new();
    for s in 0..SOURCES {
        let (client, stored, retries) = (client.clone(), stored.clone(), retries.clone());
        posters.push(tokio::spawn(async move {
            let source = format!("s{s}");
            for n in 0..PER_SOURCE {
                post_until_stored(&client, &source, n, &retries).await;
                stored.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // Kill it four times, each while posting and forwarding.
    let js = jetstream(&[nats.url()]).await;
    for at in [3_000, 8_000, 13_000, 17_000] {
        while stored.load(Ordering::Relaxed) < at {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let upstream = support::nats::stream_count(&js, "EDGE").await;
        node.kill9();
        eprintln!(
            "killed at {} stored, {upstream} upstream",
            stored.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        tokio::task::block_in_place(|| node.start());
    }
    for p in posters {
        p.await.unwrap();
    }
    assert!(
        retries.load(Ordering::Relaxed) > 0,
        "the kills did not interrupt any request"
    );

    let msgs = read_stream(&js, "EDGE", SOURCES * PER_SOURCE, Duration::from_secs(120)).await;
    assert_once_in_order(&msgs, SOURCES, PER_SOURCE);
    // Give a doubled publish the time to show up before counting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let total = support::nats::stream_count(&js, "EDGE").await;
    assert_eq!(total, (SOURCES * PER_SOURCE) as u64);
}
