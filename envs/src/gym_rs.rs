//! Interop with the [`gymnasium-rs`](https://crates.io/crates/gymnasium-rs) crate (0.1.1),
//! behind the cargo feature `gymnasium-rs` (off by default).
//!
//! gymnasium-rs's API, as 0.1.1 has it (`gymnasium_rs::core`): a generic trait
//! `Env<Obs, Action>` with `observation_space()`, `action_space()` (its own two-variant `Space`:
//! `Discrete(i32)` and `Box { low: Array1<f32>, high: Array1<f32> }`),
//! `reset(seed: Option<i32>, options: Options) -> (Obs, Info)`,
//! `step(action) -> (Obs, Reward, terminated, truncated, Info)` with `Reward = f32` and
//! `Info = Options = HashMap<String, serde_json::Value>`, `render() -> Option<Array3<u8>>` and
//! `close()`. It has one env, `envs::cartpole::CartPole: Env<Array1<f32>, i32>`, and one
//! wrapper, `wrappers::timelimit::TimeLimitWrapper` (over `&mut dyn Env`). The trait has no
//! error channel, so the adapter below panics where wick would return an error.
//!
//! Two adapters:
//!
//! - [`ToGymRs`]: any wick env (typed [`Env`] or a [`DynEnv`] from [`crate::make`]) as a
//!   `gymnasium_rs::core::Env<Array1<f32>, i32>`. The observation is the env's flat `f32`
//!   observation ([`DynEnv::obs_dim`] long: a tabular env gives `[state]`, Blackjack
//!   `[sum, dealer, usable_ace]`); spaces map as `Discrete(n)` → `Discrete(n)`, `Box` → `Box`,
//!   and a `Tuple` (or a `Discrete` not starting at 0) → the `Box` of its flattened bounds,
//!   which gymnasium-rs's `Space` can express. The reward is cast to `f32`; `info` gets
//!   `"prob"` and `"episode": {"r", "l"}` where wick sets them. Panics (the trait has no
//!   `Result`): a negative seed (Gymnasium refuses those too), non-empty reset options (no wick
//!   env takes any through this path), an action outside the action space, a step before
//!   reset.
//! - [`FromGymRs`]: a gymnasium-rs env with a `Discrete` action space and a fixed observation
//!   length `N` as a typed wick [`Env`] (`Obs = [f32; N]`), so wick's wrappers
//!   ([`TimeLimit`], [`crate::wrappers::EpisodeStatistics`]) and, through [`Dyn`], every
//!   [`DynEnv`] agent can drive it. It follows wick's API rather than the inner env's habits:
//!   an action outside the space and a step before reset are errors; the first reset, if
//!   unseeded, seeds the inner env with 0 (a wick env never seeded is reproducible; gymnasium-rs's
//!   CartPole would draw OS entropy). wick's `u64` seeds go to gymnasium-rs's `i32` as the low 32
//!   bits of `seed ^ (seed >> 32)` (identity, as a bit pattern, below 2³²).
//!
//! [`cartpole`] and [`make`] give gymnasium-rs's CartPole wrapped as wick registers
//! `CartPole-v1` (500-step [`TimeLimit`]), under the id `gymnasium-rs/CartPole`. It is not
//! Gymnasium's CartPole-v1 (that is [`crate::cartpole::CartPole`]): gymnasium-rs 0.1.1 computes
//! in `f32`, uses a total mass of 1.0 (Gymnasium 1.1) and the half-length 0.5 where Gymnasium's
//! `xacc` has `polemass_length` 0.05, gives reward 0 (not 1) on the terminating step, bounds
//! its observation space with `f32::MIN`/`MAX` rather than ±inf and θ with 12° rather than 24°.
//!
//! ```
//! use gymnasium_rs::core::Env as _;
//! use wick_envs::gym_rs::{self, ToGymRs};
//! use wick_envs::cartpole::CartPole;
//!
//! // A wick env, driven through gymnasium-rs's trait.
//! let mut env = ToGymRs::new(CartPole::default());
//! let (obs, _info) = env.reset_seed(0);
//! let (obs, reward, terminated, truncated, _info) = env.step((obs[2] > 0.0) as i32);
//! assert_eq!((obs.len(), reward, terminated, truncated), (4, 1.0, false, false));
//!
//! // gymnasium-rs's CartPole, driven through wick's dynamic API.
//! let mut env = gym_rs::make("gymnasium-rs/CartPole").unwrap();
//! let mut obs = vec![0.0f32; env.obs_dim()];
//! env.reset(Some(0), &mut obs).unwrap();
//! let step = env.step(1, &mut obs).unwrap();
//! assert!(!step.done());
//! ```

