//! `wick train reinforce` and `wick eval` of a REINFORCE run.

use crate::flags::{CommonFlags, EvalArgs, OptimFlags};
use crate::launch::{configure, finish, flags_table};
use clap::Args;
use serde::Serialize;
use std::process::ExitCode;
use wick_agents::reinforce::ReinforceConfig;
use wick_agents::reinforce_train;
use wick_core::{bail, Result};

/// `wick train reinforce`: the run flags, then REINFORCE's hyperparameters, each declared once
/// in [`ReinforceConfig`], and the optimizer's.
#[derive(Args, Debug, Clone)]
pub struct ReinforceFlags {
    #[command(flatten)]
    pub common: CommonFlags,
    #[command(flatten)]
    pub config: ReinforceConfig,
    #[command(flatten)]
    pub optim: OptimFlags,
}

/// `m`: the subcommand's matches, which tell the flags given from the defaults.
pub fn train(flags: ReinforceFlags, m: &clap::ArgMatches) -> Result<ExitCode> {
    let mut given = wick_core::config::given_flags(&flags.config, m)?;
    given.extend(flags_table(&OptimOnly { optim: &flags.optim })?);
    let (cfg, prepared) = configure("reinforce", given, &flags.common, |cfg: ReinforceConfig| {
        // Under mpirun, one share of each update's episodes per rank unless --micro-batches says.
        let shares = cfg.micro_batches.unwrap_or(wick_core::dist::world().size());
        ReinforceConfig { micro_batches: Some(shares), ..cfg.clone() }.validate()?;
        // Unknown env or continuous actions: refuse before creating the run directory.
        wick_agents::reinforce::make_env(&cfg.env, &cfg.env_options)?;
        let (env, seed) = (cfg.env.clone(), cfg.seed);
        Ok((cfg, env, seed))
    })?;
    let out = reinforce_train::train(&cfg, &prepared.runtime);
    finish(&prepared, "reinforce", out)
}

/// The `[optim]` table of the optimizer flags given.
#[derive(Serialize)]
struct OptimOnly<'a> {
    optim: &'a OptimFlags,
}

/// `wick eval` of a REINFORCE run: mean return ± standard error of the saved policy.
pub fn eval(a: EvalArgs) -> Result<ExitCode> {
    if a.data.is_some() || a.data_dir.is_some() || a.per_example.is_some() || a.split != "test" {
        bail!("--data, --data-dir, --split and --per-example are for density models; '{}' is a reinforce run (it takes --episodes, --greedy, --seed)", a.run_dir.display());
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
