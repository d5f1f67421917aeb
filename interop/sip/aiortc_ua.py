#!/usr/bin/env python3
"""A SIP-over-TLS user agent whose media is aiortc (PyPI): DTLS-SRTP + ICE, for the B2BUA tests.

aiortc is an independent DTLS-SRTP stack (its own ECDSA certificate, DTLS, SRTP and ICE), so it
exercises srtp-edge's DTLS legs the way a WebRTC gateway or a DTLS-keyed SIP trunk would. The SIP
side is the minimum a user agent needs for one call over one TLS connection: INVITE/200/ACK/BYE
as caller, or 200/ACK/BYE as callee (Debian's baresip 1.0 cannot be the DTLS peer: it signs DTLS
with an RSA certificate, see tests/b2bua_baresip_keying.rs).

  --call sip:user@host:port --connect host:port --ca ca.pem      caller (UAC)
  --listen host:port --cert cert.pem --key key.pem               callee (UAS), one call

Sends `--hz` from a PCMU track, counts received frames and frames carrying `--listen-hz`, and
prints one JSON object: {"role", "status", "connection", "offer_proto", "peer_proto", "frames",
"tone"}. Every wait is bounded; exit code 0 when a call was set up and torn down.
"""
import argparse
import asyncio
import json
import os
import re
import secrets
import ssl
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ng"))
from dtls_call import WebRtcPeer  # noqa: E402


async def read_msg(reader, limit):
    """One SIP message (head, body) from the stream, or None at EOF/timeout."""
    try:
        head = b""
        while not head.strip():
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), limit)
        m = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
        n = int(m.group(1)) if m else 0
        body = await asyncio.wait_for(reader.readexactly(n), limit) if n else b""
        return head.decode(errors="replace").lstrip("\r\n"), body
    except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        return None


def header(head, name):
    for line in head.split("\r\n")[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == name.lower():
            return v.strip()
    return None


def headers(head, name):
    return [l.partition(":")[2].strip() for l in head.split("\r\n")[1:]
            if l.partition(":")[0].strip().lower() == name.lower()]


def proto_of(sdp):
    m = re.search(r"(?m)^m=audio \d+ (\S+)", sdp if isinstance(sdp, str) else sdp.decode())
    return m.group(1) if m else None


def msg(first, hdrs, body=b""):
    lines = [first] + [f"{k}: {v}" for k, v in hdrs] + [f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode() + body


def uri_in(name_addr):
    m = re.search(r"<([^>]+)>", name_addr or "")
    return m.group(1) if m else (name_addr or "").split(";")[0]


async def media(peer, secs):
    await asyncio.sleep(secs)


async def caller(args, peer):
    ctx = ssl.create_default_context(cafile=args.ca)
    ctx.check_hostname = False
    host, port = args.connect.rsplit(":", 1)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port), ssl=ctx), 10)
    local = "%s:%d" % writer.get_extra_info("sockname")[:2]
    offer = await peer.offer()
    tag, cid = secrets.token_hex(6), secrets.token_hex(10) + "@aiortc"
    frm = f"<sip:aiortc@127.0.0.1>;tag={tag}"
    base = [("Max-Forwards", "70"), ("From", frm)]
    writer.write(msg(f"INVITE {args.call} SIP/2.0", [
        ("Via", f"SIP/2.0/TLS {local};branch=z9hG4bK{secrets.token_hex(8)}"), *base,
        ("To", f"<{args.call}>"), ("Call-ID", cid), ("CSeq", "1 INVITE"),
        ("Contact", f"<sip:aiortc@{local};transport=tls>"), ("Content-Type", "application/sdp"),
    ], offer))
    await writer.drain()
    out = {"role": "caller", "offer_proto": proto_of(offer), "status": None}
    while True:
        got = await read_msg(reader, 20)
        if got is None:
            return out, False
        head, body = got
        status = int(head.split(" ", 2)[1]) if head.startswith("SIP/2.0") else None
        if status is None or status < 200:
            continue
        out["status"] = status
        break
    if out["status"] != 200:
        return out, False
    to = header(head, "To")
    target = uri_in(header(head, "Contact")) or args.call
    ack = lambda seq, method: msg(f"{method} {target} SIP/2.0", [  # noqa: E731
        ("Via", f"SIP/2.0/TLS {local};branch=z9hG4bK{secrets.token_hex(8)}"), *base,
        ("To", to), ("Call-ID", cid), ("CSeq", f"{seq} {method}")])
    writer.write(ack(1, "ACK"))
    await writer.drain()
    out["peer_proto"] = proto_of(body)
    await peer.take_answer(body)
    await media(peer, args.secs)
    out["connection"] = peer.pc.connectionState
    writer.write(ack(2, "BYE"))
    await writer.drain()
    bye_ok = False
    while True:
        got = await read_msg(reader, 10)
        if got is None:
            break
        if got[0].startswith("SIP/2.0 200") and "BYE" in (header(got[0], "CSeq") or ""):
            bye_ok = True
            break
    writer.close()
    return out, bye_ok


async def callee(args, peer):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    done = asyncio.get_running_loop().create_future()
    out = {"role": "callee", "status": None}

    async def serve(reader, writer):
        tag = secrets.token_hex(6)
        answered = False
        while not done.done():
            got = await read_msg(reader, args.secs + 30)
            if got is None:
                break
            head, body = got
            if head.startswith("SIP/2.0"):
                continue
            method = head.split(" ", 1)[0]
            reply_hdrs = [("Via", v) for v in headers(head, "Via")] + [
                ("From", header(head, "From")),
                ("To", header(head, "To") + ("" if ";tag=" in header(head, "To") else f";tag={tag}")),
                ("Call-ID", header(head, "Call-ID")), ("CSeq", header(head, "CSeq"))]
            if method == "INVITE" and not answered:
                answered = True
                out["offer_proto"] = proto_of(body)
                answer = await peer.answer(body)
                out["peer_proto"] = proto_of(answer)
                local = "%s:%d" % writer.get_extra_info("sockname")[:2]
                writer.write(msg("SIP/2.0 200 OK", reply_hdrs + [
                    ("Contact", f"<sip:aiortc@{local};transport=tls>"),
                    ("Content-Type", "application/sdp")], answer))
                out["status"] = 200
            elif method == "BYE":
                writer.write(msg("SIP/2.0 200 OK", reply_hdrs))
                out["connection"] = peer.pc.connectionState
                await writer.drain()
                done.set_result(True)
            elif method not in ("ACK",):
                writer.write(msg("SIP/2.0 200 OK", reply_hdrs))
            await writer.drain()
        writer.close()

    host, port = args.listen.rsplit(":", 1)
    server = await asyncio.start_server(serve, host, int(port), ssl=ctx)
    print("listening", flush=True, file=sys.stderr)
    try:
        await asyncio.wait_for(done, args.secs + 60)
        ok = True
    except asyncio.TimeoutError:
        ok = False
    server.close()
    return out, ok


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--call")
    ap.add_argument("--connect")
    ap.add_argument("--ca")
    ap.add_argument("--listen")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--hz", type=float, default=440.0)
    ap.add_argument("--listen-hz", type=float, default=1000.0)
    ap.add_argument("--secs", type=float, default=6.0)
    args = ap.parse_args()
    peer = WebRtcPeer(args.hz, args.listen_hz)
    try:
        if args.call:
            out, ok = await caller(args, peer)
        else:
            out, ok = await callee(args, peer)
    finally:
        out_frames = dict(peer.got)
        await peer.pc.close()
    out.update(out_frames)
    out["ok"] = ok
    print(json.dumps(out), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
