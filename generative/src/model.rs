//! What the density trainer needs from a model, and the stable Bernoulli log-likelihood.

use candle_core::backprop::GradStore;
use wick_core::cpu::f32_slice;
use candle_core::Tensor;
use wick_core::{params::Params, rng::Rng, Result};

/// An autoregressive density over binary vectors x ∈ {0,1}^D.
pub trait DensityModel {
    fn dim(&self) -> usize;
    fn params(&self) -> &Params;
    /// −log p(x) in nats for each row of `x` `[B, D]`: shape `[B]`. For evaluation: it need
    /// not be differentiable (FVSBN and MADE compute it with host kernels on the CPU); use
    /// `train_nll` for autograd.
    fn nll(&self, x: &Tensor) -> Result<Tensor>;
    /// `n` samples, row-major `n × D`, by ancestral sampling. With `observed = (values, mask)`
    /// (values `n × D`, mask `D`), masked dimensions are clamped to the given values and the
    /// rest sampled given them: completion of partly observed inputs.
    fn sample(&self, n: usize, rng: &mut Rng, observed: Option<(&[f32], &[bool])>) -> Result<Vec<f32>>;
    /// The per-example NLL that training step `step` minimises (MADE: one mask set, chosen by
    /// the step), differentiable with Candle's autograd; by default the model's own `nll`.
    fn train_nll(&self, x: &Tensor, step: u64) -> Result<Tensor> {
        let _ = step;
        self.nll(x)
    }
    /// Mean training loss over the batch and its gradients with respect to the parameters.
    /// By default Candle's autograd on `train_nll`; a model may give them in closed form.
    fn loss_and_grads(&self, x: &Tensor, step: u64) -> Result<(f64, GradStore)> {
        let loss = self.train_nll(x, step)?.mean_all()?;
        let value = loss.to_scalar::<f32>()? as f64;
        Ok((value, loss.backward()?))
    }
    /// [`DensityModel::loss_and_grads`] with one key per row of `x`, unique per (epoch, training
    /// example): a model whose training draws per-example randomness (order-agnostic NADE's
    /// masks) draws it from the key, so it does not depend on the batch split. By default the
    /// keys are ignored.
    fn loss_and_grads_keyed(&self, x: &Tensor, step: u64, keys: &[u64]) -> Result<(f64, GradStore)> {
        let _ = keys;
        self.loss_and_grads(x, step)
    }
    /// [`DensityModel::loss_and_grads_keyed`] with the gradients written straight into `flat`
    /// (P f32s: the parameters in sorted-name order, as the data-parallel combine lays them
    /// out; its old contents are overwritten) where the model can, returning `None` for the
    /// gradients then; by default they are returned and `flat` is left alone. The same values
    /// either way.
    fn loss_and_grads_flat(&self, x: &Tensor, step: u64, keys: &[u64], flat: &mut [f32]) -> Result<(f64, Option<GradStore>)> {
        let _ = flat;
        let (loss, grads) = self.loss_and_grads_keyed(x, step, keys)?;
        Ok((loss, Some(grads)))
    }
    /// Where [`DensityModel::loss_and_grads_laid`] writes the gradients of step `step`, if the
    /// model has a layout of its own for them (MADE on the CPU: its staircases' sorted order);
    /// `None` (the default): it has none and writes in parameter order.
    fn grad_layout(&self, step: u64) -> Option<wick_core::dist::GradLayout> {
        let _ = step;
        None
    }
    /// [`DensityModel::loss_and_grads_flat`], with the gradients written in the layout that
    /// [`DensityModel::grad_layout`] gives for `step` (or returned, as there, where the model
    /// cannot write them itself). By default the same as `loss_and_grads_flat`.
    fn loss_and_grads_laid(&self, x: &Tensor, step: u64, keys: &[u64], flat: &mut [f32]) -> Result<(f64, Option<GradStore>)> {
        self.loss_and_grads_flat(x, step, keys, flat)
    }
    /// The figure early stopping compares after each epoch when it is not the exact mean NLL
    /// of the valid split: `Some(estimate)` (order-agnostic NADE with `--valid estimate`), else
    /// `None` and the trainer computes the exact one.
    fn selection_nll(&self, x: &Tensor) -> Result<Option<f64>> {
        let _ = x;
        Ok(None)
    }
    /// Non-trainable tensors worth saving beside the parameters (MADE's masks and orderings).
    fn buffers(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(Vec::new())
    }
}

pub use wick_core::loss::bce_with_logits;

