//! Agent mode on the SIP B2BUA: srtp-edge answers an INVITE itself and the WSS backend is the
//! other party (like Twilio `<Connect><Stream>`). The caller's leg is keyed like any answered
//! SDES leg (its key inbound, a fresh key of ours outbound, in the suite and tag it chose); the
//! call's second leg stays unsignalled, so the caller's audio goes only to the fork, and the
//! backend's audio is played into the caller's leg on the worker's 20 ms clock.

use std::sync::Arc;
use std::time::SystemTime;

use super::{call_codec, CallError, CallFork, Calls, ForkMeta, LegUpdate, Negotiation};
use crate::fork::ForkMode;
use crate::media::worker::Command;
use crate::redact::Redacted;
use crate::sdp::policy::{self, AnswerPlan, LocalMedia, PolicyError, SdesKey};
use crate::sdp::{MediaSection, Sdp};

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
/// their `rtpmap`/`fmtp` lines: the answer lists exactly what srtp-edge will send.
fn keep_formats(m: &mut MediaSection, pt: u8, event: Option<u8>) {
    let keep = |p: &str| {
        p.parse::<u8>()
            .ok()
            .is_some_and(|p| p == pt || Some(p) == event)
    };
    m.fmts.retain(|f| keep(f));
    m.lines.retain(|l| match l.as_attr() {
        Some(("rtpmap" | "fmtp", Some(v))) => keep(v.split(' ').next().unwrap_or("")),
        Some(("ptime" | "maxptime" | "rtcp-fb", _)) => false,
        _ => true,
    });
    m.push_attr("ptime", Some("20"));
}

/// The answer's direction for an offered one (RFC 3264 6.1).
fn answer_direction(m: &mut MediaSection) {
    let flip = |l: &mut crate::sdp::model::Line| {
        let v = match l.as_attr() {
            Some(("sendonly", None)) => "recvonly",
            Some(("recvonly", None)) => "sendonly",
            _ => return,
        };
        *l = crate::sdp::model::Line::attr(v, None);
    };
    m.lines.iter_mut().for_each(flip);
}

impl Calls {
    /// Answers an offer on behalf of the agent backend `backend` ([`ForkMode::Agent`]): anchors
    /// the call, keys the caller's leg (SDES; DTLS offers are refused), starts the fork and
    /// returns the SDP answer for the caller. The answer should only be sent once
    /// [`AgentEvent::Connected`] arrives for this call; [`AgentEvent::Hangup`] before that means
    /// the backend is unreachable (the caller gets 503 and the call is deleted).
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
        let index = info
            .media
            .iter()
            .position(|m| m.accepted)
            .ok_or(PolicyError::NoAudio)?;
        let m = &info.media[index];
        // DTLS-SRTP offers are refused here (488): agent calls are keyed with SDES only.
        let chosen = policy::choose_crypto(m, n.suites)?;
        let offerer_key = zeroize::Zeroizing::new(chosen.key.as_bytes().to_vec());
        let inbound = self.ctx(chosen.suite, &offerer_key)?;
        let ours = SdesKey::generate(chosen.suite)?;
        let outbound = self.ctx(ours.suite, ours.key.as_bytes())?;
        let (tag, suite) = (chosen.tag, chosen.suite);
        let (rtp, rtcp, mux) = (m.rtp, m.rtcp, m.rtcp_mux);
        // The codec: the first PCMU or PCMA the caller offered (plus telephone-event).
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
        answer_direction(tm);
        let codec = call_codec(tm).map_err(CallError::ForkRefused)?;

        let mut table = super::lock(&self.table);
        let peer_v6 = rtp.is_some_and(|a| a.is_ipv6());
        let call = self.anchor(n, peer_v6)?;
        let key = call.key;
        let leg = &call.legs[0];
        let local = LocalMedia {
            addr: self.advertised(leg),
            rtp_port: leg.rtp_port,
            rtcp_port: Some(leg.rtp_port + 1),
            rtcp_mux: true,
        };
        let mut plans: Vec<Option<AnswerPlan>> = (0..info.media.len()).map(|_| None).collect();
        plans[index] = Some(AnswerPlan {
            local,
            tag,
            key: ours,
        });
        // Registered first so that any failure below is undone by `delete`.
        table.insert(n.call_id.to_string(), call);
        super::lock(&self.by_key).insert(key, n.call_id.to_string());
        let mut out = policy::rewrite_answer(&template, &info, &plans)?;
        // Our own origin: session id and version from the clock, our address.
        if let Some(o) = out.session.iter_mut().find(|l| l.kind == 'o') {
            let id = SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs());
            let addr = crate::sdp::Connection::value_for(local.addr);
            o.value = format!("srtp-edge {id} 1 {addr}");
        }
        self.engine
            .worker(key)
            .send(Command::Update {
                key,
                leg: 0,
                update: Box::new(LegUpdate {
                    inbound: Some(inbound),
                    outbound: Some(outbound),
                    signalled: Some((rtp, if mux { None } else { rtcp })),
                    rtcp_mux: Some(mux),
                    relatch: false,
                    dtls: None,
                    clear_dtls: false,
                }),
            })
            .map_err(|_| CallError::EngineGone)?;
        let c = table.get_mut(n.call_id).ok_or(CallError::UnknownCall)?;
        c.tags[0] = Some(n.from_tag.to_string());
        c.legs[0].suite = Some(suite);
        c.legs[0].signalled = rtp;
        c.legs[0].rtcp_mux = mux;
        c.offered_g711 = true;
        c.codec = Some(Ok(codec));
        c.fork = Some(CallFork {
            backend: Arc::clone(&backend),
            mode: ForkMode::Agent,
            running: false,
            meta,
        });
        self.attach_fork(n.call_id, c)?;
        drop(table);
        // Barrier: the keys are in place before the caller can get our answer.
        let _ = self
            .engine
            .worker(key)
            .ask(|reply| Command::Query { key, reply });
        tracing::info!(call = %Redacted(n.call_id), backend = backend.name(), %suite, codec = ?codec.g711, "agent call anchored");
        Ok(out.write())
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
        answer_direction(&mut m);
        assert_eq!(m.fmts, ["0", "101"]);
        let text: Vec<String> = m.lines.iter().map(|l| l.value.clone()).collect();
        assert!(!text.iter().any(|l| l.contains("G722") || l == "ptime:30"));
        assert!(m.has_attr("recvonly") && !m.has_attr("sendonly"));
        assert_eq!(call_codec(&m).unwrap().event_pt, Some(101));
    }
}
