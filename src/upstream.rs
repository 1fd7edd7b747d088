//! The connection to upstream NATS, and the link state everybody else reads.
//!
//! The client is created with `retry_on_initial_connect` and unlimited
//! reconnects, so a node starts (and buffers) with upstream down and
//! connects whenever upstream appears. The link state is a `watch` channel
//! fed by the client's event callback: only this module writes it.

use crate::config::Endpoint;
use crate::metrics::Metrics;
use async_nats::{Client, ConnectOptions, Event, ServerAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Never connected yet.
    Connecting,
    Connected,
    Disconnected,
    /// The server refused the node's credentials; it keeps retrying them.
    Unauthorized,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
            Self::Unauthorized => "unauthorized",
        }
    }
}

/// Connects (in the background) and returns the client and its link state.
/// `max_pending` bounds each subscription's buffer (in messages); what
/// overflows it is dropped by the client and counted as `local_dropped`.
pub async fn connect(
    cfg: &Endpoint<'_>,
    node_id: &str,
    metrics: Arc<Metrics>,
    max_pending: Option<usize>,
) -> Result<(Client, watch::Receiver<LinkState>), String> {
    let (tx, rx) = watch::channel(LinkState::Connecting);
    let role = cfg.role;
    let last_warned = Arc::new(AtomicU64::new(0));
    let mut opts = ConnectOptions::new()
        .name(format!("jetedge-{node_id}-{role}"))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .reconnect_delay_callback(|attempts| {
            // 100ms doubling to 5s: quick after a blip, gentle during an outage.
            Duration::from_millis((100u64 << attempts.min(6)).min(5_000))
        })
        .event_callback(move |event| {
            let (tx, metrics, last_warned) = (tx.clone(), metrics.clone(), last_warned.clone());
            async move {
                if let Event::SlowConsumer(_) = event {
                    slow_consumer(role, &metrics, &last_warned);
                } else {
                    on_event(role, &tx, event);
                }
            }
        });
    if let Some(n) = max_pending {
        opts = opts.subscription_capacity(n);
    }
    if let Some(t) = cfg.token {
        opts = opts.token(t.resolve()?.expose().to_string());
    }
    if let (Some(user), Some(pass)) = (cfg.user, cfg.password) {
        opts = opts.user_and_password(user.to_string(), pass.resolve()?.expose().to_string());
    }
    if let Some(seed) = cfg.nkey {
        opts = opts.nkey(seed.resolve()?.expose().to_string());
    }
    if let Some(path) = cfg.creds {
        opts = opts
            .credentials_file(path)
            .await
            .map_err(|e| format!("{role}.creds {}: {e}", path.display()))?;
    }
    if let Some(tls) = cfg.tls {
        opts = opts.require_tls(true);
        if let Some(ca) = &tls.ca {
            opts = opts.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
    }
    let servers: Vec<ServerAddr> = cfg
        .servers
        .iter()
        .map(|s| s.parse().map_err(|e| format!("{role} server {s:?}: {e}")))
        .collect::<Result<_, _>>()?;
    let client = opts
        .connect(servers)
        .await
        .map_err(|e| format!("cannot set up the {role} NATS client: {e}"))?;
    Ok((client, rx))
}

/// The client dropped a message its subscription had no room for: counted,
/// and a warning at most every ten seconds.
fn slow_consumer(role: &str, metrics: &Metrics, last_warned: &AtomicU64) {
    if role == "local" {
        Metrics::add(&metrics.local_dropped, 1);
    }
    let now = crate::store::now_ms() / 1000;
    let before = last_warned.swap(now, Ordering::Relaxed);
    if now.saturating_sub(before) >= 10 {
        tracing::warn!(
            link = role,
            dropped_total = Metrics::get(&metrics.local_dropped),
            "jetedge falls behind the messages on this link; the NATS client drops what does \
             not fit in [local] max_pending (use request/reply to know an event was kept)"
        );
    } else {
        last_warned.store(before, Ordering::Relaxed);
    }
}

/// The server refused the credentials: said once per refusal streak (the
/// client retries every few seconds), and shown as the link's state.
fn refused(role: &str, tx: &watch::Sender<LinkState>) {
    if tx.send_replace(LinkState::Unauthorized) != LinkState::Unauthorized {
        tracing::error!(
            link = role,
            "the NATS server refused the node's credentials (the token, user and password, \
             nkey or creds of this link); events are buffered and the node keeps retrying"
        );
    }
}

fn on_event(role: &str, tx: &watch::Sender<LinkState>, event: Event) {
    match event {
        Event::Connected => {
            tracing::info!(link = role, "NATS connected");
            tx.send_replace(LinkState::Connected);
        }
        Event::Disconnected => {
            tracing::warn!(
                link = role,
                "NATS disconnected; reconnecting (upstream events are buffered meanwhile)"
            );
            tx.send_replace(LinkState::Disconnected);
        }
        Event::ServerError(async_nats::ServerError::AuthorizationViolation) => refused(role, tx),
        // A refused connect comes as a client error whose text is all that
        // tells it from a network failure.
        Event::ClientError(async_nats::ClientError::Other(e))
            if e.contains("authorization violation") || e.contains("authentication") =>
        {
            refused(role, tx)
        }
        Event::ServerError(e) => tracing::warn!(link = role, error = %e, "NATS server error"),
        // Every failed reconnect attempt reports one; the forwarder already
        // warns about an unreachable upstream, once a minute.
        Event::ClientError(e) => tracing::debug!(link = role, error = %e, "NATS client error"),
        other => tracing::debug!(link = role, event = %other, "NATS event"),
    }
}
