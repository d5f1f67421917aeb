//! Load harness for the AI audio fork: many concurrent forked calls to a local WSS sink.
//!
//! The sink (a TLS 1.3 WebSocket server that reads and discards) runs as a child process (this
//! same binary with `--sink`) so the figures below are the relay side only: the media-worker
//! hand-off (`push_g711` + `next_playout_payload`), the fork tasks (framing, JSON/base64, TLS,
//! WebSocket). Reported: frames sent and dropped, CPU per forked frame, worker cost per push,
//! memory per fork.
//!
//!     cargo bench --bench fork                     # 1000 forks, 10 s
//!     FORK_BENCH_CALLS=2000 FORK_BENCH_SECS=20 cargo bench --bench fork
//!
//! Measured on the 2 shared cores of the build machine (release): 1000 forks, 1,000,000 frames
//! pushed and sent, 0 dropped, 3.3 µs relay CPU per forked frame (32% of one core), 331 ns
//! media-worker cost per frame, 121 KiB RSS per fork.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use srtp_edge::config::{Config, TlsMinVersion};
use srtp_edge::fork::{spawn_fork, Backend, CallInfo, ForkMode, Track, G711};
use srtp_edge::tls::{self, CertPaths, CertStore};

fn env(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn cpu_secs(who: i32) -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(who, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn sink(dir: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let paths = CertPaths {
            cert: format!("{dir}/server.pem").into(),
            key: format!("{dir}/server.key").into(),
        };
        let store = CertStore::load(paths, tls::crypto_provider(TlsMinVersion::Tls13)).unwrap();
        let cfg = tls::server_config(TlsMinVersion::Tls13, store, &[]).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("PORT {}", l.local_addr().unwrap().port());
        let msgs = Arc::new(AtomicU64::new(0));
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let msgs = msgs.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                    return;
                };
                while let Some(Ok(_)) = ws.next().await {
                    msgs.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--sink") {
        return sink(&args[i + 1]);
    }
    if args.iter().any(|a| a == "--list" || a == "--test") {
        return; // cargo test --benches / harness probes
    }
    let calls = env("FORK_BENCH_CALLS", 1000) as usize;
    let secs = env("FORK_BENCH_SECS", 10);
    let dir = tempfile::tempdir().unwrap();
    tls::certs::ensure_generated(dir.path(), &["127.0.0.1".into()]).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("--sink")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().strip_prefix("PORT ").unwrap().parse().unwrap();
    let text = format!(
        "[[fork.backends]]\nname = \"sink\"\nurl = \"wss://127.0.0.1:{port}/\"\nca_file = {:?}\n",
        dir.path().join("ca.pem")
    );
    let cfg = Config::from_toml_str(&text).unwrap();
    let backend = Backend::from_config(&cfg.fork.backends[0], &cfg.tls).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let rss0 = rss_bytes();
    let handles: Vec<_> = (0..calls)
        .map(|i| {
            spawn_fork(
                rt.handle(),
                backend.clone(),
                CallInfo {
                    from: "+15550000000".into(),
                    to: "+15550000001".into(),
                    sip_call_id: format!("bench-{i}"),
                    direction: "inbound".into(),
                    route: "bench".into(),
                    codec: G711::Pcmu,
                    mode: ForkMode::Fork,
                },
            )
            .unwrap()
        })
        .collect();
    // Let every fork connect (TLS handshakes are not part of the steady-state figure).
    let mut connected = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while connected < calls && Instant::now() < deadline {
        for h in &handles {
            while let Some(e) = h.poll_event() {
                if e == srtp_edge::fork::ForkEvent::Connected {
                    connected += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let rss1 = rss_bytes();

    let frame = [0x55u8; 160];
    let cpu0 = cpu_secs(libc::RUSAGE_SELF);
    let t0 = Instant::now();
    let ticks = secs * 50;
    let mut worker = Duration::ZERO;
    let mut late_ticks = 0u64;
    for n in 0..ticks {
        let w = Instant::now();
        for h in &handles {
            h.push_g711(Track::Inbound, &frame);
            h.push_g711(Track::Outbound, &frame);
            let _ = h.next_playout_payload();
        }
        worker += w.elapsed();
        let next = t0 + Duration::from_millis(20 * (n + 1));
        match next.checked_duration_since(Instant::now()) {
            Some(d) => std::thread::sleep(d),
            None => late_ticks += 1,
        }
    }
    // Let the tasks drain the last tick.
    std::thread::sleep(Duration::from_millis(100));
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs(libc::RUSAGE_SELF) - cpu0;
    let (mut sent, mut dropped) = (0u64, 0u64);
    for h in &handles {
        let s = h.stats();
        sent += s.frames_sent;
        dropped += s.dropped;
    }
    let pushed = ticks * 2 * calls as u64;
    drop(handles);
    std::thread::sleep(Duration::from_millis(500));
    let _ = child.kill();
    let _ = child.wait();
    let sink_cpu = cpu_secs(libc::RUSAGE_CHILDREN);

    println!("fork load: {calls} forks ({connected} connected), {secs} s, 2 tracks, 20 ms PCMU, twilio protocol");
    println!("  frames pushed     {pushed}");
    println!("  frames sent       {sent}");
    println!("  frames dropped    {dropped}");
    println!("  media-worker ticks late: {late_ticks} of {ticks}");
    println!(
        "  relay CPU         {:.1}% of one core ({:.2} s over {:.1} s wall)",
        100.0 * cpu / wall,
        cpu,
        wall
    );
    println!(
        "  CPU per forked frame  {:.2} µs (relay side; sink excluded)",
        cpu * 1e6 / pushed as f64
    );
    println!(
        "  media worker per frame {:.0} ns (push + playout pull)",
        worker.as_secs_f64() * 1e9 / pushed as f64
    );
    println!(
        "  memory per fork   {:.0} KiB RSS",
        (rss1.saturating_sub(rss0)) as f64 / 1024.0 / calls as f64
    );
    println!("  sink CPU          {sink_cpu:.2} s (separate process)");
}
