//! The mesh-wide schema registry: an upstream JetStream key-value bucket
//! (`[contracts] registry = "kv:SCHEMAS"`) whose keys are
//! `{source}.{type}.{version}` and whose values are JSON Schemas.
//!
//! One task ([`run`]) owns the node's view of it: at start the copy in the
//! store serves (so validation works offline from the first request); each
//! time upstream is reachable the task reads the whole bucket, then
//! watches it from the revision it read, compiling each entry as it
//! arrives and keeping it in the store. A key removed while the node was
//! away is gone from the full read, so the copy follows the bucket.

use super::{Origin, Schema};
use crate::config::OnViolation;
use crate::reload::Live;
use crate::store::{CachedSchema, Store};
use crate::upstream::LinkState;
use futures::StreamExt;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The registry's entries the node holds, compiled, and how fresh they are.
#[derive(Debug, Default)]
pub struct Entries {
    by_key: BTreeMap<String, Arc<Schema>>,
    /// The highest version of each type, by source (looked up per event
    /// without building a key).
    newest: HashMap<String, HashMap<String, (u64, Arc<Schema>)>>,
    pub state: State,
}

/// How the node's copy stands, for `jetedge schemas` and the status API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct State {
    pub bucket: Option<String>,
    /// Whether the task is reading or watching the bucket now.
    pub watching: bool,
    /// When the copy last matched the bucket (RFC 3339), if ever since start.
    pub synced_at: Option<String>,
    /// The last failure to read the bucket, or to compile one of its entries.
    pub last_error: Option<String>,
}

impl Entries {
    fn new(by_key: BTreeMap<String, Arc<Schema>>, state: State) -> Self {
        let mut newest: HashMap<String, HashMap<String, (u64, Arc<Schema>)>> = HashMap::new();
        for (key, schema) in &by_key {
            let Some((source, type_, version)) = parse_key(key) else {
                continue;
            };
            let types = newest.entry(source.to_string()).or_default();
            let e = types
                .entry(type_.to_string())
                .or_insert((version, schema.clone()));
            if version > e.0 {
                *e = (version, schema.clone());
            }
        }
        Self {
            by_key,
            newest,
            state,
        }
    }

    /// The newest version's schema for a source and an exact type.
    pub fn latest(&self, source: &str, type_: &str) -> Option<Arc<Schema>> {
        let (_, s) = self.newest.get(source)?.get(type_)?;
        Some(s.clone())
    }

