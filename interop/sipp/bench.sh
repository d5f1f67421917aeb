#!/bin/sh
# Calls per second through the srtp-edge B2BUA, and through Kamailio 5.6 (TLS) carrying the same
# load in the same run, with SIPp + stunnel4 (SIPp 3.6 has no TLS):
#   sipp uac (TCP) → stunnel client → srtp-edge (TLS, SDES anchored)   → stunnel server → sipp uas (TCP)
#   sipp uac (TCP) → stunnel client → kamailio  (TLS, stateful proxy)  ↗  (the same UAS)
# Two connection modes on the caller side, each run for both proxies:
#   reuse    SIPp -t t1: one TCP socket, so one TLS connection from stunnel, carries every call;
#   percall  SIPp -t tn: one TCP socket per call, and stunnel opens a new TLS connection (full
#            handshake or resumption, as its OpenSSL client chooses) for each accepted socket.
# The proxies' own connection to the target (stunnel server → UAS) is reused in both modes, as a
# B2BUA or proxy keeps its trunk connection. For each run: SIPp's summary, setup time (INVITE →
# 200) percentiles from its -trace_rtt file, the TLS handshakes the proxy saw (srtp-edge: the
# srtp_edge_tls_handshakes_total{listener="sip"} delta on /metrics; both: stunnel client log lines,
# split into new sessions and resumed ones) and the CPU seconds used by the proxy, by stunnel's
# client side and by SIPp (the client-side handshakes in stunnel compete for the same 2 cores, and
# SIPp 3.6 in -t tn mode itself needs most of a core from about 400 calls/s: watch its figure
# before blaming the proxy).
# Kamailio does no media anchoring (the SDP passes untouched: no keys generated, no ports
# opened); srtp-edge rewrites the SDP with new SDES keys per leg and opens 4 media ports per call.
# Then, unless SWEEP is empty, srtp-edge alone at increasing rates in SWEEP_MODE (default
# percall): the highest with no failed call and setup p99 < 20 ms is reported.
# Measured on the 2-vCPU dev VM (release build; the machine shared with other builds, so figures
# swing by 10-100x between runs): see interop/README.md.
# KEEP=1 keeps the work directory (logs, SIPp traces).
# Usage: interop/sipp/bench.sh [calls] [rate] [srtp-edge binary] [certificate dir: ca.pem cert.pem key.pem]
#   env MODES="reuse percall" (caller-side connection modes compared)
#   env SWEEP="300 400 500 600 800 1000 1200" (rates tried after the comparison; each runs 10 s of calls)
#   env SWEEP_MODE=percall (or reuse)
set -eu
CALLS=${1:-2000}
RATE=${2:-200}
BIN=${3:-target/release/srtp-edge}
CERTS=${4:?certificate dir with ca.pem, cert.pem, key.pem (127.0.0.1)}
SWEEP=${SWEEP-300 400 500 600 800 1000 1200}
MODES=${MODES-reuse percall}
SWEEP_MODE=${SWEEP_MODE:-percall}
HERE=$(cd "$(dirname "$0")" && pwd)
W=$(mktemp -d)
PIDS=""
# Everything started here is stopped by its pid (sh's `jobs` is empty inside a trap).
trap 'for p in $PIDS; do kill "$p" 2>/dev/null; done; sleep 1; if [ -n "${KEEP:-}" ]; then echo "logs kept in $W"; else rm -rf "$W"; fi' EXIT INT TERM
cat > "$W/edge.toml" <<EOT
state_dir = "$W/state"
[tls]
cert_file = "$CERTS/cert.pem"
key_file = "$CERTS/key.pem"
ca_file = "$CERTS/ca.pem"
[sip]
listen = ["127.0.0.1:25061"]
# One source (stunnel) carries the whole load: lift the per-source request limit.
source_requests_per_sec = 100000
[control]
listen = ["127.0.0.1:22223"]
[admin]
listen = ["127.0.0.1:29443"]
[media]
port_min = 40000
port_max = 47999
[[trunks]]
name = "bench"
from = ["127.0.0.0/8"]
sdes_suites = ["AES_CM_128_HMAC_SHA1_80"]
[[routes]]
target = "sip:127.0.0.1:25090;transport=tls"
EOT
stunnel_conf() { # name accept connect [client]
  if [ "${4:-}" = client ]; then
    # debug = info: stunnel logs each TLS connection as a new session or a resumed one.
    printf 'foreground = yes\npid =\nsyslog = no\ndebug = info\n[%s]\nclient = yes\naccept = %s\nconnect = %s\nCAfile = %s\nverifyChain = yes\ncheckIP = 127.0.0.1\n' \
      "$1" "$2" "$3" "$CERTS/ca.pem" > "$W/$1.conf"
  else
    printf 'foreground = yes\npid =\nsyslog = no\n[%s]\naccept = %s\nconnect = %s\ncert = %s\nkey = %s\n' \
      "$1" "$2" "$3" "$CERTS/cert.pem" "$CERTS/key.pem" > "$W/$1.conf"
  fi
  stunnel4 "$W/$1.conf" > /dev/null 2> "$W/$1.log" < /dev/null &
  PIDS="$PIDS $!"
  eval "PID_$(echo "$1" | tr - _)=$!"
}
for port in 25061 25062 25070 25072 25080 25090 29443; do
  if ss -ltn 2>/dev/null | grep -q "127.0.0.1:$port "; then
    echo "port $port is in use (another bench running?)" >&2; exit 1
  fi
