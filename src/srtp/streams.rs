//! Per-SSRC state of one context: rollover counter, highest index and replay windows for SRTP,
//! and the SRTCP send and receive indexes.
//!
//! The table is bounded ([`MAX_STREAMS`]). Room for [`INITIAL_STREAMS`] SSRCs (a call direction
//! normally carries one), replay bitmaps included, is allocated when the context is created, so
//! packets of known streams never allocate; the table doubles only when a *new, authenticated*
//! SSRC needs room (at most four times in a context's life), which keeps a call's memory small.
//! A new SSRC beyond the bound is an error for the caller to count, not a reason to grow.

use super::{replay, Error};

/// Most SSRCs one context tracks (a call direction normally carries one or two).
pub const MAX_STREAMS: usize = 64;

/// SSRCs a context has room for when created.
pub const INITIAL_STREAMS: usize = 4;

/// The state of one SSRC.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stream {
    /// The synchronisation source this entry belongs to.
    pub ssrc: u32,
    /// True once an SRTP packet of this SSRC was accepted (or protected).
    pub rtp_seen: bool,
    /// Rollover counter of the highest accepted SRTP index (or the seeded ROC before one).
    pub roc: u32,
    /// Sequence number of the highest accepted SRTP index.
    pub seq: u16,
    /// True once an SRTCP packet of this SSRC was accepted.
    pub rtcp_seen: bool,
    /// Highest accepted SRTCP index.
    pub rtcp_highest: u32,
    /// Last SRTCP index sent (the next one sent is this plus one).
    pub rtcp_sent: u32,
}

impl Stream {
    /// The 48-bit index of the highest accepted SRTP packet.
    pub fn rtp_highest(&self) -> u64 {
        (u64::from(self.roc) << 16) | u64::from(self.seq)
    }
}

/// The bounded SSRC table with its preallocated replay bitmaps.
pub struct StreamTable {
    streams: Vec<Stream>,
    bits: Vec<u64>,
    words: usize,
    window: usize,
    last: usize,
}

impl StreamTable {
    /// Allocates room for [`INITIAL_STREAMS`] streams with replay windows of `window` packets.
    pub fn new(window: usize) -> Result<Self, Error> {
        if !(replay::MIN_WINDOW..=replay::MAX_WINDOW).contains(&window) {
            return Err(Error::BadReplayWindow);
        }
        let words = replay::words_for(window);
        Ok(StreamTable {
            streams: Vec::with_capacity(INITIAL_STREAMS),
            bits: vec![0u64; INITIAL_STREAMS * 2 * words],
            words,
            window,
            last: 0,
        })
    }

    /// The replay window size in packets.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Finds the slot of `ssrc`.
    pub fn find(&self, ssrc: u32) -> Option<usize> {
        if self.streams.get(self.last).is_some_and(|s| s.ssrc == ssrc) {
            return Some(self.last);
        }
        self.streams.iter().position(|s| s.ssrc == ssrc)
    }

    /// Finds `ssrc` or, if there is room, adds a fresh entry for it.
    pub fn find_or_insert(&mut self, ssrc: u32) -> Result<usize, Error> {
        if let Some(i) = self.find(ssrc) {
            self.last = i;
            return Ok(i);
        }
        if self.streams.len() >= MAX_STREAMS {
            return Err(Error::TooManyStreams);
        }
        if self.streams.len() == self.streams.capacity() {
            // A new authenticated SSRC and no room: double (bounded by MAX_STREAMS).
            let cap = (self.streams.capacity() * 2).clamp(INITIAL_STREAMS, MAX_STREAMS);
            self.streams.reserve_exact(cap - self.streams.len());
            self.bits.resize(cap * 2 * self.words, 0);
        }
        self.streams.push(Stream {
            ssrc,
            ..Stream::default()
        });
        self.last = self.streams.len() - 1;
        Ok(self.last)
    }

    /// Remembers `slot` as the last one used (the next `find` tries it first).
    pub fn note_used(&mut self, slot: usize) {
        self.last = slot;
    }

    /// True when no new SSRC can be added.
    pub fn is_full(&self) -> bool {
        self.streams.len() >= MAX_STREAMS
    }

    /// The stream in `slot` (a value from `find`/`find_or_insert`).
    pub fn get(&self, slot: usize) -> Option<&Stream> {
        self.streams.get(slot)
    }

    /// The stream in `slot` and its SRTP replay bitmap.
    pub fn rtp_mut(&mut self, slot: usize) -> Option<(&mut Stream, &mut [u64])> {
        let (start, w) = (slot * 2 * self.words, self.words);
        let s = self.streams.get_mut(slot)?;
        Some((s, self.bits.get_mut(start..start + w)?))
    }

