//! SIP over TLS, the IO shell around [`super::b2bua::B2bua`]: the TLS listener (one task per
//! connection: handshake, [`Framer`], parse, rate limits, idle timeout), one client connection
//! per route target (host name resolved to A/AAAA when the connection is opened, certificate
//! verified against the configured roots, SNI, optional client certificate; reused by every
//! call), a tick for Timer B, and delivery of the state machine's [`Action`]s. No protocol
//! decisions are made here beyond answering what cannot reach the state machine (unparseable
//! requests, rate limits).
//!
//! Shutdown: on stop the listener closes, the state machine ends every call (BYE to both legs of
//! established calls, 503/CANCEL for the others), and only once those are written (bounded wait)
//! are the connections closed with a TLS close_notify.

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

use super::b2bua::{Action, B2bua, MediaPlane, Peer};
use super::framing::{Frame, Framer, Limits};
use super::message::Message;
use crate::redact::Redacted;

use crate::metrics::{SIP_CONN_REFUSED, SIP_QUEUE_DROPS, SIP_RESPONSES, SIP_ROUTE_FAILURES};

/// TLS handshake limit.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with nothing received for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Connect + handshake limit towards a route target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Open connections per source address that is no trunk.
const MAX_CONNS_PER_SOURCE: usize = 256;
/// Open connections per source address inside a trunk's `from` prefixes: a trunk (an SBC, a
/// carrier, a PBX farm behind one address) may open a TLS connection per call, so it needs about
/// as many connections as it has calls up; the bound still stops an unbounded leak.
const MAX_CONNS_PER_TRUNK_SOURCE: usize = 16 * 1024;
/// Requests per second per source address by default (token bucket rate, burst twice that).
const REQUESTS_PER_SEC: f64 = 1000.0;
/// Messages queued per inbound connection from a source that is no trunk (it only ever gets
/// short error responses) before further ones are dropped.
const QUEUE: usize = 1024;
/// Messages queued towards a trunk or a route target: one connection carries every call of the
/// trunk or route, so a short stall of the peer at hundreds of calls/s must not drop messages
/// (TLS is reliable: nothing would retransmit them).
const ROUTE_QUEUE: usize = 16 * 1024;
/// At shutdown, how long the BYEs/CANCELs may take to be written before connections close.
const DRAIN: Duration = Duration::from_secs(2);

