#!/usr/bin/env python3
"""A call through srtp-edge (ng) between a WebRTC peer and an SDES peer.

Peer A is aiortc (PyPI): a full DTLS-SRTP + ICE stack (its own certificate, its own DTLS and
SRTP code). It offers UDP/TLS/RTP/SAVPF through the ng `offer`; srtp-edge terminates A's DTLS
and ICE (as ICE-lite) and offers SDES to peer B. Peer B is a pylibsrtp (libsrtp) SDES peer that
answers with a crypto line and then exchanges SRTP with the relay.

Both directions carry a tone: A sends 440 Hz from an aiortc audio track (PCMU), B sends 1 kHz
PCMU in SRTP. The script counts what each side receives and how much of it carries the other
side's tone.

Modes:
  (default)            the call above; ok when tone flows both ways.
  --wrong-fingerprint  A's offer carries a fingerprint that is not its certificate's: the
                       handshake must fail, nothing reach B, and the call must be gone.
  --silent             A is a socket that never answers (no ICE, actpass): the call must be
                       gone after the handshake timeout (--expect-gone-within seconds).
  --sdes-dtls          A is the SDES peer, B is aiortc: the ng offer carries DTLS=passive, so
                       srtp-edge offers DTLS-SRTP + ICE-lite to B and answers A with SDES.
  --dtls-dtls          aiortc on both legs (DTLS=passive): two separate DTLS associations.
  --reoffer            the default call, then A re-offers twice: the same peer connection
                       (association kept) and a new one with a new certificate (re-key).

Prints one JSON object on stdout; exit code 0 when the checks of the mode passed.
"""
import argparse
import asyncio
import base64
import fractions
import json
import math
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from libsrtp_call import Ng, PROFILES, session, rtp, sdp as libsrtp_sdp  # noqa: E402


