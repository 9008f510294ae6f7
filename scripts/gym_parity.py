#!/usr/bin/env python3
"""Step-by-step parity of wick's environments with Python Gymnasium.

Gymnasium and wick are driven side by side with the *same randomness injected*:

* CartPole-v1: the same initial state (Gymnasium's own seeded reset, handed to wick bit for
  bit), the same actions (random, and a noisy balancing controller that reaches the 500-step
  limit); observations must agree to 1e-6 at every step, with the same rewards, the same
  termination / truncation step, and the same behaviour for a few steps past termination.
* Blackjack-v1 (sab / natural / plain rules): the same card sequence (Gymnasium's
  ``np_random`` replaced by a stub whose ``choice(deck)`` deals the next card), random actions,
  hands with naturals included on purpose.
* FrozenLake-v1, FrozenLake8x8-v1 (slippery, success_rate, reward_schedule, custom maps, the
  time limits) and CliffWalking-v1 / CliffWalkingSlippery-v1: the same slip outcomes (the stub's
  ``random()`` returns the uniforms wick is given), random actions.
* Taxi-v4 (dry, is_rainy, fickle_passenger, both, other probabilities): the same start draw,
  fickleness draw, rain draws and new destination (a stub again), a noisy optimal policy (value
  iteration on Gymnasium's own ``P``) so that episodes end by dropoff as well as by the
  200-step limit.
* MountainCar-v0 and Acrobot-v1 (book and nips dynamics): Gymnasium's seeded initial state
  handed to wick bit for bit, random actions and an energy-pumping controller that reaches the
  goal; observations within 1e-6, a few steps past termination too.
* The RGB renders of CartPole-v1, MountainCar-v0 and Acrobot-v1 against Gymnasium's pygame
  pictures of the same states (with pygame installed): every drawn pixel within one pixel of a
  drawn pixel of the other picture, the same solid colours.

wick's side is the `parity` example of the wick-envs crate (``cargo run --release --example
parity``), fed one JSON job per env configuration. Exit code 0 when everything agrees, 1 on any
mismatch (each printed), 2 when Gymnasium is missing.

Usage: python scripts/gym_parity.py [--episodes N] [--bin PATH_TO_PARITY_BINARY]
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

try:
    import numpy as np
    import gymnasium as gym
except ImportError as e:  # pragma: no cover
    print(f"gym_parity: needs gymnasium and numpy ({e}); pip install gymnasium", file=sys.stderr)
    sys.exit(2)

gym.logger.min_level = 40  # silence the "step after terminated" warnings we provoke on purpose
import warnings

warnings.filterwarnings("ignore")

ROOT = Path(__file__).resolve().parent.parent
CRATE = ROOT / "envs" if (ROOT / "envs" / "Cargo.toml").exists() else ROOT


def f64_bits(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", float(x)))[0]


class StubRandom:
    """Stands in for ``env.unwrapped.np_random``: ``random()`` returns the given uniforms,
    ``choice(deck)`` the given cards (other choices — card suits for rendering — the first)."""

    def __init__(self, uniforms=(), cards=()):
        self.uniforms = list(uniforms)
        self.cards = list(cards)
        self.used_cards = 0

    def random(self, *a, **k):
        return self.uniforms.pop(0)

    def choice(self, a, *args, **kw):
        a = list(a)
        if all(isinstance(x, (int, np.integer)) for x in a):
            self.used_cards += 1
            return self.cards.pop(0)
        return a[0]


def run_wick(job: dict, binary: str | None) -> dict:
    data = json.dumps(job).encode()
    if binary:
        cmd = [binary]
    else:
        cmd = ["cargo", "run", "--release", "--quiet", "--manifest-path", str(CRATE / "Cargo.toml"), "--example", "parity"]
    out = subprocess.run(cmd, input=data, capture_output=True, check=False, cwd=ROOT)
    if out.returncode != 0:
        sys.stderr.write(out.stderr.decode())
        raise SystemExit(f"gym_parity: wick's parity driver failed ({' '.join(cmd)})")
    return json.loads(out.stdout)


def as_list(o):
    if isinstance(o, tuple):
        return [int(x) for x in o]
    if isinstance(o, np.ndarray):
        return [float(x) for x in o]
    return int(o)


def play_gym(env, actions_fn, extra, max_steps=10_000):
    """Play until done (+extra steps); returns (reset_obs_list, steps, actions)."""
    steps, actions = [], []
    left = None
    obs = env._wick_reset_obs
    for t in range(max_steps):
        if left == 0:
            break
        a = actions_fn(obs, t)
        actions.append(int(a))
        obs, r, term, trunc, _ = env.step(a)
        steps.append([as_list(obs), float(r), bool(term), bool(trunc)])
        if left is not None:
            left -= 1
        elif term or trunc:
            left = extra
    return steps, actions


def compare(name, gym_eps, wick_eps, tol):
    bad, nsteps, worst = 0, 0, 0.0
    for k, (g, w) in enumerate(zip(gym_eps, wick_eps["episodes"])):
        def close(a, b):
            nonlocal worst
            if isinstance(a, list):
                if not isinstance(b, list) or len(a) != len(b):
                    return False
                d = max((abs(x - y) for x, y in zip(a, b)), default=0.0)
                worst = max(worst, d)
                return d <= tol
            return a == b

        if not close(g["reset"], w["reset"]):
            print(f"MISMATCH {name} episode {k}: reset obs gym {g['reset']} wick {w['reset']}")
            bad += 1
            continue
        if len(g["steps"]) != len(w["steps"]):
            print(f"MISMATCH {name} episode {k}: gym {len(g['steps'])} steps, wick {len(w['steps'])}"
                  f" (last wick: {w['steps'][-1] if w['steps'] else None})")
            bad += 1
            continue
        for t, (gs, ws) in enumerate(zip(g["steps"], w["steps"])):
            nsteps += 1
            if isinstance(ws, dict) or not close(gs[0], ws[0]) or gs[1:] != ws[1:]:
                print(f"MISMATCH {name} episode {k} step {t}: gym {gs} wick {ws}")
                bad += 1
                break
    status = "ok" if bad == 0 else f"{bad} MISMATCHED EPISODES"
    extra = f", max |obs diff| {worst:.1e}" if tol > 0 else ""
    print(f"{name}: {len(gym_eps)} episodes, {nsteps} steps{extra}: {status}")
    return bad


def cartpole_case(n, binary, sutton_barto=False):
    rng = np.random.default_rng(1)
    kwargs = {"sutton_barto_reward": True} if sutton_barto else {}
    env = gym.make("CartPole-v1", **kwargs)
    eps, job_eps = [], []
    for k in range(n):
        env.reset(seed=1000 + k)
        state = np.array(env.unwrapped.state, dtype=np.float64)
        env._wick_reset_obs = np.array(state, dtype=np.float32)
        if k % 2 == 0:
            fn = lambda o, t: int(rng.integers(2))
        else:  # a noisy balancing controller: survives to the 500-step limit
            fn = lambda o, t: int(rng.integers(2)) if rng.random() < 0.1 else int(o[2] + 0.5 * o[3] > 0)
        extra = 3 if k % 5 == 0 else 0
        steps, acts = play_gym(env, fn, extra)
        eps.append({"reset": as_list(env._wick_reset_obs), "steps": steps})
        job_eps.append({"state_bits": [f64_bits(x) for x in state], "actions": acts, "extra": extra})
    job = {"env": "CartPole-v1", "options": {"sutton_barto_reward": "true" if sutton_barto else "false"},
           "max_episode_steps": 500, "episodes": job_eps}
    name = "CartPole-v1" + (" sutton_barto_reward" if sutton_barto else "")
    return compare(name, eps, run_wick(job, binary), 1e-6)


def blackjack_case(n, binary, sab, natural):
    rng = np.random.default_rng(2)
    deck = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 10, 10, 10]
    env = gym.make("Blackjack-v1", sab=sab, natural=natural)
    env.reset(seed=0)
    eps, job_eps = [], []
    for k in range(n):
        cards = [int(rng.choice(deck)) for _ in range(40)]
        if k % 7 == 1:
            cards[2:4] = [1, 10]  # player natural
        if k % 11 == 2:
            cards[0:2] = [10, 1]  # dealer natural
        stub = StubRandom(cards=cards)
        env.unwrapped._np_random = stub
        obs, _ = env.reset()
        env._wick_reset_obs = obs
        steps, acts = play_gym(env, lambda o, t: int(rng.integers(2)), 0)
        eps.append({"reset": as_list(obs), "steps": steps})
        job_eps.append({"cards": cards, "actions": acts})
    job = {"env": "Blackjack-v1", "options": {"sab": str(sab).lower(), "natural": str(natural).lower()},
           "max_episode_steps": None, "episodes": job_eps}
    return compare(f"Blackjack-v1 sab={sab} natural={natural}", eps, run_wick(job, binary), 0)


def toy_case(n, binary, env_id, kwargs, max_steps, max_episode_steps, policy=None, label=""):
    rng = np.random.default_rng(3)
    env = gym.make(env_id, **kwargs)
    env.reset(seed=0)
    nA = env.action_space.n
    eps, job_eps = [], []
    for k in range(n):
        us = [float(rng.random()) for _ in range(max_steps + 1)]
        stub = StubRandom(uniforms=[0.5] + us)  # the first draw picks the (only) start state
        env.unwrapped._np_random = stub
        obs, _ = env.reset()
        env._wick_reset_obs = obs
        fn = policy(rng) if policy else (lambda o, t: int(rng.integers(nA)))
        steps, acts = play_gym(env, fn, 0, max_steps=max_steps)
        eps.append({"reset": as_list(obs), "steps": steps})
        job_eps.append({"uniform_bits": [f64_bits(u) for u in us], "actions": acts})
    opts = {}
    for key, v in kwargs.items():
        if isinstance(v, bool):
            opts[key] = str(v).lower()
        elif key == "desc":
            opts[key] = "/".join(v)
        elif key == "reward_schedule":
            opts[key] = ":".join(repr(float(x)) for x in v)
        else:
            opts[key] = v if isinstance(v, str) else repr(v)
    job = {"env": env_id, "options": opts, "max_episode_steps": max_episode_steps, "episodes": job_eps}
    return compare(f"{env_id} {label or kwargs}", eps, run_wick(job, binary), 0)


class TaxiStub:
    """``np_random`` for Taxi: ``random()`` returns the given uniforms in order, ``choice(list)``
    the list's element at the given index (the fickle passenger's new destination)."""

    def __init__(self, uniforms, choice):
        self.uniforms = list(uniforms)
        self.index = choice

    def random(self, *a, **k):
        return self.uniforms.pop(0)

    def choice(self, a, *args, **kw):
        return list(a)[self.index]


def taxi_optimal_policy(env):
    """Value iteration (undiscounted) on Gymnasium's own ``P``: a greedy action per state."""
    P, nS, nA = env.unwrapped.P, 500, 6
    v = np.zeros(nS)
    q = lambda s, a: sum(p * (r + (0.0 if t else v[n])) for p, n, r, t in P[s][a])
    while True:
        new = np.array([max(q(s, a) for a in range(nA)) for s in range(nS)])
        done = np.max(np.abs(new - v)) < 1e-9
        v = new
        if done:
            break
    return [int(np.argmax([q(s, a) for a in range(nA)])) for s in range(nS)]


