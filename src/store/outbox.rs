//! The outbox log: events waiting for upstream, in append-only segment
//! files `{data_dir}/outbox/{first_seq:016x}.log`, read and removed in
//! order, and deleted whole once every batch in them was forwarded. So the
//! disk follows the backlog (a drained outbox is one segment of at most
//! [`SEGMENT_BYTES`]), memory holds one batch at a time whatever the
//! backlog, and a restart reads only the last segment, never the backlog.
//!
//! A record is one batch of events (the committer's group, `record.rs`):
//!
//! ```text
//! magic u32 | body length u32 | crc32 of the body u32 | body
//! body = seq u64 | events through this record, ever, u64 | events u32
//!      | batch length u32 | batch | extras length u32 | extras
//! ```
//!
//! Sequence numbers are consecutive, so the forwarder's next batch is the
//! one after the last it read. `extras` holds the batch's dedupe keys and
//! local-first marks: they go to the key table and to sled after the record
//! is on disk, and what a crash loses of them is taken back at open (see
//! [`Outbox::replay`]).
//!
//! Owned by the committer (the only writer, and the one that moves the
//! head and deletes segments); any task may read up to the durable tail.

use super::reaper::Reaper;
use super::StoreError;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A segment takes new records until it is this large.
pub const SEGMENT_BYTES: u64 = 16 << 20;
/// The segment being written is retired once drained only from this size:
/// each retirement writes the dedupe keys of its records out as a run
/// first, and a forwarder that keeps up drains it every few milliseconds.
pub const RETIRE_BYTES: u64 = SEGMENT_BYTES / 4;
const MAGIC: u32 = 0x4a45_4f42;
const HEADER: u64 = 12;
/// Fixed part of a body before the batch: seq, cumulative events, events,
/// batch length.
const BODY_FIXED: usize = 8 + 8 + 4 + 4;
/// A body longer than this is damage, not a record.
const MAX_BODY: u32 = 256 << 20;

/// A place in the log: a segment (by its first seq) and an offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    pub segment: u64,
    pub offset: u64,
}

/// One record read back.
#[derive(Debug)]
pub struct Entry {
    pub seq: u64,
    /// Events appended through this record, since the log began.
    pub cumulative: u64,
    pub events: u32,
    pub batch: Vec<u8>,
    pub extras: Vec<u8>,
    pub start: Pos,
    pub end: Pos,
}

impl Entry {
    /// Bytes the record takes on disk.
    pub fn size(&self) -> u64 {
        self.end.offset - self.start.offset
    }
}

/// A batch to append.
pub struct NewBatch {
    pub events: u32,
    pub batch: Vec<u8>,
    pub extras: Vec<u8>,
}

/// What the log's first record after the head and its last record are.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ends {
    /// The next batch to forward, and where it starts.
    pub head_seq: u64,
    pub head: Pos,
    /// Events appended before the head.
    pub head_cumulative: u64,
    /// Where the next record goes, its seq, and events appended before it.
    pub tail: Pos,
    pub next_seq: u64,
    pub tail_cumulative: u64,
}

pub struct Outbox {
    dir: PathBuf,
    /// Segments by first seq, with their length.
    segments: Mutex<BTreeMap<u64, u64>>,
    ends: Mutex<Ends>,
    /// The segment being written (committer only).
    writer: Mutex<Option<(u64, File)>>,
    /// fdatasync each append (`node.fsync`).
    sync: bool,
    /// Deletes forwarded segments off the committer's thread.
    reaper: Reaper,
}

/// What `open` found: the log, and where the records whose extras may not
/// be applied yet are (read back one at a time by [`Outbox::replay`]).
pub struct Recovered {
    pub outbox: Outbox,
    pub unapplied: Unapplied,
    /// Where the last record starts, if there is one.
    pub last: Option<Pos>,
}

/// The records after seq `after`, found from the segment starting at `from`.
#[derive(Debug, Clone, Copy)]
pub struct Unapplied {
    from: Option<Pos>,
    after: u64,
}

