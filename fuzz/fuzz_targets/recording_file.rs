//! A sealed recording file from untrusted storage (disks are untrusted), through the reader
//! (`srtp_edge::recording::format`): the prefix, header and key block parser, then the chunk walk
//! with a fixed data key, the frame decoder, and the WAV renderer on whatever authenticated.
//! Also seals the fuzzer's bytes as a chunk of a valid file so the walk past authentication and
//! the frame decoder see arbitrary plaintext.
//!
//! Never panics; a file that is not exactly what the writer makes is refused with a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use srtp_edge::recording::format::{self, CallMeta, Header, Sealer};

const KEY: [u8; 32] = [7; 32];

fn header() -> Header {
    Header {
        format: "srtp-edge recording".into(),
        version: 1,
        id: "00112233445566778899aabbccddeeff".into(),
        class: "recordings".into(),
        tenant: "default".into(),
        codec: "PCMU".into(),
        sample_rate: 8000,
        tracks: vec![],
        start_unix_ms: 0,
        chunk_ms: 250,
        nonce_prefix: "01020304050607".into(),
        call: CallMeta::default(),
    }
}

fuzz_target!(|data: &[u8]| {
    // Raw bytes as a whole file.
    if let Ok(o) = format::open(data) {
        let body = data.get(o.chunks_offset..).unwrap_or_default();
        let (chunks, _) = format::open_chunks(&o, &KEY, body);
        // A real file may place audio a day in; the fuzzer's stays within a minute (memory).
        let frames: Vec<&format::Frame> =
            chunks.iter().flatten().filter(|f| f.time_ms < 60_000).collect();
        let _ = srtp_edge::recording::wav::render(&o.header, &frames);
    }
    // The bytes as the plaintext of an authentic final chunk.
    let mut f = format::encode_prefix(&header()).unwrap();
    let mut s = Sealer::new(&KEY, f.clone(), [1, 2, 3, 4, 5, 6, 7]);
    f.extend_from_slice(&0u16.to_be_bytes());
    if let Some(c) = s.seal(data, true) {
        f.extend_from_slice(&c);
        let o = format::open(&f).unwrap();
        let (chunks, r) = format::open_chunks(&o, &KEY, &f[o.chunks_offset..]);
        if r.is_ok() {
            let frames: Vec<&format::Frame> =
                chunks.iter().flatten().filter(|f| f.time_ms < 60_000).collect();
            let _ = srtp_edge::recording::wav::render(&o.header, &frames);
        }
    }
});
