//! Steps per second of every env, single-threaded, random actions (precomputed), episodes
//! reset on `terminated || truncated`, each env wrapped as the registry wraps it (time
//! limits). With `WICK_PYTHON` set (a Python with `gymnasium`), Gymnasium's figure for the same
//! loop over `gym.make(id)` is measured in the same run and the ratio printed.
//!
//! `cargo bench -p wick-envs` (or `WICK_PYTHON=.venv/bin/python cargo bench -p wick-envs`; add
//! `-- Taxi Acrobot` to run only the envs whose id contains one of the words).

use std::hint::black_box;
use std::process::Command;
use std::time::Instant;

use wick_core::rng::Rng;
use wick_envs::acrobot::Acrobot;
use wick_envs::blackjack::{Blackjack, BlackjackConfig};
use wick_envs::cartpole::CartPole;
use wick_envs::cliff_walking::CliffWalking;
use wick_envs::frozen_lake::{FrozenLake, FrozenLakeConfig};
use wick_envs::grid_world::{GridWorld, GridWorldConfig};
use wick_envs::mountain_car::MountainCar;
use wick_envs::taxi::{Taxi, TaxiConfig};
use wick_envs::wrappers::TimeLimit;
use wick_envs::{make, Env};

const SECONDS: f64 = 1.0;

struct Row {
    id: &'static str,
    steps_per_s: f64,
    episodes_per_s: f64,
}

fn actions(n: usize) -> Vec<u8> {
    let mut r = Rng::stream(0, "bench-actions");
    (0..1 << 20).map(|_| r.below(n as u64) as u8).collect()
}

fn bench<E: Env>(id: &'static str, mut env: E) -> Row {
    let acts = actions(env.num_actions());
    env.reset(Some(0));
    let (mut steps, mut episodes) = (0u64, 0u64);
    let t0 = Instant::now();
    loop {
        for _ in 0..65_536 {
            let a = acts[(steps as usize) & ((1 << 20) - 1)] as usize;
            let s = env.step(a).unwrap();
            black_box(&s.obs);
            steps += 1;
            if s.terminated || s.truncated {
                episodes += 1;
                black_box(env.reset(None));
            }
        }
        if t0.elapsed().as_secs_f64() >= SECONDS {
            break;
        }
    }
    let dt = t0.elapsed().as_secs_f64();
    Row { id, steps_per_s: steps as f64 / dt, episodes_per_s: episodes as f64 / dt }
}

fn bench_dyn(id: &'static str) -> Row {
    let mut env = make(id, &[]).unwrap();
    let acts = actions(env.num_actions());
    let mut obs = vec![0f32; env.obs_dim()];
    env.reset(Some(0), &mut obs).unwrap();
    let (mut steps, mut episodes) = (0u64, 0u64);
    let t0 = Instant::now();
    loop {
        for _ in 0..65_536 {
            let a = acts[(steps as usize) & ((1 << 20) - 1)] as usize;
            let s = env.step(a, &mut obs).unwrap();
            black_box(&obs);
            steps += 1;
            if s.done() {
                episodes += 1;
                env.reset(None, &mut obs).unwrap();
            }
        }
        if t0.elapsed().as_secs_f64() >= SECONDS {
            break;
        }
    }
    let dt = t0.elapsed().as_secs_f64();
    Row { id, steps_per_s: steps as f64 / dt, episodes_per_s: episodes as f64 / dt }
}

const PY: &str = r#"
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np, gymnasium as gym
out = {}
for env_id in sys.argv[1:]:
    env = gym.make(env_id)
    env.reset(seed=0)
    acts = np.random.default_rng(0).integers(env.action_space.n, size=1 << 20).tolist()
    steps = episodes = 0
    t0 = time.perf_counter()
    while True:
        for _ in range(5000):
            _, _, term, trunc, _ = env.step(acts[steps & ((1 << 20) - 1)])
            steps += 1
            if term or trunc:
                episodes += 1
                env.reset()
        if time.perf_counter() - t0 >= 2.0:
            break
    dt = time.perf_counter() - t0
    out[env_id] = [steps / dt, episodes / dt]
print(json.dumps({"version": gym.__version__, "rates": out}))
"#;

