//! The admin listener: metrics, status and the dead-letter queue, for
//! operators and for the `jetedge status` / `jetedge dlq` commands. It is
//! separate from ingress so it can stay on loopback while ingress faces
//! senders. Every route but the read-only page and `/metrics` (open to
//! loopback peers) needs the bearer token: `[admin] token`, or when none
//! is configured, one the node makes at first start in `{data_dir}/admin.token`
//! (mode 0600), which the CLI reads: other processes on the box, such as a
//! kiosk's microapps, cannot replay, purge or pause.

use crate::egress::{Egress, ReplayError, Replayed};
use crate::ingress::http::{error_response, json_response, query_param};
use crate::metrics::Metrics;
use crate::reload::ReloadError;
use crate::store::{Letter, Store, StoreError};
use crate::upstream::LinkState;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The status page (`GET /`).
const STATUS_PAGE: &str = include_str!("../assets/status.html");

/// Most dead letters one listing returns.
const MAX_PAGE: usize = 1000;

/// What the admin API reads and controls.
pub struct Admin {
    pub node: String,
    /// The bearer token every route but the open reads needs ([`token`]).
    pub token: String,
    pub metrics: Arc<Metrics>,
    pub store: Store,
    pub upstream: watch::Receiver<LinkState>,
    pub local: Option<watch::Receiver<LinkState>>,
    pub pause: Arc<watch::Sender<bool>>,
    /// Why upstream refuses every event, while it does.
    pub held: Arc<std::sync::Mutex<Option<String>>>,
    pub egress: Arc<Egress>,
    /// For the rate limits' counters.
    pub ingest: Arc<crate::reload::Live<crate::ingress::Ingest>>,
    /// `POST /admin/reload`.
    pub reloader: Arc<crate::reload::Reloader>,
    /// Ends open streams (the tap) when the node stops.
    pub stop: CancellationToken,
    /// `[admin] tls`, when the listener speaks TLS.
    pub tls: Option<Arc<crate::tls::Reloading>>,
    /// Host names (besides IP addresses and `localhost`) a request may be
    /// addressed to: `[admin] hosts`.
    pub hosts: Vec<String>,
}

type Resp = Response<Full<Bytes>>;
/// What the listener answers with: a whole body, or a stream (the tap).
type AdminBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

/// The file, beside the store, holding the token the node made.
pub fn token_file(cfg: &crate::config::Config) -> std::path::PathBuf {
    cfg.node.data_dir.join("admin.token")
}

/// The admin token: `[admin] token` when configured; else the token file's,
/// made at first start (`create`) with 32 random bytes, readable by the
/// node's user only.
pub fn token(cfg: &crate::config::Config, create: bool) -> Result<String, String> {
    if let Some(t) = &cfg.admin.token {
        return Ok(t.resolve()?.expose().to_string());
    }
    let path = token_file(cfg);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {}
        Err(e) => {
            let path = path.display();
            return Err(format!(
                "cannot read the admin token {path}: {e} (run as the node's user, or set [admin] token)"
            ));
        }
    }
    if !create {
        return Err(format!("the admin token file {} is empty", path.display()));
    }
    make_token_file(&path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn make_token_file(path: &std::path::Path) -> std::io::Result<String> {
    use rand::RngCore;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Written beside and renamed, so a crash never leaves half a token.
    let tmp = path.with_extension("token.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(token)
}

/// Serves until `shutdown`.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: CancellationToken) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let a = admin.clone();
        let svc = hyper::service::service_fn(move |req| {
            let a = a.clone();
            async move { Ok::<_, Infallible>(a.handle(req, peer).await) }
        });
        let (http, watcher, admin) = (http.clone(), graceful.watcher(), admin.clone());
        tokio::spawn(async move {
            let Some(tls) = admin.tls.as_ref().map(|t| t.current()) else {
                let _ = watcher
                    .watch(http.serve_connection(TokioIo::new(stream), svc))
                    .await;
                return;
            };
            let timeout = Duration::from_secs(10);
            if let Some(s) = crate::tls::accept(tls, stream, timeout, &admin.metrics).await {
                let _ = watcher
                    .watch(http.serve_connection(TokioIo::new(s), svc))
                    .await;
            }
        });
    }
    // A replay of the whole queue may be running; it is not worth waiting long for.
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
enum Fail {
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("no dead letter {0}")]
    NotFound(u64),
    #[error("no parked event {0}")]
    NoParked(u64),
    #[error("the buffer is full; replay later")]
    BufferFull,
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Fail {
    fn response(&self) -> Resp {
        let (status, code) = match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::NotFound(_) | Self::NoParked(_) | Self::Replay(ReplayError::NotFound(_)) => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            Self::BufferFull => (StatusCode::SERVICE_UNAVAILABLE, "buffer_full"),
            Self::Replay(ReplayError::NoSubscription { .. }) => {
                (StatusCode::CONFLICT, "subscription_not_configured")
            }
            Self::Store(_) | Self::Replay(ReplayError::Store(_)) => {
                tracing::error!(error = %self, "admin request failed in the store");
                (StatusCode::INTERNAL_SERVER_ERROR, "storage_error")
            }
        };
        error_response(status, code, &self.to_string())
    }
}

