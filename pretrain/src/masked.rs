//! Masked prediction: hide part of each image and predict the hidden pixels from the rest.
//!
//! For an image x ∈ [0,1]^D, a mask m ∈ {0,1}^D (1 = hidden) hides `round(ratio · P)` of the
//! image's P square patches of side `patch` (patch 1: single pixels), chosen uniformly without
//! replacement per image — or, order-agnostic (Uria et al. 2014), the last P − d patches of a
//! random ordering with d ~ U{0, …, P−1}, so that every image hides a different number. The
//! masks are drawn by [`wick_core::mask`], shared with the order-agnostic density models
//! (MADE's orderings) and their completions. The encoder sees x̃ = x ⊙ (1 − m) (hidden pixels read as background, 0);
//! a decoder `F → 256 → D` (ReLU) turns its features into one logit z_d per pixel, and the loss is
//! the Bernoulli cross-entropy over the **hidden** pixels only:
//!
//! ```text
//! L = Σ_{b,d} m_bd · [max(z,0) − z·x + log(1 + e^{−|z|})]_bd  /  Σ_{b,d} m_bd
//! ```
//!
//! With order-agnostic masks each image's pixels are weighted by 1/Σ_d m_bd instead (the mean
//! over images of each one's mean over its own hidden pixels: Uria et al.'s D/(D − d) weighting,
//! up to the constant D), so that an image hiding few pixels counts as much as one hiding many.
//!
//! Why cross-entropy rather than squared error: the targets are intensities in [0,1] and on
//! these digits nearly all are at 0 or 1, so they are (soft) Bernoulli targets; BCE-with-logits
//! is their negative log-likelihood, its gradient σ(z) − x does not vanish when the prediction
//! saturates on the wrong side (MSE through a sigmoid does), and it is what the density models
//! of wick-generative minimise. It is the stable form (candle-nn's `binary_cross_entropy_with_logit`
//! overflows). This is the denoising/masked-autoencoder objective of Vincent et al. 2008 and
//! He et al. 2022 (MAE), the seed's "predict any part of the input from any observed part".

use crate::encoder::{Encoder, Linear};
use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};
use wick_core::params::Params;
use wick_core::rng::Rng;
use wick_core::Result;

const DECODER_HIDDEN: usize = 256;

pub use wick_core::mask::{Hide, MaskSpec};
pub use wick_core::loss::bce_with_logits;

/// The masked-prediction head: decoder parameters `decoder.*`.
pub struct MaskedPrediction {
    fc1: Linear,
    fc2: Linear,
}

impl MaskedPrediction {
    pub fn new(features: usize, dim: usize, params: &mut Params, rng: &mut Rng, dev: &Device) -> Result<MaskedPrediction> {
        Ok(MaskedPrediction {
            fc1: Linear::new("decoder.fc1", features, DECODER_HIDDEN, params, rng, dev)?,
            fc2: Linear::new("decoder.fc2", DECODER_HIDDEN, dim, params, rng, dev)?,
        })
    }

    /// Pixel logits `[B, D]` predicted from the visible part of `x` (mask `m`, 1 = hidden).
    pub fn logits(&self, enc: &Encoder, x: &Tensor, m: &Tensor) -> candle_core::Result<Tensor> {
        let visible = (x * (1.0 - m)?)?;
        let h = enc.forward(&visible)?;
        self.fc2.forward(&self.fc1.forward_relu(&h)?)
    }

    /// The loss L of the module docs, a scalar tensor.
    pub fn loss(&self, enc: &Encoder, x: &Tensor, m: &Tensor) -> candle_core::Result<Tensor> {
        self.loss_weighted(enc, x, m, m)
    }

    /// `Σ w·bce / Σ w` with the input hidden by `m`: weights `w` zero where `m` is (e.g.
    /// `m_bd / Σ_d m_bd`, every image's mean over its own hidden pixels, for masks whose hidden
    /// count varies between images).
    pub fn loss_weighted(&self, enc: &Encoder, x: &Tensor, m: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
        let z = self.logits(enc, x, m)?;
        masked_bce(&z, x, w)
    }