def taxi_case(n, binary, kwargs):
    rng = np.random.default_rng(4)
    env = gym.make("Taxi-v4", **kwargs)
    env.reset(seed=0)
    greedy = taxi_optimal_policy(env)
    fickle = kwargs.get("fickle_passenger", False)
    eps, job_eps = [], []
    for k in range(n):
        reset_us = [float(rng.random()), float(rng.random())]
        if k % 10 == 0:
            reset_us[0] = 0.9999999999999999  # past the start distribution's cumulative sum: state 0, as np.argmax
        us = [float(rng.random()) for _ in range(201)]
        choice = int(rng.integers(3))
        env.unwrapped._np_random = TaxiStub((reset_us if fickle else reset_us[:1]) + us, choice)
        obs, _ = env.reset()
        env._wick_reset_obs = obs
        noise = [0.0, 0.1, 0.5, 1.0][k % 4]
        fn = lambda o, t: int(rng.integers(6)) if rng.random() < noise else greedy[o]
        steps, acts = play_gym(env, fn, 0, max_steps=300)
        eps.append({"reset": as_list(obs), "steps": steps})
        job_eps.append({"reset_bits": [f64_bits(u) for u in reset_us], "uniform_bits": [f64_bits(u) for u in us],
                        "choice": choice, "actions": acts})
    opts = {key: (str(v).lower() if isinstance(v, bool) else repr(v)) for key, v in kwargs.items()}
    job = {"env": "Taxi-v4", "options": opts, "max_episode_steps": 200, "episodes": job_eps}
    terminated = sum(1 for e in eps if e["steps"] and e["steps"][-1][2])
    # Episodes where the destination (obs % 4) changed: the fickle passenger changed their mind.
    fickle_changes = sum(1 for e in eps if len({st[0] % 4 for st in e["steps"]} | {e["reset"] % 4}) > 1)
    label = f"Taxi-v4 {kwargs or 'default'} ({terminated} dropped off, {fickle_changes} changed destination)"
    return compare(label, eps, run_wick(job, binary), 0)


