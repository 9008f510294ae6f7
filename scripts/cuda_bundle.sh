#!/usr/bin/env bash
# Build, on this GPU-less machine, everything the lent GPU machine runs (it has no Rust
# toolchain): the `wick` binary with `--features cuda`, fully linked; wick-generative's test
# binary (its CUDA tests skip without a device and run with one); the NADE op benchmark. All
# stripped into gpu-bundle/ (git-ignored), with scripts/cuda_agreement.py beside them.
#
#   bash scripts/cuda_bundle.sh          # ~10 min on 2 cores the first time
#
# Then, with the device tool: `run(command="bash gpu-bundle/run.sh", carry=["gpu-bundle"])`.
# Recipe: ../shared/notes/cuda-build.md (CUDA 13.0 from PyPI, libcuda from Debian non-free).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/cuda-env.sh
source scripts/cuda-env.sh
set -euo pipefail

# Link directory: unversioned names for the linker. libcuda (the driver's user-space library)
# is only needed to link; the GPU machine's driver provides the real one.
link="$root/.cuda-link"
mkdir -p "$link"
if [ ! -e "$link/libcuda.so" ]; then
  src=/etc/apt/sources.list.d/debian.sources
  if [ -f "$src" ] && ! grep -q non-free "$src"; then
    sed -i 's/^Components: main$/Components: main non-free/' "$src"
  fi
  apt-get update -qq >/dev/null
  rm -rf "$link/deb" && mkdir -p "$link/deb"
  (cd "$link/deb" && apt-get download -qq libcuda1 >/dev/null)
  dpkg -x "$link"/deb/libcuda1_*.deb "$link/deb/x"
  ln -sf "$(find "$link/deb/x" -name 'libcuda.so.*' -type f | head -1)" "$link/libcuda.so"
fi
for lib in cublas cublasLt nvrtc cudart; do
  ln -sf "$CUDA_HOME/lib/lib$lib.so.13" "$link/lib$lib.so"
done
ln -sf "$CUDA_HOME/lib/libcurand.so.10" "$link/libcurand.so"

export RUSTFLAGS="-L $link"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target-cuda}"
cargo build --release --features cuda --bin wick
cargo build --release --features cuda -p wick-generative --example nade_cuda_bench
tests=$(cargo test --release --features cuda -p wick-generative --lib --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "wick_generative":
        print(m["executable"])')

out="$root/gpu-bundle"
rm -rf "$out" && mkdir -p "$out"
cp "$CARGO_TARGET_DIR/release/wick" "$out/wick"
cp "$CARGO_TARGET_DIR/release/examples/nade_cuda_bench" "$out/nade_cuda_bench"
cp "$tests" "$out/generative_tests"
strip "$out/wick" "$out/nade_cuda_bench" "$out/generative_tests"
# ~160 MB stripped (Candle's PTX is embedded) but ~19 MB as tar.xz: under the device tool's
# 64 MiB carry limit. run.sh unpacks it with Python's tarfile (no xz binary needed there).
(cd "$out" && tar -cf - wick generative_tests nade_cuda_bench | xz -T2 -6 > bins.tar.xz && rm wick generative_tests nade_cuda_bench)
cp scripts/cuda_agreement.py "$out/"
cat > "$out/run.sh" <<'EOF'
#!/usr/bin/env bash
# On the GPU machine, from the repository root: CUDA tests, the NADE op benchmark, and the
# CPU-vs-CUDA agreement of every neural trainer (writes $OUT/cuda.md when $OUT is set).
set -uo pipefail
bundle="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
here="$(mktemp -d)"
python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$bundle/bins.tar.xz" "$here"
cp "$bundle/cuda_agreement.py" "$here/"
# PyTorch's wheels bring the cu13 libraries the binary links (libcublas, libcurand, libnvrtc).
lib=$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null || true)
export LD_LIBRARY_PATH="${lib:+$lib:}${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "== wick-generative tests (CUDA ones run here) =="
"$here/generative_tests" cuda --test-threads 1 2>&1 | tail -25
echo "== NADE op benchmark =="
"$here/nade_cuda_bench" 2>&1 | tail -20
echo "== CPU vs CUDA agreement =="
python3 "$here/cuda_agreement.py" --wick "$here/wick" ${OUT:+--out "$OUT/cuda.md"} "$@"
EOF
chmod +x "$out/run.sh"
du -sh "$out"/*
