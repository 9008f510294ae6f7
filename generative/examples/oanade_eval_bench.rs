//! Is order-agnostic NADE's 2-layer evaluation gemm-bound? Times one ordering's D batched steps
//! (`log_prob_ordering_steps` in Candle ops and `log_prob_ordering_steps_host`, what `wick` runs
//! on the CPU; D = 784, H = 500) against the same number of bare `[B, H] × [H, H]`
//! Candle matmuls, and prints the GFLOP/s of each (2·B·H² per step) and their ratio.
//! `cargo run --release -p wick-generative --example oanade_eval_bench [B] [THREADS]`
use candle_core::{Device, Tensor};
use std::time::Instant;
use wick_core::rng::Rng;
use wick_generative::OaNade;

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("B and THREADS are integers")).collect();
    let (bsz, threads) = (args.first().copied().unwrap_or(250), args.get(1).copied().unwrap_or(2));
    wick_core::cpu::keep_freed_memory(); // as the wick binary does
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().unwrap();
    let (d, h) = (784, 500);
    let dev = Device::Cpu;
    let m = OaNade::new(d, h, 2, 1, 0, &dev).unwrap();
    let mut r = Rng::stream(0, "x");
    let x: Vec<f32> = (0..bsz * d).map(|_| (r.uniform() < 0.2) as u8 as f32).collect();
    let x = Tensor::from_vec(x, (bsz, d), &dev).unwrap();
    let flop = 2.0 * (bsz * h * h * d) as f64;
    let order = m.orderings()[0].clone();
    let t = Instant::now();
    let candle = m.log_prob_ordering_steps(&x, &order).unwrap();
    let steps = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let host = m.log_prob_ordering_steps_host(&x, &order).unwrap();
    let host_s = t.elapsed().as_secs_f64();
    let same = candle.iter().zip(&host).all(|(a, b)| a.to_bits() == b.to_bits());
    let a = Tensor::from_vec((0..bsz * h).map(|i| (i % 7) as f32 * 0.1).collect::<Vec<_>>(), (bsz, h), &dev).unwrap();
    let w = Tensor::from_vec((0..h * h).map(|i| (i % 5) as f32 * 0.01).collect::<Vec<_>>(), (h, h), &dev).unwrap();
    let t = Instant::now();
    for _ in 0..d {
        std::hint::black_box(a.matmul(&w).unwrap());
    }
    let gemm = t.elapsed().as_secs_f64();
    println!(
        "B={bsz} threads={threads}: one ordering in Candle ops {steps:.2} s = {:.1} GFLOP/s, on host buffers (what `wick` runs) {host_s:.2} s = {:.1} GFLOP/s (same bits: {same}); {d} bare matmuls {gemm:.2} s = {:.1} GFLOP/s; host steps/gemm time {:.2}",
        flop / steps / 1e9,
        flop / host_s / 1e9,
        flop / gemm / 1e9,
        host_s / gemm
    );
}
