#!/usr/bin/env python3
"""One command for wick's performance table: builds release, runs every side-by-side pair
(wick against PyTorch CPU or Gymnasium, in the same run, the two sides alternated), and writes
the table between the `bench.py` markers of docs/performance.md with the machine it ran on.

    python scripts/bench.py --python /path/to/python-with-torch          # the whole table
    python scripts/bench.py --python ... --only made simclr-cnn --rounds 1 --out -   # a few rows, to stdout

Rows (issue 18's list): FVSBN, MADE (1 and 2 hidden layers), NADE, order-agnostic NADE (1 and 2
layers) on mnist5k, whole runs with per-epoch evaluation (`scripts/torch_density.py
--side-by-side`; wick's figure includes its per-epoch valid evaluation and checkpoint writes,
PyTorch's its per-epoch valid evaluation); SimCLR, VICReg and masked prediction with the CNN and
MLP encoders (`scripts/torch_pretrain.py`: training throughput, 48 Adam steps of 256 images per
side and round); REINFORCE on CartPole-v1 (`scripts/torch_reinforce.py`, seeds 0-2, 1 thread,
wall clock to solve); the env steps against Gymnasium (`cargo bench -p wick-envs`) and MC ES on
Blackjack against the Python reference (`cargo bench -p wick-agents --bench mc_es`).

Each pair runs --rounds times (default 3), wick and the reference alternated within a round;
the table gives the median of each side and the ratio of the medians. Threads: 2 for both sides
(RAYON_NUM_THREADS and torch.set_num_threads) unless the row says otherwise; PyTorch runs with
OMP_WAIT_POLICY=PASSIVE. The machine block records the CPU, its vector extensions, the cores, the
load average before and after each row, and the versions of wick, rustc and PyTorch. A load
average above 2 on a 2-core machine flatters wick against PyTorch: the page says so when it was.

Needs: a Python with torch, numpy and gymnasium (--python; default $WICK_TORCH_PYTHON, else this
interpreter). Takes about 20 minutes on the 2-core machine of docs/performance.md.
"""
import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN, END = "<!-- bench.py:begin -->", "<!-- bench.py:end -->"


def fail(msg):
    print(f"bench.py: {msg}", file=sys.stderr)
    sys.exit(2)


