//! Dedupe keys, compact and off the heap: a small in-memory table of the
//! newest keys and immutable sorted runs on disk (`{data_dir}/keys/`).
//!
//! A key is the first 16 bytes of the SHA-256 of `{source}\0{key}`; an entry
//! is that hash, the key's expiry (ms) and the first event's id (a UUID, 16
//! bytes): 40 bytes, so a million keys take 40 MB of disk and about 1.5 MB
//! of memory (a Bloom filter of 10 bits a key and one index entry per 4 KiB
//! block of each run), whatever the backlog. A lookup checks the table, then
//! each live run newest first: its Bloom filter, its block index, and one
//! `pread` of a 4 KiB block.
//!
//! The table is written out as a run (fdatasync'd, then renamed into place)
//! when it holds [`FLUSH_KEYS`] keys, and before the outbox deletes a
//! segment whose keys are only in memory: every key is in a run or in an
//! outbox record after the newest run's `through` seq, which is where
//! recovery reads it back from. A run whose entries have all expired is
//! deleted whole; expiries are absolute, so a clock that jumps back keeps
//! finding recent keys. Once [`MERGE_AT`] runs smaller than a full table
//! exist, they are merged into one (expired entries dropped): each run costs
//! a file descriptor and a Bloom check per lookup, and runs live for the
//! dedupe TTL (days).
//!
//! Owned by the committer thread: the only reader and writer.

use super::reaper::Reaper;
use super::StoreError;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Keys the table holds before it is written out as a run.
pub const FLUSH_KEYS: usize = 16_384;
/// Small runs (fewer keys than [`FLUSH_KEYS`]) merged into one once this
/// many exist.
const MERGE_AT: usize = 4;
/// A run entry: the hash, then the encoded slot.
const ENTRY: usize = 16 + SLOT;
/// Entries per block: one `pread` of at most 4 KiB finds a key.
const PER_BLOCK: usize = 4096 / ENTRY;
const MAGIC: u64 = 0x4a45_4b45_5953_0001;
const HEADER: usize = 8 * 6;
const BLOOM_BITS_PER_KEY: u64 = 10;
const BLOOM_HASHES: u64 = 7;

pub type Hash = [u8; 16];

/// The hash a key is kept under.
pub fn hash(key: &[u8]) -> Hash {
    let d = Sha256::digest(key);
    d[..16].try_into().expect("16 bytes")
}

/// What a key maps to: its expiry (ms) and the first event's id (UUID
/// bytes). Encoded the same in run files and in outbox records' extras.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    expiry: u64,
    id: [u8; 16],
}

/// Bytes of an encoded [`Slot`].
const SLOT: usize = 24;

impl Slot {
    /// `None` for an id that is not a UUID (event ids always are:
    /// `envelope::new_id`), so such a key cannot be remembered.
    pub fn new(expiry: u64, id: &str) -> Option<Slot> {
        match uuid::Uuid::parse_str(id) {
            Ok(u) => Some(Slot {
                expiry,
                id: *u.as_bytes(),
            }),
            Err(_) => {
                tracing::warn!(%id, "an event id that is not a UUID cannot be remembered for dedupe");
                None
            }
        }
    }

    pub fn encode(&self) -> [u8; SLOT] {
        let mut out = [0u8; SLOT];
        out[..8].copy_from_slice(&self.expiry.to_le_bytes());
        out[8..].copy_from_slice(&self.id);
        out
    }

    pub fn decode(b: &[u8]) -> Option<Slot> {
        Some(Slot {
            expiry: u64::from_le_bytes(b.get(..8)?.try_into().ok()?),
            id: b.get(8..SLOT)?.try_into().ok()?,
        })
    }
}

struct Run {
    path: PathBuf,
    file: File,
    count: u64,
    max_expiry: u64,
    /// The outbox seq through which this run holds every key.
    through: u64,
    /// The first hash of each block.
    index: Vec<Hash>,
    bloom: Vec<u64>,
}

pub struct Keys {
    dir: PathBuf,
    table: BTreeMap<Hash, Slot>,
    /// Oldest first.
    runs: Vec<Run>,
    /// Deletes expired and merged runs off the committer's thread.
    reaper: Reaper,
}

