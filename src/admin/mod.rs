//! The admin HTTPS listener: `/healthz` (no auth), `/metrics` (Prometheus text), `/posture`
//! (the TLS and SRTP policy in force), each but `/healthz` behind `Authorization: Bearer`.
//!
//! TLS comes from [`crate::tls`] (TLS 1.3 unless configured otherwise). HTTP/1.1 only, headers
//! capped at 16 KiB, a 10 s budget for the TLS handshake and for the request head, a cap on
//! concurrent connections; garbage on the port closes that connection only. A request without
//! the right token gets a bare 401 and nothing else.

pub mod token;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, STRICT_TRANSPORT_SECURITY};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

pub use token::Token;

/// Most admin connections served at once; more wait in the kernel backlog.
const MAX_CONNECTIONS: usize = 256;
/// Time allowed for the TLS handshake and for reading a request head.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head accepted (hyper's minimum buffer is 8 KiB).
const MAX_HEAD: usize = 16 * 1024;

/// Everything a request handler needs; shared by all connections of the listener.
pub struct AdminState {
    /// The bearer token.
    pub token: Token,
    /// The metrics registry.
    pub metrics: PrometheusHandle,
    /// Text served at `/posture`.
    pub posture: String,
}

/// Serves the admin API on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<AdminState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = shutdown.changed() => return,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve_connection(acceptor, tcp, peer, state).await;
        });
    }
}

async fn serve_connection(
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    state: Arc<AdminState>,
) {
    let tls = match tokio::time::timeout(TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            metrics::counter!(crate::metrics::TLS_HANDSHAKES, "listener" => "admin", "version" => "none", "result" => "failed").increment(1);
            tracing::debug!(peer = %crate::redact::Redacted(peer.ip()), error = %e, "admin TLS handshake failed");
            return;
        }
        Err(_) => {
            metrics::counter!(crate::metrics::TLS_HANDSHAKES, "listener" => "admin", "version" => "none", "result" => "timeout").increment(1);
            return;
        }
    };
    let version = crate::tls::version_label(tls.get_ref().1.protocol_version());
    metrics::counter!(crate::metrics::TLS_HANDSHAKES, "listener" => "admin", "version" => version, "result" => "ok").increment(1);
    let svc = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(&state, req)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .max_headers(64)
        .keep_alive(true)
        .serve_connection(TokioIo::new(tls), svc);
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "admin connection closed with an error");
    }
}

fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// Routes one request. Pure apart from reading the metrics registry.
pub fn handle<B>(state: &AdminState, req: Request<B>) -> Response<Full<Bytes>> {
    let class = match req.uri().path() {
        "/healthz" => "/healthz",
        "/metrics" => "/metrics",
        "/posture" => "/posture",
        _ => "other",
    };
    let resp = route(state, &req);
    metrics::counter!(crate::metrics::ADMIN_REQUESTS, "path" => class, "status" => resp.status().as_str().to_string()).increment(1);
    resp
}

fn route<B>(state: &AdminState, req: &Request<B>) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    if req.uri().path() == "/healthz" {
        return match *req.method() {
            Method::GET | Method::HEAD => response(StatusCode::OK, TEXT, "ok\n"),
            _ => response(StatusCode::METHOD_NOT_ALLOWED, TEXT, ""),
        };
    }
    let auth = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
    if !state.token.check_header(auth) {
        let mut r = response(StatusCode::UNAUTHORIZED, TEXT, "");
        r.headers_mut()
            .insert("www-authenticate", HeaderValue::from_static("Bearer"));
        return r;
    }
    if req.method() != Method::GET {
        return response(StatusCode::METHOD_NOT_ALLOWED, TEXT, "");
    }
    match req.uri().path() {
        "/metrics" => {
            state.metrics.run_upkeep();
            response(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                state.metrics.render(),
            )
        }
        "/posture" => response(
            StatusCode::OK,
            TEXT,
            format!("{}{}", state.posture, crate::recording::posture::live()),
        ),
        _ => response(StatusCode::NOT_FOUND, TEXT, ""),
    }
}

/// The `/posture` text: what an auditor wants to see without reading the config.
pub fn posture_text(cfg: &crate::config::Config) -> String {
    let p = crate::tls::crypto_provider(cfg.tls.min_version);
    let suites: Vec<String> = p
        .cipher_suites
        .iter()
        .map(|s| format!("{:?}", s.suite()))
        .collect();
    let groups: Vec<String> = p
        .kx_groups
        .iter()
        .map(|g| format!("{:?}", g.name()))
        .collect();
    let srtp: Vec<&str> = cfg.media.suites.iter().map(|s| s.sdes_name()).collect();
    format!(
        "tls_min_version {}\ntls_cipher_suites {}\ntls_kx_groups {}\nsrtp_suites {}\nplain_rtp refused\nsdes_requires_tls true\nlog_redaction {}\n",
        match cfg.tls.min_version {
            crate::config::TlsMinVersion::Tls13 => "1.3",
            crate::config::TlsMinVersion::Tls12 => "1.2",
        },
        suites.join(","),
        groups.join(","),
        srtp.join(","),
        cfg.log.redact
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> AdminState {
        AdminState {
            token: Token::new("0123456789abcdef0123").unwrap(),
            metrics: crate::metrics::install(),
            posture: "p\n".into(),
        }
    }

    fn req(path: &str, auth: Option<&str>) -> Request<()> {
        let mut b = Request::builder().uri(path);
        if let Some(a) = auth {
            b = b.header(AUTHORIZATION, a);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn healthz_needs_no_token_and_others_do() {
        let s = state();
        let r = handle(&s, req("/healthz", None));
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[STRICT_TRANSPORT_SECURITY], "max-age=31536000");
        for p in ["/metrics", "/posture", "/nope", "/healthz/../metrics"] {
            assert_eq!(
                handle(&s, req(p, None)).status(),
                StatusCode::UNAUTHORIZED,
                "{p}"
            );
            assert_eq!(
                handle(&s, req(p, Some("Bearer wrong-token-wrong-token"))).status(),
                StatusCode::UNAUTHORIZED
            );
        }
        let ok = Some("Bearer 0123456789abcdef0123");
        assert_eq!(handle(&s, req("/metrics", ok)).status(), StatusCode::OK);
        assert_eq!(handle(&s, req("/nope", ok)).status(), StatusCode::NOT_FOUND);
    }
}
