//! The media engine as the control planes see it: worker threads, port pools, call placement and
//! metrics. Both the ng control server and the SIP B2BUA anchor calls through it.
//!
//! The port pools are behind a mutex that only signaling takes; workers never touch it.

use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::ports::{PoolError, PortPair, PortPool};
use super::relay::Drop;
use super::worker::{self, Event, WorkerHandle};
use crate::config::MediaConfig;

use crate::metrics::{
    BYTES_RELAYED, CALLS_ACTIVE, PACKETS_DROPPED, PACKETS_RELAYED, PORTS_CAPACITY, PORTS_IN_USE,
    SEND_ERRORS, WAIT_ERRORS,
};

#[derive(Debug)]
struct Pools {
    v4: Option<PortPool>,
    v6: Option<PortPool>,
}

/// The running media engine.
pub struct Engine {
    workers: Vec<WorkerHandle>,
    joins: Mutex<Vec<std::thread::JoinHandle<()>>>,
    pools: Mutex<Pools>,
    next_key: AtomicU64,
    /// The configuration it was started with.
    pub cfg: MediaConfig,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("workers", &self.workers.len())
            .finish()
    }
}

impl Engine {
    /// Starts the workers (one per core unless configured). Returns the engine and the stream of
    /// worker events (media timeouts) the control plane must consume.
    pub fn start(
        cfg: &MediaConfig,
    ) -> io::Result<(Arc<Engine>, tokio::sync::mpsc::UnboundedReceiver<Event>)> {
        let n = if cfg.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            cfg.workers
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut workers = Vec::with_capacity(n);
        let mut joins = Vec::with_capacity(n);
        for i in 0..n {
            let (h, j) = worker::spawn(
                format!("srtp-edge-media-{i}"),
                Duration::from_secs(u64::from(cfg.timeout_secs)),
                worker::IoOptions {
                    io_uring: cfg.io_uring,
                    batch_pause: Duration::from_micros(u64::from(cfg.batch_pause_us)),
                },
                tx.clone(),
            )?;
            workers.push(h);
            joins.push(j);
        }
        let pools = Pools {
            v4: cfg
                .ipv4
                .map(|ip| PortPool::new(IpAddr::V4(ip), cfg.port_min, cfg.port_max)),
            v6: cfg
                .ipv6
                .map(|ip| PortPool::new(IpAddr::V6(ip), cfg.port_min, cfg.port_max)),
        };
        Ok((
            Arc::new(Engine {
                workers,
                joins: Mutex::new(joins),
                pools: Mutex::new(pools),
                next_key: AtomicU64::new(1),
                cfg: cfg.clone(),
            }),
            rx,
        ))
    }

    /// A new engine-wide call key.
    pub fn new_key(&self) -> u64 {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }

    /// The worker that owns a call (both legs on the same one).
    pub fn worker(&self, key: u64) -> &WorkerHandle {
        &self.workers[(key as usize) % self.workers.len()]
    }

    /// The address srtp-edge writes into SDP for a family.
    pub fn advertised(&self, v6: bool) -> Option<IpAddr> {
        if v6 {
            self.cfg.advertise_ipv6.or(self.cfg.ipv6).map(IpAddr::V6)
        } else {
            self.cfg.advertise_ipv4.or(self.cfg.ipv4).map(IpAddr::V4)
        }
    }

    fn with_pool<T>(&self, v6: bool, f: impl FnOnce(&mut PortPool) -> T) -> Result<T, PoolError> {
        let mut pools = match self.pools.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        let pool = if v6 {
            pools.v6.as_mut()
        } else {
            pools.v4.as_mut()
        };
        pool.map(f).ok_or(PoolError::NoFamily)
    }

    /// Binds a port pair for a leg in the given family.
    pub fn allocate(&self, v6: bool) -> Result<PortPair, PoolError> {
        self.with_pool(v6, |p| p.allocate())?
    }

    /// Returns a pair to the pool (after its sockets were dropped).
    pub fn release(&self, v6: bool, rtp_port: u16) {
        let _ = self.with_pool(v6, |p| p.release(rtp_port));
    }

