//! MADE: masked autoencoder for distribution estimation (Germain, Gregor, Murray & Larochelle 2015).
//!
//! An MLP whose weight matrices are masked so that output d sees only inputs before d in an
//! ordering m⁰ (a permutation of 1..D). Each hidden unit k of layer l gets a degree
//! `mˡ(k) ∈ {min mˡ⁻¹, …, D−1}`; the masks are (§4, eq. 12–13)
//!
//! ```text
//! Mˡ[k', k]   = 1[mˡ(k') ≥ mˡ⁻¹(k)]        hidden layers
//! Mᴼ[d, k]    = 1[m⁰(d) > mᴸ(k)]            output layer
//! h¹ = relu((W⁰ ⊙ M¹) x + b⁰), …,  z = (Wᴸ ⊙ Mᴼ) hᴸ + bᴸ,   p(x_d = 1 | x_<d) = σ(z_d)
//! ```
//!
//! **Connectivity-agnostic training** (§4.2) keeps K mask sets and uses one of them, chosen at
//! random, at every step; **order-agnostic training** also gives each set its own random input
//! ordering, drawn by [`wick_core::mask::ordering`] — the orderings of the order-agnostic masks
//! of Uria et al. 2014 that masked pretraining (`wick train masked --mask order-agnostic`) uses;
//! a MADE member trains every cut d of its ordering at once. At test time the model is the uniform mixture of its K members:
//! `log p(x) = logsumexp_k log p_k(x) − log K`, an exact likelihood (averaging the members'
//! logits instead, as some popular implementations do, does not give a normalised density).
//!
//! Checkpoint tensors: `made.w{l}` `[in, out]` and `made.b{l}` `[out]` for l = 0..=L (layer L is
//! the output layer), and in `best.safetensors` the masks `made.mask{l}.k{k}` `[in, out]`
//! (0/1, `u8`) and the orderings `made.order.k{k}` `[D]` (the degree m⁰ of each input, 1..D).
//! The model itself keeps only the degrees and builds a mask when the Candle path needs it
//! (on a GPU, once per mask set): dense f32 masks would take 1.6 GB at 8,000 hidden units and
//! 32 mask sets, where the CPU path needs none.
//! Weights are stored `[in, out]` so that a layer is `h (W ⊙ M) + b` with no transpose: the
//! masked product and its gradient then stay contiguous, which is several times faster in Candle.
//!
//! **Direct connections** (`with_direct`, the authors' `direct_input_connect=Output`, used by their
//! best MNIST rows) add a masked input→output term, an FVSBN inside the MADE:
//! `z = (Wᴸ ⊙ Mᴼ) hᴸ + bᴸ + (A ⊙ Mᴰ) x` with `Mᴰ[d, i] = 1[m⁰(d) > m⁰(i)]` (eq. 13 with the inputs
//! in place of the last hidden layer). Parameter `made.direct` `[D, D]` (`[in, out]`, U(±1/√D)
//! from its own `init-direct` stream, so the other weights are those of a run without it); in
//! `best.safetensors` its mask `made.mask_direct.k{k}`.
//!
//! On the CPU, training steps and likelihoods run on sorted units instead ([`crate::staircase`]):
//! with the hidden units of every layer sorted by degree and the inputs and outputs by m⁰, every
//! mask is a staircase and the products skip its zero blocks (about half the multiply–adds).
//! The parameters keep the layout above; the kernels pack them into sorted order each step
//! and scatter the gradients back.

mod cpu;

use crate::model::{bce_rows, masked, DensityModel};
use crate::staircase::Staircase;
use candle_core::{backprop::GradStore, DType, Device, Tensor};
use std::sync::{Mutex, OnceLock};
use wick_core::{bail, mask, params::Params, rng::Rng, Result};

wick_core::choice! {
    /// How the input ordering m⁰ is chosen.
    pub enum Order("order") {
        /// m⁰(d) = d: the pixels in reading order
        Natural = "natural",
        /// One uniformly random permutation (from the `masks` stream)
        Random = "random",
    }
}

/// The degrees of one mask set (§4): `[m⁰, m¹, …, mᴸ]`, the ordering `m0` (a permutation of
/// 1..D) then, for each of `layers` hidden layers of `hidden` units, `mˡ(k)` drawn uniformly
/// from `{min mˡ⁻¹, …, D−1}` (so that no unit is cut off from every output).
pub fn degrees(m0: &[usize], layers: usize, hidden: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
    let dim = m0.len();
    let mut degrees = vec![m0.to_vec()];
    for _ in 0..layers {
        let lo = degrees.last().unwrap().iter().copied().min().unwrap().min(dim - 1);
        degrees.push((0..hidden).map(|_| lo + rng.below((dim - lo) as u64) as usize).collect());
    }
    degrees
}

