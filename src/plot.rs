//! `wick plot RUN [--out FILE.png|FILE.svg] [--force]`: the textbook figure of a finished (or
//! checkpointed) run, redrawn from what the run saved.
//!
//! - tabular runs on Blackjack or a grid world: the values and policy (S&B Figs. 5.1/5.2, or
//!   the grid's arrows), from `checkpoint.safetensors` (the greedy `policy`; the state values
//!   as the trainer computes them: max_a q for control, v for prediction);
//! - `mc-off-policy-prediction`: Example 5.4's error curves, from `mse.csv`;
//! - `reinforce`: the learning curve, from the TensorBoard scalars `charts/episodic_return`.
//!
//! The default output is `RUN/figure.png`; an existing file is replaced only with `--force`,
//! and the write is atomic.

use crate::launch::saved_algo;
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use wick_agents::tabular::TabularEnv;
use wick_agents::tabular_images;
use wick_agents::tabular_train::{self as ttrain, TabularAlgo, TabularConfig};
use wick_core::run::RunDir;
use wick_core::checkpoint::Checkpoint;
use wick_core::{bail, ensure, Error, Result};
use wick_plot::curves::Curves;
use wick_plot::Plot;

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// The run directory
    pub run_dir: PathBuf,
    /// Output file, .png or .svg [default: RUN/figure.png]
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace the output file if it exists
    #[arg(long)]
    pub force: bool,
}

pub fn plot(a: PlotArgs) -> Result<ExitCode> {
    let out = a.out.clone().unwrap_or_else(|| a.run_dir.join("figure.png"));
    // Check the output before reading the run, so that nothing is half done on bad input.
    match out.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("png" | "svg") => {}
        _ => bail!("--out '{}': give the figure a .png or .svg name", out.display()),
    }
    if out.exists() && !a.force {
        bail!("'{}' exists; pass --force to replace it (or choose another --out)", out.display());
    }
    if out.is_dir() {
        bail!("--out '{}' is a directory; name a .png or .svg file", out.display());
    }
    let algo = saved_algo(&RunDir::open(&a.run_dir)?)?;
    let fig = match algo.as_str() {
        "reinforce" => learning_curve(&a.run_dir)?,
        "mc-off-policy-prediction" => importance_sampling(&a.run_dir)?,
        t if t.parse::<TabularAlgo>().is_ok() => values_and_policy(&a.run_dir)?,
        "fvsbn" | "nade" | "made" | "oanade" => bail!("'{}' is a density-model run: draw it with `wick sample {}`", a.run_dir.display(), a.run_dir.display()),
        other => bail!("'{}' is a {other} run; `wick plot` draws tabular and reinforce runs", a.run_dir.display()),
    };
    wick_plot::write(&fig, &out)?;
    println!("{algo} figure written to {}", out.display());
    Ok(ExitCode::SUCCESS)
}

/// Blackjack's or a grid world's values and policy from the run's checkpoint.
fn values_and_policy(dir: &Path) -> Result<Plot> {
    let (run, cfg) = load_run(dir)?;
    let env = ttrain::make_env(&cfg)?;
    let (ns, na) = (env.n_states(), env.n_actions());
    let path = run.checkpoint();
    ensure!(path.exists(), "'{}' has no checkpoint.safetensors yet; plot it once it has trained", dir.display());
    let ck = Checkpoint::load(&path)?;
    let episodes = ck.meta::<serde_json::Value>("train_state").ok().and_then(|s| s.get("episodes").and_then(|e| e.as_u64())).unwrap_or(0);
    let values = if cfg.algo == TabularAlgo::McPrediction {
        if let Ok(v) = ck.f64_values("q", &[ns, 1]) {
            v
        } else {
            // v_π(s) = Σ_a π(a|s) q_π(s, a), as the trainer computes it.
            let q = ck.f64_values("q", &[ns, na])?;
            let pi = ttrain::prediction_policy(&cfg, &env)?;
            (0..ns).map(|s| (0..na).map(|a| pi.prob(s, a) * q[s * na + a]).sum()).collect()
        }
    } else {
        // max_a q(s, a): the value of the greedy action.
        let q = ck.f64_values("q", &[ns, na])?;
        q.chunks(na).map(|r| r.iter().copied().fold(f64::NEG_INFINITY, f64::max)).collect()
    };
    let policy = if ck.contains("policy") {
        Some(ck.u64_values("policy", &[ns])?.into_iter().map(|a| a as usize).collect::<Vec<_>>())
    } else {
        None
    };
    match tabular_images::values_and_policy(&cfg, &values, policy.as_deref(), episodes)? {
        Some((_, fig)) => Ok(fig),
        None => bail!("'{}' is a {} run on {}; `wick plot` draws Blackjack and the grid worlds", dir.display(), cfg.algo, cfg.env.as_deref().unwrap_or("Blackjack-v1")),
    }
}

/// Example 5.4's curves from `mse.csv` (episode, mse_ordinary, mse_weighted).
fn importance_sampling(dir: &Path) -> Result<Plot> {
    let (run, cfg) = load_run(dir)?;
    let path = run.file("mse.csv");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::new(format!("cannot read '{}': {e}; plot the run once it has finished", path.display())))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<f64> = line.split(',').map(|x| x.trim().parse::<f64>()).collect::<std::result::Result<_, _>>().map_err(|_| Error::new(format!("'{}' line {}: expected three numbers, got '{line}'", path.display(), i + 1)))?;
        ensure!(f.len() == 3, "'{}' line {}: expected three numbers, got '{line}'", path.display(), i + 1);
        rows.push((f[0], f[1], f[2]));
    }
    ensure!(!rows.is_empty(), "'{}' holds no rows", path.display());
    Ok(tabular_images::error_curves(&cfg, &rows))
}

/// A tabular run's directory and its saved config.
fn load_run(dir: &Path) -> Result<(RunDir, TabularConfig)> {
    let run = RunDir::open(dir)?;
    let cfg: TabularConfig = run.config()?;
    Ok((run, cfg))
}

/// REINFORCE's learning curve from the TensorBoard scalars.
fn learning_curve(dir: &Path) -> Result<Plot> {
    let run = wick_core::run::RunDir::open(dir)?;
    let cfg = run.read_config()?;
    let scalars = wick_core::tb::read_scalars(dir)?;
    let returns: Vec<(f64, f64)> = scalars.get("charts/episodic_return").map(|v| v.iter().map(|&(s, r)| (s as f64, r as f64)).collect()).unwrap_or_default();
    ensure!(!returns.is_empty(), "'{}' has no charts/episodic_return in its TensorBoard files yet", dir.display());
    let title = format!("reinforce, {}, seed {}", cfg.get("env").and_then(|v| v.as_str()).unwrap_or("?"), cfg.get("seed").and_then(|v| v.as_integer()).unwrap_or(0));
    Ok(Plot::Curves(Curves::learning_curve(&title, &returns, wick_agents::reinforce_train::WINDOW)))
}
