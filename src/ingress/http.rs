//! The ingress HTTP server (hyper 1, HTTP/1.1 with keep-alive): routes,
//! body limits and timeouts, and the one place where an outcome becomes a
//! status code and a JSON body. It knows nothing of signatures or storage
//! beyond calling [`Ingest`].

use super::answer::{self, answer_body, rejection_status};
use super::{Answer, Ingest, Rejection, Via};
use crate::pipeline::{Invalid, Normalised};
use crate::upstream::LinkState;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

/// Seconds a sender is asked to wait when the buffer is full or the node is stopping.
const RETRY_AFTER_SECS: &str = "5";

/// Listener settings, from `[ingress]`.
#[derive(Clone)]
pub struct Limits {
    pub max_body: u64,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    pub body_memory: u64,
    pub drain_timeout: Duration,
}

/// Shared by every connection.
pub struct Server {
    /// Replaced whole by a reload; each request keeps the one it began with.
    pub ingest: Arc<crate::reload::Live<Ingest>>,
    pub limits: Limits,
    pub link: watch::Receiver<LinkState>,
    /// Room for request bodies in memory, in bytes (`ingress.body_memory`).
    bodies: Arc<Semaphore>,
    /// `[ingress] tls`, when the listener speaks TLS.
    tls: Option<Arc<crate::tls::Reloading>>,
}

impl Server {
    pub fn new(
        ingest: Arc<crate::reload::Live<Ingest>>,
        limits: Limits,
        link: watch::Receiver<LinkState>,
        tls: Option<Arc<crate::tls::Reloading>>,
    ) -> Self {
        let room = limits.body_memory.min(u32::MAX as u64) as usize;
        Self {
            ingest,
            limits,
            link,
            bodies: Arc::new(Semaphore::new(room)),
            tls,
        }
    }
}

/// A request body, with its share of `ingress.body_memory` held until the
/// request is answered (its events live as long).
struct Body {
    bytes: Bytes,
    _room: tokio::sync::OwnedSemaphorePermit,
}

/// A request that failed before any event was formed.
#[derive(Debug)]
enum ApiError {
    NotFound,
    MethodNotAllowed,
    UnsupportedMediaType(String),
    TooLarge(u64),
    BodyTimeout,
    BadRequest(String),
    Rejected(Rejection),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Rejected(r) => (rejection_status(r), r.code()),
        }
    }

    fn message(&self) -> String {
        match self {
            Self::NotFound => "no such route".into(),
            Self::MethodNotAllowed => "method not allowed on this route".into(),
            Self::UnsupportedMediaType(m) => m.clone(),
            Self::TooLarge(max) => format!("request body is over the limit of {max} bytes"),
            Self::BodyTimeout => "request body was not received in time".into(),
            Self::BadRequest(m) => m.clone(),
            Self::Rejected(r) => r.to_string(),
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        Self::Rejected(r)
    }
}