/// Eq. 12, the mask of a hidden layer: unit k' of layer l sees unit k of layer l − 1 iff
/// `mˡ(k') ≥ mˡ⁻¹(k)`; as an `[in, out]` matrix `M[k, k'] = 1[cur(k') ≥ prev(k)]`.
pub fn hidden_mask(prev: &[usize], cur: &[usize]) -> Vec<f32> {
    prev.iter().flat_map(|&b| cur.iter().map(move |&a| (a >= b) as u8 as f32)).collect()
}

/// Eq. 13, the mask of the output layer: output d sees the last hidden unit k iff
/// `m⁰(d) > mᴸ(k)` (strictly: x_d never sees itself); as an `[in, out]` matrix
/// `M[k, d] = 1[m0(d) > last(k)]`.
pub fn output_mask(last: &[usize], m0: &[usize]) -> Vec<f32> {
    last.iter().flat_map(|&h| m0.iter().map(move |&d| (d > h) as u8 as f32)).collect()
}

/// A uniformly random ordering of 1..=D.
fn random_ordering(dim: usize, rng: &mut Rng) -> Vec<usize> {
    mask::ordering(dim, rng).into_iter().map(|r| r + 1).collect()
}

pub struct Made {
    dim: usize,
    seed: u64,
    params: Params,
    /// (weight, bias) per layer; the last is the output layer.
    layers: Vec<(Tensor, Tensor)>,
    /// degrees[k] = `[m⁰, m¹, …, mᴸ]` of mask set k ([`degrees`]); `degrees[k][0][d]` is the
    /// degree m⁰(d) ∈ 1..=D of input d.
    degrees: Vec<Vec<Vec<usize>>>,
    /// Mask tensors of each set, built once on a non-CPU device (see the module docs).
    mask_cache: Vec<OnceLock<Vec<Tensor>>>,
    /// stairs[k][l]: mask l of set k as a staircase over sorted units.
    stairs: Vec<Vec<Staircase>>,
    /// The direct input→output weights `[D, D]` (`[in, out]`), if any, and their staircase per
    /// mask set (inputs and outputs both sorted by m⁰: strictly lower triangular).
    direct: Option<(Tensor, Vec<Staircase>)>,
    /// Buffers of the CPU path ([`cpu`]), kept between calls.
    scratch: Mutex<cpu::Scratch>,
}

impl Made {
    /// `hidden` units in each of `layers` hidden layers, `k` mask sets. Weights and biases
    /// ~ U(±1/√fan_in) (PyTorch's nn.Linear default) from `init`; degrees from `masks_rng`.
    pub fn new(
        dim: usize,
        hidden: usize,
        layers: usize,
        k: usize,
        order: Order,
        order_agnostic: bool,
        seed: u64,
        device: &Device,
    ) -> Result<Made> {
        if dim < 2 || hidden == 0 || layers == 0 || k == 0 {
            bail!("MADE needs D ≥ 2, hidden ≥ 1, layers ≥ 1 and masks ≥ 1 (got D {dim}, hidden {hidden}, layers {layers}, masks {k})");
        }
        let mut init = Rng::stream(seed, "init");
        let mut params = Params::new();
        let sizes: Vec<usize> = std::iter::once(dim).chain(std::iter::repeat_n(hidden, layers)).chain(std::iter::once(dim)).collect();
        let mut wb = Vec::new();
        for l in 0..sizes.len() - 1 {
            let (fan_in, out) = (sizes[l], sizes[l + 1]);
            let bound = 1.0 / (fan_in as f64).sqrt();
            let w = params.uniform(&format!("made.w{l}"), &[fan_in, out], bound, &mut init, device)?;
            let b = params.uniform(&format!("made.b{l}"), &[out], bound, &mut init, device)?;
            wb.push((w, b));
        }
        let mut mrng = Rng::stream(seed, "masks");
        let base_order: Vec<usize> = match order {
            Order::Natural => (1..=dim).collect(),
            Order::Random => random_ordering(dim, &mut mrng),
        };
        let mut sets = Vec::with_capacity(k);
        let mut stairs = Vec::with_capacity(k);
        for _ in 0..k {
            let m0 = if order_agnostic { random_ordering(dim, &mut mrng) } else { base_order.clone() };
            let m = degrees(&m0, layers, hidden, &mut mrng);
            let mut st: Vec<Staircase> = (0..layers).map(|l| Staircase::new(&m[l], &m[l + 1], false)).collect();
            st.push(Staircase::new(&m[layers], &m0, true));
            stairs.push(st);
            sets.push(m);
        }
        let mask_cache = (0..k).map(|_| OnceLock::new()).collect();
        Ok(Made { dim, seed, params, layers: wb, degrees: sets, mask_cache, stairs, direct: None, scratch: Mutex::new(cpu::Scratch::default()) })
    }