    /// Port pairs in use (IPv4 + IPv6), for tests and `statistics`.
    pub fn ports_in_use(&self) -> usize {
        self.with_pool(false, |p| p.in_use()).unwrap_or(0)
            + self.with_pool(true, |p| p.in_use()).unwrap_or(0)
    }

    /// Calls currently on the workers.
    pub fn calls_active(&self) -> u64 {
        self.workers
            .iter()
            .map(|w| w.stats.calls.load(Ordering::Relaxed))
            .sum()
    }

    /// Copies the workers' counters into the metrics registry; called about once a second and
    /// before each scrape, never from the media path.
    pub fn export_metrics(&self) {
        let sum = |f: &dyn Fn(&worker::WorkerStats) -> &AtomicU64| -> u64 {
            self.workers
                .iter()
                .map(|w| f(&w.stats).load(Ordering::Relaxed))
                .sum()
        };
        metrics::gauge!(CALLS_ACTIVE).set(self.calls_active() as f64);
        metrics::counter!(PACKETS_RELAYED, "direction" => "a_to_b")
            .absolute(sum(&|s| &s.packets_a_to_b));
        metrics::counter!(PACKETS_RELAYED, "direction" => "b_to_a")
            .absolute(sum(&|s| &s.packets_b_to_a));
        metrics::counter!(BYTES_RELAYED, "direction" => "a_to_b")
            .absolute(sum(&|s| &s.bytes_a_to_b));
        metrics::counter!(BYTES_RELAYED, "direction" => "b_to_a")
            .absolute(sum(&|s| &s.bytes_b_to_a));
        for d in Drop::ALL {
            metrics::counter!(PACKETS_DROPPED, "reason" => d.label())
                .absolute(sum(&|s| &s.drops[d as usize]));
        }
        metrics::counter!(SEND_ERRORS).absolute(sum(&|s| &s.send_errors));
        metrics::counter!(WAIT_ERRORS).absolute(sum(&|s| &s.wait_errors));
        for (v6, fam) in [(false, "ipv4"), (true, "ipv6")] {
            if let Ok((used, cap)) = self.with_pool(v6, |p| (p.in_use(), p.capacity())) {
                metrics::gauge!(PORTS_IN_USE, "family" => fam).set(used as f64);
                metrics::gauge!(PORTS_CAPACITY, "family" => fam).set(cap as f64);
            }
        }
    }

    /// Packets and bytes relayed in both directions since start.
    pub fn relayed(&self) -> (u64, u64) {
        self.workers.iter().fold((0, 0), |(p, b), w| {
            let s = &w.stats;
            (
                p + s.packets_a_to_b.load(Ordering::Relaxed)
                    + s.packets_b_to_a.load(Ordering::Relaxed),
                b + s.bytes_a_to_b.load(Ordering::Relaxed) + s.bytes_b_to_a.load(Ordering::Relaxed),
            )
        })
    }

    /// DTLS-SRTP handshakes across workers since start: (completed, failed and ended their
    /// call, failed re-keys that kept the previous keys), for ng `statistics`.
    pub fn dtls_totals(&self) -> (u64, u64, u64) {
        self.workers.iter().fold((0, 0, 0), |(o, f, r), w| {
            let s = &w.stats;
            (
                o + s.dtls_ok.load(Ordering::Relaxed),
                f + s.dtls_failed.load(Ordering::Relaxed),
                r + s.dtls_rekey_failed.load(Ordering::Relaxed),
            )
        })
    }

    /// Total drops for one reason across workers (tests, `statistics`).
    pub fn drops(&self, reason: Drop) -> u64 {
        self.workers
            .iter()
            .map(|w| w.stats.drops[reason as usize].load(Ordering::Relaxed))
            .sum()
    }

    /// Stops the workers (their calls' sockets close).
    pub fn shutdown(&self) {
        for w in &self.workers {
            let _ = w.send(worker::Command::Shutdown);
        }
        let joins = match self.joins.lock() {
            Ok(mut j) => std::mem::take(&mut *j),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        };
        for j in joins {
            let _ = j.join();
        }
    }
}
