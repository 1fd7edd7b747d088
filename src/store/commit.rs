//! The committer: the one thread that writes new events and flushes.
//!
//! Requests queue on a bounded channel; the committer takes everything
//! queued (a group), applies it with one sled batch per tree, flushes once,
//! fdatasyncs the database file once, and only then answers every waiter.
//! Under load the groups grow by themselves, so durability costs one flush
//! per group, not one per request. It is a plain thread because sled's flush
//! blocks, and one flusher is what sled 0.34 needs (concurrent
//! `flush_async` calls deadlock there).

use super::{Inner, NewEvent, Outcome, StoreError};
use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// Largest number of requests one group takes, bounding the latency of the first.
const MAX_GROUP: usize = 2048;
/// How often expired idempotency keys are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
const SWEEP_MAX: usize = 10_000;

pub(super) enum Request {
    Persist {
        events: Vec<NewEvent>,
        reply: oneshot::Sender<Result<Vec<Outcome>, StoreError>>,
    },
    Sync {
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Commit everything queued before this, flush, and end the thread.
    Stop { reply: oneshot::Sender<()> },
}

pub(super) struct Committer {
    inner: Arc<Inner>,
    sync_file: Option<File>,
    ttl_ms: u64,
    last_sweep: Instant,
}

impl Committer {
    pub(super) fn new(inner: Arc<Inner>, sync_file: Option<File>, ttl: Duration) -> Self {
        Self {
            inner,
            sync_file,
            ttl_ms: ttl.as_millis() as u64,
            last_sweep: Instant::now(),
        }
    }

    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut stop = None;
        while let Some(first) = rx.blocking_recv() {
            let mut group = Vec::new();
            let mut next = Some(first);
            while let Some(req) = next.take() {
                match req {
                    Request::Stop { reply } => stop = Some(reply),
                    other => group.push(other),
                }
                if stop.is_some() || group.len() >= MAX_GROUP {
                    break;
                }
                next = rx.try_recv().ok();
            }
            self.commit_group(group);
            if stop.is_some() {
                break;
            }
            if self.last_sweep.elapsed() >= SWEEP_EVERY {
                if let Err(e) = self.sweep_expired(now_ms()) {
                    tracing::warn!(error = %e, "sweeping expired idempotency keys failed");
                }
                self.last_sweep = Instant::now();
            }
        }
        if let Err(e) = self.durable() {
            tracing::error!(error = %e, "final flush of the store failed");
        }
        // Requests still queued are dropped with `rx`: their callers see `Closed`.
        drop(rx);
        if let Some(reply) = stop {
            let _ = reply.send(());
        }
    }

    fn commit_group(&mut self, group: Vec<Request>) {
        let mut outcomes = Vec::with_capacity(group.len());
        let mut syncs = Vec::new();
        let mut staged = Staged::default();
        let mut failed = None;
        for req in group {
            match req {
                Request::Persist { events, reply } => match self.stage(&mut staged, events) {
                    Ok(out) => outcomes.push((reply, out)),
                    Err(e) => {
                        failed.get_or_insert(e.to_string());
                        let _ = reply.send(Err(e));
                    }
                },
                Request::Sync { reply } => syncs.push(reply),
                Request::Stop { .. } => unreachable!("run() takes Stop out of the group"),
            }
        }
        let written = staged.apply(&self.inner).and_then(|()| self.durable());
        match written {
            Ok(()) => {
                self.inner
                    .backlog_events
                    .fetch_add(staged.events, Ordering::Relaxed);
                self.inner
                    .backlog_bytes
                    .fetch_add(staged.bytes, Ordering::Relaxed);
                if staged.events > 0 {
                    self.inner.new_data.notify_one();
                }
                for (reply, out) in outcomes {
                    let _ = reply.send(Ok(out));
                }
                for reply in syncs {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "committing a batch failed; its requests get an error");
                let msg = e.to_string();
                for (reply, _) in outcomes {
                    let _ = reply.send(Err(io_error(&msg)));
                }
                for reply in syncs {
                    let _ = reply.send(Err(io_error(&msg)));
                }
            }
        }
    }

