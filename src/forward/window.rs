//! How much the forwarder keeps in flight: a congestion window in bytes,
//! grown and shrunk the way TCP does it, so a backlog drains at the link's
//! pace whether the uplink is loopback, LTE or a satellite modem.
//!
//! - Slow start: the window starts at [`INITIAL`] and grows by every byte
//!   acknowledged (doubling per round trip) up to `ssthresh`, then by about
//!   one event per round trip.
//! - Delay bound: once acknowledgements come back more than [`QUEUE_BUDGET`]
//!   later than the fastest one seen, the link's queue is full; the window
//!   stops growing, and when the delay doubles it shrinks to what the link
//!   carries in a round trip plus the budget (down to [`MIN_WINDOW`]), so
//!   PINGs and egress traffic on the same connection are not stuck behind
//!   seconds of publishes (a 64 kbit/s link carries 64 KiB in 8 s).
//! - A timeout halves the window (and `ssthresh`).
//! - Each publish's ack deadline is the configured `ack_timeout` plus the
//!   time the bytes queued ahead of it need at the measured ack rate (at
//!   [`FLOOR_RATE`] until a rate is measured), so a slow link does not turn
//!   into resends.
//!
//! Pure: no I/O, no clock of its own; the forwarder passes times in.

use std::time::{Duration, Instant};

