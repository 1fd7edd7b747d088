//! Events in. `Ingest` is the transport-free core: given a source, headers
//! and a raw body, it authenticates, normalises and persists, and says what
//! happened to each event. `http` maps that onto routes and status codes;
//! NATS ingest can reuse the same core.

pub mod answer;
pub mod http;
pub mod limit;
pub mod local;
pub mod tap;

use crate::config::{Config, OnViolation};
use crate::contract::{Contracts, Verdict, Violation};
use crate::metrics::Metrics;
use crate::pipeline::redact::COUNTED;
use crate::pipeline::{Decision, Invalid, Normalised, Rules, SourceShape};
use crate::signature::{Verifier, VerifyError};
use crate::store::{encode_fields, idem_key, NewEvent, Outcome, Store, StoreError};
use hyper::HeaderMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A configured source: how to check it and how to read it.
pub struct Source {
    pub shape: SourceShape,
    pub verifier: Verifier,
    /// How long its dedupe keys are remembered.
    pub dedupe_ttl: std::time::Duration,
    /// `rate_limit`, when it has one.
    pub limit: Option<limit::RateLimit>,
    /// Client certificate identities allowed to post over HTTP (any when empty).
    pub client_identities: Vec<String>,
}

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Accepted {
        id: String,
    },
    /// Dropped by a routing rule; answered 202 so senders do not retry.
    Filtered {
        id: String,
    },
    Duplicate {
        id: String,
    },
    /// Stored, but broke its schema: it goes to the quarantine subject.
    Quarantined {
        id: String,
    },
    Rejected(Rejection),
}

/// Why an event (or the whole request) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("unknown source {0:?}")]
    UnknownSource(String),
    #[error("{0}")]
    Unauthorized(VerifyError),
    #[error("{0}")]
    Stale(VerifyError),
    #[error("{0}")]
    Invalid(#[from] Invalid),
    #[error("the event is {size} bytes as an envelope, over upstream's limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error("the buffer is full (node.max_buffer); retry later")]
    QuotaFull,
    #[error("the node's disk is nearly full (node.disk_reserve); retry later")]
    DiskFull,
    #[error("the node cannot take events now: {0}")]
    Unavailable(String),
    #[error("this client certificate ({shown}) may not post to source {name:?}")]
    ClientNotAllowed { name: String, shown: String },
    #[error("the event's data does not meet its schema ({schema}): {}", describe(.violations))]
    SchemaViolation {
        /// The schema's `dataschema`.
        schema: String,
        violations: Vec<Violation>,
    },
    #[error("over the rate limit of {scope}; retry in {retry_after}s")]
    RateLimited {
        /// `source "shop"` or `the ingress listener`.
        scope: String,
        retry_after: u64,
    },
}

impl Rejection {
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownSource(_) => "unknown_source",
            Self::Unauthorized(_) => "unauthorized",
            Self::Stale(_) => "timestamp_out_of_tolerance",
            Self::Invalid(i) => i.code(),
            Self::TooLarge { .. } => "event_too_large",
            Self::QuotaFull => "buffer_full",
            Self::DiskFull => "disk_full",
            Self::Unavailable(_) => "unavailable",
            Self::ClientNotAllowed { .. } => "client_not_allowed",
            Self::RateLimited { .. } => "rate_limited",
            Self::SchemaViolation { .. } => "schema_violation",
        }
    }

    /// Seconds a sender is asked to wait, where the refusal says.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// The first violation and how many more: the error's message (the
/// body's `violations` lists them all).
fn describe(violations: &[Violation]) -> String {
    let first = violations.first().map_or_else(String::new, |v| {
        let at = if v.pointer.is_empty() {
            "data"
        } else {
            &v.pointer
        };
        format!("{at}: {}", v.message)
    });
    match violations.len() {
        0 | 1 => first,
        n => format!("{first} (and {} more)", n - 1),
    }
}

impl From<VerifyError> for Rejection {
    fn from(e: VerifyError) -> Self {
        match e {
            VerifyError::Stale { .. } => Self::Stale(e),
            _ => Self::Unauthorized(e),
        }
    }
}

/// How a request reached the node, for [`Ingest::admit`].
#[derive(Clone, Copy)]
pub enum Via<'a> {
    /// HTTP, with the identities of the client certificate (none without mTLS).
    Http {
        identities: &'a [String],
    },
    Nats,
}

