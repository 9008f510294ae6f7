//! The environment API, mirroring Gymnasium 1.x.
//!
//! - [`Env`]: a concrete, typed environment (`reset(seed) -> (obs, info)`,
//!   `step(action) -> Step { obs, reward, terminated, truncated, info }`), zero-cost and
//!   allocation-free per step. Every registered env has discrete actions (`usize`).
//! - [`DynEnv`]: the object-safe layer over any [`Env`] (what [`crate::make`] returns): the
//!   observation is written as `f32`s into a caller's buffer of length [`DynEnv::obs_dim`], and
//!   tabular envs also give the state index, so one generic agent drives every env.
//! - [`Model`]: the exact model of a tabular env, Gymnasium's `P[s][a]` as a flat table.
//!
//! Seeding: every env owns a [`wick_core::rng::Rng`]. A seeded `reset(Some(seed))` replaces it
//! with `Rng::stream(seed, "env")`; an unseeded reset continues the current stream. A new env
//! starts on `Rng::stream(0, "env")`, so an env never seeded is still reproducible (Gymnasium
//! would draw OS entropy there). wick does not reproduce numpy's streams; parity with Gymnasium
//! is checked by injecting the randomness (initial state, cards, slip draws) instead.

use std::fmt::Debug;

use wick_core::rng::Rng;
use wick_core::{bail, Result};

use crate::render::Rgb;
use crate::space::Space;

/// The name of the stream a seeded reset derives the env's generator from.
pub const ENV_STREAM: &str = "env";

/// The generator a `reset(Some(seed))` installs: `Rng::stream(seed, "env")`.
pub fn env_rng(seed: u64) -> Rng {
    Rng::stream(seed, ENV_STREAM)
}

/// Return and length of a finished episode (Gymnasium's `info["episode"]` `r` and `l`).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct EpisodeStats {
    pub ret: f64,
    pub len: u64,
}

/// The `info` dict, as a plain struct: only the keys wick's envs and wrappers set.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Info {
    /// `info["prob"]` of FrozenLake and CliffWalking: the probability of the transition taken.
    pub prob: Option<f64>,
    /// Set by [`crate::wrappers::EpisodeStatistics`] on the step that ends an episode.
    pub episode: Option<EpisodeStats>,
}

/// What `step` returns: Gymnasium's `(obs, reward, terminated, truncated, info)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step<O> {
    pub obs: O,
    pub reward: f64,
    /// The MDP reached a terminal state (bootstrap from it with value 0).
    pub terminated: bool,
    /// The episode was cut short (time limit): the state is not terminal.
    pub truncated: bool,
    pub info: Info,
}

impl<O> Step<O> {
    /// `terminated || truncated`: the episode is over and the env needs a reset.
    #[inline]
    pub fn done(&self) -> bool {
        self.terminated || self.truncated
    }
}

/// A typed observation: `Copy`, and flattenable to `f32`s for neural agents.
pub trait Observation: Copy + Debug + PartialEq + Send + Sync + 'static {
    /// Write the observation as `f32`s; `out.len()` is the env's [`Env::obs_dim`].
    fn write_f32(&self, out: &mut [f32]);
}

impl Observation for usize {
    #[inline]
    fn write_f32(&self, out: &mut [f32]) {
        out[0] = *self as f32;
    }
}

impl<const N: usize> Observation for [f32; N] {
    #[inline]
    fn write_f32(&self, out: &mut [f32]) {
        out.copy_from_slice(self);
    }
}

/// A Gymnasium environment with discrete actions `0..num_actions()`.
pub trait Env: Send {
    type Obs: Observation;

    /// The Gymnasium id (`"CartPole-v1"`), or `"GridWorld"`.
    fn id(&self) -> &'static str;
    fn observation_space(&self) -> Space;
    fn action_space(&self) -> Space {
        Space::discrete(self.num_actions())
    }
    fn num_actions(&self) -> usize;
    /// Length of the flat `f32` observation ([`Observation::write_f32`]).
    fn obs_dim(&self) -> usize;

    /// Start an episode; `Some(seed)` reseeds the env's generator first (see the module doc).
    fn reset(&mut self, seed: Option<u64>) -> (Self::Obs, Info);
    /// Advance one step. Errors: an action outside the action space, a step before any reset.
    fn step(&mut self, action: usize) -> Result<Step<Self::Obs>>;

    /// The step limit a [`crate::wrappers::TimeLimit`] imposes, if any.
    fn max_episode_steps(&self) -> Option<u64> {
        None
    }

    /// Tabular envs: the number of states of [`Env::state_index`] and [`Env::model`].
    fn num_states(&self) -> Option<usize> {
        None
    }
    /// Tabular envs: the index of the current state (for most, the observation itself).
    fn state_index(&self) -> Option<usize> {
        None
    }
    /// Tabular envs: the exact model.
    fn model(&self) -> Option<&Model> {
        None
    }
    /// Tabular envs: start an episode in state `s` (exploring starts). Like an unseeded reset
    /// otherwise: the generator continues, wrappers restart their counters.
    fn reset_to_state(&mut self, s: usize) -> Result<(Self::Obs, Info)> {
        let _ = s;
        bail!("{} has no start-state option", self.id())
    }

