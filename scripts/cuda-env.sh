#!/usr/bin/env bash
# Source this to build wick with `--features cuda` on a machine without a GPU (recipe:
# ../shared/notes/cuda-build.md). It installs the CUDA 13.0 toolchain from PyPI wheels into
# .cuda-venv (13.0 matches the lent GPUs' driver 580; newer toolkits emit PTX it rejects) and
# exports CUDA_HOME, PATH and CUDA_COMPUTE_CAP=90 (H100/H200).
#
#   source scripts/cuda-env.sh && cargo check --features cuda
#
# A full link (cargo build --features cuda) also needs libcuda: see the notes, step 2-3.
set -e
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.cuda-venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cccl==13.0.*" \
  "nvidia-cuda-crt==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cublas==13.0.*" "nvidia-cuda-nvrtc==13.0.*" nvidia-curand
cu13="$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')"
export CUDA_HOME="$cu13"
export PATH="$cu13/bin:$PATH"
export CUDA_COMPUTE_CAP=90
set +e
