//! Whole SIP calls through the real B2BUA and call table in simulated time (see `sim`): setup,
//! a re-keying re-INVITE, BYE; CANCEL before and crossing the 200; Timer B and Timer F; glare;
//! an unanswered re-offer; a media timeout. Each runs over many seeds (the seed decides the
//! latencies, hence which of two crossing messages arrives first) and replays from one with
//! `SIM_SEED=<seed>`; none sleeps, so 32 s of Timer B pass in microseconds.

use std::time::Duration;

use srtp_edge::sip::b2bua::{MediaEvent, Outcome, TIMER_B};
use srtp_edge::sip::Method;

use crate::sim::{sdes_key, seeds, Node, Sim};

const SEEDS: u64 = 16;

/// The caller hangs up: 200 to it, BYE to the callee, which answers; nothing is left.
fn caller_hangs_up(s: &mut Sim) {
    s.request(Node::Caller, Method::Bye, None);
    s.settle();
    s.take_response(Node::Caller, 200);
    let bye = s.take_request(Node::Callee, Method::Bye);
    s.respond(Node::Callee, &bye, 200, None);
    s.settle();
    s.assert_clean();
}

#[test]
fn a_whole_call_with_a_rekeying_reinvite_from_each_side() {
    for seed in seeds(SEEDS) {
        let mut s = Sim::new(seed);
        let inv = s.established();
        let edge_key = sdes_key(&inv.body);
        s.check(edge_key.is_some(), "the callee is offered SDES");
        s.check(
            !s.nothing_for(Node::Callee) || s.edge.len() == 1,
            "one call up",
        );

        // The caller re-keys (a new SDES key in a re-INVITE): relayed to the callee with
        // srtp-edge's key towards it unchanged (RFC 4568 7.1.4), answered, ACKed on both legs.
        let offer = s.sdes_offer(4002);
        s.request(Node::Caller, Method::Invite, Some(&offer));
        s.settle();
        let re = s.take_request(Node::Callee, Method::Invite);
        s.check(
            sdes_key(&re.body) == edge_key,
            "srtp-edge keeps its key to the callee",
        );
        s.check(
            !String::from_utf8_lossy(&re.body).contains("m=audio 4002"),
            &format!(
                "the caller's SDP does not cross: {}",
                String::from_utf8_lossy(&re.body)
            ),
        );
        let answer = s.sdes_answer(&re.body, 5002);
        s.respond(Node::Callee, &re, 200, Some(&answer));
        s.settle();
        let ok = s.take_response(Node::Caller, 200);
        s.check(
            sdes_key(&ok.body).is_some(),
            "the caller gets an SDES answer",
        );
        s.take_request(Node::Callee, Method::Ack);
        s.caller_ack(&ok, None);

        // The callee re-keys too.
        let offer = s.sdes_offer(5004);
        s.request(Node::Callee, Method::Invite, Some(&offer));
        s.settle();
        let re = s.take_request(Node::Caller, Method::Invite);
        let answer = s.sdes_answer(&re.body, 4004);
        s.respond(Node::Caller, &re, 200, Some(&answer));
        s.settle();
        s.take_response(Node::Callee, 200);
        s.take_request(Node::Caller, Method::Ack);
        s.check(s.nothing_for(Node::Caller), "nothing else for the caller");
        s.check(s.nothing_for(Node::Callee), "nothing else for the callee");

        caller_hangs_up(&mut s);
        s.check(s.ended(Outcome::Answered) == 1, "counted once as answered");
        s.check(
            s.now - s.start() < Duration::from_secs(2),
            "the whole call took well under 2 s of simulated time",
        );
    }
}

#[test]
fn cancel_before_the_200_gets_487_and_the_target_is_acked_not_hung_up() {
    for seed in seeds(SEEDS) {
        let mut s = Sim::new(seed);
        let inv = s.invite_to_callee();
        s.respond(Node::Callee, &inv, 180, None);
        s.settle();
        s.take_response(Node::Caller, 180);
        s.caller_cancel();
        s.settle();
        s.take_response_to(Node::Caller, 200, Method::Cancel);
        s.take_response(Node::Caller, 487);
        let cancel = s.take_request(Node::Callee, Method::Cancel);
        s.check(
            cancel
                .headers
                .top_via()
                .ok()
                .and_then(|v| v.branch().map(<[u8]>::to_vec))
                == inv
                    .headers
                    .top_via()
                    .ok()
                    .and_then(|v| v.branch().map(<[u8]>::to_vec)),
            "the CANCEL has the INVITE's branch",
        );
        // A provisional that crossed the CANCEL is not relayed after the caller's 487; the
        // target answers the CANCEL and terminates the INVITE.
        s.respond(Node::Callee, &inv, 183, None);
        s.respond(Node::Callee, &cancel, 200, None);
        s.respond(Node::Callee, &inv, 487, None);
        s.settle();
        let ack = s.take_request(Node::Callee, Method::Ack);
        s.check(
            ack.headers.cseq().map(|c| c.seq).ok() == Some(1),
            "the 487 is ACKed with the INVITE's CSeq",
        );
        // The 200 to the CANCEL is not taken for the INVITE's 200: no ACK or BYE for it.
        s.check(s.nothing_for(Node::Callee), "nothing else for the callee");
        s.check(s.nothing_for(Node::Caller), "nothing else for the caller");
        s.assert_clean();
        s.check(
            s.ended(Outcome::Cancelled) == 1,
            "counted once as cancelled",
        );
    }
}

