//! A media worker thread: owns the sockets and legs of its calls and runs the hot path.
//!
//! One thread per core. Both legs of a call live on the same worker. The loop waits in
//! `epoll_wait` (level-triggered) for readable sockets; with io_uring (the default where the
//! kernel has it) it reads all of them with one submission into the ring's buffers, relays each
//! datagram in place there and sends them all with one more submission ([`sys::BatchRing`]);
//! without, it reads each with `recvfrom` and sends with `sendto`. Under load it pauses briefly
//! after each busy wake-up ([`super::batch`]) so that one wake-up relays many packets. Nothing
//! is allocated per packet; the only shared state the hot path touches is this worker's own
//! relaxed atomic counters. The control plane talks to the worker through a channel and an
//! eventfd wake-up, processed between batches; the worker never waits on signaling, the fork or
//! the disk. The system calls live in [`super::sys`]; how much each step costs is in
//! benches/README.md.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::batch::Batcher;
use super::demux::{self, Kind};
use super::dtls_leg::{DtlsEvent, DtlsInfo, DtlsLeg};
use super::relay::{self, Drop, Leg};
use super::sys::{self, BatchRing, Epoll, EventFd};
use crate::dtls::FailReason;
use crate::fork::codec::{transcode_in_place, G711};
use crate::fork::{ForkEvent, ForkHandle, ForkStats, Track};

/// Largest datagram handled; longer ones are truncated by the kernel and then fail
/// authentication.
const BUF: usize = 2048;
/// Room kept after the received bytes for the tag protect appends (16 bytes at most).
const TAG_ROOM: usize = 64;
/// Events taken per `epoll_wait`.
const EVENTS: usize = 256;
/// Token of the wake-up eventfd.
const WAKE: u64 = u64::MAX;
/// The fork clock: playout frames and fork events are handled every 20 ms while a fork exists.
const FORK_TICK: Duration = Duration::from_millis(20);
/// A G.711 frame of 20 ms.
const FRAME: usize = 160;
/// RTP header of a playout packet (no CSRC, no extension).
const RTP_HEADER: usize = 12;

/// Counters of one worker, read by the metrics exporter. Cache-line aligned so workers do not
/// share lines.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct WorkerStats {
    /// Packets relayed from leg A (offerer) to leg B.
    pub packets_a_to_b: AtomicU64,
    /// Packets relayed from leg B to leg A.
    pub packets_b_to_a: AtomicU64,
    /// Bytes (as sent) relayed from A to B.
    pub bytes_a_to_b: AtomicU64,
    /// Bytes (as sent) relayed from B to A.
    pub bytes_b_to_a: AtomicU64,
    /// Drops by reason, indexed by [`Drop`] as usize.
    pub drops: [AtomicU64; Drop::COUNT],
    /// Datagrams the kernel refused to send.
    pub send_errors: AtomicU64,
    /// Calls on this worker.
    pub calls: AtomicU64,
    /// DTLS-SRTP handshakes that completed (first ones and re-keys).
    pub dtls_ok: AtomicU64,
    /// DTLS-SRTP handshakes that failed and ended their call.
    pub dtls_failed: AtomicU64,
    /// Re-key handshakes that failed while the leg kept its previous keys.
    pub dtls_rekey_failed: AtomicU64,
    /// `epoll_wait` calls that failed (each one is followed by a back-off).
    pub wait_errors: AtomicU64,
}

use crate::metrics::{DTLS_HANDSHAKES, DTLS_REKEY_FAILURES};

/// Per-call, per-leg counters (reported by `query` and `delete`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LegCounters {
    /// Packets received from this leg's peer that were relayed.
    pub packets_in: u64,
    /// Bytes received from this leg's peer that were relayed.
    pub bytes_in: u64,
    /// Packets sent to this leg's peer.
    pub packets_out: u64,
    /// Packets from this leg's peer that were dropped.
    pub dropped: u64,
    /// The address the leg latched onto, if any.
    pub latched: Option<SocketAddr>,
    /// The leg's DTLS-SRTP state, if it is keyed with DTLS.
    pub dtls: Option<DtlsInfo>,
}

/// Counters of a call at the time of the question.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CallCounters {
    /// Leg A (index 0) and leg B (index 1).
    pub legs: [LegCounters; 2],
    /// Time since the last relayed packet.
    pub idle: Duration,
    /// The call's fork counters, if it is forked.
    pub fork: Option<ForkStats>,
    /// Backend audio frames played into the call (agent mode).
    pub played: u64,
}

/// A fork attached to a call on its worker: the lock-free handle and what to tap.
pub struct ForkTap {
    /// The fork's queues.
    pub handle: ForkHandle,
    /// RTP payload type of the call's G.711 codec (0 PCMU, 8 PCMA); other payload types are
    /// not handed to the fork.
    pub audio_pt: u8,
    /// RTP payload type of telephone-event (RFC 4733), if negotiated.
    pub event_pt: Option<u8>,
    /// The call's codec now (follows re-negotiations, see [`Command::RetuneFork`]).
    pub codec: G711,
    /// The codec the fork's session was started with: audio is handed over and played back in
    /// it, transcoded on the worker (a table lookup per byte, in place) when the call's codec
    /// changed mid-call, so the backend keeps getting correct audio.
    pub fork_codec: G711,
    /// Agent call on hold (the caller sent `a=sendonly`/`a=inactive`): backend audio stays
    /// queued and is not played until the call is resumed.
    pub paused: bool,
    /// The track each leg's incoming audio becomes (index 0 = leg A), None: not tapped.
    pub tracks: [Option<Track>; 2],
    /// Agent mode: the leg the backend's audio is played into, on the worker's 20 ms clock,
    /// protected with that leg's outbound keys under an SSRC of its own.
    pub playout_leg: Option<usize>,
}

