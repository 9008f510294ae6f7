#!/usr/bin/env bash
# The newcomer path, as a test: clone this repository into a temporary folder and run the README's
# "Two commands" there, extracted from README.md and run verbatim, with no WICK_PYTHON and no
# .venv — what a new user does first. Fails when either command fails, or when README.md no
# longer has exactly two commands under "## Two commands".
#
#   scripts/newcomer.sh [--keep FILE]    (--keep: on success leave the clone, write its path to FILE)
#
# It builds and tests from scratch, so it takes as long as CI; .ci/run runs it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
keep=""
case "${1:-}" in
  "") ;;
  --keep) keep="${2:?--keep needs a file name}" ;;
  *) sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; [ "$1" = "-h" ] || [ "$1" = "--help" ]; exit $? ;;
esac

tmp=$(mktemp -d)
# The clone (about 3.5 GB once built) goes when this script ends, also on failure; only a passing
# run with --keep leaves it, and then its caller removes it.
trap 'rm -rf "$tmp"' EXIT
# Tests and benchmarks read the shared data from ../shared beside the repository: give the clone
# the same neighbour.
if [ -d "$root/../shared" ]; then ln -s "$(cd "$root/../shared" && pwd)" "$tmp/shared"; fi
git clone --quiet "$root" "$tmp/wick"
cd "$tmp/wick"

mapfile -t cmds < <(awk '/^## /{s=($0 ~ /^## Two commands/)} s&&/^```/{f=!f;next} s&&f' README.md)
if [ "${#cmds[@]}" -ne 2 ]; then
  echo "scripts/newcomer.sh: README.md's '## Two commands' has ${#cmds[@]} command lines, expected 2" >&2
  exit 1
fi
for c in "${cmds[@]}"; do
  echo "newcomer: \$ $c  (in a fresh clone at $tmp/wick)" >&2
  env -u WICK_PYTHON bash -c "$c"
done
echo "newcomer: both README commands passed in a fresh clone" >&2
if [ -n "$keep" ]; then echo "$tmp/wick" > "$keep"; trap - EXIT; fi
