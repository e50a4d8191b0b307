#!/usr/bin/env bash
# Proxy benchmarks, on loopback only, bounded in time.
#   1. ../shared/bench/proxy.sh: coalmine proxy side by side with nginx and
#      HAProxy (one worker each, 90/10 split): requests/s, p99, peak RSS.
#   2. Route changes under load: wrk with 64 connections through the proxy
#      while 100 weight changes go through the admin API; counts non-2xx
#      answers on both sides.
#   3. User-space instructions per request under callgrind, HAProxy and
#      ours, same load: a figure that stays put on a shared, noisy machine,
#      where requests/s from (1) vary by ±20% from run to run.
#   4. CPU time per request of each proxy process, interleaved rounds.
# Usage: scripts/bench-proxy.sh [SECONDS] [CONNECTIONS]
#        scripts/bench-proxy.sh side SECONDS CONNECTIONS -- CMD...
#        scripts/bench-proxy.sh cpu ROUNDS SECONDS -- CMD...
# The side form runs (1) alone on the proxy CMD (listening on
# 127.0.0.1:8083, forwarding to http://127.0.0.1:9001 / :9002).
# The second form runs (4) alone on the proxy CMD (which must listen on
# 127.0.0.1:8093 and forward to http://127.0.0.1:9001 / :9002, e.g. the
# `bare` example: `BIN 127.0.0.1:8093 http://127.0.0.1:9001
# http://127.0.0.1:9002 10`), HAProxy on :8092 beside it, wrk with 64
# connections, and prints each round, the medians and their ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = side ]; then
  # (1) alone on the proxy CMD, which must listen on 127.0.0.1:8083.
  D=${2:-10}; C=${3:-64}; shift 3; [ "${1:-}" = "--" ] && shift
  exec bash ../shared/bench/proxy.sh "$D" "$C" -- "$@"
fi
if [ "${1:-}" = cpu ]; then
  R=${2:-4}; D=${3:-10}; shift 3; [ "${1:-}" = "--" ] && shift
  for b in nginx haproxy wrk curl; do command -v $b >/dev/null || NEED="${NEED:-} $b"; done
  if [ -n "${NEED:-}" ]; then apt-get update -qq >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${NEED/nginx/nginx-light} >/dev/null; fi
  W=$(mktemp -d)
  cleanup() { [ -n "${OURS:-}" ] && kill "$OURS" 2>/dev/null; for p in nginx haproxy; do [ -f "$W/$p.pid" ] && kill "$(cat "$W/$p.pid")" 2>/dev/null; done; sleep 0.3; rm -rf "$W"; }
  trap cleanup EXIT
  cat > "$W/nginx.conf" <<NG
worker_processes 1; pid $W/nginx.pid; error_log $W/err.log; daemon on;
events { worker_connections 4096; }
http { access_log off;
  server { listen 127.0.0.1:9001; location / { return 200 "stable\n"; } }
  server { listen 127.0.0.1:9002; location / { return 200 "canary\n"; } } }
