//! Reading the outbox back for the forwarder: events from a position on, in
//! order, one batch record at a time, so memory holds what was asked for and
//! never the backlog. A record that cannot be read or decoded is set aside
//! (logged, and its bytes kept in the `corrupt` tree when they could be
//! read) and skipped, so it never blocks the events behind it.

use super::outbox::{Entry, Pos};
use super::{record, Forwarded, Pending, Position, Store, StoreError};

/// The batch the forwarder read last, so its next read starts there.
#[derive(Debug, Clone, Copy)]
pub(super) struct LastRead {
    seq: u64,
    events: u32,
    pub(super) start: Pos,
    end: Pos,
}

impl Store {
    /// Up to `limit` outbox events from `from` on (from the head when
    /// `None`), in order. `from` is always the head, the batch last read,
    /// or the one after it: the forwarder reads forward.
    pub fn pending(
        &self,
        from: Option<Position>,
        limit: usize,
    ) -> Result<Vec<Pending>, StoreError> {
        let mut out = Vec::with_capacity(limit.min(4096));
        let Some(mut pos) = self.locate(from)? else {
            return Ok(out);
        };
        while out.len() < limit {
            let entry = match self.inner.log.read_at(pos, None) {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(e) if e.is_damage() => {
                    pos = self.set_aside(pos, &e)?;
                    continue;
                }
                // A read that failed (no file descriptor left, an I/O
                // error) says nothing about the record: nothing is skipped,
                // the caller tries again later.
                Err(e) => return Err(e),
            };
            *self.inner.last_read.lock().expect("last read") = Some(LastRead {
                seq: entry.seq,
                events: entry.events,
                start: entry.start,
                end: entry.end,
            });
            pos = entry.end;
            let skip = from
                .filter(|p| p.seq == entry.seq)
                .map_or(0, |p| p.index as usize);
            self.push_batch(entry, skip, limit, &mut out)?;
        }
        Ok(out)
    }

    /// Skips a damaged record, keeping its bytes in the `corrupt` tree;
    /// when even its length cannot be trusted, the rest of its segment.
    fn set_aside(&self, pos: Pos, e: &StoreError) -> Result<Pos, StoreError> {
        let mut key = pos.segment.to_be_bytes().to_vec();
        key.extend_from_slice(&pos.offset.to_be_bytes());
        match self.inner.log.damaged_record(pos) {
            Some((bytes, end)) => {
                tracing::error!(error = %e, "outbox record damaged; moved aside to the corrupt tree");
                self.inner.corrupt.insert(key, bytes)?;
                Ok(end)
            }
            None => {
                tracing::error!(error = %e, "outbox segment damaged; skipping the rest of it");
                Ok(Pos {
                    segment: pos.segment,
                    offset: u64::MAX,
                })
            }
        }
    }

    /// Where the batch `from` names starts.
    fn locate(&self, from: Option<Position>) -> Result<Option<Pos>, StoreError> {
        let ends = self.inner.log.ends();
        let Some(from) = from else {
            return Ok(Some(ends.head));
        };
        if let Some(last) = *self.inner.last_read.lock().expect("last read") {
            // A cursor past the batch's last event starts at the next batch,
            // so a finished batch is not read and decoded again.
            if last.seq == from.seq && from.index < last.events {
                return Ok(Some(last.start));
            }
            if last.seq == from.seq || last.seq + 1 == from.seq {
                return Ok(Some(last.end));
            }
        }
        // Not where the forwarder left off: walk from the head (rare).
        let mut pos = ends.head;
        while let Some(e) = self.inner.log.read_at(pos, None)? {
            if e.seq >= from.seq {
                return Ok(Some(e.start));
            }
            pos = e.end;
        }
        Ok(None)
    }

    /// Adds a batch's events from `skip` on (up to `limit` in all); an
    /// undecodable batch is set aside. A batch no configured key opens
    /// fails the store: the node stops with the reason, the data stays.
    fn push_batch(
        &self,
        mut entry: Entry,
        skip: usize,
        limit: usize,
        out: &mut Vec<Pending>,
    ) -> Result<(), StoreError> {
        let batch = std::mem::take(&mut entry.batch);
        let opened = match self.inner.seal.open(batch) {
            Err(e) if e.is_key_problem() => {
                let e = StoreError::unsealed(entry.seq, e);
                tracing::error!(seq = entry.seq, error = %e, "the forwarder cannot open an outbox record; the node stops");
                self.inner.fatal.send_replace(Some(e.to_string()));
                return Err(e);
            }
            Err(e) => Err(e.to_string()),
            Ok(plain) => Ok(plain),
        };
        let records = match opened.and_then(|b| record::decode_batch(&b)) {
            Ok(r) => r,
            Err(reason) => {
                tracing::error!(seq = entry.seq, %reason, "outbox batch cannot be decoded; moved aside to the corrupt tree");
                // The record as it lies on disk (still sealed, with a key).
                let raw = self.inner.log.damaged_record(entry.start).map(|(b, _)| b);
                let raw = raw.unwrap_or_default();
                self.inner.corrupt.insert(entry.seq.to_be_bytes(), raw)?;
                Vec::new()
            }
        };
        let done = Forwarded {
            seq: entry.seq,
            events: records.len() as u64,
            bytes: entry.size(),
            end: entry.end,
            cumulative: entry.cumulative,
        };
        // An empty (set aside) batch sends nothing; the head passes it with
        // the next batch forwarded.
        let Some(last) = records.len().checked_sub(1) else {
            return Ok(());
        };
        let room = limit - out.len();
        for (i, record) in records.into_iter().enumerate().skip(skip).take(room) {
            out.push(Pending {
                at: Position {
                    seq: entry.seq,
                    index: i as u32,
                },
                record,
                batch_done: (i == last).then_some(done),
            });
        }
        Ok(())
    }

    /// How long ago the oldest event waiting for upstream was accepted
    /// (its id is a UUIDv7, which carries that time); `None` when none
    /// waits. Reads the head record: once per scrape, not per event.
    pub fn oldest_age(&self) -> Option<std::time::Duration> {
        let head = self.inner.log.ends().head;
        let entry = self.inner.log.read_at(head, None).ok()??;
        let batch = self.inner.seal.open(entry.batch).ok()?;
        let first = record::decode_batch(&batch).ok()?.into_iter().next()?;
        let (secs, nanos) = uuid::Uuid::parse_str(&first.id)
            .ok()?
            .get_timestamp()?
            .to_unix();
        let accepted = std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
        Some(
            std::time::SystemTime::now()
                .duration_since(accepted)
                .unwrap_or_default(),
        )
    }
}
