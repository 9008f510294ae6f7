//! A dense layer `y = act(x Wᵀ + b)` as one CPU op with a closed-form backward that computes
//! only the gradients the graph needs.
//!
//! `x` `[N, K]`, `W` `[O, K]` (PyTorch's layout), `b` `[O]`, act = ReLU or the identity. With
//! `∂h = ∂y ⊙ [y > 0]` (ReLU) or `∂y`:
//!
//! ```text
//! ∂W = ∂hᵀ x      ∂b = Σ_rows ∂h      ∂x = ∂h W   (only when x depends on a parameter)
//! ```
//!
//! Candle's matmul backward always computes both operand gradients; for an encoder's first
//! layer (input: the images) the `∂x` product is a third of the layer's work, thrown away. Here
//! `∂x` is computed only when `x.track_op()` (x is, or depends on, a variable).
//!
//! **Determinism.** Each product is one call of the `gemm` crate (the one Candle's CPU matmul
//! uses) that spreads whole output tiles over the rayon pool; every element's sum runs over the
//! inner dimension in chunks fixed by the shape and the cache sizes, so every bit is the same for
//! any thread count (tested). A weight gradient over many rows (a convolution's) and a first
//! convolution's (k ≤ 16) sum fixed blocks of rows in block order instead ([`block_sums`]), and a
//! first convolution's forward is plain loops; the same holds for them. `∂b` sums rows in order.
//! Elsewhere than the CPU (or for non-f32 tensors) the composed Candle ops run.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;
use wick_core::cpu::f32_slice;
use wick_core::linalg::{broadcast_rows, col_sums, matmul as mm, relu_inplace};

/// Rows per parallel task of the forward's small-k loops.
const ROWS_PER_TASK: usize = 256;
/// Up to this many inputs per row, the forward product is plain loops instead of gemm.
const SMALL_K: usize = 16;

/// `relu(x Wᵀ + b)` (`relu`) or `x Wᵀ + b`, `x` `[N, K]`, `w` `[O, K]`, `b` `[O]`.
pub fn dense(x: &Tensor, w: &Tensor, b: &Tensor, relu: bool) -> candle_core::Result<Tensor> {
    let f32s = [x, w, b].iter().all(|t| t.dtype() == candle_core::DType::F32);
    if x.device().is_cpu() && f32s && x.rank() == 2 && w.rank() == 2 && w.dim(1)? == x.dim(1)? && b.dims() == [w.dim(0)?] {
        x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, Dense { relu })
    } else {
        composed(x, w, b, relu)
    }
}

/// The same layer in composed Candle ops (the fallback, and the reference in tests).
pub fn composed(x: &Tensor, w: &Tensor, b: &Tensor, relu: bool) -> candle_core::Result<Tensor> {
    let y = x.matmul(&w.t()?)?.broadcast_add(b)?;
    if relu {
        y.relu()
    } else {
        Ok(y)
    }
}

/// [`transpose`], for `examples/prof_gemm.rs`.
#[doc(hidden)]
pub fn transpose_for_bench(w: &[f32], o: usize, k: usize) -> Vec<f32> {
    transpose(w, o, k)
}

/// `[k, o]` from `[o, k]` (row-major both). Each task takes 64 rows of the result (64 inputs)
/// and walks 16 rows of `w` at a time, so every store writes 16 adjacent floats and each of the
/// 16 reads streams along a row; the former 32 × 32 tiles stored one float per row of the result,
/// `o` floats apart, which for `o` a power of two kept hitting the same cache sets
/// (`examples/prof_gemm.rs`: `[512, 784]` 0.95 → 0.28 ms on 2 threads).
fn transpose(w: &[f32], o: usize, k: usize) -> Vec<f32> {
    const R: usize = 64;
    const C: usize = 16;
    let mut wt = vec![0f32; k * o];
    if o == 0 || k == 0 {
        return wt;
    }
    wt.par_chunks_mut(R * o).enumerate().for_each(|(j, dst)| {
        let (k0, kn) = (j * R, dst.len() / o);
        let mut o0 = 0;
        while o0 + C <= o {
            let rows: [&[f32]; C] = std::array::from_fn(|t| &w[(o0 + t) * k + k0..(o0 + t) * k + k0 + kn]);
            for (r, d) in dst.chunks_exact_mut(o).enumerate() {
                for (t, v) in d[o0..o0 + C].iter_mut().enumerate() {
                    *v = rows[t][r];
                }
            }
            o0 += C;
        }
        for oi in o0..o {
            for (r, d) in dst.chunks_exact_mut(o).enumerate() {
                d[oi] = w[oi * k + k0 + r];
            }
        }
    });
    wt
}

