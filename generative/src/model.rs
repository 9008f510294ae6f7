//! What the density trainer needs from a model, and the stable Bernoulli log-likelihood.

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
