//! Command-line surface: `wick train <algo>`, `wick eval`, `wick sample`, `wick plot`, `wick list`.

use crate::data;
use crate::density;
use crate::reinforce;
use crate::tabular;
use crate::pretrain;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use wick_core::run::{default_run_name, Outcome, RunDir, Runtime};
use wick_core::{bail, Result};

#[derive(Parser)]
#[command(
    name = "wick",
    version,
    about = "Monte Carlo RL, autoregressive density models and self-supervised pretraining on Candle",
    long_about = "wick trains Monte Carlo RL agents, autoregressive density models and self-supervised encoders.\n\
Every run writes TensorBoard event files, config.toml, safetensors checkpoints and metrics.json under --logdir (default runs/).\n\
Watch runs with `tensorboard --logdir runs`.",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a model or agent (one subcommand per algorithm)
    Train {
        #[command(subcommand)]
        algo: TrainCmd,
    },
    /// Evaluate a run: test NLL for density models, mean return of the learned policy for RL agents
    Eval(EvalArgs),
    /// Draw samples (or completions) from a trained density model into a PNG grid
    Sample(density::SampleArgs),
    /// Draw a run's textbook figure (Blackjack values and policy, Ex. 5.4 error curves, grid
    /// policy, REINFORCE learning curve) as PNG or SVG
    Plot(crate::plot::PlotArgs),
    /// Linear-probe accuracy of a pretrained encoder (or of the raw pixels with --raw --data D)
    Probe(pretrain::ProbeArgs),
    /// Write a pretrained encoder's features of every example to CSV (split, label, features...)
    Embed(pretrain::EmbedArgs),
    /// List algorithms, datasets and environments, one line each
    List,
    /// Data sets: fetch MNIST, export binarized splits as .amat
    Data {
        #[command(subcommand)]
        cmd: data::DataCmd,
    },
}

#[derive(Subcommand)]
enum TrainCmd {
    /// Fully visible sigmoid belief net (density model over binarised images)
    Fvsbn(density::DensityFlags),
    /// NADE: neural autoregressive distribution estimator (density model)
    Nade(density::DensityFlags),
    /// MADE: masked autoencoder for distribution estimation, K masks, any ordering (density model)
    Made(density::DensityFlags),
    /// Order-agnostic NADE (DeepNADE): exact conditionals for any observed set, ensembles of orderings (density model)
    Oanade(density::DensityFlags),
    /// REINFORCE: Monte Carlo policy gradient, optionally with a learned baseline (discrete-action envs)
    Reinforce(reinforce::ReinforceFlags),
    /// Tabular MC prediction of v_pi, first- or every-visit (S&B 5.1)
    McPrediction(tabular::TabularFlags),
    /// Tabular MC Basic: policy iteration with MC estimates (Zhao Alg. 5.1)
    McBasic(tabular::TabularFlags),
    /// Tabular Monte Carlo exploring starts (S&B 5.3)
    McEs(tabular::TabularFlags),
    /// Tabular on-policy MC control with epsilon-greedy policies (S&B 5.4)
    McEpsilonGreedy(tabular::TabularFlags),
    /// Tabular off-policy MC prediction: ordinary and weighted importance sampling (S&B 5.5-5.6)
    McOffPolicyPrediction(tabular::TabularFlags),
    /// Tabular off-policy MC control with weighted importance sampling (S&B 5.7)
    McOffPolicyControl(tabular::TabularFlags),
    /// Masked prediction: pretrain an encoder by predicting hidden patches from the rest (self-supervised)
    Masked(pretrain::PretrainFlags),
    /// SimCLR: pretrain an encoder by contrasting augmented views, NT-Xent loss (self-supervised)
    Simclr(pretrain::PretrainFlags),
    /// VICReg: pretrain an encoder by variance-invariance-covariance regularisation of augmented views (self-supervised)
    Vicreg(pretrain::PretrainFlags),
}

