//! A temporary directory for unit tests that is removed when dropped, so a
//! test run leaves nothing behind in the machine's temp dir.

use std::path::{Path, PathBuf};

pub struct TestDir(PathBuf);

impl TestDir {
    /// `{temp}/jetedge-{name}-{pid}`, empty.
    pub fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("jetedge-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        Self(d)
    }
}

impl std::ops::Deref for TestDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TestDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
