//! The admin listener: metrics, status and the dead-letter queue, for
//! operators and for the `jetedge status` / `jetedge dlq` commands. It is
//! separate from ingress so it can stay on loopback (or behind a bearer
//! token) while ingress faces senders.

use crate::egress::{Egress, ReplayError, Replayed};
use crate::ingress::http::{error_response, json_response, query_param};
use crate::metrics::Metrics;
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
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Most dead letters one listing returns.
const MAX_PAGE: usize = 1000;

/// What the admin API reads and controls.
pub struct Admin {
    pub node: String,
    pub token: Option<String>,
    pub metrics: Arc<Metrics>,
    pub store: Store,
    pub upstream: watch::Receiver<LinkState>,
    pub local: Option<watch::Receiver<LinkState>>,
    pub pause: Arc<watch::Sender<bool>>,
    pub egress: Arc<Egress>,
}

type Resp = Response<Full<Bytes>>;

/// Serves until `shutdown`.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: CancellationToken) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let admin = admin.clone();
        let svc = hyper::service::service_fn(move |req| {
            let admin = admin.clone();
            async move { Ok::<_, Infallible>(admin.handle(req).await) }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), svc));
        tokio::spawn(async move {
            let _ = conn.await;
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
            Self::NotFound(_) | Self::Replay(ReplayError::NotFound(_)) => {
                (StatusCode::NOT_FOUND, "not_found")
            }
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
    async fn handle(&self, req: Request<Incoming>) -> Resp {
        if !self.authorized(&req) {
            return error_response(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong bearer token (admin.token)",
            );
        }
        let path = req.uri().path().trim_end_matches('/').to_string();
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        match (req.method(), segments.as_slice()) {
            (&Method::GET, [] | [""]) => self.page(),
            (&Method::GET, ["metrics"]) => self.prometheus(),
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
            (&Method::POST, ["forwarder", action]) => {
                let paused = *action == "pause";
                self.pause.send_replace(paused);
                tracing::info!("forwarding {action}d through the admin API");
                json!({"forwarding": if paused { "paused" } else { "running" }})
            }
            _ => return Err(Fail::MethodNotAllowed),
        })
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        bool::from(given.as_bytes().ct_eq(token.as_bytes()))
    }

    pub fn status(&self) -> Value {
        let (events, bytes) = self.store.backlog();
        json!({
            "node": self.node,
            "version": env!("CARGO_PKG_VERSION"),
            "upstream": self.upstream.borrow().as_str(),
            "local": self.local.as_ref().map(|l| l.borrow().as_str()),
            "forwarding": if *self.pause.borrow() { "paused" } else { "running" },
            "backlog": {"events": events, "bytes": bytes},
            "events": {
                "accepted": Metrics::get(&self.metrics.events_accepted),
                "forwarded": Metrics::get(&self.metrics.events_forwarded),
                "filtered": Metrics::get(&self.metrics.events_filtered),
                "duplicate": Metrics::get(&self.metrics.events_duplicate),
            },
            "dlq": self.store.dead_letter_count(),
            "subscriptions": self.egress.status(),
        })
    }

    fn prometheus(&self) -> Resp {
        let connected = *self.upstream.borrow() == LinkState::Connected;
        let mut text = self.metrics.render(self.store.backlog(), connected);
        text.push_str(&crate::metrics::render_egress(
            &self.egress.status(),
            self.store.dead_letter_count(),
        ));
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
        let num = |name| query_param(query, name).map(|v| v.parse::<u64>());
        let (Ok(after), Ok(limit)) = (num("after").transpose(), num("limit").transpose()) else {
            return Err(Fail::BadRequest("after and limit must be whole numbers"));
        };
        let limit = limit.map_or(100, |l| l as usize).clamp(1, MAX_PAGE);
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

    /// A page for people: the status, readable without tools.
    fn page(&self) -> Resp {
        let status = serde_json::to_string_pretty(&self.status()).unwrap_or_default();
        let escaped = status.replace('&', "&amp;").replace('<', "&lt;");
        let html = format!(
            "<!doctype html><meta charset=utf-8><title>jetedge {node}</title>\
             <h1>jetedge {node}</h1><p>JSON: <a href=/admin/status>/admin/status</a> · \
             <a href=/metrics>/metrics</a> · <a href=/admin/dlq>/admin/dlq</a></p><pre>{escaped}</pre>",
            node = self.node
        );
        let mut resp = Response::new(Full::new(Bytes::from(html)));
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        resp
    }
}

/// Routes under `/admin/` (any method).
fn known(route: &[&str]) -> bool {
    matches!(
        route,
        ["status" | "dlq"] | ["dlq", _] | ["dlq", _, "replay"] | ["forwarder", "pause" | "resume"]
    )
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
