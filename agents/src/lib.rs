//! wick-agents: tabular Monte Carlo agents over wick's environments.
//!
//! - [`mc_prediction`]: first-/every-visit MC prediction of `v_π` and `q_π` (S&B §5.1).
//! - [`mc_basic`]: MC Basic (Zhao Alg. 5.1).
//! - [`mc_exploring_starts`]: Monte Carlo ES (S&B §5.3, Zhao Alg. 5.2).
//! - [`mc_epsilon_greedy`]: on-policy MC control with ε-greedy policies (S&B §5.4, Zhao Alg. 5.3).
//! - [`reinforce`]: REINFORCE, Monte Carlo policy gradient with an optional learned baseline
//!   (S&B §13.3–13.4), MLP policies in Candle; its trainer in [`reinforce_train`].
//!
//! Shared pieces in [`tabular`]. Every algorithm estimates action values as sample means of
//! returns, incrementally: `q ← q + (g − q)/n` ([`tabular::QTable::update`]).

pub mod mc_basic;
pub mod mc_epsilon_greedy;
pub mod mc_exploring_starts;
pub mod mc_prediction;
pub mod reinforce;
pub mod reinforce_train;
pub mod tabular;

pub use mc_basic::{mc_basic, McBasicConfig, McBasicResult};
pub use mc_epsilon_greedy::{mc_epsilon_greedy, Epsilon, EpsilonGreedyConfig, StartMode};
pub use mc_exploring_starts::{mc_exploring_starts, ControlResult, EsConfig};
pub use mc_prediction::{predict_q, predict_v, PredictionConfig, StateValues};
pub use tabular::{DynTabular, Policy, QTable, TabularEnv, Visit};
