//! The status page as a site operator opens it, in a real headless
//! Chromium: against a node with traffic, a failing target and a dead
//! letter, its JavaScript renders live numbers, lists the dead letter, and
//! a click on Replay delivers it. A screenshot is kept for people to look
//! at (`jetedge-status-page.png` in the system's temp dir).

use crate::support;

use jetedge::Node;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::browser::Browser;
use support::http::{post_order, Client};
use support::nats::NatsServer;
use support::webhook::{Mode, Receiver};
use support::{node_config, parse_config, TempDir, SECRET, SECRET_ENV};

fn number(text: &str) -> f64 {
    text.replace(',', "").trim().parse().unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_live_numbers_and_a_replay_click_delivers_a_dead_letter() {
    let nats = NatsServer::start();
    let hook = Receiver::start(SECRET, Mode::Always(500, None)).await;
    let dir = TempDir::new("status-page");
    let text = node_config(dir.path(), &[nats.url()])
        + &format!(
            "\n[[subscription]]\nname = \"apps\"\nsubjects = [\"events.shop.>\"]\ndeliver = \"all\"\n\
             to_webhook = {{ url = \"{}\", secret = \"env:{SECRET_ENV}\", timeout = \"2s\" }}\n\
             [subscription.retry]\ninitial = \"10ms\"\nmax = \"10ms\"\nmax_attempts = 2\n\
             [subscription.breaker]\nfailures = 1000\n",
            hook.url
        );
    let node = Node::start(parse_config(&text)).await.unwrap();
    let admin = node.admin_addr.unwrap();
    let client = Client::new(node.ingress_addr);
    // One order fails at the target and becomes a dead letter.
    assert_eq!(post_order(&client, "shop", 0).await.status, 202);
    let dead = support::eventually(Duration::from_secs(30), async || node.dead_letters() == 1);
    assert!(dead.await, "no dead letter");
    // Traffic keeps flowing while the page is open (from a source the
    // subscription does not take), and one sender is refused.
    let unsigned = client
        .post(
            "/v1/webhooks/shop",
            &[("content-type".into(), "application/json".into())],
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(unsigned.status, 401);
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 1;
            while !stop.load(Ordering::Relaxed) {
                post_order(&client, "s1", n).await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let browser = Browser::start().await;
    browser
        .open(&format!("http://{admin}/#token={}", node.admin_token))
        .await;
    let wait = Duration::from_secs(20);
    browser.wait_text("#node", wait, |t| t == "test-node").await;
    browser
        .wait_text("#upstream", wait, |t| t == "connected")
        .await;
    // The numbers are there and move.
    let first = number(
        &browser
            .wait_text("#accepted", wait, |t| number(t) >= 1.0)
            .await,
    );
    browser
        .wait_text("#accepted", wait, |t| number(t) > first)
        .await;
    browser
        .wait_text("#rate-ingest", wait, |t| number(t) > 0.0)
        .await;
    browser
        .wait_text("#refusals", wait, |t| {
            t.contains("shop") && t.contains("unauthorized")
        })
        .await;
    browser
        .wait_text("#subscriptions", wait, |t| {
            t.contains("apps") && t.contains("webhook")
        })
        .await;
    // The dead letter is listed.
    let row = browser
        .wait_text("#dlq tr[data-letter]", wait, |t| t.contains("apps"))
        .await;
    assert!(row.contains("HTTP 500") || row.contains("500"), "{row}");
    let shot = std::env::temp_dir().join("jetedge-status-page.png");
    browser.screenshot(&shot).await;
    eprintln!("status page screenshot: {}", shot.display());

    // The target recovers; a click on Replay delivers the letter.
    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();
    hook.set_mode(Mode::Ok);
    let before = hook.count();
    browser
        .click("#dlq tr[data-letter] button[data-action=\"replay\"]")
        .await;
    let delivered = support::eventually(wait, async || node.dead_letters() == 0).await;
    assert!(delivered, "the replayed letter is still dead");
    assert!(hook.count() > before, "the replay reached the target");
    browser
        .wait_text("#dlq", wait, |t| t.contains("none"))
        .await;
    browser
        .wait_text("#dlq-result", wait, |t| t.contains("delivered"))
        .await;
    browser.stop().await;
    node.shutdown().await;
}