    /// Decides each event's outcome and stages its writes. Dedupe is exact
    /// because this thread is the only writer of `idem`, and `staged.keys`
    /// covers repeats inside the same group.
    fn stage(
        &self,
        staged: &mut Staged,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Outcome>, StoreError> {
        let now = now_ms();
        let used = self.inner.backlog_bytes.load(Ordering::Relaxed);
        let mut out = Vec::with_capacity(events.len());
        for ev in events {
            let idem_key = ev.key.as_ref().map(|(s, k)| idem_key(s, k));
            if let Some(k) = &idem_key {
                if let Some(id) = staged.keys.get(k) {
                    out.push(Outcome::Duplicate { id: id.clone() });
                    continue;
                }
                if let Some(id) = self.live_key(k, now)? {
                    out.push(Outcome::Duplicate { id });
                    continue;
                }
            }
            let size = ev.record.len() as u64;
            if used + staged.bytes + size > self.inner.max_buffer {
                out.push(Outcome::QuotaFull);
                continue;
            }
            let seq = self.inner.db.generate_id()?;
            staged.outbox.insert(&seq.to_be_bytes(), ev.record);
            if let Some(k) = idem_key {
                let expiry = now + self.ttl_ms;
                let mut v = expiry.to_be_bytes().to_vec();
                v.extend_from_slice(ev.id.as_bytes());
                staged.idem.insert(k.as_slice(), v);
                let mut ek = expiry.to_be_bytes().to_vec();
                ek.extend_from_slice(&k);
                staged.idem_exp.insert(ek, &[]);
                staged.keys.insert(k, ev.id);
            }
            staged.events += 1;
            staged.bytes += size;
            out.push(Outcome::Accepted);
        }
        Ok(out)
    }

    /// The first event id of a key that has not expired.
    fn live_key(&self, key: &[u8], now: u64) -> Result<Option<String>, StoreError> {
        let Some(v) = self.inner.idem.get(key)? else {
            return Ok(None);
        };
        let (expiry, id) = split_idem_value(&v);
        Ok((expiry > now).then(|| id.to_string()))
    }

    fn durable(&self) -> Result<(), StoreError> {
        self.inner.db.flush()?;
        if let Some(f) = &self.sync_file {
            // sled's flush uses sync_file_range, which leaves the device cache
            // and file metadata unflushed; fdatasync closes that gap.
            f.sync_data()?;
        }
        Ok(())
    }

    fn sweep_expired(&self, now: u64) -> Result<(), StoreError> {
        let mut idem = sled::Batch::default();
        let mut exp = sled::Batch::default();
        for item in self
            .inner
            .idem_exp
            .range(..now.to_be_bytes())
            .take(SWEEP_MAX)
        {
            let (ek, _) = item?;
            let key = &ek[8..];
            // Only drop the key if this is still its expiry: it may have
            // been taken again (with a later expiry) after it lapsed.
            if let Some(v) = self.inner.idem.get(key)? {
                if split_idem_value(&v).0 <= now {
                    idem.remove(key);
                }
            }
            exp.remove(ek);
        }
        self.inner.idem.apply_batch(idem)?;
        self.inner.idem_exp.apply_batch(exp)?;
        Ok(())
    }
}

/// Writes staged for one group, applied outbox first: should a crash tear
/// the group, sled recovers a prefix, so a key is never durable without its event.
#[derive(Default)]
struct Staged {
    outbox: sled::Batch,
    idem: sled::Batch,
    idem_exp: sled::Batch,
    keys: HashMap<Vec<u8>, String>,
    events: u64,
    bytes: u64,
}

impl Staged {
    fn apply(&mut self, inner: &Inner) -> Result<(), StoreError> {
        inner.outbox.apply_batch(std::mem::take(&mut self.outbox))?;
        inner.idem.apply_batch(std::mem::take(&mut self.idem))?;
        inner
            .idem_exp
            .apply_batch(std::mem::take(&mut self.idem_exp))?;
        Ok(())
    }
}

fn idem_key(source: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(source.len() + 1 + key.len());
    k.extend_from_slice(source.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

fn split_idem_value(v: &[u8]) -> (u64, &str) {
    if v.len() < 8 {
        return (0, "");
    }
    let expiry = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
    (expiry, std::str::from_utf8(&v[8..]).unwrap_or(""))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

fn io_error(msg: &str) -> StoreError {
    StoreError::Io(std::io::Error::other(msg.to_string()))
}