    /// L and the gradient of every parameter of `enc` and the decoder for `n` images `x` and
    /// masks `m` (host values), computed by hand on the CPU ([`crate::host`]): the same values
    /// as `loss(..).backward()` through the fused ops, without Candle's autograd.
    pub fn loss_and_grads_host(&self, enc: &Encoder, x: &[f32], m: &[f32], n: usize) -> Result<(f32, GradStore)> {
        // Σm is an integer below 2^24: exact in f32 whatever the order of summation.
        let count: f32 = m.iter().sum();
        self.loss_and_grads_host_over(enc, x, m, n, (count as f64).max(1e-30))
    }

    /// As [`MaskedPrediction::loss_and_grads_host`] with the sum over hidden pixels divided by
    /// `denom` instead of this batch's Σm: a micro-batch's part of a larger batch's loss.
    pub fn loss_and_grads_host_over(&self, enc: &Encoder, x: &[f32], m: &[f32], n: usize, denom: f64) -> Result<(f32, GradStore)> {
        let mut layers = enc.host_layers();
        layers.push(crate::host::HostLayer { w: &self.fc1.w, b: &self.fc1.b, relu: true, conv: None });
        layers.push(crate::host::HostLayer { w: &self.fc2.w, b: &self.fc2.b, relu: false, conv: None });
        let visible: Vec<f32> = x.iter().zip(m).map(|(&x, &m)| x * (1.0 - m)).collect();
        let (z, tape) = crate::host::forward(&layers, visible, n)?;
        // One pass for the loss terms and ∂L/∂z (the same values as the two functions below).
        let (terms, g) = bce_terms_and_grad(&z, x, Some((1.0 / denom) as f32));
        let loss = (masked_sum(&terms, m).0 / denom) as f32;
        let dz = masked_grad(g, m);
        let mut grads = GradStore::default();
        crate::host::backward(&layers, &tape, dz, &mut grads)?;
        Ok((loss, grads))
    }
}

/// The value of [`masked_bce`] on host buffers (sum in f64).
pub fn masked_bce_host(z: &[f32], x: &[f32], m: &[f32]) -> f32 {
    let (sum, count) = masked_bce_sum_host(z, x, m);
    (sum / count.max(1e-30)) as f32
}

/// Per element the Bernoulli term −log p(x | z) and, with a scale s, `(σ(z) − x)·s`
/// ([`wick_core::loss::bce_terms_host`]: vectorised, the same bits on every instruction set),
/// in parallel chunks (elementwise, so the chunking changes nothing).
fn bce_terms_and_grad(z: &[f32], x: &[f32], scale: Option<f32>) -> (Vec<f32>, Vec<f32>) {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 14;
    let (mut terms, mut g) = (vec![0f32; z.len()], z.to_vec());
    g.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).zip(terms.par_chunks_mut(CHUNK)).for_each(|((g, x), t)| {
        wick_core::loss::bce_terms_host(g, x, t, scale);
    });
    (terms, g)
}

/// `(Σ m·bce, Σ m)` of the terms, summed in f64 in order.
fn masked_sum(terms: &[f32], m: &[f32]) -> (f64, f64) {
    let (mut sum, mut count) = (0f64, 0f64);
    for (&t, &m) in terms.iter().zip(m) {
        if m != 0.0 {
            sum += (m * t) as f64;
            count += m as f64;
        }
    }
    (sum, count)
}

/// `(Σ m·bce, Σ m)` on host buffers, summed in f64 in order.
fn masked_bce_sum_host(z: &[f32], x: &[f32], m: &[f32]) -> (f64, f64) {
    masked_sum(&bce_terms_and_grad(z, x, None).0, m)
}

/// `(σ(z) − x) · scale · m`, elementwise.
fn masked_bce_grad_host(z: &[f32], x: &[f32], m: &[f32], scale: f64) -> Vec<f32> {
    masked_grad(bce_terms_and_grad(z, x, Some(scale as f32)).1, m)
}

fn masked_grad(mut g: Vec<f32>, m: &[f32]) -> Vec<f32> {
    for (g, &m) in g.iter_mut().zip(m) {
        *g = if m == 0.0 { 0.0 } else { *g * m };
    }
    g
}

