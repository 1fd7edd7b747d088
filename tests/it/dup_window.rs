//! The duplicate window made concrete: JetStream drops a resent
//! `Nats-Msg-Id` only within the stream's duplicate window, counted from
//! the first publish. These tests give the stream a 1 s window and make
//! resends come later than that, once while acks are lost on a live link
//! and once across a `kill -9`; the node must ask the stream what landed
//! rather than store those events twice.

use crate::support;

use jetedge::Node;
use std::time::Duration;
use support::http::{call, post_order, Client};
use support::nats::{assert_once_in_order, jetstream, read_stream, stream_count, NatsServer};
use support::node::Binary;
use support::proxy::{LinkMode, SlowLink};
use support::{node_config, parse_config, TempDir};

const WINDOW: Duration = Duration::from_secs(1);

/// The stream as an operator could have made it: a 1 s duplicate window.
async fn short_window_stream(nats: &NatsServer) {
    let js = jetstream(&[nats.url()]).await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "EDGE".into(),
        subjects: vec!["events.>".into()],
        duplicate_window: WINDOW,
        ..Default::default()
    })
    .await
    .unwrap();
}

async fn post(client: &Client, range: std::ops::Range<usize>) {
    for n in range {
        assert_eq!(post_order(client, "s0", n).await.status, 202, "#{n}");
    }
}

async fn forwarding(admin: std::net::SocketAddr, token: &str, what: &str) {
    let path = format!("/admin/forwarder/{what}");
    let auth = format!("Bearer {token}");
    let (status, body) = call(admin, "POST", &path, &[("authorization", &auth)]).await;
    assert_eq!(status, 200, "{body}");
}

/// Every order 0..total of `s0` once, in order, in the stream.
async fn assert_stored_once(nats: &NatsServer, total: usize) {
    let js = jetstream(&[nats.url()]).await;
    // Wait a little past `total`, so that a doubled event would show.
    let msgs = read_stream(&js, "EDGE", total + 1, Duration::from_secs(3)).await;
    assert_once_in_order(&msgs, 1, total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_lost_for_longer_than_the_duplicate_window_leave_each_event_once() {
    let nats = NatsServer::start();
    short_window_stream(&nats).await;
    let link = SlowLink::plain(format!("127.0.0.1:{}", nats.port)).await;
    let dir = TempDir::new("dup-window-link");
    let node = Node::start(parse_config(&node_config(dir.path(), &[link.url()])))
        .await
        .unwrap();
    let client = Client::new(node.ingress_addr);
    post(&client, 0..20).await;
    support::assert_drains(&node, Duration::from_secs(20)).await;

    // Publishes land, their acks never come back: several times the
    // window passes before the link answers again. (Held while posting,
    // so that all of them go out at once.)
    node.pause_forwarding(true);
    post(&client, 20..60).await;
    link.set_mode(LinkMode::DropReplies);
    node.pause_forwarding(false);
    let js = jetstream(&[nats.url()]).await;
    let landed = support::eventually(Duration::from_secs(10), async || {
        stream_count(&js, "EDGE").await >= 60
    });
    assert!(
        landed.await,
        "the publishes did not land: {} in the stream",
        stream_count(&js, "EDGE").await
    );
    tokio::time::sleep(WINDOW * 6).await;
    assert_eq!(
        node.backlog().0,
        40,
        "nothing acknowledged while replies are lost"
    );

    link.set_mode(LinkMode::Pass);
    support::assert_drains(&node, Duration::from_secs(30)).await;
    assert_stored_once(&nats, 60).await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_before_its_acks_came_and_back_after_the_window_sends_none_twice() {
    let nats = NatsServer::start();
    short_window_stream(&nats).await;
    let link = SlowLink::plain(format!("127.0.0.1:{}", nats.port)).await;
    let dir = TempDir::new("dup-window-kill");
    let text = node_config(&dir.path().join("data"), &[link.url()]);
    let mut node = Binary::configured(dir.path(), &text);
    node.start();
    let client = Client::new(([127, 0, 0, 1], node.port).into());
    post(&client, 0..20).await;
    let js = jetstream(&[nats.url()]).await;
    let forwarded = support::eventually(Duration::from_secs(20), async || {
        stream_count(&js, "EDGE").await >= 20
    });
    assert!(forwarded.await, "the first events did not land");

    let admin = ([127, 0, 0, 1], node.admin_port).into();
    let token = node.admin_token();
    forwarding(admin, &token, "pause").await;
    post(&client, 20..50).await;
    link.set_mode(LinkMode::DropReplies);
    forwarding(admin, &token, "resume").await;
    let landed = support::eventually(Duration::from_secs(10), async || {
        stream_count(&js, "EDGE").await >= 50
    });
    assert!(
        landed.await,
        "the publishes did not land: {} in the stream",
        stream_count(&js, "EDGE").await
    );
    node.kill9();
    // Down for longer than the window, as a node down overnight would be.
    tokio::time::sleep(WINDOW * 3).await;

    link.set_mode(LinkMode::Pass);
    node.start();
    let status = support::eventually(Duration::from_secs(30), async || {
        node.admin_json("/admin/status")["backlog"]["events"] == 0
    });
    assert!(status.await, "{}", node.log_tail(20));
    assert_stored_once(&nats, 50).await;
    assert!(
        node.log().contains("already holds"),
        "the node says it asked the stream: {}",
        node.log_tail(20)
    );

    // A clean stop leaves nothing in doubt: events still waiting then are
    // sent at the next start without asking the stream first.
    let token = node.admin_token();
    let admin = ([127, 0, 0, 1], node.admin_port).into();
    forwarding(admin, &token, "pause").await;
    post(&client, 50..55).await;
    node.stop();
    node.start();
    let status = support::eventually(Duration::from_secs(30), async || {
        node.admin_json("/admin/status")["backlog"]["events"] == 0
    });
    assert!(status.await, "{}", node.log_tail(20));
    assert_stored_once(&nats, 55).await;
    assert!(
        !node.log_of_this_run().contains("already holds"),
        "after a clean stop the node asked the stream: {}",
        node.log_of_this_run()
    );
    node.stop();
}