/// −log p(x) per row, `Σ_d bce(z_bd, x_bd)` `[B]`, from logits `z` `[B, D]`.
///
/// On the CPU a fused op: one pass forward (the stable form, summed in f64), and a closed-form
/// backward `∂/∂z = (σ(z) − x) · g_b` computed contiguously. (Composed Candle ops route the
/// backward through broadcast, strided tensors and are several times slower.) Elsewhere the
/// composed ops.
pub fn bce_rows(z: &Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
    if z.device().is_cpu() && z.dtype() == candle_core::DType::F32 && x.dtype() == candle_core::DType::F32 && z.dims() == x.dims() && z.rank() == 2 {
        z.contiguous()?.apply_op2(&x.contiguous()?, BceRows)
    } else {
        bce_with_logits(z, x)?.sum(1)
    }
}

/// `w ⊙ m` for a constant 0/1 mask `m`, with gradient `g ⊙ m` for `w` only. On the CPU a fused
/// op (Candle's generic multiply spends most of a masked layer's backward on the mask); elsewhere
/// the composed product.
pub fn masked(w: &Tensor, m: &Tensor) -> candle_core::Result<Tensor> {
    if w.device().is_cpu() && w.dtype() == candle_core::DType::F32 && m.dtype() == candle_core::DType::F32 && w.dims() == m.dims() {
        w.contiguous()?.apply_op2(&m.contiguous()?, Masked)
    } else {
        w * m
    }
}

struct Masked;

impl candle_core::CustomOp2 for Masked {
    fn name(&self) -> &'static str {
        "wick-masked"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (w, m) = (f32_slice(s1, l1, "masked weights")?, f32_slice(s2, l2, "mask")?);
        let out: Vec<f32> = w.iter().zip(m).map(|(&w, &m)| w * m).collect();
        Ok((candle_core::CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(&self, _w: &Tensor, m: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(masked(g, m)?.detach()), None))
    }
}

struct BceRows;

impl candle_core::CustomOp2 for BceRows {
    fn name(&self) -> &'static str {
        "wick-bce-rows"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (z, x) = (f32_slice(s1, l1, "bce logits")?, f32_slice(s2, l2, "bce targets")?);
        let (rows, d) = l1.shape().dims2()?;
        let out: Vec<f32> = (0..rows)
            .map(|r| {
                let (zr, xr) = (&z[r * d..(r + 1) * d], &x[r * d..(r + 1) * d]);
                let s: f64 = zr.iter().zip(xr).map(|(&z, &x)| (z.max(0.0) - z * x + (-z.abs()).exp().ln_1p()) as f64).sum();
                s as f32
            })
            .collect();
        Ok((candle_core::CpuStorage::F32(out), candle_core::Shape::from(rows)))
    }

    fn bwd(&self, z: &Tensor, x: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.unsqueeze(1)?.broadcast_as(z.shape())?.contiguous()?;
        let dz = ((candle_nn::ops::sigmoid(z)? - x)? * g)?;
        Ok((Some(dz), None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn stable_bce_matches_the_definition_and_survives_large_logits() {
        let z = Tensor::new(&[-3.0f32, 0.0, 2.5, 80.0, -80.0], &Device::Cpu).unwrap();
        let x = Tensor::new(&[1.0f32, 0.0, 1.0, 0.0, 0.0], &Device::Cpu).unwrap();
        let got = bce_with_logits(&z, &x).unwrap().to_vec1::<f32>().unwrap();
        let want = |z: f64, x: f64| -(x * (1.0 / (1.0 + (-z).exp())).ln() + (1.0 - x) * (1.0 / (1.0 + z.exp())).ln());
        for (i, (&zz, &xx)) in [-3.0, 0.0, 2.5].iter().zip(&[1.0, 0.0, 1.0]).enumerate() {
            assert!((got[i] as f64 - want(zz, xx)).abs() < 1e-6);
        }
        assert!((got[3] - 80.0).abs() < 1e-4 && got[4].abs() < 1e-6, "{got:?}");
    }

    #[test]
    fn fused_rows_match_composed_values_and_gradients() {
        let dev = Device::Cpu;
        let mut r = Rng::stream(1, "bce");
        let zv: Vec<f32> = (0..6 * 5).map(|_| (r.normal() * 4.0) as f32).collect();
        let xv: Vec<f32> = (0..6 * 5).map(|_| (r.uniform() < 0.5) as u8 as f32).collect();
        let x = Tensor::from_vec(xv, (6, 5), &dev).unwrap();
        let z = candle_core::Var::from_tensor(&Tensor::from_vec(zv, (6, 5), &dev).unwrap()).unwrap();
        let w = Tensor::new(&[0.5f32, -1.0, 2.0, 0.0, 1.0, 3.0], &dev).unwrap();
        let fused = bce_rows(z.as_tensor(), &x).unwrap();
        let composed = bce_with_logits(z.as_tensor(), &x).unwrap().sum(1).unwrap();
        let (a, b) = (fused.to_vec1::<f32>().unwrap(), composed.to_vec1::<f32>().unwrap());
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() < 1e-5, "{p} vs {q}");
        }
        let ga = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (composed * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let (ga, gb) = (ga.get(&z).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), gb.get(&z).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap());
        for (p, q) in ga.iter().zip(&gb) {
            assert!((p - q).abs() < 1e-5, "{p} vs {q}");
        }
    }
}

