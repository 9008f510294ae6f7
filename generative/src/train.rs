//! The density-model trainer: minibatch maximum likelihood with early stopping on valid NLL.
//!
//! Per epoch: shuffle the train split with the run's `data` stream (with `--binarize dynamic`,
//! first redraw the training bits from the epoch's stream, [`wick_core::binarize`]), take Adam/AdamW/SGD steps
//! on the mean NLL of each batch, evaluate the exact valid NLL (after every `eval_every`-th
//! epoch and the last; by default every epoch), keep the best model in
//! `best.safetensors`, and write the full state (parameters, optimizer moments, the data
//! stream, counters) to `checkpoint.safetensors`. After the last epoch, or when valid NLL has
//! not improved for `patience` epochs, the best model is evaluated on every split and the
//! figures go to `metrics.json`.
//!
//! TensorBoard: `losses/train_nll` (mean over the epoch's batches), `eval/valid_nll`,
//! `eval/test_nll` (once, for the best model), `charts/samples_per_s`, `charts/learning_rate`,
//! sample grids under `samples`, parameter histograms under `params/…`; step = epoch. Data of
//! vectors rather than images (a CSV whose width is not a square) gets, instead of the grids,
//! a text `samples` entry: per-dimension marginals of the samples beside the training data's,
//! and sample rows as 0/1 strings.
//!
//! Data-parallel (`mpirun -np N`, core's dist.rs): `batch` is the global batch; each step's
//! rows are cut into `micro_batches` contiguous parts, rank r computes its share, and the
//! gradients are summed in part order, so N ranks give the bits of one process with
//! `--micro-batches N`. The ranks share the exact evaluations (chunks of rows, gathered back in
//! order: the same figures for any N); rank 0 alone logs and writes files.

use crate::made::{Made, Order};
use crate::model::DensityModel;
use crate::{Fvsbn, Nade, OaNade};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use wick_core::binarize::{self, Binarize};
use wick_core::checkpoint::Checkpoint;
use wick_core::data::{Dataset, Split};
use wick_core::image::display_grid;
use wick_core::dist::{self, DataParallel};
use wick_core::optim::{clip_grad_norm, OptimConfig, Optimizer};
use wick_core::rng::Rng;
use wick_core::run::{Outcome, Runtime};
use wick_core::session::Session;
use wick_core::schedule::Schedule;
use wick_core::tb::TbLogger;
use wick_core::{bail, ensure, Result};

/// Every hyperparameter of a density-model run; `config.toml` holds the resolved values.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DensityConfig {
    /// The model.
    pub algo: DensityAlgo,
    /// `digits`, `mnist5k`, `mnist` or a path (see `wick list`).
    pub data: String,
    /// Where `mnist` is looked for first (see [`wick_core::data::mnist_dir`]).
    pub data_dir: Option<String>,
    /// threshold, static or dynamic. Unset: static for `mnist`, threshold otherwise.
    pub binarize: Option<Binarize>,
    /// `--binarize threshold`: pixel ≥ threshold → 1. Unset: the dataset's default (digits 8, mnist 128).
    pub threshold: Option<f32>,
    /// NADE/MADE/order-agnostic NADE hidden units. Unset: 100 for D ≤ 100 (digits), else 500.
    pub hidden: Option<usize>,
    /// MADE and order-agnostic NADE hidden layers [1].
    pub layers: Option<usize>,
    /// Order-agnostic NADE: orderings in the ensemble that valid and test NLL use [1].
    pub orderings: Option<usize>,
    /// Order-agnostic NADE: what early stopping compares each epoch, the exact valid NLL or the
    /// order-agnostic estimate [exact with 1 hidden layer, estimate with more].
    pub valid: Option<ValidNll>,
    /// MADE mask sets K (connectivity-agnostic training; the test-time model is their mixture) [1].
    pub masks: Option<usize>,
    /// MADE input ordering: natural (raster) or random [random: with raster order the hidden units
    /// of low degree see only the blank top rows of an image; docs/density.md has the comparison].
    pub order: Option<Order>,
    /// MADE order-agnostic training: every mask set gets its own random ordering [false].
    pub order_agnostic: Option<bool>,
    /// MADE direct input→output connections, masked autoregressively (the MADE authors'
    /// `direct_input_connect=Output`) [false].
    pub direct: Option<bool>,
    pub seed: u64,
    pub epochs: u64,
    pub batch: usize,
    /// Micro-batches per batch, all ranks together: gradient accumulation in one process, the
    /// ranks' shares under mpirun. Unset: the number of ranks (1: the plain step).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub micro_batches: Option<usize>,
    /// `ring`: combine by MPI's all-reduce, giving up bit-identity across N. Unset: ordered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allreduce: Option<wick_core::dist::Allreduce>,
    /// Stop after this many epochs without a better valid NLL (0: never stop early).
    pub patience: u64,
    /// Epochs between valid-NLL evaluations; the last epoch is always evaluated. Unset: 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_every: Option<u64>,
    /// Clip gradients to this global L2 norm (0: no clipping).
    pub clip_grad: f64,
    /// Epochs between sample grids and weight histograms in TensorBoard (0: only at the end).
    pub log_every: u64,
    pub optim: OptimConfig,
    /// Unset: [`DensityConfig::default_schedule`], resolved (and saved) when a run starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
}

