//! `wick train fvsbn`, `wick eval`, `wick sample` for the density models.

use crate::flags::{CommonFlags, EvalArgs, OptimFlags};
use crate::launch::{configure, finish, flags_table};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use wick_core::checkpoint::Checkpoint;
use wick_core::data::{Dataset, Split};
use wick_core::rng::Rng;
use wick_core::run::RunDir;
use wick_core::schedule::Schedule;
use wick_core::{bail, Error, Result};
use wick_generative::made::Order;
use wick_generative::train::{self as dtrain, DensityAlgo, DensityConfig};

/// Hyperparameters of a density model; unset flags take the --config file's value, then the default.
#[derive(Args, Serialize, Debug, Clone)]
pub struct DensityFlags {
    #[command(flatten)]
    #[serde(skip)]
    pub common: CommonFlags,
    /// digits, mnist5k, or a path: .csv/.csv.gz, an MNIST IDX directory, .amat files
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Binarisation threshold: pixel >= threshold is 1 [default: digits 8, mnist 128]
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    /// NADE/MADE hidden units [default: 100 for digits-sized data (D ≤ 100), else 500]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden: Option<usize>,
    /// MADE hidden layers [default: 1]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<usize>,
    /// MADE mask sets K: connectivity-agnostic training; the test-time model is the mixture of the K [default: 1]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub masks: Option<usize>,
    /// MADE input ordering: natural or random [default: natural]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<Order>,
    /// MADE order-agnostic training: each mask set gets its own random input ordering
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub order_agnostic: bool,
    /// Maximum number of epochs
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epochs: Option<u64>,
    /// Minibatch size
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
    /// Early stopping: epochs without a better valid NLL before stopping; 0 never stops early
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patience: Option<u64>,
    /// Clip gradients to this global L2 norm; 0 disables
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_grad: Option<f64>,
    /// Epochs between sample grids and weight histograms in TensorBoard
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_every: Option<u64>,
    #[command(flatten)]
    pub optim: OptimFlags,
    /// Learning-rate schedule: constant, warmup:STEPS, cosine:TOTAL[:WARMUP], step:EVERY:GAMMA
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
}

pub fn train(algo: DensityAlgo, flags: DensityFlags) -> Result<ExitCode> {
    let (cfg, prepared) = configure(algo.name(), flags_table(&flags)?, &flags.common, |cfg: DensityConfig| {
        cfg.validate()?;
        let (data, seed) = (cfg.data.clone(), cfg.seed);
        Ok((cfg, data, seed))
    })?;
    let out = dtrain::train(&cfg, &prepared.runtime);
    finish(&prepared, algo.name(), out)
}

fn load_run(dir: &std::path::Path) -> Result<(RunDir, DensityConfig)> {
    let run = RunDir::open(dir)?;
    let cfg = run.config()?;
    Ok((run, cfg))
}

/// The best model of a run (or its latest checkpoint if it never finished an epoch).
fn load_model(run: &RunDir, cfg: &DensityConfig, dim: usize, device: &candle_core::Device) -> Result<Box<dyn wick_generative::DensityModel>> {
    let model = dtrain::build_model(cfg, dim, device)?;
    let path = if run.best().exists() { run.best() } else { run.checkpoint() };
    let ck = Checkpoint::load(&path)?;
    model.params().load_from(&ck).map_err(|e| e.context(format!("'{}'", path.display())))?;
    Ok(model)
}

