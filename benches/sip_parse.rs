//! Cost of the SIP message layer on a typical INVITE with SDP over TLS: parse, validate,
//! serialize, and the whole framer-to-reply path the B2BUA runs per request.

use criterion::{criterion_group, criterion_main, Criterion};
use srtp_edge::sip::framing::{Frame, Framer, Limits};
use srtp_edge::sip::validate::inspect;
use srtp_edge::sip::Message;
use std::hint::black_box;

const INVITE: &[u8] = b"INVITE sips:+15551234567@edge.example.net:5061 SIP/2.0\r\n\
Via: SIP/2.0/TLS 198.51.100.7:5061;branch=z9hG4bK-524287-1---a6f3bc2e1d;rport\r\n\
Max-Forwards: 70\r\n\
Contact: <sips:+15557654321@198.51.100.7:5061;transport=tls>\r\n\
To: <sips:+15551234567@edge.example.net>\r\n\
From: \"Caller\" <sips:+15557654321@trunk.example.com>;tag=7a1c9f2e\r\n\
Call-ID: 3f9d2c4b8e1a7f60@198.51.100.7\r\n\
CSeq: 1 INVITE\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO\r\n\
Supported: replaces, timer\r\n\
User-Agent: trunk/1.0\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 294\r\n\
\r\n\
v=0\r\n\
o=- 3912345678 3912345678 IN IP4 198.51.100.7\r\n\
s=-\r\n\
c=IN IP4 198.51.100.7\r\n\
t=0 0\r\n\
m=audio 40000 RTP/SAVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n\
a=sendrecv\r\n";

fn bench(c: &mut Criterion) {
    assert!(matches!(Message::parse(INVITE), Ok(Message::Request(_))));
    c.bench_function("sip_parse_invite_sdp", |b| {
        b.iter(|| Message::parse(black_box(INVITE)))
    });
    let Ok(Message::Request(req)) = Message::parse(INVITE) else {
        unreachable!("checked above")
    };
    assert!(req.body.ends_with(b"a=sendrecv\r\n") && inspect(&req).is_ok());
    c.bench_function("sip_inspect_invite", |b| {
        b.iter(|| inspect(black_box(&req)))
    });
    c.bench_function("sip_serialize_invite_sdp", |b| {
        b.iter(|| black_box(&req).to_bytes())
    });
    c.bench_function("sip_frame_parse_inspect_serialize", |b| {
        b.iter(|| {
            let mut f = Framer::new(Limits::default());
            f.push(black_box(INVITE)).ok();
            if let Ok(Some(Frame::Message(m))) = f.next_frame() {
                if let Ok(Message::Request(r)) = Message::parse(&m) {
                    let _ = inspect(&r);
                    return r.to_bytes();
                }
            }
            Vec::new()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