NG
  printf 'global\n  maxconn 8192\n  nbthread 1\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\nfrontend fe\n  bind 127.0.0.1:8092\n  default_backend be\nbackend be\n  balance roundrobin\n  http-reuse always\n  server st 127.0.0.1:9001 weight 90\n  server ca 127.0.0.1:9002 weight 10\n' > "$W/haproxy.cfg"
  nginx -c "$W/nginx.conf" -p "$W"
  haproxy -f "$W/haproxy.cfg" -D -p "$W/haproxy.pid"
  "$@" > "$W/ours.log" 2>&1 & OURS=$!
  for i in $(seq 50); do curl -s -o /dev/null 127.0.0.1:8092/ && curl -s -o /dev/null 127.0.0.1:8093/ && break; sleep 0.1; done
  t=$(getconf CLK_TCK)
  cpr() { # PID PORT -> microseconds of CPU per request
    local a b n; a=$(awk '{print $14+$15}' "/proc/$1/stat")
    n=$(wrk -t1 -c64 -d"${D}"s "http://127.0.0.1:$2/" | awk '/requests in/{print $1}')
    b=$(awk '{print $14+$15}' "/proc/$1/stat")
    awk -v a="$a" -v b="$b" -v n="$n" -v t="$t" 'BEGIN{printf "%.2f\n", (b-a)/t*1e6/n}'; }
  H=(); O=()
  for r in $(seq "$R"); do
    if [ $((r % 2)) = 1 ]; then h=$(cpr "$(cat "$W/haproxy.pid")" 8092); o=$(cpr "$OURS" 8093)
    else o=$(cpr "$OURS" 8093); h=$(cpr "$(cat "$W/haproxy.pid")" 8092); fi
    echo "round $r: haproxy $h us/request, ours $o us/request"; H+=("$h"); O+=("$o")
  done
  med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
  mh=$(med "${H[@]}"); mo=$(med "${O[@]}")
  echo "medians: haproxy $mh us/request, ours $mo us/request"
  awk -v o="$mo" -v h="$mh" 'BEGIN{printf "ours/haproxy: cpu per request %.2fx\n", o/h}'
  exit 0
fi
D=${1:-10}; C=${2:-64}
for b in nginx wrk curl valgrind haproxy; do command -v $b >/dev/null || NEED="${NEED:-} $b"; done
if [ -n "${NEED:-}" ]; then apt-get update -qq >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${NEED/nginx/nginx-light} >/dev/null; fi
cargo build --release -q -p coalmine
BIN=target/release/coalmine

echo "== 1. side by side (../shared/bench/proxy.sh $D $C)"
bash ../shared/bench/proxy.sh "$D" "$C" -- "$BIN" proxy --listen 127.0.0.1:8083 \
  --stable http://127.0.0.1:9001 --canary http://127.0.0.1:9002 --weight 10 --threads 1 --admin 127.0.0.1:9911

echo "== 2. 100 weight changes under load ($C connections)"
W=$(mktemp -d)
cleanup() { [ -n "${P:-}" ] && kill "$P" 2>/dev/null; [ -f "$W/ha.pid" ] && kill "$(cat "$W/ha.pid")" 2>/dev/null; [ -f "$W/nginx.pid" ] && kill "$(cat "$W/nginx.pid")" 2>/dev/null; sleep 0.2; rm -rf "$W"; }
trap cleanup EXIT
cat > "$W/nginx.conf" <<NG
worker_processes 1; pid $W/nginx.pid; error_log $W/err.log; daemon on;
events { worker_connections 4096; }
http { access_log off;
  server { listen 127.0.0.1:9001; location / { return 200 "stable\n"; } }
  server { listen 127.0.0.1:9002; location / { return 200 "canary\n"; } }
}
NG
nginx -c "$W/nginx.conf" -p "$W"
"$BIN" proxy --listen 127.0.0.1:8083 --admin 127.0.0.1:9911 --stable http://127.0.0.1:9001 \
  --canary http://127.0.0.1:9002 --weight 0 >"$W/proxy.log" 2>&1 & P=$!
for i in $(seq 50); do curl -sf -o /dev/null 127.0.0.1:8083/ && break; sleep 0.1; done
wrk -t1 -c"$C" -d"$D"s http://127.0.0.1:8083/ >"$W/wrk.txt" 2>&1 & WRK=$!
sleep 1
bad_admin=0
for i in $(seq 100); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT 127.0.0.1:9911/routes -d "{\"canaryWeight\": $((i % 101))}")
  [ "$code" = 200 ] || bad_admin=$((bad_admin + 1))
  sleep "$(awk -v d="$D" 'BEGIN{printf "%.3f", (d-2)/100}')"
done
wait $WRK
reqs=$(awk '/requests in/{print $1}' "$W/wrk.txt")
non2xx=$(awk '/Non-2xx/{print $NF}' "$W/wrk.txt"); errs=$(awk '/Socket errors/{print}' "$W/wrk.txt")
echo "requests=$reqs non2xx=${non2xx:-0} socket_errors=${errs:-none} admin_puts=100 admin_non200=$bad_admin"
kill "$P" 2>/dev/null || true; wait "$P" 2>/dev/null || true; P=

