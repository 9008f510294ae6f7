//! The pretraining trainer: an objective (masked prediction, SimCLR or VICReg) on the train split's
//! images, no labels; linear probes at intervals and at the end.
//!
//! Per epoch: a permutation of the train split from `Rng::stream_indexed(seed, "data", epoch)`;
//! per optimizer step t, masks from `Rng::stream_indexed(seed, "mask", t)`, and the augmented
//! views of the batch's i-th image from `Rng::stream_indexed(seed, "augment", t·batch + i)` (one
//! stream per image, so views can be drawn on several threads) — every draw is a function of
//! (seed, epoch, step), so a run resumed mid-epoch continues exactly. Parameters are initialised from the `init` stream; the random-init baseline is the
//! same encoder straight from that stream.
//!
//! Data-parallel (`mpirun -np N`, core's dist.rs): `batch` is the global batch, cut into
//! `micro_batches` contiguous parts; masked prediction sums its parts' gradients in order as the
//! density trainers do, SimCLR and VICReg all-gather their parts' projections and take the loss
//! over the whole batch ([`micro_batch_grads`]). N ranks give the bits of one process with
//! `--micro-batches N`; rank 0 alone probes, logs and writes files.
//!
//! TensorBoard (step = epoch): `losses/masked_bce`, `losses/nt_xent` or `losses/vicreg` (mean over the epoch's
//! batches), `charts/learning_rate`, `charts/samples_per_s`, `eval/probe_acc_all` and
//! `eval/probe_acc_100` every `probe_every` epochs and at the end, the baselines
//! `eval/raw_probe_acc_{all,100}` and `eval/random_probe_acc_{all,100}` once at step 0; images
//! `masked_inputs` (original | what the encoder sees | prediction, per row) or `view_pairs` (SimCLR, VICReg)
//! (original | view 1 | view 2).

use crate::augment::Augment;
use crate::encoder::{Encoder, EncoderKind};
use crate::masked::{Hide, MaskSpec, MaskedPrediction};
use crate::probe::{probe, Labels, ProbeData};
use crate::simclr::SimClr;
use crate::vicreg::VicReg;
use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use wick_core::checkpoint::Checkpoint;
use wick_core::data::{Dataset, Split};
use wick_core::dist::{self, DataParallel};
use wick_core::image::display_grid;
use wick_core::optim::{clip_grad_norm, OptimConfig, Optimizer};
use wick_core::params::Params;
use wick_core::rng::Rng;
use wick_core::run::{Outcome, Runtime};
use wick_core::session::Session;
use wick_core::schedule::Schedule;
use wick_core::tb::TbLogger;
use wick_core::{bail, ensure, Result};

/// Every hyperparameter of a pretraining run; `config.toml` holds the resolved values.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PretrainConfig {
    /// The objective.
    pub algo: Objective,
    pub data: String,
    /// Where `mnist` is looked for first (see [`wick_core::data::mnist_dir`]); saved absolute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    pub encoder: EncoderKind,
    pub seed: u64,
    pub epochs: u64,
    pub batch: usize,
    /// Micro-batches per batch, all ranks together: gradient accumulation in one process, the
    /// ranks' shares under mpirun (docs/distributed.md). Unset: the number of ranks (1: the
    /// plain step).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub micro_batches: Option<usize>,
    /// `ring`: combine by MPI's all-reduce, giving up bit-identity across N. Unset: ordered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allreduce: Option<wick_core::dist::Allreduce>,
    /// SimCLR temperature τ.
    pub temperature: f64,
    /// Masked prediction: `ratio` hides `mask_ratio` of the patches; `order-agnostic` hides the
    /// last P − d patches of a random ordering, d ~ U{0, …, P−1} (Uria et al. 2014).
    pub mask: MaskMode,
    /// Masked prediction: fraction of patches hidden, in (0, 1) (with `mask = "ratio"`).
    pub mask_ratio: f64,
    /// Masked prediction: side of the square patches hidden together (1: pixels). Unset: a
    /// quarter of the image side (7 on MNIST: 16 patches) for images of side ≥ 16, else 1.
    pub mask_patch: Option<usize>,
    /// Epochs between linear probes (0: only at the end).
    pub probe_every: u64,
    /// Epochs between image grids in TensorBoard (0: only at the end).
    pub log_every: u64,
    /// Clip gradients to this global L2 norm (0: no clipping).
    pub clip_grad: f64,
    pub optim: OptimConfig,
    pub schedule: Schedule,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        PretrainConfig {
            algo: Objective::Masked,
            data: "digits".into(),
            data_dir: None,
            encoder: EncoderKind::Mlp,
            seed: 0,
            epochs: 50,
            batch: 256,
            micro_batches: None,
            allreduce: None,
            temperature: 0.5,
            mask: MaskMode::Ratio,
            mask_ratio: 0.5,
            mask_patch: None,
            probe_every: 10,
            log_every: 10,
            clip_grad: 0.0,
            optim: OptimConfig::default(),
            schedule: Schedule::Constant,
        }
    }
}

wick_core::choice! {
    /// How masked prediction chooses how many patches to hide (see [`wick_core::mask::Hide`]).
    pub enum MaskMode("mask") {
        /// A fixed fraction of the patches, --mask-ratio
        Ratio = "ratio",
        /// The last P−d of a random ordering, d uniform in 0..P (Uria et al. 2014's order-agnostic draw)
        OrderAgnostic = "order-agnostic",
    }
}

impl PretrainConfig {
    /// The masks of masked prediction for h×w images (after [`PretrainConfig::with_data_defaults`]).
    pub fn mask_spec(&self, height: usize, width: usize) -> MaskSpec {
        let hide = match self.mask {
            MaskMode::Ratio => Hide::Ratio(self.mask_ratio),
            MaskMode::OrderAgnostic => Hide::OrderAgnostic,
        };
        MaskSpec { height, width, patch: self.mask_patch.unwrap_or(1), hide }
    }
}

