//! The committer: the one thread that writes new events and flushes.
//!
//! Requests queue on a bounded channel; the committer takes everything
//! queued (a group), appends its new events, with their idempotency keys,
//! to the outbox log and fdatasyncs it once, and only then answers every
//! waiter. Sled's own writes (the outbox head, marks) are flushed with the
//! group when someone needs them durable, else with a later group (see
//! `Committer::needs_flush`).
//! Under load the groups grow by themselves, so durability costs one
//! fdatasync per group, not one per request. It is a plain thread because sled's flush
//! blocks, and one flusher is what sled 0.34 needs (concurrent
//! `flush_async` calls deadlock there).

use super::keys::{self, Keys, Slot, FLUSH_KEYS};
use super::meta;
use super::outbox::{Entry, NewBatch, Pos, Unapplied};
use super::record::{batch_count, decode_batch, encode_batch};
use super::space::Space;
use super::sync::Durability;
use super::{now_ms, Forwarded, Inner, NewEvent, Outcome, StoreError};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Largest number of requests one group takes, bounding the latency of the first.
const MAX_GROUP: usize = 2048;
/// Most events in one outbox value, so the forwarder reads bounded chunks.
const MAX_BATCH_EVENTS: usize = 512;
/// Longest time sled's own writes (the outbox head, the applied mark) wait
/// for a flush while every group has events to answer; see `needs_flush`.
const MAX_DEFER: std::time::Duration = std::time::Duration::from_millis(200);
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
    space: Space,
    keys: Keys,
    /// Events appended since the keys were last written out: the replay a
    /// restart would do is bounded by writing them out every `FLUSH_KEYS`.
    since_flush: usize,
    /// Sled writes that no flush covers yet, since when, and the head
    /// among them (its forwarded segments go only once it is durable).
    deferred: Option<(std::time::Instant, Option<Pos>)>,
}