/// Accepts connections until `shutdown`, then lets in-flight requests finish
/// (up to `drain_timeout`) and returns.
pub async fn serve(listener: TcpListener, server: Arc<Server>, shutdown: CancellationToken) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(server.limits.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(server.limits.header_timeout)
        .keep_alive(true);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let (http, watcher) = (http.clone(), graceful.watcher());
        let tls = server.tls.as_ref().map(|t| t.current());
        let srv = server.clone();
        tokio::spawn(async move {
            let served = match tls {
                None => {
                    let svc = srv.service(Arc::new([]));
                    watcher
                        .watch(http.serve_connection(TokioIo::new(stream), svc))
                        .await
                }
                Some(config) => {
                    let timeout = srv.limits.header_timeout;
                    let metrics = srv.ingest.get().metrics.clone();
                    let tls = crate::tls::accept(config, stream, timeout, &metrics);
                    let Some(stream) = tls.await else {
                        return;
                    };
                    let svc = srv.service(crate::tls::client_identities(&stream).into());
                    watcher
                        .watch(http.serve_connection(TokioIo::new(stream), svc))
                        .await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(server.limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still busy at the end of the shutdown timeout");
    }
}

impl Server {
    /// The requests of one connection, whose client certificate (under
    /// mTLS) showed `identities`.
    fn service(
        self: &Arc<Self>,
        identities: Arc<[String]>,
    ) -> impl hyper::service::Service<
        Request<Incoming>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = impl Send,
    > + Clone {
        let srv = self.clone();
        hyper::service::service_fn(move |req| {
            let (srv, ids) = (srv.clone(), identities.clone());
            async move { Ok::<_, Infallible>(srv.handle(req, &ids).await) }
        })
    }

    /// One request, in a span naming its source, so what it logs (in
    /// JSON logs, a field) says where it came from.
    async fn handle(&self, req: Request<Incoming>, identities: &[String]) -> Response<Full<Bytes>> {
        use tracing::Instrument;
        let path = req.uri().path();
        let source = match path.strip_prefix("/v1/webhooks/") {
            Some(name) => name.to_string(),
            None if path == "/v1/events" => query_param(req.uri().query(), "source")
                .unwrap_or_else(|| self.ingest.get().events_source.clone()),
            None => String::new(),
        };
        let span = tracing::info_span!("ingest", source = %source);
        let (ingesting, started) = (req.method() == Method::POST, std::time::Instant::now());
        let resp = self.answer(req, identities, &source).instrument(span).await;
        if ingesting {
            let seconds = started.elapsed().as_secs_f64();
            self.ingest.get().metrics.ingest_seconds.observe(seconds);
        }
        resp
    }

    async fn answer(
        &self,
        req: Request<Incoming>,
        identities: &[String],
        source: &str,
    ) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let ingest = self.ingest.get();
        let ingest = ingest.as_ref();
        let result = match (req.method(), path.as_str()) {
            (&Method::GET, "/healthz") => {
                Ok(json_response(StatusCode::OK, json!({"status": "ok"})))
            }
            (&Method::GET, "/readyz") => Ok(self.readyz(ingest)),
            (&Method::POST, "/v1/events") => self.events(ingest, req, identities).await,
            (&Method::POST, p) if p.starts_with("/v1/webhooks/") => {
                let name = p["/v1/webhooks/".len()..].to_string();
                self.webhook(ingest, &name, req, identities).await
            }
            (_, "/healthz" | "/readyz" | "/v1/events") => Err(ApiError::MethodNotAllowed),
            (_, p) if p.starts_with("/v1/webhooks/") => Err(ApiError::MethodNotAllowed),
            _ => Err(ApiError::NotFound),
        };
        result.unwrap_or_else(|e| {
            let (status, code) = e.status_and_code();
            // By source only for configured ones: any name can be posted to.
            let known = ingest.source(source).is_ok().then_some(source);
            ingest.metrics.reject(known, code);
            // Counted; a storm of refusals is summarised once a minute
            // (`metrics::report_refusals`), never logged line by line.
            tracing::debug!(%path, status = status.as_u16(), code, reason = %e.message(), "request refused");
            let mut resp = error_response(status, code, &e.message());
            if let ApiError::Rejected(r) = &e {
                if let Some(secs) = r.retry_after() {
                    resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
                }
            }
            resp
        })
    }

    fn readyz(&self, ingest: &Ingest) -> Response<Full<Bytes>> {
        let store = ingest.store();
        let (events, bytes) = store.backlog();
        // Ready while offline: buffering is the job.
        // A full disk keeps the node ready: it is open and draining, which
        // is what brings the space back; ingest answers 503 disk_full.
        let (status, ready, state) = match (store.is_failed(), store.is_disk_full()) {
            (true, _) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready", "failed"),
            (false, true) => (StatusCode::OK, "ready", "full"),
            (false, false) => (StatusCode::OK, "ready", "open"),
        };
        json_response(
            status,
            json!({"status": ready, "store": state, "upstream": self.link.borrow().as_str(),
                   "backlog_events": events, "backlog_bytes": bytes}),
        )
    }

    async fn webhook(
        &self,
        ingest: &Ingest,
        name: &str,
        req: Request<Incoming>,
        identities: &[String],
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        let source = ingest.admit(name, Via::Http { identities })?;
        let form = is_form(req.headers());
        if !form {
            require_json(req.headers(), false)?;
        }
        let (parts, body) = req.into_parts();
        let Body { bytes: body, _room } = self.read_body(&parts.headers, body).await?;
        let now = OffsetDateTime::now_utc();
        ingest.verify(source, &parts.headers, &body, now.unix_timestamp())?;
        let value: Value = match form {
            true => form_json(&body),
            false => parse_json(&body)?,
        };
        if let Some(answer) = source.verifier.zoom_challenge(&value) {
            return Ok(json_response(StatusCode::OK, answer));
        }
        let event = source
            .shape
            .from_webhook(&parts.headers, value, now)
            .map(|mut n| {
                n.keys.extend(source.shape.body_key(&body));
                n
            })
            .map_err(Rejection::from);
        let answer = ingest.persist(name, vec![event]).await.remove(0);
        Ok(single_answer(answer))
    }

    async fn events(
        &self,
        ingest: &Ingest,
        req: Request<Incoming>,
        identities: &[String],
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        let name = query_param(req.uri().query(), "source")
            .unwrap_or_else(|| ingest.events_source.clone());
        let source = ingest.admit(&name, Via::Http { identities })?;
        let batch_type = require_json(req.headers(), true)?;
        let (parts, body) = req.into_parts();
        let Body { bytes: body, _room } = self.read_body(&parts.headers, body).await?;
        let now = OffsetDateTime::now_utc();
        ingest.verify(source, &parts.headers, &body, now.unix_timestamp())?;
        let normalise = |v: Value| -> Result<Normalised, Rejection> {
            source
                .shape
                .from_cloudevent(&parts.headers, v, now)
                .map_err(Rejection::from)
        };
        let parsed = parse_json(&body)?;
        // A batch's body can be megabytes: it is not needed past here.
        drop(body);
        match parsed {
            Value::Array(items) => {
                if items.is_empty() {
                    return Err(ApiError::BadRequest(
                        "an empty batch holds no events".into(),
                    ));
                }
                let events = items.into_iter().map(normalise).collect();
                let answers = ingest.persist(&name, events).await;
                Ok(batch_answer(answers))
            }
            _ if batch_type => Err(ApiError::BadRequest(
                "a cloudevents-batch body must be a JSON array".into(),
            )),
            single => {
                let answer = ingest
                    .persist(&name, vec![normalise(single)])
                    .await
                    .remove(0);
                Ok(single_answer(answer))
            }
        }
    }

    /// Waits for room in `ingress.body_memory`, then reads the whole body
    /// within the size limit and the body timeout.
    async fn read_body(&self, headers: &HeaderMap, body: Incoming) -> Result<Body, ApiError> {
        let max = self.limits.max_body;
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(ApiError::TooLarge(max));
        }
        // A body larger than the whole budget waits for all of it.
        let room = declared
            .unwrap_or(max)
            .clamp(1, self.limits.body_memory.min(u32::MAX as u64)) as u32;
        let room = self
            .bodies
            .clone()
            .acquire_many_owned(room)
            .await
            .expect("the semaphore is never closed");
        let limited = Limited::new(body, max as usize);
        match tokio::time::timeout(self.limits.body_timeout, limited.collect()).await {
            Err(_) => Err(ApiError::BodyTimeout),
            Ok(Ok(collected)) => Ok(Body {
                bytes: collected.to_bytes(),
                _room: room,
            }),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                Err(ApiError::TooLarge(max))
            }
            Ok(Err(e)) => Err(ApiError::BadRequest(format!(
                "could not read the request body: {e}"
            ))),
        }
    }
}

/// Checks for a JSON content type; returns whether it is the CloudEvents batch type.
fn require_json(headers: &HeaderMap, cloudevents: bool) -> Result<bool, ApiError> {
    let (ct, essence) = media_type(headers);
    let batch = essence == "application/cloudevents-batch+json";
    let ok = essence == "application/json" || essence.ends_with("+json");
    if !ok {
        let want = if cloudevents {
            "application/cloudevents+json, application/cloudevents-batch+json or application/json"
        } else {
            "application/json or application/x-www-form-urlencoded"
        };
        let got = if ct.is_empty() {
            "none".to_string()
        } else {
            format!("{ct:?}")
        };
        return Err(ApiError::UnsupportedMediaType(format!(
            "content type must be {want}, got {got}"
        )));
    }
    Ok(batch)
}

/// Whether a webhook's body is a form (Twilio, Slack's slash commands).
fn is_form(headers: &HeaderMap) -> bool {
    media_type(headers).1 == "application/x-www-form-urlencoded"
}

/// The request's content type as sent, and its media type without
/// parameters, lowercased (`application/json; charset=utf-8` -> `application/json`).
fn media_type(headers: &HeaderMap) -> (&str, String) {
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    (ct, essence.to_ascii_lowercase())
}

/// A form body as the event's JSON `data`: each field a string, a field
/// given several times an array of them, in the order sent.
fn form_json(body: &[u8]) -> Value {
    let mut map = serde_json::Map::new();
    for (k, v) in form_urlencoded::parse(body) {
        let v = Value::String(v.into_owned());
        match map.get_mut(k.as_ref()) {
            None => {
                map.insert(k.into_owned(), v);
            }
            Some(Value::Array(list)) => list.push(v),
            Some(first) => *first = Value::Array(vec![first.take(), v]),
        }
    }
    Value::Object(map)
}

fn parse_json(body: &[u8]) -> Result<Value, Rejection> {
    serde_json::from_slice(body).map_err(|e| Rejection::Invalid(Invalid::Json(e.to_string())))
}

/// A query parameter's value, percent-decoded; `None` when absent or empty.
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name && !v.is_empty()).then(|| percent_decode(v))
    })
}

fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn single_answer(a: Answer) -> Response<Full<Bytes>> {
    let (status, body) = answer_body(&a);
    if let Answer::Rejected(r) = &a {
        tracing::debug!(status = status.as_u16(), code = r.code(), reason = %r, "event refused");
    }
    json_response(status, body)
}

/// A batch's response: its status and one result per element.
fn batch_answer(answers: Vec<Answer>) -> Response<Full<Bytes>> {
    let (status, body) = answer::batch(&answers);
    json_response(status, body)
}

pub(crate) fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
) -> Response<Full<Bytes>> {
    json_response(status, json!({"error": {"code": code, "message": message}}))
}

pub(crate) fn json_response(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        h.insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
    }
    resp
}
