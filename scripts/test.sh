#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test.
# Needs: a Rust toolchain (cargo); installs promtool (Debian package
# `prometheus`) when it is missing, for the proxy's /metrics test.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v promtool >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
cargo test --workspace --locked "$@"
