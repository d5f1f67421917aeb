//! When a media worker should pause before it waits again, so that one wake-up handles many
//! packets instead of one.
//!
//! A worker that goes back to `epoll_wait` as soon as it has relayed what was ready is woken by
//! every packet once the load is spread in time (50 packets/s per direction per call, each call
//! on its own 20 ms phase): at 300 calls that is 30,000 wake-ups a second, and the profile of the
//! relay showed the context switches, the idle entry and exit and the `epoll_wait` calls costing
//! more than the relaying. A network card solves the same problem with interrupt moderation;
//! this is its userspace form: while packets arrive faster than a few per pause, the worker sleeps
//! a short fixed pause after each busy wake-up, and the next wait finds everything that arrived
//! meanwhile. Under light load it never pauses, so a lone call gets no added latency. The added
//! latency is bounded by the pause (200 µs by default, against 20 ms between packets of a stream
//! and a 20-60 ms jitter buffer at the far end).
//!
//! Pure: the worker hands in the clock and the packet counts.

use std::time::{Duration, Instant};

/// How often the arrival rate is re-estimated.
const WINDOW: Duration = Duration::from_millis(20);
/// Pause only when a pause would gather at least this many packets on average.
const MIN_PER_PAUSE: u64 = 2;

/// The batching policy of one worker.
#[derive(Debug, Clone)]
pub struct Batcher {
    pause: Duration,
    window_start: Option<Instant>,
    packets: u64,
    pausing: bool,
}

impl Batcher {
    /// A policy that pauses for `pause` under load; `Duration::ZERO` never pauses.
    pub fn new(pause: Duration) -> Batcher {
        Batcher {
            pause,
            window_start: None,
            packets: 0,
            pausing: false,
        }
    }

    /// Called after each wake-up that handled `packets` datagrams (0 for a timer or a command):
    /// returns the pause to take before waiting again, if any.
    pub fn after_wake(&mut self, now: Instant, packets: u64) -> Option<Duration> {
        if self.pause.is_zero() {
            return None;
        }
        self.packets += packets;
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= WINDOW {
            // Packets a pause would gather at the rate of this window, as a ratio of integers.
            let gathered_x_elapsed = u128::from(self.packets) * self.pause.as_nanos();
            self.pausing =
                gathered_x_elapsed >= u128::from(MIN_PER_PAUSE) * elapsed.as_nanos().max(1);
            self.window_start = Some(now);
            self.packets = 0;
        }
        (self.pausing && packets > 0).then_some(self.pause)
    }

    /// Whether the worker is in its batching regime now (for tests and metrics).
    pub fn pausing(&self) -> bool {
        self.pausing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAUSE: Duration = Duration::from_micros(200);

    /// Feeds `rate` packets/s, one per wake-up, for `ms` milliseconds; returns the pauses taken.
    fn drive(b: &mut Batcher, t0: Instant, rate: u64, ms: u64) -> usize {
        let gap = Duration::from_nanos(1_000_000_000 / rate);
        let mut t = t0;
        let mut pauses = 0;
        while t < t0 + Duration::from_millis(ms) {
            if b.after_wake(t, 1).is_some() {
                pauses += 1;
            }
            t += gap;
        }
        pauses
    }

    #[test]
    fn light_load_never_pauses() {
        let mut b = Batcher::new(PAUSE);
        let t0 = Instant::now();
        // One call: 100 packets/s. A pause would gather 0.02 packets.
        assert_eq!(drive(&mut b, t0, 100, 2_000), 0);
        // 50 calls: 5,000 packets/s; a pause would gather one packet: still not worth it.
        assert_eq!(drive(&mut b, t0 + Duration::from_secs(2), 5_000, 500), 0);
        assert!(!b.pausing());
    }

    #[test]
    fn load_turns_pausing_on_and_off() {
        let mut b = Batcher::new(PAUSE);
        let t0 = Instant::now();
        // 300 calls: 30,000 packets/s, six per pause.
        let pauses = drive(&mut b, t0, 30_000, 200);
        assert!(b.pausing());
        // Every wake-up after the first window pauses.
        assert!(pauses > 5_000, "{pauses}");
        // Load goes away: the next window turns it off, and idle wake-ups never pause.
        let later = t0 + Duration::from_secs(1);
        assert_eq!(b.after_wake(later, 0), None);
        assert_eq!(b.after_wake(later + WINDOW, 1), None);
        assert!(!b.pausing());
    }

    #[test]
    fn zero_pause_is_off() {
        let mut b = Batcher::new(Duration::ZERO);
        assert_eq!(drive(&mut b, Instant::now(), 1_000_000, 50), 0);
    }
}
