#!/usr/bin/env python3
"""PyTorch (CPU) reference for wick's density models: FVSBN, NADE, MADE and order-agnostic NADE, side by side with wick.

The same models, initialisation scheme, loss, optimizer, data split and early-stopping protocol
as `wick train fvsbn|nade|made` (generative/src/{fvsbn,nade,made,train}.rs), so that the test
NLLs and the training throughputs in docs/density.md and docs/performance.md can be compared:

- data: `digits` (data/digits.csv.gz, 8x8, binarised at pixel >= 8) or `mnist5k`
  (data/mnist_5k.csv.gz, 28x28, binarised at pixel >= 128); CSV rows are pixels then the label,
  no header. Standard split: row i is test if i % 10 == 0, valid if i % 10 == 1, else train.
  Or already binarized `.amat` files (one row of 0/1 per line): a folder holding
  `binarized_<name>_{train,valid,test}.amat`, or one of the three files (its siblings are read),
  split by file, as `wick data export mnist --binarize static --format amat --out DIR` writes
  them, so that both sides train on identical bits.
- FVSBN: z = x (W * M)^T + b, M strictly lower triangular; W's lower triangle ~ U(+-1/sqrt(D)),
  b = 0 (the masked entries get zero gradient, so Adam keeps them at zero).
- NADE (Larochelle & Murray 2011): W [H,D] ~ U(+-1/sqrt(D)), c [H] = 0, V [D,H] ~ U(+-1/sqrt(H)),
  b [D] = 0; a_d = c + W[:, <d] x_<d, z_d = b_d + V_d . sigmoid(a_d). Vectorised with an exclusive
  cumsum over d (materialises B x D x H, the usual PyTorch way) or, with --nade-loop, a loop over d
  that carries the pre-activation forward.
- MADE (Germain et al. 2015): masked MLP with ReLU, --layers hidden layers of --hidden units,
  weights and biases ~ U(+-1/sqrt(fan_in)) (nn.Linear's default). Input degrees m0 = 1..D (natural
  order; --order random permutes them; --order-agnostic gives each mask set its own permutation),
  hidden degrees uniform in [min of the previous layer's degrees, D-1], hidden mask
  1[m^l(k') >= m^{l-1}(k)], output mask 1[m0(d) > m^L(k)]. --masks K: connectivity-agnostic
  training, one of the K mask sets chosen at random per step; the test-time model is the mixture,
  log p(x) = logsumexp_k log p_k(x) - log K.
- order-agnostic NADE (Uria et al. 2014; `oanade`): see the OaNade class; --layers L, --orderings K
  (the valid/test model is the ensemble of K orderings, as `wick train oanade --orderings K`);
  with more than one hidden layer early stopping compares the order-agnostic loss on valid with
  the same draws every epoch, as wick's default `--valid estimate`, and train_nll covers the first
  10,000 training rows.
- loss: the mean over the batch of the per-example NLL in nats,
  sum_d BCE-with-logits(z_d, x_d) (PyTorch's stable form).
- training: Adam (lr 1e-3, betas 0.9/0.999, eps 1e-8), batch 100 (the last, partial batch of an
  epoch included); --schedule constant|cosine as wick's default for the model (cosine to zero over
  the epoch budget for oanade, constant otherwise; step s of T gets lr·(1 + cos(πs/T))/2), a fresh permutation of the train split every epoch; after every epoch the
  exact valid NLL; the best-valid parameters are kept and the test NLL reported for them;
  --patience P stops after P epochs without a better valid NLL (0: never).

Modes (stdout carries exactly one JSON line; progress goes to stderr):

  training (default)
      python scripts/torch_density.py --model fvsbn --data digits [--epochs 500 --patience 50]
      -> {"model", "data", "hidden", "epochs_run", "best_epoch", "valid_nll", "test_nll",
          "train_samples_per_s", ...}. train_samples_per_s = training samples processed / wall
      time of the training steps alone (per-epoch evaluation excluded);
      train_samples_per_s_incl_eval also counts the per-epoch valid evaluation.
      --log-every N prints an epoch line to stderr every N epochs.

  --bench-steps N
      python scripts/torch_density.py --model nade --data mnist5k --bench-steps 20
      times N training steps (forward + backward + Adam) on random binary batches of shape
      [batch, D] after --warmup steps -> {"mode": "bench", "train_samples_per_s", ...}; with
      --repeats R it times R blocks of N steps and reports the median (and each, and the max).

  --side-by-side --wick target/release/wick
      python scripts/torch_density.py --side-by-side --wick target/release/wick \\
          --model fvsbn --data mnist5k --epochs 3
      runs `wick train <model> --data <data> --epochs E --patience 0 --log-every 0 --quiet
      --run-name <tmp> --logdir <tmpdir> ...` with RAYON_NUM_THREADS (and --threads) pinned,
      reads train_samples_per_s from its metrics.json, then trains the PyTorch model for the same
      epochs (patience 0) with torch.set_num_threads pinned to the same count, and prints both
      throughputs and the ratio wick / PyTorch. NOTE: wick's train_samples_per_s is measured over
      its whole epoch loop, which includes the per-epoch valid evaluation and checkpoint writes;
      it is therefore compared with PyTorch's figure including evaluation (ratio_incl_eval, the
      like-for-like one) as well as with PyTorch's steps-only figure (ratio_vs_steps_only, which
      favours PyTorch).

Every mode takes --threads (default 2: torch.set_num_threads) and --seed (default 0). The
PyTorch runs are seeded but do not reproduce wick's random streams, so the NLLs agree in
distribution (a few hundredths of a nat on digits), not to the bit.

Needs torch (any 2.x, CPU) and numpy.
"""
import argparse
import copy
import gzip
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS = {
    # name: (file under data/, binarisation threshold)
    "digits": ("digits.csv.gz", 8.0),
    "mnist5k": ("mnist_5k.csv.gz", 128.0),
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Data


def amat_files(name):
    """The (train, valid, test) .amat paths for a folder or one of the three files, else None."""
    if os.path.isdir(name):
        found = sorted(f for f in os.listdir(name) if f.endswith("_train.amat"))
        if len(found) != 1:
            raise SystemExit(f"{name}: expected one binarized_<name>_train.amat (and its valid/test siblings), found {found}")
        train = os.path.join(name, found[0])
    elif name.endswith(".amat"):
        train = name
        for s in ("_valid.amat", "_test.amat"):
            if train.endswith(s):
                train = train[: -len(s)] + "_train.amat"
    else:
        return None
    paths = tuple(train[: -len("_train.amat")] + f"_{s}.amat" for s in ("train", "valid", "test"))
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}")
    return paths


