#!/usr/bin/env python3
"""An AI voice backend for srtp-edge's fork tests: a TLS WebSocket server (PyPI `websockets`)
speaking Twilio Media Streams or L16, written independently of srtp-edge's Rust code.

It prints `PORT <n>` once listening, then one JSON summary line per connection when it closes:
what it received (TLS version, headers checked, message sequence, audio statistics, marks,
close code). It also plays audio back, with marks and a clear, so the test can check playout.

    backend.py --cert server.pem --key server.key --mode twilio|l16 [--rate 16000]
               [--token T] [--secret S --url wss://...] [--max-tls12]
               [--freqs 600,1000] [--no-playback] [--stall-after N --stall-secs S]
               [--tone HZ] [--hangup-after S [--hangup-with close|stop]]

--freqs adds `track_tone_db` (per track, purity of each frequency) and `track_frames`;
--no-playback sends nothing back (a `<Start><Stream>`-style fork consumer); --stall-after N stops
reading for S seconds after the N-th media message (a backend that does not keep up);
--tone HZ plays a continuous tone back (instead of the scripted ramp/marks), paced at real time
(a voice agent talking); --hangup-after S ends the stream S seconds after `start` (twilio: close
1000, or with --hangup-with stop a `stop` event first, leaving the close to the relay; l16:
`{"type":"disconnect"}`), as an agent that hangs up.
"""
import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import math
import ssl
import struct
import sys
import time

from websockets.asyncio.server import serve


def ulaw_decode(u):
    u = ~u & 0xFF
    t = ((u & 0x0F) << 3) + 0x84
    t <<= (u & 0x70) >> 4
    return (0x84 - t) if (u & 0x80) else (t - 0x84)


def purity_db(samples, rate, freq):
    """Power at `freq` relative to the total (Goertzel), dB; near 0 for a clean tone."""
    if not samples:
        return -999.0
    w = 2 * math.pi * freq / rate
    c = 2 * math.cos(w)
    s1 = s2 = 0.0
    total = 0.0
    for x in samples:
        s = x + c * s1 - s2
        s2, s1 = s1, s
        total += x * x
    tone = (s1 * s1 + s2 * s2 - c * s1 * s2) * 2 / len(samples)
    if total == 0 or tone <= 0:
        return -999.0
    return 10 * math.log10(tone / total)


def ulaw_encode(x):
    """G.711 mu-law of one 16-bit sample (the ITU-T reference algorithm)."""
    sign = 0x80 if x < 0 else 0
    x = min(abs(x), 32635) + 0x84
    exp = 7
    mask = 0x4000
    while exp > 0 and not (x & mask):
        exp -= 1
        mask >>= 1
    mant = (x >> (exp + 3)) & 0x0F
    return ~(sign | (exp << 4) | mant) & 0xFF


def tone_l16(rate, freq, seconds, amp=8000):
    n = int(rate * seconds)
    return b"".join(
        struct.pack("<h", int(amp * math.sin(2 * math.pi * freq * i / rate))) for i in range(n)
    )


class Recorder:
    def __init__(self, args, ws):
        self.args = args
        self.ws = ws
        ssl_obj = ws.transport.get_extra_info("ssl_object")
        h = ws.request.headers
        self.url = args.url.replace("{port}", str(ws.local_address[1]))
        self.rec = {
            "path": ws.request.path,
            "tls": ssl_obj.version() if ssl_obj else None,
            "auth_ok": h.get("Authorization") == f"Bearer {args.token}" if args.token else
            ("Authorization" not in h),
            "sig_ok": None,
            "custom_header": h.get("X-Tenant"),
            "events": [],
            "seq_ok": True,
            "chunk_ok": True,
            "media": {},
            "payload_lens": [],
            "binary_lens": [],
            "marks": [],
            "close_code": None,
        }
        if args.secret:
            want = base64.b64encode(
                hmac.new(args.secret.encode(), self.url.encode(), hashlib.sha1).digest()
            ).decode()
            self.rec["sig_ok"] = h.get("X-Twilio-Signature") == want
        self.seq = 0
        self.chunks = {}
        self.pcm = []
        self.track_pcm = {}
        self.marks = {}
        self.t0 = time.monotonic()

    def event(self, name):
        ev = self.rec["events"]
        if not (ev and ev[-1] == name and name == "media"):
            ev.append(name)

    async def wait_mark(self, name, timeout=5.0):
        end = time.monotonic() + timeout
        while name not in self.marks and time.monotonic() < end:
            await asyncio.sleep(0.01)
        return self.marks.get(name)


