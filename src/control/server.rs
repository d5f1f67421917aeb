//! The ng control listener: UDP datagrams `cookie SP bencode` from Kamailio's or OpenSIPS's
//! `rtpengine` module (or any ng client), executed against the call table.
//!
//! One thread per listening socket, blocking on the socket: control traffic is a few datagrams
//! per call, and the thread never touches the media path (it talks to the workers through their
//! command channels). Requests from sources outside `control.allow_from` are dropped and counted;
//! a retransmitted cookie gets the cached reply instead of running the command twice.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::bencode::Value;
use super::ng::{self, Command, Request};
use super::reply_cache::ReplyCache;
use crate::config::IpNet;
use crate::fork::ForkMode;
use crate::media::calls::{unix_secs, CallError, CallReport, Calls, Negotiation};
use crate::media::relay::Drop;
use crate::srtp::Profile;

use crate::metrics::{NEGOTIATIONS_REFUSED, NG_REQUESTS};

/// Largest ng datagram accepted (an SDP with many m-lines fits easily).
const MAX_DATAGRAM: usize = 65_535;

/// What the listener needs.
pub struct NgServer {
    calls: Arc<Calls>,
    allow_from: Vec<IpNet>,
    suites: Vec<Profile>,
}

impl NgServer {
    /// A server over a call table, allowing `allow_from`, offering `suites` (preference order).
    pub fn new(calls: Arc<Calls>, allow_from: Vec<IpNet>, suites: Vec<Profile>) -> Arc<NgServer> {
        Arc::new(NgServer {
            calls,
            allow_from,
            suites,
        })
    }

    /// Binds `addr` and serves it on a thread until `stop` is set.
    pub fn spawn(
        self: &Arc<Self>,
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
    ) -> io::Result<std::thread::JoinHandle<()>> {
        let sock = UdpSocket::bind(addr)?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        let me = self.clone();
        std::thread::Builder::new()
            .name("srtp-edge-ng".into())
            .spawn(move || me.serve(sock, stop))
    }

    fn serve(&self, sock: UdpSocket, stop: Arc<AtomicBool>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut cache = ReplyCache::new(4096, 16 << 20, Duration::from_secs(30));
        while !stop.load(Ordering::Relaxed) {
            let (len, src) = match sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    tracing::warn!(error = %e, "ng socket error");
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            if let Some(reply) = self.datagram(&buf[..len], src, &mut cache, Instant::now()) {
                let _ = sock.send_to(&reply, src);
            }
        }
    }

    /// Handles one datagram; returns the reply to send, if any. Public for tests.
    pub fn datagram(
        &self,
        data: &[u8],
        src: SocketAddr,
        cache: &mut ReplyCache,
        now: Instant,
    ) -> Option<Vec<u8>> {
        if !self.allow_from.iter().any(|n| n.contains(src.ip())) {
            metrics::counter!(NG_REQUESTS, "command" => "none", "result" => "refused_source")
                .increment(1);
            tracing::debug!("ng datagram from a source outside control.allow_from dropped");
            return None;
        }
        let (cookie, req) = match ng::parse_datagram(data) {
            Ok(x) => x,
            Err(ng::DatagramError {
                cookie: Some(cookie),
                error: e,
            }) => {
                metrics::counter!(NG_REQUESTS, "command" => "none", "result" => "malformed")
                    .increment(1);
                return Some(ng::encode_reply(
                    cookie,
                    &ng::reply_error(&e.reply_reason()),
                ));
            }
            Err(ng::DatagramError { cookie: None, .. }) => {
                metrics::counter!(NG_REQUESTS, "command" => "none", "result" => "malformed")
                    .increment(1);
                return None;
            }
        };
        if let Some(r) = cache.get(cookie, now) {
            metrics::counter!(NG_REQUESTS, "command" => command_label(req.command), "result" => "retransmission")
                .increment(1);
            return Some(r.to_vec());
        }
        let reply = self.execute(&req);
        let result = match reply.get("result").and_then(Value::as_str) {
            Some("error") => "error",
            _ => "ok",
        };
        metrics::counter!(NG_REQUESTS, "command" => command_label(req.command), "result" => result)
            .increment(1);
        let bytes = ng::encode_reply(cookie, &reply);
        cache.insert(cookie, bytes.clone(), now);
        Some(bytes)
    }