impl Default for DensityConfig {
    fn default() -> Self {
        DensityConfig {
            algo: DensityAlgo::Fvsbn,
            data: "digits".into(),
            data_dir: None,
            binarize: None,
            threshold: None,
            hidden: None,
            layers: None,
            orderings: None,
            valid: None,
            masks: None,
            order: None,
            order_agnostic: None,
            direct: None,
            seed: 0,
            epochs: 500,
            batch: 100,
            micro_batches: None,
            allreduce: None,
            patience: 50,
            eval_every: None,
            clip_grad: 0.0,
            log_every: 50,
            optim: OptimConfig::default(),
            schedule: None,
        }
    }
}

wick_core::choice! {
    /// The density models this trainer knows.
    pub enum DensityAlgo("density model") {
        /// Fully visible sigmoid belief net: logistic regression of x_d on x_<d (density model)
        Fvsbn = "fvsbn",
        /// NADE: neural autoregressive distribution estimator, tied weights, O(DH) (density model)
        Nade = "nade",
        /// MADE: masked autoencoder for distribution estimation, K masks, any ordering (density model)
        Made = "made",
        /// Order-agnostic NADE (DeepNADE): any conditional exact, ensembles of orderings (density model)
        Oanade = "oanade",
    }
}

wick_core::choice! {
    /// The figure order-agnostic NADE's early stopping compares each epoch.
    pub enum ValidNll("valid figure") {
        /// The exact valid NLL of the ensemble (D passes per ordering; 4 TFLOP per epoch for 2 layers of 500 on MNIST)
        Exact = "exact",
        /// The order-agnostic estimate of the mean NLL over orderings, same draws every epoch (one pass)
        Estimate = "estimate",
    }
}

impl DensityAlgo {
    /// Whether the option `field` (a config field, a flag's id) is one of this model's: the
    /// model-specific ones are refused elsewhere, and hidden from other models' `--help`.
    pub fn takes(self, field: &str) -> bool {
        use DensityAlgo::*;
        match field {
            "hidden" => self != Fvsbn,
            "layers" => matches!(self, Made | Oanade),
            "masks" | "order" | "order_agnostic" | "direct" => self == Made,
            "orderings" | "valid" => self == Oanade,
            _ => true,
        }
    }
}

