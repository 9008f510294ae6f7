//! SimCLR (Chen et al. 2020): contrast two augmented views of each image.
//!
//! Both views of a batch of N images go through the encoder f and a projection head
//! g: `F → 256 → 128` (ReLU between); z = g(f(x)) / ‖g(f(x))‖. With the 2N normalised
//! projections and s_ij = z_i · z_j / τ, the NT-Xent loss (the paper's eq. 1, averaged over all
//! 2N anchors) is
//!
//! ```text
//! ℓ(i, j) = −log  exp(s_ij) / Σ_{k ≠ i} exp(s_ik),      L = (1/2N) Σ_{i} ℓ(i, pos(i))
//! ```
//!
//! where pos(i) is the other view of i's image. The sum over k ≠ i is a log-softmax over each
//! row with the diagonal pushed to −∞ (a large negative constant), computed with
//! `candle_nn::ops::log_softmax` (composed ops: it has a backward, unlike `softmax_last_dim`).
//!
//! On the CPU the normalisation and the loss are one op ([`nt_xent_of_projections`]) with the
//! closed-form gradient: with `P_ik` the softmax of row i over k ≠ i and
//! `G_ik = (P_ik − 1[k = pos(i)]) / 2N`, ∂L/∂z = (G + Gᵀ) z / τ, and through z = p / ‖p‖,
//! ∂L/∂p_i = (∂z_i − z_i (z_i · ∂z_i)) / ‖p_i‖. Its products are fixed row blocks of
//! single-threaded `gemm` calls, so the bits do not depend on the thread count.

use crate::encoder::{Encoder, Linear};
use candle_core::{CpuStorage, CustomOp1, Device, Layout, Shape, Tensor, D};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;
use wick_core::cpu::f32_slice;
use wick_core::params::Params;
use wick_core::rng::Rng;
use wick_core::Result;

const PROJ_HIDDEN: usize = 256;
/// Width of the projections z.
pub const PROJ_OUT: usize = 128;

/// The projection head g, parameters `projection.*`.
pub struct SimClr {
    fc1: Linear,
    fc2: Linear,
}

impl SimClr {
    pub fn new(features: usize, params: &mut Params, rng: &mut Rng, dev: &Device) -> Result<SimClr> {
        Ok(SimClr {
            fc1: Linear::new("projection.fc1", features, PROJ_HIDDEN, params, rng, dev)?,
            fc2: Linear::new("projection.fc2", PROJ_HIDDEN, PROJ_OUT, params, rng, dev)?,
        })
    }

    /// L2-normalised projections of images `x` `[B, D]`.
    pub fn project(&self, enc: &Encoder, x: &Tensor) -> candle_core::Result<Tensor> {
        let p = self.fc2.forward(&self.fc1.forward_relu(&enc.forward(x)?)?)?;
        l2_normalize(&p)
    }

    /// NT-Xent of the two views `a`, `b` `[N, D]` (row i of each is the same image).
    pub fn loss(&self, enc: &Encoder, a: &Tensor, b: &Tensor, temperature: f64) -> candle_core::Result<Tensor> {
        // One pass through the encoder for both views.
        let p = self.fc2.forward(&self.fc1.forward_relu(&enc.forward(&Tensor::cat(&[a, b], 0)?)?)?)?;
        nt_xent_of_projections(&p, temperature)
    }
}

impl SimClr {
    /// The NT-Xent of views `a`, `b` (`n` images each, host values) and the gradient of every
    /// parameter of `enc` and the head, computed by hand on the CPU ([`crate::host`]): the
    /// same values as `loss(..).backward()` through the fused ops, without Candle's autograd.
    pub fn loss_and_grads_host(&self, enc: &Encoder, a: &[f32], b: &[f32], n: usize, temperature: f64) -> Result<(f32, candle_core::backprop::GradStore)> {
        let (p, tape) = self.project_host(enc, [a, b].concat(), 2 * n)?;
        let (loss, dp) = nt_xent_host(&p, 2 * n, PROJ_OUT, temperature as f32, Some(1.0));
        Ok((loss, self.backward_host(enc, &tape, dp.expect("gradient asked for"))?))
    }

    /// The encoder's and the head's layers, for the CPU path.
    fn host_layers<'a>(&'a self, enc: &'a Encoder) -> Vec<crate::host::HostLayer<'a>> {
        crate::host::with_head(enc, &[(&self.fc1, true), (&self.fc2, false)])
    }

