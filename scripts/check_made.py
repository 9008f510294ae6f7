"""Oracle: numpy recomputes a MADE run's mixture log-likelihood from its checkpoint.

usage: python scripts/check_made.py RUN_DIR PER_EXAMPLE.csv DATA.csv.gz

Reads best.safetensors with Python's `safetensors` (the tensors docs/checkpoints.md lists:
made.w{l}, made.b{l}, the 0/1 masks made.mask{l}.k{k} stored as U8, the orderings
made.order.k{k}, and with direct connections made.direct and made.mask_direct.k{k}), checks that
every mask set is autoregressive in its ordering (output d depends only on inputs of lower
degree: the product of the masks is zero elsewhere, and not all zero),
and computes in float64, as the docs' snippet does, log p_k(x) with h = h @ (W * M) + b, and the
mixture logsumexp_k log p_k(x) - log K. Compares with what `wick eval --per-example` wrote for the
test split (rows i with i % 10 == 0). Exits non-zero with a message on the first mismatch.
"""
import sys

import numpy as np
from density_oracle import fail, load_run, max_error_against_wick, mixture

run, per_example, data_path = sys.argv[1:4]
t, cfg, x_all, x = load_run(run, data_path)
B, D = x.shape
H, L, K = cfg["hidden"], cfg["layers"], cfg["masks"]
direct = bool(cfg.get("direct"))

sizes = [D] + [H] * L + [D]
for l in range(L + 1):
    for name, shape, dtype in [(f"made.w{l}", (sizes[l], sizes[l + 1]), np.float32), (f"made.b{l}", (sizes[l + 1],), np.float32)] + [
        (f"made.mask{l}.k{k}", (sizes[l], sizes[l + 1]), np.uint8) for k in range(K)
    ]:
        if name not in t or t[name].shape != shape or t[name].dtype != dtype:
            got = (t[name].shape, t[name].dtype) if name in t else "nothing"
            fail(f"{name}: expected {shape} {np.dtype(dtype)}, the file has {got}")
if direct:
    for name, dtype in [("made.direct", np.float32)] + [(f"made.mask_direct.k{k}", np.uint8) for k in range(K)]:
        if name not in t or t[name].shape != (D, D) or t[name].dtype != dtype:
            fail(f"{name}: expected {(D, D)} {np.dtype(dtype)} with direct connections")
elif "made.direct" in t:
    fail("made.direct is in the file but the config has no direct connections")
for k in range(K):
    order = t[f"made.order.k{k}"].astype(int)
    if sorted(order) != list(range(1, D + 1)):
        fail(f"made.order.k{k} is not a permutation of 1..{D}")
    reach = t[f"made.mask0.k{k}"].astype(np.int64)
    for l in range(1, L + 1):
        reach = np.minimum(reach @ t[f"made.mask{l}.k{k}"].astype(np.int64), 1)
    allowed = order[:, None] < order[None, :]  # input i may reach output d iff m0(i) < m0(d)
    if direct:
        reach = np.maximum(reach, t[f"made.mask_direct.k{k}"])
    if np.any(reach[~allowed]):
        fail(f"mask set {k}: some output depends on an input that is not before it in the ordering")
    if not reach.any():
        fail(f"mask set {k}: no output depends on any input")


def log_p_member(k):
    h = x
    for l in range(L + 1):
        h = h @ (t[f"made.w{l}"].astype(np.float64) * t[f"made.mask{l}.k{k}"]) + t[f"made.b{l}"]
        if l < L:
            h = np.maximum(h, 0)
    z = h
    if direct:
        z = z + x @ (t["made.direct"].astype(np.float64) * t[f"made.mask_direct.k{k}"])
    return -(np.maximum(z, 0) - z * x + np.log1p(np.exp(-np.abs(z)))).sum(1)


members = np.stack([log_p_member(k) for k in range(K)])
mix = mixture(members)
err = max_error_against_wick(per_example, len(x_all), mix)
if not err < 1e-3:
    fail(f"mixture log p differs from numpy by up to {err}")
spread = np.max(np.abs(members - members.mean(0)))
print(f"ok: mixture of K={K} mask sets, {L} layer(s), {'direct connections, ' if direct else ''}u8 masks: log p of {B} test images within {err:.2e} nats of numpy (members differ by up to {spread:.2f})")
