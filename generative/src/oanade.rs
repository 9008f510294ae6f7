//! Order-agnostic NADE, "DeepNADE" (Uria, Murray & Larochelle 2014, "A Deep and Tractable
//! Density Estimator", §3–4; JMLR 2016 "Neural Autoregressive Distribution Estimation", §5).
//!
//! One network gives every conditional p(x_i | x_O) for any observed set O ⊂ {1..D}. Its input
//! is the observed values with zeros elsewhere, concatenated with the mask m (m_j = 1[j ∈ O]),
//! so "observed 0" and "unobserved" differ:
//!
//! ```text
//! h¹ = relu(W_x (x ⊙ m) + W_m m + b¹),   hˡ = relu(Wˡ hˡ⁻¹ + bˡ)  (l = 2..L)
//! p(x_i = 1 | x_O) = σ(z_i),   z = V h^L + c                    (read only for i ∉ O)
//! ```
//!
//! **Training** (§3): per example, a cut d ~ U{0..D−1} and a uniformly random observed subset
//! of size d (the first d of a random ordering, [`wick_core::mask::order_agnostic`]); the loss
//!
//! ```text
//! L(x) = −(D / (D − d)) Σ_{i ∉ O} log p(x_i | x_O)
//! ```
//!
//! is an unbiased estimate of the mean over orderings o of −log p_o(x). The draw of example n
//! comes from its own stream `Rng::stream_indexed(seed, "oanade-mask", key)` with the key
//! `(epoch − 1) · N_train + n` given by the trainer, so it does not depend on the batch split,
//! the thread count or a resume. On the CPU the step runs on host buffers (masks drawn in
//! parallel, each product one `gemm` call, the loss and ∂z in one vectorised pass:
//! [`OaNade::loss_and_grads_host`]); elsewhere in Candle ops.
//!
//! **Exact likelihood** of an ordering o (a permutation of 0..D): D conditionals,
//! `log p_o(x) = Σ_t log p(x_{o_t} | x_{o_<t})`; the test model is the **ensemble** of K
//! orderings, `log p(x) = logsumexp_k log p_{o^k}(x) − log K` (a mixture: never an average of
//! probabilities or logits per pixel). Ordering k is drawn from
//! `Rng::stream_indexed(seed, "oanade-ordering", k)`, so the first k of K orderings are the same
//! for every K. Adding x_{o_t} to the observed set changes the first pre-activation by
//! `W_x[o_t] x_{o_t} + W_m[o_t]`, so it is carried forward (like NADE's a_d):
//! * 1 hidden layer: one O(DH) pass per ordering and example (CPU: a host loop over examples in
//!   parallel, each example's arithmetic fixed, so any thread count gives the same bits);
//! * L ≥ 2 hidden layers: D steps per ordering, each a `[B, H] × [H, H]` product per upper
//!   layer over the whole batch (gemm-bound).
//!
//! **Sampling** is exact ancestral sampling in an ordering. Unconditional samples draw a member
//! k of the ensemble uniformly, then sample in o^k (exact samples of the ensemble). Completion of
//! an observed set O uses the ordering "O ascending, then the rest ascending": the unobserved
//! pixels are drawn from the model's exact conditional p_o(x_U | x_O) for any O.
//!
//! Checkpoint tensors (weights `[in, out]`): `oanade.wx`, `oanade.wm` `[D, H]`, `oanade.b1`
//! `[H]`, `oanade.w{l}` `[H, H]` and `oanade.b{l}` `[H]` for l = 2..L, `oanade.v` `[H, D]`,
//! `oanade.c` `[D]`. Numpy, one conditional: `h = relu((x*m) @ wx + m @ wx_m + b1)`,
//! `z = h @ v + c`.

use crate::model::{bce_rows, DensityModel};
use candle_core::{backprop::GradStore, Device, Tensor};
use rayon::prelude::*;
use wick_core::{bail, loss::bce_with_logits, mask, params::Params, rng::Rng, Result};

pub struct OaNade {
    dim: usize,
    hidden: usize,
    seed: u64,
    params: Params,
    wx: Tensor,
    wm: Tensor,
    b1: Tensor,
    /// (weight `[H, H]`, bias `[H]`) of hidden layers 2..L.
    upper: Vec<(Tensor, Tensor)>,
    v: Tensor,
    c: Tensor,
    /// The K orderings of the test-time ensemble, each a sequence: `orders[k][t]` is the t-th input.
    orders: Vec<Vec<usize>>,
    /// Early stopping on the order-agnostic estimate ([`OaNade::valid_estimate`]) instead of
    /// the exact ensemble NLL.
    estimate_valid: bool,
}

/// The parameters' host data, borrowed ([`OaNade::with_host_params`]); layouts as the tensors'.
struct HostParams<'a> {
    wx: &'a [f32],
    wm: &'a [f32],
    b1: &'a [f32],
    upper: Vec<(&'a [f32], &'a [f32])>,
    v: &'a [f32],
    c: &'a [f32],
}

/// [`OaNade::forward_host`]'s buffers, row-major `[B, ·]`.
struct Forward {
    m: Vec<f32>,
    wt: Vec<f32>,
    xm: Vec<f32>,
    /// Each hidden layer's output (after the ReLU).
    hs: Vec<Vec<f32>>,
    z: Vec<f32>,
}

/// The parameters as host vectors, for the per-example loops.
struct Host {
    h: usize,
    wx: Vec<f32>,
    wm: Vec<f32>,
    b1: Vec<f32>,
    upper: Vec<(Vec<f32>, Vec<f32>)>,
    /// V transposed, `[D, H]`: row i holds output i's weights.
    vt: Vec<f32>,
    c: Vec<f32>,
}

impl OaNade {
    /// `hidden` units in each of `layers` hidden layers, an ensemble of `orderings` orderings.
    /// Weights and biases ~ U(±1/√fan_in) (PyTorch's nn.Linear default) from the `init` stream.
    pub fn new(dim: usize, hidden: usize, layers: usize, orderings: usize, seed: u64, device: &Device) -> Result<OaNade> {
        if dim < 2 || hidden == 0 || layers == 0 || orderings == 0 {
            bail!("order-agnostic NADE needs D ≥ 2, hidden ≥ 1, layers ≥ 1 and orderings ≥ 1 (got D {dim}, hidden {hidden}, layers {layers}, orderings {orderings})");
        }
        let mut init = Rng::stream(seed, "init");
        let mut params = Params::new();
        let b_in = 1.0 / ((2 * dim) as f64).sqrt();
        let wx = params.uniform("oanade.wx", &[dim, hidden], b_in, &mut init, device)?;
        let wm = params.uniform("oanade.wm", &[dim, hidden], b_in, &mut init, device)?;
        let b1 = params.uniform("oanade.b1", &[hidden], b_in, &mut init, device)?;
        let b_h = 1.0 / (hidden as f64).sqrt();
        let mut upper = Vec::new();
        for l in 2..=layers {
            let w = params.uniform(&format!("oanade.w{l}"), &[hidden, hidden], b_h, &mut init, device)?;
            let b = params.uniform(&format!("oanade.b{l}"), &[hidden], b_h, &mut init, device)?;
            upper.push((w, b));
        }
        let v = params.uniform("oanade.v", &[hidden, dim], b_h, &mut init, device)?;
        let c = params.uniform("oanade.c", &[dim], b_h, &mut init, device)?;
        let orders = (0..orderings as u64)
            .map(|k| {
                let rank = mask::ordering(dim, &mut Rng::stream_indexed(seed, "oanade-ordering", k));
                let mut seq = vec![0; dim];
                for (i, &r) in rank.iter().enumerate() {
                    seq[r] = i;
                }
                seq
            })
            .collect();
        Ok(OaNade { dim, hidden, seed, params, wx, wm, b1, upper, v, c, orders, estimate_valid: false })
    }

