//! VICReg (Bardes, Ponce & LeCun 2022): variance–invariance–covariance regularisation of two
//! augmented views, with no negative pairs.
//!
//! Both views of a batch of n images (the augmentations of SimCLR, [`crate::augment`]) go
//! through the encoder f and an expander h: `F → 512 → 512 → 512` (ReLU between; the paper's
//! batch norms are left out: Candle's fused norm ops have no backward). With Z = h(f(a)),
//! Z' = h(f(b)) `[n, d]`, the loss is (§3, the official code's normalisations)
//!
//! ```text
//! s(Z, Z')  = (1/nd) Σ_{i,j} (z_ij − z'_ij)²                                  invariance
//! v(Z)      = (1/d) Σ_j max(0, γ − √(Var(z_·j) + ε))        γ = 1, ε = 1e-4   variance
//! c(Z)      = (1/d) Σ_{j ≠ k} C(Z)_jk²,   C(Z) = (Z − Z̄)ᵀ(Z − Z̄)/(n − 1)       covariance
//! L = λ s(Z, Z') + μ [v(Z) + v(Z')]/2 + ν [c(Z) + c(Z')]       λ = μ = 25, ν = 1
//! ```
//!
//! Var is the unbiased variance over the batch (C_jj). [`vicreg`] is the loss in composed Candle
//! ops (the off-diagonal sum as Σ_{j,k} C_jk² − Σ_j C_jj², so no mask is needed), the path of
//! other devices and the reference in tests.
//!
//! On the CPU the loss is one function with its closed-form gradient ([`vicreg_host`], also the
//! Candle op [`vicreg_of_embeddings`]), and the expander runs with the encoder by hand
//! ([`crate::host`]), as SimCLR's head does. With Z_c = Z − Z̄, s_j = √(C_jj + ε) and g the
//! gradient of the loss's output, each view's covariance and variance terms give
//!
//! ```text
//! ∂L/∂Z_c = Z_c M,   M_jk = 2gν (C_jk + C_kj) / (d (n − 1))                 (j ≠ k)
//!                    M_jj = −g (μ/2) 1[s_j < γ] / (d (n − 1) s_j)
//! ∂L/∂Z  = ∂L/∂Z_c − (column means of ∂L/∂Z_c)  ± 2gλ (Z − Z') / (nd)
//! ```
//!
//! (the centring's backward, then the invariance term, + for Z and − for Z'). C and Z_c M are
//! fixed row blocks of single-threaded `gemm` calls and every sum runs in a fixed order, so the
//! bits do not depend on the thread count.

use crate::encoder::{Encoder, Linear};
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, CustomOp1, Device, Layout, Shape, Tensor};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;
use wick_core::cpu::f32_slice;
use wick_core::params::Params;
use wick_core::rng::Rng;
use wick_core::Result;

/// Width of the expander's embeddings (and its hidden layers).
pub const EXPANDER: usize = 512;
/// λ, μ, ν of the paper (§4.1).
pub const LAMBDA: f64 = 25.0;
pub const MU: f64 = 25.0;
pub const NU: f64 = 1.0;
const GAMMA: f64 = 1.0;
const EPS: f64 = 1e-4;

/// The expander h, parameters `expander.*`.
pub struct VicReg {
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
}

/// The three terms of a VICReg loss and their weighted sum, as scalar tensors.
pub struct VicRegLoss {
    pub loss: Tensor,
    pub invariance: Tensor,
    pub variance: Tensor,
    pub covariance: Tensor,
}

impl VicReg {
    pub fn new(features: usize, params: &mut Params, rng: &mut Rng, dev: &Device) -> Result<VicReg> {
        Ok(VicReg {
            fc1: Linear::new("expander.fc1", features, EXPANDER, params, rng, dev)?,
            fc2: Linear::new("expander.fc2", EXPANDER, EXPANDER, params, rng, dev)?,
            fc3: Linear::new("expander.fc3", EXPANDER, EXPANDER, params, rng, dev)?,
        })
    }

    /// Embeddings h(f(x)) of images `x` `[B, D]`.
    pub fn embed(&self, enc: &Encoder, x: &Tensor) -> candle_core::Result<Tensor> {
        self.fc3.forward(&self.fc2.forward_relu(&self.fc1.forward_relu(&enc.forward(x)?)?)?)
    }