/// `Σ m·bce(z, x) / Σ m` for logits `z`, targets `x` and a 0/1 mask `m` of the same shape.
///
/// On the CPU one fused op (forward summed in f64; backward `(σ(z) − x)·m·g/Σm` in one pass),
/// instead of a dozen elementwise ops and their backwards; elsewhere the composed ops.
pub fn masked_bce(z: &Tensor, x: &Tensor, m: &Tensor) -> candle_core::Result<Tensor> {
    let f32s = [z, x, m].iter().all(|t| t.dtype() == candle_core::DType::F32);
    if z.device().is_cpu() && f32s && z.dims() == x.dims() && z.dims() == m.dims() {
        z.contiguous()?.apply_op3(&x.contiguous()?, &m.contiguous()?, MaskedBce)
    } else {
        (bce_with_logits(z, x)? * m)?.sum_all()?.broadcast_div(&m.sum_all()?)
    }
}

struct MaskedBce;

impl candle_core::CustomOp3 for MaskedBce {
    fn name(&self) -> &'static str {
        "wick-masked-bce"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
        s3: &candle_core::CpuStorage,
        l3: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use wick_core::cpu::f32_slice;
        let (z, x, m) = (f32_slice(s1, l1, "logits")?, f32_slice(s2, l2, "targets")?, f32_slice(s3, l3, "mask")?);
        Ok((candle_core::CpuStorage::F32(vec![masked_bce_host(z, x, m)]), candle_core::Shape::from(())))
    }

    fn bwd(&self, z: &Tensor, x: &Tensor, m: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let count = m.sum_all()?.to_scalar::<f32>()? as f64;
        let scale = g.to_scalar::<f32>()? as f64 / count.max(1e-30);
        let dz = z.apply_op3_no_bwd(x, m, &MaskedBceGrad { scale })?;
        Ok((Some(dz), None, None))
    }
}

/// `(σ(z) − x) · m · scale`, elementwise.
struct MaskedBceGrad {
    scale: f64,
}

