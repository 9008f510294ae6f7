#!/usr/bin/env bash
# Checks the fused NADE op's CUDA kernels (generative/src/nade_op/nade_op.cu) without a GPU: compiles
# the host emulation generative/src/nade_op/emulate.cpp with g++ and runs it on small shapes that
# cover every forward instantiation, several chunks, several tiles per chunk and partial tiles.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$(mktemp -d)/nade_emu"
g++ -std=c++20 -O1 -pthread -Wall -Wno-unknown-pragmas -o "$bin" "$root/generative/src/nade_op/emulate.cpp"
for shape in "1 1 1" "3 7 5" "9 20 32" "21 30 70" "37 13 130" "5 40 300" "6 25 1000" "4 12 1500" "3 9 5000" \
  "2 100 33" "40 70 10"; do
  "$bin" $shape
done
# Force several tiles per chunk (the backward's partials capped at 2 or 3 chunks).
SCRATCH=$((2 * (2 * 13 + 1) * 130)) "$bin" 37 13 130
SCRATCH=$((3 * (2 * 20 + 1) * 33)) "$bin" 61 20 33
echo "all emulated shapes match"
