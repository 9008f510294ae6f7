#!/usr/bin/env python3
"""Memory stays flat over long runs (issue 9's stress check).

Runs long wick trainings and samples the process's resident set size (VmRSS from /proc) every
0.1 s. "Start" is the largest RSS seen in the first 20% of the run's wall time (after start-up
allocations), "end" the largest in the last 20%. The run passes when end <= 1.10 x start.

    python3 scripts/stress_rss.py --wick target/release/wick            # both runs
    python3 scripts/stress_rss.py --wick target/release/wick --only mc-es

The runs: MC exploring starts on Blackjack for 10^8 episodes with --threads 2, and NADE on
mnist5k (H=500) for --nade-epochs epochs (default 100, under a minute on 2 cores).
Exit status 1 if any run's memory grew by more than 10% or a run failed.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def measure(name, cmd):
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    samples = []  # (seconds since start, rss kB)
    while p.poll() is None:
        r = rss_kb(p.pid)
        if r is not None:
            samples.append((time.time() - t0, r))
        time.sleep(0.1)
    err = p.stderr.read().decode()
    wall = time.time() - t0
    if p.returncode != 0:
        print(f"{name}: failed (exit {p.returncode}): {err.strip()}")
        return False
    if len(samples) < 10:
        print(f"{name}: too short to judge ({wall:.1f} s, {len(samples)} samples)")
        return False
    start = max(r for t, r in samples if t <= 0.2 * wall)
    end = max(r for t, r in samples if t >= 0.8 * wall)
    peak = max(r for _, r in samples)
    ok = end <= 1.10 * start
    print(f"{name}: {wall:.1f} s, RSS start {start / 1024:.1f} MB, end {end / 1024:.1f} MB "
          f"({(end / start - 1) * 100:+.1f}%), peak {peak / 1024:.1f} MB: {'flat' if ok else 'GREW'}")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wick", default="target/release/wick")
    ap.add_argument("--only", choices=["mc-es", "nade"])
    ap.add_argument("--episodes", type=int, default=100_000_000)
    ap.add_argument("--nade-epochs", type=int, default=100)
    args = ap.parse_args()
    logdir = tempfile.mkdtemp(prefix="wick-stress-")
    runs = {
        "mc-es": [args.wick, "train", "mc-es", "--env", "Blackjack-v1", "--episodes", str(args.episodes),
                  "--threads", "2", "--quiet", "--logdir", logdir, "--run-name", "mc-es"],
        "nade": [args.wick, "train", "nade", "--data", "mnist5k", "--epochs", str(args.nade_epochs),
                 "--patience", "0", "--quiet", "--logdir", logdir, "--run-name", "nade"],
    }
    ok = True
    for name, cmd in runs.items():
        if args.only and name != args.only:
            continue
        print("$", " ".join(cmd), flush=True)
        ok &= measure(name, cmd)
    print(f"(run directories in {logdir})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