#[cfg(test)]
mod normalisation {
    use super::*;
    use crate::made::{Made, Order};
    use crate::{Fvsbn, Nade};
    use candle_core::Device;
    use wick_core::optim::{OptimConfig, Optimizer};

    /// Every binary vector of length d, as a `[2^d, d]` tensor.
    fn all_vectors(d: usize) -> Tensor {
        let v: Vec<f32> = (0..1usize << d).flat_map(|i| (0..d).map(move |j| ((i >> j) & 1) as f32)).collect();
        Tensor::from_vec(v, (1 << d, d), &Device::Cpu).unwrap()
    }

    fn total_probability(m: &dyn DensityModel) -> f64 {
        let nll = m.nll(&all_vectors(m.dim())).unwrap().to_vec1::<f32>().unwrap();
        nll.iter().map(|&v| (-(v as f64)).exp()).sum()
    }

    /// A few optimizer steps on random data so the check also covers non-initial weights.
    fn train_a_little(m: &dyn DensityModel) {
        let d = m.dim();
        let mut rng = Rng::stream(5, "data");
        let x: Vec<f32> = (0..64 * d).map(|_| (rng.uniform() < 0.3) as u8 as f32).collect();
        let x = Tensor::from_vec(x, (64, d), &Device::Cpu).unwrap();
        let mut opt = Optimizer::new(OptimConfig { lr: 0.05, ..OptimConfig::default() }, m.params()).unwrap();
        for step in 0..30 {
            let loss = m.train_nll(&x, step).unwrap().mean_all().unwrap();
            let g = loss.backward().unwrap();
            opt.step(m.params(), &g, 0.05).unwrap();
        }
    }

    #[test]
    fn completion_keeps_the_observed_values() {
        let dev = Device::Cpu;
        let d = 12;
        let models: Vec<Box<dyn DensityModel>> = vec![
            Box::new(Fvsbn::new(d, &mut Rng::stream(1, "init"), &dev).unwrap()),
            Box::new(Nade::new(d, 5, &mut Rng::stream(1, "init"), &dev).unwrap()),
            Box::new(Made::new(d, 16, 2, 3, Order::Random, true, 1, &dev).unwrap()),
            Box::new(Made::new(d, 16, 1, 2, Order::Random, true, 1, &dev).unwrap().with_direct(true).unwrap()),
            Box::new(crate::OaNade::new(d, 16, 2, 3, 1, &dev).unwrap()),
        ];
        let mask: Vec<bool> = (0..d).map(|i| i % 3 != 1).collect();
        let mut r = Rng::stream(9, "vals");
        let vals: Vec<f32> = (0..5 * d).map(|_| (r.uniform() < 0.5) as u8 as f32).collect();
        for m in models {
            let out = m.sample(5, &mut Rng::stream(2, "s"), Some((&vals, &mask))).unwrap();
            for i in 0..5 * d {
                assert!(out[i] == 0.0 || out[i] == 1.0);
                if mask[i % d] {
                    assert_eq!(out[i], vals[i]);
                }
            }
            let a = m.sample(5, &mut Rng::stream(3, "s"), None).unwrap();
            assert_eq!(a, m.sample(5, &mut Rng::stream(3, "s"), None).unwrap(), "sampling is seeded");
        }
    }

    #[test]
    fn probabilities_of_all_vectors_sum_to_one() {
        let dev = Device::Cpu;
        let d = 10;
        let models: Vec<(&str, Box<dyn DensityModel>)> = vec![
            ("fvsbn", Box::new(Fvsbn::new(d, &mut Rng::stream(1, "init"), &dev).unwrap())),
            ("nade", Box::new(Nade::new(d, 7, &mut Rng::stream(1, "init"), &dev).unwrap())),
            ("made", Box::new(Made::new(d, 16, 1, 1, Order::Natural, false, 1, &dev).unwrap())),
            ("made-2layer-random", Box::new(Made::new(d, 16, 2, 1, Order::Random, false, 2, &dev).unwrap())),
            ("made-k4-order-agnostic", Box::new(Made::new(d, 16, 2, 4, Order::Natural, true, 3, &dev).unwrap())),
            ("made-k3-direct", Box::new(Made::new(d, 16, 1, 3, Order::Random, true, 5, &dev).unwrap().with_direct(true).unwrap())),
            ("oanade-2layer-k3", Box::new(crate::OaNade::new(d, 16, 2, 3, 4, &dev).unwrap())),
        ];
        for (name, m) in models {
            let before = total_probability(&*m);
            assert!((before - 1.0).abs() < 1e-5, "{name} untrained: Σp = {before}");
            train_a_little(&*m);
            let after = total_probability(&*m);
            assert!((after - 1.0).abs() < 1e-5, "{name} trained: Σp = {after}");
        }
    }
}
