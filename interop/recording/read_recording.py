#!/usr/bin/env python3
"""An independent reader of srtp-edge sealed recordings, written from docs/recording-format.md
alone (PyPI `cryptography`, no srtp-edge code): unwraps the data key with a `file` provider's KEK
file, checks every chunk of the STREAM construction, and reports per track the frames, the audio
as 16-bit PCM, and the strength of given test tones (Goertzel).

Usage: read_recording.py FILE.srec --kek-file KEKFILE [--tone 440 --tone 1000]
Prints one JSON object; exit 0 if the file is intact.
"""
import argparse
import base64
import json
import math
import struct
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def ulaw(c):
    c = ~c & 0xFF
    sign, exp, mant = c & 0x80, (c >> 4) & 7, c & 0x0F
    s = (((mant << 3) + 0x84) << exp) - 0x84
    return -s if sign else s


def alaw(c):
    c ^= 0x55
    sign, exp, mant = c & 0x80, (c >> 4) & 7, c & 0x0F
    s = (mant << 4) + 8 if exp == 0 else ((mant << 4) + 0x108) << (exp - 1)
    return s if sign else -s


def goertzel(samples, rate, freq):
    if not samples:
        return 0.0
    w = 2 * math.pi * freq / rate
    coeff = 2 * math.cos(w)
    s1 = s2 = 0.0
    for x in samples:
        s0 = x + coeff * s1 - s2
        s2, s1 = s1, s0
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return math.sqrt(max(power, 0.0)) / len(samples)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--kek-file", required=True)
    ap.add_argument("--tone", type=float, action="append", default=[])
    a = ap.parse_args()
    data = open(a.file, "rb").read()
    out = {"ok": False}
    if data[:8] != b"SRTPEREC":
        out["error"] = "bad magic"
        print(json.dumps(out))
        return 1
    (version,) = struct.unpack(">H", data[8:10])
    (hlen,) = struct.unpack(">I", data[10:14])
    if version != 1 or hlen > 65536:
        out["error"] = "unsupported version or header length"
        print(json.dumps(out))
        return 1
    aad = data[: 14 + hlen]
    header = json.loads(data[14 : 14 + hlen])
    (klen,) = struct.unpack(">H", data[14 + hlen : 16 + hlen])
    kb_raw = data[16 + hlen : 16 + hlen + klen]
    pos = 16 + hlen + klen
    out["header"] = header
    if kb_raw == bytes(klen):
        out["error"] = "shredded"
        print(json.dumps(out))
        return 1
    kb = json.loads(kb_raw.decode().rstrip(" "))
    provider, rest = kb["kek"].split(":", 1)
    klass, tenant, v = rest.split("/")
    version_n = int(v[1:])
    kek = None
    for line in open(a.kek_file):
        f = line.split()
        if not f or f[0].startswith("#"):
            continue
        if f[0] == klass and f[1] == tenant and int(f[2]) == version_n:
            kek = bytes.fromhex(f[4])
    if kek is None:
        out["error"] = "KEK %s not in the key file" % kb["kek"]
        print(json.dumps(out))
        return 1
    wrapped = base64.b64decode(kb["wrapped_key"])
    wrap_aad = (b"srtp-edge key-wrap v1\0" + klass.encode() + b"\0" + tenant.encode() + b"\0"
                + struct.pack(">I", version_n) + header["id"].encode())
    key = AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], wrap_aad)
    gcm = AESGCM(key)
    prefix = bytes.fromhex(header["nonce_prefix"])
    decode = {"PCMU": lambda p: [ulaw(b) for b in p], "PCMA": lambda p: [alaw(b) for b in p],
              "L16": lambda p: [x[0] for x in struct.iter_unpack(">h", p)]}[header["codec"]]
    tracks = {0: [], 1: []}
    frames = {0: 0, 1: 0}
    i, final = 0, False
    while pos < len(data):
        if final:
            out["error"] = "data after the final chunk"
            print(json.dumps(out))
            return 1
        (clen,) = struct.unpack(">I", data[pos : pos + 4])
        chunk = data[pos + 4 : pos + 4 + clen]
        if len(chunk) != clen:
            out["error"] = "chunk %d truncated" % i
            print(json.dumps(out))
            return 1
        pos += 4 + clen
        plain = None
        for last in (0, 1):
            try:
                plain = gcm.decrypt(prefix + struct.pack(">I", i) + bytes([last]), chunk, aad)
                final = last == 1
                break
            except Exception:
                continue
        if plain is None:
            out["error"] = "chunk %d does not authenticate" % i
            print(json.dumps(out))
            return 1
        off = 0
        while off < len(plain):
            track, _flags, _seq, _ts, _ms, n = struct.unpack(">BBHIIH", plain[off : off + 14])
            payload = plain[off + 14 : off + 14 + n]
            off += 14 + n
            frames[track] += 1
            tracks[track].extend(decode(payload))
        i += 1
    if not final:
        out["error"] = "no final chunk (truncated)"
        print(json.dumps(out))
        return 1
    rate = header["sample_rate"]
    out["chunks"] = i
    out["frames"] = frames
    out["tones"] = {str(t): {str(tone): goertzel(tracks[t], rate, tone) for tone in a.tone}
                    for t in (0, 1)}
    out["ok"] = True
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
