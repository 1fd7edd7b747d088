//! How much the forwarder keeps in flight: a congestion window in bytes,
//! grown and shrunk the way TCP does it, so a backlog drains at the link's
//! pace whether the uplink is loopback, LTE or a satellite modem.
//!
//! - Slow start: the window starts at [`INITIAL`] and grows by every byte
//!   acknowledged (doubling per round trip) up to `ssthresh`, then by about
//!   one event per round trip.
//! - Delay bound: once acknowledgements come back more than [`QUEUE_BUDGET`]
//!   later than the fastest one seen, the link's queue is full; the window
//!   stops growing (and shrinks when the delay doubles), so PINGs and egress
//!   traffic on the same connection are not stuck behind seconds of
//!   publishes.
//! - A timeout halves the window (and `ssthresh`).
//! - Each publish's ack deadline is the configured `ack_timeout` plus the
//!   time the bytes queued ahead of it need at the measured ack rate, so a
//!   slow link does not turn into resends.
//!
//! Pure: no I/O, no clock of its own; the forwarder passes times in.

use std::time::{Duration, Instant};

/// The first window: enough for a fast link to ramp up within a few round
/// trips, small enough to cross a 64 kbit/s link in about 8 seconds.
pub const INITIAL: u64 = 64 << 10;
/// Queueing delay the window may build before it stops growing.
pub const QUEUE_BUDGET: Duration = Duration::from_secs(1);
/// Longest ack deadline, however slow the link looks.
const MAX_DEADLINE: Duration = Duration::from_secs(600);
/// Weight of a new sample in the smoothed round trip and ack rate.
const GAIN: f64 = 0.125;

#[derive(Debug, Clone)]
pub struct Window {
    /// Bytes allowed in flight.
    cwnd: u64,
    ssthresh: u64,
    /// Bounds from the config: publishes and bytes.
    max_count: usize,
    max_bytes: u64,
    min_rtt: Option<Duration>,
    srtt: Option<Duration>,
    /// Acknowledged bytes per second, smoothed.
    rate: Option<f64>,
    last_ack: Option<Instant>,
}

impl Window {
    pub fn new(max_count: usize, max_bytes: u64) -> Self {
        Self {
            cwnd: INITIAL.min(max_bytes),
            ssthresh: max_bytes,
            max_count,
            max_bytes,
            min_rtt: None,
            srtt: None,
            rate: None,
            last_ack: None,
        }
    }

    /// Whether one more publish of `size` bytes may go out with `count`
    /// publishes of `bytes` already in flight. One always may.
    pub fn has_room(&self, count: usize, bytes: u64, size: u64) -> bool {
        count == 0 || (count < self.max_count && bytes + size <= self.cwnd)
    }

    /// An ack for `size` bytes came back `rtt` after its publish.
    pub fn on_ack(&mut self, size: u64, rtt: Duration, now: Instant) {
        self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
        self.srtt = Some(match self.srtt {
            None => rtt,
            Some(s) => s.mul_f64(1.0 - GAIN) + rtt.mul_f64(GAIN),
        });
        if let Some(last) = self.last_ack.replace(now) {
            let gap = now.saturating_duration_since(last).as_secs_f64().max(1e-6);
            let sample = size as f64 / gap;
            self.rate = Some(match self.rate {
                None => sample,
                Some(r) => r * (1.0 - GAIN) + sample * GAIN,
            });
        }
        let queued = self.queue_delay();
        if queued > QUEUE_BUDGET * 2 {
            // The link's queue keeps growing: give some back.
            self.cwnd = (self.cwnd - self.cwnd / 64).max(INITIAL.min(self.max_bytes));
        } else if queued <= QUEUE_BUDGET {
            let grow = if self.cwnd < self.ssthresh {
                size
            } else {
                (size * size / self.cwnd.max(1)).max(1)
            };
            self.cwnd = (self.cwnd + grow).min(self.max_bytes);
        }
    }

    /// A publish was not acknowledged in time.
    pub fn on_timeout(&mut self) {
        self.ssthresh = (self.cwnd / 2).max(INITIAL.min(self.max_bytes));
        self.cwnd = self.ssthresh;
        // What the link gave before is no longer known.
        self.last_ack = None;
    }

    /// How long to wait for the ack of a publish sent with `ahead` bytes
    /// already in flight before it.
    pub fn deadline(&self, ack_timeout: Duration, ahead: u64) -> Duration {
        let drain = match self.rate {
            Some(r) if r > 0.0 => Duration::from_secs_f64(ahead as f64 / r),
            _ => Duration::ZERO,
        };
        (ack_timeout + drain).min(MAX_DEADLINE)
    }

