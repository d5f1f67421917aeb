#!/usr/bin/env bash
# Soak test of the media relay (not run in CI): 1,000 calls (SDES, AES_CM_128_HMAC_SHA1_80 on
# one leg, _32 on the other, 50 packets/s per direction) through srtp-edge for 30 minutes.
# Every minute it prints the relay's open descriptors, sockets, RSS, CPU per packet and loss;
# at the end every call is deleted over ng and the descriptors are counted again. Flat columns,
# 0 loss and "1000/1000 calls ended cleanly" are the pass criteria.
#
# Usage: benches/soak.sh [CALLS] [MINUTES] [extra relay_load args, e.g. --srtp-edge-bin PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-1000}
minutes=${2:-30}
shift $(( $# > 2 ? 2 : $# ))
cargo bench --bench relay_load --no-run
exec cargo bench --bench relay_load -- --calls "$calls" --secs $((minutes * 60)) \
  --only srtp-edge --sample-secs 60 "$@"