def load():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def run(cmd, env=None, timeout=1800):
    e = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", **(env or {}))
    p = subprocess.run(cmd, cwd=ROOT, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited with {p.returncode}: {tail}")
    return p.stdout


def median(v):
    return statistics.median(v) if v else float("nan")


# --- the rows ---------------------------------------------------------------------------------
# Each row: (name, what, unit, function(args) -> (wick figures, reference figures, reference name,
# command, FLOPs per sample of the training products or None)).


def peak_gflops(threads):
    """The fp32 peak of `threads` cores, as wick_core::cpu::peak_gflops finds it for the benches'
    roofline lines: measured by `threads` threads of independent AVX-512 (or AVX2) FMA chains, turbo
    included (`cargo run --release -p wick-core --example peak`); the nominal clock × FLOP per cycle
    understated it 1.8× on the Intel Xeon of these tables. $WICK_PEAK_GFLOPS overrides it."""
    out = json.loads(run(["cargo", "run", "--release", "-q", "-p", "wick-core", "--example", "peak", "--", str(threads)]).strip().splitlines()[-1])
    return out["gflops"], out["how"]


def density(model, epochs, extra=()):
    def go(a):
        cmd = [a.python, "scripts/torch_density.py", "--side-by-side", "--wick", a.wick, "--model", model,
               "--data", "mnist5k", "--epochs", str(epochs if not a.quick else 1), "--threads", "2", *extra]
        w, t, flops = [], [], None
        for _ in range(a.rounds):
            out = json.loads(run(cmd, env={"RAYON_NUM_THREADS": "2"}).strip().splitlines()[-1])
            w.append(out["wick_train_samples_per_s"])
            t.append(out["torch_train_samples_per_s_incl_eval"])
            flops = out.get("flops_per_sample")
        return w, t, "PyTorch", " ".join(cmd[1:]).replace(a.wick, "target/release/wick"), flops
    return go


def pretrain(objective, encoder):
    def go(a):
        cmd = [a.python, "scripts/torch_pretrain.py", "--objective", objective, "--encoder", encoder,
               "--steps", str(48 if not a.quick else 16), "--repeats", str(a.rounds), "--threads", "2", "--wick", a.wick, "--json"]
        line = [l for l in run(cmd).splitlines() if l.startswith("JSON ")][-1]
        out = json.loads(line[5:])
        return out["wick_images_per_s"], out["torch_images_per_s"], "PyTorch", " ".join(cmd[1:]).replace(a.wick, "target/release/wick"), out.get("flops_per_image")
    return go


def reinforce(a):
    seeds = ["0", "1", "2"] if not a.quick else ["0"]
    cmd = [a.python, "scripts/torch_reinforce.py", "--wick", a.wick, "--seeds", *seeds, "--json"]
    w, t = [], []
    for _ in range(max(1, a.rounds - 1)):  # the PyTorch side takes about a minute a round
        out = json.loads([l for l in run(cmd, env={"RAYON_NUM_THREADS": "1"}).splitlines() if l.startswith("JSON ")][-1][5:])
        w.append(out["wick_env_steps_per_s"])
        t.append(out["torch_env_steps_per_s"])
    return w, t, "PyTorch", " ".join(cmd[1:]).replace(a.wick, "target/release/wick") + "  (env steps per second of wall clock, 1 thread)", None


def envs(a):
    out = run(["cargo", "bench", "-q", "-p", "wick-envs"], env={"WICK_PYTHON": a.gym_python})
    rows = {}
    for line in out.splitlines():
        m = re.match(r"^(\S+-v\d|GridWorld)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)x", line)
        if m:
            rows[m.group(1)] = (float(m.group(2)), float(m.group(4)))
    if not rows:
        raise RuntimeError("cargo bench -p wick-envs printed no Gymnasium figures (is gymnasium installed in --python?)")
    return rows


def mc_es(a):
    out = run(["cargo", "bench", "-q", "-p", "wick-agents", "--bench", "mc_es"], env={"WICK_PYTHON": a.gym_python})
    two = re.search(r"2 threads:\s+(\d+) episodes/s", out)
    py = re.search(r"Python \(Gymnasium \+ dict Q\) :\s+(\d+) episodes/s", out)
    if not (two and py):
        raise RuntimeError("cargo bench -p wick-agents --bench mc_es: no 2-thread or Python figure in its output")
    return [float(two.group(1))], [float(py.group(1))], "Python + Gymnasium", "WICK_PYTHON=… cargo bench -p wick-agents --bench mc_es  (2 threads against 1 Python process)", None


ROWS = [
    ("fvsbn", "FVSBN, mnist5k, 10 epochs whole run", "samples/s", density("fvsbn", 10)),
    ("made", "MADE 1×500, mnist5k, 10 epochs whole run", "samples/s", density("made", 10)),
    ("made-2", "MADE 2×500, mnist5k, 5 epochs whole run", "samples/s", density("made", 5, ["--layers", "2"])),
    ("nade", "NADE H=500, mnist5k, 1 epoch whole run", "samples/s", density("nade", 1)),
    ("oanade", "order-agnostic NADE 1×500, mnist5k, 3 epochs whole run", "samples/s", density("oanade", 3)),
    ("oanade-2", "order-agnostic NADE 2×500, mnist5k, 2 epochs whole run", "samples/s", density("oanade", 2, ["--layers", "2"])),
    ("simclr-cnn", "SimCLR, CNN encoder, batch 256", "images/s", pretrain("simclr", "cnn")),
    ("simclr-mlp", "SimCLR, MLP encoder, batch 256", "images/s", pretrain("simclr", "mlp")),
    ("vicreg-cnn", "VICReg, CNN encoder, batch 256", "images/s", pretrain("vicreg", "cnn")),
    ("vicreg-mlp", "VICReg, MLP encoder, batch 256", "images/s", pretrain("vicreg", "mlp")),
    ("masked-cnn", "masked prediction, CNN encoder, batch 256", "images/s", pretrain("masked", "cnn")),
    ("masked-mlp", "masked prediction, MLP encoder, batch 256", "images/s", pretrain("masked", "mlp")),
    ("reinforce", "REINFORCE, CartPole-v1, seeds 0–2 to solve", "env steps/s", reinforce),
    ("mc-es", "MC ES, Blackjack-v1, 5M episodes", "episodes/s", mc_es),
]


def fmt(x):
    if x != x:
        return "—"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e4:
        return f"{x / 1e3:.1f}k"
    return f"{x:,.0f}"


def machine(a):
    cpu = flags = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and cpu == "?":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and flags == "?":
                have = set(line.split(":", 1)[1].split())
                flags = " ".join(x for x in ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512fp16", "amx_tile") if x in have)
    git = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, stdout=subprocess.PIPE, text=True).stdout.strip()
    rustc = subprocess.run(["rustc", "-V"], stdout=subprocess.PIPE, text=True).stdout.strip()
    torch = subprocess.run([a.python, "-c", "import torch; print(torch.__version__, torch.backends.cpu.get_cpu_capability())"],
                           stdout=subprocess.PIPE, text=True).stdout.strip()
    return {"cpu": cpu, "flags": flags, "cores": os.cpu_count(), "wick": git, "rustc": rustc, "torch": torch,
            "python": platform.python_version(), "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--python", default=os.environ.get("WICK_TORCH_PYTHON", sys.executable), help="a Python with torch, numpy and gymnasium")
    ap.add_argument("--rounds", type=int, default=3, help="alternated rounds per pair; medians are reported [3]")
    ap.add_argument("--only", nargs="+", metavar="ROW", help="run these rows only: " + ", ".join(r[0] for r in ROWS) + ", envs")
    ap.add_argument("--out", default="docs/performance.md", help="the page whose bench.py section is rewritten, or - for stdout")
    ap.add_argument("--quick", action="store_true", help="shortest runs (1 epoch, 16 steps, 1 seed): checks the script, measures nothing worth keeping")
    a = ap.parse_args()
    names = [r[0] for r in ROWS] + ["envs"]
    for n in a.only or []:
        if n not in names:
            fail(f"--only: no row '{n}'; the rows are {', '.join(names)}")
    if a.rounds < 1:
        fail("--rounds must be at least 1")
    probe = subprocess.run([a.python, "-c", "import torch, numpy, gymnasium"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if probe.returncode != 0:
        fail(f"{a.python} cannot import torch, numpy and gymnasium: install them (pip install torch numpy gymnasium) or pass --python")
    a.gym_python = a.python
    if a.out != "-" and not os.path.isfile(os.path.join(ROOT, a.out)):
        fail(f"--out {a.out}: no such page (give an existing page with the bench.py markers, or - for stdout)")

    t0 = time.time()
    print("building release ...", file=sys.stderr, flush=True)
    run(["cargo", "build", "--release", "-q", "-p", "wick"])
    a.wick = os.path.join(ROOT, "target", "release", "wick")
    info = machine(a)
    info["load_before"] = load()
    table, notes = [], []
    peak, peak_how = peak_gflops(2)
    for name, what, unit, go in ROWS:
        if a.only and name not in a.only:
            continue
        l0 = load()
        print(f"{name}: {what} ...", file=sys.stderr, flush=True)
        try:
            w, t, ref, cmd, flops = go(a)
        except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError, IndexError) as e:
            notes.append(f"- {name}: not measured: {e}")
            print(f"  failed: {e}", file=sys.stderr, flush=True)
            continue
        l1 = load()
        wm, tm = median(w), median(t)
        roof = "—"
        if flops:
            gw, gt = wm * flops / 1e9, tm * flops / 1e9
            roof = f"{flops / 1e6:.2f} MFLOP: {gw:.0f} / {gt:.0f} GFLOP/s = {100 * gw / peak:.0f}% / {100 * gt / peak:.0f}%; 2× needs {200 * gt / peak:.0f}%"
        table.append(f"| {what} | {fmt(wm)} {unit} | {fmt(tm)} {unit} ({ref}) | **{wm / tm:.2f}×** | {' '.join(f'{x / y:.2f}' for x, y in zip(w, t))} | {roof} | {l0:.1f} / {l1:.1f} | `{cmd}` |")
        print(f"  wick {fmt(wm)}, {ref} {fmt(tm)}: {wm / tm:.2f}x", file=sys.stderr, flush=True)
    env_rows = []
    if not a.only or "envs" in a.only:
        l0 = load()
        print("envs: cargo bench -p wick-envs ...", file=sys.stderr, flush=True)
        try:
            for env, (ws, gs) in envs(a).items():
                env_rows.append(f"| {env} | {fmt(ws)} | {fmt(gs)} | **{ws / gs:,.0f}×** |")
            env_rows.append(f"\nLoad average {l0:.1f} before, {load():.1f} after. Command: `WICK_PYTHON=… cargo bench -p wick-envs` (single thread, random actions, 1 s per env; Gymnasium through `gym.make`, 2 s per env).")
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            notes.append(f"- envs: not measured: {e}")
    info["load_after"] = load()
    minutes = (time.time() - t0) / 60
    loaded = max(info["load_before"], info["load_after"]) > 2.0
    page = [BEGIN, "", f"Generated by `python scripts/bench.py` on {info['date']} in {minutes:.0f} minutes"
            + (f" (rows: {', '.join(a.only)})" if a.only else "") + (", **--quick: not a measurement**" if a.quick else "") + ".", "",
            f"- machine: {info['cpu']}, {info['cores']} cores; {info['flags']}",
            f"- versions: wick {info['wick']}, {info['rustc']}, PyTorch {info['torch']}, Python {info['python']}",
            f"- load average: {info['load_before']:.1f} before, {info['load_after']:.1f} after"
            + (" — **above 2: the machine was loaded, which flatters wick against PyTorch; these ratios are optimistic**" if loaded else " (quiet)"),
            f"- each pair: rounds {a.rounds}, wick and the reference alternated; the ratio is of the medians; 2 threads each unless said",
            f"- roofline: the FLOPs per sample of one training step's matrix products and convolutions, forward and backward, as "
            f"`torch.utils.flop_counter` counts them on the reference model (elementwise work, augmentation and the optimizer not "
            f"counted; masked products counted dense, as PyTorch runs them, though wick's staircase kernels skip about half), "
            f"times each side's samples/s, against the fp32 peak of 2 cores: {peak:.0f} GFLOP/s ({peak_how}); "
            f"the density rows' wall clock includes evaluation whose products are not counted. "
            f"\"2× needs\" is the share of the peak that twice the reference's figure would take", ""]
    if table:
        page += ["| work | wick | reference | ratio | per round | roofline: training products, wick / reference GFLOP/s, share of peak | load before / after | command |",
                 "| --- | --- | --- | --- | --- | --- | --- | --- |", *table, ""]
    if env_rows:
        page += ["| env | wick steps/s | Gymnasium steps/s | ratio |", "| --- | --- | --- | --- |", *env_rows, ""]
    if notes:
        page += ["Not measured in this run:", *notes, ""]
    page.append(END)
    text = "\n".join(page)
    if a.out == "-":
        print(text)
        return
    path = os.path.join(ROOT, a.out)
    with open(path) as f:
        old = f.read()
    if BEGIN in old and END in old:
        new = old[: old.index(BEGIN)] + text + old[old.index(END) + len(END):]
    else:
        fail(f"{a.out} has no '{BEGIN}' ... '{END}' section to rewrite: add the two markers where the table belongs")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(new)
    os.replace(tmp, path)
    print(f"wrote {a.out} ({len(table)} rows, {len(notes)} not measured) in {minutes:.0f} minutes", file=sys.stderr)


if __name__ == "__main__":
    main()
