//! Batched UDP for the load generators: `sendmmsg` to many destinations from one socket, and
//! `recvmmsg` with the kernel's receive timestamps (SO_TIMESTAMPNS), so one generator thread
//! can drive hundreds of thousands of packets per second and the latency it reports starts when
//! a packet reached the receiving socket, not when the (possibly descheduled) generator thread
//! got round to reading it.
#![allow(clippy::needless_range_loop)] // parallel arrays of C structs, indexed together

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;

/// Largest datagram the generators send or receive.
pub const DGRAM: usize = 256;
/// Messages per `sendmmsg` / `recvmmsg` call.
pub const BATCH: usize = 32;

/// CLOCK_REALTIME now, in ns (the clock of SO_TIMESTAMPNS).
pub fn realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_REALTIME always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn v4(a: SocketAddr) -> libc::sockaddr_in {
    let SocketAddr::V4(a) = a else {
        panic!("the generators use IPv4 loopback only");
    };
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

/// A UDP socket on 127.0.0.1 with large buffers and receive timestamps on.
pub fn bind_loopback() -> std::io::Result<UdpSocket> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    let _ = s.set_recv_buffer_size(8 << 20);
    let _ = s.set_send_buffer_size(8 << 20);
    s.bind(&SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 0).into())?;
    s.set_nonblocking(true)?;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with a pointer to a live c_int and its size.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    Ok(s.into())
}

/// Sends `lens.len()` (at most [`BATCH`]) datagrams `bufs[i][..lens[i]]` to `dests[i]` in one
/// `sendmmsg`; returns how many the kernel took.
pub fn send_batch(
    sock: &UdpSocket,
    bufs: &[[u8; DGRAM]],
    lens: &[usize],
    dests: &[SocketAddr],
) -> usize {
    let n = lens.len().min(BATCH).min(bufs.len()).min(dests.len());
    if n == 0 {
        return 0;
    }
    // SAFETY: all-zero sockaddr_in, iovec and mmsghdr are valid values (null pointers, zero
    // lengths).
    let mut addrs: [libc::sockaddr_in; BATCH] = unsafe { std::mem::zeroed() };
    let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..n {
        addrs[i] = v4(dests[i]);
        iov[i] = libc::iovec {
            iov_base: bufs[i].as_ptr() as *mut libc::c_void,
            iov_len: lens[i],
        };
    }
    for i in 0..n {
        msgs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_in).cast();
        msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msgs[i].msg_hdr.msg_iov = &mut iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    let mut sent = 0;
    while sent < n {
        // SAFETY: `msgs[sent..n]` point into `addrs`, `iov` and `bufs`, all alive for the call.
        let r = unsafe {
            libc::sendmmsg(
                sock.as_raw_fd(),
                msgs[sent..].as_mut_ptr(),
                (n - sent) as libc::c_uint,
                0,
            )
        };
        if r <= 0 {
            break;
        }
        sent += r as usize;
    }
    sent
}

/// Room for one SCM_TIMESTAMPNS control message.
const CMSG_ROOM: usize = 64;

/// Receive buffers for [`recv_batch`].
pub struct RecvBatch {
    /// The datagrams.
    pub bufs: Box<[[u8; DGRAM]; BATCH]>,
    /// Their lengths.
    pub lens: [usize; BATCH],
    /// The kernel's receive time of each, CLOCK_REALTIME ns (0 if missing).
    pub stamps: [u64; BATCH],
    cmsg: Box<[[u64; CMSG_ROOM / 8]; BATCH]>,
}

impl RecvBatch {
    /// Empty buffers.
    pub fn new() -> Self {
        RecvBatch {
            bufs: Box::new([[0; DGRAM]; BATCH]),
            lens: [0; BATCH],
            stamps: [0; BATCH],
            cmsg: Box::new([[0; CMSG_ROOM / 8]; BATCH]),
        }
    }
}

/// Receives up to [`BATCH`] datagrams without blocking; returns how many (0 when none).
pub fn recv_batch(sock: &UdpSocket, rb: &mut RecvBatch) -> usize {
    // SAFETY: all-zero iovec and mmsghdr are valid values (null pointers, zero lengths).
    let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..BATCH {
        iov[i] = libc::iovec {
            iov_base: rb.bufs[i].as_mut_ptr().cast(),
            iov_len: DGRAM,
        };
        msgs[i].msg_hdr.msg_iov = &mut iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_control = rb.cmsg[i].as_mut_ptr().cast();
        msgs[i].msg_hdr.msg_controllen = CMSG_ROOM;
    }
    // SAFETY: every header points into `iov`, `rb.bufs` and `rb.cmsg`, alive for the call.
    let r = unsafe {
        libc::recvmmsg(
            sock.as_raw_fd(),
            msgs.as_mut_ptr(),
            BATCH as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if r <= 0 {
        return 0;
    }
    let n = r as usize;
    for i in 0..n {
        rb.lens[i] = msgs[i].msg_len as usize;
        rb.stamps[i] = 0;
        let hdr = &msgs[i].msg_hdr;
        // SAFETY: the CMSG_* macros walk the control buffer the kernel filled for this message,
        // within `msg_controllen`.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(hdr);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                    rb.stamps[i] = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
                }
                c = libc::CMSG_NXTHDR(hdr, c);
            }
        }
    }
    n
}
