//! Offer/answer policy: the pure decisions the media layer takes on each SDP, so that nothing
//! unencrypted is ever set up and each leg is keyed by srtp-edge alone.
//!
//! The flow for a call A → srtp-edge → B (SIP B2BUA or ng offer/answer alike):
//! 1. [`inspect_offer`] on A's offer: per m-line, A's transport, the SDES lines A offers, DTLS
//!    hints. Audio without any SRTP keying is refused ([`PolicyError::PlaintextMedia`], SIP 488,
//!    ng "plaintext media refused"); non-audio m-lines are marked rejected (port 0).
//! 2. [`choose_crypto`] picks A's crypto line by the configured suite preference: A's key is our
//!    inbound key from A.
//! 3. [`rewrite_offer`] builds the offer for B: our address and ports, `RTP/SAVP(F)`, one
//!    `a=crypto` per enabled suite (tags 1..n, most preferred first) each with a fresh key,
//!    ICE/DTLS attributes dropped, non-audio at port 0.
//! 4. [`inspect_answer`] on B's answer: which of our tags B took and B's key (our inbound key
//!    from B); an answer without SRTP is refused.
//! 5. [`rewrite_answer`] turns B's answer into the answer for A: our address and ports, exactly
//!    one `a=crypto` with A's chosen tag and suite and a fresh key of ours.
//!
//! Best-effort SRTP (RFC 8643, "OSRTP"): an `RTP/AVP` (or `RTP/AVPF`) m-line that carries
//! `a=crypto` is accepted, and the answer keeps the offer's `RTP/AVP` profile with one
//! `a=crypto` line, as RFC 8643 section 3 requires (answering `RTP/SAVP` to an `RTP/AVP` offer
//! would be a protocol mismatch the offerer must reject). Media is SRTP either way: srtp-edge
//! never accepts or sends plain RTP on that leg.
//!
//! DTLS-SRTP: the offerer's attributes are parsed into [`MediaInfo::dtls`] and
//! [`MediaInfo::ice`] and never passed through. srtp-edge terminates the offerer's DTLS itself
//! (the media layer decides, see `media::calls`) and answers it with [`rewrite_answer_keyed`]
//! and a [`DtlsPlan`] (our fingerprint, setup, tls-id, rtcp-mux, ICE-lite); the other
//! leg is offered SDES. [`choose_crypto`] alone still refuses a DTLS-only m-line with
//! [`PolicyError::DtlsUnavailable`] (a caller without a DTLS identity).

use std::net::{IpAddr, SocketAddr};

use thiserror::Error;

use super::attr::{tls_id, Connection, Direction, Fingerprint, IceInfo, Proto, Setup};
use super::crypto::{CryptoAttr, KeyMaterial};
use super::keys::{generate_key, KeyGenError};
use super::model::{Line, MediaSection, Sdp, SdpError};
use crate::srtp::Profile;

/// Attributes that describe a peer's transport or keying; they are removed from every m-line
/// srtp-edge passes on and replaced by its own (keys and addresses never cross legs).
const TRANSPORT_ATTRS: &[&str] = &[
    "crypto",
    "fingerprint",
    "setup",
    "tls-id",
    "connection",
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "ice-lite",
    "ice-mismatch",
    "ice-pacing",
    "candidate",
    "remote-candidates",
    "end-of-candidates",
    "rtcp",
    "rtcp-mux",
    "rtcp-mux-only",
];

