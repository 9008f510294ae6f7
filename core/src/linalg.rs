//! Host matrix products and reductions for the closed-form CPU training steps (pretraining's
//! dense layers, order-agnostic NADE).
//!
//! **Determinism.** [`matmul`] is one call of the `gemm` crate (the one Candle's CPU matmul uses)
//! that spreads whole output tiles over the current rayon pool; every output element's sum runs
//! over the inner dimension in chunks fixed by the shape and the cache sizes, never by the thread
//! count, so the bits are the same for any number of threads (tested here and in
//! `wick_pretrain::dense`). [`col_sums`] sums rows in order within fixed chunks.

use crate::cpu::widest;
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

/// [`col_sums`] sums rows in chunks of this many (partial sums added in chunk order).
const RED: usize = 8192;

/// `dst (m × n) = lhs (m × k) · rhs (k × n)` (`acc`: `dst +=`), each operand given by its
/// (row, column) strides, so a transposed operand is a swap of its strides, not a copy.
///
/// One call instead of fixed single-threaded blocks: each block would pack the whole right
/// operand again, and small tiles are too small for gemm (`wick-pretrain`'s
/// `examples/prof_gemm.rs`: 784 → 512 at batch 256, 2 threads, forward 92–116 → 183–290 GFLOP/s,
/// weight gradient 67–97 → 197–278).
#[allow(clippy::too_many_arguments)]
pub fn matmul(m: usize, n: usize, k: usize, dst: &mut [f32], (drs, dcs): (usize, usize), acc: bool, lhs: &[f32], (lrs, lcs): (usize, usize), rhs: &[f32], (rrs, rcs): (usize, usize)) {
    matmul_with(true, m, n, k, dst, (drs, dcs), acc, lhs, (lrs, lcs), rhs, (rrs, rcs))
}

/// [`matmul`] on the calling thread only, for a product that is one task of a parallel loop
/// (the same bits as [`matmul`]: its threads split whole output tiles).
#[allow(clippy::too_many_arguments)]
pub fn matmul_serial(m: usize, n: usize, k: usize, dst: &mut [f32], (drs, dcs): (usize, usize), acc: bool, lhs: &[f32], (lrs, lcs): (usize, usize), rhs: &[f32], (rrs, rcs): (usize, usize)) {
    matmul_with(false, m, n, k, dst, (drs, dcs), acc, lhs, (lrs, lcs), rhs, (rrs, rcs))
}

#[allow(clippy::too_many_arguments)]
fn matmul_with(parallel: bool, m: usize, n: usize, k: usize, dst: &mut [f32], (drs, dcs): (usize, usize), acc: bool, lhs: &[f32], (lrs, lcs): (usize, usize), rhs: &[f32], (rrs, rcs): (usize, usize)) {
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| if rows == 0 || cols == 0 { 0 } else { (rows - 1) * rs + (cols - 1) * cs + 1 };
    assert!(dst.len() >= last(m, n, drs, dcs) && lhs.len() >= last(m, k, lrs, lcs) && rhs.len() >= last(k, n, rrs, rcs), "matmul: an operand is smaller than its extent");
    if m == 0 || n == 0 || k == 0 {
        return matmul_degenerate(m, n, k, dst, (drs, dcs), acc);
    }
    let threads = rayon::current_num_threads();
    if parallel && m <= FEW_ROWS && n > COL_BLOCK {
        return matmul_col_blocks(m, n, k, dst, (drs, dcs), acc, lhs, (lrs, lcs), rhs, (rrs, rcs));
    }
    let par = if parallel && threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
    // SAFETY: the assert above keeps every operand's m/n/k extent inside its slice, and `dst` is
    // borrowed mutably for the call.
    unsafe {
        gemm(m, n, k, dst.as_mut_ptr(), dcs as isize, drs as isize, acc, lhs.as_ptr(), lcs as isize, lrs as isize, rhs.as_ptr(), rcs as isize, rrs as isize, 1.0, 1.0, false, false, false, par)
    }
}

/// Up to this many rows, [`matmul`] splits the result's columns itself (see [`matmul_col_blocks`]).
const FEW_ROWS: usize = 128;
/// The widest column block of [`matmul_col_blocks`].
const COL_BLOCK: usize = 256;

