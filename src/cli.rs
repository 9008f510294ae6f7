//! Command-line surface: `wick train <algo>`, `wick eval`, `wick sample`, `wick plot`, `wick list`.

use crate::flags::{document_defaults, hide_others, EvalArgs};
use crate::launch::saved_algo;
use crate::{data, density, pretrain, reinforce, tabular};
use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;
use wick_core::run::RunDir;
use wick_agents::reinforce::{PolicyGradientAlgo, ReinforceConfig};
use wick_agents::tabular_train::{TabularAlgo, TabularConfig};
use wick_core::{bail, Result};
use wick_generative::train::{DensityAlgo, DensityConfig};
use wick_pretrain::train::{Objective, PretrainConfig};

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
    #[command(about = DensityAlgo::Oanade.about())]
    Oanade(density::DensityFlags),
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

/// The command line, with each train subcommand's help completed from its trainer's defaults
/// (see [`crate::flags::document_defaults`]).
pub fn command() -> clap::Command {
    let cmd = Cli::command();
    cmd.mut_subcommand("train", |train| {
        let mut train = train;
        for &a in DensityAlgo::ALL {
            train = train.mut_subcommand(a.name(), |c| hide_others(document_defaults(c, &DensityConfig::default()), |f| a.takes(f)));
        }
        train = train.mut_subcommand("reinforce", |c| document_defaults(c, &ReinforceConfig::default()));
        for &a in TabularAlgo::ALL {
            train = train.mut_subcommand(a.name(), |c| hide_others(document_defaults(c, &TabularConfig::default()), |f| a.takes(f)));
        }
        for &a in Objective::ALL {
            train = train.mut_subcommand(a.name(), |c| hide_others(document_defaults(c, &PretrainConfig::default()), |f| a.takes(f)));
        }
        train
    })
}

/// The `--threads` of the command in `m` (at any depth of subcommands), where it has that flag
/// and it was given.
pub fn threads(m: &clap::ArgMatches) -> Option<usize> {
    let mut m = m;
    loop {
        if let Ok(Some(&t)) = m.try_get_one::<usize>("threads") {
            return Some(t);
        }
        m = m.subcommand()?.1;
    }
}

/// `m`: the matches of the whole command line.
pub fn run(cli: Cli, m: &clap::ArgMatches) -> Result<ExitCode> {
    let leaf = m.subcommand().and_then(|(_, t)| t.subcommand()).map(|(_, leaf)| leaf);
    match cli.cmd {
        Cmd::Train { algo } => match algo {
            TrainCmd::Fvsbn(f) => density::train(DensityAlgo::Fvsbn, f),
            TrainCmd::Nade(f) => density::train(DensityAlgo::Nade, f),
            TrainCmd::Made(f) => density::train(DensityAlgo::Made, f),
            TrainCmd::Oanade(f) => density::train(DensityAlgo::Oanade, f),
            TrainCmd::Reinforce(f) => reinforce::train(f, leaf.expect("train reinforce has matches")),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// One home per hyperparameter: every field of each trainer's config has a flag of its
    /// subcommands, and every flag of them (besides the run flags) a config field.
    #[test]
    fn every_config_field_has_a_flag_and_every_flag_a_field() {
        let cmd = command();
        let train = cmd.find_subcommand("train").unwrap();
        let run_flags = ["device", "logdir", "run_name", "config", "resume", "force", "threads", "quiet", "help"];
        let check = |name: &str, cfg: serde_json::Value| {
            let sub = train.find_subcommand(name).unwrap_or_else(|| panic!("no subcommand {name}"));
            let flags: BTreeSet<String> = sub.get_arguments().map(|a| a.get_id().to_string()).filter(|id| !run_flags.contains(&id.as_str())).collect();
            let mut fields = BTreeSet::new();
            for (k, v) in cfg.as_object().unwrap() {
                match k.as_str() {
                    "algo" => {} // the subcommand
                    "optim" => fields.extend(v.as_object().unwrap().keys().cloned()),
                    _ => {
                        fields.insert(k.clone());
                    }
                }
            }
            // Fields serialised only when set (`skip_serializing_if`), absent from the default.
            fields.extend(["micro_batches", "allreduce", "data_dir", "schedule", "eval_every"].iter().filter(|f| flags.contains(**f)).map(|f| f.to_string()));
            assert_eq!(flags, fields, "wick train {name}: flags vs config fields");
        };
        for a in DensityAlgo::ALL {
            check(a.name(), serde_json::to_value(DensityConfig::default()).unwrap());
        }
        check("reinforce", serde_json::to_value(ReinforceConfig::default()).unwrap());
        for a in TabularAlgo::ALL {
            check(a.name(), serde_json::to_value(TabularConfig::default()).unwrap());
        }
        for a in Objective::ALL {
            check(a.name(), serde_json::to_value(PretrainConfig::default()).unwrap());
        }
    }

    /// The "[default: …]" of a flag is its trainer's default, written from the value.
    #[test]
    fn help_defaults_come_from_the_config() {
        let mut cmd = command();
        let help = |cmd: &mut clap::Command, name: &str| cmd.find_subcommand_mut("train").unwrap().find_subcommand_mut(name).unwrap().render_help().to_string();
        let reinforce = help(&mut cmd, "reinforce");
        let nade = help(&mut cmd, "nade");
        let lr = |h: &str| h.lines().find(|l| l.contains("Learning rate")).map(str::to_string).unwrap_or_default();
        assert!(lr(&reinforce).contains("[default: 0.01]"), "{}", lr(&reinforce));
        assert!(lr(&nade).contains("[default: 0.001]"), "{}", lr(&nade));
        assert!(reinforce.contains("[default: 128]") && nade.contains("[default: 500]"), "hidden / epochs defaults");
        // Each subcommand lists its own flags: MADE's are not NADE's.
        let made = help(&mut cmd, "made");
        assert!(made.contains("--masks") && !nade.contains("--masks") && !nade.contains("--order"), "{nade}");
    }
}