    /// Gymnasium's `ansi` render: the current state as text.
    fn render_text(&self) -> Option<String> {
        None
    }
    /// Gymnasium's `rgb_array` render: an H×W×3 `u8` image.
    fn render_rgb(&self) -> Option<Rgb> {
        None
    }
}

/// The error for an action outside `Discrete(n)`.
#[cold]
pub(crate) fn bad_action(id: &str, action: usize, n: usize) -> wick_core::Error {
    wick_core::Error::new(format!("{id}: action {action} is outside the action space Discrete({n})"))
}

/// The error for a step before the first reset (Gymnasium's `OrderEnforcing`).
#[cold]
pub(crate) fn no_reset(id: &str) -> wick_core::Error {
    wick_core::Error::new(format!("{id}: step() called before reset()"))
}

/// One entry of an exact model: Gymnasium's `(prob, next_state, reward, terminated)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transition {
    pub prob: f64,
    pub next: usize,
    pub reward: f64,
    pub terminated: bool,
}

/// The exact model of a tabular env: for each state and action, the list of possible
/// transitions (Gymnasium's `env.unwrapped.P[s][a]`, in the same order), and the start-state
/// distribution. A transition with `terminated` ends the episode: dynamic programming takes the
/// value after it as 0, whatever `next` is.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    num_states: usize,
    num_actions: usize,
    /// `offsets[s * num_actions + a] .. offsets[.. + 1]` indexes `table`.
    offsets: Vec<u32>,
    table: Vec<Transition>,
    start: Vec<(f64, usize)>,
}

impl Model {
    /// Build from a function giving the transitions of each (s, a).
    pub fn build(
        num_states: usize,
        num_actions: usize,
        start: Vec<(f64, usize)>,
        mut f: impl FnMut(usize, usize, &mut Vec<Transition>),
    ) -> Model {
        let mut offsets = Vec::with_capacity(num_states * num_actions + 1);
        let mut table = Vec::new();
        offsets.push(0);
        for s in 0..num_states {
            for a in 0..num_actions {
                f(s, a, &mut table);
                offsets.push(table.len() as u32);
            }
        }
        Model { num_states, num_actions, offsets, table, start }
    }

    pub fn num_states(&self) -> usize {
        self.num_states
    }
    pub fn num_actions(&self) -> usize {
        self.num_actions
    }

