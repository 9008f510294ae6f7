#!/usr/bin/env python3
"""Does early stopping per conditional beat early stopping on the summed valid NLL for FVSBN?

An FVSBN's conditionals p(x_d | x_<d) = sigmoid(b_d + W_d,<d x_<d) have disjoint parameters
(row d of W and b_d), so each is its own logistic regression and could keep the epoch where its
own valid NLL was lowest. This script trains the FVSBN of `wick train fvsbn` (W's lower triangle
~ U(+-1/sqrt(D)), b = 0, Adam 1e-3 with coupled L2 like torch.optim.Adam's weight_decay, batch
100, the rate decayed to 0 by a cosine over the run) in numpy on the `.amat` files of
`wick data export mnist --format amat --out DIR`, records the valid and test NLL of every
conditional after every epoch, and prints both selections:

    scripts/fvsbn_per_conditional.py DIR [--epochs 100] [--weight-decay 1e-4] [--lr 1e-3]
                                         [--l1 0] [--input-dropout 0]

`--l1 L` adds L·sign(W) to W's gradient (an L1 penalty); `--input-dropout P` zeroes each
conditioning input with probability P (scaling the rest by 1/(1−P)) while the targets stay whole.

numpy is the only requirement (one BLAS thread is plenty: about 8 s an epoch on MNIST).
docs/density.md has the outcome.
"""
import argparse
import time

import numpy as np

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("data", help="folder of binarized_mnist_{train,valid,test}.amat")
ap.add_argument("--epochs", type=int, default=100)
ap.add_argument("--weight-decay", type=float, default=1e-4)
ap.add_argument("--lr", type=float, default=1e-3)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--l1", type=float, default=0.0)
ap.add_argument("--input-dropout", type=float, default=0.0)
a = ap.parse_args()

ld = lambda s: np.loadtxt(f"{a.data}/binarized_mnist_{s}.amat", dtype=np.float32)
xtr, xva, xte = ld("train"), ld("valid"), ld("test")
D, B = xtr.shape[1], 100
rng = np.random.default_rng(a.seed)
M = np.tril(np.ones((D, D), np.float32), -1)
W = (rng.uniform(-1, 1, (D, D)) / np.sqrt(D)).astype(np.float32) * M
b = np.zeros(D, np.float32)
state = [(W, np.zeros_like(W), np.zeros_like(W)), (b, np.zeros_like(b), np.zeros_like(b))]
nb = len(xtr) // B
total, t = a.epochs * nb, 0


def nll_per_conditional(x):
    z = x @ W.T + b
    return (np.maximum(z, 0) - z * x + np.log1p(np.exp(-np.abs(z)))).mean(0)


va_hist, te_hist = [], []
for e in range(a.epochs):
    perm, t0 = rng.permutation(len(xtr)), time.time()
    for i in range(nb):
        x = xtr[perm[i * B:(i + 1) * B]]
        xin = x if a.input_dropout == 0 else x * (rng.random(x.shape) >= a.input_dropout) / (1 - a.input_dropout)
        g = (1 / (1 + np.exp(-(xin @ W.T + b))) - x) / B  # d(mean over rows of sum_d BCE)/dz
        grads = [(g.T @ xin) * M + a.weight_decay * W + a.l1 * np.sign(W), g.sum(0) + a.weight_decay * b]
        t += 1
        lr = a.lr * 0.5 * (1 + np.cos(np.pi * (t - 1) / total))
        for (p, m, v), gr in zip(state, grads):
            m *= 0.9
            m += 0.1 * gr
            v *= 0.999
            v += 0.001 * gr * gr
            p -= lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    va_hist.append(nll_per_conditional(xva))
    te_hist.append(nll_per_conditional(xte))
    print(f"epoch {e + 1} valid {va_hist[-1].sum():.3f} test {te_hist[-1].sum():.3f} ({time.time() - t0:.1f} s)", flush=True)

va, te = np.array(va_hist), np.array(te_hist)
joint = va.sum(1).argmin()
pick = va.argmin(0)
print(f"early stopping on the summed valid NLL: epoch {joint + 1}, valid {va[joint].sum():.3f}, test {te[joint].sum():.3f}")
print(f"early stopping per conditional: valid {va.min(0).sum():.3f}, test {te[pick, np.arange(D)].sum():.3f} "
      f"(epochs picked: median {np.median(pick) + 1:.0f}, earliest {pick.min() + 1})")