impl std::fmt::Debug for ForkTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForkTap")
            .field("audio_pt", &self.audio_pt)
            .field("event_pt", &self.event_pt)
            .field("codec", &self.codec)
            .field("fork_codec", &self.fork_codec)
            .field("paused", &self.paused)
            .field("tracks", &self.tracks)
            .field("playout_leg", &self.playout_leg)
            .finish_non_exhaustive()
    }
}

/// Playout stream state: our own SSRC, sequence number and timestamp.
struct Play {
    ssrc: u32,
    seq: u16,
    ts: u32,
    /// Next packet starts a talkspurt (RTP marker bit).
    marker: bool,
    played: u64,
}

struct SlotFork {
    tap: ForkTap,
    play: Play,
}

impl SlotFork {
    /// Hands one decrypted RTP packet from `leg` to the fork. No allocation, no wait.
    fn tap(&self, leg: usize, pkt: &[u8]) {
        let Some(track) = self.tap.tracks.get(leg).copied().flatten() else {
            return;
        };
        let Some(p) = relay::rtp_payload(pkt) else {
            return;
        };
        if p.pt == self.tap.audio_pt {
            if self.tap.codec == self.tap.fork_codec {
                self.tap.handle.push_g711(track, p.payload);
            } else {
                self.tap.handle.push_g711_transcoded(
                    track,
                    self.tap.codec,
                    self.tap.fork_codec,
                    p.payload,
                );
            }
        } else if Some(p.pt) == self.tap.event_pt {
            self.tap
                .handle
                .push_telephone_event(track, p.payload, p.timestamp);
        }
    }
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // A failed getrandom leaves a fixed SSRC: still valid RTP, only less collision-proof.
    let _ = getrandom::fill(&mut b);
    u32::from_be_bytes(b)
}

/// What a leg needs to run: its sockets and its state.
pub struct LegSetup {
    /// RTP socket (RTCP too with rtcp-mux).
    pub rtp: UdpSocket,
    /// RTCP socket.
    pub rtcp: UdpSocket,
    /// SRTP contexts and latches.
    pub leg: Leg,
    /// DTLS-SRTP keying and ICE-lite of this leg, if it is keyed with DTLS.
    pub dtls: Option<Box<DtlsLeg>>,
}

/// A change to a running leg, from the control plane (answer received, re-INVITE, re-key).
pub struct LegUpdate {
    /// New inbound context, if it changes.
    pub inbound: Option<crate::srtp::SrtpContext>,
    /// New outbound context, if it changes.
    pub outbound: Option<crate::srtp::SrtpContext>,
    /// New signalled RTP and RTCP addresses, if they change.
    pub signalled: Option<(Option<SocketAddr>, Option<SocketAddr>)>,
    /// New rtcp-mux state, if it changes.
    pub rtcp_mux: Option<bool>,
    /// Forget the latched addresses (new keys: latch again on the first authenticated packet).
    pub relatch: bool,
    /// Start a DTLS-SRTP handshake on this leg (replacing any running one); the leg's SRTP
    /// contexts come from it when it completes.
    pub dtls: Option<Box<DtlsLeg>>,
    /// The leg is no longer keyed with DTLS (a re-offer switched it to SDES): its DTLS
    /// association and ICE-lite state are dropped, so DTLS and STUN datagrams are no longer
    /// answered on it. Ignored when `dtls` is set.
    pub clear_dtls: bool,
}

/// Commands from the control plane.
pub enum Command {
    /// Start relaying a call.
    Add {
        /// The engine-wide call key.
        key: u64,
        /// Leg A and leg B.
        legs: Box<[LegSetup; 2]>,
    },
    /// Change one leg of a call.
    Update {
        /// Call key.
        key: u64,
        /// 0 = A, 1 = B.
        leg: usize,
        /// The change.
        update: Box<LegUpdate>,
    },
    /// Stop relaying a call and close its sockets; replies with its final counters.
    Remove {
        /// Call key.
        key: u64,
        /// Where to send the counters (None if the call was unknown).
        reply: Sender<Option<CallCounters>>,
    },
    /// Attach a fork to a call (replacing any previous one, which is stopped).
    Fork {
        /// Call key.
        key: u64,
        /// The fork and what to tap.
        tap: Box<ForkTap>,
    },
    /// Change a running fork's tap after a re-negotiation: the call's codec and payload types
    /// (the fork's session keeps its own codec; audio is transcoded both ways), and whether
    /// backend audio is played (agent call on hold: paused). Ignored when the call is unforked.
    RetuneFork {
        /// Call key.
        key: u64,
        /// The call's G.711 payload type now.
        audio_pt: u8,
        /// Its telephone-event payload type, if any.
        event_pt: Option<u8>,
        /// The call's codec now.
        codec: G711,
        /// Hold backend audio (agent call on hold).
        paused: bool,
    },
    /// Detach and stop a call's fork (`stop` then close 1000); replies with its final counters.
    Unfork {
        /// Call key.
        key: u64,
        /// Where to send the counters (None if the call or its fork was unknown).
        reply: Sender<Option<ForkStats>>,
    },
    /// Attach a recording tap to a call (replacing any previous one, whose recording ends).
    Record {
        /// Call key.
        key: u64,
        /// The tap (see [`crate::recording::RecordTap`]).
        tap: Box<crate::recording::RecordTap>,
    },
    /// Detach a call's recording tap: its recording gets its final chunk.
    Unrecord {
        /// Call key.
        key: u64,
    },
    /// Report a call's counters.
    Query {
        /// Call key.
        key: u64,
        /// Reply channel.
        reply: Sender<Option<CallCounters>>,
    },
    /// Leave the loop.
    Shutdown,
}

