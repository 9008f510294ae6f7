#!/usr/bin/env python3
"""Play a wick REINFORCE run's saved policy in Gymnasium with numpy alone (an oracle for the
checkpoint layout of docs/checkpoints.md and for wick's CartPole).

    python scripts/play_reinforce_policy.py RUN_DIR [EPISODES] [--greedy]

prints a JSON object: the env id, the returns and their mean.
"""
import json
import sys
import tomllib

import gymnasium as gym
import numpy as np
from safetensors.numpy import load_file


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    greedy = "--greedy" in sys.argv
    run = args[0]
    episodes = int(args[1]) if len(args) > 1 else 20
    t = load_file(f"{run}/checkpoint.safetensors")
    with open(f"{run}/config.toml", "rb") as f:
        cfg = tomllib.load(f)
    env = gym.make(cfg["env"])
    rng = np.random.default_rng(0)

    def probs(obs):
        h = np.maximum(t["policy.0.weight"] @ obs + t["policy.0.bias"], 0)
        z = t["policy.2.weight"] @ h + t["policy.2.bias"]
        e = np.exp(z - z.max())
        return e / e.sum()

    returns = []
    for k in range(episodes):
        obs, _ = env.reset(seed=k)
        done, ret = False, 0.0
        while not done:
            p = probs(np.asarray(obs, dtype=np.float32))
            a = int(p.argmax()) if greedy else int(rng.choice(len(p), p=p))
            obs, r, term, trunc, _ = env.step(a)
            ret += r
            done = term or trunc
        returns.append(ret)
    print(json.dumps({"env": cfg["env"], "returns": returns, "mean": float(np.mean(returns))}))


if __name__ == "__main__":
    main()
