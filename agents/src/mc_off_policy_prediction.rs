//! Off-policy Monte Carlo prediction by importance sampling (Sutton & Barto, 2nd ed., §5.5
//! "Off-policy Prediction via Importance Sampling", §5.6 "Incremental Implementation",
//! Example 5.4 / Figure 5.3).
//!
//! Episodes follow a behaviour policy `b`; returns are reweighted by the importance-sampling
//! ratio `ρ_{t:T−1} = Π_{k=t}^{T−1} π(A_k|S_k) / b(A_k|S_k)` to estimate the target policy's
//! values. Both estimators are kept incrementally, every visit, walking each episode backwards
//! with `G ← γG + R_{t+1}` and `W ← W π(A_t|S_t)/b(A_t|S_t)`:
//!
//! - **ordinary IS** (eq. 5.5), a plain mean of the scaled returns: `N ← N + 1`,
//!   `V ← V + (W G − V)/N` — unbiased, possibly huge variance;
//! - **weighted IS** (eq. 5.6, the §5.6 update): `C ← C + W`, `V ← V + (W/C)(G − V)` — biased
//!   (the bias vanishes asymptotically), far smaller variance.
//!
//! `V(S_t)` uses `ρ_{t:T−1}` (it includes the ratio of `A_t`); `Q(S_t, A_t)` uses `ρ_{t+1:T−1}`
//! (the action is given), as in the book's box "Off-policy MC prediction (policy evaluation) for
//! estimating Q ≈ q_π".

use wick_core::checkpoint::Checkpoint;
use wick_core::rng::Rng;
use wick_core::{ensure, Result};

use crate::parallel::{load_q, save_q, Collector, McAgent};
use crate::tabular::{generate_episode, Policy, QTable, Start, TabularEnv, Transition};

/// Options of off-policy prediction.
#[derive(Clone, Debug, PartialEq)]
pub struct OffPolicyPredictionConfig {
    pub episodes: u64,
    pub gamma: f64,
    pub max_len: Option<usize>,
    /// Start every episode in this state (Example 5.4), else from the env's start distribution.
    pub start: Option<usize>,
    pub batch: u64,
    pub seed: u64,
}

impl Default for OffPolicyPredictionConfig {
    fn default() -> Self {
        OffPolicyPredictionConfig { episodes: 10_000, gamma: 1.0, max_len: None, start: None, batch: 1, seed: 0 }
    }
}

/// A weighted-IS table: estimates and cumulative weights `C`.
#[derive(Clone, Debug, PartialEq)]
pub struct Weighted {
    pub v: Vec<f64>,
    pub c: Vec<f64>,
}

impl Weighted {
    pub fn new(n: usize) -> Weighted {
        Weighted { v: vec![0.0; n], c: vec![0.0; n] }
    }
    /// `C ← C + W`, `V ← V + (W/C)(G − V)`; returns `|ΔV|`.
    #[inline]
    pub fn update(&mut self, i: usize, w: f64, g: f64) -> f64 {
        if w == 0.0 {
            return 0.0;
        }
        self.c[i] += w;
        let d = w / self.c[i] * (g - self.v[i]);
        self.v[i] += d;
        d.abs()
    }
}

/// Off-policy MC prediction as a [`McAgent`]: ordinary and weighted IS estimates of `v_π` and `q_π`.
pub struct OffPolicyPredictionAgent {
    pub target: Policy,
    pub behaviour: Policy,
    /// Ordinary IS: `V` as a one-action table and `Q`, with visit counts.
    pub v_ordinary: QTable,
    pub q_ordinary: QTable,
    pub v_weighted: Weighted,
    pub q_weighted: Weighted,
    gamma: f64,
    max_len: Option<usize>,
    start: Option<usize>,
}

impl OffPolicyPredictionAgent {
    pub fn new<E: TabularEnv + ?Sized>(env: &E, target: &Policy, behaviour: &Policy, cfg: &OffPolicyPredictionConfig) -> Result<Self> {
        let (ns, na) = (env.n_states(), env.n_actions());
        ensure!(ns > 0, "off-policy MC prediction needs a tabular environment");
        for (p, what) in [(target, "target"), (behaviour, "behaviour")] {
            ensure!(p.num_states == ns && p.num_actions == na, "{what} policy is {}×{}, the env has {ns} states and {na} actions", p.num_states, p.num_actions);
        }
        // Coverage (S&B §5.5): π(a|s) > 0 ⇒ b(a|s) > 0.
        if let Some(i) = (0..ns * na).find(|&i| target.probs[i] > 0.0 && behaviour.probs[i] == 0.0) {
            wick_core::bail!("the behaviour policy does not cover the target policy: b({}|{}) = 0 but π > 0", i % na, i / na);
        }
        ensure!((0.0..=1.0).contains(&cfg.gamma), "gamma must be in [0, 1], got {}", cfg.gamma);
        ensure!(cfg.start.is_none_or(|s| s < ns), "start state {} is outside 0..{ns}", cfg.start.unwrap_or(0));
        Ok(OffPolicyPredictionAgent {
            target: target.clone(),
            behaviour: behaviour.clone(),
            v_ordinary: QTable::new(ns, 1),
            q_ordinary: QTable::new(ns, na),
            v_weighted: Weighted::new(ns),
            q_weighted: Weighted::new(ns * na),
            gamma: cfg.gamma,
            max_len: cfg.max_len,
            start: cfg.start,
        })
    }
}

