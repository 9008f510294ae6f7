//! Where an FVSBN training step spends its time (D = 784, batch 100).
use candle_core::{Device, Tensor};
use std::time::Instant;
use wick_core::optim::{OptimConfig, Optimizer};
use wick_core::rng::Rng;
use wick_generative::{DensityModel, Fvsbn};
fn time(name: &str, mut f: impl FnMut()) {
    f();
    let t = Instant::now();
    for _ in 0..30 { f(); }
    println!("{name}: {:.2} ms", t.elapsed().as_secs_f64() * 1000.0 / 30.0);
}
fn main() {
    let dev = Device::Cpu;
    let d = 784;
    let m = Fvsbn::new(d, &mut Rng::stream(0, "init"), &dev).unwrap();
    let mut r = Rng::stream(0, "x");
    let x: Vec<f32> = (0..100 * d).map(|_| (r.uniform() < 0.2) as u8 as f32).collect();
    let x = Tensor::from_vec(x, (100, d), &dev).unwrap();
    time("loss_and_grads", || { let _ = m.loss_and_grads(&x, 0).unwrap(); });
    let (_, g) = m.loss_and_grads(&x, 0).unwrap();
    for kind in ["adam", "sgd"] {
        let cfg = OptimConfig { kind: kind.parse().unwrap(), ..OptimConfig::default() };
        let mut opt = Optimizer::new(cfg, m.params()).unwrap();
        time(&format!("{kind} step"), || opt.step(m.params(), &g, 1e-3).unwrap());
    }
}
