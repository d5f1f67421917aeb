#!/usr/bin/env python3
"""A forked call through srtp-edge's ng interface between two libsrtp peers (PyPI pylibsrtp).

Peer A (the caller, leg A: the `inbound` track) and peer B (leg B: the `outbound` track) each send
20 ms PCMU frames of their own tone (--freq-a, --freq-b) through the relay and check that what
arrives decrypts to exactly what the other side sent, counting losses. The fork is asked for with
the `fork` key on the offer (--fork), or mid-call with `start forwarding` (--start-at seconds);
`stop forwarding` at --stop-at seconds. Peer A also sends one RFC 4733 key press (digit 5).

Prints one JSON object: ng results (with any `warning`), per-side sent/received/lost/bad counts,
and `probes`: base64 of a few of the μ-law frames each side sent, which the test searches for in
the daemon's logs and state directory (decrypted audio must never be written anywhere).
"""
import argparse
import base64
import json
import math
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from libsrtp_call import PROFILES, Ng, drain, scan, session  # noqa: E402


def linear_to_ulaw(x):
    """ITU-T G.711 μ-law encoder (reference segment search), independent of srtp-edge's."""
    bias, clip = 0x84, 32635
    sign = 0x80 if x < 0 else 0
    if x < 0:
        x = -x
    x = min(x, clip) + bias
    exp = 7
    mask = 0x4000
    while exp > 0 and not (x & mask):
        exp -= 1
        mask >>= 1
    mant = (x >> (exp + 3)) & 0x0F
    return ~(sign | (exp << 4) | mant) & 0xFF


def tone_frame(freq, n, amp=6000):
    return bytes(
        linear_to_ulaw(int(amp * math.sin(2 * math.pi * freq * (n * 160 + i) / 8000)))
        for i in range(160)
    )


def sdp(port, cryptos, sess_id, codec):
    fmt = {"pcmu": ("0", "PCMU/8000"), "pcma": ("8", "PCMA/8000"), "g722": ("9", "G722/8000")}
    pt, name = fmt[codec]
    lines = [
        "v=0",
        "o=- %d 1 IN IP4 127.0.0.1" % sess_id,
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        "m=audio %d RTP/SAVP %s 101" % (port, pt),
        "a=rtpmap:%s %s" % (pt, name),
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=rtcp-mux",
        "a=sendrecv",
    ]
    for tag, suite, key in cryptos:
        lines.append("a=crypto:%d %s inline:%s" % (tag, suite, base64.b64encode(key).decode()))
    return ("\r\n".join(lines) + "\r\n").encode()


def rtp(ssrc, seq, ts, payload, pt=0, marker=False):
    return struct.pack("!BBHII", 0x80, pt | (0x80 if marker else 0), seq & 0xFFFF,
                       ts & 0xFFFFFFFF, ssrc) + payload


