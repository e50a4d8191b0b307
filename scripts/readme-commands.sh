#!/usr/bin/env bash
# Runs the commands of README.md's "The two commands" section exactly as
# written there, so the README cannot drift from what works:
#   - the main command (the one that runs `demo`), with `--speed 8` added
#     so it takes seconds; it must exit 0 and print the demo's summary;
#   - the test command.
# Usage: scripts/readme-commands.sh [main|tests|all]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-all}

# The first ```sh block after the heading, without comments and blank lines.
commands=$(awk '
  /^## The two commands/ { in_section = 1; next }
  in_section && /^## / { exit }
  in_section && /^```sh/ { in_block = 1; next }
  in_block && /^```/ { exit }
  in_block && !/^[[:space:]]*#/ && NF { print }
' README.md)
main=$(grep -E '(^|[[:space:]])demo([[:space:]]|$)' <<<"$commands" || true)
tests=$(grep -vE '(^|[[:space:]])demo([[:space:]]|$)' <<<"$commands" || true)
if [ "$(grep -c . <<<"$main")" != 1 ] || [ "$(grep -c . <<<"$tests")" != 1 ]; then
  echo "README.md: expected one demo command and one test command under 'The two commands', found:" >&2
  echo "$commands" >&2
  exit 1
fi

if [ "$which" = main ] || [ "$which" = all ]; then
  echo "== README main command: $main --speed 8"
  log=$(mktemp)
  start=$(date +%s)
  if ! bash -c "$main --speed 8" >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "the README's main command failed (exit above)" >&2
    exit 1
  fi
  if ! grep -q '^summary: the healthy canary was promoted' "$log"; then
    tail -40 "$log" >&2
    echo "the README's main command printed no 'promoted' summary" >&2
    exit 1
  fi
  sed -n '/^summary:/,$p' "$log"
  echo "(main command: $(($(date +%s) - start)) s, build included)"
  rm -f "$log"
fi

if [ "$which" = tests ] || [ "$which" = all ]; then
  echo "== README test command: $tests"
  bash -c "$tests"
fi
