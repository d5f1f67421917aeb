//! The few system calls the key store and the recording files need that std does not offer on
//! this crate's minimum Rust (advisory `flock`, the process's user ids). The only `unsafe` of
//! `keys/` and `recording/`, each call a plain syscall on a descriptor the caller owns.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// How to lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// Readers (`LOCK_SH`), waiting for writers.
    Shared,
    /// One writer (`LOCK_EX`), waiting for the others.
    Exclusive,
    /// One writer, or fail at once (`LOCK_EX | LOCK_NB`).
    TryExclusive,
}

/// `flock(2)` on `f`; released when `f` is closed.
pub fn flock(f: &File, how: Lock) -> io::Result<()> {
    let op = match how {
        Lock::Shared => libc::LOCK_SH,
        Lock::Exclusive => libc::LOCK_EX,
        Lock::TryExclusive => libc::LOCK_EX | libc::LOCK_NB,
    };
    // SAFETY: flock on a valid descriptor borrowed from a live File.
    if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The effective uid (who owns the files this process may trust).
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The real uid (who runs the CLI).
pub fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}
