//! The media worker's side of a recording: copies each decrypted RTP payload into a bounded,
//! lock-free queue shared with the writer thread. Never allocates, never waits: a full queue
//! drops the frame and counts it. Dropping the tap (call removed from its worker, or `stop
//! recording`) tells the writer the recording is over.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_queue::ArrayQueue;

/// Longest RTP payload recorded (40 ms of G.711 is 320 bytes); longer ones are counted.
pub const MAX_PAYLOAD: usize = 320;

/// One frame on its way to the writer.
#[derive(Clone)]
pub struct RecFrame {
    /// The recording's slot in the writer.
    pub slot: u32,
    /// 0 caller (leg A), 1 callee (leg B).
    pub track: u8,
    /// RTP payload type.
    pub pt: u8,
    /// RTP marker bit.
    pub marker: bool,
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub rtp_ts: u32,
    /// Milliseconds since the recording started.
    pub time_ms: u32,
    /// Payload length.
    pub len: u16,
    /// Payload bytes (first `len`).
    pub buf: [u8; MAX_PAYLOAD],
}

/// Counters and switches shared by a recording's tap, its writer and signaling.
#[derive(Debug, Default)]
pub struct RecShared {
    /// `pause recording`: frames are not queued.
    pub paused: AtomicBool,
    /// The tap is gone: the writer seals the final chunk once the queue is drained.
    pub ended: AtomicBool,
    /// Frames queued.
    pub frames: AtomicU64,
    /// Frames dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Payloads longer than [`MAX_PAYLOAD`].
    pub oversize: AtomicU64,
}

/// The queue from every media worker to the writer.
pub type FrameQueue = ArrayQueue<RecFrame>;

/// What a worker holds for a recorded call.
pub struct RecordTap {
    shared: Arc<RecShared>,
    queue: Arc<FrameQueue>,
    slot: u32,
    start: Instant,
}

impl std::fmt::Debug for RecordTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordTap")
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

impl RecordTap {
    /// A tap feeding `queue` for the writer's `slot`; times count from `start`.
    pub fn new(
        shared: Arc<RecShared>,
        queue: Arc<FrameQueue>,
        slot: u32,
        start: Instant,
    ) -> RecordTap {
        RecordTap {
            shared,
            queue,
            slot,
            start,
        }
    }

    /// Hands one authenticated, decrypted RTP packet from `leg` (0 = A, 1 = B) to the writer.
    pub fn tap(&self, leg: usize, pkt: &[u8], now: Instant) {
        if self.shared.paused.load(Ordering::Relaxed) {
            return;
        }
        let Some(p) = crate::media::relay::rtp_payload(pkt) else {
            return;
        };
        if p.payload.len() > MAX_PAYLOAD {
            self.shared.oversize.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut f = RecFrame {
            slot: self.slot,
            track: u8::from(leg != 0),
            pt: p.pt,
            marker: pkt.get(1).is_some_and(|b| b & 0x80 != 0),
            seq: pkt
                .get(2..4)
                .map_or(0, |s| u16::from_be_bytes([s[0], s[1]])),
            rtp_ts: p.timestamp,
            time_ms: u32::try_from(now.saturating_duration_since(self.start).as_millis())
                .unwrap_or(u32::MAX),
            len: p.payload.len() as u16,
            buf: [0; MAX_PAYLOAD],
        };
        f.buf[..p.payload.len()].copy_from_slice(p.payload);
        if self.queue.push(f).is_ok() {
            self.shared.frames.fetch_add(1, Ordering::Relaxed);
        } else {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for RecordTap {
    fn drop(&mut self) {
        self.shared.ended.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_never_waits() {
        let q = Arc::new(FrameQueue::new(2));
        let s = Arc::new(RecShared::default());
        let t0 = Instant::now();
        let tap = RecordTap::new(s.clone(), q.clone(), 7, t0);
        let mut pkt = vec![0x80, 0x80, 0, 5, 0, 0, 0, 160, 0, 0, 0, 1];
        pkt.extend_from_slice(&[0xff; 160]);
        for _ in 0..5 {
            tap.tap(1, &pkt, t0);
        }
        assert_eq!(s.frames.load(Ordering::Relaxed), 2);
        assert_eq!(s.dropped.load(Ordering::Relaxed), 3);
        let f = q.pop().unwrap();
        assert_eq!(
            (f.slot, f.track, f.pt, f.marker, f.seq, f.rtp_ts, f.len),
            (7, 1, 0, true, 5, 160, 160)
        );
        s.paused.store(true, Ordering::Relaxed);
        let _ = q.pop();
        tap.tap(0, &pkt, t0);
        assert!(q.is_empty(), "paused");
        drop(tap);
        assert!(s.ended.load(Ordering::Acquire));
    }
}
