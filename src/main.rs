//! The `srtp-edge` binary: command line, start-up, signals. Protocol decisions live in the
//! library; this file only wires configuration, sockets and tasks together.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio::sync::watch;

use srtp_edge::config::{CertSource, Config};
use srtp_edge::{admin, metrics, notify, tls};

/// An encrypted-only SIP-TLS / SRTP edge: anchors call media, relays SRTP with per-leg keys,
/// refuses plain RTP, and forks call audio to AI backends over WSS.
#[derive(Parser)]
#[command(name = "srtp-edge", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (on the embedded loopback-only default when no -c is given).
    Run {
        /// Configuration file (TOML); keys left out take their default.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file and exit: 0 if valid, 2 with one line per problem if not.
    CheckConfig {
        /// Configuration file (TOML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Encrypted call recordings: list, verify, export to WAV, shred, rewrap.
    Recording {
        #[command(flatten)]
        config: srtp_edge::recording::cli::ConfigArg,
        #[command(subcommand)]
        cmd: srtp_edge::recording::cli::RecordingCmd,
    },
    /// The key audit log.
    Audit {
        #[command(flatten)]
        config: srtp_edge::recording::cli::ConfigArg,
        #[command(subcommand)]
        cmd: srtp_edge::recording::cli::AuditCmd,
    },
    /// Key-encryption keys: list versions, rotate.
    Keys {
        #[command(flatten)]
        config: srtp_edge::recording::cli::ConfigArg,
        #[command(subcommand)]
        cmd: srtp_edge::recording::cli::KeysCmd,
    },
}

/// Exit code for configuration errors.
const EXIT_CONFIG: u8 = 2;
/// Exit code for start-up failures (a port in use, an unwritable state directory...).
const EXIT_START: u8 = 1;

fn load(path: Option<&PathBuf>) -> Result<Config, ExitCode> {
    let result = match path {
        Some(p) => Config::load(p),
        None => Ok(Config::embedded_default()),
    };
    result.map_err(|errs| {
        for e in &errs.0 {
            eprintln!("srtp-edge: config: {e}");
        }
        ExitCode::from(EXIT_CONFIG)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Recording { config, cmd } => srtp_edge::recording::cli::recording(&config, &cmd),
        Command::Audit { config, cmd } => srtp_edge::recording::cli::audit(&config, &cmd),
        Command::Keys { config, cmd } => srtp_edge::recording::cli::keys_cmd(&config, &cmd),
        Command::CheckConfig { config } => match load(Some(&config)) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Run { config } => {
            let cfg = match load(config.as_ref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            srtp_edge::logging::init(&cfg.log);
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("srtp-edge-io")
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("srtp-edge: cannot start the runtime: {e}");
                    return ExitCode::from(EXIT_START);
                }
            };
            match rt.block_on(run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("srtp-edge: {e}");
                    ExitCode::from(EXIT_START)
                }
            }
        }
    }
}

type SipCore = srtp_edge::sip::b2bua::B2bua<Arc<srtp_edge::media::calls::Calls>>;

/// Why a route target's TLS client could not be built (the daemon does not start).
#[derive(Debug, thiserror::Error)]
enum RouteSetupError {
    /// Its roots (`ca_file`, else `tls.ca_file` or the system roots) could not be loaded.
    #[error("routes[{0}].ca_file: {1}")]
    Roots(usize, tls::TlsError),
    /// Its client certificate or key could not be loaded.
    #[error("routes[{0}].client_cert_file: {1}")]
    ClientCert(usize, tls::TlsError),
    /// The client configuration could not be built.
    #[error("routes[{0}]: {1}")]
    Client(usize, tls::TlsError),
    /// Its `server_name` is not a DNS name or IP address.
    #[error("routes[{0}].server_name: {1}")]
    ServerName(usize, rustls_pki_types::InvalidDnsNameError),
}

/// Builds the B2BUA and one TLS client config per route target; `client_certs` gets the stores
/// of the routes' client certificates (reloaded on SIGHUP).
fn sip_b2bua(
    cfg: &Config,
    calls: Arc<srtp_edge::media::calls::Calls>,
    client_certs: &mut Vec<Arc<tls::CertStore>>,
) -> Result<(SipCore, Vec<srtp_edge::sip::transport::Target>), RouteSetupError> {
    let mut targets = Vec::new();
    for (i, r) in cfg.routes.iter().enumerate() {
        let mut t = cfg.tls.clone();
        if r.ca_file.is_some() {
            t.ca_file = r.ca_file.clone();
        }
        let roots = tls::client_roots(&t).map_err(|e| RouteSetupError::Roots(i, e))?;
        let store = match &r.client_cert {
            Some(cc) => {
                let paths = tls::CertPaths {
                    cert: cc.cert.clone(),
                    key: cc.key.clone(),
                };
                let s = tls::CertStore::load(paths, tls::crypto_provider(cfg.tls.min_version))
                    .map_err(|e| RouteSetupError::ClientCert(i, e))?;
                client_certs.push(s.clone());
                Some(s)
            }
            None => None,
        };
        let client = tls::client_config_with_cert(cfg.tls.min_version, roots, store)
            .map_err(|e| RouteSetupError::Client(i, e))?;
        let name = rustls_pki_types::ServerName::try_from(r.server_name.clone())
            .map_err(|e| RouteSetupError::ServerName(i, e))?;
        targets.push(srtp_edge::sip::transport::Target {
            host: r.target_host.0.clone(),
            port: r.target_host.1,
            name,
            tls: client,
        });
    }
    let local = cfg
        .sip
        .listen
        .first()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "127.0.0.1:5061".into());
    let settings = srtp_edge::sip::b2bua::Settings {
        local,
        trunks: cfg.trunks.clone(),
        routes: cfg.routes.clone(),
        suites: cfg.media.suites.clone(),
        timer_b: std::time::Duration::from_secs(u64::from(cfg.sip.timer_b_secs)),
    };
    let core =
        srtp_edge::sip::b2bua::B2bua::new(settings, calls, Box::new(srtp_edge::rand::OsRandom));
    Ok((core, targets))
}