#[test]
fn cancel_crossing_the_200_ends_with_one_final_response_and_no_call_left() {
    let (mut cancelled, mut answered) = (0, 0);
    for seed in seeds(64) {
        let mut s = Sim::new(seed);
        let inv = s.invite_to_callee();
        s.respond(Node::Callee, &inv, 180, None);
        s.settle();
        let ringing = s.take_response(Node::Caller, 180);
        s.caller_learns(&ringing);
        // At the same instant: the callee answers, the caller gives up.
        let answer = s.sdes_answer(&inv.body, 5000);
        s.respond(Node::Callee, &inv, 200, Some(&answer));
        s.caller_cancel();
        s.settle();
        s.take_response_to(Node::Caller, 200, Method::Cancel); // either way
        let inbox = s.inbox(Node::Caller);
        if inbox.contains(&"487".to_string()) {
            // The CANCEL won: the caller got 487 only; the callee's 200 is ACKed and hung up.
            cancelled += 1;
            s.take_response(Node::Caller, 487);
            s.check(
                s.nothing_for(Node::Caller),
                "one final response for the caller",
            );
            let cancel = s.take_request(Node::Callee, Method::Cancel);
            s.respond(Node::Callee, &cancel, 200, None); // too late: no effect
            s.take_request(Node::Callee, Method::Ack);
            let bye = s.take_request(Node::Callee, Method::Bye);
            s.respond(Node::Callee, &bye, 200, None);
            s.settle();
            s.check(s.nothing_for(Node::Callee), "nothing else for the callee");
            s.assert_clean();
            s.check(s.ended(Outcome::Cancelled) == 1, "counted as cancelled");
        } else {
            // The 200 won: the call is up (the CANCEL had no effect), and hangs up normally.
            answered += 1;
            let ok = s.take_response_to(Node::Caller, 200, Method::Invite);
            s.check(
                s.nothing_for(Node::Caller),
                "one final response for the caller",
            );
            s.take_request(Node::Callee, Method::Ack);
            s.caller_ack(&ok, None);
            s.settle();
            s.check(
                s.nothing_for(Node::Callee),
                "the CANCEL is not relayed after the 200",
            );
            caller_hangs_up(&mut s);
        }
    }
    if std::env::var("SIM_SEED").is_err() {
        assert!(
            cancelled > 0 && answered > 0,
            "both orders seen: {cancelled} {answered}"
        );
    }
}

#[test]
fn timer_b_gives_408_to_the_caller_and_cancels_the_silent_target() {
    for seed in seeds(SEEDS) {
        let mut s = Sim::new(seed);
        let inv = s.invite_to_callee();
        s.respond(Node::Callee, &inv, 180, None);
        s.settle();
        s.take_response(Node::Caller, 180);
        let sent = s.now;
        s.run_for(TIMER_B - Duration::from_millis(100));
        s.check(s.nothing_for(Node::Caller), "no 408 before Timer B");
        s.run_for(Duration::from_secs(1));
        s.take_response(Node::Caller, 408);
        let cancel = s.take_request(Node::Callee, Method::Cancel);
        s.check(s.calls.is_empty(), "ports released at Timer B");
        // The target answers late: its 487 is still ACKed.
        s.respond(Node::Callee, &cancel, 200, None);
        s.respond(Node::Callee, &inv, 487, None);
        s.settle();
        s.take_request(Node::Callee, Method::Ack);
        s.assert_clean();
        s.check(s.ended(Outcome::Timeout) == 1, "counted as timeout");
        s.check(
            s.now - sent < TIMER_B + Duration::from_secs(2),
            "408 at Timer B, not later",
        );

        // A target that never answers anything: 408, and the call is gone after another
        // Timer B without its final response.
        s.invite_to_callee();
        s.run_for(TIMER_B + Duration::from_secs(1));
        s.take_response(Node::Caller, 408);
        s.take_request(Node::Callee, Method::Cancel);
        s.run_for(TIMER_B + Duration::from_secs(1));
        s.assert_clean();
    }
}

