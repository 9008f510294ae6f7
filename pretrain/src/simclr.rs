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

use crate::encoder::{Encoder, Linear};
use candle_core::{Device, Tensor, D};
use wick_core::params::Params;
use wick_core::rng::Rng;
use wick_core::Result;

const PROJ_HIDDEN: usize = 256;
const PROJ_OUT: usize = 128;

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
        let z = self.project(enc, &Tensor::cat(&[a, b], 0)?)?;
        nt_xent(&z, temperature)
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

#[cfg(test)]
mod tests {
    use super::*;

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
