//! The committer: the one thread that writes new events and flushes.
//!
//! Requests queue on a bounded channel; the committer takes everything
//! queued (a group), writes its new events as one outbox batch (one key per
//! group, see `record.rs`) and its idempotency keys as one sled batch,
//! flushes once, fdatasyncs the database file once, and only then answers
//! every waiter.
//! Under load the groups grow by themselves, so durability costs one flush
//! per group, not one per request. It is a plain thread because sled's flush
//! blocks, and one flusher is what sled 0.34 needs (concurrent
//! `flush_async` calls deadlock there).

use super::idem::Generations;
use super::record::encode_batch;
use super::sync::Durability;
use super::{now_ms, Inner, NewEvent, Outcome, StoreError};
use sled::transaction::{
    ConflictableTransactionResult, TransactionError, Transactional, TransactionalTree,
};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Largest number of requests one group takes, bounding the latency of the first.
const MAX_GROUP: usize = 2048;
/// Most events in one outbox value, so the forwarder reads bounded chunks.
const MAX_BATCH_EVENTS: usize = 512;
/// Keeps a full sled leaf (up to 17 values) under sled's blob threshold
/// (a quarter of the 8 MiB segment): sled does not sync blob files itself.
const MAX_BATCH_BYTES: usize = 64 << 10;

pub(super) enum Request {
    Persist {
        events: Vec<NewEvent>,
        reply: Reply<Vec<Outcome>>,
    },
    Sync {
        reply: Reply<()>,
    },
    /// Outbox batches upstream acknowledged.
    Remove {
        done: Vec<super::Forwarded>,
    },
    /// Commit everything queued before this, flush, and end the thread.
    Stop {
        reply: oneshot::Sender<()>,
    },
}

pub(super) struct Committer {
    inner: Arc<Inner>,
    durability: Option<Durability>,
    idem: Generations,
}

