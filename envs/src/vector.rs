//! Vectorised stepping of N copies with auto-reset, as Gymnasium 1.x's `SyncVectorEnv`.
//!
//! - `reset(Some(seed))` seeds copy `i` with `seed + i`; `reset(None)` continues every stream.
//! - [`Autoreset::NextStep`] (Gymnasium 1.x's default): the step that ends copy `i`'s episode
//!   returns its last observation; on the *next* `step` copy `i` ignores its action and resets
//!   (unseeded), returning the reset observation with reward 0 and
//!   `terminated = truncated = false`.
//! - [`Autoreset::SameStep`]: the ending step resets at once and returns the reset observation;
//!   the last observation and info are in `final_obs(i)` / `final_info(i)` (Gymnasium's
//!   `info["final_obs"]`).
//!
//! [`VecEnv`] holds typed envs (observations as `E::Obs`); [`DynVecEnv`] holds registry envs
//! and keeps the observations as one row-major `N × obs_dim` `f32` matrix. Neither allocates
//! per step.

use wick_core::{bail, Result};

use crate::env::{DynEnv, Env, Info};

/// Gymnasium's `AutoresetMode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Autoreset {
    #[default]
    NextStep,
    SameStep,
}

/// N typed envs stepped together.
pub struct VecEnv<E: Env> {
    envs: Vec<E>,
    mode: Autoreset,
    obs: Vec<E::Obs>,
    rewards: Vec<f64>,
    terminated: Vec<bool>,
    truncated: Vec<bool>,
    infos: Vec<Info>,
    pending: Vec<bool>,
    final_obs: Vec<Option<E::Obs>>,
    final_info: Vec<Info>,
}

impl<E: Env> VecEnv<E> {
    /// `n` copies made by `make(i)`.
    pub fn new(n: usize, mode: Autoreset, mut make: impl FnMut(usize) -> E) -> Result<Self> {
        if n == 0 {
            bail!("a vector env needs at least one copy");
        }
        let mut envs: Vec<E> = (0..n).map(&mut make).collect();
        let first = envs[0].reset(None).0;
        Ok(VecEnv {
            envs,
            mode,
            obs: vec![first; n],
            rewards: vec![0.0; n],
            terminated: vec![false; n],
            truncated: vec![false; n],
            infos: vec![Info::default(); n],
            pending: vec![false; n],
            final_obs: vec![None; n],
            final_info: vec![Info::default(); n],
        })
    }

    pub fn num_envs(&self) -> usize {
        self.envs.len()
    }
    pub fn envs(&self) -> &[E] {
        &self.envs
    }

    /// Reset every copy; copy `i` gets `seed + i`.
    pub fn reset(&mut self, seed: Option<u64>) -> &[E::Obs] {
        for (i, e) in self.envs.iter_mut().enumerate() {
            let (o, info) = e.reset(seed.map(|s| s.wrapping_add(i as u64)));
            self.obs[i] = o;
            self.infos[i] = info;
            self.pending[i] = false;
            self.final_obs[i] = None;
        }
        &self.obs
    }

    /// Step every copy with `actions[i]`; read the results from the accessors.
    pub fn step(&mut self, actions: &[usize]) -> Result<()> {
        if actions.len() != self.envs.len() {
            bail!("vector env of {} copies got {} actions", self.envs.len(), actions.len());
        }
        for (i, e) in self.envs.iter_mut().enumerate() {
            self.final_obs[i] = None;
            if self.mode == Autoreset::NextStep && self.pending[i] {
                let (o, info) = e.reset(None);
                self.obs[i] = o;
                self.infos[i] = info;
                self.rewards[i] = 0.0;
                self.terminated[i] = false;
                self.truncated[i] = false;
                self.pending[i] = false;
                continue;
            }
            let s = e.step(actions[i])?;
            self.rewards[i] = s.reward;
            self.terminated[i] = s.terminated;
            self.truncated[i] = s.truncated;
            if s.done() && self.mode == Autoreset::SameStep {
                self.final_obs[i] = Some(s.obs);
                self.final_info[i] = s.info;
                let (o, info) = e.reset(None);
                self.obs[i] = o;
                self.infos[i] = info;
            } else {
                self.obs[i] = s.obs;
                self.infos[i] = s.info;
                self.pending[i] = s.done();
            }
        }
        Ok(())
    }

    pub fn obs(&self) -> &[E::Obs] {
        &self.obs
    }
    pub fn rewards(&self) -> &[f64] {
        &self.rewards
    }
    pub fn terminated(&self) -> &[bool] {
        &self.terminated
    }
    pub fn truncated(&self) -> &[bool] {
        &self.truncated
    }
    pub fn infos(&self) -> &[Info] {
        &self.infos
    }
    /// SameStep mode: the last observation of the episode copy `i` ended on this step.
    pub fn final_obs(&self, i: usize) -> Option<E::Obs> {
        self.final_obs[i]
    }
    pub fn final_info(&self, i: usize) -> Option<Info> {
        self.final_obs[i].map(|_| self.final_info[i])
    }
}

/// N registry envs stepped together; observations in one `N × obs_dim` matrix.
pub struct DynVecEnv {
    envs: Vec<Box<dyn DynEnv>>,
    mode: Autoreset,
    dim: usize,
    obs: Vec<f32>,
    final_obs: Vec<f32>,
    has_final: Vec<bool>,
    rewards: Vec<f64>,
    terminated: Vec<bool>,
    truncated: Vec<bool>,
    infos: Vec<Info>,
    states: Vec<Option<usize>>,
    pending: Vec<bool>,
}