impl McAgent for OffPolicyPredictionAgent {
    fn episode<E: TabularEnv + ?Sized>(&self, _k: u64, env: &mut E, rng: &mut Rng, steps: &mut Vec<Transition>, _probs: &mut Vec<f64>) -> Result<()> {
        let start = match self.start {
            Some(s) => Start::At(s, None),
            None => Start::Reset,
        };
        let b = &self.behaviour;
        generate_episode(env, start, self.max_len, rng, steps, |s, r| b.sample(s, r))
    }

    fn learn(&mut self, _k: u64, ep: &[Transition], _probs: &[f64]) -> f64 {
        let na = self.target.num_actions;
        let (mut g, mut w, mut max) = (0.0, 1.0, 0.0f64);
        for tr in ep.iter().rev() {
            let (s, a) = (tr.s as usize, tr.a as usize);
            g = self.gamma * g + tr.r;
            // Q(S_t, A_t) with ρ_{t+1:T−1}.
            let i = s * na + a;
            self.q_ordinary.update_index(i, w * g);
            max = max.max(self.q_weighted.update(i, w, g));
            w *= self.target.prob(s, a) / self.behaviour.prob(s, a);
            // V(S_t) with ρ_{t:T−1}.
            self.v_ordinary.update_index(s, w * g);
            max = max.max(self.v_weighted.update(s, w, g));
        }
        max
    }

    fn q(&self) -> Option<&QTable> {
        None
    }
    /// The weighted-IS estimate of `v_π`.
    fn state_values(&self) -> Vec<f64> {
        self.v_weighted.v.clone()
    }
    fn greedy_policy(&self) -> Option<Vec<usize>> {
        None
    }
    fn save(&self, ck: &mut Checkpoint) {
        let (ns, na) = (self.target.num_states, self.target.num_actions);
        save_q(ck, "ordinary.v.", &self.v_ordinary);
        save_q(ck, "ordinary.q.", &self.q_ordinary);
        ck.put_f64("weighted.v.v", &[ns], &self.v_weighted.v);
        ck.put_f64("weighted.v.c", &[ns], &self.v_weighted.c);
        ck.put_f64("weighted.q.q", &[ns, na], &self.q_weighted.v);
        ck.put_f64("weighted.q.c", &[ns, na], &self.q_weighted.c);
    }
    fn load(&mut self, ck: &Checkpoint) -> Result<()> {
        let (ns, na) = (self.target.num_states, self.target.num_actions);
        load_q(ck, "ordinary.v.", &mut self.v_ordinary)?;
        load_q(ck, "ordinary.q.", &mut self.q_ordinary)?;
        self.v_weighted.v = ck.f64_values("weighted.v.v", &[ns])?;
        self.v_weighted.c = ck.f64_values("weighted.v.c", &[ns])?;
        self.q_weighted.v = ck.f64_values("weighted.q.q", &[ns, na])?;
        self.q_weighted.c = ck.f64_values("weighted.q.c", &[ns, na])?;
        Ok(())
    }
}

/// Example 5.4 / Figure 5.3: mean squared error of the ordinary and weighted IS estimates of
/// `v_π(state)` after each of `cfg.episodes` episodes (all starting in `state`), averaged over
/// `runs` independent runs (run `r` draws from the streams `mc-off-policy-prediction/run<r>`).
pub fn mse_curves<E: TabularEnv + Send>(
    envs: Vec<E>,
    target: &Policy,
    behaviour: &Policy,
    cfg: &OffPolicyPredictionConfig,
    state: usize,
    truth: f64,
    runs: u64,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let cfg = OffPolicyPredictionConfig { start: Some(state), ..cfg.clone() };
    let n = cfg.episodes as usize;
    let (mut ord, mut wei) = (vec![0.0; n], vec![0.0; n]);
    let mut col = Collector::new(envs, cfg.seed, "mc-off-policy-prediction")?;
    for r in 0..runs {
        let mut agent = OffPolicyPredictionAgent::new(col.env(), target, behaviour, &cfg)?;
        col.set_stream(&format!("mc-off-policy-prediction/run{r}"));
        let mut k = 0;
        while k < cfg.episodes {
            let b = cfg.batch.max(1).min(cfg.episodes - k);
            col.batch_observed(&mut agent, k, b, |a, k, _| {
                ord[k as usize] += (a.v_ordinary.q[state] - truth).powi(2);
                wei[k as usize] += (a.v_weighted.v[state] - truth).powi(2);
            })?;
            k += b;
        }
    }
    for x in ord.iter_mut().chain(wei.iter_mut()) {
        *x /= runs as f64;
    }
    Ok((ord, wei))
}