impl Committer {
    pub(super) fn new(
        inner: Arc<Inner>,
        durability: Option<Durability>,
        ttl: Duration,
    ) -> Result<Self, StoreError> {
        let idem = Generations::open(&inner.db, ttl.as_millis() as u64)?;
        Ok(Self {
            inner,
            durability,
            idem,
        })
    }

    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut stop = None;
        let mut failed = false;
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
            if let Err(e) = self.commit_group(group) {
                self.fail(&e);
                failed = true;
                break;
            }
            if stop.is_some() {
                break;
            }
        }
        if !failed {
            if let Err(e) = self.durable() {
                self.fail(&e);
            }
        }
        // Requests still queued are dropped with `rx`: their callers see `Closed`.
        drop(rx);
        if let Some(reply) = stop {
            let _ = reply.send(());
        }
    }

    /// A write that may not be on disk is where databases stop: sled keeps
    /// an I/O error of its log writer until restart, and what the failed
    /// group left in sled's memory (keys, batches) must not answer anyone.
    /// The store takes nothing more; the node exits, and a restart
    /// recovers what is on disk.
    fn fail(&self, e: &StoreError) {
        tracing::error!(error = %e, "the store could not make a write durable; it takes no more \
            events and the node stops, so that a restart recovers from what is on disk");
        self.inner.fatal.send_replace(Some(e.to_string()));
    }

    /// Commits one group and answers its waiters. An error here is fatal
    /// for the store (see [`Committer::fail`]); every waiter gets it.
    fn commit_group(&mut self, group: Vec<Request>) -> Result<(), StoreError> {
        let mut waiters = Waiters::default();
        let result = self.try_commit(group, &mut waiters);
        match &result {
            Ok(()) => waiters.succeed(),
            Err(e) => waiters.fail(&e.to_string()),
        }
        result
    }

    fn try_commit(&mut self, group: Vec<Request>, w: &mut Waiters) -> Result<(), StoreError> {
        let now = now_ms();
        let mut removals = Vec::new();
        let mut persists = Vec::new();
        for req in group {
            match req {
                Request::Persist { events, reply } => {
                    w.persists.push((reply, Vec::new()));
                    persists.push(events);
                }
                Request::Sync { reply } => w.syncs.push(reply),
                Request::Remove { done } => removals.extend(done),
                Request::Stop { .. } => unreachable!("run() takes Stop out of the group"),
            }
        }
        // Removals first: they were queued before the persists of this
        // group, and the room they free counts for the quota.
        self.remove(&removals)?;
        let mut staged = Staged::default();
        for (events, (_, out)) in persists.into_iter().zip(&mut w.persists) {
            *out = self.stage(&mut staged, events, now)?;
        }
        let marked = staged.marked;
        let (events, bytes, last_seq) = staged.apply(&self.inner)?;
        self.durable()?;
        self.inner
            .backlog_events
            .fetch_add(events, Ordering::Relaxed);
        self.inner.backlog_bytes.fetch_add(bytes, Ordering::Relaxed);
        if events > 0 {
            // Only now may the forwarder see these batches: a publish of an
            // event that a crash then loses would leave upstream a copy the
            // sender's retry doubles.
            self.inner
                .durable_seq
                .fetch_max(last_seq, Ordering::Release);
            self.inner.new_data.notify_one();
        }
        if marked {
            self.inner.local_first_gen.send_modify(|g| *g += 1);
        }
        Ok(())
    }

    /// Applies acknowledged removals (made durable by the group's flush).
    fn remove(&mut self, done: &[super::Forwarded]) -> Result<(), StoreError> {
        if done.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for d in done {
            batch.remove(&d.seq.to_be_bytes());
        }
        self.inner.outbox.apply_batch(batch)?;
        let sub = |c: &std::sync::atomic::AtomicU64, n: u64| {
            let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
        };
        sub(
            &self.inner.backlog_events,
            done.iter().map(|d| d.events).sum(),
        );
        sub(
            &self.inner.backlog_bytes,
            done.iter().map(|d| d.bytes).sum(),
        );
        Ok(())
    }

    /// Decides each event's outcome and stages its writes. Dedupe is exact
    /// because this thread is the only writer of the idempotency trees, and
    /// `staged.keys` covers repeats inside the same group.
    fn stage(
        &mut self,
        staged: &mut Staged,
        events: Vec<NewEvent>,
        now: u64,
    ) -> Result<Vec<Outcome>, StoreError> {
        let used = self.inner.backlog_bytes.load(Ordering::Relaxed);
        let mut out = Vec::with_capacity(events.len());
        let mut full = false;
        for ev in events {
            if let Some(id) = self.seen(staged, &ev.keys, now)? {
                out.push(Outcome::Duplicate { id });
                continue;
            }
            let size = ev.record.len() as u64;
            // Once one event of a request is refused for quota, so are the
            // rest: a smaller later event must not overtake it, since a
            // request holds one source's events in order.
            if full || used + staged.bytes + size > self.inner.max_buffer {
                full = true;
                out.push(Outcome::QuotaFull);
                continue;
            }
            for sub in &ev.local_first {
                let key = super::local_first::pending_key(sub, &ev.id);
                staged.marks.insert(key, ev.record.as_slice());
                staged.marked = true;
            }
            let ttl = ev.dedupe_ttl.as_millis() as u64;
            for k in ev.keys {
                let (tree, value) = self.idem.entry(&ev.id, now, ttl)?;
                staged
                    .idem
                    .get_or_insert_with(|| (tree, sled::Batch::default()))
                    .1
                    .insert(k.as_slice(), value);
                staged.keys.insert(k, ev.id.clone());
            }
            staged.bytes += size;
            staged.records.push(ev.record);
            out.push(Outcome::Accepted);
        }
        Ok(out)
    }

    /// The first event id of any of `keys` seen before (in this group or
    /// within its TTL).
    fn seen(
        &self,
        staged: &Staged,
        keys: &[Vec<u8>],
        now: u64,
    ) -> Result<Option<String>, StoreError> {
        for k in keys {
            if let Some(id) = staged.keys.get(k) {
                return Ok(Some(id.clone()));
            }
            if let Some(id) = self.idem.lookup(k, now)? {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    fn durable(&mut self) -> Result<(), StoreError> {
        self.inner.db.flush()?;
        if let Some(d) = &mut self.durability {
            d.sync()?;
        }
        self.inner.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Who waits for a group: each persist with its outcomes, and syncs.
#[derive(Default)]
struct Waiters {
    persists: Vec<(Reply<Vec<Outcome>>, Vec<Outcome>)>,
    syncs: Vec<Reply<()>>,
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

impl Waiters {
    fn succeed(self) {
        for (reply, out) in self.persists {
            let _ = reply.send(Ok(out));
        }
        for reply in self.syncs {
            let _ = reply.send(Ok(()));
        }
    }

    fn fail(self, msg: &str) {
        for (reply, _) in self.persists {
            let _ = reply.send(Err(StoreError::Failed(msg.to_string())));
        }
        for reply in self.syncs {
            let _ = reply.send(Err(StoreError::Failed(msg.to_string())));
        }
    }
}

/// Writes staged for one group.
#[derive(Default)]
struct Staged {
    records: Vec<Vec<u8>>,
    idem: Option<(sled::Tree, sled::Batch)>,
    keys: HashMap<Vec<u8>, String>,
    /// Pending local-first marks of accepted events.
    marks: sled::Batch,
    marked: bool,
    bytes: u64,
}

impl Staged {
    /// Writes the records as outbox batches (each under a fresh sequence
    /// number) and the keys; returns the number of events and bytes
    /// written, and the last sequence number used.
    /// Batches and keys go in one sled transaction, which recovery replays
    /// whole or not at all: a key is never durable without its event (a
    /// resend would be refused as a duplicate of an event that was lost),
    /// nor an event without its key (a resend of an unanswered request
    /// would be stored twice).
    fn apply(&mut self, inner: &Inner) -> Result<(u64, u64, u64), StoreError> {
        let mut values = Vec::new();
        let mut last_seq = 0;
        let (mut events, mut bytes) = (0, 0);
        for chunk in chunks(&self.records) {
            let value = encode_batch(chunk.iter().map(Vec::as_slice));
            events += chunk.len() as u64;
            bytes += value.len() as u64;
            last_seq = inner.db.generate_id()?;
            values.push((last_seq.to_be_bytes(), value));
        }
        let idem = self.idem.take();
        let marks = std::mem::take(&mut self.marks);
        let write = |outbox: &TransactionalTree| -> ConflictableTransactionResult<(), ()> {
            for (seq, value) in &values {
                outbox.insert(seq, value.as_slice())?;
            }
            Ok(())
        };
        let result = match (&idem, self.marked) {
            (Some((tree, keys)), false) => (&inner.outbox, tree).transaction(|(o, i)| {
                write(o)?;
                i.apply_batch(keys)?;
                Ok(())
            }),
            (Some((tree, keys)), true) => {
                (&inner.outbox, tree, &inner.local_first).transaction(|(o, i, l)| {
                    write(o)?;
                    i.apply_batch(keys)?;
                    l.apply_batch(&marks)?;
                    Ok(())
                })
            }
            (None, false) => inner.outbox.transaction(write),
            (None, true) => (&inner.outbox, &inner.local_first).transaction(|(o, l)| {
                write(o)?;
                l.apply_batch(&marks)?;
                Ok(())
            }),
        };
        result.map_err(|e: TransactionError<()>| match e {
            TransactionError::Storage(e) => StoreError::Sled(e),
            TransactionError::Abort(()) => io_error("outbox transaction aborted"),
        })?;
        Ok((events, bytes, last_seq))
    }
}

/// Splits a group's records into outbox values of bounded size.
fn chunks(records: &[Vec<u8>]) -> Vec<&[Vec<u8>]> {
    let mut out = Vec::new();
    let mut rest = records;
    while !rest.is_empty() {
        let (mut n, mut size) = (0, 0);
        while n < rest.len()
            && n < MAX_BATCH_EVENTS
            && (n == 0 || size + rest[n].len() <= MAX_BATCH_BYTES)
        {
            size += rest[n].len();
            n += 1;
        }
        out.push(&rest[..n]);
        rest = &rest[n..];
    }
    out
}

fn io_error(msg: &str) -> StoreError {
    StoreError::Io(std::io::Error::other(msg.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_split_into_bounded_outbox_values_in_order() {
        let records: Vec<Vec<u8>> = (0..1200)
            .map(|i| vec![0u8; if i == 700 { 2 << 20 } else { 100 }])
            .collect();
        let parts = chunks(&records);
        let sizes: Vec<usize> = parts.iter().map(|c| c.len()).collect();
        // 512 small records by count; the oversized record stands alone.
        assert_eq!(sizes[0], 512);
        assert_eq!(sizes.iter().sum::<usize>(), 1200);
        let big: Vec<Vec<u8>> = (0..100).map(|_| vec![0u8; 1300]).collect();
        assert_eq!(chunks(&big)[0].len(), MAX_BATCH_BYTES / 1300);
        assert!(parts.iter().any(|c| c.len() == 1 && c[0].len() == 2 << 20));
        assert!(parts
            .iter()
            .all(|c| c.len() == 1 || c.iter().map(Vec::len).sum::<usize>() <= MAX_BATCH_BYTES));
    }
}
