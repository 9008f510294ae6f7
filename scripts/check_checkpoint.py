"""Oracle: Python's `safetensors` reads a wick FVSBN run and numpy recomputes log p(x).

usage: python scripts/check_checkpoint.py RUN_DIR PER_EXAMPLE.csv DATA.csv.gz

Checks that every tensor docs/checkpoints.md documents for FVSBN is in the files with the
documented shape and dtype, that the metadata parses, and that log p(x) computed in numpy
from best.safetensors equals what `wick eval --per-example` wrote (test split: row i with
i % 10 == 0). Exits non-zero with a message on the first mismatch.
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


run, per_example, data_path = sys.argv[1:4]
ck = load_file(f"{run}/checkpoint.safetensors")
best = load_file(f"{run}/best.safetensors")
with safe_open(f"{run}/checkpoint.safetensors", "np") as f:
    meta = json.loads(f.metadata()["wick"])
cfg = meta["config"]
state = meta["train_state"]

with gzip.open(data_path, "rt") as f:
    rows = np.array([[float(v) for v in line.split(",")] for line in f if line.strip()])
x_all = (rows[:, :-1] >= cfg["threshold"]).astype(np.float64)
D = x_all.shape[1]

expect = {
    "fvsbn.w": ((D, D), np.float32),
    "fvsbn.b": ((D,), np.float32),
    "optim.exp_avg.fvsbn.w": ((D, D), np.float32),
    "optim.exp_avg_sq.fvsbn.w": ((D, D), np.float32),
    "optim.exp_avg.fvsbn.b": ((D,), np.float32),
    "optim.exp_avg_sq.fvsbn.b": ((D,), np.float32),
    "rng.data": ((4,), np.uint64),
}
for name, (shape, dtype) in expect.items():
    if name not in ck:
        fail(f"checkpoint lacks {name}; has {sorted(ck)}")
    if ck[name].shape != shape or ck[name].dtype != dtype:
        fail(f"{name}: {ck[name].shape} {ck[name].dtype}, expected {shape} {dtype}")
for name in ["fvsbn.w", "fvsbn.b"]:
    if best[name].shape != expect[name][0]:
        fail(f"best.safetensors {name} has shape {best[name].shape}")
if np.any(np.triu(ck["fvsbn.w"]) != 0):
    fail("fvsbn.w is not strictly lower triangular")
for key in ["epoch", "batch", "step", "best_epoch"]:
    if key not in state:
        fail(f"train_state lacks {key}: {state}")
if state["step"] <= 0:
    fail(f"step counter {state['step']}")

w = best["fvsbn.w"].astype(np.float64)
b = best["fvsbn.b"].astype(np.float64)
x = x_all[np.arange(len(x_all)) % 10 == 0]
z = x @ w.T + b
log_p = -(np.maximum(z, 0) - z * x + np.log1p(np.exp(-np.abs(z)))).sum(1)

with open(per_example) as f:
    got = [r for r in csv.DictReader(f) if r["split"] == "test"]
if len(got) != len(x):
    fail(f"{len(got)} test rows in {per_example}, expected {len(x)}")
wick_lp = np.array([float(r["log_prob"]) for r in got])
err = np.max(np.abs(wick_lp - log_p))
if not err < 1e-3:
    fail(f"log p differs from numpy by up to {err}")
if [int(r["index"]) for r in got] != list(range(0, len(x_all), 10)):
    fail("per-example indices are not the test rows")
print(f"ok: {len(expect)} tensors, metadata, log p(x) of {len(x)} test images within {err:.2e} nats of numpy")
