//! Test harness: real nats-server processes on free loopback ports with
//! their own store directories (stopped by PID), the node under test (in
//! process, or the real binary), an HTTP client, and Standard Webhooks
//! signing done by the reference library rather than by jetedge.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod browser;
pub mod http;
pub mod nats;
pub mod node;
pub mod proxy;
pub mod tls;
pub mod tmpfs;
pub mod webhook;

use jetedge::config::Config;
use std::path::{Path, PathBuf};

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let unique = format!(
            "jetedge-test-{name}-{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        );
        let p = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free TCP port on loopback (see [`next_port`]).
pub fn free_port() -> u16 {
    next_port()
}

/// `N` distinct free loopback ports.
pub fn free_ports<const N: usize>() -> [u16; N] {
    std::array::from_fn(|_| next_port())
}

/// The next port that is free now, from below the kernel's ephemeral range
/// (32768 and up): a port picked by binding port 0 comes from that range,
/// where the outgoing connections of other tests running meanwhile take
/// theirs, and one took a cluster route port between its pick and
/// nats-server's bind. Ports are handed out once per process (a counter),
/// from an offset of the process id's, so two test processes rarely meet.
fn next_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    loop {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const SECRET_ENV: &str = "JETEDGE_TEST_SHOP_SECRET";

/// A node config for tests: loopback port 0, the given data dir and
/// upstream, Standard Webhooks sources `shop` and `s0`..`s7`, and an
/// unauthenticated `events` source.
pub fn node_config(data_dir: &Path, upstream_urls: &[String]) -> String {
    std::env::set_var(SECRET_ENV, SECRET);
    let mut text = format!(
        r#"
[node]
id = "test-node"
data_dir = "{}"
max_buffer = "512MiB"
shutdown_timeout = "5s"

[ingress]
listen = "127.0.0.1:0"
max_body = "64KiB"
body_timeout = "2s"
header_timeout = "2s"

[admin]
listen = "127.0.0.1:0"

[upstream]
servers = [{}]
ack_timeout = "2s"

[[source]]
name = "events"
verify = "none"

[[source]]
name = "shop"
verify = "standard-webhooks"
secrets = ["env:{SECRET_ENV}"]
"#,
        data_dir.display(),
        upstream_urls
            .iter()
            .map(|u| format!("{u:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for i in 0..8 {
        text.push_str(&format!(
            "\n[[source]]\nname = \"s{i}\"\nverify = \"standard-webhooks\"\nsecrets = [\"env:{SECRET_ENV}\"]\n"
        ));
    }
    text
}

pub fn parse_config(text: &str) -> Config {
    Config::from_toml(text, std::env::vars())
        .unwrap_or_else(|p| panic!("test config invalid: {p:?}"))
}

/// Standard Webhooks headers for `body`, signed by the reference library.
pub fn sign(msg_id: &str, body: &[u8], ts: i64) -> Vec<(String, String)> {
    let wh = standardwebhooks::Webhook::new(SECRET).unwrap();
    vec![
        ("content-type".into(), "application/json".into()),
        ("webhook-id".into(), msg_id.into()),
        ("webhook-timestamp".into(), ts.to_string()),
        (
            "webhook-signature".into(),
            wh.sign(msg_id, ts, body).unwrap(),
        ),
    ]
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A webhook body of an order event with sequence `n`.
pub fn order_body(source: &str, n: usize) -> Vec<u8> {
    serde_json::json!({"type": "order.created", "data": {"source": source, "n": n, "sku": "SKU-1234"}})
        .to_string()
        .into_bytes()
}

/// Polls `f` every 50 ms until it returns true or `timeout` passes.
pub async fn eventually(timeout: std::time::Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits until an in-process node's backlog is empty (up to `within`),
/// failing with what is left.
pub async fn assert_drains(node: &jetedge::NodeHandle, within: std::time::Duration) {
    let drained = eventually(within, async || node.backlog().0 == 0).await;
    assert!(drained, "backlog (events, bytes) {:?} left", node.backlog());
}

/// A number from the environment (a test's or bench's size), or `default`.
pub fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
