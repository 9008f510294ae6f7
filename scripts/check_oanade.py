"""Oracle: numpy recomputes an order-agnostic NADE run's ensemble log-likelihood from its checkpoint.

usage: python scripts/check_oanade.py RUN_DIR PER_EXAMPLE.csv DATA.csv.gz

Reads best.safetensors with Python's `safetensors` (the tensors docs/density.md lists: oanade.wx,
oanade.wm, oanade.b1, oanade.w{l}/oanade.b{l}, oanade.v, oanade.c, the orderings oanade.order.k{k})
and computes, in float64 and without wick's carried pre-activation, the network run with each
ordering's mask set explicitly: log p_k(x) = sum_t log p(x_{o_t} | x_{o_<t}), and the ensemble
logsumexp_k log p_k(x) - log K. Compares with what `wick eval --per-example` wrote for the test
split (rows i with i % 10 == 0). Exits non-zero with a message on the first mismatch.
"""
import sys

import numpy as np
from density_oracle import fail, load_run, max_error_against_wick, mixture

run, per_example, data_path = sys.argv[1:4]
best, cfg, x_all, x = load_run(run, data_path)
B, D = x.shape
H, L, K = cfg["hidden"], cfg["layers"], cfg["orderings"]

p = {k: v.astype(np.float64) for k, v in best.items()}
expect = {"oanade.wx": (D, H), "oanade.wm": (D, H), "oanade.b1": (H,), "oanade.v": (H, D), "oanade.c": (D,)}
for l in range(2, L + 1):
    expect[f"oanade.w{l}"] = (H, H)
    expect[f"oanade.b{l}"] = (H,)
for k in range(K):
    expect[f"oanade.order.k{k}"] = (D,)
for name, shape in expect.items():
    if name not in best or best[name].shape != shape:
        fail(f"{name}: expected shape {shape}, file has {best[name].shape if name in best else 'nothing'}")


def log_p(order):
    lp = np.zeros(B)
    m = np.zeros((B, D))
    for i in order:
        h = np.maximum((x * m) @ p["oanade.wx"] + m @ p["oanade.wm"] + p["oanade.b1"], 0)
        for l in range(2, L + 1):
            h = np.maximum(h @ p[f"oanade.w{l}"] + p[f"oanade.b{l}"], 0)
        z = h @ p["oanade.v"][:, i] + p["oanade.c"][i]
        lp -= np.maximum(z, 0) - z * x[:, i] + np.log1p(np.exp(-np.abs(z)))
        m[:, i] = 1
    return lp


orders = [best[f"oanade.order.k{k}"].astype(int) for k in range(K)]
for o in orders:
    if sorted(o) != list(range(D)):
        fail(f"an ordering is not a permutation of 0..{D - 1}: {o}")
members = np.stack([log_p(o) for o in orders])
ens = mixture(members)
err = max_error_against_wick(per_example, len(x_all), ens)
if not err < 1e-3:
    fail(f"ensemble log p differs from numpy by up to {err}")
spread = np.max(np.abs(members - members.mean(0)))
print(f"ok: {len(expect)} tensors; ensemble of K={K} orderings, {L} layer(s): log p of {B} test images within {err:.2e} nats of numpy (members differ by up to {spread:.2f})")
