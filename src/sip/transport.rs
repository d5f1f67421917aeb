//! SIP over TLS, the IO shell around [`super::b2bua::B2bua`]: the TLS listener (one task per
//! connection: handshake, [`Framer`], parse, rate limits, idle timeout), one client connection
//! per route target (certificate verified against the configured roots, SNI, reused by every
//! call), a tick for Timer B, and delivery of the state machine's [`Action`]s. No protocol
//! decisions are made here beyond answering what cannot reach the state machine (unparseable
//! requests, rate limits).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::b2bua::{Action, B2bua, MediaPlane, Peer, SIP_RESPONSES};
use super::framing::{Frame, Framer, Limits};
use super::message::Message;
use crate::redact::Redacted;

/// Connections closed for hostile or excess input, by reason.
pub const SIP_CONN_REFUSED: &str = "srtp_edge_sip_connections_refused_total";

/// TLS handshake limit.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with nothing received for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Connect + handshake limit towards a route target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Open connections per source address.
const MAX_CONNS_PER_SOURCE: usize = 256;
/// Requests per second per source address (token bucket rate, burst twice that).
const REQUESTS_PER_SEC: f64 = 1000.0;
/// Messages queued per connection before further ones are dropped.
const QUEUE: usize = 1024;

/// One route target as the client side needs it.
#[derive(Clone)]
pub struct Target {
    /// Address to connect to.
    pub addr: SocketAddr,
    /// Verified name and SNI.
    pub name: ServerName<'static>,
    /// Client config (roots of this target).
    pub tls: Arc<ClientConfig>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
    conns: usize,
}

