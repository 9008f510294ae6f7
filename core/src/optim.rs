//! Optimizers with inspectable, checkpointable state: SGD (momentum, Nesterov), Adam, AdamW and
//! Adagrad, plus global-norm gradient clipping.
//!
//! candle-nn's `AdamW` keeps its moments private, so a run using it cannot be resumed exactly;
//! these optimizers expose every state tensor under torch's names (`optim.exp_avg.<param>`,
//! `optim.exp_avg_sq.<param>`, `optim.momentum_buffer.<param>`, `optim.sum.<param>`) and save it, with the step
//! counts, into a [`Checkpoint`]. Loading it back continues a run bit for bit.
//!
//! The updates are those of `torch.optim` (the algorithm boxes of its docs, single-tensor
//! path), pinned against torch's own numbers by `scripts/torch_optim_reference.py`. With
//! gradient `g`, parameter `θ`, learning rate `lr` (the schedule's value for this step) and
//! weight decay `λ`:
//!
//! ```text
//! SGD    g ← g + λθ                          (if λ ≠ 0)
//!        b ← g at a parameter's first step, then b ← μ b + g     (if μ ≠ 0; dampening 0)
//!        g ← g + μ b (Nesterov)  or  g ← b                        (if μ ≠ 0)
//!        θ ← θ − lr g
//! Adam   g ← g + λθ                          (coupled L2, torch.optim.Adam's weight_decay)
//!        m ← β1 m + (1 − β1) g               (computed as torch's lerp: m + (1 − β1)(g − m))
//!        v ← β2 v + (1 − β2) g²
//!        θ ← θ − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε)
//! AdamW  θ ← θ (1 − lr λ)                    (decoupled, torch.optim.AdamW), then Adam with λ = 0
//! Adagrad g ← g + λθ;  s ← s + g²;  θ ← θ − lr · g / (√s + ε)
//!        (torch.optim.Adagrad with lr_decay 0 and initial_accumulator_value 0; torch's default
//!        ε is 1e-10, wick's 1e-8 for every optimizer: `--eps 1e-10` matches torch exactly)
//! ```
//!
//! `t` counts the steps of each parameter separately, as torch does: a parameter that has no
//! gradient in the [`GradStore`] at some step (torch's `p.grad is None`) is left alone, state
//! and count included. All tensor arithmetic runs on the parameter's device with candle ops (a
//! dozen or so per parameter per step, no host round-trips); scalars such as the bias
//! corrections are computed in f64 on the host.

use crate::bail;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::params::Params;
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Which update rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimKind {
    /// `torch.optim.SGD` (optionally with momentum, Nesterov and L2 weight decay).
    Sgd,
    /// `torch.optim.Adam` (weight decay is an L2 term added to the gradient).
    Adam,
    /// `torch.optim.AdamW` (decoupled weight decay).
    Adamw,
    /// `torch.optim.Adagrad` (the MADE paper's optimizer; L2 weight decay added to the gradient).
    Adagrad,
}

impl OptimKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OptimKind::Sgd => "sgd",
            OptimKind::Adam => "adam",
            OptimKind::Adamw => "adamw",
            OptimKind::Adagrad => "adagrad",
        }
    }

    /// Names of the per-parameter state tensors, in torch's spelling.
    fn state_names(self, momentum: f64) -> &'static [&'static str] {
        match self {
            OptimKind::Sgd if momentum != 0.0 => &["momentum_buffer"],
            OptimKind::Sgd => &[],
            OptimKind::Adam | OptimKind::Adamw => &["exp_avg", "exp_avg_sq"],
            OptimKind::Adagrad => &["sum"],
        }
    }
}

impl fmt::Display for OptimKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses the CLI names `sgd`, `adam`, `adamw`, `adagrad` (any case).
impl FromStr for OptimKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<OptimKind> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sgd" => Ok(OptimKind::Sgd),
            "adam" => Ok(OptimKind::Adam),
            "adamw" => Ok(OptimKind::Adamw),
            "adagrad" => Ok(OptimKind::Adagrad),
            _ => Err(Error::new(format!("unknown optimizer '{s}': expected sgd, adam, adamw or adagrad"))),
        }
    }
}

/// Optimizer hyper-parameters. `lr` is the base rate that a schedule scales; `beta1`, `beta2`
/// and `eps` are used by Adam/AdamW, `momentum` and `nesterov` by SGD, `weight_decay` by all.
///
/// Fields missing from a TOML/JSON config take their [`Default`] values.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    pub kind: OptimKind,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub nesterov: bool,
}

/// Adam, lr 1e-3, betas (0.9, 0.999), eps 1e-8, no weight decay, no momentum.
impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            kind: OptimKind::Adam,
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            nesterov: false,
        }
    }
}

impl OptimConfig {
    /// Check every value; the error is one line naming the bad one.
    pub fn validate(&self) -> Result<()> {
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            bail!("learning rate must be a positive number, got {}", self.lr);
        }
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                bail!("{name} must be in [0, 1), got {b}");
            }
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            bail!("eps must be a positive number, got {}", self.eps);
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            bail!("weight decay must be a non-negative number, got {}", self.weight_decay);
        }
        if !(0.0..1.0).contains(&self.momentum) {
            bail!("momentum must be in [0, 1), got {}", self.momentum);
        }
        if self.kind != OptimKind::Sgd {
            if self.momentum != 0.0 {
                bail!("momentum is only used by sgd ({} uses beta1), got momentum {}", self.kind, self.momentum);
            }
            if self.nesterov {
                bail!("nesterov is only used by sgd, not {}", self.kind);
            }
        }
        if self.nesterov && self.momentum <= 0.0 {
            bail!("nesterov needs momentum > 0, got momentum {}", self.momentum);
        }
        Ok(())
    }
}

/// One parameter's state: its own step count and its state tensors (same order as
/// [`OptimKind::state_names`]), on the parameter's device with its dtype.
struct Slot {
    steps: u64,
    bufs: Vec<Tensor>,
}

/// SGD / Adam / AdamW over a [`Params`], with state that can be inspected and checkpointed.
pub struct Optimizer {
    cfg: OptimConfig,
    t: u64,
    names: Vec<String>,
    slots: Vec<Slot>,
    /// Always use the tensor-op path (tests compare it with the fused CPU path).
    composed_only: bool,
    /// Some state entries are behind: [`Optimizer::step_flat_range`] updated a share of them
    /// (one rank's, in a sharded data-parallel update) and the rest were not brought back yet.
    sharded: bool,
}

impl fmt::Debug for Optimizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Optimizer")
            .field("cfg", &self.cfg)
            .field("steps", &self.t)
            .field("params", &self.names)
            .finish()
    }
}

impl Optimizer {
    /// Validate `cfg` and allocate zeroed state for every parameter (on its device).
    pub fn new(cfg: OptimConfig, params: &Params) -> Result<Optimizer> {
        cfg.validate()?;
        let kinds = cfg.kind.state_names(cfg.momentum);
        let mut slots = Vec::with_capacity(params.len());
        for v in params.vars() {
            let bufs = kinds.iter().map(|_| v.as_tensor().zeros_like()).collect::<candle_core::Result<Vec<_>>>()?;
            slots.push(Slot { steps: 0, bufs });
        }
        Ok(Optimizer { cfg, t: 0, names: params.names().to_vec(), slots, composed_only: false, sharded: false })
    }

    /// Use only the tensor-op update, never the fused CPU one (for comparing the two).
    pub fn composed_only(mut self) -> Self {
        self.composed_only = true;
        self
    }

    pub fn config(&self) -> &OptimConfig {
        &self.cfg
    }

    /// Number of [`Optimizer::step`] calls so far (restored by [`Optimizer::load_from`]).
    pub fn steps(&self) -> u64 {
        self.t
    }

    fn check_params(&self, params: &Params) -> Result<()> {
        if params.names() != self.names.as_slice() {
            bail!(
                "optimizer was built for parameters [{}] but was given [{}]",
                self.names.join(", "),
                params.names().join(", ")
            );
        }
        Ok(())
    }