use std::collections::HashMap;

use gymnasium_rs::core as gym;
use ndarray::{Array1, Array3};
use serde_json::{json, Value};
use wick_core::{bail, Result};

use crate::env::{bad_action, no_reset, Dyn, DynEnv, Env, EpisodeStats, Info, Step};
use crate::space::Space;
use crate::wrappers::TimeLimit;

pub use gymnasium_rs;

/// The observation type of gymnasium-rs's envs (and of [`ToGymRs`]).
pub type GymObs = Array1<f32>;
/// The action type of gymnasium-rs's discrete envs (and of [`ToGymRs`]).
pub type GymAction = i32;

/// gymnasium-rs's `Space` for a wick space: `Discrete(n)` stays; a `Box` keeps its bounds
/// (flattened); a `Tuple`, or a `Discrete` with a non-zero start, becomes the `Box` of its
/// flattened bounds (`Discrete(n, start)` → `[start, start + n - 1]`).
pub fn to_gym_space(space: &Space) -> gym::Space {
    match space {
        Space::Discrete { n, start: 0 } => gym::Space::Discrete(i32::try_from(*n).unwrap_or(i32::MAX)),
        _ => {
            let (mut low, mut high) = (Vec::new(), Vec::new());
            flat_bounds(space, &mut low, &mut high);
            gym::Space::Box { low: Array1::from(low), high: Array1::from(high) }
        }
    }
}

fn flat_bounds(space: &Space, low: &mut Vec<f32>, high: &mut Vec<f32>) {
    match space {
        Space::Discrete { n, start } => {
            low.push(*start as f32);
            high.push((*start + *n as i64 - 1) as f32);
        }
        Space::Box { low: l, high: h, .. } => {
            low.extend_from_slice(l);
            high.extend_from_slice(h);
        }
        Space::Tuple(v) => v.iter().for_each(|s| flat_bounds(s, low, high)),
    }
}

/// wick's `Space` for a gymnasium-rs space (`Discrete(n)` with `n < 0` is read as 0).
pub fn from_gym_space(space: &gym::Space) -> Space {
    match space {
        gym::Space::Discrete(n) => Space::discrete((*n).max(0) as usize),
        gym::Space::Box { low, high } => Space::box1(low.to_vec(), high.to_vec()),
    }
}

/// wick's `Info` as gymnasium-rs's `info` dict: `"prob"`, `"episode": {"r", "l"}`.
pub fn to_gym_info(info: &Info) -> gym::Info {
    let mut d = HashMap::new();
    if let Some(p) = info.prob {
        d.insert("prob".to_string(), json!(p));
    }
    if let Some(e) = info.episode {
        d.insert("episode".to_string(), json!({ "r": e.ret, "l": e.len }));
    }
    d
}

/// The keys of a gymnasium-rs `info` dict that wick's `Info` has (`"prob"`,
/// `"episode": {"r", "l"}`); the others are dropped.
pub fn from_gym_info(info: &gym::Info) -> Info {
    let prob = info.get("prob").and_then(Value::as_f64);
    let episode = info.get("episode").and_then(|e| {
        Some(EpisodeStats { ret: e.get("r")?.as_f64()?, len: e.get("l")?.as_u64()? })
    });
    Info { prob, episode }
}

/// A wick env as a `gymnasium_rs::core::Env<Array1<f32>, i32>` (see the module doc).
pub struct ToGymRs {
    env: Box<dyn DynEnv>,
    obs: Vec<f32>,
}

