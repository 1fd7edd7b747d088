//! Encryption at rest, with the real binary: what lies in the data dir is
//! sealed, a start without the key that sealed it stops with exit code 3
//! and leaves every byte in place, the right key drains everything, and a
//! rotated key keeps the previous one only while older records drain.

use crate::support;

use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::http::Client;
use support::nats::{jetstream, read_stream, NatsServer};
use support::node::Binary;
use support::{node_config, TempDir};

const MARKER: &str = "PLAINTEXT-MARKER";

/// A key file beside (not inside) the data dir; returns its reference and id.
fn key(dir: &Path, name: &str, byte: u8) -> (String, String) {
    let bytes = [byte; 32];
    let path = dir.join(format!("{name}.key"));
    std::fs::write(
        &path,
        base64::engine::general_purpose::STANDARD.encode(bytes),
    )
    .unwrap();
    let id = jetedge::store::key_id(&bytes).to_string();
    (format!("file:{}", path.display()), id)
}

/// A node on `data` (upstream `url`) with these keys, its files in `dir/name`.
fn node(dir: &Path, name: &str, data: &Path, url: &str, keys: &str) -> Binary {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    let text =
        node_config(data, &[url.to_string()]).replacen("[node]\n", &format!("[node]\n{keys}\n"), 1);
    Binary::configured(&home, &text)
}

