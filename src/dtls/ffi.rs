//! The OpenSSL calls the `openssl` crate does not wrap, and OpenSSL's DTLS retransmission timer
//! moved onto the caller's clock. This is the only module of the DTLS engine with `unsafe` code;
//! every block says why it is sound.
//!
//! ## The timer on the injected clock
//!
//! OpenSSL 3 keeps a DTLS flight's retransmission deadline in the `SSL` as a wall-clock
//! `struct timeval` (`d1->next_timeout`, set by `dtls1_start_timer` from `gettimeofday`), and
//! every `SSL_do_handshake`, `SSL_read` and `DTLSv1_handle_timeout` compares it with the wall
//! clock. A sans-IO core that is handed `now` (and a simulation whose clock jumps) cannot use
//! that, so [`Engine`] takes the timer over:
//!
//! - `DTLS_set_timer_cb` gives the duration of each timer: the configured initial timeout for a
//!   new flight, doubled on each retransmission up to 60 s (RFC 6347 4.2.4.1). The duration is
//!   remembered.
//! - Each time OpenSSL starts or stops its timer it tells the read BIO
//!   (`BIO_CTRL_DGRAM_SET_NEXT_TIMEOUT`, with a pointer to the deadline it just set). A BIO
//!   callback sees that call: a stopped timer clears our deadline; a started one sets our
//!   deadline to the caller's `now` plus the remembered duration, and pushes OpenSSL's own
//!   wall-clock deadline far into the future, so the wall clock never fires it.
//! - Before each call into OpenSSL, if our deadline has passed on the caller's clock, OpenSSL's
//!   deadline is set to the past: OpenSSL then finds its timer expired, retransmits the flight
//!   and restarts the timer, exactly as it would have on the wall clock.
//!
//! The pointer OpenSSL hands the BIO is the deadline field of the live `SSL` in OpenSSL 3.0 and
//! 3.1 (the versions of Debian 12 and Ubuntu 22.04/24.04), valid as long as the `SSL`. Later
//! versions hand a copy on the stack instead. So the pointer is written outside the callback
//! only once it is proven to be the live field: right after the first timer start the engine
//! asks OpenSSL for the time left (`DTLSv1_get_timeout`); only if it reflects the far-future
//! deadline written during the callback does the engine keep the pointer
//! ([`Engine::follows_clock`]). Otherwise the engine leaves OpenSSL's timer on the wall clock,
//! as before (then `now` must be the current time, which it is in the daemon).

use std::cell::Cell;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::ssl::{Ssl, SslContextBuilder, SslRef, SslStream};
use openssl::x509::X509VerifyResult;

use super::pipe::DatagramPipe;

/// Ceiling of the doubled retransmission timeout (RFC 6347 4.2.4.1: at least 60 s).
pub(super) const MAX_RTO_US: u32 = 60_000_000;

/// `SSL_ctrl` commands behind the `DTLSv1_get_timeout` and `DTLSv1_handle_timeout` macros
/// (openssl/ssl.h).
const DTLS_CTRL_GET_TIMEOUT: libc::c_int = 73;
const DTLS_CTRL_HANDLE_TIMEOUT: libc::c_int = 74;
/// `SSL_CTX_ctrl` command behind `SSL_CTX_set_max_cert_list`.
const SSL_CTRL_SET_MAX_CERT_LIST: libc::c_int = 51;
/// `BIO_ctrl` command with which OpenSSL tells the read BIO its next DTLS timeout (bio.h).
const BIO_CTRL_DGRAM_SET_NEXT_TIMEOUT: libc::c_int = 45;
/// `BIO_CB_CTRL`: the BIO callback's operation code of a `BIO_ctrl` call, before it runs.
const BIO_CB_CTRL: libc::c_int = 0x06;

