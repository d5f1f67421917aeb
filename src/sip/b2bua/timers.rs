//! Every deadline of the B2BUA in one ordered set, so that `poll_timeout` is the first entry
//! (O(log n), not a scan of every call at each message) and a call's timers are cancelled by the
//! handle it keeps (O(log n) each, nothing left behind to fire for a call that is gone).

use std::collections::BTreeMap;
use std::time::Instant;

/// What a timer is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Timer {
    /// Timer B of a call's INVITE on leg B, or the wait for the final response after our
    /// CANCEL.
    Invite(String),
    /// An in-dialog offer relayed and not answered (or a 2xx offer whose ACK never came).
    Offer(String),
    /// Timer F of a relayed non-INVITE request (by branch).
    Relay(String),
    /// An agent call's backend has not accepted the stream.
    Agent(String),
    /// Established calls are checked against the media plane.
    Audit,
}

/// A handle on an armed timer: its deadline and a sequence number.
pub(super) type TimerId = (Instant, u64);

/// The ordered set of armed timers.
#[derive(Debug, Default)]
pub(super) struct Timers {
    armed: BTreeMap<TimerId, Timer>,
    seq: u64,
}

impl Timers {
    /// Arms `t` for `at`; the handle cancels it.
    pub(super) fn arm(&mut self, at: Instant, t: Timer) -> TimerId {
        self.seq += 1;
        let id = (at, self.seq);
        self.armed.insert(id, t);
        id
    }

    /// Cancels a timer (one that already fired or was cancelled is fine).
    pub(super) fn cancel(&mut self, id: TimerId) {
        self.armed.remove(&id);
    }

    /// The earliest deadline.
    pub(super) fn next(&self) -> Option<Instant> {
        self.armed.keys().next().map(|(at, _)| *at)
    }

    /// Removes and returns the earliest timer due at `now`.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let first = self.armed.first_entry()?;
        if first.key().0 > now {
            return None;
        }
        Some(first.remove())
    }

    /// Timers armed (for tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.armed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timers_fire_in_deadline_order_and_cancelled_ones_never() {
        let t0 = crate::sip::test_origin();
        let mut t = Timers::default();
        let late = t.arm(t0 + Duration::from_secs(3), Timer::Audit);
        t.arm(t0 + Duration::from_secs(1), Timer::Invite("a".into()));
        let gone = t.arm(t0 + Duration::from_secs(2), Timer::Offer("b".into()));
        t.arm(t0 + Duration::from_secs(1), Timer::Agent("c".into()));
        t.cancel(gone);
        t.cancel(gone);
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(t.pop_due(t0), None);
        let due: Vec<Timer> =
            std::iter::from_fn(|| t.pop_due(t0 + Duration::from_secs(2))).collect();
        assert_eq!(due, [Timer::Invite("a".into()), Timer::Agent("c".into())]);
        assert_eq!(t.next(), Some(late.0));
        assert_eq!(t.len(), 1);
    }
}
