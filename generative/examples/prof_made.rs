//! Where a MADE training step spends its time (D = 784, H = 500, batch B = 100 or the first
//! argument: `cargo run --release -p wick-generative --example prof_made [B]`).
use candle_core::{Device, Tensor};
use std::time::Instant;
use wick_core::optim::{OptimConfig, Optimizer};
use wick_core::rng::Rng;
use wick_generative::made::{Made, Order};
use wick_generative::DensityModel;
fn time(name: &str, mut f: impl FnMut()) {
    f();
    let t = Instant::now();
    for _ in 0..20 { f(); }
    println!("{name}: {:.2} ms", t.elapsed().as_secs_f64() * 1000.0 / 20.0);
}
fn main() {
    let dev = Device::Cpu;
    let d = 784;
    let m = Made::new(d, 500, 1, 1, Order::Natural, false, 0, &dev).unwrap();
    let mut r = Rng::stream(0, "x");
    let b: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let x: Vec<f32> = (0..b * d).map(|_| (r.uniform() < 0.2) as u8 as f32).collect();
    let x = Tensor::from_vec(x, (b, d), &dev).unwrap();
    time("logits", || { let _ = m.logits(&x, 0).unwrap(); });
    time("nll fwd", || { let _ = m.nll(&x).unwrap().mean_all().unwrap(); });
    time("loss_and_grads", || { let _ = m.loss_and_grads(&x, 0).unwrap(); });
    time("autograd", || { let _ = m.train_nll(&x, 0).unwrap().mean_all().unwrap().backward().unwrap(); });
    time("loss_and_grads", || { let _ = m.loss_and_grads(&x, 0).unwrap(); });
    let (_, g) = m.loss_and_grads(&x, 0).unwrap();
    let mut opt = Optimizer::new(OptimConfig::default(), m.params()).unwrap();
    time("adam step", || opt.step(m.params(), &g, 1e-3).unwrap());
}
