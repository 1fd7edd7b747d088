//! The dead-letter queue: messages a subscription could not deliver within
//! its retries, kept (tree `dlq`, keyed by a big-endian sequence number) with
//! the targets still owed, the attempts made and the last error, until an
//! operator replays or purges them.
//!
//! A value is a u32 length, the JSON of [`Letter`]'s bookkeeping, then the
//! event as a [`Record`], sealed as a whole (`seal.rs`). Every change is flushed before it returns, since
//! the upstream copy is acked right after an entry is written.

use super::seal::Keys;
use super::{Record, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;

/// One dead letter.
#[derive(Debug, Clone, PartialEq)]
pub struct Letter {
    /// Its key; assigned by [`Store::dead_letter`].
    pub seq: u64,
    pub meta: LetterMeta,
    pub record: Record,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LetterMeta {
    pub subscription: String,
    /// Targets that have not taken the event ("subject", "stream", "webhook").
    pub targets: Vec<String>,
    pub attempts: u32,
    pub last_error: String,
    /// RFC 3339.
    pub dead_at: String,
}

impl Letter {
    fn encode(&self, keys: &Keys) -> Vec<u8> {
        encode_kept(keys, &self.meta, &self.record)
    }

    fn decode(keys: &Keys, seq: u64, b: &[u8]) -> Result<Self, StoreError> {
        let (meta, record) = decode_kept(keys, seq, b)?;
        Ok(Self { seq, meta, record })
    }
}

/// An event kept aside with its bookkeeping: a u32 length, the JSON of the
/// bookkeeping, then the event as a [`Record`], sealed. Shared by the
/// dead-letter queue and the parked events.
pub(super) fn encode_kept(keys: &Keys, meta: &impl Serialize, record: &Record) -> Vec<u8> {
    let meta = serde_json::to_vec(meta).expect("plain data serialises");
    let record = record.encode();
    let mut out = Vec::with_capacity(4 + meta.len() + record.len());
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(&record);
    keys.seal(out)
}

/// The bookkeeping and event of kept entry `seq`: [`StoreError::Corrupt`]
/// when it is damaged, [`StoreError::Key`] when no configured key opens it.
pub(super) fn decode_kept<M: serde::de::DeserializeOwned>(
    keys: &Keys,
    seq: u64,
    b: &[u8],
) -> Result<(M, Record), StoreError> {
    let b = keys
        .open(b.to_vec())
        .map_err(|e| StoreError::unsealed(seq, e))?;
    parse_kept(&b).map_err(|reason| StoreError::Corrupt { seq, reason })
}

fn parse_kept<M: serde::de::DeserializeOwned>(b: &[u8]) -> Result<(M, Record), String> {
    let n = b
        .get(..4)
        .map(|h| u32::from_le_bytes(h.try_into().expect("4 bytes")) as usize)
        .ok_or("truncated entry")?;
    let meta = b.get(4..4 + n).ok_or("truncated entry")?;
    let meta = serde_json::from_slice(meta).map_err(|e| e.to_string())?;
    let record = Record::decode(&b[4 + n..])?;
    Ok((meta, record))
}

/// Up to `limit` kept entries of `tree` after `after`, oldest first, each
/// as `M` and its record; one that cannot be decoded is logged and skipped
/// (one that no configured key opens is an error).
pub(super) fn page<M: serde::de::DeserializeOwned>(
    keys: &Keys,
    tree: &sled::Tree,
    after: Option<u64>,
    limit: usize,
) -> Result<Vec<(u64, M, Record)>, StoreError> {
    let start = after.map_or(0, |s| s.saturating_add(1));
    let mut out = Vec::new();
    for item in tree.range(start.to_be_bytes()..) {
        if out.len() >= limit {
            break;
        }
        let (k, v) = item?;
        let seq = u64::from_be_bytes(k.as_ref().try_into().unwrap_or_default());
        match decode_kept(keys, seq, &v) {
            Ok((meta, record)) => out.push((seq, meta, record)),
            Err(StoreError::Corrupt { reason, .. }) => {
                tracing::error!(seq, error = %reason, "a kept entry cannot be decoded")
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

impl Store {
    /// Adds a dead letter, durably; returns its sequence number.
    pub async fn dead_letter(&self, meta: LetterMeta, record: Record) -> Result<u64, StoreError> {
        let seq = self.inner.db.generate_id()?;
        let letter = Letter { seq, meta, record };
        let value = letter.encode(&self.inner.seal);
        self.inner.dlq.insert(seq.to_be_bytes(), value)?;
        self.inner.dlq_count.fetch_add(1, Ordering::Relaxed);
        self.sync().await?;
        Ok(seq)
    }

    /// Up to `limit` dead letters after `after`, oldest first. One that
    /// cannot be decoded is logged and skipped.
    pub fn dead_letters(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Letter>, StoreError> {
        Ok(page(&self.inner.seal, &self.inner.dlq, after, limit)?
            .into_iter()
            .map(|(seq, meta, record)| Letter { seq, meta, record })
            .collect())
    }

    pub fn dead_letter_get(&self, seq: u64) -> Result<Option<Letter>, StoreError> {
        match self.inner.dlq.get(seq.to_be_bytes())? {
            Some(v) => Letter::decode(&self.inner.seal, seq, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Rewrites a letter's bookkeeping (after a failed replay), durably.
    pub async fn dead_letter_update(&self, letter: &Letter) -> Result<(), StoreError> {
        let value = letter.encode(&self.inner.seal);
        self.inner.dlq.insert(letter.seq.to_be_bytes(), value)?;
        self.sync().await
    }

    /// Removes one letter, durably; `false` when there was none.
    pub async fn dead_letter_remove(&self, seq: u64) -> Result<bool, StoreError> {
        let had = self.inner.dlq.remove(seq.to_be_bytes())?.is_some();
        if had {
            self.inner.dlq_count.fetch_sub(1, Ordering::Relaxed);
        }
        self.sync().await?;
        Ok(had)
    }

    /// Removes every letter (of one subscription, when named), durably;
    /// returns how many.
    pub async fn dead_letter_purge(&self, subscription: Option<&str>) -> Result<u64, StoreError> {
        let mut n = 0;
        for item in self.inner.dlq.iter() {
            let (k, v) = item?;
            let seq = u64::from_be_bytes(k.as_ref().try_into().unwrap_or_default());
            let matches = match subscription {
                None => true,
                Some(s) => Letter::decode(&self.inner.seal, seq, &v)
                    .is_ok_and(|l| l.meta.subscription == s),
            };
            if matches && self.inner.dlq.remove(&k)?.is_some() {
                self.inner.dlq_count.fetch_sub(1, Ordering::Relaxed);
                n += 1;
            }
        }
        self.sync().await?;
        Ok(n)
    }

    /// Letters waiting (a counter, not a scan: `/metrics` reads it often).
    pub fn dead_letter_count(&self) -> usize {
        self.inner.dlq_count.load(Ordering::Relaxed) as usize
    }
}
