//! The two sides of a call, shared by the SIP core and the media code.
//!
//! A call anchored in srtp-edge has exactly two legs: side `A` (the party whose offer created the
//! call: the caller, or the ng from-tag) and side `B` (the other party). Code indexes its per-leg
//! state as `[T; 2]` with a [`Side`] instead of `0`, `1`, `1 - side` or `leg_i`, so that "the
//! other leg" is always `side.other()` and a leg can never be confused with a count.

use std::ops::{Index, IndexMut};

/// One of a call's two legs; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// The party whose offer created the call (SIP caller, ng from-tag).
    A,
    /// The other party (SIP callee, ng to-tag, or the agent backend).
    B,
}

impl Side {
    /// Both sides, A first.
    pub const BOTH: [Side; 2] = [Side::A, Side::B];

    /// The leg on the other side of the relay.
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    /// 0 for A, 1 for B: the position in wire formats and arrays that predate [`Side`].
    pub fn index(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }

    /// The side at position `i` (0 or 1); `None` for anything else.
    pub fn from_index(i: usize) -> Option<Side> {
        match i {
            0 => Some(Side::A),
            1 => Some(Side::B),
            _ => None,
        }
    }
}

impl<T> Index<Side> for [T; 2] {
    type Output = T;
    fn index(&self, side: Side) -> &T {
        &self[side.index()]
    }
}

impl<T> IndexMut<Side> for [T; 2] {
    fn index_mut(&mut self, side: Side) -> &mut T {
        &mut self[side.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_is_an_involution_and_indexing_follows_the_side() {
        let mut legs = ["caller", "callee"];
        for s in Side::BOTH {
            assert_eq!(s.other().other(), s);
            assert_ne!(s.other(), s);
            assert_eq!(Side::from_index(s.index()), Some(s));
        }
        assert_eq!(legs[Side::A], "caller");
        legs[Side::B] = "agent";
        assert_eq!(legs[Side::A.other()], "agent");
        assert_eq!(Side::from_index(2), None);
    }
}
