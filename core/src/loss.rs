//! Losses shared by the trainers.

use candle_core::Tensor;

/// −log Bernoulli(x; σ(z)) elementwise, in the stable form `max(z,0) − z·x + log(1 + e^{−|z|})`
/// (candle-nn's `binary_cross_entropy_with_logit` takes sigmoid then log and overflows).
pub fn bce_with_logits(z: &Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
    let softplus_tail = (z.abs()?.neg()?.exp()? + 1.0)?.log()?;
    (z.relu()? - (z * x)?)? + softplus_tail
}
