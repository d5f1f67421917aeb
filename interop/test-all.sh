#!/usr/bin/env bash
# Every test of srtp-edge, or one tier of them:
#   ./interop/test-all.sh            everything: installs the real peers the tests use, then the
#                                    whole suite (what CI runs)
#   ./interop/test-all.sh hermetic   the library's unit tests and tests/hermetic.rs: no process
#                                    besides the test itself, no peer to install (under a minute
#                                    once built)
#   ./interop/test-all.sh interop    every other test binary: the srtp-edge daemon against real
#                                    peers (baresip, Kamailio, SIPp, aiortc, libsrtp, openssl...)
set -euo pipefail
cd "$(dirname "$0")/.."
tier=${1:-all}
case "$tier" in
  hermetic)
    cargo test --no-fail-fast --lib --test hermetic
    ;;
  interop)
    bash interop/install-peers.sh
    targets=()
    for f in tests/*.rs; do
      name=$(basename "$f" .rs)
      [ "$name" = hermetic ] || targets+=(--test "$name")
    done
    cargo test --no-fail-fast "${targets[@]}"
    ;;
  all)
    bash interop/install-peers.sh
    cargo test --no-fail-fast
    ;;
  *)
    echo "usage: $0 [hermetic|interop]" >&2
    exit 2
    ;;
esac