def load_data(name, threshold=None):
    """Binarised (train, valid, test) float32 tensors of the standard split (or the .amat files' split)."""
    amat = amat_files(name)
    if amat is not None:
        if threshold is not None:
            raise SystemExit("--threshold does not apply to .amat files: they are binarized already")
        out = tuple(np.loadtxt(p, dtype=np.float32, ndmin=2) for p in amat)
        for p, x in zip(amat, out):
            if not np.isin(x, (0.0, 1.0)).all():
                raise SystemExit(f"{p}: values other than 0 and 1")
        return tuple(torch.from_numpy(np.ascontiguousarray(x)) for x in out)
    if name in DATASETS:
        fname, default_t = DATASETS[name]
        path = os.path.join(ROOT, "data", fname)
    else:
        path, default_t = name, None
    t = default_t if threshold is None else threshold
    if t is None:
        raise SystemExit(f"--threshold is needed for a data file that is not built in: {name}")
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32, ndmin=2)
    pixels = table[:, :-1]
    x = (pixels >= t).astype(np.float32)
    i = np.arange(x.shape[0])
    test, valid = i % 10 == 0, i % 10 == 1
    train = ~(test | valid)
    return tuple(torch.from_numpy(np.ascontiguousarray(x[m])) for m in (train, valid, test))


# ---------------------------------------------------------------------------------------------
# Models. Each has logits(x) -> [B, D] (or per member for MADE), nll(x) -> [B] (the test-time
# model) and train_nll(x, gen) -> [B] (what one training step minimises).


def bce_rows(z, x):
    """-log p(x) per row from logits z [B, D]: sum_d BCE-with-logits, the stable form."""
    return F.binary_cross_entropy_with_logits(z, x, reduction="none").sum(1)


def uniform_(t, bound, gen):
    with torch.no_grad():
        t.uniform_(-bound, bound, generator=gen)
    return t


