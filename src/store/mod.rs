//! Durable state, on sled:
//!
//! - `outbox/` (files, not sled): events waiting for upstream, one record
//!   per batch of a committed group, in segment files read in order and
//!   deleted whole once forwarded (`outbox.rs`); sled's default tree keeps
//!   the log's head and the last record whose marks are applied (`meta.rs`);
//! - `keys/` (files): dedupe keys, a hash of `{source}\0{key}` with its
//!   expiry and the first event id, in sorted runs (`keys.rs`);
//! - `corrupt`: outbox batches set aside because they cannot be decoded;
//! - `parked`: events upstream refused for good, kept for an operator to
//!   inspect, replay or purge (`parked.rs`);
//! - `dlq`: messages egress could not deliver (`dlq.rs`);
//! - `local_first`: marks of events delivered locally before upstream saw
//!   them (`local_first.rs`).
//!
//! With `[node] encryption_key`, every value above that holds an event is
//! sealed (`seal.rs`); a start whose keys cannot open what is stored stops
//! before it writes anything (`at_rest.rs`).
//!
//! Invariants: only this module touches sled and the outbox files; only the
//! committer thread (`commit.rs`) appends, inserts keys and calls `flush`;
//! only the forwarder removes from the outbox (through
//! [`Store::remove_forwarded`]), in order. A caller is told an event
//! is accepted only after the batch holding it was flushed (and fdatasync'd
//! when `node.fsync` is on).

mod at_rest;
mod commit;
mod dlq;
mod keys;
mod local_first;
mod meta;
mod outbox;
mod parked;
mod read;
mod reaper;
mod record;
mod schemas;
mod seal;
mod space;
mod sync;

pub use at_rest::Encryption;
pub use dlq::{Letter, LetterMeta};
pub use outbox::Pos;
pub use parked::{ParkReason, Parked, ParkedMeta};
pub use record::{decode_batch, encode_fields, Record};
pub use schemas::CachedSchema;
pub use seal::{decode_key, key_id, KeyId, Keys as SealKeys, SealError};

use crate::config::NodeConfig;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};

/// Wall-clock milliseconds since the Unix epoch: the unit of every expiry
/// the store keeps (idempotency keys, local-first marks).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// Where upstream's size limit is kept, in sled's default tree.
const MAX_EVENT_KEY: &[u8] = b"upstream.max_event";
/// Prefix of the key holding, per upstream stream, the highest stream
/// sequence an acknowledged publish got.
const LANDED_KEY: &str = "upstream.landed.";
const IN_DOUBT_KEY: &str = "upstream.in_doubt.";

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the store is closed")]
    Closed,
    /// A write could not be made durable; the store takes nothing more.
    #[error("the store failed: {0}")]
    Failed(String),
    #[error("corrupt outbox record at {seq}: {reason}")]
    Corrupt { seq: u64, reason: String },
    /// The configured keys cannot open what the store holds (or cannot be
    /// read): the data stays as it is until the node has the right key.
    #[error("encryption at rest: {0}")]
    Key(String),
}

impl StoreError {
    /// Whether this is damage in what was read (a bad record, a segment
    /// shorter than its records say), rather than a read that failed.
    pub fn is_damage(&self) -> bool {
        match self {
            StoreError::Corrupt { .. } => true,
            StoreError::Io(e) => e.kind() == std::io::ErrorKind::UnexpectedEof,
            _ => false,
        }
    }

    /// A stored value that did not open: a key problem stays one (the
    /// value is left alone), damage is reported as corruption of `seq`.
    fn unsealed(seq: u64, e: SealError) -> Self {
        match e.is_key_problem() {
            true => StoreError::Key(e.to_string()),
            false => StoreError::Corrupt {
                seq,
                reason: e.to_string(),
            },
        }
    }
}

/// An event to persist.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Dedupe keys ([`idem_key`]): the event is a duplicate when any of
    /// them was seen within its TTL; when accepted, all are remembered.
    pub keys: Vec<Vec<u8>>,
    /// How long its keys are remembered (its source's `dedupe_ttl`).
    pub dedupe_ttl: Duration,
    pub id: String,
    pub record: Vec<u8>,
    /// `local_first` subscriptions that match it: each gets a pending mark
    /// if (and only if) the event is accepted.
    pub local_first: Vec<String>,
}

