//! Where a leg sends its packets, and how it learns that address safely.
//!
//! A leg starts with the address from the peer's SDP. It latches onto the source of the first
//! packet that *authenticates* (symmetric RTP, for peers behind NAT); a packet that fails
//! authentication or replay checks never reaches this state machine, so it can never move the
//! stream (no RTP bleed). Once latched, authenticated packets from another address are dropped,
//! and only `relatch_after` consecutive ones from the same new address move the leg there (NAT
//! rebinding); 0 means never.

use std::net::SocketAddr;

/// The verdict for an authenticated packet from `src`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// From the latched address (or it just latched): relay it.
    Accept,
    /// It moved the leg to a new address (re-latch after NAT rebinding): relay it.
    Relatched,
    /// From another address while latched elsewhere: drop and count (`not_latched_source`).
    Foreign,
}

/// The latching state of one leg (RTP and RTCP each have one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Latch {
    signalled: Option<SocketAddr>,
    latched: Option<SocketAddr>,
    candidate: Option<(SocketAddr, u32)>,
    relatch_after: u32,
}

impl Latch {
    /// A leg that will send to `signalled` (from SDP) until it latches.
    pub fn new(signalled: Option<SocketAddr>, relatch_after: u32) -> Self {
        Latch {
            signalled,
            latched: None,
            candidate: None,
            relatch_after,
        }
    }

    /// Where packets for this peer go now: the latched address, else the signalled one.
    pub fn destination(&self) -> Option<SocketAddr> {
        self.latched.or(self.signalled)
    }

    /// The latched address, if any packet has authenticated yet.
    pub fn latched(&self) -> Option<SocketAddr> {
        self.latched
    }

    /// A new signalled address (re-INVITE / new ng offer). The latch is kept: the address that
    /// proved it holds the keys stays trusted until packets from the new one authenticate.
    pub fn set_signalled(&mut self, addr: Option<SocketAddr>) {
        self.signalled = addr;
    }

    /// Forgets the latch (re-keying: the next authenticated packet latches again).
    pub fn reset(&mut self) {
        self.latched = None;
        self.candidate = None;
    }

    /// Call only for packets that passed SRTP authentication and the replay check.
    pub fn on_authenticated(&mut self, src: SocketAddr) -> Verdict {
        match self.latched {
            None => {
                self.latched = Some(src);
                self.candidate = None;
                Verdict::Accept
            }
            Some(l) if l == src => {
                self.candidate = None;
                Verdict::Accept
            }
            Some(_) => {
                if self.relatch_after == 0 {
                    return Verdict::Foreign;
                }
                let n = match self.candidate {
                    Some((a, n)) if a == src => n + 1,
                    _ => 1,
                };
                if n >= self.relatch_after {
                    self.latched = Some(src);
                    self.candidate = None;
                    Verdict::Relatched
                } else {
                    self.candidate = Some((src, n));
                    Verdict::Foreign
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn first_authenticated_packet_latches() {
        let mut l = Latch::new(Some(a("127.0.0.1:4000")), 3);
        assert_eq!(l.destination(), Some(a("127.0.0.1:4000")));
        assert_eq!(l.on_authenticated(a("127.0.0.1:5000")), Verdict::Accept);
        assert_eq!(l.destination(), Some(a("127.0.0.1:5000")));
        assert_eq!(l.on_authenticated(a("127.0.0.1:5000")), Verdict::Accept);
    }

    #[test]
    fn relatch_needs_consecutive_packets_from_one_address() {
        let mut l = Latch::new(None, 3);
        assert_eq!(l.destination(), None);
        l.on_authenticated(a("127.0.0.1:5000"));
        let new = a("127.0.0.2:6000");
        assert_eq!(l.on_authenticated(new), Verdict::Foreign);
        assert_eq!(l.on_authenticated(new), Verdict::Foreign);
        // A packet from the old address breaks the run.
        assert_eq!(l.on_authenticated(a("127.0.0.1:5000")), Verdict::Accept);
        assert_eq!(l.on_authenticated(new), Verdict::Foreign);
        // Interleaving a third address restarts the count too.
        assert_eq!(l.on_authenticated(a("127.0.0.3:7000")), Verdict::Foreign);
        assert_eq!(l.on_authenticated(new), Verdict::Foreign);
        assert_eq!(l.on_authenticated(new), Verdict::Foreign);
        assert_eq!(l.on_authenticated(new), Verdict::Relatched);
        assert_eq!(l.destination(), Some(new));
    }

    #[test]
    fn zero_means_never() {
        let mut l = Latch::new(None, 0);
        l.on_authenticated(a("127.0.0.1:5000"));
        for _ in 0..100 {
            assert_eq!(l.on_authenticated(a("127.0.0.9:5000")), Verdict::Foreign);
        }
        assert_eq!(l.latched(), Some(a("127.0.0.1:5000")));
    }
}
