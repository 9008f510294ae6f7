//! What the density trainer needs from a model, and the stable Bernoulli log-likelihood.

use candle_core::backprop::GradStore;
use candle_core::Tensor;
use wick_core::{params::Params, rng::Rng, Result};

/// An autoregressive density over binary vectors x ∈ {0,1}^D.
pub trait DensityModel {
    fn dim(&self) -> usize;
    fn params(&self) -> &Params;
    /// −log p(x) in nats for each row of `x` `[B, D]`: shape `[B]`.
    fn nll(&self, x: &Tensor) -> Result<Tensor>;
    /// `n` samples, row-major `n × D`, by ancestral sampling. With `observed = (values, mask)`
    /// (values `n × D`, mask `D`), masked dimensions are clamped to the given values and the
    /// rest sampled given them: completion of partly observed inputs.
    fn sample(&self, n: usize, rng: &mut Rng, observed: Option<(&[f32], &[bool])>) -> Result<Vec<f32>>;
    /// The per-example NLL that training step `step` minimises (MADE: one mask set, chosen by
    /// the step); by default the model's own `nll`.
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
    /// Non-trainable tensors worth saving beside the parameters (MADE's masks and orderings).
    fn buffers(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(Vec::new())
    }
}

/// −log Bernoulli(x; σ(z)) elementwise, in the stable form `max(z,0) − z·x + log(1 + e^{−|z|})`
/// (candle-nn's `binary_cross_entropy_with_logit` takes sigmoid then log and overflows).
pub fn bce_with_logits(z: &Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
    let softplus_tail = (z.abs()?.neg()?.exp()? + 1.0)?.log()?;
    (z.relu()? - (z * x)?)? + softplus_tail
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
    fn probabilities_of_all_vectors_sum_to_one() {
        let dev = Device::Cpu;
        let d = 10;
        let models: Vec<(&str, Box<dyn DensityModel>)> = vec![
            ("fvsbn", Box::new(Fvsbn::new(d, &mut Rng::stream(1, "init"), &dev).unwrap())),
            ("nade", Box::new(Nade::new(d, 7, &mut Rng::stream(1, "init"), &dev).unwrap())),
            ("made", Box::new(Made::new(d, 16, 1, 1, Order::Natural, false, 1, &dev).unwrap())),
            ("made-2layer-random", Box::new(Made::new(d, 16, 2, 1, Order::Random, false, 2, &dev).unwrap())),
            ("made-k4-order-agnostic", Box::new(Made::new(d, 16, 2, 4, Order::Natural, true, 3, &dev).unwrap())),
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
