//! The linear probe: multinomial logistic regression on frozen features.
//!
//! Features are standardised with the mean and standard deviation of the whole train split
//! (labels are not needed for that). For each L2 strength λ of [`L2_GRID`], weights W `[F, C]`
//! and biases b start at zero and take [`STEPS`] full-batch Adam steps (wick_core's optimizer,
//! closed-form gradients; all λ side by side as one wider problem) on
//!
//! ```text
//! L(W, b) = (1/n) Σ_i −log softmax(x_i W + b)_{y_i}  +  (λ/2) ‖W‖²
//! ```
//!
//! over the labelled training rows. The λ with the best valid-split accuracy (the first, on ties)
//! is kept and its model is scored on the test split. The problem is convex and the start is
//! fixed, so the result depends only on the features.
//!
//! Two label budgets: all training labels, and 10 labels per class ("100" for 10 classes), a
//! fixed choice: the first 10 of each class in a permutation drawn from
//! `Rng::stream(0, "probe-labels")`, the same for every run and baseline.

use candle_core::{Device, Tensor, D};
use wick_core::optim::{OptimConfig, Optimizer};
use wick_core::params::Params;
use wick_core::rng::Rng;
use wick_core::{ensure, Result};

/// L2 strengths tried, chosen on the valid split.
pub const L2_GRID: [f64; 5] = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1];
/// Full-batch Adam steps per fit.
pub const STEPS: usize = 300;
const LR: f64 = 0.02;
/// Labels per class of the small-label probe.
pub const PER_CLASS: usize = 10;

/// Which training labels the probe uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Labels {
    All,
    /// [`PER_CLASS`] per class.
    PerClass,
}

/// Features and labels of the three splits, row-major `n × dim`.
pub struct ProbeData {
    pub dim: usize,
    pub train: (Vec<f32>, Vec<u8>),
    pub valid: (Vec<f32>, Vec<u8>),
    pub test: (Vec<f32>, Vec<u8>),
}

/// A probe's outcome.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProbeResult {
    pub test_acc: f64,
    pub valid_acc: f64,
    pub l2: f64,
}

/// The rows of the fixed 10-per-class subset of `labels` (sorted).
pub fn labelled_subset(labels: &[u8], per_class: usize) -> Vec<usize> {
    let mut rng = Rng::stream(0, "probe-labels");
    let perm = rng.permutation(labels.len());
    let mut count = [0usize; 256];
    let mut out: Vec<usize> = perm
        .into_iter()
        .filter(|&i| {
            let c = &mut count[labels[i] as usize];
            *c += 1;
            *c <= per_class
        })
        .collect();
    out.sort_unstable();
    out
}

fn standardise(x: &[f32], dim: usize, mean: &[f64], std: &[f64]) -> Vec<f32> {
    x.chunks_exact(dim).flat_map(|r| r.iter().enumerate().map(|(j, &v)| ((v as f64 - mean[j]) / std[j]) as f32)).collect()
}

/// Accuracy of each of the `g` side-by-side probes on (x, y).
fn accuracies(x: &Tensor, y: &[u8], w: &Tensor, b: &Tensor, g: usize, classes: usize) -> Result<Vec<f64>> {
    let n = y.len();
    let pred = x.matmul(w)?.broadcast_add(b)?.reshape((n, g, classes))?.argmax(D::Minus1)?.flatten_all()?.to_vec1::<u32>()?;
    Ok((0..g).map(|k| (0..n).filter(|&i| pred[i * g + k] == y[i] as u32).count() as f64 / n.max(1) as f64).collect())
}

