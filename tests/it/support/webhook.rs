//! A microapp stand-in: a real HTTP server on a free loopback port that
//! checks every request's Standard Webhooks signature with the reference
//! library, records the event ids it took, and fails or stalls on demand.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the receiver answers.
#[derive(Debug, Clone)]
pub enum Mode {
    Ok,
    /// Each event id fails this many times with 500, then succeeds.
    FailFirst(u32),
    /// Every request fails with this status (and `Retry-After`, if given).
    Always(u16, Option<u64>),
    /// Answers 200 after this long.
    Slow(Duration),
}

#[derive(Default)]
struct State {
    /// Event ids taken (2xx answered), in arrival order.
    taken: Vec<String>,
    /// Requests per event id, whatever the answer.
    tries: HashMap<String, u32>,
    bad_signatures: u64,
    wrong_content_type: u64,
}

pub struct Receiver {
    pub url: String,
    mode: Arc<Mutex<Mode>>,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(secret: &str, mode: Mode) -> Self {
        Self::start_with(secret, mode, None).await
    }

    /// A receiver on https:// with `tls` (a server config; with a client
    /// verifier for an mTLS receiver).
    pub async fn start_tls(secret: &str, mode: Mode, tls: rustls::ServerConfig) -> Self {
        Self::start_with(secret, mode, Some(Arc::new(tls))).await
    }

    async fn start_with(secret: &str, mode: Mode, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}/hook", listener.local_addr().unwrap());
        let mode = Arc::new(Mutex::new(mode));
        let state = Arc::new(Mutex::new(State::default()));
        let wh = Arc::new(standardwebhooks::Webhook::new(secret).unwrap());
        let (m, s) = (mode.clone(), state.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (m, s, wh) = (m.clone(), s.clone(), wh.clone());
                let svc = hyper::service::service_fn(move |req| {
                    let (m, s, wh) = (m.clone(), s.clone(), wh.clone());
                    async move { Ok::<_, Infallible>(answer(req, &m, &s, &wh).await) }
                });
                let tls = tls.clone();
                tokio::spawn(async move {
                    let http = hyper::server::conn::http1::Builder::new();
                    let Some(tls) = tls else {
                        let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        return;
                    };
                    // A client without the certificate an mTLS receiver wants
                    // never gets past this.
                    if let Ok(s) = tokio_rustls::TlsAcceptor::from(tls).accept(stream).await {
                        let _ = http.serve_connection(TokioIo::new(s), svc).await;
                    }
                });
            }
        });
        Self {
            url,
            mode,
            state,
            task,
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn taken(&self) -> Vec<String> {
        self.state.lock().unwrap().taken.clone()
    }

    /// Events taken so far.
    pub fn count(&self) -> usize {
        self.state.lock().unwrap().taken.len()
    }

    pub fn tries(&self, id: &str) -> u32 {
        self.state
            .lock()
            .unwrap()
            .tries
            .get(id)
            .copied()
            .unwrap_or(0)
    }

    pub fn requests(&self) -> u32 {
        self.state.lock().unwrap().tries.values().sum()
    }

    /// Requests whose signature or content type was wrong (must stay 0).
    pub fn bad_requests(&self) -> u64 {
        let s = self.state.lock().unwrap();
        s.bad_signatures + s.wrong_content_type
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    mode: &Mutex<Mode>,
    state: &Mutex<State>,
    wh: &standardwebhooks::Webhook,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let reply = |status: u16, retry_after: Option<u64>| {
        let mut r = Response::new(Full::new(Bytes::from_static(b"{}")));
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        if let Some(s) = retry_after {
            r.headers_mut()
                .insert("retry-after", s.to_string().parse().unwrap());
        }
        r
    };
    if wh.verify(&body, &parts.headers).is_err() {
        state.lock().unwrap().bad_signatures += 1;
        return reply(401, None);
    }
    if parts.headers.get("content-type").map(|v| v.as_bytes())
        != Some(b"application/cloudevents+json")
    {
        state.lock().unwrap().wrong_content_type += 1;
        return reply(415, None);
    }
    let id = parts.headers["webhook-id"].to_str().unwrap().to_string();
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
    // The event id, or for an id that is no header text, its digest.
    let event_id = event["id"].as_str().unwrap_or_default();
    let digest = {
        use sha2::Digest;
        format!("jetedge-{}", hex::encode(sha2::Sha256::digest(event_id)))
    };
    assert!(
        id == event_id || id == digest,
        "webhook-id {id:?} is neither the event id {event_id:?} nor its digest"
    );
    let tries = {
        let mut s = state.lock().unwrap();
        let t = s.tries.entry(id.clone()).or_default();
        *t += 1;
        *t
    };
    let mode = mode.lock().unwrap().clone();
    let status = match mode {
        Mode::Ok => 200,
        Mode::FailFirst(n) if tries <= n => 500,
        Mode::FailFirst(_) => 200,
        Mode::Always(status, retry_after) => return reply(status, retry_after),
        Mode::Slow(d) => {
            tokio::time::sleep(d).await;
            200
        }
    };
    if status == 200 {
        state.lock().unwrap().taken.push(id);
    }
    reply(status, None)
}
