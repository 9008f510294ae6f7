//! Wrappers, as Gymnasium's: [`TimeLimit`] (`gymnasium.wrappers.TimeLimit`),
//! [`EpisodeStatistics`] (`RecordEpisodeStatistics`: return and length in `info.episode` on
//! the step that ends an episode) and [`OneHot`] (the state index of a tabular env as a one-hot
//! `f32` vector, for neural agents). Each is a typed [`Env`] over a typed env; [`DynOneHot`] and
//! [`DynEpisodeStatistics`] do the same over a `Box<dyn DynEnv>` from the registry.

use wick_core::{bail, Result};

use crate::env::{DynEnv, DynStep, Env, EpisodeStats, Info, Model, Observation, Step};
use crate::render::Rgb;
use crate::space::Space;

macro_rules! forward_tabular {
    () => {
        fn num_states(&self) -> Option<usize> {
            self.env.num_states()
        }
        fn state_index(&self) -> Option<usize> {
            self.env.state_index()
        }
        fn model(&self) -> Option<&Model> {
            self.env.model()
        }
        fn render_text(&self) -> Option<String> {
            self.env.render_text()
        }
        fn render_rgb(&self) -> Option<Rgb> {
            self.env.render_rgb()
        }
    };
}

/// Truncate episodes after `max_episode_steps` steps (`truncated = true` on the last one,
/// whether or not it also terminated — as Gymnasium's `TimeLimit`).
#[derive(Clone, Debug)]
pub struct TimeLimit<E> {
    env: E,
    max: u64,
    elapsed: u64,
}

impl<E: Env> TimeLimit<E> {
    pub fn new(env: E, max_episode_steps: u64) -> Self {
        TimeLimit { env, max: max_episode_steps, elapsed: 0 }
    }
    pub fn inner(&self) -> &E {
        &self.env
    }
    /// The wrapped env (changing its state does not touch the step counter).
    pub fn inner_mut(&mut self) -> &mut E {
        &mut self.env
    }
    pub fn into_inner(self) -> E {
        self.env
    }
    pub fn elapsed_steps(&self) -> u64 {
        self.elapsed
    }

    /// Step the inner env through `f` (e.g. a step with injected randomness,
    /// `|e| e.step_with_uniform(a, u)`), counting it against the limit like [`Env::step`].
    pub fn step_with(&mut self, f: impl FnOnce(&mut E) -> Result<Step<E::Obs>>) -> Result<Step<E::Obs>> {
        let mut s = f(&mut self.env)?;
        self.elapsed += 1;
        if self.elapsed >= self.max {
            s.truncated = true;
        }
        Ok(s)
    }
}

impl<E: Env> Env for TimeLimit<E> {
    type Obs = E::Obs;
    fn id(&self) -> &'static str {
        self.env.id()
    }
    fn observation_space(&self) -> Space {
        self.env.observation_space()
    }
    fn num_actions(&self) -> usize {
        self.env.num_actions()
    }
    fn obs_dim(&self) -> usize {
        self.env.obs_dim()
    }
    fn max_episode_steps(&self) -> Option<u64> {
        Some(self.max)
    }
    fn reset(&mut self, seed: Option<u64>) -> (E::Obs, Info) {
        self.elapsed = 0;
        self.env.reset(seed)
    }
    #[inline]
    fn step(&mut self, action: usize) -> Result<Step<E::Obs>> {
        let mut s = self.env.step(action)?;
        self.elapsed += 1;
        if self.elapsed >= self.max {
            s.truncated = true;
        }
        Ok(s)
    }
    fn reset_to_state(&mut self, s: usize) -> Result<(E::Obs, Info)> {
        self.elapsed = 0;
        self.env.reset_to_state(s)
    }
    forward_tabular!();
}

/// Gymnasium's `RecordEpisodeStatistics`: when a step ends the episode (terminated or
/// truncated), `info.episode` holds its undiscounted return and length.
#[derive(Clone, Debug)]
pub struct EpisodeStatistics<E> {
    env: E,
    ret: f64,
    len: u64,
}

impl<E: Env> EpisodeStatistics<E> {
    pub fn new(env: E) -> Self {
        EpisodeStatistics { env, ret: 0.0, len: 0 }
    }
    pub fn inner(&self) -> &E {
        &self.env
    }
    pub fn inner_mut(&mut self) -> &mut E {
        &mut self.env
    }
}

