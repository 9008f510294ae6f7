//! `wick train mc-*` and `wick eval` of their runs: the flags and the printing; the trainer is
//! [`wick_agents::tabular_train`].

use crate::flags::{CommonFlags, EvalArgs};
use crate::launch::{configure, finish, flags_table};
use clap::Args;
use serde::Serialize;
use std::process::ExitCode;
use wick_agents::tabular_train::{self as ttrain, EvalPolicy, PredictionTarget, StartFrom, TabularAlgo, TabularConfig};
use wick_agents::{TabularEnv, Visit};
use wick_core::checkpoint::Checkpoint;
use wick_core::run::RunDir;
use wick_core::{bail, ensure, Result};

/// Flags of the tabular trainers; unset flags take the --config file's value, then the
/// default for the algorithm and env (the defaults reproduce the results in docs/rl.md).
#[derive(Args, Serialize, Debug, Clone)]
pub struct TabularFlags {
    #[command(flatten)]
    #[serde(skip)]
    pub common: CommonFlags,
    /// Environment id (see `wick list`) [default: Blackjack-v1]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Env options as key=value,... (e.g. is_slippery=false)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env_options: Option<String>,
    /// Episodes (mc-basic: episodes per state-action pair and iteration)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub episodes: Option<u64>,
    /// Discount factor in [0, 1]
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
    /// mc-epsilon-greedy: E (fixed), linear:START:END:FRACTION, exp:START:END:FRACTION, or
    /// stages of these one after another, joined by commas (exp:1:0.01:0.9,linear:0.01:0:0.1
    /// ends at 0); mc-off-policy-control: the behaviour's epsilon (1 = uniformly random)
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<String>,
    /// Cut episodes after this many steps (needed for continuing tasks such as GridWorld)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub episode_length: Option<usize>,
    /// Policy evaluated by the prediction algorithms: random, optimal (by DP) or stick20
    /// (Blackjack: stick only on 20 or 21)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<EvalPolicy>,
    /// first or every (visit rule of the sample averages)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visit: Option<Visit>,
    /// Episodes generated per policy snapshot (1 = improve after every episode)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<u64>,
    /// mc-basic: policy iterations
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u64>,
    /// mc-off-policy-prediction: start every episode in this state index and record the
    /// mean-squared-error curves there (Blackjack default: sum 13, usable ace, dealer 2)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_state: Option<usize>,
    /// mc-off-policy-prediction: independent runs averaged in the error curves
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runs: Option<u64>,
    /// Where episodes start (mc-epsilon-greedy, mc-off-policy-control, mc-prediction --target q):
    /// env (the env's start distribution) or uniform (a uniformly drawn state; for q prediction
    /// a uniformly drawn state-action pair)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<StartFrom>,
    /// mc-epsilon-greedy: constant step size alpha instead of sample averages
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_size: Option<f64>,
    /// mc-epsilon-greedy: estimates that forget in the time of their state, the return of a
    /// visit weighing (1 - FORGET)^m after m later visits to its state (any action), instead of
    /// --step-size; an action tried rarely then counts its latest returns nearly alone [Taxi-v4
    /// default: 0.0002]
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forget: Option<f64>,
    /// mc-prediction: v (state values, episodes from the env's start) or q (action values,
    /// S&B 5.2; with --start uniform, the default for q, each episode starts from a random
    /// state-action pair so that every pair gets returns) [default: v]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<PredictionTarget>,
}

pub fn train(algo: TabularAlgo, flags: TabularFlags) -> Result<ExitCode> {
    if wick_core::dist::world().size() > 1 {
        bail!("{algo} is tabular Monte Carlo and runs in one process (it is already thread-parallel and bit-identical for any --threads): run it without mpirun/srun");
    }
    if flags.common.device.trim() != "cpu" {
        bail!("{algo} is a tabular agent and runs on the CPU only; drop --device {} (it is for the neural trainers)", flags.common.device);
    }
    let (cfg, prepared) = configure(algo.name(), flags_table(&flags)?, &flags.common, |cfg: TabularConfig| {
        cfg.validate()?;
        let cfg = cfg.with_defaults();
        cfg.validate()?;
        ttrain::make_env(&cfg)?; // an unknown or non-tabular env fails before a run directory exists
        let (env, seed) = (cfg.env_id().to_string(), cfg.seed);
        Ok((cfg, env, seed))
    })?;
    let threads = flags.common.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let out = ttrain::train(&cfg, &prepared.runtime, threads);
    finish(&prepared, algo.name(), out)
}

/// `wick eval <run-dir>` of a tabular run: the learned greedy policy (the evaluated policy for
/// prediction runs) over `--episodes` episodes; mean return ± standard error.
pub fn eval(a: EvalArgs) -> Result<ExitCode> {
    if a.data.is_some() || a.data_dir.is_some() || a.per_example.is_some() || a.split != "test" {
        bail!("--data, --data-dir, --split and --per-example are for density-model runs; '{}' is a tabular RL run", a.run_dir.display());
    }
    if a.device.trim() != "cpu" {
        bail!("tabular agents run on the CPU only; drop --device {}", a.device);
    }
    let run = RunDir::open(&a.run_dir)?;
    let cfg: TabularConfig = run.config()?;
    let env = ttrain::make_env(&cfg)?;
    let episodes = a.episodes.unwrap_or(100_000);
    ensure!(episodes >= 1, "--episodes must be at least 1");
    let (policy, what) = if cfg.algo.is_prediction() {
        (ttrain::prediction_policy(&cfg, &env)?.greedy_actions(), format!("the evaluated policy ({})", cfg.policy.unwrap_or(EvalPolicy::Random)))
    } else {
        let ck = Checkpoint::load(&run.checkpoint())?;
        let p = ck.u64_values("policy", &[env.n_states()])?;
        (p.into_iter().map(|a| a as usize).collect(), "the learned greedy policy".to_string())
    };
    let (mean, se) = ttrain::evaluate_policy(&cfg, &policy, episodes, a.seed)?;
    println!("{} {}: mean return {mean:.4} ± {se:.4} (standard error, {episodes} episodes, {what})", cfg.algo, cfg.env_id());
    Ok(ExitCode::SUCCESS)
}