impl ToGymRs {
    /// A typed wick env (wrap it in [`TimeLimit`] first for a time limit, as [`crate::make`]
    /// does).
    pub fn new<E: Env + 'static>(env: E) -> ToGymRs {
        ToGymRs::from_dyn(Box::new(Dyn::new(env)))
    }

    /// A dynamic wick env, e.g. from [`crate::make`].
    pub fn from_dyn(env: Box<dyn DynEnv>) -> ToGymRs {
        let obs = vec![0.0; env.obs_dim()];
        ToGymRs { env, obs }
    }

    /// `crate::make(id, options)` wrapped: a registered env by Gymnasium id, as `gym.make`.
    pub fn make(id: &str, options: &[(&str, &str)]) -> Result<ToGymRs> {
        Ok(ToGymRs::from_dyn(crate::make(id, options)?))
    }

    pub fn inner(&self) -> &dyn DynEnv {
        &*self.env
    }
    pub fn inner_mut(&mut self) -> &mut dyn DynEnv {
        &mut *self.env
    }
    pub fn into_inner(self) -> Box<dyn DynEnv> {
        self.env
    }
}

impl gym::Env<GymObs, GymAction> for ToGymRs {
    fn observation_space(&self) -> gym::Space {
        to_gym_space(&self.env.observation_space())
    }

    fn action_space(&self) -> gym::Space {
        to_gym_space(&self.env.action_space())
    }

    /// Panics on a negative seed or on non-empty options.
    fn reset(&mut self, seed: Option<i32>, options: gym::Options) -> (GymObs, gym::Info) {
        let id = self.env.id();
        if let Some(s) = seed {
            assert!(s >= 0, "{id}: seed {s} is negative; seeds must be non-negative integers");
        }
        if !options.is_empty() {
            let mut keys: Vec<&str> = options.keys().map(String::as_str).collect();
            keys.sort_unstable();
            panic!("{id}: reset options {keys:?} are not supported through gymnasium-rs (wick envs take none here)");
        }
        let (info, _state) = self.env.reset(seed.map(|s| s as u64), &mut self.obs).unwrap_or_else(|e| panic!("{e}"));
        (Array1::from(self.obs.clone()), to_gym_info(&info))
    }

    /// Panics on an action outside the action space or a step before reset.
    fn step(&mut self, action: GymAction) -> (GymObs, gym::Reward, bool, bool, gym::Info) {
        let Ok(a) = usize::try_from(action) else {
            let (id, n) = (self.env.id(), self.env.num_actions());
            panic!("{id}: action {action} is outside the action space Discrete({n})");
        };
        let s = self.env.step(a, &mut self.obs).unwrap_or_else(|e| panic!("{e}"));
        (Array1::from(self.obs.clone()), s.reward as f32, s.terminated, s.truncated, to_gym_info(&s.info))
    }

    /// The `rgb_array` render (H×W×3), where the env has one.
    fn render(&self) -> Option<Array3<u8>> {
        let im = self.env.render_rgb()?;
        Array3::from_shape_vec((im.height, im.width, 3), im.data).ok()
    }

    fn close(&mut self) {}
}

/// A gymnasium-rs env with discrete actions and `N`-long observations as a typed wick [`Env`]
/// (see the module doc).
pub struct FromGymRs<G, const N: usize> {
    env: G,
    id: &'static str,
    num_actions: usize,
    obs_space: Space,
    reset_done: bool,
    seeded: bool,
}

impl<G: gym::Env<GymObs, GymAction>, const N: usize> FromGymRs<G, N> {
    /// Wrap `env` under the id `id`. Errors: an action space that is not `Discrete(n)` with
    /// `n > 0`, an observation space whose flat length is not `N`.
    pub fn new(env: G, id: &'static str) -> Result<Self> {
        let num_actions = match env.action_space() {
            gym::Space::Discrete(n) if n > 0 => n as usize,
            other => bail!("{id}: the action space is {other:?}; wick envs need Discrete(n) with n > 0"),
        };
        let obs_space = from_gym_space(&env.observation_space());
        if obs_space.flat_len() != N {
            bail!("{id}: the observation space {obs_space} has {} values, not {N}", obs_space.flat_len());
        }
        Ok(FromGymRs { env, id, num_actions, obs_space, reset_done: false, seeded: false })
    }

