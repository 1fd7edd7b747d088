//! A per-target circuit breaker: after `failures` failures in a row the
//! target is left alone for `cool_off`; then one message probes it, and its
//! result closes the breaker or opens it again. A dead microapp thus costs
//! one attempt per cool-off instead of every message's retries.

use crate::config::BreakerConfig;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is out since the instant given.
    HalfOpen {
        since: Instant,
    },
}

/// Whether a delivery may go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Go,
    Wait(Duration),
}

pub struct Breaker {
    failures: u32,
    cool_off: Duration,
    state: Mutex<State>,
}

/// What status reports of a breaker.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BreakerStatus {
    pub state: &'static str,
    pub consecutive_failures: u32,
    /// Milliseconds until an open breaker lets a probe through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_in_ms: Option<u64>,
}

impl Breaker {
    pub fn new(cfg: &BreakerConfig) -> Self {
        Self {
            failures: cfg.failures,
            cool_off: cfg.cool_off.0,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a plain value: a panic elsewhere cannot leave it half-written.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn admit(&self) -> Admit {
        let now = Instant::now();
        let mut s = self.lock();
        match *s {
            State::Closed { .. } => Admit::Go,
            State::Open { until } if now >= until => {
                *s = State::HalfOpen { since: now };
                Admit::Go
            }
            State::Open { until } => Admit::Wait(until - now),
            // A probe that never reported (its task was stopped) does not
            // hold the target shut for ever.
            State::HalfOpen { since } if now - since >= self.cool_off => {
                *s = State::HalfOpen { since: now };
                Admit::Go
            }
            State::HalfOpen { .. } => Admit::Wait(self.cool_off.min(Duration::from_millis(200))),
        }
    }

    pub fn success(&self) {
        *self.lock() = State::Closed { failures: 0 };
    }

    /// Counts a failure; `true` when it opened the breaker.
    pub fn failure(&self) -> bool {
        let mut s = self.lock();
        let open = State::Open {
            until: Instant::now() + self.cool_off,
        };
        match *s {
            State::Closed { failures } if failures + 1 >= self.failures => {
                *s = open;
                true
            }
            State::Closed { failures } => {
                *s = State::Closed {
                    failures: failures + 1,
                };
                false
            }
            State::HalfOpen { .. } => {
                *s = open;
                true
            }
            State::Open { .. } => false,
        }
    }

    pub fn status(&self) -> BreakerStatus {
        let now = Instant::now();
        match *self.lock() {
            State::Closed { failures } => BreakerStatus {
                state: "closed",
                consecutive_failures: failures,
                probe_in_ms: None,
            },
            State::Open { until } => BreakerStatus {
                state: "open",
                consecutive_failures: self.failures,
                probe_in_ms: Some(until.saturating_duration_since(now).as_millis() as u64),
            },
            State::HalfOpen { .. } => BreakerStatus {
                state: "half_open",
                consecutive_failures: self.failures,
                probe_in_ms: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HumanDuration;

    #[test]
    fn opens_after_n_failures_then_probes_once() {
        let b = Breaker::new(&BreakerConfig {
            failures: 3,
            cool_off: HumanDuration::millis(50),
        });
        assert!(!b.failure());
        assert!(!b.failure());
        assert_eq!(b.admit(), Admit::Go);
        assert!(b.failure());
        assert_eq!(b.status().state, "open");
        assert!(matches!(b.admit(), Admit::Wait(d) if d <= Duration::from_millis(50)));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.admit(), Admit::Go, "one probe after the cool-off");
        assert!(matches!(b.admit(), Admit::Wait(_)), "only one probe");
        assert!(b.failure(), "a failed probe opens it again");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.admit(), Admit::Go);
        b.success();
        assert_eq!(b.status().state, "closed");
        assert_eq!(b.admit(), Admit::Go);
        assert_eq!(b.admit(), Admit::Go);
    }
}