    /// The VICReg loss of the two views `a`, `b` `[n, D]` (row i of each is the same image), as
    /// a scalar tensor with a backward ([`vicreg_of_embeddings`]).
    pub fn loss(&self, enc: &Encoder, a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        // One pass through the encoder and expander for both views.
        vicreg_of_embeddings(&self.embed(enc, &Tensor::cat(&[a, b], 0)?)?)
    }

    /// The VICReg loss of views `a`, `b` (`n` images each, host values) and the gradient of
    /// every parameter of `enc` and the expander, computed by hand on the CPU ([`crate::host`]):
    /// the same values as `loss(..).backward()` through the fused ops, without Candle's autograd.
    pub fn loss_and_grads_host(&self, enc: &Encoder, a: &[f32], b: &[f32], n: usize) -> Result<(f32, GradStore)> {
        let (z, tape) = self.embed_host(enc, [a, b].concat(), 2 * n)?;
        let (terms, dz) = vicreg_host(&z, n, EXPANDER, Some(1.0));
        Ok((terms.loss, self.backward_host(enc, &tape, dz.expect("gradient asked for"))?))
    }

    /// The encoder's and the expander's layers, for the CPU path.
    fn host_layers<'a>(&'a self, enc: &'a Encoder) -> Vec<crate::host::HostLayer<'a>> {
        crate::host::with_head(enc, &[(&self.fc1, true), (&self.fc2, true), (&self.fc3, false)])
    }

    /// Embeddings h(f(x)) `[rows, EXPANDER]` of `rows` images `x` on the CPU ([`crate::host`]),
    /// and the tape for [`VicReg::backward_host`].
    pub fn embed_host(&self, enc: &Encoder, x: Vec<f32>, rows: usize) -> Result<(Vec<f32>, crate::host::Tape)> {
        crate::host::forward(&self.host_layers(enc), x, rows)
    }

    /// Every parameter's gradient given `dz` = ∂L/∂(the embeddings of [`VicReg::embed_host`]).
    pub fn backward_host(&self, enc: &Encoder, tape: &crate::host::Tape, dz: Vec<f32>) -> Result<GradStore> {
        let mut grads = GradStore::default();
        crate::host::backward(&self.host_layers(enc), tape, dz, &mut grads)?;
        Ok(grads)
    }
}

/// The VICReg loss of embeddings `z1`, `z2` `[n, d]` in composed Candle ops (see the module docs).
pub fn vicreg(z1: &Tensor, z2: &Tensor) -> candle_core::Result<VicRegLoss> {
    let invariance = (z1 - z2)?.sqr()?.mean_all()?;
    let (v1, c1) = variance_covariance(z1)?;
    let (v2, c2) = variance_covariance(z2)?;
    let variance = ((v1 + v2)? * 0.5)?;
    let covariance = (c1 + c2)?;
    let loss = (((&invariance * LAMBDA)? + (&variance * MU)?)? + (&covariance * NU)?)?;
    Ok(VicRegLoss { loss, invariance, variance, covariance })
}

/// v(Z) and c(Z) of the module docs.
fn variance_covariance(z: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let (n, d) = z.dims2()?;
    let zc = z.broadcast_sub(&z.mean_keepdim(0)?)?;
    let var = (zc.sqr()?.sum(0)? / (n as f64 - 1.0))?; // [d], = diag C
    let std = (var.clone() + EPS)?.sqrt()?;
    let v = (std.neg()? + GAMMA)?.relu()?.mean_all()?;
    let cov = (zc.t()?.matmul(&zc)? / (n as f64 - 1.0))?;
    let off = (cov.sqr()?.sum_all()? - var.sqr()?.sum_all()?)?;
    Ok((v, (off / d as f64)?))
}

/// The VICReg loss of the stacked embeddings `z` `[2n, d]` (rows 0..n the first view, n..2n the
/// second): [`vicreg_host`] as one op with its closed-form backward on the CPU (f32), the
/// composed ops of [`vicreg`] elsewhere.
pub fn vicreg_of_embeddings(z: &Tensor) -> candle_core::Result<Tensor> {
    let n = z.dim(0)? / 2;
    if z.device().is_cpu() && z.dtype() == candle_core::DType::F32 && z.rank() == 2 && z.dim(0)? % 2 == 0 {
        z.contiguous()?.apply_op1(VicRegOp)
    } else {
        Ok(vicreg(&z.narrow(0, 0, n)?, &z.narrow(0, n, n)?)?.loss)
    }
}