    /// Un-normalised projections g(f(x)) `[rows, PROJ_OUT]` of `rows` images `x` on the CPU
    /// ([`crate::host`]), and the tape for [`SimClr::backward_host`].
    pub fn project_host(&self, enc: &Encoder, x: Vec<f32>, rows: usize) -> Result<(Vec<f32>, crate::host::Tape)> {
        crate::host::forward(&self.host_layers(enc), x, rows)
    }

    /// Every parameter's gradient given `dp` = ∂L/∂(the projections of [`SimClr::project_host`]).
    pub fn backward_host(&self, enc: &Encoder, tape: &crate::host::Tape, dp: Vec<f32>) -> Result<candle_core::backprop::GradStore> {
        let mut grads = candle_core::backprop::GradStore::default();
        crate::host::backward(&self.host_layers(enc), tape, dp, &mut grads)?;
        Ok(grads)
    }

    /// Un-normalised projections g(f(x)) `[B, PROJ_OUT]` of images `x` (Candle ops, with a backward).
    pub fn project_raw(&self, enc: &Encoder, x: &Tensor) -> candle_core::Result<Tensor> {
        self.fc2.forward(&self.fc1.forward_relu(&enc.forward(x)?)?)
    }
}

/// NT-Xent of the 2N un-normalised projections `p` `[2N, P]`: [`nt_xent`] of
/// [`l2_normalize`]`(p)`, one fused op with a closed-form backward on the CPU (f32), the composed
/// ops elsewhere.
pub fn nt_xent_of_projections(p: &Tensor, temperature: f64) -> candle_core::Result<Tensor> {
    if p.device().is_cpu() && p.dtype() == candle_core::DType::F32 && p.rank() == 2 && p.dim(0)? % 2 == 0 && p.dim(0)? >= 2 {
        p.contiguous()?.apply_op1(NtXent { tau: temperature as f32 })
    } else {
        nt_xent(&l2_normalize(p)?, temperature)
    }
}

/// Rows divided by their L2 norm (ε = 1e-12 inside the square root).
pub fn l2_normalize(p: &Tensor) -> candle_core::Result<Tensor> {
    let norm = (p.sqr()?.sum_keepdim(1)? + 1e-12)?.sqrt()?;
    p.broadcast_div(&norm)
}

/// NT-Xent of 2N normalised projections `z` `[2N, P]`, rows i and i+N the two views of image i.
pub fn nt_xent(z: &Tensor, temperature: f64) -> candle_core::Result<Tensor> {
    let n2 = z.dim(0)?;
    let n = n2 / 2;
    let dev = z.device();
    let sim = (z.matmul(&z.t()?)? / temperature)?;
    // −1e9 on the diagonal (k = i is left out of the denominator); 1 at each positive pair.
    let mut diag = vec![0f32; n2 * n2];
    let mut pos = vec![0f32; n2 * n2];
    for i in 0..n2 {
        diag[i * n2 + i] = -1e9;
        pos[i * n2 + (i + n) % n2] = 1.0;
    }
    let logits = (sim + Tensor::from_vec(diag, (n2, n2), dev)?)?;
    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let picked = (logp * Tensor::from_vec(pos, (n2, n2), dev)?)?.sum_all()?;
    picked.neg()? / n2 as f64
}

/// Rows of the similarity matrix per block.
const ROWS: usize = 64;

/// z = p / ‖p‖ per row (ε = 1e-12 inside the root, as [`l2_normalize`]) and the norms.
fn normalize_rows(p: &[f32], d: usize) -> (Vec<f32>, Vec<f32>) {
    let norms: Vec<f32> = p.chunks_exact(d).map(|r| (r.iter().map(|v| v * v).sum::<f32>() + 1e-12).sqrt()).collect();
    let z = p.chunks_exact(d).zip(&norms).flat_map(|(r, &n)| r.iter().map(move |v| v / n)).collect();
    (z, norms)
}