class Fvsbn(torch.nn.Module):
    def __init__(self, dim, gen):
        super().__init__()
        self.dim = dim
        mask = torch.tril(torch.ones(dim, dim), diagonal=-1)  # M[d, j] = 1[j < d]
        self.register_buffer("mask", mask)
        w = uniform_(torch.empty(dim, dim), 1.0 / math.sqrt(dim), gen) * mask
        self.w = torch.nn.Parameter(w)
        self.b = torch.nn.Parameter(torch.zeros(dim))

    def logits(self, x):
        return F.linear(x, self.w * self.mask, self.b)

    def nll(self, x):
        return bce_rows(self.logits(x), x)

    def train_nll(self, x, gen):
        return self.nll(x)


class Nade(torch.nn.Module):
    def __init__(self, dim, hidden, gen, loop=False):
        super().__init__()
        self.dim, self.hidden, self.loop = dim, hidden, loop
        self.w = torch.nn.Parameter(uniform_(torch.empty(hidden, dim), 1.0 / math.sqrt(dim), gen))
        self.c = torch.nn.Parameter(torch.zeros(hidden))
        self.v = torch.nn.Parameter(uniform_(torch.empty(dim, hidden), 1.0 / math.sqrt(hidden), gen))
        self.b = torch.nn.Parameter(torch.zeros(dim))

    def logits(self, x):
        return self._logits_loop(x) if self.loop else self._logits_cumsum(x)

    def _logits_cumsum(self, x):
        # contrib[b, d, :] = x[b, d] W[:, d]; a_d = c + sum_{j<d} contrib_j (exclusive cumsum).
        contrib = x.unsqueeze(2) * self.w.t().unsqueeze(0)  # [B, D, H]
        csum = contrib.cumsum(1)
        a = torch.cat([torch.zeros_like(csum[:, :1]), csum[:, :-1]], 1) + self.c
        h = torch.sigmoid(a)  # [B, D, H]
        return (h * self.v.unsqueeze(0)).sum(2) + self.b

    def _logits_loop(self, x):
        a = self.c.unsqueeze(0).expand(x.shape[0], self.hidden)
        zs = []
        for d in range(self.dim):
            h = torch.sigmoid(a)
            zs.append(h @ self.v[d])
            if d + 1 < self.dim:
                a = a + x[:, d : d + 1] * self.w[:, d]
        return torch.stack(zs, 1) + self.b

    def nll(self, x):
        return bce_rows(self.logits(x), x)

    def train_nll(self, x, gen):
        return self.nll(x)


class Made(torch.nn.Module):
    def __init__(self, dim, hidden, layers, k, gen, order="natural", order_agnostic=False, direct=False):
        super().__init__()
        if dim < 2 or hidden < 1 or layers < 1 or k < 1:
            raise SystemExit("MADE needs D >= 2, hidden >= 1, layers >= 1 and masks >= 1")
        self.dim, self.k = dim, k
        sizes = [dim] + [hidden] * layers + [dim]
        self.linears = torch.nn.ModuleList()
        for fan_in, out in zip(sizes[:-1], sizes[1:]):
            lin = torch.nn.Linear(fan_in, out)
            bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default, drawn from our generator
            uniform_(lin.weight, bound, gen)
            uniform_(lin.bias, bound, gen)
            self.linears.append(lin)
        # Degrees and masks: masks[k][l] is [out, in] like nn.Linear's weight.
        if order == "natural":
            base = torch.arange(1, dim + 1)
        else:
            base = torch.randperm(dim, generator=gen) + 1
        self.orders = []
        for kk in range(k):
            m0 = torch.randperm(dim, generator=gen) + 1 if order_agnostic else base.clone()
            degrees = [m0]
            for _ in range(layers):
                lo = min(int(degrees[-1].min()), dim - 1)
                degrees.append(torch.randint(lo, dim, (hidden,), generator=gen))  # lo..D-1
            for l in range(layers):
                m = (degrees[l + 1].unsqueeze(1) >= degrees[l].unsqueeze(0)).float()
                self.register_buffer(f"mask{l}_k{kk}", m)
            m = (m0.unsqueeze(1) > degrees[layers].unsqueeze(0)).float()
            self.register_buffer(f"mask{layers}_k{kk}", m)
            self.orders.append(m0)
        # Direct input->output connections (wick's --direct): A [out, in], masked 1[m0(out) > m0(in)].
        self.direct = None
        if direct:
            self.direct = torch.nn.Parameter(torch.empty(dim, dim))
            uniform_(self.direct, 1.0 / math.sqrt(dim), gen)
            for kk in range(k):
                m0 = self.orders[kk]
                self.register_buffer(f"mask_direct_k{kk}", (m0.unsqueeze(1) > m0.unsqueeze(0)).float())

    def masks(self, kk):
        return [getattr(self, f"mask{l}_k{kk}") for l in range(len(self.linears))]

    def logits(self, x, kk=0):
        h = x
        last = len(self.linears) - 1
        for l, (lin, m) in enumerate(zip(self.linears, self.masks(kk))):
            h = F.linear(h, lin.weight * m, lin.bias)
            if l < last:
                h = torch.relu(h)
        if self.direct is not None:
            h = h + F.linear(x, self.direct * getattr(self, f"mask_direct_k{kk}"))
        return h

    def nll_member(self, x, kk):
        return bce_rows(self.logits(x, kk), x)

    def nll(self, x):
        if self.k == 1:
            return self.nll_member(x, 0)
        lp = torch.stack([-self.nll_member(x, kk) for kk in range(self.k)], 1)  # [B, K]
        return -(torch.logsumexp(lp, 1) - math.log(self.k))

    def train_nll(self, x, gen):
        kk = int(torch.randint(self.k, (1,), generator=gen)) if self.k > 1 else 0
        return self.nll_member(x, kk)