wick_core::choice! {
    /// The self-supervised objectives this trainer knows.
    pub enum Objective("objective") {
        /// Masked prediction: hide patches/pixels, predict them from the rest (self-supervised encoder)
        Masked = "masked",
        /// SimCLR: contrast two augmented views, NT-Xent loss (self-supervised encoder)
        Simclr = "simclr",
        /// VICReg: variance-invariance-covariance regularisation of two augmented views (self-supervised encoder)
        Vicreg = "vicreg",
    }
}

impl Objective {
    /// Whether the option `field` (a config field, a flag's id) is one of this objective's
    /// (the others' are hidden from its `--help`).
    pub fn takes(self, field: &str) -> bool {
        match field {
            "temperature" => self == Objective::Simclr,
            "mask" | "mask_ratio" | "mask_patch" => self == Objective::Masked,
            _ => true,
        }
    }
}

impl PretrainConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(self.epochs >= 1, "epochs must be at least 1, got {}", self.epochs);
        ensure!(self.batch >= 2, "batch size must be at least 2, got {}", self.batch);
        ensure!(self.micro_batches != Some(0), "micro-batches must be at least 1, got 0");
        ensure!(self.temperature > 0.0 && self.temperature.is_finite(), "temperature must be a positive number, got {}", self.temperature);
        ensure!(self.mask_ratio > 0.0 && self.mask_ratio < 1.0, "mask ratio must be in (0, 1), got {}", self.mask_ratio);
        ensure!(self.mask_patch != Some(0), "mask patch must be at least 1, got 0");
        ensure!(self.clip_grad.is_finite() && self.clip_grad >= 0.0, "clip-grad must be a non-negative number, got {}", self.clip_grad);
        self.optim.validate()?;
        self.schedule.validate()
    }

    /// The mask patch for images of side `side` (the config's, or the default).
    pub fn with_data_defaults(&self, side: usize) -> PretrainConfig {
        let mut c = self.clone();
        if c.algo == Objective::Masked {
            c.mask_patch = Some(c.mask_patch.unwrap_or(if side >= 16 { side / 4 } else { 1 }));
        }
        c
    }
}

/// Images as the encoders see them: grey values in [0, 1].
pub fn images(data: &Dataset) -> Vec<f32> {
    data.scaled()
}

/// The labels of one split.
pub fn split_labels(data: &Dataset, split: Split) -> Result<Vec<u8>> {
    let Some(labels) = &data.labels else { bail!("dataset '{}' has no labels; the linear probe needs them", data.name) };
    Ok(data.indices(split).into_iter().map(|i| labels[i]).collect())
}

/// Probe inputs from a feature map applied to every split.
pub fn probe_data(data: &Dataset, x: &[f32], dev: &Device, features: &dyn Fn(&Tensor) -> Result<Vec<f32>>, dim: usize) -> Result<ProbeData> {
    let one = |s: Split| -> Result<(Vec<f32>, Vec<u8>)> { Ok((features(&data.split_tensor(x, s, dev)?)?, split_labels(data, s)?)) };
    Ok(ProbeData { dim, train: one(Split::Train)?, valid: one(Split::Valid)?, test: one(Split::Test)? })
}

/// Test accuracy with all labels and with 10 per class.
pub fn probe_both(pd: &ProbeData, dev: &Device) -> Result<(f64, f64)> {
    Ok((probe(pd, Labels::All, dev)?.test_acc, probe(pd, Labels::PerClass, dev)?.test_acc))
}

/// Probe accuracies (all labels, 10 per class) of an encoder's features.
pub fn probe_encoder(enc: &Encoder, data: &Dataset, x: &[f32], dev: &Device) -> Result<(f64, f64)> {
    probe_both(&probe_data(data, x, dev, &|t: &Tensor| enc.features(t, FEATURE_BATCH), enc.feature_dim())?, dev)
}

/// Probe accuracies (all labels, 10 per class) of the raw pixels.
pub fn probe_raw(data: &Dataset, x: &[f32], dev: &Device) -> Result<(f64, f64)> {
    probe_both(&probe_data(data, x, dev, &|t: &Tensor| Ok(t.flatten_all()?.to_vec1::<f32>()?), data.dim)?, dev)
}

/// An encoder with its parameters alone (for probes, embeddings and the random-init baseline).
pub fn build_encoder(kind: EncoderKind, data: &Dataset, seed: u64, dev: &Device) -> Result<(Encoder, Params)> {
    let mut p = Params::new();
    let enc = Encoder::new(kind, data.height, data.width, &mut p, &mut Rng::stream(seed, "init"), dev)?;
    Ok((enc, p))
}

/// The objective's head.
enum Head {
    Masked(MaskedPrediction, MaskSpec),
    SimClr(SimClr, Augment, f64),
    VicReg(VicReg, Augment),
}

/// Where a run stands; saved in the checkpoint's metadata as `train_state`.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct State {
    epoch: u64,
    batch: usize,
    step: u64,
    loss_sum: F64,
    loss_count: u64,
    /// raw all, raw 100, random all, random 100: computed once at the start.
    baselines: [F64; 4],
}

/// An f64 stored in checkpoint metadata by its bits: JSON text does not round-trip every f64
/// exactly (serde_json's default parser can be off by an ulp), and a resumed run must continue
/// with the very same numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct F64(f64);

impl Serialize for F64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_u64(self.0.to_bits())
    }
}

impl<'de> Deserialize<'de> for F64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<F64, D::Error> {
        Ok(F64(f64::from_bits(u64::deserialize(d)?)))
    }
}

const FEATURE_BATCH: usize = 500;