/// OpenSSL's deadline once we own the timer: far beyond any wall clock (year ~36 800), so that
/// OpenSSL never finds it expired by itself.
const FAR_FUTURE_SECS: libc::time_t = 1 << 40;
/// A running timer's deadline in the past (a zero `timeval` would mean "no timer").
const EXPIRED: libc::timeval = libc::timeval {
    tv_sec: 0,
    tv_usec: 1,
};

/// `BIO_callback_fn_ex` (bio.h).
type BioCallbackEx = unsafe extern "C" fn(
    *mut openssl_sys::BIO,
    libc::c_int,
    *const libc::c_char,
    usize,
    libc::c_int,
    libc::c_long,
    libc::c_int,
    *mut usize,
) -> libc::c_long;

/// `DTLS_timer_cb` (ssl.h).
type TimerCb = unsafe extern "C" fn(*mut openssl_sys::SSL, libc::c_uint) -> libc::c_uint;

extern "C" {
    /// `void DTLS_set_timer_cb(SSL *s, DTLS_timer_cb cb)` (OpenSSL 1.1.1+), not in openssl-sys.
    fn DTLS_set_timer_cb(s: *mut openssl_sys::SSL, cb: Option<TimerCb>);
    /// `void BIO_set_callback_ex(BIO *b, BIO_callback_fn_ex cb)` (OpenSSL 1.1.1+).
    fn BIO_set_callback_ex(b: *mut openssl_sys::BIO, cb: Option<BioCallbackEx>);
    /// `void BIO_set_callback_arg(BIO *b, char *arg)`.
    fn BIO_set_callback_arg(b: *mut openssl_sys::BIO, arg: *mut libc::c_char);
    /// `char *BIO_get_callback_arg(const BIO *b)`.
    fn BIO_get_callback_arg(b: *const openssl_sys::BIO) -> *mut libc::c_char;
}

/// Whether OpenSSL's deadline field is known to be writable between calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    /// No timer has started yet.
    Unknown,
    /// A timer started and wrote through this pointer during the call; not yet verified.
    Seen(NonNull<libc::timeval>),
    /// Verified to be the live deadline of this `SSL`.
    Live(NonNull<libc::timeval>),
    /// This OpenSSL hands a copy: its timer stays on the wall clock.
    WallClock,
}

/// The timer state shared between the engine and the OpenSSL callbacks. Only `Cell`s, so the
/// callbacks and the engine only ever hold shared references to it.
struct TimerState {
    /// The caller's clock at the current call into OpenSSL.
    now: Cell<Instant>,
    /// First retransmission timeout of a flight, microseconds.
    initial_us: u32,
    /// The duration OpenSSL uses for its running timer (the last one the timer callback gave).
    duration_us: Cell<u32>,
    /// When the running timer expires on the caller's clock; `None` while none runs.
    deadline: Cell<Option<Instant>>,
    field: Cell<Field>,
    /// Flights retransmitted (timer expiries OpenSSL handled).
    retransmits: Cell<u64>,
}

/// OpenSSL's DTLS state machine over a [`DatagramPipe`], its timer on the caller's clock (see
/// the module docs).
pub(super) struct Engine {
    /// Dropped first (`SSL_free` frees the BIO whose callback points at `timer`).
    stream: ManuallyDrop<SslStream<DatagramPipe>>,
    /// Owned by this engine (from `Box::into_raw`); freed in `Drop` after `stream`.
    timer: NonNull<TimerState>,
}

// SAFETY: the engine exclusively owns its `SSL` (which `SslStream` already lets move between
// threads) and the timer state; OpenSSL reaches that state only from calls made through
// `&mut self`, so it is never touched from two threads at once.
unsafe impl Send for Engine {}