/// Why an SDP was refused by policy. Every variant maps to a SIP status and an ng error reason.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PolicyError {
    /// The SDP does not parse, or a line the policy needs is malformed.
    #[error("malformed SDP: {0}")]
    Sdp(#[from] SdpError),
    /// An audio m-line has no SRTP keying at all (plain `RTP/AVP(F)`, no crypto, no fingerprint).
    #[error("m-line {index}: plaintext media refused")]
    PlaintextMedia {
        /// The m-line index.
        index: usize,
    },
    /// An audio m-line offers SRTP, but no crypto line in a suite srtp-edge has enabled.
    #[error("m-line {index}: no common SRTP crypto suite")]
    NoCommonSuite {
        /// The m-line index.
        index: usize,
    },
    /// An audio m-line can only be keyed with DTLS-SRTP, which this build does not do yet.
    #[error("m-line {index}: DTLS-SRTP not available")]
    DtlsUnavailable {
        /// The m-line index.
        index: usize,
    },
    /// No audio m-line can be relayed.
    #[error("no audio stream to relay")]
    NoAudio,
    /// An audio m-line has no usable `c=` address (neither media nor session level).
    #[error("m-line {index}: no connection address")]
    MissingConnection {
        /// The m-line index.
        index: usize,
    },
    /// The answer's crypto line does not match a tag and suite srtp-edge offered.
    #[error("m-line {index}: answer crypto does not match the offer")]
    AnswerCryptoMismatch {
        /// The m-line index.
        index: usize,
    },
    /// The answer has a different number of m-lines than the offer.
    #[error("answer and offer have different m-line counts")]
    MediaCountMismatch,
    /// The caller's plan does not fit the SDP (wrong count, no keys, no RTCP port): a bug in
    /// the caller, reported instead of writing a wrong SDP.
    #[error("invalid rewrite plan: {0}")]
    InvalidPlan(&'static str),
    /// The OS random source failed.
    #[error("key generation failed")]
    KeyGen,
}

impl From<KeyGenError> for PolicyError {
    fn from(_: KeyGenError) -> PolicyError {
        PolicyError::KeyGen
    }
}

impl PolicyError {
    /// The SIP response status for this refusal (488 Not Acceptable Here for policy, 400 for
    /// malformed SDP, 500 for our own failures).
    pub fn sip_status(&self) -> u16 {
        match self {
            PolicyError::Sdp(_) | PolicyError::MissingConnection { .. } => 400,
            PolicyError::InvalidPlan(_) | PolicyError::KeyGen => 500,
            _ => 488,
        }
    }

    /// True when the SDP was refused because it would carry plain RTP.
    pub fn is_plaintext(&self) -> bool {
        matches!(self, PolicyError::PlaintextMedia { .. })
    }

    /// The ng `error-reason` text.
    pub fn ng_reason(&self) -> String {
        match self {
            PolicyError::PlaintextMedia { .. } => "plaintext media refused".to_string(),
            PolicyError::Sdp(_) => "Failed to parse SDP".to_string(),
            other => other.to_string(),
        }
    }
}

/// DTLS-SRTP hints of an m-line (media level, falling back to session level).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DtlsInfo {
    /// The `a=fingerprint` lines.
    pub fingerprints: Vec<Fingerprint>,
    /// The `a=setup` role.
    pub setup: Option<Setup>,
    /// The `a=tls-id`.
    pub tls_id: Option<String>,
}

/// What an offer (or answer) says about one m-line.
#[derive(Debug)]
pub struct MediaInfo {
    /// The m-line index.
    pub index: usize,
    /// True for an audio RTP m-line with a non-zero port that srtp-edge will relay; false for
    /// m-lines to reject (answer/offer them with port 0).
    pub accepted: bool,
    /// The media type (`audio`, `video`...).
    pub media: String,
    /// The transport protocol.
    pub proto: Proto,
    /// The peer's RTP address (for accepted m-lines).
    pub rtp: Option<SocketAddr>,
    /// The peer's RTCP address (`a=rtcp`, or RTP port + 1) when RTCP is not muxed.
    pub rtcp: Option<SocketAddr>,
    /// `a=rtcp-mux` present.
    pub rtcp_mux: bool,
    /// The crypto lines in suites srtp-edge implements (others are skipped), in SDP order.
    pub crypto: Vec<CryptoAttr>,
    /// DTLS-SRTP hints, if the m-line has a fingerprint.
    pub dtls: Option<DtlsInfo>,
    /// ICE attributes, if any.
    pub ice: Option<IceInfo>,
    /// The direction attribute (sendrecv when absent).
    pub direction: Direction,
    /// The `a=mid` identification tag (RFC 5888), if any: the answer carries it back.
    pub mid: Option<String>,
}

/// The result of [`inspect_offer`]: one entry per m-line, in order.
#[derive(Debug)]
pub struct OfferInfo {
    /// Per m-line information.
    pub media: Vec<MediaInfo>,
}

/// The result of [`inspect_answer`]: one entry per m-line, in order; accepted entries carry the
/// single crypto line the answerer picked, already matched against what srtp-edge offered.
#[derive(Debug)]
pub struct AnswerInfo {
    /// Per m-line information (`crypto` has exactly one entry when `accepted`).
    pub media: Vec<MediaInfo>,
}