    /// One update of every parameter that has a gradient in `grads`, with learning rate `lr`
    /// (the schedule's value for this step; `cfg.lr` is the base it scales).
    pub fn step(&mut self, params: &Params, grads: &GradStore, lr: f64) -> Result<()> {
        self.check_params(params)?;
        self.check_whole("stepped whole")?;
        if !(lr >= 0.0 && lr.is_finite()) {
            bail!("learning rate must be a non-negative number, got {lr} at step {}", self.t);
        }
        let OptimConfig { kind, beta1, beta2, eps, weight_decay: wd, momentum: mu, nesterov, .. } = self.cfg;
        for ((var, name), slot) in params.vars().iter().zip(&self.names).zip(self.slots.iter_mut()) {
            let theta = var.as_tensor();
            let Some(grad) = grads.get(theta) else { continue };
            if grad.dims() != theta.dims() {
                bail!("gradient of '{name}' has shape {:?}, but the parameter has shape {:?}", grad.dims(), theta.dims());
            }
            slot.steps += 1;
            let new_theta = match kind {
                OptimKind::Sgd => {
                    let mut g = if wd != 0.0 { (theta.affine(wd, 0.0)? + grad)? } else { grad.clone() };
                    if mu != 0.0 {
                        let buf = if slot.steps == 1 {
                            // A copy, so the buffer never shares storage with the caller's gradient.
                            g.copy()?
                        } else {
                            (slot.bufs[0].affine(mu, 0.0)? + &g)?
                        };
                        g = if nesterov { (g + buf.affine(mu, 0.0)?)? } else { buf.clone() };
                        slot.bufs[0] = buf;
                    }
                    (theta + g.affine(-lr, 0.0)?)?
                }
                OptimKind::Adagrad => {
                    let g = if wd != 0.0 { (theta.affine(wd, 0.0)? + grad)? } else { grad.clone() };
                    // torch: state_sum.addcmul_(grad, grad, value=1); std = state_sum.sqrt().add_(eps); param.addcdiv_(grad, std, value=-clr)
                    let sum = (&slot.bufs[0] + (&g * &g)?)?;
                    let std = sum.sqrt()?.affine(1.0, eps)?;
                    let upd = (g / std)?.affine(-lr, 0.0)?;
                    slot.bufs[0] = sum;
                    (theta + upd)?
                }
                OptimKind::Adam | OptimKind::Adamw if !self.composed_only && fused_adam::applies(theta, grad, &slot.bufs) => {
                    fused_adam::step(theta, grad, &slot.bufs, kind == OptimKind::Adamw, lr, wd, beta1, beta2, eps, slot.steps)?;
                    continue;
                }
                OptimKind::Adam | OptimKind::Adamw => {
                    let decoupled = kind == OptimKind::Adamw;
                    let (theta0, g) = if wd == 0.0 {
                        (theta.clone(), grad.clone())
                    } else if decoupled {
                        (theta.affine(1.0 - lr * wd, 0.0)?, grad.clone())
                    } else {
                        let theta = flush_below(theta, l2_floor(wd))?;
                        let g = (theta.affine(wd, 0.0)? + grad)?;
                        (theta, g)
                    };
                    let (m, v) = (&slot.bufs[0], &slot.bufs[1]);
                    // torch: exp_avg.lerp_(grad, 1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                    let m = flush_subnormal(&((&g - m)?.affine(1.0 - beta1, 0.0)? + m)?)?;
                    let v = flush_subnormal(&(v.affine(beta2, 0.0)? + (g.affine(1.0 - beta2, 0.0)? * &g)?)?)?;
                    let step = slot.steps as f64;
                    let bc1 = 1.0 - beta1.powf(step);
                    let bc2_sqrt = (1.0 - beta2.powf(step)).sqrt();
                    let step_size = lr / bc1;
                    // torch: denom = exp_avg_sq.sqrt() / bc2_sqrt + eps; param.addcdiv_(exp_avg, denom, value=-step_size)
                    let denom = v.sqrt()?.affine(1.0 / bc2_sqrt, eps)?;
                    let upd = (m.affine(-step_size, 0.0)? / denom)?;
                    slot.bufs = vec![m, v];
                    flush_subnormal(&(theta0 + upd)?)?
                }
            };
            var.set(&new_theta)?;
        }
        self.t += 1;
        Ok(())
    }

    fn check_whole(&self, what: &str) -> Result<()> {
        if self.sharded {
            bail!("the optimizer's state is sharded among the ranks (a sharded data-parallel update) and cannot be {what} until it is gathered (DataParallel::sync_optimizer)");
        }
        Ok(())
    }

    /// Whether [`Optimizer::step_flat_range`] can take the step: Adam or AdamW on the fused CPU
    /// update, with every parameter and state buffer a contiguous f32 CPU tensor.
    pub fn steps_flat(&self, params: &Params) -> bool {
        let ok = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous();
        matches!(self.cfg.kind, OptimKind::Adam | OptimKind::Adamw)
            && !self.composed_only
            && params.names() == self.names.as_slice()
            && params.vars().iter().zip(&self.slots).all(|(v, s)| ok(v.as_tensor()) && s.bufs.len() == 2 && s.bufs.iter().all(ok))
    }

    /// One Adam/AdamW update (see [`Optimizer::steps_flat`]) of the entries `range` of the flat
    /// parameter vector (the parameters in `order`, one after another), with `g` = those entries
    /// of the gradient; the updated θ entries are also copied to `theta_out` (`range.len()`).
    /// Every parameter's step count advances, as in [`Optimizer::step`] with a gradient for every
    /// parameter, and each entry gets exactly the arithmetic `step` would give it: this is one
    /// rank's share of a sharded data-parallel update (`DataParallel::update`). The state outside
    /// `range` is left behind until [`Optimizer::set_flat_state`] brings it back and
    /// [`Optimizer::mark_whole`] is called; until then `step` and `save_to` refuse.
    pub fn step_flat_range(&mut self, params: &Params, order: &[usize], range: std::ops::Range<usize>, g: &[f32], theta_out: &mut [f32], lr: f64) -> Result<()> {
        self.step_flat_ranges(params, order, &[range], g, theta_out, lr)
    }

    /// [`Optimizer::step_flat_range`] over several disjoint ranges of the flat vector, in one
    /// step: `g` and `theta_out` hold their entries one range after another.
    pub fn step_flat_ranges(&mut self, params: &Params, order: &[usize], ranges: &[std::ops::Range<usize>], g: &[f32], theta_out: &mut [f32], lr: f64) -> Result<()> {
        let total: usize = ranges.iter().map(|r| r.len()).sum();
        if g.len() != total {
            bail!("step_flat_range: a gradient of {} entries for ranges of {total}", g.len());
        }
        let starts: Vec<usize> = ranges.iter().scan(0, |at, r| Some(std::mem::replace(at, *at + r.len()))).collect();
        self.step_flat_ranges_with(params, order, ranges, |k, buf| buf.copy_from_slice(&g[starts[k]..starts[k] + buf.len()]), theta_out, lr)
    }

    /// [`Optimizer::step_flat_ranges`] with the gradient of range k written by `grad(k, buf)`
    /// into a buffer of the range's length just before the range is updated (the data-parallel
    /// update sums it there, range by range, while it is in cache).
    pub fn step_flat_ranges_with(&mut self, params: &Params, order: &[usize], ranges: &[std::ops::Range<usize>], mut grad: impl FnMut(usize, &mut [f32]), theta_out: &mut [f32], lr: f64) -> Result<()> {
        self.check_params(params)?;
        if !(lr >= 0.0 && lr.is_finite()) {
            bail!("learning rate must be a non-negative number, got {lr} at step {}", self.t);
        }
        let total: usize = ranges.iter().map(|r| r.len()).sum();
        if !self.steps_flat(params) || theta_out.len() != total {
            bail!("step_flat_range: needs fused Adam/AdamW on contiguous f32 CPU tensors and an output of the ranges' length");
        }
        let OptimConfig { kind, beta1, beta2, eps, weight_decay: wd, .. } = self.cfg;
        for slot in &mut self.slots {
            slot.steps += 1;
        }
        let mut at = 0;
        let mut buf = vec![0f32; ranges.iter().map(|r| r.len()).max().unwrap_or(0)];
        for (k, range) in ranges.iter().enumerate() {
            let g = &mut buf[..range.len()];
            grad(k, g);
            let g = &*g;
            let theta_out = &mut theta_out[at..at + range.len()];
            at += range.len();
            for (i, within, from) in params.flat_pieces(order, range.clone()) {
                let slot = &self.slots[i];
                let c = fused_adam::coef(kind == OptimKind::Adamw, lr, wd, beta1, beta2, eps, slot.steps);
                let (gs, out) = (&g[from.clone()], &mut theta_out[from]);
                let theta = params.vars()[i].as_tensor();
                crate::cpu::with_host_slices_mut(&[theta, &slot.bufs[0], &slot.bufs[1]], "adam state", |s| {
                    let [th, m, v] = s else { unreachable!("three tensors") };
                    let (th, m, v) = (&mut th[within.clone()], &mut m[within.clone()], &mut v[within.clone()]);
                    fused_adam::each_out(c, th, m, v, gs, out);
                    Ok(())
                })?;
            }
        }
        self.t += 1;
        self.sharded = true;
        Ok(())
    }

