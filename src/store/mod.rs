//! Durable state, on sled. Three trees:
//!
//! - `outbox`: events waiting for upstream, keyed by a big-endian sequence
//!   number from `Db::generate_id` (monotonic across restarts), so key order
//!   is acceptance order;
//! - `idem`: `{source}\0{key}` -> expiry and the first event id, for dedupe;
//! - `idem_exp`: `{expiry}{source}\0{key}`, so expired keys are swept
//!   without scanning every key.
//!
//! Invariants: only this module touches sled; only the committer thread
//! (`commit.rs`) inserts and calls `flush`; only the forwarder removes from
//! the outbox (through [`Store::remove_forwarded`]). A caller is told an event
//! is accepted only after the batch holding it was flushed (and fdatasync'd
//! when `node.fsync` is on).

mod commit;
mod record;

pub use record::Record;

use crate::config::NodeConfig;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the store is closed")]
    Closed,
    #[error("corrupt outbox record at {seq}: {reason}")]
    Corrupt { seq: u64, reason: String },
}

/// An event to persist.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Source name and sender's idempotency key, when there is one.
    pub key: Option<(String, String)>,
    pub id: String,
    pub record: Vec<u8>,
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
}

/// An outbox entry read back for forwarding.
#[derive(Debug, Clone)]
pub struct Pending {
    pub seq: u64,
    pub size: u64,
    pub record: Record,
}

/// The shared handle; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    requests: mpsc::Sender<commit::Request>,
}

struct Inner {
    db: sled::Db,
    outbox: sled::Tree,
    idem: sled::Tree,
    idem_exp: sled::Tree,
    backlog_events: AtomicU64,
    backlog_bytes: AtomicU64,
    max_buffer: u64,
    /// Wakes the forwarder when new events are durable.
    new_data: Notify,
    committer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Store {
    /// Opens (or creates) the store and starts its committer thread.
    pub fn open(cfg: &NodeConfig) -> Result<Store, StoreError> {
        std::fs::create_dir_all(&cfg.data_dir)?;
        // sled's own background flusher is off: the committer is the one
        // place that flushes, which also avoids sled#1308 (concurrent
        // flushes deadlock in 0.34).
        let db = sled::Config::new()
            .path(&cfg.data_dir)
            .cache_capacity(128 << 20)
            .flush_every_ms(None)
            .open()?;
        let inner = Arc::new(Inner {
            outbox: db.open_tree("outbox")?,
            idem: db.open_tree("idem")?,
            idem_exp: db.open_tree("idem_exp")?,
            db,
            backlog_events: AtomicU64::new(0),
            backlog_bytes: AtomicU64::new(0),
            max_buffer: cfg.max_buffer.0,
            new_data: Notify::new(),
            committer: Mutex::new(None),
        });
        inner.recount()?;
        let sync_file = if cfg.fsync {
            Some(std::fs::File::open(cfg.data_dir.join("db"))?)
        } else {
            None
        };
        let (tx, rx) = mpsc::channel(4096);
        let worker = commit::Committer::new(inner.clone(), sync_file, cfg.dedupe_ttl.0);
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

    /// Flushes removals and anything else not yet on disk.
    pub async fn sync(&self) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(commit::Request::Sync { reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Up to `limit` outbox entries after `after` (from the start when `None`), in order.
    pub fn pending(&self, after: Option<u64>, limit: usize) -> Result<Vec<Pending>, StoreError> {
        let range = match after {
            Some(seq) => self.inner.outbox.range((seq + 1).to_be_bytes()..),
            None => self.inner.outbox.iter(),
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        for item in range.take(limit) {
            let (k, v) = item?;
            let seq =
                u64::from_be_bytes(k.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    seq: 0,
                    reason: "outbox key is not 8 bytes".into(),
                })?);
            let record =
                Record::decode(&v).map_err(|reason| StoreError::Corrupt { seq, reason })?;
            out.push(Pending {
                seq,
                size: v.len() as u64,
                record,
            });
        }
        Ok(out)
    }

    /// Drops outbox entries that upstream acknowledged. Only the forwarder calls this.
    pub fn remove_forwarded(&self, done: &[(u64, u64)]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (seq, _) in done {
            batch.remove(&seq.to_be_bytes());
        }
        self.inner.outbox.apply_batch(batch)?;
        let bytes: u64 = done.iter().map(|(_, size)| size).sum();
        self.inner
            .backlog_events
            .fetch_sub(done.len() as u64, Ordering::Relaxed);
        self.inner.backlog_bytes.fetch_sub(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Moves aside an outbox entry that cannot be decoded, so it does not
    /// block every event behind it. Kept under a `corrupt` tree for inspection.
    pub fn quarantine(&self, seq: u64) -> Result<(), StoreError> {
        let key = seq.to_be_bytes();
        if let Some(v) = self.inner.outbox.remove(key)? {
            self.inner.db.open_tree("corrupt")?.insert(key, v.clone())?;
            self.inner.backlog_events.fetch_sub(1, Ordering::Relaxed);
            self.inner
                .backlog_bytes
                .fetch_sub(v.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Resolves when new events may be in the outbox (or after `max_wait`).
    pub async fn wait_for_data(&self, max_wait: Duration) {
        let _ = tokio::time::timeout(max_wait, self.inner.new_data.notified()).await;
    }

    /// Events and bytes waiting for upstream.
    pub fn backlog(&self) -> (u64, u64) {
        (
            self.inner.backlog_events.load(Ordering::Relaxed),
            self.inner.backlog_bytes.load(Ordering::Relaxed),
        )
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

impl Inner {
    /// Recomputes the backlog counters from the outbox, after a restart.
    fn recount(&self) -> Result<(), StoreError> {
        let (mut n, mut bytes) = (0, 0);
        for item in self.outbox.iter() {
            let (_, v) = item?;
            n += 1;
            bytes += v.len() as u64;
        }
        self.backlog_events.store(n, Ordering::Relaxed);
        self.backlog_bytes.store(bytes, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
