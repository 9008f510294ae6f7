//! Named, ordered trainable parameters, initialised on the host from wick's generators.
//!
//! Order is insertion order and is what optimizers and checkpoints follow, so a model's
//! parameters, optimizer state and saved files always line up by name.

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::rng::Rng;
use candle_core::{Device, Tensor, Var};

#[derive(Clone)]
pub struct Params {
    names: Vec<String>,
    vars: Vec<Var>,
}

impl Default for Params {
    fn default() -> Self {
        Self::new()
    }
}

impl Params {
    pub fn new() -> Self {
        Params { names: Vec::new(), vars: Vec::new() }
    }

    /// Add a parameter holding `values` (row-major, `shape`).
    pub fn add(&mut self, name: &str, shape: &[usize], values: Vec<f32>, device: &Device) -> Result<Tensor> {
        if self.names.iter().any(|n| n == name) {
            return Err(Error::new(format!("parameter '{name}' added twice")));
        }
        let var = Var::from_tensor(&Tensor::from_vec(values, shape, device)?)?;
        self.names.push(name.to_string());
        self.vars.push(var.clone());
        Ok(var.as_tensor().clone())
    }

    pub fn zeros(&mut self, name: &str, shape: &[usize], device: &Device) -> Result<Tensor> {
        let n = shape.iter().product();
        self.add(name, shape, vec![0.0; n], device)
    }

    /// Uniform in [-bound, bound), drawn from `rng`.
    pub fn uniform(&mut self, name: &str, shape: &[usize], bound: f64, rng: &mut Rng, device: &Device) -> Result<Tensor> {
        let n = shape.iter().product();
        let v = (0..n).map(|_| ((2.0 * rng.uniform() - 1.0) * bound) as f32).collect();
        self.add(name, shape, v, device)
    }

    /// Normal(0, std²), drawn from `rng`.
    pub fn normal(&mut self, name: &str, shape: &[usize], std: f64, rng: &mut Rng, device: &Device) -> Result<Tensor> {
        let n = shape.iter().product();
        let v = (0..n).map(|_| (rng.normal() * std) as f32).collect();
        self.add(name, shape, v, device)
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    pub fn len(&self) -> usize {
        self.vars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// The parameter called `name`.
    pub fn get(&self, name: &str) -> Option<&Var> {
        self.names.iter().position(|n| n == name).map(|i| &self.vars[i])
    }

    /// Total number of scalars.
    pub fn numel(&self) -> usize {
        self.vars.iter().map(|v| v.elem_count()).sum()
    }

    /// Where entries `range` of the flat vector (the parameters `order[0]`, `order[1]`, …, one
    /// after another) lie: for each parameter they reach, in order, (its index, the entries'
    /// range within it, their range within `range` counted from `range.start`).
    pub fn flat_pieces(&self, order: &[usize], range: std::ops::Range<usize>) -> Vec<(usize, std::ops::Range<usize>, std::ops::Range<usize>)> {
        let mut at = 0;
        let mut out = Vec::new();
        for &i in order {
            let n = self.vars[i].elem_count();
            let (lo, hi) = (range.start.max(at), range.end.min(at + n));
            if lo < hi {
                out.push((i, lo - at..hi - at, lo - range.start..hi - range.start));
            }
            at += n;
        }
        out
    }

    /// Put every parameter into `ck` under its own name.
    pub fn save_to(&self, ck: &mut Checkpoint) -> Result<()> {
        for (n, v) in self.names.iter().zip(&self.vars) {
            ck.put_tensor(n, v.as_tensor())?;
        }
        Ok(())
    }

    /// Overwrite every parameter from `ck`, checking names and shapes.
    pub fn load_from(&self, ck: &Checkpoint) -> Result<()> {
        for (n, v) in self.names.iter().zip(&self.vars) {
            let t = ck.tensor(n, v.dims(), v.device())?;
            v.set(&t)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_is_seeded_and_round_trips_through_a_checkpoint() {
        let dev = Device::Cpu;
        let mk = |seed| {
            let mut p = Params::new();
            let mut r = Rng::stream(seed, "init");
            p.uniform("w", &[3, 4], 0.5, &mut r, &dev).unwrap();
            p.zeros("b", &[4], &dev).unwrap();
            p
        };
        let (a, b, c) = (mk(1), mk(1), mk(2));
        let va = a.vars()[0].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(va, b.vars()[0].flatten_all().unwrap().to_vec1::<f32>().unwrap());
        assert_ne!(va, c.vars()[0].flatten_all().unwrap().to_vec1::<f32>().unwrap());
        assert!(va.iter().all(|x| x.abs() <= 0.5));
        let mut ck = Checkpoint::new();
        a.save_to(&mut ck).unwrap();
        c.load_from(&ck).unwrap();
        assert_eq!(va, c.vars()[0].flatten_all().unwrap().to_vec1::<f32>().unwrap());
        let mut other = Params::new();
        other.zeros("w", &[4, 3], &dev).unwrap();
        let e = other.load_from(&ck).unwrap_err().to_string();
        assert!(e.contains("'w' has shape [3, 4], expected [4, 3]"), "{e}");
    }
}
