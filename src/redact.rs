//! `Redacted<T>`: the wrapper every phone number, SIP URI user part and caller IP goes through
//! before it reaches a log line.
//!
//! Its `Display` and `Debug` show only the last characters (the last 4 of values of 8 characters
//! or more, the last 2 of shorter ones, nothing of values of 4 or fewer) behind a fixed `***`
//! that hides the length, unless redaction was turned off with `log.redact = false`.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

static REDACT: AtomicBool = AtomicBool::new(true);

/// Turns redaction on or off for the whole process (from `log.redact`, at start).
pub fn set_enabled(on: bool) {
    REDACT.store(on, Ordering::Relaxed);
}

/// Whether redaction is on (it is unless the operator turned it off).
pub fn enabled() -> bool {
    REDACT.load(Ordering::Relaxed)
}

/// A value that is masked when displayed, for personal data in logs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Redacted<T>(pub T);

/// Writes `s` masked: `***` followed by at most the last 4 characters.
pub fn write_masked(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    let n = s.chars().count();
    let keep = match n {
        0..=4 => 0,
        5..=7 => 2,
        _ => 4,
    };
    let tail: String = s.chars().skip(n - keep).collect();
    write!(f, "***{tail}")
}

impl<T: fmt::Display> fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if enabled() {
            write_masked(f, &self.0.to_string())
        } else {
            self.0.fmt(f)
        }
    }
}

impl<T: fmt::Display> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn masks_all_but_the_tail() {
        // Only this test touches the global switch's "off" state, and it restores it.
        assert_eq!(Redacted("+14155550123").to_string(), "***0123");
        assert_eq!(Redacted("alice").to_string(), "***ce");
        assert_eq!(Redacted("bob").to_string(), "***");
        assert_eq!(Redacted("").to_string(), "***");
        let ip: IpAddr = "203.0.113.77".parse().unwrap();
        assert_eq!(format!("{:?}", Redacted(ip)), "***3.77");
        assert_eq!(Redacted("ünïcödé-ñame").to_string(), "***ñame");
        set_enabled(false);
        assert_eq!(Redacted("+14155550123").to_string(), "+14155550123");
        set_enabled(true);
    }
}