/// Events the worker reports to the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A call had no media for the timeout and was removed (its sockets are closed).
    TimedOut {
        /// Call key.
        key: u64,
        /// Final counters.
        counters: CallCounters,
    },
    /// A call's fork reported something (connected, reconnecting, hangup, ended).
    Fork {
        /// Call key.
        key: u64,
        /// What happened.
        event: ForkEvent,
    },
    /// A re-key handshake failed on a leg that already had SRTP keys: the call goes on with
    /// them (RFC 5764 section 4.4 keeps the old keys until a new handshake completes). Not sent
    /// for a fingerprint mismatch, which ends the call (RFC 5763 section 5).
    DtlsRekeyFailed {
        /// Call key.
        key: u64,
        /// The leg (0 = A, 1 = B).
        leg: usize,
        /// Why.
        reason: FailReason,
    },
    /// A leg's DTLS-SRTP handshake failed; the call was removed (its sockets are closed).
    DtlsFailed {
        /// Call key.
        key: u64,
        /// The leg (0 = A, 1 = B).
        leg: usize,
        /// Why.
        reason: FailReason,
        /// Final counters.
        counters: CallCounters,
    },
}

struct Slot {
    key: u64,
    legs: [LegSetup; 2],
    counters: [LegCounters; 2],
    last_media: Instant,
    fork: Option<SlotFork>,
    /// The call's recording tap, if it is recorded (dropped with the slot: the recording ends).
    record: Option<Box<crate::recording::RecordTap>>,
}

/// The handle the control plane keeps for a worker.
#[derive(Clone)]
pub struct WorkerHandle {
    tx: Sender<Command>,
    wake: Arc<EventFd>,
    /// This worker's counters.
    pub stats: Arc<WorkerStats>,
}

impl WorkerHandle {
    /// Queues a command and wakes the worker.
    pub fn send(&self, cmd: Command) -> Result<(), String> {
        self.tx
            .send(cmd)
            .map_err(|_| "media worker has stopped".to_string())?;
        self.wake.signal();
        Ok(())
    }

    /// Sends a command that replies on a channel and waits (bounded) for the reply. For the
    /// control plane only; never called on the media path.
    pub fn ask(
        &self,
        make: impl FnOnce(Sender<Option<CallCounters>>) -> Command,
    ) -> Option<CallCounters> {
        let (tx, rx) = mpsc::channel();
        self.send(make(tx)).ok()?;
        rx.recv_timeout(Duration::from_secs(2)).ok().flatten()
    }
}

fn token(slot: usize, leg: usize, rtcp: bool) -> u64 {
    ((slot as u64) << 2) | ((leg as u64) << 1) | u64::from(rtcp)
}

/// (slot, leg, RTCP socket) of a token.
fn untoken(t: u64) -> (usize, usize, bool) {
    ((t >> 2) as usize, ((t >> 1) & 1) as usize, t & 1 == 1)
}

/// A relayed datagram to send: from the socket of `token`, `len` bytes, to `dest`.
struct Outgoing {
    token: u64,
    len: usize,
    dest: SocketAddr,
}

/// How a worker does its IO (from `[media]`).
#[derive(Debug, Clone, Copy)]
pub struct IoOptions {
    /// Batch each wake-up's receives and sends through io_uring where the kernel has it.
    pub io_uring: bool,
    /// The pause after busy wake-ups under load (zero: never).
    pub batch_pause: Duration,
}

impl Default for IoOptions {
    fn default() -> Self {
        IoOptions {
            io_uring: true,
            batch_pause: Duration::from_micros(200),
        }
    }
}