impl DynVecEnv {
    pub fn new(n: usize, mode: Autoreset, mut make: impl FnMut(usize) -> Result<Box<dyn DynEnv>>) -> Result<Self> {
        if n == 0 {
            bail!("a vector env needs at least one copy");
        }
        let envs = (0..n).map(&mut make).collect::<Result<Vec<_>>>()?;
        let dim = envs[0].obs_dim();
        if envs.iter().any(|e| e.obs_dim() != dim) {
            bail!("vector env copies have different observation sizes");
        }
        Ok(DynVecEnv {
            envs,
            mode,
            dim,
            obs: vec![0.0; n * dim],
            final_obs: vec![0.0; n * dim],
            has_final: vec![false; n],
            rewards: vec![0.0; n],
            terminated: vec![false; n],
            truncated: vec![false; n],
            infos: vec![Info::default(); n],
            states: vec![None; n],
            pending: vec![false; n],
        })
    }

    pub fn num_envs(&self) -> usize {
        self.envs.len()
    }
    pub fn obs_dim(&self) -> usize {
        self.dim
    }
    pub fn env(&self, i: usize) -> &dyn DynEnv {
        self.envs[i].as_ref()
    }

    /// Reset every copy; copy `i` gets `seed + i`. Returns the observation matrix.
    pub fn reset(&mut self, seed: Option<u64>) -> Result<&[f32]> {
        let d = self.dim;
        for (i, e) in self.envs.iter_mut().enumerate() {
            let (info, s) = e.reset(seed.map(|s| s.wrapping_add(i as u64)), &mut self.obs[i * d..(i + 1) * d])?;
            self.infos[i] = info;
            self.states[i] = s;
            self.pending[i] = false;
            self.has_final[i] = false;
        }
        Ok(&self.obs)
    }

    pub fn step(&mut self, actions: &[usize]) -> Result<()> {
        if actions.len() != self.envs.len() {
            bail!("vector env of {} copies got {} actions", self.envs.len(), actions.len());
        }
        let d = self.dim;
        for (i, e) in self.envs.iter_mut().enumerate() {
            self.has_final[i] = false;
            let row = &mut self.obs[i * d..(i + 1) * d];
            if self.mode == Autoreset::NextStep && self.pending[i] {
                let (info, s) = e.reset(None, row)?;
                self.infos[i] = info;
                self.states[i] = s;
                self.rewards[i] = 0.0;
                self.terminated[i] = false;
                self.truncated[i] = false;
                self.pending[i] = false;
                continue;
            }
            let st = e.step(actions[i], row)?;
            self.rewards[i] = st.reward;
            self.terminated[i] = st.terminated;
            self.truncated[i] = st.truncated;
            self.infos[i] = st.info;
            self.states[i] = st.state;
            if st.done() && self.mode == Autoreset::SameStep {
                self.final_obs[i * d..(i + 1) * d].copy_from_slice(row);
                self.has_final[i] = true;
                let (info, s) = e.reset(None, row)?;
                self.states[i] = s;
                let _ = info;
            } else {
                self.pending[i] = st.done();
            }
        }
        Ok(())
    }

    pub fn obs(&self) -> &[f32] {
        &self.obs
    }
    pub fn rewards(&self) -> &[f64] {
        &self.rewards
    }
    pub fn terminated(&self) -> &[bool] {
        &self.terminated
    }
    pub fn truncated(&self) -> &[bool] {
        &self.truncated
    }
    /// Infos of this step (SameStep: the ending step's, i.e. Gymnasium's `final_info`).
    pub fn infos(&self) -> &[Info] {
        &self.infos
    }
    pub fn states(&self) -> &[Option<usize>] {
        &self.states
    }
    /// SameStep mode: copy `i`'s last observation if its episode ended on this step.
    pub fn final_obs(&self, i: usize) -> Option<&[f32]> {
        self.has_final[i].then(|| &self.final_obs[i * self.dim..(i + 1) * self.dim])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cartpole::CartPole;
    use crate::wrappers::TimeLimit;

    #[test]
    fn next_step_autoreset_and_seeding() {
        let mut v = VecEnv::new(3, Autoreset::NextStep, |_| TimeLimit::new(CartPole::default(), 500)).unwrap();
        let obs = v.reset(Some(10)).to_vec();
        // Copy i was seeded with 10 + i.
        for (i, o) in obs.iter().enumerate() {
            let mut e = CartPole::default();
            assert_eq!(e.reset(Some(10 + i as u64)).0, *o);
        }
        let mut ended = None;
        for t in 0..200 {
            v.step(&[1, 1, 1]).unwrap();
            if let Some(i) = (0..3).find(|&i| v.terminated()[i]) {
                ended = Some((t, i));
                break;
            }
        }
        let (_, i) = ended.expect("pushing right always falls");
        let last = v.obs()[i];
        v.step(&[1, 1, 1]).unwrap();
        assert_eq!(v.rewards()[i], 0.0);
        assert!(!v.terminated()[i]);
        assert_ne!(v.obs()[i], last);
        assert!(v.obs()[i].iter().all(|x| x.abs() <= 0.05));
        assert!(v.step(&[1]).is_err());
    }

    #[test]
    fn same_step_and_dyn() {
        let mut v = DynVecEnv::new(2, Autoreset::SameStep, |_| crate::make("CartPole-v1", &[])).unwrap();
        v.reset(Some(0)).unwrap();
        let mut seen = false;
        for _ in 0..100 {
            v.step(&[0, 0]).unwrap();
            if v.terminated()[0] {
                let f = v.final_obs(0).unwrap();
                assert!(f[0].abs() > 2.4 || f[2].abs() > 0.2094);
                assert!(v.obs()[..4].iter().all(|x| x.abs() <= 0.05));
                seen = true;
                break;
            }
        }
        assert!(seen);
    }
}
