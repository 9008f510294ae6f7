#!/usr/bin/env bash
# Same bits before and after a refactor: short runs of every trainer with two wick binaries,
# compared on checkpoint bytes, metrics.json (timing fields aside), config.toml and the
# TensorBoard scalars/histograms/images/texts (timing tags aside; read with scripts/tb_read.py).
# Each trainer also runs once crashed at its 2nd log point (WICK_FAULT=after-log:2) and resumed.
#
# Usage: scripts/same_bits.sh BEFORE_BIN AFTER_BIN [NAME_FILTER]
# Needs WICK_PYTHON (or .venv/bin/python) with tensorboard installed. Exit 0 iff all agree.
set -u
before=$(realpath "$1"); after=$(realpath "$2"); filter=${3:-}
here=$(cd "$(dirname "$0")" && pwd)
py=${WICK_PYTHON:-$here/../.venv/bin/python}
work=$(mktemp -d /tmp/same_bits.XXXXXX)
trap 'rm -rf "$work"' EXIT

# name | args (every run adds --threads 1 --quiet --seed 3)
cases=(
  "fvsbn|train fvsbn --epochs 3 --log-every 2"
  "nade|train nade --epochs 2 --log-every 1 --hidden 20"
  "made|train made --epochs 2 --log-every 1 --hidden 30 --masks 2 --order random"
  "made-oa|train made --epochs 2 --log-every 1 --hidden 30 --masks 2 --order-agnostic --layers 2"
  "oanade|train oanade --epochs 2 --log-every 1 --hidden 20 --orderings 2"
  "nade-microbatches|train nade --epochs 2 --log-every 1 --hidden 20 --micro-batches 4"
  "reinforce|train reinforce --total-steps 3000 --checkpoint-every 3 --log-every 5 --stop-on-solve false --baseline"
  "mc-es|train mc-es --episodes 20000 --batch 1000"
  "mc-es-grid|train mc-es --env GridWorld --episodes 2000"
  "mc-epsilon-greedy|train mc-epsilon-greedy --episodes 20000 --batch 1000"
  "mc-epsilon-greedy-grid|train mc-epsilon-greedy --env GridWorld --episodes 3000 --batch 10"
  "mc-prediction|train mc-prediction --episodes 20000 --batch 1000"
  "mc-prediction-q|train mc-prediction --env FrozenLake-v1 --target q --episodes 5000"
  "mc-basic|train mc-basic --env GridWorld --iterations 5"
  "mc-off-policy-prediction|train mc-off-policy-prediction --runs 3 --episodes 1000"
  "mc-off-policy-prediction-fl|train mc-off-policy-prediction --env FrozenLake-v1 --episodes 5000"
  "mc-off-policy-control|train mc-off-policy-control --episodes 20000 --batch 1000"
  "masked|train masked --epochs 2 --probe-every 1 --log-every 1 --batch 128"
  "masked-oa|train masked --epochs 2 --probe-every 2 --log-every 1 --batch 128 --mask order-agnostic"
  "simclr|train simclr --epochs 2 --probe-every 1 --log-every 1 --batch 128 --encoder cnn"
  "vicreg|train vicreg --epochs 2 --probe-every 1 --log-every 1 --batch 128"
)

compare() { # dirA dirB label
  "$py" - "$1" "$2" "$3" "$here/tb_read.py" <<'PY'
import json, subprocess, sys, os, filecmp
a, b, label, tb = sys.argv[1:5]
bad = []
def tbjson(d):
    out = json.loads(subprocess.run([sys.executable, tb, d], check=True, capture_output=True, text=True).stdout)
    timing = ("samples_per_s", "SPS", "episodes_per_s")
    out["scalars"] = {k: v for k, v in out["scalars"].items() if not k.endswith(timing)}
    return out
timing_keys = {"train_samples_per_s", "episodes_per_s", "train_steps_per_s", "train_seconds"}
fa, fb = sorted(f for f in os.listdir(a) if not f.startswith("events.")), sorted(f for f in os.listdir(b) if not f.startswith("events."))
if fa != fb: bad.append(f"files differ: {fa} vs {fb}")
for f in set(fa) & set(fb):
    pa, pb = os.path.join(a, f), os.path.join(b, f)
    if f == "metrics.json":
        ma, mb = json.load(open(pa)), json.load(open(pb))
        for m in (ma, mb):
            # Wall-clock figures: the named ones and any *_per_s / *_seconds (step_seconds, combine_seconds).
            for k in [k for k in m if k in timing_keys or k.endswith("_per_s") or k.endswith("_seconds")]: m.pop(k)
        if ma != mb: bad.append(f"metrics.json differs: {ma} vs {mb}")
    elif not filecmp.cmp(pa, pb, shallow=False):
        bad.append(f"{f} bytes differ")
ta, tb_ = tbjson(a), tbjson(b)
for kind in ta:
    if ta[kind] != tb_[kind]:
        ka, kb = set(ta[kind]), set(tb_[kind])
        diff = [k for k in ka | kb if ta[kind].get(k) != tb_[kind].get(k)]
        bad.append(f"tensorboard {kind} differ: {sorted(diff)[:5]}")
n = sum(len(v) for v in ta["scalars"].values())
if bad:
    print(f"DIFF  {label}: " + "; ".join(bad)); sys.exit(1)
print(f"same  {label}: {len(fa)} files, {n} scalar points, {len(ta['histograms'])} histogram tags, {len(ta['images'])} image tags")
PY
}

fail=0
ran=0
for c in "${cases[@]}"; do
  name=${c%%|*}; args=${c#*|}
  [[ -n "$filter" && "$name" != *$filter* ]] && continue
  algo=$(echo "$args" | awk '{print $2}')
  for side in before after; do
    bin=${!side}
    # shellcheck disable=SC2086
    "$bin" $args --threads 1 --quiet --seed 3 --logdir "$work/$side" --run-name "$name" >/dev/null 2>"$work/$side-$name.err" \
      || { echo "FAIL  $name: $side run failed: $(tail -1 "$work/$side-$name.err")"; fail=1; continue 2; }
    # Crash at the 2nd log point, then resume.
    # shellcheck disable=SC2086
    ( WICK_FAULT=after-log:2 "$bin" $args --threads 1 --quiet --seed 3 --logdir "$work/$side" --run-name "$name-crash"; true ) >/dev/null 2>&1
    "$bin" train "$algo" --resume "$work/$side/$name-crash" --threads 1 --quiet >/dev/null 2>"$work/$side-$name-resume.err" \
      || { echo "FAIL  $name: $side resume failed: $(tail -1 "$work/$side-$name-resume.err")"; fail=1; continue 2; }
  done
  ran=$((ran + 1))
  compare "$work/before/$name" "$work/after/$name" "$name" || fail=1
  compare "$work/before/$name-crash" "$work/after/$name-crash" "$name (crash+resume)" || fail=1
done
if [ $fail = 0 ]; then echo "ALL SAME: $ran cases (each fresh and crash+resume)"; else echo "SOME DIFFER (of $ran cases)"; fi
exit $fail