fn is_audio(m: &MediaSection) -> bool {
    m.media.eq_ignore_ascii_case("audio")
}

fn connection_for(sdp: &Sdp, m: &MediaSection, index: usize) -> Result<IpAddr, PolicyError> {
    if let Some(c) = m.connection()? {
        return Ok(c.addr);
    }
    sdp.session_connection()?
        .map(|c| c.addr)
        .ok_or(PolicyError::MissingConnection { index })
}

fn dtls_info(sdp: &Sdp, m: &MediaSection) -> Option<DtlsInfo> {
    let mut fingerprints = m.fingerprints();
    if fingerprints.is_empty() {
        fingerprints = sdp
            .session_attrs("fingerprint")
            .filter_map(|v| Fingerprint::parse(v.unwrap_or("")).ok())
            .collect();
    }
    if fingerprints.is_empty() {
        return None;
    }
    let setup = m.setup().or_else(|| {
        sdp.session_attrs("setup")
            .next()
            .flatten()
            .and_then(Setup::parse)
    });
    Some(DtlsInfo {
        fingerprints,
        setup,
        tls_id: tls_id(m).map(str::to_string),
    })
}

/// Reads one m-line; `accepted` is decided by media type, port and protocol only.
fn media_info(sdp: &Sdp, index: usize, m: &MediaSection) -> Result<MediaInfo, PolicyError> {
    let proto = m.protocol();
    let accepted = is_audio(m) && m.port != 0 && proto.is_rtp();
    let mut info = MediaInfo {
        index,
        accepted,
        media: m.media.clone(),
        proto,
        rtp: None,
        rtcp: None,
        rtcp_mux: m.rtcp_mux(),
        crypto: m.crypto().into_iter().filter_map(Result::ok).collect(),
        dtls: dtls_info(sdp, m),
        ice: IceInfo::collect(sdp, m),
        direction: m.direction().unwrap_or(Direction::SendRecv),
        mid: m.attr("mid").flatten().map(str::to_string),
    };
    if !accepted {
        return Ok(info);
    }
    let addr = connection_for(sdp, m, index)?;
    info.rtp = Some(SocketAddr::new(addr, m.port));
    info.rtcp = match m.rtcp()? {
        Some(r) => Some(SocketAddr::new(r.addr.unwrap_or(addr), r.port)),
        None => m.port.checked_add(1).map(|p| SocketAddr::new(addr, p)),
    };
    Ok(info)
}

/// Inspects an offer: per m-line transport and keying, refusing audio that would be plain RTP.
///
/// Errors: [`PolicyError::PlaintextMedia`] for an accepted audio m-line with a plain profile
/// and neither `a=crypto` (of any suite) nor `a=fingerprint`; [`PolicyError::NoAudio`] if no
/// m-line can be relayed; SDP errors for malformed addresses.
pub fn inspect_offer(sdp: &Sdp) -> Result<OfferInfo, PolicyError> {
    let mut media = Vec::with_capacity(sdp.media.len());
    for (index, m) in sdp.media.iter().enumerate() {
        let info = media_info(sdp, index, m)?;
        if info.accepted && info.dtls.is_none() && !m.has_attr("crypto") {
            return Err(if info.proto.is_plain() {
                PolicyError::PlaintextMedia { index }
            } else {
                PolicyError::NoCommonSuite { index }
            });
        }
        media.push(info);
    }
    if !media.iter().any(|m| m.accepted) {
        return Err(PolicyError::NoAudio);
    }
    Ok(OfferInfo { media })
}

/// The offerer's crypto line srtp-edge accepts for one m-line (borrowed from the [`MediaInfo`]).
#[derive(Debug, Clone, Copy)]
pub struct ChosenCrypto<'a> {
    /// The offerer's tag, echoed in our answer.
    pub tag: u32,
    /// The suite.
    pub suite: Profile,
    /// The offerer's key: srtp-edge's inbound key on that leg.
    pub key: &'a KeyMaterial,
}

