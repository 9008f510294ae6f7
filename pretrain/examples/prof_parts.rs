//! Time the pieces of a SimCLR step on their own (batch 256, 28×28, two views):
//! `cargo run --release -p wick-pretrain --example prof_parts`.
use std::time::Instant;
use wick_core::rng::Rng;
use wick_pretrain::augment::Augment;
use wick_pretrain::dense;

fn time<T>(what: &str, reps: usize, mut f: impl FnMut() -> T) {
    let _ = f();
    let t = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(f());
    }
    println!("{what}: {:.2} ms", t.elapsed().as_secs_f64() / reps as f64 * 1e3);
}

fn main() {
    graph();
    let mut r = Rng::stream(0, "x");
    let (b, d) = (256, 784);
    let x: Vec<f32> = (0..b * d).map(|_| (r.uniform() < 0.2) as u8 as f32).collect();
    let aug = Augment::for_images(28, 28);
    time("augment 2×256 views", 10, || aug.view_pairs(&x, 0, "augment", 0));
    let n = 2 * b;
    for (k, o) in [(784, 512), (512, 256), (256, 256), (256, 128), (3136, 256), (288, 64), (256, 512), (512, 512)] {
        let n = if k == 288 { n * 49 } else { n };
        let xs: Vec<f32> = (0..n * k).map(|_| r.normal() as f32).collect();
        let w: Vec<f32> = (0..o * k).map(|_| r.normal() as f32).collect();
        let bias = vec![0.1f32; o];
        let gflop = 2.0 * (n * k * o) as f64 / 1e9;
        println!("dense n {n} k {k} o {o} ({gflop:.2} GFLOP per product)");
        time("  forward", 10, || dense::forward(&xs, &w, &bias, true, n, k, o));
        let dh: Vec<f32> = (0..n * o).map(|_| r.normal() as f32).collect();
        time("  grad_weight", 10, || dense::grad_weight(&dh, &xs, n, k, o));
        time("  grad_input", 10, || dense::grad_input(&dh, &w, n, k, o));
    }
}

/// Whole-graph timings of the ops with Candle's backward.
#[allow(dead_code)]
pub fn graph() {
    use candle_core::{Device, Tensor, Var};
    let dev = Device::Cpu;
    let mut r = Rng::stream(1, "g");
    let mut t = |s: &[usize]| Tensor::from_vec((0..s.iter().product()).map(|_| r.normal() as f32 * 0.05).collect::<Vec<_>>(), s, &dev).unwrap();
    let p = Var::from_tensor(&t(&[512, 128])).unwrap();
    time("nt_xent fwd", 10, || wick_pretrain::simclr::nt_xent_of_projections(p.as_tensor(), 0.5).unwrap().to_scalar::<f32>().unwrap());
    time("nt_xent fwd+bwd", 10, || wick_pretrain::simclr::nt_xent_of_projections(p.as_tensor(), 0.5).unwrap().backward().unwrap());
    let x = t(&[512, 784]);
    let w1 = Var::from_tensor(&t(&[512, 784])).unwrap();
    let b1 = Var::from_tensor(&t(&[512])).unwrap();
    time("fc1 fwd", 10, || dense::dense(&x, w1.as_tensor(), b1.as_tensor(), true).unwrap());
    time("fc1 fwd+bwd", 10, || dense::dense(&x, w1.as_tensor(), b1.as_tensor(), true).unwrap().sum_all().unwrap().backward().unwrap());
    let h = Var::from_tensor(&t(&[512, 512])).unwrap();
    let w2 = Var::from_tensor(&t(&[256, 512])).unwrap();
    let b2 = Var::from_tensor(&t(&[256])).unwrap();
    time("fc2 fwd+bwd (input grad too)", 10, || dense::dense(h.as_tensor(), w2.as_tensor(), b2.as_tensor(), true).unwrap().sum_all().unwrap().backward().unwrap());
}