    /// Runs one request.
    pub fn execute(&self, req: &Request) -> Value {
        match req.command {
            Command::Ping => ng::reply_pong(),
            Command::Offer | Command::Answer => self.negotiate(req),
            Command::Delete => match req.call_id.as_deref() {
                None => ng::reply_error("No call-id in message"),
                Some(id) => match self.calls.delete(id) {
                    Ok(_) => ng::reply_ok(),
                    Err(e) => ng::reply_error(&e.ng_reason()),
                },
            },
            Command::Query => match req.call_id.as_deref() {
                None => ng::reply_error("No call-id in message"),
                Some(id) => match self.calls.query(id) {
                    Ok(r) => query_reply(&r),
                    Err(e) => ng::reply_error(&e.ng_reason()),
                },
            },
            Command::List => {
                let limit = req
                    .limit
                    .and_then(|l| usize::try_from(l).ok())
                    .unwrap_or(32);
                let ids = self.calls.list(limit);
                ng::reply_list(ids.iter().map(String::as_str))
            }
            Command::Statistics => self.statistics(),
            Command::StartForwarding => {
                let (Some(id), Some(backend)) = (req.call_id.as_deref(), req.fork.as_deref())
                else {
                    return ng::reply_error("Missing call-id or fork");
                };
                match self.calls.start_fork(id, backend, ForkMode::Fork) {
                    Ok(_) => ng::reply_ok(),
                    Err(e) => ng::reply_error(&e.ng_reason()),
                }
            }
            Command::StopForwarding => match req.call_id.as_deref() {
                None => ng::reply_error("No call-id in message"),
                Some(id) => match self.calls.stop_fork(id) {
                    Ok(_) => ng::reply_ok(),
                    Err(e) => ng::reply_error(&e.ng_reason()),
                },
            },
            Command::StartRecording | Command::StopRecording | Command::PauseRecording => {
                crate::recording::ng::execute(&self.calls, req)
            }
        }
    }

    fn negotiate(&self, req: &Request) -> Value {
        if ng::refuses_plaintext(req) {
            metrics::counter!(NEGOTIATIONS_REFUSED, "reason" => "plaintext").increment(1);
            return ng::reply_error(ng::PLAINTEXT_REFUSED);
        }
        let (Some(call_id), Some(from_tag), Some(sdp)) = (
            req.call_id.as_deref(),
            req.from_tag.as_deref(),
            req.sdp.as_deref(),
        ) else {
            return ng::reply_error("Missing call-id, from-tag or sdp");
        };
        for f in &req.unknown {
            tracing::debug!(flag = %f, "ng flag ignored");
        }
        // Only configured backends can be named; check before anything is anchored.
        if let Some(name) = req.fork.as_deref() {
            if self.calls.fork_backend(name).is_none() {
                tracing::info!(
                    "ng {} refused: unknown fork backend",
                    command_label(req.command)
                );
                return ng::reply_error(&CallError::UnknownForkBackend.ng_reason());
            }
        }
        let suites = req.sdes_suites(&self.suites);
        if suites.is_empty() {
            return ng::reply_error(ng::PLAINTEXT_REFUSED);
        }
        let n = Negotiation {
            call_id,
            from_tag,
            to_tag: req.to_tag.as_deref(),
            sdp,
            suites: &suites,
        };
        let result = if req.command == Command::Offer {
            // DTLS-SRTP towards the other side when asked for (ng DTLS=passive|active, or a
            // DTLS transport-protocol); SDES otherwise.
            let dtls = matches!(req.dtls, Some(ng::DtlsMode::Passive | ng::DtlsMode::Active))
                || req
                    .transport_protocol
                    .as_deref()
                    .is_some_and(|t| t.to_ascii_uppercase().starts_with("UDP/TLS/RTP/SAVP"));
            self.calls.offer_with(
                &n,
                &crate::media::calls::OfferOptions {
                    dtls,
                    ..Default::default()
                },
            )
        } else {
            self.calls.answer(&n)
        };
        match result {
            Ok(sdp) => {
                // The call is anchored either way; a refused fork or recording is a warning.
                let fork_warning = req.fork.as_deref().and_then(|name| {
                    self.calls
                        .start_fork(call_id, name, ForkMode::Fork)
                        .err()
                        .map(|e| e.ng_reason())
                });
                let record_warning = crate::recording::ng::record_call(&self.calls, req, call_id);
                match fork_warning.or(record_warning) {
                    None => ng::reply_sdp(&sdp),
                    Some(w) => ng::reply_sdp_warning(&sdp, &w),
                }
            }
            Err(e) => {
                tracing::info!(error = %e, "ng {} refused", command_label(req.command));
                ng::reply_error(&e.ng_reason())
            }
        }
    }