    /// Select the best epoch on [`OaNade::valid_estimate`] rather than on the exact ensemble NLL.
    pub fn with_valid_estimate(mut self, on: bool) -> OaNade {
        self.estimate_valid = on;
        self
    }

    /// The order-agnostic estimate of the mean NLL over orderings, `E_o[−log p_o(x)]`, averaged
    /// over the rows of `x`: row n's loss `(D/(D − d)) Σ_{i ∉ O} −log p(x_i | x_O)` with its cut
    /// and observed set drawn from `Rng::stream_indexed(seed, "oanade-valid-mask", n)` — the same
    /// draws every epoch, so the figure moves only with the weights. One forward pass per row
    /// (the training step's cost without the backward), where the exact NLL of one ordering
    /// takes D passes of the upper layers: with 2 hidden layers of 500 on MNIST the exact valid
    /// NLL costs about 4 TFLOP, this about 14 GFLOP.
    pub fn valid_estimate(&self, x: &Tensor) -> Result<f64> {
        let n = x.dim(0)?;
        let mut total = 0.0f64;
        if self.on_host(x) {
            // The host forward ([`OaNade::forward_host`]), rows summed in order.
            let xv = x.flatten_all()?.to_vec1::<f32>()?;
            let d = self.dim;
            self.with_host_params(|p| {
                for lo in (0..n).step_by(1000) {
                    let rows = (n - lo).min(1000);
                    let keys: Vec<u64> = (lo as u64..(lo + rows) as u64).collect();
                    let xb = &xv[lo * d..(lo + rows) * d];
                    let Forward { wt, mut z, .. } = self.forward_host(p, xb, &keys, "oanade-valid-mask");
                    total += weighted_row_losses(&mut z, xb, &wt, d, None).iter().sum::<f64>();
                }
                Ok(())
            })?;
            return Ok(total / n.max(1) as f64);
        }
        self.valid_estimate_composed(x)
    }

    /// [`OaNade::valid_estimate`] in Candle ops, for any device.
    pub fn valid_estimate_composed(&self, x: &Tensor) -> Result<f64> {
        let n = x.dim(0)?;
        let mut total = 0.0f64;
        for lo in (0..n).step_by(1000) {
            let rows = (n - lo).min(1000);
            let keys: Vec<u64> = (lo as u64..(lo + rows) as u64).collect();
            let (m, wt) = self.batch_masks_from("oanade-valid-mask", &keys, x.device())?;
            let xb = x.narrow(0, lo, rows)?;
            let loss = (bce_with_logits(&self.logits_masked(&xb, &m)?, &xb)? * wt)?.sum(1)?;
            total += loss.to_dtype(candle_core::DType::F64)?.sum_all()?.to_scalar::<f64>()?;
        }
        Ok(total / n.max(1) as f64)
    }

    /// The orderings of the ensemble (sequences of input indices).
    pub fn orderings(&self) -> &[Vec<usize>] {
        &self.orders
    }

    /// Logits `[B, D]` of every conditional given the observed mask `m` `[B, D]` (1 = observed):
    /// the network of the module docs, with Candle ops (differentiable, any device).
    pub fn logits_masked(&self, x: &Tensor, m: &Tensor) -> Result<Tensor> {
        let mut h = ((x * m)?.matmul(&self.wx)? + m.matmul(&self.wm)?)?.broadcast_add(&self.b1)?.relu()?;
        for (w, b) in &self.upper {
            h = h.matmul(w)?.broadcast_add(b)?.relu()?;
        }
        Ok(h.matmul(&self.v)?.broadcast_add(&self.c)?)
    }

    /// The training draw of one example (Uria et al. §3) from its own stream: the observed mask
    /// (1 = observed) and the loss weight D / (D − d).
    pub fn training_mask(&self, key: u64) -> (Vec<f32>, f32) {
        self.mask_from("oanade-mask", key)
    }

    fn mask_from(&self, stream: &str, key: u64) -> (Vec<f32>, f32) {
        let (rank, d) = mask::order_agnostic(self.dim, &mut Rng::stream_indexed(self.seed, stream, key));
        (rank.iter().map(|&r| (r < d) as u8 as f32).collect(), self.dim as f32 / (self.dim - d) as f32)
    }

    /// For a batch with per-example keys: the masks `[B, D]` and the per-element loss weights
    /// `(1 − m) · D/(D − d)` `[B, D]`.
    fn batch_masks(&self, keys: &[u64], device: &Device) -> Result<(Tensor, Tensor)> {
        self.batch_masks_from("oanade-mask", keys, device)
    }

    fn batch_masks_from(&self, stream: &str, keys: &[u64], device: &Device) -> Result<(Tensor, Tensor)> {
        let (mut m, mut wt) = (Vec::with_capacity(keys.len() * self.dim), Vec::with_capacity(keys.len() * self.dim));
        for &key in keys {
            let (mk, s) = self.mask_from(stream, key);
            wt.extend(mk.iter().map(|&o| (1.0 - o) * s));
            m.extend(mk);
        }
        Ok((Tensor::from_vec(m, (keys.len(), self.dim), device)?, Tensor::from_vec(wt, (keys.len(), self.dim), device)?))
    }

    /// The per-example training loss `(D/(D−d)) Σ_{i ∉ O} bce(z_i, x_i)` `[B]`, differentiable.
    pub fn train_nll_keyed(&self, x: &Tensor, keys: &[u64]) -> Result<Tensor> {
        let (m, wt) = self.batch_masks(keys, x.device())?;
        Ok((bce_with_logits(&self.logits_masked(x, &m)?, x)? * wt)?.sum(1)?)
    }

