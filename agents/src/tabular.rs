//! Shared pieces of the tabular Monte Carlo agents: the [`TabularEnv`] view of an env (typed
//! [`Env`]s directly, [`DynEnv`]s through [`DynTabular`]), episodes as plain `(s, a, r)`
//! lists, the [`QTable`] of sample means, [`Policy`] as plain data, and the backward return
//! sweep with first- or every-visit selection shared by every MC method.
//!
//! Every random draw (start pairs, exploratory actions, policy sampling) comes from a
//! [`wick_core::rng::Rng`] stream derived from the run's seed; the env is seeded once with
//! `reset(Some(seed))` and continues its own stream, so a run is a function of its seed.

use wick_core::rng::Rng;
use wick_core::{bail, ensure, Result};
use wick_envs::{DynEnv, Env, Model};

/// What a tabular MC agent needs from an environment: state indices, resets (to the start
/// distribution or to a chosen state) and steps. Implemented for every typed [`Env`] and, via
/// [`DynTabular`], for a [`DynEnv`] from [`wick_envs::make`].
pub trait TabularEnv {
    /// The number of state indices (0 for a non-tabular env).
    fn n_states(&self) -> usize;
    fn n_actions(&self) -> usize;
    /// The exact model, where the env has one.
    fn exact_model(&self) -> Option<&Model>;
    /// Reset to the start distribution (`Some(seed)` reseeds the env); the start state index.
    fn start(&mut self, seed: Option<u64>) -> Result<usize>;
    /// Reset to state `s` (exploring starts).
    fn start_at(&mut self, s: usize) -> Result<()>;
    /// One step: `(next state, reward, episode over)`; over = terminated or truncated.
    fn act(&mut self, a: usize) -> Result<(usize, f64, bool)>;
}

fn state_of(s: Option<usize>, id: &str) -> Result<usize> {
    match s {
        Some(s) => Ok(s),
        None => bail!("{id} is not a tabular environment (no state index)"),
    }
}

impl<E: Env> TabularEnv for E {
    fn n_states(&self) -> usize {
        Env::num_states(self).unwrap_or(0)
    }
    fn n_actions(&self) -> usize {
        Env::num_actions(self)
    }
    fn exact_model(&self) -> Option<&Model> {
        Env::model(self)
    }
    fn start(&mut self, seed: Option<u64>) -> Result<usize> {
        Env::reset(self, seed);
        state_of(Env::state_index(self), Env::id(self))
    }
    fn start_at(&mut self, s: usize) -> Result<()> {
        Env::reset_to_state(self, s).map(|_| ())
    }
    #[inline]
    fn act(&mut self, a: usize) -> Result<(usize, f64, bool)> {
        let st = Env::step(self, a)?;
        Ok((state_of(Env::state_index(self), Env::id(self))?, st.reward, st.terminated || st.truncated))
    }
}

/// A [`DynEnv`] (what [`wick_envs::make`] returns) as a [`TabularEnv`].
pub struct DynTabular {
    pub env: Box<dyn DynEnv>,
    obs: Vec<f32>,
}

impl DynTabular {
    pub fn new(env: Box<dyn DynEnv>) -> Result<DynTabular> {
        ensure!(env.num_states().is_some(), "{} is not a tabular environment (no state index)", env.id());
        let obs = vec![0.0; env.obs_dim()];
        Ok(DynTabular { env, obs })
    }
}

impl TabularEnv for DynTabular {
    fn n_states(&self) -> usize {
        self.env.num_states().unwrap_or(0)
    }
    fn n_actions(&self) -> usize {
        self.env.num_actions()
    }
    fn exact_model(&self) -> Option<&Model> {
        self.env.model()
    }
    fn start(&mut self, seed: Option<u64>) -> Result<usize> {
        let (_, s) = self.env.reset(seed, &mut self.obs)?;
        state_of(s, self.env.id())
    }
    fn start_at(&mut self, s: usize) -> Result<()> {
        self.env.reset_to_state(s, &mut self.obs).map(|_| ())
    }
    #[inline]
    fn act(&mut self, a: usize) -> Result<(usize, f64, bool)> {
        let st = self.env.step(a, &mut self.obs)?;
        Ok((state_of(st.state, self.env.id())?, st.reward, st.done()))
    }
}

/// A borrowed env as a [`TabularEnv`] (so the one-env convenience functions can lend theirs
/// to a [`crate::parallel::Collector`]).
pub struct EnvRef<'a, T: ?Sized>(pub &'a mut T);

impl<T: TabularEnv + ?Sized> TabularEnv for EnvRef<'_, T> {
    fn n_states(&self) -> usize {
        self.0.n_states()
    }
    fn n_actions(&self) -> usize {
        self.0.n_actions()
    }
    fn exact_model(&self) -> Option<&Model> {
        self.0.exact_model()
    }
    fn start(&mut self, seed: Option<u64>) -> Result<usize> {
        self.0.start(seed)
    }
    fn start_at(&mut self, s: usize) -> Result<()> {
        self.0.start_at(s)
    }
    #[inline]
    fn act(&mut self, a: usize) -> Result<(usize, f64, bool)> {
        self.0.act(a)
    }
}