impl Engine {
    /// Wraps `ssl` (configured, role set) with the pipe and the timer hooks; `initial_rto` is
    /// the first retransmission timeout of each flight.
    pub(super) fn new(ssl: Ssl, initial_rto_us: u32, now: Instant) -> Result<Engine, ErrorStack> {
        let stream = SslStream::new(ssl, DatagramPipe::default())?;
        let timer = Box::new(TimerState {
            now: Cell::new(now),
            initial_us: initial_rto_us,
            duration_us: Cell::new(initial_rto_us),
            deadline: Cell::new(None),
            field: Cell::new(Field::Unknown),
            retransmits: Cell::new(0),
        });
        let timer = NonNull::from(Box::leak(timer));
        let ssl = stream.ssl().as_ptr();
        // SAFETY: `ssl` is the valid SSL the stream owns, and its read BIO (the stream's, set
        // by `SslStream::new`) is valid for as long as the SSL. The callback argument points at
        // the timer state, which outlives the SSL (`Drop` frees the SSL first). Both callbacks
        // are plain functions that only read that argument.
        unsafe {
            let bio = openssl_sys::SSL_get_rbio(ssl);
            BIO_set_callback_arg(bio, timer.as_ptr().cast());
            BIO_set_callback_ex(bio, Some(bio_callback));
            DTLS_set_timer_cb(ssl, Some(timer_callback));
        }
        Ok(Engine {
            stream: ManuallyDrop::new(stream),
            timer,
        })
    }

    fn timer(&self) -> &TimerState {
        // SAFETY: the state lives until `Drop`; it is only accessed through shared references
        // (all fields are `Cell`s), and not from another thread (see `Send`).
        unsafe { self.timer.as_ref() }
    }

    /// The SSL, for the calls the `openssl` crate wraps safely.
    pub(super) fn ssl(&self) -> &SslRef {
        self.stream.ssl()
    }

    /// The datagram pipe (received datagram in, datagrams to send out).
    pub(super) fn pipe(&mut self) -> &mut DatagramPipe {
        self.stream.get_mut()
    }

    /// Runs the handshake as far as the input allows, at `now`.
    pub(super) fn do_handshake(&mut self, now: Instant) -> Result<(), openssl::ssl::Error> {
        self.enter(now);
        let r = self.stream.do_handshake();
        self.leave();
        r
    }

    /// Reads application data after the handshake (and lets OpenSSL answer a retransmitted
    /// final flight or notice an alert), at `now`.
    pub(super) fn ssl_read(
        &mut self,
        now: Instant,
        buf: &mut [u8],
    ) -> Result<usize, openssl::ssl::Error> {
        self.enter(now);
        let r = self.stream.ssl_read(buf);
        self.leave();
        r
    }

    /// `DTLSv1_handle_timeout`: retransmits the last flight if the timer expired (on our clock
    /// when [`follows_clock`](Self::follows_clock)). Errors are OpenSSL's (too many
    /// retransmissions, a failed write), left on its error stack.
    pub(super) fn handle_timeout(&mut self, now: Instant) -> Result<(), ErrorStack> {
        self.enter(now);
        // SAFETY: DTLSv1_handle_timeout(ssl): an SSL_ctrl on the valid SSL we own, without a
        // pointer argument. It retransmits through our pipe if the timer expired.
        let rc = unsafe {
            openssl_sys::SSL_ctrl(
                self.stream.ssl().as_ptr(),
                DTLS_CTRL_HANDLE_TIMEOUT,
                0,
                std::ptr::null_mut(),
            )
        };
        self.leave();
        if rc < 0 {
            return Err(ErrorStack::get());
        }
        Ok(())
    }

    /// When the running retransmission timer expires, `None` if none runs.
    pub(super) fn timer_deadline(&self) -> Option<Instant> {
        self.timer().deadline.get()
    }

    /// True once the engine has proven that OpenSSL's timer follows the caller's clock (see the
    /// module docs); false before the first timer started, or on an OpenSSL that keeps it on
    /// the wall clock.
    pub(super) fn follows_clock(&self) -> bool {
        matches!(self.timer().field.get(), Field::Live(_))
    }

    /// Flights retransmitted so far.
    pub(super) fn retransmits(&self) -> u64 {
        self.timer().retransmits.get()
    }

