#!/usr/bin/env python3
"""PyTorch (CPU) reference for wick's pretraining speed: the same encoder and objective, timed
side by side with `wick train`.

Trains wick's encoders (MLP 784-512-256 or CNN conv3x3/s2 32 -> conv3x3/s2 64 -> fc 256, ReLU,
PyTorch-default init) with wick's objectives for a fixed number of Adam steps on the mnist5k
train split (standard split: row i is train unless i % 10 in {0, 1}):

- simclr: two views per image (random crop-and-resize 0.7-1, rotation +-15 deg, shift +-10%,
  cut-out 30% square with p 0.5, noise sigma 0.1: one affine_grid/grid_sample per batch),
  projection head 256-256-128, NT-Xent with temperature tau;
- masked: 4x4 patches hidden with ratio r, decoder 256-256-784, BCE on the hidden pixels;
- vicreg: SimCLR's two views, expander 256-512-512-512 (ReLU between, no batch norm, as
  pretrain/src/vicreg.rs), loss 25 s(Z, Z') + 25 [v(Z) + v(Z')]/2 + [c(Z) + c(Z')].

Then runs `wick train` with the same settings for the same number of steps (whole epochs,
probes only at the end), alternating the two --repeats times, and prints the median throughputs in
training images per second and their ratio wick / PyTorch. Threads: torch.set_num_threads(T) and RAYON_NUM_THREADS=T for wick.
`--wick-before OTHER_BINARY` times a second wick build in the same alternation (before/after a
change). PyTorch runs with OMP_WAIT_POLICY=PASSIVE unless the environment sets it: on a shared,
loaded machine its default spinning OpenMP barrier makes single runs vary by 10x or more.

    python scripts/torch_pretrain.py --wick target/release/wick --objective simclr --encoder cnn
"""
import argparse
import gzip
import json
import math
import os
import subprocess
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch loads its OpenMP runtime

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def load_mnist5k(root):
    with gzip.open(os.path.join(root, "data", "mnist_5k.csv.gz"), "rt") as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.float32)
    x = rows[:, :-1] / 255.0
    idx = np.arange(len(x))
    return x[(idx % 10) >= 2]


class Encoder(nn.Module):
    def __init__(self, kind, side=28):
        super().__init__()
        self.kind, self.side = kind, side
        if kind == "mlp":
            self.net = nn.Sequential(nn.Linear(side * side, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU())
        else:
            s = (side + 1) // 2
            s = (s + 1) // 2
            self.net = nn.Sequential(
                nn.Conv2d(1, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
                nn.Flatten(), nn.Linear(64 * s * s, 256), nn.ReLU())

    def forward(self, x):
        if self.kind == "cnn":
            x = x.view(-1, 1, self.side, self.side)
        return self.net(x)


def augment(x, side, g):
    n = x.shape[0]
    s = 0.7 + 0.3 * torch.rand(n, generator=g)
    th = math.radians(15) * (2 * torch.rand(n, generator=g) - 1)
    t = 0.1 * 2 * (2 * torch.rand(n, 2, generator=g) - 1)  # fraction of the half-side in [-1, 1] coords
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = s * th.cos()
    theta[:, 0, 1] = -s * th.sin()
    theta[:, 1, 0] = s * th.sin()
    theta[:, 1, 1] = s * th.cos()
    theta[:, :, 2] = t
    img = x.view(n, 1, side, side)
    grid = F.affine_grid(theta, img.shape, align_corners=False)
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    side_c = round(0.3 * side)
    cut = torch.rand(n, generator=g) < 0.5
    r0 = torch.randint(0, side - side_c + 1, (n,), generator=g)
    c0 = torch.randint(0, side - side_c + 1, (n,), generator=g)
    rr = torch.arange(side).view(1, side, 1)
    cc = torch.arange(side).view(1, 1, side)
    box = (rr >= r0.view(n, 1, 1)) & (rr < (r0 + side_c).view(n, 1, 1)) & (cc >= c0.view(n, 1, 1)) & (cc < (c0 + side_c).view(n, 1, 1))
    out = out.view(n, side, side).masked_fill(box & cut.view(n, 1, 1), 0.0)
    out = (out + 0.1 * torch.randn(out.shape, generator=g)).clamp(0, 1)
    return out.view(n, side * side)


def nt_xent(z, tau):
    n2 = z.shape[0]
    n = n2 // 2
    sim = z @ z.t() / tau
    sim = sim - 1e9 * torch.eye(n2)
    pos = torch.cat([torch.arange(n, n2), torch.arange(0, n)])
    return F.cross_entropy(sim, pos)


def vicreg_loss(z, zp, lam=25.0, mu=25.0, nu=1.0, gamma=1.0, eps=1e-4):
    n, d = z.shape
    inv = ((z - zp) ** 2).sum() / (n * d)

    def var(a):
        return F.relu(gamma - torch.sqrt(a.var(dim=0) + eps)).mean()

    def cov(a):
        a = a - a.mean(0)
        c = a.t() @ a / (n - 1)
        return ((c ** 2).sum() - (torch.diagonal(c) ** 2).sum()) / d

    return lam * inv + mu * (var(z) + var(zp)) / 2 + nu * (cov(z) + cov(zp))


def patch_masks(n, side, patch, ratio, g):
    gs = (side + patch - 1) // patch
    p = gs * gs
    k = min(max(round(ratio * p), 1), p - 1)
    scores = torch.rand(n, p, generator=g)
    hidden = torch.zeros(n, p)
    hidden.scatter_(1, scores.argsort(dim=1)[:, :k], 1.0)
    m = hidden.view(n, gs, 1, gs, 1).expand(n, gs, patch, gs, patch).reshape(n, gs * patch, gs * patch)
    return m[:, :side, :side].reshape(n, side * side)


def torch_throughput(args, x):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    enc = Encoder(args.encoder)
    if args.objective == "simclr":
        head = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 128))
    elif args.objective == "vicreg":
        head = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512))
    else:
        head = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 784))
    opt = torch.optim.Adam(list(enc.parameters()) + list(head.parameters()), lr=args.lr)
    xt = torch.from_numpy(x)
    n = len(xt)

    def step(i):
        idx = torch.randint(0, n, (args.batch,), generator=g)
        xb = xt[idx]
        if args.objective == "simclr":
            a, b = augment(xb, 28, g), augment(xb, 28, g)
            z = F.normalize(head(enc(torch.cat([a, b]))), dim=1)
            loss = nt_xent(z, args.temperature)
        elif args.objective == "vicreg":
            a, b = augment(xb, 28, g), augment(xb, 28, g)
            z = head(enc(torch.cat([a, b])))
            loss = vicreg_loss(z[: args.batch], z[args.batch :])
        else:
            m = patch_masks(args.batch, 28, 4, args.mask_ratio, g)
            logits = head(enc(xb * (1 - m)))
            loss = (F.binary_cross_entropy_with_logits(logits, xb, reduction="none") * m).sum() / m.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    for i in range(3):
        step(i)
    t0 = time.perf_counter()
    for i in range(args.steps):
        loss = step(i)
    dt = time.perf_counter() - t0
    # One more step, untimed, under torch's FLOP counter: the matrix products and convolutions of
    # forward and backward (not the augmentation, the elementwise ops or Adam), per image.
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc:
        step(args.steps)
    return args.steps * args.batch / dt, loss, fc.get_total_flops() / args.batch