impl DensityConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(self.epochs >= 1, "epochs must be at least 1, got {}", self.epochs);
        ensure!(self.batch >= 1, "batch size must be at least 1, got {}", self.batch);
        ensure!(self.micro_batches != Some(0), "micro-batches must be at least 1, got 0");
        ensure!(self.eval_every != Some(0), "eval-every must be at least 1, got 0");
        ensure!(self.clip_grad.is_finite() && self.clip_grad >= 0.0, "clip-grad must be a non-negative number, got {}", self.clip_grad);
        if let Some(t) = self.threshold {
            ensure!(t.is_finite(), "threshold must be a finite number, got {t}");
            let how = self.binarize_mode();
            let default = if self.binarize.is_none() { format!(" (the default for '{}')", self.data) } else { String::new() };
            ensure!(how == Binarize::Threshold, "--threshold applies to --binarize threshold, not {how}{default}");
        }
        self.optim.validate()?;
        if let Some(s) = &self.schedule {
            s.validate()?;
        }
        let set = [
            ("hidden", self.hidden.is_some()),
            ("layers", self.layers.is_some()),
            ("masks", self.masks.is_some()),
            ("order", self.order.is_some()),
            ("order_agnostic", self.order_agnostic.is_some()),
            ("direct", self.direct.is_some()),
            ("orderings", self.orderings.is_some()),
            ("valid", self.valid.is_some()),
        ];
        for (field, set) in set {
            let users: Vec<&str> = DensityAlgo::ALL.iter().filter(|a| a.takes(field)).map(|a| a.name()).collect();
            ensure!(!set || self.algo.takes(field), "--{} does not apply to {} (it is for {})", field.replace('_', "-"), self.algo, users.join(", "));
        }
        for (name, v) in [("hidden", self.hidden), ("layers", self.layers), ("masks", self.masks), ("orderings", self.orderings)] {
            ensure!(v != Some(0), "{name} must be at least 1, got 0");
        }
        Ok(())
    }

    /// The binarization the run uses: `binarize`, else the dataset's default.
    pub fn binarize_mode(&self) -> Binarize {
        self.binarize.unwrap_or_else(|| Binarize::default_for(&self.data))
    }

    /// The learning-rate schedule when `--schedule` is not given, for a run of `total_steps`
    /// updates: constant, except for order-agnostic NADE, whose rate decays to zero over the
    /// run by a cosine. Its gradient comes from one random observed set per example, weighted by
    /// up to D, and at a constant rate the model stalls on that noise: on binarized MNIST (1×500,
    /// Adam 1e-3, seed 0) 40 epochs decayed by a cosine reach test NLL 97.35 where 150 epochs
    /// at a constant rate reach 99.56 (docs/density.md). Uria et al.'s code decays its rate
    /// linearly to zero for the same reason.
    pub fn default_schedule(&self, total_steps: u64) -> Schedule {
        match self.algo {
            DensityAlgo::Oanade => Schedule::Cosine { total_steps: total_steps.max(1), warmup_steps: 0, min_factor: 0.0 },
            _ => Schedule::Constant,
        }
    }

    /// Fill the model's unset options with their defaults for `dim` inputs, so that the
    /// saved config states every value.
    pub fn with_model_defaults(&self, dim: usize) -> DensityConfig {
        let mut c = self.clone();
        if c.algo != DensityAlgo::Fvsbn {
            c.hidden = Some(c.hidden.unwrap_or(if dim <= 100 { 100 } else { 500 }));
        }
        if c.algo == DensityAlgo::Made {
            c.layers = Some(c.layers.unwrap_or(1));
            c.masks = Some(c.masks.unwrap_or(1));
            c.order = Some(c.order.unwrap_or(Order::Random));
            c.order_agnostic = Some(c.order_agnostic.unwrap_or(false));
            c.direct = Some(c.direct.unwrap_or(false));
        }
        if c.algo == DensityAlgo::Oanade {
            c.layers = Some(c.layers.unwrap_or(1));
            c.orderings = Some(c.orderings.unwrap_or(1));
            let layers = c.layers.unwrap_or(1);
            c.valid = Some(c.valid.unwrap_or(if layers > 1 { ValidNll::Estimate } else { ValidNll::Exact }));
        }
        c
    }
}

/// Build the model a (defaults-filled) config names for `dim` inputs, initialised from the
/// run's `init` stream.
pub fn build_model(cfg: &DensityConfig, dim: usize, device: &Device) -> Result<Box<dyn DensityModel>> {
    let cfg = cfg.with_model_defaults(dim);
    let mut rng = Rng::stream(cfg.seed, "init");
    let hidden = cfg.hidden.unwrap_or(0);
    ensure_fits(&cfg, dim)?;
    match cfg.algo {
        DensityAlgo::Fvsbn => Ok(Box::new(Fvsbn::new(dim, &mut rng, device)?)),
        DensityAlgo::Nade => Ok(Box::new(Nade::new(dim, hidden, &mut rng, device)?)),
        DensityAlgo::Made => Ok(Box::new(Made::new(
            dim,
            hidden,
            cfg.layers.unwrap_or(1),
            cfg.masks.unwrap_or(1),
            cfg.order.unwrap_or(Order::Random),
            cfg.order_agnostic.unwrap_or(false),
            cfg.seed,
            device,
        )?
        .with_direct(cfg.direct.unwrap_or(false))?)),
        DensityAlgo::Oanade => Ok(Box::new(
            OaNade::new(dim, hidden, cfg.layers.unwrap_or(1), cfg.orderings.unwrap_or(1), cfg.seed, device)?.with_valid_estimate(cfg.valid == Some(ValidNll::Estimate)),
        )),
    }
}