class OaNade(torch.nn.Module):
    """Order-agnostic NADE (Uria, Murray & Larochelle 2014), as generative/src/oanade.rs:
    h1 = relu(Wx (x*m) + Wm m + b1), hl = relu(Wl h(l-1) + bl), z = V hL + c; init U(+-1/sqrt(fan_in))
    (fan_in 2D for the first layer). Training: per example d ~ U{0..D-1} and a uniformly random
    observed subset of size d; loss (D/(D-d)) sum over the unobserved of BCE. Test: the ensemble of
    K orderings drawn at init, logsumexp_k log p_k(x) - log K, each log p_k exact (D conditionals):
    the first layer's pre-activation for all D prefixes at once by an exclusive cumsum over the
    ordering (B x D x H, the usual PyTorch way), the upper layers as one [B*D, H] x [H, H] product."""

    def __init__(self, dim, hidden, layers, k, gen):
        super().__init__()
        if dim < 2 or hidden < 1 or layers < 1 or k < 1:
            raise SystemExit("oanade needs D >= 2, hidden >= 1, layers >= 1 and orderings >= 1")
        self.dim, self.hidden, self.k = dim, hidden, k
        b_in, b_h = 1.0 / math.sqrt(2 * dim), 1.0 / math.sqrt(hidden)
        self.wx = torch.nn.Parameter(uniform_(torch.empty(dim, hidden), b_in, gen))
        self.wm = torch.nn.Parameter(uniform_(torch.empty(dim, hidden), b_in, gen))
        self.b1 = torch.nn.Parameter(uniform_(torch.empty(hidden), b_in, gen))
        self.upper = torch.nn.ParameterList()
        for _ in range(layers - 1):
            self.upper.append(torch.nn.Parameter(uniform_(torch.empty(hidden, hidden), b_h, gen)))
            self.upper.append(torch.nn.Parameter(uniform_(torch.empty(hidden), b_h, gen)))
        self.v = torch.nn.Parameter(uniform_(torch.empty(hidden, dim), b_h, gen))
        self.c = torch.nn.Parameter(uniform_(torch.empty(dim), b_h, gen))
        self.orders = [torch.randperm(dim, generator=gen) for _ in range(k)]

    def _top(self, h):
        for l in range(0, len(self.upper), 2):
            h = torch.relu(h @ self.upper[l] + self.upper[l + 1])
        return h

    def train_nll(self, x, gen):
        b, d = x.shape[0], self.dim
        cut = torch.randint(d, (b, 1), generator=gen)  # observed count d ~ U{0..D-1}
        rank = torch.rand(b, d, generator=gen).argsort(1).argsort(1)  # a uniformly random ordering
        m = (rank < cut).float()
        h = self._top(torch.relu((x * m) @ self.wx + m @ self.wm + self.b1))
        z = h @ self.v + self.c
        bce = F.binary_cross_entropy_with_logits(z, x, reduction="none")
        return (bce * (1 - m)).sum(1) * (d / (d - cut.squeeze(1).float()))

    def log_p_order(self, x, order):
        xo = x[:, order]  # [B, D] in the ordering
        contrib = xo.unsqueeze(2) * self.wx[order].unsqueeze(0) + self.wm[order].unsqueeze(0)  # [B, D, H]
        csum = contrib.cumsum(1)
        a = torch.cat([torch.zeros_like(csum[:, :1]), csum[:, :-1]], 1) + self.b1  # prefix o_<t
        h = self._top(torch.relu(a))
        z = (h * self.v[:, order].t().unsqueeze(0)).sum(2) + self.c[order]
        return -F.binary_cross_entropy_with_logits(z, xo, reduction="none").sum(1)

    def nll(self, x):
        lp = torch.stack([self.log_p_order(x, o) for o in self.orders], 1)  # [B, K]
        return -(torch.logsumexp(lp, 1) - math.log(self.k))