def wick_throughput(args, binary):
    steps_per_epoch = math.ceil(4000 / args.batch)
    epochs = max(1, round(args.steps / steps_per_epoch))
    with tempfile.TemporaryDirectory() as d:
        cmd = [binary, "train", args.objective, "--data", "mnist5k", "--encoder", args.encoder, "--epochs", str(epochs),
               "--batch", str(args.batch), "--lr", str(args.lr), "--probe-every", "0", "--log-every", "0", "--quiet",
               "--logdir", d, "--run-name", "r"]
        if args.objective == "simclr":
            cmd += ["--temperature", str(args.temperature)]
        elif args.objective == "vicreg":
            pass
        else:
            cmd += ["--mask-ratio", str(args.mask_ratio), "--mask-patch", "4"]
        env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        with open(os.path.join(d, "r", "metrics.json")) as f:
            m = json.load(f)
    return m["train_samples_per_s"], epochs * steps_per_epoch


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objective", choices=["simclr", "masked", "vicreg"], default="simclr")
    ap.add_argument("--encoder", choices=["mlp", "cnn"], default="cnn")
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--temperature", type=float, default=0.5)
    ap.add_argument("--mask-ratio", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--wick", help="path to the wick binary; without it only PyTorch is timed")
    ap.add_argument("--wick-before", help="a second wick binary (e.g. before a change), timed in the same alternation")
    ap.add_argument("--repeats", type=int, default=3, help="alternate PyTorch and wick this many times; medians are reported")
    ap.add_argument("--json", action="store_true", help="also print one line 'JSON {...}' with every run's figure")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    x = load_mnist5k(root)
    tps, wps, bps = [], [], []
    for r in range(args.repeats):
        tp, loss, flops = torch_throughput(args, x)
        tps.append(tp)
        print(f"pytorch {torch.__version__}: {args.objective}/{args.encoder} batch {args.batch}, {args.steps} steps: {tp:.0f} images/s (last loss {loss:.4f})", flush=True)
        if args.wick:
            wp, wsteps = wick_throughput(args, args.wick)
            wps.append(wp)
            print(f"wick: {args.objective}/{args.encoder} batch {args.batch}, {wsteps} steps: {wp:.0f} images/s", flush=True)
        if args.wick_before:
            bp, wsteps = wick_throughput(args, args.wick_before)
            bps.append(bp)
            print(f"wick before: {args.objective}/{args.encoder} batch {args.batch}, {wsteps} steps: {bp:.0f} images/s", flush=True)
    tp = float(np.median(tps))
    print(f"training products per image (torch.utils.flop_counter): {flops / 1e6:.2f} MFLOP")
    print(f"median pytorch: {tp:.0f} images/s ({tp * flops / 1e9:.1f} GFLOP/s)")
    if wps:
        wp = float(np.median(wps))
        print(f"median wick: {wp:.0f} images/s ({wp * flops / 1e9:.1f} GFLOP/s)")
        print(f"ratio wick/pytorch: {wp / tp:.2f}x (medians of {args.repeats}; per run: {' '.join(f'{w / t:.2f}' for w, t in zip(wps, tps))})")
    if bps:
        bp = float(np.median(bps))
        print(f"median wick before: {bp:.0f} images/s")
        print(f"ratio wick before/pytorch: {bp / tp:.2f}x (per run: {' '.join(f'{w / t:.2f}' for w, t in zip(bps, tps))})")
        if wps:
            print(f"ratio wick/wick before: {wp / bp:.2f}x")
    if args.json:
        out = {"objective": args.objective, "encoder": args.encoder, "batch": args.batch, "threads": args.threads,
               "torch": torch.__version__, "torch_images_per_s": tps, "wick_images_per_s": wps,
               "flops_per_image": flops}
        print("JSON " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
