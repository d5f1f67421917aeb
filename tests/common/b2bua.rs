//! Harness for the B2BUA tests: the daemon with a SIP listener, interop certificates, one
//! loopback trunk and the routes a test gives; a small SIP-over-TLS client speaking raw SIP; and
//! the ng `list` check that every media port was released.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use super::interop::{make_certs, port_range, tcp_up};
use super::{free_tcp_port, Daemon};

/// The daemon under test with its SIP address and media range.
pub struct Edge {
    /// The daemon.
    pub daemon: Daemon,
    /// SIP over TLS listener.
    pub sip: SocketAddr,
    /// Media port range.
    pub media: (u16, u16),
}

/// Writes the interop CA and a 127.0.0.1 certificate into `dir` (see `interop::make_certs`).
pub fn certs(dir: &Path) {
    make_certs(dir);
}

/// Starts srtp-edge serving SIP over TLS with the certificate in `certs`, trusting `certs/ca.pem`
/// for route targets, one trunk `lo` from `trunk_from` and the `routes` TOML given.
pub fn start_edge(certs: &Path, trunk_from: &str, routes: &str) -> Edge {
    start_edge_cfg(
        certs,
        &format!("[[trunks]]\nname = \"lo\"\nfrom = [\"{trunk_from}\"]\n{routes}"),
    )
}

/// Like [`start_edge`] with the `[[trunks]]` and `[[routes]]` TOML given whole.
pub fn start_edge_cfg(certs: &Path, trunks_and_routes: &str) -> Edge {
    start_edge_ports(certs, trunks_and_routes, 100)
}

/// Like [`start_edge_cfg`] with `ports` media ports (4 per call: two legs, RTP and RTCP).
pub fn start_edge_ports(certs: &Path, trunks_and_routes: &str, ports: u16) -> Edge {
    start_edge_full(certs, "", "", trunks_and_routes, ports)
}

/// The edge with `tls.min_version = "1.2"` and one loopback trunk.
pub fn start_edge_tls12(certs: &Path) -> Edge {
    start_edge_full(
        certs,
        "min_version = \"1.2\"\n",
        "",
        "[[trunks]]\nname = \"lo\"\nfrom = [\"127.0.0.0/8\"]\n",
        100,
    )
}

/// Like [`start_edge_cfg`] with extra `[sip]` keys (`sip_extra`, one per line).
pub fn start_edge_sip(certs: &Path, sip_extra: &str, trunks_and_routes: &str) -> Edge {
    start_edge_full(certs, "", sip_extra, trunks_and_routes, 100)
}