/// Starts a worker thread. `events` receives timeouts; `timeout` is the media timeout.
pub fn spawn(
    name: String,
    timeout: Duration,
    io: IoOptions,
    events: tokio::sync::mpsc::UnboundedSender<Event>,
) -> io::Result<(WorkerHandle, std::thread::JoinHandle<()>)> {
    let epoll = Epoll::new()?;
    let wake = Arc::new(EventFd::new()?);
    epoll.add(wake.as_raw_fd(), WAKE)?;
    let (tx, rx) = mpsc::channel();
    let stats = Arc::new(WorkerStats::default());
    let handle = WorkerHandle {
        tx,
        wake: wake.clone(),
        stats: stats.clone(),
    };
    let join = std::thread::Builder::new().name(name).spawn(move || {
        // The batching pause is short: the default 50 µs of timer slack would stretch it.
        sys::set_timer_slack(Duration::from_micros(20));
        let ring = match io.io_uring.then(|| BatchRing::new(EVENTS as u32)) {
            None => None,
            Some(Ok(r)) => Some(r),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "media worker: io_uring unavailable, one recvfrom and one sendto per packet");
                None
            }
        };
        let mut w = Worker {
            epoll,
            wake,
            rx,
            stats,
            events,
            timeout,
            slots: Vec::new(),
            free: Vec::new(),
            by_key: HashMap::new(),
            forks: 0,
            handshaking: Vec::new(),
            batch: Batcher::new(io.batch_pause),
            wait_failing: 0,
            ring,
            buf: vec![0u8; BUF + TAG_ROOM],
        };
        w.run();
    })?;
    Ok((handle, join))
}

struct Worker {
    epoll: Epoll,
    wake: Arc<EventFd>,
    rx: Receiver<Command>,
    stats: Arc<WorkerStats>,
    events: tokio::sync::mpsc::UnboundedSender<Event>,
    timeout: Duration,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    by_key: HashMap<u64, usize>,
    /// Calls with a fork attached (the fork clock runs while this is not zero).
    forks: usize,
    /// Slots with a DTLS handshake running (their timers fold into the epoll timeout).
    handshaking: Vec<usize>,
    /// The pause after busy wake-ups.
    batch: Batcher,
    /// Consecutive failed waits (0: the last wait worked).
    wait_failing: u32,
    /// The datagrams of a wake-up, received and sent with one submission each (None: io_uring
    /// unavailable, each packet is read with `recvfrom` and sent with `sendto`).
    ring: Option<BatchRing>,
    /// The packet buffer of the recvfrom/sendto path and of the fork's playout.
    buf: Vec<u8>,
}

impl Worker {
    fn run(&mut self) {
        let mut events = vec![sys::Event::EMPTY; EVENTS];
        let mut last_sweep = Instant::now();
        let mut next_tick = Instant::now() + FORK_TICK;
        loop {
            let fork_ms = if self.forks == 0 {
                250
            } else {
                let left = next_tick.saturating_duration_since(Instant::now());
                // Round up: waking early would only spin until the deadline.
                (left.as_micros().div_ceil(1000)).min(250) as i32
            };
            let wait_ms = self.dtls_wait_ms(Instant::now(), fork_ms);
            let n = self.wait(&mut events, wait_ms);
            let mut woken = false;
            // One clock read per batch: good enough for a timeout measured in seconds.
            let now = Instant::now();
            // The media sockets' tokens to the front, the wake-up aside.
            let mut m = 0;
            for k in 0..n {
                if events[k].token() == WAKE {
                    woken = true;
                } else {
                    events[m] = events[k];
                    m += 1;
                }
            }
            if let Some(mut ring) = self.ring.take() {
                self.on_readable_batch(&mut ring, &events[..m], now);
                let failed = ring.flush();
                if failed > 0 {
                    self.stats.send_errors.fetch_add(failed, Ordering::Relaxed);
                }
                self.ring = Some(ring);
            } else {
                for ev in &events[..m] {
                    self.on_readable_fallback(ev.token(), now);
                }
            }
            let packets = m as u64;
            if woken {
                let had_forks = self.forks;
                self.drain_wake();
                if !self.commands(now) {
                    return;
                }
                if had_forks == 0 && self.forks > 0 {
                    next_tick = now + FORK_TICK;
                }
            }
            if self.forks > 0 {
                let now = Instant::now();
                if now >= next_tick {
                    let mut buf = std::mem::take(&mut self.buf);
                    self.fork_tick(&mut buf);
                    self.buf = buf;
                    next_tick += FORK_TICK;
                    // After a stall, start again from now instead of bursting to catch up.
                    if now > next_tick + 3 * FORK_TICK {
                        next_tick = now + FORK_TICK;
                    }
                }
            }
            if !self.handshaking.is_empty() {
                self.dtls_timers(Instant::now());
            }
            if now.duration_since(last_sweep) >= Duration::from_secs(1) {
                last_sweep = now;
                self.sweep(now);
            }
            if let Some(pause) = self.batch.after_wake(now, packets) {
                std::thread::sleep(pause);
            }
        }
    }

    /// One `epoll_wait`. A failure is counted, logged when it starts and when it ends, and
    /// followed by a back-off doubling from 1 ms to 1 s, so a persistent error (which would
    /// otherwise return at once, forever) neither spins a core nor floods the log.
    fn wait(&mut self, events: &mut [sys::Event], timeout_ms: i32) -> usize {
        match self.epoll.wait(events, timeout_ms) {
            Ok(n) => {
                if self.wait_failing > 0 {
                    tracing::warn!(
                        failures = self.wait_failing,
                        "media worker: epoll_wait works again"
                    );
                    self.wait_failing = 0;
                }
                n
            }
            Err(e) => {
                self.stats.wait_errors.fetch_add(1, Ordering::Relaxed);
                if self.wait_failing == 0 {
                    tracing::error!(error = %e, "media worker: epoll_wait failed; backing off");
                }
                let backoff = Duration::from_millis(1 << self.wait_failing.min(10));
                self.wait_failing = self.wait_failing.saturating_add(1);
                std::thread::sleep(backoff.min(Duration::from_secs(1)));
                0
            }
        }
    }