impl Committer {
    pub(super) fn new(
        inner: Arc<Inner>,
        durability: Option<Durability>,
        space: Space,
        keys: Keys,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            inner,
            durability,
            space,
            keys,
            since_flush: 0,
            deferred: None,
        })
    }

    /// Takes back the keys of records written after the last key run, and
    /// applies the marks of records that reached the log but not sled.
    pub(super) fn recover(&mut self, unapplied: Unapplied) -> Result<(), StoreError> {
        let (keys_through, marks_through) = (self.keys.through(), meta::applied(&self.inner.db)?);
        let mut records = 0;
        let inner = self.inner.clone();
        let replayed = inner.log.replay(unapplied, |e| {
            records += 1;
            self.apply_extras(e, keys_through, marks_through)
        })?;
        // Segments wholly before the head can go once their keys are back.
        self.inner.log.delete_before(self.inner.log.ends().head);
        let Some((last, events)) = replayed else {
            return Ok(());
        };
        self.since_flush = events;
        meta::set_applied(&self.inner.db, last)?;
        tracing::info!(
            records,
            "took back the dedupe keys of the events written since the last key run"
        );
        self.durable()
    }

    /// Puts a replayed record's keys (if no run holds them) and local-first
    /// marks (if sled does not) back.
    fn apply_extras(
        &mut self,
        e: Entry,
        keys_through: u64,
        marks_through: u64,
    ) -> Result<(), StoreError> {
        // A key that cannot open the record stops the start (the data stays).
        let batch = match self.inner.seal.open(e.batch) {
            Err(err) if err.is_key_problem() => return Err(StoreError::unsealed(e.seq, err)),
            opened => opened.unwrap_or_default(),
        };
        let (Ok(records), Some(extras)) = (decode_batch(&batch), decode_extras(&e.extras)) else {
            tracing::error!(seq = e.seq, "cannot read the keys of an outbox record back");
            return Ok(());
        };
        for (record, x) in records.iter().zip(extras) {
            if e.seq > keys_through {
                for (h, v) in &x.keys {
                    if let (Ok(h), Some(slot)) = (h.as_slice().try_into(), Slot::decode(v)) {
                        self.keys.insert(h, slot);
                    }
                }
            }
            if e.seq > marks_through {
                for m in x.marks {
                    let value = self.inner.seal.seal(record.encode());
                    self.inner.local_first.insert(m, value)?;
                }
            }
        }
        Ok(())
    }

    /// Moves the batches of a store written before the outbox log (sled's
    /// `outbox` tree) into the log, once.
    pub(super) fn migrate_sled_outbox(&mut self) -> Result<(), StoreError> {
        let old = self.inner.db.open_tree("outbox")?;
        if old.is_empty() {
            return Ok(());
        }
        let mut moved = 0;
        for item in old.iter() {
            let (_, v) = item?;
            let events = batch_count(&v).unwrap_or(0) as u32;
            self.inner.log.append(vec![NewBatch {
                events,
                batch: self.inner.seal.seal(v.to_vec()),
                extras: encode_extras(&[]),
            }])?;
            moved += events as u64;
        }
        let written = self.inner.log.ends().next_seq - 1;
        meta::set_applied(&self.inner.db, written)?;
        old.clear()?;
        self.durable()?;
        tracing::info!(
            events = moved,
            "moved the outbox from sled into the outbox log"
        );
        Ok(())
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
            // A clean stop writes the keys out, so the next start reads none back.
            if let Err(e) = self.flush_keys(now_ms()).and_then(|()| self.durable()) {
                self.fail(&e);
            }
        }
        // Requests still queued are dropped with `rx`: their callers see `Closed`.
        drop(rx);
        // A stopped store leaves no dead file behind.
        self.inner.log.settle_deletions();
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
        let started = std::time::Instant::now();
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
        let head = self.remove(&removals)?;
        let mut staged = Staged::default();
        for (events, (_, out)) in persists.into_iter().zip(&mut w.persists) {
            *out = self.stage(&mut staged, events, now)?;
        }
        let marked = staged.marked;
        // The records are on disk (fdatasync'd) before their keys count,
        // and readers see them only then: a publish of an event that a
        // crash then loses would leave upstream a copy the sender's retry
        // doubles.
        let written = staged.bytes;
        let events = staged.apply(&self.inner)?;
        self.space.used(written);
        // The records (and so their keys) are on disk: now the keys count.
        for (h, slot) in staged.new_keys.drain(..) {
            self.keys.insert(h, slot);
        }
        self.since_flush += events as usize;
        if self.keys.pending() >= FLUSH_KEYS || self.since_flush >= FLUSH_KEYS {
            self.flush_keys(now)?;
        }
        // This group's sled writes join those no flush covers yet.
        let since = self
            .deferred
            .map_or_else(std::time::Instant::now, |(t, _)| t);
        let pending = head.or(self.deferred.and_then(|(_, h)| h));
        if self.needs_flush(&w.syncs, w.persists.is_empty(), marked, since, pending) {
            self.durable()?;
            self.deferred = None;
            if let Some(head) = pending {
                self.delete_forwarded(head, now)?;
            }
            if !w.syncs.is_empty() {
                // Whoever asked sees the space of what was forwarded back.
                self.inner.log.settle_deletions();
            }
        } else {
            self.deferred = Some((since, pending));
        }
        if events > 0 {
            let inner = &self.inner;
            inner
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
            inner.commit_events.observe(events as f64);
        }
        self.inner
            .disk_full
            .store(self.space.is_full(), Ordering::Relaxed);
        if events > 0 {
            self.inner.new_data.notify_one();
        }
        if marked {
            self.inner.local_first_gen.send_modify(|g| *g += 1);
        }
        Ok(())
    }

    /// Whether this group flushes sled and fdatasyncs its file. The events
    /// are durable without it (the outbox log is synced on append, and a
    /// restart takes their keys and marks back from there), so a group
    /// whose waiters need nothing of sled leaves its writes to a later
    /// flush, for at most [`MAX_DEFER`]: with ingest coming in, that halves
    /// the syncs a group waits for. A group flushes when someone asked
    /// (`syncs`), when it answers no new event (a removal alone: nobody
    /// waits, and it must not stay unflushed while the node is idle), when
    /// it wrote local-first marks (their deliveries delete them from sled),
    /// and when forwarded segments can go (only past a durable head). A
    /// removal that a crash then loses sends its batches again, which the
    /// stream refuses as duplicates (`Nats-Msg-Id`, and the landed check
    /// after a crash).
    fn needs_flush(
        &self,
        syncs: &[Reply<()>],
        no_events: bool,
        marked: bool,
        since: std::time::Instant,
        head: Option<Pos>,
    ) -> bool {
        let deletes = head.is_some_and(|h| self.inner.log.deletes_through(h).is_some());
        !syncs.is_empty() || no_events || marked || since.elapsed() >= MAX_DEFER || deletes
    }

    /// Deletes the forwarded segments before a durable `head`, once the
    /// keys of their records are in a run (the records are where a restart
    /// would read them back from).
    fn delete_forwarded(&mut self, head: Pos, now: u64) -> Result<(), StoreError> {
        let deleting = self.inner.log.deletes_through(head);
        if deleting.is_some_and(|last| self.keys.through() < last) {
            self.flush_keys(now)?;
        }
        self.inner.log.delete_before(head);
        Ok(())
    }

    /// Writes the keys in memory out as a run covering every record
    /// appended so far, and drops runs whose keys have all expired.
    fn flush_keys(&mut self, now: u64) -> Result<(), StoreError> {
        let through = self.inner.log.ends().next_seq.saturating_sub(1);
        self.keys.flush(through, now)?;
        self.since_flush = 0;
        Ok(())
    }

    /// Moves the outbox head past acknowledged batches (made durable by
    /// the group's flush); returns the new head, whose segments before it
    /// may go once that flush is done.
    fn remove(&mut self, done: &[Forwarded]) -> Result<Option<Pos>, StoreError> {
        // The forwarder removes in order: the last batch is the furthest.
        let Some(last) = done.iter().max_by_key(|d| d.seq) else {
            return Ok(None);
        };
        self.inner
            .log
            .advance(last.seq + 1, last.end, last.cumulative);
        meta::set_head(&self.inner.db, last.seq + 1, last.end, last.cumulative)?;
        Ok(Some(last.end))
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
        let used = self.inner.log.backlog().1;
        let mut out = Vec::with_capacity(events.len());
        let mut full: Option<Outcome> = None;
        for ev in events {
            if let Some(id) = self.seen(staged, &ev.keys, now)? {
                out.push(Outcome::Duplicate { id });
                continue;
            }
            let size = ev.record.len() as u64;
            // Once one event of a request is refused for room, so are the
            // rest: a smaller later event must not overtake it, since a
            // request holds one source's events in order.
            if let Some(refusal) = &full {
                out.push(refusal.clone());
                continue;
            }
            if used + staged.bytes + size > self.inner.max_buffer {
                full = Some(Outcome::QuotaFull);
                out.push(Outcome::QuotaFull);
                continue;
            }
            if !self.space.admits(staged.bytes + size) {
                full = Some(Outcome::DiskFull);
                out.push(Outcome::DiskFull);
                continue;
            }
            let mut extras = Extras::default();
            for sub in &ev.local_first {
                let key = super::local_first::pending_key(sub, &ev.id);
                let sealed = self.inner.seal.seal(ev.record.clone());
                staged.marks.insert(key.as_slice(), sealed);
                staged.marked = true;
                extras.marks.push(key);
            }
            let expiry = now.saturating_add(ev.dedupe_ttl.as_millis() as u64);
            let slot = (!ev.keys.is_empty()).then(|| Slot::new(expiry, &ev.id));
            if let Some(Some(slot)) = slot {
                for k in &ev.keys {
                    let h = keys::hash(k);
                    staged.keys.insert(h, ev.id.clone());
                    staged.new_keys.push((h, slot));
                    extras.keys.push((h.to_vec(), slot.encode().to_vec()));
                }
            }
            staged.bytes += size;
            staged.records.push(ev.record);
            staged.extras.push(extras);
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
            let h = keys::hash(k);
            if let Some(id) = staged.keys.get(&h) {
                return Ok(Some(id.clone()));
            }
            if let Some(id) = self.keys.lookup(&h, now)? {
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
    /// Each record's keys and marks, kept in its log record too.
    extras: Vec<Extras>,
    /// Keys of this group, for repeats inside it, and to remember once the
    /// records are on disk.
    keys: HashMap<keys::Hash, String>,
    new_keys: Vec<(keys::Hash, Slot)>,
    /// Pending local-first marks of accepted events.
    marks: sled::Batch,
    marked: bool,
    bytes: u64,
}

impl Staged {
    /// Appends the records (sealed, with a key), with their keys and marks
    /// as extras, to the outbox log as batches (durable on return), then writes the marks to
    /// sled with the mark of the last record applied; returns the number of
    /// events written. The keys go to the key table after this. What a
    /// crash loses of either is taken back at open from the records' extras
    /// (`Committer::recover`), so a key is never durable without its event
    /// (a resend would be refused as a duplicate of an event that was
    /// lost), and an event's keys always come back (a resend of an
    /// unanswered request is not stored twice).
    fn apply(&mut self, inner: &Inner) -> Result<u64, StoreError> {
        let ranges = chunks(&self.records);
        let events: u64 = ranges.iter().map(|r| r.len() as u64).sum();
        let batches: Vec<NewBatch> = ranges
            .into_iter()
            .map(|r| NewBatch {
                events: r.len() as u32,
                batch: inner.seal.seal(encode_batch(
                    self.records[r.clone()].iter().map(Vec::as_slice),
                )),
                extras: encode_extras(&self.extras[r]),
            })
            .collect();
        let written = match batches.is_empty() {
            true => Vec::new(),
            false => inner.log.append(batches)?,
        };
        let marks = std::mem::take(&mut self.marks);
        if self.marked {
            inner.local_first.apply_batch(marks)?;
        }
        if let Some((seq, _)) = written.last() {
            meta::set_applied(&inner.db, *seq)?;
        }
        Ok(events)
    }
}

/// One accepted event's dedupe keys (with their stored values) and
/// local-first mark keys.
#[derive(Default, Debug, PartialEq)]
struct Extras {
    keys: Vec<(Vec<u8>, Vec<u8>)>,
    marks: Vec<Vec<u8>>,
}

/// A batch's extras: a count, then each event's keys and marks, every
/// byte string length-prefixed.
fn encode_extras(all: &[Extras]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut put = |b: &[u8]| {
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    };
    put(&(all.len() as u32).to_le_bytes());
    for e in all {
        put(&(e.keys.len() as u32).to_le_bytes());
        for (k, v) in &e.keys {
            put(k);
            put(v);
        }
        put(&(e.marks.len() as u32).to_le_bytes());
        for m in &e.marks {
            put(m);
        }
    }
    out
}

fn decode_extras(mut b: &[u8]) -> Option<Vec<Extras>> {
    let mut next = || -> Option<Vec<u8>> {
        let n = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
        let v = b.get(4..4 + n)?.to_vec();
        b = &b[4 + n..];
        Some(v)
    };
    let count = |v: Vec<u8>| Some(u32::from_le_bytes(v.try_into().ok()?) as usize);
    let events = count(next()?)?;
    let mut out = Vec::with_capacity(events.min(4096));
    for _ in 0..events {
        let mut e = Extras::default();
        for _ in 0..count(next()?)? {
            e.keys.push((next()?, next()?));
        }
        for _ in 0..count(next()?)? {
            e.marks.push(next()?);
        }
        out.push(e);
    }
    Some(out)
}

/// Splits a group's records into batches of bounded size (as index ranges).
fn chunks(records: &[Vec<u8>]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < records.len() {
        let (mut n, mut size) = (0, 0);
        while start + n < records.len()
            && n < MAX_BATCH_EVENTS
            && (n == 0 || size + records[start + n].len() <= MAX_BATCH_BYTES)
        {
            size += records[start + n].len();
            n += 1;
        }
        out.push(start..start + n);
        start += n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_split_into_bounded_outbox_values_in_order() {
        let records: Vec<Vec<u8>> = (0..1200)
            .map(|i| vec![0u8; if i == 700 { 2 << 20 } else { 100 }])
            .collect();
        let parts: Vec<&[Vec<u8>]> = chunks(&records).into_iter().map(|r| &records[r]).collect();
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

    #[test]
    fn extras_round_trip() {
        let all = vec![
            Extras {
                keys: vec![(b"s\0k1".to_vec(), vec![1, 2, 3])],
                marks: vec![b"p\0sub\0id".to_vec()],
            },
            Extras::default(),
        ];
        assert_eq!(decode_extras(&encode_extras(&all)), Some(all));
        assert_eq!(decode_extras(&[1, 0]), None);
    }
}