    /// Mean training loss over the batch and its gradients, in closed form (no autograd graph):
    /// `∂z = (σ(z) − x) ⊙ (1 − m) · D/(D−d) / B`, `∂V = h_Lᵀ ∂z`, `∂c = Σ_b ∂z`, then down the
    /// layers `∂a_l = (∂a_{l+1} W_{l+1}ᵀ) ⊙ 1[h_l > 0]`, `∂W_l = h_{l−1}ᵀ ∂a_l`, `∂b_l = Σ_b ∂a_l`,
    /// and at the bottom `∂W_x = (x ⊙ m)ᵀ ∂a_1`, `∂W_m = mᵀ ∂a_1`. Equal to autograd on
    /// [`OaNade::train_nll_keyed`] (tested). On the CPU (f32) the host step
    /// ([`OaNade::loss_and_grads_host`]); elsewhere Candle ops ([`OaNade::loss_and_grads_composed`]).
    pub fn loss_and_grads_keyed(&self, x: &Tensor, keys: &[u64]) -> Result<(f64, GradStore)> {
        if self.on_host(x) {
            return self.loss_and_grads_host(x, keys);
        }
        self.loss_and_grads_composed(x, keys)
    }

    /// [`OaNade::loss_and_grads_keyed`] on host buffers: the masks drawn in parallel (each
    /// example from its own stream), each product one `gemm` call over the rayon pool
    /// ([`wick_core::linalg::matmul`], transposes by strides), the loss and `∂z` in one
    /// vectorised pass ([`wick_core::loss::bce_terms_host`]). Candle's version spends a third of
    /// its time in single-threaded elementwise ops and temporaries between the products. The
    /// bits do not depend on the thread count (tested); they differ from the Candle version's
    /// in the last places (another summation order for the loss, `σ` by another formula).
    pub fn loss_and_grads_host(&self, x: &Tensor, keys: &[u64]) -> Result<(f64, GradStore)> {
        use wick_core::linalg::{col_sums, matmul, relu_grad_inplace, sparse_t_matmul};
        let (bsz, d, h) = (x.dim(0)?, self.dim, self.hidden);
        wick_core::ensure!(keys.len() == bsz, "oanade: {} keys for a batch of {bsz}", keys.len());
        let xv = x.flatten_all()?.to_vec1::<f32>()?;
        self.with_host_params(|p| {
            let Forward { m, wt, xm, hs, mut z } = self.forward_host(p, &xv, keys, "oanade-mask");
            let (v, upper) = (p.v, &p.upper);
            let top = hs.last().unwrap();
            // Loss per row and, in place, ∂z = (σ(z) − x) ⊙ wt / B.
            let loss = weighted_row_losses(&mut z, &xv, &wt, d, Some(1.0 / bsz as f32)).iter().sum::<f64>() / bsz as f64;
            let dz = z;

            // Backward.
            let dev = x.device();
            let mut grads = GradStore::default();
            let mut dv = vec![0f32; h * d];
            matmul(h, d, bsz, &mut dv, (d, 1), false, top, (1, h), &dz, (d, 1));
            grads.insert(&self.v, Tensor::from_vec(dv, (h, d), dev)?);
            grads.insert(&self.c, Tensor::from_vec(col_sums(&dz, d), d, dev)?);
            let mut dh = vec![0f32; bsz * h];
            matmul(bsz, h, d, &mut dh, (h, 1), false, &dz, (d, 1), v, (1, d));
            for l in (0..upper.len()).rev() {
                relu_grad_inplace(&mut dh, &hs[l + 1]);
                let (w, _) = upper[l];
                let mut dw = vec![0f32; h * h];
                matmul(h, h, bsz, &mut dw, (h, 1), false, &hs[l], (1, h), &dh, (h, 1));
                grads.insert(&self.upper[l].0, Tensor::from_vec(dw, (h, h), dev)?);
                grads.insert(&self.upper[l].1, Tensor::from_vec(col_sums(&dh, h), h, dev)?);
                let mut below = vec![0f32; bsz * h];
                matmul(bsz, h, h, &mut below, (h, 1), false, &dh, (h, 1), w, (1, h));
                dh = below;
            }
            relu_grad_inplace(&mut dh, &hs[0]);
            let (mut dwx, mut dwm) = (vec![0f32; d * h], vec![0f32; d * h]);
            sparse_t_matmul(bsz, d, h, &mut dwx, &xm, &dh);
            matmul(d, h, bsz, &mut dwm, (h, 1), false, &m, (1, d), &dh, (h, 1));
            grads.insert(&self.wx, Tensor::from_vec(dwx, (d, h), dev)?);
            grads.insert(&self.wm, Tensor::from_vec(dwm, (d, h), dev)?);
            grads.insert(&self.b1, Tensor::from_vec(col_sums(&dh, h), h, dev)?);
            Ok((loss, grads))
        })
    }

    /// Whether `x` and the parameters take the host path (CPU, f32).
    fn on_host(&self, x: &Tensor) -> bool {
        x.device().is_cpu() && x.dtype() == candle_core::DType::F32 && self.wx.dtype() == candle_core::DType::F32
    }

    /// `f` with the parameters' host data, borrowed from their CPU storage (no copy).
    fn with_host_params<R>(&self, f: impl FnOnce(&HostParams) -> Result<R>) -> Result<R> {
        let mut tensors = vec![&self.wx, &self.wm, &self.b1];
        for (w, b) in &self.upper {
            tensors.push(w);
            tensors.push(b);
        }
        tensors.push(&self.v);
        tensors.push(&self.c);
        wick_core::cpu::with_host_slices(&tensors, "an oanade parameter", |host| {
            let n = host.len();
            f(&HostParams {
                wx: host[0],
                wm: host[1],
                b1: host[2],
                upper: (0..self.upper.len()).map(|l| (host[3 + 2 * l], host[4 + 2 * l])).collect(),
                v: host[n - 2],
                c: host[n - 1],
            })
        })
    }

    /// The masked network on host buffers for rows `xv` (`[B, D]`) with each row's draw from
    /// `stream` keyed by `keys`: the masks, `x ⊙ m`, every hidden layer's output and the logits
    /// `z`. h₁ = relu(x⊙m W_x + m W_m + b₁), h_{l+1} = relu(h_l W_{l+1} + b_{l+1}), z = h_L V + c.
    fn forward_host(&self, p: &HostParams, xv: &[f32], keys: &[u64], stream: &str) -> Forward {
        use wick_core::linalg::{broadcast_rows, matmul, relu_inplace, sparse_matmul_acc};
        let (bsz, d, h) = (keys.len(), self.dim, self.hidden);
        // m: the observed mask; wt: (1 − m)·D/(D − d); xm = x ⊙ m.
        let (mut m, mut wt, mut xm) = (vec![0f32; bsz * d], vec![0f32; bsz * d], vec![0f32; bsz * d]);
        m.par_chunks_mut(d).zip(wt.par_chunks_mut(d)).zip(xm.par_chunks_mut(d)).zip(xv.par_chunks(d)).zip(keys.par_iter()).for_each(
            |((((mr, wr), xmr), xr), &key)| {
                let (mk, s) = self.mask_from(stream, key);
                for i in 0..d {
                    mr[i] = mk[i];
                    wr[i] = (1.0 - mk[i]) * s;
                    xmr[i] = xr[i] * mk[i];
                }
            },
        );
        // x ⊙ m is sparse (binary images, about half the pixels observed: on MNIST one entry in
        // fifteen is nonzero), so its product adds only the rows of W_x it selects.
        let mut a = broadcast_rows(p.b1, bsz);
        sparse_matmul_acc(bsz, d, h, &mut a, &xm, p.wx);
        matmul(bsz, h, d, &mut a, (h, 1), true, &m, (d, 1), p.wm, (h, 1));
        relu_inplace(&mut a);
        let mut hs = vec![a];
        for &(w, b) in &p.upper {
            let mut a = broadcast_rows(b, bsz);
            matmul(bsz, h, h, &mut a, (h, 1), true, hs.last().unwrap(), (h, 1), w, (h, 1));
            relu_inplace(&mut a);
            hs.push(a);
        }
        let mut z = broadcast_rows(p.c, bsz);
        matmul(bsz, d, h, &mut z, (d, 1), true, hs.last().unwrap(), (h, 1), p.v, (d, 1));
        Forward { m, wt, xm, hs, z }
    }