    /// The stream in `slot` and its SRTCP replay bitmap.
    pub fn rtcp_mut(&mut self, slot: usize) -> Option<(&mut Stream, &mut [u64])> {
        let (start, w) = (slot * 2 * self.words + self.words, self.words);
        let s = self.streams.get_mut(slot)?;
        Some((s, self.bits.get_mut(start..start + w)?))
    }

    /// The SRTP replay bitmap of `slot`.
    pub fn rtp_bits(&self, slot: usize) -> &[u64] {
        let start = slot * 2 * self.words;
        self.bits.get(start..start + self.words).unwrap_or(&[])
    }

    /// The SRTCP replay bitmap of `slot`.
    pub fn rtcp_bits(&self, slot: usize) -> &[u64] {
        let start = slot * 2 * self.words + self.words;
        self.bits.get(start..start + self.words).unwrap_or(&[])
    }
}

/// Estimates the 48-bit index of an SRTP packet with sequence number `seq` (RFC 3711 section
/// 3.3.1 / appendix A), against the highest accepted index of `s` (not the last one), so it stays
/// right across 65535 -> 0 wraps and reordering. A stream with no packet yet takes the seeded ROC.
pub fn estimate_index(s: Option<&Stream>, seq: u16) -> Result<u64, Error> {
    let (roc, s_l) = match s {
        Some(s) if s.rtp_seen => (i64::from(s.roc), i64::from(s.seq)),
        Some(s) => return Ok((u64::from(s.roc) << 16) | u64::from(seq)),
        None => return Ok(u64::from(seq)),
    };
    let seq = i64::from(seq);
    let v = if s_l < 32768 {
        if seq - s_l > 32768 {
            roc - 1
        } else {
            roc
        }
    } else if s_l - 32768 > seq {
        roc + 1
    } else {
        roc
    };
    if v < 0 {
        // Before the first packet of the stream: cannot be a packet we may accept.
        return Err(Error::Replay);
    }
    if v > i64::from(u32::MAX) {
        return Err(Error::KeyExhausted);
    }
    Ok(((v as u64) << 16) | seq as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(roc: u32, seq: u16) -> Stream {
        Stream {
            rtp_seen: true,
            roc,
            seq,
            ..Stream::default()
        }
    }

    #[test]
    fn index_estimation() {
        assert_eq!(estimate_index(None, 7), Ok(7));
        let seeded = Stream {
            roc: 3,
            ..Stream::default()
        };
        assert_eq!(estimate_index(Some(&seeded), 9), Ok((3 << 16) | 9));
        // Forward across a wrap.
        assert_eq!(estimate_index(Some(&at(0, 65530)), 2), Ok((1 << 16) | 2));
        // Late packet from before the wrap, after the wrap was seen.
        assert_eq!(estimate_index(Some(&at(1, 3)), 65534), Ok(65534));
        // Plain reordering without wraps.
        assert_eq!(estimate_index(Some(&at(5, 1000)), 990), Ok((5 << 16) | 990));
        assert_eq!(
            estimate_index(Some(&at(5, 40000)), 39000),
            Ok((5 << 16) | 39000)
        );
        // ROC cannot go below zero.
        assert_eq!(estimate_index(Some(&at(0, 3)), 65534), Err(Error::Replay));
        // Nor above 2^32 - 1.
        assert_eq!(
            estimate_index(Some(&at(u32::MAX, 65000)), 1),
            Err(Error::KeyExhausted)
        );
    }

    #[test]
    fn table_is_bounded_and_grows_only_for_new_streams() {
        let mut t = StreamTable::new(128).unwrap();
        assert_eq!(t.streams.capacity(), INITIAL_STREAMS);
        let mut grew = 0;
        for ssrc in 0..MAX_STREAMS as u32 {
            let cap = t.streams.capacity();
            assert_eq!(t.find_or_insert(ssrc), Ok(ssrc as usize));
            grew += usize::from(t.streams.capacity() != cap);
            // Known streams never grow the table.
            let cap = t.streams.capacity();
            assert_eq!(t.find_or_insert(ssrc / 2), Ok((ssrc / 2) as usize));
            assert_eq!(t.streams.capacity(), cap);
        }
        assert_eq!(grew, 4, "4 -> 8 -> 16 -> 32 -> 64");
        assert!(t.is_full());
        let cap = t.streams.capacity();
        assert_eq!(t.find_or_insert(1000), Err(Error::TooManyStreams));
        assert_eq!(t.find_or_insert(17), Ok(17));
        assert_eq!(t.streams.capacity(), cap);
        assert_eq!(cap, MAX_STREAMS);
        let (_, bits) = t.rtcp_mut(MAX_STREAMS - 1).unwrap();
        assert_eq!(bits.len(), 2);
        assert!(t.rtp_mut(MAX_STREAMS).is_none());
        assert!(StreamTable::new(63).is_err());
        assert!(StreamTable::new(1025).is_err());
        assert!(StreamTable::new(1024).is_ok());
    }
}
