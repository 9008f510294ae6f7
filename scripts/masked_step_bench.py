#!/usr/bin/env python3
"""Training-step throughput of FVSBN and MADE, wick against PyTorch, alternating on a shared machine.

Each round runs, for each model, wick's step benchmark (generative/examples/prof_step.rs: the
model's `loss_and_grads` + Adam on random binary batches of 100 x 784, MADE with H=500, one hidden
layer) and then PyTorch's (`scripts/torch_density.py --bench-steps`: the same architecture, loss
and Adam), both pinned to --threads threads, and prints the ratio of the two medians. Alternating
keeps both under the same background load; the ratio of each round and their median are printed.

    cargo build --release --example prof_step -p wick-generative
    /work/scratch/torchvenv/bin/python scripts/masked_step_bench.py --rounds 5 --threads 2

PyTorch runs with OMP_WAIT_POLICY=PASSIVE unless --omp-active: on a loaded machine the default
(spinning) OpenMP barrier collapses PyTorch's 2-thread throughput by 10x or more, which would
flatter wick. Steps only: no evaluation, data loading or checkpoints (see torch_density.py
--side-by-side for whole training runs).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_json(cmd, env):
    out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--models", default="fvsbn,made")
    p.add_argument("--wick-steps", type=int, default=40)
    p.add_argument("--torch-steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--omp-active", action="store_true", help="leave PyTorch's OpenMP threads spinning (its default)")
    p.add_argument("--prof-step", default=os.path.join(ROOT, "target/release/examples/prof_step"))
    args = p.parse_args()
    t = str(args.threads)
    wenv = dict(os.environ, RAYON_NUM_THREADS=t)
    tenv = dict(os.environ, OMP_NUM_THREADS=t)
    if not args.omp_active:
        tenv["OMP_WAIT_POLICY"] = "PASSIVE"
    ratios = {m: [] for m in args.models.split(",")}
    for r in range(args.rounds):
        for m in ratios:
            w = run_json([args.prof_step, m, str(args.wick_steps), str(args.repeats)], wenv)["train_samples_per_s"]
            tm = run_json([sys.executable, os.path.join(ROOT, "scripts/torch_density.py"), "--model", m, "--data", "mnist5k",
                           "--bench-steps", str(args.torch_steps), "--repeats", str(args.repeats), "--threads", t], tenv)
            ratios[m].append(w / tm["train_samples_per_s"])
            print(f"round {r + 1} {m:6s} wick {w:8.0f}  PyTorch {tm['train_samples_per_s']:8.0f} samples/s  ratio {w / tm['train_samples_per_s']:.2f}",
                  flush=True)
    for m, v in ratios.items():
        print(f"{m}: median ratio wick/PyTorch {statistics.median(v):.2f} over {len(v)} rounds ({args.threads} threads); "
              f"each: {', '.join(f'{x:.2f}' for x in v)}")


if __name__ == "__main__":
    main()
