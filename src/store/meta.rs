//! The outbox log's bookkeeping in sled's default tree: where its head is
//! (the next batch to forward) and the last record whose local-first marks
//! are in sled; and the key the kept entries were last sealed with. Both are written by the committer before
//! its flush, after what they describe, so sled's recovery of a prefix of
//! its log never has them ahead of the facts.

use super::outbox::Pos;
use super::StoreError;

const HEAD: &[u8] = b"outbox.head";
const APPLIED: &[u8] = b"outbox.applied";
const KEPT_KEY: &[u8] = b"kept.sealed_with";

/// The head: next seq, its position, and events appended before it.
pub fn head(db: &sled::Db) -> Result<Option<(u64, Pos, u64)>, StoreError> {
    let Some(v) = db.get(HEAD)? else {
        return Ok(None);
    };
    let n = |i: usize| {
        v.get(i * 8..i * 8 + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    match (n(0), n(1), n(2), n(3)) {
        (Some(seq), Some(segment), Some(offset), Some(cumulative)) => {
            Ok(Some((seq, Pos { segment, offset }, cumulative)))
        }
        _ => Err(StoreError::Corrupt {
            seq: 0,
            reason: "the outbox head in sled is damaged".into(),
        }),
    }
}

pub fn set_head(db: &sled::Db, seq: u64, pos: Pos, cumulative: u64) -> Result<(), StoreError> {
    let mut v = Vec::with_capacity(32);
    for n in [seq, pos.segment, pos.offset, cumulative] {
        v.extend_from_slice(&n.to_le_bytes());
    }
    db.insert(HEAD, v)?;
    Ok(())
}

/// The last seq whose local-first marks are in sled (0: none).
pub fn applied(db: &sled::Db) -> Result<u64, StoreError> {
    Ok(db
        .get(APPLIED)?
        .and_then(|v| v.as_ref().try_into().ok().map(u64::from_le_bytes))
        .unwrap_or(0))
}

pub fn set_applied(db: &sled::Db, seq: u64) -> Result<(), StoreError> {
    db.insert(APPLIED, &seq.to_le_bytes())?;
    Ok(())
}

/// The key id dead letters, parked events and local-first records were
/// last all sealed with (empty: none, or never recorded).
pub fn kept_key(db: &sled::Db) -> Result<Vec<u8>, StoreError> {
    Ok(db.get(KEPT_KEY)?.map(|v| v.to_vec()).unwrap_or_default())
}

pub fn set_kept_key(db: &sled::Db, id: &[u8]) -> Result<(), StoreError> {
    db.insert(KEPT_KEY, id)?;
    Ok(())
}