/// `c = a bᵀ · scale`, a `[m, d]`, b `[n, d]` (rows of `c` in fixed blocks, one single-threaded
/// gemm call each).
fn abt(a: &[f32], b: &[f32], m: usize, n: usize, d: usize, scale: f32) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    c.par_chunks_mut(ROWS * n).enumerate().for_each(|(j, cb)| {
        let rows = cb.len() / n;
        // SAFETY: a rows j·ROWS.. (rows × d), bᵀ (d × n) read with strides (1, d), cb (rows × n).
        unsafe {
            gemm(rows, n, d, cb.as_mut_ptr(), 1, n as isize, false, a.as_ptr().add(j * ROWS * d), 1, d as isize, b.as_ptr(), d as isize, 1, 0.0, scale, false, false, false, Parallelism::None)
        }
    });
    c
}

/// Σ of `x` in 16 fixed lanes (lane j takes entries j, j + 16, …, each in order; then the
/// lanes in order): vectorisable, and the same bits on every instruction set.
#[inline(always)]
fn lanes_sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += v;
    }
    acc.iter().fold(0.0, |t, &a| t + a)
}

/// Row i of the similarities `s_i` → `e_i`: `e_ik = e^{s_ik − μ_i}` with μ_i the max over
/// k ≠ i, and `e_ii = 0`; returns (log Σ_{k≠i} e^{s_ik}, Σ_k e_ik).
fn row_exp(i: usize, s_i: &[f32], e_i: &mut [f32]) -> (f32, f32) {
    let max = |r: &[f32]| r.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    let mu = max(&s_i[..i]).max(max(&s_i[i + 1..]));
    for (e, &v) in e_i.iter_mut().zip(s_i) {
        *e = v - mu;
    }
    wick_core::loss::exp_in_place(e_i);
    e_i[i] = 0.0;
    let sum = lanes_sum(e_i);
    (mu + sum.ln(), sum)
}

/// NT-Xent of un-normalised projections `p` `[m = 2N, d]` on host buffers, and with
/// `grad_scale = Some(g)` also `g · ∂L/∂p` (see the module docs for the closed form).
///
/// Each row's exponentials are taken once (`wick_core::loss::exp_in_place`: vectorised, the
/// same bits on every instruction set) and kept for the gradient: `P_ik = e_ik / Σ_k e_ik`.
/// `A = G + Gᵀ` is formed in 64 × 64 tiles, so the transposed reads stay in cache.
pub fn nt_xent_host(p: &[f32], m: usize, d: usize, tau: f32, grad_scale: Option<f32>) -> (f32, Option<Vec<f32>>) {
    let (z, norms) = normalize_rows(p, d);
    let s = abt(&z, &z, m, m, d, 1.0 / tau);
    let mut e = vec![0f32; m * m];
    let rows: Vec<(f32, f32)> = e.par_chunks_mut(m).zip(s.par_chunks(m)).enumerate().map(|(i, (e_i, s_i))| row_exp(i, s_i, e_i)).collect();
    // Rows summed in order.
    let total: f64 = (0..m).map(|i| (rows[i].0 - s[i * m + (i + m / 2) % m]) as f64).sum();
    let loss = (total / m as f64) as f32;
    let Some(scale) = grad_scale else { return (loss, None) };
    drop(s);
    // e ← G = (softmax − one-hot(pos)) · scale / 2N, zero on the diagonal.
    let c = scale / m as f32;
    e.par_chunks_mut(m).zip(rows.par_iter()).enumerate().for_each(|(i, (r, &(_, sum)))| g_row(i, r, sum, c));
    (loss, Some(grad_rows(&e, m, &z, &norms, m, d, tau, 0..m)))
}

/// Row i of `e` (from [`row_exp`], with Σ_k e_ik = `sum`) → row i of
/// `G = (softmax − one-hot(pos)) · c`, c = scale / m.
fn g_row(i: usize, r: &mut [f32], sum: f32, c: f32) {
    let m = r.len();
    let f = c / sum;
    for v in r.iter_mut() {
        *v *= f;
    }
    r[(i + m / 2) % m] -= c;
}

