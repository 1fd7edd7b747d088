//! Idempotency keys with a TTL, in rotating generations of sled trees.
//!
//! A key is written once, into the tree of the current generation
//! (`idem.{n}`, where a generation spans half the TTL), with its expiry and
//! the first event's id. A key written at `t` expires at `t + ttl`, which is
//! at most two generations later, so a lookup reads the current generation
//! and the two before it; older trees hold only expired keys and are dropped
//! whole. Expiry thus costs one `drop_tree` per generation instead of an
//! index write per key and a sweep.
//!
//! Owned by the committer thread: it is the only reader and writer, which is
//! what makes dedupe exact.

use super::StoreError;
use std::collections::BTreeMap;

const PREFIX: &str = "idem.";
/// Generations a lookup reads: the current one and the two before it.
const LIVE: u64 = 3;

pub(super) struct Generations {
    db: sled::Db,
    span_ms: u64,
    ttl_ms: u64,
    trees: BTreeMap<u64, sled::Tree>,
}

impl Generations {
    pub fn open(db: &sled::Db, ttl_ms: u64) -> Result<Self, StoreError> {
        let mut trees = BTreeMap::new();
        for name in db.tree_names() {
            let Some(n) = std::str::from_utf8(&name)
                .ok()
                .and_then(|s| s.strip_prefix(PREFIX))
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            trees.insert(n, db.open_tree(&name)?);
        }
        Ok(Self {
            db: db.clone(),
            span_ms: (ttl_ms / 2).max(1),
            ttl_ms,
            trees,
        })
    }

    /// The first event id of a key that has not expired at `now`.
    pub fn lookup(&self, key: &[u8], now: u64) -> Result<Option<String>, StoreError> {
        let current = now / self.span_ms;
        for (_, tree) in self
            .trees
            .range(current.saturating_sub(LIVE - 1)..=current)
            .rev()
        {
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

    /// The tree a key first seen at `now` goes into, and its value.
    pub fn entry(&mut self, id: &str, now: u64) -> Result<(sled::Tree, Vec<u8>), StoreError> {
        let current = now / self.span_ms;
        let tree = match self.trees.get(&current) {
            Some(t) => t.clone(),
            None => self.rotate(current)?,
        };
        let mut v = (now + self.ttl_ms).to_be_bytes().to_vec();
        v.extend_from_slice(id.as_bytes());
        Ok((tree, v))
    }

    /// Opens generation `current` and drops those whose keys have all expired.
    fn rotate(&mut self, current: u64) -> Result<sled::Tree, StoreError> {
        let tree = self.db.open_tree(format!("{PREFIX}{current}"))?;
        self.trees.insert(current, tree.clone());
        let expired: Vec<u64> = self
            .trees
            .range(..current.saturating_sub(LIVE - 1))
            .map(|(n, _)| *n)
            .collect();
        for n in expired {
            self.trees.remove(&n);
            self.db.drop_tree(format!("{PREFIX}{n}"))?;
        }
        Ok(tree)
    }
}
