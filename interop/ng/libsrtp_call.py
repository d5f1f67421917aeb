#!/usr/bin/env python3
"""A call through an ng-controlled SRTP relay (srtp-edge or rtpengine) between two libsrtp peers.

Peer A offers one SDES suite, peer B answers with another one picked from the relay's offer;
each side then sends SRTP (libsrtp, through PyPI pylibsrtp) and SRTCP to the relay, and checks
that what arrives decrypts with the keys the relay gave *it*, carrying the same payload.

With --attack, it also injects plain RTP and replayed SRTP into both legs, before and after the
legs latch, from the peers' own sockets and from a stranger's, and counts whether any of it came
out of the relay. The bencode codec and SDP handling here are independent of srtp-edge's own.

Prints one JSON object on stdout; exit code 0 means the checks it could make itself passed.
"""
import argparse
import base64
import json
import os
import socket
import struct
import sys
import time

from pylibsrtp import Policy, Session

PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": (Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 30),
    "AES_CM_128_HMAC_SHA1_32": (Policy.SRTP_PROFILE_AES128_CM_SHA1_32, 30),
    "AEAD_AES_128_GCM": (Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 28),
    "AEAD_AES_256_GCM": (Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 44),
}


def benc(v):
    if isinstance(v, bytes):
        return str(len(v)).encode() + b":" + v
    if isinstance(v, str):
        return benc(v.encode())
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, list):
        return b"l" + b"".join(benc(x) for x in v) + b"e"
    if isinstance(v, dict):
        return b"d" + b"".join(benc(k) + benc(v[k]) for k in sorted(v)) + b"e"
    raise TypeError(v)


def bdec(s, i=0):
    c = s[i : i + 1]
    if c == b"i":
        e = s.index(b"e", i)
        return int(s[i + 1 : e]), e + 1
    if c == b"l":
        i += 1
        out = []
        while s[i : i + 1] != b"e":
            x, i = bdec(s, i)
            out.append(x)
        return out, i + 1
    if c == b"d":
        i += 1
        out = {}
        while s[i : i + 1] != b"e":
            k, i = bdec(s, i)
            v, i = bdec(s, i)
            out[k.decode()] = v
        return out, i + 1
    colon = s.index(b":", i)
    n = int(s[i:colon])
    return s[colon + 1 : colon + 1 + n], colon + 1 + n


class Ng:
    def __init__(self, addr):
        self.addr = addr
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(1.0)
        self.seq = 0

    def __call__(self, **req):
        self.seq += 1
        cookie = b"py%d_%d" % (os.getpid(), self.seq)
        msg = cookie + b" " + benc({k.replace("_", "-"): v for k, v in req.items()})
        for _ in range(5):
            self.sock.sendto(msg, self.addr)
            try:
                while True:
                    data, _ = self.sock.recvfrom(65536)
                    c, _, body = data.partition(b" ")
                    if c == cookie:
                        return bdec(body)[0]
            except socket.timeout:
                continue
        raise RuntimeError("ng request timed out")


def sdp(port, cryptos, sess_id):
    lines = [
        "v=0",
        "o=- %d 1 IN IP4 127.0.0.1" % sess_id,
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        "m=audio %d RTP/SAVP 0 101" % port,
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=rtcp-mux",
        "a=sendrecv",
    ]
    for tag, suite, key in cryptos:
        lines.append("a=crypto:%d %s inline:%s" % (tag, suite, base64.b64encode(key).decode()))
    return ("\r\n".join(lines) + "\r\n").encode()


def scan(sdp_bytes):
    ip, port, cryptos, proto = None, None, [], None
    for line in sdp_bytes.decode().splitlines():
        if line.startswith("c=IN IP4 "):
            ip = line.split()[2]
        elif line.startswith("m=audio "):
            parts = line.split()
            port, proto = int(parts[1]), parts[2]
        elif line.startswith("a=crypto:"):
            tag, suite, params = line[len("a=crypto:") :].split()[:3]
            b64 = params[len("inline:") :].split("|")[0]
            b64 += "=" * (-len(b64) % 4)
            cryptos.append((int(tag), suite, base64.b64decode(b64)))
    return (ip, port), cryptos, proto