impl candle_core::CustomOp3 for MaskedBceGrad {
    fn name(&self) -> &'static str {
        "wick-masked-bce-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
        s3: &candle_core::CpuStorage,
        l3: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use wick_core::cpu::f32_slice;
        let (z, x, m) = (f32_slice(s1, l1, "logits")?, f32_slice(s2, l2, "targets")?, f32_slice(s3, l3, "mask")?);
        Ok((candle_core::CpuStorage::F32(masked_bce_grad_host(z, x, m, self.scale)), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::EncoderKind;

    /// The hand-driven CPU step equals Candle's backward through the fused ops bit for bit, for
    /// both encoders, and every parameter gets a non-zero gradient.
    #[test]
    fn host_step_matches_the_graph() {
        let dev = Device::Cpu;
        let mut r = Rng::stream(3, "x");
        let (n, side) = (5, 8);
        let x: Vec<f32> = (0..n * side * side).map(|_| r.uniform() as f32).collect();
        let spec = MaskSpec { height: side, width: side, patch: 2, hide: Hide::Ratio(0.5) };
        let m = spec.draw(n, &mut r);
        let (xt, mt) = (Tensor::from_vec(x.clone(), (n, side * side), &dev).unwrap(), Tensor::from_vec(m.clone(), (n, side * side), &dev).unwrap());
        for kind in [EncoderKind::Mlp, EncoderKind::Cnn] {
            let mut p = Params::new();
            let mut init = Rng::stream(1, "init");
            let enc = Encoder::new(kind, side, side, &mut p, &mut init, &dev).unwrap();
            let head = MaskedPrediction::new(enc.feature_dim(), side * side, &mut p, &mut init, &dev).unwrap();
            assert!(crate::host::available(&enc, &dev));
            let (lh, gh) = head.loss_and_grads_host(&enc, &x, &m, n).unwrap();
            let lg = head.loss(&enc, &xt, &mt).unwrap();
            assert_eq!(lh, lg.to_scalar::<f32>().unwrap(), "{kind}");
            let gg = lg.backward().unwrap();
            for (name, v) in p.names().iter().zip(p.vars()) {
                let host = gh.get(v).unwrap_or_else(|| panic!("{kind}: no host gradient for {name}")).flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(host, gg.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), "{kind}: {name}");
                assert!(host.iter().any(|&g| g != 0.0) && host.iter().all(|g| g.is_finite()), "{kind}: {name}");
            }
        }
    }

    #[test]
    fn fused_masked_bce_matches_the_composed_ops_in_value_and_gradient() {
        let dev = Device::Cpu;
        let mut r = Rng::stream(2, "bce");
        let z = candle_core::Var::from_tensor(&Tensor::from_vec((0..40).map(|_| (r.normal() * 5.0) as f32).collect::<Vec<_>>(), (4, 10), &dev).unwrap()).unwrap();
        let x = Tensor::from_vec((0..40).map(|_| r.uniform() as f32).collect::<Vec<_>>(), (4, 10), &dev).unwrap();
        let m = Tensor::from_vec((0..40).map(|i| (i % 3 == 0) as u8 as f32).collect::<Vec<_>>(), (4, 10), &dev).unwrap();
        let fused = masked_bce(z.as_tensor(), &x, &m).unwrap();
        let composed = (bce_with_logits(z.as_tensor(), &x).unwrap() * &m).unwrap().sum_all().unwrap().broadcast_div(&m.sum_all().unwrap()).unwrap();
        let (a, b) = (fused.to_scalar::<f32>().unwrap(), composed.to_scalar::<f32>().unwrap());
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        let ga = (fused * 3.0).unwrap().backward().unwrap().get(&z).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let gb = (composed * 3.0).unwrap().backward().unwrap().get(&z).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (p, q) in ga.iter().zip(&gb) {
            assert!((p - q).abs() < 1e-6, "{p} vs {q}");
        }
    }

    /// Changing a visible pixel's target does not change the loss; changing a hidden one does.
    #[test]
    fn the_loss_counts_only_hidden_pixels() {
        let dev = Device::Cpu;
        let mut p = Params::new();
        let mut r = Rng::stream(3, "init");
        let enc = Encoder::new(EncoderKind::Mlp, 4, 4, &mut p, &mut r, &dev).unwrap();
        let head = MaskedPrediction::new(enc.feature_dim(), 16, &mut p, &mut r, &dev).unwrap();
        let xv: Vec<f32> = (0..2 * 16).map(|i| (i % 3) as f32 / 2.0).collect();
        let mv: Vec<f32> = (0..2 * 16).map(|i| (i % 2) as f32).collect();
        let m = Tensor::from_vec(mv.clone(), (2, 16), &dev).unwrap();
        let loss = |xv: &[f32]| {
            let x = Tensor::from_vec(xv.to_vec(), (2, 16), &dev).unwrap();
            head.loss(&enc, &x, &m).unwrap().to_scalar::<f32>().unwrap()
        };
        let base = loss(&xv);
        // The loss is the mean BCE over the hidden pixels, computed by hand.
        let x = Tensor::from_vec(xv.clone(), (2, 16), &dev).unwrap();
        let z = head.logits(&enc, &x, &m).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut s = 0f64;
        for i in 0..32 {
            if mv[i] == 1.0 {
                let (z, t) = (z[i] as f64, xv[i] as f64);
                s += z.max(0.0) - z * t + (-z.abs()).exp().ln_1p();
            }
        }
        assert!((base as f64 - s / 16.0).abs() < 1e-5, "{base} vs {}", s / 16.0);
        // A hidden pixel's value is invisible to the encoder: changing it changes only its target.
        let mut changed = xv.clone();
        changed[3] = 1.0 - changed[3];
        assert_ne!(loss(&changed), base);
        // The gradient with respect to the logits of visible pixels is zero.
        let zv = candle_core::Var::from_tensor(&Tensor::from_vec(z.clone(), (2, 16), &dev).unwrap()).unwrap();
        let l = (bce_with_logits(zv.as_tensor(), &x).unwrap() * &m).unwrap().sum_all().unwrap();
        let g = l.backward().unwrap().get(&zv).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for i in 0..32 {
            assert_eq!(g[i] == 0.0, mv[i] == 0.0, "pixel {i}");
        }
    }
}