    /// Add direct input→output connections (see the module docs) when `on`.
    pub fn with_direct(mut self, on: bool) -> Result<Made> {
        if on && self.direct.is_none() {
            let (d, dev) = (self.dim, self.layers[0].0.device().clone());
            let a = self.params.uniform("made.direct", &[d, d], 1.0 / (d as f64).sqrt(), &mut Rng::stream(self.seed, "init-direct"), &dev)?;
            let stairs = self.degrees.iter().map(|m| Staircase::new(&m[0], &m[0], true)).collect();
            self.direct = Some((a, stairs));
            self.mask_cache.iter_mut().for_each(|c| *c = OnceLock::new());
        }
        Ok(self)
    }

    /// The masks of set k, `[in, out]` per layer (eq. 12 for the hidden layers, eq. 13 for the
    /// output layer), then the direct connections' `[D, D]` if the model has them, as 0/1 in
    /// `dtype` on the parameters' device.
    fn build_masks(&self, k: usize, dtype: DType) -> Result<Vec<Tensor>> {
        let (m, dev, last) = (&self.degrees[k], self.layers[0].0.device(), self.layers.len() - 1);
        let n = if self.direct.is_some() { last + 2 } else { last + 1 };
        (0..n)
            .map(|l| {
                let (v, shape) = match l {
                    l if l < last => (hidden_mask(&m[l], &m[l + 1]), (m[l].len(), m[l + 1].len())),
                    l if l == last => (output_mask(&m[l], &m[0]), (m[l].len(), self.dim)),
                    _ => (output_mask(&m[0], &m[0]), (self.dim, self.dim)),
                };
                Ok(Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(dtype)?.to_device(dev)?)
            })
            .collect()
    }

    /// The f32 masks of set k for the Candle path: built on each call on the CPU (whose
    /// training and likelihoods take the staircase path and need none), once elsewhere.
    fn masks(&self, k: usize) -> Result<Vec<Tensor>> {
        if let Some(set) = self.mask_cache[k].get() {
            return Ok(set.clone());
        }
        let set = self.build_masks(k, DType::F32)?;
        if !self.layers[0].0.device().is_cpu() {
            let _ = self.mask_cache[k].set(set.clone());
        }
        Ok(set)
    }

    /// The ordering of mask set k: the degree m⁰(d) ∈ 1..=D of each input d.
    fn order(&self, k: usize) -> &[usize] {
        &self.degrees[k][0]
    }

    /// The step's mask set (from a stream indexed by the step, so a resumed run chooses the same).
    fn step_member(&self, step: u64) -> usize {
        Rng::stream_indexed(self.seed, "mask-choice", step).below(self.degrees.len() as u64) as usize
    }

    /// −log p_k(x) `[B]` of one member, on the CPU by the staircase kernels (not differentiable).
    fn member_nll_fast(&self, x: &Tensor, k: usize) -> Result<Tensor> {
        if self.host_path(x) {
            let (nll, _) = self.host_member(x, k, false)?;
            return Ok(Tensor::from_vec(nll, x.dim(0)?, x.device())?);
        }
        self.nll_member(x, k)
    }

    /// Logits `[B, D]` of mask set `k`.
    pub fn logits(&self, x: &Tensor, k: usize) -> Result<Tensor> {
        let mut h = x.clone();
        let last = self.layers.len() - 1;
        let masks = self.masks(k)?;
        for (l, ((w, b), m)) in self.layers.iter().zip(&masks).enumerate() {
            h = h.matmul(&masked(w, m)?)?.broadcast_add(b)?;
            if l < last {
                h = h.relu()?;
            }
        }
        if let Some((a, _)) = &self.direct {
            h = (h + x.matmul(&masked(a, &masks[last + 1])?)?)?;
        }
        Ok(h)
    }

    /// −log p_k(x) `[B]` of one member.
    pub fn nll_member(&self, x: &Tensor, k: usize) -> Result<Tensor> {
        Ok(bce_rows(&self.logits(x, k)?, x)?)
    }

    pub fn num_masks(&self) -> usize {
        self.degrees.len()
    }
}

impl DensityModel for Made {
    fn dim(&self) -> usize {
        self.dim
    }

    fn params(&self) -> &Params {
        &self.params
    }

    /// The mixture over the K mask sets: −(logsumexp_k log p_k(x) − log K). On the CPU by the
    /// staircase kernels (not differentiable: `train_nll` is).
    fn nll(&self, x: &Tensor) -> Result<Tensor> {
        let k = self.degrees.len();
        if k == 1 {
            return self.member_nll_fast(x, 0);
        }
        let lp: Vec<Tensor> = (0..k).map(|i| Ok(self.member_nll_fast(x, i)?.neg()?)).collect::<Result<_>>()?;
        let lp = Tensor::stack(&lp, 1)?; // [B, K]
        let mx = lp.max_keepdim(1)?;
        let lse = (lp.broadcast_sub(&mx)?.exp()?.sum_keepdim(1)?.log()? + mx)?.squeeze(1)?;
        Ok(((lse - (k as f64).ln())?).neg()?)
    }

