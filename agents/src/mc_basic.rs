//! MC Basic (Zhao, *Mathematical Foundations of RL*, Algorithm 5.1): policy iteration with the
//! model-based policy evaluation replaced by Monte Carlo estimation. In iteration `k`, from
//! every (s, a) collect `episodes_per_pair` episodes of length `episode_length` following
//! `π_k` after the first action, take `q_k(s, a)` as the mean of their discounted returns
//! (kept incrementally, `q ← q + (g − q)/n`), and improve: `π_{k+1}(s) = argmax_a q_k(s, a)`.
//! One iteration is one batch of the parallel driver (its policy is fixed within it anyway).

use wick_core::checkpoint::Checkpoint;
use wick_core::rng::Rng;
use wick_core::{ensure, Result};

use crate::parallel::{load_q, run, save_q, Collector, McAgent};
use crate::tabular::{generate_episode, EnvRef, QTable, Start, TabularEnv, Transition};

#[derive(Clone, Debug, PartialEq)]
pub struct McBasicConfig {
    pub iterations: usize,
    pub episodes_per_pair: u64,
    pub episode_length: usize,
    pub gamma: f64,
    /// The states whose pairs are evaluated; empty = every state (Blackjack: the 200 decision states).
    pub starts: Vec<usize>,
    pub seed: u64,
}

impl Default for McBasicConfig {
    fn default() -> Self {
        McBasicConfig { iterations: 20, episodes_per_pair: 1, episode_length: 30, gamma: 0.9, starts: Vec::new(), seed: 0 }
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

/// MC Basic as a [`McAgent`]; one iteration is [`McBasicAgent::iteration_episodes`] episodes.
pub struct McBasicAgent {
    /// The last finished iteration's estimates `q_{π_k}`.
    pub q: QTable,
    /// The policy being evaluated, `π_k` (starts as action 0 everywhere).
    pub policy: Vec<usize>,
    pub iterations: u64,
    pub stable: bool,
    cur: QTable,
    starts: Vec<usize>,
    epp: u64,
    len: usize,
    gamma: f64,
}

impl McBasicAgent {
    pub fn new<E: TabularEnv + ?Sized>(env: &E, cfg: &McBasicConfig) -> Result<McBasicAgent> {
        let (ns, na) = (env.n_states(), env.n_actions());
        ensure!(ns > 0, "MC Basic needs a tabular environment");
        ensure!(cfg.episode_length > 0 && cfg.episodes_per_pair > 0, "episode length and episodes per pair must be positive");
        ensure!((0.0..=1.0).contains(&cfg.gamma), "gamma must be in [0, 1], got {}", cfg.gamma);
        ensure!(cfg.starts.iter().all(|&s| s < ns), "a start state is outside 0..{ns}");
        let starts = if cfg.starts.is_empty() { (0..ns).collect() } else { cfg.starts.clone() };
        Ok(McBasicAgent {
            q: QTable::new(ns, na),
            policy: vec![0; ns],
            iterations: 0,
            stable: false,
            cur: QTable::new(ns, na),
            starts,
            epp: cfg.episodes_per_pair,
            len: cfg.episode_length,
            gamma: cfg.gamma,
        })
    }

    /// Episodes of one iteration: every start state × action × episodes per pair.
    pub fn iteration_episodes(&self) -> u64 {
        self.starts.len() as u64 * self.q.num_actions as u64 * self.epp
    }

    fn pair(&self, k: u64) -> (usize, usize) {
        let p = (k % self.iteration_episodes()) / self.epp;
        let na = self.q.num_actions as u64;
        (self.starts[(p / na) as usize], (p % na) as usize)
    }
}

impl McAgent for McBasicAgent {
    fn episode<E: TabularEnv + ?Sized>(&self, k: u64, env: &mut E, rng: &mut Rng, steps: &mut Vec<Transition>, _probs: &mut Vec<f64>) -> Result<()> {
        let (s, a) = self.pair(k);
        let pi = &self.policy;
        generate_episode(env, Start::At(s, Some(a)), Some(self.len), rng, steps, |x, _| pi[x])
    }

    fn learn(&mut self, k: u64, ep: &[Transition], _probs: &[f64]) -> f64 {
        // Policy evaluation: q_{π_k}(s, a) as the mean of sampled returns from (s, a).
        let (s, a) = self.pair(k);
        let g = ep.iter().rev().fold(0.0, |g, t| self.gamma * g + t.r);
        self.cur.update(s, a, g)
    }

    fn end_batch(&mut self) {
        // Policy improvement: π_{k+1}(s) = argmax_a q_k(s, a) on the evaluated states.
        let na = self.q.num_actions;
        self.q = std::mem::replace(&mut self.cur, QTable::new(self.q.num_states, na));
        let mut next = self.policy.clone();
        for &s in &self.starts {
            next[s] = self.q.greedy(s);
        }
        self.stable = next == self.policy;
        self.policy = next;
        self.iterations += 1;
    }

    fn converged(&self) -> bool {
        self.stable
    }
    fn q(&self) -> Option<&QTable> {
        Some(&self.q)
    }
    fn state_values(&self) -> Vec<f64> {
        self.q.state_values()
    }
    fn greedy_policy(&self) -> Option<Vec<usize>> {
        Some(self.policy.clone())
    }
    fn save(&self, ck: &mut Checkpoint) {
        save_q(ck, "", &self.q);
        ck.put_u64("policy", &[self.policy.len()], &self.policy.iter().map(|&a| a as u64).collect::<Vec<_>>());
        ck.set_meta("mc_basic", &(self.iterations, self.stable));
    }
    fn load(&mut self, ck: &Checkpoint) -> Result<()> {
        load_q(ck, "", &mut self.q)?;
        self.policy = ck.u64_values("policy", &[self.policy.len()])?.into_iter().map(|a| a as usize).collect();
        (self.iterations, self.stable) = ck.meta("mc_basic")?;
        Ok(())
    }
}

/// Run MC Basic (one thread); starts from the policy taking action 0 everywhere.
pub fn mc_basic<E: TabularEnv + Send + ?Sized>(env: &mut E, cfg: &McBasicConfig) -> Result<McBasicResult> {
    let mut agent = McBasicAgent::new(env, cfg)?;
    let per = agent.iteration_episodes();
    let mut col = Collector::new(vec![EnvRef(env)], cfg.seed, "mc-basic")?;
    run(&mut agent, &mut col, per * cfg.iterations as u64, per)?;
    Ok(McBasicResult { q: agent.q, policy: agent.policy, iterations: agent.iterations as usize })
}
