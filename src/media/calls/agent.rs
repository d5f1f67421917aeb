//! Agent mode on the SIP B2BUA: srtp-edge answers an INVITE itself and the WSS backend is the
//! other party (like Twilio `<Connect><Stream>`). The caller's leg is keyed like any answered
//! SDES leg (its key inbound, a fresh key of ours outbound, in the suite and tag it chose); the
//! call's second leg stays unsignalled, so the caller's audio goes only to the fork, and the
//! backend's audio is played into the caller's leg on the worker's 20 ms clock.

use std::sync::Arc;
use std::time::SystemTime;

use super::{
    call_codec, Call, CallCodec, CallError, CallFork, Calls, ForkMeta, LegDtls, LegSdes, LegUpdate,
    Negotiation,
};
use crate::fork::ForkMode;
use crate::media::worker::Command;
use crate::redact::Redacted;
use crate::sdp::policy::{self, AnswerKeying, LocalMedia, PolicyError};
use crate::sdp::{Direction, MediaSection, Sdp};
use crate::srtp::Profile;

/// Something an agent-mode call's backend did that signaling must act on, read from
/// [`Calls::agent_events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    /// The backend accepted the WebSocket and got `start`: the call can be answered (200).
    Connected(String),
    /// The backend is unreachable, closed, or asked to hang up: BYE (or 503 before the 200).
    Hangup(String),
}

/// Keeps, on an m-line, only the payload type `pt` and the telephone-event type `event`, with
/// their `rtpmap`/`fmtp` lines: the answer lists exactly what srtp-edge will send. The
/// offerer's own stream identity (`ssrc`, `msid`) and header extensions are not ours to answer.
fn keep_formats(m: &mut MediaSection, pt: u8, event: Option<u8>) {
    let keep = |p: &str| {
        p.parse::<u8>()
            .ok()
            .is_some_and(|p| p == pt || Some(p) == event)
    };
    m.fmts.retain(|f| keep(f));
    m.lines.retain(|l| match l.as_attr() {
        Some(("rtpmap" | "fmtp", Some(v))) => keep(v.split(' ').next().unwrap_or("")),
        Some((
            "ptime" | "maxptime" | "rtcp-fb" | "ssrc" | "ssrc-group" | "msid" | "extmap"
            | "extmap-allow-mixed",
            _,
        )) => false,
        _ => true,
    });
    m.push_attr("ptime", Some("20"));
}

/// The answer's direction for an offered one (RFC 3264 6.1), at media and session level.
fn answer_direction(sdp: &mut Sdp, index: usize) {
    let flip = |l: &mut crate::sdp::model::Line| {
        let v = match l.as_attr() {
            Some(("sendonly", None)) => "recvonly",
            Some(("recvonly", None)) => "sendonly",
            _ => return,
        };
        *l = crate::sdp::model::Line::attr(v, None);
    };
    sdp.session.iter_mut().for_each(flip);
    if let Some(m) = sdp.media.get_mut(index) {
        m.lines.iter_mut().for_each(flip);
    }
}

/// True when the caller puts the call on hold: its m-line (or the session) is `a=sendonly` or
/// `a=inactive`, or its address is 0.0.0.0 (RFC 2543 hold, still sent by old phones).
fn offer_holds(sdp: &Sdp, index: usize, rtp: Option<std::net::SocketAddr>) -> bool {
    let held = |d: Option<Direction>| matches!(d, Some(Direction::SendOnly | Direction::Inactive));
    let session = sdp.session.iter().find_map(|l| {
        l.as_attr()
            .filter(|(_, v)| v.is_none())
            .and_then(|(n, _)| Direction::from_attr(n))
    });
    let media = sdp.media.get(index).and_then(|m| m.direction());
    held(media.or(session)) || rtp.is_some_and(|a| a.ip().is_unspecified())
}

/// The agent's answer to one offer, before it is applied.
struct AgentAnswer {
    sdp: Sdp,
    update: LegUpdate,
    codec: CallCodec,
    /// The leg's SDES keys (None: DTLS-keyed).
    sdes: Option<LegSdes>,
    /// A new DTLS association's state (None: SDES, or the running one is kept).
    dtls: Option<LegDtls>,
    suite: Option<Profile>,
    rtp: Option<std::net::SocketAddr>,
    mux: bool,
    hold: bool,
}

