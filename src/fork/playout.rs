//! The playout queue of backend audio: re-framed to 20 ms, bounded, with marks in line.
//!
//! A backend sends audio in pieces of any length and usually faster than real time; the call
//! needs exactly one 20 ms frame per clock tick. This queue holds what is waiting (bounded,
//! default 60 s; audio beyond it is dropped and counted), keeps each mark behind the audio that
//! was queued before it, and reports marks in order once played or, on `clear`, at once. Pure:
//! the IO shell moves [`PlayItem`]s to the media worker and reports back which marks it reached.

use std::collections::VecDeque;

use super::codec::G711;

/// Samples in one 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;

/// Frames in the default playout bound (60 s).
pub const DEFAULT_MAX_FRAMES: usize = 3000;

/// Most marks waiting at once; later ones are refused (counted) so a backend cannot grow memory.
pub const MAX_PENDING_MARKS: usize = 1024;

/// One element of the queue, in play order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayItem {
    /// 20 ms of audio in the call's codec.
    Audio([u8; FRAME_SAMPLES]),
    /// A mark, by sequence number: reached when every audio item before it has been played.
    Mark(u64),
}

/// A mark that the backend must be told about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkEcho {
    /// The backend's mark name.
    pub name: String,
    /// True when the audio before it was flushed by `clear` rather than played.
    pub cleared: bool,
}

/// The playout queue of one call.
#[derive(Debug)]
pub struct Playout {
    codec: G711,
    items: VecDeque<PlayItem>,
    audio_frames: usize,
    max_frames: usize,
    partial: [u8; FRAME_SAMPLES],
    partial_len: usize,
    next_mark: u64,
    pending: VecDeque<(u64, String)>,
    dropped_frames: u64,
    refused_marks: u64,
}

impl Playout {
    /// An empty queue for a call using `codec`, holding at most `max_frames` 20 ms frames.
    pub fn new(codec: G711, max_frames: usize) -> Playout {
        Playout {
            codec,
            items: VecDeque::new(),
            audio_frames: 0,
            max_frames: max_frames.max(1),
            partial: [0; FRAME_SAMPLES],
            partial_len: 0,
            next_mark: 0,
            pending: VecDeque::new(),
            dropped_frames: 0,
            refused_marks: 0,
        }
    }

    /// The codec frames are produced in.
    pub fn codec(&self) -> G711 {
        self.codec
    }

    /// Queues audio already in the call's codec; returns how many whole frames were dropped
    /// because the queue was full.
    pub fn push_audio(&mut self, mut code_words: &[u8]) -> u64 {
        let mut dropped = 0;
        while !code_words.is_empty() {
            let take = (FRAME_SAMPLES - self.partial_len).min(code_words.len());
            self.partial[self.partial_len..self.partial_len + take]
                .copy_from_slice(&code_words[..take]);
            self.partial_len += take;
            code_words = &code_words[take..];
            if self.partial_len == FRAME_SAMPLES && !self.commit_partial() {
                dropped += 1;
            }
        }
        self.dropped_frames += dropped;
        dropped
    }

    fn commit_partial(&mut self) -> bool {
        let ok = self.audio_frames < self.max_frames;
        if ok {
            self.items.push_back(PlayItem::Audio(self.partial));
            self.audio_frames += 1;
        }
        self.partial_len = 0;
        ok
    }

    /// Pads a partial frame with silence and queues it (when the backend has gone quiet, or
    /// before a mark, so that the mark follows all the audio sent before it).
    pub fn flush_partial(&mut self) {
        if self.partial_len > 0 {
            let s = self.codec.silence();
            self.partial[self.partial_len..].fill(s);
            self.partial_len = FRAME_SAMPLES;
            if !self.commit_partial() {
                self.dropped_frames += 1;
            }
        }
    }

    /// Queues a mark behind the audio queued so far. Returns false (and counts) when too many
    /// marks are already waiting.
    pub fn push_mark(&mut self, name: String) -> bool {
        if self.pending.len() >= MAX_PENDING_MARKS {
            self.refused_marks += 1;
            return false;
        }
        self.flush_partial();
        let seq = self.next_mark;
        self.next_mark += 1;
        self.items.push_back(PlayItem::Mark(seq));
        self.pending.push_back((seq, name));
        true
    }

    /// Takes the next item to hand to the media worker.
    pub fn pop(&mut self) -> Option<PlayItem> {
        let it = self.items.pop_front()?;
        if matches!(it, PlayItem::Audio(_)) {
            self.audio_frames -= 1;
        }
        Some(it)
    }

    /// The media worker reached mark `seq`: every mark up to it has been played, in order.
    pub fn marks_played(&mut self, seq: u64, out: &mut Vec<MarkEcho>) {
        while let Some((s, _)) = self.pending.front() {
            if *s > seq {
                break;
            }
            if let Some((_, name)) = self.pending.pop_front() {
                out.push(MarkEcho {
                    name,
                    cleared: false,
                });
            }
        }
    }

    /// Flushes all queued audio (the caller also drains what it handed to the worker) and
    /// reports every pending mark, in order, as cleared.
    pub fn clear(&mut self, out: &mut Vec<MarkEcho>) {
        self.items.clear();
        self.audio_frames = 0;
        self.partial_len = 0;
        out.extend(self.pending.drain(..).map(|(_, name)| MarkEcho {
            name,
            cleared: true,
        }));
    }

