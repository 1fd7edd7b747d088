//! Links that fail without closing, through the harness's proxy: an
//! upstream whose answers never come back (publishes land, acks are lost),
//! an upstream link that swallows everything (blackhole), a webhook target
//! that accepts connections and never answers, and a link that is cut or
//! reset every few seconds for a minute. The node must time out, resend,
//! and still leave each event once.

use crate::support;

use jetedge::Node;
use std::collections::HashSet;
use std::time::Duration;
use support::http::{post_order, Client};
use support::nats::{jetstream, read_stream, NatsServer};
use support::proxy::{LinkMode, SlowLink};
use support::webhook::{Mode, Receiver};
use support::{node_config, parse_config, TempDir, SECRET, SECRET_ENV};

async fn post(client: &Client, source: &str, range: std::ops::Range<usize>) {
    for n in range {
        assert_eq!(
            post_order(client, source, n).await.status,
            202,
            "{source} #{n}"
        );
    }
}

/// An upstream server, a link to it the test controls, and a node
/// forwarding through that link.
async fn behind_link(name: &str) -> (NatsServer, SlowLink, TempDir, jetedge::NodeHandle) {
    let nats = NatsServer::start();
    let link = SlowLink::plain(format!("127.0.0.1:{}", nats.port)).await;
    let dir = TempDir::new(name);
    let node = Node::start(parse_config(&node_config(dir.path(), &[link.url()])))
        .await
        .unwrap();
    (nats, link, dir, node)
}

/// Events in the upstream stream (waiting for `expected`), and how many
/// distinct event ids they hold.
async fn stored_upstream(nats: &NatsServer, expected: usize) -> (usize, usize) {
    let js = jetstream(&[nats.url()]).await;
    let msgs = read_stream(&js, "EDGE", expected, Duration::from_secs(30)).await;
    let ids: HashSet<String> = msgs
        .iter()
        .map(|m| m.header("Nats-Msg-Id").unwrap())
        .collect();
    (msgs.len(), ids.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_that_never_come_back_are_resent_and_each_event_is_stored_once() {
    let (nats, link, _dir, node) = behind_link("partition-acks").await;
    let client = Client::new(node.ingress_addr);
    post(&client, "s0", 0..100).await;
    support::assert_drains(&node, Duration::from_secs(20)).await;

    // Publishes still land upstream, but no answer comes back.
    link.set_mode(LinkMode::DropReplies);
    post(&client, "s0", 100..300).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        node.backlog().0 > 0,
        "nothing can be acknowledged while replies are lost"
    );
    assert_eq!(node.link_state(), "connected", "{}", node.link_state());

    link.set_mode(LinkMode::Pass);
    support::assert_drains(&node, Duration::from_secs(60)).await;
    let (stored, distinct) = stored_upstream(&nats, 300).await;
    assert_eq!(
        (stored, distinct),
        (300, 300),
        "each event once in the stream"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_upstream_times_out_and_every_event_lands_once_after() {
    let (nats, link, _dir, node) = behind_link("partition-blackhole").await;
    let client = Client::new(node.ingress_addr);
    post(&client, "s3", 0..50).await;
    support::assert_drains(&node, Duration::from_secs(20)).await;

    // The link swallows everything, both ways, and says nothing.
    link.set_mode(LinkMode::Blackhole);
    post(&client, "s3", 50..150).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(node.backlog().0, 100, "nothing can be acknowledged");
    assert!(
        node.metrics.publish_failures.get() > 0,
        "the forwarder noticed the silence"
    );

    link.set_mode(LinkMode::Pass);
    support::assert_drains(&node, Duration::from_secs(60)).await;
    let (stored, distinct) = stored_upstream(&nats, 150).await;
    assert_eq!(
        (stored, distinct),
        (150, 150),
        "each event once in the stream"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_target_that_never_answers_is_retried_until_it_does() {
    let nats = NatsServer::start();
    let hook = Receiver::start(SECRET, Mode::Ok).await;
    let target = hook
        .url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let link = SlowLink::plain(target.clone()).await;
    let path = hook.url.split_once(&target).unwrap().1.to_string();
    let dir = TempDir::new("partition-hook");
    let text = node_config(dir.path(), &[nats.url()])
        + &format!(
            "\n[[subscription]]\nname = \"apps\"\nsubjects = [\"events.s1.>\"]\ndeliver = \"all\"\nack_wait = \"5s\"\n\
             to_webhook = {{ url = \"http://127.0.0.1:{}{path}\", secret = \"env:{SECRET_ENV}\", timeout = \"1s\" }}\n\
             [subscription.retry]\ninitial = \"100ms\"\nmax = \"500ms\"\nmax_attempts = 1000\n",
            link.port
        );
    let node = Node::start(parse_config(&text)).await.unwrap();
    let client = Client::new(node.ingress_addr);

    // The target takes connections and never says a word.
    link.set_mode(LinkMode::Blackhole);
    post(&client, "s1", 0..20).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(hook.count(), 0);
    let status = node.egress.status();
    assert!(
        status[0].failed_attempts > 0,
        "the timeouts are counted: {status:?}"
    );

    link.set_mode(LinkMode::Pass);
    let delivered = support::eventually(Duration::from_secs(60), async || hook.count() >= 20);
    assert!(delivered.await, "the target got {} of 20", hook.count());
    let taken = hook.taken();
    assert_eq!(
        taken.iter().collect::<HashSet<_>>().len(),
        20,
        "every event, once each: {taken:?}"
    );
    assert_eq!(node.dead_letters(), 0);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_that_flaps_for_a_minute_loses_and_doubles_nothing() {
    let (nats, link, _dir, node) = behind_link("partition-flap").await;
    let client = Client::new(node.ingress_addr);
    // Senders keep posting while the link is cut and restored every few seconds.
    let sender = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut n = 0;
            let until = tokio::time::Instant::now() + Duration::from_secs(60);
            while tokio::time::Instant::now() < until {
                post(&client, "s2", n..n + 10).await;
                n += 10;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            n
        })
    };
    // Down every other 3 s: closed, then reset (RST) the next time.
    let mut cuts = 0;
    for i in 0..20 {
        let mode = match i % 4 {
            0 => LinkMode::Cut,
            2 => LinkMode::Reset,
            _ => LinkMode::Pass,
        };
        cuts += u64::from(mode != LinkMode::Pass);
        link.set_mode(mode);
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    link.set_mode(LinkMode::Pass);
    let posted = sender.await.unwrap();
    support::assert_drains(&node, Duration::from_secs(60)).await;
    assert!(
        link.connections.load(std::sync::atomic::Ordering::Relaxed) > 1,
        "the link was really cut"
    );
    let (stored, distinct) = stored_upstream(&nats, posted).await;
    assert_eq!(
        (stored, distinct),
        (posted, posted),
        "each of {posted} events once ({cuts} cuts)"
    );
    node.shutdown().await;
}
