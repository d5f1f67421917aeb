#!/usr/bin/env python3
"""A recorded call through srtp-edge's ng interface between two libsrtp peers (PyPI pylibsrtp):
A (the caller) sends a 440 Hz tone, B (the callee) a 1000 Hz tone, both G.711 in SRTP, each side
checking what the relay forwards. The call is recorded with the `record-call` flag on the offer
(--record-flag) or with `start recording` after the answer (--start-recording).

Prints one JSON object: what was sent and received per side, and the hex of one G.711 payload per
side (the tests search the disk for these bytes and their PCM form; nothing is written here).
"""
import argparse
import json
import math
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "ng"))
from libsrtp_call import PROFILES, Ng, scan, session  # noqa: E402


def ulaw_encode(s):
    BIAS, CLIP = 0x84, 32635
    sign = 0x80 if s < 0 else 0
    s = min(abs(s), CLIP) + BIAS
    exp = 7
    mask = 0x4000
    while exp > 0 and not (s & mask):
        exp -= 1
        mask >>= 1
    mant = (s >> (exp + 3)) & 0x0F
    return ~(sign | (exp << 4) | mant) & 0xFF


def tone(freq, n0, count=160, amp=8000):
    return bytes(ulaw_encode(int(round(amp * math.sin(2 * math.pi * freq * (n0 + k) / 8000))))
                 for k in range(count))


def sdp(port, suite, key, sess_id):
    import base64
    return ("\r\n".join([
        "v=0", "o=- %d 1 IN IP4 127.0.0.1" % sess_id, "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
        "m=audio %d RTP/SAVP 0 101" % port, "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000", "a=rtcp-mux", "a=sendrecv",
        "a=crypto:1 %s inline:%s" % (suite, base64.b64encode(key).decode()),
    ]) + "\r\n").encode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ng", required=True)
    ap.add_argument("--call-id", default="tone-%d" % os.getpid())
    ap.add_argument("--packets", type=int, default=150)
    ap.add_argument("--record-flag", action="store_true")
    ap.add_argument("--start-recording", action="store_true")
    ap.add_argument("--pause-at", type=int, default=-1, help="send `pause recording` at packet N")
    ap.add_argument("--resume-at", type=int, default=-1, help="send `start recording` at packet N")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--seed", type=int, default=os.getpid(),
                    help="picks the tones' amplitude and phase, so each run's audio is unique")
    a = ap.parse_args()
    host, port = a.ng.rsplit(":", 1)
    ng = Ng((host, int(port)))
    suite = "AES_CM_128_HMAC_SHA1_80"
    out = {"ok": False, "call_id": a.call_id, "ng": {}}
    sa, sb = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    for s in (sa, sb):
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
    key_a, key_b = os.urandom(30), os.urandom(30)
    extra = {"flags": ["record-call"]} if a.record_flag else {"flags": []}
    r = ng(command="offer", call_id=a.call_id, from_tag="caller", rtcp_mux=["accept"],
           sdp=sdp(sa.getsockname()[1], suite, key_a, 1), **extra)
    out["ng"]["offer"] = r.get("result", b"").decode()
    if "warning" in r:
        out["ng"]["offer_warning"] = r["warning"].decode()
    relay_b, offered, _ = scan(r["sdp"])
    tag, _, relay_key_b = [c for c in offered if c[1] == suite][0]
    r = ng(command="answer", call_id=a.call_id, from_tag="caller", to_tag="callee",
           rtcp_mux=["accept"], sdp=sdp(sb.getsockname()[1], suite, key_b, 2).replace(
               b"a=crypto:1 ", b"a=crypto:%d " % tag))
    out["ng"]["answer"] = r.get("result", b"").decode()
    relay_a, answered, _ = scan(r["sdp"])
    relay_key_a = answered[0][2]
    if a.start_recording:
        r = ng(command="start recording", call_id=a.call_id)
        out["ng"]["start_recording"] = r.get("result", b"").decode()
        if r.get("error-reason"):
            out["ng"]["start_recording_error"] = r["error-reason"].decode()
    relay_a = ("127.0.0.1", relay_a[1])
    relay_b = ("127.0.0.1", relay_b[1])
    a_tx, a_rx = session(suite, key_a, True), session(suite, relay_key_a, False)
    b_tx, b_rx = session(suite, key_b, True), session(suite, relay_key_b, False)
    got = {"a": 0, "b": 0, "bad": 0}
    payloads = {}
    t0 = time.time()
    for n in range(a.packets):
        if n == a.pause_at:
            out["ng"]["pause"] = ng(command="pause recording", call_id=a.call_id).get("result", b"").decode()
        if n == a.resume_at:
            out["ng"]["resume"] = ng(command="start recording", call_id=a.call_id).get("result", b"").decode()
        amp = 5000 + a.seed % 4000
        phase = a.seed % 997
        pa, pb = tone(440, phase + n * 160, amp=amp), tone(1000, phase + n * 160, amp=amp)
        if n == 10:
            payloads = {"a": pa.hex(), "b": pb.hex()}
        marker = 0x80 if n == 0 else 0  # PT 0 (PCMU), marker on the first packet
        sa.sendto(a_tx.protect(struct.pack("!BBHII", 0x80, marker, n + 1, n * 160, 0xAAAA) + pa), relay_a)
        sb.sendto(b_tx.protect(struct.pack("!BBHII", 0x80, marker, n + 1, n * 160, 0xBBBB) + pb), relay_b)
        # Pace at 20 ms on the wall clock.
        target = t0 + (n + 1) * 0.02
        while True:
            for sock, rx, side in ((sb, b_rx, "a"), (sa, a_rx, "b")):
                while True:
                    try:
                        data = sock.recv(4096)
                    except BlockingIOError:
                        break
                    try:
                        rx.unprotect(data)
                        got[side] += 1
                    except Exception:
                        got["bad"] += 1
            left = target - time.time()
            if left <= 0:
                break
            time.sleep(min(left, 0.005))
    time.sleep(0.3)
    for sock, rx, side in ((sb, b_rx, "a"), (sa, a_rx, "b")):
        while True:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                break
            try:
                rx.unprotect(data)
                got[side] += 1
            except Exception:
                got["bad"] += 1
    if not a.keep:
        out["ng"]["delete"] = ng(command="delete", call_id=a.call_id, from_tag="caller").get("result", b"").decode()
    out.update(sent=a.packets, got=got, payloads=payloads)
    out["ok"] = got["bad"] == 0 and got["a"] > 0 and got["b"] > 0
    print(json.dumps(out))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
