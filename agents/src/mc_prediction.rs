//! Monte Carlo prediction (Sutton & Barto, *Reinforcement Learning: An Introduction*, 2nd ed.,
//! §5.1 "Monte Carlo Prediction", and the action-value version of §5.2): estimate `v_π` or
//! `q_π` of a given policy by averaging the returns that follow visits to each state (or
//! state–action pair), first-visit or every-visit. The average is kept incrementally,
//! `V(s) ← V(s) + (G − V(s)) / N(s)` — no model, only sampled returns.

use wick_core::checkpoint::Checkpoint;
use wick_core::rng::Rng;
use wick_core::{ensure, Result};

use crate::parallel::{load_q, run, save_q, Collector, McAgent, Returns};
use crate::tabular::{generate_episode, EnvRef, Policy, QTable, Start, TabularEnv, Transition, Visit, Visits};

/// Options of MC prediction.
#[derive(Clone, Debug, PartialEq)]
pub struct PredictionConfig {
    pub episodes: u64,
    pub gamma: f64,
    pub visit: Visit,
    /// Cut episodes at this many steps (needed for continuing tasks such as the grid world).
    pub max_len: Option<usize>,
    /// Episodes per chunk batch (the policy is fixed, so this only groups work for threads).
    pub batch: u64,
    pub seed: u64,
}

impl Default for PredictionConfig {
    fn default() -> Self {
        PredictionConfig { episodes: 10_000, gamma: 1.0, visit: Visit::First, max_len: None, batch: 1, seed: 0 }
    }
}

/// State values and their visit counts.
#[derive(Clone, Debug, PartialEq)]
pub struct StateValues {
    pub v: Vec<f64>,
    pub n: Vec<u64>,
}

/// What MC prediction estimates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `v_π`, episodes from the env's start distribution.
    V,
    /// `q_π`; with exploring starts every episode starts from a uniformly drawn (state, action)
    /// pair among the start states (S&B §5.2's exploring-starts assumption).
    Q { exploring_starts: bool },
}

/// MC prediction as a [`McAgent`]. `V` is kept as a one-action table.
pub struct PredictionAgent {
    pub policy: Policy,
    /// `v` (S × 1) or `q` (S × A) with counts.
    pub table: QTable,
    target: Target,
    starts: Vec<usize>,
    gamma: f64,
    visit: Visit,
    max_len: Option<usize>,
    visits: Visits,
}

impl PredictionAgent {
    pub fn new<E: TabularEnv + ?Sized>(env: &E, policy: &Policy, cfg: &PredictionConfig, target: Target, starts: &[usize]) -> Result<PredictionAgent> {
        let (ns, na) = (env.n_states(), env.n_actions());
        ensure!(ns > 0, "MC prediction needs a tabular environment");
        ensure!(
            policy.num_states == ns && policy.num_actions == na,
            "policy is {}×{}, the env has {ns} states and {na} actions",
            policy.num_states,
            policy.num_actions
        );
        ensure!((0.0..=1.0).contains(&cfg.gamma), "gamma must be in [0, 1], got {}", cfg.gamma);
        ensure!(starts.iter().all(|&s| s < ns), "a start state is outside 0..{ns}");
        let starts = if starts.is_empty() { (0..ns).collect() } else { starts.to_vec() };
        let cols = if target == Target::V { 1 } else { na };
        Ok(PredictionAgent {
            policy: policy.clone(),
            table: QTable::new(ns, cols),
            target,
            starts,
            gamma: cfg.gamma,
            visit: cfg.visit,
            max_len: cfg.max_len,
            visits: Visits::new(ns * cols),
        })
    }

    /// The estimates as state values with counts (V prediction).
    pub fn values(&self) -> StateValues {
        StateValues { v: self.table.q.clone(), n: self.table.n.clone() }
    }
}

impl McAgent for PredictionAgent {
    fn episode<E: TabularEnv + ?Sized>(&self, _k: u64, env: &mut E, rng: &mut Rng, steps: &mut Vec<Transition>, _probs: &mut Vec<f64>) -> Result<()> {
        let start = match self.target {
            Target::Q { exploring_starts: true } => {
                let s = self.starts[rng.below(self.starts.len() as u64) as usize];
                Start::At(s, Some(rng.below(self.policy.num_actions as u64) as usize))
            }
            _ => Start::Reset,
        };
        let pi = &self.policy;
        generate_episode(env, start, self.max_len, rng, steps, |s, r| pi.sample(s, r))
    }

    fn learn(&mut self, _k: u64, ep: &[Transition], _probs: &[f64]) -> f64 {
        // V(s) ← V(s) + (G − V(s))/N(s) (or Q(s, a)) per counted visit.
        let r = self.returns().expect("MC prediction learns from returns");
        r.learn(&mut self.visits, &mut self.table, ep)
    }

    fn returns(&self) -> Option<Returns> {
        Some(Returns { gamma: self.gamma, visit: self.visit, num_states: self.table.num_states, cols: self.table.num_actions, alpha: None })
    }
    fn table_mut(&mut self) -> &mut QTable {
        &mut self.table
    }

    fn q(&self) -> Option<&QTable> {
        match self.target {
            Target::V => None,
            Target::Q { .. } => Some(&self.table),
        }
    }
    fn state_values(&self) -> Vec<f64> {
        match self.target {
            Target::V => self.table.q.clone(),
            // v_π(s) = Σ_a π(a|s) q_π(s, a)
            Target::Q { .. } => (0..self.table.num_states)
                .map(|s| (0..self.table.num_actions).map(|a| self.policy.prob(s, a) * self.table.get(s, a)).sum())
                .collect(),
        }
    }
    fn greedy_policy(&self) -> Option<Vec<usize>> {
        None
    }
    fn save(&self, ck: &mut Checkpoint) {
        save_q(ck, "", &self.table);
    }
    fn load(&mut self, ck: &Checkpoint) -> Result<()> {
        load_q(ck, "", &mut self.table)
    }
}

/// Estimate `v_π` from `cfg.episodes` episodes of `policy` from the env's start distribution.
pub fn predict_v<E: TabularEnv + Send + ?Sized>(env: &mut E, policy: &Policy, cfg: &PredictionConfig) -> Result<StateValues> {
    let mut agent = PredictionAgent::new(env, policy, cfg, Target::V, &[])?;
    let mut col = Collector::new(vec![EnvRef(env)], cfg.seed, "mc-prediction")?;
    run(&mut agent, &mut col, cfg.episodes, cfg.batch)?;
    Ok(agent.values())
}

/// Estimate `q_π` from `cfg.episodes` episodes of `policy`. With `exploring_starts` each
/// episode starts from a uniformly drawn (state, action) pair among `starts` (all states when
/// empty) so every pair gets returns (S&B §5.2's "exploring starts" assumption).
pub fn predict_q<E: TabularEnv + Send + ?Sized>(
    env: &mut E,
    policy: &Policy,
    cfg: &PredictionConfig,
    exploring_starts: Option<&[usize]>,
) -> Result<QTable> {
    let target = Target::Q { exploring_starts: exploring_starts.is_some() };
    let mut agent = PredictionAgent::new(env, policy, cfg, target, exploring_starts.unwrap_or(&[]))?;
    let mut col = Collector::new(vec![EnvRef(env)], cfg.seed, "mc-prediction")?;
    run(&mut agent, &mut col, cfg.episodes, cfg.batch)?;
    Ok(agent.table)
}