/// `∂L/∂p` for anchors `[i0, i1)` from G (`g`: row i at `i · stride`, m entries): rows i0..i1 of
/// `A = G + Gᵀ` in tiles of [`ROWS`] × [`ROWS`] (so the transposed reads stay in cache), then
/// `∂z = A z / τ` in blocks of [`ROWS`] anchors from i0, then through the normalisation:
/// `∂p_i = (∂z_i − z_i (z_i · ∂z_i)) / ‖p_i‖`.
#[allow(clippy::too_many_arguments)]
fn grad_rows(g: &[f32], stride: usize, z: &[f32], norms: &[f32], m: usize, d: usize, tau: f32, anchors: std::ops::Range<usize>) -> Vec<f32> {
    let (i0, n) = (anchors.start, anchors.len());
    let mut a = vec![0f32; n * m];
    a.par_chunks_mut(ROWS * m).enumerate().for_each(|(j, block)| {
        let r0 = i0 + j * ROWS;
        let rows = block.len() / m;
        for k0 in (0..m).step_by(ROWS) {
            let k1 = (k0 + ROWS).min(m);
            for rr in 0..rows {
                let i = r0 + rr;
                for (v, k) in block[rr * m + k0..rr * m + k1].iter_mut().zip(k0..k1) {
                    *v = g[i * stride + k] + g[k * stride + i];
                }
            }
        }
    });
    let mut dz = vec![0f32; n * d];
    dz.par_chunks_mut(ROWS * d).enumerate().for_each(|(j, b)| {
        let rows = b.len() / d;
        // SAFETY: a rows j·ROWS.. (rows × m), z (m × d), b (rows × d).
        unsafe {
            gemm(rows, d, m, b.as_mut_ptr(), 1, d as isize, false, a.as_ptr().add(j * ROWS * m), 1, m as isize, z.as_ptr(), 1, d as isize, 0.0, 1.0 / tau, false, false, false, Parallelism::None)
        }
    });
    let (zi, ni) = (&z[i0 * d..(i0 + n) * d], &norms[i0..i0 + n]);
    dz.par_chunks_mut(d).zip(zi.par_chunks(d)).zip(ni.par_iter()).for_each(|((g, zi), &n)| {
        let dot: f32 = g.iter().zip(zi).map(|(a, b)| a * b).sum();
        for (v, &zv) in g.iter_mut().zip(zi) {
            *v = (*v - zv * dot) / n;
        }
    });
    dz
}

/// NT-Xent split by anchors, for data-parallel steps (`wick_core::dist::GatheredLoss`): the
/// first phase of the anchors in `ranges` (in order) of the `m` un-normalised projections `p`
/// `[m, d]`. Per anchor i, its row of `G = (softmax − one-hot(pos)) · scale / m` (m f32s, zero
/// at k = i) and its loss term `log Σ_{k≠i} e^{s_ik} − s_{i,pos(i)}` (one f32): m + 1 f32s per
/// anchor, anchor after anchor. The same arithmetic as [`nt_xent_host`] row by row, with the
/// similarities in blocks of [`ROWS`] anchors from each range's start, so a split's bits depend
/// on its anchors only (not on the thread count or on which process computes it).
pub fn nt_xent_split(p: &[f32], m: usize, d: usize, tau: f32, scale: f32, ranges: &[std::ops::Range<usize>]) -> Vec<f32> {
    let (z, _) = normalize_rows(p, d);
    let c = scale / m as f32;
    let mut out = Vec::with_capacity(ranges.iter().map(|r| r.len()).sum::<usize>() * (m + 1));
    for range in ranges {
        let (i0, n) = (range.start, range.len());
        let s = abt(&z[i0 * d..range.end * d], &z, n, m, d, 1.0 / tau);
        let mut part = vec![0f32; n * (m + 1)];
        part.par_chunks_mut(m + 1).zip(s.par_chunks(m)).enumerate().for_each(|(r, (o, s_i))| {
            let i = i0 + r;
            let (lse, sum) = row_exp(i, s_i, &mut o[..m]);
            g_row(i, &mut o[..m], sum, c);
            o[m] = lse - s_i[(i + m / 2) % m];
        });
        out.extend(part);
    }
    out
}

/// The second phase of [`nt_xent_split`]: with every anchor's part gathered (`parts`, anchor
/// order, `m · (m + 1)` f32s), the loss (the terms summed in anchor order in f64, over m) and
/// `∂L/∂p` for the anchors in `ranges`, one after another (`∂z_j = Σ_k (G_jk + G_kj) z_k / τ`,
/// then through the normalisation; the products in blocks of [`ROWS`] anchors from each range's
/// start, as in the first phase).
pub fn nt_xent_join(p: &[f32], parts: &[f32], m: usize, d: usize, tau: f32, ranges: &[std::ops::Range<usize>]) -> (f32, Vec<f32>) {
    let w = m + 1;
    let total: f64 = (0..m).map(|i| parts[i * w + m] as f64).sum();
    let loss = (total / m as f64) as f32;
    let (z, norms) = normalize_rows(p, d);
    let dp = ranges.iter().flat_map(|r| grad_rows(parts, w, &z, &norms, m, d, tau, r.clone())).collect();
    (loss, dp)
}