done
SRTP_EDGE_LOG=warn "$BIN" run -c "$W/edge.toml" > /dev/null 2> "$W/edge.log" < /dev/null &
PIDS="$PIDS $!"
PID_edge=$!
stunnel_conf back 127.0.0.1:25090 127.0.0.1:25080
stunnel_conf front 127.0.0.1:25070 127.0.0.1:25061 client
HAVE_KAM=no
if command -v kamailio > /dev/null 2>&1 || [ -x /usr/sbin/kamailio ]; then
  HAVE_KAM=yes
  mkdir -p "$W/kam"
  sed -e "s|@@CERT@@|$CERTS/cert.pem|; s|@@KEY@@|$CERTS/key.pem|; s|@@CA@@|$CERTS/ca.pem|" \
    "$HERE/../kamailio/tls.cfg" > "$W/kam/tls.cfg"
  sed -e "s|@@SIP_PORT@@|25062|; s|@@TARGET@@|sip:127.0.0.1:25090;transport=tls|; s|@@TLS_CFG@@|$W/kam/tls.cfg|" \
    "$HERE/../kamailio/bench.cfg" > "$W/kam/kamailio.cfg"
  PATH=$PATH:/usr/sbin kamailio -DD -E -m 256 -M 16 -f "$W/kam/kamailio.cfg" -Y "$W/kam" -w "$W/kam" \
    -P "$W/kam/kamailio.pid" > /dev/null 2> "$W/kam/kamailio.log" < /dev/null &
  PIDS="$PIDS $!"
  PID_kam=$!
  stunnel_conf front-kam 127.0.0.1:25072 127.0.0.1:25062 client