/// Train (or continue) a pretraining run; see the module docs.
pub fn train(cfg: &PretrainConfig, rt: &Runtime) -> Result<Outcome> {
    cfg.validate()?;
    let dev = &rt.device;
    let data = Dataset::load_from(&cfg.data, cfg.data_dir.as_deref().map(std::path::Path::new))?;
    ensure!(data.labels.is_some(), "dataset '{}' has no labels; pretraining runs are judged by a linear probe that needs them", cfg.data);
    ensure!(data.is_image(), "dataset '{}' holds {}-dimensional vectors, not images; pretraining needs images (patch masks, crops)", cfg.data, data.dim);
    let world = dist::world();
    // Unset in a fresh run: one micro-batch per rank. Unset in a saved config: the run had one
    // (a resumed run keeps its arithmetic whatever the number of ranks).
    let m = cfg.micro_batches.unwrap_or(if rt.resume { 1 } else { world.size() });
    // An absolute --data-dir, so that --resume, `wick probe` and `wick embed` find the data from any folder.
    let data_dir = cfg.data_dir.as_ref().map(|d| std::path::absolute(d).map_or(d.clone(), |p| p.display().to_string()));
    let cfg = &PretrainConfig { micro_batches: (m > 1).then_some(m), data_dir, ..cfg.with_data_defaults(data.height.min(data.width)) };
    let dp = DataParallel::new(m, cfg.batch, world)?.with_allreduce(cfg.allreduce.unwrap_or_default()).on_device(dev)?;
    let x = images(&data);
    let xtr = data.split_tensor(&x, Split::Train, dev)?;
    let ntr = xtr.dim(0)?;
    ensure!(ntr >= 2, "dataset '{}' has fewer than 2 training rows", cfg.data);
    // VICReg's variance and covariance divide by n − 1: the last batch of an epoch needs two rows too.
    if cfg.algo == Objective::Vicreg && ntr % cfg.batch == 1 {
        let fix = [cfg.batch - 1, cfg.batch + 1, cfg.batch + 2].into_iter().find(|&b| b >= 2 && ntr % b != 1).unwrap_or(ntr);
        bail!("vicreg needs at least 2 rows in every batch, but --batch {} leaves 1 row in the last batch of the {ntr} training rows: use --batch {fix}, for example", cfg.batch);
    }

    let mut params = Params::new();
    let mut init = Rng::stream(cfg.seed, "init");
    let enc = Encoder::new(cfg.encoder, data.height, data.width, &mut params, &mut init, dev)?;
    let head = match cfg.algo {
        Objective::Masked => {
            let spec = cfg.mask_spec(data.height, data.width);
            spec.validate()?;
            Head::Masked(MaskedPrediction::new(enc.feature_dim(), data.dim, &mut params, &mut init, dev)?, spec)
        }
        Objective::Vicreg => Head::VicReg(VicReg::new(enc.feature_dim(), &mut params, &mut init, dev)?, Augment::for_images(data.height, data.width)),
        Objective::Simclr => Head::SimClr(SimClr::new(enc.feature_dim(), &mut params, &mut init, dev)?, Augment::for_images(data.height, data.width), cfg.temperature),
    };
    let mut opt = Optimizer::new(cfg.optim.clone(), &params)?;

    let run = Session::open(rt, cfg)?;
    let resumed = match run.checkpoint()? {
        Some(ck) => {
            params.load_from(&ck).map_err(|e| run.resume_error(e))?;
            opt.load_from(&ck, &params)?;
            Some(ck.meta::<State>("train_state")?)
        }
        None => None,
    };
    dist::check_start(&wick_core::config::to_toml(cfg)?, &params)?;
    // A resumed run drops whatever the interrupted process logged after its checkpoint (all
    // of it, baselines included, if it wrote none).
    let nb = ntr.div_ceil(cfg.batch) as u64;
    let (mut run, mut st) = match resumed {
        Some(st) => (run.start(cfg.algo.name(), Some(st.epoch), cfg.epochs * nb, (st.epoch - 1) * nb + st.batch as u64)?, st),
        None => {
            let mut run = run.start(cfg.algo.name(), Some(0), cfg.epochs * nb, 0)?;
            // Baselines, once: raw pixels, and this encoder as initialised (rank 0 alone: the
            // other ranks write nothing, and a probe changes no parameter).
            let (raw, rnd) = if world.is_root() { (probe_raw(&data, &x, dev)?, probe_encoder(&enc, &data, &x, dev)?) } else { ((0.0, 0.0), (0.0, 0.0)) };
            for (tag, v) in [("eval/raw_probe_acc_all", raw.0), ("eval/raw_probe_acc_100", raw.1), ("eval/random_probe_acc_all", rnd.0), ("eval/random_probe_acc_100", rnd.1)] {
                run.tb.scalar(tag, 0, v)?;
            }
            (run, State { epoch: 1, batch: 0, step: 0, loss_sum: F64(0.0), loss_count: 0, baselines: [F64(raw.0), F64(raw.1), F64(rnd.0), F64(rnd.1)] })
        }
    };

    let mut samples_here = 0u64;
    let mut train_secs = 0f64;
    let every = |n: u64| if n == 0 { u64::MAX } else { n };
    let loss_tag = match head {
        Head::Masked(..) => "losses/masked_bce",
        Head::SimClr(..) => "losses/nt_xent",
        Head::VicReg(..) => "losses/vicreg",
    };
    let mut last_probe = None;
    // Wall-clock seconds in the gradient steps (shares, gathered loss and combine), for metrics.json.
    let mut step_secs = 0.0f64;

    while st.epoch <= cfg.epochs {
        let perm = Rng::stream_indexed(cfg.seed, "data", st.epoch).permutation(ntr);
        let t_epoch = Instant::now();
        let mut epoch_samples = 0u64;
        // The rate at the epoch's first step (also in a run resumed mid-epoch), for TensorBoard.
        let lr = cfg.schedule.lr(cfg.optim.lr, (st.epoch - 1) * nb);
        while (st.batch as u64) < nb {
            let lo = st.batch * cfg.batch;
            let hi = (lo + cfg.batch).min(ntr);
            let idx: Vec<u32> = perm[lo..hi].iter().map(|&i| i as u32).collect();
            let xb = xtr.index_select(&Tensor::new(idx.as_slice(), dev)?, 0)?;
            let t_step = Instant::now();
            let combined = if dp.micro_batches == 1 {
                let (loss, grads) = step_grads(&head, &enc, &xb, cfg.seed, st.step, cfg.batch)?;
                dist::Combined::new(loss, grads, run.interrupted())
            } else {
                micro_batch_grads(&dp, &params, &head, &enc, &xb, cfg.seed, st.step, cfg.batch)?
            };
            let (lval, interrupted) = (combined.loss, combined.interrupted);
            if !lval.is_finite() {
                bail!("training diverged at epoch {} batch {} (loss {lval}); try a lower --lr or --clip-grad", st.epoch, st.batch + 1);
            }
            let lr_now = cfg.schedule.lr(cfg.optim.lr, st.step);
            if cfg.clip_grad > 0.0 {
                let mut grads = combined.into_grads(&params)?;
                clip_grad_norm(&params, &mut grads, cfg.clip_grad)?;
                opt.step(&params, &grads, lr_now)?;
            } else {
                dp.update(&mut opt, &params, combined, lr_now)?; // sharded among ranks on one node
            }
            // The steps' time includes the update, where the node window's sum is taken.
            step_secs += t_step.elapsed().as_secs_f64();
            st.step += 1;
            st.batch += 1;
            st.loss_sum.0 += lval * (hi - lo) as f64;
            st.loss_count += (hi - lo) as u64;
            epoch_samples += (hi - lo) as u64;
            run.progress.inc(1);
            if interrupted {
                dp.sync_optimizer(&mut opt, &params)?;
                run.save(checkpoint(&params, &opt, &st)?)?;
                return run.interrupt(st.step);
            }
        }
        let secs = t_epoch.elapsed().as_secs_f64();
        samples_here += epoch_samples;
        train_secs += secs;
        let e = st.epoch;
        let train_loss = st.loss_sum.0 / st.loss_count.max(1) as f64;
        run.tb.scalar(loss_tag, e, train_loss)?;
        run.tb.scalar("charts/learning_rate", e, lr)?;
        run.tb.scalar("charts/samples_per_s", e, epoch_samples as f64 / secs.max(1e-9))?;
        let mut msg = format!("epoch {e} {} {train_loss:.4}", loss_tag.trim_start_matches("losses/"));
        // Rank 0 alone probes and draws (the others log nothing).
        if world.is_root() && (e % every(cfg.probe_every) == 0 || e == cfg.epochs) {
            let acc = probe_encoder(&enc, &data, &x, dev)?;
            run.tb.scalar("eval/probe_acc_all", e, acc.0)?;
            run.tb.scalar("eval/probe_acc_100", e, acc.1)?;
            msg.push_str(&format!(" probe_acc_all {:.4} probe_acc_100 {:.4}", acc.0, acc.1));
            last_probe = Some(acc);
        }
        if world.is_root() && (e % every(cfg.log_every) == 0 || e == cfg.epochs) {
            log_images(&mut run.tb, &head, &enc, &data, &x, cfg.seed, e, dev)?;
        }
        run.tb.flush()?;
        run.fault_after_log();
        run.progress.message(msg);
        st.epoch += 1;
        st.batch = 0;
        st.loss_sum = F64(0.0);
        st.loss_count = 0;
        dp.sync_optimizer(&mut opt, &params)?;
        run.save(checkpoint(&params, &opt, &st)?)?;
    }
    run.progress.finish();
    if !world.is_root() {
        return run.finish(serde_json::Value::Null);
    }
    let (acc_all, acc_100) = match last_probe {
        Some(a) => a,
        // Resumed after the last epoch had finished: probe the final encoder again.
        None => probe_encoder(&enc, &data, &x, dev)?,
    };
    let b = st.baselines.map(|v| v.0);
    let metrics = serde_json::json!({
        "algo": cfg.algo,
        "data": cfg.data,
        "encoder": cfg.encoder.to_string(),
        "seed": cfg.seed,
        "params": params.numel(),
        "epochs_run": st.epoch - 1,
        "optimizer_steps": st.step,
        "probe_acc_all": acc_all,
        "probe_acc_100": acc_100,
        "raw_probe_acc_all": b[0],
        "raw_probe_acc_100": b[1],
        "random_probe_acc_all": b[2],
        "random_probe_acc_100": b[3],
        "train_seconds": (train_secs * 10.0).round() / 10.0,
        "train_samples_per_s": if samples_here > 0 { serde_json::json!(samples_here as f64 / train_secs.max(1e-9)) } else { serde_json::Value::Null },
        "step_seconds": step_secs,
        "combine_seconds": dp.combine_seconds(),
    });
    run.finish(metrics)
}

