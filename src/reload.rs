//! Applying a changed config to a running node: SIGHUP, `POST /admin/reload`
//! and `jetedge reload` read the file again. An invalid file changes
//! nothing (every problem is reported with its key path). A valid one is
//! applied without a restart where the running parts allow it: sources,
//! their secrets and verification, routes, redaction rules, rate limits,
//! dedupe TTLs, TLS certificates, and subscriptions with their targets,
//! retries and breakers. What needs a restart (listen addresses, the data
//! dir, the node id, the upstream and site connections, ingress limits) is
//! reported as such and keeps its running value until one.
//!
//! Requests in flight finish with the config they started with (they hold
//! their own [`Live::get`] snapshot); events are never lost or doubled,
//! because the store, the forwarder and the upstream consumers are not
//! touched: a subscription that changes is stopped (its unsettled messages
//! go back upstream) and started again on the same durable consumer.

use crate::config::{Config, Problem};
use crate::egress::Egress;
use crate::ingress::Ingest;
use crate::metrics::Metrics;
use crate::tls::Reloading;
use serde::Serialize;
use std::sync::{Arc, RwLock};

/// A value that a reload replaces whole; readers take a snapshot.
pub struct Live<T>(RwLock<Arc<T>>);

impl<T> Live<T> {
    pub fn new(value: T) -> Self {
        Self(RwLock::new(Arc::new(value)))
    }

    /// The current value, held as it is for as long as the caller keeps it.
    pub fn get(&self) -> Arc<T> {
        self.0.read().expect("live value").clone()
    }

    pub(crate) fn set(&self, value: T) {
        *self.0.write().expect("live value") = Arc::new(value);
    }
}

impl<T: Default> Default for Live<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Live<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// What was applied, as key paths and names ("source shop: added").
    pub changed: Vec<String>,
    /// Keys whose new value waits for a restart (the old one stays).
    pub restart_required: Vec<String>,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the config is invalid ({} problem(s)); nothing was changed", .0.len())]
    Invalid(Vec<Problem>),
    #[error("the config could not be applied: {0}; nothing was changed")]
    Failed(String),
    #[error("the node was not started from a config file, so there is nothing to read again")]
    NoFile,
}

impl ReloadError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid_config",
            Self::Failed(_) | Self::NoFile => "reload_failed",
        }
    }
}

/// The running parts a reload replaces, and the config they run.
pub struct Reloader {
    pub(crate) current: tokio::sync::Mutex<Config>,
    pub(crate) ingest: Arc<Live<Ingest>>,
    pub(crate) egress: Arc<Egress>,
    pub(crate) ingress_tls: Option<Arc<Reloading>>,
    pub(crate) admin_tls: Option<Arc<Reloading>>,
    pub(crate) metrics: Arc<Metrics>,
}

impl Reloader {
    /// Reads the node's config file again and applies it.
    pub async fn reload_file(&self) -> Result<Report, ReloadError> {
        let path = self.current.lock().await.path.clone();
        let path = path.ok_or(ReloadError::NoFile);
        let loaded =
            path.and_then(|p| Config::load(&p).map_err(|e| ReloadError::Invalid(e.problems)));
        match loaded {
            Ok(cfg) => self.apply(cfg).await,
            Err(e) => Err(self.failed(e)),
        }
    }

    /// Applies a validated config: everything is built first, so a part
    /// that cannot be built (a secret that cannot be read, a CA file that
    /// does not load) leaves the node as it was.
    pub async fn apply(&self, new: Config) -> Result<Report, ReloadError> {
        let mut current = self.current.lock().await;
        let (next, report) = plan(&current, new);
        let ingest = self.ingest.get().rebuild(&next);
        let ingest = ingest.map_err(|e| self.failed(ReloadError::Failed(e)))?;
        for (tls, files) in [
            (&self.ingress_tls, &next.ingress.tls),
            (&self.admin_tls, &next.admin.tls),
        ] {
            if let (Some(tls), Some(files)) = (tls, files) {
                tls.set_files(files)
                    .map_err(|e| self.failed(ReloadError::Failed(e.to_string())))?;
            }
        }
        let restarted = self.egress.reconcile(&next).await;
        let restarted = restarted.map_err(|e| self.failed(ReloadError::Failed(e)))?;
        self.ingest.set(ingest);
        let mut report = report;
        report.changed.extend(restarted);
        *current = next;
        Metrics::add(&self.metrics.reloads, 1);
        tracing::info!(changed = ?report.changed, restart_required = ?report.restart_required, "config reloaded");
        Ok(report)
    }

    fn failed(&self, e: ReloadError) -> ReloadError {
        Metrics::add(&self.metrics.reloads_failed, 1);
        match &e {
            ReloadError::Invalid(problems) => {
                let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
                tracing::warn!(problems = ?list, "config reload refused: the file is invalid; the running config is kept");
            }
            other => {
                tracing::warn!(error = %other, "config reload failed; the running config is kept")
            }
        }
        e
    }
}

