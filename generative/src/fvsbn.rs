//! Fully visible sigmoid belief network (Neal 1992; Frey 1998).
//!
//! Logistic regression of each dimension on the ones before it:
//!
//! ```text
//! p(x_d = 1 | x_<d) = σ(b_d + Σ_{j<d} W_dj x_j)        log p(x) = Σ_d log p(x_d | x_<d)
//! ```
//!
//! All D conditionals come from one masked matrix product, `z = x (W ⊙ M)ᵀ + b` with
//! `M_dj = 1[j < d]`. Checkpoint tensors: `fvsbn.w` `[D, D]` (strictly lower triangular: the
//! entries on and above the diagonal start at zero and get no gradient, so they stay zero) and
//! `fvsbn.b` `[D]`. In numpy: `z = x @ w.T + b; log p(x) = -(max(z,0) - z*x + log1p(exp(-|z|))).sum(1)`.

use crate::model::{bce_rows, masked, DensityModel};
use candle_core::{backprop::GradStore, Device, Tensor};
use wick_core::{params::Params, rng::Rng, Result};

pub struct Fvsbn {
    dim: usize,
    params: Params,
    w: Tensor,
    b: Tensor,
    mask: Tensor,
}

impl Fvsbn {
    /// W's lower triangle ~ U(±1/√D) (PyTorch's nn.Linear default), b = 0.
    pub fn new(dim: usize, rng: &mut Rng, device: &Device) -> Result<Fvsbn> {
        let bound = 1.0 / (dim as f64).sqrt();
        let mut w = vec![0f32; dim * dim];
        for d in 0..dim {
            for j in 0..d {
                w[d * dim + j] = ((2.0 * rng.uniform() - 1.0) * bound) as f32;
            }
        }
        let mut params = Params::new();
        let w = params.add("fvsbn.w", &[dim, dim], w, device)?;
        let b = params.zeros("fvsbn.b", &[dim], device)?;
        let m: Vec<f32> = (0..dim * dim).map(|i| if i % dim < i / dim { 1.0 } else { 0.0 }).collect();
        let mask = Tensor::from_vec(m, (dim, dim), device)?;
        Ok(Fvsbn { dim, params, w, b, mask })
    }

    /// The logits z `[B, D]` of all conditionals.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let wm = masked(&self.w, &self.mask)?;
        Ok(x.matmul(&wm.t()?)?.broadcast_add(&self.b)?)
    }
}

impl DensityModel for Fvsbn {
    fn dim(&self) -> usize {
        self.dim
    }

    fn params(&self) -> &Params {
        &self.params
    }

    fn nll(&self, x: &Tensor) -> Result<Tensor> {
        Ok(bce_rows(&self.logits(x)?, x)?)
    }

    /// Closed form (logistic regression): with the mean loss over B rows,
    /// `∂L/∂z = (σ(z) − x)/B`, `∂L/∂W = (∂L/∂zᵀ x) ⊙ M`, `∂L/∂b = Σ_rows ∂L/∂z`:
    /// two matrix products and no autograd graph.
    fn loss_and_grads(&self, x: &Tensor, _step: u64) -> Result<(f64, GradStore)> {
        let (w, b) = (self.w.detach(), self.b.detach());
        let z = x.matmul(&w.t()?)?.broadcast_add(&b)?;
        let rows = x.dim(0)? as f64;
        let loss = (bce_rows(&z, x)?.sum_all()?.to_scalar::<f32>()? as f64) / rows;
        let dz = ((candle_nn::ops::sigmoid(&z)? - x)? / rows)?;
        let dw = (dz.t()?.matmul(x)? * &self.mask)?;
        let db = dz.sum(0)?;
        let mut grads = GradStore::default();
        grads.insert(&self.w, dw);
        grads.insert(&self.b, db);
        Ok((loss, grads))
    }

    fn sample(&self, n: usize, rng: &mut Rng, observed: Option<(&[f32], &[bool])>) -> Result<Vec<f32>> {
        let d = self.dim;
        let w = self.w.flatten_all()?.to_vec1::<f32>()?;
        let b = self.b.to_vec1::<f32>()?;
        let mut out = vec![0f32; n * d];
        for s in 0..n {
            let x = &mut out[s * d..(s + 1) * d];
            for i in 0..d {
                if let Some((vals, mask)) = observed {
                    if mask[i] {
                        x[i] = vals[s * d + i];
                        continue;
                    }
                }
                let z = b[i] + (0..i).map(|j| w[i * d + j] * x[j]).sum::<f32>();
                let p = 1.0 / (1.0 + (-z as f64).exp());
                x[i] = if rng.uniform() < p { 1.0 } else { 0.0 };
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_form_gradients_equal_autograd() {
        let dev = Device::Cpu;
        let m = Fvsbn::new(12, &mut Rng::stream(2, "init"), &dev).unwrap();
        let bv = m.params().get("fvsbn.b").unwrap();
        bv.set(&(bv.as_tensor() + 0.3).unwrap()).unwrap();
        let mut rng = Rng::stream(2, "x");
        let x: Vec<f32> = (0..7 * 12).map(|_| (rng.uniform() < 0.4) as u8 as f32).collect();
        let x = Tensor::from_vec(x, (7, 12), &dev).unwrap();
        let loss = m.nll(&x).unwrap().mean_all().unwrap();
        let auto = loss.backward().unwrap();
        let (value, closed) = m.loss_and_grads(&x, 0).unwrap();
        assert!((value - loss.to_scalar::<f32>().unwrap() as f64).abs() < 1e-5);
        for v in m.params().vars() {
            let a = auto.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let c = closed.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (p, q) in a.iter().zip(&c) {
                assert!((p - q).abs() < 1e-6, "{p} vs {q}");
            }
        }
    }
}