impl<E: Env> Env for EpisodeStatistics<E> {
    type Obs = E::Obs;
    fn id(&self) -> &'static str {
        self.env.id()
    }
    fn observation_space(&self) -> Space {
        self.env.observation_space()
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
    fn reset(&mut self, seed: Option<u64>) -> (E::Obs, Info) {
        self.ret = 0.0;
        self.len = 0;
        self.env.reset(seed)
    }
    #[inline]
    fn step(&mut self, action: usize) -> Result<Step<E::Obs>> {
        let mut s = self.env.step(action)?;
        self.ret += s.reward;
        self.len += 1;
        if s.done() {
            s.info.episode = Some(EpisodeStats { ret: self.ret, len: self.len });
            self.ret = 0.0;
            self.len = 0;
        }
        Ok(s)
    }
    fn reset_to_state(&mut self, s: usize) -> Result<(E::Obs, Info)> {
        self.ret = 0.0;
        self.len = 0;
        self.env.reset_to_state(s)
    }
    forward_tabular!();
}

/// A one-hot observation: `index` of `n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OneHotObs {
    pub index: u32,
    pub n: u32,
}

impl Observation for OneHotObs {
    #[inline]
    fn write_f32(&self, out: &mut [f32]) {
        out.fill(0.0);
        out[self.index as usize] = 1.0;
    }
}

/// The state index of a tabular env as a one-hot vector of length `num_states`
/// (`Box(0, 1, (num_states,), float32)`), for neural agents on tabular envs.
#[derive(Clone, Debug)]
pub struct OneHot<E> {
    env: E,
    n: u32,
}

impl<E: Env> OneHot<E> {
    pub fn new(env: E) -> Result<Self> {
        match env.num_states() {
            Some(n) => Ok(OneHot { env, n: n as u32 }),
            None => bail!("{}: one-hot observations need a tabular env (one with a state index)", env.id()),
        }
    }
    pub fn inner(&self) -> &E {
        &self.env
    }
    pub fn inner_mut(&mut self) -> &mut E {
        &mut self.env
    }
    #[inline]
    fn obs(&self) -> OneHotObs {
        OneHotObs { index: self.env.state_index().expect("tabular env after reset") as u32, n: self.n }
    }
}

impl<E: Env> Env for OneHot<E> {
    type Obs = OneHotObs;
    fn id(&self) -> &'static str {
        self.env.id()
    }
    fn observation_space(&self) -> Space {
        Space::box1(vec![0.0; self.n as usize], vec![1.0; self.n as usize])
    }
    fn num_actions(&self) -> usize {
        self.env.num_actions()
    }
    fn obs_dim(&self) -> usize {
        self.n as usize
    }
    fn max_episode_steps(&self) -> Option<u64> {
        self.env.max_episode_steps()
    }
    fn reset(&mut self, seed: Option<u64>) -> (OneHotObs, Info) {
        let (_, info) = self.env.reset(seed);
        (self.obs(), info)
    }
    #[inline]
    fn step(&mut self, action: usize) -> Result<Step<OneHotObs>> {
        let s = self.env.step(action)?;
        Ok(Step { obs: self.obs(), reward: s.reward, terminated: s.terminated, truncated: s.truncated, info: s.info })
    }
    fn reset_to_state(&mut self, s: usize) -> Result<(OneHotObs, Info)> {
        let (_, info) = self.env.reset_to_state(s)?;
        Ok((self.obs(), info))
    }
    forward_tabular!();
}

macro_rules! forward_dyn {
    () => {
        fn id(&self) -> &'static str {
            self.env.id()
        }
        fn action_space(&self) -> Space {
            self.env.action_space()
        }
        fn num_actions(&self) -> usize {
            self.env.num_actions()
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
        fn render_text(&self) -> Option<String> {
            self.env.render_text()
        }
        fn render_rgb(&self) -> Option<Rgb> {
            self.env.render_rgb()
        }
    };
}

/// [`OneHot`] over a dynamic env.
pub struct DynOneHot {
    env: Box<dyn DynEnv>,
    scratch: Vec<f32>,
    n: usize,
}

impl DynOneHot {
    pub fn new(env: Box<dyn DynEnv>) -> Result<Self> {
        let Some(n) = env.num_states() else {
            bail!("{}: one-hot observations need a tabular env (one with a state index)", env.id());
        };
        Ok(DynOneHot { scratch: vec![0.0; env.obs_dim()], env, n })
    }
    fn write(&self, s: Option<usize>, obs: &mut [f32]) -> Result<()> {
        if obs.len() != self.n {
            bail!("{}: observation buffer has length {}, the env's obs_dim is {}", self.env.id(), obs.len(), self.n);
        }
        obs.fill(0.0);
        obs[s.expect("tabular env has a state")] = 1.0;
        Ok(())
    }
}

