//! Free space on the data dir's filesystem, and what the node holds back.
//!
//! A full disk is an operating condition: the committer takes no new event
//! whose bytes would leave less than `node.disk_reserve` free, and answers
//! `disk_full` instead, while removals, dead letters and parked events (a
//! few bytes each) still have the reserve to write into, so the backlog
//! drains and its segments are deleted, which is what brings the space back.
//! The transition is logged once, then a summary a minute while it lasts.
//!
//! A ballast file (`reserve.ballast`, a quarter of the reserve) is the
//! space a node restarted on a disk that others filled completely needs to
//! open its store: it is deleted then, and made again once there is room.
//! Owned by the committer thread.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BALLAST: &str = "reserve.ballast";
/// How often the state is logged while the disk stays full.
const SUMMARY_EVERY: Duration = Duration::from_secs(60);
/// How long a measurement of free space is trusted.
const MEASURE_EVERY: Duration = Duration::from_millis(100);

pub struct Space {
    dir: PathBuf,
    reserve: u64,
    /// Free bytes as last measured, and when.
    free: u64,
    measured: Option<Instant>,
    full_since: Option<Instant>,
    refused: u64,
    reported: Instant,
}

/// Free bytes for unprivileged writers on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("the data dir's path holds a NUL byte"))?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `s` a writable statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(s.f_bavail as u64 * s.f_frsize as u64)
}

/// Makes room to open the store on a disk that is full: the ballast goes
/// when less than a quarter of the reserve is free. Called before sled opens.
pub fn before_open(dir: &Path, reserve: u64) {
    let ballast = dir.join(BALLAST);
    let free = free_bytes(dir).unwrap_or(u64::MAX);
    if free < reserve / 4 && ballast.exists() {
        match std::fs::remove_file(&ballast) {
            Ok(()) => tracing::warn!(
                free_bytes = free,
                "the disk is full: released the reserve ballast to open the store"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot release the reserve ballast"),
        }
    }
}

impl Space {
    pub fn new(dir: &Path, reserve: u64) -> Self {
        let mut s = Self {
            dir: dir.to_path_buf(),
            reserve,
            free: u64::MAX,
            measured: None,
            full_since: None,
            refused: 0,
            reported: Instant::now(),
        };
        s.keep_ballast();
        s
    }

    /// Whether `bytes` more may be written without eating into the reserve.
    pub fn admits(&mut self, bytes: u64) -> bool {
        if self.reserve == 0 {
            return true;
        }
        self.measure();
        let ok = !self.is_full() && self.free.saturating_sub(bytes) >= self.reserve;
        if !ok {
            self.refused += 1;
            self.transition(true);
        }
        ok
    }

    /// Notes that `bytes` were written (until the next measurement).
    pub fn used(&mut self, bytes: u64) {
        self.free = self.free.saturating_sub(bytes);
    }

    /// Whether new events are being refused for space.
    pub fn is_full(&self) -> bool {
        self.full_since.is_some()
    }

    fn measure(&mut self) {
        if self.measured.is_some_and(|t| t.elapsed() < MEASURE_EVERY) {
            return;
        }
        self.free = free_bytes(&self.dir).unwrap_or(u64::MAX);
        self.measured = Some(Instant::now());
        // Back to taking events only with some room beyond the reserve, so
        // the state does not flap with every batch.
        let resume_at = self.reserve + (self.reserve / 4).max(4 << 20);
        let full = match self.full_since {
            Some(_) => self.free < resume_at,
            None => self.free < self.reserve,
        };
        self.transition(full);
    }

    /// Logs entering and leaving the full state once, and a summary a
    /// minute in between; never a line per refused event.
    fn transition(&mut self, full: bool) {
        match (self.full_since, full) {
            (None, true) => {
                tracing::error!(free_bytes = self.free, reserve_bytes = self.reserve,
                    "the data dir's disk is nearly full: refusing new events (503 disk_full) and still forwarding the backlog");
                self.full_since = Some(Instant::now());
                self.reported = Instant::now();
                self.refused = 0;
            }
            (Some(since), false) => {
                tracing::info!(free_bytes = self.free, refused = self.refused, full_for = ?since.elapsed(),
                    "disk space is back: taking events again");
                self.full_since = None;
                self.keep_ballast();
            }
            (Some(since), true) if self.reported.elapsed() >= SUMMARY_EVERY => {
                tracing::warn!(free_bytes = self.free, refused_last_minute = self.refused, full_for = ?since.elapsed(),
                    "the disk is still nearly full: refusing new events");
                self.reported = Instant::now();
                self.refused = 0;
            }
            _ => {}
        }
    }

    /// Makes the ballast when there is room for it beyond the reserve.
    fn keep_ballast(&mut self) {
        let size = self.reserve / 4;
        let path = self.dir.join(BALLAST);
        if size == 0 || path.exists() {
            return;
        }
        let free = free_bytes(&self.dir).unwrap_or(0);
        if free < self.reserve + size {
            return;
        }
        if let Err(e) = write_ballast(&path, size) {
            tracing::warn!(error = %e, "cannot make the reserve ballast");
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Writes real blocks (a sparse file would reserve nothing).
fn write_ballast(path: &Path, size: u64) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    let chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    f.sync_all()
}
