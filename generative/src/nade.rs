//! NADE: neural autoregressive distribution estimator (Larochelle & Murray 2011, §3).
//!
//! Tied weights share one hidden layer across the D conditionals:
//!
//! ```text
//! a_1 = c,   a_{d+1} = a_d + W[:, d] x_d          (a_d = c + W[:, <d] x_<d)
//! h_d = σ(a_d)
//! p(x_d = 1 | x_<d) = σ(b_d + V[d, :] · h_d)
//! ```
//!
//! Carrying the pre-activation `a_d` forward makes log p(x) O(DH) per sample instead of
//! O(D²H). Checkpoint tensors: `nade.w` `[H, D]`, `nade.c` `[H]`, `nade.v` `[D, H]`,
//! `nade.b` `[D]`. Numpy: loop `d` with `a = c + w[:, :d] @ x[:d]`, `z_d = b[d] + v[d] @ sigmoid(a)`.

use crate::model::{bce_rows, DensityModel};
use candle_core::{backprop::GradStore, Device, Tensor, D};
use wick_core::{params::Params, rng::Rng, Result};

pub struct Nade {
    dim: usize,
    hidden: usize,
    params: Params,
    w: Tensor,
    c: Tensor,
    v: Tensor,
    b: Tensor,
}

impl Nade {
    /// W, V ~ U(±1/√fan_in) (PyTorch's nn.Linear default), c = b = 0.
    pub fn new(dim: usize, hidden: usize, rng: &mut Rng, device: &Device) -> Result<Nade> {
        let mut params = Params::new();
        let w = params.uniform("nade.w", &[hidden, dim], 1.0 / (dim as f64).sqrt(), rng, device)?;
        let c = params.zeros("nade.c", &[hidden], device)?;
        let v = params.uniform("nade.v", &[dim, hidden], 1.0 / (hidden as f64).sqrt(), rng, device)?;
        let b = params.zeros("nade.b", &[dim], device)?;
        Ok(Nade { dim, hidden, params, w, c, v, b })
    }

    /// `W̃ = [c | W]` `[H, D+1]` and `Ṽ = [V | b]` `[D, H+1]`, the fused op's packing.
    fn packed(&self) -> Result<(Tensor, Tensor)> {
        Ok((Tensor::cat(&[&self.c.unsqueeze(1)?, &self.w], 1)?, Tensor::cat(&[&self.v, &self.b.unsqueeze(1)?], 1)?))
    }

    /// Whether this model's device has a fused kernel ([`crate::nade_op`]): the CPU, and CUDA
    /// in a `cuda` build (up to [`crate::nade_op::MAX_CUDA_HIDDEN`] hidden units).
    pub fn fused(&self) -> bool {
        crate::nade_op::fused_supported(self.w.device(), self.hidden)
    }

