//! `wick train fvsbn`, `wick eval`, `wick sample` for the density models.

use crate::flags::{CommonFlags, EvalArgs, OptimFlags};
use crate::launch::{configure, finish, flags_table};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use wick_core::binarize::Binarize;
use wick_core::checkpoint::Checkpoint;
use wick_core::data::{Dataset, Split};
use wick_core::rng::Rng;
use wick_core::run::RunDir;
use wick_core::schedule::Schedule;
use wick_core::{bail, Error, Result};
use wick_generative::made::Order;
use wick_generative::train::{self as dtrain, DensityAlgo, DensityConfig, ValidNll};

/// Hyperparameters of a density model; unset flags take the --config file's value, then the default.
#[derive(Args, Serialize, Debug, Clone)]
pub struct DensityFlags {
    #[command(flatten)]
    #[serde(skip)]
    pub common: CommonFlags,
    /// digits, mnist5k, mnist, or a path: .csv/.csv.gz, an MNIST IDX directory, .amat files
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Where --data mnist looks first (DIR or DIR/mnist), before $WICK_DATA_DIR/mnist and the cache folder
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    /// threshold, static (each pixel once ~ Bernoulli(grey/max), fixed stream) or dynamic (train redrawn each epoch) [default: static for mnist, else threshold]
    #[arg(long, value_parser = parse_binarize)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binarize: Option<Binarize>,
    /// With --binarize threshold: pixel >= threshold is 1 [default: digits 8, mnist 128]
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    /// NADE/MADE/oanade hidden units [default: 100 for digits-sized data (D ≤ 100), else 500]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden: Option<usize>,
    /// MADE and oanade hidden layers [default: 1]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<usize>,
    /// oanade: orderings K in the ensemble that valid and test NLL use, logsumexp_k log p_k(x) − log K [default: 1]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orderings: Option<usize>,
    /// oanade: what early stopping compares each epoch: exact (the valid NLL of the ensemble, D passes per ordering) or estimate (the order-agnostic loss on valid with fixed draws, one pass) [default: exact with 1 hidden layer, estimate with more]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid: Option<ValidNll>,
    /// MADE mask sets K: connectivity-agnostic training; the test-time model is the mixture of the K [default: 1]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub masks: Option<usize>,
    /// MADE input ordering: natural (raster) or random [default: random]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<Order>,
    /// MADE order-agnostic training: each mask set gets its own random input ordering
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub order_agnostic: bool,
    /// MADE direct input→output connections, masked autoregressively (the MADE authors' direct_input_connect=Output, used in their best MNIST rows)
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub direct: bool,
    /// Maximum number of epochs
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epochs: Option<u64>,
    /// Minibatch size
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
    /// Cut each batch into this many contiguous micro-batches and sum their gradients in order
    /// (gradient accumulation; under mpirun the ranks share them, a multiple of the rank count)
    /// [default: the number of ranks, 1 without mpirun]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub micro_batches: Option<usize>,
    /// Combine the ranks' gradients in a fixed order (`ordered`: bit-identical for any rank count)
    /// or by MPI's `ring` all-reduce (MPI's summation order: NOT bit-identical across rank counts) [default: ordered]
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allreduce: Option<wick_core::dist::Allreduce>,
    /// Early stopping: epochs without a better valid NLL before stopping; 0 never stops early
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patience: Option<u64>,
    /// Evaluate the valid NLL (for early stopping and best.safetensors) after every N-th epoch and
    /// after the last; --patience still counts epochs. For models whose valid NLL is a large share
    /// of an epoch (a MADE mixture of many wide mask sets) [default: 1]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_every: Option<u64>,
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
    /// Learning-rate schedule: constant, warmup:STEPS, cosine:TOTAL[:WARMUP], step:EVERY:GAMMA [default: oanade cosine:EPOCHS×BATCHES (decays to 0 over the run), the others constant]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
}

