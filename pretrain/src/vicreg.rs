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
//! Var is the unbiased variance over the batch. The off-diagonal sum is Σ_{j,k} C_jk² − Σ_j C_jj²
//! (C_jj = Var(z_·j)), so no mask is needed. Every op is composed Candle ops with a backward.

use crate::encoder::{Encoder, Linear};
use candle_core::{Device, Tensor};
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

    /// The VICReg loss of the two views `a`, `b` `[n, D]` (row i of each is the same image).
    pub fn loss(&self, enc: &Encoder, a: &Tensor, b: &Tensor) -> candle_core::Result<VicRegLoss> {
        let n = a.dim(0)?;
        // One pass through the encoder and expander for both views.
        let z = self.embed(enc, &Tensor::cat(&[a, b], 0)?)?;
        vicreg(&z.narrow(0, 0, n)?, &z.narrow(0, n, n)?)
    }
}

/// The VICReg loss of embeddings `z1`, `z2` `[n, d]` (see the module docs).
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
        for (name, g, w) in [("invariance", s(&got.invariance), inv), ("variance", s(&got.variance), var), ("covariance", s(&got.covariance), cov)] {
            assert!((g - w).abs() < 1e-5 * (1.0 + w.abs()), "{name}: {g} vs {w}");
        }
        let total = LAMBDA * inv + MU * var + NU * cov;
        assert!((s(&got.loss) - total).abs() < 1e-4 * total, "{} vs {total}", s(&got.loss));
        // Collapse is penalised: identical constant embeddings have zero invariance but the full
        // variance hinge (std √ε, so 1 − 0.01 per dimension).
        let c = vicreg(&Tensor::ones((n, d), candle_core::DType::F32, &dev).unwrap(), &Tensor::ones((n, d), candle_core::DType::F32, &dev).unwrap()).unwrap();
        assert_eq!(s(&c.invariance), 0.0);
        assert!((s(&c.variance) - 0.99).abs() < 1e-6, "{}", s(&c.variance));
    }
}