/// The loss and every parameter's gradient for batch `x` at optimizer step `step`: on the CPU
/// forward and backward run by hand for SimCLR, VICReg and fixed-ratio masked prediction
/// ([`crate::host`]; [`SimClr::loss_and_grads_host`], [`VicReg::loss_and_grads_host`],
/// [`MaskedPrediction::loss_and_grads_host`]: the same values as Candle's backward of
/// [`step_loss`]), otherwise through Candle's autograd (order-agnostic masks' per-image weights,
/// other devices).
fn step_grads(head: &Head, enc: &Encoder, x: &Tensor, seed: u64, step: u64, batch: usize) -> Result<(f64, GradStore)> {
    let by_hand = match head {
        Head::SimClr(..) | Head::VicReg(..) => true,
        Head::Masked(_, spec) => matches!(spec.hide, Hide::Ratio(_)),
    };
    if by_hand && crate::host::available(enc, x.device()) {
        let n = x.dim(0)?;
        let xv = x.flatten_all()?.to_vec1::<f32>()?;
        let (loss, grads) = match head {
            Head::SimClr(h, aug, tau) => {
                let (a, b) = aug.view_pairs(&xv, seed, "augment", step * batch as u64);
                h.loss_and_grads_host(enc, &a, &b, n, *tau)?
            }
            Head::VicReg(h, aug) => {
                let (a, b) = aug.view_pairs(&xv, seed, "augment", step * batch as u64);
                h.loss_and_grads_host(enc, &a, &b, n)?
            }
            Head::Masked(h, spec) => h.loss_and_grads_host(enc, &xv, &spec.draw(n, &mut Rng::stream_indexed(seed, "mask", step)), n)?,
        };
        return Ok((loss as f64, grads));
    }
    let loss = step_loss(head, enc, x, seed, step, batch)?;
    let lval = loss.to_scalar::<f32>()? as f64;
    Ok((lval, loss.backward()?))
}

