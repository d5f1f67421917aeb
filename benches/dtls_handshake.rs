//! DTLS-SRTP handshake latency: two `Endpoint`s in memory, and the same over loopback UDP
//! sockets. Prints p50/p99 per full handshake (client and server work both counted, one core).
//!
//! `cargo bench --bench dtls_handshake` (set `DTLS_BENCH_N` to change the number of handshakes).

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use srtp_edge::dtls::{
    DtlsConfig, DtlsIdentity, Endpoint, EndpointConfig, PeerFingerprints, Role, State,
};

struct Ctx {
    cid: DtlsIdentity,
    sid: DtlsIdentity,
    cfg: DtlsConfig,
}

impl Ctx {
    fn pair(&self, now: Instant) -> (Endpoint, Endpoint) {
        let fp = |id: &DtlsIdentity| {
            PeerFingerprints::from_fingerprints([id.fingerprint().clone()])
                .expect("one fingerprint")
        };
        (
            Endpoint::new(&self.cid, Role::Client, fp(&self.sid), &self.cfg, now),
            Endpoint::new(&self.sid, Role::Server, fp(&self.cid), &self.cfg, now),
        )
    }
}

/// CPU time of this thread: unlike wall time it does not count time the scheduler gave to other
/// processes, which matters on a shared 2-core builder.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One in-memory handshake: (wall time, CPU time).
fn in_memory_timed(ctx: &Ctx) -> (Duration, Duration) {
    let cpu = thread_cpu_time();
    let wall = in_memory(ctx);
    (wall, thread_cpu_time() - cpu)
}

fn in_memory(ctx: &Ctx) -> Duration {
    let t = Instant::now();
    let (mut c, mut s) = ctx.pair(t);
    loop {
        let mut moved = false;
        while let Some(d) = c.poll_transmit() {
            moved = true;
            s.handle_datagram(t, &d);
        }
        while let Some(d) = s.poll_transmit() {
            moved = true;
            c.handle_datagram(t, &d);
        }
        if !moved {
            break;
        }
    }
    assert_eq!(c.state(), &State::Connected);
    assert_eq!(s.state(), &State::Connected);
    t.elapsed()
}

fn loopback(ctx: &Ctx, cs: &UdpSocket, ss: &UdpSocket) -> Duration {
    let t = Instant::now();
    let (mut c, mut s) = ctx.pair(t);
    let mut buf = [0u8; 4096];
    while c.state() != &State::Connected || s.state() != &State::Connected {
        let mut sent = 0;
        while let Some(d) = c.poll_transmit() {
            cs.send(&d).expect("send");
            sent += 1;
        }
        for _ in 0..sent {
            let n = ss.recv(&mut buf).expect("recv");
            s.handle_datagram(Instant::now(), &buf[..n]);
        }
        let mut back = 0;
        while let Some(d) = s.poll_transmit() {
            ss.send(&d).expect("send");
            back += 1;
        }
        for _ in 0..back {
            let n = cs.recv(&mut buf).expect("recv");
            c.handle_datagram(Instant::now(), &buf[..n]);
        }
        assert!(
            !matches!(c.state(), State::Failed(_)) && !matches!(s.state(), State::Failed(_)),
            "handshake failed"
        );
        assert!(t.elapsed() < Duration::from_secs(5), "stalled");
    }
    t.elapsed()
}

fn report(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let pct = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    let total: Duration = v.iter().sum();
    println!(
        "{name:<28} n={:<5} p50={:>9.3?} p99={:>9.3?} max={:>9.3?} ({:.0} handshakes/s on one core)",
        v.len(),
        pct(0.50),
        pct(0.99),
        v[v.len() - 1],
        v.len() as f64 / total.as_secs_f64()
    );
}

fn main() {
    // `cargo test --benches` passes --bench; nothing else to parse.
    let n: usize = std::env::var("DTLS_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    let ctx = Ctx {
        cid: DtlsIdentity::generate().expect("identity"),
        sid: DtlsIdentity::generate().expect("identity"),
        cfg: EndpointConfig::default().build().expect("config"),
    };
    for _ in 0..20 {
        in_memory(&ctx);
    }
    let (wall, cpu): (Vec<_>, Vec<_>) = (0..n).map(|_| in_memory_timed(&ctx)).unzip();
    report("dtls handshake, in memory", wall);
    report("  same, CPU time only", cpu);

    let cs = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let ss = UdpSocket::bind("127.0.0.1:0").expect("bind");
    cs.connect(ss.local_addr().expect("addr")).expect("connect");
    ss.connect(cs.local_addr().expect("addr")).expect("connect");
    cs.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    ss.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    report(
        "dtls handshake, loopback UDP",
        (0..n).map(|_| loopback(&ctx, &cs, &ss)).collect(),
    );
}