/// [`matmul`] of a few rows (m ≤ 128: order-agnostic NADE's batch of 100): the result's columns
/// cut into blocks of at most 256 (widths fixed by n alone, multiples of 16), one single-threaded
/// gemm call per block, the blocks spread over rayon's threads. gemm's own threads ran these
/// shapes at half speed (`wick-generative`'s `examples/prof_oanade_step.rs`, 2 threads:
/// `[100,500]×[500,500]` 0.25 → 0.145 ms, `[100,784]×[784,500]` 0.40 → 0.27 ms). Each element is
/// summed by one call in gemm's order for that block's shape, so the bits ignore the thread count.
#[allow(clippy::too_many_arguments)]
fn matmul_col_blocks(m: usize, n: usize, k: usize, dst: &mut [f32], (drs, dcs): (usize, usize), acc: bool, lhs: &[f32], (lrs, lcs): (usize, usize), rhs: &[f32], (rrs, rcs): (usize, usize)) {
    let blocks = n.div_ceil(COL_BLOCK);
    let width = n.div_ceil(blocks).next_multiple_of(16);
    // The blocks write disjoint columns of dst (the caller's assert keeps every one inside it).
    let out = dst.as_mut_ptr() as usize;
    (0..blocks).into_par_iter().for_each(|j| {
        let c0 = j * width;
        if c0 >= n {
            return;
        }
        let cn = width.min(n - c0);
        // SAFETY: column block [c0, c0 + cn) of an m × n result inside dst, of an n-column rhs
        // inside rhs (asserted by the caller); no other block touches these columns.
        unsafe {
            gemm(m, cn, k, (out as *mut f32).add(c0 * dcs), dcs as isize, drs as isize, acc, lhs.as_ptr(), lcs as isize, lrs as isize, rhs.as_ptr().add(c0 * rcs), rcs as isize, rrs as isize, 1.0, 1.0, false, false, false, Parallelism::None)
        }
    });
}

/// An empty product: nothing to do, or (k = 0, not accumulating) a zero result.
fn matmul_degenerate(m: usize, n: usize, k: usize, dst: &mut [f32], (drs, dcs): (usize, usize), acc: bool) {
    if m == 0 || n == 0 || k != 0 || acc {
        return;
    }
    for i in 0..m {
        for j in 0..n {
            dst[i * drs + j * dcs] = 0.0;
        }
    }
}

/// Column sums of `[n, o]` (row-major): rows summed in order within fixed chunks of `RED` rows
/// (in parallel), the chunks' sums added in order.
pub fn col_sums(a: &[f32], o: usize) -> Vec<f32> {
    let o = o.max(1);
    let parts: Vec<Vec<f32>> = a
        .par_chunks(RED * o)
        .map(|c| {
            let mut s = vec![0f32; o];
            for row in c.chunks_exact(o) {
                for (a, &v) in s.iter_mut().zip(row) {
                    *a += v;
                }
            }
            s
        })
        .collect();
    let mut s = vec![0f32; o];
    for p in &parts {
        for (a, &v) in s.iter_mut().zip(p) {
            *a += v;
        }
    }
    s
}

/// `[n, o]` (row-major) with every row equal to `row`, filled in parallel.
pub fn broadcast_rows(row: &[f32], n: usize) -> Vec<f32> {
    let o = row.len();
    let mut y = vec![0f32; n * o];
    if o > 0 {
        y.par_chunks_mut(256 * o).for_each(|yb| {
            for r in yb.chunks_exact_mut(o) {
                r.copy_from_slice(row);
            }
        });
    }
    y
}

/// `y ← max(y, 0)` in place (a ReLU's forward), in parallel.
pub fn relu_inplace(y: &mut [f32]) {
    y.par_chunks_mut(1 << 14).for_each(|y| {
        widest(#[inline(always)] || {
            for v in y.iter_mut() {
                *v = v.max(0.0);
            }
        })
    });
}

/// `g ← g ⊙ [y > 0]` (a ReLU's backward, given its output y), in parallel. A select, not a
/// branch: a ReLU's signs are close to random, and a branch per entry mispredicted half the time
/// (a 3.2M-entry convolution output took 2.6 ms, `wick-pretrain`'s `examples/prof_cnn_parts.rs`).
pub fn relu_grad_inplace(g: &mut [f32], y: &[f32]) {
    g.par_chunks_mut(1 << 14).zip(y.par_chunks(1 << 14)).for_each(|(g, y)| relu_grad_serial(g, y));
}

/// [`relu_grad_inplace`] on the calling thread, for a slice that is one task's share.
pub fn relu_grad_serial(g: &mut [f32], y: &[f32]) {
    widest(#[inline(always)] || {
        for (g, &y) in g.iter_mut().zip(y) {
            *g = if y <= 0.0 { 0.0 } else { *g };
        }
    })
}

/// Rows of the left operand per task of [`sparse_matmul_acc`].
const SPARSE_ROWS: usize = 4;
/// Columns of the result a [`sparse_matmul_acc`] row keeps in registers while it walks its nonzeros.
const SPARSE_COLS: usize = 128;

