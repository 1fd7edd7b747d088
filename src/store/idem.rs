//! Idempotency keys with a TTL, in rotating generations of sled trees.
//!
//! A key is written once, into the newest generation (`idem.t{start}`, a
//! tree opened at wall-clock millisecond `start` that takes keys for `span`
//! = half the longest TTL), with its own expiry (each source has its TTL)
//! and the first event's id. A generation whose keys have all expired
//! (`start + span + longest TTL` has passed) is dropped whole, so expiry
//! costs one `drop_tree` per generation instead of an index write per key
//! and a sweep; a lookup reads the three or so live generations, newest
//! first.
//!
//! Naming generations by their start time, rather than by `now / span`,
//! keeps lookups right when the clock jumps back (a kiosk without a
//! battery-backed clock): the newer trees are still read, their keys still
//! hold expiries in the future, and new keys join the newest tree. A jump
//! forward can only expire keys early; nothing can prevent that without a
//! trusted clock.
//!
//! Owned by the committer thread: it is the only reader and writer, which is
//! what makes dedupe exact.

use super::StoreError;
use std::collections::BTreeMap;

const PREFIX: &str = "idem.t";
/// Trees of the layout before generations were named by time; their span is
/// unknown, so they are dropped at open.
const LEGACY_PREFIX: &str = "idem.";

pub(super) struct Generations {
    db: sled::Db,
    span_ms: u64,
    /// The longest TTL any key is written with.
    max_ttl_ms: u64,
    trees: BTreeMap<u64, sled::Tree>,
}

impl Generations {
    pub fn open(db: &sled::Db, max_ttl_ms: u64) -> Result<Self, StoreError> {
        let mut trees = BTreeMap::new();
        for name in db.tree_names() {
            let Ok(text) = std::str::from_utf8(&name) else {
                continue;
            };
            if let Some(start) = text.strip_prefix(PREFIX).and_then(|s| s.parse().ok()) {
                trees.insert(start, db.open_tree(&name)?);
            } else if text.strip_prefix(LEGACY_PREFIX).is_some() {
                db.drop_tree(&name)?;
            }
        }
        Ok(Self {
            db: db.clone(),
            span_ms: (max_ttl_ms / 2).max(1),
            max_ttl_ms,
            trees,
        })
    }

    /// The first event id of a key that has not expired at `now`.
    pub fn lookup(&self, key: &[u8], now: u64) -> Result<Option<String>, StoreError> {
        for tree in self.trees.values().rev() {
            // A value too short to hold an expiry counts as expired.
            if let Some(v) = tree.get(key)?.filter(|v| v.len() >= 8) {
                let expiry = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
                if expiry > now {
                    return Ok(Some(String::from_utf8_lossy(&v[8..]).into_owned()));
                }
            }
        }
        Ok(None)
    }

    /// The tree keys written at `now` go into.
    pub fn current(&mut self, now: u64) -> Result<sled::Tree, StoreError> {
        match self.trees.last_key_value() {
            // A clock that went back keeps writing into the newest tree.
            Some((start, t)) if now < start.saturating_add(self.span_ms) => Ok(t.clone()),
            _ => self.rotate(now),
        }
    }

    /// The tree a key first seen at `now` goes into, and its value, which
    /// expires `ttl_ms` later.
    pub fn entry(
        &mut self,
        id: &str,
        now: u64,
        ttl_ms: u64,
    ) -> Result<(sled::Tree, Vec<u8>), StoreError> {
        let tree = self.current(now)?;
        let mut v = now.saturating_add(ttl_ms).to_be_bytes().to_vec();
        v.extend_from_slice(id.as_bytes());
        Ok((tree, v))
    }

    /// Opens a generation starting at `now` and drops those whose keys
    /// have all expired.
    fn rotate(&mut self, now: u64) -> Result<sled::Tree, StoreError> {
        let tree = self.db.open_tree(format!("{PREFIX}{now}"))?;
        self.trees.insert(now, tree.clone());
        let horizon = self.span_ms + self.max_ttl_ms;
        let expired: Vec<u64> = self
            .trees
            .keys()
            .copied()
            .filter(|start| start.saturating_add(horizon) <= now)
            .collect();
        for start in expired {
            self.trees.remove(&start);
            self.db.drop_tree(format!("{PREFIX}{start}"))?;
        }
        Ok(tree)
    }

    #[cfg(test)]
    pub fn generations(&self) -> usize {
        self.trees.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3_600_000;

    fn put(g: &mut Generations, key: &[u8], id: &str, now: u64, ttl: u64) {
        let (tree, v) = g.entry(id, now, ttl).unwrap();
        tree.insert(key, v).unwrap();
    }

    #[test]
    fn a_clock_that_jumps_back_still_finds_recent_keys() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let mut g = Generations::open(&db, 24 * H).unwrap();
        let t = 1_000 * H;
        put(&mut g, b"old", "e0", t, 24 * H);
        // Two generations later, a key is written; then the clock falls
        // back by a day (an RTC reset, a bad NTP step).
        put(&mut g, b"recent", "e1", t + 13 * H, 24 * H);
        put(&mut g, b"later", "e2", t + 25 * H, 24 * H);
        let back = t + H;
        assert_eq!(g.lookup(b"recent", back).unwrap().as_deref(), Some("e1"));
        assert_eq!(g.lookup(b"later", back).unwrap().as_deref(), Some("e2"));
        // New keys written while the clock is behind are found too.
        put(&mut g, b"during", "e3", back, 24 * H);
        assert_eq!(g.lookup(b"during", back).unwrap().as_deref(), Some("e3"));
    }

    #[test]
    fn keys_expire_by_their_own_ttl_and_old_generations_are_dropped() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let mut g = Generations::open(&db, 96 * H).unwrap();
        let t = 1_000 * H;
        put(&mut g, b"short", "a", t, 24 * H);
        put(&mut g, b"long", "b", t, 96 * H);
        assert!(g.lookup(b"short", t + 23 * H).unwrap().is_some());
        assert!(g.lookup(b"short", t + 25 * H).unwrap().is_none());
        assert!(g.lookup(b"long", t + 95 * H).unwrap().is_some());
        assert!(g.lookup(b"long", t + 97 * H).unwrap().is_none());
        for step in 1..10 {
            put(&mut g, b"k", "c", t + step * 48 * H, 96 * H);
        }
        // span 48h + TTL 96h: at most four generations stay.
        assert!(g.generations() <= 4, "{} generations", g.generations());
    }
}