/// State shared by every connection task.
pub struct Shared<M: MediaPlane> {
    core: Mutex<B2bua<M>>,
    conns: Mutex<HashMap<u64, mpsc::Sender<Vec<u8>>>>,
    routes: Mutex<HashMap<usize, mpsc::Sender<Vec<u8>>>>,
    targets: Vec<Target>,
    sources: Mutex<HashMap<IpAddr, Bucket>>,
    next_conn: std::sync::atomic::AtomicU64,
    limits: Limits,
    /// Trunks recognised by client certificate: (trunk index, names the certificate may hold).
    cert_trunks: Vec<(usize, Vec<ServerName<'static>>)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<M: MediaPlane + Send + 'static> Shared<M> {
    /// Shared state over a B2BUA, the route targets (indexed like the routes) and the trunks
    /// recognised by client certificate.
    pub fn new(
        core: B2bua<M>,
        targets: Vec<Target>,
        cert_trunks: Vec<(usize, Vec<ServerName<'static>>)>,
    ) -> Arc<Self> {
        Arc::new(Shared {
            core: Mutex::new(core),
            conns: Mutex::new(HashMap::new()),
            routes: Mutex::new(HashMap::new()),
            targets,
            sources: Mutex::new(HashMap::new()),
            next_conn: std::sync::atomic::AtomicU64::new(1),
            limits: Limits::default(),
            cert_trunks,
        })
    }

    /// Runs the state machine (which may wait briefly on the media plane) off the async
    /// scheduler's hot path.
    fn with_core<R>(&self, f: impl FnOnce(&mut B2bua<M>) -> R) -> R {
        tokio::task::block_in_place(|| f(&mut lock(&self.core)))
    }

    fn dispatch(self: &Arc<Self>, actions: Vec<Action>) {
        for Action::Send(peer, bytes) in actions {
            match peer {
                Peer::Conn(id) => {
                    let tx = lock(&self.conns).get(&id).cloned();
                    match tx {
                        Some(tx) => {
                            let _ = tx.try_send(bytes);
                        }
                        None => tracing::debug!(
                            conn = id,
                            "SIP message for a closed connection dropped"
                        ),
                    }
                }
                Peer::Route(r) => {
                    let tx = {
                        let mut routes = lock(&self.routes);
                        match routes.get(&r) {
                            Some(tx) if !tx.is_closed() => Some(tx.clone()),
                            _ => {
                                let (tx, rx) = mpsc::channel(QUEUE);
                                if self.targets.get(r).is_some() {
                                    routes.insert(r, tx.clone());
                                    let me = self.clone();
                                    tokio::spawn(async move { me.route_conn(r, rx).await });
                                    Some(tx)
                                } else {
                                    None
                                }
                            }
                        }
                    };
                    if let Some(tx) = tx {
                        let _ = tx.try_send(bytes);
                    }
                }
            }
        }
    }

    /// Token bucket per source; false when the request must be refused.
    fn admit_request(&self, ip: IpAddr, now: Instant) -> bool {
        let mut s = lock(&self.sources);
        let Some(b) = s.get_mut(&ip) else { return true };
        let dt = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + dt * REQUESTS_PER_SEC).min(2.0 * REQUESTS_PER_SEC);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn open_source(&self, ip: IpAddr) -> bool {
        let mut s = lock(&self.sources);
        let b = s.entry(ip).or_insert(Bucket {
            tokens: 2.0 * REQUESTS_PER_SEC,
            at: Instant::now(),
            conns: 0,
        });
        if b.conns >= MAX_CONNS_PER_SOURCE {
            return false;
        }
        b.conns += 1;
        true
    }

    fn close_source(&self, ip: IpAddr) {
        let mut s = lock(&self.sources);
        if let Some(b) = s.get_mut(&ip) {
            b.conns = b.conns.saturating_sub(1);
            if b.conns == 0 {
                s.remove(&ip);
            }
        }
    }

    /// Handles every complete frame buffered in `framer`; false when the connection must close.
    fn on_frames(
        self: &Arc<Self>,
        framer: &mut Framer,
        peer: Peer,
        ip: IpAddr,
        reply: &mpsc::Sender<Vec<u8>>,
    ) -> bool {
        loop {
            match framer.next_frame() {
                Ok(None) => return true,
                Ok(Some(Frame::Ping)) => {
                    let _ = reply.try_send(b"\r\n".to_vec());
                }
                Ok(Some(Frame::Message(bytes))) => match Message::parse(&bytes) {
                    Ok(Message::Request(req)) if !self.admit_request(ip, Instant::now()) => {
                        if req.method != super::method::Method::Ack {
                            let mut r = req.reply(503, Some(b"rl"));
                            r.headers.push("Retry-After", "1");
                            metrics::counter!(SIP_RESPONSES, "status" => "503").increment(1);
                            let _ = reply.try_send(r.to_bytes());
                        }
                    }
                    Ok(msg) => {
                        let actions = self.with_core(|c| c.handle(Instant::now(), peer, ip, msg));
                        self.dispatch(actions);
                    }
                    Err(e) => {
                        if let Some(r) = e.reply(Some(b"bad")) {
                            metrics::counter!(SIP_RESPONSES, "status" => r.status.to_string())
                                .increment(1);
                            let _ = reply.try_send(r.to_bytes());
                        }
                    }
                },
                Err(e) => {
                    if let Some(r) = e.reply(Some(b"bad")) {
                        metrics::counter!(SIP_RESPONSES, "status" => r.status.to_string())
                            .increment(1);
                        let _ = reply.try_send(r.to_bytes());
                    }
                    metrics::counter!(SIP_CONN_REFUSED, "reason" => "framing").increment(1);
                    tracing::debug!(ip = %Redacted(ip), error = %e, "SIP stream unrecoverable; closing");
                    return false;
                }
            }
        }
    }

    /// Reads and writes one established stream until it fails, idles out, or (for inbound
    /// connections) the daemon stops.
    async fn pump<S: AsyncRead + AsyncWrite + Unpin>(
        self: &Arc<Self>,
        stream: S,
        peer: Peer,
        ip: IpAddr,
        tx: mpsc::Sender<Vec<u8>>,
        mut rx: mpsc::Receiver<Vec<u8>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut framer = Framer::new(self.limits);
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            tokio::select! {
                r = tokio::time::timeout(IDLE_TIMEOUT, rd.read(&mut buf)) => {
                    let n = match r {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Err(_) => {
                            tracing::debug!(ip = %Redacted(ip), "SIP connection idle; closing");
                            break;
                        }
                        Ok(Ok(n)) => n,
                    };
                    let Some(data) = buf.get(..n) else { break };
                    if let Err(e) = framer.push(data) {
                        tracing::debug!(error = %e, "SIP input over the buffer limit; closing");
                        metrics::counter!(SIP_CONN_REFUSED, "reason" => "buffer").increment(1);
                        break;
                    }
                    if !self.on_frames(&mut framer, peer, ip, &tx) {
                        // Flush what was queued (the error response) before closing.
                        while let Ok(m) = rx.try_recv() {
                            let _ = wr.write_all(&m).await;
                        }
                        break;
                    }
                }
                m = rx.recv() => match m {
                    Some(m) => {
                        if wr.write_all(&m).await.is_err() {
                            break;
                        }
                    }
                    None => break,
                },
                _ = stop.changed() => break,
            }
        }
        let _ = wr.shutdown().await;
    }

    async fn route_conn(self: Arc<Self>, route: usize, rx: mpsc::Receiver<Vec<u8>>) {
        let Some(t) = self.targets.get(route).cloned() else {
            return;
        };
        let connect = async {
            let tcp = TcpStream::connect(t.addr).await?;
            let _ = tcp.set_nodelay(true);
            TlsConnector::from(t.tls.clone())
                .connect(t.name.clone(), tcp)
                .await
        };
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::warn!(route, addr = %t.addr, error = %e, "cannot reach the route target");
                return self.route_down(route);
            }
            Err(_) => {
                tracing::warn!(route, addr = %t.addr, "route target: connect timed out");
                return self.route_down(route);
            }
        };
        let version = crate::tls::version_label(stream.get_ref().1.protocol_version());
        metrics::counter!(crate::metrics::TLS_HANDSHAKES, "listener" => "sip_client", "version" => version, "result" => "ok").increment(1);
        tracing::debug!(route, addr = %t.addr, version, "connected to the route target");
        let tx = lock(&self.routes).get(&route).cloned();
        let Some(tx) = tx else { return };
        let (_never, stop) = watch::channel(false);
        self.pump(stream, Peer::Route(route), t.addr.ip(), tx, rx, stop)
            .await;
        self.route_down(route);
    }