    /// One member per step, chosen from a stream indexed by the step (so a resumed run chooses the same).
    fn train_nll(&self, x: &Tensor, step: u64) -> Result<Tensor> {
        self.nll_member(x, self.step_member(step))
    }

    /// Closed-form backpropagation through the masked MLP for the step's mask set k:
    /// `∂L/∂z = (σ(z) − x)/B`, then per layer from the top
    /// `∂W̃_l = (h_lᵀ ∂a_l) ⊙ M_l`, `∂b_l = Σ_rows ∂a_l`, `∂a_{l−1} = (∂a_l (W_l ⊙ M_l)ᵀ) ⊙ 1[h_l > 0]`,
    /// with no autograd graph (the same values as autograd on `train_nll`, tested). On the CPU
    /// on sorted units by the staircase kernels; elsewhere with Candle ops.
    fn loss_and_grads(&self, x: &Tensor, step: u64) -> Result<(f64, GradStore)> {
        let k = self.step_member(step);
        if !self.host_path(x) {
            return self.loss_and_grads_candle(x, k);
        }
        let (nll, g) = self.host_member(x, k, true)?;
        let loss = nll.iter().map(|&v| v as f64).sum::<f64>() / nll.len() as f64;
        let mut grads = GradStore::default();
        let mut g = g.expect("gradients requested");
        if let Some((a, _)) = &self.direct {
            let (da, _) = g.pop().expect("the direct connections' gradient comes last");
            grads.insert(a, Tensor::from_vec(da, a.dims(), x.device())?);
        }
        for ((w, b), (dw, db)) in self.layers.iter().zip(g) {
            grads.insert(w, Tensor::from_vec(dw, w.dims(), x.device())?);
            grads.insert(b, Tensor::from_vec(db, b.dims(), x.device())?);
        }
        Ok((loss, grads))
    }

    /// The CPU path with the gradients unpacked straight into `flat` (sorted-name order).
    fn loss_and_grads_flat(&self, x: &Tensor, step: u64, keys: &[u64], flat: &mut [f32]) -> Result<(f64, Option<GradStore>)> {
        self.grads_into_flat(x, step, keys, flat, false)
    }

    /// The weights' gradients stay in the staircases' sorted order (each is written where
    /// [`Staircase::scatter`] says), the biases in parameter order.
    fn grad_layout(&self, step: u64) -> Option<wick_core::dist::GradLayout> {
        let w = &self.layers[0].0;
        if !(w.device().is_cpu() && w.dtype() == DType::F32) {
            return None;
        }
        let k = self.step_member(step);
        let pieces = wick_core::dist::sorted_order(&self.params)
            .into_iter()
            .map(|i| {
                let name = self.params.names()[i].as_str();
                let n = self.params.vars()[i].elem_count();
                let scatter = match name.strip_prefix("made.w").and_then(|l| l.parse::<usize>().ok()) {
                    Some(l) => Some(self.stairs[k][l].scatter()),
                    None if name == "made.direct" => self.direct.as_ref().map(|(_, st)| st[k].scatter()),
                    None => None,
                };
                (n, scatter)
            })
            .collect();
        Some(wick_core::dist::GradLayout { pieces })
    }

    fn loss_and_grads_laid(&self, x: &Tensor, step: u64, keys: &[u64], flat: &mut [f32]) -> Result<(f64, Option<GradStore>)> {
        self.grads_into_flat(x, step, keys, flat, true)
    }

    fn sample(&self, n: usize, rng: &mut Rng, observed: Option<(&[f32], &[bool])>) -> Result<Vec<f32>> {
        self.sample_impl(n, rng, observed)
    }

    fn buffers(&self) -> Result<Vec<(String, Tensor)>> {
        self.buffers_impl()
    }
}

impl Made {
    /// The CPU path's gradients written into `flat` (sorted-name order of the parameters):
    /// unpacked into parameter order, or with `laid` the weights' left in sorted order
    /// ([`DensityModel::grad_layout`]). Elsewhere they are returned.
    fn grads_into_flat(&self, x: &Tensor, step: u64, keys: &[u64], flat: &mut [f32], laid: bool) -> Result<(f64, Option<GradStore>)> {
        if !self.host_path(x) || flat.len() != self.params.numel() {
            let (loss, grads) = self.loss_and_grads_keyed(x, step, keys)?;
            return Ok((loss, Some(grads)));
        }
        // Cut `flat` into the parameters' places, then pick them by name.
        let mut places: std::collections::HashMap<&str, &mut [f32]> = std::collections::HashMap::new();
        let mut rest = flat;
        for i in wick_core::dist::sorted_order(&self.params) {
            let (here, tail) = rest.split_at_mut(self.params.vars()[i].elem_count());
            places.insert(self.params.names()[i].as_str(), here);
            rest = tail;
        }
        let mut take = |name: String| places.remove(name.as_str()).ok_or_else(|| wick_core::Error::new(format!("made: no parameter '{name}'")));
        let layers = (0..self.layers.len()).map(|l| Ok((take(format!("made.w{l}"))?, take(format!("made.b{l}"))?))).collect::<Result<Vec<_>>>()?;
        let direct = match self.direct {
            Some(_) => Some(take("made.direct".to_string())?),
            None => None,
        };
        let k = self.step_member(step);
        let (nll, _) = self.host_member_into(x, k, true, Some(cpu::GradsInto { layers, direct, laid }))?;
        Ok((nll.iter().map(|&v| v as f64).sum::<f64>() / nll.len() as f64, None))
    }