impl Calls {
    /// Answers an offer on behalf of the agent backend `backend` ([`ForkMode::Agent`]): anchors
    /// the call, keys the caller's leg (SDES, or DTLS-SRTP with our fingerprint through the same
    /// path as B2BUA/ng answers), starts the fork and returns the SDP answer for the caller. The
    /// answer should only be sent once [`AgentEvent::Connected`] arrives for this call;
    /// [`AgentEvent::Hangup`] before that means the backend is unreachable (the caller gets 503
    /// and the call is deleted).
    ///
    /// Errors: the offer's policy errors (plaintext → 488), [`CallError::UnknownForkBackend`],
    /// [`CallError::ForkRefused`] when the offer has no PCMU/PCMA, port exhaustion (503). On error
    /// nothing is left anchored.
    pub fn offer_agent(
        &self,
        n: &Negotiation<'_>,
        backend: &str,
        meta: ForkMeta,
    ) -> Result<String, CallError> {
        if super::lock(&self.table).contains_key(n.call_id) {
            return Err(self.refused(CallError::Policy(PolicyError::InvalidPlan(
                "agent call-id already anchored",
            ))));
        }
        let r = self.offer_agent_inner(n, backend, meta);
        if r.is_err() {
            let _ = self.delete(n.call_id);
        }
        r.map_err(|e| self.refused(e))
    }

    /// A new offer in an answered agent call (re-INVITE or UPDATE from the caller): hold
    /// (`a=sendonly`/`a=inactive`: the backend's audio waits, not played), resume, re-key (the
    /// caller's new SDES key is taken; ours is kept per RFC 4568 7.1.4, so the running
    /// outbound context goes on), a new DTLS association, a new address, or a codec change
    /// (the fork follows, transcoding). Returns the new answer. On error the call keeps its
    /// media as it was (the caller gets 488).
    pub fn reoffer_agent(&self, n: &Negotiation<'_>) -> Result<String, CallError> {
        self.reoffer_agent_inner(n).map_err(|e| self.refused(e))
    }

    fn reoffer_agent_inner(&self, n: &Negotiation<'_>) -> Result<String, CallError> {
        let sdp = Sdp::parse_bytes(n.sdp).map_err(PolicyError::from)?;
        let info = policy::inspect_offer(&sdp)?;
        let mut table = super::lock(&self.table);
        let call = table.get_mut(n.call_id).ok_or(CallError::UnknownCall)?;
        if !call
            .fork
            .as_ref()
            .is_some_and(|f| f.mode == ForkMode::Agent)
        {
            return Err(CallError::NotForked);
        }
        let a = self.agent_answer(call, n, &sdp, &info)?;
        let out = self.apply_agent_answer(n.call_id, call, a)?;
        let key = call.key;
        drop(table);
        let _ = self
            .engine
            .worker(key)
            .ask(|reply| Command::Query { key, reply });
        Ok(out)
    }