/// The fused NT-Xent of un-normalised projections `[2N, P]` → a scalar.
struct NtXent {
    tau: f32,
}

impl CustomOp1 for NtXent {
    fn name(&self) -> &'static str {
        "wick-nt-xent"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let p = f32_slice(st, l, "projections")?;
        let (m, d) = l.shape().dims2()?;
        Ok((CpuStorage::F32(vec![nt_xent_host(p, m, d, self.tau, None).0]), Shape::from(())))
    }

    fn bwd(&self, p: &Tensor, _loss: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let g = g.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
        Ok(Some(p.apply_op1_no_bwd(&NtXentGrad { tau: self.tau, scale: g })?))
    }
}

/// ∂(scale · NT-Xent)/∂p, p `[2N, P]`.
struct NtXentGrad {
    tau: f32,
    scale: f32,
}

impl CustomOp1 for NtXentGrad {
    fn name(&self) -> &'static str {
        "wick-nt-xent-grad"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let p = f32_slice(st, l, "projections")?;
        let (m, d) = l.shape().dims2()?;
        let g = nt_xent_host(p, m, d, self.tau, Some(self.scale)).1.expect("gradient asked for");
        Ok((CpuStorage::F32(g), Shape::from((m, d))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::Encoder;
    use candle_core::Var;

    /// The hand-driven CPU step against Candle's backward through the fused ops (same bits) and
    /// through composed ops (matmul, broadcast_add, relu, l2_normalize, log_softmax: same values
    /// within rounding), for both encoders; every parameter gets a non-zero gradient.
    #[test]
    fn host_step_matches_the_graph_and_the_composed_ops() {
        use crate::encoder::EncoderKind;
        let dev = Device::Cpu;
        let mut r = Rng::stream(8, "x");
        let (n, side) = (5, 8);
        let a: Vec<f32> = (0..n * side * side).map(|_| r.uniform() as f32).collect();
        let b: Vec<f32> = (0..n * side * side).map(|_| r.uniform() as f32).collect();
        let (at, bt) = (Tensor::from_vec(a.clone(), (n, side * side), &dev).unwrap(), Tensor::from_vec(b.clone(), (n, side * side), &dev).unwrap());
        for kind in [EncoderKind::Mlp, EncoderKind::Cnn] {
            let mut p = Params::new();
            let mut init = Rng::stream(1, "init");
            let enc = Encoder::new(kind, side, side, &mut p, &mut init, &dev).unwrap();
            let head = SimClr::new(enc.feature_dim(), &mut p, &mut init, &dev).unwrap();
            assert!(crate::host::available(&enc, &dev));
            let (lh, gh) = head.loss_and_grads_host(&enc, &a, &b, n, 0.5).unwrap();
            let lg = head.loss(&enc, &at, &bt, 0.5).unwrap();
            assert_eq!(lh, lg.to_scalar::<f32>().unwrap(), "{kind}");
            let gg = lg.backward().unwrap();
            // Composed ops all the way (the generic path's ops).
            let x = Tensor::cat(&[&at, &bt], 0).unwrap();
            let mut h = match kind {
                EncoderKind::Mlp => x.clone(),
                EncoderKind::Cnn => x.reshape((2 * n, side, side, 1)).unwrap(),
            };
            for l in enc.host_layers() {
                h = match l.conv {
                    Some((conv, _, _)) => {
                        let kernel = l.w.reshape((conv.c_out, conv.k, conv.k, conv.c_in)).unwrap().permute((0, 3, 1, 2)).unwrap().contiguous().unwrap();
                        let y = h.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap().conv2d(&kernel, conv.pad, conv.stride, 1, 1).unwrap();
                        y.permute((0, 2, 3, 1)).unwrap().broadcast_add(l.b).unwrap().relu().unwrap()
                    }
                    None => crate::dense::composed(&h.flatten_from(1).unwrap(), l.w, l.b, true).unwrap(),
                };
            }
            let pr = crate::dense::composed(&crate::dense::composed(&h, &head.fc1.w, &head.fc1.b, true).unwrap(), &head.fc2.w, &head.fc2.b, false).unwrap();
            let lc = nt_xent(&l2_normalize(&pr).unwrap(), 0.5).unwrap();
            assert!((lh - lc.to_scalar::<f32>().unwrap()).abs() < 1e-5, "{kind}");
            let gc = lc.backward().unwrap();
            for (name, v) in p.names().iter().zip(p.vars()) {
                let host = gh.get(v).unwrap_or_else(|| panic!("{kind}: no host gradient for {name}")).flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let graph = gg.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(host, graph, "{kind}: {name}");
                let comp = gc.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let scale = comp.iter().fold(0f32, |m, v| m.max(v.abs()));
                assert!(scale > 0.0 && scale.is_finite(), "{kind}: {name} has a zero gradient");
                for (x, y) in host.iter().zip(&comp) {
                    assert!((x - y).abs() <= 1e-4 * scale, "{kind}: {name}: {x} vs {y}");
                }
            }
        }
    }

    /// The fused op against `nt_xent(l2_normalize(p))` in composed ops: value and gradient, and
    /// the same bits for 1 and 3 threads.
    #[test]
    fn fused_nt_xent_matches_the_composed_ops() {
        let dev = Device::Cpu;
        let mut r = Rng::stream(6, "p");
        for (n2, d, tau) in [(6, 3, 0.5), (200, 40, 0.2), (130, 128, 1.0)] {
            let p = Var::from_tensor(&Tensor::from_vec((0..n2 * d).map(|_| r.normal() as f32).collect::<Vec<_>>(), (n2, d), &dev).unwrap()).unwrap();
            let fused = nt_xent_of_projections(p.as_tensor(), tau).unwrap();
            let comp = nt_xent(&l2_normalize(p.as_tensor()).unwrap(), tau).unwrap();
            let (a, b) = (fused.to_scalar::<f32>().unwrap(), comp.to_scalar::<f32>().unwrap());
            assert!((a - b).abs() < 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
            let ga = (fused * 3.0).unwrap().backward().unwrap().get(&p).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let gb = (comp * 3.0).unwrap().backward().unwrap().get(&p).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let scale = gb.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(scale > 0.0);
            for (x, y) in ga.iter().zip(&gb) {
                assert!((x - y).abs() < 1e-4 * scale, "{x} vs {y}");
            }
            let run = |t: usize| {
                rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap().install(|| {
                    let l = nt_xent_of_projections(p.as_tensor(), tau).unwrap();
                    (l.to_scalar::<f32>().unwrap(), l.backward().unwrap().get(&p).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap())
                })
            };
            assert_eq!(run(1), run(3));
        }
    }

    /// NT-Xent against the definition computed by hand in f64.
    #[test]
    fn nt_xent_matches_a_hand_computation() {
        let dev = Device::Cpu;
        let mut r = Rng::stream(4, "z");
        let (n2, p, tau) = (6, 3, 0.5);
        let raw: Vec<f32> = (0..n2 * p).map(|_| r.normal() as f32).collect();
        let z = l2_normalize(&Tensor::from_vec(raw, (n2, p), &dev).unwrap()).unwrap();
        let got = nt_xent(&z, tau).unwrap().to_scalar::<f32>().unwrap() as f64;
        let zv = z.to_vec2::<f32>().unwrap();
        let s = |i: usize, j: usize| (0..p).map(|k| zv[i][k] as f64 * zv[j][k] as f64).sum::<f64>() / tau;
        let mut want = 0.0;
        for i in 0..n2 {
            let pos = (i + n2 / 2) % n2;
            let den: f64 = (0..n2).filter(|&k| k != i).map(|k| s(i, k).exp()).sum();
            want += -(s(i, pos).exp() / den).ln();
        }
        want /= n2 as f64;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // Identical views, the other image orthogonal.
        let e = Tensor::from_vec(vec![1f32, 0., 0., 1., 1., 0., 0., 1.], (4, 2), &dev).unwrap();
        let l = nt_xent(&e, 1.0).unwrap().to_scalar::<f32>().unwrap() as f64;
        // Row 0: positive s = 1, negatives: row 1 (s 0), row 3 (s 0) → −log(e/(e + 2)).
        assert!((l - -(1f64.exp() / (1f64.exp() + 2.0)).ln()).abs() < 1e-6, "{l}");
    }
}