/// The first window: enough for a fast link to ramp up within a few round
/// trips, small enough to cross a 64 kbit/s link in about 8 seconds.
pub const INITIAL: u64 = 64 << 10;
/// The smallest window: a few events, more than a 64 kbit/s link with a
/// 400 ms round trip holds.
pub const MIN_WINDOW: u64 = 4 << 10;
/// Queueing delay the window may build before it stops growing.
pub const QUEUE_BUDGET: Duration = Duration::from_secs(1);
/// The slowest uplink the forwarder is made for, in payload bytes per
/// second (64 kbit/s, a poor cellular link, less the NATS framing and
/// headers of ~1 KiB events): before acks have measured the link, the bytes
/// ahead of a publish are assumed to cross at this rate. Assuming more
/// would time out the first window on such a link and resend it behind
/// itself.
pub const FLOOR_RATE: f64 = 6_000.0;
/// Longest ack deadline, however slow the link looks.
const MAX_DEADLINE: Duration = Duration::from_secs(600);
/// Shortest span of one ack-rate sample.
const MIN_SAMPLE: Duration = Duration::from_millis(20);
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
    /// Start of the current rate sample, and the bytes acknowledged since.
    /// A sample spans at least a round trip: acks arrive in bursts (the
    /// server answers a batch of publishes at once), and the gap between
    /// two acks of one burst says nothing about the link.
    sample_from: Option<Instant>,
    sample_bytes: u64,
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
            sample_from: None,
            sample_bytes: 0,
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
        self.sample_rate(size, now);
        let queued = self.queue_delay();
        if queued > QUEUE_BUDGET * 2 {
            // The link's queue keeps growing: give some back, at once down
            // to what the link carries within a round trip and the budget.
            let mut cwnd = self.cwnd - self.cwnd / 64;
            if let (Some(rate), Some(min_rtt)) = (self.rate, self.min_rtt) {
                let fits = rate * (min_rtt + QUEUE_BUDGET).as_secs_f64();
                cwnd = cwnd.min(fits as u64);
            }
            self.cwnd = cwnd.max(MIN_WINDOW.min(self.max_bytes));
            // The link's size is known now: grow slowly from here.
            self.ssthresh = self.ssthresh.min(self.cwnd);
        } else if queued <= QUEUE_BUDGET {
            let grow = if self.cwnd < self.ssthresh {
                size
            } else {
                (size * size / self.cwnd.max(1)).max(1)
            };
            self.cwnd = (self.cwnd + grow).min(self.max_bytes);
        }
    }

    /// Counts `size` acknowledged bytes at `now` into the ack rate, one
    /// sample per round trip (at least [`MIN_SAMPLE`]).
    fn sample_rate(&mut self, size: u64, now: Instant) {
        let Some(from) = self.sample_from else {
            // The first ack opens a sample; its own bytes came before it.
            self.sample_from = Some(now);
            return;
        };
        self.sample_bytes += size;
        let span = now.saturating_duration_since(from);
        if span < self.srtt.unwrap_or_default().max(MIN_SAMPLE) {
            return;
        }
        let sample = self.sample_bytes as f64 / span.as_secs_f64();
        self.rate = Some(match self.rate {
            None => sample,
            Some(r) => r * (1.0 - GAIN) + sample * GAIN,
        });
        (self.sample_from, self.sample_bytes) = (Some(now), 0);
    }

    /// A publish was not acknowledged in time.
    pub fn on_timeout(&mut self) {
        self.ssthresh = (self.cwnd / 2).max(MIN_WINDOW.min(self.max_bytes));
        self.cwnd = self.ssthresh;
        // The sample in progress spans the silence: start a new one.
        (self.sample_from, self.sample_bytes) = (None, 0);
    }

    /// How long to wait for the ack of a publish sent with `ahead` bytes
    /// already in flight before it: the timeout, the round trip as last
    /// seen, and the time those bytes need at the ack rate.
    pub fn deadline(&self, ack_timeout: Duration, ahead: u64) -> Duration {
        let rate = match self.rate {
            Some(r) if r > 0.0 => r,
            _ => FLOOR_RATE,
        };
        let drain = Duration::from_secs_f64(ahead as f64 / rate);
        (ack_timeout + self.srtt.unwrap_or_default() + drain).min(MAX_DEADLINE)
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
    fn the_first_window_on_a_64_kbit_link_is_not_timed_out() {
        // Before any ack, the last publish of the first window waits for
        // the whole window to cross at 8 kB/s: its deadline must cover it.
        let w = Window::new(1024, 16 << 20);
        let ahead = w.bytes() - 1100;
        let crossing = Duration::from_secs_f64(w.bytes() as f64 / 8_000.0);
        let d = w.deadline(Duration::from_secs(2), ahead);
        assert!(
            d + Duration::from_secs(1) >= crossing,
            "{d:?} for {crossing:?}"
        );
    }

    #[test]
    fn acks_in_bursts_do_not_make_a_slow_link_look_fast() {
        // 8 kB/s, 400 ms round trip; the server answers ten publishes of
        // 1,100 bytes at once every 1.375 s.
        let mut w = Window::new(1024, 16 << 20);
        let start = Instant::now();
        for burst in 1..=40u32 {
            let at = start + Duration::from_millis(1375) * burst;
            for _ in 0..10 {
                w.on_ack(1100, Duration::from_millis(400), at);
            }
        }
        let rate = w.rate.expect("measured");
        assert!(
            (6_000.0..10_000.0).contains(&rate),
            "{rate:.0} B/s for 8000"
        );
        // A publish behind 64 KiB waits about 8 s: its deadline covers it.
        let d = w.deadline(Duration::from_secs(2), 64 << 10);
        assert!(d >= Duration::from_secs(8), "{d:?}");
    }

    #[test]
    fn a_64_kbit_cellular_link_is_kept_busy_with_a_short_queue() {
        // 8 kB/s with 400 ms of round trip: the first window alone would
        // queue 8 s; the window must come down so that PINGs get through.
        let mut w = Window::new(1024, 4 << 20);
        let (rate, queued) = simulate(&mut w, 8_000.0, 0.4, 1100, 3_000);
        assert!(rate > 0.85 * 8_000.0, "{rate:.0} B/s of 8000");
        assert!(
            queued < 2.5 * QUEUE_BUDGET.as_secs_f64(),
            "{queued:.2} s of queue (window {} B)",
            w.bytes()
        );
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
