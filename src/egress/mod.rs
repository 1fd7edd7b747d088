//! Events out: each `[[subscription]]` pulls its subjects from upstream
//! JetStream (`consumer.rs`) and, when `local_first` is set, takes events
//! ingested at this site straight from the store (`local_first.rs`); both
//! hand each event to [`Subscription::deliver`], which gets it to every
//! target (`target.rs`) with retries (`retry.rs`) behind a circuit breaker
//! per target (`breaker.rs`), or gives up and leaves a dead letter.
//!
//! Invariant: an upstream message is acked only after every target took it
//! or its dead letter is on disk; so egress is at-least-once per target,
//! and targets dedupe by the event id they are given.

mod breaker;
mod consumer;
mod local_first;
mod retry;
mod target;

pub use breaker::BreakerStatus;
pub use target::{nats_headers, Failure, Site};

use crate::config::{Config, SubscriptionConfig};
use crate::store::{now_ms, Letter, LetterMeta, Record, Store, StoreError};
use crate::upstream::LinkState;
use breaker::Admit;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use target::Target;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Counters of one subscription.
#[derive(Default)]
struct Stats {
    delivered: AtomicU64,
    failed_attempts: AtomicU64,
    dead_lettered: AtomicU64,
    local_first: AtomicU64,
    skipped: AtomicU64,
    /// Messages waiting upstream for the consumer, as the last one said.
    pending: AtomicU64,
    /// Dead letters not yet told in the log, and when it last told any.
    untold_letters: std::sync::Mutex<(u64, Option<std::time::Instant>)>,
}

/// A failing target can dead-letter every event: the log says so once,
/// then sums up at most once a minute.
const LETTERS_SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// One subscription's shared parts.
pub struct Subscription {
    pub cfg: SubscriptionConfig,
    /// The durable consumer's name upstream: `{node}-{subscription}`.
    pub consumer: String,
    targets: Vec<Target>,
    store: Store,
    stop: CancellationToken,
    stats: Stats,
    /// Each delivery attempt's duration.
    delivery: prometheus_client::metrics::histogram::Histogram,
}

/// What became of one message.
#[derive(Debug)]
pub enum Outcome {
    /// Every target took it.
    Delivered,
    /// Retries ran out; these are the dead letter's details.
    Dead(LetterMeta),
    /// The node is stopping; the message was not settled.
    Stopped,
}

impl Subscription {
    fn new(
        cfg: &SubscriptionConfig,
        node: &str,
        targets: Vec<Target>,
        store: Store,
        stop: CancellationToken,
        delivery: prometheus_client::metrics::histogram::Histogram,
    ) -> Self {
        Self {
            cfg: cfg.clone(),
            consumer: format!("{node}-{}", cfg.name),
            targets,
            store,
            stop,
            stats: Stats::default(),
            delivery,
        }
    }

    /// Keeps the consumer's lag upstream, as a message reported it.
    pub(crate) fn note_pending(&self, pending: u64) {
        self.stats.pending.store(pending, Ordering::Relaxed);
    }

    /// Delivers `r` to every target, retrying those that fail, until all
    /// took it, `retry.max_attempts` ran out, or the node stops. What it
    /// logs carries the subscription and the event (a span).
    pub async fn deliver(&self, r: &Record) -> Outcome {
        use tracing::Instrument;
        let span = tracing::info_span!("deliver", subscription = %self.cfg.name, event = %r.id);
        self.deliver_to_all(r).instrument(span).await
    }