/// The objective's loss on batch `x` at optimizer step `step` (batches of `batch` rows, the last
/// one possibly shorter).
fn step_loss(head: &Head, enc: &Encoder, x: &Tensor, seed: u64, step: u64, batch: usize) -> Result<Tensor> {
    let (n, d) = x.dims2()?;
    let dev = x.device();
    Ok(match head {
        Head::Masked(h, spec) => {
            let m = spec.draw(n, &mut Rng::stream_indexed(seed, "mask", step));
            let mt = Tensor::from_vec(m, (n, d), dev)?;
            match spec.hide {
                Hide::Ratio(_) => h.loss(enc, x, &mt)?,
                // Each image's hidden pixels weigh 1/(its hidden count): the per-image mean of
                // Uria et al.'s D/(D − d)-weighted loss, whatever d each image drew.
                Hide::OrderAgnostic => h.loss_weighted(enc, x, &mt, &mt.broadcast_div(&mt.sum_keepdim(1)?)?)?,
            }
        }
        Head::SimClr(h, aug, tau) => {
            let xv = x.flatten_all()?.to_vec1::<f32>()?;
            let (a, b) = aug.view_pairs(&xv, seed, "augment", step * batch as u64);
            h.loss(enc, &Tensor::from_vec(a, (n, d), dev)?, &Tensor::from_vec(b, (n, d), dev)?, *tau)?
        }
        Head::VicReg(h, aug) => {
            let xv = x.flatten_all()?.to_vec1::<f32>()?;
            let (a, b) = aug.view_pairs(&xv, seed, "augment", step * batch as u64);
            h.loss(enc, &Tensor::from_vec(a, (n, d), dev)?, &Tensor::from_vec(b, (n, d), dev)?)?
        }
    })
}

/// The loss and gradients of global batch `x` cut into `dp`'s micro-batches (more than one),
/// this rank computing its share (core's dist.rs; docs/distributed.md). Every random draw is the
/// one-process step's: the step's masks are drawn for the whole batch and each micro-batch takes
/// its rows; image i's views come from its own stream `step·batch + i`. So the result depends on
/// the number of micro-batches, never on the number of ranks.
///
/// - Masked prediction, a mean over hidden pixels: micro-batch s of n_s rows divides its sum by
///   `Σm · n_s/b` (Σm the whole batch's hidden count), so its weight n_s/b in the ordered sum
///   makes it its share of the batch's loss (order-agnostic masks: a mean over images already).
/// - SimCLR and VICReg need the whole batch (NT-Xent's negatives, VICReg's variance and
///   covariance): [`TwoViews`] through [`DataParallel::step_gathered`].
#[allow(clippy::too_many_arguments)]
fn micro_batch_grads(dp: &DataParallel, params: &Params, head: &Head, enc: &Encoder, x: &Tensor, seed: u64, step: u64, batch: usize) -> Result<dist::Combined> {
    let (b, d) = x.dims2()?;
    let dev = x.device();
    let xv = x.flatten_all()?.to_vec1::<f32>()?;
    match head {
        Head::Masked(h, spec) => {
            let masks = spec.draw(b, &mut Rng::stream_indexed(seed, "mask", step));
            let hidden: f64 = masks.iter().map(|&v| v as f64).sum();
            dp.step(params, b, |lo, hi| {
                let n = hi - lo;
                let (xs, ms) = (&xv[lo * d..hi * d], &masks[lo * d..hi * d]);
                if let Hide::Ratio(_) = spec.hide {
                    let denom = (hidden * n as f64 / b as f64).max(1e-30);
                    if crate::host::available(enc, dev) {
                        let (l, g) = h.loss_and_grads_host_over(enc, xs, ms, n, denom)?;
                        return Ok((l as f64, g));
                    }
                    let own: f64 = ms.iter().map(|&v| v as f64).sum();
                    let (xt, mt) = (Tensor::from_slice(xs, (n, d), dev)?, Tensor::from_slice(ms, (n, d), dev)?);
                    let loss = (h.loss(enc, &xt, &mt)? * (own / denom))?;
                    return Ok((loss.to_scalar::<f32>()? as f64, loss.backward()?));
                }
                let (xt, mt) = (Tensor::from_slice(xs, (n, d), dev)?, Tensor::from_slice(ms, (n, d), dev)?);
                let loss = h.loss_weighted(enc, &xt, &mt, &mt.broadcast_div(&mt.sum_keepdim(1)?)?)?;
                Ok((loss.to_scalar::<f32>()? as f64, loss.backward()?))
            })
        }
        Head::SimClr(..) | Head::VicReg(..) => {
            let host = crate::host::available(enc, dev);
            let mut job = TwoViews { head, enc, x: &xv, d, seed, first: step * batch as u64, dev, host };
            dp.step_gathered(params, b, &mut job)
        }
    }
}

/// SimCLR or VICReg over a whole batch whose rows are forwarded in micro-batches
/// ([`dist::GatheredLoss`]): row i's output is its two views' projections (SimCLR, before the
/// normalisation) or embeddings (VICReg) side by side, `[z_a(i), z_b(i)]`.
struct TwoViews<'a> {
    head: &'a Head,
    enc: &'a Encoder,
    /// The batch's images, row-major.
    x: &'a [f32],
    d: usize,
    seed: u64,
    /// Image i's views come from stream `first + i`.
    first: u64,
    dev: &'a Device,
    /// The CPU path ([`crate::host`]), else Candle's autograd.
    host: bool,
}

/// What a micro-batch's backward needs: the CPU path's tape, or the outputs of a graph.
enum ViewsState {
    Tape(crate::host::Tape),
    Graph(Tensor),
}

impl TwoViews<'_> {
    /// Output width of one view.
    fn dim(&self) -> usize {
        match self.head {
            Head::SimClr(..) => crate::simclr::PROJ_OUT,
            _ => crate::vicreg::EXPANDER,
        }
    }

    /// `[z_a(i), z_b(i)]` rows from the stacked `[Z_a; Z_b]` (`2n` rows of `k`), and back.
    fn side_by_side(stacked: &[f32], n: usize, k: usize) -> Vec<f32> {
        (0..n).flat_map(|i| stacked[i * k..(i + 1) * k].iter().chain(&stacked[(n + i) * k..(n + i + 1) * k])).copied().collect()
    }

    fn stacked(rows: &[f32], n: usize, k: usize) -> Vec<f32> {
        let a = rows.chunks_exact(2 * k).flat_map(|r| &r[..k]);
        let b = rows.chunks_exact(2 * k).flat_map(|r| &r[k..]);
        a.chain(b).copied().take(2 * n * k).collect()
    }
}

