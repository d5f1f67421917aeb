//! The system calls of the media workers, and the only `unsafe` code of `media/`: epoll, the
//! eventfd that wakes a worker, the timer slack of its pauses, and the io_uring ring that sends
//! a batch of relayed packets with one system call ([`SendRing`]).
//!
//! Kept small and free of policy (quinn-udp's `imp` is the model): the worker decides what to do
//! with readiness and errors; this module only turns the raw calls into `io::Result`s. Every
//! `unsafe` block states why it is sound.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use io_uring::{opcode, types, IoUring};

/// A readiness event: the token registered with the descriptor.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct Event(libc::epoll_event);

impl Event {
    /// An empty event, to fill a buffer with before [`Epoll::wait`].
    pub const EMPTY: Event = Event(libc::epoll_event { events: 0, u64: 0 });

    /// The token the descriptor was registered with.
    pub fn token(&self) -> u64 {
        self.0.u64
    }
}

/// An epoll instance (level-triggered, read readiness only: media sockets are never waited on
/// for writing, a full send buffer drops the datagram as a router would).
#[derive(Debug)]
pub struct Epoll(OwnedFd);

impl Epoll {
    /// Creates the instance (close-on-exec).
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall without pointers; the result is checked below.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by epoll_create1, is valid and owned by nobody else.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `self.0` is a live epoll descriptor and `ev` a live epoll_event the kernel only
        // reads during the call; an invalid `fd` is reported as EBADF, not undefined behaviour.
        let r = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd, &mut ev) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Watches `fd` for readability, reporting `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token)
    }

    /// Stops watching `fd` (before it is closed, so a reused number is never reported).
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0)
    }

    /// Waits up to `timeout_ms` (-1: forever, 0: poll) for events and returns how many of
    /// `events` were filled. An interrupted wait (EINTR) is 0 events; any other failure is an
    /// error for the caller to count and back off from.
    pub fn wait(&self, events: &mut [Event], timeout_ms: i32) -> io::Result<usize> {
        let max = libc::c_int::try_from(events.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `Event` is a transparent wrapper of epoll_event, so the pointer is valid for
        // `max <= events.len()` writable entries for the duration of the call.
        let n = unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                events.as_mut_ptr().cast::<libc::epoll_event>(),
                max,
                timeout_ms,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            Ok(0)
        } else {
            Err(e)
        }
    }
}

/// The eventfd that wakes a worker when the control plane queued a command.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A non-blocking, close-on-exec eventfd.
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: plain syscall without pointers; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd, is valid and owned by nobody else.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Adds one to the counter, making the descriptor readable. A full counter (EAGAIN) already
    /// means "readable", so the error is not worth reporting.
    pub fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to a descriptor this struct owns.
        let _ = unsafe {
            libc::write(
                self.0.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    /// Resets the counter (non-blocking: nothing to read is fine).
    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64 from a descriptor this struct owns.
        let _ = unsafe {
            libc::read(
                self.0.as_raw_fd(),
                (&mut v as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Sets the calling thread's timer slack (how late the kernel may fire its timers, to merge
/// wake-ups). Best effort: an error leaves the default (50 µs).
pub fn set_timer_slack(d: Duration) {
    let ns = libc::c_ulong::try_from(d.as_nanos()).unwrap_or(libc::c_ulong::MAX);
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer argument; no pointers are involved.
    let _ = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns, 0, 0, 0) };
}

/// Bytes a slot holds: the largest datagram a worker receives plus room for the tag protect
/// appends.
pub const SLOT_BUF: usize = RECV_MAX + 64;
/// Largest datagram received (longer ones are truncated and then fail authentication).
pub const RECV_MAX: usize = 2048;
/// User-data bit of receive completions (sends have it clear).
const RECV: u64 = 1 << 63;
/// Longest wait for the receives of one batch (they complete at once: the sockets were
/// readable and MSG_DONTWAIT turns a missing datagram into EAGAIN).
const RECV_WAIT_NS: u32 = 5_000_000;

/// One datagram in flight: its buffer, its peer address and the `msghdr` the kernel reads and
/// writes, kept at a fixed address (inside a boxed slice never resized) until its completion is
/// reaped.
struct Slot {
    buf: [u8; SLOT_BUF],
    addr: libc::sockaddr_in6,
    iov: libc::iovec,
    msg: libc::msghdr,
    token: u64,
}

/// A received datagram, reaped from the ring: it stays in slot `slot` until the worker sends it
/// on ([`BatchRing::send_slot`]) or drops it ([`BatchRing::release`]).
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// The slot holding it ([`BatchRing::buf`]).
    pub slot: u32,
    /// The token the receive was queued with.
    pub token: u64,
    /// Bytes received.
    pub len: usize,
    /// Who sent it.
    pub src: SocketAddr,
}

/// The receives and sends of one wake-up of a worker, batched through io_uring: the readable
/// sockets are read with one `io_uring_enter` (RECVMSG with MSG_DONTWAIT) instead of one
/// `recvfrom` each, the packets are relayed in place in the ring's own buffers, and all sends go
/// out with one more `io_uring_enter` instead of one `sendto` each. Besides the system calls,
/// batching the sends saves preemptions: a send to a local receiver (loopback in the benches, a
/// PBX on the same host in production) wakes it, and the scheduler runs it at the sender's next
/// return to user space, which is now once per batch instead of once per packet (measured in
/// benches/README.md).
///
/// A slot is reused only after its completion was reaped; a ring dropped with operations in
/// flight leaks their buffers rather than freeing memory the kernel may still use.
pub struct BatchRing {
    ring: IoUring,
    slots: Box<[Slot]>,
    free: Vec<u32>,
    received: Vec<Received>,
    queued: usize,
    recvs_pending: usize,
}

impl BatchRing {
    /// A ring with `slots` buffers. Fails where io_uring is missing, disabled
    /// (`kernel.io_uring_disabled`, seccomp) or lacks what is needed (SENDMSG, RECVMSG, waits
    /// with a timeout: Linux 5.11): the worker then uses `recvfrom` and `sendto`.
    pub fn new(slots: u32) -> io::Result<BatchRing> {
        let ring = IoUring::new(slots)?;
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        if !probe.is_supported(opcode::SendMsg::CODE)
            || !probe.is_supported(opcode::RecvMsg::CODE)
            || !ring.params().is_feature_ext_arg()
        {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring without SENDMSG, RECVMSG or EXT_ARG",
            ));
        }
        let empty = || Slot {
            buf: [0; SLOT_BUF],
            // SAFETY: all-zero is a valid sockaddr_in6, iovec and msghdr (null pointers, zero
            // lengths); the pointers are set before a slot is handed to the kernel.
            addr: unsafe { std::mem::zeroed() },
            // SAFETY: as above.
            iov: unsafe { std::mem::zeroed() },
            // SAFETY: as above.
            msg: unsafe { std::mem::zeroed() },
            token: 0,
        };
        let slots: Box<[Slot]> = (0..slots).map(|_| empty()).collect();
        let free = (0..slots.len() as u32).rev().collect();
        let received = Vec::with_capacity(slots.len());
        Ok(BatchRing {
            ring,
            slots,
            free,
            received,
            queued: 0,
            recvs_pending: 0,
        })
    }

    /// Points slot `i`'s msghdr at its own buffer (`len` bytes) and address.
    fn prepare(&mut self, i: u32, len: usize, namelen: libc::socklen_t) -> &libc::msghdr {
        let s = &mut self.slots[i as usize];
        s.iov = libc::iovec {
            iov_base: s.buf.as_mut_ptr().cast(),
            iov_len: len,
        };
        s.msg.msg_name = (&mut s.addr as *mut libc::sockaddr_in6).cast();
        s.msg.msg_namelen = namelen;
        s.msg.msg_iov = &mut s.iov;
        s.msg.msg_iovlen = 1;
        s.msg.msg_control = std::ptr::null_mut();
        s.msg.msg_controllen = 0;
        s.msg.msg_flags = 0;
        &s.msg
    }

    fn push(&mut self, sqe: io_uring::squeue::Entry, i: u32) -> bool {
        // SAFETY: every entry points at the msghdr of slot `i`, whose iovec, buffer and address
        // live in `self.slots`, a boxed slice that is never moved, resized or freed while
        // operations are in flight (see Drop); slot `i` is off the free list until its
        // completion is reaped. The socket fd is kept open by the caller until the submission
        // (the kernel holds its own reference from then on).
        if unsafe { self.ring.submission().push(&sqe) }.is_err() {
            self.free.push(i);
            return false;
        }
        self.queued += 1;
        true
    }

    /// Queues a receive of one datagram on socket `fd` (readable now), tagged `token`. False
    /// when no slot is free or the queue is full: the caller reads it itself.
    pub fn queue_recv(&mut self, fd: RawFd, token: u64) -> bool {
        let Some(i) = self.free.pop() else {
            return false;
        };
        self.slots[i as usize].token = token;
        let namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        let msg = self.prepare(i, RECV_MAX, namelen);
        let sqe = opcode::RecvMsg::new(types::Fd(fd), (msg as *const libc::msghdr).cast_mut())
            .flags(libc::MSG_DONTWAIT as u32)
            .build()
            .user_data(RECV | u64::from(i));
        let ok = self.push(sqe, i);
        if ok {
            self.recvs_pending += 1;
        }
        ok
    }

    /// Submits the queued receives, waits (bounded) until they completed and returns them.
    /// Failed receives (EAGAIN: nothing was there after all) free their slot and are left out.
    pub fn receive(&mut self) -> &[Received] {
        self.received.clear();
        if self.recvs_pending > 0 {
            let ts = types::Timespec::new().nsec(RECV_WAIT_NS);
            let args = types::SubmitArgs::new().timespec(&ts);
            match self
                .ring
                .submitter()
                .submit_with_args(self.recvs_pending, &args)
            {
                Ok(n) => self.queued = self.queued.saturating_sub(n),
                // ETIME, EINTR, EBUSY: whatever completed is reaped below, the rest next time.
                Err(_) => self.sync_queued(),
            }
        }
        self.reap();
        &self.received
    }

    /// The `k`-th datagram returned by the last [`receive`](Self::receive).
    pub fn received_at(&self, k: usize) -> Received {
        self.received[k]
    }

    /// After a failed submission: the kernel may still have consumed entries.
    fn sync_queued(&mut self) {
        self.queued = self.ring.submission().len();
    }

    /// The buffer of a received datagram's slot (room for the tag after the datagram).
    pub fn buf(&mut self, slot: u32) -> &mut [u8] {
        &mut self.slots[slot as usize].buf
    }

    /// Sends the first `len` bytes of slot `slot` (a received datagram relayed in place) from
    /// socket `fd` to `dest` with the next [`flush`](Self::flush). False when the queue is full:
    /// the slot is then free again and the caller sends from [`buf`](Self::buf) itself first.
    pub fn send_slot(&mut self, slot: u32, fd: RawFd, len: usize, dest: SocketAddr) -> bool {
        let len = len.min(SLOT_BUF);
        let namelen = write_sockaddr(&mut self.slots[slot as usize].addr, dest);
        let msg = self.prepare(slot, len, namelen);
        let sqe = opcode::SendMsg::new(types::Fd(fd), msg)
            .build()
            .user_data(u64::from(slot));
        self.push(sqe, slot)
    }

    /// Queues `data` to be sent from socket `fd` to `dest` (copied into a free slot). False when
    /// no slot is free or the queue is full: the caller sends it directly.
    pub fn send_copy(&mut self, fd: RawFd, data: &[u8], dest: SocketAddr) -> bool {
        if data.len() > SLOT_BUF {
            return false;
        }
        let Some(i) = self.free.pop() else {
            return false;
        };
        self.slots[i as usize].buf[..data.len()].copy_from_slice(data);
        self.send_slot(i, fd, data.len(), dest)
    }

    /// Gives back the slot of a received datagram that is not sent on.
    pub fn release(&mut self, slot: u32) {
        if (slot as usize) < self.slots.len() && !self.free.contains(&slot) {
            self.free.push(slot);
        }
    }

    /// Submits every queued send with one system call and reaps what completed; returns the
    /// sends that failed (counted by the caller as send errors).
    pub fn flush(&mut self) -> u64 {
        if self.queued > 0 {
            match self.ring.submit() {
                Ok(n) => self.queued = self.queued.saturating_sub(n),
                Err(_) => {
                    // EBUSY/EAGAIN: completions are pending; reap them and submit again.
                    let failed = self.reap();
                    match self.ring.submit() {
                        Ok(n) => self.queued = self.queued.saturating_sub(n),
                        Err(_) => self.sync_queued(),
                    }
                    return failed + self.reap();
                }
            }
        }
        self.reap()
    }

    /// Reaps completions: sends free their slot (failures counted), receives are collected.
    fn reap(&mut self) -> u64 {
        let mut failed = 0;
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            let data = cqe.user_data();
            let i = (data & !RECV) as u32;
            let Some(slot) = self.slots.get(i as usize) else {
                continue;
            };
            if data & RECV == 0 {
                if cqe.result() < 0 {
                    failed += 1;
                }
                self.free.push(i);
                continue;
            }
            self.recvs_pending = self.recvs_pending.saturating_sub(1);
            let src = if cqe.result() >= 0 {
                read_sockaddr(&slot.addr, slot.msg.msg_namelen)
            } else {
                None
            };
            match src {
                Some(src) => self.received.push(Received {
                    slot: i,
                    token: slot.token,
                    len: (cqe.result() as usize).min(RECV_MAX),
                    src,
                }),
                None => self.free.push(i),
            }
        }
        failed
    }

    /// Slots in use (queued, in flight, or holding a received datagram).
    pub fn in_use(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

impl Drop for BatchRing {
    fn drop(&mut self) {
        for _ in 0..100 {
            if self.queued == 0 && self.recvs_pending == 0 && self.ring.completion().is_empty() {
                break;
            }
            let _ = self.ring.submit_and_wait(1);
            self.reap();
        }
        if self.queued > 0 || self.recvs_pending > 0 {
            // Still in flight: never free memory the kernel may write to or read.
            let slots = std::mem::take(&mut self.slots);
            std::mem::forget(slots);
        }
    }
}

/// Reads the address the kernel wrote into `a` (`len` bytes: a sockaddr_in or sockaddr_in6).
fn read_sockaddr(a: &libc::sockaddr_in6, len: libc::socklen_t) -> Option<SocketAddr> {
    match i32::from(a.sin6_family) {
        libc::AF_INET if len as usize >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the kernel wrote a sockaddr_in at the start of `a` (family AF_INET), and
            // sockaddr_in is smaller than the sockaddr_in6 it is read from.
            let v4 = unsafe {
                std::ptr::read_unaligned(
                    (a as *const libc::sockaddr_in6).cast::<libc::sockaddr_in>(),
                )
            };
            let ip = std::net::Ipv4Addr::from(v4.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::new(ip.into(), u16::from_be(v4.sin_port)))
        }
        libc::AF_INET6 if len as usize >= std::mem::size_of::<libc::sockaddr_in6>() => {
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Writes `a` as a sockaddr_in or sockaddr_in6 into `out`; returns its length.
fn write_sockaddr(out: &mut libc::sockaddr_in6, a: SocketAddr) -> libc::socklen_t {
    match a {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in is smaller than sockaddr_in6 and both are plain C structs;
            // the write stays inside `out`.
            unsafe { std::ptr::write((out as *mut libc::sockaddr_in6).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            *out = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventfd_wakes_epoll_until_drained() {
        let ep = Epoll::new().unwrap();
        let ev = EventFd::new().unwrap();
        ep.add(ev.as_raw_fd(), 7).unwrap();
        let mut events = [Event::EMPTY; 4];
        assert_eq!(ep.wait(&mut events, 0).unwrap(), 0);
        ev.signal();
        ev.signal();
        assert_eq!(ep.wait(&mut events, 0).unwrap(), 1);
        assert_eq!(events[0].token(), 7);
        ev.drain();
        assert_eq!(ep.wait(&mut events, 0).unwrap(), 0);
        ep.delete(ev.as_raw_fd()).unwrap();
    }

    #[test]
    fn errors_are_reported_not_swallowed() {
        let ep = Epoll::new().unwrap();
        // A descriptor number that is not open.
        assert!(ep.add(1 << 20, 1).is_err());
        let mut none: [Event; 0] = [];
        // maxevents of 0 is EINVAL: an error, not "0 events".
        assert!(ep.wait(&mut none, 0).is_err());
    }

    #[test]
    fn batch_ring_receives_and_sends_a_batch() {
        let Ok(mut ring) = BatchRing::new(8) else {
            // io_uring unavailable here: the worker falls back to recvfrom/sendto.
            return;
        };
        let relay = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let relay_addr = relay.local_addr().unwrap();
        for i in 0..3u8 {
            peer.send_to(&[i; 100], relay_addr).unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
        for t in 0..3 {
            assert!(ring.queue_recv(relay.as_raw_fd(), 40 + t));
        }
        // A fourth receive finds nothing: EAGAIN, left out, its slot freed.
        assert!(ring.queue_recv(relay.as_raw_fd(), 99));
        let got: Vec<Received> = ring.receive().to_vec();
        assert_eq!(got.len(), 3);
        assert_eq!(ring.in_use(), 3);
        for (k, r) in got.iter().enumerate() {
            assert_eq!(r.token, 40 + k as u64);
            assert_eq!((r.len, r.src), (100, peer.local_addr().unwrap()));
            let b = ring.buf(r.slot);
            assert_eq!(b[0], k as u8);
            // Relay in place (grow by a "tag") and send back.
            b[100..104].copy_from_slice(b"tag!");
            assert!(ring.send_slot(r.slot, relay.as_raw_fd(), 104, r.src));
        }
        assert_eq!(ring.flush(), 0);
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 200];
        for k in 0..3u8 {
            let (n, from) = peer.recv_from(&mut buf).unwrap();
            assert_eq!((n, buf[0], &buf[100..104]), (104, k, &b"tag!"[..]));
            assert_eq!(from, relay_addr);
        }
        // A copied send; an IPv6 destination from an IPv4 socket fails and is counted.
        assert!(ring.send_copy(relay.as_raw_fd(), b"hello", peer.local_addr().unwrap()));
        assert!(ring.send_copy(relay.as_raw_fd(), b"v6", "[::1]:9".parse().unwrap()));
        let mut failed = ring.flush();
        for _ in 0..50 {
            if ring.in_use() == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            failed += ring.flush();
        }
        assert_eq!((failed, ring.in_use()), (1, 0));
        assert_eq!(peer.recv_from(&mut buf).unwrap().0, 5);
    }

    #[test]
    fn sockaddrs_round_trip() {
        // SAFETY: all-zero is a valid sockaddr_in6.
        let mut raw: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        for a in ["192.0.2.7:5004", "[2001:db8::1]:40000"] {
            let a: SocketAddr = a.parse().unwrap();
            let len = write_sockaddr(&mut raw, a);
            assert_eq!(read_sockaddr(&raw, len), Some(a));
        }
        assert_eq!(read_sockaddr(&raw, 4), None);
    }
}