    pub fn inner(&self) -> &G {
        &self.env
    }
    pub fn inner_mut(&mut self) -> &mut G {
        &mut self.env
    }
    pub fn into_inner(self) -> G {
        self.env
    }

    fn obs(&self, o: &GymObs) -> Result<[f32; N]> {
        match o.as_slice().and_then(|s| <[f32; N]>::try_from(s).ok()) {
            Some(a) => Ok(a),
            None if o.len() == N => Ok(std::array::from_fn(|i| o[i])),
            None => bail!("{}: the inner env returned an observation of length {}, not {N}", self.id, o.len()),
        }
    }
}

/// wick's `u64` seed as gymnasium-rs's `i32`: the low 32 bits of `seed ^ (seed >> 32)`.
pub fn seed_to_i32(seed: u64) -> i32 {
    (seed ^ (seed >> 32)) as u32 as i32
}

impl<G: gym::Env<GymObs, GymAction> + Send, const N: usize> Env for FromGymRs<G, N> {
    type Obs = [f32; N];

    fn id(&self) -> &'static str {
        self.id
    }
    fn observation_space(&self) -> Space {
        self.obs_space.clone()
    }
    fn num_actions(&self) -> usize {
        self.num_actions
    }
    fn obs_dim(&self) -> usize {
        N
    }

    /// Panics if the inner env returns an observation of the wrong length.
    fn reset(&mut self, seed: Option<u64>) -> ([f32; N], Info) {
        let seed = match seed {
            Some(s) => Some(s),
            None if !self.seeded => Some(0),
            None => None,
        };
        self.seeded = true;
        let (o, info) = self.env.reset(seed.map(seed_to_i32), HashMap::new());
        self.reset_done = true;
        (self.obs(&o).unwrap_or_else(|e| panic!("{e}")), from_gym_info(&info))
    }

    fn step(&mut self, action: usize) -> Result<Step<[f32; N]>> {
        if action >= self.num_actions {
            return Err(bad_action(self.id, action, self.num_actions));
        }
        if !self.reset_done {
            return Err(no_reset(self.id));
        }
        let (o, reward, terminated, truncated, info) = self.env.step(action as GymAction);
        Ok(Step { obs: self.obs(&o)?, reward: reward as f64, terminated, truncated, info: from_gym_info(&info) })
    }

    fn render_rgb(&self) -> Option<crate::render::Rgb> {
        None // gymnasium-rs 0.1.1's CartPole::render is `unimplemented!()`.
    }
}

/// gymnasium-rs's CartPole as a typed wick env.
pub type GymRsCartPole = TimeLimit<FromGymRs<gymnasium_rs::envs::cartpole::CartPole, 4>>;

/// The ids [`make`] knows.
pub const IDS: &[&str] = &["gymnasium-rs/CartPole"];

/// gymnasium-rs's CartPole with a 500-step [`TimeLimit`], as wick registers `CartPole-v1`.
pub fn cartpole() -> GymRsCartPole {
    let env = FromGymRs::new(gymnasium_rs::envs::cartpole::CartPole::new(), "gymnasium-rs/CartPole")
        .expect("gymnasium-rs's CartPole has Discrete(2) actions and 4 observations");
    TimeLimit::new(env, 500)
}

