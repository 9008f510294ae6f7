#!/usr/bin/env bash
# Data-parallel CI (issue 17; docs/distributed.md), for .ci/run to call after the main suite:
# installs OpenMPI (Debian) when mpirun is missing, runs the MPI unit and end-to-end tests with
# `--features mpi` (mpirun --allow-run-as-root -np 2, and -np 3 --oversubscribe on 2 cores),
# the default build's one-line refusal under mpirun, and compile-checks `--features nccl` with
# the PyPI CUDA 13.0 toolkit plus the nvidia-nccl-cu13 wheel (no GPU needed for `cargo check`).
#
#   bash scripts/ci-mpi.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! dpkg -s libopenmpi-dev openmpi-bin libclang-dev >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenmpi-dev openmpi-bin libclang-dev >/dev/null
fi
export CI="${CI:-1}"
export WICK_REQUIRE_MPIRUN=1  # a missing mpirun is a failure here, not a skip

# The dist unit tests (ordered combine, micro-batch ranges, checksums) and the e2e suite.
cargo test --release -p wick-core --features mpi --lib dist
cargo test --release --features mpi --test dist_e2e
# The default build under mpirun: one line naming the feature.
cargo test --release --test dist_e2e

# NCCL compiles (cudarc's NCCL bindings through candle-core's `nccl` feature).
source scripts/cuda-env.sh
set -euo pipefail  # cuda-env.sh ends with set +e
.cuda-venv/bin/pip install --quiet --disable-pip-version-check nvidia-nccl-cu13
cargo check --release --features nccl
