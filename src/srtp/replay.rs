//! The sliding replay window (RFC 3711 section 3.3.2) over a packet index.
//!
//! The bitmap is a caller-provided slice of words (the stream table preallocates one flat array
//! for all its streams), so checking and updating never allocate. Bit `k` records whether index
//! `highest - k` has been accepted.

use super::Error;

/// Smallest replay window a context accepts (RFC 3711 requires at least 64).
pub const MIN_WINDOW: usize = 64;
/// Largest replay window a context accepts.
pub const MAX_WINDOW: usize = 1024;

/// Number of 64-bit words a window of `window` packets needs.
pub const fn words_for(window: usize) -> usize {
    window.div_ceil(64)
}

/// Returns `Err(Error::Replay)` when `index` was already accepted or is too old to tell, given the
/// highest accepted index and the window size. Does not change anything.
pub fn check(bits: &[u64], window: usize, highest: u64, index: u64) -> Result<(), Error> {
    if index > highest {
        return Ok(());
    }
    let delta = highest - index;
    if delta >= window as u64 {
        return Err(Error::Replay);
    }
    let d = delta as usize;
    match bits.get(d / 64) {
        Some(w) if w & (1u64 << (d % 64)) == 0 => Ok(()),
        _ => Err(Error::Replay),
    }
}

/// Records `index` as accepted and returns the new highest index. Call only after [`check`]
/// passed and the packet authenticated.
pub fn accept(bits: &mut [u64], window: usize, highest: u64, index: u64) -> u64 {
    if index > highest {
        shift_left(bits, index - highest, window);
        if let Some(w) = bits.first_mut() {
            *w |= 1;
        }
        index
    } else {
        let d = (highest - index) as usize;
        if let Some(w) = bits.get_mut(d / 64) {
            *w |= 1u64 << (d % 64);
        }
        highest
    }
}

/// Starts a window whose only accepted index is the highest one.
pub fn reset(bits: &mut [u64]) {
    bits.fill(0);
    if let Some(w) = bits.first_mut() {
        *w = 1;
    }
}

fn shift_left(bits: &mut [u64], by: u64, window: usize) {
    if by >= window as u64 || by >= (bits.len() * 64) as u64 {
        bits.fill(0);
        return;
    }
    if by == 1 {
        // The common case (the next packet in order): one carry through the words.
        let mut carry = 0;
        for w in bits.iter_mut() {
            let next = *w >> 63;
            *w = (*w << 1) | carry;
            carry = next;
        }
        return;
    }
    let by = by as usize;
    let (ws, bs) = (by / 64, by % 64);
    for j in (0..bits.len()).rev() {
        let v = if j >= ws {
            let lo = bits[j - ws] << bs;
            let carry = if bs > 0 && j > ws {
                bits[j - ws - 1] >> (64 - bs)
            } else {
                0
            };
            lo | carry
        } else {
            0
        };
        bits[j] = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reference model: the set of accepted indexes.
    fn model_ok(seen: &std::collections::BTreeSet<u64>, window: usize, hi: u64, i: u64) -> bool {
        i > hi || (hi - i < window as u64 && !seen.contains(&i))
    }

    #[test]
    fn matches_a_set_model() {
        for window in [64usize, 100, 128, 1000, 1024] {
            let mut bits = vec![0u64; words_for(window)];
            reset(&mut bits);
            let mut hi = 5000u64;
            let mut seen = std::collections::BTreeSet::from([hi]);
            let mut x = 0x1234_5678_9abc_def1u64;
            for _ in 0..20_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let jump = (x % 2200) as i64 - 1500; // mostly back, sometimes far forward
                let i = (hi as i64 + jump) as u64;
                let ok = check(&bits, window, hi, i).is_ok();
                assert_eq!(
                    ok,
                    model_ok(&seen, window, hi, i),
                    "w={window} hi={hi} i={i}"
                );
                if ok {
                    hi = accept(&mut bits, window, hi, i);
                    seen.insert(i);
                }
            }
        }
    }

    #[test]
    fn edges() {
        let mut bits = [0u64; 2];
        reset(&mut bits);
        assert_eq!(check(&bits, 128, 200, 200), Err(Error::Replay));
        assert_eq!(check(&bits, 128, 200, 73), Ok(()));
        assert_eq!(check(&bits, 128, 200, 72), Err(Error::Replay));
        let hi = accept(&mut bits, 128, 200, 73);
        assert_eq!(hi, 200);
        assert_eq!(check(&bits, 128, 200, 73), Err(Error::Replay));
        let hi = accept(&mut bits, 128, hi, 264); // shift by 64 exactly
        assert_eq!(check(&bits, 128, hi, 200), Err(Error::Replay));
        assert_eq!(check(&bits, 128, hi, 201), Ok(()));
        let hi = accept(&mut bits, 128, hi, 10_000);
        assert_eq!(bits, [1, 0]);
        assert_eq!(hi, 10_000);
    }
}