/// A gymnasium-rs env as a wick [`DynEnv`] (what generic agents drive), by id ([`IDS`]).
pub fn make(id: &str) -> Result<Box<dyn DynEnv>> {
    match id {
        "gymnasium-rs/CartPole" => Ok(Box::new(Dyn::new(cartpole()))),
        _ => bail!("unknown gymnasium-rs env '{id}'; known: {}", IDS.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cartpole::CartPole;
    use crate::wrappers::EpisodeStatistics;
    use gym::Env as _;
    use gymnasium_rs::wrappers::timelimit::TimeLimitWrapper;
    use wick_core::rng::Rng;

    /// A fixed policy: balance (push toward the pole's fall) with probability `p`, else a coin
    /// flip from `rng` (p = 0.9 reaches the 500-step limit; 0.5 lets the pole fall).
    fn policy(obs: &[f32], rng: &mut Rng, p: f64) -> usize {
        if rng.uniform() < p {
            (obs[2] + 0.5 * obs[3] > 0.0) as usize
        } else {
            rng.below(2) as usize
        }
    }

    #[test]
    fn wick_cartpole_as_gym_rs_steps_identically() {
        let mut wick = TimeLimit::new(CartPole::default(), 500);
        let mut gym = ToGymRs::new(TimeLimit::new(CartPole::default(), 500));
        let mut made = ToGymRs::make("CartPole-v1", &[]).unwrap();
        assert_eq!(gym.action_space(), gym::Space::Discrete(2));
        let gym_space = gym.observation_space();
        assert_eq!(gym_space, made.observation_space());
        match gym_space {
            gym::Space::Box { low, high } => {
                let wick_space = wick.observation_space();
                assert_eq!(from_gym_space(&gym::Space::Box { low: low.clone(), high: high.clone() }), wick_space);
                assert_eq!(high.to_vec(), vec![4.8, f32::INFINITY, (crate::cartpole::THETA_THRESHOLD * 2.0) as f32, f32::INFINITY]);
                assert_eq!(low, -high);
            }
            other => panic!("{other:?}"),
        }
        let (mut pol_a, mut pol_b) = (Rng::stream(1, "policy"), Rng::stream(1, "policy"));
        let (mut terminations, mut truncations, mut steps) = (0, 0, 0);
        for episode in 0..12u64 {
            // Seeded resets, then unseeded ones that continue the stream.
            let seed = (episode < 6).then_some(episode * 1000);
            let (ow, _) = wick.reset(seed);
            let (og, ig) = gym.reset(seed.map(|s| s as i32), HashMap::new());
            let (om, _) = made.reset(seed.map(|s| s as i32), HashMap::new());
            assert_eq!(og.to_vec(), ow.to_vec());
            assert_eq!(om, og);
            assert!(ig.is_empty());
            let (mut obs, mut obs_g) = (ow, og);
            loop {
                let p = if episode % 2 == 0 { 0.9 } else { 0.5 };
                let (a, b) = (policy(&obs, &mut pol_a, p), policy(obs_g.as_slice().unwrap(), &mut pol_b, p));
                assert_eq!(a, b);
                let sw = wick.step(a).unwrap();
                let (og2, r, term, trunc, info) = gym.step(a as i32);
                let (om2, rm, termm, truncm, _) = made.step(a as i32);
                assert_eq!(og2.to_vec(), sw.obs.to_vec(), "episode {episode}");
                assert_eq!((r as f64, term, trunc), (sw.reward, sw.terminated, sw.truncated));
                assert_eq!((&om2, rm, termm, truncm), (&og2, r, term, trunc));
                assert!(info.is_empty());
                steps += 1;
                obs = sw.obs;
                obs_g = og2;
                if sw.done() {
                    terminations += sw.terminated as u32;
                    truncations += sw.truncated as u32;
                    break;
                }
            }
        }
        assert!(terminations > 0 && truncations > 0, "{terminations} terminated, {truncations} truncated");
        assert!(steps > 1000);

        // Usable where gymnasium-rs wants `&mut dyn Env` (its own TimeLimitWrapper).
        let mut raw = ToGymRs::new(CartPole::default());
        let mut limited = TimeLimitWrapper::new(&mut raw, 3);
        let (o, _) = limited.reset_seed(5);
        assert_eq!(o.to_vec(), CartPole::default().reset(Some(5)).0.to_vec());
        let dones: Vec<(bool, bool)> = (0..3)
            .map(|i| {
                let (_, _, term, trunc, _) = limited.step(i % 2);
                (term, trunc)
            })
            .collect();
        assert_eq!(dones, vec![(false, false), (false, false), (false, true)]);
    }

    #[test]
    fn every_registered_env_is_a_gym_rs_env() {
        let mut rng = Rng::stream(0, "actions");
        for (id, _) in crate::list() {
            let mut env = ToGymRs::make(id, &[]).unwrap();
            let space = env.inner().observation_space();
            let n = match env.action_space() {
                gym::Space::Discrete(n) => n,
                other => panic!("{id}: {other:?}"),
            };
            assert_eq!(n as usize, env.inner().num_actions());
            match (env.observation_space(), &space) {
                (gym::Space::Discrete(k), Space::Discrete { n, start: 0 }) => assert_eq!(k as usize, *n),
                (gym::Space::Box { low, high }, _) => {
                    assert_eq!((low.len(), high.len()), (space.flat_len(), space.flat_len()), "{id}");
                }
                (other, _) => panic!("{id}: {other:?} for {space}"),
            }
            let (mut obs, _) = env.reset_seed(3);
            for _ in 0..1000 {
                assert_eq!(obs.len(), space.flat_len(), "{id}");
                let flat: Vec<f64> = obs.iter().map(|&v| v as f64).collect();
                assert!(space.contains_flat(&flat), "{id}: {obs} not in {space}");
                let (o, _, term, trunc, info) = env.step(rng.below(n as u64) as i32);
                if id.starts_with("FrozenLake") || id.starts_with("CliffWalking") {
                    assert!(info.get("prob").and_then(Value::as_f64).is_some(), "{id}: {info:?}");
                }
                obs = o;
                if term || trunc {
                    break;
                }
            }
            if let Some(im) = env.render() {
                let rgb = env.inner().render_rgb().unwrap();
                assert_eq!(im.shape(), &[rgb.height, rgb.width, 3]);
                assert_eq!(im.as_slice().unwrap(), &rgb.data[..]);
            }
        }
        // Blackjack's Tuple observation becomes the Box of its bounds.
        let bj = ToGymRs::make("Blackjack-v1", &[]).unwrap();
        assert_eq!(
            bj.observation_space(),
            gym::Space::Box { low: Array1::from(vec![0.0, 0.0, 0.0]), high: Array1::from(vec![31.0, 10.0, 1.0]) }
        );
    }

    #[test]
    fn to_gym_rs_panics_where_wick_errs() {
        use std::panic::{catch_unwind, AssertUnwindSafe};
        let msg = |f: &mut dyn FnMut()| -> String {
            let e = catch_unwind(AssertUnwindSafe(f)).unwrap_err();
            e.downcast_ref::<String>().cloned().unwrap_or_default()
        };
        let mut env = ToGymRs::new(CartPole::default());
        assert!(msg(&mut || {
            env.step(0);
        })
        .contains("before reset"));
        env.reset_seed(0);
        assert!(msg(&mut || {
            env.step(2);
        })
        .contains("action 2 is outside the action space Discrete(2)"));
        assert!(msg(&mut || {
            env.step(-1);
        })
        .contains("action -1 is outside"));
        assert!(msg(&mut || {
            env.reset_seed(-1);
        })
        .contains("negative"));
        assert!(msg(&mut || {
            env.reset_options(HashMap::from([("low".to_string(), json!(-0.1))]));
        })
        .contains("reset options [\"low\"]"));
    }

    #[test]
    fn gym_rs_cartpole_as_wick_env() {
        // What agents drive: a Box<dyn DynEnv>.
        let mut env = make("gymnasium-rs/CartPole").unwrap();
        assert_eq!((env.id(), env.obs_dim(), env.num_actions()), ("gymnasium-rs/CartPole", 4, 2));
        assert_eq!(env.max_episode_steps(), Some(500));
        assert_eq!(env.action_space(), Space::discrete(2));
        assert!(matches!(env.observation_space(), Space::Box { ref shape, .. } if shape == &vec![4]));
        assert!(make("gymnasium-rs/Nope").err().unwrap().to_string().contains("known: gymnasium-rs/CartPole"));

        let mut obs = vec![0f32; 4];
        assert!(env.step(0, &mut obs).unwrap_err().to_string().contains("before reset"));
        assert!(env.reset(Some(0), &mut [0f32; 3]).is_err()); // wrong buffer length
        env.reset(Some(0), &mut obs).unwrap();
        assert!(obs.iter().all(|v| v.abs() <= 0.05), "{obs:?}");
        assert!(env.step(2, &mut obs).unwrap_err().to_string().contains("outside the action space"));

        // A fixed policy, always push right: the pole falls within a few dozen steps.
        let mut steps = 0;
        loop {
            let s = env.step(1, &mut obs).unwrap();
            steps += 1;
            assert_eq!(obs.len(), 4);
            assert!(!s.truncated && s.state.is_none());
            if s.terminated {
                assert_eq!(s.reward, 0.0); // gymnasium-rs: 0 on the terminating step
                assert!(obs[0].abs() > 2.4 || obs[2].abs() > 12f32.to_radians());
                break;
            }
            assert_eq!(s.reward, 1.0);
            assert!(steps < 100);
        }

        // The balancing policy: every episode ends terminated or, at exactly 500, truncated.
        let mut rng = Rng::stream(2, "policy");
        let mut truncations = 0;
        for ep in 0..5 {
            env.reset(Some(ep), &mut obs).unwrap();
            let mut t = 0;
            loop {
                let s = env.step(policy(&obs, &mut rng, 0.9), &mut obs).unwrap();
                t += 1;
                assert_eq!(s.truncated, t == 500);
                if s.done() {
                    truncations += s.truncated as u32;
                    break;
                }
            }
        }
        assert!(truncations > 0);

        // Transparent: the same trajectory as gymnasium-rs's CartPole driven directly, and
        // seeds behave as wick's (same seed, same start; unseeded first reset = seed 0).
        let mut direct = gymnasium_rs::envs::cartpole::CartPole::new();
        let mut typed = EpisodeStatistics::new(cartpole());
        let (o, _) = typed.reset(None);
        assert_eq!(o.to_vec(), direct.reset_seed(0).0.to_vec());
        let (o, _) = typed.reset(Some(42));
        assert_eq!(o.to_vec(), direct.reset_seed(42).0.to_vec());
        let mut ret = 0.0;
        for t in 1.. {
            let a = (t % 3 == 0) as usize;
            let s = typed.step(a).unwrap();
            let (od, rd, termd, truncd, _) = direct.step(a as i32);
            assert_eq!((s.obs.to_vec(), s.reward, s.terminated, s.truncated), (od.to_vec(), rd as f64, termd, truncd));
            ret += s.reward;
            if s.terminated {
                assert_eq!(s.info.episode, Some(EpisodeStats { ret, len: t }));
                break;
            }
        }
        let (big, _) = typed.reset(Some(u64::MAX - 7));
        assert_eq!(big.to_vec(), direct.reset_seed(seed_to_i32(u64::MAX - 7)).0.to_vec());
    }

    #[test]
    fn round_trip_through_both_adapters() {
        // wick -> gymnasium-rs -> wick is the identity on trajectories and on info["prob"].
        let mut wick = crate::make("FrozenLake-v1", &[]).unwrap();
        let back: FromGymRs<ToGymRs, 1> = FromGymRs::new(ToGymRs::make("FrozenLake-v1", &[]).unwrap(), "FrozenLake-v1").unwrap();
        assert_eq!(back.observation_space(), Space::discrete(16));
        let mut back = Dyn::new(back);
        let (mut a, mut b) = ([0f32; 1], [0f32; 1]);
        let mut rng = Rng::stream(0, "a");
        for ep in 0..20 {
            assert_eq!(wick.reset(Some(ep), &mut a).unwrap().0, back.reset(Some(ep), &mut b).unwrap().0);
            assert_eq!(a, b);
            loop {
                let act = rng.below(4) as usize;
                let (sa, sb) = (wick.step(act, &mut a).unwrap(), back.step(act, &mut b).unwrap());
                assert_eq!(a, b);
                assert!(sa.info.prob.is_some());
                assert_eq!((sa.reward, sa.terminated, sa.truncated, sa.info), (sb.reward, sb.terminated, sb.truncated, sb.info));
                if sa.done() {
                    break;
                }
            }
        }
        // A space that doesn't fit N is refused.
        let e = FromGymRs::<_, 4>::new(ToGymRs::make("FrozenLake-v1", &[]).unwrap(), "FrozenLake-v1").err().unwrap();
        assert!(e.to_string().contains("has 1 values, not 4"), "{e}");
    }
}