    /// The newest schema of each source and type, in a stable order.
    pub fn newest(&self) -> impl Iterator<Item = (&str, &str, &Arc<Schema>)> {
        let mut all: Vec<_> = self
            .newest
            .iter()
            .flat_map(|(s, types)| {
                types
                    .iter()
                    .map(move |(t, (_, schema))| (s.as_str(), t.as_str(), schema))
            })
            .collect();
        all.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        all.into_iter()
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// `{source}.{type}.{version}`: the source is the first token, the version
/// the last (digits, optionally after a `v`), the type all between.
pub fn parse_key(key: &str) -> Option<(&str, &str, u64)> {
    let (source, rest) = key.split_once('.')?;
    let (type_, version) = rest.rsplit_once('.')?;
    let version = version.strip_prefix('v').unwrap_or(version);
    let valid = crate::config::is_name(source) && crate::envelope::is_subject_safe(type_);
    let digits = !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit());
    (valid && digits).then(|| Some((source, type_, version.parse().ok()?)))?
}

/// Compiles one entry of `bucket`.
fn compile(
    bucket: &str,
    key: &str,
    revision: u64,
    document: &[u8],
    on_violation: OnViolation,
) -> Result<Arc<Schema>, String> {
    let (_, _, version) = parse_key(key)
        .ok_or_else(|| format!("key {key:?} is not {{source}}.{{type}}.{{version}}"))?;
    let document =
        serde_json::from_slice(document).map_err(|e| format!("entry {key:?} is not JSON: {e}"))?;
    let origin = Origin::Registry {
        bucket: bucket.to_string(),
        key: key.to_string(),
        version,
        revision,
    };
    Schema::compile(document, origin, on_violation)
        .map(Arc::new)
        .map_err(|e| format!("entry {key:?}: {e}"))
}

/// What the watcher needs.
pub struct Watcher {
    pub bucket: String,
    pub on_violation: OnViolation,
    pub client: async_nats::Client,
    pub link: watch::Receiver<LinkState>,
    pub store: Store,
    pub entries: Arc<Live<Entries>>,
    pub stop: CancellationToken,
}

/// The node's copy as the store holds it (at start, before any network).
pub fn load_cached(
    store: &Store,
    bucket: &str,
    on_violation: OnViolation,
) -> Result<Entries, String> {
    let cached = store
        .cached_schemas(bucket)
        .map_err(|e| format!("reading the cached schemas: {e}"))?;
    let mut by_key = BTreeMap::new();
    for CachedSchema {
        key,
        revision,
        document,
    } in cached
    {
        // An entry that compiled when it came compiles now; one that does
        // not (a newer draft after a downgrade) is left out, loudly.
        match compile(bucket, &key, revision, &document, on_violation) {
            Ok(s) => {
                by_key.insert(key, s);
            }
            Err(e) => tracing::warn!(bucket, "cached schema left out: {e}"),
        }
    }
    let state = State {
        bucket: Some(bucket.to_string()),
        ..State::default()
    };
    Ok(Entries::new(by_key, state))
}

/// Why one pass over the bucket ended.
#[derive(Debug, thiserror::Error)]
enum PassError {
    #[error("the bucket cannot be opened: {0}")]
    Open(String),
    #[error("reading the bucket failed: {0}")]
    Read(String),
    #[error("the store refused the schema copy: {0}")]
    Store(String),
}

impl Watcher {
    /// Reads and watches the bucket whenever upstream is reachable, until stopped.
    pub async fn run(mut self) {
        loop {
            let up = tokio::select! {
                _ = self.stop.cancelled() => return,
                r = self.link.wait_for(|s| *s == LinkState::Connected) => r.is_ok(),
            };
            if !up {
                return;
            }
            let result = tokio::select! {
                _ = self.stop.cancelled() => return,
                r = self.pass() => r,
            };
            if let Err(e) = result {
                // Said once per kind of failure (a missing bucket is retried
                // every few seconds for as long as it is missing).
                let text = e.to_string();
                match self.entries.get().state.last_error.as_deref() == Some(text.as_str()) {
                    true => {
                        tracing::debug!(bucket = %self.bucket, "schema registry: {text}; retrying")
                    }
                    false => {
                        tracing::warn!(bucket = %self.bucket, "schema registry: {text}; retrying")
                    }
                }
                self.update(|state| {
                    state.watching = false;
                    state.last_error = Some(text);
                });
            }
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }

    /// One full read, then the watch from where it read, until the watch fails.
    async fn pass(&self) -> Result<(), PassError> {
        let js = async_nats::jetstream::new(self.client.clone());
        let kv = js
            .get_key_value(&self.bucket)
            .await
            .map_err(|e| PassError::Open(e.to_string()))?;
        let read = |e: &dyn std::fmt::Display| PassError::Read(e.to_string());
        let status = kv.status().await.map_err(|e| read(&e))?;
        let last = status.info.state.last_sequence;
        let mut keys = kv.keys().await.map_err(|e| read(&e))?;
        let mut current = BTreeMap::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| read(&e))?;
            if let Some(e) = kv.entry(key.clone()).await.map_err(|e| read(&e))? {
                current.insert(key, (e.revision, e.value.to_vec()));
            }
        }
        self.replace(current)?;
        let mut watch = kv
            .watch_all_from_revision(last + 1)
            .await
            .map_err(|e| read(&e))?;
        self.update(|state| state.watching = true);
        tracing::info!(bucket = %self.bucket, "schema registry read; watching it");
        while let Some(entry) = watch.next().await {
            let entry = entry.map_err(|e| read(&e))?;
            let put = entry.operation == async_nats::jetstream::kv::Operation::Put;
            let value = put.then(|| (entry.revision, entry.value.to_vec()));
            self.apply(&entry.key, value).await?;
        }
        Err(PassError::Read("the watch ended".into()))
    }

