//! MC Basic (Zhao, *Mathematical Foundations of RL*, Algorithm 5.1): policy iteration with the
//! model-based policy evaluation replaced by Monte Carlo estimation. In iteration `k`, from
//! every (s, a) collect `episodes_per_pair` episodes of length `episode_length` following
//! `π_k` after the first action, take `q_k(s, a)` as the mean of their discounted returns
//! (kept incrementally, `q ← q + (g − q)/n`), and improve: `π_{k+1}(s) = argmax_a q_k(s, a)`.

use wick_core::{ensure, Result};

use crate::tabular::{agent_rng, generate_episode, QTable, Start, TabularEnv, Transition};

#[derive(Clone, Debug, PartialEq)]
pub struct McBasicConfig {
    pub iterations: usize,
    pub episodes_per_pair: u64,
    pub episode_length: usize,
    pub gamma: f64,
    pub seed: u64,
}

impl Default for McBasicConfig {
    fn default() -> Self {
        McBasicConfig { iterations: 20, episodes_per_pair: 1, episode_length: 30, gamma: 0.9, seed: 0 }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct McBasicResult {
    /// The last iteration's action-value estimates.
    pub q: QTable,
    pub policy: Vec<usize>,
    /// Iterations run (stops early once the policy is stable).
    pub iterations: usize,
}

/// Run MC Basic; starts from the policy taking action 0 everywhere.
pub fn mc_basic<E: TabularEnv + ?Sized>(env: &mut E, cfg: &McBasicConfig) -> Result<McBasicResult> {
    let (ns, na) = (env.n_states(), env.n_actions());
    ensure!(ns > 0, "MC Basic needs a tabular environment");
    ensure!(cfg.episode_length > 0 && cfg.episodes_per_pair > 0, "episode length and episodes per pair must be positive");
    let mut rng = agent_rng(cfg.seed, "mc-basic");
    env.start(Some(cfg.seed))?;
    let mut policy = vec![0usize; ns];
    let mut ep: Vec<Transition> = Vec::new();
    let mut q = QTable::new(ns, na);
    let mut it = 0;
    while it < cfg.iterations {
        it += 1;
        q = QTable::new(ns, na);
        // Policy evaluation: q_{π_k}(s, a) as the mean of sampled returns.
        for s in 0..ns {
            for a in 0..na {
                for _ in 0..cfg.episodes_per_pair {
                    let pi = &policy;
                    generate_episode(env, Start::At(s, Some(a)), Some(cfg.episode_length), &mut rng, &mut ep, |x, _| pi[x])?;
                    let g = ep.iter().rev().fold(0.0, |g, t| cfg.gamma * g + t.r);
                    q.update(s, a, g);
                }
            }
        }
        // Policy improvement.
        let next = q.greedy_policy();
        let stable = next == policy;
        policy = next;
        if stable {
            break;
        }
    }
    Ok(McBasicResult { q, policy, iterations: it })
}
