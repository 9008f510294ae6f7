//! Command-line surface: `wick train <algo>`, `wick eval`, `wick sample`, `wick list`.

use crate::flags::EvalArgs;
use crate::launch::saved_algo;
use crate::{density, pretrain, reinforce, tabular};
use clap::{Parser, Subcommand};
use std::process::ExitCode;
use wick_core::run::RunDir;
use wick_agents::reinforce::PolicyGradientAlgo;
use wick_agents::tabular_train::TabularAlgo;
use wick_core::{bail, Result};
use wick_generative::train::DensityAlgo;
use wick_pretrain::train::Objective;

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
    /// Linear-probe accuracy of a pretrained encoder (or of the raw pixels with --raw --data D)
    Probe(pretrain::ProbeArgs),
    /// Write a pretrained encoder's features of every example to CSV (split, label, features...)
    Embed(pretrain::EmbedArgs),
    /// List algorithms, datasets and environments, one line each
    List,
}

/// One subcommand per algorithm; each one's help is its enum value's description (the line
/// `wick list` prints).
#[derive(Subcommand)]
enum TrainCmd {
    #[command(about = DensityAlgo::Fvsbn.about())]
    Fvsbn(density::DensityFlags),
    #[command(about = DensityAlgo::Nade.about())]
    Nade(density::DensityFlags),
    #[command(about = DensityAlgo::Made.about())]
    Made(density::DensityFlags),
    #[command(about = PolicyGradientAlgo::Reinforce.about())]
    Reinforce(reinforce::ReinforceFlags),
    #[command(about = TabularAlgo::McPrediction.about())]
    McPrediction(tabular::TabularFlags),
    #[command(about = TabularAlgo::McBasic.about())]
    McBasic(tabular::TabularFlags),
    #[command(about = TabularAlgo::McEs.about())]
    McEs(tabular::TabularFlags),
    #[command(about = TabularAlgo::McEpsilonGreedy.about())]
    McEpsilonGreedy(tabular::TabularFlags),
    #[command(about = TabularAlgo::McOffPolicyPrediction.about())]
    McOffPolicyPrediction(tabular::TabularFlags),
    #[command(about = TabularAlgo::McOffPolicyControl.about())]
    McOffPolicyControl(tabular::TabularFlags),
    #[command(about = Objective::Masked.about())]
    Masked(pretrain::PretrainFlags),
    #[command(about = Objective::Simclr.about())]
    Simclr(pretrain::PretrainFlags),
    #[command(about = Objective::Vicreg.about())]
    Vicreg(pretrain::PretrainFlags),
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Train { algo } => match algo {
            TrainCmd::Fvsbn(f) => density::train(DensityAlgo::Fvsbn, f),
            TrainCmd::Nade(f) => density::train(DensityAlgo::Nade, f),
            TrainCmd::Made(f) => density::train(DensityAlgo::Made, f),
            TrainCmd::Reinforce(f) => reinforce::train(f),
            TrainCmd::McPrediction(f) => tabular::train(TabularAlgo::McPrediction, f),
            TrainCmd::McBasic(f) => tabular::train(TabularAlgo::McBasic, f),
            TrainCmd::McEs(f) => tabular::train(TabularAlgo::McEs, f),
            TrainCmd::McEpsilonGreedy(f) => tabular::train(TabularAlgo::McEpsilonGreedy, f),
            TrainCmd::McOffPolicyPrediction(f) => tabular::train(TabularAlgo::McOffPolicyPrediction, f),
            TrainCmd::McOffPolicyControl(f) => tabular::train(TabularAlgo::McOffPolicyControl, f),
            TrainCmd::Masked(f) => pretrain::train(Objective::Masked, f),
            TrainCmd::Simclr(f) => pretrain::train(Objective::Simclr, f),
            TrainCmd::Vicreg(f) => pretrain::train(Objective::Vicreg, f),
        },
        Cmd::Eval(a) => {
            let algo = saved_algo(&RunDir::open(&a.run_dir)?)?;
            let dir = a.run_dir.display().to_string();
            if algo.parse::<DensityAlgo>().is_ok() {
                density::eval(a)
            } else if algo.parse::<PolicyGradientAlgo>().is_ok() {
                reinforce::eval(a)
            } else if algo.parse::<TabularAlgo>().is_ok() {
                tabular::eval(a)
            } else if algo.parse::<Objective>().is_ok() {
                bail!("'{dir}' is a pretraining run: evaluate it with `wick probe {dir}`")
            } else {
                bail!("'{dir}' is a {algo} run; `wick eval` does not know that algorithm")
            }
        }
        Cmd::Sample(a) => density::sample(a),
        Cmd::Probe(a) => pretrain::probe(a),
        Cmd::Embed(a) => pretrain::embed(a),
        Cmd::List => {
            list();
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn list() {
    println!("algorithms (wick train <algo>):");
    let algos = DensityAlgo::ALL.iter().map(|a| (a.name(), a.about()))
        .chain(PolicyGradientAlgo::ALL.iter().map(|a| (a.name(), a.about())))
        .chain(TabularAlgo::ALL.iter().map(|a| (a.name(), a.about())))
        .chain(Objective::ALL.iter().map(|a| (a.name(), a.about())));
    for (name, what) in algos {
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
