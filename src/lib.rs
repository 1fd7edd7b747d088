//! jetedge: an edge event mesh node. See ARCHITECTURE.md for the map.
//!
//! [`Node::start`] wires the parts together and is what both the binary and
//! the integration tests run: store (with its committer thread), ingress
//! server, upstream connection and forwarder. [`NodeHandle::shutdown`] stops
//! them in the order that loses nothing: stop accepting, finish requests,
//! settle in-flight publishes, flush the store.

pub mod admin;
pub mod config;
pub mod contract;
pub mod egress;
pub mod envelope;
pub mod forward;
pub mod ingress;
pub mod metrics;
pub mod pipeline;
pub mod reload;
pub mod signature;
pub mod store;
pub mod tls;
pub mod upstream;

#[cfg(test)]
mod testdir;

use config::Config;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the store in {dir}: {source}")]
    Store {
        dir: String,
        source: store::StoreError,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
}

pub struct Node;

/// A running node.
pub struct NodeHandle {
    pub ingress_addr: SocketAddr,
    /// The admin listener's address, when `[admin] listen` is set.
    pub admin_addr: Option<SocketAddr>,
    /// The admin API's bearer token (configured, or made at first start).
    pub admin_token: String,
    pub metrics: Arc<metrics::Metrics>,
    pub egress: Arc<egress::Egress>,
    store: store::Store,
    link: watch::Receiver<upstream::LinkState>,
    client: async_nats::Client,
    pause: Arc<watch::Sender<bool>>,
    stop_ingress: CancellationToken,
    stop_forwarder: CancellationToken,
    ingress: JoinHandle<()>,
    /// NATS ingest on the site's server, when `[local]` is set.
    local: Option<(async_nats::Client, JoinHandle<()>)>,
    admin: Option<JoinHandle<()>>,
    forwarder: JoinHandle<()>,
    shutdown_timeout: std::time::Duration,
    reloader: Arc<reload::Reloader>,
}