/// `wick eval <run-dir>`: the run's config.toml says which kind of run it is; each kind
/// takes the flags that make sense for it and refuses the others with a one-line error.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The run directory (holds config.toml and its checkpoints)
    pub run_dir: PathBuf,
    /// Density models: evaluate on this data instead of the run's [digits, mnist5k or a path]
    #[arg(long)]
    pub data: Option<String>,
    /// Density models: train, valid, test or all
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Order-agnostic NADE: evaluate the ensemble of the first K orderings [default: the run's --orderings]
    #[arg(long)]
    pub orderings: Option<usize>,
    /// Density models: write one row per example (index, split, label, log_prob in nats) to this CSV file
    #[arg(long, value_name = "FILE.csv")]
    pub per_example: Option<PathBuf>,
    /// RL agents: episodes to run with the learned policy [default: 100 for networks, 100000 for tables]
    #[arg(long)]
    pub episodes: Option<u64>,
    /// RL agents: act greedily (argmax) instead of sampling from the policy
    #[arg(long)]
    pub greedy: bool,
    /// RL agents: seed of the evaluation episodes
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// The `algo` a run directory's config.toml names.
pub fn run_algo(dir: &std::path::Path) -> Result<String> {
    let table = RunDir::open(dir)?.read_config()?;
    match table.get("algo").and_then(|v| v.as_str()) {
        Some(a) => Ok(a.to_string()),
        None => bail!("{}: config.toml names no algo; is this a wick run directory?", dir.display()),
    }
}

/// Flags every trainer takes.
#[derive(Args, Clone, Debug)]
pub struct CommonFlags {
    /// Seed of every random stream of the run [default: 0]
    #[arg(long)]
    pub seed: Option<u64>,
    /// cpu, cuda or cuda:N (CUDA needs a build with --features cuda)
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Directory that holds run directories
    #[arg(long, default_value = "runs")]
    pub logdir: PathBuf,
    /// Run directory name [default: <algo>__<data>__s<seed>__<UTC time>]
    #[arg(long)]
    pub run_name: Option<String>,
    /// TOML file of hyperparameters (flags given on the command line override it)
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint, with its saved config
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// Replace an existing run directory of the same name
    #[arg(long)]
    pub force: bool,
    /// CPU threads: for tensor kernels, or the episode collectors of the tabular agents [default:
    /// all cores]; results do not depend on it
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress output
    #[arg(long, short)]
    pub quiet: bool,
}

/// Pin the kernel thread count before any thread pool starts (Candle reads RAYON_NUM_THREADS).
fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(t) = threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        std::env::set_var("RAYON_NUM_THREADS", t.to_string());
    }
    Ok(())
}

/// Fresh run or `--resume`: the run directory and the config table to use.
pub struct Prepared {
    pub runtime: Runtime,
    /// The saved config (resume) or None (fresh: the caller resolves flags).
    pub saved: Option<toml::Table>,
    created: bool,
}

/// Open the run directory for a trainer. `overrides_given` tells whether any flag or file
/// would change the config, which `--resume` does not allow.
pub fn prepare(algo: &str, common: &CommonFlags, data_name: &str, seed: u64, overrides_given: bool) -> Result<Prepared> {
    set_threads(common.threads)?;
    let device = wick_core::device::parse_device(&common.device)?;
    wick_core::signal::install();
    if let Some(dir) = &common.resume {
        if common.force {
            bail!("--resume and --force cannot be used together: --resume continues a run, --force replaces it");
        }
        if overrides_given || common.config.is_some() || common.seed.is_some() {
            bail!("--resume continues a run with its saved config.toml: drop the hyperparameter flags (and --config/--seed), or start a new run");
        }
        // Rank 0 opens the directory and reads its config; the other ranks get the text from it.
        let world = wick_core::dist::world();
        let (run, mut text) = if world.is_root() {
            let run = RunDir::open(dir)?;
            let text = std::fs::read(run.file(wick_core::run::CONFIG_FILE))?;
            (run, text)
        } else {
            (RunDir::of_root(dir), Vec::new())
        };
        world.broadcast_bytes(&mut text);
        let table = wick_core::config::parse_toml(&String::from_utf8_lossy(&text), &run.file(wick_core::run::CONFIG_FILE))?;
        let saved_algo = table.get("algo").and_then(|v| v.as_str()).unwrap_or("?");
        if saved_algo != algo {
            bail!("'{}' is a {saved_algo} run, not {algo}: resume it with `wick train {saved_algo} --resume {}`", dir.display(), dir.display());
        }
        return Ok(Prepared { runtime: Runtime { dir: run, device, resume: true, quiet: common.quiet }, saved: Some(table), created: false });
    }
    let world = wick_core::dist::world();
    // The default name has the time in it: the other ranks take rank 0's, and only rank 0 creates it.
    let mut name = common.run_name.clone().unwrap_or_else(|| default_run_name(algo, data_name, seed)).into_bytes();
    world.broadcast_bytes(&mut name);
    let name = String::from_utf8_lossy(&name).into_owned();
    let existed = common.logdir.join(&name).exists();
    let dir = if world.is_root() { RunDir::create(&common.logdir, &name, common.force)? } else { RunDir::of_root(&common.logdir.join(&name)) };
    Ok(Prepared { runtime: Runtime { dir, device, resume: false, quiet: common.quiet }, saved: None, created: !existed })
}