impl Admin {
    async fn handle(
        &self,
        req: Request<Incoming>,
        peer: std::net::SocketAddr,
    ) -> Response<AdminBody> {
        use http_body_util::BodyExt;
        let path = req.uri().path().trim_end_matches('/').to_string();
        if let Some(refused) = self.refusal(&req, peer, &path) {
            return refused.map(|b| b.boxed_unsync());
        }
        if path == "/admin/tap" && req.method() == Method::GET {
            return self.tap(req.uri().query());
        }
        self.route(req, &path).await.map(|b| b.boxed_unsync())
    }

    /// The answer refusing what a web page could make on an operator's
    /// behalf, or what comes without the token (but reads that show no
    /// event, from loopback); `None` when the request may go on.
    fn refusal(
        &self,
        req: &Request<Incoming>,
        peer: std::net::SocketAddr,
        path: &str,
    ) -> Option<Resp> {
        if let Err(refusal) = self.same_site(req) {
            return Some(error_response(StatusCode::FORBIDDEN, refusal.0, &refusal.1));
        }
        let open = peer.ip().is_loopback()
            && req.method() == Method::GET
            && matches!(path, "" | "/metrics" | "/asyncapi.json");
        let unauthorized = !open && !self.authorized(req);
        unauthorized.then(|| {
            error_response(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong bearer token ([admin] token, or the admin.token file in the node's data dir)",
            )
        })
    }

    /// `GET /admin/tap?source=&type=&subject=&limit=`: stored events as
    /// they come, one JSON object per line (`{"lost": n}` when this watcher
    /// fell behind and missed n), until `limit` events or the node stops.
    fn tap(&self, query: Option<&str>) -> Response<AdminBody> {
        use http_body_util::BodyExt;
        let filter = crate::ingress::tap::Filter {
            source: query_param(query, "source"),
            type_: query_param(query, "type"),
            subject: query_param(query, "subject"),
        };
        let limit = query_param(query, "limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(u64::MAX);
        let rx = self.ingest.get().tap.watch();
        let lines = tap_lines(rx, filter, limit, self.stop.clone());
        let body = http_body_util::StreamBody::new(futures::StreamExt::map(lines, |line| {
            Ok::<_, Infallible>(hyper::body::Frame::data(line))
        }));
        let mut resp = Response::new(body.boxed_unsync());
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        resp
    }

    async fn route(&self, req: Request<Incoming>, path: &str) -> Resp {
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        match (req.method(), segments.as_slice()) {
            (&Method::GET, [] | [""]) => self.page(),
            (&Method::GET, ["metrics"]) => self.prometheus(),
            (&Method::GET, ["asyncapi.json"]) => self.asyncapi().await,
            (&Method::POST, ["admin", "reload"]) => self.reload().await,
            (_, ["admin", "reload"]) => Fail::MethodNotAllowed.response(),
            (m, ["admin", rest @ ..]) if known(rest) => {
                let query = req.uri().query();
                match self.api(m, rest, query).await {
                    Ok(v) => json_response(StatusCode::OK, v),
                    Err(e) => e.response(),
                }
            }
            (_, ["metrics"]) => Fail::MethodNotAllowed.response(),
            _ => error_response(StatusCode::NOT_FOUND, "not_found", "no such route"),
        }
    }

    /// `POST /admin/reload`: the config file read again and applied; 422
    /// with every problem (and nothing changed) when it is invalid.
    async fn reload(&self) -> Resp {
        match self.reloader.reload_file().await {
            Ok(report) => json_response(
                StatusCode::OK,
                json!({"status": "reloaded", "changed": report.changed,
                       "restart_required": report.restart_required}),
            ),
            Err(e) => {
                let problems: Vec<Value> = match &e {
                    ReloadError::Invalid(list) => list
                        .iter()
                        .map(|p| json!({"path": p.path, "message": p.message}))
                        .collect(),
                    _ => Vec::new(),
                };
                json_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"error": {"code": e.code(), "message": e.to_string(), "problems": problems}}),
                )
            }
        }
    }

    /// The JSON routes under `/admin/`.
    async fn api(
        &self,
        method: &Method,
        route: &[&str],
        query: Option<&str>,
    ) -> Result<Value, Fail> {
        let sub = query_param(query, "subscription");
        let sub = sub.as_deref();
        Ok(match (method, route) {
            (&Method::GET, ["status"]) => self.status(),
            (&Method::GET, ["schemas"]) => self.schemas(),
            (&Method::GET, ["dlq"]) => self.list(query)?,
            (&Method::DELETE, ["dlq"]) => {
                json!({"purged": self.store.dead_letter_purge(sub).await?})
            }
            (&Method::POST, ["dlq", "replay"]) => summary(self.egress.replay_all(sub).await?),
            (&Method::GET, ["dlq", id]) => self.show(parse_id(id)?)?,
            (&Method::DELETE, ["dlq", id]) => {
                let id = parse_id(id)?;
                if !self.store.dead_letter_remove(id).await? {
                    return Err(Fail::NotFound(id));
                }
                json!({"id": id, "status": "deleted"})
            }
            (&Method::POST, ["dlq", id, "replay"]) => {
                json!(self.egress.replay(parse_id(id)?).await?)
            }
            (&Method::GET, ["parked"]) => self.list_parked(query)?,
            (&Method::GET, ["parked", id]) => self.show_parked(parse_id(id)?)?,
            (&Method::POST, ["parked", "replay"]) => self.replay_parked_all().await?,
            (&Method::POST, ["parked", id, "replay"]) => self.replay_parked(parse_id(id)?).await?,
            (&Method::DELETE, ["parked"]) => json!({"purged": self.store.parked_purge().await?}),
            (&Method::DELETE, ["parked", id]) => {
                let id = parse_id(id)?;
                if !self.store.parked_remove(id).await? {
                    return Err(Fail::NoParked(id));
                }
                json!({"id": id, "status": "deleted"})
            }
            (&Method::POST, ["forwarder", action]) => {
                let paused = *action == "pause";
                self.pause.send_replace(paused);
                tracing::info!("forwarding {action}d through the admin API");
                json!({"forwarding": if paused { "paused" } else { "running" }})
            }
            _ => return Err(Fail::MethodNotAllowed),
        })
    }

    /// Refuses requests a web page could make on an operator's behalf:
    /// a `Host` that is a name nobody configured (DNS rebinding: a
    /// hostile name resolving to this address), or a write whose `Origin`
    /// is another site (a "simple" cross-site POST needs no preflight).
    fn same_site(&self, req: &Request<Incoming>) -> Result<(), (&'static str, String)> {
        let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
        let host = header(hyper::header::HOST).unwrap_or("");
        if !host.is_empty() && !host_allowed(host_name(host), &self.hosts) {
            return Err((
                "host_not_allowed",
                format!("requests must be addressed to an IP address, localhost or [admin] hosts, not {host:?}"),
            ));
        }
        let writes = !matches!(*req.method(), Method::GET | Method::HEAD);
        if let Some(origin) = header(hyper::header::ORIGIN).filter(|_| writes) {
            let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
            if origin == "null" || origin_host != host {
                return Err((
                    "cross_origin",
                    format!("a write from origin {origin:?} is refused; use the jetedge CLI or the API directly"),
                ));
            }
        }
        Ok(())
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        crate::config::token_eq(given.as_bytes(), self.token.as_bytes())
    }

    pub fn status(&self) -> Value {
        let (events, bytes) = self.store.backlog();
        json!({
            "node": self.node,
            "version": env!("CARGO_PKG_VERSION"),
            "upstream": self.upstream.borrow().as_str(),
            "local": self.local.as_ref().map(|l| l.borrow().as_str()),
            "forwarding": if *self.pause.borrow() { "paused" } else { "running" },
            "store": if self.store.is_failed() { "failed" } else if self.store.is_disk_full() { "full" } else { "open" },
            "backlog": {"events": events, "bytes": bytes,
                        "oldest_age_seconds": self.store.oldest_age().map(|d| d.as_secs_f64())},
            "refusals": self.metrics.refusals_by_source(),
            "events": {
                "accepted": Metrics::get(&self.metrics.events_accepted),
                "forwarded": Metrics::get(&self.metrics.events_forwarded),
                "filtered": Metrics::get(&self.metrics.events_filtered),
                "duplicate": Metrics::get(&self.metrics.events_duplicate),
                "quarantined": Metrics::get(&self.metrics.events_quarantined),
            },
            "schemas": self.schemas(),
            "dlq": self.store.dead_letter_count(),
            "parked": self.store.parked_count(),
            "upstream_refusal": *self.held.lock().expect("held"),
            "encryption": encryption_status(self.store.encryption()),
            "subscriptions": self.egress.status(),
        })
    }

    /// `GET /admin/schemas`: what the node enforces, and the registry copy's state.
    fn schemas(&self) -> Value {
        let contracts = self.ingest.get().contracts.clone();
        let registry = contracts.registry.get();
        json!({"schemas": contracts.list(), "registry": registry.state})
    }

    /// `GET /asyncapi.json`: the running config's channels, with the
    /// registry's schemas as they stand.
    async fn asyncapi(&self) -> Resp {
        let cfg = self.reloader.current.lock().await.clone();
        let doc = crate::contract::asyncapi::document(&cfg, &self.ingest.get().contracts);
        json_response(StatusCode::OK, doc)
    }

    fn prometheus(&self) -> Resp {
        let connected = |l: &watch::Receiver<LinkState>| *l.borrow() == LinkState::Connected;
        let (subscriptions, ingest) = (self.egress.status(), self.ingest.get());
        let rate_limited = ingest.rate_limited();
        let text = self.metrics.render(&crate::metrics::Snapshot {
            backlog: self.store.backlog(),
            oldest_age_seconds: self.store.oldest_age().map(|d| d.as_secs_f64()),
            upstream_connected: connected(&self.upstream),
            local_connected: self.local.as_ref().map(connected),
            dead_letters: self.store.dead_letter_count() as u64,
            parked: self.store.parked_count(),
            subscriptions: &subscriptions,
            rate_limited: &rate_limited,
        });
        let mut resp = Response::new(Full::new(Bytes::from(text)));
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        resp
    }

    /// A page of dead letters (of one subscription, when named), and the
    /// id to pass as `after` for the next page.
    fn list(&self, query: Option<&str>) -> Result<Value, Fail> {
        let (after, limit) = paging(query)?;
        let sub = query_param(query, "subscription");
        let mut entries = Vec::new();
        let mut cursor = after;
        // Filtering by subscription reads on until the page is full.
        let next = loop {
            let page = self.store.dead_letters(cursor, limit)?;
            let full = page.len() == limit;
            for l in page {
                cursor = Some(l.seq);
                if sub.as_deref().is_none_or(|s| s == l.meta.subscription) {
                    entries.push(summary_of(&l));
                    if entries.len() == limit {
                        break;
                    }
                }
            }
            if entries.len() == limit {
                break cursor;
            }
            if !full {
                break None;
            }
        };
        Ok(json!({"entries": entries, "next_after": next}))
    }

    fn show(&self, id: u64) -> Result<Value, Fail> {
        let l = self.store.dead_letter_get(id)?.ok_or(Fail::NotFound(id))?;
        let mut v = summary_of(&l);
        v["source"] = json!(l.record.source);
        v["traceparent"] = json!(l.record.traceparent);
        v["event"] = serde_json::from_slice(&l.record.payload)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(&l.record.payload)));
        Ok(v)
    }

    fn list_parked(&self, query: Option<&str>) -> Result<Value, Fail> {
        let (after, limit) = paging(query)?;
        let page = self.store.parked(after, limit)?;
        let next = (page.len() == limit)
            .then(|| page.last().map(|p| p.seq))
            .flatten();
        let entries: Vec<Value> = page.iter().map(parked_summary).collect();
        Ok(json!({"entries": entries, "next_after": next}))
    }

    fn show_parked(&self, id: u64) -> Result<Value, Fail> {
        let p = self.store.parked_get(id)?.ok_or(Fail::NoParked(id))?;
        let mut v = parked_summary(&p);
        v["event"] = serde_json::from_slice(&p.record.payload)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(&p.record.payload)));
        Ok(v)
    }

    /// Puts a parked event back at the end of the outbox.
    async fn replay_parked(&self, id: u64) -> Result<Value, Fail> {
        match self.store.unpark(id).await? {
            None => Err(Fail::NoParked(id)),
            Some(crate::store::Outcome::Accepted) => {
                tracing::info!(parked = id, "parked event put back in the outbox");
                Ok(json!({"id": id, "status": "requeued"}))
            }
            Some(_) => Err(Fail::BufferFull),
        }
    }

    async fn replay_parked_all(&self) -> Result<Value, Fail> {
        let mut requeued = Vec::new();
        let mut after = None;
        loop {
            let page = self.store.parked(after, 256)?;
            let Some(last) = page.last() else { break };
            after = Some(last.seq);
            for p in page {
                self.replay_parked(p.seq).await?;
                requeued.push(p.seq);
            }
        }
        Ok(json!({"requeued": requeued.len(), "ids": requeued}))
    }

    /// A page for people: the status, readable without tools.
    /// The status page: static HTML, CSS and JavaScript that read the
    /// admin API with the token the operator gives it (it holds no data).
    fn page(&self) -> Resp {
        let mut resp = Response::new(Full::new(Bytes::from_static(STATUS_PAGE.as_bytes())));
        let headers = resp.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(
            "content-security-policy",
            HeaderValue::from_static(
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'",
            ),
        );
        resp
    }
}

