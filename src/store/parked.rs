//! Parked events: what upstream refused for good (larger than it takes, a
//! subject no stream captures, a per-subject limit). The forwarder moves
//! such an event here and goes on with the rest in order, so one event never
//! blocks a node; an operator lists, replays (back to the end of the
//! outbox, once the cause is fixed) or purges them through the admin API
//! and `jetedge parked`.
//!
//! Tree `parked`, keyed by a big-endian sequence number, values as the
//! dead letters' (`dlq::encode_kept`). A park is written before the
//! forwarder's removal of its outbox batch, and sled recovers a prefix of
//! its log, so the committer's flush of that removal makes the park
//! durable too: an event is never in neither place.

use super::dlq::{decode_kept, encode_kept};
use super::{NewEvent, Outcome, Record, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;

/// Why upstream will not take an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParkReason {
    /// Over the server's `max_payload` or the stream's `max_msg_size`.
    TooLarge,
    /// No stream captures its subject.
    NoStream,
    /// Another refusal of this one event (a per-subject limit).
    Refused,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParkedMeta {
    pub reason: ParkReason,
    /// What upstream said.
    pub error: String,
    /// RFC 3339.
    pub parked_at: String,
    /// Times it was parked (a replay that is refused again adds one).
    pub times: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Parked {
    pub seq: u64,
    pub meta: ParkedMeta,
    pub record: Record,
}

impl Store {
    /// Sets an event aside. Durable with the committer's next flush, which
    /// the forwarder's removal of the event's batch always comes before.
    pub fn park(&self, meta: ParkedMeta, record: &Record) -> Result<u64, StoreError> {
        let seq = self.inner.db.generate_id()?;
        let value = encode_kept(&self.inner.seal, &meta, record);
        self.inner.parked.insert(seq.to_be_bytes(), value)?;
        self.inner.parked_count.fetch_add(1, Ordering::Relaxed);
        Ok(seq)
    }

    /// Up to `limit` parked events after `after`, oldest first.
    pub fn parked(&self, after: Option<u64>, limit: usize) -> Result<Vec<Parked>, StoreError> {
        Ok(
            super::dlq::page(&self.inner.seal, &self.inner.parked, after, limit)?
                .into_iter()
                .map(|(seq, meta, record)| Parked { seq, meta, record })
                .collect(),
        )
    }

    pub fn parked_get(&self, seq: u64) -> Result<Option<Parked>, StoreError> {
        match self.inner.parked.get(seq.to_be_bytes())? {
            Some(v) => {
                let (meta, record) = decode_kept(&self.inner.seal, seq, &v)?;
                Ok(Some(Parked { seq, meta, record }))
            }
            None => Ok(None),
        }
    }

    /// Puts a parked event back at the end of the outbox, under its own id
    /// (so upstream's duplicate window still recognises it), and removes
    /// it from the parked events. `None`: no such entry.
    pub async fn unpark(&self, seq: u64) -> Result<Option<Outcome>, StoreError> {
        let Some(p) = self.parked_get(seq)? else {
            return Ok(None);
        };
        let event = NewEvent {
            keys: Vec::new(),
            dedupe_ttl: std::time::Duration::ZERO,
            id: p.record.id.clone(),
            record: p.record.encode(),
            local_first: Vec::new(),
        };
        let outcome = self.persist(vec![event]).await?.remove(0);
        if outcome == Outcome::Accepted {
            // A crash before this removal is durable leaves the event in
            // both places: a second replay publishes it again, which the
            // stream's duplicate window drops.
            self.parked_remove(seq).await?;
        }
        Ok(Some(outcome))
    }

    /// Removes one parked event, durably; `false` when there was none.
    pub async fn parked_remove(&self, seq: u64) -> Result<bool, StoreError> {
        let had = self.inner.parked.remove(seq.to_be_bytes())?.is_some();
        if had {
            self.inner.parked_count.fetch_sub(1, Ordering::Relaxed);
        }
        self.sync().await?;
        Ok(had)
    }

    /// Removes every parked event, durably; returns how many.
    pub async fn parked_purge(&self) -> Result<u64, StoreError> {
        let mut n = 0;
        for item in self.inner.parked.iter() {
            let (k, _) = item?;
            if self.inner.parked.remove(&k)?.is_some() {
                self.inner.parked_count.fetch_sub(1, Ordering::Relaxed);
                n += 1;
            }
        }
        self.sync().await?;
        Ok(n)
    }

    /// Events parked (a counter, not a scan).
    pub fn parked_count(&self) -> u64 {
        self.inner.parked_count.load(Ordering::Relaxed)
    }
}
