//! Re-keying a DTLS-SRTP leg through ng, against the real daemon: party A keys with SDES
//! (srtp-edge's SRTP engine as the UA), party B is offered DTLS-SRTP (`DTLS=passive`) and runs
//! the handshake as the DTLS client (srtp-edge's sans-IO endpoint over OpenSSL; the interop of
//! that endpoint with openssl and aiortc is tested in `dtls_openssl` and `dtls_relay`).
//!
//! - A re-key whose handshake never happens (peer silent after answering with a new
//!   fingerprint) times out, and the call goes on with the previous keys (RFC 5764 section 4.4:
//!   the old keys stay until a new handshake completes); the failure is counted, shown in ng
//!   `query`/`statistics`, and a later re-offer with the same fingerprint starts a new handshake.
//! - A re-key whose certificate does not match the new fingerprint ends the call (RFC 5763
//!   section 5).
//! - An SDES re-offer on a leg that was DTLS (DTLS→SDES) drops the leg's DTLS state; media
//!   then runs on the SDES keys.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::Daemon;
use srtp_edge::control::bencode::{DictBuilder, Value};
use srtp_edge::dtls::{
    DtlsIdentity, Endpoint, EndpointConfig, PeerFingerprints, Role, SrtpKeys, State,
};
use srtp_edge::srtp::{ContextConfig, Profile, SrtpContext};

const SUITE: Profile = Profile::AesCm128HmacSha1_80;

/// Each test its own 20-port range; a 2 s handshake timeout.
fn media(lo: u16) -> String {
    format!(
        "[media]\nport_min = {lo}\nport_max = {}\nworkers = 2\ndtls_handshake_timeout_secs = 2\n\
         suites = [\"AES_CM_128_HMAC_SHA1_80\"]\n",
        lo + 19
    )
}

