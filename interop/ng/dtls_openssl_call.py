#!/usr/bin/env python3
"""A DTLS-SRTP leg keyed by `openssl s_client` (DTLS 1.2, use_srtp) bridged to an SDES leg.

Peer A offers UDP/TLS/RTP/SAVP with the fingerprint of a certificate openssl made and
`a=setup:active`; after the ng answer, `openssl s_client -dtls1_2 -use_srtp PROFILE
-keymatexport EXTRACTOR-dtls_srtp` handshakes with srtp-edge's leg and prints the exported
keying material. A's media is then sent and received by a pylibsrtp session keyed with the
client half (send) and the server half (receive) of that material (RFC 5764 section 4.2). Peer B
is a pylibsrtp SDES peer. Payload markers flow both ways and are checked on arrival.

Prints one JSON object; exit code 0 when media crossed both ways with openssl's keys.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from libsrtp_call import Ng, PROFILES, session, rtp  # noqa: E402
from dtls_call import b_sdp_answer, scan_b  # noqa: E402

# openssl use_srtp name -> (SDES name for pylibsrtp, key length, salt length)
DTLS_PROFILES = {
    "SRTP_AES128_CM_SHA1_80": ("AES_CM_128_HMAC_SHA1_80", 16, 14),
    "SRTP_AEAD_AES_128_GCM": ("AEAD_AES_128_GCM", 16, 12),
    "SRTP_AEAD_AES_256_GCM": ("AEAD_AES_256_GCM", 32, 12),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ng", required=True)
    ap.add_argument("--profile", default="SRTP_AEAD_AES_128_GCM")
    ap.add_argument("--packets", type=int, default=50)
    args = ap.parse_args()
    host, port = args.ng.rsplit(":", 1)
    ng = Ng((host, int(port)))
    out = {"ok": False, "profile": args.profile}
    problems = []
    tmp = tempfile.mkdtemp()
    cert, key = os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=openssl-peer", "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )
    fp = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", cert],
                        check=True, capture_output=True, text=True).stdout.strip().split("=")[1]
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (a, b):
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.05)
    call_id = "dtls-openssl-%d" % os.getpid()
    offer = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio %d UDP/TLS/RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\n"
        "a=fingerprint:sha-256 %s\r\na=setup:active\r\n" % (a.getsockname()[1], fp)
    )
    r = ng(command="offer", call_id=call_id, from_tag="A-tag", sdp=offer.encode(), flags=[])
    if r.get("result") != b"ok":
        print(json.dumps({**out, "offer": {k: str(v) for k, v in r.items()}}))
        return 1
    relay_b, offered = scan_b(r["sdp"])
    suite_b = "AES_CM_128_HMAC_SHA1_80"
    key_b = os.urandom(PROFILES[suite_b][1])
    answer_b, tag = b_sdp_answer(b.getsockname()[1], r["sdp"], suite_b, key_b)
    relay_key_b = [k for t, s, k in offered if t == tag][0]
    r = ng(command="answer", call_id=call_id, from_tag="A-tag", to_tag="B-tag", sdp=answer_b, flags=[])
    if r.get("result") != b"ok":
        print(json.dumps({**out, "answer": {k: str(v) for k, v in r.items()}}))
        return 1
    answer_a = r["sdp"].decode()
    out["answer_setup"] = [l for l in answer_a.splitlines() if l.startswith("a=setup")]
    relay_a = None
    for line in answer_a.splitlines():
        if line.startswith("m=audio "):
            relay_a = ("127.0.0.1", int(line.split()[1]))

    suite_a, klen, slen = DTLS_PROFILES[args.profile]
    proc = subprocess.Popen(
        ["openssl", "s_client", "-dtls1_2", "-use_srtp", args.profile, "-cert", cert, "-key", key,
         "-keymatexport", "EXTRACTOR-dtls_srtp", "-keymatexportlen", str(2 * (klen + slen)),
         "-connect", "%s:%d" % relay_a],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    material = []

    def reader():
        for line in proc.stdout:
            line = line.strip()
            if line.startswith("Keying material: "):
                material.append(line[len("Keying material: "):])
            if line.startswith("SRTP Extension negotiated, profile="):
                out["openssl_profile"] = line.split("=", 1)[1]

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    deadline = time.time() + 10
    while not material and time.time() < deadline:
        time.sleep(0.05)
    try:
        if not material:
            problems.append("openssl exported no keying material")
            raise StopIteration
        km = bytes.fromhex(material[0])
        ck, sk = km[:klen], km[klen : 2 * klen]
        cs, ss = km[2 * klen : 2 * klen + slen], km[2 * klen + slen :]
        # openssl is the DTLS client: it protects with the client half.
        tx_a, rx_a = session(suite_a, ck + cs, True), session(suite_a, sk + ss, False)
        tx_b, rx_b = session(suite_b, key_b, True), session(suite_b, relay_key_b, False)
        got = {"a": 0, "b": 0, "bad": 0}

        def drain(sock, rx, me, marker):
            while True:
                try:
                    data = sock.recv(4096)
                except socket.timeout:
                    return
                try:
                    p = rx.unprotect(data)
                except Exception:
                    got["bad"] += 1
                    continue
                if p[12:].startswith(marker):
                    got[me] += 1

        for i in range(args.packets):
            a.sendto(tx_a.protect(rtp(0xA, i, b"from-openssl-leg-%03d" % i + bytes(140))), relay_a)
            if i >= 2:
                b.sendto(tx_b.protect(rtp(0xB, i, b"from-sdes-leg-%03d" % i + bytes(140))), relay_b)
            drain(b, rx_b, "b", b"from-openssl-leg")
            drain(a, rx_a, "a", b"from-sdes-leg")
        time.sleep(0.2)
        drain(b, rx_b, "b", b"from-openssl-leg")
        drain(a, rx_a, "a", b"from-sdes-leg")
        out["got"] = got
        out["sent"] = {"a": args.packets, "b": args.packets - 2}
        if got["b"] < args.packets * 0.9 or got["a"] < (args.packets - 2) * 0.9:
            problems.append("media did not cross both ways with openssl's keys")
        if got["bad"]:
            problems.append("packets failed SRTP")
    except StopIteration:
        pass
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
    out["delete"] = ng(command="delete", call_id=call_id).get("result", b"").decode()
    out["problems"] = problems
    out["ok"] = not problems
    print(json.dumps(out))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