    async fn deliver_to_all(&self, r: &Record) -> Outcome {
        let mut owed: Vec<usize> = (0..self.targets.len()).collect();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut failed = Vec::new();
            let mut last = None;
            for i in owed {
                let target = &self.targets[i];
                if !self.admitted(target).await {
                    return Outcome::Stopped;
                }
                if let Err(f) = self.attempt(target, r).await {
                    failed.push(i);
                    last = Some(f);
                }
            }
            let Some(last) = last else {
                Stats::add(&self.stats.delivered);
                return Outcome::Delivered;
            };
            owed = failed;
            if attempts >= self.cfg.retry.max_attempts {
                Stats::add(&self.stats.dead_lettered);
                return Outcome::Dead(self.letter(&owed, attempts, &last.message));
            }
            let wait = retry::delay(&self.cfg.retry, attempts, last.retry_after);
            if !self.pause(wait).await {
                return Outcome::Stopped;
            }
        }
    }

    /// One attempt at the targets a dead letter still owes (a replay);
    /// the letter comes back updated when some still fail.
    pub async fn replay(&self, mut letter: Letter) -> Result<(), Letter> {
        let mut failed = Vec::new();
        for name in &letter.meta.targets {
            let Some(target) = self.targets.iter().find(|t| t.name == name) else {
                // The target was removed from the config: nothing to owe it.
                continue;
            };
            if let Err(f) = self.attempt(target, &letter.record).await {
                letter.meta.last_error = format!("{}: {}", target.name, f.message);
                failed.push(name.clone());
            }
        }
        if failed.is_empty() {
            Stats::add(&self.stats.delivered);
            return Ok(());
        }
        letter.meta.targets = failed;
        letter.meta.attempts += 1;
        Err(letter)
    }

    /// One delivery to one target, its outcome told to the target's breaker
    /// and counted.
    async fn attempt(&self, target: &Target, r: &Record) -> Result<(), Failure> {
        let started = std::time::Instant::now();
        let result = target.send(r).await;
        self.delivery.observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(()) => target.breaker.success(),
            Err(f) => self.failed(target, r, f),
        }
        result
    }

    fn failed(&self, target: &Target, r: &Record, f: &Failure) {
        Stats::add(&self.stats.failed_attempts);
        if target.breaker.failure() {
            tracing::warn!(subscription = %self.cfg.name, target = target.name, error = %f.message,
                cool_off = ?self.cfg.breaker.cool_off.0, "target keeps failing; pausing it (circuit open)");
        } else {
            tracing::debug!(subscription = %self.cfg.name, target = target.name, id = %r.id, error = %f.message, "delivery failed; will retry");
        }
    }

    fn letter(&self, owed: &[usize], attempts: u32, error: &str) -> LetterMeta {
        LetterMeta {
            subscription: self.cfg.name.clone(),
            targets: owed
                .iter()
                .map(|i| self.targets[*i].name.to_string())
                .collect(),
            attempts,
            last_error: error.to_string(),
            dead_at: crate::envelope::format_time(time::OffsetDateTime::now_utc()),
        }
    }

    /// Waits until `target`'s breaker lets a delivery through; `false` if
    /// the node stops first.
    async fn admitted(&self, target: &Target) -> bool {
        loop {
            match target.breaker.admit() {
                Admit::Go => return true,
                Admit::Wait(d) => {
                    if !self.pause(d).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Sleeps for `d`; `false` if the node stops first.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.stop.cancelled() => false,
        }
    }

    /// Settles a failed delivery: the dead letter, durably.
    async fn bury(&self, meta: LetterMeta, r: Record) -> Result<(), StoreError> {
        let id = r.id.clone();
        let error = meta.last_error.clone();
        let seq = self.store.dead_letter(meta, r).await?;
        let mut untold = self.stats.untold_letters.lock().expect("letters");
        untold.0 += 1;
        if untold
            .1
            .is_none_or(|t| t.elapsed() >= LETTERS_SUMMARY_EVERY)
        {
            tracing::warn!(subscription = %self.cfg.name, %id, dead_letter = seq, %error, dead_letters = untold.0,
                "deliveries gave up and went to the dead-letter queue (logged at most once a minute; jetedge dlq list)");
            *untold = (0, Some(std::time::Instant::now()));
        }
        Ok(())
    }

    pub fn status(&self) -> SubscriptionStatus {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SubscriptionStatus {
            name: self.cfg.name.clone(),
            consumer: self.consumer.clone(),
            subjects: self.cfg.subjects.clone(),
            local_first: self.cfg.local_first,
            delivered: load(&self.stats.delivered),
            failed_attempts: load(&self.stats.failed_attempts),
            dead_lettered: load(&self.stats.dead_lettered),
            local_first_delivered: load(&self.stats.local_first),
            skipped_as_delivered_locally: load(&self.stats.skipped),
            pending_upstream: load(&self.stats.pending),
            targets: self
                .targets
                .iter()
                .map(|t| TargetStatus {
                    target: t.name,
                    breaker: t.breaker.status(),
                })
                .collect(),
        }
    }
}

impl Stats {
    fn add(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionStatus {
    pub name: String,
    pub consumer: String,
    pub subjects: Vec<String>,
    pub local_first: bool,
    pub delivered: u64,
    pub failed_attempts: u64,
    pub dead_lettered: u64,
    pub local_first_delivered: u64,
    pub skipped_as_delivered_locally: u64,
    /// Messages waiting upstream for its consumer (its lag), as last reported.
    pub pending_upstream: u64,
    pub targets: Vec<TargetStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetStatus {
    pub target: &'static str,
    pub breaker: BreakerStatus,
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Replayed {
    /// Every owed target took it; the letter is gone.
    Delivered { id: u64 },
    /// Some target failed again; the letter stays, updated.
    Failed { id: u64, error: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no dead letter {0}")]
    NotFound(u64),
    #[error("dead letter {id} belongs to subscription {name:?}, which is not configured")]
    NoSubscription { id: u64, name: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Every subscription and its tasks.
pub struct Egress {
    running: std::sync::RwLock<Vec<Running>>,
    store: Store,
    stop: CancellationToken,
    upstream: Upstream,
    site: Option<Site>,
    http: crate::tls::HttpClient,
    node: String,
    metrics: Arc<crate::metrics::Metrics>,
}

/// A subscription, its tasks, and the secret its targets were built with
/// (a rotation behind the same reference restarts it on reload).
struct Running {
    sub: Arc<Subscription>,
    secret: Option<Vec<crate::config::Secret>>,
    tasks: Vec<JoinHandle<()>>,
}

/// The upstream side egress pulls from.
pub struct Upstream {
    pub client: async_nats::Client,
    pub link: watch::Receiver<LinkState>,
    pub stream: String,
}

impl Egress {
    /// Builds every subscription and starts its consumer (and local-first
    /// worker). Nothing here waits for upstream.
    pub fn start(
        cfg: &Config,
        store: Store,
        upstream: Upstream,
        site: Option<Site>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Egress, String> {
        let egress = Egress {
            metrics,
            running: std::sync::RwLock::new(Vec::new()),
            store,
            stop: CancellationToken::new(),
            upstream,
            site,
            http: crate::tls::plain_client(),
            node: cfg.node.id.clone(),
        };
        let built = egress.build_all(&cfg.subscriptions)?;
        let running = built.into_iter().map(|b| egress.launch(b)).collect();
        *egress.running.write().expect("subscriptions") = running;
        Ok(egress)
    }

    /// Every subscription built (targets made, secrets read), not started:
    /// one that cannot be built fails the lot.
    fn build_all(&self, subs: &[SubscriptionConfig]) -> Result<Vec<Built>, String> {
        subs.iter()
            .map(|s| {
                let targets = Target::all(s, self.site.as_ref(), &self.http)?;
                let sub = Subscription::new(
                    s,
                    &self.node,
                    targets,
                    self.store.clone(),
                    self.stop.child_token(),
                    self.metrics.delivery(&s.name),
                );
                Ok(Built {
                    sub: Arc::new(sub),
                    secret: webhook_secret(s),
                })
            })
            .collect()
    }

    /// Starts a built subscription's consumer (and local-first worker).
    fn launch(&self, b: Built) -> Running {
        let mut tasks = vec![tokio::spawn(consumer::run(
            b.sub.clone(),
            self.upstream.client.clone(),
            self.upstream.link.clone(),
            self.upstream.stream.clone(),
        ))];
        if b.sub.cfg.local_first {
            tasks.push(tokio::spawn(local_first::run(b.sub.clone())));
        }
        Running {
            sub: b.sub,
            secret: b.secret,
            tasks,
        }
    }

    /// Brings the subscriptions to `cfg`'s: removed and changed ones
    /// (their config, or the secret behind their webhook's reference)
    /// stop, handing unsettled messages back upstream, then added and
    /// changed ones start on their durable consumers. Unchanged ones run
    /// on untouched. Returns what it did, one line per subscription.
    pub async fn reconcile(&self, cfg: &Config) -> Result<Vec<String>, String> {
        let built = self.build_all(&cfg.subscriptions)?;
        let (keep, stop, report) = {
            let running = self.running.read().expect("subscriptions");
            let current: Vec<&Running> = running.iter().collect();
            plan_subscriptions(&current, built)
        };
        let mut stopped = Vec::new();
        {
            let mut running = self.running.write().expect("subscriptions");
            let (stays, goes): (Vec<Running>, Vec<Running>) = std::mem::take(&mut *running)
                .into_iter()
                .partition(|r| !stop.contains(&r.sub.cfg.name));
            *running = stays;
            stopped.extend(goes);
        }
        for r in &stopped {
            r.sub.stop.cancel();
        }
        for r in stopped {
            for t in r.tasks {
                if tokio::time::timeout(Duration::from_secs(30), t)
                    .await
                    .is_err()
                {
                    tracing::warn!(subscription = %r.sub.cfg.name, "a subscription did not stop in time");
                }
            }
        }
        let started: Vec<Running> = keep.into_iter().map(|b| self.launch(b)).collect();
        self.running.write().expect("subscriptions").extend(started);
        Ok(report)
    }

    pub fn status(&self) -> Vec<SubscriptionStatus> {
        let running = self.running.read().expect("subscriptions");
        running.iter().map(|r| r.sub.status()).collect()
    }

    fn subscription(&self, name: &str) -> Option<Arc<Subscription>> {
        let running = self.running.read().expect("subscriptions");
        running
            .iter()
            .find(|r| r.sub.cfg.name == name)
            .map(|r| r.sub.clone())
    }

    /// Tries a dead letter's owed targets once more.
    pub async fn replay(&self, id: u64) -> Result<Replayed, ReplayError> {
        let letter = self
            .store
            .dead_letter_get(id)?
            .ok_or(ReplayError::NotFound(id))?;
        let Some(sub) = self.subscription(&letter.meta.subscription) else {
            return Err(ReplayError::NoSubscription {
                id,
                name: letter.meta.subscription,
            });
        };
        match sub.replay(letter).await {
            Ok(()) => {
                self.store.dead_letter_remove(id).await?;
                tracing::info!(dead_letter = id, "replayed and delivered");
                Ok(Replayed::Delivered { id })
            }
            Err(letter) => {
                self.store.dead_letter_update(&letter).await?;
                Ok(Replayed::Failed {
                    id,
                    error: letter.meta.last_error,
                })
            }
        }
    }

    /// Replays every dead letter (of one subscription, when named), oldest first.
    pub async fn replay_all(
        &self,
        subscription: Option<&str>,
    ) -> Result<Vec<Replayed>, ReplayError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self.store.dead_letters(after, 256)?;
            let Some(last) = page.last() else { break };
            after = Some(last.seq);
            for l in page {
                if subscription.is_some_and(|s| s != l.meta.subscription) {
                    continue;
                }
                match self.replay(l.seq).await {
                    Ok(r) => out.push(r),
                    Err(ReplayError::NoSubscription { id, name }) => out.push(Replayed::Failed {
                        id,
                        error: format!("subscription {name:?} is not configured"),
                    }),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(out)
    }

    /// Stops every subscription: messages not yet settled are handed back
    /// to upstream for redelivery.
    pub async fn shutdown(&self, timeout: Duration) {
        self.stop.cancel();
        let running = std::mem::take(&mut *self.running.write().expect("subscriptions"));
        for t in running.into_iter().flat_map(|r| r.tasks) {
            if tokio::time::timeout(timeout, t).await.is_err() {
                tracing::warn!("a subscription did not stop in time");
            }
        }
    }
}

/// A subscription built from its config, not started yet.
struct Built {
    sub: Arc<Subscription>,
    secret: Option<Vec<crate::config::Secret>>,
}

/// The resolved keys of a subscription's webhook, if it has one.
fn webhook_secret(cfg: &SubscriptionConfig) -> Option<Vec<crate::config::Secret>> {
    let w = cfg.to_webhook.as_ref()?;
    let refs = std::iter::once(&w.secret).chain(&w.secrets);
    refs.map(|r| r.resolve().ok()).collect()
}

/// Which of `built` to start (new or changed), which running ones to stop
/// (removed or changed), and a line for each.
fn plan_subscriptions(
    running: &[&Running],
    built: Vec<Built>,
) -> (Vec<Built>, Vec<String>, Vec<String>) {
    let (mut start, mut stop, mut report) = (Vec::new(), Vec::new(), Vec::new());
    for r in running {
        let name = &r.sub.cfg.name;
        if !built.iter().any(|b| &b.sub.cfg.name == name) {
            stop.push(name.clone());
            report.push(format!("subscription {name}: removed"));
        }
    }
    for b in built {
        let name = b.sub.cfg.name.clone();
        match running.iter().find(|r| r.sub.cfg.name == name) {
            None => report.push(format!("subscription {name}: added")),
            Some(r) if r.sub.cfg != b.sub.cfg => {
                report.push(format!("subscription {name}: changed"));
                stop.push(name);
            }
            Some(r) if r.secret != b.secret => {
                report.push(format!("subscription {name}: secret changed"));
                stop.push(name);
            }
            // Unchanged: the running one stays, this build is dropped.
            Some(_) => continue,
        }
        start.push(b);
    }
    (start, stop, report)
}
