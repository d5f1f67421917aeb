//! Fuzzes the SIP stream framer with the input split into chunks at fuzzer-chosen points: no
//! panic, bounded buffering, and the frames must be the same whatever the chunking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use srtp_edge::sip::framing::{Frame, Framer, Limits};
use srtp_edge::sip::Message;

fn run(data: &[u8], chunk: usize, limits: Limits) -> (Vec<Frame>, bool) {
    let mut f = Framer::new(limits);
    let mut frames = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        if f.push(piece).is_err() {
            return (frames, true);
        }
        loop {
            match f.next_frame() {
                Ok(Some(fr)) => frames.push(fr),
                Ok(None) => break,
                Err(e) => {
                    let _ = e.reply(None);
                    return (frames, true);
                }
            }
        }
        assert!(f.buffered() <= limits.max_buffered());
    }
    (frames, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&k, data)) = data.split_first() else { return };
    let limits = Limits { max_head: 2048, max_body: 1024 };
    let (a, a_err) = run(data, usize::from(k) + 1, limits);
    let (b, b_err) = run(data, data.len(), limits);
    for fr in &a {
        if let Frame::Message(m) = fr {
            assert!(m.len() <= limits.max_head + limits.max_body);
            let _ = Message::parse(m);
        }
    }
    if !a_err && !b_err {
        assert_eq!(a, b, "framing depends on chunking");
    }
});
