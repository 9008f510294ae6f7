#!/usr/bin/env bash
# Alternate two wick binaries (A B) on the same short MADE and SimCLR runs, two rounds, and print
# each run's samples/s and wall seconds with the load average before and after:
#   scripts/ab_bench.sh BIN_A BIN_B
set -u
A=$1; B=$2; out=/tmp/abbench; rm -rf $out; mkdir -p $out
export RAYON_NUM_THREADS=2
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for rep in 1 2; do
  for side in A B; do
    bin=${!side}
    for job in "made --data mnist5k --epochs 10 --patience 0" "simclr --data mnist5k --encoder cnn --epochs 1"; do
      name=$(echo "$job" | cut -d' ' -f1)_${side}_$rep
      t0=$(date +%s.%N)
      $bin train $job --threads 2 --quiet --logdir $out --run-name $name >/dev/null 2>&1 || echo "FAILED $name"
      t1=$(date +%s.%N)
      sps=$(python3 -c "import json;m=json.load(open('$out/$name/metrics.json'));print({k:round(v,1) for k,v in m.items() if k.endswith('_per_s') or k in ('test_nll','probe_acc_all')})")
      printf "%-14s wall %6.1f s  %s\n" "$name" "$(echo "$t1 - $t0" | bc)" "$sps"
    done
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
