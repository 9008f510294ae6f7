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
//!
//! On the CPU the products skip the zero half of the mask ([`crate::staircase`]: blocks of
//! outputs against the inputs they reach), and the loss and its gradient are one fused pass.

use crate::model::{bce_rows, masked, DensityModel};
use crate::staircase::{bce_rows_host, with_host, Staircase};
use candle_core::{backprop::GradStore, DType, Device, Tensor};
use std::sync::Mutex;
use wick_core::{params::Params, rng::Rng, Result};

pub struct Fvsbn {
    dim: usize,
    params: Params,
    w: Tensor,
    b: Tensor,
    mask: Tensor,
    /// The mask as a staircase (a(j) = j, c(d) = d, strict): output d sees inputs 0..d.
    stairs: Staircase,
    /// Buffers of the CPU path, kept between steps: packed W, its gradient, the logits.
    scratch: Mutex<[Vec<f32>; 3]>,
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
        let deg: Vec<usize> = (0..dim).collect();
        let stairs = Staircase::new(&deg, &deg, true);
        Ok(Fvsbn { dim, params, w, b, mask, stairs, scratch: Mutex::new(Default::default()) })
    }

    fn host_path(&self, x: &Tensor) -> bool {
        x.device().is_cpu() && x.dtype() == DType::F32 && self.w.dtype() == DType::F32
    }

    /// The CPU path: −log p(x) per row, and with `grad` the gradients of the mean over the
    /// rows, `(∂W [D·D], ∂b [D])`.
    fn host_nll(&self, x: &Tensor, grad: bool) -> Result<(Vec<f32>, Option<(Vec<f32>, Vec<f32>)>)> {
        let (rows, d) = x.dims2()?;
        let xv = x.flatten_all()?.to_vec1::<f32>()?;
        let b = self.b.to_vec1::<f32>()?;
        let mut guard = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let [ws, dws, z] = &mut *guard;
        ws.resize(d * d, 0.0);
        z.resize(rows * d, 0.0);
        with_host(&self.w, "fvsbn.w", |w| self.stairs.pack(w, true, ws))?;
        self.stairs.forward(&xv, ws, true, &b, z, rows);
        let scale = grad.then_some(1.0 / rows as f32);
        let nll = bce_rows_host(z, &xv, d, scale);
        if !grad {
            return Ok((nll, None));
        }
        dws.resize(d * d, 0.0);
        let mut db = vec![0f32; d];
        self.stairs.grad_weight(&xv, z, true, dws, &mut db, rows);
        let dw = self.stairs.unpack(dws, true);
        Ok((nll, Some((dw, db))))
    }

    /// The closed-form loss and gradients with Candle ops (any device).
    fn loss_and_grads_candle(&self, x: &Tensor) -> Result<(f64, GradStore)> {
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

    /// On the CPU the staircase kernels (not differentiable: see `train_nll`).
    fn nll(&self, x: &Tensor) -> Result<Tensor> {
        if self.host_path(x) {
            let (nll, _) = self.host_nll(x, false)?;
            return Ok(Tensor::from_vec(nll, x.dim(0)?, x.device())?);
        }
        self.train_nll(x, 0)
    }

    /// Differentiable (Candle ops), for autograd.
    fn train_nll(&self, x: &Tensor, _step: u64) -> Result<Tensor> {
        Ok(bce_rows(&self.logits(x)?, x)?)
    }

    /// Closed form (logistic regression): with the mean loss over B rows,
    /// `∂L/∂z = (σ(z) − x)/B`, `∂L/∂W = (∂L/∂zᵀ x) ⊙ M`, `∂L/∂b = Σ_rows ∂L/∂z`:
    /// two matrix products and no autograd graph. On the CPU both products skip the mask's
    /// zero half and the loss and ∂L/∂z are one fused pass.
    fn loss_and_grads(&self, x: &Tensor, _step: u64) -> Result<(f64, GradStore)> {
        if !self.host_path(x) {
            return self.loss_and_grads_candle(x);
        }
        let d = self.dim;
        let (nll, g) = self.host_nll(x, true)?;
        let (dw, db) = g.expect("gradients requested");
        let loss = nll.iter().map(|&v| v as f64).sum::<f64>() / nll.len() as f64;
        let mut grads = GradStore::default();
        grads.insert(&self.w, Tensor::from_vec(dw, (d, d), x.device())?);
        grads.insert(&self.b, Tensor::from_vec(db, d, x.device())?);
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
        let loss = m.train_nll(&x, 0).unwrap().mean_all().unwrap();
        let auto = loss.backward().unwrap();
        for (value, closed) in [m.loss_and_grads(&x, 0).unwrap(), m.loss_and_grads_candle(&x).unwrap()] {
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

    /// The staircase CPU path equals the Candle masked product (values and gradients) at a size
    /// that spans several blocks with a ragged last one, with nonzero upper-triangle weights
    /// (which the mask must still hide).
    #[test]
    fn staircase_path_equals_the_masked_product() {
        let dev = Device::Cpu;
        let d = 150;
        let m = Fvsbn::new(d, &mut Rng::stream(3, "init"), &dev).unwrap();
        let mut r = Rng::stream(3, "x");
        let x: Vec<f32> = (0..11 * d).map(|_| (r.uniform() < 0.3) as u8 as f32).collect();
        let x = Tensor::from_vec(x, (11, d), &dev).unwrap();
        let wv = m.params().get("fvsbn.w").unwrap();
        let noise: Vec<f32> = (0..d * d).map(|_| r.normal() as f32).collect();
        wv.set(&(wv.as_tensor() + Tensor::from_vec(noise, (d, d), &dev).unwrap().mul(&m.mask.affine(-1.0, 1.0).unwrap()).unwrap()).unwrap()).unwrap();
        let want = bce_rows(&m.logits(&x).unwrap(), &x).unwrap().to_vec1::<f32>().unwrap();
        let got = m.nll(&x).unwrap().to_vec1::<f32>().unwrap();
        for (p, q) in got.iter().zip(&want) {
            assert!((p - q).abs() < 1e-4, "{p} vs {q}");
        }
        let (value, host) = m.loss_and_grads(&x, 0).unwrap();
        let auto = m.train_nll(&x, 0).unwrap().mean_all().unwrap();
        assert!((value - auto.to_scalar::<f32>().unwrap() as f64).abs() < 1e-4);
        let auto = auto.backward().unwrap();
        for v in m.params().vars() {
            let a = auto.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let c = host.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (p, q) in a.iter().zip(&c) {
                assert!((p - q).abs() < 1e-5, "{p} vs {q}");
            }
        }
    }
}
