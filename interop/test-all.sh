#!/usr/bin/env bash
# Every test of srtp-edge: installs the real peers the tests use, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash interop/install-peers.sh
cargo test --no-fail-fast