fn start_edge_full(
    certs: &Path,
    tls_extra: &str,
    sip_extra: &str,
    trunks_and_routes: &str,
    ports: u16,
) -> Edge {
    let sip: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let (pmin, pmax) = port_range(ports);
    let p = |f: &str| certs.join(f).display().to_string();
    let extra = format!(
        "[tls]\n{tls_extra}cert_file = {:?}\nkey_file = {:?}\nca_file = {:?}\n[sip]\n{sip_extra}\nlisten = [\"{sip}\"]\n\
         [media]\nport_min = {pmin}\nport_max = {pmax}\n{trunks_and_routes}\n",
        p("cert.pem"),
        p("key.pem"),
        p("ca.pem"),
    );
    let daemon = Daemon::start(&extra);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !tcp_up(sip) {
        assert!(
            Instant::now() < deadline,
            "SIP listener not up:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Edge {
        daemon,
        sip,
        media: (pmin, pmax),
    }
}

impl Edge {
    /// The Call-IDs the media engine holds (ng `list`).
    pub fn media_calls(&self) -> String {
        let ng = self.daemon.ng.expect("ng address");
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        // A fresh cookie each time: the ng server answers a repeated cookie from its cache.
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        sock.send_to(format!("list{n} d7:command4:liste").as_bytes(), ng)
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Waits (bounded) until the media engine holds no call; false if it still does.
    pub fn wait_no_media(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.media_calls().contains("5:callsle") {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A SIP over TLS client that sends raw text and reads whole messages.
pub struct SipClient {
    s: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl SipClient {
    /// Connects to `addr`, verifying its certificate against `ca`.
    pub fn connect(addr: SocketAddr, ca: &Path) -> SipClient {
        let cfg = super::client(super::roots_from(ca), &[&rustls::version::TLS13]);
        let s = super::connect(cfg, addr).unwrap();
        SipClient { s, buf: Vec::new() }
    }

    /// Connects presenting the certificate `dir/cert.pem` (key `dir/key.pem`), mutual TLS.
    pub fn connect_with_cert(addr: SocketAddr, dir: &Path) -> SipClient {
        use rustls_pki_types::pem::PemObject;
        let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(dir.join("cert.pem"))
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(dir.join("key.pem")).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(super::roots_from(&dir.join("ca.pem")))
            .with_client_auth_cert(certs, key)
            .unwrap();
        let s = super::connect(std::sync::Arc::new(cfg), addr).unwrap();
        SipClient { s, buf: Vec::new() }
    }

    /// The local address of the connection.
    pub fn local(&self) -> SocketAddr {
        self.s.sock.local_addr().unwrap()
    }

    /// Sends bytes as they are.
    pub fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
        self.s.flush().unwrap();
    }

    /// The next whole message (head + Content-Length body), or None on timeout/close.
    pub fn recv(&mut self, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            // Skip keepalive CRLFs.
            while self.buf.starts_with(b"\r\n") {
                self.buf.drain(..2);
            }
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let len = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        let k = k.trim();
                        (k.eq_ignore_ascii_case("content-length") || k == "l")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    let msg: Vec<u8> = self.buf.drain(..end + 4 + len).collect();
                    return Some(String::from_utf8_lossy(&msg).into_owned());
                }
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.s
                .sock
                .set_read_timeout(Some(left.max(Duration::from_millis(10))))
                .unwrap();
            let mut b = [0u8; 8192];
            match self.s.read(&mut b) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&b[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() >= deadline {
                        return None;
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Reads messages until one whose status line starts with `SIP/2.0 {status}`; returns it.
    pub fn expect_status(&mut self, status: u16, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.recv(left) {
                Some(m) if m.starts_with(&format!("SIP/2.0 {status} ")) => return m,
                Some(m) => seen.push(m.lines().next().unwrap_or_default().to_string()),
                None => break,
            }
        }
        panic!("no {status} within {limit:?}; saw {seen:?}");
    }
}

/// The status code of a response's text.
pub fn status_of(msg: &str) -> u16 {
    msg.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A header value (first occurrence, case-insensitive name).
pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// An SDES SRTP offer (AES_CM_128_HMAC_SHA1_80) from 127.0.0.1:`port`, or a plain RTP one.
pub fn sdp_offer(port: u16, srtp: bool) -> String {
    let (proto, crypto) = if srtp {
        (
            "RTP/SAVP",
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n",
        )
    } else {
        ("RTP/AVP", "")
    };
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} {proto} 0\r\na=rtpmap:0 PCMU/8000\r\n{crypto}a=sendrecv\r\n"
    )
}

/// An INVITE to `user` at the edge from the client at `local`.
pub fn invite(edge: SocketAddr, local: SocketAddr, user: &str, call_id: &str, sdp: &str) -> String {
    format!(
        "INVITE sip:{user}@{edge} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-{call_id}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:caller@{local}>;tag=t-{call_id}\r\nTo: <sip:{user}@{edge}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{local};transport=tls>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// The CANCEL of [`invite`].
pub fn cancel(edge: SocketAddr, local: SocketAddr, user: &str, call_id: &str) -> String {
    format!(
        "CANCEL sip:{user}@{edge} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-{call_id}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:caller@{local}>;tag=t-{call_id}\r\nTo: <sip:{user}@{edge}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
    )
}

/// An out-of-dialog request without a body.
pub fn simple(method: &str, edge: SocketAddr, local: SocketAddr, call_id: &str) -> String {
    format!(
        "{method} sip:edge@{edge} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-{call_id}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:caller@{local}>;tag=t-{call_id}\r\nTo: <sip:edge@{edge}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nContact: <sip:caller@{local};transport=tls>\r\n\
         Content-Length: 0\r\n\r\n"
    )
}
