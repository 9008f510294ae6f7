//! One order-agnostic NADE training step (loss and gradients, then Adam) at mnist5k sizes
//! (D = 784, H = 500, batch 100), and its products timed alone:
//! `cargo run --release -p wick-generative --example prof_oanade_step -- [LAYERS] [STEPS]`.
use candle_core::{Device, Tensor};
use std::time::Instant;
use wick_core::optim::{OptimConfig, Optimizer};
use wick_core::rng::Rng;
use wick_generative::model::DensityModel;
use wick_generative::OaNade;

fn main() {
    wick_core::cpu::keep_freed_memory();
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().unwrap()).collect();
    let (layers, steps) = (args.first().copied().unwrap_or(2), args.get(1).copied().unwrap_or(100));
    let (d, h, b) = (784, 500, 100);
    let dev = Device::Cpu;
    let m = OaNade::new(d, h, layers, 1, 0, &dev).unwrap();
    let mut r = Rng::stream(0, "x");
    let x: Vec<f32> = (0..b * d).map(|_| (r.uniform() < 0.17) as u8 as f32).collect();
    let x = Tensor::from_vec(x, (b, d), &dev).unwrap();
    let mut opt = Optimizer::new(OptimConfig::default(), m.params()).unwrap();
    let (mut t_grad, mut t_opt) = (0f64, 0f64);
    for s in 0..steps + 3 {
        let keys: Vec<u64> = (0..b as u64).map(|i| s as u64 * 1000 + i).collect();
        let t = Instant::now();
        let (_, g) = m.loss_and_grads_keyed(&x, &keys).unwrap();
        let t1 = Instant::now();
        opt.step(m.params(), &g, 1e-3).unwrap();
        if s >= 3 {
            t_grad += (t1 - t).as_secs_f64();
            t_opt += t1.elapsed().as_secs_f64();
        }
    }
    let n = steps as f64;
    println!("oanade {layers}×{h}, batch {b}: loss+grads {:.3} ms, Adam {:.3} ms per step; {:.0} samples/s", t_grad / n * 1e3, t_opt / n * 1e3, b as f64 * n / (t_grad + t_opt));
    // The step's products alone, each as one linalg::matmul call.
    let mut rr = Rng::stream(1, "y");
    let mut v = |n: usize| (0..n).map(|_| rr.uniform() as f32 - 0.5).collect::<Vec<f32>>();
    let (xa, w1, hh, w2, vv, dz) = (v(b * d), v(d * h), v(b * h), v(h * h), v(h * d), v(b * d));
    let mut out = vec![0f32; d * h];
    let mut time = |what: &str, f: &mut dyn FnMut(&mut [f32])| {
        f(&mut out);
        let t = Instant::now();
        for _ in 0..50 {
            f(&mut out);
        }
        println!("  {what}: {:.3} ms", t.elapsed().as_secs_f64() / 50.0 * 1e3);
    };
    use wick_core::linalg::matmul;
    time("x·W1 [100,784]×[784,500]", &mut |o| matmul(b, h, d, o, (h, 1), true, &xa, (d, 1), &w1, (h, 1)));
    time("h·W2 [100,500]×[500,500]", &mut |o| matmul(b, h, h, o, (h, 1), true, &hh, (h, 1), &w2, (h, 1)));
    time("h·V [100,500]×[500,784]", &mut |o| matmul(b, d, h, o, (d, 1), true, &hh, (h, 1), &vv, (d, 1)));
    time("∂V = hᵀ·∂z [500,100]×[100,784]", &mut |o| matmul(h, d, b, o, (d, 1), false, &hh, (1, h), &dz, (d, 1)));
    time("∂h = ∂z·Vᵀ [100,784]×[784,500]", &mut |o| matmul(b, h, d, o, (h, 1), false, &dz, (d, 1), &vv, (1, d)));
    time("∂W1 = xᵀ·∂h [784,100]×[100,500]", &mut |o| matmul(d, h, b, o, (h, 1), false, &xa, (1, d), &hh, (h, 1)));
    // The first layer's sparse operands: x ⊙ m (about a fifteenth nonzero) and m (about half).
    let (xm, mk): (Vec<f32>, Vec<f32>) = (0..b * d).map(|_| { let m = (rr.uniform() < 0.5) as u8 as f32; ((rr.uniform() < 0.13) as u8 as f32 * m, m) }).unzip();
    use wick_core::linalg::{sparse_matmul_acc, sparse_t_matmul};
    time("(x⊙m)·Wx sparse", &mut |o| sparse_matmul_acc(b, d, h, &mut o[..b * h], &xm, &w1));
    time("m·Wm sparse", &mut |o| sparse_matmul_acc(b, d, h, &mut o[..b * h], &mk, &w1));
    time("∂Wx = (x⊙m)ᵀ·∂h sparse", &mut |o| sparse_t_matmul(b, d, h, o, &xm, &hh));
    time("∂Wm = mᵀ·∂h sparse", &mut |o| sparse_t_matmul(b, d, h, o, &mk, &hh));
}