impl Keys {
    pub fn open(dir: &Path, reaper: Reaper) -> Result<Keys, StoreError> {
        std::fs::create_dir_all(dir)?;
        let mut runs = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("run") => runs.push(Run::open(&path)?),
                // A run that was being written when the node stopped.
                Some("tmp") => std::fs::remove_file(&path)?,
                _ => {}
            }
        }
        runs.sort_by_key(|r| r.through);
        Ok(Keys {
            dir: dir.to_path_buf(),
            table: BTreeMap::new(),
            runs,
            reaper,
        })
    }

    /// The outbox seq through which every key is in a run.
    pub fn through(&self) -> u64 {
        self.runs.last().map_or(0, |r| r.through)
    }

    /// Keys waiting in memory.
    pub fn pending(&self) -> usize {
        self.table.len()
    }

    /// The first event id of a key that has not expired at `now`.
    pub fn lookup(&self, h: &Hash, now: u64) -> Result<Option<String>, StoreError> {
        if let Some(s) = self.table.get(h).filter(|s| s.expiry > now) {
            return Ok(Some(id_text(&s.id)));
        }
        for run in self.runs.iter().rev() {
            if run.max_expiry <= now {
                continue;
            }
            if let Some(s) = run.find(h)?.filter(|s| s.expiry > now) {
                return Ok(Some(id_text(&s.id)));
            }
        }
        Ok(None)
    }

    /// Remembers a key until its slot expires.
    pub fn insert(&mut self, h: Hash, slot: Slot) {
        self.table.insert(h, slot);
    }

    /// Writes the table out as a run holding every key through `through`
    /// (fdatasync'd and renamed into place), and deletes runs whose keys
    /// have all expired at `now`.
    pub fn flush(&mut self, through: u64, now: u64) -> Result<(), StoreError> {
        if !self.table.is_empty() || through > self.through() {
            let table = std::mem::take(&mut self.table);
            let path = self.dir.join(format!("{through:016x}.run"));
            write_run(&path, &table, through)?;
            File::open(&self.dir)?.sync_all()?;
            self.runs.push(Run::open(&path)?);
            self.merge_small(now)?;
        }
        let newest = self.through();
        let (live, dead): (Vec<Run>, Vec<Run>) = std::mem::take(&mut self.runs)
            .into_iter()
            .partition(|r| r.max_expiry > now || r.through == newest);
        for r in dead {
            self.reaper.delete(r.path);
        }
        self.runs = live;
        Ok(())
    }
}

impl Keys {
    /// Merges the runs smaller than a full table into one once there are
    /// [`MERGE_AT`] of them, dropping expired entries. The merged run is
    /// durable before its inputs go; a crash in between leaves both, which
    /// lookups tolerate (the same key's slot in two runs).
    fn merge_small(&mut self, now: u64) -> Result<(), StoreError> {
        let small = |r: &Run| r.count < FLUSH_KEYS as u64;
        if self.runs.iter().filter(|r| small(r)).count() < MERGE_AT {
            return Ok(());
        }
        let (inputs, mut kept): (Vec<Run>, Vec<Run>) =
            std::mem::take(&mut self.runs).into_iter().partition(small);
        let mut table = BTreeMap::new();
        let mut through = 0;
        for run in &inputs {
            through = through.max(run.through);
            for (h, slot) in run.entries()? {
                if slot.expiry > now {
                    table.insert(h, slot);
                }
            }
        }
        let path = self.dir.join(format!("{through:016x}-m{now:x}.run"));
        write_run(&path, &table, through)?;
        File::open(&self.dir)?.sync_all()?;
        kept.push(Run::open(&path)?);
        kept.sort_by_key(|r| r.through);
        self.runs = kept;
        for run in inputs.into_iter().filter(|r| r.path != path) {
            self.reaper.delete(run.path);
        }
        Ok(())
    }
}

fn id_text(id: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*id).to_string()
}