impl DynEnv for DynOneHot {
    forward_dyn!();
    fn observation_space(&self) -> Space {
        Space::box1(vec![0.0; self.n], vec![1.0; self.n])
    }
    fn obs_dim(&self) -> usize {
        self.n
    }
    fn reset(&mut self, seed: Option<u64>, obs: &mut [f32]) -> Result<(Info, Option<usize>)> {
        let (info, s) = self.env.reset(seed, &mut self.scratch)?;
        self.write(s, obs)?;
        Ok((info, s))
    }
    fn reset_to_state(&mut self, s: usize, obs: &mut [f32]) -> Result<Info> {
        let info = self.env.reset_to_state(s, &mut self.scratch)?;
        self.write(self.env.state_index(), obs)?;
        Ok(info)
    }
    fn step(&mut self, action: usize, obs: &mut [f32]) -> Result<DynStep> {
        let st = self.env.step(action, &mut self.scratch)?;
        self.write(st.state, obs)?;
        Ok(st)
    }
    fn observation_string(&self) -> String {
        format!("one_hot({})", self.env.state_index().map_or("None".into(), |s| s.to_string()))
    }
}

/// [`EpisodeStatistics`] over a dynamic env.
pub struct DynEpisodeStatistics {
    env: Box<dyn DynEnv>,
    ret: f64,
    len: u64,
}

impl DynEpisodeStatistics {
    pub fn new(env: Box<dyn DynEnv>) -> Self {
        DynEpisodeStatistics { env, ret: 0.0, len: 0 }
    }
}

impl DynEnv for DynEpisodeStatistics {
    forward_dyn!();
    fn observation_space(&self) -> Space {
        self.env.observation_space()
    }
    fn obs_dim(&self) -> usize {
        self.env.obs_dim()
    }
    fn reset(&mut self, seed: Option<u64>, obs: &mut [f32]) -> Result<(Info, Option<usize>)> {
        self.ret = 0.0;
        self.len = 0;
        self.env.reset(seed, obs)
    }
    fn reset_to_state(&mut self, s: usize, obs: &mut [f32]) -> Result<Info> {
        self.ret = 0.0;
        self.len = 0;
        self.env.reset_to_state(s, obs)
    }
    fn step(&mut self, action: usize, obs: &mut [f32]) -> Result<DynStep> {
        let mut st = self.env.step(action, obs)?;
        self.ret += st.reward;
        self.len += 1;
        if st.done() {
            st.info.episode = Some(EpisodeStats { ret: self.ret, len: self.len });
            self.ret = 0.0;
            self.len = 0;
        }
        Ok(st)
    }
    fn observation_string(&self) -> String {
        self.env.observation_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cartpole::CartPole;
    use crate::frozen_lake::{FrozenLake, FrozenLakeConfig};
    use crate::grid_world::{GridWorld, GridWorldConfig};

    #[test]
    fn time_limit_truncates_and_stats_record() {
        let mut env = EpisodeStatistics::new(TimeLimit::new(GridWorld::new(GridWorldConfig::default()), 7));
        env.reset(Some(0));
        let mut total = 0.0;
        for t in 1..=7 {
            let s = env.step(crate::grid_world::UP).unwrap();
            total += s.reward;
            assert_eq!(s.truncated, t == 7);
            assert!(!s.terminated);
            assert_eq!(s.info.episode.is_some(), t == 7);
            if t == 7 {
                assert_eq!(s.info.episode.unwrap(), EpisodeStats { ret: total, len: 7 });
            }
        }
        env.reset(None);
        assert!(!env.step(0).unwrap().truncated);
        assert_eq!(env.max_episode_steps(), Some(7));
    }

    #[test]
    fn cartpole_truncates_at_500_with_a_balancing_policy() {
        let mut env = TimeLimit::new(CartPole::default(), 500);
        let (mut o, _) = env.reset(Some(0));
        for t in 1..=500 {
            let a = (o[2] + 0.5 * o[3] > 0.0) as usize;
            let s = env.step(a).unwrap();
            o = s.obs;
            assert!(!s.terminated, "fell at {t}");
            assert_eq!(s.truncated, t == 500);
        }
    }

    #[test]
    fn one_hot() {
        let mut env = OneHot::new(FrozenLake::new(&FrozenLakeConfig::default()).unwrap()).unwrap();
        assert_eq!(env.obs_dim(), 16);
        let (o, _) = env.reset(Some(1));
        let mut v = vec![9.0; 16];
        o.write_f32(&mut v);
        assert_eq!(v.iter().sum::<f32>(), 1.0);
        assert_eq!(v[0], 1.0);
        assert!(OneHot::new(CartPole::default()).is_err());
        let mut d = DynOneHot::new(crate::make("Blackjack-v1", &[]).unwrap()).unwrap();
        let mut buf = vec![0.0; d.obs_dim()];
        let (_, s) = d.reset(Some(0), &mut buf).unwrap();
        assert_eq!(buf[s.unwrap()], 1.0);
        assert_eq!(buf.iter().sum::<f32>(), 1.0);
    }
}
