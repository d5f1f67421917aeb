#!/usr/bin/env bash
# Profiles one relay under the relay_load bench's load: where its CPU goes (perf record,
# cpu-clock samples with call graphs: user vs kernel, SRTP vs syscalls vs scheduling) and what it
# does per packet (perf stat: system calls, context switches, wake-ups it causes).
#
# Usage: benches/profile-relay.sh srtp-edge|rtpengine [CALLS] [SECS] [RELAY_LOAD_BIN] [ARGS...]
#   RELAY_LOAD_BIN defaults to the newest target/release/deps/relay_load-*; build it with
#   `cargo bench --bench relay_load --no-run`. Output: a summary on stdout, the perf data and
#   reports under $OUT (default /tmp/profile-relay-<relay>-<calls>).
# Needs perf (Debian linux-perf) and root or kernel.perf_event_paranoid <= 1 for tracepoints.
# Hardware counters are not required: a VM without them still has cpu-clock and tracepoints.
set -euo pipefail
relay=${1:?srtp-edge or rtpengine}
calls=${2:-300}
secs=${3:-8}
bin=${4:-$(ls -t target/release/deps/relay_load-* 2>/dev/null | grep -v '\.d$' | head -1)}
shift $(( $# < 4 ? $# : 4 ))   # the rest goes to relay_load (e.g. --srtp-edge-bin PATH)
out=${OUT:-/tmp/profile-relay-$relay-$calls}
mkdir -p "$out"
[ -x "$bin" ] || { echo "no relay_load binary (cargo bench --bench relay_load --no-run)"; exit 1; }

# The load runs for the profile window plus its own 2 s warm-up and set-up.
"$bin" --bench --calls "$calls" --secs $((secs + 6)) --only "$relay" "$@" >"$out/bench.txt" 2>&1 &
bench=$!
trap 'kill $bench 2>/dev/null || true' EXIT
# Find the relay process the bench started (a child of the bench).
pid=""
for _ in $(seq 1 200); do
  pid=$(pgrep -P "$bench" | head -1 || true)
  [ -n "$pid" ] && break
  sleep 0.1
done
[ -n "$pid" ] || { echo "relay did not start"; cat "$out/bench.txt"; exit 1; }
# Let the calls be set up and the warm-up pass.
sleep $((calls / 150 + 4))

events=task-clock,context-switches,cpu-migrations,raw_syscalls:sys_enter,sched:sched_wakeup
for sc in epoll_wait epoll_pwait recvfrom recvmsg recvmmsg sendto sendmsg sendmmsg io_uring_enter \
          clock_nanosleep nanosleep read write futex; do
  events="$events,syscalls:sys_enter_$sc"
done
perf stat -e "$events" -p "$pid" -o "$out/stat.txt" -- sleep "$secs" &
stat=$!
perf record -q -e cpu-clock -F 2000 -g -p "$pid" -o "$out/perf.data" -- sleep "$secs" 2>/dev/null
wait $stat || true
wait $bench || true
trap - EXIT

perf report -i "$out/perf.data" --no-children --sort dso,sym --stdio 2>/dev/null >"$out/report.txt" || true
perf report -i "$out/perf.data" --no-children --sort sym --stdio -g none --percent-limit 0.5 \
  2>/dev/null >"$out/flat.txt" || true

pkts=$((calls * 100 * secs))
echo "== $relay, $calls calls, ${secs}s window, ~$pkts packets relayed (100 packets/s per call)"
grep -E "^(srtp-edge|rtpengine) " "$out/bench.txt" || true
awk -v p="$pkts" '/^ *[0-9,.]+ +[a-z_:-]+/ {
    gsub(",", "", $1); name=$2;
    if (name == "task-clock") printf "  %-34s %10.2f µs CPU per packet\n", name, $1 * 1000 / p;
    else if ($1 > 0) printf "  %-34s %10.3f per packet\n", name, $1 / p }' "$out/stat.txt"
# Share of samples in the kernel vs user space, and the top symbols.
perf report -i "$out/perf.data" --no-children --sort dso --stdio 2>/dev/null \
  | awk '/%/ && !/^#/ {print "  dso", $0}' | head -8
echo "  top symbols (self):"
grep -E '^ +[0-9.]+%' "$out/flat.txt" | head -25 | sed 's/^/    /'
echo "(full reports in $out)"