    /// [`DensityModel::loss_and_grads`] with Candle ops (any device), for mask set k.
    fn loss_and_grads_candle(&self, x: &Tensor, k: usize) -> Result<(f64, GradStore)> {
        let last = self.layers.len() - 1;
        let mut hs = vec![x.clone()]; // inputs of each layer
        let mut wms = Vec::with_capacity(self.layers.len());
        let mut h = x.clone();
        let masks = self.masks(k)?;
        for (l, ((w, b), m)) in self.layers.iter().zip(&masks).enumerate() {
            let wm = (w.detach() * m)?;
            let a = h.matmul(&wm)?.broadcast_add(&b.detach())?;
            wms.push(wm);
            h = if l < last { a.relu()? } else { a };
            if l < last {
                hs.push(h.clone());
            }
        }
        let mut z = h;
        if let Some((a, _)) = &self.direct {
            z = (z + x.matmul(&(a.detach() * &masks[last + 1])?)?)?;
        }
        let rows = x.dim(0)? as f64;
        let loss = bce_rows(&z, x)?.sum_all()?.to_scalar::<f32>()? as f64 / rows;
        let mut da = ((candle_nn::ops::sigmoid(&z)? - x)? / rows)?;
        let mut grads = GradStore::default();
        if let Some((a, _)) = &self.direct {
            grads.insert(a, (x.t()?.matmul(&da)? * &masks[last + 1])?);
        }
        for l in (0..=last).rev() {
            let (w, b) = &self.layers[l];
            grads.insert(w, (hs[l].t()?.matmul(&da)? * &masks[l])?);
            grads.insert(b, da.sum(0)?);
            if l > 0 {
                let dh = da.matmul(&wms[l].t()?)?;
                da = (dh * hs[l].gt(0f32)?.to_dtype(candle_core::DType::F32)?)?;
            }
        }
        Ok((loss, grads))
    }

    fn sample_impl(&self, n: usize, rng: &mut Rng, observed: Option<(&[f32], &[bool])>) -> Result<Vec<f32>> {
        let d = self.dim;
        let dev = self.layers[0].0.device().clone();
        let mut out = vec![0f32; n * d];
        // Each sample draws its mixture member, then ancestral sampling in that member's order.
        let members: Vec<usize> = (0..n).map(|_| rng.below(self.degrees.len() as u64) as usize).collect();
        for k in 0..self.degrees.len() {
            let rows: Vec<usize> = (0..n).filter(|&i| members[i] == k).collect();
            if rows.is_empty() {
                continue;
            }
            let mut x = vec![0f32; rows.len() * d];
            let mut by_degree: Vec<usize> = (0..d).collect();
            by_degree.sort_by_key(|&i| self.order(k)[i]);
            // The member's masked weights once; the first layer's pre-activation a = b + x W̃₀
            // is kept up to date one pixel at a time (a += x_i W̃₀[i, :], O(H) per pixel), the
            // layers above are recomputed from it, and of the output layer only the logit of
            // the pixel being drawn: O(D·H) per sample for one hidden layer, not O(D²·H).
            let masks = self.masks(k)?;
            let wm: Vec<Tensor> = self.layers.iter().zip(&masks).map(|((w, _), m)| masked(w, m)).collect::<candle_core::Result<_>>()?;
            let last = self.layers.len() - 1;
            let out_t = wm[last].t()?.contiguous()?; // [D, H_last]: row i feeds logit i
            let n_rows = rows.len();
            let mut a = self.layers[0].1.unsqueeze(0)?.broadcast_as((n_rows, self.layers[0].1.dim(0)?))?.contiguous()?;
            // The direct connections' part of every logit, x (A ⊙ Mᴰ), kept up to date like `a`.
            let direct = match &self.direct {
                Some((w, _)) => Some(masked(w, &masks[last + 1])?),
                None => None,
            };
            let mut zd = Tensor::zeros((n_rows, d), a.dtype(), &dev)?;
            for &dim_i in &by_degree {
                let mut h = a.relu()?;
                for l in 1..last {
                    h = h.matmul(&wm[l])?.broadcast_add(&self.layers[l].1)?.relu()?;
                }
                let mut z = (h.broadcast_mul(&out_t.narrow(0, dim_i, 1)?)?.sum(1)? + self.layers[last].1.narrow(0, dim_i, 1)?.broadcast_as(n_rows)?)?;
                if direct.is_some() {
                    z = (z + zd.narrow(1, dim_i, 1)?.squeeze(1)?)?;
                }
                let z = z.to_vec1::<f32>()?;
                let mut col = vec![0f32; n_rows];
                for (r, &row) in rows.iter().enumerate() {
                    let v = match observed {
                        Some((vals, mask)) if mask[dim_i] => vals[row * d + dim_i],
                        _ => {
                            let p = 1.0 / (1.0 + (-(z[r] as f64)).exp());
                            if rng.uniform() < p { 1.0 } else { 0.0 }
                        }
                    };
                    x[r * d + dim_i] = v;
                    col[r] = v;
                }
                if col.iter().any(|&v| v != 0.0) {
                    let col = Tensor::from_vec(col, (n_rows, 1), &dev)?;
                    a = (a + col.broadcast_mul(&wm[0].narrow(0, dim_i, 1)?)?)?;
                    if let Some(ad) = &direct {
                        zd = (zd + col.broadcast_mul(&ad.narrow(0, dim_i, 1)?)?)?;
                    }
                }
            }
            for (r, &row) in rows.iter().enumerate() {
                out[row * d..(row + 1) * d].copy_from_slice(&x[r * d..(r + 1) * d]);
            }
        }
        Ok(out)
    }

