//! NADE training-step throughput: the fused custom op against the composed Candle ops.
//!
//! `cargo bench -p wick-generative --bench nade` (set `RAYON_NUM_THREADS=1` or `2`; `WICK_NADE_SIMD=
//! avx512|avx2|scalar` forces the kernel's instruction set). D = 784, H = 500, batch 100, on
//! random binary x with P(1) = 0.2 and, when the data file is found, the first 100 mnist5k images.
//!
//! Timed per batch:
//! * `fused step (autograd)`: the model's step: W̃ = [c | W], Ṽ = [V | b] by `Tensor::cat`,
//!   logits, stable BCE summed over d and averaged over the batch, `backward()`. No optimizer.
//! * `fused step (closed form)`: logits, `dz = (σ(z) − x)/B`, [`nade_grads`]: no autograd graph.
//! * `kernel fwd` / `kernel bwd`: the op's forward (`nade_logits` on fixed tensors) and backward
//!   (`nade_grads` with a fixed dz) alone, with their GFLOP/s.
//! * `composed step (autograd)`: the same step with `nade_logits_composed` (a few iterations).
//!
//! Times are medians over repeated calls.
//!
//! Flop count (FMA = 2 flops, n₁ = number of ones in the batch, H the real hidden size):
//! forward `2BDH` (V[d]·h) `+ n₁H(2 + σ)` (a += x_d W[:, d] and a new h at every one) `+ BD`;
//! backward `4BDH` (dV += dz h, r += dz V[d]) `+ n₁H(10 + σ)` (a_D, flush g += u ⊙ r,
//! dW += x g, a −= x W, new h and u = h − h²) `+ BH(5 + σ)` (h, u of a_D; last flush, dc) `+ BD`.
//! σ is counted two ways: 25 flops ("executed": the 14-instruction AVX-512 sequence, FMAs as 2)
//! and 4 flops ("model": negate, exp, add, divide).

use candle_core::{Device, Tensor, Var};
use std::time::Instant;
use wick_core::rng::Rng;
use wick_generative::model::bce_with_logits;
use wick_generative::nade_op::{backend, nade_grads, nade_logits, nade_logits_composed};

const D: usize = 784;
const H: usize = 500;
const B: usize = 100;

struct Params {
    c: Var,
    w: Var,
    v: Var,
    b: Var,
}

impl Params {
    fn tilde(&self) -> (Tensor, Tensor) {
        let wt = Tensor::cat(&[&self.c.as_tensor().unsqueeze(1).unwrap(), self.w.as_tensor()], 1).unwrap();
        let vt = Tensor::cat(&[self.v.as_tensor(), &self.b.as_tensor().unsqueeze(1).unwrap()], 1).unwrap();
        (wt, vt)
    }
}

fn uniform(n: usize, bound: f64, rng: &mut Rng) -> Vec<f32> {
    (0..n).map(|_| ((2.0 * rng.uniform() - 1.0) * bound) as f32).collect()
}

/// Median seconds per call (the machine is shared: the median resists other jobs' bursts):
/// warm-up, then repeat until `min_s` and `min_iters` are both reached.
fn time<F: FnMut()>(mut f: F, min_iters: usize, min_s: f64) -> f64 {
    f();
    let t0 = Instant::now();
    let mut ts = Vec::new();
    while ts.len() < min_iters || t0.elapsed().as_secs_f64() < min_s {
        let t = Instant::now();
        f();
        ts.push(t.elapsed().as_secs_f64());
    }
    ts.sort_by(f64::total_cmp);
    ts[ts.len() / 2]
}

fn autograd_step(p: &Params, x: &Tensor, fused: bool) {
    let (wt, vt) = p.tilde();
    let z = if fused { nade_logits(x, &wt, &vt) } else { nade_logits_composed(x, &wt, &vt) }.unwrap();
    let loss = bce_with_logits(&z, x).unwrap().sum(1).unwrap().mean_all().unwrap();
    let grads = loss.backward().unwrap();
    assert!(grads.get(p.w.as_tensor()).is_some());
}

fn closed_form_step(p: &Params, x: &Tensor) {
    let (wt, vt) = p.tilde();
    let z = nade_logits(x, &wt, &vt).unwrap();
    let dz = ((candle_nn::ops::sigmoid(&z).unwrap() - x).unwrap() / B as f64).unwrap();
    let (dw, _dv) = nade_grads(x, &wt, &vt, &dz).unwrap();
    assert_eq!(dw.dims(), &[H, D + 1]);
}