/// Refuse, in one line, a model that cannot fit in memory (see [`wick_core::mem`]): parameter
/// counts from the models' shapes, activations of one batch (NADE keeps a hidden vector per
/// dimension, `[B, D, H]`).
fn ensure_fits(cfg: &DensityConfig, dim: usize) -> Result<()> {
    use wick_core::mem::{ensure_fits, product, training_bytes};
    let (h, b, layers, masks) = (cfg.hidden.unwrap_or(0), cfg.batch, cfg.layers.unwrap_or(1), cfg.masks.unwrap_or(1));
    let (params, activations) = match cfg.algo {
        DensityAlgo::Fvsbn => (product(&[dim, dim]), product(&[b, dim])),
        DensityAlgo::Nade => (product(&[2, dim, h]), product(&[b, dim, h])),
        // W_x, W_m, V and the upper layers; per row the mask, the loss weights and 3 copies of
        // each hidden layer (pre-activation, activation, gradient).
        DensityAlgo::Oanade => (
            product(&[3, dim, h]).saturating_add(product(&[layers.saturating_sub(1), h, h])),
            product(&[b, 4, dim]).saturating_add(product(&[b, layers, h]).saturating_mul(3)),
        ),
        DensityAlgo::Made => {
            let direct = if cfg.direct == Some(true) { product(&[dim, dim]) } else { 0 };
            let weights = product(&[2, dim, h]).saturating_add(product(&[layers.saturating_sub(1), h, h])).saturating_add(direct);
            (weights.saturating_mul(1 + masks as u128), product(&[b, layers, h]).saturating_mul(3))
        }
    };
    let what = format!("{} with --hidden {h} on {dim} inputs", cfg.algo);
    ensure_fits(&what, training_bytes(params, activations), "use a smaller --hidden (or --batch)")
}

/// The run's data set and every row of it binarized as outside training (see
/// [`binarize::binarize`]); `data` overrides the config's (for `wick eval --data`).
pub fn load_data(cfg: &DensityConfig, data: Option<&str>) -> Result<(Dataset, Vec<f32>)> {
    let d = Dataset::load_from(data.unwrap_or(&cfg.data), cfg.data_dir.as_deref().map(std::path::Path::new))?;
    let x = binarize::binarize(&d, cfg.binarize_mode(), cfg.threshold);
    Ok((d, x))
}

/// Per-example NLL (nats) of every row of `x`, in batches.
pub fn per_example_nll(model: &dyn DensityModel, x: &Tensor, batch: usize) -> Result<Vec<f32>> {
    let n = x.dim(0)?;
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let b = batch.min(n - i);
        out.extend(model.nll(&x.narrow(0, i, b)?)?.to_vec1::<f32>()?);
        i += b;
    }
    Ok(out)
}

/// Mean NLL in nats (accumulated in f64).
pub fn mean_nll(model: &dyn DensityModel, x: &Tensor) -> Result<f64> {
    mean_nll_shared(model, x, &dist::World::single())
}

/// Rows per evaluation chunk.
const EVAL_CHUNK: usize = 1000;

/// [`mean_nll`] with the work shared among the ranks of `world` (every rank must call it, with
/// the same model and rows): chunk k of [`EVAL_CHUNK`] rows is evaluated by rank k mod N, the
/// per-example values are all-gathered back into row order, and the mean is summed in row order
/// in f64 on every rank. A chunk is the same computation whichever rank (or thread count) runs
/// it, so the figure has the same bits for any N; rank 0 no longer evaluates alone while the
/// others wait.
pub fn mean_nll_shared(model: &dyn DensityModel, x: &Tensor, world: &dist::World) -> Result<f64> {
    let n = x.dim(0)?;
    let (size, rank) = (world.size(), world.rank());
    let chunks = n.div_ceil(EVAL_CHUNK);
    let mut mine: Vec<f64> = Vec::new();
    for k in (rank..chunks).step_by(size) {
        let lo = k * EVAL_CHUNK;
        mine.extend(model.nll(&x.narrow(0, lo, EVAL_CHUNK.min(n - lo))?)?.to_vec1::<f32>()?.into_iter().map(f64::from));
    }
    let all = world.all_gather_var_f64(&mine);
    // Chunk k is rank (k mod N)'s (k div N)-th; every chunk before the last is full.
    let mut sum = 0.0f64;
    for k in 0..chunks {
        let (r, j) = (k % size, k / size);
        let len = EVAL_CHUNK.min(n - k * EVAL_CHUNK);
        sum = all[r][j * EVAL_CHUNK..j * EVAL_CHUNK + len].iter().fold(sum, |a, &v| a + v);
    }
    Ok(sum / n.max(1) as f64)
}

