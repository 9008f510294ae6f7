//! MC ε-greedy on Zhao's grid world over seeds: the number of suboptimal states (against value
//! iteration) per seed, for one setting. The grid-world sweep in docs/rl.md was run with this:
//!
//! `cargo run --release -p wick-agents --example grid_epsilon_greedy_sweep -- EPISODES LEN EPS ALPHA VISIT SEEDS`
//!
//! EPS is a schedule as `--epsilon` takes it (`exp:START:END:FRACTION`, `linear:...`, stages
//! joined by commas), ALPHA a constant step size or 0 for sample averages, VISIT `first` or
//! `every`; start states are uniform.
//! Example (the CLI default): `2000000 100 exp:1:0.01:0.9,linear:0.01:0:0.1 0.01 first 10`.
use std::time::Instant;

use wick_agents::tabular::suboptimal_states;
use wick_agents::*;
use wick_envs::grid_world::{GridWorld, GridWorldConfig};
use wick_envs::Env;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 7 {
        eprintln!("usage: grid_epsilon_greedy_sweep EPISODES LEN EPSILON-SCHEDULE ALPHA first|every SEEDS");
        std::process::exit(2);
    }
    let episodes: u64 = a[1].parse().expect("EPISODES");
    let len: usize = a[2].parse().expect("LEN");
    let epsilon = Epsilon::parse(&a[3]).unwrap_or_else(|e| panic!("EPS {e}"));
    let alpha: f64 = a[4].parse().expect("ALPHA");
    let visit = if a[5] == "every" { Visit::Every } else { Visit::First };
    let seeds: u64 = a[6].parse().expect("SEEDS");
    let env0 = GridWorld::new(GridWorldConfig::default());
    let m = env0.model().unwrap();
    let (v, _) = m.value_iteration(0.9, 1e-12);
    let mut total = 0;
    for seed in 0..seeds {
        let mut env = GridWorld::new(GridWorldConfig::default());
        let step_size = if alpha > 0.0 { Some(alpha) } else { None };
        let cfg = EpsilonGreedyConfig { episodes, gamma: 0.9, max_len: Some(len), visit, epsilon: epsilon.clone(), start: StartMode::UniformState, starts: vec![], step_size, forget: None, batch: 1, seed };
        let t = Instant::now();
        let r = mc_epsilon_greedy(&mut env, &cfg).unwrap();
        let bad = suboptimal_states(m, &v, &r.policy, 0.9, 1e-6);
        total += bad.len();
        println!("seed {seed}: {} suboptimal {:?} ({:.2}s)", bad.len(), bad, t.elapsed().as_secs_f64());
    }
    println!("total suboptimal states over {seeds} seeds: {total}");
}
