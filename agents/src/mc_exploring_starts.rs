//! Monte Carlo control with exploring starts, "Monte Carlo ES" (Sutton & Barto, 2nd ed., §5.3,
//! Figure 5.2; Zhao, *Mathematical Foundations of RL*, Algorithm 5.2 "MC Exploring Starts").
//!
//! Each episode starts from a (state, action) pair drawn uniformly, then follows the policy
//! greedy in the current `Q`. Walking the episode backwards with `G ← γG + R_{t+1}`, each
//! (first-, or every-) visited pair's action value is the running mean of its returns,
//! `Q(s, a) ← Q(s, a) + (G − Q(s, a)) / N(s, a)`, and the policy is improved at once:
//! `π(s) = argmax_a Q(s, a)` (read from `Q` on the next visit; ties to the lowest action).
//! With `batch > 1` episodes are generated `batch` at a time from the greedy policy of the
//! batch's start ([`crate::parallel`]); `batch = 1` is the book's algorithm.

use wick_core::checkpoint::Checkpoint;
use wick_core::rng::Rng;
use wick_core::{ensure, Result};

use crate::parallel::{load_q, run, save_q, Collector, McAgent, Returns};
use crate::tabular::{generate_episode, EnvRef, QTable, Start, TabularEnv, Transition, Visit, Visits};

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
    /// Episodes generated per policy snapshot (1: improve after every episode).
    pub batch: u64,
    pub seed: u64,
}

impl Default for EsConfig {
    fn default() -> Self {
        EsConfig { episodes: 500_000, gamma: 1.0, visit: Visit::First, max_len: None, starts: Vec::new(), batch: 1, seed: 0 }
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

/// MC ES as a [`McAgent`].
pub struct EsAgent {
    pub q: QTable,
    gamma: f64,
    visit: Visit,
    max_len: Option<usize>,
    starts: Vec<usize>,
    visits: Visits,
}

impl EsAgent {
    pub fn new<E: TabularEnv + ?Sized>(env: &E, cfg: &EsConfig) -> Result<EsAgent> {
        let (ns, na) = (env.n_states(), env.n_actions());
        ensure!(ns > 0, "MC ES needs a tabular environment");
        ensure!((0.0..=1.0).contains(&cfg.gamma), "gamma must be in [0, 1], got {}", cfg.gamma);
        ensure!(cfg.starts.iter().all(|&s| s < ns), "a start state is outside 0..{ns}");
        let starts: Vec<usize> = if cfg.starts.is_empty() { (0..ns).collect() } else { cfg.starts.clone() };
        Ok(EsAgent { q: QTable::new(ns, na), gamma: cfg.gamma, visit: cfg.visit, max_len: cfg.max_len, starts, visits: Visits::new(ns * na) })
    }
}

impl McAgent for EsAgent {
    fn episode<E: TabularEnv + ?Sized>(&self, _k: u64, env: &mut E, rng: &mut Rng, steps: &mut Vec<Transition>, _probs: &mut Vec<f64>) -> Result<()> {
        // Exploring start: every (s, a) has a positive probability of starting an episode.
        let s0 = self.starts[rng.below(self.starts.len() as u64) as usize];
        let a0 = rng.below(self.q.num_actions as u64) as usize;
        let q = &self.q;
        generate_episode(env, Start::At(s0, Some(a0)), self.max_len, rng, steps, |s, _| q.greedy(s))
    }

    fn learn(&mut self, _k: u64, ep: &[Transition], _probs: &[f64]) -> f64 {
        // Policy evaluation as mean estimation: q ← q + (g − q)/n for each first-visited pair.
        // Improvement is the greedy read of q when the pair's state is next visited.
        let r = self.returns().expect("MC ES learns from returns");
        r.learn(&mut self.visits, &mut self.q, ep)
    }

    fn returns(&self) -> Option<Returns> {
        Some(Returns { gamma: self.gamma, visit: self.visit, num_states: self.q.num_states, cols: self.q.num_actions, alpha: None })
    }
    fn table_mut(&mut self) -> &mut QTable {
        &mut self.q
    }

    fn q(&self) -> Option<&QTable> {
        Some(&self.q)
    }
    fn state_values(&self) -> Vec<f64> {
        self.q.state_values()
    }
    fn save(&self, ck: &mut Checkpoint) {
        save_q(ck, "", &self.q);
    }
    fn load(&mut self, ck: &Checkpoint) -> Result<()> {
        load_q(ck, "", &mut self.q)
    }
}

/// Run MC ES on `env` (one thread).
pub fn mc_exploring_starts<E: TabularEnv + Send + ?Sized>(env: &mut E, cfg: &EsConfig) -> Result<ControlResult> {
    mc_exploring_starts_par(vec![EnvRef(env)], cfg)
}

/// Run MC ES with one thread per env in `envs`; the result does not depend on how many.
pub fn mc_exploring_starts_par<E: TabularEnv + Send>(envs: Vec<E>, cfg: &EsConfig) -> Result<ControlResult> {
    let mut agent = EsAgent::new(&envs[0], cfg)?;
    let mut col = Collector::new(envs, cfg.seed, "mc-es")?;
    let returns = run(&mut agent, &mut col, cfg.episodes, cfg.batch)?;
    let policy = agent.q.greedy_policy();
    Ok(ControlResult { q: agent.q, policy, returns })
}