impl Node {
    pub async fn start(cfg: Config) -> Result<NodeHandle, StartError> {
        for w in cfg.warnings() {
            tracing::warn!(key = %w.path, "{}", w.message);
        }
        let store = store::Store::open(&cfg.node).map_err(|source| StartError::Store {
            dir: cfg.node.data_dir.display().to_string(),
            source,
        })?;
        let metrics = Arc::new(metrics::Metrics::new(store.commit_histograms()));
        let ingest = ingress::Ingest::new(&cfg, store.clone(), metrics.clone())
            .map_err(StartError::Setup)?;
        let ingest = Arc::new(reload::Live::new(ingest));
        // Both listeners first: a taken port fails the start before any task runs.
        let (listener, ingress_addr) = bind(&cfg.ingress.listen).await?;
        let admin_listener = match cfg.admin.listen.as_str() {
            "" => None,
            addr => Some(bind(addr).await?),
        };
        let (client, link) = upstream::connect(
            &cfg.upstream.endpoint(),
            &cfg.node.id,
            metrics.clone(),
            None,
        )
        .await
        .map_err(StartError::Setup)?;
        let stop_ingress = CancellationToken::new();
        if let Some(bucket) = cfg.contracts.bucket() {
            watch_registry(&cfg, bucket, &ingest.get(), &client, &link, &stop_ingress)?;
        }
        tokio::spawn(metrics::report_refusals(
            metrics.clone(),
            stop_ingress.clone(),
        ));
        let stop_forwarder = CancellationToken::new();
        let (pause, paused) = watch::channel(false);
        let pause = Arc::new(pause);
        let held = Arc::new(std::sync::Mutex::new(None));
        let forwarder = forward::Forwarder {
            store: store.clone(),
            client: client.clone(),
            link: link.clone(),
            cfg: cfg.upstream.clone(),
            metrics: metrics.clone(),
            shutdown: stop_forwarder.clone(),
            drain_timeout: cfg.node.shutdown_timeout.0,
            paused,
            max_event: ingest.get().max_event.clone(),
            route_subjects: pipeline::filter::route_subjects(
                &cfg.routes,
                &cfg.upstream.subject_prefix,
            ),
            held: held.clone(),
        };
        let forwarder = tokio::spawn(forwarder.run());

        let site = connect_site(&cfg, metrics.clone()).await?;
        let local = site.as_ref().zip(cfg.local.as_ref()).map(|(site, l)| {
            let task = ingress::local::serve(
                site.client.clone(),
                l.clone(),
                ingest.clone(),
                stop_ingress.clone(),
            );
            (site.client.clone(), tokio::spawn(task))
        });
        let upstream_side = egress::Upstream {
            client: client.clone(),
            link: link.clone(),
            stream: cfg.upstream.stream.clone(),
        };
        let egress = egress::Egress::start(
            &cfg,
            store.clone(),
            upstream_side,
            site.clone(),
            metrics.clone(),
        )
        .map(Arc::new)
        .map_err(StartError::Setup)?;
        let admin_token = match admin_listener {
            Some(_) => admin::token(&cfg, true).map_err(StartError::Setup)?,
            None => String::new(),
        };
        let admin_tls = listener_tls("admin", cfg.admin.tls.as_ref(), &stop_ingress)?;
        let ingress_tls = listener_tls("ingress", cfg.ingress.tls.as_ref(), &stop_ingress)?;
        let shutdown_timeout = cfg.node.shutdown_timeout.0;
        let reloader = Arc::new(reload::Reloader {
            current: tokio::sync::Mutex::new(cfg.clone()),
            ingest: ingest.clone(),
            egress: egress.clone(),
            ingress_tls: ingress_tls.clone(),
            admin_tls: admin_tls.clone(),
            metrics: metrics.clone(),
        });
        let admin_state = admin::Admin {
            node: cfg.node.id.clone(),
            token: admin_token.clone(),
            metrics: metrics.clone(),
            store: store.clone(),
            upstream: link.clone(),
            local: site.as_ref().map(|s| s.link.clone()),
            pause: pause.clone(),
            held,
            egress: egress.clone(),
            ingest: ingest.clone(),
            reloader: reloader.clone(),
            stop: stop_ingress.clone(),
            tls: admin_tls,
            hosts: cfg.admin.hosts.clone(),
        };
        let admin_addr = admin_listener.as_ref().map(|(_, addr)| *addr);
        let admin = admin_listener.map(|(l, _)| {
            tokio::spawn(admin::serve(l, Arc::new(admin_state), stop_ingress.clone()))
        });
        let tls = ingress_tls;
        let server = Arc::new(ingress::http::Server::new(
            ingest.clone(),
            ingress::http::Limits {
                max_body: cfg.ingress.max_body.0,
                header_timeout: cfg.ingress.header_timeout.0,
                body_timeout: cfg.ingress.body_timeout.0,
                max_connections: cfg.ingress.max_connections,
                body_memory: cfg.ingress.body_memory.0,
                drain_timeout: cfg.node.shutdown_timeout.0,
            },
            link.clone(),
            tls,
        ));
        let ingress = tokio::spawn(ingress::http::serve(listener, server, stop_ingress.clone()));
        tracing::info!(node = %cfg.node.id, ingress = %ingress_addr, admin = ?admin_addr,
            upstream = ?cfg.upstream.servers, subscriptions = cfg.subscriptions.len(),
            data_dir = %cfg.node.data_dir.display(), "jetedge started");
        Ok(NodeHandle {
            ingress_addr,
            admin_addr,
            admin_token,
            metrics,
            egress,
            store,
            link,
            client,
            pause,
            stop_ingress,
            stop_forwarder,
            ingress,
            local,
            admin,
            forwarder,
            shutdown_timeout,
            reloader,
        })
    }
}

/// Puts the store's copy of the schema registry in force, then starts the
/// task that follows the bucket upstream.
fn watch_registry(
    cfg: &Config,
    bucket: &str,
    ingest: &ingress::Ingest,
    client: &async_nats::Client,
    link: &watch::Receiver<upstream::LinkState>,
    stop: &CancellationToken,
) -> Result<(), StartError> {
    let on_violation = cfg.contracts.on_violation;
    let store = ingest.store().clone();
    let cached = contract::registry::load_cached(&store, bucket, on_violation);
    let entries = ingest.contracts.registry.clone();
    entries.set(cached.map_err(StartError::Setup)?);
    tracing::info!(
        bucket,
        schemas = entries.get().len(),
        "schema registry copy loaded"
    );
    let watcher = contract::registry::Watcher {
        bucket: bucket.to_string(),
        on_violation,
        client: client.clone(),
        link: link.clone(),
        store,
        entries,
        stop: stop.clone(),
    };
    tokio::spawn(watcher.run());
    Ok(())
}

