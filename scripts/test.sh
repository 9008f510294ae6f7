#!/usr/bin/env bash
# The whole test suite, set-up included: the README's test command.
#
#   scripts/test.sh [extra cargo test arguments]
#
# 1. The Python oracles (tensorboard, safetensors, numpy, gymnasium; scripts/requirements-test.txt)
#    go into .venv at the workspace root, created when missing and re-installed only when the
#    requirements file changed. WICK_PYTHON, if you set it, is used instead (a relative path is
#    read from the workspace root).
# 2. `cargo test --release --workspace` runs with WICK_PYTHON set to that Python's absolute path.
#
# Without python3 the oracle checks are skipped with a note (under CI, with CI set, that fails).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

die() { echo "scripts/test.sh: $*" >&2; exit 2; }

if [ -n "${WICK_PYTHON:-}" ]; then
  case "$WICK_PYTHON" in
    /*) py="$WICK_PYTHON" ;;
    */*) py="$root/$WICK_PYTHON" ;;
    *) py=$(command -v "$WICK_PYTHON" || true) ;;
  esac
  [ -n "$py" ] && [ -x "$py" ] || die "WICK_PYTHON=$WICK_PYTHON does not exist; unset it to let this script create .venv, or point it at a Python with the packages in scripts/requirements-test.txt"
  export WICK_PYTHON="$py"
elif command -v python3 >/dev/null 2>&1; then
  req="scripts/requirements-test.txt"
  stamp=".venv/.requirements-test.sha256"
  want=$(sha256sum "$req" | cut -d' ' -f1)
  if [ ! -x .venv/bin/python ]; then
    echo "scripts/test.sh: creating .venv for the Python oracles ($req)" >&2
    python3 -m venv .venv || die "python3 -m venv .venv failed; install your distribution's python3-venv package, or set WICK_PYTHON to a Python with the packages in $req"
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "scripts/test.sh: installing $req into .venv" >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$req" \
      || die "pip could not install $req into .venv (no network?); set WICK_PYTHON to a Python that has them"
    echo "$want" > "$stamp"
  fi
  export WICK_PYTHON="$root/.venv/bin/python"
else
  [ -z "${CI:-}" ] || die "CI is set but there is no python3 for the oracle checks"
  echo "scripts/test.sh: no python3 on PATH; the oracle checks will be skipped" >&2
fi

# The whole workspace, unless the arguments pick packages (`scripts/test.sh -p wick-envs`).
for a in "$@"; do
  case "$a" in -p|--package|--package=*) exec cargo test --release "$@" ;; esac
done
exec cargo test --release --workspace "$@"