/// `y = act(x wᵀ + b)`: x `[n, k]`, w `[o, k]`, y `[n, o]`.
pub fn forward(x: &[f32], w: &[f32], b: &[f32], relu: bool, n: usize, k: usize, o: usize) -> Vec<f32> {
    assert!(x.len() == n * k && w.len() == o * k && b.len() == o);
    if o == 0 {
        return vec![0f32; n * o];
    }
    // wᵀ `[k, o]` row-major, once, where gemm needs it: it packs the right operand from it much
    // faster than from w's columns when the stride k is a power of two (examples/prof_parts.rs,
    // 512 rows, 512 → 512: 6.6 → 3.4 ms at one thread); the small-k loops read it too. When k is
    // not a multiple of 64, gemm reads w's columns by strides faster than it transposes and
    // reads a copy (the MLP's first layer, k = 784: 256 rows 0.83 → 0.74 ms on 2 threads; the
    // CNN's second layer, k = 288, 25,088 rows: 3.9 → 3.0 ms), with the same bits at those two
    // layers' shapes (tested; not at every shape: gemm's order can follow the layout, e.g. with 3
    // outputs); at the CNN's k = 3136 (a multiple of 64) the strided reads were 7% slower.
    let strided = k > SMALL_K && !k.is_multiple_of(64);
    let wt = if strided { Vec::new() } else { transpose(w, o, k) };
    if k <= SMALL_K {
        // A first convolution's few inputs per row: plain loops over wᵀ (vectorised over o)
        // beat gemm's packing. Each row is the bias, then the k products added in order, then
        // the ReLU, while the row is in cache: the bits of "bias, then the products, then a
        // ReLU pass", in one pass over y instead of three (`examples/prof_cnn_parts.rs`: the
        // CNN's first layer at 512 views, 2.9 ms before).
        let mut y: Vec<f32> = Vec::with_capacity(n * o);
        y.spare_capacity_mut().par_chunks_mut(ROWS_PER_TASK * o).enumerate().for_each(|(j, yb)| {
            let x = &x[j * ROWS_PER_TASK * k..];
            wick_core::cpu::widest(#[inline(always)] || match (k, o) {
                // The CNN encoder's first layer (3×3, 32 channels): sizes known to the compiler,
                // so a row's accumulator stays in registers.
                (9, 32) => small_k_rows::<9, 32>(yb, x, &wt, b, relu),
                _ => {
                    for (yr, xr) in yb.chunks_exact_mut(o).zip(x.chunks_exact(k.max(1))) {
                        let mut acc = [0f32; 64];
                        for c0 in (0..o).step_by(64) {
                            let w = (o - c0).min(64);
                            let acc = &mut acc[..w];
                            acc.copy_from_slice(&b[c0..c0 + w]);
                            for (xv, wr) in xr.iter().zip(wt.chunks_exact(o)) {
                                for (a, &wv) in acc.iter_mut().zip(&wr[c0..c0 + w]) {
                                    *a += xv * wv;
                                }
                            }
                            for (d, &a) in yr[c0..c0 + w].iter_mut().zip(acc.iter()) {
                                d.write(if relu { a.max(0.0) } else { a });
                            }
                        }
                    }
                }
            })
        });
        // SAFETY: the tasks above wrote every one of the n·o entries (n rows of o).
        unsafe { y.set_len(n * o) };
        return y;
    }
    let mut y = broadcast_rows(b, n);
    let (rhs, strides) = if strided { (w, (1, k)) } else { (&wt[..], (o, 1)) };
    mm(n, o, k, &mut y, (o, 1), true, x, (k, 1), rhs, strides);
    if relu {
        relu_inplace(&mut y);
    }
    y
}

