//! Flags more than one subcommand takes: every trainer's [`CommonFlags`], the neural trainers'
//! [`OptimFlags`], and `wick eval`'s [`EvalArgs`].

use clap::{Args, Command};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use wick_core::optim::OptimKind;

/// Flags every trainer takes.
#[derive(Args, Clone, Debug)]
pub struct CommonFlags {
    /// Seed of every random stream of the run
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

/// Optimizer flags, shared by every neural trainer.
#[derive(Args, Serialize, Debug, Clone, Default)]
pub struct OptimFlags {
    /// sgd, adam (coupled L2 weight decay), adamw (decoupled weight decay) or adagrad (the MADE paper's)
    #[arg(long = "optimizer")]
    #[serde(rename = "kind", skip_serializing_if = "Option::is_none")]
    pub kind: Option<OptimKind>,
    /// Learning rate
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Weight decay λ (L2 for sgd/adam/adagrad, decoupled for adamw)
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    /// Adam β1
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta1: Option<f64>,
    /// Adam β2
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta2: Option<f64>,
    /// Adam/Adagrad ε (added to the root of the second moment or of the sum of squares; torch's Adagrad default is 1e-10)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eps: Option<f64>,
    /// SGD momentum
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f64>,
    /// SGD Nesterov momentum
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub nesterov: bool,
}

/// `wick eval <run-dir>`: the run's config.toml says which kind of run it is; each kind
/// takes the flags that make sense for it and refuses the others with a one-line error.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The run directory (holds config.toml and its checkpoints)
    pub run_dir: PathBuf,
    /// Density models: evaluate on this data instead of the run's [digits, mnist5k, mnist or a path]
    #[arg(long)]
    pub data: Option<String>,
    /// Density models: where `mnist` is looked for first (DIR or DIR/mnist) instead of the folder
    /// saved in the run's config.toml, e.g. for a run trained on another machine
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
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
    /// CPU threads [default: all cores]; results do not depend on it
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Hide the flags of `cmd` that are not its algorithm's (`takes` says which are).
pub fn hide_others(cmd: Command, takes: impl Fn(&str) -> bool) -> Command {
    let ids: Vec<String> = cmd.get_arguments().map(|a| a.get_id().to_string()).filter(|id| !takes(id)).collect();
    ids.into_iter().fold(cmd, |cmd, id| cmd.mut_arg(id, |a| a.hide(true)))
}

/// Complete a train subcommand's help from its trainer's default config: each flag whose config
/// field has a default value gets `[default: V]` written from that value (the one home of the
/// default), optimizer flags from the config's `[optim]`. Flags that declare their own default
/// (clap's `default_value_t`) keep it; fields that default by a rule (of the data, the env)
/// state the rule in their own help.
pub fn document_defaults<C: Serialize>(cmd: Command, defaults: &C) -> Command {
    let Ok(serde_json::Value::Object(top)) = serde_json::to_value(defaults) else { return cmd };
    let mut values = BTreeMap::new();
    let shown = |v: &serde_json::Value| match v {
        // Unset (a rule decides) or a switch.
        serde_json::Value::Null | serde_json::Value::Bool(_) => None,
        serde_json::Value::String(s) if s.is_empty() => None,
        serde_json::Value::String(s) => Some(s.clone()),
        // A schedule: its kind ("constant").
        serde_json::Value::Object(o) if o.len() == 1 => o.get("kind").and_then(|k| k.as_str()).map(String::from),
        serde_json::Value::Object(_) => None,
        other => Some(other.to_string()),
    };
    for (k, v) in &top {
        match (k.as_str(), v) {
            ("optim", serde_json::Value::Object(o)) => values.extend(o.iter().filter_map(|(k, v)| Some((k.clone(), shown(v)?)))),
            _ => values.extend(shown(v).map(|s| (k.clone(), s))),
        }
    }
    let ids: Vec<String> = cmd.get_arguments().map(|a| a.get_id().to_string()).collect();
    ids.into_iter().fold(cmd, |cmd, id| match values.get(&id) {
        Some(v) => cmd.mut_arg(id, |a| {
            if !a.get_default_values().is_empty() {
                return a;
            }
            let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
            let long = a.get_long_help().map(|h| h.to_string());
            let a = a.help(format!("{help} [default: {v}]"));
            match long {
                Some(l) => a.long_help(format!("{l}\n\n[default: {v}]")),
                None => a,
            }
        }),
        None => cmd,
    })
}
