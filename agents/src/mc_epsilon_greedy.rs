//! On-policy first-visit Monte Carlo control with ε-soft (ε-greedy) policies (Sutton & Barto,
//! 2nd ed., §5.4; Zhao, *Mathematical Foundations of RL*, Algorithm 5.3 "MC ε-Greedy").
//!
//! No exploring starts: episodes start from the env's start distribution (or, optionally, a
//! uniformly drawn state) and follow the ε-greedy policy of the current `Q`,
//! `π(a|s) = 1 − ε + ε/|A|` for the greedy action and `ε/|A|` otherwise. The action values
//! are sample means of returns, `Q(s, a) ← Q(s, a) + (G − Q(s, a)) / N(s, a)`. ε is fixed or
//! decays linearly over the episodes (to 0 for a greedy final policy, GLIE-style).

use wick_core::{ensure, Result};

use crate::mc_exploring_starts::ControlResult;
use crate::tabular::{agent_rng, generate_episode, QTable, Start, TabularEnv, Transition, Visit, Visits};

/// ε per episode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Epsilon {
    Fixed(f64),
    /// From `start` to `end` linearly over the first `fraction` of the episodes, then `end`.
    Linear { start: f64, end: f64, fraction: f64 },
}

impl Epsilon {
    /// ε for episode `k` of `total`.
    pub fn at(&self, k: u64, total: u64) -> f64 {
        match *self {
            Epsilon::Fixed(e) => e,
            Epsilon::Linear { start, end, fraction } => {
                let span = (fraction * total as f64).max(1.0);
                let t = (k as f64 / span).min(1.0);
                start + (end - start) * t
            }
        }
    }
}

/// Where ε-greedy episodes start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartMode {
    /// The env's start distribution (`reset`).
    Env,
    /// A state drawn uniformly (not a pair: the first action is still ε-greedy).
    UniformState,
}

/// Options of on-policy MC control.
#[derive(Clone, Debug, PartialEq)]
pub struct EpsilonGreedyConfig {
    pub episodes: u64,
    pub gamma: f64,
    pub epsilon: Epsilon,
    pub visit: Visit,
    pub max_len: Option<usize>,
    pub start: StartMode,
    /// `None`: sample averages, `q ← q + (g − q)/n`. `Some(α)`: constant-α MC,
    /// `q ← q + α(g − q)`, which forgets the returns of the early, more exploratory policies.
    pub step_size: Option<f64>,
    pub seed: u64,
}

impl Default for EpsilonGreedyConfig {
    fn default() -> Self {
        EpsilonGreedyConfig {
            episodes: 100_000,
            gamma: 1.0,
            epsilon: Epsilon::Fixed(0.1),
            visit: Visit::First,
            max_len: None,
            start: StartMode::Env,
            step_size: None,
            seed: 0,
        }
    }
}

/// Run on-policy ε-greedy MC control on `env`.
pub fn mc_epsilon_greedy<E: TabularEnv + ?Sized>(env: &mut E, cfg: &EpsilonGreedyConfig) -> Result<ControlResult> {
    let (ns, na) = (env.n_states(), env.n_actions());
    ensure!(ns > 0, "MC ε-greedy needs a tabular environment");
    ensure!((0.0..=1.0).contains(&cfg.gamma), "gamma must be in [0, 1], got {}", cfg.gamma);
    let (e0, e1) = match cfg.epsilon {
        Epsilon::Fixed(e) => (e, e),
        Epsilon::Linear { start, end, .. } => (start, end),
    };
    ensure!((0.0..=1.0).contains(&e0) && (0.0..=1.0).contains(&e1), "epsilon must be in [0, 1]");
    ensure!(cfg.step_size.map_or(true, |a| a > 0.0 && a <= 1.0), "step size must be in (0, 1]");
    let mut rng = agent_rng(cfg.seed, "mc-epsilon-greedy");
    env.start(Some(cfg.seed))?;
    let mut q = QTable::new(ns, na);
    let mut visits = Visits::new(ns * na);
    let mut ep: Vec<Transition> = Vec::new();
    let mut returns = Vec::with_capacity(cfg.episodes as usize);
    for k in 0..cfg.episodes {
        let eps = cfg.epsilon.at(k, cfg.episodes);
        let start = match cfg.start {
            StartMode::Env => Start::Reset,
            StartMode::UniformState => Start::At(rng.below(ns as u64) as usize, None),
        };
        let qr = &q;
        // ε-greedy: explore uniformly with probability ε (so the greedy action has 1 − ε + ε/|A|).
        generate_episode(env, start, cfg.max_len, &mut rng, &mut ep, |s, r| {
            if eps > 0.0 && r.uniform() < eps {
                r.below(na as u64) as usize
            } else {
                qr.greedy(s)
            }
        })?;
        returns.push(ep.iter().map(|t| t.r).sum());
        visits.for_each_return(&ep, cfg.gamma, cfg.visit, |s, a| s * na + a, |_, i, g| {
            match cfg.step_size {
                None => q.update_index(i, g), // q ← q + (g − q)/n
                Some(alpha) => q.update_index_alpha(i, g, alpha),
            };
        });
    }
    let policy = q.greedy_policy();
    Ok(ControlResult { q, policy, returns })
}