def ulaw_encode(sample):
    """G.711 mu-law of a signed 16-bit sample."""
    bias, clip = 0x84, 32635
    sign = 0x80 if sample < 0 else 0
    if sample < 0:
        sample = -sample
    sample = min(sample, clip) + bias
    exponent, mask = 7, 0x4000
    while exponent > 0 and not sample & mask:
        exponent -= 1
        mask >>= 1
    mantissa = (sample >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def ulaw_decode(u):
    u = ~u & 0xFF
    sign, exponent, mantissa = u & 0x80, (u >> 4) & 0x07, u & 0x0F
    s = ((mantissa << 3) + 0x84) << exponent
    s -= 0x84
    return -s if sign else s


def tone_share(samples, rate, hz):
    """Share of the signal power at `hz` (Goertzel over the block)."""
    n = len(samples)
    if n == 0:
        return 0.0
    k = 2 * math.cos(2 * math.pi * hz / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + k * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - k * s1 * s2
    total = sum(x * x for x in samples) * n / 2
    return power / total if total > 0 else 0.0


def b_sdp_answer(port, offer_to_b, suite, key):
    """B's answer to the relay's offer: PCMU only, our crypto line with the relay's tag."""
    mid, proto, tag = None, "RTP/SAVP", None
    for line in offer_to_b.decode().splitlines():
        if line.startswith("a=mid:"):
            mid = line[6:]
        elif line.startswith("m=audio "):
            proto = line.split()[2]
        elif line.startswith("a=crypto:"):
            t, s = line[9:].split()[:2]
            if s == suite and tag is None:
                tag = int(t)
    lines = [
        "v=0",
        "o=- 2 1 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        "m=audio %d %s 0" % (port, proto),
        "a=rtpmap:0 PCMU/8000",
        "a=rtcp-mux",
        "a=sendrecv",
    ]
    if mid is not None:
        lines.insert(5, "a=group:BUNDLE %s" % mid)
        lines.append("a=mid:%s" % mid)
    lines.append("a=crypto:%d %s inline:%s" % (tag, suite, base64.b64encode(key).decode()))
    return ("\r\n".join(lines) + "\r\n").encode(), tag


def scan_b(offer):
    ip, port, cryptos = None, None, []
    for line in offer.decode().splitlines():
        if line.startswith("c=IN IP4 "):
            ip = line.split()[2]
        elif line.startswith("m=audio "):
            port = int(line.split()[1])
        elif line.startswith("a=crypto:"):
            tag, suite, params = line[9:].split()[:3]
            b64 = params[7:].split("|")[0]
            b64 += "=" * (-len(b64) % 4)
            cryptos.append((int(tag), suite, base64.b64decode(b64)))
    return (ip, port), cryptos


def corrupt_fingerprint(sdp):
    out = []
    for line in sdp.splitlines():
        if line.startswith("a=fingerprint:"):
            head, digest = line.rsplit(" ", 1)
            first = "00" if digest[:2] != "00" else "11"
            line = head + " " + first + digest[2:]
        out.append(line)
    return "\r\n".join(out) + "\r\n"


class SdesPeer:
    """A libsrtp SDES peer: sends `hz` PCMU in SRTP every 20 ms, counts the other tone."""

    def __init__(self, suite, hz, listen_hz):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.suite, self.hz, self.listen_hz = suite, hz, listen_hz
        self.key = os.urandom(PROFILES[suite][1])
        self.relay, self.relay_key = None, None
        self.sent = 0
        self.got = {"packets": 0, "tone": 0, "bad": 0, "rtcp": 0}

    def port(self):
        return self.sock.getsockname()[1]

    def offer(self):
        return libsrtp_sdp(self.port(), [(1, self.suite, self.key)], 1)

    def take_answer(self, answer):
        """The relay's answer to our offer: its key for us (one crypto line, our tag)."""
        self.relay, cryptos = scan_b(answer)
        self.relay_key = cryptos[0][2] if cryptos else None
        return self.relay_key is not None

    def answer(self, offer):
        """Answer the relay's offer with our suite; False if it was not offered."""
        self.relay, offered = scan_b(offer)
        sdp, tag = b_sdp_answer(self.port(), offer, self.suite, self.key)
        if tag is None:
            return None
        self.relay_key = [k for t, s, k in offered if t == tag][0]
        return sdp

    def start(self):
        self.tx = session(self.suite, self.key, True)
        self.rx = session(self.suite, self.relay_key, False)

    def tick(self, send):
        if send:
            payload = bytes(
                ulaw_encode(int(12000 * math.sin(2 * math.pi * self.hz * (self.sent * 160 + i) / 8000)))
                for i in range(160)
            )
            self.sock.sendto(self.tx.protect(rtp(0x0B0B0B0B, self.sent, payload)), tuple(self.relay))
            self.sent += 1
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                break
            if len(data) > 1 and 192 <= data[1] <= 223:
                # SRTCP (RFC 5761 demux): the relay re-protected the other side's reports.
                try:
                    self.rx.unprotect_rtcp(data)
                    self.got["rtcp"] += 1
                except Exception:
                    self.got["bad"] += 1
                continue
            try:
                p = self.rx.unprotect(data)
            except Exception:
                self.got["bad"] += 1
                continue
            if len(p) > 12:
                self.got["packets"] += 1
                cc = p[0] & 0x0F
                ext = 0
                if p[0] & 0x10:
                    ext = 4 + 4 * struct.unpack("!H", p[14 + 4 * cc : 16 + 4 * cc])[0]
                body = p[12 + 4 * cc + ext :]
                samples = [ulaw_decode(x) for x in body]
                if (p[1] & 0x7F) == 0 and tone_share(samples, 8000, self.listen_hz) > 0.5:
                    self.got["tone"] += 1


class WebRtcPeer:
    """aiortc: DTLS-SRTP + ICE, sends `hz` from an audio track, counts the other tone."""

    def __init__(self, hz, listen_hz):
        import aioice.ice
        from aiortc import RTCConfiguration, RTCPeerConnection

        # Loopback only: aioice skips 127.0.0.1 when gathering host candidates.
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.got = {"frames": 0, "tone": 0}
        self.listen_hz = listen_hz
        self.pc.addTrack(tone_track(hz))
        self.pc.on("track", self.on_track)

    def on_track(self, track):
        async def pull():
            while True:
                try:
                    frame = await track.recv()
                except Exception:
                    return
                self.got["frames"] += 1
                # Packed (interleaved) samples: keep the first channel.
                ch = max(1, len(frame.layout.channels))
                raw = bytes(frame.planes[0])[: frame.samples * ch * 2]
                pcm = list(struct.unpack("<%dh" % (len(raw) // 2), raw))[::ch]
                if tone_share(pcm, frame.sample_rate, self.listen_hz) > 0.5:
                    self.got["tone"] += 1

        asyncio.ensure_future(pull())

    async def offer(self, wrong_fingerprint=False):
        await self.pc.setLocalDescription(await self.pc.createOffer())
        sdp = self.pc.localDescription.sdp
        if wrong_fingerprint:
            sdp = corrupt_fingerprint(sdp)
        return sdp.encode()

    async def take_answer(self, answer):
        from aiortc import RTCSessionDescription

        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer.decode(), type="answer"))
        return True

    async def answer(self, offer):
        from aiortc import RTCSessionDescription

        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer.decode(), type="offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription.sdp.encode()


def tone_track(hz):
    import av
    from aiortc import MediaStreamTrack

    class Tone(MediaStreamTrack):
        kind = "audio"

        def __init__(self):
            super().__init__()
            self.n, self.start = 0, None

        async def recv(self):
            if self.start is None:
                self.start = time.time()
            wait = self.start + self.n * 0.02 - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            frame = av.AudioFrame(format="s16", layout="mono", samples=160)
            pcm = b"".join(
                struct.pack("<h", int(12000 * math.sin(2 * math.pi * hz * (self.n * 160 + i) / 8000)))
                for i in range(160)
            )
            frame.planes[0].update(pcm)
            frame.sample_rate = 8000
            frame.pts = self.n * 160
            frame.time_base = fractions.Fraction(1, 8000)
            self.n += 1
            return frame

    return Tone()


def answer_lines(sdp):
    keep = ("m=", "a=setup", "a=fingerprint", "a=ice-lite", "a=candidate", "a=rtcp-mux", "a=tls-id")
    return [l for l in sdp.decode().splitlines() if l.startswith(keep)]


async def run(args):
    ng = Ng(tuple([args.ng.rsplit(":", 1)[0], int(args.ng.rsplit(":", 1)[1])]))
    out = {"ok": False, "mode": args.mode}
    problems = []
    call_id = "dtls-%d-%s" % (os.getpid(), args.mode)
    # A offers (440 Hz), B answers (1 kHz).
    a_webrtc = args.mode in ("ok", "wrong-fingerprint", "dtls-dtls", "reoffer")
    b_webrtc = args.mode in ("sdes-dtls", "dtls-dtls")
    a = WebRtcPeer(440, 1000) if a_webrtc else SdesPeer(args.suite_a, 440, 1000)
    b = WebRtcPeer(1000, 440) if b_webrtc else SdesPeer(args.suite_b, 1000, 440)
    extra = {"DTLS": "passive"} if b_webrtc else {}

    offer_a = await a.offer(args.mode == "wrong-fingerprint") if a_webrtc else a.offer()
    r = ng(command="offer", call_id=call_id, from_tag="A-tag", sdp=offer_a, flags=[], **extra)
    if r.get("result") != b"ok":
        out["offer"] = {k: str(v) for k, v in r.items()}
        print(json.dumps(out))
        return 1
    offer_b = r["sdp"]
    out["offer_to_b"] = answer_lines(offer_b)
    out["offer_to_b_has_fingerprint"] = b"a=fingerprint" in offer_b
    out["offer_to_b_has_crypto"] = b"a=crypto" in offer_b
    answer_b = await b.answer(offer_b) if b_webrtc else b.answer(offer_b)
    if answer_b is None:
        problems.append("relay did not offer B's suite")
        out["problems"] = problems
        print(json.dumps(out))
        return 1
    r = ng(command="answer", call_id=call_id, from_tag="A-tag", to_tag="B-tag", sdp=answer_b, flags=[])
    if r.get("result") != b"ok":
        out["answer"] = {k: str(v) for k, v in r.items()}
        print(json.dumps(out))
        return 1
    answer_a = r["sdp"]
    out["answer_to_a"] = answer_lines(answer_a)
    out["answer_to_a_has_crypto"] = b"a=crypto" in answer_a
    out["answer_to_a_has_fingerprint"] = b"a=fingerprint" in answer_a
    if a_webrtc:
        await a.take_answer(answer_a)
    elif not a.take_answer(answer_a):
        problems.append("no crypto for A in the answer")
    async def pump(secs, peers):
        sdes = [p for p in peers if isinstance(p, SdesPeer)]
        webrtc = [p for p in peers if isinstance(p, WebRtcPeer)]
        end = time.time() + secs
        t0 = time.time()
        n = 0
        while time.time() < end:
            ready = all(p.pc.connectionState == "connected" for p in webrtc)
            for p in sdes:
                p.tick(ready or args.mode == "wrong-fingerprint")
            n += 1
            await asyncio.sleep(max(0.0, t0 + n * 0.02 - time.time()))

    async def renegotiate(a_peer):
        """A re-offers (same call, same tags), B re-answers; returns the answer lines to A."""
        r = ng(command="offer", call_id=call_id, from_tag="A-tag", sdp=await a_peer.offer(), flags=[])
        if r.get("result") != b"ok":
            raise RuntimeError("re-offer: %r" % r)
        ans_b = b.answer(r["sdp"])
        r = ng(command="answer", call_id=call_id, from_tag="A-tag", to_tag="B-tag", sdp=ans_b, flags=[])
        if r.get("result") != b"ok":
            raise RuntimeError("re-answer: %r" % r)
        b.start()
        await a_peer.take_answer(r["sdp"])
        return answer_lines(r["sdp"])

    for p in (a, b):
        if isinstance(p, SdesPeer):
            p.start()
    webrtc = [p for p in (a, b) if isinstance(p, WebRtcPeer)]
    await pump(args.secs, [a, b])
    if args.mode == "reoffer":
        # 1. The same aiortc peer re-offers (same certificate, same ICE): the association is
        #    kept (same tls-id, no new handshake) and media keeps flowing.
        before = (a.got["tone"], b.got["tone"])
        lines = await renegotiate(a)
        tls = lambda ls: [l for l in ls if l.startswith("a=tls-id")]  # noqa: E731
        out["reoffer_same_tls_id"] = tls(lines) == tls(out["answer_to_a"])
        await pump(1.5, [a, b])
        out["after_reoffer"] = {"a": a.got["tone"] - before[0], "b": b.got["tone"] - before[1]}
        # 2. A new peer connection (new certificate) re-offers in the same call: a new
        #    handshake re-keys A's leg; B's leg is re-keyed by SDES.
        a2 = WebRtcPeer(440, 1000)
        before_b = b.got["tone"]
        lines2 = await renegotiate(a2)
        out["rekey_new_tls_id"] = tls(lines2) != tls(lines)
        await a.pc.close()
        await pump(2.5, [a2, b])
        out["after_rekey"] = {"a2": a2.got["tone"], "b": b.got["tone"] - before_b}
        out["state_a2"] = a2.pc.connectionState
        webrtc.append(a2)
        for k, v in list(out["after_reoffer"].items()) + list(out["after_rekey"].items()):
            if v < 25:
                problems.append("too little tone at %s after renegotiation" % k)
        if not out["reoffer_same_tls_id"]:
            problems.append("re-offer changed our tls-id")
        if not out["rekey_new_tls_id"]:
            problems.append("new certificate kept the old tls-id")
    out["state"] = [p.pc.connectionState for p in webrtc if p.pc.connectionState != "closed"]
    out["got_a"], out["got_b"] = a.got, b.got
    out["sent"] = {"a": getattr(a, "sent", None), "b": getattr(b, "sent", None)}
    q = ng(command="query", call_id=call_id)
    out["query"] = q.get("result", b"").decode()
    got_frames = lambda p: p.got.get("frames", p.got.get("packets", 0))  # noqa: E731
    if args.mode != "wrong-fingerprint":
        for name, p in (("A", a), ("B", b)):
            if p.got["tone"] < 25:
                problems.append("%s received too little of the other tone" % name)
            if p.got.get("bad") and args.mode != "reoffer":
                problems.append("%s got packets that failed SRTP" % name)
        d = ng(command="delete", call_id=call_id)
        out["delete"] = d.get("result", b"").decode()
    else:
        if got_frames(a) or got_frames(b):
            problems.append("media crossed a refused leg")
        if out["query"] == "ok":
            problems.append("call still exists")
    for p in webrtc:
        await p.pc.close()
    out["problems"] = problems
    out["ok"] = not problems
    print(json.dumps(out))
    return 0 if out["ok"] else 1


def silent(args):
    """A DTLS offer from a socket that never answers: the leg must end after the timeout."""
    ng = Ng(tuple([args.ng.rsplit(":", 1)[0], int(args.ng.rsplit(":", 1)[1])]))
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b.bind(("127.0.0.1", 0))
    call_id = "dtls-silent-%d" % os.getpid()
    fp = ":".join("%02X" % x for x in os.urandom(32))
    offer = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio %d UDP/TLS/RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\n"
        "a=fingerprint:sha-256 %s\r\na=setup:actpass\r\n" % (a.getsockname()[1], fp)
    )
    out = {"mode": "silent", "ok": False}
    r = ng(command="offer", call_id=call_id, from_tag="A-tag", sdp=offer.encode(), flags=[])
    if r.get("result") != b"ok":
        out["offer"] = {k: str(v) for k, v in r.items()}
        print(json.dumps(out))
        return 1
    _, offered = scan_b(r["sdp"])
    tag, suite, _ = offered[0]
    answer_b, _ = b_sdp_answer(b.getsockname()[1], r["sdp"], suite, os.urandom(PROFILES[suite][1]))
    r = ng(command="answer", call_id=call_id, from_tag="A-tag", to_tag="B-tag", sdp=answer_b, flags=[])
    out["answer"] = r.get("result", b"").decode()
    t0 = time.time()
    a.settimeout(0.2)
    hellos = 0
    gone_after = None
    while time.time() - t0 < args.expect_gone_within + 3:
        try:
            data = a.recv(4096)
            if data and data[0] == 22:
                hellos += 1
        except socket.timeout:
            pass
        if ng(command="query", call_id=call_id).get("result") != b"ok":
            gone_after = time.time() - t0
            break
    out["client_hellos_seen"] = hellos
    out["gone_after_secs"] = gone_after
    problems = []
    if hellos < 2:
        problems.append("no ClientHello retransmissions towards the silent peer")
    if gone_after is None or gone_after > args.expect_gone_within:
        problems.append("call not ended by the handshake timeout")
    out["problems"] = problems
    out["ok"] = not problems
    print(json.dumps(out))
    return 0 if out["ok"] else 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ng", required=True)
    ap.add_argument("--suite-a", default="AES_CM_128_HMAC_SHA1_80")
    ap.add_argument("--suite-b", default="AES_CM_128_HMAC_SHA1_80")
    ap.add_argument("--secs", type=float, default=3.0)
    ap.add_argument("--wrong-fingerprint", dest="mode", action="store_const", const="wrong-fingerprint")
    ap.add_argument("--silent", dest="mode", action="store_const", const="silent")
    ap.add_argument("--sdes-dtls", dest="mode", action="store_const", const="sdes-dtls",
                    help="A is the SDES peer; B is aiortc, offered DTLS (ng DTLS=passive)")
    ap.add_argument("--reoffer", dest="mode", action="store_const", const="reoffer",
                    help="default call, then a re-offer from the same aiortc peer (association "
                    "kept) and one from a new peer connection (new certificate: re-key)")
    ap.add_argument("--dtls-dtls", dest="mode", action="store_const", const="dtls-dtls",
                    help="aiortc on both legs (ng DTLS=passive)")
    ap.add_argument("--expect-gone-within", type=float, default=12.0)
    ap.set_defaults(mode="ok")
    args = ap.parse_args()
    if args.mode == "silent":
        return silent(args)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
