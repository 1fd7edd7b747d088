//! How long to wait before the next attempt: exponential backoff with full
//! jitter (a random wait up to the exponential cap, so many messages failing
//! together do not retry together), unless the target said when with
//! `Retry-After`.

use crate::config::RetryConfig;
use rand::Rng;
use std::time::Duration;

/// The longest `Retry-After` honoured; a target asking for more is asked again then.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The wait after failed attempt number `attempt` (1-based).
pub fn delay(cfg: &RetryConfig, attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(d) = retry_after {
        return d.min(MAX_RETRY_AFTER);
    }
    Duration::from_secs_f64(rand::thread_rng().gen_range(0.0..=cap(cfg, attempt).as_secs_f64()))
}

/// The exponential ceiling of the wait after attempt `attempt`.
fn cap(cfg: &RetryConfig, attempt: u32) -> Duration {
    let exp = cfg
        .multiplier
        .powi(attempt.saturating_sub(1).min(64) as i32);
    let secs = (cfg.initial.0.as_secs_f64() * exp).min(cfg.max.0.as_secs_f64());
    Duration::from_secs_f64(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HumanDuration;

    #[test]
    fn backoff_grows_to_its_cap_with_full_jitter() {
        let cfg = RetryConfig {
            initial: HumanDuration::millis(100),
            max: HumanDuration::secs(1),
            multiplier: 2.0,
            max_attempts: 50,
        };
        assert_eq!(cap(&cfg, 1), Duration::from_millis(100));
        assert_eq!(cap(&cfg, 3), Duration::from_millis(400));
        assert_eq!(cap(&cfg, 10), Duration::from_secs(1));
        assert_eq!(cap(&cfg, 1000), Duration::from_secs(1));
        let waits: Vec<Duration> = (0..200).map(|_| delay(&cfg, 4, None)).collect();
        assert!(waits.iter().all(|d| *d <= Duration::from_millis(800)));
        let distinct: std::collections::HashSet<_> = waits.iter().collect();
        assert!(distinct.len() > 100, "jitter spreads the waits");
        assert_eq!(
            delay(&cfg, 1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            delay(&cfg, 1, Some(Duration::from_secs(99_999))),
            MAX_RETRY_AFTER
        );
    }
}
