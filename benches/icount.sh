#!/usr/bin/env bash
# Instruction-count regression check of the media hot path (run by .ci/run).
#
# Builds benches/icount.rs, runs each of its cases under valgrind's callgrind counting only the
# instructions inside its `measured` function, and compares instructions per packet with
# benches/icount-baseline.txt: a case more than 5 % above its baseline fails the check. Counts
# do not depend on the machine's load (the same binary and inputs give the same count), only on
# the code, the compiler and the CPU features the crypto libraries pick (AES-NI, CLMUL, AVX...,
# as valgrind reports them), which are recorded in the baseline's header.
#
# Usage: benches/icount.sh            check against the baseline
#        benches/icount.sh --update   rewrite the baseline from this build (commit it, and say
#                                     in the commit why the counts moved)
# Env:   ICOUNT_TOLERANCE (percent, default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
baseline=benches/icount-baseline.txt
tolerance=${ICOUNT_TOLERANCE:-5}
update=false
[ "${1:-}" = "--update" ] && update=true

command -v valgrind >/dev/null || { echo "icount: valgrind is not installed (apt-get install valgrind)"; exit 1; }
bin=$(cargo bench --bench icount --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "icount" and m.get("executable"):
        print(m["executable"])')
[ -x "$bin" ] || { echo "icount: build failed"; cargo bench --bench icount --no-run; exit 1; }

packets=2000
rustc_v=$(rustc --version | awk '{print $2}')
valgrind_v=$(valgrind --version)
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -xE 'aes|pclmulqdq|avx|avx2|sha_ni|vaes|vpclmulqdq|avx512f' | tr '\n' ' ')
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

declare -A got
for case in $("$bin" --list); do
  out="$tmp/cg.out"
  valgrind --tool=callgrind --callgrind-out-file="$out" --collect-atstart=no \
    --toggle-collect='*icount*measured*' "$bin" "$case" >"$tmp/stdout" 2>"$tmp/stderr" \
    || { echo "icount: $case failed under valgrind"; cat "$tmp/stderr"; exit 1; }
  total=$(awk '/^(summary|totals):/ {print $2; exit}' "$out")
  [ -n "$total" ] && [ "$total" -gt 0 ] || { echo "icount: no count for $case"; exit 1; }
  got[$case]=$((total / packets))
done

if $update; then
  {
    echo "# Instructions per packet under callgrind (benches/icount.sh). Regenerate with"
    echo "# benches/icount.sh --update on the CI machine kind; counts depend on the compiler and"
    echo "# on the CPU features the crypto picks."
    echo "# rustc $rustc_v; $valgrind_v; cpu flags: $flags"
    for case in $("$bin" --list); do echo "$case ${got[$case]}"; done
  } >"$baseline"
  echo "icount: baseline written to $baseline"
  cat "$baseline"
  exit 0
fi

[ -f "$baseline" ] || { echo "icount: no baseline ($baseline); create it with --update"; exit 1; }
base_hdr=$(grep -m1 '^# rustc' "$baseline" || true)
if [ "$base_hdr" != "# rustc $rustc_v; $valgrind_v; cpu flags: $flags" ]; then
  echo "icount: note: baseline taken with [${base_hdr#\# }], this run with [rustc $rustc_v; $valgrind_v; cpu flags: $flags]"
fi
fail=0
printf "%-62s %10s %10s %8s\n" case baseline now change
for case in $("$bin" --list); do
  now=${got[$case]}
  base=$(awk -v c="$case" '$1 == c {print $2}' "$baseline")
  if [ -z "$base" ]; then
    printf "%-62s %10s %10s %8s\n" "$case" "-" "$now" "new"
    continue
  fi
  change=$(awk -v n="$now" -v b="$base" 'BEGIN {printf "%+.1f%%", (n - b) * 100 / b}')
  verdict=""
  if awk -v n="$now" -v b="$base" -v t="$tolerance" 'BEGIN {exit !(n > b * (1 + t / 100))}'; then
    verdict="  REGRESSION (> +$tolerance %)"
    fail=1
  fi
  printf "%-62s %10s %10s %8s%s\n" "$case" "$base" "$now" "$change" "$verdict"
done
if [ $fail -ne 0 ]; then
  echo "icount: instruction count regression. If it is intended, run benches/icount.sh --update and commit the baseline with the reason."
  exit 1
fi
echo "icount: ok (tolerance +$tolerance %)"