wick_core::choice! {
    /// First-visit or every-visit MC (S&B §5.1).
    pub enum Visit("visit rule") {
        /// Average only the return following the first visit to a state (or pair) in an episode
        First = "first",
        /// Average the return following every visit
        Every = "every",
    }
}

/// One step of an episode: state, action, and the reward that followed (`R_{t+1}`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transition {
    pub s: u32,
    pub a: u32,
    pub r: f64,
}

/// Where an episode starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The env's start distribution.
    Reset,
    /// State `s`, taking action `a` first when given (exploring starts).
    At(usize, Option<usize>),
}

/// Generate one episode into `out` (cleared first): start as `start` says, then act by
/// `policy(state, rng)` until the episode ends or `max_len` steps were taken (a truncated
/// episode's returns are those of its steps: the fixed-length episodes of Zhao ch. 5).
pub fn generate_episode<E: TabularEnv + ?Sized>(
    env: &mut E,
    start: Start,
    max_len: Option<usize>,
    rng: &mut Rng,
    out: &mut Vec<Transition>,
    mut policy: impl FnMut(usize, &mut Rng) -> usize,
) -> Result<()> {
    out.clear();
    let (mut s, mut first) = match start {
        Start::Reset => (env.start(None)?, None),
        Start::At(s, a) => {
            env.start_at(s)?;
            (s, a)
        }
    };
    let limit = max_len.unwrap_or(UNCUT_EPISODE_LIMIT);
    while out.len() < limit {
        let a = match first.take() {
            Some(a) => a,
            None => policy(s, rng),
        };
        let (next, r, done) = env.act(a)?;
        out.push(Transition { s: s as u32, a: a as u32, r });
        s = next;
        if done {
            return Ok(());
        }
    }
    ensure!(
        max_len.is_some(),
        "an episode ran {UNCUT_EPISODE_LIMIT} steps without ending: in a task that ends only at a goal a deterministic policy can loop forever; cut episodes with a maximum length (--episode-length)"
    );
    Ok(())
}

/// Steps after which an episode with no maximum length is taken to be looping (an error):
/// 16 MB of transitions, far past any episode of the tabular tasks.
pub const UNCUT_EPISODE_LIMIT: usize = 1 << 20;

/// Scratch space for the first-visit test: a stamp per key, so nothing is cleared per episode.
#[derive(Clone, Debug, Default)]
pub struct Visits {
    stamp: Vec<u64>,
    first: Vec<u32>,
    epoch: u64,
}

impl Visits {
    pub fn new(keys: usize) -> Visits {
        Visits { stamp: vec![0; keys], first: vec![0; keys], epoch: 0 }
    }

    /// The number of keys it was made for.
    pub fn keys(&self) -> usize {
        self.stamp.len()
    }

    /// Walk the episode backwards with `G ← γG + R_{t+1}` and call `f(t, key, G)` for each
    /// step whose key (`key(s, a)`: the state for V, the pair for Q) is counted under `visit`.
    pub fn for_each_return(
        &mut self,
        episode: &[Transition],
        gamma: f64,
        visit: Visit,
        key: impl Fn(usize, usize) -> usize,
        mut f: impl FnMut(usize, usize, f64),
    ) {
        if visit == Visit::First {
            self.epoch += 1;
            for (t, tr) in episode.iter().enumerate() {
                let k = key(tr.s as usize, tr.a as usize);
                if self.stamp[k] != self.epoch {
                    self.stamp[k] = self.epoch;
                    self.first[k] = t as u32;
                }
            }
        }
        let mut g = 0.0;
        for t in (0..episode.len()).rev() {
            let tr = episode[t];
            g = gamma * g + tr.r;
            let k = key(tr.s as usize, tr.a as usize);
            if visit == Visit::Every || self.first[k] as usize == t {
                f(t, k, g);
            }
        }
    }
}

/// One incremental estimate step with the `n`-th return `g`: the sample mean
/// `q ← q + (g − q)/n`, or constant-α MC (S&B §6.1, eq. 6.1) `q ← q + α(g − q)`, a
/// recency-weighted mean that forgets the returns of earlier, more exploratory policies (counts
/// still advance). Returns `|Δq|`.
#[inline]
pub fn mean_step(q: &mut f64, n: &mut u64, g: f64, alpha: Option<f64>) -> f64 {
    *n += 1;
    let d = match alpha {
        // Through i64: one instruction on x86-64 (u64 → f64 takes six), the same value for
        // every count below 2^63.
        None => (g - *q) / *n as i64 as f64,
        Some(alpha) => alpha * (g - *q),
    };
    *q += d;
    d.abs()
}

/// Action values as sample means of returns, with their counts: `q[s * A + a]`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QTable {
    pub num_states: usize,
    pub num_actions: usize,
    pub q: Vec<f64>,
    pub n: Vec<u64>,
}