def default_hidden(dim):
    return 100 if dim <= 100 else 500  # wick's default


def build_model(args, dim, gen):
    if args.model == "fvsbn":
        return Fvsbn(dim, gen)
    if args.model == "nade":
        return Nade(dim, args.hidden, gen, loop=args.nade_loop)
    if args.model == "oanade":
        return OaNade(dim, args.hidden, args.layers, args.orderings, gen)
    return Made(dim, args.hidden, args.layers, args.masks, gen, order=args.order, order_agnostic=args.order_agnostic, direct=args.direct)


@torch.no_grad()
def selection_nll(args, model, x, batch):
    """What early stopping compares: the exact mean NLL, or for order-agnostic NADE with more than
    one hidden layer (as wick's default --valid estimate) the order-agnostic loss on the valid rows
    with the same draws every epoch (a generator reseeded each time), one forward pass per row."""
    if args.model == "oanade" and args.layers > 1:
        gen = torch.Generator().manual_seed(args.seed + 3)
        total = sum(model.train_nll(x[i : i + 1000], gen).double().sum().item() for i in range(0, x.shape[0], 1000))
        return total / max(1, x.shape[0])
    return mean_nll(model, x, batch)


@torch.no_grad()
def mean_nll(model, x, batch):
    total = 0.0
    for i in range(0, x.shape[0], batch):
        total += model.nll(x[i : i + batch]).double().sum().item()
    return total / max(1, x.shape[0])