echo "== 3. user-space instructions per request (callgrind; repeatable on a noisy machine)"
cat > "$W/ha.cfg" <<HA
global
  maxconn 8192
  nbthread 1
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:8092
  default_backend be
backend be
  balance roundrobin
  http-reuse always
  server st 127.0.0.1:9001 weight 90
  server ca 127.0.0.1:9002 weight 10
HA
ir_per_request() { # NAME PORT COMMAND...
  local name=$1 port=$2; shift 2
  valgrind --tool=callgrind --callgrind-out-file="$W/$name.cg" "$@" >/dev/null 2>"$W/$name.vg" & local vp=$!
  for i in $(seq 150); do curl -s -o /dev/null "127.0.0.1:$port/" && break; sleep 0.2; done
  # Count the load only, not start-up (which would be spread over however
  # many requests the run managed).
  callgrind_control -z "$vp" >/dev/null 2>&1 || true
  local n; n=$(wrk -t1 -c16 -d15s "http://127.0.0.1:$port/" | awk '/requests in/{print $1}')
  kill -INT $vp 2>/dev/null || true; sleep 3; kill $vp 2>/dev/null || true; wait $vp 2>/dev/null || true
  local ir; ir=$(awk '/^summary:|^totals:/{print $2; exit}' "$W/$name.cg")
  echo "$name requests=$n instructions=$ir per_request=$((ir / n))"
  eval "IR_$name=$((ir / n))"
}
ir_per_request haproxy 8092 haproxy -f "$W/ha.cfg" -db
ir_per_request ours 8093 "$BIN" proxy --listen 127.0.0.1:8093 --admin 127.0.0.1:9993 \
  --stable http://127.0.0.1:9001 --canary http://127.0.0.1:9002 --weight 10 --threads 1
awk -v a="$IR_ours" -v b="$IR_haproxy" 'BEGIN{printf "ours/haproxy: instructions per request %.2fx\n", a/b}'

echo "== 4. CPU time per request (user + system of the proxy process), interleaved rounds"
# The proxies one after the other, alternating which goes first, each under
# wrk ($C connections, $D s): CPU seconds from /proc/PID/stat over requests
# served. Less noisy than requests/s when the machine is shared, since it
# does not depend on how much CPU the proxy got.
haproxy -f "$W/ha.cfg" -D -p "$W/ha.pid"
"$BIN" proxy --listen 127.0.0.1:8093 --admin 127.0.0.1:9993 --stable http://127.0.0.1:9001 \
  --canary http://127.0.0.1:9002 --weight 10 --threads 1 >"$W/cpu.log" 2>&1 & P=$!
for i in $(seq 50); do curl -sf -o /dev/null 127.0.0.1:8093/ && curl -sf -o /dev/null 127.0.0.1:8092/ && break; sleep 0.1; done
ticks=$(getconf CLK_TCK)
cpu_per_request() { # NAME PID PORT
  local a b n; a=$(awk '{print $14 + $15}' "/proc/$2/stat")
  n=$(wrk -t1 -c"$C" -d"$D"s "http://127.0.0.1:$3/" | awk '/requests in/{print $1}')
  b=$(awk '{print $14 + $15}' "/proc/$2/stat")
  awk -v a="$a" -v b="$b" -v n="$n" -v t="$ticks" -v name="$1" 'BEGIN{printf "%-8s %6.2f us/request (%d requests)\n", name, (b - a) / t * 1e6 / n, n}'
}
for round in 1 2 3; do
  if [ $((round % 2)) = 1 ]; then cpu_per_request haproxy "$(cat "$W/ha.pid")" 8092; cpu_per_request ours "$P" 8093
  else cpu_per_request ours "$P" 8093; cpu_per_request haproxy "$(cat "$W/ha.pid")" 8092; fi
done
kill "$(cat "$W/ha.pid")" 2>/dev/null || true
