#!/usr/bin/env python3
"""A SIP-over-TLS user agent whose media is aiortc (PyPI): DTLS-SRTP + ICE, for the B2BUA tests.

aiortc is an independent DTLS-SRTP stack (its own ECDSA certificate, DTLS, SRTP and ICE), so it
exercises srtp-edge's DTLS legs the way a WebRTC gateway or a DTLS-keyed SIP trunk would. The SIP
side is the minimum a user agent needs for one call over one TLS connection: INVITE/200/ACK/BYE
as caller, or 200/ACK/BYE as callee (Debian's baresip 1.0 cannot be the DTLS peer: it signs DTLS
with an RSA certificate, see tests/b2bua_baresip_keying.rs).

  --call sip:user@host:port --connect host:port --ca ca.pem      caller (UAC)
  --listen host:port --cert cert.pem --key key.pem               callee (UAS), one call
  --call ... --sdes-rekey      caller keyed with SDES instead (libsrtp via PyPI pylibsrtp): half
                               way through it re-INVITEs with a new key and sends with it; it
                               reports the tone it decrypted before and after, and whether
                               srtp-edge's key to it stayed the same (RFC 4568 7.1.4)
  --sdes-rekey --hold          and then puts the call on hold (re-INVITE a=sendonly, same key)
                               and resumes it (a=sendrecv): reports the tone heard while held
                               ("heard_hold", from 0.2 s after the 200 on) and after the resume

Sends `--hz` from a PCMU track, counts received frames and frames carrying `--listen-hz`, and
prints one JSON object: {"role", "status", "connection", "offer_proto", "peer_proto", "frames",
"tone"}. Every wait is bounded; exit code 0 when a call was set up and torn down.
"""
import argparse
import asyncio
import json
import math
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