async def twilio_playback(r):
    ws = r.ws
    sid = "MZ" + "0" * 32

    def media(b):
        return json.dumps({"event": "media", "streamSid": sid,
                           "media": {"payload": base64.b64encode(b).decode()}})

    def mark(n):
        return json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": n}})

    ramp = bytes((k * 7 + 3) % 251 for k in range(2400))
    sent = time.monotonic()
    await ws.send(media(ramp[:1600]))
    await ws.send(mark("m1"))
    for a, b in ((1600, 1900), (1900, 2333), (2333, 2400)):
        await ws.send(media(ramp[a:b]))
    await ws.send(mark("m2"))
    t1 = await r.wait_mark("m1")
    t2 = await r.wait_mark("m2")
    r.rec["m1_after_ms"] = None if t1 is None else int((t1 - sent) * 1000)
    r.rec["m2_after_ms"] = None if t2 is None else int((t2 - sent) * 1000)
    await ws.send(media(bytes([0x55]) * 16000))
    await ws.send(mark("m3"))
    await ws.send(mark("m4"))
    await asyncio.sleep(0.2)
    cleared = time.monotonic()
    await ws.send(json.dumps({"event": "clear", "streamSid": sid}))
    t3 = await r.wait_mark("m4")
    r.rec["clear_echo_ms"] = None if t3 is None else int((t3 - cleared) * 1000)
    r.rec["playback_done"] = True


async def l16_playback(r):
    ws = r.ws
    rate = r.args.rate
    t = tone_l16(rate, 500, 0.5)
    await ws.send(t[:7001])
    await ws.send(t[7001:])
    await ws.send(json.dumps({"type": "mark", "data": {"name": "a"}}))
    await r.wait_mark("a")
    await ws.send(tone_l16(rate, 500, 2.0))
    await ws.send(json.dumps({"type": "mark", "data": {"name": "b"}}))
    await asyncio.sleep(0.2)
    await ws.send(json.dumps({"action": "clear"}))
    await r.wait_mark("b")
    await asyncio.sleep(0.3)
    await ws.send(json.dumps({"type": "disconnect"}))
    r.rec["playback_done"] = True


async def tone_playback(r):
    """Plays --tone in 1 s chunks, keeping about 1 s queued ahead at the relay."""
    ws, args = r.ws, r.args
    sid = "MZ" + "0" * 32
    rate = 8000 if args.mode == "twilio" else args.rate
    t = 0
    start = time.monotonic()
    while True:
        pcm = [int(12000 * math.sin(2 * math.pi * args.tone * (t + i) / rate)) for i in range(rate)]
        t += rate
        if args.mode == "twilio":
            payload = base64.b64encode(bytes(ulaw_encode(x) for x in pcm)).decode()
            await ws.send(json.dumps({"event": "media", "streamSid": sid,
                                      "media": {"payload": payload}}))
        else:
            await ws.send(b"".join(struct.pack("<h", x) for x in pcm))
        r.rec["tone_sent_s"] = t // rate
        # Stay one second ahead of real time.
        ahead = (t / rate) - (time.monotonic() - start) - 1.0
        await asyncio.sleep(max(0.0, ahead))


async def hangup_later(r):
    await asyncio.sleep(r.args.hangup_after)
    r.rec["hung_up"] = True
    if r.args.mode == "twilio" and r.args.hangup_with == "stop":
        await r.ws.send(json.dumps({"event": "stop", "streamSid": "MZ" + "0" * 32}))
    elif r.args.mode == "twilio":
        await r.ws.close(1000)
    else:
        await r.ws.send(json.dumps({"type": "disconnect"}))


def start_playback(r):
    tasks = []
    if r.args.tone:
        tasks.append(asyncio.create_task(tone_playback(r)))
    elif not r.args.no_playback:
        play = twilio_playback if r.args.mode == "twilio" else l16_playback
        tasks.append(asyncio.create_task(play(r)))
    if r.args.hangup_after:
        tasks.append(asyncio.create_task(hangup_later(r)))
    return tasks