    /// The logits z `[B, D]` of all conditionals: the fused kernel ([`crate::nade_op`]) on the
    /// CPU and on CUDA, elsewhere [`Nade::logits_composed`].
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        if !self.fused() {
            return self.logits_composed(x);
        }
        let (wt, vt) = self.packed()?;
        Ok(crate::nade_op::nade_logits(x, &wt, &vt)?)
    }

    /// The logits with ordinary Candle ops: a loop over d that carries the pre-activation
    /// forward (O(DH) per sample, D small ops per pass).
    pub fn logits_composed(&self, x: &Tensor) -> Result<Tensor> {
        let bsz = x.dim(0)?;
        let mut a = self.c.unsqueeze(0)?.broadcast_as((bsz, self.hidden))?.contiguous()?;
        let wt = self.w.t()?.contiguous()?; // [D, H]: row d is W[:, d]
        let mut zs = Vec::with_capacity(self.dim);
        for d in 0..self.dim {
            let h = candle_nn::ops::sigmoid(&a)?;
            zs.push(h.broadcast_mul(&self.v.get(d)?.unsqueeze(0)?)?.sum_keepdim(D::Minus1)?);
            if d + 1 < self.dim {
                a = (a + x.narrow(1, d, 1)?.broadcast_mul(&wt.get(d)?.unsqueeze(0)?)?)?;
            }
        }
        Ok(Tensor::cat(&zs, 1)?.broadcast_add(&self.b)?)
    }

    /// [`DensityModel::loss_and_grads`] on the CPU: the parameters' storage borrowed (no copy)
    /// and one host step ([`crate::nade_op::loss_and_grads_host`]).
    fn loss_and_grads_host(&self, x: &Tensor) -> Result<(f64, GradStore)> {
        let (bsz, d) = x.dims2()?;
        let xv = x.flatten_all()?.to_vec1::<f32>()?;
        let (loss, [dw, dc, dv, db]) = wick_core::cpu::with_host_slices(&[&self.w, &self.c, &self.v, &self.b], "a nade parameter", |p| {
            Ok(crate::nade_op::loss_and_grads_host(&xv, p[0], p[1], p[2], p[3], bsz, d, self.hidden))
        })?;
        let dev = x.device();
        let mut grads = GradStore::default();
        grads.insert(&self.w, Tensor::from_vec(dw, (self.hidden, d), dev)?);
        grads.insert(&self.c, Tensor::from_vec(dc, self.hidden, dev)?);
        grads.insert(&self.v, Tensor::from_vec(dv, (d, self.hidden), dev)?);
        grads.insert(&self.b, Tensor::from_vec(db, d, dev)?);
        Ok((loss, grads))
    }

    /// Whether [`DensityModel::loss_and_grads`] takes the host step.
    fn host_step(&self, x: &Tensor) -> bool {
        self.fused() && x.device().is_cpu() && x.dtype() == candle_core::DType::F32 && self.w.dtype() == candle_core::DType::F32
    }

    /// The closed-form step in Candle ops around the fused op (CUDA; on the CPU the host step
    /// replaces it): `∂L/∂z = (σ(z) − x)/B`, then the op's backward.
    fn loss_and_grads_op(&self, x: &Tensor) -> Result<(f64, GradStore)> {
        let (wt, vt) = self.packed()?;
        let (wt, vt) = (wt.detach(), vt.detach());
        let z = crate::nade_op::nade_logits(x, &wt, &vt)?.detach();
        let rows = x.dim(0)? as f64;
        let loss = bce_rows(&z, x)?.sum_all()?.to_scalar::<f32>()? as f64 / rows;
        let dz = ((candle_nn::ops::sigmoid(&z)? - x)? / rows)?;
        let (dwt, dvt) = crate::nade_op::nade_grads(x, &wt, &vt, &dz)?;
        let (d, h) = (self.dim, self.hidden);
        let mut grads = GradStore::default();
        grads.insert(&self.c, dwt.narrow(1, 0, 1)?.squeeze(1)?.contiguous()?);
        grads.insert(&self.w, dwt.narrow(1, 1, d)?.contiguous()?);
        grads.insert(&self.v, dvt.narrow(1, 0, h)?.contiguous()?);
        grads.insert(&self.b, dvt.narrow(1, h, 1)?.squeeze(1)?.contiguous()?);
        Ok((loss, grads))
    }
}

impl DensityModel for Nade {
    fn dim(&self) -> usize {
        self.dim
    }

    fn params(&self) -> &Params {
        &self.params
    }

    fn nll(&self, x: &Tensor) -> Result<Tensor> {
        Ok(bce_rows(&self.logits(x)?, x)?)
    }

    /// Where the fused kernel exists (CPU, CUDA) in closed form around it: `∂L/∂z = (σ(z) − x)/B`,
    /// then the kernel's backward gives ∂L/∂W̃ and ∂L/∂Ṽ with no autograd graph (on the CPU
    /// all of it on host buffers, [`Nade::loss_and_grads_host`]); elsewhere autograd through
    /// the composed ops.
    fn loss_and_grads(&self, x: &Tensor, step: u64) -> Result<(f64, GradStore)> {
        if !self.fused() {
            let loss = self.train_nll(x, step)?.mean_all()?;
            return Ok((loss.to_scalar::<f32>()? as f64, loss.backward()?));
        }
        if self.host_step(x) {
            return self.loss_and_grads_host(x);
        }
        self.loss_and_grads_op(x)
    }