/// A dedupe key as stored: the source's name, a NUL, then the key, so
/// sources never share keys.
pub fn idem_key(source: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(source.len() + 1 + key.len());
    k.extend_from_slice(source.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// What became of one event handed to [`Store::persist`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Durable in the outbox.
    Accepted,
    /// Its idempotency key was seen before; `id` is the first event's id.
    Duplicate { id: String },
    /// The outbox is at `node.max_buffer`.
    QuotaFull,
    /// The disk's free space is down to `node.disk_reserve`.
    DiskFull,
}

/// Where an event sits in the outbox: its batch and its place in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub seq: u64,
    pub index: u32,
}

/// An outbox event read back for forwarding.
#[derive(Debug, Clone)]
pub struct Pending {
    pub at: Position,
    pub record: Record,
    /// Set on the last event of its batch: once it (and every event before
    /// it) is acknowledged, the batch can go.
    pub batch_done: Option<Forwarded>,
}

/// A whole outbox batch that upstream acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded {
    pub seq: u64,
    pub events: u64,
    pub bytes: u64,
    /// Where the batch's record ends in the log: the head once it is removed.
    pub end: outbox::Pos,
    /// Events appended to the log through this batch, ever.
    pub cumulative: u64,
}

/// The shared handle; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    requests: mpsc::Sender<commit::Request>,
}