/// The ingest core shared by every transport.
pub struct Ingest {
    sources: HashMap<String, Source>,
    pub events_source: String,
    store: Store,
    rules: Rules,
    pub metrics: Arc<Metrics>,
    /// Largest envelope upstream takes (shared with the forwarder, which
    /// learns it at connect; remembered in the store across restarts).
    pub max_event: Arc<AtomicU64>,
    /// `local_first` subscriptions and their subject filters.
    local_first: Vec<(String, Vec<String>)>,
    /// `[ingress] rate_limit`, over every HTTP ingest request.
    http_limit: Option<limit::RateLimit>,
    /// Stored events for live watchers (`jetedge tap`); kept across reloads.
    pub tap: Arc<tap::Tap>,
    /// The schemas events must meet (the registry's part kept across reloads).
    pub contracts: Contracts,
    /// `[upstream] subject_prefix`, for quarantine subjects.
    prefix: String,
}

impl Ingest {
    /// Builds every source, resolving its secrets.
    pub fn new(cfg: &Config, store: Store, metrics: Arc<Metrics>) -> Result<Self, String> {
        let mut sources = HashMap::new();
        for s in &cfg.sources {
            let secrets = s
                .secrets
                .iter()
                .map(|r| r.resolve())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("source {:?}: {e}", s.name))?;
            let verifier =
                Verifier::new(s, &secrets).map_err(|e| format!("source {:?}: {e}", s.name))?;
            let shape = SourceShape::new(&cfg.node.id, &cfg.upstream.subject_prefix, s)?;
            let dedupe_ttl = cfg.dedupe_ttl(s);
            sources.insert(
                s.name.clone(),
                Source {
                    shape,
                    verifier,
                    dedupe_ttl,
                    limit: s.rate_limit.as_ref().map(limit::RateLimit::new),
                    client_identities: s.client_identities.clone(),
                },
            );
        }
        let rules = Rules::compile(cfg).map_err(|p| joined(&p))?;
        let contracts = Contracts::compile(cfg, Arc::default()).map_err(|p| joined(&p))?;
        // NATS's default max_payload until upstream says otherwise.
        let max_event = store.known_max_event().unwrap_or(1 << 20);
        Ok(Self {
            sources,
            events_source: cfg.ingress.events_source.clone(),
            store,
            rules,
            metrics,
            max_event: Arc::new(AtomicU64::new(max_event)),
            local_first: cfg
                .subscriptions
                .iter()
                .filter(|s| s.local_first)
                .map(|s| (s.name.clone(), s.subjects.clone()))
                .collect(),
            http_limit: cfg.ingress.rate_limit.as_ref().map(limit::RateLimit::new),
            tap: Arc::default(),
            contracts,
            prefix: cfg.upstream.subject_prefix.clone(),
        })
    }

    /// The same ingest under a new config: sources rebuilt (their secrets
    /// read again), rules compiled, limits fresh; the store, the metrics and
    /// the size limit the forwarder learns are shared with this one.
    pub fn rebuild(&self, cfg: &Config) -> Result<Self, String> {
        let mut next = Self::new(cfg, self.store.clone(), self.metrics.clone())?;
        next.max_event = self.max_event.clone();
        next.tap = self.tap.clone();
        next.contracts.registry = self.contracts.registry.clone();
        Ok(next)
    }

    pub fn source_names(&self) -> impl Iterator<Item = &str> {
        self.sources.keys().map(String::as_str)
    }

    pub fn source(&self, name: &str) -> Result<&Source, Rejection> {
        self.sources
            .get(name)
            .ok_or_else(|| Rejection::UnknownSource(name.to_string()))
    }

    /// Admits a request to `source` before anything else is done with it:
    /// a token from the listener's limit (HTTP), the source's
    /// `client_identities` (HTTP under mTLS), then a token from the
    /// source's limit, so a client the source refuses spends none of it.
    pub fn admit(&self, source: &str, via: Via<'_>) -> Result<&Source, Rejection> {
        let refused = |scope: String, wait| Rejection::RateLimited {
            scope,
            retry_after: limit::retry_after_secs(wait),
        };
        if let (Some(l), Via::Http { .. }) = (&self.http_limit, via) {
            l.take()
                .map_err(|w| refused("the ingress listener".into(), w))?;
        }
        let s = self.source(source)?;
        if let Via::Http { identities } = via {
            let list = &s.client_identities;
            if !list.is_empty() && !identities.iter().any(|id| list.contains(id)) {
                return Err(Rejection::ClientNotAllowed {
                    name: source.to_string(),
                    shown: match identities.is_empty() {
                        true => "none".to_string(),
                        false => identities.join(", "),
                    },
                });
            }
        }
        if let Some(l) = &s.limit {
            l.take()
                .map_err(|w| refused(format!("source {source:?}"), w))?;
        }
        Ok(s)
    }

    /// Requests refused by each rate limit: `None` for the listener's.
    pub fn rate_limited(&self) -> Vec<(Option<&str>, u64)> {
        let listener = self.http_limit.as_ref().map(|l| (None, l.limited()));
        let sources = self
            .sources
            .iter()
            .filter_map(|(name, s)| Some((Some(name.as_str()), s.limit.as_ref()?.limited())));
        listener.into_iter().chain(sources).collect()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Persists normalised events (or passes on why they were refused), in order.
    pub async fn persist(
        &self,
        source: &str,
        events: Vec<Result<Normalised, Rejection>>,
    ) -> Vec<Answer> {
        let max = self.max_event.load(Ordering::Relaxed);
        let mut answers: Vec<Option<Answer>> = Vec::with_capacity(events.len());
        let mut batch = Vec::new();
        let mut ids = Vec::new();
        let mut redacted = [0u64; COUNTED.len()];
        // Copies for the tap, only while someone watches.
        let mut tapped = self.tap.is_watched().then(Vec::new);
        for mut ev in events {
            // The contract first (it sees the data as sent), then filter
            // and redact, before anything is written. A quarantined event
            // skips the routes (its subject is the quarantine's) but is
            // redacted like any other.
            let mut quarantined = false;
            if let Ok(n) = &mut ev {
                match self.enforce(source, n) {
                    Err(r) => {
                        answers.push(Some(Answer::Rejected(r)));
                        continue;
                    }
                    Ok(q) => quarantined = q,
                }
                if quarantined {
                    self.rules.redact(source, n, &mut redacted);
                } else if let Decision::Drop(_) = self.rules.apply(source, n, &mut redacted) {
                    let id = n.envelope.id.clone();
                    answers.push(Some(Answer::Filtered { id }));
                    continue;
                }
            }
            let ttl = self.sources.get(source).map_or_else(
                || crate::config::Scheme::None.default_dedupe_ttl(),
                |s| s.dedupe_ttl,
            );
            match ev.and_then(|n| to_new_event(source, n, max, ttl, &self.local_first)) {
                Ok(new) => {
                    if let Some(t) = tapped.as_mut() {
                        t.push(tap_copy(source, &new));
                    }
                    ids.push((new.id.clone(), quarantined));
                    batch.push(new);
                    answers.push(None);
                }
                Err(r) => answers.push(Some(Answer::Rejected(r))),
            }
        }
        self.metrics.redacted(&redacted);
        let outcomes = match self.store.persist(batch).await {
            Ok(o) => o,
            Err(e) => {
                let r = unavailable(e);
                return answers
                    .into_iter()
                    .map(|a| a.unwrap_or_else(|| Answer::Rejected(r.clone())))
                    .inspect(|a| self.count(source, a))
                    .collect();
            }
        };
        if let Some(t) = tapped {
            let stored = outcomes
                .iter()
                .zip(t)
                .filter(|(o, _)| **o == Outcome::Accepted);
            self.tap.send(stored.filter_map(|(_, t)| t));
        }
        let mut fresh = outcomes.into_iter().zip(ids);
        answers
            .into_iter()
            .map(|a| {
                a.unwrap_or_else(|| {
                    let (outcome, (id, quarantined)) =
                        fresh.next().expect("one outcome per persisted event");
                    match outcome {
                        Outcome::Accepted if quarantined => Answer::Quarantined { id },
                        Outcome::Accepted => Answer::Accepted { id },
                        Outcome::Duplicate { id } => Answer::Duplicate { id },
                        Outcome::QuotaFull => Answer::Rejected(Rejection::QuotaFull),
                        Outcome::DiskFull => Answer::Rejected(Rejection::DiskFull),
                    }
                })
            })
            .inspect(|a| self.count(source, a))
            .collect()
    }

    /// Checks `n` against the schema of its source and type, if one
    /// applies, and stamps it as `dataschema`. A violation is refused, or
    /// under `quarantine` sent to `{prefix}.quarantine.{source}.{type}` with
    /// the violations as the `schemaviolations` extension (`Ok(true)`).
    fn enforce(&self, source: &str, n: &mut Normalised) -> Result<bool, Rejection> {
        let e = &mut n.envelope;
        let (schema, violations) = match self.contracts.check(source, &e.type_, e.data.as_ref()) {
            Verdict::Unchecked => return Ok(false),
            Verdict::Valid(s) => (s, Vec::new()),
            Verdict::Invalid(s, v) => (s, v),
        };
        let stamp = serde_json::Value::String(schema.dataschema.clone());
        e.extensions.insert("dataschema".into(), stamp);
        if violations.is_empty() {
            return Ok(false);
        }
        match schema.on_violation {
            OnViolation::Reject => Err(Rejection::SchemaViolation {
                schema: schema.dataschema.clone(),
                violations,
            }),
            OnViolation::Quarantine => {
                n.subject = format!("{}.quarantine.{source}.{}", self.prefix, e.type_);
                let list = serde_json::to_value(&violations).unwrap_or_default();
                e.extensions.insert("schemaviolations".into(), list);
                Ok(true)
            }
        }
    }

    fn count(&self, source: &str, a: &Answer) {
        match a {
            Answer::Accepted { .. } => Metrics::add(&self.metrics.events_accepted, 1),
            Answer::Quarantined { .. } => {
                Metrics::add(&self.metrics.events_accepted, 1);
                Metrics::add(&self.metrics.events_quarantined, 1);
            }
            Answer::Filtered { .. } => Metrics::add(&self.metrics.events_filtered, 1),
            Answer::Duplicate { .. } => Metrics::add(&self.metrics.events_duplicate, 1),
            Answer::Rejected(r) => self.metrics.reject(Some(source), r.code()),
        }
    }

    /// Authenticates a request of `source`; `now` is Unix seconds.
    pub fn verify(
        &self,
        source: &Source,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<(), Rejection> {
        source
            .verifier
            .verify(headers, body, now)
            .map_err(Rejection::from)
    }
}

/// A scratch buffer that grew past this (one huge event) is let go.
const SCRATCH_KEEP: usize = 64 << 10;

fn to_new_event(
    source: &str,
    n: Normalised,
    max: u64,
    dedupe_ttl: std::time::Duration,
    local_first: &[(String, Vec<String>)],
) -> Result<NewEvent, Rejection> {
    let e = n.envelope;
    thread_local! {
        // The envelope's JSON is written here, then copied once into a
        // record of the exact size: no buffer grown per event.
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let record = SCRATCH.with_borrow_mut(|payload| {
        payload.clear();
        e.write_json(payload);
        // Headers and subject travel with the payload; keep a margin for them.
        let size = (payload.len() + 1024) as u64;
        if size > max {
            return Err(Rejection::TooLarge { size, limit: max });
        }
        let record = encode_fields([
            n.subject.as_bytes(),
            e.id.as_bytes(),
            e.type_.as_bytes(),
            e.source.as_bytes(),
            e.traceparent.as_bytes(),
            payload,
        ]);
        if payload.capacity() > SCRATCH_KEEP {
            *payload = Vec::new();
        }
        Ok(record)
    })?;
    let matches = |filters: &[String]| {
        filters
            .iter()
            .any(|f| crate::envelope::subject_matches(f, &n.subject))
    };
    Ok(NewEvent {
        keys: n.keys.iter().map(|k| idem_key(source, k)).collect(),
        dedupe_ttl,
        local_first: local_first
            .iter()
            .filter(|(_, filters)| matches(filters))
            .map(|(name, _)| name.clone())
            .collect(),
        id: e.id,
        record,
    })
}

/// What a tap shows of an event about to be stored: its record, read back.
fn tap_copy(source: &str, new: &NewEvent) -> Option<tap::Tapped> {
    let r = crate::store::Record::decode(&new.record).ok()?;
    Some(tap::Tapped {
        source: source.to_string(),
        type_: r.type_,
        subject: r.subject,
        envelope: r.payload.into(),
    })
}

fn joined(problems: &[crate::config::Problem]) -> String {
    let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
    list.join("; ")
}

fn unavailable(e: StoreError) -> Rejection {
    match e {
        StoreError::Closed => Rejection::Unavailable("the node is shutting down".into()),
        // Logged once, where it happened.
        StoreError::Failed(_) => Rejection::Unavailable(
            "the store failed to write to disk; the node is stopping to recover".into(),
        ),
        other => {
            tracing::error!(error = %other, "persisting events failed");
            Rejection::Unavailable("storage error; retry later".into())
        }
    }
}
