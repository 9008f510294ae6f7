//! `wick train masked|simclr|vicreg`, `wick probe`, `wick embed` for self-supervised encoders.

use crate::flags::{CommonFlags, OptimFlags};
use crate::launch::{configure, finish, flags_table};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use wick_core::checkpoint::Checkpoint;
use wick_core::data::{Dataset, Split};
use wick_core::run::RunDir;
use wick_core::schedule::Schedule;
use wick_core::{bail, Result};
use wick_pretrain::train::{self as ptrain, Objective, PretrainConfig};
use wick_pretrain::EncoderKind;

/// Hyperparameters of a pretraining run; unset flags take the --config file's value, then the default.
#[derive(Args, Serialize, Debug, Clone)]
pub struct PretrainFlags {
    #[command(flatten)]
    #[serde(skip)]
    pub common: CommonFlags,
    /// digits, mnist5k, mnist (found as for the density models: --data-dir, $WICK_DATA_DIR/mnist, the cache folder), or a labelled .csv/.csv.gz file or MNIST IDX directory
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Where --data mnist looks first (DIR or DIR/mnist), before $WICK_DATA_DIR/mnist and the cache folder
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    /// Encoder: mlp or cnn
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoder: Option<EncoderKind>,
    /// Epochs
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epochs: Option<u64>,
    /// Minibatch size (SimCLR: images, each giving two views)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
    /// Cut each batch into this many contiguous micro-batches and sum their gradients in order
    /// (gradient accumulation; SimCLR and VICReg still take their loss over the whole batch; under
    /// mpirun the ranks share them, a multiple of the rank count) [default: the number of ranks, 1 without mpirun]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub micro_batches: Option<usize>,
    /// Combine the ranks' gradients in a fixed order (`ordered`: bit-identical for any rank count)
    /// or by MPI's `ring` all-reduce (MPI's summation order: NOT bit-identical across rank counts) [default: ordered]
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allreduce: Option<wick_core::dist::Allreduce>,
    /// SimCLR: NT-Xent temperature τ > 0
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Masked prediction: how many patches to hide: ratio (--mask-ratio of them) or order-agnostic (the last P−d of a random ordering, d uniform in 0..P)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask: Option<ptrain::MaskMode>,
    /// Masked prediction: fraction of patches hidden, in (0, 1)
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_ratio: Option<f64>,
    /// Masked prediction: side of the square patches hidden together; 1 = pixels [default: a quarter of the image side (7 on MNIST) for images of side ≥ 16, 1 for digits]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_patch: Option<usize>,
    /// Epochs between linear probes; 0 = only at the end
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_every: Option<u64>,
    /// Epochs between image grids in TensorBoard; 0 = only at the end
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_every: Option<u64>,
    /// Clip gradients to this global L2 norm; 0 disables
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_grad: Option<f64>,
    #[command(flatten)]
    pub optim: OptimFlags,
    /// Learning-rate schedule: constant, warmup:STEPS, cosine:TOTAL[:WARMUP], step:EVERY:GAMMA
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
}

pub fn train(algo: Objective, flags: PretrainFlags) -> Result<ExitCode> {
    let (cfg, prepared) = configure(algo.name(), flags_table(&flags)?, &flags.common, |cfg: PretrainConfig| {
        cfg.validate()?;
        let (data, seed) = (cfg.data.clone(), cfg.seed);
        Ok((cfg, data, seed))
    })?;
    let out = ptrain::train(&cfg, &prepared.runtime);
    finish(&prepared, algo.name(), out)
}

/// The trained encoder of a run directory.
/// The data a pretraining run's encoder is applied to: `given`, else the run's `data` (with its
/// `data_dir`, where `mnist` is looked for first).
fn run_data(dir: &std::path::Path, given: Option<&str>) -> Result<(String, Option<String>)> {
    let saved = RunDir::open(dir)?.read_config()?;
    let field = |k: &str| saved.get(k).and_then(|v| v.as_str()).map(String::from);
    Ok((given.map(String::from).or_else(|| field("data")).unwrap_or_else(|| "digits".into()), field("data_dir")))
}

fn load_encoder(dir: &std::path::Path, data: &Dataset, device: &candle_core::Device) -> Result<(wick_pretrain::Encoder, PretrainConfig)> {
    let run = RunDir::open(dir)?;
    let algo = crate::launch::saved_algo(&run)?;
    if algo.parse::<Objective>().is_err() {
        bail!("'{}' is a {algo} run, not a pretraining run ({})", dir.display(), Objective::expected());
    }
    let cfg: PretrainConfig = run.config()?;
    let (enc, params) = ptrain::build_encoder(cfg.encoder, data, cfg.seed, device)?;
    let path = run.checkpoint();
    let ck = Checkpoint::load(&path)?;
    params.load_from(&ck).map_err(|e| e.context(format!("'{}' (was the run trained on images of another size?)", path.display())))?;
    Ok((enc, cfg))
}