/// The config to run after a reload to `new`, and what that changes: the
/// keys that need a restart keep their running values.
pub fn plan(old: &Config, mut new: Config) -> (Config, Report) {
    let mut restart = Vec::new();
    let mut keep = |at: &str, changed: bool| {
        if changed {
            restart.push(at.to_string());
        }
        changed
    };
    macro_rules! hold {
        ($at:literal, $($field:ident).+) => {
            if keep($at, old.$($field).+ != new.$($field).+) {
                new.$($field).+ = old.$($field).+.clone();
            }
        };
    }
    hold!("node.id", node.id);
    hold!("node.data_dir", node.data_dir);
    hold!("node.max_buffer", node.max_buffer);
    hold!("node.disk_reserve", node.disk_reserve);
    hold!("node.fsync", node.fsync);
    hold!("node.shutdown_timeout", node.shutdown_timeout);
    hold!("node.encryption_key", node.encryption_key);
    hold!("node.previous_keys", node.previous_keys);
    hold!("node.log_format", node.log_format);
    hold!("ingress.listen", ingress.listen);
    hold!("ingress.max_body", ingress.max_body);
    hold!("ingress.header_timeout", ingress.header_timeout);
    hold!("ingress.body_timeout", ingress.body_timeout);
    hold!("ingress.max_connections", ingress.max_connections);
    hold!("ingress.body_memory", ingress.body_memory);
    hold!("admin.listen", admin.listen);
    hold!("admin.token", admin.token);
    hold!("admin.hosts", admin.hosts);
    hold!("upstream", upstream);
    hold!("local", local);
    hold!("contracts", contracts);
    // A listener turns TLS on or off only with a restart; new certificate
    // files are taken at once.
    if keep(
        "ingress.tls",
        old.ingress.tls.is_some() != new.ingress.tls.is_some(),
    ) {
        new.ingress.tls = old.ingress.tls.clone();
    }
    if keep(
        "admin.tls",
        old.admin.tls.is_some() != new.admin.tls.is_some(),
    ) {
        new.admin.tls = old.admin.tls.clone();
    }
    let changed = changes(old, &new);
    (
        new,
        Report {
            changed,
            restart_required: restart,
        },
    )
}

/// What differs between two configs in the parts a reload applies, but
/// subscriptions (egress says which it restarted: a rotated secret behind
/// the same reference restarts one too). Sources are rebuilt on every
/// reload, so their secrets are read again whether or not this lists them.
fn changes(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut differs = |what: &str, changed: bool| {
        if changed {
            out.push(what.to_string());
        }
    };
    differs(
        "node.dedupe_ttl",
        old.node.dedupe_ttl != new.node.dedupe_ttl,
    );
    differs(
        "ingress.rate_limit",
        old.ingress.rate_limit != new.ingress.rate_limit,
    );
    differs(
        "ingress.events_source",
        old.ingress.events_source != new.ingress.events_source,
    );
    differs("ingress.tls", old.ingress.tls != new.ingress.tls);
    differs("admin.tls", old.admin.tls != new.admin.tls);
    differs("routing", old.routing != new.routing);
    differs("route", old.routes != new.routes);
    differs("redact", old.redactions != new.redactions);
    differs("schema", old.schemas != new.schemas);
    for (name, what) in by_name(&old.sources, &new.sources, |s| s.name.as_str()) {
        out.push(format!("source {name}: {what}"));
    }
    out
}

/// Items added, changed or removed between two lists, by name.
pub fn by_name<'a, T: PartialEq>(
    old: &'a [T],
    new: &'a [T],
    name: impl Fn(&T) -> &str,
) -> Vec<(&'a str, &'static str)> {
    let mut out = Vec::new();
    for n in new {
        match old.iter().find(|o| name(o) == name(n)) {
            None => out.push((name(n), "added")),
            Some(o) if o != n => out.push((name(n), "changed")),
            Some(_) => {}
        }
    }
    for o in old {
        if !new.iter().any(|n| name(n) == name(o)) {
            out.push((name(o), "removed"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        Config::from_toml(text, std::iter::empty()).unwrap()
    }

    #[test]
    fn restart_only_keys_keep_their_running_values_and_the_rest_is_listed() {
        let old = cfg(
            "[ingress]\nlisten = \"127.0.0.1:8080\"\n[[source]]\nname = \"a\"\nverify = \"none\"\n",
        );
        let new = cfg(
            "[node]\nid = \"other\"\n[ingress]\nlisten = \"127.0.0.1:9999\"\nrate_limit = { per_second = 5, burst = 5 }\n\
             [[source]]\nname = \"b\"\nverify = \"none\"\n[[route]]\nmatch = { prefix = { type = \"x.\" } }\naction = \"drop\"\n",
        );
        let (next, report) = plan(&old, new);
        assert_eq!(report.restart_required, ["node.id", "ingress.listen"]);
        assert_eq!(
            (next.node.id.as_str(), next.ingress.listen.as_str()),
            ("jetedge", "127.0.0.1:8080")
        );
        assert_eq!(
            report.changed,
            [
                "ingress.rate_limit",
                "route",
                "source b: added",
                "source a: removed"
            ]
        );
        assert!(next.ingress.rate_limit.is_some());
        let (_, same) = plan(&next, next.clone());
        assert_eq!(
            same,
            Report {
                changed: vec![],
                restart_required: vec![]
            }
        );
    }
}
