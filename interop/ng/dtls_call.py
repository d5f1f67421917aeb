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
from libsrtp_call import Ng, PROFILES, session, rtp  # noqa: E402


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


async def run(args):
    import aioice.ice
    import av
    from aiortc import (
        MediaStreamTrack,
        RTCConfiguration,
        RTCPeerConnection,
        RTCSessionDescription,
    )

    # Loopback only: aioice skips 127.0.0.1 when gathering host candidates.
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

    class Tone(MediaStreamTrack):
        kind = "audio"

        def __init__(self, hz):
            super().__init__()
            self.hz, self.n, self.start = hz, 0, None

        async def recv(self):
            if self.start is None:
                self.start = time.time()
            due = self.start + self.n * 0.02
            wait = due - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            frame = av.AudioFrame(format="s16", layout="mono", samples=160)
            pcm = b"".join(
                struct.pack("<h", int(12000 * math.sin(2 * math.pi * self.hz * (self.n * 160 + i) / 8000)))
                for i in range(160)
            )
            frame.planes[0].update(pcm)
            frame.sample_rate = 8000
            frame.pts = self.n * 160
            frame.time_base = fractions.Fraction(1, 8000)
            self.n += 1
            return frame

    ng = Ng(tuple([args.ng.rsplit(":", 1)[0], int(args.ng.rsplit(":", 1)[1])]))
    out = {"ok": False, "mode": args.mode}
    problems = []
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b.bind(("127.0.0.1", 0))
    b.setblocking(False)
    call_id = "dtls-%d-%s" % (os.getpid(), args.mode)

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    got_a = {"frames": 0, "tone": 0}
    state = {"dtls": None}

    pc.addTrack(Tone(440))

    @pc.on("track")
    def on_track(track):
        async def pull():
            while True:
                try:
                    frame = await track.recv()
                except Exception:
                    return
                got_a["frames"] += 1
                # Packed (interleaved) samples: keep the first channel.
                ch = max(1, len(frame.layout.channels))
                raw = bytes(frame.planes[0])[: frame.samples * ch * 2]
                pcm = list(struct.unpack("<%dh" % (len(raw) // 2), raw))[::ch]
                if tone_share(pcm, frame.sample_rate, 1000) > 0.5:
                    got_a["tone"] += 1

        asyncio.ensure_future(pull())

    await pc.setLocalDescription(await pc.createOffer())
    offer_a = pc.localDescription.sdp
    if args.mode == "wrong-fingerprint":
        offer_a = corrupt_fingerprint(offer_a)
    r = ng(command="offer", call_id=call_id, from_tag="A-tag", sdp=offer_a.encode(), flags=[])
    if r.get("result") != b"ok":
        out["offer"] = {k: str(v) for k, v in r.items()}
        print(json.dumps(out))
        return 1
    relay_b, offered = scan_b(r["sdp"])
    out["offer_to_b_suites"] = [s for _, s, _ in offered]
    out["offer_to_b_has_fingerprint"] = b"a=fingerprint" in r["sdp"]
    suite = args.suite_b
    key_b = os.urandom(PROFILES[suite][1])
    answer_b, tag = b_sdp_answer(b.getsockname()[1], r["sdp"], suite, key_b)
    if tag is None:
        problems.append("relay did not offer %s to B" % suite)
    relay_key_for_b = [k for t, s, k in offered if t == tag][0] if tag else b""
    r = ng(command="answer", call_id=call_id, from_tag="A-tag", to_tag="B-tag", sdp=answer_b, flags=[])
    if r.get("result") != b"ok":
        out["answer"] = {k: str(v) for k, v in r.items()}
        print(json.dumps(out))
        return 1
    answer_a = r["sdp"].decode()
    out["answer_to_a"] = [l for l in answer_a.splitlines() if l.startswith(("m=", "a=setup", "a=fingerprint", "a=ice-lite", "a=candidate", "a=rtcp-mux", "a=tls-id"))]
    out["answer_to_a_has_crypto"] = "a=crypto" in answer_a

    @pc.on("connectionstatechange")
    def on_state():
        state["dtls"] = pc.connectionState

    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer_a, type="answer"))

    tx_b = session(suite, key_b, True)
    rx_b = session(suite, relay_key_for_b, False)
    got_b = {"packets": 0, "tone": 0, "bad": 0, "rtcp": 0}
    sent_b = 0
    loop = asyncio.get_running_loop()
    end = time.time() + args.secs
    ssrc = 0x0B0B0B0B
    t0 = time.time()
    while time.time() < end:
        # B sends 20 ms of 1 kHz PCMU.
        payload = bytes(
            ulaw_encode(int(12000 * math.sin(2 * math.pi * 1000 * (sent_b * 160 + i) / 8000)))
            for i in range(160)
        )
        if pc.connectionState == "connected" or args.mode != "ok":
            b.sendto(tx_b.protect(rtp(ssrc, sent_b, payload)), tuple(relay_b))
            sent_b += 1
        while True:
            try:
                data = b.recv(4096)
            except BlockingIOError:
                break
            if len(data) > 1 and 192 <= data[1] <= 223:
                # SRTCP (RFC 5761 demux): the relay re-protected A's reports for B.
                try:
                    rx_b.unprotect_rtcp(data)
                    got_b["rtcp"] += 1
                except Exception:
                    got_b["bad"] += 1
                continue
            try:
                p = rx_b.unprotect(data)
            except Exception:
                got_b["bad"] += 1
                continue
            if len(p) > 12 and (p[1] & 0x7F) < 64:
                got_b["packets"] += 1
                cc = p[0] & 0x0F
                ext = 0
                if p[0] & 0x10:
                    ext = 4 + 4 * struct.unpack("!H", p[14 + 4 * cc : 16 + 4 * cc])[0]
                body = p[12 + 4 * cc + ext :]
                samples = [ulaw_decode(x) for x in body]
                if (p[1] & 0x7F) == 0 and tone_share(samples, 8000, 440) > 0.5:
                    got_b["tone"] += 1
        await asyncio.sleep(max(0.0, t0 + sent_b * 0.02 - time.time()) if sent_b else 0.02)
    out["state_a"] = pc.connectionState
    out["sent_b"] = sent_b
    out["got_a"] = got_a
    out["got_b"] = got_b
    q = ng(command="query", call_id=call_id)
    out["query"] = q.get("result", b"").decode()
    if args.mode == "ok":
        if got_a["tone"] < 25:
            problems.append("A received too little of B's tone")
        if got_b["tone"] < 25:
            problems.append("B received too little of A's tone")
        if got_b["bad"]:
            problems.append("B got packets that failed SRTP")
        d = ng(command="delete", call_id=call_id)
        out["delete"] = d.get("result", b"").decode()
    else:
        if got_b["packets"] or got_a["frames"]:
            problems.append("media crossed a refused leg")
        if out["query"] == "ok":
            problems.append("call still exists")
    await pc.close()
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
    ap.add_argument("--suite-b", default="AES_CM_128_HMAC_SHA1_80")
    ap.add_argument("--secs", type=float, default=3.0)
    ap.add_argument("--wrong-fingerprint", dest="mode", action="store_const", const="wrong-fingerprint")
    ap.add_argument("--silent", dest="mode", action="store_const", const="silent")
    ap.add_argument("--expect-gone-within", type=float, default=12.0)
    ap.set_defaults(mode="ok")
    args = ap.parse_args()
    if args.mode == "silent":
        return silent(args)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
