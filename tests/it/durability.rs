//! What a crash or a failing disk leaves behind: removals of forwarded
//! events are durable while a backlog drains, and a write that cannot be
//! made durable stops the node instead of answering for events that are
//! not on disk.

use crate::support;

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::http::Client;
use support::nats::{jetstream, read_stream, NatsServer};
use support::node::Binary;
use support::tmpfs::Tmpfs;
use support::{node_config, TempDir};

/// A batch of `n` CloudEvents of about `pad` bytes each, ids `{tag}-{i}`.
fn batch(tag: &str, n: usize, pad: usize) -> Vec<u8> {
    let events: Vec<Value> = (0..n)
        .map(|i| {
            json!({"specversion": "1.0", "id": format!("{tag}-{i}"), "source": "/kiosk/1",
                   "type": "kiosk.scan", "data": {"data": {"source": tag, "n": i}, "pad": "x".repeat(pad)}})
        })
        .collect();
    serde_json::to_vec(&events).unwrap()
}

fn batch_headers() -> Vec<(String, String)> {
    vec![(
        "content-type".into(),
        "application/cloudevents-batch+json".into(),
    )]
}

fn statuses(r: &support::http::Reply) -> Vec<u64> {
    r.body["results"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["http_status"].as_u64()).collect())
        .unwrap_or_default()
}

