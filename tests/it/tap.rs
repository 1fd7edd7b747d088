//! `jetedge tap` against the real binary: it shows stored events after
//! redaction, filtered, and a watcher that never reads does not hold up
//! ingest.

use crate::support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::http::Client;
use support::node::Binary;
use support::{node_config, TempDir};

fn node(dir: &TempDir) -> Binary {
    let offline = format!("nats://127.0.0.1:{}", support::free_port());
    let text = node_config(&dir.path().join("data"), &[offline])
        + "\n[[redact]]\ndetectors = [\"email\"]\naction = \"mask\"\n";
    Binary::configured(dir.path(), &text)
}

async fn post(client: &Client, source: &str, n: usize) -> u16 {
    let body = format!(r#"{{"type":"signup.done","n":{n},"email":"jane.doe{n}@example.com"}}"#)
        .into_bytes();
    let id = format!("{source}-{n}");
    let headers = match source {
        "shop" => support::sign(&id, &body, support::now()),
        _ => vec![("content-type".into(), "application/json".into())],
    };
    client
        .post(&format!("/v1/webhooks/{source}"), &headers, body)
        .await
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tap_shows_stored_events_redacted_and_filtered() {
    let dir = TempDir::new("tap");
    let mut node = node(&dir);
    node.start();
    let client = Client::new(([127, 0, 0, 1], node.port).into());
    let mut tap = Command::new(env!("CARGO_BIN_EXE_jetedge"))
        .args([
            "tap",
            "--source",
            "shop",
            "--type",
            "signup.done",
            "--limit",
            "3",
            "-c",
        ])
        .arg(node.config_path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Events flow from two sources until the tap has its three and exits.
    let mut n = 0;
    while tap.try_wait().unwrap().is_none() {
        assert_eq!(post(&client, "events", n).await, 202);
        assert_eq!(post(&client, "shop", n).await, 202);
        n += 1;
        assert!(n < 400, "the tap never got three events");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let out = tap.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    for e in &lines {
        assert_eq!(e["source"], "/jetedge/test-node/shop", "{e}");
        assert_eq!(e["type"], "signup.done");
        assert!(
            e["redacted"].as_array().is_some_and(|r| !r.is_empty()),
            "{e}"
        );
    }
    assert!(
        !text.contains("jane.doe"),
        "an address passed unredacted: {text}"
    );
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tap_that_never_reads_does_not_hold_up_ingest() {
    let dir = TempDir::new("tap-stuck");
    let mut node = node(&dir);
    node.start();
    // A watcher that asks for everything and then reads nothing.
    let mut stuck = std::net::TcpStream::connect(("127.0.0.1", node.admin_port)).unwrap();
    let token = node.admin_token();
    write!(
        stuck,
        "GET /admin/tap HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = Client::new(([127, 0, 0, 1], node.port).into());
    for n in 0..3000 {
        assert_eq!(post(&client, "events", n).await, 202, "event {n}");
    }
    let status = node.admin_json("/admin/status");
    assert_eq!(status["events"]["accepted"], 3000);
    drop(stuck);
    node.stop();
}