/// The three terms of a VICReg loss and their weighted sum, on host values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Terms {
    pub loss: f32,
    pub invariance: f32,
    pub variance: f32,
    pub covariance: f32,
}

/// Rows of C and of Z_c M per `gemm` call.
const ROWS: usize = 64;

/// One view's centred embeddings Z_c `[n, d]`, covariance C `[d, d]` and s_j = √(C_jj + ε).
struct View {
    zc: Vec<f32>,
    cov: Vec<f32>,
    std: Vec<f32>,
}

impl View {
    fn new(z: &[f32], n: usize, d: usize) -> View {
        // Column means, rows summed in order.
        let mut mean = vec![0f32; d];
        for row in z.chunks_exact(d) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v;
            }
        }
        for m in &mut mean {
            *m /= n as f32;
        }
        let zc: Vec<f32> = z.chunks_exact(d).flat_map(|row| row.iter().zip(&mean).map(|(v, m)| v - m)).collect();
        // C = Z_cᵀ Z_c / (n − 1), rows j of C in blocks: Z_cᵀ read with strides (1, d).
        let mut cov = vec![0f32; d * d];
        cov.par_chunks_mut(ROWS * d).enumerate().for_each(|(j, cb)| {
            let rows = cb.len() / d;
            // SAFETY: lhs Z_cᵀ rows j·ROWS.. (rows × n, element (r, i) at zc[i·d + j·ROWS + r]),
            // rhs Z_c (n × d), cb (rows × d).
            unsafe {
                gemm(rows, d, n, cb.as_mut_ptr(), 1, d as isize, false, zc.as_ptr().add(j * ROWS), d as isize, 1, zc.as_ptr(), 1, d as isize, 0.0, 1.0 / (n as f32 - 1.0), false, false, false, Parallelism::None)
            }
        });
        let std = (0..d).map(|j| (cov[j * d + j] + EPS as f32).sqrt()).collect();
        View { zc, cov, std }
    }

    /// v(Z) and c(Z) of the module docs (sums in f64, in order).
    fn terms(&self, d: usize) -> (f64, f64) {
        let v = self.std.iter().map(|&s| (GAMMA - s as f64).max(0.0)).sum::<f64>() / d as f64;
        let rows: Vec<f64> = self.cov.par_chunks(d).enumerate().map(|(j, r)| r.iter().enumerate().filter(|&(k, _)| k != j).map(|(_, &c)| c as f64 * c as f64).sum()).collect();
        (v, rows.iter().sum::<f64>() / d as f64)
    }

    /// `g` times this view's variance and covariance terms' gradient with respect to Z (the
    /// module docs' M, then the centring's backward).
    fn grad(&self, n: usize, d: usize, g: f32) -> Vec<f32> {
        let (dn, n1) = (d as f32, n as f32 - 1.0);
        let off = 2.0 * g * NU as f32 / (dn * n1);
        let mut m = vec![0f32; d * d];
        m.par_chunks_mut(d).enumerate().for_each(|(j, r)| {
            for (k, v) in r.iter_mut().enumerate() {
                *v = off * (self.cov[j * d + k] + self.cov[k * d + j]);
            }
            let s = self.std[j];
            r[j] = if s < GAMMA as f32 { -g * (MU as f32 / 2.0) / (dn * n1 * s) } else { 0.0 };
        });
        let mut dz = vec![0f32; n * d];
        dz.par_chunks_mut(ROWS * d).enumerate().for_each(|(j, b)| {
            let rows = b.len() / d;
            // SAFETY: Z_c rows j·ROWS.. (rows × d), M (d × d), b (rows × d).
            unsafe {
                gemm(rows, d, d, b.as_mut_ptr(), 1, d as isize, false, self.zc.as_ptr().add(j * ROWS * d), 1, d as isize, m.as_ptr(), 1, d as isize, 0.0, 1.0, false, false, false, Parallelism::None)
            }
        });
        // Z_c = Z − Z̄: subtract the column means of the gradient (rows summed in order).
        let mut mean = vec![0f32; d];
        for row in dz.chunks_exact(d) {
            for (a, &v) in mean.iter_mut().zip(row) {
                *a += v;
            }
        }
        for a in &mut mean {
            *a /= n as f32;
        }
        dz.par_chunks_mut(d).for_each(|row| {
            for (v, a) in row.iter_mut().zip(&mean) {
                *v -= a;
            }
        });
        dz
    }
}

