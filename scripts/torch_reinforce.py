#!/usr/bin/env python3
"""REINFORCE on CartPole-v1 in PyTorch (CPU), the same algorithm, network and hyperparameters
as `wick train reinforce`, timed side by side with the wick binary.

Algorithm (wick's defaults, agents/src/reinforce.rs): policy MLP 4-128-2 with ReLU, nn.Linear's
default init; one episode per update; reward-to-go returns with gamma 0.99, standardised over
the episode (population std + 1e-8); loss -mean_t(A_t log pi(a_t|s_t)); Adam lr 1e-2; stop
when the mean of the last 100 episodic returns reaches 475 or after 300,000 env steps.
Gymnasium's CartPole-v1, each episode reset with its own seed.

Two ways to write the PyTorch side (--style):
  batched  act under no_grad one step at a time, then one forward+backward over the episode
           (what wick does; the fastest PyTorch version of the algorithm);
  classic  keep each step's log-prob with its graph and backpropagate through the list, as
           pytorch/examples' reinforce.py does.

    RAYON_NUM_THREADS=1 python scripts/torch_reinforce.py --wick target/release/wick --seeds 0 1 2 3 4

prints, per seed, steps to solve and wall-clock seconds for both, and the ratios.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn


def torch_run(seed, args):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    env = gym.make("CartPole-v1")
    policy = nn.Sequential(nn.Linear(4, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 2))
    opt = torch.optim.Adam(policy.parameters(), lr=args.lr)
    recent, steps, episodes, solved_at = [], 0, 0, None
    t0 = time.perf_counter()
    while steps < args.total_steps:
        obs, _ = env.reset(seed=int(rng.integers(2**31)))
        obs_buf, acts, rews, logps = [], [], [], []
        done = False
        while not done:
            x = torch.as_tensor(obs, dtype=torch.float32)
            if args.style == "classic":
                dist = torch.distributions.Categorical(logits=policy(x))
                a = dist.sample()
                logps.append(dist.log_prob(a))
                a = int(a)
            else:
                with torch.no_grad():
                    p = torch.softmax(policy(x), -1).numpy().astype(np.float64)
                a = int(rng.random() * p.sum() >= p[0])  # two actions: inverse CDF
                obs_buf.append(obs)
                acts.append(a)
            obs, r, term, trunc, _ = env.step(a)
            rews.append(r)
            done = term or trunc
        steps += len(rews)
        episodes += 1
        recent.append(sum(rews))
        recent = recent[-100:]
        if len(recent) == 100 and np.mean(recent) >= 475:
            solved_at = steps
            break
        g, acc = np.zeros(len(rews)), 0.0
        for t in range(len(rews) - 1, -1, -1):
            acc = rews[t] + args.gamma * acc
            g[t] = acc
        g = (g - g.mean()) / (g.std() + 1e-8)
        g = torch.as_tensor(g, dtype=torch.float32)
        if args.style == "classic":
            logp = torch.stack(logps)
        else:
            logits = policy(torch.as_tensor(np.array(obs_buf), dtype=torch.float32))
            logp = torch.log_softmax(logits, -1).gather(1, torch.as_tensor(acts).unsqueeze(1)).squeeze(1)
        loss = -(logp * g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {"steps_to_solve": solved_at, "env_steps": steps, "episodes": episodes,
            "mean_return_last100": float(np.mean(recent)), "secs": time.perf_counter() - t0}


def wick_run(seed, args, logdir):
    cmd = [args.wick, "train", "reinforce", "--seed", str(seed), "--total-steps", str(args.total_steps),
           "--hidden", str(args.hidden), "--lr", str(args.lr), "--gamma", str(args.gamma),
           "--threads", str(args.threads), "--quiet", "--logdir", logdir, "--run-name", f"s{seed}"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    secs = time.perf_counter() - t0
    with open(os.path.join(logdir, f"s{seed}", "metrics.json")) as f:
        m = json.load(f)
    return {"steps_to_solve": m["steps_to_solve"], "env_steps": m["env_steps"], "episodes": m["episodes"],
            "mean_return_last100": m["mean_return_last100"], "secs": secs}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wick", help="path of the wick binary (omit to run PyTorch only)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--style", choices=["batched", "classic"], default="batched")
    ap.add_argument("--threads", type=int, default=1, help="threads for both (torch.set_num_threads, wick --threads)")
    ap.add_argument("--total-steps", type=int, default=300_000)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--gamma", type=float, default=0.99)
    ap.add_argument("--keep-denormals", action="store_true",
                    help="leave denormal floats on (a collapsed policy's tiny probabilities then slow PyTorch down ~4x)")
    ap.add_argument("--json", action="store_true", help="also print one line 'JSON {...}' with the totals")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not args.keep_denormals:
        torch.set_flush_denormal(True)
    rows = []
    with tempfile.TemporaryDirectory() as logdir:
        for seed in args.seeds:
            t = torch_run(seed, args)
            w = wick_run(seed, args, logdir) if args.wick else None
            rows.append((seed, t, w))
            line = f"seed {seed}: torch({args.style}) solve {t['steps_to_solve']} steps in {t['secs']:.2f} s ({t['env_steps'] / t['secs']:.0f} steps/s)"
            if w:
                line += (f" | wick solve {w['steps_to_solve']} steps in {w['secs']:.2f} s ({w['env_steps'] / w['secs']:.0f} steps/s)"
                         f" | time ratio {t['secs'] / w['secs']:.1f}x, steps/s ratio {(w['env_steps'] / w['secs']) / (t['env_steps'] / t['secs']):.1f}x")
            print(line, flush=True)
    tt = sum(r[1]["secs"] for r in rows)
    solved_t = [r[1]["steps_to_solve"] for r in rows if r[1]["steps_to_solve"] is not None]
    print(f"torch ({args.style}, {args.threads} thread(s)): solved {len(solved_t)}/{len(rows)}, median steps "
          f"{int(np.median(solved_t)) if solved_t else None}, total {tt:.2f} s")
    if args.wick:
        tw = sum(r[2]["secs"] for r in rows)
        solved_w = [r[2]["steps_to_solve"] for r in rows if r[2]["steps_to_solve"] is not None]
        steps_t = sum(r[1]["env_steps"] for r in rows)
        steps_w = sum(r[2]["env_steps"] for r in rows)
        print(f"wick ({args.threads} thread(s)): solved {len(solved_w)}/{len(rows)}, median steps "
              f"{int(np.median(solved_w)) if solved_w else None}, total {tw:.2f} s (process start, logging and checkpoints included)")
        print(f"wall-clock ratio torch/wick: {tt / tw:.1f}x; per env step: {(tt / steps_t) / (tw / steps_w):.1f}x")
    if args.json:
        out = {"seeds": args.seeds, "threads": args.threads, "torch_secs": tt, "torch_env_steps": sum(r[1]["env_steps"] for r in rows),
               "torch_solved": len(solved_t)}
        out["torch_env_steps_per_s"] = out["torch_env_steps"] / tt
        if args.wick:
            out.update(wick_secs=tw, wick_env_steps=steps_w, wick_solved=len(solved_w), wick_env_steps_per_s=steps_w / tw)
        print("JSON " + json.dumps(out), flush=True)


if __name__ == "__main__":
    sys.exit(main())
