//! Marks of local-first delivery (tree `local_first`).
//!
//! When an event ingested here matches a `local_first` subscription, the
//! committer writes a *pending* mark (`p\0{subscription}\0{id}` -> expiry
//! the record) in the same transaction as the event itself, so a mark
//! exists exactly when the event was accepted, and before the forwarder can
//! see the event. The subscription delivers pending marks to its targets
//! and turns each into a *seen* mark (`s\0…` -> expiry). The copy that
//! comes back from upstream finds either mark and is not delivered again.
//! Seen marks expire after the subscription's `local_first_ttl`.
//! A pending mark's record is sealed like every stored event (`seal.rs`).

use super::{Record, Store, StoreError};

const PENDING: u8 = b'p';
/// Where every pending mark's key starts.
pub(super) const PENDING_PREFIX: [u8; 2] = [PENDING, 0];
const SEEN: u8 = b's';

pub(super) fn key(kind: u8, subscription: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + subscription.len() + id.len());
    k.push(kind);
    k.push(0);
    k.extend_from_slice(subscription.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

/// The key of an accepted event's pending mark; its value is the record.
pub(super) fn pending_key(subscription: &str, id: &str) -> Vec<u8> {
    key(PENDING, subscription, id)
}

fn expiry(v: &[u8]) -> u64 {
    v.get(..8)
        .map_or(0, |b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
}

impl Store {
    /// Up to `limit` events waiting for local-first delivery by `subscription`.
    pub fn local_pending(
        &self,
        subscription: &str,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let prefix = key(PENDING, subscription, "");
        let mut out = Vec::new();
        for item in self.inner.local_first.scan_prefix(&prefix).take(limit) {
            let (k, v) = item?;
            let opened = self.inner.seal.open(v.to_vec());
            match opened.as_deref().map(Record::decode) {
                Ok(Ok(r)) => out.push(r),
                Err(e) if e.is_key_problem() => return Err(StoreError::unsealed(0, e.clone())),
                _ => {
                    tracing::error!(key = %String::from_utf8_lossy(&k), "local-first mark cannot be decoded; dropped");
                    self.inner.local_first.remove(k)?;
                }
            }
        }
        Ok(out)
    }

    /// Whether event `id` still waits for local-first delivery.
    pub fn local_is_pending(&self, subscription: &str, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .inner
            .local_first
            .contains_key(key(PENDING, subscription, id))?)
    }

    /// Records that `subscription` delivered (or dead-lettered) event `id`
    /// locally; the mark lives until `expiry_ms`.
    pub fn local_done(
        &self,
        subscription: &str,
        id: &str,
        expiry_ms: u64,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.remove(key(PENDING, subscription, id));
        batch.insert(key(SEEN, subscription, id), &expiry_ms.to_be_bytes());
        self.inner.local_first.apply_batch(batch)?;
        Ok(())
    }

    /// Whether event `id` is (or was) delivered locally by `subscription`.
    pub fn local_marked(
        &self,
        subscription: &str,
        id: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let tree = &self.inner.local_first;
        if tree.contains_key(key(PENDING, subscription, id))? {
            return Ok(true);
        }
        Ok(tree
            .get(key(SEEN, subscription, id))?
            .is_some_and(|v| expiry(&v) > now_ms))
    }

    /// Drops seen marks that expired; returns how many.
    pub fn local_sweep(&self, now_ms: u64) -> Result<u64, StoreError> {
        let mut n = 0;
        for item in self.inner.local_first.scan_prefix([SEEN, 0]) {
            let (k, v) = item?;
            if expiry(&v) <= now_ms {
                self.inner.local_first.remove(k)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// A receiver that changes whenever new local-first marks are committed.
    pub fn local_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.local_first_gen.subscribe()
    }
}