    fn buffers_impl(&self) -> Result<Vec<(String, Tensor)>> {
        let mut v = Vec::new();
        for k in 0..self.degrees.len() {
            for (l, m) in self.build_masks(k, DType::U8)?.into_iter().enumerate() {
                let name = if l < self.layers.len() { format!("made.mask{l}.k{k}") } else { format!("made.mask_direct.k{k}") };
                v.push((name, m));
            }
            let o: Vec<f32> = self.order(k).iter().map(|&x| x as f32).collect();
            v.push((format!("made.order.k{k}"), Tensor::from_vec(o, self.dim, &Device::Cpu)?));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPU path unpacking into a flat buffer (as the data-parallel combine offers it, old
    /// contents NaN) gives the bits of its gradients flattened in sorted-name order: 1 and 2
    /// hidden layers, with and without direct connections, at several steps (mask sets).
    #[test]
    fn flat_gradients_are_the_host_paths() {
        let dev = Device::Cpu;
        let mut r = Rng::stream(5, "x");
        let x = Tensor::from_vec((0..6 * 9).map(|_| (r.uniform() < 0.4) as u8 as f32).collect::<Vec<f32>>(), (6, 9), &dev).unwrap();
        for layers in [1, 2] {
            for direct in [false, true] {
                let m = Made::new(9, 14, layers, 3, Order::Random, true, 4, &dev).unwrap().with_direct(direct).unwrap();
                for step in 0..3 {
                    let (l1, g) = m.loss_and_grads(&x, step).unwrap();
                    let want = wick_core::dist::flatten_grads(m.params(), &g).unwrap();
                    let mut flat = vec![f32::NAN; m.params().numel()];
                    let (l2, none) = m.loss_and_grads_flat(&x, step, &[], &mut flat).unwrap();
                    assert!(none.is_none());
                    assert_eq!(l1.to_bits(), l2.to_bits());
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&flat), bits(&want), "layers {layers} direct {direct} step {step}");
                    // Left in sorted order (the data-parallel sum reads them through the layout):
                    // read back through the layout, the same bits; entries off the staircases
                    // are never read (the NaNs stay out).
                    let layout = m.grad_layout(step).expect("a layout on the CPU");
                    assert!(layout.pieces.iter().filter(|(_, sc)| sc.is_some()).count() == layers + 1 + direct as usize);
                    let mut laid = vec![f32::NAN; m.params().numel()];
                    let (l3, none) = m.loss_and_grads_laid(&x, step, &[], &mut laid).unwrap();
                    assert!(none.is_none());
                    assert_eq!(l1.to_bits(), l3.to_bits());
                    assert_eq!(bits(&layout.unlay(&laid)), bits(&want), "laid: layers {layers} direct {direct} step {step}");
                }
            }
        }
    }

    /// Eq. 12–13 on a small case: D = 3 in natural order, two hidden units of degrees 1 and 2.
    #[test]
    fn masks_follow_equations_12_and_13() {
        let (m0, m1) = ([1, 2, 3], [1, 2]);
        // [in, out]: input 1 feeds both units, input 2 only the unit of degree 2, input 3 none.
        assert_eq!(hidden_mask(&m0, &m1), vec![1., 1., 0., 1., 0., 0.]);
        // Unit of degree 1 feeds outputs 2 and 3; unit of degree 2 only output 3; output 1 sees nothing.
        assert_eq!(output_mask(&m1, &m0), vec![0., 1., 1., 0., 0., 1.]);
        let d = degrees(&m0, 2, 5, &mut Rng::stream(0, "t"));
        assert_eq!(d.len(), 3);
        assert!(d[1..].iter().flatten().all(|&m| (1..=2).contains(&m)), "{d:?}");
    }

    /// Ancestral sampling draws from the model: 20,000 samples of a 2-mask MADE over D = 6
    /// (weights scaled up so that p(x) is far from uniform) against the mixture's probabilities
    /// of all 64 vectors, a χ² goodness-of-fit test at a 0.1% false-alarm rate (cells with
    /// expected count < 5 pooled); and the test has power: the uniform distribution fails it.
    /// 1 and 2 hidden layers.
    #[test]
    fn samples_follow_the_enumerated_mixture() {
        let dev = Device::Cpu;
        let dim = 6;
        for (layers, direct) in [(1, false), (2, false), (1, true)] {
            let m = Made::new(dim, 10, layers, 2, Order::Random, true, 3, &dev).unwrap().with_direct(direct).unwrap();
            for v in m.params().vars() {
                v.set(&v.as_tensor().affine(4.0, 0.0).unwrap()).unwrap();
            }
            let all: Vec<f32> = (0..1usize << dim).flat_map(|c| (0..dim).map(move |i| ((c >> i) & 1) as f32)).collect();
            let nll = crate::train::per_example_nll(&m, &Tensor::from_vec(all, (1 << dim, dim), &dev).unwrap(), 1000).unwrap();
            let probs: Vec<f64> = nll.iter().map(|&v| (-(v as f64)).exp()).collect();
            let total: f64 = probs.iter().sum();
            assert!((total - 1.0).abs() < 1e-4, "{layers} layers: the mixture sums to {total}");
            let n = 20_000;
            let out = m.sample(n, &mut Rng::stream(5, "sample"), None).unwrap();
            let mut counts = vec![0f64; 1 << dim];
            for s in out.chunks(dim) {
                counts[(0..dim).map(|i| (s[i] as usize) << i).sum::<usize>()] += 1.0;
            }
            let crit = crate::gof::chi2_999;
            let (c, cells) = crate::gof::chi2_pooled(&counts, |j| probs[j] / total * n as f64);
            assert!(cells > 20, "{layers} layers: too few cells ({cells})");
            assert!(c < crit((cells - 1) as f64), "{layers} layers: χ² = {c:.1} over {cells} cells");
            let (u, ucells) = crate::gof::chi2_pooled(&counts, |_| n as f64 / (1 << dim) as f64);
            assert!(u > crit((ucells - 1) as f64), "{layers} layers: the test cannot tell the model from uniform ({u:.1})");
        }
    }

    /// Output d must not depend on inputs at or after d in the ordering: the gradient of z_d
    /// with respect to x_j is zero whenever m⁰(j) ≥ m⁰(d), for every mask set.
    #[test]
    fn autoregressive_property_holds_through_gradients() {
        let dev = Device::Cpu;
        let dim = 8;
        for (order, agnostic, layers, direct) in [(Order::Natural, false, 1, false), (Order::Random, false, 2, false), (Order::Natural, true, 2, false), (Order::Random, true, 1, true)] {
            let m = Made::new(dim, 12, layers, 3, order, agnostic, 7, &dev).unwrap().with_direct(direct).unwrap();
            for k in 0..m.num_masks() {
                for d in 0..dim {
                    let x = candle_core::Var::from_tensor(&Tensor::full(0.5f32, (1, dim), &dev).unwrap()).unwrap();
                    let z = m.logits(x.as_tensor(), k).unwrap();
                    let g = z.narrow(1, d, 1).unwrap().sum_all().unwrap().backward().unwrap();
                    let gx = g.get(&x).map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap()).unwrap_or(vec![0.0; dim]);
                    for j in 0..dim {
                        if m.order(k)[j] >= m.order(k)[d] {
                            assert_eq!(gx[j], 0.0, "{order:?} agnostic={agnostic} k={k}: z_{d} depends on x_{j}");
                        }
                    }
                }
            }
            // And it is not trivially disconnected: some output depends on some input.
            let x = candle_core::Var::from_tensor(&Tensor::full(0.5f32, (1, dim), &dev).unwrap()).unwrap();
            let g = m.logits(x.as_tensor(), 0).unwrap().sum_all().unwrap().backward().unwrap();
            let gx = g.get(&x).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(gx > 0.0);
        }
    }