    /// Builds the agent's answer to `sdp` for `call`'s caller leg (leg 0): the first PCMU or
    /// PCMA offered (plus telephone-event), the answer direction, and the leg's keying.
    fn agent_answer(
        &self,
        call: &Call,
        n: &Negotiation<'_>,
        sdp: &Sdp,
        info: &policy::OfferInfo,
    ) -> Result<AgentAnswer, CallError> {
        let index = info
            .media
            .iter()
            .position(|m| m.accepted)
            .ok_or(PolicyError::NoAudio)?;
        let m = &info.media[index];
        let offered = sdp.media.get(index).ok_or(PolicyError::NoAudio)?;
        let g711 = offered
            .fmts
            .iter()
            .filter_map(|f| f.parse::<u8>().ok())
            .find_map(|pt| {
                let mut one = offered.clone();
                keep_formats(&mut one, pt, None);
                call_codec(&one).ok().map(|c| c.pt)
            })
            .ok_or_else(|| CallError::ForkRefused("the offer has no PCMU or PCMA codec".into()))?;
        let mut template = sdp.clone();
        let Some(tm) = template.media.get_mut(index) else {
            return Err(PolicyError::NoAudio.into());
        };
        let event = tm
            .fmts
            .iter()
            .filter_map(|f| f.parse::<u8>().ok().filter(|p| *p < 128))
            .find(|&pt| {
                let (name, rate) = super::encoding(tm, pt);
                name.eq_ignore_ascii_case("telephone-event") && rate == Some(8000)
            });
        keep_formats(tm, g711, event);
        let codec = call_codec(tm).map_err(CallError::ForkRefused)?;
        answer_direction(&mut template, index);
        let hold = offer_holds(sdp, index, m.rtp);

        let leg = &call.legs[0];
        let local = LocalMedia {
            addr: self.advertised(leg),
            rtp_port: leg.rtp_port,
            rtcp_port: Some(leg.rtp_port + 1),
            rtcp_mux: true,
        };
        let mut plans: Vec<Option<AnswerKeying<'_>>> =
            (0..info.media.len()).map(|_| None).collect();
        let (sdp_out, inbound, outbound, dtls_leg, sdes, dtls, suite, mux) =
            match self.dtls_offer(m)? {
                Some(d) => {
                    let k = self.key_dtls_offerer(
                        &d,
                        leg.dtls.as_ref().filter(|_| leg.sdes.is_none()),
                        local,
                        index,
                        m.rtp,
                    )?;
                    plans[index] = Some(AnswerKeying::Dtls(&k.plan));
                    let out = policy::rewrite_answer_keyed(&template, info, &plans)?;
                    let (leg, st) = match k.handshake {
                        Some((l, st)) => (Some(l), Some(st)),
                        None => (None, None),
                    };
                    (out, None, None, leg, None, st, None, true)
                }
                None => {
                    let chosen = policy::choose_crypto(m, n.suites)?;
                    let theirs = zeroize::Zeroizing::new(chosen.key.as_bytes().to_vec());
                    let k = self.key_sdes_offerer(
                        leg.sdes.as_ref(),
                        chosen.suite,
                        chosen.tag,
                        &theirs,
                        local,
                    )?;
                    plans[index] = Some(AnswerKeying::Sdes(&k.plan));
                    let out = policy::rewrite_answer_keyed(&template, info, &plans)?;
                    let (i, o) = (k.inbound, k.outbound);
                    (
                        out,
                        i,
                        o,
                        None,
                        Some(k.state),
                        None,
                        Some(chosen.suite),
                        m.rtcp_mux,
                    )
                }
            };
        Ok(AgentAnswer {
            sdp: sdp_out,
            update: LegUpdate {
                inbound,
                outbound,
                signalled: Some((m.rtp, if mux { None } else { m.rtcp })),
                rtcp_mux: Some(mux),
                relatch: false,
                // An SDES re-offer on a DTLS-keyed leg: its association goes.
                clear_dtls: dtls_leg.is_none() && sdes.is_some(),
                dtls: dtls_leg,
            },
            codec,
            sdes,
            dtls,
            suite,
            rtp: m.rtp,
            mux,
            hold,
        })
    }

