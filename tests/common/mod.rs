//! Test harness shared by the integration tests: start the real `srtp-edge` binary on loopback
//! with a temporary state directory, wait for it, talk to it, and stop it when dropped.
#![allow(dead_code)]

pub mod b2bua;
pub mod interop;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Ports this test process already handed out: a port is bound then released, so the kernel may
/// offer it again to the next call (it did: the admin and SIP listeners of one daemon got the
/// same port); never give the same one twice.
fn unique_port(pick: impl Fn() -> u16) -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let port = (0..1000)
        .map(|_| pick())
        .find(|p| !given.contains(p))
        .expect("a port not handed out before");
    given.push(port);
    port
}

/// A free TCP port on 127.0.0.1 (bound then released; the race with other processes is
/// acceptable on loopback), never one this process handed out before.
pub fn free_tcp_port() -> u16 {
    unique_port(|| {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    })
}

/// A free UDP port on 127.0.0.1, never one this process handed out before.
pub fn free_udp_port() -> u16 {
    unique_port(|| {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    })
}

/// A running daemon; killed (SIGKILL) on drop if the test did not stop it.
pub struct Daemon {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub state: PathBuf,
    pub admin: SocketAddr,
    pub log: PathBuf,
    /// The ng control address the base config gave it (None if `extra` set its own).
    pub ng: Option<SocketAddr>,
}

impl Daemon {
    /// Starts the daemon with `extra` TOML appended to a base config that puts the admin
    /// listener on a free port and everything else on free loopback ports.
    pub fn start(extra: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        // Every daemon gets its own ng port so tests can run in parallel, outside the media
        // range (the config refuses an overlap): `extra`'s port_min/port_max, else the default.
        let key = |k: &str, default: u16| {
            extra
                .lines()
                .find_map(|l| {
                    l.trim()
                        .strip_prefix(k)?
                        .trim()
                        .strip_prefix('=')?
                        .trim()
                        .parse()
                        .ok()
                })
                .unwrap_or(default)
        };
        let media = key("port_min", 30000)..=key("port_max", 39999);
        let ng: Option<SocketAddr> = (!extra.contains("[control]")).then(|| {
            let port = (0..1000)
                .map(|_| free_udp_port())
                .find(|p| !media.contains(p))
                .expect("a free UDP port outside the media range");
            format!("127.0.0.1:{port}").parse().unwrap()
        });
        let mut control = ng
            .map(|a| format!("[control]\nlisten = [\"{a}\"]\n"))
            .unwrap_or_default();
        // The SIP listener too gets a free port (the default 5061 would collide between tests).
        if !extra.contains("[sip]") {
            control.push_str(&format!(
                "[sip]\nlisten = [\"127.0.0.1:{}\"]\n",
                free_tcp_port()
            ));
        }
        let cfg = format!(
            "state_dir = {state:?}\n[admin]\nlisten = [\"{admin}\"]\n{control}{extra}\n",
            state = state.display().to_string()
        );
        let mut d = Self::start_with(dir, state, admin, &cfg);
        d.ng = ng;
        if let Some(ng) = ng {
            d.wait_ng(ng);
        }
        d
    }

    fn start_with(dir: tempfile::TempDir, state: PathBuf, admin: SocketAddr, cfg: &str) -> Daemon {
        let cfg_path = dir.path().join("srtp-edge.toml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let log = dir.path().join("daemon.log");
        let child = Command::new(env!("CARGO_BIN_EXE_srtp-edge"))
            .args(["run", "-c"])
            .arg(&cfg_path)
            .env("SRTP_EDGE_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child: Some(child),
            dir,
            state,
            admin,
            log,
            ng: None,
        };
        d.wait_ready();
        d
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("daemon exited early ({status}):\n{}", self.log_text());
                }
            }
            if TcpStream::connect(self.admin).is_ok() && self.state.join("admin-token").exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daemon not ready in 20 s:\n{}", self.log_text());
    }

    /// Waits (bounded) until the ng listener answers a ping.
    pub fn wait_ng(&self, ng: SocketAddr) {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 256];
        while Instant::now() < deadline {
            let _ = sock.send_to(b"ready d7:command4:pinge", ng);
            if let Ok(n) = sock.recv(&mut buf) {
                if buf[..n].starts_with(b"ready ") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("ng listener not ready in 20 s:\n{}", self.log_text());
    }

    /// Everything the daemon logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The generated admin token.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.state.join("admin-token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        // SAFETY: kill(2) with a pid we spawned and a valid signal number.
        unsafe {
            libc::kill(pid, sig);
        }
    }

    /// SIGTERM, then waits (bounded) and returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                return s.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("daemon did not stop within 10 s after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Roots holding the daemon's generated CA (or any PEM file).
pub fn roots_from(pem: &Path) -> rustls::RootCertStore {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(pem).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    roots
}

/// A plain rustls client config (the crate's default provider) limited to `versions`.
pub fn client(
    roots: rustls::RootCertStore,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A TLS connection to `addr` (server name 127.0.0.1), handshake completed.
pub fn connect(
    cfg: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, std::io::Error> {
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(cfg, name).map_err(std::io::Error::other)?;
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// One HTTP/1.1 request over an established stream; returns (status, headers, body).
pub fn http_get<S: Read + Write>(
    s: &mut S,
    path: &str,
    auth: Option<&str>,
) -> (u16, String, String) {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    read_response(s)
}

/// Reads one HTTP/1.1 response with a Content-Length body.
pub fn read_response<S: Read>(s: &mut S) -> (u16, String, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => buf.push(byte[0]),
            Err(e) => panic!("read failed: {e}"),
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (status, head, String::from_utf8_lossy(&body).to_string())
}
