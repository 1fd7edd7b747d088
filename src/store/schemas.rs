//! The node's copy of the schema registry (`crate::contract::registry`):
//! one sled tree, `{bucket}\0{key}` to the entry's revision (8 bytes,
//! big-endian) and the schema document. It lets validation go on offline
//! and across restarts; the watcher is its only writer, and it asks the
//! committer to flush ([`Store::sync`]) after each change.

use super::{Store, StoreError};

const TREE: &[u8] = b"schemas";

/// One cached registry entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedSchema {
    pub key: String,
    pub revision: u64,
    pub document: Vec<u8>,
}

fn prefix(bucket: &str) -> Vec<u8> {
    let mut p = bucket.as_bytes().to_vec();
    p.push(0);
    p
}

impl Store {
    /// Every entry cached for `bucket`, in key order.
    pub fn cached_schemas(&self, bucket: &str) -> Result<Vec<CachedSchema>, StoreError> {
        let tree = self.inner.db.open_tree(TREE)?;
        let p = prefix(bucket);
        let mut out = Vec::new();
        for item in tree.scan_prefix(&p) {
            let (k, v) = item?;
            let key = String::from_utf8_lossy(&k[p.len()..]).into_owned();
            let (Some(rev), Some(document)) = (v.get(..8), v.get(8..)) else {
                continue;
            };
            out.push(CachedSchema {
                key,
                revision: u64::from_be_bytes(rev.try_into().expect("8 bytes")),
                document: document.to_vec(),
            });
        }
        Ok(out)
    }

    /// Keeps (`Some`) or forgets (`None`) one entry; durable with the
    /// committer's next flush.
    pub fn cache_schema(
        &self,
        bucket: &str,
        key: &str,
        entry: Option<(u64, &[u8])>,
    ) -> Result<(), StoreError> {
        let tree = self.inner.db.open_tree(TREE)?;
        let mut k = prefix(bucket);
        k.extend_from_slice(key.as_bytes());
        match entry {
            Some((revision, document)) => {
                let mut v = Vec::with_capacity(8 + document.len());
                v.extend_from_slice(&revision.to_be_bytes());
                v.extend_from_slice(document);
                tree.insert(k, v)?;
            }
            None => {
                tree.remove(k)?;
            }
        }
        Ok(())
    }
}