def result(r):
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in r.items() if k != "sdp"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ng", required=True)
    ap.add_argument("--fork", help="backend name for the `fork` key of the offer")
    ap.add_argument("--fork-name", help="backend name for start forwarding (default --fork)")
    ap.add_argument("--start-at", type=float, help="send `start forwarding` after N seconds")
    ap.add_argument("--stop-at", type=float, help="send `stop forwarding` after N seconds")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--freq-a", type=float, default=600.0)
    ap.add_argument("--freq-b", type=float, default=1000.0)
    ap.add_argument("--codec", choices=["pcmu", "pcma", "g722"], default="pcmu")
    ap.add_argument("--suite", default="AES_CM_128_HMAC_SHA1_80")
    ap.add_argument("--keep", action="store_true", help="do not delete the call at the end")
    ap.add_argument("--call-id", default="fork-%d" % os.getpid())
    args = ap.parse_args()
    host, port = args.ng.rsplit(":", 1)
    ng = Ng((host, int(port)))
    out = {"ok": False}
    problems = []
    pt = {"pcmu": 0, "pcma": 8, "g722": 9}[args.codec]

    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (a, b):
        s.bind(("127.0.0.1", 0))
    klen = PROFILES[args.suite][1]
    key_a, key_b = os.urandom(klen), os.urandom(klen)

    req = dict(command="offer", call_id=args.call_id, from_tag="A-tag",
               sdp=sdp(a.getsockname()[1], [(1, args.suite, key_a)], 1, args.codec),
               flags=[], rtcp_mux=["accept"])
    if args.fork:
        req["fork"] = args.fork
    r = ng(**req)
    out["offer"] = result(r)
    if r.get("result") != b"ok":
        print(json.dumps(out))
        return 1
    relay_b, offered_b, _ = scan(r["sdp"])
    tag_b, _, relay_key_b = [c for c in offered_b if c[1] == args.suite][0]
    req = dict(command="answer", call_id=args.call_id, from_tag="A-tag", to_tag="B-tag",
               sdp=sdp(b.getsockname()[1], [(tag_b, args.suite, key_b)], 2, args.codec),
               flags=[], rtcp_mux=["accept"])
    if args.fork:
        req["fork"] = args.fork
    r = ng(**req)
    out["answer"] = result(r)
    if r.get("result") != b"ok":
        print(json.dumps(out))
        return 1
    relay_a, answered_a, _ = scan(r["sdp"])
    relay_key_a = answered_a[0][2]
    relay_a = ("127.0.0.1" if relay_a[0] in (None, "0.0.0.0") else relay_a[0], relay_a[1])
    relay_b = ("127.0.0.1" if relay_b[0] in (None, "0.0.0.0") else relay_b[0], relay_b[1])
    a_tx, a_rx = session(args.suite, key_a, True), session(args.suite, relay_key_a, False)
    b_tx, b_rx = session(args.suite, key_b, True), session(args.suite, relay_key_b, False)

    frames = int(args.seconds * 50)
    sent = {"a": 0, "b": 0, "a_dtmf": 0}
    got = {"a": 0, "b": 0, "bad": 0, "dtmf": 0}
    expect = {"a": {}, "b": {}}
    probes = {"a": [], "b": []}
    ng_results = {}
    t0 = time.monotonic()
    start_done = stop_done = False
    dtmf_at = frames // 2

    def pending(sock):
        # Everything already queued on the socket, without waiting.
        out = []
        sock.setblocking(False)
        try:
            while True:
                out.append(sock.recv(4096))
        except BlockingIOError:
            pass
        finally:
            sock.setblocking(True)
        return out

    def receive(wait):
        for sock, rx, side in ((b, b_rx, "a"), (a, a_rx, "b")):
            for data in (drain(sock, wait) if wait > 0 else pending(sock)):
                try:
                    plain = rx.unprotect(data)
                except Exception:
                    got["bad"] += 1
                    continue
                ptype = plain[1] & 0x7F
                if ptype == 101:
                    got["dtmf"] += 1
                    continue
                seq = struct.unpack("!H", plain[2:4])[0]
                if expect[side].pop(seq, None) == plain[12:]:
                    got[side] += 1
                else:
                    got["bad"] += 1

    seq_a = 0
    for n in range(frames):
        fa, fb = tone_frame(args.freq_a, n), tone_frame(args.freq_b, n)
        seq_a += 1
        seq = n + 1
        expect["a"][seq_a] = fa
        expect["b"][seq] = fb
        if 10 <= n < 16:
            probes["a"].append(base64.b64encode(fa).decode())
            probes["b"].append(base64.b64encode(fb).decode())
        a.sendto(a_tx.protect(rtp(0xA, seq_a, n * 160, fa, pt)), relay_a)
        b.sendto(b_tx.protect(rtp(0xB, seq, n * 160, fb, pt)), relay_b)
        sent["a"] += 1
        sent["b"] += 1
        if n == dtmf_at:
            # Digit 5, volume 10: two updates and an end packet (retransmitted), one timestamp.
            for k, (end, dur) in enumerate(((0, 160), (0, 320), (1, 480), (1, 480))):
                ev = struct.pack("!BBH", 5, (0x80 if end else 0) | 10, dur)
                seq_a += 1
                a.sendto(a_tx.protect(rtp(0xA, seq_a, n * 160, ev, 101, k == 0)), relay_a)
                sent["a_dtmf"] += 1
        el = time.monotonic() - t0
        if args.start_at is not None and not start_done and el >= args.start_at:
            start_done = True
            ng_results["start_forwarding"] = result(ng(
                command="start forwarding", call_id=args.call_id,
                fork=args.fork_name or args.fork or ""))
        if args.stop_at is not None and not stop_done and el >= args.stop_at:
            stop_done = True
            ng_results["stop_forwarding"] = result(ng(
                command="stop forwarding", call_id=args.call_id))
        # Keep real-time pacing against the start, whatever the receive step took.
        receive(0.0)
        delay = t0 + (n + 1) * 0.02 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    receive(0.3)
    out.update(sent=sent, got=got, ng=ng_results, probes=probes,
               lost={"a": len(expect["a"]), "b": len(expect["b"])})
    if not args.keep:
        out["delete"] = result(ng(command="delete", call_id=args.call_id, from_tag="A-tag"))
    if got["bad"]:
        problems.append("%d packets did not decrypt to what was sent" % got["bad"])
    out["problems"] = problems
    out["ok"] = not problems
    print(json.dumps(out))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