    /// `P[s][a]`: the transitions from `s` under `a` (probabilities sum to 1).
    #[inline]
    pub fn transitions(&self, s: usize, a: usize) -> &[Transition] {
        let i = s * self.num_actions + a;
        &self.table[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// The expected immediate reward of `a` in `s`.
    pub fn expected_reward(&self, s: usize, a: usize) -> f64 {
        self.transitions(s, a).iter().map(|t| t.prob * t.reward).sum()
    }

    /// The start-state distribution `(prob, state)`.
    pub fn start(&self) -> &[(f64, usize)] {
        &self.start
    }

    /// Gymnasium's `categorical_sample`: the first transition whose cumulative probability
    /// exceeds `u` (index 0 if none does, as `np.argmax` of an all-false array).
    #[inline]
    pub fn sample(&self, s: usize, a: usize, u: f64) -> &Transition {
        let ts = self.transitions(s, a);
        let mut c = 0.0;
        for t in ts {
            c += t.prob;
            if c > u {
                return t;
            }
        }
        &ts[0]
    }

    /// Value iteration to `tol` (max-norm change) with discount `gamma`: the optimal state
    /// values and a greedy policy (ties to the lowest action). Ground truth for tests and agents.
    pub fn value_iteration(&self, gamma: f64, tol: f64) -> (Vec<f64>, Vec<usize>) {
        let mut v = vec![0.0; self.num_states];
        loop {
            let mut delta: f64 = 0.0;
            for s in 0..self.num_states {
                let best = (0..self.num_actions).map(|a| self.q(&v, s, a, gamma)).fold(f64::NEG_INFINITY, f64::max);
                delta = delta.max((best - v[s]).abs());
                v[s] = best;
            }
            if delta < tol {
                break;
            }
        }
        let pi = (0..self.num_states).map(|s| self.greedy(&v, s, gamma)).collect();
        (v, pi)
    }

    /// `q(s, a) = Σ p (r + γ v(s') [not terminated])`.
    pub fn q(&self, v: &[f64], s: usize, a: usize, gamma: f64) -> f64 {
        self.transitions(s, a)
            .iter()
            .map(|t| t.prob * (t.reward + if t.terminated { 0.0 } else { gamma * v[t.next] }))
            .sum()
    }

    /// The greedy action in `s` under `v` (ties to the lowest action).
    pub fn greedy(&self, v: &[f64], s: usize, gamma: f64) -> usize {
        let mut best = (0, f64::NEG_INFINITY);
        for a in 0..self.num_actions {
            let q = self.q(v, s, a, gamma);
            if q > best.1 + 1e-12 {
                best = (a, q);
            }
        }
        best.0
    }

    /// Exact evaluation of a deterministic policy by iterating the Bellman expectation equation.
    pub fn evaluate(&self, policy: &[usize], gamma: f64, tol: f64) -> Vec<f64> {
        let mut v = vec![0.0; self.num_states];
        loop {
            let mut delta: f64 = 0.0;
            for s in 0..self.num_states {
                let x = self.q(&v, s, policy[s], gamma);
                delta = delta.max((x - v[s]).abs());
                v[s] = x;
            }
            if delta < tol {
                return v;
            }
        }
    }
}

/// What [`DynEnv::step`] returns; the observation went into the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DynStep {
    pub reward: f64,
    pub terminated: bool,
    pub truncated: bool,
    pub info: Info,
    /// The state index after the step (tabular envs).
    pub state: Option<usize>,
}

impl DynStep {
    #[inline]
    pub fn done(&self) -> bool {
        self.terminated || self.truncated
    }
}

/// The object-safe environment: what [`crate::make`] returns and generic agents drive.
/// Observations are written as `f32`s into `obs` (length [`DynEnv::obs_dim`]).
pub trait DynEnv: Send {
    fn id(&self) -> &'static str;
    fn observation_space(&self) -> Space;
    fn action_space(&self) -> Space;
    fn num_actions(&self) -> usize;
    fn obs_dim(&self) -> usize;
    fn max_episode_steps(&self) -> Option<u64>;
    fn num_states(&self) -> Option<usize>;
    fn state_index(&self) -> Option<usize>;
    fn model(&self) -> Option<&Model>;
    /// Reset; returns the info and the start state index (tabular envs).
    fn reset(&mut self, seed: Option<u64>, obs: &mut [f32]) -> Result<(Info, Option<usize>)>;
    fn reset_to_state(&mut self, s: usize, obs: &mut [f32]) -> Result<Info>;
    fn step(&mut self, action: usize, obs: &mut [f32]) -> Result<DynStep>;
    /// The current observation in Gymnasium's notation (`3`, `(14, 10, 0)`, `[0.01, ...]`).
    fn observation_string(&self) -> String;
    fn render_text(&self) -> Option<String>;
    fn render_rgb(&self) -> Option<Rgb>;
}

/// Any typed env wrapped for dynamic use (the observation is kept for `observation_string`).
pub struct Dyn<E: Env> {
    pub env: E,
    last: Option<E::Obs>,
}

impl<E: Env> Dyn<E> {
    pub fn new(env: E) -> Self {
        Dyn { env, last: None }
    }
}

fn check_len(id: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        bail!("{id}: observation buffer has length {got}, the env's obs_dim is {want}");
    }
    Ok(())
}

impl<E: Env> DynEnv for Dyn<E> {
    fn id(&self) -> &'static str {
        self.env.id()
    }
    fn observation_space(&self) -> Space {
        self.env.observation_space()
    }
    fn action_space(&self) -> Space {
        self.env.action_space()
    }
    fn num_actions(&self) -> usize {
        self.env.num_actions()
    }
    fn obs_dim(&self) -> usize {
        self.env.obs_dim()
    }
    fn max_episode_steps(&self) -> Option<u64> {
        self.env.max_episode_steps()
    }
    fn num_states(&self) -> Option<usize> {
        self.env.num_states()
    }
    fn state_index(&self) -> Option<usize> {
        self.env.state_index()
    }
    fn model(&self) -> Option<&Model> {
        self.env.model()
    }
    fn reset(&mut self, seed: Option<u64>, obs: &mut [f32]) -> Result<(Info, Option<usize>)> {
        check_len(self.env.id(), obs.len(), self.env.obs_dim())?;
        let (o, info) = self.env.reset(seed);
        o.write_f32(obs);
        self.last = Some(o);
        Ok((info, self.env.state_index()))
    }
    fn reset_to_state(&mut self, s: usize, obs: &mut [f32]) -> Result<Info> {
        check_len(self.env.id(), obs.len(), self.env.obs_dim())?;
        let (o, info) = self.env.reset_to_state(s)?;
        o.write_f32(obs);
        self.last = Some(o);
        Ok(info)
    }
    #[inline]
    fn step(&mut self, action: usize, obs: &mut [f32]) -> Result<DynStep> {
        check_len(self.env.id(), obs.len(), self.env.obs_dim())?;
        let st = self.env.step(action)?;
        st.obs.write_f32(obs);
        self.last = Some(st.obs);
        Ok(DynStep {
            reward: st.reward,
            terminated: st.terminated,
            truncated: st.truncated,
            info: st.info,
            state: self.env.state_index(),
        })
    }
    fn observation_string(&self) -> String {
        match &self.last {
            None => "None".into(),
            Some(o) => {
                let mut v = vec![0f32; self.env.obs_dim()];
                o.write_f32(&mut v);
                crate::render::obs_string(&self.env.observation_space(), &v)
            }
        }
    }
    fn render_text(&self) -> Option<String> {
        self.env.render_text()
    }
    fn render_rgb(&self) -> Option<Rgb> {
        self.env.render_rgb()
    }
}