impl dist::GatheredLoss for TwoViews<'_> {
    type State = ViewsState;

    fn width(&self) -> usize {
        2 * self.dim()
    }

    fn forward(&mut self, lo: usize, hi: usize) -> Result<(Vec<f32>, ViewsState)> {
        let (n, d, k) = (hi - lo, self.d, self.dim());
        let aug = match self.head {
            Head::SimClr(_, aug, _) | Head::VicReg(_, aug) => aug,
            Head::Masked(..) => unreachable!("masked prediction is not a two-view loss"),
        };
        let (a, b) = aug.view_pairs(&self.x[lo * d..hi * d], self.seed, "augment", self.first + lo as u64);
        if self.host {
            let (p, tape) = match self.head {
                Head::SimClr(h, ..) => h.project_host(self.enc, [a, b].concat(), 2 * n)?,
                Head::VicReg(h, _) => h.embed_host(self.enc, [a, b].concat(), 2 * n)?,
                Head::Masked(..) => unreachable!(),
            };
            return Ok((Self::side_by_side(&p, n, k), ViewsState::Tape(tape)));
        }
        let views = Tensor::from_vec([a, b].concat(), (2 * n, d), self.dev)?;
        let z = match self.head {
            Head::SimClr(h, ..) => h.project_raw(self.enc, &views)?,
            Head::VicReg(h, _) => h.embed(self.enc, &views)?,
            Head::Masked(..) => unreachable!(),
        };
        Ok((Self::side_by_side(&z.flatten_all()?.to_vec1::<f32>()?, n, k), ViewsState::Graph(z)))
    }

    fn loss(&mut self, outputs: &[f32], b: usize) -> Result<(f64, Vec<f32>)> {
        let k = self.dim();
        let z = Self::stacked(outputs, b, k);
        let (loss, grad) = match self.head {
            Head::SimClr(_, _, tau) if self.host => {
                let (l, g) = crate::simclr::nt_xent_host(&z, 2 * b, k, *tau as f32, Some(1.0));
                (l as f64, g.expect("gradient asked for"))
            }
            Head::VicReg(..) if self.host => {
                let (t, g) = crate::vicreg::vicreg_host(&z, b, k, Some(1.0));
                (t.loss as f64, g.expect("gradient asked for"))
            }
            _ => {
                let zv = candle_core::Var::from_tensor(&Tensor::from_vec(z, (2 * b, k), self.dev)?)?;
                let l = match self.head {
                    Head::SimClr(_, _, tau) => crate::simclr::nt_xent_of_projections(zv.as_tensor(), *tau)?,
                    Head::VicReg(..) => crate::vicreg::vicreg_of_embeddings(zv.as_tensor())?,
                    Head::Masked(..) => unreachable!(),
                };
                let g = l.backward()?.get(zv.as_tensor()).map(|g| g.flatten_all()?.to_vec1::<f32>()).transpose()?.unwrap_or_else(|| vec![0.0; 2 * b * k]);
                (l.to_scalar::<f32>()? as f64, g)
            }
        };
        Ok((loss, Self::side_by_side(&grad, b, k)))
    }

    /// SimCLR on the CPU splits its NT-Xent by anchors: per batch row, its two views' rows of
    /// `G` and loss terms (2 · (2b + 1) f32s; `simclr::nt_xent_split`).
    fn split_width(&self, b: usize) -> Option<usize> {
        matches!(self.head, Head::SimClr(..) if self.host).then_some(2 * (2 * b + 1))
    }

    fn loss_split(&mut self, outputs: &[f32], b: usize, lo: usize, hi: usize) -> Result<Vec<f32>> {
        let Head::SimClr(_, _, tau) = self.head else { bail!("only SimCLR's loss splits by rows") };
        let (k, m) = (self.dim(), 2 * b);
        let z = Self::stacked(outputs, b, k);
        let w = m + 1;
        // Anchors lo..hi are the rows' first views, b + lo..b + hi their second.
        let both = crate::simclr::nt_xent_split(&z, m, k, *tau as f32, 1.0, &[lo..hi, b + lo..b + hi]);
        let (a, v) = both.split_at((hi - lo) * w);
        Ok(a.chunks_exact(w).zip(v.chunks_exact(w)).flat_map(|(x, y)| x.iter().chain(y)).copied().collect())
    }

    fn loss_join(&mut self, outputs: &[f32], parts: &[f32], b: usize, lo: usize, hi: usize) -> Result<(f64, Vec<f32>)> {
        let Head::SimClr(_, _, tau) = self.head else { bail!("only SimCLR's loss splits by rows") };
        let (k, m) = (self.dim(), 2 * b);
        let z = Self::stacked(outputs, b, k);
        let w = m + 1;
        // Row order [anchor r, anchor b + r] per row → anchor order.
        let mut by_anchor = vec![0f32; m * w];
        for (r, row) in parts.chunks_exact(2 * w).enumerate() {
            by_anchor[r * w..(r + 1) * w].copy_from_slice(&row[..w]);
            by_anchor[(b + r) * w..(b + r + 1) * w].copy_from_slice(&row[w..]);
        }
        let (loss, g) = crate::simclr::nt_xent_join(&z, &by_anchor, m, k, *tau as f32, &[lo..hi, b + lo..b + hi]);
        Ok((loss as f64, Self::side_by_side(&g, hi - lo, k)))
    }

    fn backward(&mut self, state: ViewsState, lo: usize, hi: usize, grad: &[f32]) -> Result<GradStore> {
        let (n, k) = (hi - lo, self.dim());
        let g = Self::stacked(grad, n, k);
        match state {
            ViewsState::Tape(tape) => match self.head {
                Head::SimClr(h, ..) => h.backward_host(self.enc, &tape, g),
                Head::VicReg(h, _) => h.backward_host(self.enc, &tape, g),
                Head::Masked(..) => unreachable!(),
            },
            // ∂/∂θ of Σ z ⊙ G (G held constant) is J(θ)ᵀ G: this micro-batch's part of the gradient.
            ViewsState::Graph(z) => Ok((&z * Tensor::from_vec(g, (2 * n, k), self.dev)?)?.sum_all()?.backward()?),
        }
    }
}

