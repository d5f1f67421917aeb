#!/usr/bin/env python3
"""libsrtp peer for tests/srtp_libsrtp.rs, through PyPI pylibsrtp (the reference libsrtp 2.x).

Reads one JSON array of jobs on stdin and writes one JSON array of results on stdout.
A job is {"profile": SDES name, "key": hex(master key || master salt),
"op": "protect" | "unprotect", "kind": "rtp" | "rtcp", "packets": [hex, ...]}.
Each job gets its own libsrtp session (one direction, any SSRC), and its result is a list with,
per packet, the output as hex or {"error": libsrtp's message}.
With --profiles it prints the SDES names of the profiles pylibsrtp offers and exits.
"""

import json
import sys

import pylibsrtp
from pylibsrtp import Policy, Session

PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_128_GCM": Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "AEAD_AES_256_GCM": Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
}


def run(job):
    outbound = job["op"] == "protect"
    policy = Policy(
        key=bytes.fromhex(job["key"]),
        ssrc_type=Policy.SSRC_ANY_OUTBOUND if outbound else Policy.SSRC_ANY_INBOUND,
        srtp_profile=PROFILES[job["profile"]],
    )
    policy.window_size = 128
    session = Session(policy=policy)
    fn = {
        ("protect", "rtp"): session.protect,
        ("protect", "rtcp"): session.protect_rtcp,
        ("unprotect", "rtp"): session.unprotect,
        ("unprotect", "rtcp"): session.unprotect_rtcp,
    }[(job["op"], job["kind"])]
    out = []
    for packet in job["packets"]:
        try:
            out.append(fn(bytes.fromhex(packet)).hex())
        except pylibsrtp.Error as e:
            out.append({"error": str(e)})
    return out


def main():
    if sys.argv[1:] == ["--profiles"]:
        print(json.dumps(sorted(PROFILES)))
        return
    jobs = json.load(sys.stdin)
    json.dump([run(job) for job in jobs], sys.stdout)


if __name__ == "__main__":
    main()