async def handler(ws, args):
    r = Recorder(args, ws)
    tasks = []
    try:
        async for msg in ws:
            if isinstance(msg, bytes):
                r.event("binary")
                r.rec["binary_lens"].append(len(msg))
                r.pcm.extend(x[0] for x in struct.iter_unpack("<h", msg[: len(msg) // 2 * 2]))
                continue
            m = json.loads(msg)
            ev = m.get("event") or m.get("type")
            r.event(ev)
            if "sequenceNumber" in m:
                s = int(m["sequenceNumber"])
                if s != r.seq + 1:
                    r.rec["seq_ok"] = False
                r.seq = s
            if ev == "start":
                r.rec["start"] = m
                tasks = start_playback(r)
            elif ev == "websocket:connected":
                r.rec["preamble"] = m
                tasks = start_playback(r)
            elif ev == "media":
                md = m["media"]
                tr = md["track"]
                c = int(md["chunk"])
                if c != r.chunks.get(tr, 0) + 1 or int(md["timestamp"]) != (c - 1) * 20:
                    r.rec["chunk_ok"] = False
                r.chunks[tr] = c
                r.rec["media"][tr] = r.rec["media"].get(tr, 0) + 1
                p = base64.b64decode(md["payload"])
                if len(p) not in r.rec["payload_lens"]:
                    r.rec["payload_lens"].append(len(p))
                if tr == "inbound":
                    r.pcm.extend(ulaw_decode(b) for b in p)
                r.track_pcm.setdefault(tr, []).extend(ulaw_decode(b) for b in p)
                total = sum(r.rec["media"].values())
                if args.stall_after and total == args.stall_after:
                    r.rec["stalled_s"] = args.stall_secs
                    await asyncio.sleep(args.stall_secs)
            elif ev == "dtmf":
                r.rec.setdefault("dtmf", []).append(m.get("dtmf"))
            elif ev == "mark":
                name = (m.get("mark") or m.get("data"))["name"]
                r.marks[name] = time.monotonic()
                r.rec["marks"].append([name, (m.get("data") or {}).get("event")])
            elif ev == "stop":
                r.rec["stop"] = m
    except Exception as e:  # a broken client must still produce a summary line
        r.rec["error"] = repr(e)
    for task in tasks:
        task.cancel()
    r.rec["close_code"] = ws.close_code
    rate = 8000 if args.mode == "twilio" else args.rate
    tail = r.pcm[len(r.pcm) // 4:]
    r.rec["inbound_samples"] = len(r.pcm)
    r.rec["tone_1k_db"] = round(purity_db(tail, rate, 1000.0), 3)
    if args.freqs:
        freqs = [float(f) for f in args.freqs.split(",")]
        if args.mode == "l16":
            # The caller's track as L16 at the backend's rate, checked by frequency.
            r.rec["l16_tone_db"] = {str(int(f)): round(purity_db(tail, rate, f), 3) for f in freqs}
        r.rec["track_frames"] = {t: len(x) // 160 for t, x in r.track_pcm.items()}
        r.rec["track_tone_db"] = {
            t: {str(int(f)): round(purity_db(x, 8000, f), 3) for f in freqs}
            for t, x in r.track_pcm.items()
        }
    print(json.dumps(r.rec), flush=True)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--mode", choices=["twilio", "l16"], default="twilio")
    ap.add_argument("--rate", type=int, default=16000)
    ap.add_argument("--token")
    ap.add_argument("--secret")
    ap.add_argument("--url", default="", help="signed URL; {port} is replaced by ours")
    ap.add_argument("--max-tls12", action="store_true")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--freqs", default="")
    ap.add_argument("--no-playback", action="store_true")
    ap.add_argument("--stall-after", type=int, default=0)
    ap.add_argument("--stall-secs", type=float, default=10.0)
    ap.add_argument("--tone", type=float, default=0.0)
    ap.add_argument("--hangup-after", type=float, default=0.0)
    ap.add_argument("--hangup-with", choices=["close", "stop"], default="close")
    args = ap.parse_args()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    if args.max_tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    else:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    async with serve(lambda ws: handler(ws, args), "127.0.0.1", args.port, ssl=ctx,
                     max_size=1 << 20) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