/// Picks the offerer's crypto line for an accepted m-line: the first suite in `suites` (the
/// configured preference, possibly narrowed by ng SDES flags) for which the offer has a line
/// the relay can use (see [`CryptoAttr::usable_by_relay`]).
pub fn choose_crypto<'a>(
    media: &'a MediaInfo,
    suites: &[Profile],
) -> Result<ChosenCrypto<'a>, PolicyError> {
    let index = media.index;
    if media.proto.is_dtls() {
        // UDP/TLS/RTP/SAVP(F) means DTLS keying; SDES lines there are not answerable.
        return Err(PolicyError::DtlsUnavailable { index });
    }
    for &suite in suites {
        if let Some(c) = media
            .crypto
            .iter()
            .find(|c| c.suite == suite && c.usable_by_relay())
        {
            return Ok(ChosenCrypto {
                tag: c.tag,
                suite,
                key: &c.keys[0].key,
            });
        }
    }
    if media.crypto.is_empty() && media.dtls.is_some() {
        return Err(PolicyError::DtlsUnavailable { index });
    }
    Err(PolicyError::NoCommonSuite { index })
}

/// srtp-edge's own key for one leg, with its suite.
#[derive(Debug)]
pub struct SdesKey {
    /// The suite.
    pub suite: Profile,
    /// The fresh key: srtp-edge's outbound key on that leg.
    pub key: KeyMaterial,
}

impl SdesKey {
    /// A fresh key for `suite` from the OS random source.
    pub fn generate(suite: Profile) -> Result<SdesKey, PolicyError> {
        Ok(SdesKey {
            suite,
            key: generate_key(suite)?,
        })
    }

    /// One fresh key per suite, in the order given (the offer's preference order).
    pub fn generate_all(suites: &[Profile]) -> Result<Vec<SdesKey>, PolicyError> {
        suites.iter().map(|&s| SdesKey::generate(s)).collect()
    }

    fn attr_line(&self, tag: u32) -> Line {
        let b64 = self.key.to_base64();
        let value = zeroize::Zeroizing::new(format!(
            "{tag} {} inline:{}",
            self.suite.sdes_name(),
            b64.as_str()
        ));
        Line::attr("crypto", Some(&value))
    }
}

/// srtp-edge's local transport for one m-line of one leg.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalMedia {
    /// The address the peer must send to (written to `c=` and `o=`).
    pub addr: IpAddr,
    /// Our RTP port.
    pub rtp_port: u16,
    /// Our separate RTCP port, if we have one (written as `a=rtcp`).
    pub rtcp_port: Option<u16>,
    /// Whether to offer/accept `a=rtcp-mux`.
    pub rtcp_mux: bool,
}

/// How to rewrite one accepted m-line of an offer for the other leg.
#[derive(Debug)]
pub struct OfferPlan {
    /// Our transport on that leg.
    pub local: LocalMedia,
    /// One fresh key per enabled suite, most preferred first (written with tags 1..n).
    pub keys: Vec<SdesKey>,
}

/// How to rewrite one accepted m-line of an answer back to the offerer.
#[derive(Debug)]
pub struct AnswerPlan {
    /// Our transport on the offerer's leg.
    pub local: LocalMedia,
    /// The offerer's tag that was chosen ([`ChosenCrypto::tag`]).
    pub tag: u32,
    /// Our fresh key in the chosen suite.
    pub key: SdesKey,
}

/// How to write a DTLS-SRTP m-line srtp-edge terminates: in an answer to a DTLS offerer, or in
/// an offer to the other leg (then `setup` is `actpass`).
#[derive(Debug, Clone)]
pub struct DtlsPlan {
    /// Our transport on the offerer's leg (RTCP is always multiplexed on a DTLS leg).
    pub local: LocalMedia,
    /// Our `a=fingerprint` value (`sha-256 AB:...`).
    pub fingerprint: String,
    /// Our `a=setup` (`active` or `passive`).
    pub setup: &'static str,
    /// Our `a=tls-id`.
    pub tls_id: String,
    /// Our ICE-lite credentials (ufrag, pwd), when the offerer does ICE: written with
    /// `a=ice-lite` (session level), one host candidate and `a=end-of-candidates`.
    pub ice: Option<(String, String)>,
}