/// A listing's `after` and `limit` (100 by default, at most `MAX_PAGE`).
fn paging(query: Option<&str>) -> Result<(Option<u64>, usize), Fail> {
    let num = |name| query_param(query, name).map(|v| v.parse::<u64>());
    let (Ok(after), Ok(limit)) = (num("after").transpose(), num("limit").transpose()) else {
        return Err(Fail::BadRequest("after and limit must be whole numbers"));
    };
    Ok((after, limit.map_or(100, |l| l as usize).clamp(1, MAX_PAGE)))
}

/// Routes under `/admin/` (any method).
fn known(route: &[&str]) -> bool {
    matches!(
        route,
        ["status" | "schemas" | "dlq" | "parked"]
            | ["dlq" | "parked", _]
            | ["dlq" | "parked", _, "replay"]
            | ["forwarder", "pause" | "resume"]
    )
}

/// The host of a `Host` header, without its port.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// IP literals and `localhost` cannot be rebound by a hostile DNS name.
fn host_allowed(name: &str, hosts: &[String]) -> bool {
    name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// A parked event as listed.
fn parked_summary(p: &crate::store::Parked) -> Value {
    json!({
        "id": p.seq,
        "reason": p.meta.reason,
        "error": p.meta.error,
        "parked_at": p.meta.parked_at,
        "times": p.meta.times,
        "event_id": p.record.id,
        "subject": p.record.subject,
        "type": p.record.type_,
        "source": p.record.source,
    })
}

/// A dead letter as listed.
fn summary_of(l: &Letter) -> Value {
    json!({
        "id": l.seq,
        "subscription": l.meta.subscription,
        "event_id": l.record.id,
        "subject": l.record.subject,
        "type": l.record.type_,
        "targets": l.meta.targets,
        "attempts": l.meta.attempts,
        "last_error": l.meta.last_error,
        "dead_at": l.meta.dead_at,
    })
}

fn summary(results: Vec<Replayed>) -> Value {
    let delivered = results
        .iter()
        .filter(|r| matches!(r, Replayed::Delivered { .. }))
        .count();
    json!({"delivered": delivered, "failed": results.len() - delivered, "results": results})
}

fn parse_id(id: &str) -> Result<u64, Fail> {
    id.parse()
        .map_err(|_| Fail::BadRequest("a dead letter id is a whole number"))
}

/// Encryption at rest by key id (never the key): `null` when off.
fn encryption_status(e: Option<crate::store::Encryption>) -> Value {
    let Some(e) = e else {
        return Value::Null;
    };
    let ids = |ids: &[crate::store::KeyId]| ids.iter().map(|k| k.to_string()).collect::<Vec<_>>();
    json!({
        "key": e.key.to_string(),
        "previous_keys": ids(&e.previous),
        "older_records_in_outbox": e.older_records_in_outbox,
    })
}

/// The tap's lines: each matching event's envelope, and how many a slow
/// watcher lost; ends after `limit` events or when the node stops.
fn tap_lines(
    rx: tokio::sync::broadcast::Receiver<Arc<crate::ingress::tap::Tapped>>,
    filter: crate::ingress::tap::Filter,
    limit: u64,
    stop: CancellationToken,
) -> impl futures::Stream<Item = Bytes> {
    use tokio::sync::broadcast::error::RecvError;
    futures::stream::unfold((rx, limit), move |(mut rx, left)| {
        let (filter, stop) = (filter.clone(), stop.clone());
        async move {
            if left == 0 {
                return None;
            }
            loop {
                let next = tokio::select! {
                    r = rx.recv() => r,
                    _ = stop.cancelled() => return None,
                };
                match next {
                    Ok(t) if filter.matches(&t) => {
                        let mut line = Vec::with_capacity(t.envelope.len() + 1);
                        line.extend_from_slice(&t.envelope);
                        line.push(b'\n');
                        return Some((Bytes::from(line), (rx, left - 1)));
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => {
                        return Some((Bytes::from(format!("{{\"lost\":{n}}}\n")), (rx, left)));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        }
    })
}
