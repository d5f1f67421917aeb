//! Sample rate conversion between the call's 8 kHz and an L16 backend's 16 or 24 kHz.
//!
//! Dropping or repeating samples would alias and sound broken to speech recognisers, so this
//! wraps rubato's synchronous FFT resampler (band-limited, anti-aliased) behind a streaming
//! interface that takes any number of samples and returns whatever is ready. Buffers are sized
//! once at construction; processing does not allocate beyond the caller's output vector.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler as _};

/// Why a resampler could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum ResampleError {
    /// The rate pair is not supported by the resampler.
    #[error("cannot resample {from} Hz to {to} Hz: {reason}")]
    Construction {
        /// Input rate.
        from: u32,
        /// Output rate.
        to: u32,
        /// The resampler's own explanation.
        reason: String,
    },
    /// Processing failed (buffer size mismatch; a bug, reported instead of panicking).
    #[error("resampling failed: {0}")]
    Process(String),
}

/// A mono streaming resampler from one fixed rate to another (identity when they are equal).
pub struct Resampler {
    inner: Option<Fft<f32>>,
    chunk_in: usize,
    chunk_out: usize,
    pending: Vec<f32>,
    out_buf: Vec<f32>,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("chunk_in", &self.chunk_in)
            .field("chunk_out", &self.chunk_out)
            .finish()
    }
}

impl Resampler {
    /// A resampler from `from` Hz to `to` Hz working on 20 ms chunks of the input rate.
    pub fn new(from: u32, to: u32) -> Result<Resampler, ResampleError> {
        let chunk = (from / 50) as usize;
        if from == to {
            return Ok(Resampler {
                inner: None,
                chunk_in: chunk,
                chunk_out: chunk,
                pending: Vec::new(),
                out_buf: Vec::new(),
            });
        }
        let fft = Fft::<f32>::new(from as usize, to as usize, chunk, 1, FixedSync::Both).map_err(
            |e| ResampleError::Construction {
                from,
                to,
                reason: e.to_string(),
            },
        )?;
        let chunk_in = fft.input_frames_next();
        let chunk_out = fft.output_frames_next();
        Ok(Resampler {
            inner: Some(fft),
            chunk_in,
            chunk_out,
            pending: Vec::with_capacity(chunk_in),
            out_buf: vec![0.0; chunk_out],
        })
    }

    /// Samples of delay the filter adds at the output rate (for aligning test signals).
    pub fn output_delay(&self) -> usize {
        self.inner.as_ref().map_or(0, |r| r.output_delay())
    }

    /// Feeds `input` and appends every output sample that became ready to `out`.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) -> Result<(), ResampleError> {
        let Some(fft) = self.inner.as_mut() else {
            out.extend_from_slice(input);
            return Ok(());
        };
        let mut rest = input;
        while !rest.is_empty() {
            let take = (self.chunk_in - self.pending.len()).min(rest.len());
            let (now, later) = rest.split_at(take);
            self.pending
                .extend(now.iter().map(|&s| f32::from(s) / 32768.0));
            rest = later;
            if self.pending.len() < self.chunk_in {
                break;
            }
            let inp = InterleavedSlice::new(&self.pending[..], 1, self.chunk_in)
                .map_err(|e| ResampleError::Process(e.to_string()))?;
            let mut outp = InterleavedSlice::new_mut(&mut self.out_buf[..], 1, self.chunk_out)
                .map_err(|e| ResampleError::Process(e.to_string()))?;
            let (_, written) = fft
                .process_into_buffer(&inp, &mut outp, None)
                .map_err(|e| ResampleError::Process(e.to_string()))?;
            out.extend(
                self.out_buf[..written.min(self.chunk_out)]
                    .iter()
                    .map(|&x| {
                        // Saturate: a filter can overshoot full scale on clipped input.
                        (x * 32768.0).round().clamp(-32768.0, 32767.0) as i16
                    }),
            );
            self.pending.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, freq: f64, n: usize, amp: f64) -> Vec<i16> {
        (0..n)
            .map(|i| {
                (amp * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin())
                    as i16
            })
            .collect()
    }

    /// Power at `freq` relative to the total (Goertzel), in dB: close to 0 for a clean tone.
    fn purity_db(x: &[i16], rate: u32, freq: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI * freq / f64::from(rate);
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        let mut total = 0.0;
        for &v in x {
            let v = f64::from(v);
            let s = v + 2.0 * w.cos() * s1 - s2;
            s2 = s1;
            s1 = s;
            total += v * v;
        }
        let tone = (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2) * 2.0 / x.len() as f64;
        10.0 * (tone / total).log10()
    }

    #[test]
    fn lengths_follow_the_ratio() {
        for to in [16_000u32, 24_000] {
            let mut up = Resampler::new(8000, to).unwrap();
            let mut out = Vec::new();
            for _ in 0..50 {
                up.process(&[0i16; 160], &mut out).unwrap();
            }
            assert_eq!(out.len(), 8000 * (to as usize / 8000), "8000 -> {to}");
            // Odd-sized pieces give the same total.
            let mut up2 = Resampler::new(8000, to).unwrap();
            let mut out2 = Vec::new();
            for _ in 0..80 {
                up2.process(&[0i16; 100], &mut out2).unwrap();
            }
            assert_eq!(out2.len(), out.len());
        }
        let mut same = Resampler::new(8000, 8000).unwrap();
        let mut out = Vec::new();
        same.process(&[1, 2, 3], &mut out).unwrap();
        assert_eq!(out, vec![1, 2, 3]);
    }

    #[test]
    fn a_tone_survives_up_and_down() {
        let input = sine(8000, 1000.0, 16_000, 12_000.0);
        let mut up = Resampler::new(8000, 16_000).unwrap();
        let mut down = Resampler::new(16_000, 8000).unwrap();
        let mut mid = Vec::new();
        let mut back = Vec::new();
        for c in input.chunks(160) {
            let start = mid.len();
            up.process(c, &mut mid).unwrap();
            let new = mid[start..].to_vec();
            down.process(&new, &mut back).unwrap();
        }
        assert_eq!(mid.len(), 32_000);
        assert_eq!(back.len(), 16_000);
        // Skip the filters' start-up, then the tone must be clean and at the same level.
        let tail = &back[4000..];
        assert!(
            purity_db(tail, 8000, 1000.0) > -0.05,
            "{}",
            purity_db(tail, 8000, 1000.0)
        );
        let rms = |x: &[i16]| {
            (x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
        };
        let ratio = rms(tail) / rms(&input[4000..]);
        assert!((ratio - 1.0).abs() < 0.02, "level ratio {ratio}");
        // Aligned by the total filter delay, the waveform itself comes back.
        let delay = up.output_delay() / 2 + down.output_delay();
        let err: f64 = (4000..15_000)
            .map(|i| (f64::from(back[i]) - f64::from(input[i - delay])).powi(2))
            .sum::<f64>()
            / 11_000.0;
        let snr = 10.0 * (rms(&input[4000..]).powi(2) / err).log10();
        assert!(snr > 40.0, "snr {snr} dB at delay {delay}");
        // The upsampled signal carries the tone too, and nothing near the 7 kHz image.
        let mid_tail = &mid[8000..];
        assert!(purity_db(mid_tail, 16_000, 1000.0) > -0.05);
        assert!(purity_db(mid_tail, 16_000, 7000.0) < -60.0);
    }
}