/// `dst (n × o) += a (n × k) · w (k × o)` (all row-major) skipping a's zeros: row r adds
/// `a[r, i] · w[i, ·]` for each nonzero `a[r, i]`, i ascending, 128 columns at a time held in
/// registers. For a sparse left operand (an order-agnostic NADE's `x ⊙ m`: on MNIST about one
/// entry in fifteen is nonzero) it does that fraction of a dense product's work. Each row is one
/// task's and its sum runs in a fixed order, so the bits ignore the thread count (tested); they
/// differ from [`matmul`]'s, whose sums run in another order.
pub fn sparse_matmul_acc(n: usize, k: usize, o: usize, dst: &mut [f32], a: &[f32], w: &[f32]) {
    assert!(dst.len() == n * o && a.len() == n * k && w.len() == k * o, "sparse_matmul_acc: operand sizes");
    if n == 0 || k == 0 || o == 0 {
        return;
    }
    dst.par_chunks_mut(SPARSE_ROWS * o).zip(a.par_chunks(SPARSE_ROWS * k)).for_each(|(d, a)| {
        let mut nz: Vec<(usize, f32)> = vec![(0, 0.0); k + 1];
        for (dr, ar) in d.chunks_exact_mut(o).zip(a.chunks_exact(k)) {
            // The nonzeros' positions without a branch per entry (a branch on a sparse row
            // mispredicted often enough to take half the product's time).
            let mut len = 0;
            for (i, &v) in ar.iter().enumerate() {
                nz[len] = (i, v);
                len += (v != 0.0) as usize;
            }
            let nz = &nz[..len];
            widest(#[inline(always)] || {
                let mut c0 = 0;
                while c0 + SPARSE_COLS <= o {
                    let mut acc: [f32; SPARSE_COLS] = dr[c0..c0 + SPARSE_COLS].try_into().unwrap();
                    for &(i, v) in nz {
                        let wr: &[f32; SPARSE_COLS] = w[i * o + c0..i * o + c0 + SPARSE_COLS].try_into().unwrap();
                        for (s, &wv) in acc.iter_mut().zip(wr) {
                            *s += v * wv;
                        }
                    }
                    dr[c0..c0 + SPARSE_COLS].copy_from_slice(&acc);
                    c0 += SPARSE_COLS;
                }
                if c0 < o {
                    let dr = &mut dr[c0..];
                    for &(i, v) in nz {
                        for (s, &wv) in dr.iter_mut().zip(&w[i * o + c0..(i + 1) * o]) {
                            *s += v * wv;
                        }
                    }
                }
            })
        }
    });
}

/// Rows of the result per task of [`sparse_t_matmul`]: 16 floats of a row of `a` are one cache line.
const SPARSE_T_ROWS: usize = 16;