/// Posts `n` events whose payload carries the marker, from number `from` on.
async fn post(node: &Binary, from: usize, n: usize) {
    let client = Client::new(([127, 0, 0, 1], node.port).into());
    let headers = vec![("content-type".to_string(), "application/json".to_string())];
    for i in from..from + n {
        let body = format!(r#"{{"type":"card.read","n":{i},"card":"{MARKER}-{i}"}}"#);
        let r = client
            .post("/v1/webhooks/events", &headers, body.into_bytes())
            .await;
        assert_eq!(r.status, 202, "{r:?}");
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        match path.is_dir() {
            true => out.extend(files(&path)),
            false => out.push(path),
        }
    }
    out
}

/// What the data dir holds: a hash of each file jetedge writes itself
/// (outbox segments, key runs, token, ballast), and every entry of every
/// sled tree (sled rewrites its own files whenever it opens, so those are
/// compared by content, not by bytes).
fn contents(dir: &Path) -> BTreeMap<String, String> {
    let sled_file = |p: &Path| {
        let name = p.file_name().unwrap().to_string_lossy();
        ["db", "conf"].contains(&name.as_ref())
            || name.starts_with("snap.")
            || p.to_string_lossy().contains("/blobs/")
    };
    let mut out: BTreeMap<String, String> = files(dir)
        .into_iter()
        .filter(|p| !sled_file(p))
        .map(|p| {
            (
                p.display().to_string(),
                hex::encode(Sha256::digest(std::fs::read(&p).unwrap())),
            )
        })
        .collect();
    let db = sled::Config::new()
        .path(dir)
        .segment_size(2 << 20)
        .open()
        .unwrap();
    for name in db.tree_names() {
        for item in db.open_tree(&name).unwrap().iter() {
            let (k, v) = item.unwrap();
            out.insert(
                format!("sled {} {}", hex::encode(&name), hex::encode(k)),
                hex::encode(v),
            );
        }
    }
    out
}

fn backlog(node: &Binary) -> u64 {
    node.admin_json("/admin/status")["backlog"]["events"]
        .as_u64()
        .unwrap()
}

/// Starts a node that must refuse: exit code 3 and the reason in its log.
fn assert_refused(mut node: Binary, says: &str) {
    node.spawn();
    let status = node
        .wait_exit(Duration::from_secs(20))
        .expect("the node exits");
    assert_eq!(status.code(), Some(3), "{}", node.log_tail(10));
    assert!(node.log().contains(says), "{}", node.log_tail(10));
}

async fn drained(node: &Binary) -> bool {
    support::eventually(Duration::from_secs(60), async || backlog(node) == 0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_buffer_holds_no_plaintext_needs_its_key_and_drains_with_it() {
    let mut nats = NatsServer::start();
    nats.stop(); // the node buffers: upstream is down
    let dir = TempDir::new("enc-seal");
    let data = dir.path().join("data");
    let (a, a_id) = key(dir.path(), "a", 1);
    let (b, _) = key(dir.path(), "b", 2);
    let with_a = format!("encryption_key = \"{a}\"");

    let mut first = node(dir.path(), "first", &data, &nats.url(), &with_a);
    first.start();
    post(&first, 0, 300).await;
    assert_eq!(backlog(&first), 300);
    first.stop();
    let bytes: Vec<u8> = files(&data)
        .iter()
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect();
    assert!(
        bytes.len() > 300 * 40,
        "the events are on disk ({} bytes)",
        bytes.len()
    );
    assert!(
        !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
        "a payload lies in clear text in the data dir"
    );

    // Without a key, or with another one, the start stops; nothing changes.
    let before = contents(&data);
    assert!(before.keys().any(|k| k.contains("outbox")), "{before:?}");
    assert_refused(node(dir.path(), "none", &data, &nats.url(), ""), &a_id);
    let wrong = format!("encryption_key = \"{b}\"");
    assert_refused(node(dir.path(), "wrong", &data, &nats.url(), &wrong), &a_id);
    assert!(
        contents(&data) == before,
        "a refused start changed the data dir"
    );

    // With the key, every event reaches upstream, opened.
    let mut again = node(dir.path(), "again", &data, &nats.url(), &with_a);
    again.start();
    nats.restart();
    assert!(drained(&again).await, "{}", again.log_tail(10));
    let js = jetstream(&[nats.url()]).await;
    let msgs = read_stream(&js, "EDGE", 300, Duration::from_secs(30)).await;
    assert_eq!(msgs.len(), 300);
    let text = String::from_utf8_lossy(&msgs[299].payload).to_string();
    assert!(text.contains(&format!("{MARKER}-299")), "{text}");
    again.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_keeps_the_previous_one_until_older_records_drain() {
    let mut nats = NatsServer::start();
    nats.stop();
    let dir = TempDir::new("enc-rotate");
    let data = dir.path().join("data");
    let (a, a_id) = key(dir.path(), "a", 3);
    let (b, b_id) = key(dir.path(), "b", 4);

    let mut old = node(
        dir.path(),
        "old",
        &data,
        &nats.url(),
        &format!("encryption_key = \"{a}\""),
    );
    old.start();
    post(&old, 0, 200).await;
    old.stop();

    let rotated = format!("encryption_key = \"{b}\"\nprevious_keys = [\"{a}\"]");
    let mut new = node(dir.path(), "new", &data, &nats.url(), &rotated);
    new.start();
    post(&new, 200, 200).await;
    let enc = &new.admin_json("/admin/status")["encryption"];
    assert_eq!(enc["key"], b_id.as_str());
    assert_eq!(enc["previous_keys"], serde_json::json!([a_id]));
    assert_eq!(enc["older_records_in_outbox"], true);

    nats.restart();
    assert!(drained(&new).await, "{}", new.log_tail(10));
    let enc = &new.admin_json("/admin/status")["encryption"];
    assert_eq!(enc["older_records_in_outbox"], false);
    let js = jetstream(&[nats.url()]).await;
    assert_eq!(
        read_stream(&js, "EDGE", 400, Duration::from_secs(30))
            .await
            .len(),
        400
    );
    new.stop();

    // Drained: the previous key can go.
    let mut only_b = node(
        dir.path(),
        "only-b",
        &data,
        &nats.url(),
        &format!("encryption_key = \"{b}\""),
    );
    only_b.start();
    post(&only_b, 400, 10).await;
    only_b.stop();
}
