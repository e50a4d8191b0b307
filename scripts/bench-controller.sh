#!/usr/bin/env bash
# Kubernetes controller benchmark (issue 6), on loopback only, a few minutes.
# The real `coalmine controller` (release build) as its own process against
# the fake API server, which runs in the driver
# (crates/coalmine-controller/examples/bench.rs):
#   - controller memory (VmRSS, VmHWM) idle, with N Canaries Idle, and with
#     N rollouts live (canary Deployments created, paused);
#   - time from an image change to the `NAME-canary` Deployment existing,
#     SAMPLES Canaries in turn, on an idle controller and with N present;
#   - reconciles per second (the controller's own counter) while N Canaries
#     are created and settle, while N are rolled, and at steady state.
# Usage: scripts/bench-controller.sh [N=500] [SAMPLES=20]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-500}; S=${2:-20}
T=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p coalmine
cargo build --release -q -p coalmine-controller --example bench
echo "== $(date -u +%FT%TZ), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(rustc --version)"
"$T/release/examples/bench" "$T/release/coalmine" "$N" "$S"
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