/// A listener's TLS (`[ingress] tls`, `[admin] tls`), reloaded until `stop`.
fn listener_tls(
    name: &str,
    cfg: Option<&config::TlsConfig>,
    stop: &CancellationToken,
) -> Result<Option<Arc<tls::Reloading>>, StartError> {
    cfg.map(|t| tls::start(t, stop).map_err(|e| StartError::Setup(format!("{name}.tls: {e}"))))
        .transpose()
}

async fn bind(addr: &str) -> Result<(tokio::net::TcpListener, SocketAddr), StartError> {
    let fail = |source| StartError::Listen {
        addr: addr.to_string(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(fail)?;
    let local = listener.local_addr().map_err(fail)?;
    Ok((listener, local))
}

/// The connection to the site's nats-server, when `[local]` is set.
async fn connect_site(
    cfg: &Config,
    metrics: Arc<metrics::Metrics>,
) -> Result<Option<egress::Site>, StartError> {
    let Some(l) = &cfg.local else {
        return Ok(None);
    };
    let (client, link) =
        upstream::connect(&l.endpoint(), &cfg.node.id, metrics, Some(l.max_pending))
            .await
            .map_err(StartError::Setup)?;
    Ok(Some(egress::Site { client, link }))
}

impl NodeHandle {
    /// The upstream link's state, as `/readyz` shows it.
    pub fn link_state(&self) -> &'static str {
        self.link.borrow().as_str()
    }

    /// Dead letters waiting for an operator.
    pub fn dead_letters(&self) -> usize {
        self.store.dead_letter_count()
    }

    /// Events and bytes waiting for upstream.
    pub fn backlog(&self) -> (u64, u64) {
        self.store.backlog()
    }

    pub fn upstream(&self) -> upstream::LinkState {
        *self.link.borrow()
    }

    /// Resolves with the reason if the store fails (a write that could not
    /// be made durable): the node must then stop, and a restart recovers
    /// from what is on disk.
    pub async fn failed(&self) -> String {
        self.store.failed().await
    }

    /// Reads the config file the node was started from again and applies
    /// it (SIGHUP); see [`reload`].
    pub async fn reload(&self) -> Result<reload::Report, reload::ReloadError> {
        self.reloader.reload_file().await
    }

    /// Applies a config given whole (a test, an embedding program).
    pub async fn apply(&self, cfg: config::Config) -> Result<reload::Report, reload::ReloadError> {
        self.reloader.apply(cfg).await
    }

    /// Holds (`true`) or resumes (`false`) forwarding; ingest goes on either way.
    pub fn pause_forwarding(&self, paused: bool) {
        self.pause.send_replace(paused);
    }

    /// Stops the node without losing anything acknowledged.
    pub async fn shutdown(self) {
        tracing::info!("stopping: no new connections; finishing requests in flight");
        self.stop_ingress.cancel();
        let _ = self.ingress.await;
        if let Some(task) = self.admin {
            let _ = task.await;
        }
        let local_client = match self.local {
            Some((client, task)) => {
                // It drains its subscription: what the site server already
                // sent is persisted. A server that never confirms (it went
                // away) cannot hold the stop up longer than the timeout.
                if tokio::time::timeout(self.shutdown_timeout, task)
                    .await
                    .is_err()
                {
                    tracing::warn!("local NATS ingest did not finish draining in time");
                }
                Some(client)
            }
            None => None,
        };
        tracing::info!("stopping: handing unsettled deliveries back to upstream");
        self.egress.shutdown(self.shutdown_timeout).await;
        if let Some(client) = local_client {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), client.drain()).await;
        }
        tracing::info!("stopping: settling in-flight publishes");
        self.stop_forwarder.cancel();
        let _ = self.forwarder.await;
        self.store.close().await;
        // Flushing a client that is not connected waits for a connection
        // that may never come; everything acknowledged is on disk by now.
        if *self.link.borrow() == upstream::LinkState::Connected {
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(2), self.client.drain()).await;
        }
        tracing::info!("stopped");
    }
}