/// `[header][entries][index][bloom]`, the header being magic, count, max
/// expiry, through, blocks and Bloom words.
fn write_run(path: &Path, table: &BTreeMap<Hash, Slot>, through: u64) -> Result<(), StoreError> {
    let count = table.len() as u64;
    let blocks = table.len().div_ceil(PER_BLOCK) as u64;
    // Whole words, so the reader derives the same modulus from the length.
    let words = (count * BLOOM_BITS_PER_KEY).max(64).div_ceil(64);
    let bits = words * 64;
    let mut bloom = vec![0u64; words as usize];
    let mut entries = Vec::with_capacity(table.len() * ENTRY);
    let mut index = Vec::with_capacity(blocks as usize * 16);
    let mut max_expiry = 0;
    for (i, (h, s)) in table.iter().enumerate() {
        if i % PER_BLOCK == 0 {
            index.extend_from_slice(h);
        }
        entries.extend_from_slice(h);
        entries.extend_from_slice(&s.encode());
        max_expiry = max_expiry.max(s.expiry);
        for bit in bloom_bits(h, bits) {
            bloom[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::io::BufWriter::new(File::create(&tmp)?);
    for n in [
        MAGIC,
        count,
        max_expiry,
        through,
        blocks,
        bloom.len() as u64,
    ] {
        f.write_all(&n.to_le_bytes())?;
    }
    f.write_all(&entries)?;
    f.write_all(&index)?;
    for w in &bloom {
        f.write_all(&w.to_le_bytes())?;
    }
    let f = f.into_inner().map_err(|e| e.into_error())?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn bloom_bits(h: &Hash, bits: u64) -> impl Iterator<Item = u64> {
    let a = u64::from_le_bytes(h[..8].try_into().expect("8 bytes"));
    let b = u64::from_le_bytes(h[8..].try_into().expect("8 bytes")) | 1;
    (0..BLOOM_HASHES).map(move |i| a.wrapping_add(i.wrapping_mul(b)) % bits)
}

impl Run {
    fn open(path: &Path) -> Result<Run, StoreError> {
        let file = File::open(path)?;
        let bad = |why: &str| StoreError::Corrupt {
            seq: 0,
            reason: format!("dedupe run {}: {why}", path.display()),
        };
        let mut header = [0u8; HEADER];
        file.read_exact_at(&mut header, 0)?;
        let n = |i: usize| u64::from_le_bytes(header[i * 8..i * 8 + 8].try_into().expect("8"));
        if n(0) != MAGIC {
            return Err(bad("not a run"));
        }
        let (count, max_expiry, through, blocks, words) = (n(1), n(2), n(3), n(4), n(5));
        let at = HEADER as u64 + count * ENTRY as u64;
        let mut index = vec![0u8; blocks as usize * 16];
        file.read_exact_at(&mut index, at)?;
        let mut bloom = vec![0u8; words as usize * 8];
        file.read_exact_at(&mut bloom, at + index.len() as u64)?;
        Ok(Run {
            path: path.to_path_buf(),
            file,
            count,
            max_expiry,
            through,
            index: index
                .chunks_exact(16)
                .map(|c| c.try_into().expect("16"))
                .collect(),
            bloom: bloom
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8")))
                .collect(),
        })
    }

    /// Every entry, in hash order.
    fn entries(&self) -> Result<Vec<(Hash, Slot)>, StoreError> {
        let mut buf = vec![0u8; self.count as usize * ENTRY];
        self.file.read_exact_at(&mut buf, HEADER as u64)?;
        Ok(buf
            .chunks_exact(ENTRY)
            .filter_map(|e| Some((e[..16].try_into().ok()?, Slot::decode(&e[16..])?)))
            .collect())
    }

    fn find(&self, h: &Hash) -> Result<Option<Slot>, StoreError> {
        let bits = self.bloom.len() as u64 * 64;
        if bloom_bits(h, bits).any(|b| self.bloom[(b / 64) as usize] & (1 << (b % 64)) == 0) {
            return Ok(None);
        }
        let block = match self.index.partition_point(|first| first <= h) {
            0 => return Ok(None),
            n => n - 1,
        };
        let first = block * PER_BLOCK;
        let n = (self.count as usize - first).min(PER_BLOCK);
        let mut buf = vec![0u8; n * ENTRY];
        self.file
            .read_exact_at(&mut buf, (HEADER + first * ENTRY) as u64)?;
        let found = buf
            .chunks_exact(ENTRY)
            .collect::<Vec<_>>()
            .binary_search_by(|e| e[..16].cmp(&h[..]));
        Ok(found
            .ok()
            .and_then(|i| Slot::decode(&buf[i * ENTRY + 16..(i + 1) * ENTRY])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> crate::testdir::TestDir {
        crate::testdir::TestDir::new(&format!("keys-{name}"))
    }

    fn id(n: u32) -> String {
        uuid::Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0000 | n as u128).to_string()
    }

    #[test]
    fn keys_are_found_in_memory_in_runs_and_after_a_reopen_until_they_expire() {
        let d = dir("find");
        let mut k = Keys::open(&d, Reaper::start().unwrap()).unwrap();
        for n in 0..10_000u32 {
            k.insert(
                hash(&n.to_le_bytes()),
                Slot::new(1_000 + n as u64, &id(n)).unwrap(),
            );
        }
        assert_eq!(
            k.lookup(&hash(&7u32.to_le_bytes()), 0).unwrap(),
            Some(id(7))
        );
        k.flush(42, 0).unwrap();
        assert_eq!(k.pending(), 0);
        k.insert(hash(b"fresh"), Slot::new(5_000, &id(99_999)).unwrap());
        drop(k);
        let k = Keys::open(&d, Reaper::start().unwrap()).unwrap();
        assert_eq!(k.through(), 42);
        for n in [0u32, 1, 101, 5_000, 9_999] {
            assert_eq!(
                k.lookup(&hash(&n.to_le_bytes()), 0).unwrap(),
                Some(id(n)),
                "key {n}"
            );
        }
        assert_eq!(k.lookup(&hash(&10_001u32.to_le_bytes()), 0).unwrap(), None);
        assert_eq!(k.lookup(&hash(b"fresh"), 0).unwrap(), None, "never flushed");
        // Key n expires at 1000 + n.
        assert_eq!(k.lookup(&hash(&500u32.to_le_bytes()), 1_500).unwrap(), None);
        assert!(k
            .lookup(&hash(&501u32.to_le_bytes()), 1_500)
            .unwrap()
            .is_some());
    }

    #[test]
    fn small_runs_are_merged_so_their_number_stays_bounded() {
        // A node that catches up often flushes a few keys at a time.
        let d = dir("merge");
        let mut k = Keys::open(&d, Reaper::start().unwrap()).unwrap();
        for n in 0..200u32 {
            k.insert(hash(&n.to_le_bytes()), Slot::new(10_000, &id(n)).unwrap());
            if n % 3 == 2 {
                k.flush(n as u64, 0).unwrap();
            }
        }
        k.reaper.settle();
        let files = std::fs::read_dir(&d).unwrap().count();
        assert!(files < MERGE_AT, "{files} run files for 66 flushes");
        drop(k);
        let k = Keys::open(&d, Reaper::start().unwrap()).unwrap();
        assert_eq!(k.through(), 197);
        for n in [0u32, 1, 100, 197] {
            assert_eq!(k.lookup(&hash(&n.to_le_bytes()), 0).unwrap(), Some(id(n)));
        }
        assert_eq!(k.lookup(&hash(&198u32.to_le_bytes()), 0).unwrap(), None);
    }

    #[test]
    fn a_clock_that_jumps_back_still_finds_recent_keys() {
        let d = dir("clock");
        let mut k = Keys::open(&d, Reaper::start().unwrap()).unwrap();
        let hour = 3_600_000u64;
        let t = 1_000 * hour;
        k.insert(hash(b"in-run"), Slot::new(t + 24 * hour, &id(1)).unwrap());
        k.flush(1, t).unwrap();
        k.insert(
            hash(b"in-memory"),
            Slot::new(t + 24 * hour, &id(2)).unwrap(),
        );
        // The clock falls back by a day (an RTC reset, a bad NTP step).
        let back = t - 24 * hour;
        assert_eq!(k.lookup(&hash(b"in-run"), back).unwrap(), Some(id(1)));
        assert_eq!(k.lookup(&hash(b"in-memory"), back).unwrap(), Some(id(2)));
        // A write-out while the clock is behind deletes no live run.
        k.flush(2, back).unwrap();
        assert_eq!(k.lookup(&hash(b"in-run"), back).unwrap(), Some(id(1)));
    }

    #[test]
    fn expired_runs_are_deleted_and_the_newest_is_kept_for_its_mark() {
        let d = dir("expire");
        let mut k = Keys::open(&d, Reaper::start().unwrap()).unwrap();
        k.insert(hash(b"a"), Slot::new(100, &id(1)).unwrap());
        k.flush(1, 0).unwrap();
        k.insert(hash(b"b"), Slot::new(200, &id(2)).unwrap());
        k.flush(2, 0).unwrap();
        k.flush(3, 150).unwrap();
        k.reaper.settle();
        let runs = std::fs::read_dir(&d).unwrap().count();
        assert_eq!(
            runs, 2,
            "the expired run went; b's run and the empty newest stay"
        );
        assert_eq!(k.lookup(&hash(b"b"), 150).unwrap(), Some(id(2)));
        k.flush(4, 300).unwrap();
        k.reaper.settle();
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        assert_eq!(k.through(), 4);
    }
}