    /// Entries `range` of state buffer `k` (0: Adam's m, 1: v) in the flat order of `order`.
    pub fn flat_state(&self, params: &Params, order: &[usize], k: usize, range: std::ops::Range<usize>) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(range.len());
        for (i, within, _) in params.flat_pieces(order, range) {
            crate::cpu::with_host_slices(&[&self.slots[i].bufs[k]], "optimizer state", |s| {
                out.extend_from_slice(&s[0][within]);
                Ok(())
            })?;
        }
        Ok(out)
    }

    /// Write `src` into entries `range` of state buffer `k` (as [`Optimizer::flat_state`] reads
    /// them).
    pub fn set_flat_state(&mut self, params: &Params, order: &[usize], k: usize, range: std::ops::Range<usize>, src: &[f32]) -> Result<()> {
        for (i, within, from) in params.flat_pieces(order, range) {
            crate::cpu::with_host_slices_mut(&[&self.slots[i].bufs[k]], "optimizer state", |s| {
                s[0][within].copy_from_slice(&src[from]);
                Ok(())
            })?;
        }
        Ok(())
    }

    /// The state is whole again (every rank's share was brought back with
    /// [`Optimizer::set_flat_state`]).
    pub fn mark_whole(&mut self) {
        self.sharded = false;
    }

    /// Whether some state entries are behind (see [`Optimizer::step_flat_range`]).
    pub fn is_sharded(&self) -> bool {
        self.sharded
    }

    /// Every state tensor under its checkpoint name, in parameter order:
    /// `optim.momentum_buffer.<param>` (SGD with momentum), `optim.exp_avg.<param>` and
    /// `optim.exp_avg_sq.<param>` (Adam, AdamW). Buffers of parameters that have not been
    /// stepped yet are zeros.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let kinds = self.cfg.kind.state_names(self.cfg.momentum);
        let mut out = Vec::new();
        for (name, slot) in self.names.iter().zip(&self.slots) {
            for (k, t) in kinds.iter().zip(&slot.bufs) {
                out.push((format!("optim.{k}.{name}"), t.clone()));
            }
        }
        out
    }

    /// Each parameter's own step count (how many updates it has received), in parameter order.
    pub fn param_steps(&self) -> Vec<(String, u64)> {
        self.names.iter().cloned().zip(self.slots.iter().map(|s| s.steps)).collect()
    }

    /// Put the state tensors into `ck` (as f32, under [`Optimizer::state`]'s names) and the
    /// metadata `optim_steps` (u64), `optim_param_steps` ({param: u64}) and `optim_kind`.
    pub fn save_to(&self, ck: &mut Checkpoint, params: &Params) -> Result<()> {
        self.check_params(params)?;
        self.check_whole("saved")?;
        for (name, t) in self.state() {
            ck.put_tensor(&name, &t)?;
        }
        ck.set_meta("optim_steps", &self.t);
        let per: BTreeMap<&str, u64> = self.names.iter().map(String::as_str).zip(self.slots.iter().map(|s| s.steps)).collect();
        ck.set_meta("optim_param_steps", &per);
        ck.set_meta("optim_kind", &self.cfg.kind);
        Ok(())
    }

    /// Restore the state saved by [`Optimizer::save_to`], checking the optimizer kind and every
    /// tensor's name and shape. On error nothing is changed.
    pub fn load_from(&mut self, ck: &Checkpoint, params: &Params) -> Result<()> {
        self.check_params(params)?;
        let ctx = |e: Error| e.context("loading optimizer state");
        let kind: OptimKind = ck.meta("optim_kind").map_err(|_| {
            Error::new("loading optimizer state: checkpoint has no optimizer state (metadata 'optim_kind' missing)")
        })?;
        if kind != self.cfg.kind {
            bail!("loading optimizer state: the checkpoint's optimizer is {kind}, but this run uses {}", self.cfg.kind);
        }
        let t: u64 = ck.meta("optim_steps").map_err(ctx)?;
        let per: BTreeMap<String, u64> = ck.meta("optim_param_steps").map_err(ctx)?;
        let kinds = self.cfg.kind.state_names(self.cfg.momentum);
        let mut slots = Vec::with_capacity(self.slots.len());
        for (name, var) in self.names.iter().zip(params.vars()) {
            let Some(&steps) = per.get(name) else {
                bail!("loading optimizer state: checkpoint has no step count for parameter '{name}'");
            };
            let mut bufs = Vec::with_capacity(kinds.len());
            for k in kinds {
                let t = ck.tensor(&format!("optim.{k}.{name}"), var.dims(), var.device()).map_err(ctx)?;
                bufs.push(if var.dtype() == DType::F32 { t } else { t.to_dtype(var.dtype())? });
            }
            slots.push(Slot { steps, bufs });
        }
        self.t = t;
        self.slots = slots;
        Ok(())
    }
}

/// Scale the gradients of `params` in place so that their global L2 norm is at most `max_norm`,
/// with `torch.nn.utils.clip_grad_norm_`'s semantics: `coef = max_norm / (norm + 1e-6)`, and
/// every gradient is multiplied by `min(coef, 1)`. Parameters without a gradient are skipped.
/// Returns the norm before clipping (0 if there is no gradient). As in torch, a non-finite norm
/// makes the gradients non-finite (the caller's divergence check then stops the run).
///
/// This reads one scalar back from the device.
pub fn clip_grad_norm(params: &Params, grads: &mut GradStore, max_norm: f64) -> Result<f64> {
    if !(max_norm > 0.0 && max_norm.is_finite()) {
        bail!("gradient clipping max norm must be a positive number, got {max_norm}");
    }
    let mut sums = Vec::new();
    for v in params.vars() {
        if let Some(g) = grads.get(v.as_tensor()) {
            let g = if g.dtype() == DType::F32 { g.clone() } else { g.to_dtype(DType::F32)? };
            sums.push(g.sqr()?.sum_all()?);
        }
    }
    if sums.is_empty() {
        return Ok(0.0);
    }
    let dev = sums[0].device().clone();
    let sums = sums.iter().map(|s| s.to_device(&dev)).collect::<candle_core::Result<Vec<_>>>()?;
    let norm = Tensor::stack(&sums, 0)?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
    // In f32, as torch computes it on the f32 norm tensor.
    let coef = max_norm as f32 / (norm + 1e-6f32);
    if coef.is_nan() || coef < 1.0 {
        for v in params.vars() {
            if let Some(g) = grads.get(v.as_tensor()) {
                let scaled = g.affine(coef as f64, 0.0)?;
                grads.insert(v.as_tensor(), scaled);
            }
        }
    }
    Ok(norm as f64)
}

/// Adam's and AdamW's new θ, m and v with every subnormal entry (|x| < 2⁻¹²⁶ ≈ 1.2e-38) set to
/// 0, on every device and in the fused CPU step alike. Under coupled L2 (`--weight-decay` with
/// Adam) a weight whose data gradient is zero — the input weights of a pixel that is 0 in every
/// image, those of a dead ReLU unit — is pushed towards 0 at Adam's normalised pace and its θ, m
/// and v sink through the subnormal range, where x86 arithmetic takes a microcode assist per
/// operation: an order-agnostic NADE (2×500, L2 3e-5) slowed from 2.7 s to 22 s an epoch as they
/// piled up (2026-12-08). Values this small change no result that a normal number would show.
fn flush_subnormal(x: &Tensor) -> Result<Tensor> {
    flush_below(x, f32::MIN_POSITIVE)
}

/// `x` with every entry of magnitude below `floor` set to 0.
fn flush_below(x: &Tensor, floor: f32) -> Result<Tensor> {
    Ok(x.abs()?.ge(floor as f64)?.where_cond(x, &x.zeros_like()?)?)
}

/// Under coupled L2 a weight with |θ| < 2⁻¹²⁶/λ is set to 0 before its L2 term λθ is formed:
/// that term would be subnormal (the same assist on every step, and again in m and v), while a
/// weight this small (≈ 4e-34 at λ = 3e-5) moves no output that a normal number can show.
fn l2_floor(wd: f64) -> f32 {
    if wd > 0.0 { (f32::MIN_POSITIVE as f64 / wd) as f32 } else { 0.0 }
}

/// Adam/AdamW in place on contiguous f32 CPU tensors: one pass over (g, m, v, θ) instead of a
/// dozen allocating tensor ops. The f32 arithmetic is the tensor-op path's, term by term and
/// in the same order, so both give the same bits (a test checks it); other devices and
/// layouts take the tensor-op path. The pass is elementwise and runs over chunks in parallel
/// (rayon's current pool), which cannot change a bit. It is compiled for AVX-512F and for
/// AVX2 and chosen at run time: square roots and divisions are correctly rounded at any
/// width and there are no fused multiply–adds, so every path gives the same bits.
///
/// Candle's in-place ops lend one tensor mutably each, so the three written tensors are
/// reached by nesting: θ's op lends θ, inside it m's op lends m, inside that v's op lends v
/// and reads g, and the innermost loop updates all three. Each slice comes from its own
/// storage's write lock, held by the enclosing call for as long as the loop runs.
mod fused_adam {
    use crate::cpu::{f32_slice as slice, f32_slice_mut as slice_mut};
    use candle_core::{CpuStorage, InplaceOp1, InplaceOp2, Layout, Tensor};
    use rayon::prelude::*;

    /// Elements per parallel chunk; smaller tensors are done in one piece.
    const CHUNK: usize = 1 << 14;

    #[derive(Clone, Copy)]
    pub(super) struct Coef {
        /// Coupled L2 (Adam's weight decay): g ← (θ·λ + 0) + g.
        l2: Option<f32>,
        /// θ below this in magnitude is set to 0 before the L2 term (see [`super::l2_floor`]).
        l2_floor: f32,
        /// 1 − β1, β2, 1 − β2.
        c1: f32,
        b2: f32,
        c2: f32,
        /// Decoupled decay (AdamW): θ₀ = θ·(1 − lr·λ) + 0.
        decay: Option<f32>,
        /// −lr / bc1, 1 / √bc2, ε.
        neg_step: f32,
        inv_bc2: f32,
        eps: f32,
    }