async def sdes_caller(args):
    """The caller keyed with SDES; re-keys half way through the call."""
    import base64
    import socket
    import struct
    import time

    from dtls_call import tone_share, ulaw_decode, ulaw_encode
    from libsrtp_call import rtp, scan, sdp as sdes_sdp, session

    suite = "AES_CM_128_HMAC_SHA1_80"
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    port = udp.getsockname()[1]
    keys = [os.urandom(30), os.urandom(30)]
    ctx = ssl.create_default_context(cafile=args.ca)
    ctx.check_hostname = False
    host, sport = args.connect.rsplit(":", 1)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(sport), ssl=ctx), 10)
    local = "%s:%d" % writer.get_extra_info("sockname")[:2]
    tag, cid = secrets.token_hex(6), secrets.token_hex(10) + "@sdes"
    out = {"role": "sdes-caller", "status": None}
    state = {"to": None, "target": args.call}

    async def transaction(seq, body):
        hdrs = [("Via", f"SIP/2.0/TLS {local};branch=z9hG4bK{secrets.token_hex(8)}"),
                ("Max-Forwards", "70"), ("From", f"<sip:sdes@127.0.0.1>;tag={tag}"),
                ("To", state["to"] or f"<{args.call}>"), ("Call-ID", cid),
                ("CSeq", f"{seq} INVITE"), ("Contact", f"<sip:sdes@{local};transport=tls>"),
                ("Content-Type", "application/sdp")]
        writer.write(msg(f"INVITE {state['target']} SIP/2.0", hdrs, body))
        await writer.drain()
        while True:
            got = await read_msg(reader, 20)
            if got is None:
                return None, None
            head, rbody = got
            if not head.startswith("SIP/2.0"):
                continue
            status = int(head.split(" ", 2)[1])
            if status >= 200:
                break
        if status == 200:
            state["to"] = header(head, "To")
            state["target"] = uri_in(header(head, "Contact")) or state["target"]
        writer.write(msg(f"ACK {state['target']} SIP/2.0", [
            ("Via", f"SIP/2.0/TLS {local};branch=z9hG4bK{secrets.token_hex(8)}"),
            ("Max-Forwards", "70"), ("From", f"<sip:sdes@127.0.0.1>;tag={tag}"),
            ("To", state["to"] or header(head, "To")), ("Call-ID", cid), ("CSeq", f"{seq} ACK")]))
        await writer.drain()
        return status, rbody

    status, answer = await transaction(1, sdes_sdp(port, [(1, suite, keys[0])], 1))
    out["status"] = status
    if status != 200:
        return out, False
    relay, cryptos, _ = scan(answer)
    edge_keys = [cryptos[0][2]] if cryptos else []
    tx, rx = session(suite, keys[0], True), session(suite, edge_keys[0], False)
    ssrc, seq, n = 0x5DE5C0DE, 1, 0
    heard = [0, 0, 0, 0]
    start = time.time()
    rekeyed = None
    # With --hold: re-key at 30 %, hold at 55 %, resume at 80 % of the call.
    at_rekey = 0.3 if args.hold else 0.5
    held = resumed = None
    while time.time() - start < args.secs:
        phase = 3 if resumed else 2 if held else 1 if rekeyed else 0
        pcm = [int(12000 * math.sin(2 * math.pi * args.hz * (n * 160 + i) / 8000)) for i in range(160)]
        udp.sendto(tx.protect(rtp(ssrc, seq, bytes(ulaw_encode(x) for x in pcm))), relay)
        seq, n = seq + 1, n + 1
        while True:
            try:
                data = udp.recv(2048)
            except BlockingIOError:
                break
            if len(data) < 12 or data[1] & 0x7F >= 72:
                continue
            try:
                plain = rx.unprotect(data)
            except Exception:
                continue
            samples = [ulaw_decode(b) for b in plain[12:]]
            if tone_share(samples, 8000, args.listen_hz) > 0.5:
                if phase != 2 or time.time() - held > 0.2:
                    heard[phase] += 1
        if args.hold and rekeyed and held is None and time.time() - start >= args.secs * 0.55:
            hold = sdes_sdp(port, [(1, suite, keys[1])], 1).replace(b"a=sendrecv", b"a=sendonly")
            status, answer = await transaction(3, hold)
            out["hold_status"] = status
            out["hold_answer_dir"] = re.findall(r"(?m)^a=(sendrecv|sendonly|recvonly|inactive)",
                                                (answer or b"").decode())
            held = time.time()
        if held and resumed is None and time.time() - start >= args.secs * 0.8:
            status, _ = await transaction(4, sdes_sdp(port, [(1, suite, keys[1])], 1))
            out["resume_status"] = status
            resumed = time.time()
        if rekeyed is None and time.time() - start >= args.secs * at_rekey:
            # Re-INVITE with a new key; send with it from the answer on.
            status, answer = await transaction(2, sdes_sdp(port, [(1, suite, keys[1])], 1))
            out["rekey_status"] = status
            if status != 200:
                break
            _, cryptos, _ = scan(answer)
            edge_keys.append(cryptos[0][2] if cryptos else b"")
            tx = session(suite, keys[1], True)
            if edge_keys[1] != edge_keys[0]:
                rx = session(suite, edge_keys[1], False)
            rekeyed = time.time()
        await asyncio.sleep(max(0.0, start + n * 0.02 - time.time()))
    out["heard_before"], out["heard_after"], out["heard_hold"], out["heard_resumed"] = heard
    out["edge_key_kept"] = len(edge_keys) == 2 and edge_keys[0] == edge_keys[1]
    writer.write(msg(f"BYE {state['target']} SIP/2.0", [
        ("Via", f"SIP/2.0/TLS {local};branch=z9hG4bK{secrets.token_hex(8)}"),
        ("Max-Forwards", "70"), ("From", f"<sip:sdes@127.0.0.1>;tag={tag}"),
        ("To", state["to"]), ("Call-ID", cid), ("CSeq", "9 BYE")]))
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
    udp.close()
    return out, bye_ok and rekeyed is not None


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
            if method == "INVITE":
                # The call, or a re-INVITE (re-offer) in it: answered by the same peer connection.
                if not answered:
                    out["offer_proto"] = proto_of(body)
                else:
                    out["reoffers"] = out.get("reoffers", 0) + 1
                answered = True
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
    ap.add_argument("--sdes-rekey", action="store_true")
    ap.add_argument("--hold", action="store_true")
    args = ap.parse_args()
    if args.sdes_rekey:
        out, ok = await sdes_caller(args)
        out["ok"] = ok
        print(json.dumps(out), flush=True)
        return 0 if ok else 1
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