    /// [`OaNade::loss_and_grads_keyed`] in Candle ops, for any device.
    pub fn loss_and_grads_composed(&self, x: &Tensor, keys: &[u64]) -> Result<(f64, GradStore)> {
        let (m, wt) = self.batch_masks(keys, x.device())?;
        let xm = (x * &m)?;
        let mut hs = vec![(xm.matmul(&self.wx.detach())? + m.matmul(&self.wm.detach())?)?.broadcast_add(&self.b1.detach())?.relu()?];
        for (w, b) in &self.upper {
            let h = hs.last().unwrap().matmul(&w.detach())?.broadcast_add(&b.detach())?.relu()?;
            hs.push(h);
        }
        let top = hs.last().unwrap();
        let z = top.matmul(&self.v.detach())?.broadcast_add(&self.c.detach())?;
        let rows = x.dim(0)? as f64;
        let loss = (bce_with_logits(&z, x)? * &wt)?.sum_all()?.to_scalar::<f32>()? as f64 / rows;
        let dz = (((candle_nn::ops::sigmoid(&z)? - x)? * &wt)? / rows)?;
        let mut grads = GradStore::default();
        grads.insert(&self.v, top.t()?.matmul(&dz)?);
        grads.insert(&self.c, dz.sum(0)?);
        let mut dh = dz.matmul(&self.v.detach().t()?)?;
        for l in (0..self.upper.len()).rev() {
            let da = (dh * hs[l + 1].gt(0f32)?.to_dtype(candle_core::DType::F32)?)?;
            let (w, b) = &self.upper[l];
            grads.insert(w, hs[l].t()?.matmul(&da)?);
            grads.insert(b, da.sum(0)?);
            dh = da.matmul(&w.detach().t()?)?;
        }
        let da = (dh * hs[0].gt(0f32)?.to_dtype(candle_core::DType::F32)?)?;
        grads.insert(&self.wx, xm.t()?.matmul(&da)?);
        grads.insert(&self.wm, m.t()?.matmul(&da)?);
        grads.insert(&self.b1, da.sum(0)?);
        Ok((loss, grads))
    }

    fn host(&self) -> Result<Host> {
        let flat = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
        Ok(Host {
            h: self.hidden,
            wx: flat(&self.wx)?,
            wm: flat(&self.wm)?,
            b1: flat(&self.b1)?,
            upper: self.upper.iter().map(|(w, b)| Ok((flat(w)?, flat(b)?))).collect::<Result<_>>()?,
            vt: flat(&self.v.t()?.contiguous()?)?,
            c: flat(&self.c)?,
        })
    }