fn bench(name: &str, xv: Vec<f32>, p: &Params) {
    let dev = Device::Cpu;
    let n1 = xv.iter().filter(|&&v| v != 0.0).count() as f64;
    let x = Tensor::from_vec(xv, (B, D), &dev).unwrap();
    let (bf, df, hf) = (B as f64, D as f64, H as f64);
    let flops = |sig: f64| {
        let fwd = 2.0 * bf * df * hf + n1 * hf * (2.0 + sig) + bf * df;
        let bwd = 4.0 * bf * df * hf + n1 * hf * (10.0 + sig) + bf * hf * (5.0 + sig) + bf * df;
        (fwd, bwd)
    };
    println!("\n== {name}: x [{B}, {D}] with {:.1}% ones, H = {H}", 100.0 * n1 / (bf * df));

    let (wt, vt) = p.tilde();
    let mut rng = Rng::stream(1, "dz");
    let dz = Tensor::from_vec(uniform(B * D, 0.01, &mut rng), (B, D), &dev).unwrap();
    let t_fwd = time(|| drop(nade_logits(&x, &wt, &vt).unwrap()), 20, 2.0);
    let t_bwd = time(|| drop(nade_grads(&x, &wt, &vt, &dz).unwrap()), 20, 2.0);
    for (label, sig) in [("executed, σ = 25", 25.0), ("model, σ = 4", 4.0)] {
        let (ff, fb) = flops(sig);
        println!(
            "kernel GFLOP/s ({label}): fwd {:.1} ({:.2} MFLOP/sample), bwd {:.1} ({:.2} MFLOP/sample), fwd+bwd {:.1}",
            ff / t_fwd / 1e9,
            ff / bf / 1e6,
            fb / t_bwd / 1e9,
            fb / bf / 1e6,
            (ff + fb) / (t_fwd + t_bwd) / 1e9
        );
    }
    if let Some((peak, how)) = wick_core::cpu::peak_gflops(rayon::current_num_threads()) {
        let (ff, fb) = flops(25.0);
        let (fm, bm) = flops(4.0);
        println!(
            "roofline: fwd+bwd {:.0}% of the fp32 peak {peak:.0} GFLOP/s ({how}) counting executed σ, {:.0}% counting σ as 4",
            100.0 * (ff + fb) / (t_fwd + t_bwd) / 1e9 / peak,
            100.0 * (fm + bm) / (t_fwd + t_bwd) / 1e9 / peak
        );
    }
    println!(
        "kernel fwd {:.3} ms, bwd {:.3} ms per batch: {:.0} samples/s for the op alone",
        t_fwd * 1e3,
        t_bwd * 1e3,
        bf / (t_fwd + t_bwd)
    );

    let t_step = time(|| autograd_step(p, &x, true), 20, 3.0);
    let t_closed = time(|| closed_form_step(p, &x), 20, 3.0);
    let t_comp = time(|| autograd_step(p, &x, false), 2, 5.0);
    println!("fused step (autograd):    {:8.3} ms/batch  {:9.0} samples/s", t_step * 1e3, bf / t_step);
    println!("fused step (closed form): {:8.3} ms/batch  {:9.0} samples/s", t_closed * 1e3, bf / t_closed);
    println!("composed step (autograd): {:8.3} ms/batch  {:9.0} samples/s", t_comp * 1e3, bf / t_comp);
    println!("ratio fused/composed (autograd steps): {:.0}x", t_comp / t_step);
}

fn main() {
    let threads = rayon::current_num_threads();
    println!("nade bench: {threads} rayon thread(s), kernel backend {:?}", backend());
    let dev = Device::Cpu;
    let mut rng = Rng::stream(0, "nade-bench");
    let p = Params {
        c: Var::from_vec(vec![0f32; H], H, &dev).unwrap(),
        w: Var::from_vec(uniform(H * D, 1.0 / (D as f64).sqrt(), &mut rng), (H, D), &dev).unwrap(),
        v: Var::from_vec(uniform(D * H, 1.0 / (H as f64).sqrt(), &mut rng), (D, H), &dev).unwrap(),
        b: Var::from_vec(vec![0f32; D], D, &dev).unwrap(),
    };
    let x: Vec<f32> = (0..B * D).map(|_| (rng.uniform() < 0.2) as u8 as f32).collect();
    bench("random binary x, P(1) = 0.2", x, &p);
    match wick_core::data::Dataset::load("mnist5k") {
        Ok(ds) => bench("mnist5k, first 100 images", ds.binarized(None)[..B * D].to_vec(), &p),
        Err(e) => println!("\n(mnist5k not benchmarked: {e})"),
    }
}