struct Inner {
    db: sled::Db,
    /// Seals and opens every value that holds an event (`seal.rs`).
    seal: seal::Keys,
    /// Outbox records before this seq may be sealed with a previous key.
    stale_before: AtomicU64,
    /// The events themselves (`outbox.rs`).
    log: outbox::Outbox,
    /// Where the forwarder last read (`read.rs`).
    last_read: Mutex<Option<read::LastRead>>,
    corrupt: sled::Tree,
    /// Events upstream refused for good (`parked.rs`).
    parked: sled::Tree,
    dlq: sled::Tree,
    local_first: sled::Tree,
    /// Bumped after a commit that wrote local-first marks.
    local_first_gen: tokio::sync::watch::Sender<u64>,
    max_buffer: u64,
    /// Wakes the forwarder when new events are durable.
    new_data: Notify,
    /// Entries in `dlq` and `parked`, counted once at open.
    dlq_count: AtomicU64,
    parked_count: AtomicU64,
    /// Flushes the committer made (each one fdatasync'd with `node.fsync`).
    flushes: AtomicU64,
    /// Each group commit's duration and events, for `/metrics`.
    commit_seconds: prometheus_client::metrics::histogram::Histogram,
    commit_events: prometheus_client::metrics::histogram::Histogram,
    /// Set while the committer refuses events for space (`space.rs`).
    disk_full: std::sync::atomic::AtomicBool,
    /// Set once a write could not be made durable (see `commit.rs`).
    fatal: tokio::sync::watch::Sender<Option<String>>,
    committer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Store {
    /// Opens (or creates) the store and starts its committer thread.
    pub fn open(cfg: &NodeConfig) -> Result<Store, StoreError> {
        let seal = seal::Keys::from_config(cfg).map_err(StoreError::Key)?;
        std::fs::create_dir_all(&cfg.data_dir)?;
        space::before_open(&cfg.data_dir, cfg.disk_reserve.0);
        // sled's own background flusher is off: the committer is the one
        // place that flushes, which also avoids sled#1308 (concurrent
        // flushes deadlock in 0.34).
        let config = sled::Config::new()
            .path(&cfg.data_dir)
            .cache_capacity(16 << 20)
            // Values or pages over a quarter of a segment become blob
            // files; sled holds only small values now (keys, marks,
            // letters), and its segment size is also its write buffers'.
            .segment_size(2 << 20)
            .flush_every_ms(None);
        // sled 0.34 makes its metrics at the first open, even with
        // `no_metrics`: some 48 zeroed histograms of 512 KiB. Opened on a
        // thread of its own, they come from memory the allocator has not
        // used yet, which it knows is zero and leaves untouched; from the
        // calling thread's reused memory they would be written, and 25 MiB
        // of RSS that nothing reads would stay resident.
        let db = std::thread::scope(|s| s.spawn(|| config.open()).join())
            .map_err(|_| StoreError::Failed("opening sled panicked".into()))??;
        drop_old_key_trees(&db)?;
        let reaper = reaper::Reaper::start()?;
        let keys = keys::Keys::open(&cfg.data_dir.join("keys"), reaper.clone())?;
        // Records whose keys are in no run, or whose marks are not in sled,
        // are read back at open.
        let replay_after = keys.through().min(meta::applied(&db)?);
        let recovered = outbox::Outbox::open(
            &cfg.data_dir.join("outbox"),
            meta::head(&db)?,
            replay_after,
            cfg.fsync,
            reaper,
        )?;
        let inner = Arc::new(Inner {
            seal,
            stale_before: AtomicU64::new(0),
            log: recovered.outbox,
            last_read: Mutex::new(None),
            corrupt: db.open_tree("corrupt")?,
            parked: db.open_tree("parked")?,
            dlq: db.open_tree("dlq")?,
            local_first: db.open_tree("local_first")?,
            local_first_gen: tokio::sync::watch::Sender::new(0),
            db,
            max_buffer: cfg.max_buffer.0,
            new_data: Notify::new(),
            flushes: AtomicU64::new(0),
            commit_seconds: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 20),
            ),
            commit_events: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 15),
            ),
            disk_full: std::sync::atomic::AtomicBool::new(false),
            dlq_count: AtomicU64::new(0),
            parked_count: AtomicU64::new(0),
            fatal: tokio::sync::watch::Sender::new(None),
            committer: Mutex::new(None),
        });
        // Nothing is written before the keys are known to open what is there.
        inner.check_keys(recovered.last)?;
        inner.count_kept();
        inner.reseal_kept()?;
        let durability = match cfg.fsync {
            true => Some(sync::Durability::open(&cfg.data_dir)?),
            false => None,
        };
        let (tx, rx) = mpsc::channel(4096);
        let space = space::Space::new(&cfg.data_dir, cfg.disk_reserve.0);
        let mut worker = commit::Committer::new(inner.clone(), durability, space, keys)?;
        worker.recover(recovered.unapplied)?;
        worker.migrate_sled_outbox()?;
        let handle = std::thread::Builder::new()
            .name("jetedge-committer".into())
            .spawn(move || worker.run(rx))?;
        *inner.committer.lock().expect("committer lock") = Some(handle);
        Ok(Store {
            inner,
            requests: tx,
        })
    }

    /// Makes `events` durable, in order, deduplicating by idempotency key.
    /// Returns one outcome per event once the batch holding them is on disk.
    pub async fn persist(&self, events: Vec<NewEvent>) -> Result<Vec<Outcome>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(commit::Request::Persist { events, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Flushes removals and anything else not yet on disk, and deletes
    /// the files of forwarded segments.
    pub async fn sync(&self) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(commit::Request::Sync { reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Drops outbox batches that upstream acknowledged. Only the forwarder
    /// calls this. The removal is handed to the committer, which applies
    /// it in order with everything else and makes it durable with its very
    /// next flush (so a crash resends at most what was acknowledged in the
    /// last few milliseconds, well inside any duplicate window); a later
    /// [`Store::sync`] returns once it is on disk.
    pub async fn remove_forwarded(&self, done: Vec<Forwarded>) -> Result<(), StoreError> {
        self.requests
            .send(commit::Request::Remove { done })
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// Resolves when new events may be in the outbox (or after `max_wait`).
    pub async fn wait_for_data(&self, max_wait: Duration) {
        let _ = tokio::time::timeout(max_wait, self.inner.new_data.notified()).await;
    }

    /// Resolves with the reason once the store has failed (a write that
    /// could not be made durable); never resolves otherwise.
    pub async fn failed(&self) -> String {
        let mut rx = self.inner.fatal.subscribe();
        let reason = match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => std::future::pending().await,
        };
        reason
    }

    /// The largest event upstream took when last connected, if ever
    /// (written by [`Store::remember_max_event`]).
    pub fn known_max_event(&self) -> Option<u64> {
        let v = self.inner.db.get(MAX_EVENT_KEY).ok()??;
        Some(u64::from_be_bytes(v.as_ref().try_into().ok()?))
    }

    /// Keeps upstream's size limit for the next start (durable with the
    /// committer's next flush; losing it only means the default limit).
    pub fn remember_max_event(&self, bytes: u64) -> Result<(), StoreError> {
        self.inner.db.insert(MAX_EVENT_KEY, &bytes.to_be_bytes())?;
        Ok(())
    }

    /// The highest stream sequence upstream gave one of this node's
    /// publishes to `stream`, if any was recorded: where to start looking
    /// for what landed (written by [`Store::remember_landed`]).
    pub fn landed(&self, stream: &str) -> Option<u64> {
        let v = self.inner.db.get(format!("{LANDED_KEY}{stream}")).ok()??;
        Some(u64::from_be_bytes(v.as_ref().try_into().ok()?))
    }

    /// Keeps the stream sequence of an acknowledged publish (durable with
    /// the committer's next flush; an older value only widens the search).
    pub fn remember_landed(&self, stream: &str, seq: u64) -> Result<(), StoreError> {
        let key = format!("{LANDED_KEY}{stream}");
        self.inner.db.insert(key.as_bytes(), &seq.to_be_bytes())?;
        Ok(())
    }

    /// Whether this node's last run may have left publishes to `stream`
    /// unsettled (it crashed, or stopped with some unanswered): the next
    /// start then asks the stream what landed before it resends. A fresh
    /// node and one that stopped cleanly need not.
    pub fn in_doubt(&self, stream: &str) -> bool {
        let key = format!("{IN_DOUBT_KEY}{stream}");
        self.inner.db.get(key).ok().flatten().is_some()
    }

    /// Marks (before the first publish of a run; durable with the next
    /// flush, which the forwarder waits for) or clears (after a clean stop)
    /// [`Store::in_doubt`].
    pub fn set_in_doubt(&self, stream: &str, doubt: bool) -> Result<(), StoreError> {
        let key = format!("{IN_DOUBT_KEY}{stream}");
        match doubt {
            true => self.inner.db.insert(key.as_bytes(), &[1u8])?,
            false => self.inner.db.remove(key.as_bytes())?,
        };
        Ok(())
    }

    /// Encryption at rest, when a key is set.
    pub fn encryption(&self) -> Option<Encryption> {
        self.inner.encryption()
    }

    /// Whether new events are refused because the disk is nearly full.
    pub fn is_disk_full(&self) -> bool {
        self.inner.disk_full.load(Ordering::Relaxed)
    }

    /// The group commits' durations and sizes (the same histograms the
    /// committer records into).
    pub fn commit_histograms(
        &self,
    ) -> (
        prometheus_client::metrics::histogram::Histogram,
        prometheus_client::metrics::histogram::Histogram,
    ) {
        (
            self.inner.commit_seconds.clone(),
            self.inner.commit_events.clone(),
        )
    }

    /// Flushes (group commits) made so far.
    pub fn flushes(&self) -> u64 {
        self.inner.flushes.load(Ordering::Relaxed)
    }

    /// Whether the store has failed.
    pub fn is_failed(&self) -> bool {
        self.inner.fatal.borrow().is_some()
    }

    /// Events waiting for upstream, and the bytes their log segments take
    /// on disk.
    pub fn backlog(&self) -> (u64, u64) {
        self.inner.log.backlog()
    }

    /// Commits everything queued so far, flushes, and stops the committer.
    /// Later calls on any clone get [`StoreError::Closed`].
    pub async fn close(self) {
        let (reply, rx) = oneshot::channel();
        if self
            .requests
            .send(commit::Request::Stop { reply })
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
        let handle = self.inner.committer.lock().expect("committer lock").take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

/// Dedupe keys lived in sled trees before `keys.rs`; they are dropped (a
/// sender's retry of an event from before the upgrade is taken as new).
fn drop_old_key_trees(db: &sled::Db) -> Result<(), StoreError> {
    for name in db.tree_names() {
        if name.starts_with(b"idem.") {
            db.drop_tree(&name)?;
        }
    }
    Ok(())
}

impl Inner {
    /// Counts the dead letters and parked events once, at open.
    fn count_kept(&self) {
        self.dlq_count
            .store(self.dlq.len() as u64, Ordering::Relaxed);
        self.parked_count
            .store(self.parked.len() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
