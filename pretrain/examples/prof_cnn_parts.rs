//! The CNN encoder's layers at 512 views (SimCLR's two views of batch 256), each product and pass timed
//! alone: `RAYON_NUM_THREADS=2 cargo run --release -p wick-pretrain --example prof_cnn_parts`.
use std::time::Instant;
use wick_core::rng::Rng;
use wick_pretrain::conv::{col2im, im2col, Conv};
use wick_pretrain::dense;
fn time<T>(what: &str, flops: f64, reps: usize, mut f: impl FnMut() -> T) -> f64 {
    let _ = f();
    let t = Instant::now();
    for _ in 0..reps { std::hint::black_box(f()); }
    let dt = t.elapsed().as_secs_f64() / reps as f64;
    println!("{what:40}: {:7.3} ms {:7.1} GFLOP/s", dt * 1e3, flops / dt / 1e9);
    dt
}
fn main() {
    wick_core::cpu::keep_freed_memory();
    let mut r = Rng::stream(0, "x");
    let mut v = |n: usize| (0..n).map(|_| r.uniform() as f32 - 0.5).collect::<Vec<f32>>();
    let b = 512;
    let mut tot = 0.0;
    let x0 = v(b * 28 * 28);
    let c1 = Conv { c_in: 1, c_out: 32, k: 3, stride: 2, pad: 1 };
    let c2 = Conv { c_in: 32, c_out: 64, k: 3, stride: 2, pad: 1 };
    tot += time("im2col c1", 0.0, 20, || im2col(&c1, &x0, 28, 28));
    let col1 = im2col(&c1, &x0, 28, 28);
    let (w1, b1) = (v(32 * 9), v(32));
    let r1 = b * 196;
    tot += time("c1 fwd [100352x9]x[9x32]", 2.0 * (r1 * 9 * 32) as f64, 20, || dense::forward(&col1, &w1, &b1, true, r1, 9, 32));
    let y1 = dense::forward(&col1, &w1, &b1, true, r1, 9, 32);
    tot += time("im2col c2", 0.0, 20, || im2col(&c2, &y1, 14, 14));
    let col2 = im2col(&c2, &y1, 14, 14);
    let (w2, b2) = (v(64 * 288), v(64));
    let r2 = b * 49;
    tot += time("c2 fwd [25088x288]x[288x64]", 2.0 * (r2 * 288 * 64) as f64, 20, || dense::forward(&col2, &w2, &b2, true, r2, 288, 64));
    let (w3, b3) = (v(256 * 3136), v(256));
    let x3 = v(b * 3136);
    tot += time("fc fwd [512x3136]x[3136x256]", 2.0 * (b * 3136 * 256) as f64, 20, || dense::forward(&x3, &w3, &b3, true, b, 3136, 256));
    let g3 = v(b * 256);
    tot += time("fc dW", 2.0 * (b * 3136 * 256) as f64, 20, || dense::grad_weight(&g3, &x3, b, 3136, 256));
    tot += time("fc dx", 2.0 * (b * 3136 * 256) as f64, 20, || dense::grad_input(&g3, &w3, b, 3136, 256));
    let g2 = v(r2 * 64);
    tot += time("c2 dW [64x25088]x[25088x288]", 2.0 * (r2 * 288 * 64) as f64, 20, || dense::grad_weight(&g2, &col2, r2, 288, 64));
    tot += time("c2 dx [25088x64]x[64x288]", 2.0 * (r2 * 288 * 64) as f64, 20, || dense::grad_input(&g2, &w2, r2, 288, 64));
    let gi = dense::grad_input(&g2, &w2, r2, 288, 64);
    tot += time("col2im c2", 0.0, 20, || col2im(&c2, &gi, 14, 14));
    // The two above fused, with the first layer's ReLU backward, as the step runs them.
    time("c2 dx + col2im + relu fused (not in the total)", 2.0 * (r2 * 288 * 64) as f64, 20, || wick_pretrain::conv::grad_input_col2im(&c2, &g2, &w2, 14, 14, Some(&y1)));
    let g1 = v(r1 * 32);
    tot += time("c1 dW [32x100352]x[100352x9]", 2.0 * (r1 * 9 * 32) as f64, 20, || dense::grad_weight(&g1, &col1, r1, 9, 32));
    let mut gg = g1.clone();
    tot += time("relu_grad c1", 0.0, 20, || wick_core::linalg::relu_grad_inplace(&mut gg, &y1));
    tot += time("col_sums c1", 0.0, 20, || wick_core::linalg::col_sums(&g1, 32));
    println!("total {:.2} ms", tot * 1e3);
}