    fn statistics(&self) -> Value {
        let e = self.calls.engine();
        let ends = self.calls.end_stats();
        let (relayed, _) = e.relayed();
        let errors: u64 = Drop::ALL.iter().map(|&d| e.drops(d)).sum();
        let (dtls_handshakes, dtls_failed, dtls_rekey_failed) = e.dtls_totals();
        ng::Statistics {
            sessions_own: self.calls.len() as u64,
            uptime: self.calls.uptime_secs(),
            managed_sessions: ends.deleted + ends.timed_out + self.calls.len() as u64,
            rejected_sessions: ends.refused,
            timeout_sessions: ends.timed_out,
            regular_terminated_sessions: ends.deleted,
            relayed_packets: relayed,
            relayed_packet_errors: errors,
            packet_rate: 0,
            byte_rate: 0,
            error_rate: 0,
            dtls_handshakes,
            dtls_failed,
            dtls_rekey_failed,
            dtls_legs: self.calls.dtls_legs() as u64,
        }
        .to_reply()
    }
}

fn command_label(c: Command) -> &'static str {
    match c {
        Command::Ping => "ping",
        Command::Offer => "offer",
        Command::Answer => "answer",
        Command::Delete => "delete",
        Command::Query => "query",
        Command::List => "list",
        Command::Statistics => "statistics",
        Command::StartForwarding => "start_forwarding",
        Command::StopForwarding => "stop_forwarding",
        Command::StartRecording => "start_recording",
        Command::StopRecording => "stop_recording",
        Command::PauseRecording => "pause_recording",
    }
}

fn query_reply(r: &CallReport) -> Value {
    let c = r.counters.unwrap_or_default();
    let mut tags = Vec::new();
    for side in 0..2 {
        let Some(tag) = r.tags[side].clone() else {
            continue;
        };
        let l = c.legs[side];
        let dtls = l.dtls.map(|d| ng::DtlsStats {
            state: d.phase.as_str().to_string(),
            profile: d.profile.and_then(Profile::dtls_name).map(str::to_string),
            fingerprint_hash: d.peer_hash.map(|h| h.sdp_name().to_string()),
            rekey_failures: u64::from(d.rekey_failures),
        });
        let (protocol, keying) = if dtls.is_some() {
            ("UDP/TLS/RTP/SAVP", "DTLS-SRTP")
        } else {
            ("RTP/SAVP", "SDES")
        };
        tags.push(ng::TagStats {
            tag,
            created: unix_secs(r.created),
            in_dialogue_with: r.tags[1 - side].clone(),
            medias: vec![ng::MediaStats {
                index: 1,
                media_type: "audio".into(),
                protocol: protocol.into(),
                flags: vec![keying.into()],
                dtls,
                streams: vec![ng::StreamStats {
                    local_port: r.ports[side],
                    endpoint: l.latched,
                    advertised_endpoint: r.signalled[side],
                    crypto_suite: r.suites[side],
                    last_packet: 0,
                    flags: vec!["RTP".into()],
                    stats: ng::Counters {
                        packets: l.packets_in,
                        bytes: l.bytes_in,
                        errors: l.dropped,
                    },
                }],
            }],
        });
    }
    let total = |f: fn(&crate::media::worker::LegCounters) -> u64| c.legs.iter().map(f).sum();
    let created = r.created.duration_since(UNIX_EPOCH).unwrap_or_default();
    ng::CallStats {
        created: created.as_secs(),
        created_us: created.subsec_micros(),
        last_signal: unix_secs(r.last_signal),
        tags,
        rtp: ng::Counters {
            packets: total(|l| l.packets_in),
            bytes: total(|l| l.bytes_in),
            errors: total(|l| l.dropped),
        },
        rtcp: ng::Counters::default(),
    }
    .to_reply()
}