    /// log p_o(x) `[B]` (nats, f64) of one ordering `order` (a sequence of the D inputs).
    /// One hidden layer on the CPU: the host loop; otherwise D batched steps.
    pub fn log_prob_ordering(&self, x: &Tensor, order: &[usize]) -> Result<Vec<f64>> {
        if order.len() != self.dim {
            bail!("an ordering of {} inputs for a model of {}", order.len(), self.dim);
        }
        if self.upper.is_empty() && x.device().is_cpu() {
            let host = self.host()?;
            let xv = x.flatten_all()?.to_vec1::<f32>()?;
            return Ok(xv.par_chunks(self.dim).map(|row| host.log_prob_row(row, order)).collect());
        }
        if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
            return self.log_prob_ordering_steps_host(x, order);
        }
        self.log_prob_ordering_steps(x, order)
    }

    /// [`OaNade::log_prob_ordering_steps`] on host buffers: the same products (one `gemm` call
    /// each through `wick_core::linalg::matmul`, the shapes and operand layouts of the Candle
    /// version) and the same elementwise operations in the same order, so the same bits
    /// (tested), without a Candle op per step. Candle's per-op work (a fresh tensor per ReLU, bias
    /// and add, run on its spinning pool) made the 2-layer evaluation 2.2× the time of its bare
    /// products (`examples/oanade_eval_bench.rs`: B = 500, 2 threads, 1.38 s against 0.62 s).
    pub fn log_prob_ordering_steps_host(&self, x: &Tensor, order: &[usize]) -> Result<Vec<f64>> {
        use wick_core::cpu::widest;
        use wick_core::linalg::{broadcast_rows, matmul};
        let (bsz, d, h) = (x.dim(0)?, self.dim, self.hidden);
        let host = self.host()?;
        let xv = x.flatten_all()?.to_vec1::<f32>()?;
        // [x, 1] `[B, D+1]` and, per input i, `[W_x[i]; W_m[i]]` `[2, H]`, as the Candle version stacks them.
        let mut xs1 = vec![1f32; bsz * (d + 1)];
        for (dst, src) in xs1.chunks_exact_mut(d + 1).zip(xv.chunks_exact(d)) {
            dst[..d].copy_from_slice(src);
        }
        let mut w2 = vec![0f32; d * 2 * h];
        for i in 0..d {
            w2[i * 2 * h..i * 2 * h + h].copy_from_slice(&host.wx[i * h..(i + 1) * h]);
            w2[i * 2 * h + h..(i + 1) * 2 * h].copy_from_slice(&host.wm[i * h..(i + 1) * h]);
        }
        let mut a = broadcast_rows(&host.b1, bsz);
        let (mut h1, mut h2, mut upd) = (vec![0f32; bsz * h], vec![0f32; bsz * h], vec![0f32; bsz * h]);
        let mut z = vec![0f32; bsz * d];
        const CH: usize = 1 << 14;
        for (t, &i) in order.iter().enumerate() {
            h1.par_chunks_mut(CH).zip(a.par_chunks(CH)).for_each(|(o, a)| widest(#[inline(always)] || o.iter_mut().zip(a).for_each(|(o, &v)| *o = v.max(0.0))));
            for (w, b) in &host.upper {
                matmul(bsz, h, h, &mut h2, (h, 1), false, &h1, (h, 1), w, (h, 1));
                h2.par_chunks_mut(h * 64).for_each(|rows| {
                    widest(#[inline(always)] || {
                        for row in rows.chunks_exact_mut(h) {
                            for (o, &bv) in row.iter_mut().zip(b.iter()) {
                                *o = (*o + bv).max(0.0);
                            }
                        }
                    })
                });
                std::mem::swap(&mut h1, &mut h2);
            }
            // z_i = h V[:, i]: `[B, H] × [H, 1]`, written into column t of z.
            matmul(bsz, 1, h, &mut z[t..], (d, 1), false, &h1, (h, 1), &host.vt[i * h..(i + 1) * h], (1, 1));
            // a += [x_i, 1] [W_x[i]; W_m[i]]: `[B, 2] × [2, H]` (columns i and D of [x, 1]).
            matmul(bsz, h, 2, &mut upd, (h, 1), false, &xs1[i..], (d + 1, d - i), &w2[i * 2 * h..(i + 1) * 2 * h], (h, 1));
            a.par_chunks_mut(CH).zip(upd.par_chunks(CH)).for_each(|(a, u)| widest(#[inline(always)] || a.iter_mut().zip(u).for_each(|(a, &u)| *a += u)));
        }
        let dev = x.device();
        let idx = Tensor::from_vec(order.iter().map(|&i| i as u32).collect::<Vec<_>>(), d, dev)?;
        let z = Tensor::from_vec(z, (bsz, d), dev)?.broadcast_add(&self.c.detach().index_select(&idx, 0)?)?;
        let nll = bce_rows(&z, &x.index_select(&idx, 1)?)?.to_vec1::<f32>()?;
        Ok(nll.iter().map(|&v| -(v as f64)).collect())
    }

    /// [`OaNade::log_prob_ordering`] in D batched steps of Candle ops (any device, any depth):
    /// step t reads z_{o_t} from the carried first-layer pre-activation, then adds x_{o_t}.
    /// Every per-step op is a matmul or a same-shape add (Candle's broadcasting ops take a slow
    /// strided path on the CPU): the update `a += [x_i, 1] [W_x[i]; W_m[i]]` is a `[B,2]×[2,H]`
    /// product, the biases are broadcast once, and `z_i = h V[:, i]` is a `[B,H]×[H,1]` product.
    /// The parameters are detached first: through D steps an autograd graph would keep every
    /// step's activations alive (gigabytes at D = 784).
    pub fn log_prob_ordering_steps(&self, x: &Tensor, order: &[usize]) -> Result<Vec<f64>> {
        let (bsz, dev) = (x.dim(0)?, x.device());
        let rows = |b: &Tensor| -> Result<Tensor> { Ok(b.detach().unsqueeze(0)?.broadcast_as((bsz, self.hidden))?.contiguous()?) };
        let xs1 = Tensor::cat(&[x, &Tensor::ones((bsz, 1), x.dtype(), dev)?], 1)?; // [B, D+1]
        let w2 = Tensor::stack(&[&self.wx.detach(), &self.wm.detach()], 1)?; // [D, 2, H]
        let vt = self.v.detach().t()?.contiguous()?; // [D, H]: row i is output i's weights
        let upper: Vec<(Tensor, Tensor)> = self.upper.iter().map(|(w, b)| Ok((w.detach(), rows(b)?))).collect::<Result<_>>()?;
        let mut a = rows(&self.b1)?;
        let mut zs = Vec::with_capacity(self.dim);
        for &i in order {
            let mut h = a.relu()?;
            for (w, b) in &upper {
                h = (h.matmul(w)? + b)?.relu()?;
            }
            zs.push(h.matmul(&vt.narrow(0, i, 1)?.t()?)?);
            let cols = Tensor::new(&[i as u32, self.dim as u32], dev)?;
            a = (a + xs1.index_select(&cols, 1)?.matmul(&w2.get(i)?)?)?;
        }
        let idx = Tensor::from_vec(order.iter().map(|&i| i as u32).collect::<Vec<_>>(), self.dim, dev)?;
        let z = Tensor::cat(&zs, 1)?.broadcast_add(&self.c.detach().index_select(&idx, 0)?)?;
        let nll = bce_rows(&z, &x.index_select(&idx, 1)?)?.to_vec1::<f32>()?;
        Ok(nll.iter().map(|&v| -(v as f64)).collect())
    }

    /// log p(x) of the ensemble of the first `k` orderings, `logsumexp_k log p_k(x) − log k`, per row.
    pub fn log_prob_ensemble(&self, x: &Tensor, k: usize) -> Result<Vec<f64>> {
        let k = k.clamp(1, self.orders.len());
        let members: Vec<Vec<f64>> = self.orders[..k].iter().map(|o| self.log_prob_ordering(x, o)).collect::<Result<_>>()?;
        Ok((0..x.dim(0)?)
            .map(|r| {
                let mx = members.iter().map(|m| m[r]).fold(f64::NEG_INFINITY, f64::max);
                mx + members.iter().map(|m| (m[r] - mx).exp()).sum::<f64>().ln() - (k as f64).ln()
            })
            .collect())
    }
}

impl Host {
    /// The first-layer pre-activation with nothing observed, b¹.
    fn start(&self) -> Vec<f32> {
        self.b1.clone()
    }

    /// Observe x_i: `a += W_x[i] x_i + W_m[i]`.
    fn observe(&self, a: &mut [f32], i: usize, xi: f32) {
        let (wx, wm) = (&self.wx[i * self.h..(i + 1) * self.h], &self.wm[i * self.h..(i + 1) * self.h]);
        for ((a, &wx), &wm) in a.iter_mut().zip(wx).zip(wm) {
            *a += wx * xi + wm;
        }
    }

    /// z_i given the carried pre-activation `a` (scratch: two H-vectors).
    fn logit(&self, a: &[f32], i: usize, h1: &mut Vec<f32>, h2: &mut Vec<f32>) -> f32 {
        h1.clear();
        h1.extend(a.iter().map(|&v| v.max(0.0)));
        for (w, b) in &self.upper {
            h2.clear();
            h2.extend_from_slice(b);
            for (k, &hk) in h1.iter().enumerate() {
                if hk != 0.0 {
                    for (o, &wkj) in h2.iter_mut().zip(&w[k * self.h..(k + 1) * self.h]) {
                        *o += hk * wkj;
                    }
                }
            }
            h2.iter_mut().for_each(|v| *v = v.max(0.0));
            std::mem::swap(h1, h2);
        }
        self.c[i] + dot(&self.vt[i * self.h..(i + 1) * self.h], h1)
    }

    /// log p_o(x) of one example, O(DH) for one hidden layer.
    fn log_prob_row(&self, x: &[f32], order: &[usize]) -> f64 {
        let (mut a, mut h1, mut h2) = (self.start(), Vec::with_capacity(self.h), Vec::with_capacity(self.h));
        let mut lp = 0.0f64;
        for &i in order {
            let z = self.logit(&a, i, &mut h1, &mut h2) as f64;
            lp -= z.max(0.0) - z * x[i] as f64 + (-z.abs()).exp().ln_1p();
            self.observe(&mut a, i, x[i]);
        }
        lp
    }
}

/// Per row of logits `z` and targets `x` (`[B, D]`), the weighted loss `Σ_i wt_i bce(z_i, x_i)`
/// (rows in parallel, each summed in f64 in order); with `grad_scale = Some(s)`, `z` becomes
/// `∂z = (σ(z) − x) ⊙ wt · s` in place.
fn weighted_row_losses(z: &mut [f32], x: &[f32], wt: &[f32], d: usize, grad_scale: Option<f32>) -> Vec<f64> {
    let mut out = vec![0f64; z.len() / d.max(1)];
    z.par_chunks_mut(d).zip(x.par_chunks(d)).zip(wt.par_chunks(d)).zip(out.par_iter_mut()).for_each(|(((zr, xr), wr), o)| {
        let mut terms = vec![0f32; d];
        wick_core::loss::bce_terms_host(zr, xr, &mut terms, grad_scale);
        *o = terms.iter().zip(wr).map(|(&t, &w)| (t * w) as f64).sum();
        if grad_scale.is_some() {
            zr.iter_mut().zip(wr).for_each(|(zv, &w)| *zv *= w);
        }
    });
    out
}

/// Σ a_k b_k with 8 partial sums (vectorised; a fixed order, so the same bits everywhere).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

impl DensityModel for OaNade {
    fn dim(&self) -> usize {
        self.dim
    }

    fn params(&self) -> &Params {
        &self.params
    }

    /// −log p(x) of the ensemble of all K orderings.
    fn nll(&self, x: &Tensor) -> Result<Tensor> {
        let lp: Vec<f32> = self.log_prob_ensemble(x, self.orders.len())?.iter().map(|&v| -v as f32).collect();
        Ok(Tensor::from_vec(lp, x.dim(0)?, x.device())?)
    }

    fn selection_nll(&self, x: &Tensor) -> Result<Option<f64>> {
        Ok(if self.estimate_valid { Some(self.valid_estimate(x)?) } else { None })
    }

    /// The order-agnostic loss with each row's draw keyed by `step · B + row`.
    fn train_nll(&self, x: &Tensor, step: u64) -> Result<Tensor> {
        let b = x.dim(0)? as u64;
        self.train_nll_keyed(x, &(0..b).map(|r| step * b + r).collect::<Vec<_>>())
    }

    fn loss_and_grads(&self, x: &Tensor, step: u64) -> Result<(f64, GradStore)> {
        let b = x.dim(0)? as u64;
        self.loss_and_grads_keyed(x, &(0..b).map(|r| step * b + r).collect::<Vec<_>>())
    }

    fn loss_and_grads_keyed(&self, x: &Tensor, _step: u64, keys: &[u64]) -> Result<(f64, GradStore)> {
        OaNade::loss_and_grads_keyed(self, x, keys)
    }

    /// Exact ancestral sampling: without `observed`, in the ordering of a uniformly drawn member
    /// of the ensemble; with it, in the ordering "observed ascending, then the rest ascending",
    /// i.e. from the exact conditional p_o(x_U | x_O).
    fn sample(&self, n: usize, rng: &mut Rng, observed: Option<(&[f32], &[bool])>) -> Result<Vec<f32>> {
        let host = self.host()?;
        let d = self.dim;
        let mut out = vec![0f32; n * d];
        let completion_order: Option<Vec<usize>> =
            observed.map(|(_, mask)| (0..d).filter(|&i| mask[i]).chain((0..d).filter(|&i| !mask[i])).collect());
        let (mut h1, mut h2) = (Vec::with_capacity(self.hidden), Vec::with_capacity(self.hidden));
        for s in 0..n {
            let order = match &completion_order {
                Some(o) => o,
                None => &self.orders[rng.below(self.orders.len() as u64) as usize],
            };
            let mut a = host.start();
            for &i in order {
                let xi = match observed {
                    Some((vals, mask)) if mask[i] => vals[s * d + i],
                    _ => {
                        let z = host.logit(&a, i, &mut h1, &mut h2) as f64;
                        if rng.uniform() < 1.0 / (1.0 + (-z).exp()) { 1.0 } else { 0.0 }
                    }
                };
                out[s * d + i] = xi;
                host.observe(&mut a, i, xi);
            }
        }
        Ok(out)
    }

    fn buffers(&self) -> Result<Vec<(String, Tensor)>> {
        self.orders
            .iter()
            .enumerate()
            .map(|(k, o)| Ok((format!("oanade.order.k{k}"), Tensor::from_vec(o.iter().map(|&i| i as f32).collect::<Vec<_>>(), self.dim, &Device::Cpu)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wick_core::optim::{OptimConfig, Optimizer};

    const D: usize = 10;

    fn all_vectors(d: usize) -> Tensor {
        let v: Vec<f32> = (0..1usize << d).flat_map(|i| (0..d).map(move |j| ((i >> j) & 1) as f32)).collect();
        Tensor::from_vec(v, (1 << d, d), &Device::Cpu).unwrap()
    }

    fn random_bits(n: usize, d: usize, p: f64, seed: u64) -> Tensor {
        let mut r = Rng::stream(seed, "bits");
        let v: Vec<f32> = (0..n * d).map(|_| (r.uniform() < p) as u8 as f32).collect();
        Tensor::from_vec(v, (n, d), &Device::Cpu).unwrap()
    }

    /// Rows whose bits are noisy copies of one shared coin (so the conditionals depend on the
    /// observed bits): u ~ B(1/2), x_j = u flipped with probability 0.2.
    fn correlated_bits(n: usize, seed: u64) -> Tensor {
        let mut r = Rng::stream(seed, "bits");
        let v: Vec<f32> = (0..n)
            .flat_map(|_| {
                let u = r.uniform() < 0.5;
                (0..D).map(|_| (u ^ (r.uniform() < 0.2)) as u8 as f32).collect::<Vec<_>>()
            })
            .collect();
        Tensor::from_vec(v, (n, D), &Device::Cpu).unwrap()
    }

    /// A few Adam steps on correlated data, so the checks also cover non-initial weights.
    fn trained(layers: usize, orderings: usize, seed: u64) -> OaNade {
        let m = OaNade::new(D, 12, layers, orderings, seed, &Device::Cpu).unwrap();
        let x = correlated_bits(64, seed);
        let mut opt = Optimizer::new(OptimConfig { lr: 0.03, ..OptimConfig::default() }, m.params()).unwrap();
        for step in 0..40 {
            let (_, g) = m.loss_and_grads(&x, step).unwrap();
            opt.step(m.params(), &g, 0.03).unwrap();
        }
        m
    }

    /// log p_o(x) straight from the network: conditional t from a full forward pass with the
    /// mask of o_<t set explicitly (no carried pre-activation), in f64.
    fn direct_log_prob(m: &OaNade, x: &Tensor, order: &[usize]) -> Vec<f64> {
        let b = x.dim(0).unwrap();
        let xv = x.to_vec2::<f32>().unwrap();
        let mut lp = vec![0f64; b];
        let mut mask = vec![0f32; D];
        for &i in order {
            let mt = Tensor::from_vec(mask.repeat(b), (b, D), &Device::Cpu).unwrap();
            let z = m.logits_masked(x, &mt).unwrap().to_vec2::<f32>().unwrap();
            for r in 0..b {
                let p = 1.0 / (1.0 + (-(z[r][i] as f64)).exp());
                lp[r] += if xv[r][i] > 0.5 { p.ln() } else { (1.0 - p).ln() };
            }
            mask[i] = 1.0;
        }
        lp
    }

    #[test]
    fn carried_pre_activation_equals_the_direct_masked_network() {
        for layers in [1, 2] {
            let m = trained(layers, 3, 4);
            let x = random_bits(7, D, 0.5, 9);
            for o in m.orderings() {
                let want = direct_log_prob(&m, &x, o);
                let fast = m.log_prob_ordering(&x, o).unwrap();
                let steps = m.log_prob_ordering_steps(&x, o).unwrap();
                let host_steps = m.log_prob_ordering_steps_host(&x, o).unwrap();
                assert!(steps.iter().zip(&host_steps).all(|(a, b)| a.to_bits() == b.to_bits()), "{layers} layers: host steps {host_steps:?} vs Candle steps {steps:?}");
                for r in 0..7 {
                    assert!((fast[r] - want[r]).abs() < 1e-4, "{layers} layers: {} vs {}", fast[r], want[r]);
                    assert!((steps[r] - want[r]).abs() < 1e-4, "{layers} layers, steps: {} vs {}", steps[r], want[r]);
                }
            }
        }
    }

    /// Σ_x p(x) = 1 over all 2^10 vectors for several single orderings and for the ensemble,
    /// 1 and 2 hidden layers, at initialisation and after training.
    /// The valid estimate's expectation is the mean NLL over orderings, computed exactly by
    /// enumerating every observed set O: E_o[−log p_o(x)] = Σ_O Σ_{i∉O} −log p(x_i|x_O) /
    /// (C(D,|O|)(D−|O|)). 4,000 copies of one row (each its own draw) must land within 4
    /// standard errors (a false alarm about once in 16,000 runs; the draws are fixed, so the
    /// test gives the same verdict every time).
    #[test]
    fn the_valid_estimate_estimates_the_mean_nll_over_orderings() {
        for layers in [1, 2] {
            let m = trained(layers, 1, 5);
            let x1: Vec<f32> = correlated_bits(1, 11).flatten_all().unwrap().to_vec1().unwrap();
            // Exact: every mask at once.
            let masks = all_vectors(D);
            let xs = Tensor::from_vec(x1.repeat(1 << D), (1 << D, D), &Device::Cpu).unwrap();
            let nll: Vec<Vec<f32>> = bce_with_logits(&m.logits_masked(&xs, &masks).unwrap(), &xs).unwrap().to_vec2().unwrap();
            let binom = |n: usize, k: usize| (0..k).fold(1.0f64, |a, i| a * (n - i) as f64 / (i + 1) as f64);
            let mut exact = 0.0f64;
            for (o, row) in nll.iter().enumerate() {
                let size = (o as u32).count_ones() as usize;
                if size == D {
                    continue;
                }
                let unobserved: f64 = (0..D).filter(|&i| (o >> i) & 1 == 0).map(|i| row[i] as f64).sum();
                exact += unobserved / (binom(D, size) * (D - size) as f64);
            }
            // The estimate over n copies, and its standard error from the per-row losses.
            let n = 4000;
            let x = Tensor::from_vec(x1.repeat(n), (n, D), &Device::Cpu).unwrap();
            let est = m.valid_estimate(&x).unwrap();
            let keys: Vec<u64> = (0..n as u64).collect();
            let (mk, wt) = m.batch_masks_from("oanade-valid-mask", &keys, &Device::Cpu).unwrap();
            let per: Vec<f32> = (bce_with_logits(&m.logits_masked(&x, &mk).unwrap(), &x).unwrap() * wt).unwrap().sum(1).unwrap().to_vec1().unwrap();
            let mean = per.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            let sd = (per.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
            assert!((mean - est).abs() < 1e-6 * est.abs(), "{mean} vs {est}");
            // The host forward (the CPU's) and the Candle ops (every other device's) agree.
            let composed = m.valid_estimate_composed(&x).unwrap();
            assert!((composed - est).abs() < 1e-6 * est.abs(), "{composed} vs {est}");
            let se = sd / (n as f64).sqrt();
            assert!((est - exact).abs() < 4.0 * se, "{layers} layers: estimate {est} vs exact mean over orderings {exact} (se {se})");
            // Fixed draws: the same figure twice.
            assert_eq!(m.valid_estimate(&x).unwrap(), est);
        }
    }

    #[test]
    fn every_ordering_and_the_ensemble_sum_to_one() {
        let all = all_vectors(D);
        for layers in [1, 2] {
            for m in [OaNade::new(D, 12, layers, 5, 3, &Device::Cpu).unwrap(), trained(layers, 5, 3)] {
                let mut members = Vec::new();
                for o in m.orderings() {
                    let lp = m.log_prob_ordering(&all, o).unwrap();
                    let total: f64 = lp.iter().map(|v| v.exp()).sum();
                    assert!((total - 1.0).abs() < 1e-5, "{layers} layers, ordering {o:?}: Σp = {total}");
                    members.push(lp);
                }
                // The orderings really differ as models (order-agnostic training is not perfect).
                assert!(members[0].iter().zip(&members[1]).any(|(a, b)| (a - b).abs() > 1e-3));
                let ens = m.nll(&all).unwrap().to_vec1::<f32>().unwrap();
                let total: f64 = ens.iter().map(|&v| (-(v as f64)).exp()).sum();
                assert!((total - 1.0).abs() < 1e-5, "{layers} layers, ensemble: Σp = {total}");
                // The ensemble is the mixture of the members' probabilities.
                for r in [0, 37, 1023] {
                    let want = -(members.iter().map(|lp| lp[r].exp()).sum::<f64>() / 5.0).ln();
                    assert!((ens[r] as f64 - want).abs() < 1e-4, "row {r}: {} vs {want}", ens[r]);
                }
            }
        }
    }

    #[test]
    fn closed_form_gradients_equal_autograd_and_reach_every_parameter() {
        for layers in [1, 2, 3] {
            let m = trained(layers, 1, 6);
            let x = random_bits(9, D, 0.4, 2);
            let keys: Vec<u64> = (100..109).collect();
            let loss = m.train_nll_keyed(&x, &keys).unwrap().mean_all().unwrap();
            let auto = loss.backward().unwrap();
            // The host step (the CPU's) and the Candle ops (every other device's).
            for (path, (value, closed)) in [("host", m.loss_and_grads_host(&x, &keys).unwrap()), ("composed", m.loss_and_grads_composed(&x, &keys).unwrap())] {
                assert!((value - loss.to_scalar::<f32>().unwrap() as f64).abs() < 1e-4 * value.abs(), "{path}");
                for (n, v) in m.params().names().iter().zip(m.params().vars()) {
                    let a = auto.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    let c = closed.get(v).unwrap_or_else(|| panic!("{path}: no gradient for {n}")).flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    assert_eq!(a.len(), c.len(), "{n}");
                    let scale = a.iter().fold(0f32, |s, v| s.max(v.abs()));
                    assert!(scale > 0.0, "{layers} layers: zero gradient for {n}");
                    for (p, q) in a.iter().zip(&c) {
                        assert!((p - q).abs() < 1e-5 * (1.0 + scale), "{path}, {layers} layers {n}: {p} vs {q}");
                    }
                }
            }
        }
    }

    /// The host step's loss and gradients have the same bits for 1, 2 and 3 threads, at MNIST's
    /// width and a batch that leaves partial gemm tiles.
    #[test]
    fn host_step_bits_do_not_depend_on_the_thread_count() {
        let m = OaNade::new(784, 37, 2, 1, 4, &Device::Cpu).unwrap();
        let x = random_bits(33, 784, 0.2, 8);
        let keys: Vec<u64> = (500..533).collect();
        let run = |t: usize| {
            rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap().install(|| {
                let (loss, g) = m.loss_and_grads_host(&x, &keys).unwrap();
                let flat: Vec<Vec<f32>> = m.params().vars().iter().map(|v| g.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect();
                (loss.to_bits(), flat)
            })
        };
        let one = run(1);
        for t in [2, 3] {
            assert!(one == run(t), "{t} threads differ from 1");
        }
    }

    /// Uria et al.'s draw: the loss weight is D/(D − d) with d the observed count, at least one
    /// input is unobserved, and the draw depends on the key only (not on the batch around it).
    #[test]
    fn training_draws_are_keyed_per_example() {
        let m = OaNade::new(D, 8, 1, 1, 5, &Device::Cpu).unwrap();
        let mut counts = vec![0usize; D];
        for key in 0..2000 {
            let (mk, w) = m.training_mask(key);
            let d = mk.iter().filter(|&&v| v == 1.0).count();
            assert!(d < D);
            assert_eq!(w, D as f32 / (D - d) as f32);
            counts[d] += 1;
            assert_eq!((mk.clone(), w), m.training_mask(key));
        }
        assert!(counts.iter().all(|&c| c > 140 && c < 260), "d is uniform on 0..D−1: {counts:?}");
        let x = random_bits(6, D, 0.5, 1);
        let whole = m.train_nll_keyed(&x, &[10, 11, 12, 13, 14, 15]).unwrap().to_vec1::<f32>().unwrap();
        let a = m.train_nll_keyed(&x.narrow(0, 0, 2).unwrap(), &[10, 11]).unwrap().to_vec1::<f32>().unwrap();
        let b = m.train_nll_keyed(&x.narrow(0, 2, 4).unwrap(), &[12, 13, 14, 15]).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(whole, [a, b].concat());
    }

    /// Completion of a random observed subset samples the exact conditional: the counts of 20,000
    /// completions against p(x_U | x_O) enumerated from the direct masked network (ordering: O
    /// ascending, then U ascending), a χ² goodness-of-fit test at a 0.1% false-alarm rate, cells
    /// with expected count < 5 pooled. 1 and 2 hidden layers.
    #[test]
    fn completions_match_the_enumerated_conditional() {
        for layers in [1, 2] {
            let m = trained(layers, 2, 8);
            let mut r = Rng::stream(11, "observe");
            let perm = r.permutation(D);
            let mask: Vec<bool> = (0..D).map(|i| perm[i] < 4).collect();
            let vals: Vec<f32> = (0..D).map(|i| (i % 3 == 0) as u8 as f32).collect();
            let unobs: Vec<usize> = (0..D).filter(|&i| !mask[i]).collect();
            let order: Vec<usize> = (0..D).filter(|&i| mask[i]).chain(unobs.iter().copied()).collect();
            // Every completion of x_O, enumerated.
            let nu = unobs.len();
            let rows: Vec<f32> = (0..1usize << nu)
                .flat_map(|c| {
                    let mut v = vals.clone();
                    for (j, &i) in unobs.iter().enumerate() {
                        v[i] = ((c >> j) & 1) as f32;
                    }
                    v
                })
                .collect();
            let lp = direct_log_prob(&m, &Tensor::from_vec(rows, (1 << nu, D), &Device::Cpu).unwrap(), &order);
            let z: f64 = lp.iter().map(|v| v.exp()).sum();
            let probs: Vec<f64> = lp.iter().map(|v| v.exp() / z).collect();
            let n = 20_000;
            let out = m.sample(n, &mut Rng::stream(12, "sample"), Some((&vals.repeat(n), &mask))).unwrap();
            let mut counts = vec![0f64; 1 << nu];
            for s in out.chunks(D) {
                for i in 0..D {
                    if mask[i] {
                        assert_eq!(s[i], vals[i]);
                    }
                }
                counts[unobs.iter().enumerate().map(|(j, &i)| (s[i] as usize) << j).sum::<usize>()] += 1.0;
            }
            let (chi2, cells) = crate::gof::chi2_pooled(&counts, |j| probs[j] * n as f64);
            let crit = crate::gof::chi2_999((cells - 1) as f64);
            assert!(cells > 20, "{layers} layers: too few cells ({cells}) for the test to bite");
            assert!(chi2 < crit, "{layers} layers: χ² = {chi2:.1} over {cells} cells, critical {crit:.1}");
            // And the test has power: the unconditional model's marginal over x_U is not this conditional.
            let free = m.sample(n, &mut Rng::stream(13, "sample"), None).unwrap();
            let mut fc = vec![0f64; 1 << nu];
            for s in free.chunks(D) {
                fc[unobs.iter().enumerate().map(|(j, &i)| (s[i] as usize) << j).sum::<usize>()] += 1.0;
            }
            let wrong: f64 = probs.iter().zip(&fc).filter(|(p, _)| **p * n as f64 >= 5.0).map(|(p, o)| (o - p * n as f64).powi(2) / (p * n as f64)).sum();
            assert!(wrong > crit, "{layers} layers: the test cannot tell the marginal from the conditional ({wrong:.1})");
        }
    }
}