/// `wick eval` of a density-model run: NLL per split, optionally one row per example.
pub fn eval(a: EvalArgs) -> Result<ExitCode> {
    if a.episodes.is_some() || a.greedy {
        bail!("--episodes and --greedy are for RL runs; '{}' is a density-model run (it takes --data, --split, --per-example)", a.run_dir.display());
    }
    let device = wick_core::device::parse_device(&a.device)?;
    let (run, cfg) = load_run(&a.run_dir)?;
    let splits: Vec<Split> = match a.split.as_str() {
        "all" => vec![Split::Train, Split::Valid, Split::Test],
        s => vec![s.parse::<Split>().map_err(|_| Error::new(format!("--split: '{s}' is not one of train, valid, test, all")))?],
    };
    let data = Dataset::load(a.data.as_deref().unwrap_or(&cfg.data))?;
    let model = load_model(&run, &cfg, data.dim, &device)?;
    if data.dim != model.dim() {
        bail!("data has {} dimensions but the model was trained on {}", data.dim, model.dim());
    }
    let x = data.binarized(cfg.threshold);
    let mut rows = String::from("index,split,label,log_prob\n");
    for s in splits {
        let idx = data.indices(s);
        let xs = data.split_tensor(&x, s, &device)?;
        let nll = dtrain::per_example_nll(&*model, &xs, 1000)?;
        let mean = nll.iter().map(|&v| v as f64).sum::<f64>() / nll.len().max(1) as f64;
        let k = match cfg.masks {
            Some(k) if cfg.algo == DensityAlgo::Made => format!(", mixture of K={k} mask sets"),
            _ => String::new(),
        };
        println!("{s}_nll {mean:.4} nats ({} examples{k})", nll.len());
        for (i, v) in idx.iter().zip(&nll) {
            let label = data.labels.as_ref().map(|l| l[*i].to_string()).unwrap_or_default();
            rows.push_str(&format!("{i},{s},{label},{}\n", -v));
        }
    }
    if let Some(p) = a.per_example {
        wick_core::checkpoint::write_atomic(&p, rows.as_bytes())?;
        println!("per-example log-likelihoods written to {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct SampleArgs {
    /// The run directory (holds config.toml and best.safetensors)
    pub run_dir: PathBuf,
    /// Number of samples
    #[arg(long, default_value_t = 64)]
    pub n: usize,
    /// Output PNG (a grid of the samples)
    #[arg(long, default_value = "samples.png")]
    pub out: PathBuf,
    /// Seed of the sampling stream
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Complete the first N test images of this data instead of sampling from scratch
    #[arg(long, value_name = "DATA")]
    pub complete_from: Option<String>,
    /// With --complete-from: which pixels are observed (top-half, bottom-half, left-half, right-half)
    #[arg(long, default_value = "top-half")]
    pub observe: String,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn sample(a: SampleArgs) -> Result<ExitCode> {
    if a.n == 0 {
        bail!("--n must be at least 1");
    }
    let device = wick_core::device::parse_device(&a.device)?;
    let (run, cfg) = load_run(&a.run_dir)?;
    let train_data = Dataset::load(&cfg.data)?;
    let model = load_model(&run, &cfg, train_data.dim, &device)?;
    let mut rng = Rng::stream(a.seed, "sample");
    let (h, w) = (train_data.height, train_data.width);
    let samples = match &a.complete_from {
        None => model.sample(a.n, &mut rng, None)?,
        Some(d) => {
            let data = Dataset::load(d)?;
            if data.dim != model.dim() {
                bail!("--complete-from: data has {} dimensions but the model was trained on {}", data.dim, model.dim());
            }
            let mask = wick_core::mask::observed(&a.observe, h, w)?;
            let x = data.binarized(cfg.threshold);
            let idx: Vec<usize> = data.indices(Split::Test).into_iter().take(a.n).collect();
            let vals = Dataset::gather(&x, data.dim, &idx);
            model.sample(idx.len(), &mut rng, Some((&vals, &mask)))?
        }
    };
    let n = samples.len() / model.dim();
    let (px, gh, gw) = wick_core::image::display_grid(&samples, n, h, w, 0);
    wick_core::image::write_png(&a.out, &px, gh, gw, 1)?;
    println!("{n} {} written to {}", if a.complete_from.is_some() { "completions" } else { "samples" }, a.out.display());
    Ok(ExitCode::SUCCESS)
}