/// Where a run stands; saved in the checkpoint's metadata as `train_state`.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct State {
    /// The epoch in progress (1-based) and the batches of it already done.
    epoch: u64,
    batch: usize,
    /// Optimizer steps so far.
    step: u64,
    /// Sum and count of the batch losses of the epoch in progress.
    loss_sum: f64,
    loss_count: u64,
    best_valid: Option<f64>,
    best_epoch: u64,
    bad_epochs: u64,
    done: bool,
}

const SAMPLE_GRID: usize = 64;

/// Train (or continue) a density model; see the module docs.
pub fn train(cfg: &DensityConfig, rt: &Runtime) -> Result<Outcome> {
    cfg.validate()?;
    let dev = &rt.device;
    let (data, x) = load_data(cfg, None)?;
    let how = cfg.binarize_mode();
    let (xtr, xva, xte) = (
        data.split_tensor(&x, Split::Train, dev)?,
        data.split_tensor(&x, Split::Valid, dev)?,
        data.split_tensor(&x, Split::Test, dev)?,
    );
    let ntr = xtr.dim(0)?;
    ensure!(ntr > 0 && xva.dim(0)? > 0, "dataset '{}' has an empty train or valid split", cfg.data);
    let threshold = (how == Binarize::Threshold).then(|| cfg.threshold.unwrap_or(data.default_threshold));
    let world = dist::world();
    // Unset in a fresh run: one micro-batch per rank. Unset in a saved config: the run had one
    // (a resumed run keeps its arithmetic whatever the number of ranks).
    let m = cfg.micro_batches.unwrap_or(if rt.resume { 1 } else { world.size() });
    // An absolute --data-dir, so that --resume and `wick eval` find the data from any folder.
    let data_dir = cfg.data_dir.as_ref().map(|d| std::path::absolute(d).map_or(d.clone(), |p| p.display().to_string()));
    let nb = ntr.div_ceil(cfg.batch) as u64;
    let schedule = cfg.schedule.clone().unwrap_or_else(|| cfg.default_schedule(cfg.epochs * nb));
    let cfg = &DensityConfig {
        schedule: Some(schedule.clone()),
        binarize: Some(how),
        threshold,
        data_dir,
        micro_batches: (m > 1).then_some(m),
        ..cfg.with_model_defaults(data.dim)
    };
    let train_rows = data.indices(Split::Train);
    let dp = DataParallel::new(m, cfg.batch, world)?.with_allreduce(cfg.allreduce.unwrap_or_default()).on_device(dev)?;
    let model = build_model(cfg, data.dim, dev)?;
    let model_estimates = cfg.with_model_defaults(data.dim).valid == Some(ValidNll::Estimate);
    let mut opt = Optimizer::new(cfg.optim.clone(), model.params())?;

    // The data stream as it was at the start of the epoch in progress: the permutation is
    // drawn from it, so a run resumed mid-epoch redraws the same one.
    let mut epoch_rng = Rng::stream(cfg.seed, "data");
    let mut st = State { epoch: 1, batch: 0, step: 0, loss_sum: 0.0, loss_count: 0, best_valid: None, best_epoch: 0, bad_epochs: 0, done: false };
    let run = Session::open(rt, cfg)?;
    if let Some(ck) = run.checkpoint()? {
        model.params().load_from(&ck).map_err(|e| run.resume_error(e))?;
        opt.load_from(&ck, model.params())?;
        epoch_rng = ck.rng("data")?;
        st = ck.meta("train_state")?;
    }
    dist::check_start(&wick_core::config::to_toml(cfg)?, model.params())?;
    // A resumed run drops whatever the interrupted process logged after its checkpoint.
    let mut run = run.start(cfg.algo.name(), Some(st.epoch), cfg.epochs * nb, (st.epoch - 1) * nb + st.batch as u64)?;
    let t0 = Instant::now();
    let mut samples_here: u64 = 0;
    // Wall-clock seconds in the gradient steps (shares and combine), for metrics.json.
    let mut step_secs = 0.0f64;
    let log_every = if cfg.log_every == 0 { u64::MAX } else { cfg.log_every };

    while !st.done && st.epoch <= cfg.epochs {
        let mut rng = epoch_rng.clone();
        let perm = rng.permutation(ntr);
        // Dynamic binarization: this epoch's draw of every training row (keyed by epoch and row).
        let xtr_epoch = match how {
            Binarize::Dynamic => Tensor::from_vec(binarize::dynamic_bits(&data, &train_rows, cfg.seed, st.epoch), (ntr, data.dim), dev)?,
            _ => xtr.clone(),
        };
        let t_epoch = Instant::now();
        let mut epoch_samples = 0u64;
        // The rate at the epoch's first step (also in a run resumed mid-epoch), for TensorBoard.
        let lr = schedule.lr(cfg.optim.lr, (st.epoch - 1) * nb);
        while (st.batch as u64) < nb {
            let lo = st.batch * cfg.batch;
            let hi = (lo + cfg.batch).min(ntr);
            let t_step = Instant::now();
            // Where the model keeps its gradients in an order of its own (MADE's sorted units),
            // the ranks' sum reads them there instead of each rank unpacking its own.
            let layout = if world.size() > 1 { model.grad_layout(st.step) } else { None };
            let laid = layout.is_some();
            let combined = dp.step_laid(model.params(), hi - lo, layout, |a, z, flat| {
                let idx: Vec<u32> = perm[lo + a..lo + z].iter().map(|&i| i as u32).collect();
                let xb = xtr_epoch.index_select(&Tensor::new(idx.as_slice(), dev)?, 0)?;
                // One key per (epoch, example), for models that draw per-example randomness.
                let keys: Vec<u64> = idx.iter().map(|&i| (st.epoch - 1) * ntr as u64 + i as u64).collect();
                match flat {
                    // Data-parallel: the gradients straight into the combine's buffer where the model can.
                    Some(flat) if laid => model.loss_and_grads_laid(&xb, st.step, &keys, flat),
                    Some(flat) => model.loss_and_grads_flat(&xb, st.step, &keys, flat),
                    None => model.loss_and_grads_keyed(&xb, st.step, &keys).map(|(l, g)| (l, Some(g))),
                }
            })?;
            let mut lval = combined.loss;
            let interrupted = combined.interrupted;
            if wick_core::fault::poisoned("nan-loss") {
                lval = f64::NAN;
            }
            if !lval.is_finite() {
                let ckpt_path = run.dir().checkpoint();
                let kept = if ckpt_path.exists() {
                    format!("the last good checkpoint is '{}'", ckpt_path.display())
                } else {
                    "no checkpoint had been written yet".to_string()
                };
                bail!("training diverged at epoch {} batch {} (loss {lval}); {kept}; try a lower --lr or --clip-grad", st.epoch, st.batch + 1);
            }
            let lr_now = schedule.lr(cfg.optim.lr, st.step);
            if cfg.clip_grad > 0.0 {
                let mut grads = combined.into_grads(model.params())?;
                clip_grad_norm(model.params(), &mut grads, cfg.clip_grad)?;
                opt.step(model.params(), &grads, lr_now)?;
            } else {
                dp.update(&mut opt, model.params(), combined, lr_now)?; // sharded among ranks on one node
            }
            // The steps' time includes the update, where the node window's sum is taken.
            step_secs += t_step.elapsed().as_secs_f64();
            st.step += 1;
            st.batch += 1;
            st.loss_sum += lval * (hi - lo) as f64;
            st.loss_count += (hi - lo) as u64;
            epoch_samples += (hi - lo) as u64;
            run.progress.inc(1);
            if interrupted {
                dp.sync_optimizer(&mut opt, model.params())?;
                run.save(checkpoint(&*model, &opt, &epoch_rng, &st)?)?;
                return run.interrupt(st.step);
            }
        }
        samples_here += epoch_samples;
        let e = st.epoch;
        let train_nll = st.loss_sum / st.loss_count.max(1) as f64;
        // Every rank needs the figure for early stopping. The exact NLL is shared among the
        // ranks; order-agnostic NADE's estimate (--valid estimate, under its own tag) is rank 0's.
        let valid_tag = if model_estimates { "eval/valid_nll_estimate" } else { "eval/valid_nll" };
        // --eval-every N: the valid NLL after every N-th epoch and after the last one.
        let evaluate = e % cfg.eval_every.unwrap_or(1) == 0 || e == cfg.epochs;
        let valid_nll = match (evaluate, model_estimates) {
            (false, _) => 0.0,
            (true, false) => mean_nll_shared(&*model, &xva, world)?,
            (true, true) => {
                let estimate = match world.is_root() {
                    true => model.selection_nll(&xva)?.map_or_else(|| mean_nll(&*model, &xva), Ok)?,
                    false => 0.0,
                };
                world.broadcast_f64(estimate)
            }
        };
        run.tb.scalar("losses/train_nll", e, train_nll)?;
        if evaluate {
            run.tb.scalar(valid_tag, e, valid_nll)?;
        }
        run.tb.scalar("charts/learning_rate", e, lr)?;
        run.tb.scalar("charts/samples_per_s", e, epoch_samples as f64 / t_epoch.elapsed().as_secs_f64().max(1e-9))?;
        if e % log_every == 0 && world.is_root() {
            log_samples_and_weights(&mut run.tb, &*model, &data, &x, cfg.seed, e)?;
        }
        run.tb.flush()?;
        run.fault_after_log();
        run.progress.message(match evaluate {
            true => format!("epoch {e} train_nll {train_nll:.3} valid_nll {valid_nll:.3}"),
            false => format!("epoch {e} train_nll {train_nll:.3}"),
        });
        if !evaluate {
            // Not evaluated (--eval-every): neither a new best nor a step toward early stopping.
        } else if st.best_valid.is_none_or(|b| valid_nll < b) {
            st.best_valid = Some(valid_nll);
            st.best_epoch = e;
            st.bad_epochs = 0;
            let mut best = Checkpoint::new();
            model.params().save_to(&mut best)?;
            for (name, t) in model.buffers()? {
                best.put_tensor(&name, &t)?;
            }
            best.set_meta("epoch", &e);
            best.set_meta("valid_nll", &valid_nll);
            run.save_best(best)?;
        } else {
            // Epochs since the best one (one more per epoch when every epoch is evaluated).
            st.bad_epochs = e - st.best_epoch;
            if cfg.patience > 0 && st.bad_epochs >= cfg.patience {
                st.done = true;
            }
        }
        st.epoch += 1;
        st.batch = 0;
        st.loss_sum = 0.0;
        st.loss_count = 0;
        epoch_rng = rng;
        dp.sync_optimizer(&mut opt, model.params())?;
        run.save(checkpoint(&*model, &opt, &epoch_rng, &st)?)?;
        run.tb.flush()?;
    }
    run.progress.finish();
    let train_secs = t0.elapsed().as_secs_f64();

    // Final figures come from the best model (rank 0's file, sent to every rank), evaluated
    // by all the ranks together.
    let best = dist::load_checkpoint_from_root(&run.dir().best())?.ok_or_else(|| wick_core::Error::new(format!("'{}' is missing: the run has no best model to evaluate", run.dir().best().display())))?;
    model.params().load_from(&best)?;
    // Where the model's evaluation is costly (the per-epoch figure is an estimate), the train
    // figure is the exact NLL of the first 10,000 training rows rather than of all of them.
    let train_rows = if model_estimates { xtr.dim(0)?.min(10_000) } else { xtr.dim(0)? };
    let shared = |x: &Tensor| mean_nll_shared(&*model, x, world);
    let (train_nll, valid_nll, test_nll) = (shared(&xtr.narrow(0, 0, train_rows)?)?, shared(&xva)?, shared(&xte)?);
    if !world.is_root() {
        return run.finish(serde_json::Value::Null);
    }
    let last_epoch = st.epoch - 1;
    // Logged at step epochs_run + 1, past every epoch's step, so that a run killed during this
    // final phase purges it on resume (resume_at(st.epoch)) and logs it exactly once.
    run.tb.scalar("eval/test_nll", st.epoch, test_nll)?;
    log_samples_and_weights(&mut run.tb, &*model, &data, &x, cfg.seed, st.epoch)?;
    let metrics = serde_json::json!({
        "algo": cfg.algo,
        "data": cfg.data,
        "binarize": how.as_str(),
        "seed": cfg.seed,
        "params": model.params().numel(),
        "hidden": cfg.hidden,
        "masks": cfg.masks,
        "layers": cfg.layers,
        "orderings": cfg.orderings,
        "best_epoch": st.best_epoch,
        "epochs_run": last_epoch,
        "stopped_early": last_epoch < cfg.epochs,
        "train_nll": train_nll,
        "train_nll_rows": train_rows,
        "valid_nll": valid_nll,
        "test_nll": test_nll,
        "optimizer_steps": st.step,
        "train_samples_per_s": if samples_here > 0 { serde_json::json!(samples_here as f64 / train_secs.max(1e-9)) } else { serde_json::Value::Null },
        "step_seconds": step_secs,
        "combine_seconds": dp.combine_seconds(),
    });
    run.finish(metrics)
}