def classic_case(n, binary, env_id, max_episode_steps, controller, kwargs=None, attrs=None):
    """MountainCar / Acrobot: Gymnasium's seeded start handed to wick; random actions on even
    episodes, ``controller`` (with 10% random actions) on odd ones."""
    rng = np.random.default_rng(5)
    env = gym.make(env_id, **(kwargs or {}))
    for key, v in (attrs or {}).items():
        setattr(env.unwrapped, key, v)
    nA = env.action_space.n
    eps, job_eps = [], []
    for k in range(n):
        obs, _ = env.reset(seed=2000 + k)
        state = np.array(env.unwrapped.state, dtype=np.float64)
        env._wick_reset_obs = obs
        if k % 2 == 0:
            fn = lambda o, t: int(rng.integers(nA))
        else:
            fn = lambda o, t: int(rng.integers(nA)) if rng.random() < 0.1 else controller(o)
        extra = 3 if k % 4 == 1 else 0
        steps, acts = play_gym(env, fn, extra)
        eps.append({"reset": as_list(obs), "steps": steps})
        job_eps.append({"state_bits": [f64_bits(x) for x in state], "actions": acts, "extra": extra})
    opts = {key: (v if isinstance(v, str) else repr(v)) for key, v in {**(kwargs or {}), **(attrs or {})}.items()}
    job = {"env": env_id, "options": opts, "max_episode_steps": max_episode_steps, "episodes": job_eps}
    terminated = sum(1 for e in eps if any(st[2] for st in e["steps"]))
    label = f"{env_id} {opts or ''}".rstrip()
    return compare(f"{label} ({terminated} reached the goal)", eps, run_wick(job, binary), 1e-6)


