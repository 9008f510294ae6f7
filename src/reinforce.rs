//! `wick train reinforce` and `wick eval` of a REINFORCE run.

use crate::flags::{CommonFlags, EvalArgs, OptimFlags};
use crate::launch::{configure, finish};
use clap::Args;
use serde::Serialize;
use std::process::ExitCode;
use wick_agents::reinforce::ReinforceConfig;
use wick_agents::reinforce_train;
use wick_core::schedule::Schedule;
use wick_core::{bail, Result};

/// Hyperparameters of REINFORCE; unset flags take the --config file's value, then the default.
#[derive(Args, Serialize, Debug, Clone)]
pub struct ReinforceFlags {
    #[command(flatten)]
    #[serde(skip)]
    pub common: CommonFlags,
    /// Environment id with discrete actions (see `wick list`) [default: CartPole-v1]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Env options as key=value,key=value (e.g. is_slippery=false)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env_options: Option<String>,
    /// Env steps to train for at most [default: 300000]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_steps: Option<u64>,
    /// Learn a state-value baseline (REINFORCE with baseline, S&B §13.4)
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub baseline: bool,
    /// Hidden units of the policy (and value) MLP [default: 128]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden: Option<usize>,
    /// Discount γ in [0, 1] [default: 0.99]
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
    /// Whole episodes per gradient step [default: 1]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub episodes_per_update: Option<usize>,
    /// Standardise the advantages over each update's batch: true or false [default: true]
    #[arg(long, value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub standardize: Option<bool>,
    /// Entropy bonus β [default: 0]
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entropy_coef: Option<f64>,
    /// Weight of the value loss with --baseline [default: 0.5]
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_coef: Option<f64>,
    /// Clip gradients to this global L2 norm; 0 disables [default: 0]
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_grad: Option<f64>,
    /// "Solved" threshold on the mean of the last 100 returns [default: 475]
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub solve_return: Option<f64>,
    /// Stop once solved, keeping the policy that solved: true or false [default: true]
    #[arg(long, value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_on_solve: Option<bool>,
    /// Updates between checkpoints [default: 100]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_every: Option<u64>,
    /// Updates between weight histograms in TensorBoard; 0 never [default: 100]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_every: Option<u64>,
    #[command(flatten)]
    pub optim: OptimFlags,
    /// Learning-rate schedule over updates: constant, warmup:STEPS, cosine:TOTAL[:WARMUP], step:EVERY:GAMMA [default: constant]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
}

pub fn train(flags: ReinforceFlags) -> Result<ExitCode> {
    let (cfg, prepared) = configure("reinforce", &flags, &flags.common, |cfg: ReinforceConfig| {
        cfg.validate()?;
        // Unknown env or continuous actions: refuse before creating the run directory.
        wick_agents::reinforce::make_env(&cfg.env, &cfg.env_options)?;
        let (env, seed) = (cfg.env.clone(), cfg.seed);
        Ok((cfg, env, seed))
    })?;
    let out = reinforce_train::train(&cfg, &prepared.runtime);
    finish(&prepared, "reinforce", out)
}

/// `wick eval` of a REINFORCE run: mean return ± standard error of the saved policy.
pub fn eval(a: EvalArgs) -> Result<ExitCode> {
    if a.data.is_some() || a.per_example.is_some() || a.split != "test" {
        bail!("--data, --split and --per-example are for density models; '{}' is a reinforce run (it takes --episodes, --greedy, --seed)", a.run_dir.display());
    }
    let episodes = a.episodes.unwrap_or(100);
    if episodes == 0 {
        bail!("--episodes must be at least 1");
    }
    let device = wick_core::device::parse_device(&a.device)?;
    let returns = reinforce_train::evaluate(&a.run_dir, episodes, a.greedy, a.seed, &device)?;
    let n = returns.len() as f64;
    let mean = returns.iter().sum::<f64>() / n;
    let var = if returns.len() > 1 { returns.iter().map(|r| (r - mean) * (r - mean)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    let se = (var / n).sqrt();
    let (min, max) = returns.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    println!(
        "mean_return {mean:.2} ± {se:.2} (standard error) over {episodes} episodes, {} policy, seed {}; min {min} max {max}",
        if a.greedy { "greedy" } else { "sampled" },
        a.seed
    );
    Ok(ExitCode::SUCCESS)
}