fn backlog(node: &Binary) -> u64 {
    node.admin_json("/admin/status")["backlog"]["events"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removals_of_forwarded_events_survive_a_kill_9_in_the_middle_of_a_drain() {
    let mut upstream = NatsServer::start();
    upstream.stop();
    let dir = TempDir::new("removals");
    // Credentials in the URL (the server takes any): never in the log.
    let url = upstream.url().replace("nats://", "nats://edge:hunter2@");
    let text = node_config(&dir.path().join("data"), &[url])
        .replace("max_body = \"64KiB\"", "max_body = \"1MiB\"");
    let mut node = Binary::configured(dir.path(), &text);
    tokio::task::block_in_place(|| node.start());
    let c = Client::new(([127, 0, 0, 1], node.port).into());
    // 40,000 events buffered offline; no ingest from here on, so nothing
    // else makes the removals durable.
    for b in 0..80 {
        let r = c
            .post(
                "/v1/events",
                &batch_headers(),
                batch(&format!("b{b}"), 500, 100),
            )
            .await;
        assert_eq!(statuses(&r), vec![202; 500], "{:?}", r.body);
    }
    upstream.restart();
    // Cut upstream again while the backlog drains.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = tokio::task::block_in_place(|| backlog(&node));
        if left < 36_000 {
            break;
        }
        assert!(Instant::now() < deadline, "the drain never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    upstream.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = tokio::task::block_in_place(|| backlog(&node));
    assert!(before > 0, "the drain finished before upstream was cut");
    node.kill9();
    tokio::task::block_in_place(|| node.start());
    let after = tokio::task::block_in_place(|| backlog(&node));
    assert_eq!(
        after, before,
        "a restart must not bring back events whose removal was acknowledged"
    );
    // And the rest still arrives, once.
    upstream.restart();
    let js = jetstream(&[upstream.url()]).await;
    let msgs = read_stream(&js, "EDGE", 40_000, Duration::from_secs(120)).await;
    assert_eq!(msgs.len(), 40_000);
    let log = node.log();
    assert!(
        log.contains("edge:***@") && !log.contains("hunter2"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_disk_refuses_stops_the_node_and_no_retry_is_a_duplicate_of_a_lost_event() {
    let Some(fs) = Tmpfs::mount("24m") else {
        return;
    };
    let mut upstream = NatsServer::start();
    upstream.stop();
    let dir = TempDir::new("disk-fails");
    // No reserve: the store itself meets the full disk.
    let text = node_config(&fs.path().join("data"), &[upstream.url()]).replace(
        "max_buffer = \"512MiB\"",
        "max_buffer = \"512MiB\"\ndisk_reserve = \"0\"",
    );
    let mut node = Binary::configured(dir.path(), &text);
    tokio::task::block_in_place(|| node.start());
    let c = Client::new(([127, 0, 0, 1], node.port).into());

    // Fill the disk until the store cannot write.
    let mut accepted = 0;
    let mut refused = None;
    for b in 0..1_000 {
        let tag = format!("b{b}");
        match c
            .try_post("/v1/events", &batch_headers(), batch(&tag, 50, 1000))
            .await
        {
            Ok(r) if statuses(&r) == vec![202; 50] => accepted += 50,
            Ok(r) => {
                assert_eq!(r.status, 503, "{r:?}");
                refused = Some(tag);
                break;
            }
            Err(e) => panic!("the node went away before answering: {e}"),
        }
    }
    let refused = refused.expect("the disk never filled");
    // The node stops by itself, non-zero, so that it is restarted.
    let exit = tokio::task::block_in_place(|| node.wait_exit(Duration::from_secs(20)))
        .expect("the node kept running after its store failed");
    assert!(!exit.success(), "exit status {exit}");
    assert!(node.log().contains("could not make a write durable"));

    // Space comes back; after a restart the sender's retry of the refused
    // batch is taken: accepted now, or, where its events had reached the
    // disk before the failure, a duplicate of events that are there (and
    // are forwarded below). Never a "duplicate" of an event that is not.
    fs.resize("64m");
    tokio::task::block_in_place(|| node.start());
    let r = c
        .post("/v1/events", &batch_headers(), batch(&refused, 50, 1000))
        .await;
    let answers = statuses(&r);
    assert_eq!(answers.len(), 50, "{r:?}");
    assert!(answers.iter().all(|s| *s == 202 || *s == 200), "{r:?}");
    upstream.restart();
    let js = jetstream(&[upstream.url()]).await;
    let msgs = read_stream(&js, "EDGE", accepted + 50, Duration::from_secs(60)).await;
    let ids: std::collections::HashSet<String> = msgs
        .iter()
        .map(|m| m.json()["idempotencykey"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), accepted + 50, "every accepted event, once");
    assert_eq!(msgs.len(), ids.len(), "no event twice");
    for i in 0..50 {
        assert!(
            ids.contains(&format!("{refused}-{i}")),
            "{refused}-{i} is missing"
        );
    }
}

/// Writes a file of `mib` MiB (or until the disk is full); returns MiB written.
fn fill(path: &std::path::Path, mib: usize) -> usize {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![7u8; 1 << 20];
    for written in 0..mib {
        if f.write_all(&chunk).and_then(|()| f.sync_data()).is_err() {
            return written;
        }
    }
    mib
}

fn readyz(node: &Binary) -> Value {
    let (_, body) = support::http::blocking_get(node.port, "/readyz").unwrap();
    serde_json::from_str(&body).unwrap()
}

/// Posts batches until events are refused; the ids accepted and the
/// refusal's code.
async fn post_until_refused(c: &Client, tag: &str) -> (Vec<String>, String) {
    let mut accepted = Vec::new();
    for b in 0..2_000 {
        let name = format!("{tag}{b}");
        let r = c
            .post("/v1/events", &batch_headers(), batch(&name, 50, 1000))
            .await;
        let results = r.body["results"].as_array().cloned().unwrap_or_default();
        assert_eq!(results.len(), 50, "{r:?}");
        for (i, res) in results.iter().enumerate() {
            match res["http_status"].as_u64() {
                Some(202) => accepted.push(format!("{name}-{i}")),
                _ => {
                    if r.status == 503 {
                        assert!(r.headers.contains_key("retry-after"), "{r:?}");
                    }
                    let code = res["error"]["code"].as_str().unwrap_or("").to_string();
                    return (accepted, code);
                }
            }
        }
    }
    panic!("the disk never filled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_new_events_drains_recovers_and_a_node_starts_on_it() {
    let Some(fs) = Tmpfs::mount("64m") else {
        return;
    };
    let mut upstream = NatsServer::start();
    upstream.stop();
    let dir = TempDir::new("disk-full");
    let text = node_config(&fs.path().join("data"), &[upstream.url()]).replace(
        "max_buffer = \"512MiB\"",
        "max_buffer = \"512MiB\"\ndisk_reserve = \"16MiB\"",
    );
    let mut node = Binary::configured(dir.path(), &text);
    tokio::task::block_in_place(|| node.start());
    let c = Client::new(([127, 0, 0, 1], node.port).into());
    // Something else on the box takes most of the disk.
    fill(&fs.path().join("other-app.log"), 30);

    let (mut accepted, code) = post_until_refused(&c, "a").await;
    assert_eq!(code, "disk_full");
    assert!(!accepted.is_empty());
    let ready = tokio::task::block_in_place(|| readyz(&node));
    assert_eq!(ready["store"], "full", "{ready}");
    let status = tokio::task::block_in_place(|| node.admin_json("/admin/status"));
    assert_eq!(status["store"], "full", "{status}");

    // Restarted on a disk that is now completely full, it still starts.
    tokio::task::block_in_place(|| node.stop());
    fill(&fs.path().join("more.log"), 64);
    tokio::task::block_in_place(|| node.start());
    let r = c
        .post("/v1/events", &batch_headers(), batch("x", 50, 1000))
        .await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.body["results"][0]["error"]["code"], "disk_full", "{r:?}");

    // Upstream returns: the backlog drains while the disk is full (what the
    // reserve is for), and its segments are deleted.
    upstream.restart();
    let drained = support::eventually(Duration::from_secs(60), async || {
        tokio::task::block_in_place(|| backlog(&node)) == 0
    })
    .await;
    assert!(drained, "the backlog did not drain on a full disk");
    // The other application frees its space: the node takes events again
    // by itself.
    std::fs::remove_file(fs.path().join("more.log")).unwrap();
    let resumed = support::eventually(Duration::from_secs(60), async || {
        let r = c
            .post("/v1/events", &batch_headers(), batch("after", 50, 1000))
            .await;
        r.status == 202
    })
    .await;
    assert!(resumed, "ingest never resumed; {}", node.log_tail(80));
    accepted.extend((0..50).map(|i| format!("after-{i}")));
    let js = jetstream(&[upstream.url()]).await;
    let msgs = read_stream(&js, "EDGE", accepted.len(), Duration::from_secs(60)).await;
    let ids: std::collections::HashSet<String> = msgs
        .iter()
        .map(|m| m.json()["idempotencykey"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(msgs.len(), ids.len(), "no event twice");
    for id in &accepted {
        assert!(ids.contains(id), "{id} was accepted but never forwarded");
    }
    // The condition was logged, not each refusal.
    let log = node.log();
    let lines = log.lines().filter(|l| l.contains("disk")).count();
    assert!(
        lines < 20,
        "{lines} log lines about the disk:\n{}",
        node.log_tail(40)
    );
    tokio::task::block_in_place(|| node.stop());
}
