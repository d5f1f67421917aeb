//! One source of randomness for every core, injectable so that whole calls replay from a seed.
//!
//! The protocol cores (calls, B2BUA, DTLS legs, fork sessions) never call the OS random source
//! themselves: they draw from a [`Random`] handed to them by their IO shell. The daemon hands
//! them [`OsRandom`] (the kernel's CSPRNG through `getrandom`); simulated-time tests hand them
//! [`SeededRandom`], so that a failing run can be replayed exactly from its seed.
//!
//! Failure policy: drawing key material must fail closed (the caller refuses the call), which is
//! why [`Random::fill`] returns a `Result`. Identifiers that are not secrets (branches, tags,
//! SSRCs) may use [`Random::fill_or_counter`], which falls back to a process-unique counter.

use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;

/// The random source could not produce bytes (no OS entropy); key material must not be made.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("no randomness: {0}")]
pub struct RandomError(pub String);

/// A source of random bytes that a core draws from; see the module docs for why it is injected.
pub trait Random: Send {
    /// Fills `buf` with random bytes, or fails (then nothing secret may be made from `buf`).
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), RandomError>;

    /// Fills `buf` for a value that must be unique but need not be secret: on failure the bytes
    /// come from a process-wide counter, so identifiers stay unique in this process.
    fn fill_or_counter(&mut self, buf: &mut [u8]) {
        if self.fill(buf).is_err() {
            static N: AtomicU64 = AtomicU64::new(1);
            let n = N.fetch_add(1, Ordering::Relaxed).to_be_bytes();
            for (i, x) in buf.iter_mut().enumerate() {
                *x = n[i % 8];
            }
        }
    }

    /// A random `u64` for non-secret uses (jitter, SSRCs, `Retry-After`).
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_or_counter(&mut b);
        u64::from_le_bytes(b)
    }

    /// `n` random bytes as lowercase hex, for identifiers (tags, branches, call-ids).
    fn hex(&mut self, n: usize) -> String {
        let mut b = vec![0u8; n];
        self.fill_or_counter(&mut b);
        hex::encode(b)
    }
}

impl<R: Random + ?Sized> Random for &mut R {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), RandomError> {
        (**self).fill(buf)
    }
}

impl<R: Random + ?Sized> Random for Box<R> {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), RandomError> {
        (**self).fill(buf)
    }
}

/// The kernel's CSPRNG (`getrandom`): what the daemon hands its cores.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl Random for OsRandom {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), RandomError> {
        getrandom::fill(buf).map_err(|e| RandomError(e.to_string()))
    }
}

/// A deterministic generator (xoshiro256** seeded through SplitMix64) for simulations and
/// tests only: the same seed gives the same calls, tags and keys. Never handed to a core by the
/// daemon, since its output is predictable.
#[derive(Debug, Clone)]
pub struct SeededRandom {
    s: [u64; 4],
}

impl SeededRandom {
    /// A generator whose whole output is fixed by `seed`.
    pub fn new(seed: u64) -> SeededRandom {
        let mut x = seed;
        let mut split = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        SeededRandom {
            s: [split(), split(), split(), split()],
        }
    }

    fn step(&mut self) -> u64 {
        let r = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        r
    }
}

impl Random for SeededRandom {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), RandomError> {
        for chunk in buf.chunks_mut(8) {
            let v = self.step().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_bytes_and_another_seed_others() {
        let (mut a, mut b, mut c) = (
            SeededRandom::new(7),
            SeededRandom::new(7),
            SeededRandom::new(8),
        );
        let (mut x, mut y, mut z) = ([0u8; 37], [0u8; 37], [0u8; 37]);
        a.fill(&mut x).unwrap();
        b.fill(&mut y).unwrap();
        c.fill(&mut z).unwrap();
        assert_eq!(x, y);
        assert_ne!(x, z);
        assert!(x.iter().any(|&v| v != 0));
    }

    #[test]
    fn os_random_fills_and_hex_has_the_asked_length() {
        let mut r = OsRandom;
        let (mut x, mut y) = ([0u8; 32], [0u8; 32]);
        r.fill(&mut x).unwrap();
        r.fill(&mut y).unwrap();
        assert_ne!(x, y);
        assert_eq!(r.hex(10).len(), 20);
    }

    struct Broken;
    impl Random for Broken {
        fn fill(&mut self, _: &mut [u8]) -> Result<(), RandomError> {
            Err(RandomError("none".into()))
        }
    }

    #[test]
    fn a_failing_source_fails_closed_for_secrets_and_stays_unique_for_ids() {
        let mut b = Broken;
        assert!(b.fill(&mut [0u8; 16]).is_err());
        assert_ne!(b.hex(8), b.hex(8));
    }
}