    /// The host step writing its gradients into `flat` in sorted-name order (`nade.b`, `nade.c`,
    /// `nade.v`, `nade.w`): the same kernels, so the same values as [`Nade::loss_and_grads_host`].
    fn loss_and_grads_flat(&self, x: &Tensor, step: u64, keys: &[u64], flat: &mut [f32]) -> Result<(f64, Option<GradStore>)> {
        let (d, h) = (self.dim, self.hidden);
        if !self.host_step(x) || flat.len() != d + h + 2 * d * h {
            let (loss, grads) = self.loss_and_grads_keyed(x, step, keys)?;
            return Ok((loss, Some(grads)));
        }
        let bsz = x.dim(0)?;
        let xv = x.flatten_all()?.to_vec1::<f32>()?;
        let (db, rest) = flat.split_at_mut(d);
        let (dc, rest) = rest.split_at_mut(h);
        let (dv, dw) = rest.split_at_mut(d * h);
        let loss = wick_core::cpu::with_host_slices(&[&self.w, &self.c, &self.v, &self.b], "a nade parameter", |p| {
            Ok(crate::nade_op::loss_and_grads_host_into(&xv, p[0], p[1], p[2], p[3], bsz, d, h, [dw, dc, dv, db]))
        })?;
        Ok((loss, None))
    }

    fn sample(&self, n: usize, rng: &mut Rng, observed: Option<(&[f32], &[bool])>) -> Result<Vec<f32>> {
        let (dd, hh) = (self.dim, self.hidden);
        let w = self.w.flatten_all()?.to_vec1::<f32>()?;
        let c = self.c.to_vec1::<f32>()?;
        let v = self.v.flatten_all()?.to_vec1::<f32>()?;
        let b = self.b.to_vec1::<f32>()?;
        let mut out = vec![0f32; n * dd];
        let mut a = vec![0f32; hh];
        for s in 0..n {
            a.copy_from_slice(&c);
            for d in 0..dd {
                let xd = match observed {
                    Some((vals, mask)) if mask[d] => vals[s * dd + d],
                    _ => {
                        let z = b[d] + (0..hh).map(|k| v[d * hh + k] * sigmoid(a[k])).sum::<f32>();
                        if rng.uniform() < sigmoid(z) as f64 { 1.0 } else { 0.0 }
                    }
                };
                out[s * dd + d] = xd;
                if xd != 0.0 {
                    for k in 0..hh {
                        a[k] += w[k * dd + d] * xd;
                    }
                }
            }
        }
        Ok(out)
    }
}

