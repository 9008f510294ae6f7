//! NADE's fused kernel alone, forward and backward, on the first 100 mnist5k images (D = 784,
//! H = 500): for `perf record` and A/B runs of kernel changes.
//! `RAYON_NUM_THREADS=2 cargo run --release -p wick-generative --example prof_nade [ITERS]`
use candle_core::{Device, Tensor};
use std::time::Instant;
use wick_core::rng::Rng;
use wick_generative::nade_op::{backend, nade_grads, nade_logits};

fn main() {
    let (b, d, h) = (100, 784, 500);
    let iters: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let dev = Device::Cpu;
    let mut rng = Rng::stream(0, "prof-nade");
    let mut uni = |n: usize, s: f64| -> Vec<f32> { (0..n).map(|_| ((2.0 * rng.uniform() - 1.0) * s) as f32).collect() };
    let wt = Tensor::from_vec(uni(h * (d + 1), 1.0 / (d as f64).sqrt()), (h, d + 1), &dev).unwrap();
    let vt = Tensor::from_vec(uni(d * (h + 1), 1.0 / (h as f64).sqrt()), (d, h + 1), &dev).unwrap();
    let dz = Tensor::from_vec(uni(b * d, 0.01), (b, d), &dev).unwrap();
    let xv = wick_core::data::Dataset::load("mnist5k").expect("mnist5k").binarized(None)[..b * d].to_vec();
    let x = Tensor::from_vec(xv, (b, d), &dev).unwrap();
    let med = |mut ts: Vec<f64>| {
        ts.sort_by(f64::total_cmp);
        ts[ts.len() / 2] * 1e3
    };
    let (mut tf, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..iters {
        let t = Instant::now();
        drop(nade_logits(&x, &wt, &vt).unwrap());
        tf.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        drop(nade_grads(&x, &wt, &vt, &dz).unwrap());
        tb.push(t.elapsed().as_secs_f64());
    }
    // The outputs' bits, so that an A/B of two builds shows whether a change kept them.
    let z = nade_logits(&x, &wt, &vt).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let (gw, gv) = nade_grads(&x, &wt, &vt, &dz).unwrap();
    let mut bits = z;
    bits.extend(gw.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    bits.extend(gv.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    let hash = bits.iter().fold(0xcbf29ce484222325u64, |h, v| (h ^ v.to_bits() as u64).wrapping_mul(0x100000001b3));
    let (f, bw) = (med(tf), med(tb));
    println!(
        "{:?}, {} thread(s): fwd {f:.3} ms, bwd {bw:.3} ms per batch of {b}: {:.0} samples/s (medians of {iters}); outputs' FNV-1a {hash:016x}",
        backend(),
        rayon::current_num_threads(),
        b as f64 / (f + bw) * 1e3
    );
}