def eval_batch(args, dim):
    if args.eval_batch:
        return args.eval_batch
    if args.model == "oanade" or (args.model == "nade" and not args.nade_loop):
        # The cumsum path materialises B x D x H floats several times over; keep B*D*H <= 4e7.
        return max(1, min(1000, int(4e7 // (dim * args.hidden))))
    return 1000


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def describe(args, dim):
    d = {"model": args.model, "data": args.data, "dim": dim, "hidden": args.hidden}
    if args.model == "oanade":
        d.update(layers=args.layers, orderings=args.orderings)
    if args.model == "made":
        d.update(layers=args.layers, masks=args.masks, order=args.order, order_agnostic=args.order_agnostic, direct=args.direct)
    if args.model == "nade":
        d["nade_impl"] = "loop" if args.nade_loop else "cumsum"
    d.update(batch=args.batch, optimizer=args.optimizer, lr=args.lr, schedule=schedule(args), seed=args.seed, threads=args.threads, torch=torch.__version__)
    return d


# ---------------------------------------------------------------------------------------------
# Training with early stopping on valid


def schedule(args):
    """The learning-rate schedule: --schedule, else wick's default for the model."""
    return args.schedule or ("cosine" if args.model == "oanade" else "constant")


def cosine_factor(step, total):
    """wick's `cosine:TOTAL` (no warm-up, down to 0): (1 + cos(pi * step / TOTAL)) / 2, then 0."""
    return 0.5 * (1.0 + math.cos(math.pi * step / total)) if step < total else 0.0


def make_optimizer(args, model):
    """Adam, or Adagrad with wick's ε (1e-8; torch's own default is 1e-10)."""
    if args.optimizer == "adagrad":
        return torch.optim.Adagrad(model.parameters(), lr=args.lr, eps=1e-8)
    return torch.optim.Adam(model.parameters(), lr=args.lr)


def total_steps(args, ntr):
    """Updates in the whole run: epochs × batches per epoch (the last one partial), as wick counts."""
    return args.epochs * math.ceil(ntr / args.batch)


def train(args, xtr, xva, xte):
    dim = xtr.shape[1]
    gen = torch.Generator().manual_seed(args.seed)  # init and masks
    model = build_model(args, dim, gen)
    opt = make_optimizer(args, model)
    total, cosine = total_steps(args, xtr.shape[0]), schedule(args) == "cosine"
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_factor(s, total) if cosine else 1.0)
    data_gen = torch.Generator().manual_seed(args.seed + 1)  # epoch permutations
    step_gen = torch.Generator().manual_seed(args.seed + 2)  # MADE mask choice per step
    ebatch = eval_batch(args, dim)
    ntr = xtr.shape[0]

    best_valid, best_epoch, best_state, bad = None, 0, None, 0
    train_secs = eval_secs = 0.0
    samples = 0
    epoch = 0
    for epoch in range(1, args.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(ntr, generator=data_gen)
        loss_sum = 0.0
        for lo in range(0, ntr, args.batch):
            xb = xtr[perm[lo : lo + args.batch]]
            loss = model.train_nll(xb, step_gen).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            lv = loss.item()
            if not math.isfinite(lv):
                raise SystemExit(f"training diverged at epoch {epoch} (loss {lv})")
            loss_sum += lv * xb.shape[0]
            samples += xb.shape[0]
        t1 = time.perf_counter()
        train_secs += t1 - t0
        model.eval()
        valid = selection_nll(args, model, xva, ebatch)
        if best_valid is None or valid < best_valid:
            best_valid, best_epoch, bad = valid, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
        eval_secs += time.perf_counter() - t1
        if args.log_every and (epoch % args.log_every == 0 or epoch == 1):
            log(f"epoch {epoch} train_nll {loss_sum / ntr:.4f} valid_nll {valid:.4f} "
                f"best {best_valid:.4f}@{best_epoch} {samples / train_secs:.0f} samples/s")
        if args.patience > 0 and bad >= args.patience:
            break

    model.load_state_dict(best_state)
    model.eval()
    out = describe(args, dim)
    out.update(
        epochs_run=epoch,
        best_epoch=best_epoch,
        train_nll=mean_nll(model, xtr[:10000] if args.model == "oanade" and args.layers > 1 else xtr, ebatch),
        valid_nll=mean_nll(model, xva, ebatch),
        test_nll=mean_nll(model, xte, ebatch),
        train_samples_per_s=samples / max(train_secs, 1e-9),
        train_samples_per_s_incl_eval=samples / max(train_secs + eval_secs, 1e-9),
        train_secs=train_secs,
        eval_secs=eval_secs,
        peak_rss_mb=peak_rss_mb(),
    )
    return out


# ---------------------------------------------------------------------------------------------
# Throughput of training steps alone


def bench(args, dim):
    gen = torch.Generator().manual_seed(args.seed)
    model = build_model(args, dim, gen)
    model.train()
    opt = make_optimizer(args, model)
    step_gen = torch.Generator().manual_seed(args.seed + 2)
    data_gen = torch.Generator().manual_seed(args.seed + 1)
    pool = [torch.bernoulli(torch.full((args.batch, dim), 0.5), generator=data_gen) for _ in range(8)]

    def step(i):
        loss = model.train_nll(pool[i % len(pool)], step_gen).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    for i in range(args.warmup):
        step(i)
    rates = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for i in range(args.bench_steps):
            step(i)
        rates.append(args.bench_steps * args.batch / (time.perf_counter() - t0))
    median = sorted(rates)[len(rates) // 2] if len(rates) % 2 else sum(sorted(rates)[len(rates) // 2 - 1 : len(rates) // 2 + 1]) / 2
    out = {"mode": "bench"}
    out.update(describe(args, dim))
    out.update(
        steps=args.bench_steps,
        warmup=args.warmup,
        repeats=args.repeats,
        train_samples_per_s=median,
        ms_per_step=1000.0 * args.batch / median,
        samples_per_s_each=rates,
        samples_per_s_max=max(rates),
        peak_rss_mb=peak_rss_mb(),
    )
    return out


def step_flops(args, dim):
    """FLOPs per sample of one training step's matrix products, forward and backward, as
    torch.utils.flop_counter counts them (elementwise work and the optimizer not counted; MADE's
    and FVSBN's masked products counted dense, as PyTorch runs them). None for NADE, whose
    reference runs the O(DH) recursion as elementwise ops and a cumsum that the counter skips."""
    if args.model == "nade":
        return None
    from torch.utils.flop_counter import FlopCounterMode

    gen = torch.Generator().manual_seed(args.seed)
    model = build_model(args, dim, gen)
    model.train()
    x = torch.bernoulli(torch.full((args.batch, dim), 0.5), generator=gen)
    with FlopCounterMode(display=False) as fc:
        model.train_nll(x, gen).mean().backward()
    return fc.get_total_flops() / args.batch


# ---------------------------------------------------------------------------------------------
# Side by side with wick


def run_wick(args, ntr):
    wick = os.path.abspath(args.wick)
    if not os.path.isfile(wick):
        raise SystemExit(f"--wick: no such binary: {wick}")
    tmp = tempfile.mkdtemp(prefix="wick-side-by-side-")
    name = f"{args.model}_{os.path.basename(os.path.normpath(args.data))}_bench"  # a path's last part: a plain name
    cmd = [wick, "train", args.model, "--data", args.data, "--epochs", str(args.epochs), "--patience", "0",
           "--log-every", "0", "--quiet", "--run-name", name, "--logdir", tmp, "--seed", str(args.seed),
           "--batch", str(args.batch), "--lr", repr(args.lr), "--threads", str(args.threads)]
    if args.model != "fvsbn" and args.hidden_given:
        cmd += ["--hidden", str(args.hidden)]
    if args.model == "made":
        cmd += ["--layers", str(args.layers), "--masks", str(args.masks), "--order", args.order]
        if args.order_agnostic:
            cmd.append("--order-agnostic")
        if args.direct:
            cmd.append("--direct")
    cmd += ["--optimizer", args.optimizer]
    if args.model == "oanade":
        cmd += ["--layers", str(args.layers), "--orderings", str(args.orderings)]
    cmd += ["--schedule", f"cosine:{total_steps(args, ntr)}" if schedule(args) == "cosine" else "constant"]
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    log("wick: RAYON_NUM_THREADS=%d %s" % (args.threads, " ".join(cmd)))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    try:
        if proc.returncode != 0:
            raise SystemExit(f"wick exited with {proc.returncode}:\n{proc.stderr.strip()}")
        with open(os.path.join(tmp, name, "metrics.json")) as f:
            metrics = json.load(f)
    finally:
        if not args.keep_run:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"wick run kept in {os.path.join(tmp, name)}")
    metrics["process_wall_s"] = wall
    metrics["command"] = "RAYON_NUM_THREADS=%d " % args.threads + " ".join(cmd)
    return metrics


def side_by_side(args, xtr, xva, xte):
    if not args.wick:
        raise SystemExit("--side-by-side needs --wick PATH_TO_WICK_BINARY (e.g. target/release/wick)")
    args.patience = 0  # both run the full epoch budget
    wm = run_wick(args, xtr.shape[0])
    log(f"wick: {wm['train_samples_per_s']:.0f} samples/s, test_nll {wm['test_nll']:.3f}, "
        f"process {wm['process_wall_s']:.1f} s")
    log(f"torch: {args.epochs} epochs ...")
    tm = train(args, xtr, xva, xte)
    w, t, te = wm["train_samples_per_s"], tm["train_samples_per_s"], tm["train_samples_per_s_incl_eval"]
    flops = step_flops(args, xtr.shape[1])
    lines = [
        f"{args.model} on {args.data}, {args.epochs} epochs, batch {args.batch}, {args.threads} threads"
        + ("" if args.model == "fvsbn" else f", hidden {tm['hidden']}"),
        f"  wick     {w:12.0f} samples/s   (epoch loop: training steps + per-epoch valid eval + checkpoint writes)",
        f"  PyTorch  {te:12.0f} samples/s   (training steps + per-epoch valid eval; no checkpoints)",
        f"  PyTorch  {t:12.0f} samples/s   (training steps only)",
        f"  ratio wick/PyTorch: {w / te:.2f}x like for like (incl. eval); {w / t:.2f}x against PyTorch's steps-only figure",
        f"  test NLL: wick {wm['test_nll']:.3f}, PyTorch {tm['test_nll']:.3f} (best epochs {wm['best_epoch']} / {tm['best_epoch']})",
    ]
    if flops:
        lines.append(f"  training products: {flops / 1e6:.2f} MFLOP per sample; wick {w * flops / 1e9:.1f} GFLOP/s, "
                     f"PyTorch {te * flops / 1e9:.1f} (incl. eval) / {t * flops / 1e9:.1f} (steps only)")
    print("\n".join(lines), file=sys.stderr, flush=True)
    return {
        "mode": "side-by-side",
        "model": args.model,
        "data": args.data,
        "epochs": args.epochs,
        "threads": args.threads,
        "wick_train_samples_per_s": w,
        "wick_note": "wick's figure covers its whole epoch loop: per-epoch valid evaluation and checkpoint writes included",
        "torch_train_samples_per_s": t,
        "torch_train_samples_per_s_incl_eval": te,
        "ratio_incl_eval": w / te,
        "ratio_vs_steps_only": w / t,
        "flops_per_sample": flops,
        "wick_test_nll": wm["test_nll"],
        "torch_test_nll": tm["test_nll"],
        "wick_command": wm["command"],
        "wick_process_wall_s": wm["process_wall_s"],
        "torch": tm,
    }


# ---------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="See the module docstring (head of this file) for the models and modes.")
    p.add_argument("--model", required=True, choices=["fvsbn", "nade", "made", "oanade"])
    p.add_argument("--data", default="digits", help="digits, mnist5k, a .csv/.csv.gz path (with --threshold), or .amat files (a folder or a path)")
    p.add_argument("--threshold", type=float, default=None, help="binarisation: pixel >= threshold is 1 [digits 8, mnist5k 128]")
    p.add_argument("--hidden", type=int, default=None, help="NADE/MADE hidden units [100 if D <= 100, else 500]")
    p.add_argument("--layers", type=int, default=1, help="MADE and oanade hidden layers [1]")
    p.add_argument("--orderings", type=int, default=1, help="oanade: orderings K of the test-time ensemble (valid and test NLL) [1]")
    p.add_argument("--masks", type=int, default=1, help="MADE mask sets K [1]")
    p.add_argument("--order", default="natural", choices=["natural", "random"], help="MADE input ordering [natural]")
    p.add_argument("--order-agnostic", action="store_true", help="MADE: each mask set gets its own random ordering")
    p.add_argument("--direct", action="store_true", help="MADE: direct input->output connections, masked autoregressively (wick's --direct)")
    p.add_argument("--optimizer", default="adam", choices=["adam", "adagrad"], help="adam, or adagrad (eps 1e-8 as wick) [adam]")
    p.add_argument("--nade-loop", action="store_true", help="NADE: per-dimension loop instead of the cumsum over B x D x H")
    p.add_argument("--epochs", type=int, default=500)
    p.add_argument("--patience", type=int, default=50, help="epochs without a better valid NLL before stopping; 0 never")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--schedule", choices=["constant", "cosine"], default=None,
                   help="learning-rate schedule [wick's default: cosine to zero over the epochs for oanade, else constant]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (and RAYON_NUM_THREADS for wick) [2]")
    p.add_argument("--eval-batch", type=int, default=0, help="rows per evaluation batch [1000; NADE cumsum: B*D*H <= 4e7]")
    p.add_argument("--log-every", type=int, default=0, help="print an epoch line to stderr every N epochs [0: none]")
    p.add_argument("--bench-steps", type=int, default=0, help="time N training steps on random binary batches instead of training")
    p.add_argument("--warmup", type=int, default=3, help="warm-up steps before --bench-steps timing [3]")
    p.add_argument("--repeats", type=int, default=1, help="--bench-steps: time this many blocks of N steps; report the median [1]")
    p.add_argument("--side-by-side", action="store_true", help="run wick (--wick) and PyTorch for --epochs each and compare throughput")
    p.add_argument("--wick", default=None, help="path of the wick binary for --side-by-side")
    p.add_argument("--keep-run", action="store_true", help="--side-by-side: keep wick's run directory")
    args = p.parse_args(argv)
    args.hidden_given = args.hidden is not None
    if args.model == "fvsbn" and args.hidden_given:
        p.error("--hidden does not apply to fvsbn")
    if args.model != "oanade" and args.orderings != 1:
        p.error("--orderings is for oanade")
    if args.model not in ("made", "oanade") and args.layers != 1:
        p.error("--layers is for made and oanade")
    if args.model != "made" and (args.masks != 1 or args.order != "natural" or args.order_agnostic or args.direct):
        p.error("--masks, --order, --order-agnostic and --direct are for made")
    if args.nade_loop and args.model != "nade":
        p.error("--nade-loop is for nade")
    for name in ("epochs", "batch", "threads", "layers", "masks", "orderings", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.bench_steps and args.side_by_side:
        p.error("--bench-steps and --side-by-side are separate modes")
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.manual_seed(args.seed)
    xtr, xva, xte = load_data(args.data, args.threshold)
    dim = xtr.shape[1]
    if args.model != "fvsbn" and args.hidden is None:
        args.hidden = default_hidden(dim)
    if args.bench_steps:
        out = bench(args, dim)
    elif args.side_by_side:
        out = side_by_side(args, xtr, xva, xte)
    else:
        out = train(args, xtr, xva, xte)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
