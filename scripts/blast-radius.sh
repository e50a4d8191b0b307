#!/usr/bin/env bash
# Blast radius of a faulty canary in local mode: `coalmine demo
# --scenario faulty` is `coalmine run`'s own code (proxy, rollout, judge)
# in front of two sample apps, stable at 0.5% errors and the canary at 5%,
# with steps starting at 5% and a steady load through the proxy.
# Prints, over RUNS runs, the seconds from the first canary request to the
# rollback and the failed requests the canary served before it; then the
# healthy scenario's outcomes over the same number of runs (false rollbacks).
#
#   scripts/blast-radius.sh [RUNS=20] [RPS=200]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
rps=${2:-200}
cargo build --release --quiet -p coalmine
bin=target/release/coalmine
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

for i in $(seq 1 "$runs"); do
  "$bin" demo --scenario faulty --rps "$rps" --json --listen 127.0.0.1:0 --admin 127.0.0.1:0 \
    >"$out/faulty-$i.json" 2>/dev/null || true
done
for i in $(seq 1 "$runs"); do
  "$bin" demo --scenario healthy --rps "$rps" --speed 4 --json --listen 127.0.0.1:0 --admin 127.0.0.1:0 \
    >"$out/healthy-$i.json" 2>/dev/null || true
done

python3 - "$out" "$runs" "$rps" <<'PY'
import json, sys, glob, statistics
out, runs, rps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def load(kind):
    rows = []
    for f in sorted(glob.glob(f"{out}/{kind}-*.json")):
        try:
            rows.append(json.load(open(f)))
        except Exception:
            rows.append(None)
    return rows
def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * (len(xs) - 1) + 0.5))]
faulty = load("faulty")
rolled = [r for r in faulty if r and r["outcome"] == "rolled back"]
secs = [r["secondsToRollback"] for r in rolled if r.get("secondsToRollback") is not None]
failed = [r["requests"]["canary"]["failed"] for r in rolled]
reqs = [r["requests"]["canary"]["requests"] for r in rolled]
print(f"faulty canary (5% vs 0.5% errors), {rps} req/s, steps from 5%: rolled back in {len(rolled)} of {runs} runs")
if secs:
    print(f"  seconds from the first canary request to rollback: median {statistics.median(secs):.1f}, p90 {q(secs, 0.9):.1f}, max {max(secs):.1f}  (target <= 30)")
    print(f"  failed canary requests before rollback: median {statistics.median(failed):.0f}, p90 {q(failed, 0.9)}, max {max(failed)}  (target < 100)")
    print(f"  canary requests before rollback: median {statistics.median(reqs):.0f}, max {max(reqs)}")
    by = {}
    for r in rolled:
        metric = (r.get("reason") or "?").split(" failed")[0]
        by[metric] = by.get(metric, 0) + 1
    print("  by: " + ", ".join(f"{k} {v}" for k, v in sorted(by.items())))
    print(f"  within the first step (5% for 15 s): {sum(1 for t in secs if t < 15)} of {len(rolled)}")
healthy = load("healthy")
promoted = sum(1 for r in healthy if r and r["outcome"] == "promoted")
print(f"healthy canary (0.5% vs 0.5%), --speed 4: promoted in {promoted} of {runs} runs")
PY