    /// One element, in the tensor-op path's order:
    /// m ← ((g − m)(1 − β1) + 0) + m (torch's lerp form), v ← (v·β2 + 0) + ((g(1 − β2) + 0)·g),
    /// θ ← θ₀ + (m·(−lr/bc1) + 0) / (√v·(1/√bc2) + ε), with g and θ₀ as in [`Coef`].
    #[inline(always)]
    fn update(c: Coef, th: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
        for (((t, m), v), &g) in th.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
            one(c, t, m, v, g);
        }
    }

    /// [`update`], also writing each new θ to `out` (the data-parallel window's copy): one pass
    /// over the entries instead of an update and a copy.
    #[inline(always)]
    fn update_out(c: Coef, th: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], out: &mut [f32]) {
        for ((((t, m), v), &g), o) in th.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g).zip(out.iter_mut()) {
            one(c, t, m, v, g);
            *o = *t;
        }
    }

    #[inline(always)]
    fn one(c: Coef, t: &mut f32, m: &mut f32, v: &mut f32, g: f32) {
        let g = match c.l2 {
            Some(wd) => {
                if t.abs() < c.l2_floor {
                    *t = 0.0;
                }
                (*t * wd + 0.0) + g
            }
            None => g,
        };
        *m = flush(((g - *m) * c.c1 + 0.0) + *m);
        *v = flush((*v * c.b2 + 0.0) + ((g * c.c2 + 0.0) * g));
        let t0 = match c.decay {
            Some(d) => *t * d + 0.0,
            None => *t,
        };
        let denom = v.sqrt() * c.inv_bc2 + c.eps;
        *t = flush(t0 + (*m * c.neg_step + 0.0) / denom);
    }

    /// A subnormal value (|x| < 2⁻¹²⁶) becomes 0; see [`super::flush_subnormal`].
    #[inline(always)]
    fn flush(x: f32) -> f32 {
        if x.abs() < f32::MIN_POSITIVE { 0.0 } else { x }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn update_avx512(c: Coef, th: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
        update(c, th, m, v, g)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn update_out_avx512(c: Coef, th: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], out: &mut [f32]) {
        update_out(c, th, m, v, g, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn update_out_avx2(c: Coef, th: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], out: &mut [f32]) {
        update_out(c, th, m, v, g, out)
    }

    fn run_out(c: Coef, th: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                // SAFETY: AVX-512F is available (checked just above).
                return unsafe { update_out_avx512(c, th, m, v, g, out) };
            }
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 is available (checked just above).
                return unsafe { update_out_avx2(c, th, m, v, g, out) };
            }
        }
        update_out(c, th, m, v, g, out)
    }

    /// [`each`], also writing the new θ to `out` (same length).
    pub(super) fn each_out(c: Coef, th: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], out: &mut [f32]) {
        if th.len() <= CHUNK {
            return run_out(c, th, m, v, g, out);
        }
        th.par_chunks_mut(CHUNK)
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .zip(out.par_chunks_mut(CHUNK))
            .for_each(|((((th, m), v), g), out)| run_out(c, th, m, v, g, out));
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn update_avx2(c: Coef, th: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
        update(c, th, m, v, g)
    }

    fn run(c: Coef, th: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                // SAFETY: AVX-512F is available (checked just above).
                return unsafe { update_avx512(c, th, m, v, g) };
            }
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 is available (checked just above).
                return unsafe { update_avx2(c, th, m, v, g) };
            }
        }
        update(c, th, m, v, g)
    }

    pub(super) fn each(c: Coef, th: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
        if th.len() <= CHUNK {
            return run(c, th, m, v, g);
        }
        th.par_chunks_mut(CHUNK)
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|(((th, m), v), g)| run(c, th, m, v, g));
    }

    pub(super) fn applies(theta: &Tensor, grad: &Tensor, bufs: &[Tensor]) -> bool {
        let ok = |t: &Tensor| t.device().is_cpu() && t.dtype() == candle_core::DType::F32 && t.is_contiguous();
        bufs.len() == 2 && ok(theta) && ok(grad) && bufs.iter().all(ok)
    }

    /// A mutable slice lent by an enclosing in-place op, carried into the next one.
    #[derive(Clone, Copy)]
    struct Lent(*mut f32, usize);
    // SAFETY: the pointer is only dereferenced inside the nested call, while the enclosing op
    // still holds the storage's write lock and does not touch the slice itself.
    unsafe impl Send for Lent {}
    unsafe impl Sync for Lent {}
    impl Lent {
        fn of(s: &mut [f32]) -> Lent {
            Lent(s.as_mut_ptr(), s.len())
        }
        /// SAFETY: see the type; the caller's enclosing op is still running.
        unsafe fn get<'a>(self) -> &'a mut [f32] {
            unsafe { std::slice::from_raw_parts_mut(self.0, self.1) }
        }
    }

    /// Outermost: lends θ, then runs m's op.
    struct OnTheta<'a> { c: Coef, m: &'a Tensor, v: &'a Tensor, g: &'a Tensor }
    impl InplaceOp1 for OnTheta<'_> {
        fn name(&self) -> &'static str { "wick-adam" }
        fn cpu_fwd(&self, th: &mut CpuStorage, lt: &Layout) -> candle_core::Result<()> {
            let th = Lent::of(slice_mut(th, lt, "parameter")?);
            self.m.inplace_op1(&OnM { c: self.c, th, v: self.v, g: self.g })
        }
    }

    /// Middle: lends m, then runs v's op (which also reads g).
    struct OnM<'a> { c: Coef, th: Lent, v: &'a Tensor, g: &'a Tensor }
    impl InplaceOp1 for OnM<'_> {
        fn name(&self) -> &'static str { "wick-adam" }
        fn cpu_fwd(&self, m: &mut CpuStorage, lm: &Layout) -> candle_core::Result<()> {
            let m = Lent::of(slice_mut(m, lm, "adam m")?);
            self.v.inplace_op2(self.g, &OnV { c: self.c, th: self.th, m })
        }
    }

    /// Innermost: lends v and reads g; updates m, v and θ in one pass.
    struct OnV { c: Coef, th: Lent, m: Lent }
    impl InplaceOp2 for OnV {
        fn name(&self) -> &'static str { "wick-adam" }
        fn cpu_fwd(&self, v: &mut CpuStorage, lv: &Layout, g: &CpuStorage, lg: &Layout) -> candle_core::Result<()> {
            let (v, g) = (slice_mut(v, lv, "adam v")?, slice(g, lg, "gradient")?);
            // SAFETY: θ's and m's ops are still running (they called this one) and wait for it.
            let (th, m) = unsafe { (self.th.get(), self.m.get()) };
            if th.len() != v.len() || m.len() != v.len() || g.len() != v.len() {
                candle_core::bail!("adam: parameter, gradient and state lengths differ ({}, {}, {}, {})", th.len(), g.len(), m.len(), v.len());
            }
            each(self.c, th, m, v, g);
            Ok(())
        }
    }

    /// The constants of one update at the parameter's step count `steps`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn coef(decoupled: bool, lr: f64, wd: f64, beta1: f64, beta2: f64, eps: f64, steps: u64) -> Coef {
        let step = steps as f64;
        let bc1 = 1.0 - beta1.powf(step);
        let bc2_sqrt = (1.0 - beta2.powf(step)).sqrt();
        Coef {
            l2: (!decoupled && wd != 0.0).then_some(wd as f32),
            l2_floor: super::l2_floor(wd),
            c1: (1.0 - beta1) as f32,
            b2: beta2 as f32,
            c2: (1.0 - beta2) as f32,
            decay: (decoupled && wd != 0.0).then_some((1.0 - lr * wd) as f32),
            neg_step: (-(lr / bc1)) as f32,
            inv_bc2: (1.0 / bc2_sqrt) as f32,
            eps: eps as f32,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn step(
        theta: &Tensor,
        grad: &Tensor,
        bufs: &[Tensor],
        decoupled: bool,
        lr: f64,
        wd: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        steps: u64,
    ) -> candle_core::Result<()> {
        let c = coef(decoupled, lr, wd, beta1, beta2, eps, steps);
        theta.inplace_op1(&OnTheta { c, m: &bufs[0], v: &bufs[1], g: grad })
    }

    #[cfg(all(test, target_arch = "x86_64"))]
    mod tests {
        use super::*;

        /// The AVX-512 and AVX2 builds of the loop give the portable build's bits.
        #[test]
        fn every_instruction_set_gives_the_same_bits() {
            let mut r = crate::rng::Rng::stream(3, "adam-simd");
            let n = 1000 + 13;
            let mut vals = |scale: f64| -> Vec<f32> { (0..n).map(|_| (r.normal() * scale) as f32).collect() };
            let (mut th, m, g) = (vals(1.0), vals(0.1), vals(1.0));
            // Some weights under the L2 floor or the normal range, which the update sets to 0.
            for (i, t) in th.iter_mut().enumerate().filter(|(i, _)| i % 7 == 0) {
                *t *= [1e-30, 1e-37, 1e-39][i % 3];
            }
            let v: Vec<f32> = vals(0.01).iter().map(|x| x * x).collect();
            for (l2, decay) in [(None, None), (Some(0.1), None), (Some(1e-4), None), (None, Some(0.999))] {
                let l2_floor = l2.map_or(0.0, |wd: f32| super::super::l2_floor(wd as f64));
                let c = Coef { l2, l2_floor, c1: 0.1, b2: 0.999, c2: 0.001, decay, neg_step: -0.003, inv_bc2: 1.7, eps: 1e-8 };
                let bits = |f: &dyn Fn(&mut [f32], &mut [f32], &mut [f32])| {
                    let (mut t, mut m, mut v) = (th.clone(), m.clone(), v.clone());
                    f(&mut t, &mut m, &mut v);
                    [t, m, v].map(|x| x.iter().map(|y| y.to_bits()).collect::<Vec<u32>>())
                };
                let portable = bits(&|t, m, v| update(c, t, m, v, &g));
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: checked just above.
                    assert_eq!(bits(&|t, m, v| unsafe { update_avx2(c, t, m, v, &g) }), portable, "avx2");
                }
                if std::is_x86_feature_detected!("avx512f") {
                    // SAFETY: checked just above.
                    assert_eq!(bits(&|t, m, v| unsafe { update_avx512(c, t, m, v, &g) }), portable, "avx512");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    // Generated by scripts/torch_optim_reference.py with torch 2.15.0+cu132 (float32, CPU).
    // Parameters w = [[0.5, -1.2, 0.8], [-0.3, 1.5, -0.7]] and b = [0.2, -0.4, 0.9]; each row is
    // w (row-major) ++ b after steps 1..4. b has no gradient at step 2.
    // SGD(lr per step [0.1, 0.05, 0.1, 0.02], momentum=0.9)
    const SGD_MOMENTUM: [[f32; 9]; 4] = [
        [0.49, -1.1800001, 0.77, -0.34, 1.55, -0.76, 0.15, -0.39000002, 0.88],
        [0.5005, -1.1760001, 0.74649996, -0.3605, 1.5374999, -0.767, 0.15, -0.39000002, 0.88],
        [0.49440002, -1.1938001, 0.7642, -0.3874, 1.4949999, -0.8696, 0.125, -0.421, 0.852],
        [0.49330202, -1.1900041, 0.764386, -0.398242, 1.4883499, -0.89206797, 0.1145, -0.43258, 0.85296],
    ];
    // SGD(lr per step [0.1, 0.05, 0.1, 0.02], momentum=0.8, nesterov=True, weight_decay=0.1)
    const SGD_NESTEROV_WD: [[f32; 9]; 4] = [
        [0.473, -1.1424, 0.7316, -0.3666, 1.563, -0.7954, 0.106400006, -0.3748, 0.84779996],
        [0.49094298, -1.1308784, 0.6948556, -0.3796406, 1.497133, -0.7692014, 0.106400006, -0.3748, 0.84779996],
        [0.4455988, -1.1382272, 0.7534099, -0.37460485, 1.3973014, -0.9138012, 0.10720481, -0.4310936, 0.79597956],
        [0.4415251, -1.1205149, 0.7461781, -0.38545796, 1.3836935, -0.9276782, 0.09311788, -0.44354832, 0.7985793],
    ];
    // Adam(lr per step [0.01, 0.02, 0.01, 0.005], betas=(0.9, 0.999), eps=1e-08, weight_decay=0.1)
    const ADAM_WD: [[f32; 9]; 4] = [
        [0.49, -1.19, 0.79, -0.31, 1.51, -0.71, 0.19, -0.39000002, 0.89],
        [0.4959049, -1.1757399, 0.77038884, -0.32414714, 1.5013301, -0.7101259, 0.19, -0.39000002, 0.89],
        [0.49292547, -1.1730877, 0.7700626, -0.32714358, 1.4959255, -0.7150138, 0.18611947, -0.39451668, 0.88032275],
        [0.4913735, -1.1701065, 0.76904315, -0.32979265, 1.4934305, -0.71734214, 0.18322073, -0.39774862, 0.87880284],
    ];
    // AdamW(lr per step [0.01, 0.02, 0.01, 0.005], betas=(0.9, 0.999), eps=1e-08, weight_decay=0.1)
    const ADAMW_WD: [[f32; 9]; 4] = [
        [0.48950002, -1.1888001, 0.7892, -0.3097, 1.5085, -0.7093, 0.1898, -0.3896, 0.8891],
        [0.49840483, -1.1810958, 0.7682146, -0.3242251, 1.501157, -0.7107718, 0.1898, -0.3896, 0.8891],
        [0.49693945, -1.1833062, 0.76906204, -0.32804218, 1.4965799, -0.7157461, 0.18615414, -0.39480543, 0.87888914],
        [0.49629492, -1.1815765, 0.76871526, -0.33095542, 1.4947382, -0.7181793, 0.18333885, -0.3982362, 0.8788596],
    ];
    // Adagrad(lr per step [0.01, 0.02, 0.01, 0.005], eps=1e-08, weight_decay=0.1)
    const ADAGRAD_WD: [[f32; 9]; 4] = [
        [0.49, -1.19, 0.79, -0.31, 1.51, -0.71, 0.19, -0.39000002, 0.89],
        [0.50716794, -1.1888146, 0.77816355, -0.31102568, 1.4915032, -0.69671446, 0.19, -0.39000002, 0.89],
        [0.49999848, -1.1926005, 0.7855862, -0.30768973, 1.4879556, -0.70431906, 0.19328731, -0.39932346, 0.88453996],
        [0.49940664, -1.1885775, 0.7840412, -0.31051555, 1.4874562, -0.70490825, 0.19077884, -0.40211132, 0.8871473],
    ];
    // clip_grad_norm_([w, b], max_norm=0.5) with the step-1 gradients: total norm, then clipped w.grad ++ b.grad
    const CLIP_HALF_NORM: f32 = 1.0999999;
    const CLIP_HALF_GRADS: [f32; 9] =
        [0.045454513, -0.09090903, 0.13636354, 0.18181805, -0.22727256, 0.27272707, 0.22727256, -0.045454513, 0.09090903];
    // clip_grad_norm_([w, b], max_norm=10.0) with the step-1 gradients: total norm, then clipped w.grad ++ b.grad
    const CLIP_NONE_NORM: f32 = 1.0999999;
    const CLIP_NONE_GRADS: [f32; 9] = [0.1, -0.2, 0.3, 0.4, -0.5, 0.6, 0.5, -0.1, 0.2];

    // The script's inputs.
    const W0: [f32; 6] = [0.5, -1.2, 0.8, -0.3, 1.5, -0.7];
    const B0: [f32; 3] = [0.2, -0.4, 0.9];
    const GRADS_W: [[f32; 6]; 4] = [
        [0.1, -0.2, 0.3, 0.4, -0.5, 0.6],
        [-0.3, 0.1, 0.2, 0.05, 0.7, -0.4],
        [0.25, 0.25, -0.6, -0.1, 0.2, 0.9],
        [0.0, -0.35, 0.15, 0.3, -0.05, 0.2],
    ];
    const GRADS_B: [Option<[f32; 3]>; 4] =
        [Some([0.5, -0.1, 0.2]), None, Some([-0.2, 0.4, 0.1]), Some([0.3, 0.3, -0.3])];
    const LRS_SGD: [f64; 4] = [0.1, 0.05, 0.1, 0.02];
    const LRS_ADAM: [f64; 4] = [0.01, 0.02, 0.01, 0.005];

    fn dev() -> Device {
        Device::Cpu
    }

    fn params() -> Params {
        let mut p = Params::new();
        p.add("w", &[2, 3], W0.to_vec(), &dev()).unwrap();
        p.add("b", &[3], B0.to_vec(), &dev()).unwrap();
        p
    }

    /// The script's gradients for step `k` (0-based; steps past 4 reuse them with a twist).
    fn grads(p: &Params, k: usize) -> GradStore {
        let mut gs = GradStore::default();
        let s = 1.0 + (k / 4) as f32 * 0.5;
        let gw: Vec<f32> = GRADS_W[k % 4].iter().map(|x| x * s).collect();
        gs.insert(p.vars()[0].as_tensor(), Tensor::from_vec(gw, &[2, 3], &dev()).unwrap());
        if let Some(gb) = GRADS_B[k % 4] {
            gs.insert(p.vars()[1].as_tensor(), Tensor::from_vec(gb.to_vec(), &[3], &dev()).unwrap());
        }
        gs
    }

    fn values(p: &Params) -> Vec<f32> {
        p.vars().iter().flat_map(|v| v.flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    fn assert_close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-6 * w.abs() + 1e-9, "{what}[{i}]: got {g}, torch {w}\n got {got:?}\nwant {want:?}");
        }
    }

    fn cfg(kind: OptimKind) -> OptimConfig {
        OptimConfig { kind, ..OptimConfig::default() }
    }

    fn check_against_torch(c: OptimConfig, lrs: [f64; 4], want: &[[f32; 9]; 4], what: &str) {
        let p = params();
        let mut opt = Optimizer::new(c, &p).unwrap();
        for k in 0..4 {
            opt.step(&p, &grads(&p, k), lrs[k]).unwrap();
            assert_close(&values(&p), &want[k], &format!("{what} step {}", k + 1));
        }
        assert_eq!(opt.steps(), 4);
        assert_eq!(opt.param_steps(), vec![("w".to_string(), 4), ("b".to_string(), 3)]);
    }

    #[test]
    fn sgd_momentum_matches_torch() {
        let c = OptimConfig { momentum: 0.9, ..cfg(OptimKind::Sgd) };
        check_against_torch(c, LRS_SGD, &SGD_MOMENTUM, "sgd momentum");
    }

    #[test]
    fn sgd_nesterov_weight_decay_matches_torch() {
        let c = OptimConfig { momentum: 0.8, nesterov: true, weight_decay: 0.1, ..cfg(OptimKind::Sgd) };
        check_against_torch(c, LRS_SGD, &SGD_NESTEROV_WD, "sgd nesterov wd");
    }

    #[test]
    fn adam_weight_decay_matches_torch() {
        let c = OptimConfig { weight_decay: 0.1, ..cfg(OptimKind::Adam) };
        check_against_torch(c, LRS_ADAM, &ADAM_WD, "adam wd");
    }

    #[test]
    fn adamw_weight_decay_matches_torch() {
        let c = OptimConfig { weight_decay: 0.1, ..cfg(OptimKind::Adamw) };
        check_against_torch(c, LRS_ADAM, &ADAMW_WD, "adamw wd");
    }

    #[test]
    fn adagrad_weight_decay_matches_torch() {
        let c = OptimConfig { weight_decay: 0.1, ..cfg(OptimKind::Adagrad) };
        check_against_torch(c, LRS_ADAM, &ADAGRAD_WD, "adagrad wd");
    }

    #[test]
    fn plain_sgd_is_theta_minus_lr_g() {
        let p = params();
        let mut opt = Optimizer::new(OptimConfig { lr: 0.1, ..cfg(OptimKind::Sgd) }, &p).unwrap();
        assert!(opt.state().is_empty());
        opt.step(&p, &grads(&p, 0), 0.5).unwrap();
        let want: Vec<f32> = W0
            .iter()
            .zip(&GRADS_W[0])
            .map(|(t, g)| t + g * -0.5f32)
            .chain(B0.iter().zip(&GRADS_B[0].unwrap()).map(|(t, g)| t + g * -0.5f32))
            .collect();
        assert_eq!(bits(&values(&p)), bits(&want));
    }

    #[test]
    fn adamw_decouples_weight_decay_and_adam_does_not() {
        let (lr, wd) = (0.01, 0.1);
        let zero_grads = |p: &Params| {
            let mut gs = GradStore::default();
            for v in p.vars() {
                gs.insert(v.as_tensor(), v.as_tensor().zeros_like().unwrap());
            }
            gs
        };
        let before: Vec<f32> = W0.iter().chain(&B0).copied().collect();

        // AdamW with a zero gradient: exactly θ(1 − lr λ).
        let p = params();
        let mut opt = Optimizer::new(OptimConfig { weight_decay: wd, ..cfg(OptimKind::Adamw) }, &p).unwrap();
        opt.step(&p, &zero_grads(&p), lr).unwrap();
        let want: Vec<f32> = before.iter().map(|t| t * (1.0 - lr * wd) as f32).collect();
        assert_eq!(bits(&values(&p)), bits(&want));
        // Its moments saw no weight decay: still zero.
        for (n, t) in opt.state() {
            assert!(t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|x| *x == 0.0), "{n}");
        }

        // Adam with a zero gradient: the L2 term goes through the normalised moments, so the
        // first step moves every θ by ≈ lr towards zero, whatever its size.
        let p = params();
        let mut opt = Optimizer::new(OptimConfig { weight_decay: wd, ..cfg(OptimKind::Adam) }, &p).unwrap();
        opt.step(&p, &zero_grads(&p), lr).unwrap();
        for (a, b) in values(&p).iter().zip(&before) {
            let moved = (a - b) as f64;
            assert!((moved + lr * b.signum() as f64).abs() < 1e-3 * lr, "θ {b} moved by {moved}");
        }
    }

    #[test]
    fn without_weight_decay_adam_and_adamw_are_identical() {
        let run = |kind| {
            let p = params();
            let mut opt = Optimizer::new(cfg(kind), &p).unwrap();
            for k in 0..8 {
                opt.step(&p, &grads(&p, k), 0.01).unwrap();
            }
            values(&p)
        };
        assert_eq!(bits(&run(OptimKind::Adam)), bits(&run(OptimKind::Adamw)));
    }

    #[test]
    fn state_is_named_like_torch() {
        let p = params();
        let names = |c| Optimizer::new(c, &p).unwrap().state().into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!(
            names(cfg(OptimKind::Adam)),
            ["optim.exp_avg.w", "optim.exp_avg_sq.w", "optim.exp_avg.b", "optim.exp_avg_sq.b"]
        );
        assert_eq!(
            names(OptimConfig { momentum: 0.5, ..cfg(OptimKind::Sgd) }),
            ["optim.momentum_buffer.w", "optim.momentum_buffer.b"]
        );
        assert_eq!(names(cfg(OptimKind::Adagrad)), ["optim.sum.w", "optim.sum.b"]);
        // Adam's first moment after one step is (1 − β1) g.
        let mut opt = Optimizer::new(cfg(OptimKind::Adam), &p).unwrap();
        opt.step(&p, &grads(&p, 0), 0.01).unwrap();
        let m = opt.state()[0].1.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want: Vec<f32> = GRADS_W[0].iter().map(|g| g * 0.1f32).collect();
        assert_close(&m, &want, "exp_avg");
        assert_eq!(opt.state()[0].1.device().location(), dev().location());
    }

    #[test]
    fn checkpoint_round_trip_resumes_bit_identically() {
        for c in [
            OptimConfig { momentum: 0.9, ..cfg(OptimKind::Sgd) },
            OptimConfig { momentum: 0.8, nesterov: true, weight_decay: 0.1, ..cfg(OptimKind::Sgd) },
            OptimConfig { weight_decay: 0.1, ..cfg(OptimKind::Adam) },
            OptimConfig { weight_decay: 0.1, ..cfg(OptimKind::Adamw) },
            OptimConfig { weight_decay: 0.1, ..cfg(OptimKind::Adagrad) },
        ] {
            let lr = |k: usize| 0.01 * (1.0 + k as f64 * 0.1);
            // 5 uninterrupted steps.
            let p = params();
            let mut opt = Optimizer::new(c.clone(), &p).unwrap();
            for k in 0..5 {
                opt.step(&p, &grads(&p, k), lr(k)).unwrap();
            }
            let straight = values(&p);

            // 3 steps, save (through the file bytes), load into fresh params and optimizer, 2 more.
            let p = params();
            let mut opt = Optimizer::new(c.clone(), &p).unwrap();
            for k in 0..3 {
                opt.step(&p, &grads(&p, k), lr(k)).unwrap();
            }
            let mut ck = Checkpoint::new();
            p.save_to(&mut ck).unwrap();
            opt.save_to(&mut ck, &p).unwrap();
            let ck = Checkpoint::from_bytes(&ck.to_bytes().unwrap(), "test").unwrap();
            assert_eq!(ck.meta::<u64>("optim_steps").unwrap(), 3);

            let mut p2 = Params::new();
            p2.zeros("w", &[2, 3], &dev()).unwrap();
            p2.zeros("b", &[3], &dev()).unwrap();
            p2.load_from(&ck).unwrap();
            let mut opt2 = Optimizer::new(c.clone(), &p2).unwrap();
            opt2.load_from(&ck, &p2).unwrap();
            assert_eq!(opt2.steps(), 3);
            assert_eq!(opt2.param_steps(), opt.param_steps());
            for ((n1, t1), (n2, t2)) in opt.state().iter().zip(opt2.state()) {
                assert_eq!(n1, &n2);
                let (a, b) = (t1.flatten_all().unwrap().to_vec1::<f32>().unwrap(), t2.flatten_all().unwrap().to_vec1::<f32>().unwrap());
                assert_eq!(bits(&a), bits(&b), "{n1}");
            }
            for k in 3..5 {
                opt2.step(&p2, &grads(&p2, k), lr(k)).unwrap();
            }
            assert_eq!(opt2.steps(), 5);
            assert_eq!(bits(&values(&p2)), bits(&straight), "{:?}", c.kind);
        }
    }

    #[test]
    fn loading_checks_kind_names_shapes_and_presence() {
        let p = params();
        let mut adam = Optimizer::new(cfg(OptimKind::Adam), &p).unwrap();
        adam.step(&p, &grads(&p, 0), 0.01).unwrap();
        let mut ck = Checkpoint::new();
        adam.save_to(&mut ck, &p).unwrap();

        let mut sgd = Optimizer::new(OptimConfig { momentum: 0.9, ..cfg(OptimKind::Sgd) }, &p).unwrap();
        let e = sgd.load_from(&ck, &p).unwrap_err().to_string();
        assert!(e.contains("checkpoint's optimizer is adam, but this run uses sgd"), "{e}");

        let e = adam.load_from(&Checkpoint::new(), &p).unwrap_err().to_string();
        assert!(e.contains("no optimizer state"), "{e}");

        // A model with a differently shaped or an extra parameter.
        let mut q = Params::new();
        q.zeros("w", &[3, 2], &dev()).unwrap();
        q.zeros("b", &[3], &dev()).unwrap();
        let mut oq = Optimizer::new(cfg(OptimKind::Adam), &q).unwrap();
        let e = oq.load_from(&ck, &q).unwrap_err().to_string();
        assert!(e.contains("loading optimizer state") && e.contains("'optim.exp_avg.w' has shape [2, 3], expected [3, 2]"), "{e}");
        assert_eq!(oq.steps(), 0, "a failed load changes nothing");

        let mut r = params();
        r.zeros("c", &[1], &dev()).unwrap();
        let mut or = Optimizer::new(cfg(OptimKind::Adam), &r).unwrap();
        let e = or.load_from(&ck, &r).unwrap_err().to_string();
        assert!(e.contains("no step count for parameter 'c'"), "{e}");

        let mut ck2 = ck.clone();
        ck2.set_meta("optim_param_steps", &serde_json::json!({"w": 1, "b": 1, "c": 1}));
        let e = or.load_from(&ck2, &r).unwrap_err().to_string();
        assert!(e.contains("checkpoint has no tensor 'optim.exp_avg.c'"), "{e}");

        // Using the optimizer with other parameters than it was built for.
        let e = adam.step(&r, &grads(&p, 0), 0.01).unwrap_err().to_string();
        assert!(e.contains("built for parameters [w, b] but was given [w, b, c]"), "{e}");
        let e = adam.step(&p, &grads(&p, 0), -1.0).unwrap_err().to_string();
        assert!(e.contains("learning rate must be a non-negative number, got -1"), "{e}");
    }

    #[test]
    fn parameters_without_gradients_are_skipped() {
        let p = params();
        let mut opt = Optimizer::new(cfg(OptimKind::Adam), &p).unwrap();
        opt.step(&p, &GradStore::default(), 0.1).unwrap();
        assert_eq!(values(&p), W0.iter().chain(&B0).copied().collect::<Vec<_>>());
        assert_eq!(opt.steps(), 1);
        assert_eq!(opt.param_steps(), vec![("w".to_string(), 0), ("b".to_string(), 0)]);
    }

    #[test]
    fn works_with_real_backprop() {
        // Minimise |w - target|² with Adam: the gradients come from candle's autograd.
        let mut p = Params::new();
        let w = p.add("w", &[3], vec![1.0, -2.0, 0.5], &dev()).unwrap();
        let target = Tensor::new(&[0.3f32, 0.7, -0.4], &dev()).unwrap();
        let mut opt = Optimizer::new(OptimConfig { lr: 0.05, ..cfg(OptimKind::Adam) }, &p).unwrap();
        for _ in 0..500 {
            let loss = (&w - &target).unwrap().sqr().unwrap().sum_all().unwrap();
            let g = loss.backward().unwrap();
            opt.step(&p, &g, 0.05).unwrap();
        }
        assert_close(&values(&p), &[0.3, 0.7, -0.4], "converged");
    }

    #[test]
    fn clip_grad_norm_matches_torch() {
        let p = params();
        let mut g = grads(&p, 0);
        let n = clip_grad_norm(&p, &mut g, 0.5).unwrap();
        assert!((n as f32 - CLIP_HALF_NORM).abs() <= 1e-6 * CLIP_HALF_NORM);
        let got: Vec<f32> =
            p.vars().iter().flat_map(|v| g.get(v.as_tensor()).unwrap().to_vec1_any()).collect();
        assert_close(&got, &CLIP_HALF_GRADS, "clipped grads");

        let mut g = grads(&p, 0);
        let n = clip_grad_norm(&p, &mut g, 10.0).unwrap();
        assert!((n as f32 - CLIP_NONE_NORM).abs() <= 1e-6 * CLIP_NONE_NORM);
        let got: Vec<f32> =
            p.vars().iter().flat_map(|v| g.get(v.as_tensor()).unwrap().to_vec1_any()).collect();
        assert_eq!(bits(&got), bits(&CLIP_NONE_GRADS), "norm below max: gradients untouched");

        // Missing gradients are skipped; none at all gives norm 0.
        let mut g = grads(&p, 1);
        let n = clip_grad_norm(&p, &mut g, 1e3).unwrap();
        let want = GRADS_W[1].iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        assert!((n - want).abs() < 1e-6 * want, "{n} vs {want}");
        assert!(g.get(p.vars()[1].as_tensor()).is_none());
        assert_eq!(clip_grad_norm(&p, &mut GradStore::default(), 1.0).unwrap(), 0.0);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = clip_grad_norm(&p, &mut grads(&p, 0), bad).unwrap_err().to_string();
            assert!(e.contains("max norm must be a positive number"), "{e}");
        }
    }

    trait ToVec1Any {
        fn to_vec1_any(&self) -> Vec<f32>;
    }
    impl ToVec1Any for Tensor {
        fn to_vec1_any(&self) -> Vec<f32> {
            self.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        }
    }

    #[test]
    fn validate_rejects_bad_values_with_one_line_errors() {
        assert!(OptimConfig::default().validate().is_ok());
        let d = OptimConfig::default();
        for (c, want) in [
            (OptimConfig { lr: -0.1, ..d.clone() }, "learning rate must be a positive number, got -0.1"),
            (OptimConfig { lr: 0.0, ..d.clone() }, "learning rate must be a positive number, got 0"),
            (OptimConfig { lr: f64::NAN, ..d.clone() }, "learning rate must be a positive number, got NaN"),
            (OptimConfig { lr: f64::INFINITY, ..d.clone() }, "learning rate must be a positive number, got inf"),
            (OptimConfig { beta1: 1.0, ..d.clone() }, "beta1 must be in [0, 1), got 1"),
            (OptimConfig { beta2: -0.5, ..d.clone() }, "beta2 must be in [0, 1), got -0.5"),
            (OptimConfig { eps: 0.0, ..d.clone() }, "eps must be a positive number, got 0"),
            (OptimConfig { weight_decay: -1e-4, ..d.clone() }, "weight decay must be a non-negative number, got -0.0001"),
            (OptimConfig { kind: OptimKind::Sgd, momentum: 1.0, ..d.clone() }, "momentum must be in [0, 1), got 1"),
            (OptimConfig { kind: OptimKind::Sgd, nesterov: true, ..d.clone() }, "nesterov needs momentum > 0, got momentum 0"),
            (OptimConfig { momentum: 0.9, ..d.clone() }, "momentum is only used by sgd (adam uses beta1), got momentum 0.9"),
            (OptimConfig { kind: OptimKind::Adamw, nesterov: true, ..d.clone() }, "nesterov is only used by sgd, not adamw"),
        ] {
            let e = c.validate().unwrap_err().to_string();
            assert_eq!(e, want);
            let e = Optimizer::new(c, &params()).unwrap_err().to_string();
            assert_eq!(e, want);
        }
        let ok = OptimConfig { kind: OptimKind::Sgd, momentum: 0.9, nesterov: true, weight_decay: 1e-4, ..d.clone() };
        assert!(ok.validate().is_ok());
        assert!(OptimConfig { beta1: 0.0, ..d }.validate().is_ok());
    }

    #[test]
    fn kinds_parse_and_configs_deserialise() {
        assert_eq!("sgd".parse::<OptimKind>().unwrap(), OptimKind::Sgd);
        assert_eq!("Adam".parse::<OptimKind>().unwrap(), OptimKind::Adam);
        assert_eq!("adamw".parse::<OptimKind>().unwrap(), OptimKind::Adamw);
        let e = "rmsprop".parse::<OptimKind>().unwrap_err().to_string();
        assert_eq!(e, "unknown optimizer 'rmsprop': expected sgd, adam, adamw or adagrad");
        for k in [OptimKind::Sgd, OptimKind::Adam, OptimKind::Adamw, OptimKind::Adagrad] {
            assert_eq!(k.to_string().parse::<OptimKind>().unwrap(), k);
        }
        let c = OptimConfig::default();
        let j = serde_json::to_value(&c).unwrap();
        assert_eq!(j["kind"], "adam");
        assert_eq!(serde_json::from_value::<OptimConfig>(j).unwrap(), c);
        let t: OptimConfig = toml::from_str("kind = \"sgd\"\nlr = 0.1\nmomentum = 0.9").unwrap();
        assert_eq!(t, OptimConfig { kind: OptimKind::Sgd, lr: 0.1, momentum: 0.9, ..OptimConfig::default() });
    }

    #[test]
    fn fused_cpu_adam_gives_the_same_bits_as_the_tensor_ops() {
        use candle_core::{Device, Tensor};
        let dev = Device::Cpu;
        for (kind, wd) in [(OptimKind::Adam, 0.0), (OptimKind::Adam, 0.1), (OptimKind::Adamw, 0.1), (OptimKind::Adamw, 0.0)] {
            let mk = || {
                let mut p = Params::new();
                let mut r = crate::rng::Rng::stream(1, "init");
                p.uniform("w", &[17, 9], 1.0, &mut r, &dev).unwrap();
                p.uniform("b", &[9], 1.0, &mut r, &dev).unwrap();
                // Several parallel chunks, the last one partial.
                p.uniform("big", &[301, 137], 1.0, &mut r, &dev).unwrap();
                p
            };
            let (pa, pb) = (mk(), mk());
            let cfg = OptimConfig { kind, weight_decay: wd, ..OptimConfig::default() };
            let mut fused = Optimizer::new(cfg.clone(), &pa).unwrap();
            let mut composed = Optimizer::new(cfg, &pb).unwrap().composed_only();
            let mut r = crate::rng::Rng::stream(2, "grads");
            for step in 0..7 {
                let mut ga = GradStore::default();
                let mut gb = GradStore::default();
                for (va, vb) in pa.vars().iter().zip(pb.vars()) {
                    let g: Vec<f32> = (0..va.elem_count()).map(|_| r.normal() as f32).collect();
                    let g = Tensor::from_vec(g, va.dims(), &dev).unwrap();
                    ga.insert(va.as_tensor(), g.clone());
                    gb.insert(vb.as_tensor(), g);
                }
                let lr = 0.01 / (step + 1) as f64;
                fused.step(&pa, &ga, lr).unwrap();
                composed.step(&pb, &gb, lr).unwrap();
            }
            for (va, vb) in pa.vars().iter().zip(pb.vars()) {
                let a: Vec<u32> = va.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|x| x.to_bits()).collect();
                let b: Vec<u32> = vb.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|x| x.to_bits()).collect();
                assert_eq!(a, b, "{kind:?} wd {wd}");
            }
            for ((na, ta), (_, tb)) in fused.state().iter().zip(composed.state()) {
                assert_eq!(ta.flatten_all().unwrap().to_vec1::<f32>().unwrap(), tb.flatten_all().unwrap().to_vec1::<f32>().unwrap(), "{na}");
            }
        }
    }

    /// Weights with no data gradient under coupled L2 (or AdamW's decay) never linger as
    /// subnormal numbers in θ, m or v: those become 0, in the fused step and the tensor ops alike
    /// (the same bits), and normal values are left to the update.
    #[test]
    fn adam_sets_subnormal_weights_and_state_to_zero_on_both_paths() {
        use candle_core::{Device, Tensor};
        let dev = Device::Cpu;
        // 2^-120 … 2^-183: normal, subnormal (2^-127 … 2^-149) and below the subnormal range.
        let init: Vec<f32> = (0..64).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 } * 2f32.powi(-120 - i)).collect();
        let subnormal = |x: f32| x != 0.0 && x.abs() < f32::MIN_POSITIVE;
        assert!(init.iter().any(|&x| subnormal(x)));
        for (kind, wd) in [(OptimKind::Adam, 0.5), (OptimKind::Adam, 1e-4), (OptimKind::Adamw, 0.5), (OptimKind::Adam, 0.0)] {
            let mk = || {
                let mut p = Params::new();
                let mut r = crate::rng::Rng::stream(3, "init");
                p.uniform("big", &[1, 20_000], 1e-3, &mut r, &dev).unwrap(); // several parallel chunks
                p.add("tiny", &[64], init.clone(), &dev).unwrap();
                p
            };
            let (pa, pb) = (mk(), mk());
            let cfg = OptimConfig { kind, weight_decay: wd, ..OptimConfig::default() };
            let mut fused = Optimizer::new(cfg.clone(), &pa).unwrap();
            let mut composed = Optimizer::new(cfg, &pb).unwrap().composed_only();
            let mut r = crate::rng::Rng::stream(4, "grads");
            for step in 0..30 {
                let (mut ga, mut gb) = (GradStore::default(), GradStore::default());
                for (va, vb) in pa.vars().iter().zip(pb.vars()) {
                    // "big" gets a gradient that shrinks towards subnormal values; "tiny" none.
                    let scale = if va.elem_count() == 64 { 0.0 } else { 2f64.powi(-4 * step) };
                    let g: Vec<f32> = (0..va.elem_count()).map(|_| (r.normal() * scale) as f32).collect();
                    let g = Tensor::from_vec(g, va.dims(), &dev).unwrap();
                    ga.insert(va.as_tensor(), g.clone());
                    gb.insert(vb.as_tensor(), g);
                }
                fused.step(&pa, &ga, 1e-3).unwrap();
                composed.step(&pb, &gb, 1e-3).unwrap();
                let bits = |t: &Tensor| -> Vec<u32> { t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|x| x.to_bits()).collect() };
                for ((na, ta), (_, tb)) in fused.state().iter().zip(composed.state()) {
                    assert_eq!(bits(ta), bits(&tb), "{kind:?} wd {wd} step {step}: {na}");
                    let vals = ta.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    assert!(!vals.iter().any(|&x| subnormal(x)), "{kind:?} wd {wd} step {step}: subnormal in {na}");
                }
                for (va, vb) in pa.vars().iter().zip(pb.vars()) {
                    assert_eq!(bits(va.as_tensor()), bits(vb.as_tensor()), "{kind:?} wd {wd} step {step}");
                    let vals = va.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    assert!(!vals.iter().any(|&x| subnormal(x)), "{kind:?} wd {wd} step {step}: subnormal θ");
                    if va.elem_count() == 64 {
                        // Subnormal entries, and under coupled L2 those whose λθ would be, are 0
                        // from the first step; those well above stay nonzero (AdamW's decay may
                        // carry ones near 2⁻¹²⁶ under it).
                        let floor = if kind == OptimKind::Adam && wd > 0.0 { f32::MIN_POSITIVE.max((f32::MIN_POSITIVE as f64 / wd) as f32) } else { f32::MIN_POSITIVE };
                        for (i, (&x, &x0)) in vals.iter().zip(&init).enumerate() {
                            if x0.abs() < floor {
                                assert_eq!(x, 0.0, "{kind:?} wd {wd} step {step}: tiny[{i}] from {x0:e}");
                            } else if x0.abs() >= 4.0 * floor {
                                assert_ne!(x, 0.0, "{kind:?} wd {wd} step {step}: tiny[{i}] from {x0:e}");
                            }
                        }
                    }
                }
            }
        }
    }

    /// Two shares of a sharded update (`step_flat_range` over [0, k) and [k, P) of the flat
    /// vector, as two ranks would take them), with the shares' values and state exchanged after
    /// each step, give the bits of the whole `step`, for Adam with L2 and for AdamW; and the
    /// state cannot be saved or stepped whole while it is sharded.
    #[test]
    fn sharded_updates_give_the_bits_of_the_whole_step() {
        for (kind, wd) in [(OptimKind::Adam, 0.0), (OptimKind::Adam, 0.05), (OptimKind::Adamw, 0.1)] {
            let cfg = OptimConfig { kind, weight_decay: wd, ..OptimConfig::default() };
            let order: Vec<usize> = vec![1, 0]; // "b" < "w": the sorted-name order
            let (whole, a, b) = (params(), params(), params());
            let mut ow = Optimizer::new(cfg.clone(), &whole).unwrap();
            let (mut oa, mut ob) = (Optimizer::new(cfg.clone(), &a).unwrap(), Optimizer::new(cfg.clone(), &b).unwrap());
            assert!(oa.steps_flat(&a));
            let flat = |p: &Params| -> Vec<f32> { order.iter().flat_map(|&i| p.vars()[i].flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect() };
            let k = 4; // cuts "w" (flat 3..9) after its first entry
            for step in 0..6 {
                // Every parameter gets a gradient (as after a combine).
                let mut g = grads(&whole, step);
                if g.get(whole.vars()[1].as_tensor()).is_none() {
                    g.insert(whole.vars()[1].as_tensor(), Tensor::zeros(3, DType::F32, &dev()).unwrap());
                }
                let gflat: Vec<f32> = order.iter().flat_map(|&i| g.get(whole.vars()[i].as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect();
                let lr = LRS_ADAM[step % 4];
                ow.step(&whole, &g, lr).unwrap();
                let (mut ta, mut tb) = (vec![0.0; k], vec![0.0; 9 - k]);
                oa.step_flat_range(&a, &order, 0..k, &gflat[..k], &mut ta, lr).unwrap();
                ob.step_flat_range(&b, &order, k..9, &gflat[k..], &mut tb, lr).unwrap();
                assert!(oa.is_sharded() && oa.step(&a, &g, lr).is_err());
                let mut ck = Checkpoint::new();
                assert!(oa.save_to(&mut ck, &a).is_err());
                // Each share's new values, exchanged as the ranks exchange them.
                let theta: Vec<f32> = ta.iter().chain(&tb).copied().collect();
                assert_eq!(bits(&theta), bits(&flat(&whole)), "{kind} wd {wd} step {step}");
                assert_eq!(bits(&flat(&a)[..k]), bits(&ta));
                assert_eq!(bits(&flat(&b)[k..]), bits(&tb));
                for p in [&a, &b] {
                    p.vars()[0].set(&Tensor::from_vec(theta[3..].to_vec(), &[2, 3], &dev()).unwrap()).unwrap();
                    p.vars()[1].set(&Tensor::from_vec(theta[..3].to_vec(), 3, &dev()).unwrap()).unwrap();
                }
            }
            // The state brought back to one replica is the whole optimizer's.
            for j in 0..2 {
                let theirs = ob.flat_state(&b, &order, j, k..9).unwrap();
                oa.set_flat_state(&a, &order, j, k..9, &theirs).unwrap();
            }
            oa.mark_whole();
            let st = |o: &Optimizer| o.state().into_iter().map(|(n, t)| (n, bits(&t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))).collect::<Vec<_>>();
            assert_eq!(st(&oa), st(&ow), "{kind} wd {wd}");
            assert_eq!(oa.param_steps(), ow.param_steps());
            assert_eq!(oa.steps(), ow.steps());
            oa.save_to(&mut Checkpoint::new(), &a).unwrap();
        }
    }
}
