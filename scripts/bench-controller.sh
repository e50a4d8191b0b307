#!/usr/bin/env bash
# Kubernetes controller benchmark, on loopback only, a few minutes, against
# the real API server of scripts/kube-env.sh (started if it is not up).
# The real `coalmine controller` (release build) as its own process with the
# controller ServiceAccount's kubeconfig, driven by
# crates/coalmine-controller/examples/bench.rs (a debug build: the driver
# mostly waits, and the release profile's fat LTO would double the build):
#   - controller memory (VmRSS, VmHWM) idle, with N Canaries Idle, and with
#     N rollouts live (canary Deployments created, paused);
#   - time from an image change to the `NAME-canary` Deployment existing,
#     SAMPLES Canaries in turn, on an idle controller and with N present;
#   - reconciles per second (the controller's own counter) while N Canaries
#     are created and settle, while N are rolled, and at steady state;
#   - the controller's API calls in each window, from the API server's
#     audit log: per Canary, per reconcile, by verb and resource, and the
#     writes per object.
# Usage: scripts/bench-controller.sh [N=500] [SAMPLES=20]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-500}; S=${2:-20}
T=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p coalmine
cargo build -q -p coalmine-controller --example bench
env_text=$(scripts/kube-env.sh up)
var() { printf '%s\n' "$env_text" | sed -n "s/^$1=//p"; }
echo "== $(date -u +%FT%TZ), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(rustc --version)"
"$T/debug/examples/bench" "$T/release/coalmine" "$(var ADMIN_KUBECONFIG)" \
  "$(var CONTROLLER_KUBECONFIG)" "$(var AUDIT_LOG)" "$N" "$S"
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
