//! The load client of the ingest lines: a minimal HTTP/1.1 client (one
//! request at a time per keep-alive connection, reading just enough of each
//! response to find its status and its end), driven closed-loop (as fast as
//! answers come: the maximum rate) or open-loop (requests at fixed times,
//! each latency counted from when it was due, so a stall is not hidden by
//! the requests it held back), and the process's CPU time per line.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub struct Conn {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
}

impl Conn {
    /// A connection, over TLS when `tls` is given (the handshake done here,
    /// before the clock starts on its first request).
    pub async fn open(addr: std::net::SocketAddr, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let stream: Box<dyn Stream> = match tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
                Box::new(
                    tokio_rustls::TlsConnector::from(config)
                        .connect(name, tcp)
                        .await
                        .unwrap(),
                )
            }
        };
        Self {
            stream,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Sends one request and returns the response's status code.
    pub async fn round_trip(&mut self, request: &[u8]) -> u16 {
        self.stream.write_all(request).await.unwrap();
        self.buf.clear();
        loop {
            if let Some(total) = complete_len(&self.buf) {
                let status = std::str::from_utf8(&self.buf[9..12])
                    .unwrap()
                    .parse()
                    .unwrap();
                self.buf.drain(..total);
                return status;
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the node closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The length of the response at the start of `buf`, once all of it is there.
fn complete_len(buf: &[u8]) -> Option<usize> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        })
        .map_or(0, |(_, v)| v.trim().parse().unwrap());
    (buf.len() >= head_end + length).then_some(head_end + length)
}

/// What one drive measured.
pub struct Run {
    pub rate: f64,
    /// Sorted.
    pub latencies: Vec<Duration>,
    /// This process's CPU seconds (user + system) per 1,000 requests.
    pub cpu_per_1000: f64,
}

impl Run {
    /// The latency at quantile `q`, in ms.
    pub fn ms(&self, q: f64) -> f64 {
        let l = &self.latencies;
        l[((l.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3
    }
}

/// This process's CPU time so far (user + system), from /proc.
pub fn cpu_seconds() -> f64 {
    cpu_seconds_of("self")
}

/// The CPU time so far (user + system) of process `pid` ("self" for this one).
pub fn cpu_seconds_of(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces), counted
    // by position (some are negative or letters): utime and stime are the
    // 12th and 13th of them.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks(11)
        .zip(ticks(12))
        .map_or(0.0, |(u, s)| (u + s) as f64 / tick)
}

/// Every request of `requests`, from `concurrency` connections, each
/// sending its next as soon as the last is answered (202 expected).
pub async fn closed_loop(
    addr: std::net::SocketAddr,
    requests: Arc<Vec<Vec<u8>>>,
    concurrency: usize,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Run {
    drive(addr, requests, concurrency, tls, None).await
}

/// `requests` sent at `rate` per second from `concurrency` connections:
/// request i is due at start + i/rate, whoever sends it; its latency runs
/// from then to its answer.
pub async fn open_loop(
    addr: std::net::SocketAddr,
    requests: Arc<Vec<Vec<u8>>>,
    concurrency: usize,
    rate: f64,
) -> Run {
    drive(addr, requests, concurrency, None, Some(rate)).await
}

/// The workers of both: each takes the next request; with a `rate`, waits
/// until it is due and times it from then, else sends it at once.
async fn drive(
    addr: std::net::SocketAddr,
    requests: Arc<Vec<Vec<u8>>>,
    concurrency: usize,
    tls: Option<Arc<rustls::ClientConfig>>,
    rate: Option<f64>,
) -> Run {
    let next = Arc::new(AtomicUsize::new(0));
    let (cpu, started) = (cpu_seconds(), Instant::now());
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (requests, next, tls) = (requests.clone(), next.clone(), tls.clone());
            tokio::spawn(async move {
                let mut conn = Conn::open(addr, tls).await;
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(request) = requests.get(i) else {
                        break;
                    };
                    let from = match rate {
                        Some(r) => {
                            let due = start + Duration::from_secs_f64(i as f64 / r);
                            tokio::time::sleep_until(due).await;
                            due
                        }
                        None => tokio::time::Instant::now(),
                    };
                    let status = conn.round_trip(request).await;
                    latencies.push(from.elapsed());
                    assert_eq!(status, 202, "request {i}");
                }
                latencies
            })
        })
        .collect();
    finish(workers, requests.len(), started, cpu).await
}

async fn finish(
    workers: Vec<tokio::task::JoinHandle<Vec<Duration>>>,
    n: usize,
    started: Instant,
    cpu: f64,
) -> Run {
    let mut latencies = Vec::with_capacity(n);
    for w in workers {
        latencies.extend(w.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Run {
        rate: n as f64 / elapsed.as_secs_f64(),
        latencies,
        cpu_per_1000: (cpu_seconds() - cpu) * 1000.0 / n as f64,
    }
}
