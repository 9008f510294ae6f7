"""Monte Carlo ES on Gymnasium's Blackjack-v1 (sab=True) with a dictionary Q: the Python
reference of wick's MC ES benchmark (agents/benches/mc_es.rs), the same algorithm as
wick_agents::mc_exploring_starts with batch 1.

Exploring starts: after reset(), the player's hand and the dealer's showing card are replaced
by a uniformly drawn decision state (sum 12-21, dealer A-10, usable ace or not) as wick's
reset_to_state builds it; the first action is uniform, then greedy in Q (ties to stick);
first-visit returns, Q(s,a) += (G - Q(s,a)) / N(s,a).

    python scripts/mc_es_blackjack.py --episodes 200000     # prints JSON: episodes_per_s, ...
"""
import argparse
import json
import random
import time

import gymnasium as gym


def hand(sum_, ace):
    if ace:
        return [1, 5, 5] if sum_ == 21 else [1, sum_ - 11]
    return [10, 9, 2] if sum_ == 21 else [10, sum_ - 10]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    env = gym.make("Blackjack-v1", sab=True)
    u = env.unwrapped
    rng = random.Random(args.seed)
    starts = [(s, d, a) for s in range(12, 22) for d in range(1, 11) for a in (False, True)]
    Q, N = {}, {}
    env.reset(seed=args.seed)
    t0 = time.perf_counter()
    for _ in range(args.episodes):
        env.reset()
        s, d, a = starts[rng.randrange(200)]
        u.player = hand(s, a)
        u.dealer = [d, u.dealer[1]]
        obs = (s, d, int(a))
        action = rng.randrange(2)
        episode = []
        while True:
            nxt, r, term, trunc, _ = env.step(action)
            episode.append((obs, action, r))
            if term or trunc:
                break
            obs = nxt
            q0, q1 = Q.get((obs, 0), 0.0), Q.get((obs, 1), 0.0)
            action = 1 if q1 > q0 else 0
        g = 0.0
        first = {}
        for t, (o, act, _) in enumerate(episode):
            first.setdefault((o, act), t)
        for t in range(len(episode) - 1, -1, -1):
            o, act, r = episode[t]
            g += r
            if first[(o, act)] == t:
                k = (o, act)
                N[k] = N.get(k, 0) + 1
                q = Q.get(k, 0.0)
                Q[k] = q + (g - q) / N[k]
    dt = time.perf_counter() - t0
    print(json.dumps({"episodes": args.episodes, "seconds": dt, "episodes_per_s": args.episodes / dt}))


if __name__ == "__main__":
    main()
