//! Rate limits: one token bucket per source (`[[source]] rate_limit`) and
//! one for the whole HTTP listener (`[ingress] rate_limit`). Each is GCRA
//! (the generic cell rate algorithm) over one atomic, the "theoretical
//! arrival time" of the next request: taking a token is a load and a
//! compare-and-swap, no lock on the hot path.

use crate::config::RateLimitConfig;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct RateLimit {
    /// Time one token takes to come back, in nanoseconds.
    interval: u64,
    /// How far ahead of now the arrival time may run: `burst` tokens.
    window: u64,
    /// The theoretical arrival time, in nanoseconds since `start`.
    tat: AtomicU64,
    start: Instant,
    /// Requests refused by this limit.
    limited: AtomicU64,
}

impl RateLimit {
    pub fn new(cfg: &RateLimitConfig) -> Self {
        let interval = (1e9 / cfg.per_second).round().max(1.0) as u64;
        Self {
            interval,
            window: interval.saturating_mul(u64::from(cfg.burst())),
            tat: AtomicU64::new(0),
            start: Instant::now(),
            limited: AtomicU64::new(0),
        }
    }

    /// Takes one token; when there is none, how long until there is.
    pub fn take(&self) -> Result<(), Duration> {
        let now = self.start.elapsed().as_nanos() as u64;
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now) + self.interval;
            if next - now > self.window {
                self.limited.fetch_add(1, Ordering::Relaxed);
                return Err(Duration::from_nanos(next - now - self.window));
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(current) => tat = current,
            }
        }
    }

    /// Requests this limit refused since start.
    pub fn limited(&self) -> u64 {
        self.limited.load(Ordering::Relaxed)
    }
}

/// Whole seconds a refused sender should wait (`Retry-After`), at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0 || wait.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_second: f64, burst: u32) -> RateLimit {
        RateLimit::new(&RateLimitConfig {
            per_second,
            burst: Some(burst),
        })
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let l = limit(10.0, 5);
        for i in 0..5 {
            assert_eq!(l.take(), Ok(()), "token {i} of the burst");
        }
        let wait = l.take().expect_err("the burst is spent");
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert_eq!(l.limited(), 1);
        std::thread::sleep(wait + Duration::from_millis(5));
        assert_eq!(l.take(), Ok(()), "a token came back");
        assert!(l.take().is_err());
    }

    #[test]
    fn threads_never_take_more_than_the_burst_at_once() {
        let l = std::sync::Arc::new(limit(0.001, 100));
        let taken: usize = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || (0..1000).filter(|_| l.take().is_ok()).count())
            })
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(taken, 100);
        assert_eq!(l.limited(), 3900);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