/// A trainer's config and run directory. `flags` serialises to the hyperparameters the user
/// gave (unset options skipped; an empty `[optim]` table counts as none). With `--resume` the
/// run's saved config.toml is used and any hyperparameter flag is refused; otherwise the config
/// is defaults ← `--config` file ← flags, and `fresh` checks (and may complete) it before the run
/// directory exists, returning the name part (data or env) and the seed of the default run name.
pub fn configure<C, F>(algo: &str, flags: &F, common: &CommonFlags, fresh: impl FnOnce(C) -> Result<(C, String, u64)>) -> Result<(C, Prepared)>
where
    C: serde::Serialize + serde::de::DeserializeOwned + Default,
    F: serde::Serialize,
{
    let mut t = match toml::Value::try_from(flags).map_err(|e| wick_core::Error::new(e.to_string()))? {
        toml::Value::Table(t) => t,
        _ => toml::Table::new(),
    };
    if t.get("optim").and_then(|o| o.as_table()).is_some_and(|o| o.is_empty()) {
        t.remove("optim");
    }
    let given = !t.is_empty();
    if common.resume.is_some() {
        let p = prepare(algo, common, "", 0, given)?;
        let table = p.saved.clone().expect("resume has a saved config");
        let cfg: C = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| wick_core::Error::new(format!("saved config.toml: {}", e.message().trim())))?;
        return Ok((cfg, p));
    }
    t.insert("algo".into(), toml::Value::String(algo.into()));
    if let Some(s) = common.seed {
        t.insert("seed".into(), toml::Value::Integer(s as i64));
    }
    let cfg: C = wick_core::config::resolve(common.config.as_deref(), &t)?;
    let (cfg, name, seed) = fresh(cfg)?;
    let p = prepare(algo, common, &name, seed, given)?;
    Ok((cfg, p))
}