    /// How much longer acks take now than the fastest seen: time spent in
    /// queues along the link.
    fn queue_delay(&self) -> Duration {
        match (self.srtt, self.min_rtt) {
            (Some(s), Some(m)) => s.saturating_sub(m),
            _ => Duration::ZERO,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.cwnd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_fast_link_opens_the_window_to_its_limits_within_a_few_round_trips() {
        let mut w = Window::new(1024, 16 << 20);
        let mut now = Instant::now();
        let mut acked = 0;
        while w.bytes() < 4 << 20 {
            now += MS / 10;
            w.on_ack(1100, MS, now);
            acked += 1;
        }
        // Slow start doubles per window's worth of acks: about 4,000 acks
        // (a few ms of a fast link) reach 4 MiB.
        assert!(acked < 5_000, "{acked} acks");
        assert!(w.has_room(1000, 1 << 20, 1100));
        assert!(!w.has_room(1024, 0, 1100), "the count limit holds");
    }

    /// Acks over a simulated link: a FIFO of `rate` bytes/s plus a fixed
    /// round trip; returns (bytes per second acked, worst queueing delay)
    /// over the second half of `acks` acks of `size` bytes.
    fn simulate(w: &mut Window, rate: f64, rtt: f64, size: u64, acks: usize) -> (f64, f64) {
        let start = Instant::now();
        let (mut t, mut link_free, mut bytes) = (0.0f64, 0.0f64, 0u64);
        let mut inflight = std::collections::VecDeque::new();
        let (mut worst, mut acked, mut from) = (0.0f64, 0u64, 0.0f64);
        for n in 0..acks {
            while w.has_room(inflight.len(), bytes, size) {
                let begin = link_free.max(t);
                link_free = begin + size as f64 / rate;
                inflight.push_back((link_free + rtt, t));
                bytes += size;
            }
            let (at, sent) = inflight.pop_front().expect("one in flight");
            t = at;
            bytes -= size;
            w.on_ack(
                size,
                Duration::from_secs_f64(at - sent),
                start + Duration::from_secs_f64(at),
            );
            if n == acks / 2 {
                from = t;
            } else if n > acks / 2 {
                worst = worst.max(at - sent - rtt - size as f64 / rate);
                acked += size;
            }
        }
        (acked as f64 / (t - from), worst)
    }

    #[test]
    fn a_slow_link_is_kept_full_without_a_queue_past_the_budget() {
        // 32 KB/s (256 kbit/s) with 200 ms of round trip, a 16 MiB limit.
        let mut w = Window::new(1024, 16 << 20);
        let (rate, queued) = simulate(&mut w, 32_000.0, 0.2, 1100, 4_000);
        assert!(rate > 0.9 * 32_000.0, "{rate:.0} B/s of 32000");
        assert!(
            queued < 2.5 * QUEUE_BUDGET.as_secs_f64(),
            "{queued:.2} s of queue (window {} B)",
            w.bytes()
        );
        // The deadline of a publish behind the whole window covers its wait.
        let d = w.deadline(Duration::from_secs(5), w.bytes());
        let wait = Duration::from_secs_f64(w.bytes() as f64 / 32_000.0);
        assert!(d >= Duration::from_secs(5) + wait / 2, "{d:?} for {wait:?}");
    }

    #[test]
    fn a_fast_link_is_not_held_back_by_the_window() {
        // 100 MB/s with 0.5 ms of round trip: the window opens to the
        // count limit long before the queue matters.
        let mut w = Window::new(1024, 16 << 20);
        let (rate, _) = simulate(&mut w, 100e6, 0.0005, 1100, 20_000);
        assert!(rate > 0.9 * 100e6, "{rate:.0} B/s");
    }

    #[test]
    fn a_timeout_halves_the_window_but_one_publish_can_always_go() {
        let mut w = Window::new(1024, 16 << 20);
        let now = Instant::now();
        for i in 0..100 {
            w.on_ack(10_000, MS, now + MS * i);
        }
        let before = w.bytes();
        w.on_timeout();
        assert_eq!(w.bytes(), before / 2);
        let mut tiny = Window::new(4, 1000);
        tiny.on_timeout();
        assert!(
            tiny.has_room(0, 0, 1 << 20),
            "an event larger than the window still goes alone"
        );
    }
}
