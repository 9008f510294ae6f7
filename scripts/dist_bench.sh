#!/usr/bin/env bash
# Data-parallel speed (issue 17; docs/distributed.md "Speed"): one process with --threads 2
# against `mpirun -np 2` ranks of --threads 1, alternated for ROUNDS rounds on NADE and MADE
# (the full MNIST where its files are found, else mnist5k) and SimCLR (mnist5k, 4 × the epochs;
# its linear probes, on rank 0 alone, are outside the figure).
# Prints each run's samples/s (metrics.json's train_samples_per_s), the ratio of the medians
# (2 ranks / 1 process; the issue's target is ≥ 0.9), the load average before and after, and
# the share of the gradient steps' time spent in the combine (combine_seconds / step_seconds of
# rank 0's metrics.json, mpirun side). Run it on a quiet machine; a loaded one gives noise.
#
#   bash scripts/dist_bench.sh
#   WICK_BENCH_EPOCHS=1 WICK_BENCH_ROUNDS=1 bash scripts/dist_bench.sh    # a quick check that it works
#
# Environment: WICK_BENCH_EPOCHS (default 5), WICK_BENCH_ROUNDS (default 3),
# WICK_BENCH_MICRO=1 gives the one process --micro-batches 2 (the ranks' arithmetic, same bits)
# instead of the plain step, WICK_BENCH_OUT (default: a fresh temporary directory).
set -euo pipefail
cd "$(dirname "$0")/.."

epochs=${WICK_BENCH_EPOCHS:-5}
rounds=${WICK_BENCH_ROUNDS:-3}
out=${WICK_BENCH_OUT:-$(mktemp -d /tmp/dist_bench.XXXXXX)}
mkdir -p "$out"
one_extra=()
[ "${WICK_BENCH_MICRO:-0}" = 1 ] && one_extra=(--micro-batches 2)

cargo build --release --features mpi --quiet
wick=${CARGO_TARGET_DIR:-$PWD/target}/release/wick  # cargo builds there
mpirun=(mpirun -np 2)
[ "$(id -u)" = 0 ] && mpirun+=(--allow-run-as-root)
command -v mpirun >/dev/null || { echo "dist_bench: mpirun not found (apt-get install openmpi-bin libopenmpi-dev)" >&2; exit 2; }

# The density models on the full MNIST (issue 17) where its files are found: WICK_BENCH_DATA
# (mnist or mnist5k) chooses; by default mnist when ../shared/data/mnist or $WICK_DATA_DIR/mnist
# holds them, else mnist5k with a note.
data=${WICK_BENCH_DATA:-auto}
data_args=()
if [ "$data" = auto ]; then
  data=mnist5k
  if [ -d ../shared/data/mnist ]; then
    data=mnist; data_args=(--data-dir "$(cd ../shared/data && pwd)")
  elif [ -n "${WICK_DATA_DIR:-}" ] && [ -d "$WICK_DATA_DIR/mnist" ]; then
    data=mnist
  else
    echo "note: no MNIST files found (../shared/data/mnist, \$WICK_DATA_DIR/mnist); the density models use mnist5k"
  fi
fi
declare -A jobs=(
  [nade]="nade --data $data ${data_args[*]} --batch 100 --epochs $epochs --patience 0 --log-every 0"
  [made]="made --data $data ${data_args[*]} --batch 100 --epochs $epochs --patience 0 --log-every 0"
  [simclr]="simclr --data mnist5k --epochs $((4 * epochs)) --probe-every 1000"
)
order=(nade made simclr)

# SimCLR only where it trains data-parallel: a refusal is one line and no run.
probe=$("${mpirun[@]}" "$wick" train simclr --data digits --epochs 1 --quiet --logdir "$out" --run-name probe 2>&1 >/dev/null || true)
if grep -q "does not train data-parallel" <<<"$probe"; then
  echo "note: simclr does not train data-parallel in this build; skipped"
  order=(nade made)
fi

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)    density data $data, epochs $epochs, rounds $rounds, out $out"
for r in $(seq 1 "$rounds"); do
  for name in "${order[@]}"; do
    read -r -a args <<<"${jobs[$name]}"
    # Alternate which side goes first from round to round.
    sides=(one mpi); [ $((r % 2)) = 0 ] && sides=(mpi one)
    for side in "${sides[@]}"; do
      run="${name}_${side}_$r"
      if [ "$side" = one ]; then
        "$wick" train "${args[@]}" "${one_extra[@]}" --threads 2 --quiet --logdir "$out" --run-name "$run" >/dev/null
      else
        "${mpirun[@]}" "$wick" train "${args[@]}" --threads 1 --quiet --logdir "$out" --run-name "$run" >/dev/null
      fi
      python3 - "$out/$run/metrics.json" "$run" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
share = ""
if m.get("step_seconds"):
    share = f"  combine {m.get('combine_seconds', 0.0):.3f} s of {m['step_seconds']:.3f} s in steps ({100 * m.get('combine_seconds', 0.0) / m['step_seconds']:.1f}%)"
print(f"{sys.argv[2]:<14} {m['train_samples_per_s']:10.1f} samples/s{share}")
EOF
    done
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$out" "$rounds" "${order[@]}" <<'EOF'
import json, statistics, sys
out, rounds, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print(f"{'model':<8} {'1 process x 2 threads':>22} {'2 ranks x 1 thread':>20} {'ratio of medians':>17} {'combine share (2 ranks)':>24}")
for n in names:
    m = {s: [json.load(open(f"{out}/{n}_{s}_{r}/metrics.json")) for r in range(1, rounds + 1)] for s in ("one", "mpi")}
    one = statistics.median(x["train_samples_per_s"] for x in m["one"])
    mpi = statistics.median(x["train_samples_per_s"] for x in m["mpi"])
    shares = [x["combine_seconds"] / x["step_seconds"] for x in m["mpi"] if x.get("step_seconds")]
    share = f"{100 * statistics.median(shares):.1f}%" if shares else "n/a (not reported)"
    print(f"{n:<8} {one:>22.1f} {mpi:>20.1f} {mpi / one:>17.3f} {share:>24}")
EOF
