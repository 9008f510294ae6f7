//! Backward cost of a dense layer with W [out, in] (x Wᵀ) against W [in, out] (x W), and of the bias and ReLU.
use candle_core::{Device, Tensor, Var};
use std::time::Instant;
fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1., (256, 784), &dev)?;
    let wt = Var::from_tensor(&Tensor::randn(0f32, 0.03, (512, 784), &dev)?)?;
    let wn = Var::from_tensor(&Tensor::randn(0f32, 0.03, (784, 512), &dev)?)?;
    let b = Var::from_tensor(&Tensor::zeros(512, candle_core::DType::F32, &dev)?)?;
    for (name, f) in [
        ("x Wt", Box::new(|| x.matmul(&wt.t()?)) as Box<dyn Fn() -> candle_core::Result<Tensor>>),
        ("x W", Box::new(|| x.matmul(&wn))),
        ("x W + b", Box::new(|| x.matmul(&wn)?.broadcast_add(&b))),
        ("relu(x W + b)", Box::new(|| x.matmul(&wn)?.broadcast_add(&b)?.relu())),
    ] {
        let mut tf = 0.0; let mut tb = 0.0;
        for i in 0..22 {
            let t = Instant::now();
            let y = f()?.sum_all()?;
            let t1 = Instant::now();
            let _g = y.backward()?;
            let t2 = Instant::now();
            if i >= 2 { tf += (t1 - t).as_secs_f64(); tb += (t2 - t1).as_secs_f64(); }
        }
        println!("{name}: forward {:.2} ms backward {:.2} ms", tf / 20.0 * 1e3, tb / 20.0 * 1e3);
    }
    Ok(())
}