/// One route target as the client side needs it.
#[derive(Clone)]
pub struct Target {
    /// Host to connect to: an IP address, or a DNS name resolved (A/AAAA) on every connect.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Verified name and SNI.
    pub name: ServerName<'static>,
    /// Client config (roots of this target, client certificate if configured).
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
    /// Closes every connection (inbound and to targets) once the shutdown BYEs are written.
    conn_stop: watch::Sender<bool>,
    /// Requests per second per source address (`sip.source_requests_per_sec`).
    rate: f64,
    /// Source prefixes of the trunks (their connections get the deep send queue).
    trunk_sources: Vec<crate::config::IpNet>,
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
            conn_stop: watch::channel(false).0,
            rate: REQUESTS_PER_SEC,
            trunk_sources: Vec::new(),
        })
    }

    /// Like [`Shared::new`] with the per-source request rate (requests/s, burst twice that) and
    /// the trunks' source prefixes (whose connections get a deep send queue).
    pub fn with_rate(
        core: B2bua<M>,
        targets: Vec<Target>,
        cert_trunks: Vec<(usize, Vec<ServerName<'static>>)>,
        rate: u32,
        trunk_sources: Vec<crate::config::IpNet>,
    ) -> Arc<Self> {
        let mut s = Self::new(core, targets, cert_trunks);
        if let Some(me) = Arc::get_mut(&mut s) {
            me.rate = f64::from(rate.max(1));
            me.trunk_sources = trunk_sources;
        }
        s
    }

    /// True when every connection has written everything queued for it.
    fn queues_empty(&self) -> bool {
        let empty =
            |tx: &mpsc::Sender<Vec<u8>>| tx.is_closed() || tx.capacity() == tx.max_capacity();
        lock(&self.conns).values().all(empty) && lock(&self.routes).values().all(empty)
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
                            if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(bytes) {
                                metrics::counter!(SIP_QUEUE_DROPS, "peer" => "trunk").increment(1);
                            }
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
                                let (tx, rx) = mpsc::channel(ROUTE_QUEUE);
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
                        if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(bytes) {
                            metrics::counter!(SIP_QUEUE_DROPS, "peer" => "route").increment(1);
                            tracing::warn!(
                                route = r,
                                "send queue to the route target full: SIP message dropped"
                            );
                        }
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
        b.tokens = (b.tokens + dt * self.rate).min(2.0 * self.rate);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// True when `ip` is inside a trunk's `from` prefixes.
    fn is_trunk_source(&self, ip: IpAddr) -> bool {
        self.trunk_sources.iter().any(|n| n.contains(ip))
    }

    fn open_source(&self, ip: IpAddr) -> bool {
        let mut s = lock(&self.sources);
        let b = s.entry(ip).or_insert(Bucket {
            tokens: 2.0 * self.rate,
            at: Instant::now(),
            conns: 0,
        });
        let cap = if self.is_trunk_source(ip) {
            MAX_CONNS_PER_TRUNK_SOURCE
        } else {
            MAX_CONNS_PER_SOURCE
        };
        if b.conns >= cap {
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
                _ = stop.changed() => {
                    // Whatever was queued before the stop (shutdown BYEs) still goes out.
                    while let Ok(m) = rx.try_recv() {
                        if wr.write_all(&m).await.is_err() {
                            break;
                        }
                    }
                    break;
                }
            }
        }
        let _ = wr.shutdown().await;
    }

    /// Resolves the target (A/AAAA; an IP host resolves to itself) and opens a TLS connection
    /// to the first address that accepts, within [`CONNECT_TIMEOUT`].
    async fn connect_target(
        self: &Arc<Self>,
        route: usize,
        t: &Target,
    ) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, SocketAddr), &'static str> {
        let host = t.host.as_str();
        let addrs: Vec<SocketAddr> = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::lookup_host((host, t.port)),
        )
        .await
        {
            Ok(Ok(a)) => a.take(16).collect(),
            Ok(Err(e)) => {
                tracing::warn!(route, host, port = t.port, error = %e, "route target: cannot resolve the host name; calls get 503");
                return Err("dns");
            }
            Err(_) => {
                tracing::warn!(
                    route,
                    host,
                    "route target: name resolution timed out; calls get 503"
                );
                return Err("dns");
            }
        };
        if addrs.is_empty() {
            tracing::warn!(
                route,
                host,
                "route target: the host name has no A/AAAA record; calls get 503"
            );
            return Err("dns");
        }
        let ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
        self.with_core(|c| c.route_resolved(route, ips));
        let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        let mut reason = "connect";
        for addr in addrs {
            let attempt = async {
                let tcp = TcpStream::connect(addr).await.map_err(|e| ("connect", e))?;
                let _ = tcp.set_nodelay(true);
                TlsConnector::from(t.tls.clone())
                    .connect(t.name.clone(), tcp)
                    .await
                    .map_err(|e| ("tls", e))
            };
            match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(s)) => return Ok((s, addr)),
                Ok(Err((r, e))) => {
                    tracing::warn!(route, host, %addr, error = %e, "cannot reach the route target");
                    reason = r;
                }
                Err(_) => {
                    tracing::warn!(route, host, %addr, "route target: connect timed out");
                    return Err("timeout");
                }
            }
        }
        Err(reason)
    }

    async fn route_conn(self: Arc<Self>, route: usize, rx: mpsc::Receiver<Vec<u8>>) {
        let Some(t) = self.targets.get(route).cloned() else {
            return;
        };
        let (stream, addr) = match self.connect_target(route, &t).await {
            Ok(s) => s,
            Err(reason) => {
                metrics::counter!(SIP_ROUTE_FAILURES, "reason" => reason).increment(1);
                if reason == "tls" {
                    metrics::counter!(crate::metrics::TLS_HANDSHAKES, "listener" => "sip_client", "version" => "none", "result" => "failed").increment(1);
                }
                return self.route_down(route);
            }
        };
        let version = crate::tls::version_label(stream.get_ref().1.protocol_version());
        metrics::counter!(crate::metrics::TLS_HANDSHAKES, "listener" => "sip_client", "version" => version, "result" => "ok").increment(1);
        tracing::debug!(route, %addr, version, "connected to the route target");
        let tx = lock(&self.routes).get(&route).cloned();
        let Some(tx) = tx else { return };
        let stop = self.conn_stop.subscribe();
        self.pump(stream, Peer::Route(route), addr.ip(), tx, rx, stop)
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

    async fn inbound(self: Arc<Self>, acceptor: TlsAcceptor, tcp: TcpStream, addr: SocketAddr) {
        let stop = self.conn_stop.subscribe();
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
        let is_trunk = trunk.is_some() || self.is_trunk_source(ip);
        let (tx, rx) = mpsc::channel(if is_trunk { ROUTE_QUEUE } else { QUEUE });
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
                    tokio::spawn(async move { s.inbound(a, tcp, addr).await });
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

/// Drives the state machine's timers until `stop`, then ends every call (BYE to both legs of
/// each established call), waits (at most [`DRAIN`]) for those to be written and the peers to
/// answer, and closes every connection.
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
    let ended = actions.len();
    shared.dispatch(actions);
    if ended > 0 {
        tracing::info!(
            messages = ended,
            "shutdown: BYE/CANCEL sent on every call leg"
        );
        let deadline = Instant::now() + DRAIN;
        while !shared.queues_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The peers' 200s to those BYEs are read (and consumed) until the connections close.
        tokio::time::sleep(
            Duration::from_millis(200).min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
    }
    shared.conn_stop.send_replace(true);
    // Let the connection tasks write their close_notify.
    tokio::time::sleep(Duration::from_millis(50)).await;
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