    /// Before a call into OpenSSL: hand it our clock, and expire its timer if ours expired.
    fn enter(&mut self, now: Instant) {
        let t = self.timer();
        t.now.set(now);
        if let (Field::Live(p), Some(d)) = (t.field.get(), t.deadline.get()) {
            if now >= d {
                // SAFETY: `p` was proven to be the deadline field of this live SSL (`leave`),
                // which OpenSSL keeps for the SSL's whole life; no OpenSSL call is running.
                unsafe { p.as_ptr().write(EXPIRED) };
            }
        }
    }

    /// After a call into OpenSSL: check, once, whether the deadline pointer it handed the BIO
    /// is the live field (it then shows the far-future deadline written through it). On the
    /// wall clock, the deadline is what OpenSSL says is left, from `now`.
    fn leave(&mut self) {
        let t = self.timer();
        if let Field::Seen(p) = t.field.get() {
            t.field.set(match engine_timeout(self.ssl()) {
                // Started and stopped within the call: nothing to tell yet.
                None => Field::Unknown,
                Some(left) if left.as_secs() > 1 << 39 => Field::Live(p),
                Some(_) => Field::WallClock,
            });
        }
        if t.field.get() == Field::WallClock {
            t.deadline
                .set(engine_timeout(self.ssl()).map(|left| t.now.get() + left));
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // SAFETY: the stream (and with it the SSL and its BIO, the only holders of the timer
        // pointer) is dropped first and never used again; then the timer state, allocated by
        // `Box` in `new`, is freed exactly once.
        unsafe {
            ManuallyDrop::drop(&mut self.stream);
            drop(Box::from_raw(self.timer.as_ptr()));
        }
    }
}

/// The read BIO's callback: sees OpenSSL start and stop its DTLS timer (see the module docs).
/// Every other BIO operation passes through unchanged.
unsafe extern "C" fn bio_callback(
    bio: *mut openssl_sys::BIO,
    oper: libc::c_int,
    argp: *const libc::c_char,
    _len: usize,
    argi: libc::c_int,
    _argl: libc::c_long,
    ret: libc::c_int,
    _processed: *mut usize,
) -> libc::c_long {
    // Returning `ret` unchanged lets the operation (or its result) through.
    if oper != BIO_CB_CTRL || argi != BIO_CTRL_DGRAM_SET_NEXT_TIMEOUT || argp.is_null() {
        return libc::c_long::from(ret);
    }
    // SAFETY: the callback argument is the engine's timer state (set in `Engine::new`), alive
    // while the BIO is; OpenSSL runs this callback only inside a call the engine makes.
    let Some(t) = (unsafe { BIO_get_callback_arg(bio).cast::<TimerState>().as_ref() }) else {
        return libc::c_long::from(ret);
    };
    let tv = argp.cast::<libc::timeval>().cast_mut();
    // SAFETY: for this control OpenSSL passes a valid `struct timeval *` (its new deadline),
    // readable and writable for the duration of the call.
    let stopped = unsafe { (*tv).tv_sec == 0 && (*tv).tv_usec == 0 };
    if stopped {
        t.deadline.set(None);
        return libc::c_long::from(ret);
    }
    let dur = Duration::from_micros(u64::from(t.duration_us.get()));
    t.deadline.set(Some(t.now.get() + dur));
    if t.field.get() != Field::WallClock {
        // SAFETY: as above, valid for writing during the call. If it is OpenSSL's own field,
        // its timer now never expires on the wall clock; if it is a copy, nothing changes.
        unsafe {
            tv.write(libc::timeval {
                tv_sec: FAR_FUTURE_SECS,
                tv_usec: 0,
            })
        };
        if let Some(p) = NonNull::new(tv) {
            t.field.set(match t.field.get() {
                Field::Live(old) if old == p => Field::Live(p),
                _ => Field::Seen(p),
            });
        }
    }
    libc::c_long::from(ret)
}

/// OpenSSL's retransmission timer callback (`DTLS_set_timer_cb`): a flight's first timeout is
/// the configured initial timeout, each retransmission doubles it up to 60 s (RFC 6347
/// 4.2.4.1). OpenSSL calls it with the current duration when the timer expired.
unsafe extern "C" fn timer_callback(
    ssl: *mut openssl_sys::SSL,
    current_us: libc::c_uint,
) -> libc::c_uint {
    // SAFETY: OpenSSL passes the valid SSL whose timer this is; its read BIO carries the
    // engine's timer state as callback argument (`Engine::new`), alive while the SSL is.
    let t = unsafe {
        let bio = openssl_sys::SSL_get_rbio(ssl);
        if bio.is_null() {
            None
        } else {
            BIO_get_callback_arg(bio).cast::<TimerState>().as_ref()
        }
    };
    let Some(t) = t else {
        return if current_us == 0 {
            1_000_000
        } else {
            current_us.saturating_mul(2).min(MAX_RTO_US)
        };
    };
    let next = next_timeout(t.initial_us, current_us);
    if current_us != 0 {
        t.retransmits.set(t.retransmits.get().saturating_add(1));
    }
    t.duration_us.set(next);
    next
}

/// The next retransmission timeout: `initial_us` for a new flight (`current_us == 0`), else
/// doubled up to [`MAX_RTO_US`].
pub(super) fn next_timeout(initial_us: u32, current_us: u32) -> u32 {
    if current_us == 0 {
        initial_us
    } else {
        current_us.saturating_mul(2).min(MAX_RTO_US)
    }
}

/// The time left on OpenSSL's retransmission timer (`DTLSv1_get_timeout`), if it runs.
fn engine_timeout(ssl: &SslRef) -> Option<Duration> {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    // SAFETY: DTLSv1_get_timeout(ssl, &tv): SSL_ctrl writes one struct timeval through the
    // pointer, which is valid and exclusively ours for the call.
    let running = unsafe {
        openssl_sys::SSL_ctrl(
            ssl.as_ptr(),
            DTLS_CTRL_GET_TIMEOUT,
            0,
            (&mut tv as *mut libc::timeval).cast(),
        )
    };
    if running != 1 {
        return None;
    }
    let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u64::try_from(tv.tv_usec).unwrap_or(0).min(999_999);
    Some(Duration::from_secs(secs) + Duration::from_micros(micros))
}

/// Caps the peer certificate chain OpenSSL buffers (`SSL_CTX_set_max_cert_list`, a macro the
/// `openssl` crate does not wrap).
pub(super) fn set_max_cert_list(b: &mut SslContextBuilder, max: usize) {
    let max = libc::c_long::try_from(max).unwrap_or(libc::c_long::MAX);
    // SAFETY: a plain integer setting on a valid SSL_CTX; no pointer is passed.
    unsafe {
        openssl_sys::SSL_CTX_ctrl(
            b.as_ptr(),
            SSL_CTRL_SET_MAX_CERT_LIST,
            max,
            std::ptr::null_mut(),
        );
    }
}

/// The verification result that makes OpenSSL refuse a certificate with `bad_certificate`.
pub(super) fn cert_rejected() -> X509VerifyResult {
    // SAFETY: a verification result code OpenSSL defines.
    unsafe { X509VerifyResult::from_raw(openssl_sys::X509_V_ERR_CERT_REJECTED) }
}

/// The verification result for a certificate key below the security level (`bad_certificate`).
pub(super) fn key_too_small() -> X509VerifyResult {
    // SAFETY: a verification result code OpenSSL defines.
    unsafe { X509VerifyResult::from_raw(openssl_sys::X509_V_ERR_EE_KEY_TOO_SMALL) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_doubles_from_the_configured_start_up_to_60_s() {
        assert_eq!(next_timeout(250_000, 0), 250_000);
        assert_eq!(next_timeout(250_000, 250_000), 500_000);
        assert_eq!(next_timeout(250_000, 40_000_000), MAX_RTO_US);
        assert_eq!(next_timeout(250_000, MAX_RTO_US), MAX_RTO_US);
    }
}
