"""What the numpy oracles of density-model checkpoints share (check_made.py, check_oanade.py).

A run's best.safetensors and resolved config, the data set binarized by the run's threshold with
its test rows (index % 10 == 0, the split of digits and mnist5k), the mixture/ensemble
logsumexp_k log p_k(x) - log K, and the comparison with what `wick eval --per-example` wrote.
"""
import csv
import gzip
import json
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def load_run(run, data_path):
    """(tensors, config, every row binarized, the test rows) of a run on a .csv.gz data set."""
    tensors = load_file(f"{run}/best.safetensors")
    with safe_open(f"{run}/best.safetensors", "np") as f:
        cfg = json.loads(f.metadata()["wick"])["config"]
    with gzip.open(data_path, "rt") as f:
        rows = np.array([[float(v) for v in line.split(",")] for line in f if line.strip()])
    x_all = (rows[:, :-1] >= cfg["threshold"]).astype(np.float64)
    return tensors, cfg, x_all, x_all[np.arange(len(x_all)) % 10 == 0]


def mixture(members):
    """logsumexp_k log p_k(x) - log K of members [K, B]."""
    mx = members.max(0)
    return mx + np.log(np.exp(members - mx).sum(0)) - np.log(len(members))


def max_error_against_wick(per_example, n_rows, log_p):
    """Largest |wick's log_prob - log_p| over the test rows of `wick eval --per-example`."""
    with open(per_example) as f:
        got = [r for r in csv.DictReader(f) if r["split"] == "test"]
    if [int(r["index"]) for r in got] != list(range(0, n_rows, 10)):
        fail("per-example indices are not the test rows")
    return np.max(np.abs(np.array([float(r["log_prob"]) for r in got]) - log_p))