#[test]
fn timer_f_answers_an_unanswered_relayed_info_with_408_and_the_call_goes_on() {
    for seed in seeds(SEEDS) {
        let mut s = Sim::new(seed);
        s.established();
        s.request(Node::Caller, Method::Info, None);
        s.settle();
        s.take_request(Node::Callee, Method::Info);
        s.run_for(TIMER_B - Duration::from_millis(100));
        s.check(s.nothing_for(Node::Caller), "no 408 before Timer F");
        s.run_for(Duration::from_secs(1));
        s.take_response(Node::Caller, 408);
        s.check(s.edge.len() == 1, "the call goes on");
        s.check(s.edge.transactions() == 0, "the transaction is gone");
        caller_hangs_up(&mut s);
    }
}

#[test]
fn an_unanswered_reoffer_gets_408_and_the_next_one_goes_through() {
    for seed in seeds(SEEDS) {
        let mut s = Sim::new(seed);
        s.established();
        let offer = s.sdes_offer(4002);
        s.request(Node::Caller, Method::Invite, Some(&offer));
        s.settle();
        s.take_request(Node::Callee, Method::Invite);
        s.run_for(TIMER_B + Duration::from_secs(1));
        let r = s.take_response(Node::Caller, 408);
        s.caller_ack(&r, None);
        s.check(s.edge.len() == 1, "the call goes on");
        // The exchange is over: a new offer is relayed, not refused with 500.
        s.request(Node::Caller, Method::Invite, Some(&offer));
        s.settle();
        let re = s.take_request(Node::Callee, Method::Invite);
        let answer = s.sdes_answer(&re.body, 5002);
        s.respond(Node::Callee, &re, 200, Some(&answer));
        s.settle();
        let ok = s.take_response(Node::Caller, 200);
        s.take_request(Node::Callee, Method::Ack);
        s.caller_ack(&ok, None);
        caller_hangs_up(&mut s);
    }
}

#[test]
fn crossing_reinvites_meet_491_and_the_retry_goes_through() {
    let mut orders = [0; 2];
    for seed in seeds(48) {
        let mut s = Sim::new(seed);
        s.established();
        let (oa, ob) = (s.sdes_offer(4002), s.sdes_offer(5002));
        s.request(Node::Caller, Method::Invite, Some(&oa));
        s.request(Node::Callee, Method::Invite, Some(&ob));
        s.settle();
        // Whichever reached srtp-edge first was relayed; the other got 491 from srtp-edge.
        let (first, second) = if s.inbox(Node::Callee).contains(&"491".to_string()) {
            orders[0] += 1;
            (Node::Caller, Node::Callee)
        } else {
            orders[1] += 1;
            (Node::Callee, Node::Caller)
        };
        let refused = s.take_response(second, 491);
        s.caller_or_callee_ack(second, &refused);
        // The party that received the relayed re-INVITE has its own pending: 491 too
        // (RFC 3261 14.1), relayed to the sender, and srtp-edge ACKs it on its branch.
        let relayed = s.take_request(second, Method::Invite);
        s.respond(second, &relayed, 491, None);
        s.settle();
        let ack = s.take_request(second, Method::Ack);
        s.check(
            ack.headers
                .top_via()
                .ok()
                .and_then(|v| v.branch().map(<[u8]>::to_vec))
                == relayed
                    .headers
                    .top_via()
                    .ok()
                    .and_then(|v| v.branch().map(<[u8]>::to_vec)),
            "the 491 is ACKed on the re-INVITE's branch",
        );
        let r = s.take_response(first, 491);
        s.caller_or_callee_ack(first, &r);
        s.settle();
        s.check(s.nothing_for(Node::Caller), "nothing else for the caller");
        s.check(s.nothing_for(Node::Callee), "nothing else for the callee");
        // The retry after the random wait goes through.
        let wait = Duration::from_millis(2100 + s.rng_below(1900));
        s.run_for(wait);
        let offer = s.sdes_offer(4006);
        s.request(Node::Caller, Method::Invite, Some(&offer));
        s.settle();
        let re = s.take_request(Node::Callee, Method::Invite);
        let answer = s.sdes_answer(&re.body, 5006);
        s.respond(Node::Callee, &re, 200, Some(&answer));
        s.settle();
        let ok = s.take_response(Node::Caller, 200);
        s.take_request(Node::Callee, Method::Ack);
        s.caller_ack(&ok, None);
        caller_hangs_up(&mut s);
    }
    if std::env::var("SIM_SEED").is_err() {
        assert!(
            orders[0] > 0 && orders[1] > 0,
            "both orders seen: {orders:?}"
        );
    }
}