def render_case(binary, env_id, states):
    """RGB renders of the classic-control envs against Gymnasium's (pygame) for the same states.
    pygame anti-aliases edges and rounds vertices to whole pixels where wick samples pixel
    centres, so shapes may differ by a pixel at their edges: every drawn (non-white) pixel of
    each image must lie within one pixel of a drawn pixel of the other (at least 99 % of them),
    and both must use the same solid colours. Skipped without pygame."""
    try:
        import pygame  # noqa: F401
    except ImportError:
        print(f"{env_id} render: skipped (pygame not installed)")
        return 0
    env = gym.make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    out = run_wick({"env": env_id, "render_states": [[f64_bits(x) for x in st] for st in states]}, binary)
    bad, worst_iou = 0, 1.0
    for st, w in zip(states, out["images"]):
        env.unwrapped.state = np.array(st, dtype=np.float64)
        g = np.asarray(env.render())
        w = np.frombuffer(bytes.fromhex(w["hex"]), dtype=np.uint8).reshape(w["height"], w["width"], 3)
        if g.shape != w.shape:
            print(f"MISMATCH {env_id} render of {st}: gym shape {g.shape}, wick {w.shape}")
            bad += 1
            continue
        fg, fw = (g != 255).any(axis=2), (w != 255).any(axis=2)

        def near(a, b):  # the fraction of a's drawn pixels with a drawn pixel of b within one pixel
            pb = np.pad(b, 1)
            grown = np.zeros_like(b)
            for dy in (0, 1, 2):
                for dx in (0, 1, 2):
                    grown |= pb[dy:dy + b.shape[0], dx:dx + b.shape[1]]
            return (a & grown).sum() / max(a.sum(), 1)

        def solid(im):  # colours covering at least 40 pixels (pygame's anti-aliased edges blend)
            cols, n = np.unique(im.reshape(-1, 3), axis=0, return_counts=True)
            return {tuple(int(v) for v in c) for c, k in zip(cols, n) if k >= 40}

        cover = min(near(fw, fg), near(fg, fw))
        worst_iou = min(worst_iou, cover)
        if cover < 0.99 or solid(g) != solid(w):
            print(f"MISMATCH {env_id} render of {st}: {cover:.4f} of the drawn pixels within a pixel of the other's;"
                  f" colours gym {sorted(solid(g))} wick {sorted(solid(w))}")
            bad += 1
    status = "ok" if bad == 0 else f"{bad} MISMATCHED FRAMES"
    print(f"{env_id} render: {len(states)} frames, >= {worst_iou:.4f} of the drawn pixels within a pixel of Gymnasium's and back,"
          f" same colours: {status}")
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=200, help="episodes per configuration (CartPole: a tenth)")
    ap.add_argument("--bin", help="the parity driver binary (default: cargo run --example parity)")
    a = ap.parse_args()
    n = a.episodes
    print(f"Gymnasium {gym.__version__} vs wick")
    if not a.bin:  # build once, quietly, so the timing of the jobs is not the compile
        subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path", str(CRATE / "Cargo.toml"),
                        "--example", "parity"], check=True, cwd=ROOT)
    bad = 0
    bad += cartpole_case(max(n // 10, 4), a.bin)
    bad += cartpole_case(4, a.bin, sutton_barto=True)
    for sab, natural in [(True, False), (False, True), (False, False)]:
        bad += blackjack_case(n * 5, a.bin, sab, natural)
    bad += toy_case(n, a.bin, "FrozenLake-v1", {}, 200, 100)
    bad += toy_case(n, a.bin, "FrozenLake8x8-v1", {}, 300, 200)
    bad += toy_case(n, a.bin, "FrozenLake-v1", {"success_rate": 0.75, "reward_schedule": (2, -1, -0.01)}, 200, 100)
    bad += toy_case(n // 4, a.bin, "FrozenLake-v1", {"map_name": "8x8", "is_slippery": False}, 200, 100)
    # No holes, never heading for the goal: every episode hits the 100-step limit.
    bad += toy_case(10, a.bin, "FrozenLake-v1", {"desc": ["SFFF", "FFFF", "FFFF", "FFFG"], "is_slippery": False},
                    200, 100, policy=lambda rng: (lambda o, t: int(rng.choice([0, 3]))), label="custom map, truncation")
    bad += toy_case(n // 4, a.bin, "CliffWalking-v1", {}, 300, None)
    bad += toy_case(n // 4, a.bin, "CliffWalkingSlippery-v1", {}, 300, None)
    for kwargs in [{}, {"is_rainy": True}, {"fickle_passenger": True}, {"is_rainy": True, "fickle_passenger": True},
                   {"is_rainy": True, "rainy_probability": 0.5, "fickle_passenger": True, "fickle_probability": 0.9}]:
        bad += taxi_case(n // 2, a.bin, kwargs)
    pump = lambda o: 2 if o[1] > 0 else 0  # push along the velocity
    bad += classic_case(max(n // 10, 4), a.bin, "MountainCar-v0", 200, pump)
    bad += classic_case(4, a.bin, "MountainCar-v0", 200, pump, kwargs={"goal_velocity": 0.02})
    swing = lambda o: 2 if o[5] > 0 else 0  # torque along joint 2's velocity: pumps energy in
    bad += classic_case(max(n // 10, 4), a.bin, "Acrobot-v1", 500, swing)
    bad += classic_case(max(n // 20, 4), a.bin, "Acrobot-v1", 500, swing, attrs={"book_or_nips": "nips"})
    bad += render_case(a.bin, "CartPole-v1", [[0, 0, 0, 0], [1.0, 0, 0.15, 0], [-1.5, 0, -0.2, 0]])
    bad += render_case(a.bin, "MountainCar-v0", [[-0.5, 0], [0.3, 0], [-1.1, 0], [0.55, 0]])
    bad += render_case(a.bin, "Acrobot-v1", [[0, 0, 0, 0], [1.0, -0.5, 0, 0], [2.5, 1.0, 0, 0], [-2.0, 2.0, 0, 0]])
    if bad:
        print(f"gym_parity: {bad} mismatches", file=sys.stderr)
        sys.exit(1)
    print("gym_parity: all environments agree with Gymnasium")


if __name__ == "__main__":
    main()