/// The full state of a run: parameters, the optimizer's moments, the counters.
fn checkpoint(params: &Params, opt: &Optimizer, st: &State) -> Result<Checkpoint> {
    let mut ck = Checkpoint::new();
    params.save_to(&mut ck)?;
    opt.save_to(&mut ck, params)?;
    ck.set_meta("train_state", st);
    Ok(ck)
}

const SHOWN: usize = 16;

/// Masked inputs with their predictions, or augmented view pairs, of the first test images.
#[allow(clippy::too_many_arguments)]
fn log_images(tb: &mut TbLogger, head: &Head, enc: &Encoder, data: &Dataset, x: &[f32], seed: u64, step: u64, dev: &Device) -> Result<()> {
    let idx: Vec<usize> = data.indices(Split::Test).into_iter().take(SHOWN).collect();
    let n = idx.len();
    let orig = Dataset::gather(x, data.dim, &idx);
    let mut rows = Vec::with_capacity(3 * orig.len());
    let d = data.dim;
    let tag = match head {
        Head::Masked(h, spec) => {
            let m = spec.draw(n, &mut Rng::stream_indexed(seed, "tb-mask", step));
            let (xt, mt) = (Tensor::from_vec(orig.clone(), (n, d), dev)?, Tensor::from_vec(m.clone(), (n, d), dev)?);
            let pred = candle_nn::ops::sigmoid(&h.logits(enc, &xt, &mt)?)?.flatten_all()?.to_vec1::<f32>()?;
            for i in 0..n {
                let o = &orig[i * d..(i + 1) * d];
                let mi = &m[i * d..(i + 1) * d];
                rows.extend_from_slice(o);
                // Hidden pixels shown mid-grey; the prediction fills them in, the rest is the input.
                rows.extend(o.iter().zip(mi).map(|(&v, &h)| if h == 1.0 { 0.5 } else { v }));
                rows.extend(o.iter().zip(mi).zip(&pred[i * d..(i + 1) * d]).map(|((&v, &h), &p)| if h == 1.0 { p } else { v }));
            }
            "masked_inputs"
        }
        Head::SimClr(_, aug, _) | Head::VicReg(_, aug) => {
            let (a, b) = aug.view_pairs(&orig, seed, "tb-augment", step * SHOWN as u64);
            for i in 0..n {
                rows.extend_from_slice(&orig[i * d..(i + 1) * d]);
                rows.extend_from_slice(&a[i * d..(i + 1) * d]);
                rows.extend_from_slice(&b[i * d..(i + 1) * d]);
            }
            "view_pairs"
        }
    };
    // Four triplets per row of the grid.
    let (px, h, w) = display_grid(&rows, 3 * n, data.height, data.width, 12);
    tb.image(tag, step, &px, h, w, 1)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every parameter of every encoder × objective gets a non-zero gradient from one step.
    #[test]
    fn every_parameter_gets_a_nonzero_gradient() {
        let dev = Device::Cpu;
        let (h, w) = (8, 8);
        let mut r = Rng::stream(0, "x");
        let n = 6;
        let x = Tensor::from_vec((0..n * 64).map(|_| r.uniform() as f32).collect::<Vec<_>>(), (n, 64), &dev).unwrap();
        for kind in [EncoderKind::Mlp, EncoderKind::Cnn] {
            for algo in ["masked", "masked-order-agnostic", "simclr", "vicreg"] {
                let mut p = Params::new();
                let mut init = Rng::stream(1, "init");
                let enc = Encoder::new(kind, h, w, &mut p, &mut init, &dev).unwrap();
                let hide = if algo == "masked" { Hide::Ratio(0.5) } else { Hide::OrderAgnostic };
                let head = if algo.starts_with("masked") {
                    Head::Masked(MaskedPrediction::new(256, 64, &mut p, &mut init, &dev).unwrap(), MaskSpec { height: h, width: w, patch: 2, hide })
                } else if algo == "vicreg" {
                    Head::VicReg(VicReg::new(256, &mut p, &mut init, &dev).unwrap(), Augment::for_images(h, w))
                } else {
                    Head::SimClr(SimClr::new(256, &mut p, &mut init, &dev).unwrap(), Augment::for_images(h, w), 0.5)
                };
                // Through Candle's backward (the generic path) and by hand (the CPU path).
                let loss = step_loss(&head, &enc, &x, 3, 0, n).unwrap();
                let graph = loss.backward().unwrap();
                let (lh, host) = step_grads(&head, &enc, &x, 3, 0, n).unwrap();
                assert_eq!(lh, loss.to_scalar::<f32>().unwrap() as f64, "{kind}/{algo}");
                for g in [graph, host] {
                    for (name, v) in p.names().iter().zip(p.vars()) {
                        let gv = g.get(v).unwrap_or_else(|| panic!("{kind}/{algo}: no gradient for {name}"));
                        let norm = gv.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
                        if algo == "vicreg" && name == "expander.fc3.b" {
                            // The loss ignores a shift of both views' embeddings: 0 up to rounding.
                            assert!(norm < 1e-10, "{kind}/{algo}: gradient of {name} is {norm}");
                            continue;
                        }
                        assert!(norm > 0.0 && norm.is_finite(), "{kind}/{algo}: gradient of {name} is {norm}");
                    }
                }
            }
        }
    }

    /// Micro-batches change only the rounding: the loss and every gradient equal the whole
    /// batch's within f32 rounding — for SimCLR and VICReg too, whose loss couples all rows (a
    /// micro-batch's own NT-Xent or variance would differ grossly) — with uneven and empty
    /// micro-batches and masks whose hidden count varies between images (3×3 patches of an 8×8
    /// image). One micro-batch through the gathered step is the plain CPU step bit for bit.
    #[test]
    fn micro_batches_give_the_whole_batch_loss_and_gradient() {
        let dev = Device::Cpu;
        let (h, w, n) = (8, 8, 7);
        let mut r = Rng::stream(0, "x");
        let x = Tensor::from_vec((0..n * 64).map(|_| r.uniform() as f32).collect::<Vec<_>>(), (n, 64), &dev).unwrap();
        let world = dist::world();
        for algo in ["masked-uneven", "masked-order-agnostic", "simclr", "vicreg"] {
            let mut p = Params::new();
            let mut init = Rng::stream(1, "init");
            let enc = Encoder::new(EncoderKind::Mlp, h, w, &mut p, &mut init, &dev).unwrap();
            let head = match algo {
                "masked-uneven" => Head::Masked(MaskedPrediction::new(256, 64, &mut p, &mut init, &dev).unwrap(), MaskSpec { height: h, width: w, patch: 3, hide: Hide::Ratio(0.5) }),
                "masked-order-agnostic" => Head::Masked(MaskedPrediction::new(256, 64, &mut p, &mut init, &dev).unwrap(), MaskSpec { height: h, width: w, patch: 1, hide: Hide::OrderAgnostic }),
                "vicreg" => Head::VicReg(VicReg::new(256, &mut p, &mut init, &dev).unwrap(), Augment::for_images(h, w)),
                _ => Head::SimClr(SimClr::new(256, &mut p, &mut init, &dev).unwrap(), Augment::for_images(h, w), 0.5),
            };
            if let Head::Masked(_, spec) = &head {
                let m = spec.draw(n, &mut Rng::stream_indexed(3, "mask", 5));
                let counts: Vec<usize> = m.chunks(64).map(|r| r.iter().filter(|&&v| v == 1.0).count()).collect();
                assert!(counts.windows(2).any(|c| c[0] != c[1]), "{algo}: hidden counts should vary: {counts:?}");
            }
            let (l1, g1) = step_grads(&head, &enc, &x, 3, 5, n).unwrap();
            if algo == "simclr" || algo == "vicreg" {
                let c = micro_batch_grads(&DataParallel::new(1, n, world).unwrap(), &p, &head, &enc, &x, 3, 5, n).unwrap();
                assert_eq!(c.loss, l1);
                let cg = c.into_grads(&p).unwrap();
                for v in p.vars() {
                    assert_eq!(cg.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), g1.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap());
                }
            }
            // 7 rows in 2, 3 and 8 micro-batches: sizes 3+4, 2+2+3, and one empty; SimCLR and
            // VICReg also through Candle's autograd (the path of other devices) instead of the CPU path.
            let graph_too = if algo == "simclr" || algo == "vicreg" { vec![(2, true), (3, true), (8, true), (3, false)] } else { vec![(2, true), (3, true), (8, true)] };
            for (m, cpu_path) in graph_too {
                let dp = DataParallel::new(m, 24, world).unwrap();
                let c = if cpu_path {
                    micro_batch_grads(&dp, &p, &head, &enc, &x, 3, 5, n).unwrap()
                } else {
                    let xv = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    let mut job = TwoViews { head: &head, enc: &enc, x: &xv, d: 64, seed: 3, first: 5 * n as u64, dev: &dev, host: false };
                    dp.step_gathered(&p, n, &mut job).unwrap()
                };
                assert!((c.loss - l1).abs() < 1e-5 * (1.0 + l1.abs()), "{algo} M={m}: loss {} vs {l1}", c.loss);
                let cg = c.into_grads(&p).unwrap();
                let all = |g: &GradStore, v: &candle_core::Var| g.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let largest = |g: &[f32]| g.iter().fold(0f32, |s, v| s.max(v.abs()));
                let overall = p.vars().iter().map(|v| largest(&all(&g1, v))).fold(0f32, f32::max);
                assert!(overall > 0.0 && overall.is_finite(), "{algo}");
                for (name, v) in p.names().iter().zip(p.vars()) {
                    let (a, b) = (all(&cg, v), all(&g1, v));
                    // VICReg's last bias gets ~0 (the loss ignores a shift of both views).
                    let scale = largest(&b).max(1e-2 * overall);
                    for (x, y) in a.iter().zip(&b) {
                        assert!((x - y).abs() <= 1e-4 * scale, "{algo} M={m}: {name}: {x} vs {y}");
                    }
                }
            }
        }
    }

    /// Order-agnostic masks hide a different number of pixels in each image; the loss is the
    /// mean over images of each image's mean BCE over its own hidden pixels (computed by hand).
    #[test]
    fn order_agnostic_loss_is_the_mean_of_per_image_means() {
        let dev = Device::Cpu;
        let (h, w, n) = (8, 8, 5);
        let mut r = Rng::stream(0, "x");
        let xv: Vec<f32> = (0..n * 64).map(|_| r.uniform() as f32).collect();
        let x = Tensor::from_vec(xv.clone(), (n, 64), &dev).unwrap();
        let mut p = Params::new();
        let mut init = Rng::stream(1, "init");
        let enc = Encoder::new(EncoderKind::Mlp, h, w, &mut p, &mut init, &dev).unwrap();
        let spec = MaskSpec { height: h, width: w, patch: 1, hide: Hide::OrderAgnostic };
        let head = Head::Masked(MaskedPrediction::new(256, 64, &mut p, &mut init, &dev).unwrap(), spec);
        let got = step_loss(&head, &enc, &x, 3, 7, n).unwrap().to_scalar::<f32>().unwrap() as f64;
        let m = spec.draw(n, &mut Rng::stream_indexed(3, "mask", 7));
        let counts: Vec<usize> = m.chunks(64).map(|r| r.iter().filter(|&&v| v == 1.0).count()).collect();
        assert!(counts.windows(2).any(|c| c[0] != c[1]), "the draw should vary the hidden count: {counts:?}");
        let Head::Masked(mp, _) = &head else { unreachable!() };
        let z = mp.logits(&enc, &x, &Tensor::from_vec(m.clone(), (n, 64), &dev).unwrap()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut want = 0f64;
        for b in 0..n {
            let mut s = 0f64;
            for i in b * 64..(b + 1) * 64 {
                if m[i] == 1.0 {
                    let (z, t) = (z[i] as f64, xv[i] as f64);
                    s += z.max(0.0) - z * t + (-z.abs()).exp().ln_1p();
                }
            }
            want += s / counts[b] as f64 / n as f64;
        }
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}