fn ng(addr: SocketAddr, d: DictBuilder) -> Value {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let cookie = format!(
        "rk{}",
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut msg = format!("{cookie} ").into_bytes();
    d.build().encode_into(&mut msg);
    sock.send_to(&msg, addr).unwrap();
    let mut buf = vec![0u8; 65536];
    let n = sock.recv(&mut buf).expect("ng reply");
    let sp = buf.iter().position(|&c| c == b' ').unwrap();
    assert_eq!(&buf[..sp], cookie.as_bytes());
    Value::decode(&buf[sp + 1..n]).unwrap()
}

fn sdp_of(v: &Value) -> String {
    assert_eq!(
        v.get("result").and_then(Value::as_str),
        Some("ok"),
        "{:?}",
        v.get("error-reason").and_then(Value::as_str)
    );
    v.get("sdp").and_then(Value::as_str).unwrap().to_string()
}

/// An SDP's address, its fingerprint lines and its first SDES tag and key.
type Scanned = (SocketAddr, Vec<String>, Option<(u32, Vec<u8>)>);

/// The relay's address in an SDP, its fingerprint lines and its first SDES key.
fn scan(sdp: &str) -> Scanned {
    let (mut ip, mut port, mut fps, mut crypto) = (None, None, Vec::new(), None);
    for l in sdp.lines().map(str::trim_end) {
        if let Some(c) = l.strip_prefix("c=IN IP4 ") {
            ip = c.parse::<std::net::IpAddr>().ok();
        } else if let Some(m) = l.strip_prefix("m=audio ") {
            port = m.split(' ').next().and_then(|p| p.parse::<u16>().ok());
        } else if l.starts_with("a=fingerprint:") {
            fps.push(l.to_string());
        } else if let Some(c) = l.strip_prefix("a=crypto:") {
            let f: Vec<&str> = c.split_whitespace().collect();
            if crypto.is_none() && f.get(1) == Some(&SUITE.sdes_name()) {
                let b64 = f[2].strip_prefix("inline:").unwrap().split('|').next();
                let key = base64::engine::general_purpose::STANDARD
                    .decode(b64.unwrap())
                    .unwrap();
                crypto = Some((f[0].parse().unwrap(), key));
            }
        }
    }
    (SocketAddr::new(ip.unwrap(), port.unwrap()), fps, crypto)
}

fn sdes_sdp(version: u32, port: u16, tag: u32, key: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(key);
    format!(
        "v=0\r\no=- 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\na=sendrecv\r\n\
         a=crypto:{tag} {} inline:{b64}\r\n",
        SUITE.sdes_name()
    )
}

fn dtls_sdp(version: u32, port: u16, id: &DtlsIdentity) -> String {
    format!(
        "v=0\r\no=- 2 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} UDP/TLS/RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\n\
         a=sendrecv\r\na=setup:active\r\na=fingerprint:{}\r\n",
        id.sdp_fingerprint()
    )
}

fn ctx(key_salt: &[u8]) -> SrtpContext {
    SrtpContext::from_key_salt(SUITE, key_salt, ContextConfig::default()).unwrap()
}

/// One UA: its socket, where it sends (the relay's port facing it) and its contexts.
struct Ua {
    sock: UdpSocket,
    relay: SocketAddr,
    tx: Option<SrtpContext>,
    rx: Option<SrtpContext>,
    ssrc: u32,
    seq: u16,
}

impl Ua {
    fn new(ssrc: u32) -> Ua {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Ua {
            sock,
            relay: "127.0.0.1:9".parse().unwrap(),
            tx: None,
            rx: None,
            ssrc,
            seq: 1,
        }
    }

    fn port(&self) -> u16 {
        self.sock.local_addr().unwrap().port()
    }

    fn keyed_by(&mut self, keys: &SrtpKeys) {
        let p = keys.profile();
        let c = ContextConfig::default();
        self.tx = Some(SrtpContext::new(p, keys.local_key(), keys.local_salt(), c).unwrap());
        self.rx = Some(SrtpContext::new(p, keys.remote_key(), keys.remote_salt(), c).unwrap());
    }

    fn send(&mut self, n: usize) {
        let mut buf = [0u8; 256];
        for _ in 0..n {
            buf[..12].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            buf[2..4].copy_from_slice(&self.seq.to_be_bytes());
            buf[4..8].copy_from_slice(&(u32::from(self.seq) * 160).to_be_bytes());
            buf[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
            buf[12..172].fill(0x55);
            let len = self
                .tx
                .as_mut()
                .unwrap()
                .protect_rtp(&mut buf, 172)
                .unwrap();
            self.sock.send_to(&buf[..len], self.relay).unwrap();
            self.seq = self.seq.wrapping_add(1);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Packets received (and authenticated) until nothing arrives for 100 ms.
    fn received(&mut self) -> usize {
        let mut buf = [0u8; 2048];
        let mut ok = 0;
        while let Ok((n, _)) = self.sock.recv_from(&mut buf) {
            if let Some(rx) = self.rx.as_mut() {
                if rx.unprotect_rtp(&mut buf[..n]).is_ok() {
                    ok += 1;
                }
            }
        }
        ok
    }
}

/// Both directions relayed: `n` packets each way, the counts that arrived.
fn exchange(a: &mut Ua, b: &mut Ua, n: usize) -> (usize, usize) {
    a.send(n);
    let at_b = b.received();
    b.send(n);
    let at_a = a.received();
    (at_b, at_a)
}

/// Runs the client side of a handshake against the relay; true once connected.
fn handshake(ep: &mut Endpoint, ua: &Ua) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    loop {
        while let Some(d) = ep.poll_transmit() {
            ua.sock.send_to(&d, ua.relay).unwrap();
        }
        match ep.state() {
            State::Connected => return true,
            State::Failed(_) | State::Closed => return false,
            State::Handshaking => {}
        }
        if Instant::now() > deadline {
            return false;
        }
        match ua.sock.recv_from(&mut buf) {
            Ok((n, _)) => ep.handle_datagram(Instant::now(), &buf[..n]),
            Err(_) => ep.handle_timeout(Instant::now()),
        }
    }
}

fn endpoint(id: &DtlsIdentity, relay_fps: &[String]) -> Endpoint {
    let fps = PeerFingerprints::from_sdp_lines(relay_fps.iter().map(String::as_str)).unwrap();
    let cfg = EndpointConfig::default().build().unwrap();
    Endpoint::new(id, Role::Client, fps, &cfg, Instant::now())
}

/// A call through the daemon: A offers SDES and B is offered DTLS; returns the relay's
/// fingerprint lines.
struct Call {
    ng: SocketAddr,
    id: String,
    a: Ua,
    b: Ua,
    ka: Vec<u8>,
    version: u32,
    /// The last SDP the relay offered to B.
    offer_sdp_b: String,
}

impl Call {
    fn new(ng: SocketAddr, id: &str) -> Call {
        let mut ka = vec![0u8; 30];
        getrandom::fill(&mut ka).unwrap();
        let mut a = Ua::new(0x0a0a_0a0a);
        a.tx = Some(ctx(&ka));
        Call {
            ng,
            id: id.into(),
            a,
            b: Ua::new(0x0b0b_0b0b),
            ka,
            version: 1,
            offer_sdp_b: String::new(),
        }
    }

    /// A (re-)offers; with `dtls` the relay offers DTLS-SRTP to B. Returns the SDP for B.
    fn offer(&mut self, dtls: bool) -> String {
        self.version += 1;
        let mut d = DictBuilder::new()
            .str("command", "offer")
            .str("call-id", &self.id)
            .str("from-tag", "tag-a")
            .str("sdp", &sdes_sdp(self.version, self.a.port(), 1, &self.ka));
        if dtls {
            d = d
                .str("DTLS", "passive")
                .str("transport-protocol", "UDP/TLS/RTP/SAVP");
        }
        let sdp = sdp_of(&ng(self.ng, d));
        self.b.relay = scan(&sdp).0;
        self.offer_sdp_b = sdp.clone();
        sdp
    }

    /// B answers with `sdp`; A takes the relay's (new) SDES key from the reply.
    fn answer(&mut self, sdp: &str) {
        let d = DictBuilder::new()
            .str("command", "answer")
            .str("call-id", &self.id)
            .str("from-tag", "tag-a")
            .str("to-tag", "tag-b")
            .str("sdp", sdp);
        let (relay, _, crypto) = scan(&sdp_of(&ng(self.ng, d)));
        self.a.relay = relay;
        self.a.rx = Some(ctx(&crypto.expect("SDES answer to A").1));
    }

    /// Offer with DTLS to B, B answers with `id`'s fingerprint and handshakes with `presents`.
    fn dtls_round(&mut self, id: &DtlsIdentity, presents: Option<&DtlsIdentity>) -> bool {
        let (_, fps, _) = scan(&self.offer(true));
        let sdp = dtls_sdp(self.version, self.b.port(), id);
        self.answer(&sdp);
        let Some(p) = presents else {
            return false;
        };
        let mut ep = endpoint(p, &fps);
        if !handshake(&mut ep, &self.b) {
            return false;
        }
        let keys = ep.take_srtp_keys().unwrap();
        self.b.keyed_by(&keys);
        true
    }

    fn query(&self) -> Value {
        ng(
            self.ng,
            DictBuilder::new()
                .str("command", "query")
                .str("call-id", &self.id),
        )
    }

    /// B's media dict in a query reply.
    fn b_media(&self) -> Value {
        let q = self.query();
        assert_eq!(q.get("result").and_then(Value::as_str), Some("ok"), "{q:?}");
        q.get("tags")
            .and_then(|t| t.get("tag-b"))
            .and_then(|t| t.get("medias"))
            .and_then(Value::as_list)
            .and_then(|m| m.first())
            .cloned()
            .expect("tag-b media")
    }

    fn delete(&self) {
        ng(
            self.ng,
            DictBuilder::new()
                .str("command", "delete")
                .str("call-id", &self.id),
        );
    }
}

fn total_stat(ng_addr: SocketAddr, key: &str) -> i64 {
    let v = ng(ng_addr, DictBuilder::new().str("command", "statistics"));
    let st = v.get("statistics").unwrap();
    st.get("totalstatistics")
        .and_then(|t| t.get(key))
        .or_else(|| st.get("currentstatistics").and_then(|t| t.get(key)))
        .and_then(Value::as_int)
        .unwrap_or_else(|| panic!("{key} in {v:?}"))
}

fn dtls_field<'a>(media: &'a Value, key: &str) -> Option<&'a Value> {
    media.get("DTLS").and_then(|d| d.get(key))
}

#[test]
fn failed_rekey_keeps_the_call_on_its_previous_keys() {
    let d = Daemon::start(&media(40700));
    let ng_addr = d.ng.unwrap();
    let (id1, id2) = (
        DtlsIdentity::generate().unwrap(),
        DtlsIdentity::generate().unwrap(),
    );
    let mut call = Call::new(ng_addr, "rekey-timeout");
    assert!(call.dtls_round(&id1, Some(&id1)), "{}", d.log_text());
    assert_eq!(exchange(&mut call.a, &mut call.b, 10), (10, 10));
    let m = call.b_media();
    assert_eq!(
        dtls_field(&m, "state").and_then(Value::as_str),
        Some("connected")
    );
    // Both ends prefer the strongest profile they share.
    assert_eq!(
        dtls_field(&m, "profile").and_then(Value::as_str),
        Some("SRTP_AEAD_AES_256_GCM")
    );
    assert_eq!(
        dtls_field(&m, "fingerprint hash").and_then(Value::as_str),
        Some("sha-256")
    );
    assert_eq!(
        m.get("protocol").and_then(Value::as_str),
        Some("UDP/TLS/RTP/SAVP")
    );
    // The report names the hash function, never the fingerprint or any key.
    let text = format!("{:?}", call.query()).to_lowercase();
    let fp_hex = id1
        .sdp_fingerprint()
        .split(' ')
        .nth(1)
        .unwrap()
        .to_lowercase();
    assert!(!text.contains(&fp_hex[..20]), "{text}");
    assert!(!text.contains("inline"), "{text}");

    // Re-offer; B answers with a new certificate's fingerprint and never handshakes.
    assert!(!call.dtls_round(&id2, None));
    assert_eq!(
        dtls_field(&call.b_media(), "state").and_then(Value::as_str),
        Some("rekeying")
    );
    std::thread::sleep(Duration::from_millis(3000));
    // The call is still there and relays on B's previous DTLS keys (A has new SDES keys).
    let m = call.b_media();
    assert_eq!(
        dtls_field(&m, "state").and_then(Value::as_str),
        Some("rekey-failed"),
        "{m:?}\n{}",
        d.log_text()
    );
    assert_eq!(
        dtls_field(&m, "rekey failures").and_then(Value::as_int),
        Some(1)
    );
    assert_eq!(exchange(&mut call.a, &mut call.b, 10), (10, 10));
    assert_eq!(total_stat(ng_addr, "dtlsrekeyfailures"), 1);
    assert_eq!(total_stat(ng_addr, "dtlshandshakefailures"), 0);
    assert_eq!(total_stat(ng_addr, "dtlslegs"), 1, "still keyed with DTLS");
    // A stray flight on the failed association is ignored: not counted or acted on again.
    let (_, relay_fps, _) = scan(&call.offer_sdp_b);
    let mut stray = endpoint(&id2, &relay_fps);
    while let Some(dg) = stray.poll_transmit() {
        call.b.sock.send_to(&dg, call.b.relay).unwrap();
    }
    let _ = call.b.received();
    assert_eq!(total_stat(ng_addr, "dtlsrekeyfailures"), 1);
    assert_eq!(exchange(&mut call.a, &mut call.b, 5), (5, 5));

    // The failed association is forgotten: the same fingerprint again means a new handshake.
    assert!(call.dtls_round(&id2, Some(&id2)), "{}", d.log_text());
    assert_eq!(exchange(&mut call.a, &mut call.b, 10), (10, 10));
    let m = call.b_media();
    assert_eq!(
        dtls_field(&m, "state").and_then(Value::as_str),
        Some("connected")
    );
    assert_eq!(
        dtls_field(&m, "rekey failures").and_then(Value::as_int),
        Some(1)
    );
    assert_eq!(total_stat(ng_addr, "dtlshandshakes"), 2);
    call.delete();
}

#[test]
fn rekey_with_a_certificate_not_matching_the_new_fingerprint_ends_the_call() {
    let d = Daemon::start(&media(40720));
    let ng_addr = d.ng.unwrap();
    let (id1, id2, id3) = (
        DtlsIdentity::generate().unwrap(),
        DtlsIdentity::generate().unwrap(),
        DtlsIdentity::generate().unwrap(),
    );
    let mut call = Call::new(ng_addr, "rekey-mismatch");
    assert!(call.dtls_round(&id1, Some(&id1)), "{}", d.log_text());
    assert_eq!(exchange(&mut call.a, &mut call.b, 5), (5, 5));
    // The answer says id2, the handshake presents id3.
    assert!(!call.dtls_round(&id2, Some(&id3)));
    let deadline = Instant::now() + Duration::from_secs(5);
    let gone = loop {
        if call.query().get("result").and_then(Value::as_str) != Some("ok") {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(gone, "call ended on the mismatch\n{}", d.log_text());
    assert_eq!(total_stat(ng_addr, "dtlshandshakefailures"), 1);
    assert_eq!(total_stat(ng_addr, "dtlsrekeyfailures"), 0);
    // Nothing relayed any more.
    call.a.send(5);
    assert_eq!(call.b.received(), 0);
}

#[test]
fn sdes_reoffer_on_a_dtls_leg_clears_its_dtls_state() {
    let d = Daemon::start(&media(40740));
    let ng_addr = d.ng.unwrap();
    let id1 = DtlsIdentity::generate().unwrap();
    let mut call = Call::new(ng_addr, "dtls-to-sdes");
    assert!(call.dtls_round(&id1, Some(&id1)), "{}", d.log_text());
    assert_eq!(exchange(&mut call.a, &mut call.b, 5), (5, 5));
    assert_eq!(total_stat(ng_addr, "dtlslegs"), 1);

    // A re-offers without DTLS: B is offered SDES and answers with SDES.
    let sdp_b = call.offer(false);
    let (_, fps, crypto) = scan(&sdp_b);
    assert!(fps.is_empty(), "SDES offer to B: {sdp_b}");
    let (tag, relay_key) = crypto.expect("SDES key offered to B");
    let mut kb = vec![0u8; 30];
    getrandom::fill(&mut kb).unwrap();
    let sdp = sdes_sdp(call.version, call.b.port(), tag, &kb);
    call.answer(&sdp);
    call.b.tx = Some(ctx(&kb));
    call.b.rx = Some(ctx(&relay_key));
    assert_eq!(exchange(&mut call.a, &mut call.b, 10), (10, 10));

    let m = call.b_media();
    assert!(m.get("DTLS").is_none(), "DTLS state dropped: {m:?}");
    assert_eq!(m.get("protocol").and_then(Value::as_str), Some("RTP/SAVP"));
    let flags: Vec<&str> = m
        .get("flags")
        .and_then(Value::as_list)
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(flags, ["SDES"]);
    assert_eq!(total_stat(ng_addr, "dtlslegs"), 0);
    // A DTLS ClientHello on B's leg is no longer answered (the association is gone).
    let mut ep = endpoint(&id1, &[format!("a=fingerprint:{}", id1.sdp_fingerprint())]);
    while let Some(dg) = ep.poll_transmit() {
        call.b.sock.send_to(&dg, call.b.relay).unwrap();
    }
    let mut buf = [0u8; 2048];
    call.b
        .sock
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert!(call.b.sock.recv_from(&mut buf).is_err(), "no DTLS answer");
    call.delete();
}