/// The full state of a run: parameters, Adam's moments, the data stream, the counters.
fn checkpoint(model: &dyn DensityModel, opt: &Optimizer, data_rng: &Rng, st: &State) -> Result<Checkpoint> {
    let mut ck = Checkpoint::new();
    model.params().save_to(&mut ck)?;
    opt.save_to(&mut ck, model.params())?;
    ck.put_rng("data", data_rng);
    ck.set_meta("train_state", st);
    Ok(ck)
}

/// Completions of the first `n` test images with the top half observed, interleaved with the
/// originals: (original, completion) pairs, `2n` images.
fn completion_pairs(model: &dyn DensityModel, data: &Dataset, x: &[f32], n: usize, rng: &mut Rng) -> Result<(Vec<f32>, usize)> {
    let idx: Vec<usize> = data.indices(Split::Test).into_iter().take(n).collect();
    let vals = Dataset::gather(x, data.dim, &idx);
    let mask = wick_core::mask::observed("top-half", data.height, data.width)?;
    let done = model.sample(idx.len(), rng, Some((&vals, &mask)))?;
    let mut out = Vec::with_capacity(2 * vals.len());
    for i in 0..idx.len() {
        out.extend_from_slice(&vals[i * data.dim..(i + 1) * data.dim]);
        out.extend_from_slice(&done[i * data.dim..(i + 1) * data.dim]);
    }
    Ok((out, 2 * idx.len()))
}