    /// Makes the copy exactly `current` (a full read of the bucket).
    fn replace(&self, current: BTreeMap<String, (u64, Vec<u8>)>) -> Result<(), PassError> {
        let held = self.store.cached_schemas(&self.bucket).map_err(store_err)?;
        for old in held.iter().filter(|c| !current.contains_key(&c.key)) {
            self.store
                .cache_schema(&self.bucket, &old.key, None)
                .map_err(store_err)?;
        }
        let before = self.entries.get();
        let mut by_key = BTreeMap::new();
        let mut error = None;
        for (key, (revision, document)) in &current {
            if let Some(e) = self.adopt(&mut by_key, &before, key, *revision, document)? {
                error = Some(e);
            }
        }
        let state = State {
            bucket: Some(self.bucket.clone()),
            watching: false,
            synced_at: Some(now_text()),
            last_error: error,
        };
        self.entries.set(Entries::new(by_key, state));
        self.persist();
        Ok(())
    }

    /// One change from the watch: a put (compiled, kept) or a removal.
    async fn apply(&self, key: &str, value: Option<(u64, Vec<u8>)>) -> Result<(), PassError> {
        let current = self.entries.get();
        let mut by_key = current.by_key.clone();
        let mut state = current.state.clone();
        match value {
            Some((revision, document)) => {
                match self.adopt(&mut by_key, &current, key, revision, &document)? {
                    None => {
                        tracing::info!(bucket = %self.bucket, key, revision, "schema registry: entry in force")
                    }
                    Some(e) => state.last_error = Some(e),
                }
            }
            None => {
                self.store
                    .cache_schema(&self.bucket, key, None)
                    .map_err(store_err)?;
                by_key.remove(key);
                tracing::info!(bucket = %self.bucket, key, "schema registry: entry removed");
            }
        }
        state.synced_at = Some(now_text());
        self.entries.set(Entries::new(by_key, state));
        self.persist();
        Ok(())
    }

    /// Puts one entry of the bucket in force in `by_key`: the schema `held`
    /// already has for this revision (compiled and kept in the store when
    /// it came), else compiled now and kept. An entry that does not
    /// compile is left out and its error returned.
    fn adopt(
        &self,
        by_key: &mut BTreeMap<String, Arc<Schema>>,
        held: &Entries,
        key: &str,
        revision: u64,
        document: &[u8],
    ) -> Result<Option<String>, PassError> {
        let same = held
            .by_key
            .get(key)
            .filter(|s| matches!(s.origin, Origin::Registry { revision: r, .. } if r == revision));
        if let Some(s) = same {
            by_key.insert(key.to_string(), s.clone());
            return Ok(None);
        }
        match compile(&self.bucket, key, revision, document, self.on_violation) {
            Ok(s) => {
                self.store
                    .cache_schema(&self.bucket, key, Some((revision, document)))
                    .map_err(store_err)?;
                by_key.insert(key.to_string(), s);
                Ok(None)
            }
            Err(e) => Ok(Some(self.refused(e))),
        }
    }

    /// An entry that does not compile is not enforced; its previous
    /// version (if any) stays in force, and the error is shown.
    fn refused(&self, e: String) -> String {
        tracing::error!(bucket = %self.bucket, "schema registry entry not enforced: {e}");
        e
    }

    /// Asks the committer to flush the copy (it is small and rarely changes).
    fn persist(&self) {
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.sync().await {
                tracing::warn!(error = %e, "flushing the schema copy failed");
            }
        });
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        let current = self.entries.get();
        let mut state = current.state.clone();
        f(&mut state);
        self.entries
            .set(Entries::new(current.by_key.clone(), state));
    }
}

fn now_text() -> String {
    crate::envelope::format_time(time::OffsetDateTime::now_utc())
}

fn store_err(e: crate::store::StoreError) -> PassError {
    PassError::Store(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::parse_key;

    #[test]
    fn keys_name_source_type_and_version() {
        assert_eq!(
            parse_key("shop.order.created.3"),
            Some(("shop", "order.created", 3))
        );
        assert_eq!(parse_key("shop.order.v12"), Some(("shop", "order", 12)));
        assert_eq!(parse_key("shop.order"), None, "no version");
        assert_eq!(parse_key("shop.order.latest"), None);
        assert_eq!(parse_key("shop.3"), None, "no type");
        assert_eq!(parse_key("sh op.order.1"), None, "source is no name");
    }
}
