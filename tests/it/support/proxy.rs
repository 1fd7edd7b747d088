//! A TCP proxy on a free loopback port standing in for a slow uplink:
//! each direction is limited to `bytes_per_sec` and delayed by `latency`
//! (one way), with a bounded queue, so a sender that outruns it is held
//! back by TCP as on a real cellular link. It counts the bytes it carried.
//! On command it blackholes the link (accepts and reads, delivers
//! nothing), drops only the replies (what is sent lands, no answer comes
//! back), cuts it (closes every connection and refuses new ones), or resets
//! it (the same, with a TCP reset instead of a close).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Chunks a direction reads at once (about a TCP segment).
const CHUNK: usize = 1400;
/// Chunks queued on the "link" before the reader stops taking more.
const QUEUE: usize = 64;

/// What the link does with what crosses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LinkMode {
    Pass = 0,
    /// Both directions read and thrown away: a peer that never answers.
    Blackhole = 1,
    /// Client to target delivered, target to client thrown away.
    DropReplies = 2,
    /// Connections closed, new ones refused.
    Cut = 3,
    /// Connections reset (RST, as a NAT box or a firewall that forgot the
    /// flow does), new ones reset at once.
    Reset = 4,
}

pub struct SlowLink {
    pub port: u16,
    mode: Arc<AtomicU8>,
    /// Bytes carried towards the target, and back.
    pub upstream_bytes: Arc<AtomicU64>,
    pub downstream_bytes: Arc<AtomicU64>,
    /// Connections accepted (a reconnect shows as a second one).
    pub connections: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl SlowLink {
    /// Proxies a loopback port to `target` (a loopback address).
    pub async fn start(target: String, bytes_per_sec: u64, latency: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let mode = Arc::new(AtomicU8::new(LinkMode::Pass as u8));
        let (u, d, c, m) = (up.clone(), down.clone(), connections.clone(), mode.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                match m.load(Ordering::Relaxed) {
                    x if x == LinkMode::Cut as u8 => continue, // closed
                    x if x == LinkMode::Reset as u8 => {
                        let _ = client.set_zero_linger();
                        continue; // dropped with linger 0: a reset
                    }
                    _ => {}
                }
                c.fetch_add(1, Ordering::Relaxed);
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let (to_target, to_client) = (Way::new(&m, false), Way::new(&m, true));
                tokio::spawn(carry(cr, sw, bytes_per_sec, latency, u.clone(), to_target));
                tokio::spawn(carry(sr, cw, bytes_per_sec, latency, d.clone(), to_client));
            }
        });
        Self {
            port,
            mode,
            upstream_bytes: up,
            downstream_bytes: down,
            connections,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// A link with no limit of its own, only the modes.
    pub async fn plain(target: String) -> Self {
        Self::start(target, 1 << 30, Duration::ZERO).await
    }

    pub fn set_mode(&self, mode: LinkMode) {
        self.mode.store(mode as u8, Ordering::Relaxed);
    }
}

/// One direction's view of the link's mode.
struct Way {
    mode: Arc<AtomicU8>,
    reply: bool,
}

impl Way {
    fn new(mode: &Arc<AtomicU8>, reply: bool) -> Self {
        Self {
            mode: mode.clone(),
            reply,
        }
    }

    fn mode(&self) -> u8 {
        self.mode.load(Ordering::Relaxed)
    }

    /// Whether what was read now is thrown away rather than carried.
    fn drops(&self) -> bool {
        let m = self.mode();
        m == LinkMode::Blackhole as u8 || (self.reply && m == LinkMode::DropReplies as u8)
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One direction: serialise chunks at the link's rate, deliver each
/// `latency` after it finished crossing.
async fn carry(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    rate: u64,
    latency: Duration,
    counted: Arc<AtomicU64>,
    way: Way,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE);
    let writer = tokio::spawn(async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut free_at = Instant::now();
    let mut buf = vec![0u8; CHUNK];
    loop {
        // A cut link is noticed at the next read or within 100 ms.
        let read = tokio::time::timeout(Duration::from_millis(100), from.read(&mut buf));
        let n = match read.await {
            _ if way.mode() == LinkMode::Cut as u8 => break,
            _ if way.mode() == LinkMode::Reset as u8 => {
                // The socket read here closes with linger 0 (the other
                // direction does the same with its own): each peer gets a reset.
                let _ = from.as_ref().set_zero_linger();
                drop(tx);
                writer.abort();
                return;
            }
            Err(_) => continue,
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => n,
        };
        if way.drops() {
            continue;
        }
        counted.fetch_add(n as u64, Ordering::Relaxed);
        let start = free_at.max(Instant::now());
        free_at = start + Duration::from_secs_f64(n as f64 / rate as f64);
        // Holding the read until the chunk has crossed keeps the queue
        // (and so the link's buffer) bounded, as a real link does.
        tokio::time::sleep_until(start).await;
        if tx
            .send((free_at + latency, buf[..n].to_vec()))
            .await
            .is_err()
        {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}
