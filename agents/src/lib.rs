//! wick-agents: tabular Monte Carlo agents over wick's environments.
//!
//! - [`mc_prediction`]: first-/every-visit MC prediction of `v_π` and `q_π` (S&B §5.1).
//! - [`mc_basic`]: MC Basic (Zhao Alg. 5.1).
//! - [`mc_exploring_starts`]: Monte Carlo ES (S&B §5.3, Zhao Alg. 5.2).
//! - [`mc_epsilon_greedy`]: on-policy MC control with ε-greedy policies (S&B §5.4, Zhao Alg. 5.3).
//! - [`reinforce`]: REINFORCE, Monte Carlo policy gradient with an optional learned baseline
//!   (S&B §13.3–13.4), MLP policies in Candle; its trainer in [`reinforce_train`].
//! - [`mc_off_policy_prediction`]: ordinary and weighted importance sampling (S&B §5.5–5.6).
//! - [`mc_off_policy_control`]: off-policy MC control with weighted IS (S&B §5.7).
//!
//! Their trainer (`wick train mc-*`) is [`tabular_train`], with S&B Example 5.4's error curves in
//! [`example_5_4`] and pictures of values and policies in [`tabular_images`].
//!
//! Shared pieces in [`tabular`]; episodes on worker threads, bit-identical for any thread count,
//! in [`parallel`]. Every algorithm estimates action values as sample means of returns,
//! incrementally: `q ← q + (g − q)/n` ([`tabular::QTable::update`]).

pub mod mc_basic;
pub mod mc_epsilon_greedy;
pub mod mc_exploring_starts;
pub mod mc_off_policy_control;
pub mod mc_off_policy_prediction;
pub mod mc_prediction;
pub mod reinforce;
pub mod reinforce_train;
pub mod parallel;
pub mod tabular;
pub mod tabular_images;
pub mod tabular_train;
pub mod example_5_4;
pub(crate) mod team;

pub use mc_basic::{mc_basic, McBasicAgent, McBasicConfig, McBasicResult};
pub use mc_epsilon_greedy::{mc_epsilon_greedy, mc_epsilon_greedy_par, Epsilon, EpsilonGreedyAgent, EpsilonGreedyConfig, StartMode};
pub use mc_exploring_starts::{mc_exploring_starts, mc_exploring_starts_par, ControlResult, EsAgent, EsConfig};
pub use mc_off_policy_control::{mc_off_policy_control, mc_off_policy_control_par, OffPolicyControlAgent, OffPolicyControlConfig};
pub use mc_off_policy_prediction::{mse_curves, OffPolicyPredictionAgent, OffPolicyPredictionConfig};
pub use mc_prediction::{predict_q, predict_v, PredictionAgent, PredictionConfig, StateValues, Target};
pub use parallel::{Collector, McAgent};
pub use tabular::{DynTabular, EnvRef, Policy, QTable, TabularEnv, Visit};