/// Rows of the small-k forward with the sizes fixed: `y_r = act(b + Σ_t x[r, t] · wᵀ[t, ·])`,
/// the products added in t order (the bits of the general loop).
#[inline(always)]
fn small_k_rows<const K: usize, const O: usize>(yb: &mut [std::mem::MaybeUninit<f32>], x: &[f32], wt: &[f32], b: &[f32], relu: bool) {
    let wt: [[f32; O]; K] = std::array::from_fn(|t| wt[t * O..(t + 1) * O].try_into().unwrap());
    let b: &[f32; O] = b.try_into().unwrap();
    for (yr, xr) in yb.chunks_exact_mut(O).zip(x.chunks_exact(K)) {
        let mut acc = *b;
        for (xv, wr) in xr.iter().zip(&wt) {
            for (a, &wv) in acc.iter_mut().zip(wr) {
                *a += xv * wv;
            }
        }
        for (d, a) in yr.iter_mut().zip(acc) {
            d.write(if relu { a.max(0.0) } else { a });
        }
    }
}

/// `∂W = dhᵀ x` `[o, k]`: dh `[n, o]`, x `[n, k]`.
pub fn grad_weight(dh: &[f32], x: &[f32], n: usize, k: usize, o: usize) -> Vec<f32> {
    assert!(dh.len() == n * o && x.len() == n * k);
    if k <= SMALL_K && o <= 64 {
        return grad_weight_small_k(dh, x, n, k, o);
    }
    if n >= 2 * SPLIT_ROWS {
        // Many rows (a convolution's B·Ho·Wo) and a small result: gemm splits the result's
        // tiles, of which there are few, and runs the long reduction in one thread's order
        // (the CNN's second layer at 512 views: [64, 288] over 25,088 rows, 248 GFLOP/s). Fixed
        // blocks of rows instead, one product each on one thread, their sums added in block
        // order: the same bits for any thread count.
        return block_sums(n, o * k, |rows, p| {
            wick_core::linalg::matmul_serial(o, k, rows.len(), p, (k, 1), false, &dh[rows.start * o..rows.end * o], (1, o), &x[rows.start * k..rows.end * k], (k, 1))
        });
    }
    let mut dw = vec![0f32; o * k];
    mm(o, k, n, &mut dw, (k, 1), false, dh, (1, o), x, (k, 1));
    dw
}

/// Rows per block of [`block_sums`]: fixed, so the bits ignore the thread count. A weight
/// gradient over at least twice as many rows is summed in blocks.
const SPLIT_ROWS: usize = 2048;

/// `Σ_blocks f(block)` for `n` rows cut into blocks of [`SPLIT_ROWS`]: each block's `len` partial
/// sums are written by `f` (into zeros) on some thread, and the blocks are added in order.
fn block_sums(n: usize, len: usize, f: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync) -> Vec<f32> {
    let parts: Vec<Vec<f32>> = (0..n.div_ceil(SPLIT_ROWS))
        .into_par_iter()
        .map(|blk| {
            let mut p = vec![0f32; len];
            f(blk * SPLIT_ROWS..((blk + 1) * SPLIT_ROWS).min(n), &mut p);
            p
        })
        .collect();
    let mut sum = vec![0f32; len];
    for p in &parts {
        wick_core::cpu::widest(#[inline(always)] || {
            for (s, &v) in sum.iter_mut().zip(p) {
                *s += v;
            }
        });
    }
    sum
}

/// `∂W = dhᵀ x` for a first convolution's few inputs (k ≤ 16) and outputs (o ≤ 64): gemm sees an
/// `[o, k]` result with a reduction over every row (a CNN's first layer at 512 views: 100,352)
/// and ran it at 30 GFLOP/s. Here each block of [`SPLIT_ROWS`] rows adds `x[r, t] · dh[r, ·]`
/// into a `[k, o]` accumulator that stays in registers, row by row in order; the blocks' sums
/// are added in block order, then transposed. Fixed blocks: the same bits for any thread count.
fn grad_weight_small_k(dh: &[f32], x: &[f32], n: usize, k: usize, o: usize) -> Vec<f32> {
    let sum = block_sums(n, k * o, |rows, acc| {
        wick_core::cpu::widest(#[inline(always)] || match (k, o) {
            // The CNN encoder's first layer: the [9, 32] accumulator stays in registers.
            (9, 32) => {
                let mut a = [[0f32; 32]; 9];
                for r in rows {
                    let g: &[f32; 32] = dh[r * 32..(r + 1) * 32].try_into().unwrap();
                    for (a, &xv) in a.iter_mut().zip(&x[r * 9..(r + 1) * 9]) {
                        for (a, &gv) in a.iter_mut().zip(g) {
                            *a += xv * gv;
                        }
                    }
                }
                acc.copy_from_slice(a.as_flattened());
            }
            _ => {
                for r in rows {
                    let (g, xr) = (&dh[r * o..(r + 1) * o], &x[r * k..(r + 1) * k]);
                    for (a, &xv) in acc.chunks_exact_mut(o).zip(xr) {
                        for (a, &gv) in a.iter_mut().zip(g) {
                            *a += xv * gv;
                        }
                    }
                }
            }
        })
    });
    let mut dw = vec![0f32; o * k];
    for t in 0..k {
        for j in 0..o {
            dw[j * k + t] = sum[t * o + j];
        }
    }
    dw
}