    /// Hands an agent answer's keys to the worker, records them on the call, makes a running
    /// fork follow the codec and hold state, and returns the SDP with our own origin (its
    /// version bumped on every answer, RFC 3264 8).
    fn apply_agent_answer(
        &self,
        call_id: &str,
        call: &mut Call,
        a: AgentAnswer,
    ) -> Result<String, CallError> {
        let key = call.key;
        self.engine
            .worker(key)
            .send(Command::Update {
                key,
                leg: 0,
                update: Box::new(a.update),
            })
            .map_err(|_| CallError::EngineGone)?;
        let l = &mut call.legs[0];
        l.suite = a.suite;
        l.signalled = a.rtp;
        l.rtcp_mux = a.mux;
        if a.sdes.is_some() {
            l.dtls = None;
        }
        l.sdes = a.sdes;
        if let Some(st) = a.dtls {
            l.dtls = Some(st);
        }
        call.offered_g711 = true;
        call.codec = Some(Ok(a.codec));
        call.last_signal = SystemTime::now();
        let (id, version) = call.origin.get_or_insert_with(|| {
            let id = SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs());
            (id, 0)
        });
        *version += 1;
        let (id, version) = (*id, *version);
        if let Some(f) = call.fork.as_mut() {
            f.paused = a.hold;
        }
        self.retune_fork(call_id, call);
        let mut out = a.sdp;
        if let Some(o) = out.session.iter_mut().find(|l| l.kind == 'o') {
            let addr = crate::sdp::Connection::value_for(self.advertised(&call.legs[0]));
            o.value = format!("srtp-edge {id} {version} {addr}");
        }
        tracing::info!(call = %Redacted(call_id), hold = a.hold, suite = ?a.suite, dtls = call.legs[0].dtls.is_some(), codec = ?a.codec.g711, "agent media negotiated");
        Ok(out.write())
    }

    fn offer_agent_inner(
        &self,
        n: &Negotiation<'_>,
        backend: &str,
        meta: ForkMeta,
    ) -> Result<String, CallError> {
        let backend = self
            .fork_backend(backend)
            .ok_or(CallError::UnknownForkBackend)?
            .clone();
        let sdp = Sdp::parse_bytes(n.sdp).map_err(PolicyError::from)?;
        let info = policy::inspect_offer(&sdp)?;
        let rtp = info
            .media
            .iter()
            .find(|m| m.accepted)
            .ok_or(PolicyError::NoAudio)?
            .rtp;
        let mut table = super::lock(&self.table);
        // One media port pair: the second leg is parked (the backend is the other party).
        let call = self.anchor_legs(n, rtp.is_some_and(|a| a.is_ipv6()), false)?;
        let key = call.key;
        // Registered first so that any failure below is undone by `delete`.
        table.insert(n.call_id.to_string(), call);
        super::lock(&self.by_key).insert(key, n.call_id.to_string());
        let c = table.get_mut(n.call_id).ok_or(CallError::UnknownCall)?;
        c.tags[0] = Some(n.from_tag.to_string());
        let a = self.agent_answer(c, n, &sdp, &info)?;
        let (codec, suite) = (a.codec, a.suite);
        c.fork = Some(CallFork {
            backend: Arc::clone(&backend),
            mode: ForkMode::Agent,
            running: false,
            meta,
            codec: None,
            paused: false,
        });
        let out = self.apply_agent_answer(n.call_id, c, a)?;
        self.attach_fork(n.call_id, c)?;
        drop(table);
        // Barrier: the keys are in place before the caller can get our answer.
        let _ = self
            .engine
            .worker(key)
            .ask(|reply| Command::Query { key, reply });
        tracing::info!(call = %Redacted(n.call_id), backend = backend.name(), suite = ?suite, codec = ?codec.g711, "agent call anchored");
        Ok(out)
    }

    /// Agent-mode backend events ([`AgentEvent`]). One receiver: a new call replaces the
    /// previous one. The SIP B2BUA owns it.
    pub fn agent_events(&self) -> tokio::sync::mpsc::UnboundedReceiver<AgentEvent> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *super::lock(&self.agent_events) = Some(tx);
        rx
    }

    /// Reports an agent event to the signaling that asked for agent calls (if any).
    pub(super) fn agent_event(&self, e: AgentEvent) -> bool {
        let tx = super::lock(&self.agent_events).clone();
        tx.is_some_and(|tx| tx.send(e).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_narrowed_to_the_chosen_codec_and_events() {
        let sdp = Sdp::parse(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio 4000 RTP/SAVP 9 0 8 101\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:30\r\na=sendonly\r\n",
        )
        .unwrap();
        let mut m = sdp.media[0].clone();
        keep_formats(&mut m, 0, Some(101));
        let mut whole = sdp.clone();
        whole.media[0] = m;
        answer_direction(&mut whole, 0);
        let m = whole.media[0].clone();
        assert_eq!(m.fmts, ["0", "101"]);
        let text: Vec<String> = m.lines.iter().map(|l| l.value.clone()).collect();
        assert!(!text.iter().any(|l| l.contains("G722") || l == "ptime:30"));
        assert!(m.has_attr("recvonly") && !m.has_attr("sendonly"));
        assert_eq!(call_codec(&m).unwrap().event_pt, Some(101));
    }

    #[test]
    fn hold_is_sendonly_inactive_or_a_zero_address() {
        let base = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n";
        let m = "m=audio 4000 RTP/SAVP 0\r\n";
        let at: Option<std::net::SocketAddr> = "127.0.0.1:4000".parse().ok();
        let held = |session: &str, media: &str, rtp| {
            let sdp = Sdp::parse(&format!("{base}{session}{m}{media}")).unwrap();
            offer_holds(&sdp, 0, rtp)
        };
        assert!(!held("", "", at));
        assert!(!held("", "a=sendrecv\r\n", at));
        assert!(!held("", "a=recvonly\r\n", at));
        assert!(held("", "a=sendonly\r\n", at));
        assert!(held("", "a=inactive\r\n", at));
        assert!(held("a=sendonly\r\n", "", at));
        // The media level wins over the session level.
        assert!(!held("a=inactive\r\n", "a=sendrecv\r\n", at));
        assert!(held("", "", "0.0.0.0:4000".parse().ok()));
        // The answer flips session-level directions too.
        let mut sdp = Sdp::parse(&format!("{base}a=sendonly\r\n{m}")).unwrap();
        answer_direction(&mut sdp, 0);
        assert!(sdp.write().contains("a=recvonly"));
    }
}