def session(suite, key, outbound):
    prof, _ = PROFILES[suite]
    p = Policy(
        key=key,
        ssrc_type=Policy.SSRC_ANY_OUTBOUND if outbound else Policy.SSRC_ANY_INBOUND,
        srtp_profile=prof,
    )
    return Session(policy=p)


def rtp(ssrc, seq, payload, pt=0):
    return struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, ssrc) + payload


def rtcp_sr(ssrc, n):
    # Sender report, no report blocks: V=2, RC=0, PT=200, length=6 words.
    return struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, n, n, n * 160, n, n * 172)


def drain(sock, wait):
    out = []
    end = time.time() + wait
    while True:
        left = end - time.time()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            data, src = sock.recvfrom(4096)
            out.append(data)
        except socket.timeout:
            break
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ng", required=True)
    ap.add_argument("--suite-a", default="AES_CM_128_HMAC_SHA1_80")
    ap.add_argument("--suite-b", default="AEAD_AES_128_GCM")
    ap.add_argument("--packets", type=int, default=50)
    ap.add_argument("--attack", action="store_true")
    ap.add_argument("--keep", action="store_true", help="do not delete the call at the end")
    ap.add_argument("--call-id", default="libsrtp-%d" % os.getpid())
    args = ap.parse_args()
    host, port = args.ng.rsplit(":", 1)
    ng = Ng((host, int(port)))
    out = {"ok": False}
    problems = []

    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (a, b, stranger):
        s.bind(("127.0.0.1", 0))
    key_a = os.urandom(PROFILES[args.suite_a][1])
    key_b = os.urandom(PROFILES[args.suite_b][1])

    r = ng(command="offer", call_id=args.call_id, from_tag="A-tag",
           sdp=sdp(a.getsockname()[1], [(1, args.suite_a, key_a)], 1), flags=[],
           rtcp_mux=["accept"])
    if r.get("result") != b"ok":
        print(json.dumps({"ok": False, "offer": {k: str(v) for k, v in r.items()}}))
        return 1
    relay_b, offered_b, proto_b = scan(r["sdp"])
    out["offer_to_b_suites"] = [s for _, s, _ in offered_b]
    out["offer_to_b_proto"] = proto_b
    pick = [c for c in offered_b if c[1] == args.suite_b]
    if not pick:
        problems.append("relay did not offer %s to B" % args.suite_b)
        print(json.dumps({**out, "problems": problems}))
        return 1
    tag_b, _, relay_key_b = pick[0]
    r = ng(command="answer", call_id=args.call_id, from_tag="A-tag", to_tag="B-tag",
           sdp=sdp(b.getsockname()[1], [(tag_b, args.suite_b, key_b)], 2), flags=[],
           rtcp_mux=["accept"])
    if r.get("result") != b"ok":
        print(json.dumps({**out, "answer": {k: str(v) for k, v in r.items()}}))
        return 1
    relay_a, answered_a, proto_a = scan(r["sdp"])
    out["answer_to_a_suites"] = [s for _, s, _ in answered_a]
    out["answer_to_a_proto"] = proto_a
    if len(answered_a) != 1 or answered_a[0][1] != args.suite_a:
        problems.append("answer to A must carry exactly one crypto line in A's suite")
        print(json.dumps({**out, "problems": problems}))
        return 1
    relay_key_a = answered_a[0][2]
    keys = [key_a, key_b, relay_key_a, relay_key_b]
    out["distinct_keys"] = len(set(keys)) == 4
    # Keys of a different suite can only be "equal" by prefix; compare prefixes too.
    out["key_prefix_reuse"] = any(
        x != y and (x.startswith(y[:16]) or y.startswith(x[:16])) for x in keys for y in keys
    )

    a_tx, a_rx = session(args.suite_a, key_a, True), session(args.suite_a, relay_key_a, False)
    b_tx, b_rx = session(args.suite_b, key_b, True), session(args.suite_b, relay_key_b, False)
    relay_a = ("127.0.0.1" if relay_a[0] in (None, "0.0.0.0") else relay_a[0], relay_a[1])
    relay_b = ("127.0.0.1" if relay_b[0] in (None, "0.0.0.0") else relay_b[0], relay_b[1])

    attacks = {"injected": 0, "leaked": 0}
    first_a = None

    def inject(phase):
        # Plain RTP from each peer's own socket and from a stranger, into both legs, and a
        # replay of the first authentic packet A sent.
        for sock, dest, ssrc in ((a, relay_a, 0xA), (b, relay_b, 0xB),
                                 (stranger, relay_a, 0xA), (stranger, relay_b, 0xB)):
            for k in range(5):
                sock.sendto(rtp(ssrc, 60000 + k, b"PLAINTEXT!" * 16), dest)
                attacks["injected"] += 1
        if first_a is not None:
            for k in range(3):
                a.sendto(first_a, relay_a)
                stranger.sendto(first_a, relay_a)
                attacks["injected"] += 2
        time.sleep(0.05)

    if args.attack:
        inject("before-latch")
        # Anything that came out now is a leak (nothing authentic was sent yet).
        for sock in (a, b, stranger):
            attacks["leaked"] += len(drain(sock, 0.2))

    sent = {"a": 0, "b": 0, "a_rtcp": 0, "b_rtcp": 0}
    got = {"a": 0, "b": 0, "a_rtcp": 0, "b_rtcp": 0, "bad": 0}
    for n in range(args.packets):
        pa = ("A%05d" % n).encode() * 20 + bytes(40)
        pb = ("B%05d" % n).encode() * 20 + bytes(40)
        sa = a_tx.protect(rtp(0xA, n + 1, pa))
        if first_a is None:
            first_a = sa
        a.sendto(sa, relay_a)
        b.sendto(b_tx.protect(rtp(0xB, n + 1, pb)), relay_b)
        sent["a"] += 1
        sent["b"] += 1
        if n % 10 == 0:
            a.sendto(a_tx.protect_rtcp(rtcp_sr(0xA, n)), relay_a)
            b.sendto(b_tx.protect_rtcp(rtcp_sr(0xB, n)), relay_b)
            sent["a_rtcp"] += 1
            sent["b_rtcp"] += 1
        if args.attack and n == args.packets // 2:
            inject("after-latch")
        time.sleep(0.02)
        for sock, rx, side, expect in ((b, b_rx, "a", b"A"), (a, a_rx, "b", b"B")):
            for data in drain(sock, 0.001):
                pt = data[1] & 0x7F
                try:
                    if 72 <= pt <= 76:
                        rx.unprotect_rtcp(data)
                        got[side + "_rtcp"] += 1
                    else:
                        plain = rx.unprotect(data)
                        body = plain[12:]
                        if body[:1] == expect and body[:6] * 20 == body[:120]:
                            got[side] += 1
                        else:
                            got["bad"] += 1
                except Exception:
                    got["bad"] += 1
    for sock, rx, side, expect in ((b, b_rx, "a", b"A"), (a, a_rx, "b", b"B")):
        for data in drain(sock, 0.3):
            pt = data[1] & 0x7F
            try:
                if 72 <= pt <= 76:
                    rx.unprotect_rtcp(data)
                    got[side + "_rtcp"] += 1
                else:
                    rx.unprotect(data)
                    got[side] += 1
            except Exception:
                got["bad"] += 1
    attacks["leaked"] += len(drain(stranger, 0.1))
    out.update(sent=sent, got=got, attacks=attacks)
    if not args.keep:
        r = ng(command="delete", call_id=args.call_id, from_tag="A-tag")
        out["delete"] = r.get("result", b"").decode()
    if got["bad"]:
        problems.append("%d packets arrived that did not decrypt to the sent payload" % got["bad"])
    if attacks["leaked"]:
        problems.append("%d packets leaked to a stranger or before latching" % attacks["leaked"])
    out["problems"] = problems
    out["ok"] = not problems
    print(json.dumps(out))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