/// The VICReg loss of the stacked embeddings `z` `[2n, d]` on host buffers, and with
/// `grad_scale = Some(g)` also `g · ∂L/∂z` (the closed form of the module docs).
pub fn vicreg_host(z: &[f32], n: usize, d: usize, grad_scale: Option<f32>) -> (Terms, Option<Vec<f32>>) {
    assert_eq!(z.len(), 2 * n * d, "vicreg_host: z must be [2n, d]");
    let (z1, z2) = z.split_at(n * d);
    let rows: Vec<f64> = z1.par_chunks(d).zip(z2.par_chunks(d)).map(|(a, b)| a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum()).collect();
    let invariance = rows.iter().sum::<f64>() / (n * d) as f64;
    let (v1, v2) = (View::new(z1, n, d), View::new(z2, n, d));
    let ((va, ca), (vb, cb)) = (v1.terms(d), v2.terms(d));
    let (variance, covariance) = ((va + vb) / 2.0, ca + cb);
    let loss = LAMBDA * invariance + MU * variance + NU * covariance;
    let terms = Terms { loss: loss as f32, invariance: invariance as f32, variance: variance as f32, covariance: covariance as f32 };
    let Some(g) = grad_scale else { return (terms, None) };
    let mut dz = [v1.grad(n, d, g), v2.grad(n, d, g)].concat();
    let inv = 2.0 * g * LAMBDA as f32 / (n * d) as f32;
    let (d1, d2) = dz.split_at_mut(n * d);
    d1.par_chunks_mut(d).zip(d2.par_chunks_mut(d)).zip(z1.par_chunks(d).zip(z2.par_chunks(d))).for_each(|((g1, g2), (a, b))| {
        for (((p, q), &x), &y) in g1.iter_mut().zip(g2.iter_mut()).zip(a).zip(b) {
            let t = inv * (x - y);
            *p += t;
            *q -= t;
        }
    });
    (terms, Some(dz))
}

/// The fused VICReg loss of stacked embeddings `[2n, d]` → a scalar.
struct VicRegOp;

impl CustomOp1 for VicRegOp {
    fn name(&self) -> &'static str {
        "wick-vicreg"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let z = f32_slice(st, l, "embeddings")?;
        let (m, d) = l.shape().dims2()?;
        Ok((CpuStorage::F32(vec![vicreg_host(z, m / 2, d, None).0.loss]), Shape::from(())))
    }

    fn bwd(&self, z: &Tensor, _loss: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let g = g.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
        Ok(Some(z.apply_op1_no_bwd(&VicRegGrad { scale: g })?))
    }
}

/// ∂(scale · VICReg)/∂z, z `[2n, d]`.
struct VicRegGrad {
    scale: f32,
}