async fn run(cfg: Config) -> Result<(), String> {
    let cfg = Arc::new(cfg);
    tls::certs::ensure_state_dir(&cfg.state_dir)?;
    if cfg.tls.cert == CertSource::Generated {
        let (paths, fresh) =
            tls::certs::ensure_generated(&cfg.state_dir, &cfg.tls.generated_names)?;
        if fresh {
            tracing::info!(ca = %paths.ca_cert.display(), "generated a self-signed CA and server certificate");
        }
    }
    let provider = tls::crypto_provider(cfg.tls.min_version);
    let store = tls::CertStore::load(
        tls::CertPaths::for_config(&cfg.tls, &cfg.state_dir),
        provider,
    )
    .map_err(|e| e.to_string())?;
    let prom = metrics::install();
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    ::metrics::gauge!(metrics::START_TIME).set(start);

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    if !cfg.admin.listen.is_empty() {
        let (token, token_path) =
            admin::Token::load_or_generate(cfg.admin.token_file.as_deref(), &cfg.state_dir)?;
        tracing::info!(file = %token_path.display(), "admin bearer token file");
        let state = Arc::new(admin::AdminState {
            token,
            metrics: prom.clone(),
            posture: admin::posture_text(&cfg),
        });
        let tls_cfg = tls::server_config(cfg.tls.min_version, store.clone(), &[b"http/1.1"])
            .map_err(|e| e.to_string())?;
        for (i, addr) in cfg.admin.listen.iter().enumerate() {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("admin.listen[{i}] {addr}: {e}"))?;
            tracing::info!(%addr, "admin HTTPS listening");
            tasks.push(tokio::spawn(admin::serve(
                l,
                tls_cfg.clone(),
                state.clone(),
                stop_rx.clone(),
            )));
        }
    }

    // The media engine, the call table and the ng control listeners.
    let (engine, mut media_events) = srtp_edge::media::engine::Engine::start(&cfg.media)
        .map_err(|e| format!("media engine: {e}"))?;
    // Fork backends: TLS configs built and secrets read once, here; the control plane can only
    // name them.
    let mut backends = Vec::with_capacity(cfg.fork.backends.len());
    for b in &cfg.fork.backends {
        let backend =
            srtp_edge::fork::Backend::from_config(b, &cfg.tls).map_err(|e| e.to_string())?;
        tracing::info!(backend = %b.name, protocol = ?backend.protocol(), "fork backend ready");
        backends.push(backend);
    }
    // One DTLS identity per run (ECDSA P-256, rotated on restart); its sha-256 fingerprint goes
    // in the SDP of every DTLS-SRTP leg.
    let identity = std::sync::Arc::new(
        srtp_edge::dtls::DtlsIdentity::generate().map_err(|e| format!("DTLS identity: {e}"))?,
    );
    let handshake = srtp_edge::dtls::EndpointConfig {
        handshake_timeout: std::time::Duration::from_secs(u64::from(
            cfg.media.dtls_handshake_timeout_secs,
        )),
        ..Default::default()
    };
    let calls = srtp_edge::media::calls::Calls::with_forks_and_dtls(
        engine.clone(),
        srtp_edge::media::calls::ForkBackends::new(backends, tokio::runtime::Handle::current()),
        identity,
        &handshake,
    )
    .map_err(|e| format!("DTLS configuration: {e}"))?;
    let recorder =
        srtp_edge::recording::daemon::start(&cfg, &calls, &engine, &mut tasks, &stop_rx)?;
    {
        let calls = calls.clone();
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    ev = media_events.recv() => match ev {
                        Some(srtp_edge::media::worker::Event::TimedOut { key, .. }) => {
                            calls.timed_out(key)
                        }
                        Some(srtp_edge::media::worker::Event::Fork { key, event }) => {
                            calls.fork_event(key, event)
                        }
                        Some(srtp_edge::media::worker::Event::DtlsFailed { key, reason, .. }) => {
                            calls.dtls_failed(key, &reason)
                        }
                        Some(srtp_edge::media::worker::Event::DtlsRekeyFailed { key, leg, reason }) => {
                            calls.dtls_rekey_failed(key, leg, &reason)
                        }
                        None => break,
                    },
                    _ = stop.changed() => break,
                }
            }
        }));
    }
    {
        let engine = engine.clone();
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => engine.export_metrics(),
                    _ = stop.changed() => break,
                }
            }
        }));
    }
    let ng_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut ng_threads = Vec::new();
    if !cfg.control.listen.is_empty() {
        let server = srtp_edge::control::server::NgServer::new(
            calls.clone(),
            cfg.control.allow_from.clone(),
            cfg.media.suites.clone(),
        );
        for (i, addr) in cfg.control.listen.iter().enumerate() {
            let t = server
                .spawn(*addr, ng_stop.clone())
                .map_err(|e| format!("control.listen[{i}] {addr}: {e}"))?;
            tracing::info!(%addr, "ng control listening");
            ng_threads.push(t);
        }
    }

    // SIP over TLS: the B2BUA.
    let mut client_certs = Vec::new();
    if !cfg.sip.listen.is_empty() {
        let (core, targets) =
            sip_b2bua(&cfg, calls.clone(), &mut client_certs).map_err(|e| e.to_string())?;
        let mut cert_trunks = Vec::new();
        let mut client_roots = rustls::RootCertStore::empty();
        for (i, t) in cfg.trunks.iter().enumerate() {
            if t.client_names.is_empty() {
                continue;
            }
            let names = t
                .client_names
                .iter()
                .filter_map(|n| rustls_pki_types::ServerName::try_from(n.clone()).ok())
                .collect();
            cert_trunks.push((i, names));
            let mut c = cfg.tls.clone();
            if t.client_ca_file.is_some() {
                c.ca_file = t.client_ca_file.clone();
            }
            let roots =
                tls::client_roots(&c).map_err(|e| format!("trunks[{i}].client_ca_file: {e}"))?;
            client_roots.roots.extend(roots.roots);
        }
        // Mutual TLS (optional, so address-matched trunks still connect) when a trunk is
        // recognised by its client certificate.
        let tls_cfg = if cert_trunks.is_empty() {
            tls::server_config(cfg.tls.min_version, store.clone(), &[])
        } else {
            tls::server_config_mtls(cfg.tls.min_version, store.clone(), client_roots, true)
        }
        .map_err(|e| e.to_string())?;
        let shared = srtp_edge::sip::transport::Shared::with_rate(
            core,
            targets,
            cert_trunks,
            cfg.sip.source_requests_per_sec,
            cfg.trunks
                .iter()
                .flat_map(|t| t.from.iter().copied())
                .collect(),
        );
        for (i, addr) in cfg.sip.listen.iter().enumerate() {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("sip.listen[{i}] {addr}: {e}"))?;
            tracing::info!(%addr, trunks = cfg.trunks.len(), routes = cfg.routes.len(), "SIP over TLS listening");
            tasks.push(tokio::spawn(srtp_edge::sip::transport::serve(
                shared.clone(),
                l,
                tls_cfg.clone(),
                stop_rx.clone(),
            )));
        }
        tasks.push(tokio::spawn(srtp_edge::sip::transport::run_agent_events(
            shared.clone(),
            calls.agent_events(),
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(srtp_edge::sip::transport::run_timers(
            shared,
            stop_rx.clone(),
        )));
    }

    notify::notify("READY=1");
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "srtp-edge started");

    use tokio::signal::unix::{signal, SignalKind};
    let sig = |k| signal(k).map_err(|e| format!("cannot install signal handler: {e}"));
    let mut term = sig(SignalKind::terminate())?;
    let mut int = sig(SignalKind::interrupt())?;
    let mut hup = sig(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                notify::notify("RELOADING=1");
                // The server certificate and every route's client certificate; each store that
                // fails keeps its previous certificate, the others take their new one.
                let failed: Vec<_> = std::iter::once(&store)
                    .chain(client_certs.iter())
                    .filter_map(|s| s.reload().err())
                    .collect();
                if failed.is_empty() {
                    ::metrics::counter!(metrics::CERT_RELOADS, "result" => "ok").increment(1);
                    tracing::info!("certificates reloaded");
                } else {
                    ::metrics::counter!(metrics::CERT_RELOADS, "result" => "failed").increment(1);
                    for e in failed {
                        tracing::error!(error = %e, "certificate reload failed; keeping the previous certificate");
                    }
                }
                notify::notify("READY=1");
            }
        }
    }
    notify::notify("STOPPING=1");
    tracing::info!("stopping");
    let _ = stop_tx.send(true);
    ng_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in ng_threads {
        let _ = t.join();
    }
    calls.clear();
    if let Some(r) = recorder {
        // The calls are gone, so every tap was dropped: the writer seals the final chunks.
        r.shutdown();
    }
    // Forks were told to stop with their calls: let them send `stop` and close 1000.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while srtp_edge::fork::client::running_forks() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    engine.shutdown();
    for t in tasks {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
    }
    tracing::info!("stopped");
    Ok(())
}
