//! Monte Carlo control with exploring starts, "Monte Carlo ES" (Sutton & Barto, 2nd ed., §5.3,
//! Figure 5.2; Zhao, *Mathematical Foundations of RL*, Algorithm 5.2 "MC Exploring Starts").
//!
//! Each episode starts from a (state, action) pair drawn uniformly, then follows the policy
//! greedy in the current `Q`. Walking the episode backwards with `G ← γG + R_{t+1}`, each
//! (first-, or every-) visited pair's action value is the running mean of its returns,
//! `Q(s, a) ← Q(s, a) + (G − Q(s, a)) / N(s, a)`, and the policy is improved at once:
//! `π(s) = argmax_a Q(s, a)` (read from `Q` on the next visit; ties to the lowest action).

use wick_core::{ensure, Result};

use crate::tabular::{agent_rng, generate_episode, QTable, Start, TabularEnv, Transition, Visit, Visits};

/// Options of MC ES.
#[derive(Clone, Debug, PartialEq)]
pub struct EsConfig {
    pub episodes: u64,
    pub gamma: f64,
    pub visit: Visit,
    /// Episode length cap (Zhao's fixed-length episodes for continuing tasks).
    pub max_len: Option<usize>,
    /// The start states to draw from; empty = every state. (Blackjack: the 200 decision states.)
    pub starts: Vec<usize>,
    pub seed: u64,
}

impl Default for EsConfig {
    fn default() -> Self {
        EsConfig { episodes: 500_000, gamma: 1.0, visit: Visit::First, max_len: None, starts: Vec::new(), seed: 0 }
    }
}

/// What a control run returns: the action values and per-episode figures.
#[derive(Clone, Debug, PartialEq)]
pub struct ControlResult {
    pub q: QTable,
    /// The greedy policy of `q`.
    pub policy: Vec<usize>,
    /// Undiscounted return of each episode.
    pub returns: Vec<f64>,
}

/// Run MC ES on `env`.
pub fn mc_exploring_starts<E: TabularEnv + ?Sized>(env: &mut E, cfg: &EsConfig) -> Result<ControlResult> {
    let (ns, na) = (env.n_states(), env.n_actions());
    ensure!(ns > 0, "MC ES needs a tabular environment");
    ensure!((0.0..=1.0).contains(&cfg.gamma), "gamma must be in [0, 1], got {}", cfg.gamma);
    ensure!(cfg.starts.iter().all(|&s| s < ns), "a start state is outside 0..{ns}");
    let starts: Vec<usize> = if cfg.starts.is_empty() { (0..ns).collect() } else { cfg.starts.clone() };
    let mut rng = agent_rng(cfg.seed, "mc-es");
    env.start(Some(cfg.seed))?;
    let mut q = QTable::new(ns, na);
    let mut visits = Visits::new(ns * na);
    let mut ep: Vec<Transition> = Vec::new();
    let mut returns = Vec::with_capacity(cfg.episodes as usize);
    for _ in 0..cfg.episodes {
        // Exploring start: every (s, a) has a positive probability of starting an episode.
        let s0 = starts[rng.below(starts.len() as u64) as usize];
        let a0 = rng.below(na as u64) as usize;
        let qr = &q;
        generate_episode(env, Start::At(s0, Some(a0)), cfg.max_len, &mut rng, &mut ep, |s, _| qr.greedy(s))?;
        returns.push(ep.iter().map(|t| t.r).sum());
        visits.for_each_return(&ep, cfg.gamma, cfg.visit, |s, a| s * na + a, |_, i, g| {
            // Policy evaluation as mean estimation: q ← q + (g − q)/n. Improvement is the
            // greedy read of q when the pair's state is next visited.
            q.update_index(i, g);
        });
    }
    let policy = q.greedy_policy();
    Ok(ControlResult { q, policy, returns })
}