impl QTable {
    pub fn new(num_states: usize, num_actions: usize) -> QTable {
        QTable { num_states, num_actions, q: vec![0.0; num_states * num_actions], n: vec![0; num_states * num_actions] }
    }

    #[inline]
    pub fn get(&self, s: usize, a: usize) -> f64 {
        self.q[s * self.num_actions + a]
    }

    #[inline]
    pub fn count(&self, s: usize, a: usize) -> u64 {
        self.n[s * self.num_actions + a]
    }

    /// The mean-estimation step: with `n` returns seen, `q ← q + (g − q)/n`. Returns `|Δq|`.
    #[inline]
    pub fn update_index(&mut self, i: usize, g: f64) -> f64 {
        mean_step(&mut self.q[i], &mut self.n[i], g, None)
    }

    #[inline]
    pub fn update(&mut self, s: usize, a: usize, g: f64) -> f64 {
        self.update_index(s * self.num_actions + a, g)
    }

    /// The greedy action in `s` (ties to the lowest action).
    #[inline]
    pub fn greedy(&self, s: usize) -> usize {
        let row = &self.q[s * self.num_actions..(s + 1) * self.num_actions];
        let mut best = 0;
        for a in 1..row.len() {
            if row[a] > row[best] {
                best = a;
            }
        }
        best
    }

    /// The greedy action of every state.
    pub fn greedy_policy(&self) -> Vec<usize> {
        (0..self.num_states).map(|s| self.greedy(s)).collect()
    }

    /// `max_a q(s, a)` per state.
    pub fn state_values(&self) -> Vec<f64> {
        (0..self.num_states).map(|s| self.get(s, self.greedy(s))).collect()
    }
}

/// A stochastic policy as plain data: `probs[s * A + a] = π(a | s)`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    pub num_states: usize,
    pub num_actions: usize,
    pub probs: Vec<f64>,
}

impl Policy {
    pub fn uniform(num_states: usize, num_actions: usize) -> Policy {
        Policy { num_states, num_actions, probs: vec![1.0 / num_actions as f64; num_states * num_actions] }
    }

    /// The deterministic policy `s ↦ actions[s]`.
    pub fn deterministic(actions: &[usize], num_actions: usize) -> Result<Policy> {
        let mut probs = vec![0.0; actions.len() * num_actions];
        for (s, &a) in actions.iter().enumerate() {
            ensure!(a < num_actions, "policy: action {a} of state {s} is outside 0..{num_actions}");
            probs[s * num_actions + a] = 1.0;
        }
        Ok(Policy { num_states: actions.len(), num_actions, probs })
    }

    /// ε-greedy with respect to `q`: `1 − ε + ε/|A|` on the greedy action, `ε/|A|` elsewhere.
    pub fn epsilon_greedy(q: &QTable, epsilon: f64) -> Policy {
        let na = q.num_actions;
        let mut probs = vec![epsilon / na as f64; q.num_states * na];
        for s in 0..q.num_states {
            probs[s * na + q.greedy(s)] += 1.0 - epsilon;
        }
        Policy { num_states: q.num_states, num_actions: na, probs }
    }

    #[inline]
    pub fn prob(&self, s: usize, a: usize) -> f64 {
        self.probs[s * self.num_actions + a]
    }

    /// Draw an action in `s` (one uniform draw, inverse CDF).
    #[inline]
    pub fn sample(&self, s: usize, rng: &mut Rng) -> usize {
        let u = rng.uniform();
        let row = &self.probs[s * self.num_actions..(s + 1) * self.num_actions];
        let mut c = 0.0;
        for (a, p) in row.iter().enumerate() {
            c += p;
            if u < c {
                return a;
            }
        }
        row.iter().rposition(|&p| p > 0.0).unwrap_or(0)
    }

    /// The most probable action per state (ties to the lowest).
    pub fn greedy_actions(&self) -> Vec<usize> {
        (0..self.num_states)
            .map(|s| {
                let row = &self.probs[s * self.num_actions..(s + 1) * self.num_actions];
                let mut best = 0;
                for a in 1..row.len() {
                    if row[a] > row[best] {
                        best = a;
                    }
                }
                best
            })
            .collect()
    }
}

/// States where the deterministic `policy` is not optimal in `model`: its action's exact
/// `q*(s, π(s))` falls short of `v*(s)` by more than `tol` (ties within `tol` count as
/// optimal). `v_star` from [`Model::value_iteration`].
pub fn suboptimal_states(model: &Model, v_star: &[f64], policy: &[usize], gamma: f64, tol: f64) -> Vec<usize> {
    (0..model.num_states())
        .filter(|&s| model.q(v_star, s, policy[s], gamma) < v_star[s] - tol)
        .collect()
}

/// The run's agent stream: `Rng::stream(seed, name)`.
pub fn agent_rng(seed: u64, name: &str) -> Rng {
    Rng::stream(seed, name)
}