fn parse_binarize(s: &str) -> std::result::Result<Binarize, String> {
    s.parse::<Binarize>().map_err(|e| e.to_string().trim_start_matches("--binarize: ").to_string())
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

/// A run and its saved config; `data_dir` (`--data-dir`) replaces the folder the config saved.
fn load_run(dir: &std::path::Path, data_dir: Option<&std::path::Path>) -> Result<(RunDir, DensityConfig)> {
    let run = RunDir::open(dir)?;
    let mut cfg: DensityConfig = run.config()?;
    if let Some(d) = data_dir {
        cfg.data_dir = Some(d.display().to_string());
    }
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
    let (run, mut cfg) = load_run(&a.run_dir, a.data_dir.as_deref())?;
    if let Some(k) = a.orderings {
        if cfg.algo != DensityAlgo::Oanade {
            bail!("--orderings is for order-agnostic NADE runs; '{}' is a {} run", a.run_dir.display(), cfg.algo);
        }
        if k == 0 {
            bail!("--orderings must be at least 1, got 0");
        }
        cfg.orderings = Some(k);
    }
    let splits: Vec<Split> = match a.split.as_str() {
        "all" => vec![Split::Train, Split::Valid, Split::Test],
        s => vec![s.parse::<Split>().map_err(|_| Error::new(format!("--split: '{s}' is not one of train, valid, test, all")))?],
    };
    let (data, x) = dtrain::load_data(&cfg, a.data.as_deref())?;
    let model = load_model(&run, &cfg, data.dim, &device)?;
    if data.dim != model.dim() {
        bail!("data has {} dimensions but the model was trained on {}", data.dim, model.dim());
    }
    let mut rows = String::from("index,split,label,log_prob\n");
    // Progress in chunks of rows (an ensemble of many orderings can take minutes).
    const CHUNK: usize = 250;
    let total: usize = splits.iter().map(|&s| data.indices(s).len().div_ceil(CHUNK)).sum();
    let mut progress = wick_core::progress::Progress::new("eval", total as u64, false);
    for s in splits {
        let idx = data.indices(s);
        let xs = data.split_tensor(&x, s, &device)?;
        let mut nll = Vec::with_capacity(idx.len());
        for lo in (0..idx.len()).step_by(CHUNK) {
            let n = CHUNK.min(idx.len() - lo);
            nll.extend(dtrain::per_example_nll(&*model, &xs.narrow(0, lo, n)?, CHUNK)?);
            progress.inc(1);
        }
        let mean = nll.iter().map(|&v| v as f64).sum::<f64>() / nll.len().max(1) as f64;
        let k = match (cfg.algo, cfg.masks, cfg.orderings) {
            (DensityAlgo::Made, Some(k), _) => format!(", mixture of K={k} mask sets"),
            (DensityAlgo::Oanade, _, Some(k)) => format!(", ensemble of K={k} orderings"),
            _ => String::new(),
        };
        progress.message(format!("{s}_nll {mean:.4}"));
        println!("{s}_nll {mean:.4} nats ({} examples{k})", nll.len());
        for (i, v) in idx.iter().zip(&nll) {
            let label = data.labels.as_ref().map(|l| l[*i].to_string()).unwrap_or_default();
            rows.push_str(&format!("{i},{s},{label},{}\n", -v));
        }
    }
    progress.finish();
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
    /// Output PNG (a grid of the samples; with --complete-from each original beside its
    /// completion, the observed region outlined, PNG or SVG), or FILE.csv (one 0/1 row per
    /// sample; the only choice for vector data)
    #[arg(long, default_value = "samples.png")]
    pub out: PathBuf,
    /// Seed of the sampling stream
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Complete the first N test images of this data instead of sampling from scratch
    #[arg(long, value_name = "DATA")]
    pub complete_from: Option<String>,
    /// With --complete-from: which pixels are observed: top-half, bottom-half, left-half, right-half, random:FRACTION (a uniform subset drawn from --seed), or a mask file (D values 0/1, 1 = observed; vector data that are not square images take only the last two, with --out FILE.csv). Exact conditionals for any mask with oanade; the other models condition each pixel on the pixels before it in their ordering only
    #[arg(long, default_value = "top-half")]
    pub observe: String,
    /// Where `mnist` is looked for first (DIR or DIR/mnist) instead of the folder saved in the
    /// run's config.toml
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// CPU threads [default: all cores]; results do not depend on it
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn sample(a: SampleArgs) -> Result<ExitCode> {
    if a.n == 0 {
        bail!("--n must be at least 1");
    }
    let device = wick_core::device::parse_device(&a.device)?;
    let (run, cfg) = load_run(&a.run_dir, a.data_dir.as_deref())?;
    let (train_data, _) = dtrain::load_data(&cfg, None)?;
    let model = load_model(&run, &cfg, train_data.dim, &device)?;
    let mut rng = Rng::stream(a.seed, "sample");
    let (h, w) = (train_data.height, train_data.width);
    let csv = a.out.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    if !train_data.is_image() && !csv {
        bail!("the data are {}-dimensional vectors, not images: write the {} as CSV rows with --out FILE.csv", model.dim(), if a.complete_from.is_some() { "completions" } else { "samples" });
    }
    let samples = match &a.complete_from {
        None => model.sample(a.n, &mut rng, None)?,
        Some(d) => {
            let (data, x) = dtrain::load_data(&cfg, Some(d))?;
            if data.dim != model.dim() {
                bail!("--complete-from: data has {} dimensions but the model was trained on {}", data.dim, model.dim());
            }
            let mask = wick_core::mask::observation(&a.observe, h, w, &mut Rng::stream(a.seed, "observe"))?;
            let idx: Vec<usize> = data.indices(Split::Test).into_iter().take(a.n).collect();
            let vals = Dataset::gather(&x, data.dim, &idx);
            let completions = model.sample(idx.len(), &mut rng, Some((&vals, &mask)))?;
            if a.out.extension().is_some_and(|e| e.eq_ignore_ascii_case("png") || e.eq_ignore_ascii_case("svg")) {
                // Each original beside its completion, the observed region outlined.
                let title = format!("{} completions of {d} test images ({} observed)", cfg.algo, a.observe);
                let fig = wick_plot::completion::Completions { title, originals: vals, completions, observed: mask, n: idx.len(), h, w };
                wick_plot::write(&fig, &a.out)?;
                println!("{} completions written to {} (original | completion)", idx.len(), a.out.display());
                return Ok(ExitCode::SUCCESS);
            }
            completions
        }
    };
    let n = samples.len() / model.dim();
    if csv {
        let rows: String = samples.chunks(model.dim()).map(|r| r.iter().map(|&b| if b >= 0.5 { "1" } else { "0" }).collect::<Vec<_>>().join(",") + "\n").collect();
        wick_core::checkpoint::write_atomic(&a.out, rows.as_bytes())?;
    } else {
        let (px, gh, gw) = wick_core::image::display_grid(&samples, n, h, w, 0);
        wick_core::image::write_png(&a.out, &px, gh, gw, 1)?;
    }
    println!("{n} {} written to {}", if a.complete_from.is_some() { "completions" } else { "samples" }, a.out.display());
    Ok(ExitCode::SUCCESS)
}
