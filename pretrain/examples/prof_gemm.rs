//! The dense layer's three products at the MLP encoder's and decoder's shapes (batch 256):
//! [`wick_pretrain::dense`]'s functions (allocation, wᵀ and bias included) against the bare `gemm`
//! call that parallelises itself (`Parallelism::Rayon`), in GFLOP/s, whether that call's bits
//! depend on the thread count, and the forward's transpose alone. `RAYON_NUM_THREADS=2 cargo run --release -p wick-pretrain --example prof_gemm`
use gemm::{gemm, Parallelism};
use std::time::Instant;
use wick_core::rng::Rng;
use wick_pretrain::dense;

fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    t.elapsed().as_secs_f64() / reps as f64
}

/// dst (m × n, row-major) = lhs (strides lrs, lcs) · rhs (strides rrs, rcs), with `par` threads.
#[allow(clippy::too_many_arguments)]
fn one_call(m: usize, n: usize, k: usize, dst: &mut [f32], lhs: &[f32], (lrs, lcs): (usize, usize), rhs: &[f32], (rrs, rcs): (usize, usize), par: usize) {
    let p = if par == 1 { Parallelism::None } else { Parallelism::Rayon(par) };
    unsafe { gemm(m, n, k, dst.as_mut_ptr(), 1, n as isize, false, lhs.as_ptr(), lcs as isize, lrs as isize, rhs.as_ptr(), rcs as isize, rrs as isize, 1.0, 1.0, false, false, false, p) }
}

fn main() {
    wick_core::cpu::keep_freed_memory(); // as the wick binary does
    let threads = rayon::current_num_threads();
    let n = 256;
    let mut r = Rng::stream(0, "x");
    let mut rand = |len: usize| (0..len).map(|_| r.uniform() as f32 - 0.5).collect::<Vec<f32>>();
    println!("batch {n}, {threads} threads; GFLOP/s of dense.rs / the bare gemm call (bits at 1, 2, 3, 4 and 7 threads equal?)");
    for (k, o) in [(784, 512), (512, 256), (256, 256), (256, 784)] {
        let (x, w, dh) = (rand(n * k), rand(o * k), rand(n * o));
        let b = vec![0f32; o];
        let fl = 2.0 * (n * k * o) as f64 / 1e9;
        // y = x wᵀ
        let t_blk = time(20, || {
            std::hint::black_box(dense::forward(&x, &w, &b, false, n, k, o));
        });
        let mut y1 = vec![0f32; n * o];
        let mut y2 = vec![0f32; n * o];
        let t_one = time(20, || one_call(n, o, k, &mut y2, &x, (k, 1), &w, (1, k), threads));
        one_call(n, o, k, &mut y1, &x, (k, 1), &w, (1, k), 1);
        let mut same_y = y1 == y2;
        // The same product from wᵀ [k, o] row-major (as dense::forward packs it).
        let mut wt = vec![0f32; k * o];
        for i in 0..o {
            for j in 0..k {
                wt[j * o + i] = w[i * k + j];
            }
        }
        let t_one_t = time(20, || one_call(n, o, k, &mut y2, &x, (k, 1), &wt, (o, 1), threads));
        let t_tr = time(20, || {
            std::hint::black_box(dense::transpose_for_bench(&w, o, k));
        });
        assert_eq!(dense::transpose_for_bench(&w, o, k), wt);
        println!("  transpose [{o}, {k}]: {:.3} ms", t_tr * 1e3);
        for par in [1, 2, 3, 4, 7] {
            let mut y3 = vec![0f32; n * o];
            one_call(n, o, k, &mut y3, &x, (k, 1), &wt, (o, 1), par);
            same_y &= y3 == y1;
        }
        // ∂W = dhᵀ x  [o, k]
        let t_blk_w = time(20, || {
            std::hint::black_box(dense::grad_weight(&dh, &x, n, k, o));
        });
        let (mut g1, mut g2) = (vec![0f32; o * k], vec![0f32; o * k]);
        let t_one_w = time(20, || one_call(o, k, n, &mut g2, &dh, (1, o), &x, (k, 1), threads));
        one_call(o, k, n, &mut g1, &dh, (1, o), &x, (k, 1), 1);
        let mut same_w = g1 == g2;
        for par in [3, 4, 7] {
            let mut g3 = vec![0f32; o * k];
            one_call(o, k, n, &mut g3, &dh, (1, o), &x, (k, 1), par);
            same_w &= g3 == g1;
        }
        // ∂x = dh w  [n, k]
        let t_blk_x = time(20, || {
            std::hint::black_box(dense::grad_input(&dh, &w, n, k, o));
        });
        let (mut d1, mut d2) = (vec![0f32; n * k], vec![0f32; n * k]);
        let t_one_x = time(20, || one_call(n, k, o, &mut d2, &dh, (o, 1), &w, (k, 1), threads));
        one_call(n, k, o, &mut d1, &dh, (o, 1), &w, (k, 1), 1);
        let mut same_x = d1 == d2;
        for par in [3, 4, 7] {
            let mut d3 = vec![0f32; n * k];
            one_call(n, k, o, &mut d3, &dh, (o, 1), &w, (k, 1), par);
            same_x &= d3 == d1;
        }
        println!(
            "{k:>4} → {o:<4} y = x Wᵀ {:6.1} / {:6.1}, from wᵀ {:6.1} ({same_y})   ∂W {:6.1} / {:6.1} ({same_w})   ∂x {:6.1} / {:6.1} ({same_x})",
            fl / t_blk,
            fl / t_one,
            fl / t_one_t,
            fl / t_blk_w,
            fl / t_one_w,
            fl / t_blk_x,
            fl / t_one_x
        );
    }
}

