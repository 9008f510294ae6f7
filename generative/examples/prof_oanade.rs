//! Order-agnostic NADE training steps (closed-form loss and gradients + Adam) at MNIST sizes
//! (D = 784, H = 500, batch 100) on random binary batches: `prof_oanade [layers] [steps] [repeats]`
//! prints each block's ms per step, then the median and its GFLOP/s (dense count: forward
//! 2B(2D·H + (L−1)H² + H·D), backward twice that without the input gradient's first layer).
use candle_core::{Device, Tensor};
use std::time::Instant;
use wick_core::optim::{OptimConfig, Optimizer};
use wick_core::rng::Rng;
use wick_generative::oanade::OaNade;
use wick_generative::DensityModel;
fn main() {
    wick_core::cpu::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let layers: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let steps: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(50);
    let repeats: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
    let (d, h, b) = (784, 500, 100);
    let dev = Device::Cpu;
    let m = OaNade::new(d, h, layers, 1, 0, &dev).unwrap();
    let mut r = Rng::stream(0, "x");
    let x: Vec<f32> = (0..b * d).map(|_| (r.uniform() < 0.13) as u8 as f32).collect();
    let x = Tensor::from_vec(x, (b, d), &dev).unwrap();
    let mut opt = Optimizer::new(OptimConfig::default(), m.params()).unwrap();
    let mut step = |s: u64| {
        let keys: Vec<u64> = (s * b as u64..(s + 1) * b as u64).collect();
        let (_, g) = m.loss_and_grads_keyed(&x, &keys).unwrap();
        opt.step(m.params(), &g, 1e-4).unwrap();
    };
    for s in 0..3 {
        step(s);
    }
    let mut ms = Vec::new();
    for rep in 0..repeats {
        let t = Instant::now();
        for s in 0..steps {
            step(1000 + rep as u64 * steps + s);
        }
        ms.push(t.elapsed().as_secs_f64() * 1000.0 / steps as f64);
        println!("block {rep}: {:.3} ms/step", ms[rep]);
    }
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let med = ms[ms.len() / 2];
    let fwd = 2.0 * b as f64 * (2.0 * (d * h) as f64 + ((layers - 1) * h * h) as f64 + (h * d) as f64);
    let bwd = 2.0 * fwd - 2.0 * b as f64 * 2.0 * (d * h) as f64;
    let gflops = (fwd + bwd) / med / 1e6;
    if let Some((peak, how)) = wick_core::cpu::peak_gflops(rayon::current_num_threads()) {
        println!("roofline: {gflops:.1} GFLOP/s, {:.0}% of the fp32 peak {peak:.0} GFLOP/s ({how})", 100.0 * gflops / peak);
    }
    println!("{{\"layers\": {layers}, \"ms_per_step\": {med:.3}, \"samples_per_s\": {:.0}, \"gflops\": {gflops:.1}}}", b as f64 * 1000.0 / med);
}