#[test]
fn refused_calls_plaintext_and_a_busy_target() {
    for seed in seeds(SEEDS) {
        let mut s = Sim::new(seed);
        let plain = s.plain_offer();
        s.caller_invite(&plain);
        s.settle();
        s.take_response(Node::Caller, 100);
        let r = s.take_response(Node::Caller, 488);
        s.check(
            r.headers.get("Warning").is_some(),
            "488 says SRTP is required",
        );
        s.check(s.nothing_for(Node::Callee), "nothing reaches the target");
        s.caller_ack(&r, None);
        s.settle();
        s.assert_clean();

        let inv = s.invite_to_callee();
        s.respond(Node::Callee, &inv, 486, None);
        s.settle();
        s.take_response(Node::Caller, 486);
        s.take_request(Node::Callee, Method::Ack);
        s.assert_clean();
        s.check(s.ended(Outcome::Plaintext) == 1, "plaintext counted");
        s.check(s.ended(Outcome::Rejected) == 1, "busy counted");
    }
}

#[test]
fn media_timeout_hangs_up_both_legs_at_the_audit_or_at_once_when_told() {
    for seed in seeds(SEEDS) {
        let mut s = Sim::new(seed);
        let inv = s.established();
        let key = String::from_utf8_lossy(inv.headers.call_id().unwrap_or_default()).into_owned();
        // The media plane ends the call on its own (as a media timeout does).
        let _ = s.calls.delete(&key);
        s.run_for(srtp_edge::sip::b2bua::AUDIT_EVERY + Duration::from_millis(100));
        let bye = s.take_request(Node::Caller, Method::Bye);
        s.respond(Node::Caller, &bye, 200, None);
        let bye = s.take_request(Node::Callee, Method::Bye);
        s.respond(Node::Callee, &bye, 200, None);
        s.settle();
        s.assert_clean();
        s.check(
            s.ended(Outcome::MediaTimeout) == 1,
            "counted as media timeout",
        );

        let inv = s.established();
        let key = String::from_utf8_lossy(inv.headers.call_id().unwrap_or_default()).into_owned();
        let _ = s.calls.delete(&key);
        s.media_event(MediaEvent::Ended(key));
        s.run_for(Duration::from_millis(100));
        s.take_request(Node::Caller, Method::Bye);
        s.take_request(Node::Callee, Method::Bye);
        s.assert_clean();
    }
}

#[test]
fn a_run_replays_exactly_from_its_seed() {
    let run = |seed| {
        let mut s = Sim::new(seed);
        s.established();
        caller_hangs_up(&mut s);
        std::mem::take(&mut s.trace)
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}

#[test]
fn ending_one_call_leaves_the_transactions_of_the_others() {
    for seed in seeds(4) {
        let mut s = Sim::new(seed);
        s.established();
        let first = s.caller.dialog.clone();
        let first_callee = s.callee.dialog.clone();
        // A second call, with an INFO relayed and unanswered on it.
        s.established();
        s.request(Node::Caller, Method::Info, None);
        s.settle();
        let info = s.take_request(Node::Callee, Method::Info);
        s.check(s.edge.transactions() == 1, "one transaction in flight");
        // The first call ends: the second call's transaction is untouched.
        let second = std::mem::replace(&mut s.caller.dialog, first);
        let second_callee = std::mem::replace(&mut s.callee.dialog, first_callee);
        caller_hangs_up_partly(&mut s);
        s.check(s.edge.len() == 1, "the second call is up");
        s.check(s.edge.transactions() == 1, "its transaction is still there");
        s.caller.dialog = second;
        s.callee.dialog = second_callee;
        s.respond(Node::Callee, &info, 200, None);
        s.settle();
        s.take_response(Node::Caller, 200);
        caller_hangs_up(&mut s);
    }
}

/// The caller hangs up one call among others (no check that nothing is left).
fn caller_hangs_up_partly(s: &mut Sim) {
    s.request(Node::Caller, Method::Bye, None);
    s.settle();
    s.take_response(Node::Caller, 200);
    let bye = s.take_request(Node::Callee, Method::Bye);
    s.respond(Node::Callee, &bye, 200, None);
    s.settle();
}
