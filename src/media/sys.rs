//! The system calls of the media workers, and the only `unsafe` code of `media/`: epoll, the
//! eventfd that wakes a worker, and the sleep that batches wake-ups.
//!
//! Kept small and free of policy (quinn-udp's `imp` is the model): the worker decides what to do
//! with readiness and errors; this module only turns the raw calls into `io::Result`s. Every
//! `unsafe` block states why it is sound.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

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
}