impl Outbox {
    /// Opens the log. `head` is the head kept in sled (seq, position,
    /// cumulative events before it), if any; `applied` the last seq whose
    /// extras are known applied. A torn record at the end of the last segment (a
    /// crash mid-write, never acknowledged) is cut off.
    pub fn open(
        dir: &Path,
        head: Option<(u64, Pos, u64)>,
        applied: u64,
        sync: bool,
        reaper: Reaper,
    ) -> Result<Recovered, StoreError> {
        std::fs::create_dir_all(dir)?;
        let mut segments = BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(first) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| u64::from_str_radix(n, 16).ok())
            else {
                continue;
            };
            segments.insert(first, entry.metadata()?.len());
        }
        let outbox = Outbox {
            dir: dir.to_path_buf(),
            segments: Mutex::new(segments),
            ends: Mutex::new(Ends::default()),
            writer: Mutex::new(None),
            sync,
            reaper,
        };
        let (unapplied, last) = outbox.recover(head, applied)?;
        Ok(Recovered {
            outbox,
            unapplied,
            last,
        })
    }

    fn path(&self, segment: u64) -> PathBuf {
        self.dir.join(format!("{segment:016x}.log"))
    }

    /// Finds the tail by reading the last segment, cuts a torn end, and
    /// places the head; returns the unapplied records and where the last
    /// record starts.
    fn recover(
        &self,
        head: Option<(u64, Pos, u64)>,
        applied: u64,
    ) -> Result<(Unapplied, Option<Pos>), StoreError> {
        let mut ends = Ends {
            next_seq: head.map_or(1, |h| h.0),
            ..Ends::default()
        };
        let firsts: Vec<u64> = self.lock_segments().keys().copied().collect();
        let mut last_start = None;
        for &first in firsts.iter().rev() {
            let (last, valid_len) = self.scan(first)?;
            if valid_len < self.segment_len(first) {
                tracing::warn!(segment = %self.path(first).display(), at = valid_len,
                    "cutting a torn record at the end of the outbox (a crash during a write; it was never acknowledged)");
                OpenOptions::new()
                    .write(true)
                    .open(self.path(first))?
                    .set_len(valid_len)?;
                self.lock_segments().insert(first, valid_len);
            }
            if let Some(e) = last {
                last_start = Some(e.start);
                ends.tail = e.end;
                ends.next_seq = e.seq + 1;
                ends.tail_cumulative = e.cumulative;
                break;
            }
            // No record at all: a crash right after a roll. Its name is the
            // seq its first record would have had.
            std::fs::remove_file(self.path(first))?;
            self.lock_segments().remove(&first);
            ends.next_seq = ends.next_seq.max(first);
        }
        if self.lock_segments().is_empty() {
            ends.tail = Pos {
                segment: ends.next_seq,
                offset: 0,
            };
        }
        match head {
            Some((seq, pos, cumulative)) => {
                ends.head_seq = seq;
                ends.head = pos;
                ends.head_cumulative = cumulative;
                if ends.tail_cumulative < cumulative {
                    // Every record was forwarded and its segment deleted.
                    ends.tail_cumulative = cumulative;
                }
            }
            None => {
                // Nothing forwarded yet: the head is the first record.
                let first = firsts.first().copied().unwrap_or(ends.next_seq);
                ends.head = Pos {
                    segment: first,
                    offset: 0,
                };
                ends.head_seq = first;
                *self.ends.lock().expect("ends") = ends;
                ends.head_cumulative = match self.read_at(ends.head, Some(ends.tail))? {
                    Some(e) => e.cumulative - e.events as u64,
                    None => ends.tail_cumulative,
                };
            }
        }
        *self.ends.lock().expect("ends") = ends;
        // Segments wholly before the head are deleted once the committer
        // has replayed what they may hold (`delete_before`).
        let segments = self.lock_segments();
        let holding = segments.range(..=applied.saturating_add(1)).next_back();
        let from = holding
            .or_else(|| segments.iter().next())
            .map(|(s, _)| Pos {
                segment: *s,
                offset: 0,
            });
        let unapplied = Unapplied {
            from,
            after: applied,
        };
        Ok((unapplied, last_start))
    }

    /// Hands each record after `u.after` to `apply`, one at a time (memory
    /// holds one record, not the lot). The committer bounds how many there
    /// can be (it writes keys out every few thousand events), so this is
    /// never the backlog. Returns the last seq handed over and the events
    /// in those records.
    pub fn replay(
        &self,
        u: Unapplied,
        mut apply: impl FnMut(Entry) -> Result<(), StoreError>,
    ) -> Result<Option<(u64, usize)>, StoreError> {
        let Some(mut pos) = u.from else {
            return Ok(None);
        };
        let mut seen = None;
        loop {
            match self.read_at(pos, None) {
                Ok(Some(e)) => {
                    pos = e.end;
                    if e.seq > u.after {
                        let (seq, events) = (e.seq, e.events as usize);
                        apply(e)?;
                        let before = seen.map_or(0, |(_, n)| n);
                        seen = Some((seq, before + events));
                    }
                }
                Ok(None) => return Ok(seen),
                Err(e) => {
                    // The reader sets a damaged record aside when it gets there.
                    tracing::error!(error = %e, "cannot read every recent outbox record back at open");
                    return Ok(seen);
                }
            }
        }
    }

    /// Reads a segment's records in order; returns the last valid one and
    /// the length up to which records are valid.
    fn scan(&self, first: u64) -> Result<(Option<Entry>, u64), StoreError> {
        let mut pos = Pos {
            segment: first,
            offset: 0,
        };
        let len = self.segment_len(first);
        let mut last = None;
        while pos.offset < len {
            match self.read_record(pos, len) {
                Ok(e) => {
                    pos = e.end;
                    last = Some(Entry {
                        batch: Vec::new(),
                        extras: Vec::new(),
                        ..e
                    });
                }
                Err(_) => break,
            }
        }
        Ok((last, pos.offset))
    }

    fn segment_len(&self, segment: u64) -> u64 {
        self.lock_segments().get(&segment).copied().unwrap_or(0)
    }

    fn lock_segments(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, u64>> {
        self.segments.lock().expect("segments")
    }

    /// The head, the tail and what lies between.
    pub fn ends(&self) -> Ends {
        *self.ends.lock().expect("ends")
    }

    /// Events and bytes (on disk) between the head and the tail.
    pub fn backlog(&self) -> (u64, u64) {
        let e = self.ends();
        let bytes: u64 = self
            .lock_segments()
            .range(e.head.segment..)
            .map(|(s, len)| match *s == e.head.segment {
                true => len.saturating_sub(e.head.offset),
                false => *len,
            })
            .sum();
        (e.tail_cumulative.saturating_sub(e.head_cumulative), bytes)
    }

    /// Appends records, one per batch, and makes them durable (write, then
    /// fdatasync, and the directory's when a segment was created). Returns
    /// each record's seq and end. Committer only.
    pub fn append(&self, batches: Vec<NewBatch>) -> Result<Vec<(u64, Pos)>, StoreError> {
        let mut writer = self.writer.lock().expect("writer");
        let created = self.roll_if_full(&mut writer)?;
        let mut ends = self.ends();
        let (segment, file) = writer.as_mut().expect("rolled above");
        // One buffer of the exact size for the whole write: batches can be
        // megabytes, and each copy or regrowth is memory the allocator keeps.
        let size = batches.iter().map(|b| HEADER as usize + body_len(b)).sum();
        let mut buf = Vec::with_capacity(size);
        let mut out = Vec::with_capacity(batches.len());
        let mut offset = ends.tail.offset;
        for b in batches {
            ends.tail_cumulative += b.events as u64;
            put_record(&mut buf, ends.next_seq, ends.tail_cumulative, &b);
            offset = ends.tail.offset + buf.len() as u64;
            out.push((
                ends.next_seq,
                Pos {
                    segment: *segment,
                    offset,
                },
            ));
            ends.next_seq += 1;
        }
        file.write_all_at(&buf, ends.tail.offset)?;
        if self.sync {
            file.sync_data()?;
            if created {
                File::open(&self.dir)?.sync_all()?;
            }
        }
        ends.tail = Pos {
            segment: *segment,
            offset,
        };
        self.lock_segments().insert(*segment, offset);
        // Readers see the records only now that they are on disk.
        let mut e = self.ends.lock().expect("ends");
        e.tail = ends.tail;
        e.next_seq = ends.next_seq;
        e.tail_cumulative = ends.tail_cumulative;
        Ok(out)
    }

    /// Opens the segment to write in: the last one while it has room, else
    /// a new one named after the next seq. Returns whether it created one.
    fn roll_if_full(&self, writer: &mut Option<(u64, File)>) -> Result<bool, StoreError> {
        let ends = self.ends();
        let full = ends.tail.offset >= SEGMENT_BYTES
            || !self.lock_segments().contains_key(&ends.tail.segment);
        if !full {
            if writer.is_none() {
                let file = OpenOptions::new()
                    .write(true)
                    .open(self.path(ends.tail.segment))?;
                *writer = Some((ends.tail.segment, file));
            }
            return Ok(false);
        }
        let segment = ends.next_seq;
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(self.path(segment))?;
        self.lock_segments().insert(segment, 0);
        *writer = Some((segment, file));
        let mut e = self.ends.lock().expect("ends");
        e.tail = Pos { segment, offset: 0 };
        drop(e);
        Ok(true)
    }

    /// The record at `pos` (moving to the next segment at the end of one),
    /// if it is before `limit` (the durable tail when `None`).
    pub fn read_at(&self, mut pos: Pos, limit: Option<Pos>) -> Result<Option<Entry>, StoreError> {
        let tail = limit.unwrap_or_else(|| self.ends().tail);
        loop {
            if pos >= tail {
                return Ok(None);
            }
            let len = self.segment_len(pos.segment);
            if pos.offset < len {
                return self.read_record(pos, len).map(Some);
            }
            // The end of a segment: the next one starts at offset 0.
            let next = self
                .lock_segments()
                .range(pos.segment + 1..)
                .next()
                .map(|(s, _)| *s);
            match next {
                Some(segment) => pos = Pos { segment, offset: 0 },
                None => return Ok(None),
            }
        }
    }

    fn read_record(&self, pos: Pos, len: u64) -> Result<Entry, StoreError> {
        let corrupt = |reason: &str| StoreError::Corrupt {
            seq: pos.segment,
            reason: format!("outbox record at {}:{}: {reason}", pos.segment, pos.offset),
        };
        let file = File::open(self.path(pos.segment))?;
        let mut header = [0u8; HEADER as usize];
        if pos.offset + HEADER > len {
            return Err(corrupt("truncated header"));
        }
        file.read_exact_at(&mut header, pos.offset)?;
        let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
        let (magic, size, crc) = (word(0), word(4), word(8));
        if magic != MAGIC || size > MAX_BODY || pos.offset + HEADER + size as u64 > len {
            return Err(corrupt("bad header"));
        }
        let mut body = vec![0u8; size as usize];
        file.read_exact_at(&mut body, pos.offset + HEADER)?;
        if crc32fast::hash(&body) != crc {
            return Err(corrupt("checksum mismatch"));
        }
        parse(body, pos, pos.offset + HEADER + size as u64).ok_or_else(|| corrupt("bad body"))
    }

    /// The raw bytes and the end of a record whose header is sound but whose
    /// body is damaged, so a reader can set it aside and go on; `None` when
    /// even the header cannot be trusted.
    pub fn damaged_record(&self, pos: Pos) -> Option<(Vec<u8>, Pos)> {
        let len = self.segment_len(pos.segment);
        let file = File::open(self.path(pos.segment)).ok()?;
        let mut header = [0u8; HEADER as usize];
        file.read_exact_at(&mut header, pos.offset).ok()?;
        let magic = u32::from_le_bytes(header[0..4].try_into().ok()?);
        let size = u32::from_le_bytes(header[4..8].try_into().ok()?);
        let end = pos.offset + HEADER + size as u64;
        if magic != MAGIC || size > MAX_BODY || end > len {
            return None;
        }
        let mut body = vec![0u8; size as usize];
        file.read_exact_at(&mut body, pos.offset + HEADER).ok()?;
        Some((
            body,
            Pos {
                segment: pos.segment,
                offset: end,
            },
        ))
    }

    /// Moves the head past forwarded records (to `head`, the end of the
    /// last one). The caller makes the new head durable in sled, then
    /// calls [`Outbox::delete_before`].
    /// `cumulative` counts the events appended through the last forwarded
    /// record.
    pub fn advance(&self, seq: u64, head: Pos, cumulative: u64) {
        let mut e = self.ends.lock().expect("ends");
        if seq >= e.head_seq {
            e.head_seq = seq;
            e.head = head;
            e.head_cumulative = cumulative;
        }
    }

    /// The last seq that [`Outbox::delete_before`] at `head` would delete,
    /// if it would delete anything: the dedupe keys through it must be in
    /// a run first.
    pub fn deletes_through(&self, head: Pos) -> Option<u64> {
        let ends = self.ends();
        if head == ends.tail && head.offset >= RETIRE_BYTES {
            return Some(ends.next_seq.saturating_sub(1));
        }
        let last = *self.deletable(head).last()?;
        // A segment's records end where the next segment's begin.
        let next = self
            .lock_segments()
            .range(last + 1..)
            .next()
            .map(|(s, _)| *s);
        Some(next.unwrap_or(ends.next_seq).saturating_sub(1))
    }

    /// Waits until the files of deleted segments (and any other file given
    /// to the reaper) are gone.
    pub fn settle_deletions(&self) {
        self.reaper.settle();
    }

    /// Segments wholly before `head`, other than the one being written.
    fn deletable(&self, head: Pos) -> Vec<u64> {
        let tail_segment = self.ends().tail.segment;
        self.lock_segments()
            .iter()
            .filter(|(s, len)| {
                **s != tail_segment
                    && (**s < head.segment || (**s == head.segment && head.offset >= **len))
            })
            .map(|(s, _)| *s)
            .collect()
    }

    /// Deletes the segments wholly before `head`; the one being written
    /// too once everything in it was forwarded and it holds at least
    /// [`RETIRE_BYTES`] (the next record starts a new one), so a drained
    /// outbox gives back all but a few MiB of its space.
    pub fn delete_before(&self, head: Pos) {
        let ends = self.ends();
        if head == ends.tail && head.offset >= RETIRE_BYTES {
            let mut writer = self.writer.lock().expect("writer");
            *writer = None;
            let mut e = self.ends.lock().expect("ends");
            e.tail = Pos {
                segment: e.next_seq,
                offset: 0,
            };
        }
        for s in self.deletable(head) {
            self.reaper.delete(self.path(s));
            self.lock_segments().remove(&s);
        }
    }
}