    /// Whole frames of audio waiting (not counting a partial frame).
    pub fn queued_frames(&self) -> usize {
        self.audio_frames
    }

    /// True when nothing at all is waiting, not even a partial frame.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty() && self.partial_len == 0
    }

    /// Marks still waiting to be echoed.
    pub fn pending_marks(&self) -> usize {
        self.pending.len()
    }

    /// Frames dropped because the queue was full, since the start.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped_frames
    }

    /// Marks refused because too many were waiting, since the start.
    pub fn refused_marks(&self) -> u64 {
        self.refused_marks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[MarkEcho]) -> Vec<(&str, bool)> {
        v.iter().map(|m| (m.name.as_str(), m.cleared)).collect()
    }

    /// Plays everything like the media worker would; returns frames played and marks reached.
    fn play_all(p: &mut Playout, echoes: &mut Vec<MarkEcho>) -> usize {
        let mut frames = 0;
        while let Some(it) = p.pop() {
            match it {
                PlayItem::Audio(_) => frames += 1,
                PlayItem::Mark(s) => p.marks_played(s, echoes),
            }
        }
        frames
    }

    #[test]
    fn audio_is_reframed_to_20ms() {
        let mut p = Playout::new(G711::Pcmu, 100);
        p.push_audio(&[1u8; 100]);
        assert_eq!(p.queued_frames(), 0);
        p.push_audio(&[2u8; 300]);
        assert_eq!(p.queued_frames(), 2);
        let Some(PlayItem::Audio(f)) = p.pop() else {
            panic!("expected audio")
        };
        assert_eq!(&f[..100], &[1u8; 100][..]);
        assert_eq!(&f[100..], &[2u8; 60][..]);
        p.pop();
        assert!(!p.is_empty(), "80 bytes still partial");
        p.flush_partial();
        let Some(PlayItem::Audio(f)) = p.pop() else {
            panic!("expected audio")
        };
        assert_eq!(&f[..80], &[2u8; 80][..]);
        assert_eq!(&f[80..], &[0xFFu8; 80][..], "padded with μ-law silence");
        assert!(p.is_empty());
    }

    #[test]
    fn marks_follow_their_audio_in_order() {
        let mut p = Playout::new(G711::Pcma, 100);
        let mut e = Vec::new();
        p.push_audio(&[0u8; 320]);
        p.push_mark("a".into());
        p.push_audio(&[0u8; 100]);
        p.push_mark("b".into());
        // First frame played: no mark yet.
        assert!(matches!(p.pop(), Some(PlayItem::Audio(_))));
        assert!(matches!(p.pop(), Some(PlayItem::Audio(_))));
        let Some(PlayItem::Mark(a)) = p.pop() else {
            panic!("mark a expected after two frames")
        };
        p.marks_played(a, &mut e);
        assert_eq!(names(&e), vec![("a", false)]);
        // The partial 100 bytes were padded so "b" comes after them.
        assert!(matches!(p.pop(), Some(PlayItem::Audio(_))));
        let Some(PlayItem::Mark(b)) = p.pop() else {
            panic!("mark b expected")
        };
        p.marks_played(b, &mut e);
        assert_eq!(names(&e), vec![("a", false), ("b", false)]);
        assert_eq!(p.pending_marks(), 0);
    }

    #[test]
    fn a_later_mark_reached_echoes_earlier_ones_first() {
        let mut p = Playout::new(G711::Pcmu, 100);
        let mut e = Vec::new();
        p.push_mark("1".into());
        p.push_mark("2".into());
        p.push_mark("3".into());
        p.marks_played(1, &mut e);
        assert_eq!(names(&e), vec![("1", false), ("2", false)]);
        p.marks_played(0, &mut e);
        assert_eq!(e.len(), 2, "an old report echoes nothing twice");
    }

    #[test]
    fn clear_flushes_and_echoes_pending_marks_in_order() {
        let mut p = Playout::new(G711::Pcmu, 1000);
        let mut e = Vec::new();
        p.push_audio(&[0u8; 160 * 10]);
        p.push_mark("x".into());
        p.push_audio(&[0u8; 160 * 10]);
        p.push_mark("y".into());
        p.push_audio(&[0u8; 50]);
        p.clear(&mut e);
        assert_eq!(names(&e), vec![("x", true), ("y", true)]);
        assert!(p.is_empty());
        assert_eq!(p.queued_frames(), 0);
        assert_eq!(play_all(&mut p, &mut e), 0);
        // The queue works normally afterwards.
        p.push_audio(&[0u8; 160]);
        p.push_mark("z".into());
        assert_eq!(play_all(&mut p, &mut e), 1);
        assert_eq!(
            e.last().map(|m| (m.name.as_str(), m.cleared)),
            Some(("z", false))
        );
    }

    #[test]
    fn the_queue_is_bounded() {
        let mut p = Playout::new(G711::Pcmu, 50);
        assert_eq!(p.push_audio(&vec![0u8; 160 * 80]), 30);
        assert_eq!(p.queued_frames(), 50);
        assert_eq!(p.dropped_frames(), 30);
        let mut e = Vec::new();
        assert_eq!(play_all(&mut p, &mut e), 50);
        for i in 0..MAX_PENDING_MARKS {
            assert!(p.push_mark(i.to_string()));
        }
        assert!(!p.push_mark("one too many".into()));
        assert_eq!(p.refused_marks(), 1);
    }
}