/// `∂x = dh W` `[n, k]`: dh `[n, o]`, w `[o, k]`.
pub fn grad_input(dh: &[f32], w: &[f32], n: usize, k: usize, o: usize) -> Vec<f32> {
    assert!(dh.len() == n * o && w.len() == o * k);
    let mut dx = vec![0f32; n * k];
    mm(n, k, o, &mut dx, (k, 1), false, dh, (o, 1), w, (k, 1));
    dx
}

struct Dense {
    relu: bool,
}

impl CustomOp3 for Dense {
    fn name(&self) -> &'static str {
        "wick-dense"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w, b) = (f32_slice(s1, l1, "dense input")?, f32_slice(s2, l2, "dense weight")?, f32_slice(s3, l3, "dense bias")?);
        let (n, k) = l1.shape().dims2()?;
        let o = l2.shape().dims2()?.0;
        Ok((CpuStorage::F32(forward(x, w, b, self.relu, n, k, o)), Shape::from((n, o))))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _b: &Tensor, y: &Tensor, g: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        // ∂h as [N, O], then one op per wanted gradient.
        let dh = if self.relu { g.apply_op2_no_bwd(y, &crate::fused::ReluGrad)? } else { g };
        let dw = dh.apply_op2_no_bwd(x, &Grad::Weight)?;
        let db = dh.apply_op1_no_bwd(&BiasGrad)?;
        let dx = if x.track_op() { Some(dh.apply_op2_no_bwd(w, &Grad::Input)?) } else { None };
        Ok((dx, Some(dw), Some(db)))
    }
}

/// `∂b` = [`col_sums`] of dh.
struct BiasGrad;

impl candle_core::CustomOp1 for BiasGrad {
    fn name(&self) -> &'static str {
        "wick-dense-grad-bias"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, o) = l.shape().dims2()?;
        Ok((CpuStorage::F32(col_sums(f32_slice(s, l, "dense gradient")?, o)), Shape::from(o)))
    }
}

/// `∂W = dhᵀ x` (args dh, x) or `∂x = dh W` (args dh, W).
enum Grad {
    Weight,
    Input,
}