#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// A pretraining run directory (its encoder's features are probed)
    pub run_dir: Option<PathBuf>,
    /// Probe the raw pixels instead of a run's encoder (needs --data)
    #[arg(long)]
    pub raw: bool,
    /// Data to probe on [default: the run's]
    #[arg(long)]
    pub data: Option<String>,
    /// Training labels: all, or 100 (10 per class, a fixed seeded choice); both when not given
    #[arg(long)]
    pub labels: Option<String>,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// `wick probe`: linear-probe test accuracy of a run's encoder or of the raw pixels.
pub fn probe(a: ProbeArgs) -> Result<ExitCode> {
    use wick_pretrain::probe::{probe, Labels};
    let device = wick_core::device::parse_device(&a.device)?;
    let labels: Vec<(Labels, &str)> = match a.labels.as_deref() {
        None => vec![(Labels::All, "all"), (Labels::PerClass, "100")],
        Some("all") => vec![(Labels::All, "all")],
        Some("100") => vec![(Labels::PerClass, "100")],
        Some(other) => bail!("--labels: '{other}' is not one of all, 100"),
    };
    let (data, pd, what) = match (&a.run_dir, a.raw) {
        (Some(_), true) => bail!("give either a run directory or --raw, not both"),
        (None, false) => bail!("give a run directory to probe its encoder, or --raw --data D for the raw pixels"),
        (None, true) => {
            let Some(d) = &a.data else { bail!("--raw needs --data (digits, mnist5k or a path)") };
            let data = Dataset::load(d)?;
            let x = ptrain::images(&data);
            let pd = ptrain::probe_data(&data, &x, &device, &|t| Ok(t.flatten_all()?.to_vec1::<f32>()?), data.dim)?;
            (data, pd, "raw pixels".to_string())
        }
        (Some(dir), false) => {
            let (spec, data_dir) = run_data(dir, a.data.as_deref())?;
            let data = Dataset::load_from(&spec, data_dir.as_deref().map(std::path::Path::new))?;
            let (enc, cfg) = load_encoder(dir, &data, &device)?;
            let x = ptrain::images(&data);
            let pd = ptrain::probe_data(&data, &x, &device, &|t| enc.features(t, 500), enc.feature_dim())?;
            (data, pd, format!("{} {} encoder of {}", cfg.algo, cfg.encoder, dir.display()))
        }
    };
    println!("linear probe on {what}, data {} ({} features)", data.name, pd.dim);
    for (l, name) in labels {
        let r = probe(&pd, l, &device)?;
        println!("probe_acc_{name} {:.4} (valid {:.4}, l2 {})", r.test_acc, r.valid_acc, r.l2);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// A pretraining run directory
    pub run_dir: PathBuf,
    /// Data to embed [default: the run's]
    #[arg(long)]
    pub data: Option<String>,
    /// Output CSV: a header, then one row per example: split, label, features...
    #[arg(long, value_name = "FILE.csv")]
    pub out: PathBuf,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// `wick embed`: the encoder's features of every example, as CSV.
pub fn embed(a: EmbedArgs) -> Result<ExitCode> {
    let device = wick_core::device::parse_device(&a.device)?;
    let (spec, data_dir) = run_data(&a.run_dir, a.data.as_deref())?;
    let data = Dataset::load_from(&spec, data_dir.as_deref().map(std::path::Path::new))?;
    let (enc, _) = load_encoder(&a.run_dir, &data, &device)?;
    let x = ptrain::images(&data);
    let t = candle_core::Tensor::from_vec(x, (data.rows, data.dim), &device)?;
    let f = enc.features(&t, 500)?;
    let fd = enc.feature_dim();
    let mut out = String::from("split,label");
    for j in 0..fd {
        out.push_str(&format!(",f{j}"));
    }
    out.push('\n');
    for i in 0..data.rows {
        let label = data.labels.as_ref().map(|l| l[i].to_string()).unwrap_or_default();
        out.push_str(&format!("{},{label}", Split::as_str(data.split[i])));
        for v in &f[i * fd..(i + 1) * fd] {
            out.push_str(&format!(",{v}"));
        }
        out.push('\n');
    }
    wick_core::checkpoint::write_atomic(&a.out, out.as_bytes())?;
    println!("{} rows of {fd} features written to {}", data.rows, a.out.display());
    Ok(ExitCode::SUCCESS)
}