fn body_len(b: &NewBatch) -> usize {
    BODY_FIXED + b.batch.len() + 4 + b.extras.len()
}

/// Appends one record (header and body) to `out`, the body written in
/// place and its checksum filled in after.
fn put_record(out: &mut Vec<u8>, seq: u64, cumulative: u64, b: &NewBatch) {
    let start = out.len();
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&(body_len(b) as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&cumulative.to_le_bytes());
    out.extend_from_slice(&b.events.to_le_bytes());
    out.extend_from_slice(&(b.batch.len() as u32).to_le_bytes());
    out.extend_from_slice(&b.batch);
    out.extend_from_slice(&(b.extras.len() as u32).to_le_bytes());
    out.extend_from_slice(&b.extras);
    let body_at = start + HEADER as usize;
    let crc = crc32fast::hash(&out[body_at..]);
    out[body_at - 4..body_at].copy_from_slice(&crc.to_le_bytes());
}

/// Splits a record's body into its fields; the batch keeps the body's
/// buffer (moved down in place), so a read allocates it once.
fn parse(mut body: Vec<u8>, start: Pos, end: u64) -> Option<Entry> {
    let u64_at = |b: &[u8], i: usize| Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?));
    let u32_at = |b: &[u8], i: usize| Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?));
    let (seq, cumulative) = (u64_at(&body, 0)?, u64_at(&body, 8)?);
    let events = u32_at(&body, 16)?;
    let batch_len = u32_at(&body, 20)? as usize;
    let extras_at = BODY_FIXED + batch_len;
    let extras_len = u32_at(&body, extras_at)? as usize;
    let extras = body
        .get(extras_at + 4..extras_at + 4 + extras_len)?
        .to_vec();
    body.truncate(extras_at);
    body.drain(..BODY_FIXED);
    let batch = body;
    Some(Entry {
        seq,
        cumulative,
        events,
        batch,
        extras,
        start,
        end: Pos {
            segment: start.segment,
            offset: end,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: u8) -> NewBatch {
        NewBatch {
            events: 2,
            batch: vec![n; 100],
            extras: vec![n; 3],
        }
    }

    fn reaper() -> Reaper {
        Reaper::start().unwrap()
    }

    fn dir(name: &str) -> crate::testdir::TestDir {
        crate::testdir::TestDir::new(&format!("outbox-{name}"))
    }

    #[test]
    fn records_come_back_in_order_across_a_reopen_and_a_torn_end_is_cut() {
        let d = dir("order");
        let o = Outbox::open(&d, None, 0, true, reaper()).unwrap().outbox;
        let written = o.append(vec![batch(1), batch(2)]).unwrap();
        o.append(vec![batch(3)]).unwrap();
        assert_eq!(written[0].0, 1);
        assert_eq!(o.backlog().0, 6);
        // A crash in the middle of the next write leaves half a record.
        let tail = o.ends().tail;
        let f = OpenOptions::new()
            .write(true)
            .open(o.path(tail.segment))
            .unwrap();
        f.write_all_at(&MAGIC.to_le_bytes(), tail.offset).unwrap();
        drop(o);

        let r = Outbox::open(&d, None, 1, true, reaper()).unwrap();
        let o = r.outbox;
        let mut replayed = Vec::new();
        let last = o
            .replay(r.unapplied, |e| {
                replayed.push(e.seq);
                Ok(())
            })
            .unwrap();
        assert_eq!(
            replayed,
            [2, 3],
            "records after the applied seq come back for their extras"
        );
        assert_eq!(last, Some((3, 4)));
        assert_eq!(o.ends().next_seq, 4);
        assert_eq!(o.backlog().0, 6);
        let mut pos = o.ends().head;
        let mut seen = Vec::new();
        while let Some(e) = o.read_at(pos, None).unwrap() {
            seen.push(e.batch[0]);
            pos = e.end;
        }
        assert_eq!(seen, [1, 2, 3]);
    }

    #[test]
    fn forwarded_segments_are_deleted_whole_and_the_head_survives_a_reopen() {
        let d = dir("segments");
        let o = Outbox::open(&d, None, 0, true, reaper()).unwrap().outbox;
        let big = |n| NewBatch {
            events: 1,
            batch: vec![n; 4 << 20],
            extras: Vec::new(),
        };
        let mut ends = Vec::new();
        for n in 0..10 {
            ends.extend(o.append(vec![big(n)]).unwrap());
        }
        assert!(o.lock_segments().len() >= 2, "{:?}", o.lock_segments());
        let (seq, end) = ends[7];
        o.advance(seq + 1, end, 8);
        o.delete_before(end);
        let left = o.lock_segments().len();
        assert!(left <= 2, "{left} segments left");
        assert_eq!(o.backlog().0, 2);
        assert!(o.backlog().1 < 9 << 20);
        o.reaper.settle();
        let files = std::fs::read_dir(&d).unwrap().count();
        assert_eq!(files, left, "the deleted segments' files are gone");
        drop(o);
        let o = Outbox::open(&d, Some((seq + 1, end, 8)), 10, true, reaper())
            .unwrap()
            .outbox;
        assert_eq!(o.backlog().0, 2);
        let e = o.read_at(o.ends().head, None).unwrap().unwrap();
        assert_eq!((e.seq, e.batch[0]), (9, 8));
    }
}
