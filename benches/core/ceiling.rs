//! What jetedge's ingest is measured against, served on loopback in the
//! same process and driven by the same load client:
//!
//! - the CPU ceiling: a bare hyper server that reads each request, verifies
//!   the same Standard Webhooks HMAC and parses the same JSON, and answers
//!   202 (no disk, no NATS);
//! - a naive prototype: the same, then a sled insert and a group commit
//!   (one flush and fdatasync for whatever waits), answered once durable;
//!   no dedupe, no envelope, no forwarding.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Which server.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ceiling,
    Prototype,
}

pub struct Server {
    pub addr: std::net::SocketAddr,
    stop: tokio_util::sync::CancellationToken,
    _dir: Option<super::support::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A write waiting for the group commit.
type Pending = (Vec<u8>, Bytes, oneshot::Sender<()>);

struct State {
    key: Vec<u8>,
    commit: Option<mpsc::Sender<Pending>>,
}

pub async fn start(kind: Kind) -> Server {
    use base64::Engine;
    let secret = super::support::SECRET.trim_start_matches("whsec_");
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret)
        .unwrap();
    let (dir, commit) = match kind {
        Kind::Ceiling => (None, None),
        Kind::Prototype => {
            let dir = super::support::TempDir::new("bench-prototype");
            let commit = committer(sled::open(dir.path().join("db")).unwrap(), dir.path());
            (Some(dir), Some(commit))
        }
    };
    let state = Arc::new(State { key, commit });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                r = listener.accept() => r.unwrap(),
                _ = stopped.cancelled() => return,
            };
            tcp.set_nodelay(true).unwrap();
            let state = state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                let io = hyper_util::rt::TokioIo::new(tcp);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    Server {
        addr,
        stop,
        _dir: dir,
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok());
    let (Some(id), Some(ts), Some(sig)) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    ) else {
        return Ok(answer(StatusCode::UNAUTHORIZED, b"{}"));
    };
    if !verified(&state.key, id, ts, &body, sig) {
        return Ok(answer(StatusCode::UNAUTHORIZED, b"{}"));
    }
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return Ok(answer(StatusCode::BAD_REQUEST, b"{}"));
    };
    if event.get("type").and_then(|t| t.as_str()).is_none() {
        return Ok(answer(StatusCode::BAD_REQUEST, b"{}"));
    }
    if let Some(commit) = &state.commit {
        let (tx, rx) = oneshot::channel();
        commit
            .send((id.as_bytes().to_vec(), body, tx))
            .await
            .unwrap();
        rx.await.unwrap();
    }
    let reply = format!("{{\"id\":\"{id}\",\"status\":\"accepted\"}}");
    Ok(answer(StatusCode::ACCEPTED, reply.as_bytes()))
}

/// Standard Webhooks `v1`: base64 HMAC-SHA256 of `{id}.{ts}.{body}`.
fn verified(key: &[u8], id: &str, ts: &str, body: &[u8], sig: &str) -> bool {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    use subtle::ConstantTimeEq;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    for part in [id.as_bytes(), b".", ts.as_bytes(), b".", body] {
        mac.update(part);
    }
    let mac = mac.finalize().into_bytes();
    sig.split_whitespace()
        .filter_map(|e| e.strip_prefix("v1,"))
        .filter_map(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .any(|c| bool::from(mac.as_slice().ct_eq(&c)))
}

fn answer(status: StatusCode, body: &[u8]) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::copy_from_slice(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// One thread: takes whatever writes wait, inserts them, flushes sled and
/// fdatasyncs its files once, then answers them all.
fn committer(db: sled::Db, dir: &std::path::Path) -> mpsc::Sender<Pending> {
    let (tx, mut rx) = mpsc::channel::<Pending>(8192);
    let files: Vec<std::path::PathBuf> =
        vec![dir.join("db").join("db"), dir.join("db").join("conf")];
    std::thread::spawn(move || {
        while let Some(first) = rx.blocking_recv() {
            let mut group = vec![first];
            while let Ok(more) = rx.try_recv() {
                group.push(more);
            }
            for (key, value, _) in &group {
                db.insert(key, value.as_ref()).unwrap();
            }
            db.flush().unwrap();
            for f in &files {
                if let Ok(file) = std::fs::File::open(f) {
                    let _ = file.sync_data();
                }
            }
            for (_, _, done) in group {
                let _ = done.send(());
            }
        }
    });
    tx
}
