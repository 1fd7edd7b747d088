//! The upstream R3 cluster loses its stream leader while the node is
//! forwarding: nothing is lost and nothing is doubled. (Order per source is
//! not promised across a leader change; see ARCHITECTURE.md.)

use crate::support;

use jetedge::Node;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::http::{post_order, Client};
use support::nats::{assert_exactly_once, jetstream, read_stream, stream_count, Cluster};
use support::{node_config, parse_config, TempDir};

const SOURCES: usize = 8;
const PER_SOURCE: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_stream_leader_mid_stream_loses_and_doubles_nothing() {
    let mut cluster = Cluster::start();
    let dir = TempDir::new("failover");
    let text = node_config(dir.path(), &cluster.urls())
        .replace("ack_timeout = \"2s\"", "ack_timeout = \"2s\"\nreplicas = 3");
    let node = Node::start(parse_config(&text)).await.unwrap();
    let client = Client::new(node.ingress_addr);
    let js = jetstream(&cluster.urls()).await;
    // The node creates the R3 stream once the cluster has elected its leaders.
    assert!(
        support::eventually(Duration::from_secs(60), async || js
            .get_stream("EDGE")
            .await
            .is_ok())
        .await
    );

    let stored = Arc::new(AtomicUsize::new(0));
    let mut posters = Vec::new();
    for s in 0..SOURCES {
        let (client, stored) = (client.clone(), stored.clone());
        posters.push(tokio::spawn(async move {
            for n in 0..PER_SOURCE {
                let r = post_order(&client, &format!("s{s}"), n).await;
                assert_eq!(r.status, 202, "{r:?}");
                stored.fetch_add(1, Ordering::Relaxed);
                // Paced so the leader change lands mid-stream.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }

    assert!(
        support::eventually(Duration::from_secs(60), async || stream_count(&js, "EDGE")
            .await
            >= 1500)
        .await
    );
    let mut stream = js.get_stream("EDGE").await.unwrap();
    let info = stream.info().await.unwrap();
    let cluster_info = info.cluster.clone().expect("a clustered stream");
    assert_eq!(
        cluster_info.replicas.len(),
        2,
        "the stream is not R3: {cluster_info:?}"
    );
    let leader = cluster_info.leader.expect("the stream has a leader");
    eprintln!(
        "stopping stream leader {leader} at {} upstream",
        info.state.messages
    );
    let server = cluster.by_name(&leader).expect("the leader is one of ours");
    tokio::task::block_in_place(|| server.stop());
    assert!(
        stored.load(Ordering::Relaxed) < SOURCES * PER_SOURCE,
        "the posting ended before the leader change"
    );

    // The stream elects a new leader and forwarding goes on without the old one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::task::block_in_place(|| cluster.by_name(&leader).unwrap().restart());
    for p in posters {
        p.await.unwrap();
    }
    assert!(
        support::eventually(Duration::from_secs(120), async || node.backlog().0 == 0).await,
        "backlog not drained: {:?}",
        node.backlog()
    );
    let js = jetstream(&cluster.urls()).await;
    let msgs = read_stream(&js, "EDGE", SOURCES * PER_SOURCE, Duration::from_secs(60)).await;
    assert_eq!(msgs.len(), SOURCES * PER_SOURCE);
    assert_exactly_once(&msgs, SOURCES, PER_SOURCE);
    let new_leader = support::nats::stream_info(&js, "EDGE")
        .await
        .cluster
        .clone()
        .and_then(|c| c.leader);
    eprintln!(
        "new leader {new_leader:?}; {} forwarded, {} publish failures",
        node.metrics.events_forwarded.get(),
        node.metrics.publish_failures.get()
    );
    node.shutdown().await;
}
