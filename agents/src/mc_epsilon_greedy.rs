//! On-policy first-visit Monte Carlo control with ε-soft (ε-greedy) policies (Sutton & Barto,
//! 2nd ed., §5.4; Zhao, *Mathematical Foundations of RL*, Algorithm 5.3 "MC ε-Greedy").
//!
//! No exploring starts: episodes start from the env's start distribution (or, optionally, a
//! uniformly drawn state) and follow the ε-greedy policy of the current `Q`,
//! `π(a|s) = 1 − ε + ε/|A|` for the greedy action and `ε/|A|` otherwise. The action values
//! are sample means of returns, `Q(s, a) ← Q(s, a) + (G − Q(s, a)) / N(s, a)`. ε is fixed or
//! decays linearly over the episodes (to 0 for a greedy final policy, GLIE-style).

use wick_core::checkpoint::Checkpoint;
use wick_core::rng::Rng;
use wick_core::{ensure, Result};

use crate::mc_exploring_starts::ControlResult;
use crate::parallel::{load_q, run, save_q, Collector, McAgent, Returns};
use crate::tabular::{generate_episode, EnvRef, QTable, Start, TabularEnv, Transition, Visit, Visits};

/// ε per episode.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Epsilon {
    Fixed(f64),
    /// From `start` to `end` linearly over the first `fraction` of the episodes, then `end`.
    Linear { start: f64, end: f64, fraction: f64 },
    /// From `start` to `end` geometrically (`start·(end/start)^t`) over the first `fraction`
    /// of the episodes, then `end`: most of the run at small ε, so the returns behind `Q`
    /// come from near-greedy behaviour (`end` > 0).
    Exponential { start: f64, end: f64, fraction: f64 },
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
            Epsilon::Exponential { start, end, fraction } => {
                let span = (fraction * total as f64).max(1.0);
                let t = (k as f64 / span).min(1.0);
                start * (end / start).powf(t)
            }
        }
    }
}

/// Where episodes start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
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
    /// The states [`StartMode::UniformState`] draws from; empty = every state.
    pub starts: Vec<usize>,
    /// `None`: sample averages, `q ← q + (g − q)/n`. `Some(α)`: constant-α MC,
    /// `q ← q + α(g − q)`, which forgets the returns of the early, more exploratory policies.
    pub step_size: Option<f64>,
    /// Episodes generated per policy snapshot (1: improve after every episode).
    pub batch: u64,
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
            starts: Vec::new(),
            step_size: None,
            batch: 1,
            seed: 0,
        }
    }
}

/// On-policy ε-greedy MC control as a [`McAgent`].
pub struct EpsilonGreedyAgent {
    pub q: QTable,
    cfg: EpsilonGreedyConfig,
    visits: Visits,
}

impl EpsilonGreedyAgent {
    pub fn new<E: TabularEnv + ?Sized>(env: &E, cfg: &EpsilonGreedyConfig) -> Result<EpsilonGreedyAgent> {
        let (ns, na) = (env.n_states(), env.n_actions());
        ensure!(ns > 0, "MC ε-greedy needs a tabular environment");
        ensure!((0.0..=1.0).contains(&cfg.gamma), "gamma must be in [0, 1], got {}", cfg.gamma);
        ensure!(cfg.starts.iter().all(|&s| s < ns), "a start state is outside 0..{ns}");
        let (e0, e1) = match cfg.epsilon {
            Epsilon::Fixed(e) => (e, e),
            Epsilon::Linear { start, end, .. } => (start, end),
            Epsilon::Exponential { start, end, .. } => {
                ensure!(start > 0.0 && end > 0.0, "an exponential epsilon schedule needs start and end above 0");
                (start, end)
            }
        };
        ensure!((0.0..=1.0).contains(&e0) && (0.0..=1.0).contains(&e1), "epsilon must be in [0, 1]");
        ensure!(cfg.step_size.is_none_or(|a| a > 0.0 && a <= 1.0), "step size must be in (0, 1]");
        Ok(EpsilonGreedyAgent { q: QTable::new(ns, na), cfg: cfg.clone(), visits: Visits::new(ns * na) })
    }
}

impl McAgent for EpsilonGreedyAgent {
    fn episode<E: TabularEnv + ?Sized>(&self, k: u64, env: &mut E, rng: &mut Rng, steps: &mut Vec<Transition>, _probs: &mut Vec<f64>) -> Result<()> {
        let eps = self.cfg.epsilon.at(k, self.cfg.episodes);
        let (ns, na) = (self.q.num_states, self.q.num_actions);
        let start = match self.cfg.start {
            StartMode::Env => Start::Reset,
            StartMode::UniformState if self.cfg.starts.is_empty() => Start::At(rng.below(ns as u64) as usize, None),
            StartMode::UniformState => Start::At(self.cfg.starts[rng.below(self.cfg.starts.len() as u64) as usize], None),
        };
        let q = &self.q;
        // ε-greedy: explore uniformly with probability ε (so the greedy action has 1 − ε + ε/|A|).
        generate_episode(env, start, self.cfg.max_len, rng, steps, |s, r| {
            if eps > 0.0 && r.uniform() < eps {
                r.below(na as u64) as usize
            } else {
                q.greedy(s)
            }
        })
    }

    fn learn(&mut self, _k: u64, ep: &[Transition], _probs: &[f64]) -> f64 {
        // q ← q + (g − q)/n, or q ← q + α(g − q) with a step size, per counted visit.
        let r = self.returns().expect("MC ε-greedy learns from returns");
        r.learn(&mut self.visits, &mut self.q, ep)
    }

    fn returns(&self) -> Option<Returns> {
        Some(Returns { gamma: self.cfg.gamma, visit: self.cfg.visit, num_states: self.q.num_states, cols: self.q.num_actions, alpha: self.cfg.step_size })
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

/// Run on-policy ε-greedy MC control on `env` (one thread).
pub fn mc_epsilon_greedy<E: TabularEnv + Send + ?Sized>(env: &mut E, cfg: &EpsilonGreedyConfig) -> Result<ControlResult> {
    mc_epsilon_greedy_par(vec![EnvRef(env)], cfg)
}

/// Run on-policy ε-greedy MC control with one thread per env; the result does not depend on how many.
pub fn mc_epsilon_greedy_par<E: TabularEnv + Send>(envs: Vec<E>, cfg: &EpsilonGreedyConfig) -> Result<ControlResult> {
    let mut agent = EpsilonGreedyAgent::new(&envs[0], cfg)?;
    let mut col = Collector::new(envs, cfg.seed, "mc-epsilon-greedy")?;
    let returns = run(&mut agent, &mut col, cfg.episodes, cfg.batch)?;
    let policy = agent.q.greedy_policy();
    Ok(ControlResult { q: agent.q, policy, returns })
}