fi
sipp -sf "$HERE/uas_answer.xml" -t t1 -i 127.0.0.1 -p 25080 -m 100000000 -nostdin -timeout 3600s < /dev/null > "$W/uas.log" 2>&1 &
PIDS="$PIDS $!"
sleep 3
if ! kill -0 $PIDS 2>/dev/null; then echo "a component did not start:" >&2; tail -3 "$W"/*.log "$W"/kam/*.log >&2; exit 1; fi

# CPU seconds (user + system) used so far by PID and its children (kamailio forks workers).
cpu() {
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); split($0, f, " "); t += f[12] + f[13] } END { printf "%.2f", t / hz }' \
    /dev/null $(for p in "$1" $(ps -o pid= --ppid "$1" 2>/dev/null); do [ -r "/proc/$p/stat" ] && echo "/proc/$p/stat"; done) 2>/dev/null || echo 0
}
# srtp-edge's completed SIP TLS handshakes (server side), from the admin /metrics.
edge_handshakes() {
  curl -s --max-time 5 --cacert "$CERTS/ca.pem" -H "Authorization: Bearer $(cat "$W/state/admin-token" 2>/dev/null)" \
    https://127.0.0.1:29443/metrics 2>/dev/null |
    awk '/^srtp_edge_tls_handshakes_total\{/ && /listener="sip"/ && /result="ok"/ { n += $NF } END { printf "%d", n }'
}
# TLS connections stunnel's client side made so far: "new resumed".
stunnel_sessions() {
  printf '%s %s' "$(grep -c 'new session negotiated' "$W/$1.log" 2>/dev/null)" "$(grep -c 'previous session reused' "$W/$1.log" 2>/dev/null)"
}
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a - b }'; }

# run NAME MODE FRONT_PORT CALLS RATE: one SIPp UAC run; prints result lines and sets P50, P99,
# FAILED. MODE reuse (-t t1) or percall (-t tn).
run() {
  # -t tn: -max_socket below the open-file limit, or SIPp 3.6 refuses to start.
  case "$2" in reuse) T=t1 ;; percall) T="tn -max_socket 4096" ;; *) echo "unknown mode $2" >&2; exit 1 ;; esac
  case "$3" in 25070) PX=$PID_edge; ST=front ;; *) PX=$PID_kam; ST=front_kam ;; esac
  STNAME=$(echo "$ST" | tr _ -)
  mkdir -p "$W/$1-$2"
  cd "$W/$1-$2"
  eval "STPID=\$PID_$ST"
  C0=$(cpu "$PX"); S0=$(cpu "$STPID"); B0=$(cpu "$PID_back"); H0=$(edge_handshakes)
  N0=$(stunnel_sessions "$STNAME" | cut -d' ' -f1); R0=$(stunnel_sessions "$STNAME" | cut -d' ' -f2)
  START=$(date +%s.%N)
  timeout 900 sipp -sf "$HERE/uac_call.xml" -t $T -i 127.0.0.1 -p 25071 -s callee -m "$4" -r "$5" -l 20000 -d 200 \
    -nostdin -timeout 300s -trace_rtt -rtt_freq 1 "127.0.0.1:$3" < /dev/null > uac.log 2>&1 &
  SIPP=$!
  SC=0
  # $SIPP is timeout(1); SIPp is its child, counted while it lives (keep the last figure seen).
  while kill -0 "$SIPP" 2>/dev/null; do
    SN=$(cpu "$SIPP")
    SC=$(awk -v a="$SN" -v b="$SC" 'BEGIN { print (a > b) ? a : b }')
    sleep 0.5
  done
  wait "$SIPP" || true
  END=$(date +%s.%N)
  sleep 0.5
  C1=$(cpu "$PX"); S1=$(cpu "$STPID"); B1=$(cpu "$PID_back"); H1=$(edge_handshakes)
  N1=$(stunnel_sessions "$STNAME" | cut -d' ' -f1); R1=$(stunnel_sessions "$STNAME" | cut -d' ' -f2)
  OKC=$(sed -n 's/^ *Successful call *| *[0-9]* *| *\([0-9]*\).*/\1/p' uac.log | tail -1)
  FAILED=$(sed -n 's/^ *Failed call *| *[0-9]* *| *\([0-9]*\).*/\1/p' uac.log | tail -1)
  STATS=$(tail -n +2 uac_call_*_rtt.csv 2>/dev/null | cut -d';' -f2 | sort -n | awk '{a[NR]=$1} END {
    if (NR) printf "%s %s %s %s %d", a[int(NR*0.5)+1], a[int(NR*0.99)+1], a[NR], a[1], NR; else print "- - - - 0" }')
  WALL=$(echo "$END - $START" | bc)
  set -- "$1" "$2" "$3" "$4" "$5" $STATS
  P50=$6
  P99=$7
  # calls/s achieved: SIPp's cumulative call rate (calls placed over its elapsed time).
  CPS=$(sed -n 's/^ *Call Rate *|.*| *\([0-9.]*\) cps.*/\1/p' uac.log | tail -1)
  printf '%-14s %-7s offered %5s calls at %4s/s: %5s ok, %4s failed, %5s calls/s achieved, wall %5.1f s; setup INVITE->200 p50 %s ms, p99 %s ms, max %s ms\n' \
    "$1" "$2" "$4" "$5" "${OKC:-?}" "${FAILED:-?}" "${CPS:-?}" "$WALL" "$6" "$7" "$8"
  HS=""
  [ "$3" = 25070 ] && HS="srtp-edge TLS handshakes (metric) $((H1 - H0)); "
  printf '%-14s %-7s   %sstunnel client TLS connections: %s new, %s resumed; CPU s: proxy %s, stunnel client %s, stunnel server %s, sipp uac %s\n' \
    "" "" "$HS" "$((N1 - N0))" "$((R1 - R0))" "$(sub "$C1" "$C0")" "$(sub "$S1" "$S0")" "$(sub "$B1" "$B0")" "$SC"
  cd "$W"
}

# SIPp's rtt trace has 1 ms resolution: a 0 ms figure counts as 1 ms in the ratio.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b < 1) b = 1; if (a < 1) a = 1; printf "%.2f", a / b }'; }
for MODE in $MODES; do
  run srtp-edge "$MODE" 25070 "$CALLS" "$RATE"
  E50=$P50
  E99=$P99
  if [ "$HAVE_KAM" = yes ]; then
    run kamailio "$MODE" 25072 "$CALLS" "$RATE"
    echo "ratio srtp-edge/kamailio, $MODE, at $RATE/s: p50 $(ratio "$E50" "$P50"), p99 $(ratio "$E99" "$P99")" \
      "(kamailio relays the SDP untouched: no media anchoring, no SDES keys, no ports)"
  fi
done
[ "$HAVE_KAM" = yes ] || echo "kamailio not installed: no comparison (apt-get install kamailio kamailio-tls-modules)"

# The machine is shared and noisy: a rate that misses gets a second try before the sweep stops.
BEST=""
for R in $SWEEP; do
  PASS=0
  for TRY in 1 2; do
    run "edge-$R-$TRY" "$SWEEP_MODE" 25070 $((R * 10)) "$R"
    OKP=$(awk -v p="$P99" 'BEGIN { print (p != "-" && p < 20) ? 1 : 0 }')
    if [ "${FAILED:-1}" = 0 ] && [ "$OKP" = 1 ]; then PASS=1; break; fi
  done
  if [ "$PASS" = 1 ]; then BEST=$R; else break; fi
done
[ -n "$SWEEP" ] && echo "highest rate tried ($SWEEP_MODE) with 0 failed calls and setup p99 < 20 ms: ${BEST:-below the first rate tried} calls/s"
if grep -qiE "error|panic" "$W/edge.log"; then echo "srtp-edge log:"; grep -iE "error|panic" "$W/edge.log" | head -5; fi