/// Run a trainer and turn its outcome into an exit code; on failure of a fresh run that left
/// its directory empty, remove the directory so a corrected retry can use the same name.
pub fn finish(p: &Prepared, algo: &str, out: Result<Outcome>) -> Result<ExitCode> {
    let dir = p.runtime.dir.path();
    if !wick_core::dist::world().is_root() {
        // Rank 0 reports for the whole data-parallel run; the others print only their errors.
        return out.map(|o| if matches!(o, Outcome::Interrupted { .. }) { ExitCode::from(130) } else { ExitCode::SUCCESS });
    }
    match out {
        Ok(Outcome::Finished(metrics)) => {
            // The headline figures each kind of run reports, in this order, where present.
            const SHOWN: &[&str] = &[
                "test_nll", "best_epoch", "train_samples_per_s", "mean_return_last100", "steps_to_solve",
                "eval_mean_return", "optimal_action_agreement", "value_rmse", "episodes_per_s", "train_steps_per_s",
                "probe_acc_all", "probe_acc_100",
            ];
            let shown: String = SHOWN.iter().filter_map(|k| metrics.get(*k).map(|v| format!(" {k} {}", for_people(k, v)))).collect();
            println!("{algo}: done in {}:{shown}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Ok(Outcome::Interrupted { step }) => {
            eprintln!(
                "wick: interrupted at step {step}; checkpoint saved. Continue with: wick train {algo} --resume {}",
                dir.display()
            );
            Ok(ExitCode::from(130))
        }
        Err(e) => {
            if p.created && std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(false) {
                let _ = std::fs::remove_dir(dir);
            }
            Err(e)
        }
    }
}

/// A figure as a person reads it: rates to whole units, other fractions to four decimals, trailing
/// zeros dropped (`metrics.json` keeps full precision).
fn for_people(key: &str, v: &serde_json::Value) -> String {
    match v.as_f64() {
        Some(x) if v.is_f64() => {
            let text = if key.ends_with("_per_s") { format!("{x:.0}") } else { format!("{x:.4}") };
            if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_string() } else { text }
        }
        _ => v.to_string(),
    }
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Train { algo } => match algo {
            TrainCmd::Fvsbn(f) => density::train("fvsbn", f),
            TrainCmd::Nade(f) => density::train("nade", f),
            TrainCmd::Made(f) => density::train("made", f),
            TrainCmd::Oanade(f) => density::train("oanade", f),
            TrainCmd::Reinforce(f) => reinforce::train(f),
            TrainCmd::McPrediction(f) => tabular::train("mc-prediction", f),
            TrainCmd::McBasic(f) => tabular::train("mc-basic", f),
            TrainCmd::McEs(f) => tabular::train("mc-es", f),
            TrainCmd::McEpsilonGreedy(f) => tabular::train("mc-epsilon-greedy", f),
            TrainCmd::McOffPolicyPrediction(f) => tabular::train("mc-off-policy-prediction", f),
            TrainCmd::McOffPolicyControl(f) => tabular::train("mc-off-policy-control", f),
            TrainCmd::Masked(f) => pretrain::train("masked", f),
            TrainCmd::Simclr(f) => pretrain::train("simclr", f),
            TrainCmd::Vicreg(f) => pretrain::train("vicreg", f),
        },
        Cmd::Eval(a) => match run_algo(&a.run_dir)?.as_str() {
            "fvsbn" | "nade" | "made" | "oanade" => density::eval(a),
            "reinforce" => reinforce::eval(a),
            a2 if tabular::ALGOS.iter().any(|t| t.0 == a2) => tabular::eval(a),
            "masked" | "simclr" | "vicreg" => bail!("'{}' is a pretraining run: evaluate it with `wick probe {}`", a.run_dir.display(), a.run_dir.display()),
            other => bail!("'{}' is a {other} run; `wick eval` does not know that algorithm", a.run_dir.display()),
        },
        Cmd::Sample(a) => density::sample(a),
        Cmd::Plot(a) => crate::plot::plot(a),
        Cmd::Probe(a) => pretrain::probe(a),
        Cmd::Embed(a) => pretrain::embed(a),
        Cmd::Data { cmd } => data::run(cmd),
        Cmd::List => {
            list();
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn list() {
    println!("algorithms (wick train <algo>):");
    for (name, what) in wick_generative::train::MODELS {
        println!("  {name:<25} {what}");
    }
    println!("  {:<25} REINFORCE, Monte Carlo policy gradient (S&B 13.3), --baseline: with a learned v(s) (13.4); --env ID", "reinforce");
    for (name, what) in tabular::ALGOS {
        println!("  {name:<25} {what}");
    }
    for (name, what) in wick_pretrain::train::OBJECTIVES {
        println!("  {name:<25} {what}");
    }
    println!("datasets (--data):");
    for (name, what) in wick_core::data::builtin_names() {
        println!("  {name:<12} {what}");
    }
    println!("  {:<12} a .csv/.csv.gz file (pixels then label), an MNIST IDX directory, or binarized-MNIST .amat files", "PATH");
    println!("environments (--env ID, options as key=value,...):");
    for (id, what) in wick_envs::registry::list() {
        println!("  {id:<24} {what}");
    }
}

#[cfg(test)]
mod tests {
    use super::for_people;
    use serde_json::json;

    #[test]
    fn figures_for_people_are_rounded() {
        assert_eq!(for_people("test_nll", &json!(18.103904570473563)), "18.1039");
        assert_eq!(for_people("train_samples_per_s", &json!(630734.3729054254)), "630734");
        assert_eq!(for_people("best_epoch", &json!(499)), "499");
        assert_eq!(for_people("optimal_action_agreement", &json!(1.0)), "1");
        assert_eq!(for_people("value_rmse", &json!(0.0330)), "0.033");
        assert_eq!(for_people("eval_mean_return", &json!(-0.04241)), "-0.0424");
    }
}
