#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test.
# Needs: a Rust toolchain (cargo); installs promtool (Debian package
# `prometheus`) and the Prometheus server when they are missing: the proxy's
# /metrics test and the providers' and the controller's tests against a
# real server need them;
# and Debian's `chromium` and `chromium-driver` for the dashboard's browser
# tests (crates/coalmine/tests/dashboard.rs), which fail without them.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
# A missing Prometheus, promtool or chromium fails their tests.
# The real Kubernetes of the tests (scripts/kube-env.sh, docs/kubernetes.md),
# kubectl included (the tests run that one): its Go build (cached in
# target/kube-env/bin) runs while cargo compiles; a missing Go toolchain or
# a failed build fails the tests.
mkdir -p target
scripts/kube-env.sh build >target/kube-env-build.log 2>&1 &
kube_build=$!
cargo test --workspace --locked --no-run "$@"
if ! wait "$kube_build"; then
  cat target/kube-env-build.log >&2
  echo "scripts/test.sh: building the test cluster failed" >&2
  exit 1
fi
# Started here, stopped here; one that was already up is left up.
if [ ! -f target/kube-env/run/env ]; then
  trap 'scripts/kube-env.sh down' EXIT
fi
scripts/kube-env.sh up >/dev/null
cargo test --workspace --locked "$@"
