//! What the committer does after each sled flush to make a group durable
//! when `node.fsync` is on.
//!
//! sled 0.34's flush writes its log with `sync_file_range`, which leaves the
//! device cache and the file's metadata unflushed: an `fdatasync` of the
//! database file closes that gap. sled also writes any value or page larger
//! than a quarter of a segment to a file of its own under `blobs/`, and
//! never syncs those; so after each flush the new blob files, and the
//! directory that names them, are synced too. The store keeps its values
//! small enough that blobs are rare (see `commit.rs`), so this is usually
//! one empty directory read.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

pub(super) struct Durability {
    db: File,
    blobs: PathBuf,
    /// Blob files already synced, by name (sled names them by log sequence number).
    synced: BTreeSet<u64>,
}

impl Durability {
    pub fn open(data_dir: &Path) -> io::Result<Self> {
        Ok(Self {
            db: File::open(data_dir.join("db"))?,
            blobs: data_dir.join("blobs"),
            synced: BTreeSet::new(),
        })
    }

    /// Syncs what the last flush wrote.
    pub fn sync(&mut self) -> io::Result<()> {
        self.db.sync_data()?;
        self.sync_new_blobs()
    }

    fn sync_new_blobs(&mut self) -> io::Result<()> {
        let entries = match std::fs::read_dir(&self.blobs) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut present = BTreeSet::new();
        let mut fresh = false;
        for entry in entries {
            let entry = entry?;
            let Some(lsn) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            present.insert(lsn);
            if !self.synced.contains(&lsn) {
                File::open(entry.path())?.sync_data()?;
                fresh = true;
            }
        }
        if fresh {
            File::open(&self.blobs)?.sync_all()?;
        }
        // Forget blobs sled has removed, so the set does not grow forever.
        self.synced = present;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_blob_files_are_synced_once_and_removed_ones_forgotten() {
        let dir = crate::testdir::TestDir::new("sync");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("db"), b"").unwrap();
        let mut d = Durability::open(&dir).unwrap();
        d.sync().unwrap(); // no blobs directory yet
        std::fs::create_dir_all(dir.join("blobs")).unwrap();
        std::fs::write(dir.join("blobs/17"), b"x").unwrap();
        std::fs::write(dir.join("blobs/not-a-blob"), b"x").unwrap();
        d.sync().unwrap();
        assert_eq!(d.synced, BTreeSet::from([17]));
        std::fs::remove_file(dir.join("blobs/17")).unwrap();
        std::fs::write(dir.join("blobs/40"), b"x").unwrap();
        d.sync().unwrap();
        assert_eq!(d.synced, BTreeSet::from([40]));
    }
}
