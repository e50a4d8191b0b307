#!/usr/bin/env bash
# Memory per idle keep-alive client connection, HAProxy and ours, and the
# cost of large request heads; loopback only, bounded in time.
#   scripts/idle-memory.sh N -- CMD...   (CMD is the proxy; it must listen on 127.0.0.1:8093
#                                          and forward to http://127.0.0.1:9001 / :9002)
# e.g. scripts/idle-memory.sh 1000 -- target/release/coalmine proxy --listen 127.0.0.1:8093 \
#        --stable http://127.0.0.1:9001 --canary http://127.0.0.1:9002 --weight 10 --threads 1
# Each of N clients sends one GET, reads the answer and stays connected; the
# figure is the growth of the process's resident memory (VmRSS) divided by N.
# Then N clients each send a request head of 60 KiB (one header) and stay
# connected: the growth per connection while they wait, and after they close.
set -u
N=${1:-1000}; shift; [ "${1:-}" = "--" ] && shift
for b in nginx haproxy python3; do command -v $b >/dev/null || NEED="${NEED:-} $b"; done
[ -n "${NEED:-}" ] && { apt-get update -qq >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${NEED/nginx/nginx-light} >/dev/null; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
W=$(mktemp -d)
cleanup() { [ -n "${OURS:-}" ] && kill $OURS 2>/dev/null; for p in nginx haproxy; do [ -f $W/$p.pid ] && kill $(cat $W/$p.pid) 2>/dev/null; done; sleep 0.3; rm -rf $W; }
trap cleanup EXIT
cat > $W/nginx.conf <<NG
worker_processes 1; pid $W/nginx.pid; error_log $W/err.log; daemon on;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 100000;
  server { listen 127.0.0.1:9001; location / { return 200 "stable\n"; } }
  server { listen 127.0.0.1:9002; location / { return 200 "canary\n"; } } }
NG
cat > $W/haproxy.cfg <<HA
global
  maxconn $((N + 200))
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
nginx -c $W/nginx.conf -p $W
haproxy -f $W/haproxy.cfg -D -p $W/haproxy.pid || { echo "haproxy did not start"; exit 1; }
"$@" > $W/ours.log 2>&1 & OURS=$!
for i in $(seq 50); do curl -s -o /dev/null 127.0.0.1:8092/ && curl -s -o /dev/null 127.0.0.1:8093/ && break; sleep 0.1; done
cat > $W/clients.py <<'PY'
import socket, sys, time
port, n, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
pid = sys.argv[4]
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
before = rss()
socks = []
if mode == "idle":
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while b"\n\r\n" not in got or not (got.endswith(b"stable\n") or got.endswith(b"canary\n")):
            got += s.recv(4096)
        socks.append(s)
else:
    head = b"GET / HTTP/1.1\r\nHost: x\r\nx-big: " + b"a" * (60 * 1024)
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        try:
            s.sendall(head)  # the head never ends: the proxy holds it
        except OSError:
            pass  # refused at once (a head larger than the proxy takes)
        socks.append(s)
time.sleep(1.0)
during = rss()
for s in socks:
    s.close()
time.sleep(1.5)
after = rss()
print(f"{(during - before) / n:.2f} KiB per connection while open ({before} -> {during} KiB), {after} KiB after closing")
PY
for mode in idle big-head; do
  echo "haproxy, $N $mode connections: $(python3 $W/clients.py 8092 $N $mode $(cat $W/haproxy.pid))"
  echo "ours,    $N $mode connections: $(python3 $W/clients.py 8093 $N $mode $OURS)"
done
