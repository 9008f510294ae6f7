//! wick-envs: Gymnasium-identical environments in native Rust.
//!
//! `Blackjack-v1`, `FrozenLake-v1`, `FrozenLake8x8-v1`, `CliffWalking-v1`,
//! `CliffWalkingSlippery-v1`, `Taxi-v4`, `CartPole-v1`, `MountainCar-v0`, `Acrobot-v1` and
//! Zhao's `GridWorld`, with Gymnasium 1.x's API
//! ([`Env`]: `reset(seed)`, `step(action)` with `terminated` and `truncated` apart), spaces,
//! ids, options and rules; exact models for the tabular ones ([`Model`]); wrappers (time
//! limit, episode statistics, one-hot); vectorised stepping with auto-reset; a registry
//! ([`make`], [`list`]); text and RGB renders.
//!
//! ```
//! use wick_envs::{make, Env};
//! use wick_envs::cartpole::CartPole;
//! use wick_envs::wrappers::TimeLimit;
//!
//! // Typed and allocation-free: what a hot loop uses.
//! let mut env = TimeLimit::new(CartPole::default(), 500);
//! let (mut obs, _info) = env.reset(Some(0));
//! loop {
//!     let s = env.step((obs[2] > 0.0) as usize).unwrap();
//!     obs = s.obs;
//!     if s.terminated || s.truncated { break; }
//! }
//!
//! // Dynamic, by Gymnasium id and options: what the CLI and generic agents use.
//! let mut env = make("FrozenLake-v1", &[("map_name", "8x8"), ("is_slippery", "false")]).unwrap();
//! let mut obs = vec![0.0f32; env.obs_dim()];
//! let (_info, state) = env.reset(Some(0), &mut obs).unwrap();
//! assert_eq!(state, Some(0));
//! let step = env.step(2, &mut obs).unwrap(); // right
//! assert_eq!((step.state, step.reward), (Some(1), 0.0));
//! // The exact model (Gymnasium's `P`) and value iteration over it.
//! let (v, _policy) = env.model().unwrap().value_iteration(0.99, 1e-10);
//! assert!(v[0] > 0.0);
//! ```

pub mod acrobot;
pub mod blackjack;
pub mod cartpole;
pub mod cliff_walking;
pub mod env;
pub mod frozen_lake;
pub mod grid_world;
#[cfg(feature = "gymnasium-rs")]
pub mod gym_rs;
pub mod mountain_car;
pub mod registry;
pub mod render;
pub mod space;
pub mod taxi;
pub mod vector;
pub mod wrappers;

pub use env::{env_rng, DynEnv, DynStep, Env, EpisodeStats, Info, Model, Observation, Step, Transition};
pub use registry::{list, make, make_str, parse_options};
pub use render::Rgb;
pub use space::Space;