    /// The socket behind a token, if its call still exists.
    fn socket(&self, t: u64) -> Option<&UdpSocket> {
        let (slot_i, leg_i, on_rtcp) = untoken(t);
        let setup = self.slots.get(slot_i)?.as_ref()?.legs.get(leg_i)?;
        Some(if on_rtcp { &setup.rtcp } else { &setup.rtp })
    }

    /// A readable socket on the `recvfrom`/`sendto` path (no ring, or no free ring slot).
    fn on_readable(&mut self, t: u64, buf: &mut [u8], now: Instant) {
        let Some(sock) = self.socket(t) else {
            return;
        };
        let Ok((len, src)) = sock.recv_from(&mut buf[..BUF]) else {
            return;
        };
        if let Some(out) = self.on_datagram(t, buf, len, src, now) {
            if let Some(sock) = self.socket(out.token) {
                if sock.send_to(&buf[..out.len], out.dest).is_err() {
                    self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// The sockets readable in this wake-up, read with one submission to the ring, relayed in
    /// the ring's buffers and queued for the next flush. Falls back to [`Self::on_readable`]
    /// for a datagram the ring has no room for.
    fn on_readable_batch(&mut self, ring: &mut BatchRing, tokens: &[sys::Event], now: Instant) {
        for ev in tokens {
            let t = ev.token();
            let queued = self
                .socket(t)
                .is_some_and(|sock| ring.queue_recv(sock.as_raw_fd(), t));
            if !queued {
                self.on_readable_fallback(t, now);
            }
        }
        let n = ring.receive().len();
        for k in 0..n {
            let r = ring.received_at(k);
            let out = self.on_datagram(r.token, ring.buf(r.slot), r.len, r.src, now);
            let Some(out) = out else {
                ring.release(r.slot);
                continue;
            };
            let Some(fd) = self.socket(out.token).map(|s| s.as_raw_fd()) else {
                ring.release(r.slot);
                continue;
            };
            if !ring.send_slot(r.slot, fd, out.len, out.dest) {
                // The queue is full: send it now (the slot was freed, its bytes are intact
                // until the next receive).
                let pkt = &ring.buf(r.slot)[..out.len];
                if self
                    .socket(out.token)
                    .map(|s| s.send_to(pkt, out.dest))
                    .is_none_or(|r| r.is_err())
                {
                    self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        ring.handled();
    }

    /// [`Self::on_readable`] with the worker's own buffer, for a socket the ring could not take.
    fn on_readable_fallback(&mut self, t: u64, now: Instant) {
        let mut buf = std::mem::take(&mut self.buf);
        self.on_readable(t, &mut buf, now);
        self.buf = buf;
    }

    /// One received datagram, relayed in place in `buf`: DTLS and STUN go to the leg's
    /// endpoint, media is authenticated, checked, re-encrypted and returned for sending (the
    /// counters count it as relayed; a send that then fails is counted in `send_errors`).
    fn on_datagram(
        &mut self,
        t: u64,
        buf: &mut [u8],
        len: usize,
        src: SocketAddr,
        now: Instant,
    ) -> Option<Outgoing> {
        let (slot_i, leg_i, on_rtcp) = untoken(t);
        let Some(Some(slot)) = self.slots.get_mut(slot_i) else {
            return None;
        };
        if !on_rtcp && slot.legs[leg_i].dtls.is_some() {
            match demux::classify(&buf[..len]) {
                Kind::Dtls | Kind::Stun => {
                    self.on_dtls_or_stun(slot_i, leg_i, src, buf, len, now);
                    return None;
                }
                _ => {}
            }
        }
        let [a, b] = &mut slot.legs;
        let (from, to) = if leg_i == 0 { (a, b) } else { (b, a) };
        let fork = slot.fork.as_ref();
        let record = slot.record.as_deref();
        let tap = |pkt: &[u8]| {
            if let Some(f) = fork {
                f.tap(leg_i, pkt);
            }
            if let Some(r) = record {
                r.tap(leg_i, pkt, now);
            }
        };
        match relay::relay_tapped(&mut from.leg, &mut to.leg, src, buf, len, on_rtcp, tap) {
            Ok(fwd) => {
                slot.last_media = now;
                let c = &mut slot.counters;
                c[leg_i].packets_in += 1;
                c[leg_i].bytes_in += len as u64;
                c[1 - leg_i].packets_out += 1;
                let (p, b) = if leg_i == 0 {
                    (&self.stats.packets_a_to_b, &self.stats.bytes_a_to_b)
                } else {
                    (&self.stats.packets_b_to_a, &self.stats.bytes_b_to_a)
                };
                p.fetch_add(1, Ordering::Relaxed);
                b.fetch_add(fwd.len as u64, Ordering::Relaxed);
                Some(Outgoing {
                    token: token(slot_i, 1 - leg_i, fwd.via_rtcp_socket),
                    len: fwd.len,
                    dest: fwd.dest,
                })
            }
            Err(relay::Drop::NoDestination)
                if fork.is_some_and(|f| f.tap.playout_leg == Some(leg_i)) =>
            {
                // Agent mode: the backend is the other party and the fork took the audio; the
                // unsignalled second leg is not a drop, and the call has media.
                slot.last_media = now;
                slot.counters[leg_i].packets_in += 1;
                slot.counters[leg_i].bytes_in += len as u64;
                None
            }
            Err(d) => {
                slot.counters[leg_i].dropped += 1;
                self.stats.drops[d as usize].fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    fn drain_wake(&self) {
        self.wake.drain();
    }

    /// Applies queued commands; returns false on shutdown.
    fn commands(&mut self, now: Instant) -> bool {
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                Command::Add { key, legs } => self.add(key, *legs, now),
                Command::Update { key, leg, update } => self.update(key, leg, *update),
                Command::Remove { key, reply } => {
                    let _ = reply.send(self.remove(key, now));
                }
                Command::Fork { key, tap } => self.fork(key, *tap),
                Command::RetuneFork {
                    key,
                    audio_pt,
                    event_pt,
                    codec,
                    paused,
                } => {
                    if let Some(f) = self
                        .by_key
                        .get(&key)
                        .and_then(|&i| self.slots.get_mut(i)?.as_mut())
                        .and_then(|s| s.fork.as_mut())
                    {
                        f.tap.audio_pt = audio_pt;
                        f.tap.event_pt = event_pt;
                        f.tap.codec = codec;
                        f.tap.paused = paused;
                    }
                }
                Command::Unfork { key, reply } => {
                    let _ = reply.send(self.unfork(key));
                }
                Command::Record { key, tap } => {
                    if let Some(s) = self.slot_mut(key) {
                        s.record = Some(tap);
                    }
                }
                Command::Unrecord { key } => {
                    if let Some(s) = self.slot_mut(key) {
                        s.record = None;
                    }
                }
                Command::Query { key, reply } => {
                    let c = self
                        .by_key
                        .get(&key)
                        .and_then(|&i| self.slots.get(i)?.as_ref())
                        .map(|s| counters(s, now));
                    let _ = reply.send(c);
                }
                Command::Shutdown => return false,
            }
        }
        true
    }

    fn add(&mut self, key: u64, legs: [LegSetup; 2], now: Instant) {
        if self.by_key.contains_key(&key) {
            let _ = self.remove(key, now);
        }
        let i = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        for (l, setup) in legs.iter().enumerate() {
            for (sock, rtcp) in [(&setup.rtp, false), (&setup.rtcp, true)] {
                if let Err(e) = self.epoll.add(sock.as_raw_fd(), token(i, l, rtcp)) {
                    tracing::error!(error = %e, "media worker: cannot watch a media socket");
                }
            }
        }
        self.slots[i] = Some(Slot {
            key,
            legs,
            counters: Default::default(),
            last_media: now,
            fork: None,
            record: None,
        });
        self.by_key.insert(key, i);
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
    }

    fn slot_mut(&mut self, key: u64) -> Option<&mut Slot> {
        self.by_key
            .get(&key)
            .and_then(|&i| self.slots.get_mut(i)?.as_mut())
    }

    fn update(&mut self, key: u64, leg: usize, u: LegUpdate) {
        let Some(slot) = self
            .by_key
            .get(&key)
            .and_then(|&i| self.slots.get_mut(i)?.as_mut())
        else {
            return;
        };
        let Some(l) = slot.legs.get_mut(leg) else {
            return;
        };
        let l = &mut l.leg;
        if let Some(c) = u.inbound {
            l.inbound = Some(c);
        }
        if let Some(c) = u.outbound {
            l.outbound = Some(c);
        }
        if let Some((rtp, rtcp)) = u.signalled {
            l.rtp_latch.set_signalled(rtp);
            l.rtcp_latch.set_signalled(rtcp);
        }
        if let Some(m) = u.rtcp_mux {
            l.rtcp_mux = m;
        }
        if u.relatch {
            l.rtp_latch.reset();
            l.rtcp_latch.reset();
        }
        if u.dtls.is_none() && u.clear_dtls {
            slot.legs[leg].dtls = None;
        }
        if let Some(mut d) = u.dtls {
            let setup = &mut slot.legs[leg];
            if let Some(old) = setup.dtls.take() {
                d.succeed(&old);
            }
            setup.dtls = Some(d);
            if let Some(&i) = self.by_key.get(&key) {
                if !self.handshaking.contains(&i) {
                    self.handshaking.push(i);
                }
                // A client's first flight goes out at once.
                self.flush_dtls(i, leg);
            }
        }
    }

    /// Milliseconds until the next DTLS timer, at most `max`.
    fn dtls_wait_ms(&self, now: Instant, max: i32) -> i32 {
        let mut ms = max;
        for &i in &self.handshaking {
            let Some(Some(slot)) = self.slots.get(i) else {
                continue;
            };
            for setup in &slot.legs {
                if let Some(t) = setup.dtls.as_ref().and_then(|d| d.poll_timeout()) {
                    let d = t.saturating_duration_since(now);
                    // Round up so the timer has expired when we wake.
                    let m = i32::try_from(d.as_millis())
                        .unwrap_or(i32::MAX)
                        .saturating_add(1);
                    ms = ms.min(m);
                }
            }
        }
        ms
    }

    /// Runs due DTLS timers and forgets slots whose handshakes are over (in place: nothing is
    /// allocated on the worker loop).
    fn dtls_timers(&mut self, now: Instant) {
        let mut k = 0;
        while k < self.handshaking.len() {
            let i = self.handshaking[k];
            for leg_i in 0..2 {
                let due = match self.slots.get(i) {
                    Some(Some(s)) => s.legs[leg_i]
                        .dtls
                        .as_ref()
                        .and_then(|d| d.poll_timeout())
                        .is_some_and(|t| t <= now),
                    _ => false,
                };
                if due {
                    if let Some(Some(s)) = self.slots.get_mut(i) {
                        if let Some(d) = s.legs[leg_i].dtls.as_mut() {
                            d.handle_timeout(now);
                        }
                    }
                    self.drive_dtls(i, leg_i, now);
                }
            }
            let running = match self.slots.get(i) {
                Some(Some(s)) => s
                    .legs
                    .iter()
                    .any(|l| l.dtls.as_ref().is_some_and(|d| d.handshaking())),
                _ => false,
            };
            if running {
                k += 1;
            } else {
                self.handshaking.swap_remove(k);
            }
        }
    }

    /// A DTLS or STUN datagram on a DTLS leg's RTP socket.
    fn on_dtls_or_stun(
        &mut self,
        slot_i: usize,
        leg_i: usize,
        src: SocketAddr,
        buf: &mut [u8],
        len: usize,
        now: Instant,
    ) {
        let Some(Some(slot)) = self.slots.get_mut(slot_i) else {
            return;
        };
        let setup = &mut slot.legs[leg_i];
        let Some(d) = setup.dtls.as_mut() else {
            return;
        };
        let msg = &buf[..len];
        if demux::classify(msg) == Kind::Stun {
            // An answered check goes out below; a re-nominating peer gets DTLS answers there.
            if !d.handle_stun(src, msg) {
                slot.counters[leg_i].dropped += 1;
                self.stats.drops[Drop::Stun as usize].fetch_add(1, Ordering::Relaxed);
                return;
            }
        } else {
            d.handle_dtls(now, src, msg);
        }
        self.drive_dtls(slot_i, leg_i, now);
    }

    /// Drains a leg's DTLS core: sends what it queued, then acts on its events.
    fn drive_dtls(&mut self, slot_i: usize, leg_i: usize, now: Instant) {
        self.flush_dtls(slot_i, leg_i);
        loop {
            let event = match self.slots.get_mut(slot_i) {
                Some(Some(s)) => s.legs[leg_i].dtls.as_mut().and_then(|d| d.poll_event()),
                _ => None,
            };
            let Some(event) = event else { return };
            self.dtls_event(slot_i, leg_i, event, now);
        }
    }

    /// Sends what the leg's DTLS endpoint has queued.
    fn flush_dtls(&mut self, slot_i: usize, leg_i: usize) {
        let Some(Some(slot)) = self.slots.get_mut(slot_i) else {
            return;
        };
        let setup = &mut slot.legs[leg_i];
        let Some(d) = setup.dtls.as_mut() else {
            return;
        };
        while let Some(t) = d.poll_transmit() {
            if setup.rtp.send_to(t.contents, t.destination).is_err() {
                self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn dtls_event(&mut self, slot_i: usize, leg_i: usize, event: DtlsEvent, now: Instant) {
        match event {
            DtlsEvent::Keyed {
                inbound,
                outbound,
                peer,
            } => {
                let Some(Some(slot)) = self.slots.get_mut(slot_i) else {
                    return;
                };
                let l = &mut slot.legs[leg_i].leg;
                l.inbound = Some(*inbound);
                l.outbound = Some(*outbound);
                l.rtcp_mux = true;
                l.rtp_latch.reset();
                l.rtp_latch.set_signalled(Some(peer));
                slot.last_media = now;
                self.stats.dtls_ok.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(DTLS_HANDSHAKES, "result" => "ok").increment(1);
            }
            DtlsEvent::Failed(reason) => {
                metrics::counter!(DTLS_HANDSHAKES, "result" => reason.label()).increment(1);
                let Some(Some(slot)) = self.slots.get_mut(slot_i) else {
                    return;
                };
                let key = slot.key;
                let setup = &mut slot.legs[leg_i];
                // A re-key (the leg already has SRTP keys, from an earlier handshake or SDES)
                // that fails for any reason but an authentication failure leaves the running
                // keys in place: the media a re-INVITE did not mean to stop keeps flowing and
                // signaling decides what to do. A certificate that does not match the new
                // fingerprint ends the call as the first handshake would (RFC 5763 section 5).
                let keyed = setup.leg.inbound.is_some() && setup.leg.outbound.is_some();
                if keyed && reason != FailReason::FingerprintMismatch {
                    if let Some(d) = setup.dtls.as_mut() {
                        d.note_rekey_failure();
                    }
                    self.stats.dtls_rekey_failed.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(DTLS_REKEY_FAILURES, "reason" => reason.label()).increment(1);
                    tracing::warn!(leg = leg_i, %reason, "DTLS-SRTP re-key failed: the leg keeps its current keys");
                    let _ = self.events.send(Event::DtlsRekeyFailed {
                        key,
                        leg: leg_i,
                        reason,
                    });
                    return;
                }
                self.stats.dtls_failed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(leg = leg_i, %reason, "DTLS-SRTP handshake failed: call ended");
                if let Some(counters) = self.remove(key, now) {
                    let _ = self.events.send(Event::DtlsFailed {
                        key,
                        leg: leg_i,
                        reason,
                        counters,
                    });
                }
            }
        }
    }

    fn remove(&mut self, key: u64, now: Instant) -> Option<CallCounters> {
        let i = self.by_key.remove(&key)?;
        let slot = self.slots.get_mut(i)?.take()?;
        for setup in &slot.legs {
            let _ = self.epoll.delete(setup.rtp.as_raw_fd());
            let _ = self.epoll.delete(setup.rtcp.as_raw_fd());
        }
        self.free.push(i);
        self.stats.calls.fetch_sub(1, Ordering::Relaxed);
        if let Some(f) = &slot.fork {
            // Dropping the handle would do it too; say it explicitly: stop, then close 1000.
            f.tap.handle.stop();
            self.forks -= 1;
        }
        Some(counters(&slot, now))
        // The slot (sockets, keys) is dropped here: the ports close.
    }

    fn fork(&mut self, key: u64, tap: ForkTap) {
        let Some(slot) = self
            .by_key
            .get(&key)
            .and_then(|&i| self.slots.get_mut(i)?.as_mut())
        else {
            // The call is gone: the handle is dropped here, which stops the fork.
            return;
        };
        if slot.fork.is_none() {
            self.forks += 1;
        }
        slot.fork = Some(SlotFork {
            tap,
            play: Play {
                ssrc: random_u32(),
                seq: random_u32() as u16,
                ts: random_u32(),
                marker: true,
                played: 0,
            },
        });
    }

    fn unfork(&mut self, key: u64) -> Option<ForkStats> {
        let slot = self
            .by_key
            .get(&key)
            .and_then(|&i| self.slots.get_mut(i)?.as_mut())?;
        let f = slot.fork.take()?;
        self.forks -= 1;
        f.tap.handle.stop();
        Some(f.tap.handle.stats())
    }

    /// The 20 ms fork clock: forwards fork events to the control plane and plays one frame of
    /// backend audio per agent-mode call. Uses the worker's packet buffer; allocates nothing.
    fn fork_tick(&mut self, buf: &mut [u8]) {
        for slot in self.slots.iter_mut().flatten() {
            let Some(f) = slot.fork.as_mut() else {
                continue;
            };
            while let Some(event) = f.tap.handle.poll_event() {
                let _ = self.events.send(Event::Fork {
                    key: slot.key,
                    event,
                });
            }
            let Some(l) = f.tap.playout_leg else {
                continue;
            };
            let p = &mut f.play;
            // The clock runs whether or not there is audio: timestamps stay on real time.
            let ts = p.ts;
            p.ts = p.ts.wrapping_add(FRAME as u32);
            if f.tap.paused {
                // On hold: the backend's audio waits (bounded queue) for the resume.
                p.marker = true;
                continue;
            }
            let Some(frame) = f.tap.handle.next_playout_payload() else {
                p.marker = true;
                continue;
            };
            let Some(setup) = slot.legs.get_mut(l) else {
                continue;
            };
            let leg = &mut setup.leg;
            let (Some(dest), Some(out)) = (leg.rtp_latch.destination(), leg.outbound.as_mut())
            else {
                continue;
            };
            let len = RTP_HEADER + FRAME;
            let Some(pkt) = buf.get_mut(..len) else {
                continue;
            };
            pkt[0] = 0x80;
            pkt[1] = (u8::from(p.marker) << 7) | (f.tap.audio_pt & 0x7f);
            pkt[2..4].copy_from_slice(&p.seq.to_be_bytes());
            pkt[4..8].copy_from_slice(&ts.to_be_bytes());
            pkt[8..12].copy_from_slice(&p.ssrc.to_be_bytes());
            pkt[RTP_HEADER..].copy_from_slice(&frame);
            transcode_in_place(f.tap.fork_codec, f.tap.codec, &mut pkt[RTP_HEADER..]);
            let Ok(n) = out.protect_rtp(buf, len) else {
                continue;
            };
            p.seq = p.seq.wrapping_add(1);
            p.marker = false;
            if setup.rtp.send_to(&buf[..n], dest).is_ok() {
                p.played += 1;
                slot.counters[l].packets_out += 1;
            } else {
                self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn sweep(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .slots
            .iter()
            .flatten()
            .filter(|s| now.duration_since(s.last_media) >= self.timeout)
            .map(|s| s.key)
            .collect();
        for key in expired {
            if let Some(counters) = self.remove(key, now) {
                let _ = self.events.send(Event::TimedOut { key, counters });
            }
        }
    }
}

fn counters(s: &Slot, now: Instant) -> CallCounters {
    let mut legs = s.counters;
    legs[0].latched = s.legs[0].leg.rtp_latch.latched();
    legs[1].latched = s.legs[1].leg.rtp_latch.latched();
    legs[0].dtls = s.legs[0].dtls.as_ref().map(|d| d.info());
    legs[1].dtls = s.legs[1].dtls.as_ref().map(|d| d.info());
    CallCounters {
        legs,
        idle: now.duration_since(s.last_media),
        fork: s.fork.as_ref().map(|f| f.tap.handle.stats()),
        played: s.fork.as_ref().map_or(0, |f| f.play.played),
    }
}
