//! The SIP message layer used the way the TLS transport and the B2BUA use it: frames cut from a
//! chunked stream, each answered or accepted, and requests built and edited for the other leg.

use srtp_edge::sip::framing::{Frame, Framer, Limits};
use srtp_edge::sip::name_addr::NameAddr;
use srtp_edge::sip::typed::CSeq;
use srtp_edge::sip::uri::{Host, Uri};
use srtp_edge::sip::validate::inspect;
use srtp_edge::sip::via::Via;
use srtp_edge::sip::{Headers, Message, Method, Request, Response};

/// What the transport would write back for one frame, if anything.
fn answer(frame: Frame) -> Option<Vec<u8>> {
    match frame {
        Frame::Ping => Some(b"\r\n".to_vec()),
        Frame::Message(bytes) => match Message::parse(&bytes) {
            Ok(Message::Request(req)) => match inspect(&req) {
                Ok(()) => Some(req.reply(200, Some(b"as1")).to_bytes()),
                Err(rej) => Some(rej.reply(&req, Some(b"as1")).to_bytes()),
            },
            Ok(Message::Response(_)) => None,
            Err(e) => e.reply(Some(b"as1")).map(|r| r.to_bytes()),
        },
    }
}

fn options(call: &str, extra: &str, line: &str) -> String {
    format!(
        "{line}\r\nVia: SIP/2.0/TLS [2001:db8::7]:5061;branch=z9hG4bK{call}\r\nMax-Forwards: 70\r\n\
To: <sips:edge@[2001:db8::1]>\r\nFrom: <sips:trunk@example.com>;tag=f{call}\r\nCall-ID: {call}\r\n\
CSeq: 1 OPTIONS\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

#[test]
fn a_chunked_stream_gets_one_answer_per_message_and_survives_bad_ones() {
    let good = "OPTIONS sips:edge@[2001:db8::1] SIP/2.0";
    let mut stream = b"\r\n\r\n".to_vec();
    stream.extend(options("c1", "", good).bytes());
    stream.extend(options("c2", "", "OPTIONS  sips:edge@[2001:db8::1] SIP/2.0").bytes());
    stream.extend(options("c3", "Require: unknown-ext\r\n", good).bytes());
    stream.extend(options("c4", "", "OPTIONS sips:edge@[2001:db8::1] SIP/3.0").bytes());
    stream.extend(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n");
    stream.extend(options("c5", "", good).bytes());
    for chunk in [1, 3, 17, 100, stream.len()] {
        let mut framer = Framer::new(Limits::default());
        let mut answers = Vec::new();
        for piece in stream.chunks(chunk) {
            framer.push(piece).unwrap();
            while let Some(frame) = framer.next_frame().unwrap() {
                answers.extend(answer(frame));
            }
        }
        let statuses: Vec<u16> = answers
            .iter()
            .map(|a| match Message::parse(a) {
                Ok(Message::Response(r)) => r.status,
                _ => 0, // the pong
            })
            .collect();
        assert_eq!(statuses, [0, 200, 400, 420, 505, 200], "chunk {chunk}");
        let Message::Response(r) = Message::parse(&answers[3]).unwrap() else {
            panic!()
        };
        assert_eq!(r.headers.get("Unsupported"), Some(&b"unknown-ext"[..]));
        assert_eq!(r.headers.call_id(), Ok(&b"c3"[..]));
        assert_eq!(
            r.headers.top_via().unwrap().host,
            Host::V6("2001:db8::7".parse().unwrap())
        );
    }
}

#[test]
fn building_the_other_leg_from_scratch() {
    let target = Uri::parse(b"sips:+15551234567@[2001:db8::20]:5061").unwrap();
    let mut h = Headers::new();
    let mut via = Via::parse(b"SIP/2.0/TLS [2001:db8::1]:5061").unwrap();
    via.set_param("branch", Some(b"z9hG4bKleg2"));
    h.push("Via", via.to_bytes());
    h.push("Max-Forwards", "69");
    let mut from = NameAddr::new(Uri::parse(b"sips:caller@edge.example.net").unwrap());
    from.set_param("tag", Some(b"b2b1"));
    h.push("From", from.to_bytes());
    h.push("To", NameAddr::new(target.clone()).to_bytes());
    h.push("Call-ID", "leg2-0001@edge.example.net");
    h.push(
        "CSeq",
        CSeq {
            seq: 1,
            method: Method::Invite,
        }
        .to_bytes(),
    );
    h.push(
        "Contact",
        NameAddr::new(Uri::parse(b"sips:edge@[2001:db8::1]:5061").unwrap()).to_bytes(),
    );
    h.push("Content-Type", "application/sdp");
    let req = Request {
        method: Method::Invite,
        uri: target,
        headers: h,
        body: b"v=0\r\n".to_vec(),
    };
    let wire = req.to_bytes();
    let back = Request::parse(&wire).unwrap();
    assert_eq!(inspect(&back), Ok(()));
    assert_eq!(back.headers.content_length(), Ok(Some(5)));
    assert_eq!(
        back.headers.top_via().unwrap().branch(),
        Some(&b"z9hG4bKleg2"[..])
    );
    assert_eq!(back.headers.from().unwrap().tag(), Some(&b"b2b1"[..]));
    assert_eq!(back.uri.as_sip().unwrap().port, Some(5061));
    assert_eq!(Request::parse(&back.to_bytes()).unwrap(), back);
}

#[test]
fn editing_a_response_for_relay() {
    let raw = b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/TLS edge;branch=z9hG4bKours\r\n\
Via: SIP/2.0/TLS [2001:db8::7];branch=z9hG4bKtheirs;received=2001:db8::7\r\n\
Record-Route: <sips:p1.example.com;lr>, <sips:[2001:db8::30];lr>\r\nFrom: <sips:a@b.com>;tag=1\r\n\
To: <sips:c@d.com>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    let mut r = Response::parse(raw).unwrap();
    assert_eq!(r.headers.record_routes().unwrap().len(), 2);
    let ours = r.headers.remove_first("Via").unwrap();
    assert!(Via::parse(&ours).unwrap().has_rfc3261_branch());
    r.headers.remove("Record-Route");
    let out = Response::parse(&r.to_bytes()).unwrap();
    assert_eq!(out.headers.vias().unwrap().len(), 1);
    assert_eq!(out.headers.count("Record-Route"), 0);
    assert_eq!(out.reason, b"Ringing");
}
