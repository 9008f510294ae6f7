//! Off-policy Monte Carlo control with weighted importance sampling (Sutton & Barto, 2nd ed.,
//! §5.7, the box "Off-policy MC control, for estimating π ≈ π*").
//!
//! Episodes follow a soft behaviour policy `b` — here ε-greedy with respect to the current `Q`
//! (ε = 1, the default, is the uniformly random policy); the target policy `π` is greedy in `Q`.
//! Walking each episode backwards with `G ← γG + R_{t+1}`:
//!
//! ```text
//! C(S_t, A_t) ← C(S_t, A_t) + W
//! Q(S_t, A_t) ← Q(S_t, A_t) + W / C(S_t, A_t) · (G − Q(S_t, A_t))
//! π(S_t) ← argmax_a Q(S_t, a)
//! if A_t ≠ π(S_t): stop (the ratio of the earlier steps is 0)
//! W ← W / b(A_t | S_t)
//! ```
//!
//! so it learns only from the tails of episodes in which `b` happened to act greedily.
//! `b(A_t|S_t)` is recorded when the action is drawn (the behaviour changes with `Q`).

use wick_core::checkpoint::Checkpoint;
use wick_core::rng::Rng;
use wick_core::{ensure, Result};

use crate::mc_epsilon_greedy::StartMode;
use crate::mc_exploring_starts::ControlResult;
use crate::parallel::{run, Collector, McAgent};
use crate::tabular::{generate_episode, EnvRef, QTable, Start, TabularEnv, Transition};

#[derive(Clone, Debug, PartialEq)]
pub struct OffPolicyControlConfig {
    pub episodes: u64,
    pub gamma: f64,
    /// ε of the ε-greedy behaviour policy (1: uniformly random).
    pub epsilon: f64,
    pub max_len: Option<usize>,
    pub start: StartMode,
    /// The states [`StartMode::UniformState`] draws from; empty = every state.
    pub starts: Vec<usize>,
    pub batch: u64,
    pub seed: u64,
}

impl Default for OffPolicyControlConfig {
    fn default() -> Self {
        OffPolicyControlConfig { episodes: 1_000_000, gamma: 1.0, epsilon: 1.0, max_len: None, start: StartMode::Env, starts: Vec::new(), batch: 1, seed: 0 }
    }
}

/// Off-policy MC control as a [`McAgent`].
pub struct OffPolicyControlAgent {
    /// `Q` (the counts `n` say how many returns each pair was updated with) and `C`.
    pub q: QTable,
    pub c: Vec<f64>,
    cfg: OffPolicyControlConfig,
}

impl OffPolicyControlAgent {
    pub fn new<E: TabularEnv + ?Sized>(env: &E, cfg: &OffPolicyControlConfig) -> Result<Self> {
        let (ns, na) = (env.n_states(), env.n_actions());
        ensure!(ns > 0, "off-policy MC control needs a tabular environment");
        ensure!((0.0..=1.0).contains(&cfg.gamma), "gamma must be in [0, 1], got {}", cfg.gamma);
        ensure!(cfg.starts.iter().all(|&s| s < ns), "a start state is outside 0..{ns}");
        ensure!(cfg.epsilon > 0.0 && cfg.epsilon <= 1.0, "the behaviour policy must be soft: epsilon must be in (0, 1], got {}", cfg.epsilon);
        Ok(OffPolicyControlAgent { q: QTable::new(ns, na), c: vec![0.0; ns * na], cfg: cfg.clone() })
    }
}

impl McAgent for OffPolicyControlAgent {
    fn episode<E: TabularEnv + ?Sized>(&self, _k: u64, env: &mut E, rng: &mut Rng, steps: &mut Vec<Transition>, probs: &mut Vec<f64>) -> Result<()> {
        let (ns, na, eps) = (self.q.num_states, self.q.num_actions, self.cfg.epsilon);
        let start = match self.cfg.start {
            StartMode::Env => Start::Reset,
            StartMode::UniformState if self.cfg.starts.is_empty() => Start::At(rng.below(ns as u64) as usize, None),
            StartMode::UniformState => Start::At(self.cfg.starts[rng.below(self.cfg.starts.len() as u64) as usize], None),
        };
        let q = &self.q;
        probs.clear();
        generate_episode(env, start, self.cfg.max_len, rng, steps, |s, r| {
            let greedy = q.greedy(s);
            let a = if r.uniform() < eps { r.below(na as u64) as usize } else { greedy };
            // b(a|s) of the ε-greedy behaviour at the time of the draw.
            probs.push(eps / na as f64 + if a == greedy { 1.0 - eps } else { 0.0 });
            a
        })
    }

    fn learn(&mut self, _k: u64, ep: &[Transition], probs: &[f64]) -> f64 {
        let na = self.q.num_actions;
        let (mut g, mut w, mut max) = (0.0, 1.0, 0.0f64);
        for t in (0..ep.len()).rev() {
            let tr = ep[t];
            let (s, a) = (tr.s as usize, tr.a as usize);
            g = self.cfg.gamma * g + tr.r;
            let i = s * na + a;
            // Weighted IS, incremental: C ← C + W, Q ← Q + (W/C)(G − Q).
            self.c[i] += w;
            self.q.n[i] += 1;
            let d = w / self.c[i] * (g - self.q.q[i]);
            self.q.q[i] += d;
            max = max.max(d.abs());
            if a != self.q.greedy(s) {
                break; // π(A_t|S_t) = 0: the earlier steps have ratio 0
            }
            w /= probs[t]; // π(A_t|S_t) = 1
        }
        max
    }

    fn q(&self) -> Option<&QTable> {
        Some(&self.q)
    }
    fn state_values(&self) -> Vec<f64> {
        self.q.state_values()
    }
    fn save(&self, ck: &mut Checkpoint) {
        crate::parallel::save_q(ck, "", &self.q);
        ck.put_f64("c", &[self.q.num_states, self.q.num_actions], &self.c);
    }
    fn load(&mut self, ck: &Checkpoint) -> Result<()> {
        crate::parallel::load_q(ck, "", &mut self.q)?;
        self.c = ck.f64_values("c", &[self.q.num_states, self.q.num_actions])?;
        Ok(())
    }
}

/// Run off-policy MC control (one thread).
pub fn mc_off_policy_control<E: TabularEnv + Send + ?Sized>(env: &mut E, cfg: &OffPolicyControlConfig) -> Result<ControlResult> {
    mc_off_policy_control_par(vec![EnvRef(env)], cfg)
}

/// Run off-policy MC control with one thread per env; the result does not depend on how many.
pub fn mc_off_policy_control_par<E: TabularEnv + Send>(envs: Vec<E>, cfg: &OffPolicyControlConfig) -> Result<ControlResult> {
    let mut agent = OffPolicyControlAgent::new(&envs[0], cfg)?;
    let mut col = Collector::new(envs, cfg.seed, "mc-off-policy-control")?;
    let returns = run(&mut agent, &mut col, cfg.episodes, cfg.batch)?;
    let policy = agent.q.greedy_policy();
    Ok(ControlResult { q: agent.q, policy, returns })
}
