#!/usr/bin/env python3
"""CPU vs CUDA: every neural trainer, same seed and config on both devices (wick issue #8).

Each case trains twice, `--device cpu` then `--device cuda` (or the two `--devices` given),
compares the headline metric of `metrics.json` within the case's tolerance, and prints a
markdown table with both devices' throughputs (`train_samples_per_s` / `train_steps_per_s`)
and the GPU's name. Exit status 1 when a case disagrees or fails.

    python3 scripts/cuda_agreement.py --wick gpu-bundle/wick [--out docs/cuda.md]
    python3 scripts/cuda_agreement.py --wick target/release/wick --devices cpu cpu   # dry run

Why tolerances and not bits: float32 sums run in another order on the GPU (cuBLAS, the fused
NADE kernels' reductions), so the runs differ by rounding from the first step and training
carries that on. The density models' test NLL after a few epochs agrees to well under 1%;
the probes' accuracies to a couple of points (a few test images); REINFORCE samples its
actions, and one flipped draw sends the episodes apart, so it is judged by both runs solving
CartPole (mean return of the last 100 episodes ≥ 475) rather than by equal curves.
Only the Python standard library is used (the GPU machine's Python suffices).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

# name, wick arguments, metric, tolerance: ("rel", r) |a−b| ≤ r·|a|, ("abs", d) |a−b| ≤ d,
# ("both_at_least", t) both ≥ t.
CASES = [
    ("fvsbn digits", ["train", "fvsbn", "--data", "digits", "--epochs", "5"], "test_nll", ("rel", 0.01)),
    ("nade digits", ["train", "nade", "--data", "digits", "--epochs", "5"], "test_nll", ("rel", 0.01)),
    ("made digits", ["train", "made", "--data", "digits", "--epochs", "5"], "test_nll", ("rel", 0.01)),
    ("nade mnist5k", ["train", "nade", "--data", "mnist5k", "--epochs", "2"], "test_nll", ("rel", 0.01)),
    ("made mnist5k", ["train", "made", "--data", "mnist5k", "--epochs", "2"], "test_nll", ("rel", 0.01)),
    ("reinforce CartPole", ["train", "reinforce", "--total-steps", "500000"], "mean_return_last100", ("both_at_least", 475.0)),
    ("simclr mlp digits", ["train", "simclr", "--data", "digits", "--encoder", "mlp", "--epochs", "5"], "probe_acc_all", ("abs", 0.03)),
    ("simclr cnn mnist5k", ["train", "simclr", "--data", "mnist5k", "--encoder", "cnn", "--epochs", "3"], "probe_acc_all", ("abs", 0.03)),
    ("masked cnn digits", ["train", "masked", "--data", "digits", "--encoder", "cnn", "--epochs", "5"], "probe_acc_all", ("abs", 0.03)),
]


def gpu_name():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        return out.stdout.strip() or "no GPU (nvidia-smi printed nothing)"
    except (OSError, subprocess.TimeoutExpired):
        return "no GPU (no nvidia-smi)"


def train(wick, args, device, logdir, name):
    cmd = [wick] + args + ["--seed", "0", "--device", device, "--logdir", logdir, "--run-name", name, "--quiet"]
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t
    if p.returncode != 0:
        return None, wall, f"exit {p.returncode}: {(p.stderr or p.stdout).strip().splitlines()[-1:]}"
    with open(os.path.join(logdir, name, "metrics.json")) as f:
        return json.load(f), wall, None


def agree(a, b, tol):
    kind, v = tol
    if a is None or b is None:
        return False
    if kind == "rel":
        return abs(a - b) <= v * abs(a)
    if kind == "abs":
        return abs(a - b) <= v
    return a >= v and b >= v


def fmt_tol(tol):
    kind, v = tol
    return {"rel": f"≤ {v:.0%} relative", "abs": f"≤ {v:g} absolute", "both_at_least": f"both ≥ {v:g}"}[kind]


def speed(m):
    if not m:
        return None
    return m.get("train_samples_per_s") or m.get("train_steps_per_s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wick", required=True, help="the wick binary (built with --features cuda for a real check)")
    ap.add_argument("--devices", nargs=2, default=["cpu", "cuda"], metavar=("A", "B"))
    ap.add_argument("--only", nargs="*", help="run only cases whose name contains one of these words")
    ap.add_argument("--out", help="also write the markdown report here")
    a = ap.parse_args()
    cases = [c for c in CASES if not a.only or any(w in c[0] for w in a.only)]
    tmp = tempfile.mkdtemp(prefix="wick-agree-")
    lines = [
        f"Device: **{gpu_name()}**; `{' '.join(sys.argv)}`",
        "",
        f"| case | metric | {a.devices[0]} | {a.devices[1]} | tolerance | agree | {a.devices[0]} samples/s | {a.devices[1]} samples/s | speed-up |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    ok = True
    for name, args, metric, tol in cases:
        res = []
        for i, dev in enumerate(a.devices):
            m, wall, err = train(a.wick, args, dev, tmp, f"{name.replace(' ', '-')}-{i}")
            if err:
                print(f"{name} on {dev}: {err}", file=sys.stderr)
            res.append(m)
        va, vb = (m.get(metric) if m else None for m in res)
        good = agree(va, vb, tol)
        ok &= good
        sa, sb = speed(res[0]), speed(res[1])
        ratio = f"{sb / sa:.1f}×" if sa and sb else "—"
        show = lambda v: "failed" if v is None else f"{v:.4f}"
        row = f"| {name} | {metric} | {show(va)} | {show(vb)} | {fmt_tol(tol)} | {'yes' if good else '**NO**'} | {sa or 0:,.0f} | {sb or 0:,.0f} | {ratio} |"
        lines.append(row)
        print(row, flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    report = "\n".join(lines) + "\n"
    print()
    print(report)
    if a.out:
        with open(a.out, "w") as f:
            f.write(report)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