    fn route_down(self: &Arc<Self>, route: usize) {
        lock(&self.routes).remove(&route);
        let actions = self.with_core(|c| c.route_failed(route));
        self.dispatch(actions);
    }

    fn cert_trunk(&self, leaf: &rustls_pki_types::CertificateDer<'_>) -> Option<usize> {
        let ee = webpki::EndEntityCert::try_from(leaf).ok()?;
        self.cert_trunks.iter().find_map(|(t, names)| {
            names
                .iter()
                .any(|n| ee.verify_is_valid_for_subject_name(n).is_ok())
                .then_some(*t)
        })
    }

    async fn inbound(
        self: Arc<Self>,
        acceptor: TlsAcceptor,
        tcp: TcpStream,
        addr: SocketAddr,
        stop: watch::Receiver<bool>,
    ) {
        let ip = addr.ip();
        if !self.open_source(ip) {
            metrics::counter!(SIP_CONN_REFUSED, "reason" => "connections").increment(1);
            return;
        }
        let _ = tcp.set_nodelay(true);
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                metrics::counter!(crate::metrics::TLS_HANDSHAKES, "listener" => "sip", "version" => "none", "result" => "failed").increment(1);
                tracing::debug!(ip = %Redacted(ip), error = %e, "SIP TLS handshake failed");
                self.close_source(ip);
                return;
            }
            Err(_) => {
                metrics::counter!(crate::metrics::TLS_HANDSHAKES, "listener" => "sip", "version" => "none", "result" => "timeout").increment(1);
                self.close_source(ip);
                return;
            }
        };
        let version = crate::tls::version_label(tls.get_ref().1.protocol_version());
        metrics::counter!(crate::metrics::TLS_HANDSHAKES, "listener" => "sip", "version" => version, "result" => "ok").increment(1);
        let id = self
            .next_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // A client certificate (already verified against the trunk roots) may name a trunk.
        let trunk = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|leaf| self.cert_trunk(leaf));
        if let Some(t) = trunk {
            tracing::debug!(trunk = t, "client certificate identifies a trunk");
            self.with_core(|c| c.conn_identified(id, t));
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        lock(&self.conns).insert(id, tx.clone());
        self.pump(tls, Peer::Conn(id), ip, tx, rx, stop).await;
        lock(&self.conns).remove(&id);
        if trunk.is_some() {
            self.with_core(|c| c.conn_closed(id));
        }
        self.close_source(ip);
    }
}

/// Accepts SIP over TLS on `listener` until `stop`.
pub async fn serve<M: MediaPlane + Send + 'static>(
    shared: Arc<Shared<M>>,
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, addr)) => {
                    let s = shared.clone();
                    let a = acceptor.clone();
                    let st = stop.clone();
                    tokio::spawn(async move { s.inbound(a, tcp, addr, st).await });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "SIP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => break,
        }
    }
}

/// Drives the state machine's timers until `stop`, then ends every call.
pub async fn run_timers<M: MediaPlane + Send + 'static>(
    shared: Arc<Shared<M>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let actions = shared.with_core(|c| c.tick(Instant::now()));
                shared.dispatch(actions);
            }
            _ = stop.changed() => break,
        }
    }
    let actions = shared.with_core(|c| c.shutdown());
    shared.dispatch(actions);
    // Give the writers a moment to send the BYEs.
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// Delivers agent-mode backend events to the state machine until `stop`: a backend that
/// accepted the stream gets its caller the 200, a backend that is gone a BYE (or a 503 before
/// the 200).
pub async fn run_agent_events<M: MediaPlane + Send + 'static>(
    shared: Arc<Shared<M>>,
    mut events: mpsc::UnboundedReceiver<crate::media::calls::AgentEvent>,
    mut stop: watch::Receiver<bool>,
) {
    use crate::media::calls::AgentEvent;
    loop {
        tokio::select! {
            ev = events.recv() => {
                let actions = match ev {
                    Some(AgentEvent::Connected(k)) => shared.with_core(|c| c.agent_connected(&k)),
                    Some(AgentEvent::Hangup(k)) => shared.with_core(|c| c.agent_hangup(&k)),
                    None => break,
                };
                shared.dispatch(actions);
            }
            _ = stop.changed() => break,
        }
    }
}
