#!/usr/bin/env bash
# Checks that the uPlot files embedded in the binary are those of the npm
# package they claim to be: fetches that exact version from the npm
# registry (npm pack, integrity-checked by npm) and compares byte for byte.
# Needs: npm, and access to the npm registry.
# Usage: scripts/check-uplot.sh
set -euo pipefail
cd "$(dirname "$0")/.."
version=1.6.32
vendor=crates/coalmine-local/assets/dashboard/vendor
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "uplot@$version" >/dev/null && tar xzf "uplot-$version.tgz")
status=0
for pair in dist/uPlot.iife.min.js:uPlot.iife.min.js dist/uPlot.min.css:uPlot.min.css LICENSE:uPlot.LICENSE; do
  from=${pair%%:*}
  to=${pair#*:}
  if cmp -s "$tmp/package/$from" "$vendor/$to"; then
    echo "ok   $vendor/$to = uplot@$version $from"
  else
    echo "DIFF $vendor/$to differs from uplot@$version $from" >&2
    status=1
  fi
done
exit $status