impl CustomOp2 for Grad {
    fn name(&self) -> &'static str {
        match self {
            Grad::Weight => "wick-dense-grad-weight",
            Grad::Input => "wick-dense-grad-input",
        }
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (dh, other) = (f32_slice(s1, l1, "dense gradient")?, f32_slice(s2, l2, "dense operand")?);
        let (n, o) = l1.shape().dims2()?;
        Ok(match self {
            Grad::Weight => {
                let k = l2.shape().dims2()?.1;
                (CpuStorage::F32(grad_weight(dh, other, n, k, o)), Shape::from((o, k)))
            }
            Grad::Input => {
                let k = l2.shape().dims2()?.1;
                (CpuStorage::F32(grad_input(dh, other, n, k, o)), Shape::from((n, k)))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use wick_core::rng::Rng;

    fn rand(shape: &[usize], r: &mut Rng) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_vec((0..n).map(|_| r.normal() as f32).collect::<Vec<_>>(), shape, &Device::Cpu).unwrap()
    }

    fn close(a: &Tensor, b: &Tensor, tol: f32) {
        let (a, b) = (a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        assert_eq!(a.len(), b.len());
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() <= tol * (1.0 + q.abs()), "{p} vs {q}");
        }
    }

    /// Values and every gradient match `x.matmul(Wᵀ) + b` (+ ReLU), on shapes that cut blocks
    /// unevenly; an input that is plain data gets no gradient, one that is a variable does.
    #[test]
    fn dense_matches_the_composed_ops_in_value_and_gradient() {
        let mut r = Rng::stream(2, "dense");
        for (n, k, o) in [(5, 7, 3), (130, 200, 70), (64, 9, 32)] {
            for relu in [true, false] {
                let x = Var::from_tensor(&rand(&[n, k], &mut r)).unwrap();
                let w = Var::from_tensor(&rand(&[o, k], &mut r)).unwrap();
                let b = Var::from_tensor(&rand(&[o], &mut r)).unwrap();
                let wy = rand(&[n, o], &mut r);
                let y = dense(x.as_tensor(), w.as_tensor(), b.as_tensor(), relu).unwrap();
                let yc = composed(x.as_tensor(), w.as_tensor(), b.as_tensor(), relu).unwrap();
                close(&y, &yc, 1e-5);
                let ga = (y * &wy).unwrap().sum_all().unwrap().backward().unwrap();
                let gb = (yc * &wy).unwrap().sum_all().unwrap().backward().unwrap();
                for v in [&x, &w, &b] {
                    let g = ga.get(v).unwrap();
                    close(g, gb.get(v).unwrap(), 1e-4);
                    assert!(g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0);
                }
                // Data in: weights still get their gradient, the data none.
                let xd = x.as_tensor().detach();
                let g = dense(&xd, w.as_tensor(), b.as_tensor(), relu).unwrap().sum_all().unwrap().backward().unwrap();
                assert!(g.get(&xd).is_none() && g.get(w.as_tensor()).is_some() && g.get(b.as_tensor()).is_some());
            }
        }
    }

    /// Reading w by strides (k not a multiple of 64) gives the bits of the product from the
    /// transposed copy at the layers that take it: the MLP's first (784 → 512) and the CNN's
    /// second convolution (288 → 64). (At some other shapes gemm's order follows the layout: a
    /// 100 → 3 layer differs in the last bits.)
    #[test]
    fn the_strided_forward_is_the_transposed_one_bit_for_bit() {
        let mut r = Rng::stream(4, "strided");
        for (n, k, o) in [(300, 288, 64), (25088, 288, 64), (256, 784, 512), (512, 784, 512)] {
            assert!(k > SMALL_K && !k.is_multiple_of(64));
            let x: Vec<f32> = (0..n * k).map(|_| r.normal() as f32).collect();
            let w: Vec<f32> = (0..o * k).map(|_| r.normal() as f32).collect();
            let b: Vec<f32> = (0..o).map(|_| r.normal() as f32).collect();
            let mut want = broadcast_rows(&b, n);
            mm(n, o, k, &mut want, (o, 1), true, &x, (k, 1), &transpose(&w, o, k), (o, 1));
            relu_inplace(&mut want);
            assert!(forward(&x, &w, &b, true, n, k, o) == want, "n {n} k {k} o {o}");
        }
    }

    /// The same bits for 1, 2, 3 and 5 threads, on shapes that leave partial tiles, the MLP
    /// encoder's first layer, a convolution's long im2col reduction and the small-k loops.
    #[test]
    fn dense_bits_do_not_depend_on_the_thread_count() {
        let mut r = Rng::stream(3, "dense");
        for (n, k, o) in [(300, 150, 140), (256, 784, 512), (3000, 288, 64), (20000, 9, 8), (9000, 9, 32), (9000, 288, 64), (37, 1000, 3)] {
            let x: Vec<f32> = (0..n * k).map(|_| r.normal() as f32).collect();
            let w: Vec<f32> = (0..o * k).map(|_| r.normal() as f32).collect();
            let b: Vec<f32> = (0..o).map(|_| r.normal() as f32).collect();
            let run = |t: usize| {
                rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap().install(|| {
                    let y = forward(&x, &w, &b, true, n, k, o);
                    (grad_weight(&y, &x, n, k, o), grad_input(&y, &w, n, k, o), y)
                })
            };
            let one = run(1);
            for t in [2, 3, 5] {
                assert!(one == run(t), "n {n} k {k} o {o}: {t} threads differ from 1");
            }
            // Against a plain f64 sum.
            let (gw, _, y) = &one;
            for (i, &g) in gw.iter().enumerate().step_by(7) {
                let (oi, ki) = (i / k, i % k);
                let want: f64 = (0..n).map(|r| y[r * o + oi] as f64 * x[r * k + ki] as f64).sum();
                assert!((g as f64 - want).abs() < 1e-3 * (1.0 + want.abs()), "{g} vs {want}");
            }
        }
    }
}
