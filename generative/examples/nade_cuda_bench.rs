//! NADE training-step throughput on CUDA: the fused op against the composed Candle ops, with the
//! CPU's fused kernel as a reference measured in the same run.
//!
//! ```text
//! source scripts/cuda-env.sh
//! RAYON_NUM_THREADS=8 cargo run --release --features cuda -p wick-generative --example nade_cuda_bench [-- BATCH...]
//! ```
//!
//! D = 784, H = 500 (MNIST's NADE), batches 100 and 1000 by default; x is the first images of
//! mnist5k binarised when the data file is found, else random binary with P(1) = 0.13. Timed
//! (median seconds per call, the device synchronised before the clock stops):
//! * `kernel fwd` / `kernel bwd`: `nade_logits` and `nade_grads` (with a fixed dz) alone;
//! * `fused step`: the model's `loss_and_grads` (closed-form dz around the fused op);
//! * `composed step`: `train_nll` on the composed ops + `backward()` (what `--device cuda` ran
//!   before the kernels existed), a few iterations only;
//! * `cpu fused step`: `loss_and_grads` on the CPU.
//!
//! No optimizer step is included. Without a CUDA device it says so and exits with status 2.
use candle_core::{Device, Tensor};
use std::time::Instant;
use wick_core::rng::Rng;
use wick_generative::nade_op::{nade_grads, nade_logits};
use wick_generative::{DensityModel, Nade};

const D: usize = 784;
const H: usize = 500;

/// Median seconds per call: one warm-up call, then until `min_iters` calls and `min_s` seconds.
fn time(dev: &Device, mut f: impl FnMut(), min_iters: usize, min_s: f64) -> f64 {
    f();
    dev.synchronize().unwrap();
    let t0 = Instant::now();
    let mut ts = Vec::new();
    while ts.len() < min_iters || t0.elapsed().as_secs_f64() < min_s {
        let t = Instant::now();
        f();
        dev.synchronize().unwrap();
        ts.push(t.elapsed().as_secs_f64());
    }
    ts.sort_by(f64::total_cmp);
    ts[ts.len() / 2]
}

fn main() {
    let gpu = match Device::new_cuda(0) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("nade_cuda_bench: no CUDA device ({e}); build with --features cuda on a machine with a GPU");
            std::process::exit(2);
        }
    };
    let batches: Vec<usize> = {
        let v: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
        if v.is_empty() {
            vec![100, 1000]
        } else {
            v
        }
    };
    let nmax = *batches.iter().max().unwrap();
    let (source, pool) = match wick_core::data::Dataset::load("mnist5k") {
        Ok(ds) if ds.binarized(None).len() >= nmax * D => ("mnist5k", ds.binarized(None)[..nmax * D].to_vec()),
        _ => {
            let mut rng = Rng::stream(0, "x");
            ("random binary, P(1) = 0.13", (0..nmax * D).map(|_| (rng.uniform() < 0.13) as u8 as f32).collect())
        }
    };
    println!(
        "nade_cuda_bench: D = {D}, H = {H}, x from {source}, {} rayon thread(s) for the CPU reference",
        rayon::current_num_threads()
    );
    let model = |dev: &Device| Nade::new(D, H, &mut Rng::stream(0, "init"), dev).unwrap();
    let (mg, mc) = (model(&gpu), model(&Device::Cpu));
    assert!(mg.fused(), "the fused op should be used on CUDA");
    for &b in &batches {
        let xv = pool[..b * D].to_vec();
        let xg = Tensor::from_vec(xv.clone(), (b, D), &gpu).unwrap();
        let xc = Tensor::from_vec(xv, (b, D), &Device::Cpu).unwrap();
        let bf = b as f64;
        println!("\n== batch {b}");

        // Op-level inputs at the model's init scale: W ~ U(±1/√D), V ~ U(±1/√H).
        let mut rng = Rng::stream(1, "w");
        let u = |n: usize, s: f64, rng: &mut Rng| (0..n).map(|_| ((2.0 * rng.uniform() - 1.0) * s) as f32).collect();
        let w = Tensor::from_vec(u(H * (D + 1), 0.036, &mut rng), (H, D + 1), &gpu).unwrap();
        let v = Tensor::from_vec(u(D * (H + 1), 0.045, &mut rng), (D, H + 1), &gpu).unwrap();
        let dz = Tensor::from_vec(u(b * D, 0.01, &mut rng), (b, D), &gpu).unwrap();
        let t_fwd = time(&gpu, || drop(nade_logits(&xg, &w, &v).unwrap()), 20, 1.0);
        let t_bwd = time(&gpu, || drop(nade_grads(&xg, &w, &v, &dz).unwrap()), 20, 1.0);
        println!(
            "kernel fwd {:.3} ms, bwd {:.3} ms: {:.0} samples/s for the op alone",
            t_fwd * 1e3,
            t_bwd * 1e3,
            bf / (t_fwd + t_bwd)
        );

        let t_fused = time(&gpu, || drop(mg.loss_and_grads(&xg, 0).unwrap()), 20, 2.0);
        let t_comp = time(
            &gpu,
            || {
                let loss = mg.train_nll(&xg, 0).unwrap().mean_all().unwrap();
                drop(loss.backward().unwrap())
            },
            3,
            3.0,
        );
        let t_cpu = time(&Device::Cpu, || drop(mc.loss_and_grads(&xc, 0).unwrap()), 3, 3.0);
        println!("cuda fused step:    {:9.3} ms/batch {:10.0} samples/s", t_fused * 1e3, bf / t_fused);
        println!("cuda composed step: {:9.3} ms/batch {:10.0} samples/s", t_comp * 1e3, bf / t_comp);
        println!("cpu fused step:     {:9.3} ms/batch {:10.0} samples/s", t_cpu * 1e3, bf / t_cpu);
        println!(
            "ratio cuda fused / cuda composed: {:.1}x; cuda fused / cpu fused: {:.1}x",
            t_comp / t_fused,
            t_cpu / t_fused
        );
    }
}