/// The keying of one accepted m-line of an answer (see [`rewrite_answer_keyed`]).
#[derive(Debug, Clone, Copy)]
pub enum AnswerKeying<'a> {
    /// SDES: one `a=crypto` line.
    Sdes(&'a AnswerPlan),
    /// DTLS-SRTP terminated by srtp-edge.
    Dtls(&'a DtlsPlan),
}

/// The keying of one accepted m-line of an offer (see [`rewrite_offer_keyed`]).
#[derive(Debug, Clone, Copy)]
pub enum OfferKeying<'a> {
    /// SDES: one `a=crypto` line per key.
    Sdes(&'a OfferPlan),
    /// DTLS-SRTP terminated by srtp-edge.
    Dtls(&'a DtlsPlan),
}

/// Writes our DTLS-SRTP attributes (and ICE-lite ones) on an m-line; returns whether ICE-lite
/// was written (then `a=ice-lite` goes at session level).
fn write_dtls(m: &mut MediaSection, d: &DtlsPlan) -> bool {
    m.push_attr("rtcp-mux", None);
    m.push_attr("fingerprint", Some(&d.fingerprint));
    m.push_attr("setup", Some(d.setup));
    m.push_attr("tls-id", Some(&d.tls_id));
    let Some((ufrag, pwd)) = &d.ice else {
        return false;
    };
    m.push_attr("ice-ufrag", Some(ufrag));
    m.push_attr("ice-pwd", Some(pwd));
    let cand = format!(
        "1 1 udp 2130706431 {} {} typ host",
        d.local.addr, d.local.rtp_port
    );
    m.push_attr("candidate", Some(&cand));
    m.push_attr("end-of-candidates", None);
    true
}

/// [`rewrite_offer`] where each relayed m-line is offered with SDES or with DTLS-SRTP. A DTLS
/// m-line gets `UDP/TLS/RTP/SAVP` (or `SAVPF` for feedback profiles), our fingerprint,
/// `a=setup:actpass` (as given in the plan), tls-id, `a=rtcp-mux` and ICE-lite attributes.
pub fn rewrite_offer_keyed(
    offer: &Sdp,
    plans: &[Option<OfferKeying<'_>>],
) -> Result<Sdp, PolicyError> {
    let sdes: Vec<Option<OfferPlan>> = plans
        .iter()
        .map(|p| match p {
            Some(OfferKeying::Sdes(p)) => Some(OfferPlan {
                local: p.local,
                keys: Vec::new(),
            }),
            Some(OfferKeying::Dtls(d)) => Some(OfferPlan {
                local: d.local,
                keys: Vec::new(),
            }),
            None => None,
        })
        .collect();
    let mut out = rewrite_offer_inner(offer, &sdes, false)?;
    let mut lite = false;
    for (m, plan) in out.media.iter_mut().zip(plans) {
        match plan {
            Some(OfferKeying::Sdes(p)) => {
                if p.keys.is_empty() {
                    return Err(PolicyError::InvalidPlan(
                        "an offered m-line needs SRTP keys",
                    ));
                }
                write_transport(m, &p.local, p.local.rtcp_mux)?;
                for (i, k) in p.keys.iter().enumerate() {
                    let tag = u32::try_from(i + 1)
                        .map_err(|_| PolicyError::InvalidPlan("too many keys"))?;
                    m.lines.push(k.attr_line(tag));
                }
            }
            Some(OfferKeying::Dtls(d)) => {
                m.proto = if m.protocol().has_feedback() {
                    "UDP/TLS/RTP/SAVPF"
                } else {
                    "UDP/TLS/RTP/SAVP"
                }
                .to_string();
                lite |= write_dtls(m, d);
            }
            None => {}
        }
    }
    if lite {
        out.session.push(Line::attr("ice-lite", None));
    }
    Ok(out)
}

/// Turns m-line `index` of a rewritten offer into the profile without RTCP feedback
/// (`RTP/SAVPF` to `RTP/SAVP`, `UDP/TLS/RTP/SAVPF` to `UDP/TLS/RTP/SAVP`) and drops its
/// `a=rtcp-fb` lines: for the leg towards a SIP peer that does not do AVPF (RFC 4585).
pub fn drop_feedback(sdp: &mut Sdp, index: usize) {
    if let Some(m) = sdp.media.get_mut(index) {
        match m.protocol() {
            Proto::RtpSavpf => m.proto = "RTP/SAVP".to_string(),
            Proto::UdpTlsRtpSavpf => m.proto = "UDP/TLS/RTP/SAVP".to_string(),
            _ => {}
        }
        m.remove_attrs(&["rtcp-fb"]);
    }
}

fn set_origin_address(sdp: &mut Sdp, addr: IpAddr) {
    if let Some(o) = sdp.session.iter_mut().find(|l| l.kind == 'o') {
        let parts: Vec<&str> = o.value.split(' ').collect();
        if parts.len() == 6 && parts[3] == "IN" {
            let conn = Connection::value_for(addr);
            o.value = format!("{} {} {} {}", parts[0], parts[1], parts[2], conn);
        }
    }
}

fn set_media_connection(m: &mut MediaSection, session_addr: Option<IpAddr>, addr: IpAddr) {
    let value = Connection::value_for(addr);
    m.lines.retain(|l| l.kind != 'c');
    if session_addr != Some(addr) {
        // RFC 8866 order: m=, i=, c=; put c= after any i= line.
        let pos = m.lines.iter().take_while(|l| l.kind == 'i').count();
        m.lines.insert(pos, Line::new('c', value));
    }
}

fn strip_session(sdp: &mut Sdp) {
    sdp.session.retain(|l| {
        !l.as_attr()
            .is_some_and(|(n, _)| TRANSPORT_ATTRS.contains(&n))
    });
}

/// Prepares the session part: our address in `o=` and `c=`, peer transport attributes removed.
/// Returns the session-level address now in force.
fn rewrite_session(sdp: &mut Sdp, addr: Option<IpAddr>) -> Option<IpAddr> {
    strip_session(sdp);
    let addr = addr?;
    set_origin_address(sdp, addr);
    if let Some(c) = sdp.session.iter_mut().find(|l| l.kind == 'c') {
        c.value = Connection::value_for(addr);
        return Some(addr);
    }
    None
}

fn reject_media(m: &mut MediaSection, session_addr: Option<IpAddr>, fallback: Option<IpAddr>) {
    m.set_port(0);
    m.remove_attrs(TRANSPORT_ATTRS);
    if m.line('c').is_some() {
        if let Some(a) = fallback {
            set_media_connection(m, session_addr, a);
        }
    }
}

fn write_transport(m: &mut MediaSection, local: &LocalMedia, mux: bool) -> Result<(), PolicyError> {
    if let Some(p) = local.rtcp_port {
        m.push_attr("rtcp", Some(&p.to_string()));
    } else if !mux {
        return Err(PolicyError::InvalidPlan("no RTCP port and no rtcp-mux"));
    }
    if mux {
        m.push_attr("rtcp-mux", None);
    }
    Ok(())
}

/// Rewrites an offer for the other leg. `plans` has one entry per m-line: `Some` for the
/// m-lines srtp-edge relays (audio accepted by [`inspect_offer`]), `None` for the ones to
/// reject (written with port 0). Accepted m-lines get our `c=`, port, `a=rtcp`/`a=rtcp-mux`,
/// the SRTP profile (`RTP/SAVP`, or `RTP/SAVPF` for feedback profiles) and one `a=crypto` per
/// key (tags 1..n); the peer's keys, fingerprints, ICE and RTCP attributes are dropped.
pub fn rewrite_offer(offer: &Sdp, plans: &[Option<OfferPlan>]) -> Result<Sdp, PolicyError> {
    rewrite_offer_inner(offer, plans, true)
}

/// The common part of the offer rewrites; with `keyed` false, the transport and keying
/// attributes are left for the caller to write.
fn rewrite_offer_inner(
    offer: &Sdp,
    plans: &[Option<OfferPlan>],
    keyed: bool,
) -> Result<Sdp, PolicyError> {
    if plans.len() != offer.media.len() {
        return Err(PolicyError::InvalidPlan("one plan entry per m-line"));
    }
    let first = plans.iter().flatten().next().map(|p| p.local.addr);
    let mut out = offer.clone();
    let session_addr = rewrite_session(&mut out, first);
    for (m, plan) in out.media.iter_mut().zip(plans) {
        let Some(plan) = plan else {
            reject_media(m, session_addr, first);
            continue;
        };
        if keyed && plan.keys.is_empty() {
            return Err(PolicyError::InvalidPlan(
                "an offered m-line needs SRTP keys",
            ));
        }
        if !m.protocol().is_rtp() {
            return Err(PolicyError::InvalidPlan("cannot relay a non-RTP m-line"));
        }
        m.proto = m.protocol().sdes_srtp().to_string();
        m.set_port(plan.local.rtp_port);
        m.port_count = None;
        m.remove_attrs(TRANSPORT_ATTRS);
        set_media_connection(m, session_addr, plan.local.addr);
        if !keyed {
            continue;
        }
        write_transport(m, &plan.local, plan.local.rtcp_mux)?;
        for (i, k) in plan.keys.iter().enumerate() {
            let tag =
                u32::try_from(i + 1).map_err(|_| PolicyError::InvalidPlan("too many keys"))?;
            m.lines.push(k.attr_line(tag));
        }
    }
    Ok(out)
}

/// Rewrites the answer received from the other leg into the answer for the offerer.
/// `offer` is [`inspect_offer`]'s view of the offerer's SDP; `plans` has one entry per m-line
/// (`None` to reject). The answer keeps the offerer's profile for each m-line (so `RTP/AVP` with
/// `a=crypto` is answered `RTP/AVP` with one `a=crypto`, RFC 8643) and carries exactly one crypto
/// line: the offerer's chosen tag and suite with our fresh key. `a=rtcp-mux` is answered only if
/// the offerer offered it.
pub fn rewrite_answer(
    answer: &Sdp,
    offer: &OfferInfo,
    plans: &[Option<AnswerPlan>],
) -> Result<Sdp, PolicyError> {
    let keyed: Vec<Option<AnswerKeying<'_>>> = plans
        .iter()
        .map(|p| p.as_ref().map(AnswerKeying::Sdes))
        .collect();
    rewrite_answer_keyed(answer, offer, &keyed)
}

/// [`rewrite_answer`] where each accepted m-line is keyed with SDES or with DTLS-SRTP. A DTLS
/// m-line keeps the offerer's `UDP/TLS/RTP/SAVP(F)` profile and gets our fingerprint, setup,
/// tls-id, `a=rtcp-mux` and, with ICE, our ICE-lite credentials and host candidate; it carries
/// no `a=crypto`.
pub fn rewrite_answer_keyed(
    answer: &Sdp,
    offer: &OfferInfo,
    plans: &[Option<AnswerKeying<'_>>],
) -> Result<Sdp, PolicyError> {
    if answer.media.len() != offer.media.len() {
        return Err(PolicyError::MediaCountMismatch);
    }
    if plans.len() != answer.media.len() {
        return Err(PolicyError::InvalidPlan("one plan entry per m-line"));
    }
    let local_of = |k: &AnswerKeying<'_>| match k {
        AnswerKeying::Sdes(p) => p.local,
        AnswerKeying::Dtls(p) => p.local,
    };
    let first = plans.iter().flatten().next().map(local_of).map(|l| l.addr);
    let mut out = answer.clone();
    let session_addr = rewrite_session(&mut out, first);
    let mut lite = false;
    for ((m, plan), info) in out.media.iter_mut().zip(plans).zip(&offer.media) {
        let Some(plan) = plan else {
            reject_media(m, session_addr, first);
            continue;
        };
        if !info.accepted {
            return Err(PolicyError::InvalidPlan(
                "m-line was not accepted in the offer",
            ));
        }
        let plan = match plan {
            AnswerKeying::Sdes(p) => *p,
            AnswerKeying::Dtls(d) => {
                if info.dtls.is_none() {
                    return Err(PolicyError::InvalidPlan("DTLS answer to a non-DTLS offer"));
                }
                m.proto = info.proto.to_string();
                m.set_port(d.local.rtp_port);
                m.port_count = None;
                m.remove_attrs(TRANSPORT_ATTRS);
                set_media_connection(m, session_addr, d.local.addr);
                lite |= write_dtls(m, d);
                continue;
            }
        };
        if info.proto.is_dtls() {
            return Err(PolicyError::DtlsUnavailable { index: info.index });
        }
        let offered = info
            .crypto
            .iter()
            .find(|c| c.tag == plan.tag && c.suite == plan.key.suite);
        if offered.is_none() {
            return Err(PolicyError::InvalidPlan("tag/suite not offered"));
        }
        m.proto = info.proto.to_string();
        m.set_port(plan.local.rtp_port);
        m.port_count = None;
        m.remove_attrs(TRANSPORT_ATTRS);
        set_media_connection(m, session_addr, plan.local.addr);
        write_transport(m, &plan.local, plan.local.rtcp_mux && info.rtcp_mux)?;
        m.lines.push(plan.key.attr_line(plan.tag));
    }
    // Each m-line answers with the offerer's a=mid (RFC 5888), whatever the other leg's answer
    // said: WebRTC offerers match answer m-lines to their offer by it.
    for (m, info) in out.media.iter_mut().zip(&offer.media) {
        m.remove_attrs(&["mid"]);
        if let Some(mid) = &info.mid {
            m.push_attr("mid", Some(mid));
        }
    }
    if lite {
        // RFC 8839 section 5.3: a=ice-lite is a session-level attribute, before the m-lines.
        out.session.push(Line::attr("ice-lite", None));
    }
    Ok(out)
}

/// Inspects the answer to an offer srtp-edge wrote with [`rewrite_offer`]. `offered` lists, per
/// m-line, the suites offered with tags 1..n (empty for m-lines we rejected). For each accepted
/// m-line the answer must carry one usable crypto line whose tag and suite match what we
/// offered; the resulting [`MediaInfo::crypto`] holds exactly that line (the answerer's key is
/// srtp-edge's inbound key on that leg).
pub fn inspect_answer(answer: &Sdp, offered: &[Vec<Profile>]) -> Result<AnswerInfo, PolicyError> {
    if answer.media.len() != offered.len() {
        return Err(PolicyError::MediaCountMismatch);
    }
    let mut media = Vec::with_capacity(answer.media.len());
    for (index, (m, suites)) in answer.media.iter().zip(offered).enumerate() {
        let mut info = media_info(answer, index, m)?;
        if suites.is_empty() || !info.accepted {
            info.accepted = false;
            info.crypto.clear();
            media.push(info);
            continue;
        }
        let has_any_crypto = m.has_attr("crypto");
        let matching = info.crypto.drain(..).find(|c| {
            c.usable_by_relay()
                && (c.tag as usize)
                    .checked_sub(1)
                    .and_then(|i| suites.get(i))
                    .is_some_and(|&s| s == c.suite)
        });
        match matching {
            Some(c) => info.crypto = vec![c],
            None if has_any_crypto => return Err(PolicyError::AnswerCryptoMismatch { index }),
            None if info.dtls.is_some() => return Err(PolicyError::DtlsUnavailable { index }),
            None => return Err(PolicyError::PlaintextMedia { index }),
        }
        media.push(info);
    }
    if !media.iter().any(|m| m.accepted) {
        return Err(PolicyError::NoAudio);
    }
    Ok(AnswerInfo { media })
}

/// Inspects the answer to an offer in which srtp-edge offered DTLS-SRTP on m-line `index`
/// (and rejected the others): the answer must have as many m-lines, accept that one, and carry
/// a fingerprint there (its [`MediaInfo::dtls`] and [`MediaInfo::ice`] are what the leg's
/// handshake and ICE-lite need).
pub fn inspect_answer_dtls(
    answer: &Sdp,
    media_count: usize,
    index: usize,
) -> Result<MediaInfo, PolicyError> {
    if answer.media.len() != media_count {
        return Err(PolicyError::MediaCountMismatch);
    }
    let m = answer.media.get(index).ok_or(PolicyError::NoAudio)?;
    let info = media_info(answer, index, m)?;
    if !info.accepted {
        return Err(PolicyError::NoAudio);
    }
    if info.dtls.is_none() {
        return Err(if m.has_attr("crypto") {
            PolicyError::AnswerCryptoMismatch { index }
        } else {
            PolicyError::PlaintextMedia { index }
        });
    }
    Ok(info)
}

impl AnswerInfo {
    /// The crypto line the answerer picked for an accepted m-line.
    pub fn chosen(&self, index: usize) -> Option<ChosenCrypto<'_>> {
        let m = self.media.get(index).filter(|m| m.accepted)?;
        let c = m.crypto.first()?;
        Some(ChosenCrypto {
            tag: c.tag,
            suite: c.suite,
            key: &c.keys.first()?.key,
        })
    }
}
