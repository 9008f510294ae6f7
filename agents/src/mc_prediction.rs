//! Monte Carlo prediction (Sutton & Barto, *Reinforcement Learning: An Introduction*, 2nd ed.,
//! §5.1 "Monte Carlo Prediction", and the action-value version of §5.2): estimate `v_π` or
//! `q_π` of a given policy by averaging the returns that follow visits to each state (or
//! state–action pair), first-visit or every-visit. The average is kept incrementally,
//! `V(s) ← V(s) + (G − V(s)) / N(s)` — no model, only sampled returns.

use wick_core::{ensure, Result};

use crate::tabular::{agent_rng, generate_episode, Policy, QTable, Start, TabularEnv, Transition, Visit, Visits};

/// Options of MC prediction.
#[derive(Clone, Debug, PartialEq)]
pub struct PredictionConfig {
    pub episodes: u64,
    pub gamma: f64,
    pub visit: Visit,
    /// Cut episodes at this many steps (needed for continuing tasks such as the grid world).
    pub max_len: Option<usize>,
    pub seed: u64,
}

impl Default for PredictionConfig {
    fn default() -> Self {
        PredictionConfig { episodes: 10_000, gamma: 1.0, visit: Visit::First, max_len: None, seed: 0 }
    }
}

/// State values and their visit counts.
#[derive(Clone, Debug, PartialEq)]
pub struct StateValues {
    pub v: Vec<f64>,
    pub n: Vec<u64>,
}

fn check<E: TabularEnv + ?Sized>(env: &E, policy: &Policy, cfg: &PredictionConfig) -> Result<()> {
    ensure!(env.n_states() > 0, "MC prediction needs a tabular environment");
    ensure!(
        policy.num_states == env.n_states() && policy.num_actions == env.n_actions(),
        "policy is {}×{}, the env has {} states and {} actions",
        policy.num_states,
        policy.num_actions,
        env.n_states(),
        env.n_actions()
    );
    ensure!((0.0..=1.0).contains(&cfg.gamma), "gamma must be in [0, 1], got {}", cfg.gamma);
    Ok(())
}

/// Estimate `v_π` from `cfg.episodes` episodes of `policy` from the env's start distribution.
pub fn predict_v<E: TabularEnv + ?Sized>(env: &mut E, policy: &Policy, cfg: &PredictionConfig) -> Result<StateValues> {
    check(env, policy, cfg)?;
    let ns = env.n_states();
    let mut rng = agent_rng(cfg.seed, "mc-prediction");
    env.start(Some(cfg.seed))?;
    let (mut v, mut n) = (vec![0.0; ns], vec![0u64; ns]);
    let mut visits = Visits::new(ns);
    let mut ep: Vec<Transition> = Vec::new();
    for _ in 0..cfg.episodes {
        generate_episode(env, Start::Reset, cfg.max_len, &mut rng, &mut ep, |s, r| policy.sample(s, r))?;
        visits.for_each_return(&ep, cfg.gamma, cfg.visit, |s, _| s, |_, s, g| {
            n[s] += 1;
            v[s] += (g - v[s]) / n[s] as f64; // incremental mean
        });
    }
    Ok(StateValues { v, n })
}

/// Estimate `q_π` from `cfg.episodes` episodes of `policy`. With `exploring_starts` each
/// episode starts from a uniformly drawn (state, action) pair among `starts` (all states when
/// empty) so every pair gets returns (S&B §5.2's "exploring starts" assumption).
pub fn predict_q<E: TabularEnv + ?Sized>(
    env: &mut E,
    policy: &Policy,
    cfg: &PredictionConfig,
    exploring_starts: Option<&[usize]>,
) -> Result<QTable> {
    check(env, policy, cfg)?;
    let (ns, na) = (env.n_states(), env.n_actions());
    let mut rng = agent_rng(cfg.seed, "mc-prediction");
    env.start(Some(cfg.seed))?;
    let mut q = QTable::new(ns, na);
    let mut visits = Visits::new(ns * na);
    let mut ep: Vec<Transition> = Vec::new();
    let all: Vec<usize> = (0..ns).collect();
    let starts = exploring_starts.map(|s| if s.is_empty() { &all[..] } else { s });
    for _ in 0..cfg.episodes {
        let start = match starts {
            None => Start::Reset,
            Some(st) => {
                let s = st[rng.below(st.len() as u64) as usize];
                Start::At(s, Some(rng.below(na as u64) as usize))
            }
        };
        generate_episode(env, start, cfg.max_len, &mut rng, &mut ep, |s, r| policy.sample(s, r))?;
        visits.for_each_return(&ep, cfg.gamma, cfg.visit, |s, a| s * na + a, |_, i, g| {
            q.update_index(i, g); // q ← q + (g − q)/n
        });
    }
    Ok(q)
}
