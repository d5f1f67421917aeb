#!/usr/bin/env python3
"""A Pipecat-style voice backend for srtp-edge's agent-mode test: a TLS WebSocket server
(PyPI `websockets`) that handles each connection the way a Pipecat bot behind a Twilio Media
Streams endpoint does, with Pipecat's own code (PyPI `pipecat-ai`):

- `pipecat.runner.utils.parse_telephony_websocket` reads the first messages and must detect
  transport `twilio` and find the stream and call ids in our `start`;
- `pipecat.serializers.twilio.TwilioFrameSerializer.deserialize` turns our `media` messages into
  `InputAudioRawFrame`s (μ-law 8 kHz → 16-bit PCM resampled to 16 kHz by Pipecat);
- `TwilioFrameSerializer.serialize` turns the bot's `OutputAudioRawFrame`s (a tone, 16 kHz PCM,
  20 ms each, paced at real time) into the `media` messages we play into the call.

It prints `PORT <n>` once listening, then one JSON summary line per connection when it closes.

    pipecat_backend.py --cert server.pem --key server.key [--tone 1000] [--hangup-after S]
"""
import argparse
import asyncio
import base64
import json
import math
import ssl
import struct
import sys
import time
import types

from websockets.asyncio.server import serve

from pipecat.frames.frames import InputAudioRawFrame, OutputAudioRawFrame
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer

RATE = 16000


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


class StarletteLike:
    """The part of a Starlette WebSocket that parse_telephony_websocket uses."""

    def __init__(self, ws):
        self.ws = ws

    async def _texts(self):
        async for m in self.ws:
            if isinstance(m, str):
                yield m

    def iter_text(self):
        return self._texts()


async def talk(ws, ser, args, rec):
    """The bot talks: --tone as 20 ms OutputAudioRawFrames, serialized by Pipecat."""
    n = 0
    start = time.monotonic()
    while True:
        pcm = b"".join(
            struct.pack("<h", int(12000 * math.sin(2 * math.pi * args.tone * (n + i) / RATE)))
            for i in range(RATE // 50)
        )
        n += RATE // 50
        frame = OutputAudioRawFrame(audio=pcm, sample_rate=RATE, num_channels=1)
        out = await ser.serialize(frame)
        if out:
            # Pipecat's stream resampler hands out audio in ~100 ms batches.
            await ws.send(out)
            rec["frames_out"] += 1
            payload = json.loads(out)["media"]["payload"]
            rec["ulaw_bytes_out"] += len(base64.b64decode(payload))
        ahead = n / RATE - (time.monotonic() - start) - 0.5
        if ahead > 0:
            await asyncio.sleep(ahead)


async def handler(ws, args):
    rec = {"transport": None, "frames_in": 0, "frames_out": 0, "ulaw_bytes_out": 0, "other": 0,
           "events": []}
    pcm = []
    tasks = []
    t0 = time.monotonic()
    try:
        transport, call = await parse_telephony_websocket(StarletteLike(ws))
        rec["parsed_after_s"] = round(time.monotonic() - t0, 3)
        rec["transport"] = transport
        rec["stream_id"] = call.get("stream_id")
        rec["call_id"] = call.get("call_id")
        rec["body"] = call.get("body")
        ser = TwilioFrameSerializer(
            stream_sid=call.get("stream_id"),
            params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
        )
        await ser.setup(types.SimpleNamespace(audio_in_sample_rate=RATE))
        rec["ready_after_s"] = round(time.monotonic() - t0, 3)
        if args.tone:
            tasks.append(asyncio.create_task(talk(ws, ser, args, rec)))
        if args.hangup_after:
            async def hang_up():
                await asyncio.sleep(args.hangup_after)
                rec["hung_up"] = True
                await ws.close(1000)
            tasks.append(asyncio.create_task(hang_up()))
        async for msg in ws:
            if isinstance(msg, str):
                ev = json.loads(msg).get("event")
                if not rec["events"] or rec["events"][-1] != ev:
                    rec["events"].append(ev)
            frame = await ser.deserialize(msg)
            if isinstance(frame, InputAudioRawFrame):
                rec["frames_in"] += 1
                rec["rate_in"] = frame.sample_rate
                pcm.extend(x[0] for x in struct.iter_unpack("<h", frame.audio))
            elif frame is not None:
                rec["other"] += 1
    except Exception as e:  # a broken peer must still produce a summary line
        rec["error"] = repr(e)
    for t in tasks:
        t.cancel()
    rec["close_code"] = ws.close_code
    rec["open_s"] = round(time.monotonic() - t0, 3)
    rec["secs_in"] = round(len(pcm) / RATE, 3)
    rec["secs_out"] = round(rec["ulaw_bytes_out"] / 8000, 3)
    tail = pcm[len(pcm) // 4:]
    rec["tone_db"] = {str(f): round(purity_db(tail, RATE, f), 3) for f in args.freqs}
    print(json.dumps(rec), flush=True)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--tone", type=float, default=0.0)
    ap.add_argument("--hangup-after", type=float, default=0.0)
    ap.add_argument("--freqs", default="440,1000")
    args = ap.parse_args()
    args.freqs = [int(float(f)) for f in args.freqs.split(",")]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    async with serve(lambda ws: handler(ws, args), "127.0.0.1", args.port, ssl=ctx,
                     max_size=1 << 20) as server:
        print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