fn gymnasium(ids: &[&str]) -> Option<(String, serde_json::Value)> {
    let py = std::env::var("WICK_PYTHON").ok().filter(|p| !p.is_empty())?;
    let out = Command::new(wick_core::oracle::resolve(&py)).arg("-c").arg(PY).args(ids).output().ok()?;
    if !out.status.success() {
        eprintln!("note: Gymnasium benchmark failed: {}", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or(""));
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some((v["version"].as_str().unwrap_or("?").to_string(), v["rates"].clone()))
}

fn main() {
    // `cargo bench` passes `--bench`; other arguments pick envs by substring
    // (`cargo bench -p wick-envs -- Taxi Acrobot`); none: every env.
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let want = |id: &str| filters.is_empty() || filters.iter().any(|f| id.contains(f.as_str()));
    type Bench = Box<dyn Fn() -> Row>;
    let all: Vec<(&str, Bench)> = vec![
        ("CartPole-v1", Box::new(|| bench("CartPole-v1", TimeLimit::new(CartPole::default(), 500)))),
        ("Blackjack-v1", Box::new(|| bench("Blackjack-v1", Blackjack::new(BlackjackConfig::default())))),
        ("FrozenLake-v1", Box::new(|| bench("FrozenLake-v1", TimeLimit::new(FrozenLake::new(&FrozenLakeConfig::default()).unwrap(), 100)))),
        (
            "FrozenLake8x8-v1",
            Box::new(|| {
                let cfg = FrozenLakeConfig { map: FrozenLakeConfig::named_map("8x8").unwrap(), ..Default::default() };
                bench("FrozenLake8x8-v1", TimeLimit::new(FrozenLake::new(&cfg).unwrap(), 200))
            }),
        ),
        ("CliffWalking-v1", Box::new(|| bench("CliffWalking-v1", CliffWalking::new(false)))),
        ("GridWorld", Box::new(|| bench("GridWorld", TimeLimit::new(GridWorld::new(GridWorldConfig::default()), 100)))),
        ("Taxi-v4", Box::new(|| bench("Taxi-v4", TimeLimit::new(Taxi::new(&TaxiConfig::default()).unwrap(), 200)))),
        ("MountainCar-v0", Box::new(|| bench("MountainCar-v0", TimeLimit::new(MountainCar::default(), 200)))),
        ("Acrobot-v1", Box::new(|| bench("Acrobot-v1", TimeLimit::new(Acrobot::default(), 500)))),
    ];
    let rows: Vec<Row> = all.iter().filter(|(id, _)| want(id)).map(|(_, f)| f()).collect();
    let dyn_rows: Vec<Row> = ["CartPole-v1", "Blackjack-v1"].into_iter().filter(|id| want(id)).map(bench_dyn).collect();
    let ids: Vec<&str> = rows.iter().map(|r| r.id).filter(|id| *id != "GridWorld").collect();
    let gym = gymnasium(&ids);
    println!("wick-envs: single thread, random actions, {SECONDS} s per env (GridWorld with a 100-step limit)");
    match &gym {
        Some((v, _)) => println!("Gymnasium {v} measured in the same run (gym.make, 2 s per env)"),
        None => println!("(set WICK_PYTHON to a Python with gymnasium for Gymnasium's figures)"),
    }
    println!("{:<18} {:>14} {:>14} {:>14} {:>14} {:>9}", "env", "steps/s", "episodes/s", "gym steps/s", "gym eps/s", "ratio");
    for r in &rows {
        let g = gym.as_ref().and_then(|(_, m)| m.get(r.id)).and_then(|v| Some((v[0].as_f64()?, v[1].as_f64()?)));
        match g {
            Some((gs, ge)) => {
                // Blackjack is measured per episode (the issue's unit), the others per step.
                let ratio = if r.id == "Blackjack-v1" { r.episodes_per_s / ge } else { r.steps_per_s / gs };
                println!("{:<18} {:>14.0} {:>14.0} {:>14.0} {:>14.0} {:>8.0}x", r.id, r.steps_per_s, r.episodes_per_s, gs, ge, ratio)
            }
            None => println!("{:<18} {:>14.0} {:>14.0} {:>14} {:>14} {:>9}", r.id, r.steps_per_s, r.episodes_per_s, "-", "-", "-"),
        }
    }
    for r in &dyn_rows {
        println!("{:<18} {:>14.0} {:>14.0}   (through make(): Box<dyn DynEnv>, f32 observation buffer)", r.id, r.steps_per_s, r.episodes_per_s);
    }
}
