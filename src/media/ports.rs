//! The media port pool: even/odd RTP/RTCP port pairs from `media.port_min..=port_max`, bound on
//! the media address of one family, handed to a leg and returned when its call ends.
//!
//! Ports are tried round-robin so a port released by a finished call is reused last (late
//! packets of the old call then hit a closed port rather than a new call). A port held by another
//! program is skipped. Every socket is non-blocking with enlarged kernel buffers.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// Kernel receive/send buffer requested per media socket.
const SOCKET_BUFFER: usize = 256 * 1024;

/// Errors from the pool.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    /// Every pair of the range is in use (or held by other programs).
    #[error("media port range exhausted")]
    Exhausted,
    /// The family of the peer's address has no media address configured.
    #[error("no media address configured for this address family")]
    NoFamily,
}

/// A bound RTP/RTCP socket pair for one leg.
#[derive(Debug)]
pub struct PortPair {
    /// The RTP port (even); RTCP is `rtp_port + 1`.
    pub rtp_port: u16,
    /// RTP socket (also carries RTCP with rtcp-mux).
    pub rtp: UdpSocket,
    /// RTCP socket (used when RTCP is not multiplexed).
    pub rtcp: UdpSocket,
}

/// The pool for one address family.
#[derive(Debug)]
pub struct PortPool {
    ip: IpAddr,
    first: u16,
    used: Vec<bool>,
    next: usize,
    in_use: usize,
}

fn bind(ip: IpAddr, port: u16) -> std::io::Result<UdpSocket> {
    let addr = SocketAddr::new(ip, port);
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if ip.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    s.bind(&addr.into())?;
    Ok(s.into())
}

impl PortPair {
    /// A pair for a leg that will never carry media (an agent call's second leg: the backend is
    /// the other party): two unbound, non-blocking UDP sockets, so the call's worker slot keeps
    /// its two legs (the relay path is unchanged) while no port of the media range is held. An
    /// unbound socket has no address, so nothing can reach it; the relay never sends on it
    /// (the leg has no signalled or latched destination). `rtp_port` is 0.
    pub fn parked() -> std::io::Result<PortPair> {
        let unbound = || -> std::io::Result<UdpSocket> {
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            s.set_nonblocking(true)?;
            Ok(s.into())
        };
        Ok(PortPair {
            rtp_port: 0,
            rtp: unbound()?,
            rtcp: unbound()?,
        })
    }
}

impl PortPool {
    /// A pool over `min..=max` on `ip`; pairs start at the first even port.
    pub fn new(ip: IpAddr, min: u16, max: u16) -> Self {
        let first = min + (min % 2);
        let pairs = if max > first {
            usize::from(max - first).div_ceil(2)
        } else {
            0
        };
        PortPool {
            ip,
            first,
            used: vec![false; pairs],
            next: 0,
            in_use: 0,
        }
    }

    /// The address the sockets are bound to.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// Number of pairs in the range.
    pub fn capacity(&self) -> usize {
        self.used.len()
    }

    /// Number of pairs handed out and not yet released.
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// Binds the next free pair. Pairs another program holds are skipped (and retried later).
    pub fn allocate(&mut self) -> Result<PortPair, PoolError> {
        let n = self.used.len();
        for _ in 0..n {
            let i = self.next;
            self.next = (self.next + 1) % n;
            if self.used[i] {
                continue;
            }
            let port = self.first + (i as u16) * 2;
            let Ok(rtp) = bind(self.ip, port) else {
                continue;
            };
            let Ok(rtcp) = bind(self.ip, port + 1) else {
                continue;
            };
            self.used[i] = true;
            self.in_use += 1;
            return Ok(PortPair {
                rtp_port: port,
                rtp,
                rtcp,
            });
        }
        Err(PoolError::Exhausted)
    }

    /// Returns a pair to the pool. The sockets must have been dropped (or be about to be) by
    /// whoever owned them. Releasing a port that is not in use is ignored.
    pub fn release(&mut self, rtp_port: u16) {
        let Some(off) = rtp_port.checked_sub(self.first) else {
            return;
        };
        let i = usize::from(off / 2);
        if off % 2 == 0 && i < self.used.len() && self.used[i] {
            self.used[i] = false;
            self.in_use -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn allocates_pairs_round_robin_and_releases() {
        let mut p = PortPool::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 41001, 41010);
        assert_eq!(p.capacity(), 4); // 41002, 41004, 41006, 41008 (41010 has no odd partner)
        let a = p.allocate().unwrap();
        assert_eq!(a.rtp_port % 2, 0);
        assert_eq!(a.rtp.local_addr().unwrap().port(), a.rtp_port);
        assert_eq!(a.rtcp.local_addr().unwrap().port(), a.rtp_port + 1);
        let b = p.allocate().unwrap();
        assert_ne!(a.rtp_port, b.rtp_port);
        assert_eq!(p.in_use(), 2);
        let port = a.rtp_port;
        drop(a);
        p.release(port);
        p.release(port); // double release is harmless
        assert_eq!(p.in_use(), 1);
        let c = p.allocate().unwrap();
        assert_ne!(c.rtp_port, port, "a released port is reused last");
        let _d = p.allocate().unwrap();
        let _e = p.allocate().unwrap(); // the released one, now the only free pair
        assert_eq!(p.allocate().unwrap_err(), PoolError::Exhausted);
    }

    #[test]
    fn skips_ports_held_by_others() {
        let held = UdpSocket::bind("127.0.0.1:41102").unwrap();
        let mut p = PortPool::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 41102, 41105);
        let a = p.allocate().unwrap();
        assert_eq!(a.rtp_port, 41104);
        assert_eq!(p.allocate().unwrap_err(), PoolError::Exhausted);
        drop(held);
    }

    #[test]
    fn a_parked_pair_holds_no_port_and_receives_nothing() {
        let p = PortPair::parked().unwrap();
        assert_eq!(p.rtp_port, 0);
        let mut buf = [0u8; 16];
        assert_eq!(
            p.rtp.recv_from(&mut buf).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock
        );
        // Unbound: no local port to send to.
        assert!(p.rtp.local_addr().map_or(true, |a| a.port() == 0));
    }
}