impl CustomOp1 for VicRegGrad {
    fn name(&self) -> &'static str {
        "wick-vicreg-grad"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let z = f32_slice(st, l, "embeddings")?;
        let (m, d) = l.shape().dims2()?;
        let g = vicreg_host(z, m / 2, d, Some(self.scale)).1.expect("gradient asked for");
        Ok((CpuStorage::F32(g), Shape::from((m, d))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The three terms against the definitions computed by hand in f64.
    #[test]
    fn vicreg_matches_a_hand_computation() {
        let dev = Device::Cpu;
        let mut r = Rng::stream(5, "z");
        let (n, d) = (7, 4);
        let a: Vec<f64> = (0..n * d).map(|_| r.normal() * 0.7).collect();
        let b: Vec<f64> = a.iter().map(|v| v + 0.3 * r.normal()).collect();
        let t = |v: &[f64]| Tensor::from_vec(v.iter().map(|&x| x as f32).collect::<Vec<_>>(), (n, d), &dev).unwrap();
        let got = vicreg(&t(&a), &t(&b)).unwrap();
        let s = |t: &Tensor| t.to_scalar::<f32>().unwrap() as f64;
        let inv: f64 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>() / (n * d) as f64;
        let vc = |z: &[f64]| {
            let mean: Vec<f64> = (0..d).map(|j| (0..n).map(|i| z[i * d + j]).sum::<f64>() / n as f64).collect();
            let c = |j: usize, k: usize| (0..n).map(|i| (z[i * d + j] - mean[j]) * (z[i * d + k] - mean[k])).sum::<f64>() / (n - 1) as f64;
            let v = (0..d).map(|j| (1.0 - (c(j, j) + 1e-4).sqrt()).max(0.0)).sum::<f64>() / d as f64;
            let off = (0..d).flat_map(|j| (0..d).map(move |k| (j, k))).filter(|(j, k)| j != k).map(|(j, k)| c(j, k).powi(2)).sum::<f64>() / d as f64;
            (v, off)
        };
        let ((va, ca), (vb, cb)) = (vc(&a), vc(&b));
        let (var, cov) = ((va + vb) / 2.0, ca + cb);
        assert!(var > 0.0 && cov > 0.0, "the test should exercise both hinges: {var} {cov}");
        let total = LAMBDA * inv + MU * var + NU * cov;
        // The composed ops and the CPU function.
        let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
        let (h, _) = vicreg_host(&[f32s(&a), f32s(&b)].concat(), n, d, None);
        for (what, got) in [("composed", [s(&got.invariance), s(&got.variance), s(&got.covariance), s(&got.loss)]), ("host", [h.invariance, h.variance, h.covariance, h.loss].map(|v| v as f64))] {
            for (name, g, w) in [("invariance", got[0], inv), ("variance", got[1], var), ("covariance", got[2], cov)] {
                assert!((g - w).abs() < 1e-5 * (1.0 + w.abs()), "{what} {name}: {g} vs {w}");
            }
            assert!((got[3] - total).abs() < 1e-4 * total, "{what}: {} vs {total}", got[3]);
        }
        // Collapse is penalised: identical constant embeddings have zero invariance but the full
        // variance hinge (std √ε, so 1 − 0.01 per dimension).
        let c = vicreg(&Tensor::ones((n, d), candle_core::DType::F32, &dev).unwrap(), &Tensor::ones((n, d), candle_core::DType::F32, &dev).unwrap()).unwrap();
        assert_eq!(s(&c.invariance), 0.0);
        assert!((s(&c.variance) - 0.99).abs() < 1e-6, "{}", s(&c.variance));
    }

    /// Embeddings `[2n, d]` whose columns have standard deviations on both sides of γ = 1 (so
    /// both branches of the variance hinge's gradient run) and correlated views.
    fn embeddings(n: usize, d: usize, r: &mut Rng) -> Vec<f32> {
        let a: Vec<f32> = (0..n * d).map(|i| (r.normal() * if (i % d).is_multiple_of(3) { 2.0 } else { 0.4 }) as f32).collect();
        let b: Vec<f32> = a.iter().map(|v| v + 0.3 * r.normal() as f32).collect();
        [a, b].concat()
    }

    /// The fused op against the composed ops: value and gradient (scaled by 3) on shapes that
    /// cut the row blocks unevenly, and the same bits for 1 and 3 threads.
    #[test]
    fn fused_vicreg_matches_the_composed_ops() {
        let dev = Device::Cpu;
        let mut r = Rng::stream(6, "z");
        for (n, d) in [(5, 3), (100, 70), (130, 129)] {
            let z = candle_core::Var::from_tensor(&Tensor::from_vec(embeddings(n, d, &mut r), (2 * n, d), &dev).unwrap()).unwrap();
            let fused = vicreg_of_embeddings(z.as_tensor()).unwrap();
            let comp = vicreg(&z.narrow(0, 0, n).unwrap(), &z.narrow(0, n, n).unwrap()).unwrap().loss;
            let (a, b) = (fused.to_scalar::<f32>().unwrap(), comp.to_scalar::<f32>().unwrap());
            assert!((a - b).abs() < 1e-5 * (1.0 + b.abs()), "{n}×{d}: {a} vs {b}");
            // Other dtypes (and devices) take the composed ops.
            let wide = vicreg_of_embeddings(&z.to_dtype(candle_core::DType::F64).unwrap()).unwrap().to_scalar::<f64>().unwrap();
            assert!((wide - b as f64).abs() < 1e-5 * (1.0 + wide.abs()), "{n}×{d}: f64 {wide} vs {b}");
            let ga = (fused * 3.0).unwrap().backward().unwrap().get(&z).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let gb = (comp * 3.0).unwrap().backward().unwrap().get(&z).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let scale = gb.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(scale > 0.0 && scale.is_finite());
            for (x, y) in ga.iter().zip(&gb) {
                assert!((x - y).abs() < 1e-4 * scale, "{n}×{d}: {x} vs {y}");
            }
            let run = |t: usize| {
                rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap().install(|| {
                    let l = vicreg_of_embeddings(z.as_tensor()).unwrap();
                    (l.to_scalar::<f32>().unwrap(), l.backward().unwrap().get(&z).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap())
                })
            };
            assert_eq!(run(1), run(3));
        }
    }

    /// The closed-form gradient against central differences of the loss computed in f64.
    #[test]
    fn vicreg_gradient_matches_finite_differences() {
        let mut r = Rng::stream(9, "z");
        let (n, d) = (6, 5);
        let z = embeddings(n, d, &mut r);
        // The loss in f64 from the definitions.
        let loss = |z: &[f64]| {
            let (z1, z2) = z.split_at(n * d);
            let inv = z1.iter().zip(z2).map(|(x, y)| (x - y).powi(2)).sum::<f64>() / (n * d) as f64;
            let vc = |v: &[f64]| {
                let mean: Vec<f64> = (0..d).map(|j| (0..n).map(|i| v[i * d + j]).sum::<f64>() / n as f64).collect();
                let c = |j: usize, k: usize| (0..n).map(|i| (v[i * d + j] - mean[j]) * (v[i * d + k] - mean[k])).sum::<f64>() / (n - 1) as f64;
                let var = (0..d).map(|j| (GAMMA - (c(j, j) + EPS).sqrt()).max(0.0)).sum::<f64>() / d as f64;
                let cov = (0..d).flat_map(|j| (0..d).map(move |k| (j, k))).filter(|(j, k)| j != k).map(|(j, k)| c(j, k).powi(2)).sum::<f64>() / d as f64;
                (var, cov)
            };
            let ((va, ca), (vb, cb)) = (vc(z1), vc(z2));
            LAMBDA * inv + MU * (va + vb) / 2.0 + NU * (ca + cb)
        };
        let (_, g) = vicreg_host(&z, n, d, Some(1.0));
        let g = g.unwrap();
        let z64: Vec<f64> = z.iter().map(|&v| v as f64).collect();
        let h = 1e-5;
        for i in 0..z.len() {
            let (mut up, mut down) = (z64.clone(), z64.clone());
            up[i] += h;
            down[i] -= h;
            let want = (loss(&up) - loss(&down)) / (2.0 * h);
            assert!((g[i] as f64 - want).abs() < 1e-3 * (1.0 + want.abs()), "∂L/∂z[{i}]: {} vs {want}", g[i]);
        }
    }

    /// The CPU step (encoder and expander by hand) against Candle's backward through the fused
    /// ops (same bits) and through the composed loss (same values within rounding), for both
    /// encoders; every parameter gets a non-zero gradient.
    #[test]
    fn host_step_matches_the_graph_and_the_composed_loss() {
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
            let head = VicReg::new(enc.feature_dim(), &mut p, &mut init, &dev).unwrap();
            let (lh, gh) = head.loss_and_grads_host(&enc, &a, &b, n).unwrap();
            let lg = head.loss(&enc, &at, &bt).unwrap();
            assert_eq!(lh, lg.to_scalar::<f32>().unwrap(), "{kind}");
            let gg = lg.backward().unwrap();
            let z = head.embed(&enc, &Tensor::cat(&[&at, &bt], 0).unwrap()).unwrap();
            let lc = vicreg(&z.narrow(0, 0, n).unwrap(), &z.narrow(0, n, n).unwrap()).unwrap().loss;
            assert!((lh - lc.to_scalar::<f32>().unwrap()).abs() < 1e-5 * lh.abs(), "{kind}");
            let gc = lc.backward().unwrap();
            for (name, v) in p.names().iter().zip(p.vars()) {
                let host = gh.get(v).unwrap_or_else(|| panic!("{kind}: no host gradient for {name}")).flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let graph = gg.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(host, graph, "{kind}: {name}");
                let comp = gc.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let scale = comp.iter().fold(0f32, |m, v| m.max(v.abs()));
                assert!(scale.is_finite(), "{kind}: {name}");
                if name == "expander.fc3.b" {
                    // The loss ignores a shift of both views' embeddings: this gradient is 0 up
                    // to rounding (the centring and the invariance term cancel).
                    assert!(host.iter().all(|v| v.abs() < 1e-5), "{kind}: {name}: {host:?}");
                    continue;
                }
                assert!(scale > 0.0 && host.iter().any(|&v| v != 0.0), "{kind}: {name} has a zero gradient");
                for (x, y) in host.iter().zip(&comp) {
                    assert!((x - y).abs() <= 1e-4 * scale.max(1e-3), "{kind}: {name}: {x} vs {y}");
                }
            }
        }
    }
}