fn sigmoid(a: f32) -> f32 {
    1.0 / (1.0 + (-a).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host step written into a flat buffer (as the data-parallel combine offers it, old
    /// contents NaN) gives the bits of the host step's gradients flattened in sorted-name order.
    #[test]
    fn flat_gradients_are_the_host_steps() {
        let dev = Device::Cpu;
        let (d, h, bsz) = (13, 7, 5);
        let m = Nade::new(d, h, &mut Rng::stream(4, "init"), &dev).unwrap();
        let mut r = Rng::stream(4, "x");
        let x = Tensor::from_vec((0..bsz * d).map(|_| (r.uniform() < 0.3) as u8 as f32).collect::<Vec<f32>>(), (bsz, d), &dev).unwrap();
        let (l1, g) = m.loss_and_grads(&x, 0).unwrap();
        let want = wick_core::dist::flatten_grads(m.params(), &g).unwrap();
        let mut flat = vec![f32::NAN; m.params().numel()];
        let (l2, none) = m.loss_and_grads_flat(&x, 0, &[], &mut flat).unwrap();
        assert!(none.is_none(), "the host step writes into the buffer");
        assert_eq!(l1.to_bits(), l2.to_bits());
        assert_eq!(flat.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        // A buffer of the wrong length: the gradients come back instead.
        let (_, some) = m.loss_and_grads_flat(&x, 0, &[], &mut [0.0; 3]).unwrap();
        assert!(some.is_some());
    }

    /// log p(x) straight from the equations, O(D²H), in f64.
    fn naive_nll(m: &Nade, x: &[f32]) -> f64 {
        let (dd, hh) = (m.dim, m.hidden);
        let w = m.w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let c = m.c.to_vec1::<f32>().unwrap();
        let v = m.v.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = m.b.to_vec1::<f32>().unwrap();
        let mut nll = 0.0;
        for d in 0..dd {
            let mut z = b[d] as f64;
            for k in 0..hh {
                let a = c[k] as f64 + (0..d).map(|j| w[k * dd + j] as f64 * x[j] as f64).sum::<f64>();
                z += v[d * hh + k] as f64 / (1.0 + (-a).exp());
            }
            let p = 1.0 / (1.0 + (-z).exp());
            nll -= if x[d] > 0.5 { p.ln() } else { (1.0 - p).ln() };
        }
        nll
    }

    #[test]
    fn closed_form_gradients_equal_autograd_through_the_composed_ops() {
        let dev = Device::Cpu;
        let m = Nade::new(11, 7, &mut Rng::stream(5, "init"), &dev).unwrap();
        for (p, s) in [("nade.c", 0.2f32), ("nade.b", -0.3)] {
            let var = m.params().get(p).unwrap();
            var.set(&(var.as_tensor() + s as f64).unwrap()).unwrap();
        }
        let mut rng = Rng::stream(5, "x");
        let x: Vec<f32> = (0..6 * 11).map(|_| (rng.uniform() < 0.4) as u8 as f32).collect();
        let x = Tensor::from_vec(x, (6, 11), &dev).unwrap();
        let loss = bce_rows(&m.logits_composed(&x).unwrap(), &x).unwrap().mean_all().unwrap();
        let auto = loss.backward().unwrap();
        // The model's step (on the CPU the host step) and the Candle-op step that CUDA takes.
        for (path, (value, closed)) in [("host", m.loss_and_grads(&x, 0).unwrap()), ("op", m.loss_and_grads_op(&x).unwrap())] {
            assert!((value - loss.to_scalar::<f32>().unwrap() as f64).abs() < 1e-4, "{path}");
            for (n, v) in m.params().names().iter().zip(m.params().vars()) {
                let a = auto.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let c = closed.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(a.len(), c.len(), "{path} {n}");
                for (p, q) in a.iter().zip(&c) {
                    assert!((p - q).abs() < 1e-4 * (1.0 + p.abs()), "{path} {n}: {p} vs {q}");
                }
            }
        }
    }

    /// The host step's loss and gradients have the same bits for any thread count (MNIST's
    /// size, 37 rows: partial tiles forward and backward).
    #[test]
    fn host_step_is_bit_identical_for_any_thread_count() {
        let dev = Device::Cpu;
        let m = Nade::new(784, 100, &mut Rng::stream(6, "init"), &dev).unwrap();
        let mut rng = Rng::stream(6, "x");
        let x: Vec<f32> = (0..37 * 784).map(|_| (rng.uniform() < 0.2) as u8 as f32).collect();
        let x = Tensor::from_vec(x, (37, 784), &dev).unwrap();
        let run = |t: usize| {
            rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap().install(|| {
                let (loss, g) = m.loss_and_grads(&x, 0).unwrap();
                let flat: Vec<Vec<u32>> = m
                    .params()
                    .vars()
                    .iter()
                    .map(|v| g.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|f| f.to_bits()).collect())
                    .collect();
                (loss.to_bits(), flat)
            })
        };
        let one = run(1);
        for t in [2, 3] {
            assert!(one == run(t), "{t} threads differ from 1");
        }
    }

    /// On CUDA the model uses the fused op: its logits equal the composed ops' and its training
    /// step (loss and every gradient) equals the CPU's. Skips (with a note) without a device.
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_training_step_uses_the_fused_op_and_matches_the_cpu() {
        let gpu = match Device::new_cuda(0) {
            Ok(d) => d,
            Err(e) => return eprintln!("note: no CUDA device, CUDA test skipped ({e})"),
        };
        let (dd, hh, bsz) = (60, 45, 23);
        let models: Vec<Nade> = [Device::Cpu, gpu.clone()]
            .iter()
            .map(|dev| {
                let m = Nade::new(dd, hh, &mut Rng::stream(8, "init"), dev).unwrap();
                for (p, s) in [("nade.c", 0.2f32), ("nade.b", -0.3)] {
                    let var = m.params().get(p).unwrap();
                    var.set(&(var.as_tensor() + s as f64).unwrap()).unwrap();
                }
                m
            })
            .collect();
        assert!(models[1].fused());
        let mut rng = Rng::stream(8, "x");
        let xv: Vec<f32> = (0..bsz * dd).map(|_| (rng.uniform() < 0.3) as u8 as f32).collect();
        let xc = Tensor::from_vec(xv.clone(), (bsz, dd), &Device::Cpu).unwrap();
        let xg = Tensor::from_vec(xv, (bsz, dd), &gpu).unwrap();
        let host = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let fused = host(&models[1].logits(&xg).unwrap());
        let composed = host(&models[1].logits_composed(&xg).unwrap());
        for (a, b) in fused.iter().zip(&composed) {
            assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "fused {a} vs composed {b}");
        }
        let (lc, gc) = models[0].loss_and_grads(&xc, 0).unwrap();
        let (lg, gg) = models[1].loss_and_grads(&xg, 0).unwrap();
        assert!((lc - lg).abs() < 1e-5 * (1.0 + lc.abs()), "loss cpu {lc} vs cuda {lg}");
        for (i, n) in models[0].params().names().iter().enumerate() {
            let a = host(gc.get(&models[0].params().vars()[i]).unwrap());
            let b = host(gg.get(&models[1].params().vars()[i]).unwrap());
            assert_eq!(a.len(), b.len(), "{n}");
            for (p, q) in a.iter().zip(&b) {
                assert!((p - q).abs() < 1e-4 * (1.0 + p.abs()), "{n}: cpu {p} vs cuda {q}");
            }
        }
    }

    #[test]
    fn carried_pre_activation_equals_the_naive_computation() {
        let dev = Device::Cpu;
        let m = Nade::new(9, 6, &mut Rng::stream(4, "init"), &dev).unwrap();
        // Non-zero c and b so every parameter matters.
        for (p, s) in [("nade.c", 0.3f32), ("nade.b", -0.2)] {
            let var = m.params().get(p).unwrap();
            var.set(&(var.as_tensor() + s as f64).unwrap()).unwrap();
        }
        let mut rng = Rng::stream(4, "x");
        let x: Vec<f32> = (0..5 * 9).map(|_| (rng.uniform() < 0.5) as u8 as f32).collect();
        let got = m.nll(&Tensor::from_vec(x.clone(), (5, 9), &dev).unwrap()).unwrap().to_vec1::<f32>().unwrap();
        for (i, g) in got.iter().enumerate() {
            let want = naive_nll(&m, &x[i * 9..(i + 1) * 9]);
            assert!((*g as f64 - want).abs() < 1e-4, "row {i}: {g} vs {want}");
        }
        // Every parameter gets a non-zero gradient.
        let loss = m.nll(&Tensor::from_vec(x, (5, 9), &dev).unwrap()).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        for (n, v) in m.params().names().iter().zip(m.params().vars()) {
            let g = grads.get(v).unwrap_or_else(|| panic!("no gradient for {n}"));
            let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(norm > 0.0, "zero gradient for {n}");
        }
    }
}