/// Fit and score the probe with the given training labels.
pub fn probe(data: &ProbeData, labels: Labels, dev: &Device) -> Result<ProbeResult> {
    let d = data.dim;
    let (xtr_all, ytr_all) = &data.train;
    let n_all = ytr_all.len();
    ensure!(n_all > 0 && !data.valid.1.is_empty() && !data.test.1.is_empty(), "the linear probe needs labelled train, valid and test rows");
    let classes = ytr_all.iter().chain(&data.valid.1).chain(&data.test.1).copied().max().unwrap_or(0) as usize + 1;
    let mut mean = vec![0f64; d];
    let mut var = vec![0f64; d];
    for r in xtr_all.chunks_exact(d) {
        for j in 0..d {
            mean[j] += r[j] as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n_all as f64);
    for r in xtr_all.chunks_exact(d) {
        for j in 0..d {
            var[j] += (r[j] as f64 - mean[j]).powi(2);
        }
    }
    // Constant features (e.g. always-black border pixels) are left at 0 after centring.
    let std: Vec<f64> = var.iter().map(|v| (v / n_all as f64).sqrt().max(1e-6)).collect();
    let rows: Vec<usize> = match labels {
        Labels::All => (0..n_all).collect(),
        Labels::PerClass => labelled_subset(ytr_all, PER_CLASS),
    };
    let xtr = standardise(&wick_core::data::Dataset::gather(xtr_all, d, &rows), d, &mean, &std);
    let ytr: Vec<u8> = rows.iter().map(|&i| ytr_all[i]).collect();
    let n = ytr.len();
    let xtr = Tensor::from_vec(xtr, (n, d), dev)?;
    let split = |(x, y): &(Vec<f32>, Vec<u8>)| -> Result<Tensor> { Ok(Tensor::from_vec(standardise(x, d, &mean, &std), (y.len(), d), dev)?) };
    let (xva, xte) = (split(&data.valid)?, split(&data.test)?);

    // All λ of the grid at once: G independent problems side by side in W [F, G·C]. Their
    // losses add, so each block's gradient is its own problem's, and Adam is elementwise: the
    // same updates as G separate fits, for the price of one wider matrix product.
    let g = L2_GRID.len();
    let mut params = Params::new();
    let w = params.zeros("probe.w", &[d, g * classes], dev)?;
    let b = params.zeros("probe.b", &[g * classes], dev)?;
    let lam: Vec<f32> = L2_GRID.iter().flat_map(|&v| std::iter::repeat_n(v as f32, classes)).collect();
    let lam = Tensor::from_vec(lam, (1, g * classes), dev)?;
    let xtr_t = xtr.t()?.contiguous()?;
    let mut opt = Optimizer::new(OptimConfig { lr: LR, ..OptimConfig::default() }, &params)?;
    for _ in 0..STEPS {
        // ∂L/∂z = (softmax(z) − onehot(y)) / n per problem, on the host; then
        // ∂L/∂W = Xᵀ ∂L/∂z + λW and ∂L/∂b = Σ_i ∂L/∂z_i as tensor ops.
        let z = xtr.matmul(&w)?.broadcast_add(&b)?.flatten_all()?.to_vec1::<f32>()?;
        let mut gz = vec![0f32; z.len()];
        for (i, (zr, gr)) in z.chunks_exact(g * classes).zip(gz.chunks_exact_mut(g * classes)).enumerate() {
            for (zk, gk) in zr.chunks_exact(classes).zip(gr.chunks_exact_mut(classes)) {
                let m = zk.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f64 = zk.iter().map(|&v| ((v - m) as f64).exp()).sum();
                for (c, (gv, &zv)) in gk.iter_mut().zip(zk).enumerate() {
                    let p = ((zv - m) as f64).exp() / sum;
                    *gv = ((p - (c == ytr[i] as usize) as u8 as f64) / n as f64) as f32;
                }
            }
        }
        let gz = Tensor::from_vec(gz, (n, g * classes), dev)?;
        let gw = (xtr_t.matmul(&gz)? + w.broadcast_mul(&lam)?)?;
        let gb = gz.sum(0)?;
        // A surrogate whose gradient is (gw, gb), for the optimizer's GradStore.
        let surrogate = ((&w * gw.detach())?.sum_all()? + (&b * gb.detach())?.sum_all()?)?;
        opt.step(&params, &surrogate.backward()?, LR)?;
    }
    let valid = accuracies(&xva, &data.valid.1, &w, &b, g, classes)?;
    let test = accuracies(&xte, &data.test.1, &w, &b, g, classes)?;
    // The first λ with the best valid accuracy.
    let mut k = 0;
    for i in 1..g {
        if valid[i] > valid[k] {
            k = i;
        }
    }
    Ok(ProbeResult { test_acc: test[k], valid_acc: valid[k], l2: L2_GRID[k] })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two Gaussian blobs per class in 5-D: the probe separates them, and the 10-per-class
    /// subset is fixed and balanced.
    #[test]
    fn the_probe_learns_separable_classes_and_the_subset_is_fixed() {
        let mut r = Rng::stream(1, "blobs");
        let mut make = |n: usize| {
            let (mut x, mut y) = (Vec::new(), Vec::new());
            for i in 0..n {
                let c = (i % 3) as u8;
                for j in 0..5 {
                    x.push((if j == c as usize { 3.0 } else { 0.0 } + r.normal()) as f32);
                }
                y.push(c);
            }
            (x, y)
        };
        let data = ProbeData { dim: 5, train: make(300), valid: make(90), test: make(90) };
        let all = probe(&data, Labels::All, &Device::Cpu).unwrap();
        assert!(all.test_acc > 0.9, "{all:?}");
        let few = probe(&data, Labels::PerClass, &Device::Cpu).unwrap();
        assert!(few.test_acc > 0.8, "{few:?}");
        let s = labelled_subset(&data.train.1, 10);
        assert_eq!(s.len(), 30);
        assert_eq!(s, labelled_subset(&data.train.1, 10));
        for c in 0..3u8 {
            assert_eq!(s.iter().filter(|&&i| data.train.1[i] == c).count(), 10);
        }
    }
}
