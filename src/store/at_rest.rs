//! What encryption at rest asks of the store at open and after: the keys
//! must open what is stored before anything is written (a wrong or missing
//! key stops the start and leaves every byte where it is), and dead
//! letters, parked events and local-first records sealed with a previous
//! key (or written plain before encryption was on) are sealed again with
//! the current one, once per key change, so after a rotation only the
//! outbox's older records still need the previous keys, until they drain.

use super::outbox::Pos;
use super::{local_first, meta, Inner, StoreError};
use std::sync::atomic::Ordering;

/// Encryption at rest as `/admin/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encryption {
    pub key: super::KeyId,
    pub previous: Vec<super::KeyId>,
    /// Whether the outbox still holds records this node did not seal with
    /// its current key (sealed with a previous key, or written plain
    /// before encryption was on): the previous keys are needed until they
    /// are forwarded.
    pub older_records_in_outbox: bool,
}

impl Inner {
    /// Checks, by key id only, the values a start can reach cheaply: the
    /// outbox's head and last record (the oldest and newest events), and
    /// the first and last entry of each kept tree. A value further in
    /// that needs a missing key stops the reader when it gets there.
    pub(super) fn check_keys(&self, last: Option<Pos>) -> Result<(), StoreError> {
        let ends = self.log.ends();
        let records = [Some(ends.head), last.filter(|l| *l >= ends.head)];
        for pos in records.into_iter().flatten() {
            // A record that cannot be read is the reader's to set aside.
            if let Ok(Some(e)) = self.log.read_at(pos, Some(ends.tail)) {
                self.seal
                    .check(&e.batch)
                    .map_err(|e| StoreError::unsealed(0, e))?;
                if pos == ends.head && self.seal.is_older(&e.batch) {
                    self.stale_before.store(ends.next_seq, Ordering::Relaxed);
                }
            }
        }
        let pending = || self.local_first.scan_prefix(local_first::PENDING_PREFIX);
        let firsts_and_lasts = [
            self.dlq.first(),
            self.dlq.last(),
            self.parked.first(),
            self.parked.last(),
            pending().next().transpose(),
            pending().next_back().transpose(),
        ];
        for item in firsts_and_lasts {
            if let Some((_, v)) = item? {
                self.seal
                    .check(&v)
                    .map_err(|e| StoreError::unsealed(0, e))?;
            }
        }
        Ok(())
    }

    /// Seals dead letters, parked events and pending local-first records
    /// that a previous key sealed, or that are plain, with the current key.
    /// It reads every entry, so it runs only when the key changed since
    /// the last time (kept in sled's default tree).
    pub(super) fn reseal_kept(&self) -> Result<(), StoreError> {
        let Some(current) = self.seal.current() else {
            return Ok(());
        };
        if meta::kept_key(&self.db)? == current.bytes() {
            return Ok(());
        }
        let mut n = 0;
        for tree in [&self.dlq, &self.parked] {
            n += self.reseal(tree, tree.iter())?;
        }
        let pending = self.local_first.scan_prefix(local_first::PENDING_PREFIX);
        n += self.reseal(&self.local_first, pending)?;
        meta::set_kept_key(&self.db, &current.bytes())?;
        self.db.flush()?;
        if n > 0 {
            tracing::info!(
                entries = n,
                key = %current,
                "sealed the dead letters, parked events and local-first records with the current key"
            );
        }
        Ok(())
    }

    fn reseal(&self, tree: &sled::Tree, items: sled::Iter) -> Result<u64, StoreError> {
        let mut n = 0;
        for item in items {
            let (k, v) = item?;
            if !self.seal.is_older(&v) {
                continue;
            }
            match self.seal.open(v.to_vec()) {
                Ok(plain) => {
                    tree.insert(k, self.seal.seal(plain))?;
                    n += 1;
                }
                Err(e) if e.is_key_problem() => return Err(StoreError::unsealed(0, e)),
                // Damage is reported by whoever reads the entry.
                Err(_) => {}
            }
        }
        Ok(n)
    }

    pub(super) fn encryption(&self) -> Option<Encryption> {
        Some(Encryption {
            key: self.seal.current()?,
            previous: self.seal.previous(),
            older_records_in_outbox: self.log.ends().head_seq
                < self.stale_before.load(Ordering::Relaxed),
        })
    }
}