/// Text for vector data: per-dimension marginals of `samples` beside those of the training
/// rows of `x`, then the first 16 sample rows as 0/1 strings.
pub fn vector_summary(samples: &[f32], data: &Dataset, x: &[f32]) -> String {
    let d = data.dim;
    let mean = |rows: &mut dyn Iterator<Item = &[f32]>| -> Vec<f64> {
        let (mut m, mut n) = (vec![0f64; d], 0usize);
        for r in rows {
            m.iter_mut().zip(r).for_each(|(a, &b)| *a += b as f64);
            n += 1;
        }
        m.iter().map(|v| v / n.max(1) as f64).collect()
    };
    let ms = mean(&mut samples.chunks(d));
    let train = data.indices(Split::Train);
    let mt = mean(&mut train.iter().map(|&i| &x[i * d..(i + 1) * d]));
    let n = samples.len() / d.max(1);
    let mut s = format!("| dim | P(x=1), {n} samples | P(x=1), train |\n| --- | --- | --- |\n");
    for j in 0..d {
        s.push_str(&format!("| {j} | {:.3} | {:.3} |\n", ms[j], mt[j]));
    }
    s.push_str("\nsamples:\n\n```\n");
    for r in samples.chunks(d).take(16) {
        s.extend(r.iter().map(|&b| if b >= 0.5 { '1' } else { '0' }));
        s.push('\n');
    }
    s.push_str("```\n");
    s
}

fn log_samples_and_weights(tb: &mut TbLogger, model: &dyn DensityModel, data: &Dataset, x: &[f32], seed: u64, step: u64) -> Result<()> {
    let mut rng = Rng::stream_indexed(seed, "tb-samples", step);
    let s = model.sample(SAMPLE_GRID, &mut rng, None)?;
    if data.is_image() {
        let (px, h, w) = display_grid(&s, SAMPLE_GRID, data.height, data.width, 0);
        tb.image("samples", step, &px, h, w, 1)?;
        let (pairs, n) = completion_pairs(model, data, x, SAMPLE_GRID / 2, &mut rng)?;
        let (px, h, w) = display_grid(&pairs, n, data.height, data.width, 0);
        tb.image("completions_top_half", step, &px, h, w, 1)?;
    } else {
        tb.text("samples", step, &vector_summary(&s, data, x))?;
    }
    for (name, var) in model.params().names().iter().zip(model.params().vars()) {
        let v = var.flatten_all()?.to_vec1::<f32>()?;
        tb.histogram(&format!("params/{name}"), step, &v)?;
    }
    Ok(())
}