    #[test]
    fn closed_form_gradients_equal_autograd() {
        let dev = Device::Cpu;
        for direct in [false, true] {
            let m = Made::new(9, 14, 2, 3, Order::Random, true, 4, &dev).unwrap().with_direct(direct).unwrap();
            assert_eq!(m.params().len(), if direct { 7 } else { 6 });
            let mut r = Rng::stream(4, "x");
            let x: Vec<f32> = (0..5 * 9).map(|_| (r.uniform() < 0.4) as u8 as f32).collect();
            let x = Tensor::from_vec(x, (5, 9), &dev).unwrap();
            for step in 0..4 {
                let loss = m.train_nll(&x, step).unwrap().mean_all().unwrap();
                let auto = loss.backward().unwrap();
                let (value, closed) = m.loss_and_grads(&x, step).unwrap();
                assert!((value - loss.to_scalar::<f32>().unwrap() as f64).abs() < 1e-5);
                for (n, v) in m.params().names().iter().zip(m.params().vars()) {
                    let a = auto.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    let c = closed.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    for (p, q) in a.iter().zip(&c) {
                        assert!((p - q).abs() < 1e-5 * (1.0 + p.abs()), "step {step} {n}: {p} vs {q}");
                    }
                }
            }
        }
    }

    /// The staircase CPU path equals the Candle masked products: likelihoods (members and the
    /// mixture) and the closed-form gradients, for natural and random orders, order-agnostic
    /// mask sets, one and two hidden layers, at sizes spanning several blocks with ragged ends.
    #[test]
    fn staircase_path_equals_the_masked_products() {
        let dev = Device::Cpu;
        for (order, agnostic, layers, k, direct) in
            [(Order::Natural, false, 1, 1, false), (Order::Random, false, 2, 2, false), (Order::Natural, true, 2, 3, false), (Order::Random, true, 1, 2, true)]
        {
            let (d, h) = (150, 140);
            let m = Made::new(d, h, layers, k, order, agnostic, 11, &dev).unwrap().with_direct(direct).unwrap();
            if let Some((_, sd)) = &m.direct {
                for (kk, s) in sd.iter().enumerate() {
                    let mask = m.masks(kk).unwrap()[layers + 1].to_vec2::<f32>().unwrap();
                    for (i, row) in mask.iter().enumerate() {
                        for (o, &v) in row.iter().enumerate() {
                            assert_eq!(s.connected(i, o), v == 1.0, "set {kk} direct ({i}, {o})");
                        }
                    }
                }
            }
            for st in &m.stairs {
                assert_eq!(st.last().unwrap().out_perm, st[0].in_perm, "outputs and inputs sorted alike");
            }
            for (kk, st) in m.stairs.iter().enumerate() {
                for (l, s) in st.iter().enumerate() {
                    let mask = m.masks(kk).unwrap()[l].to_vec2::<f32>().unwrap();
                    for (i, row) in mask.iter().enumerate() {
                        for (o, &v) in row.iter().enumerate() {
                            assert_eq!(s.connected(i, o), v == 1.0, "set {kk} layer {l} ({i}, {o})");
                        }
                    }
                }
            }
            let mut r = Rng::stream(12, "x");
            let x: Vec<f32> = (0..13 * d).map(|_| (r.uniform() < 0.3) as u8 as f32).collect();
            let x = Tensor::from_vec(x, (13, d), &dev).unwrap();
            for kk in 0..k {
                let want = m.nll_member(&x, kk).unwrap().to_vec1::<f32>().unwrap();
                let got = m.member_nll_fast(&x, kk).unwrap().to_vec1::<f32>().unwrap();
                for (p, q) in got.iter().zip(&want) {
                    assert!((p - q).abs() < 1e-3, "member {kk}: {p} vs {q}");
                }
            }
            for step in 0..3 {
                let (v1, g1) = m.loss_and_grads(&x, step).unwrap();
                let (v2, g2) = m.loss_and_grads_candle(&x, m.step_member(step)).unwrap();
                assert!((v1 - v2).abs() < 1e-4 * v2.abs(), "{v1} vs {v2}");
                for (n, v) in m.params().names().iter().zip(m.params().vars()) {
                    let a = g1.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    let c = g2.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    let scale = c.iter().fold(0f32, |s, v| s.max(v.abs()));
                    assert!(scale > 0.0, "{n} has a zero gradient");
                    for (p, q) in a.iter().zip(&c) {
                        assert!((p - q).abs() < 1e-5 * (1.0 + scale), "step {step} {n}: {p} vs {q}");
                        assert!(*q != 0.0 || *p == 0.0, "{n}: a masked weight got a gradient");
                    }
                }
            }
        }
    }

    #[test]
    fn mixture_is_logsumexp_of_members_not_averaged_logits() {
        let dev = Device::Cpu;
        let m = Made::new(6, 10, 1, 3, Order::Natural, true, 9, &dev).unwrap();
        let x = Tensor::from_vec(vec![1f32, 0., 1., 1., 0., 0.], (1, 6), &dev).unwrap();
        let members: Vec<f64> = (0..3).map(|k| -m.nll_member(&x, k).unwrap().to_vec1::<f32>().unwrap()[0] as f64).collect();
        let want = -(members.iter().map(|l| l.exp()).sum::<f64>() / 3.0).ln();
        let got = m.nll(&x).unwrap().to_vec1::<f32>().unwrap()[0] as f64;
        assert!((got - want).abs() < 1e-4, "{got} vs {want}");
    }
}
