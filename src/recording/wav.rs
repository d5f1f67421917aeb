//! Renders a recording's frames as a stereo 16-bit WAV: the caller (track 0) on the left, the
//! callee (track 1) on the right.
//!
//! Placement: within a talkspurt a frame goes where its RTP timestamp says, relative to the
//! first frame of the track (jitter does not smear the audio); when that drifts more than
//! half a second from its arrival time (new SSRC, a clock jump, a long hold), the track is
//! re-anchored at the arrival time. Gaps are silence.

use super::format::{Frame, Header};
use crate::fork::codec::G711;

/// Longest export (a day): bounds the memory a (valid, authenticated) file can make us use.
const MAX_SECONDS: u64 = 86_400;

fn decode(codec: &str, payload: &[u8], out: &mut Vec<i16>) -> Result<(), String> {
    out.clear();
    match codec {
        "PCMU" => out.extend(payload.iter().map(|&c| G711::Pcmu.decode(c))),
        "PCMA" => out.extend(payload.iter().map(|&c| G711::Pcma.decode(c))),
        "L16" => out.extend(
            payload
                .chunks_exact(2)
                .map(|b| i16::from_be_bytes([b[0], b[1]])),
        ),
        other => return Err(format!("codec {other} cannot be exported")),
    }
    Ok(())
}

/// The WAV file bytes.
pub fn render(h: &Header, frames: &[&Frame]) -> Result<Vec<u8>, String> {
    let rate = u64::from(h.sample_rate.max(1));
    let max_samples = (MAX_SECONDS * rate) as usize;
    let mut tracks: [Vec<i16>; 2] = [Vec::new(), Vec::new()];
    let mut anchor: [Option<(i64, u32)>; 2] = [None, None];
    let mut pcm = Vec::with_capacity(960);
    for f in frames {
        let t = usize::from(f.track.min(1));
        decode(&h.codec, &f.payload, &mut pcm)?;
        let arrival = i64::from(f.time_ms) * rate as i64 / 1000;
        let pos = match anchor[t] {
            Some((a_pos, a_ts)) => {
                let p = a_pos + i64::from(f.rtp_ts.wrapping_sub(a_ts) as i32);
                if (p - arrival).abs() > rate as i64 / 2 || p < 0 {
                    anchor[t] = Some((arrival, f.rtp_ts));
                    arrival
                } else {
                    p
                }
            }
            None => {
                anchor[t] = Some((arrival, f.rtp_ts));
                arrival
            }
        };
        let start = pos.max(0) as usize;
        let end = start + pcm.len();
        if end > max_samples {
            continue;
        }
        let track = &mut tracks[t];
        if track.len() < end {
            track.resize(end, 0);
        }
        track[start..end].copy_from_slice(&pcm);
    }
    let n = tracks[0].len().max(tracks[1].len());
    let data_len = n * 4;
    let mut out = Vec::with_capacity(44 + data_len);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&((36 + data_len) as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&2u16.to_le_bytes()); // stereo
    out.extend_from_slice(&(rate as u32).to_le_bytes());
    out.extend_from_slice(&((rate * 4) as u32).to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data_len as u32).to_le_bytes());
    for i in 0..n {
        for t in &tracks {
            out.extend_from_slice(&t.get(i).copied().unwrap_or(0).to_le_bytes());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::format::CallMeta;

    #[test]
    fn tracks_land_left_and_right_by_rtp_time() {
        let h = Header {
            format: "srtp-edge recording".into(),
            version: 1,
            id: "x".into(),
            class: "recordings".into(),
            tenant: "t".into(),
            codec: "PCMU".into(),
            sample_rate: 8000,
            tracks: vec![],
            start_unix_ms: 0,
            chunk_ms: 250,
            nonce_prefix: String::new(),
            call: CallMeta::default(),
        };
        let loud = G711::Pcmu.encode(10_000);
        let frames = [
            Frame {
                track: 0,
                marker: true,
                seq: 1,
                rtp_ts: 1000,
                time_ms: 0,
                payload: vec![loud; 160],
            },
            // Arrives late (jitter) but its timestamp says it is the next 20 ms.
            Frame {
                track: 0,
                marker: false,
                seq: 2,
                rtp_ts: 1160,
                time_ms: 45,
                payload: vec![loud; 160],
            },
            Frame {
                track: 1,
                marker: true,
                seq: 9,
                rtp_ts: 7,
                time_ms: 40,
                payload: vec![loud; 160],
            },
        ];
        let refs: Vec<&Frame> = frames.iter().collect();
        let w = render(&h, &refs).unwrap();
        assert_eq!(&w[..4], b"RIFF");
        let samples: Vec<(i16, i16)> = w[44..]
            .chunks_exact(4)
            .map(|c| {
                (
                    i16::from_le_bytes([c[0], c[1]]),
                    i16::from_le_bytes([c[2], c[3]]),
                )
            })
            .collect();
        assert_eq!(samples.len(), 320 + 160 - 160 + 160);
        assert!(samples[..320].iter().all(|(l, _)| *l > 9000));
        assert!(samples[..320].iter().all(|(_, r)| *r == 0));
        assert!(samples[320..].iter().all(|(_, r)| *r > 9000));
    }
}