/// `dst (k × o) = aᵀ · g`, `a` `(n × k)`, `g` `(n × o)` (all row-major), skipping a's zeros:
/// `dst[i, ·] = Σ_{r : a[r, i] ≠ 0} a[r, i] · g[r, ·]`, r ascending (a weight gradient `∂W = xᵀ ∂h`
/// whose input x is sparse). Tasks own 16 rows of the result: the bits ignore the thread count.
pub fn sparse_t_matmul(n: usize, k: usize, o: usize, dst: &mut [f32], a: &[f32], g: &[f32]) {
    assert!(dst.len() == k * o && a.len() == n * k && g.len() == n * o, "sparse_t_matmul: operand sizes");
    if k == 0 || o == 0 {
        return;
    }
    dst.par_chunks_mut(SPARSE_T_ROWS * o).enumerate().for_each(|(j, d)| {
        let (i0, rows) = (j * SPARSE_T_ROWS, d.len() / o);
        d.fill(0.0);
        widest(#[inline(always)] || {
            for r in 0..n {
                let gr = &g[r * o..(r + 1) * o];
                let ar = &a[r * k + i0..r * k + i0 + rows];
                // The nonzeros of these (at most 16) entries as bits, then one pass per set bit:
                // a branch per entry mispredicted on sparse rows.
                let mut bits = 0u32;
                for (t, &v) in ar.iter().enumerate() {
                    bits |= ((v != 0.0) as u32) << t;
                }
                while bits != 0 {
                    let t = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let v = ar[t];
                    for (s, &gv) in d[t * o..(t + 1) * o].iter_mut().zip(gr) {
                        *s += v * gv;
                    }
                }
            }
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Every stride combination (plain, transposed left, transposed right, both, accumulate)
    /// against an f64 sum, and the same bits for 1, 2, 3 and 5 threads.
    #[test]
    fn matmul_is_right_for_any_strides_and_its_bits_ignore_the_thread_count() {
        let mut r = Rng::stream(5, "linalg");
        for (m, n, k) in [(100, 500, 784), (100, 784, 500), (784, 500, 100), (37, 3, 1000), (300, 140, 150)] {
            let a: Vec<f32> = (0..m * k).map(|_| r.normal() as f32).collect();
            let b: Vec<f32> = (0..k * n).map(|_| r.normal() as f32).collect();
            let init: Vec<f32> = (0..m * n).map(|_| r.normal() as f32).collect();
            for (ta, tb, acc) in [(false, false, false), (true, false, true), (false, true, false), (true, true, true)] {
                // a stored as [m, k] (or [k, m] when ta), b as [k, n] (or [n, k] when tb).
                let sa = if ta { (1, m) } else { (k, 1) };
                let sb = if tb { (1, k) } else { (n, 1) };
                let at: Vec<f32> = if ta { (0..k * m).map(|i| a[(i % m) * k + i / m]).collect() } else { a.clone() };
                let bt: Vec<f32> = if tb { (0..n * k).map(|i| b[(i % k) * n + i / k]).collect() } else { b.clone() };
                let run = |t: usize| {
                    rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap().install(|| {
                        let mut d = init.clone();
                        matmul(m, n, k, &mut d, (n, 1), acc, &at, sa, &bt, sb);
                        d
                    })
                };
                let one = run(1);
                for t in [2, 3, 5] {
                    assert!(one == run(t), "m {m} n {n} k {k}: {t} threads differ from 1");
                }
                for (i, &got) in one.iter().enumerate().step_by(11) {
                    let (ii, jj) = (i / n, i % n);
                    let want: f64 = (0..k).map(|l| a[ii * k + l] as f64 * b[l * n + jj] as f64).sum::<f64>() + if acc { init[i] as f64 } else { 0.0 };
                    assert!((got as f64 - want).abs() < 1e-3 * (1.0 + want.abs()), "m {m} n {n} k {k} ta {ta} tb {tb}: {got} vs {want}");
                }
            }
        }
    }

    /// Both sparse products: against an f64 sum, the ascending order of their sums exactly (for a
    /// 0/1 operand, whose products are exact), and the same bits for 1, 2 and 3 threads.
    #[test]
    fn sparse_products_are_right_in_their_order_for_any_thread_count() {
        let mut r = Rng::stream(6, "sparse");
        for (n, k, o) in [(100, 784, 500), (7, 33, 130), (5, 17, 128), (3, 40, 7)] {
            let a: Vec<f32> = (0..n * k).map(|_| if r.uniform() < 0.2 { if r.uniform() < 0.7 { 1.0 } else { r.normal() as f32 } } else { 0.0 }).collect();
            let w: Vec<f32> = (0..k * o).map(|_| r.normal() as f32).collect();
            let g: Vec<f32> = (0..n * o).map(|_| r.normal() as f32).collect();
            let init: Vec<f32> = (0..n * o).map(|_| r.normal() as f32).collect();
            let run = |t: usize| {
                rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap().install(|| {
                    let mut d = init.clone();
                    sparse_matmul_acc(n, k, o, &mut d, &a, &w);
                    let mut dt = vec![f32::NAN; k * o];
                    sparse_t_matmul(n, k, o, &mut dt, &a, &g);
                    (d, dt)
                })
            };
            let (d, dt) = run(1);
            for t in [2, 3] {
                assert!(run(t) == (d.clone(), dt.clone()), "n {n} k {k} o {o}: {t} threads differ from 1");
            }
            for rr in 0..n {
                for c in 0..o {
                    let (mut s, mut want) = (init[rr * o + c], init[rr * o + c] as f64);
                    for i in 0..k {
                        let v = a[rr * k + i];
                        if v != 0.0 {
                            s += v * w[i * o + c];
                            want += v as f64 * w[i * o + c] as f64;
                        }
                    }
                    assert_eq!(d[rr * o + c], s, "n {n} k {k} o {o}: row {rr} col {c} not in ascending order");
                    assert!((s as f64 - want).abs() < 1e-4 * (1.0 + want.abs()));
                }
            }
            for i in 0..k {
                for c in 0..o {
                    let mut s = 0f32;
                    for rr in 0..n {
                        let v = a[rr * k + i];
                        if v != 0.0 {
                            s += v * g[rr * o + c];
                        }
                    }
                    assert_eq!(dt[i * o + c], s, "n {n} k {k} o {o}: ∂ row {i} col {c}");
                }
            }
        }
    }

    #[test]
    fn col_sums_sum_the_columns() {
        let a: Vec<f32> = (0..20_000 * 3).map(|i| (i % 7) as f32).collect();
        let s = col_sums(&a, 3);
        for (j, &v) in s.iter().enumerate() {
            let want: f32 = a.iter().skip(j).step_by(3).sum();
            assert_eq!(v, want);
        }
    }
}
