//! Autoregressive masks as staircases: masked dense layers on the CPU that skip the zero blocks.
//!
//! Every mask in FVSBN and MADE has the form `M[i, o] = 1[c(o) ≥ a(i)]` (or `>`): input i of a
//! layer has a degree a(i), output o a degree c(o), and o sees i when its degree is at least
//! (above) i's. Sort the inputs by a and the outputs by c (ties by index); then output o sees
//! exactly a **prefix** of the sorted inputs, of length `reach(o)`, non-decreasing in o — the
//! mask is a staircase (FVSBN's strictly lower-triangular mask is the case a(j) = j, c(d) = d,
//! with no sorting needed; MADE's masks become staircases once the hidden units are sorted by
//! their degree mˡ(k) and the inputs and outputs by the ordering m⁰). Permuting the units does not
//! change the function, so a masked product `y = x (W ⊙ M)` can be computed on the sorted units
//! block by block, each block of outputs against the inputs its last member reaches only:
//!
//! ```text
//! y[:, O_j] = x[:, 0..reach(max O_j)] · W̃[0..reach(max O_j), O_j]          (forward)
//! ∂W̃[0..reach, O_j] = x[:, 0..reach]ᵀ · ∂y[:, O_j]                          (weight gradient)
//! ∂x[:, I_j] = ∂y[:, first(min I_j)..] · W̃[I_j, first(min I_j)..]ᵀ          (input gradient)
//! ```
//!
//! with `W̃` the weights packed in sorted order, zero outside the staircase. That is about half
//! the multiply–adds of the dense masked product (all of a triangular mask's zero half except
//! the ragged diagonal blocks).
//!
//! **Determinism.** Blocks are [`BLOCK`] units wide, fixed in advance; each is one single-threaded
//! call of the `gemm` crate (the one Candle's CPU matmul uses) and writes its own entries only.
//! Rayon spreads whole blocks over the threads, so the arithmetic, and hence every bit of the
//! result, is the same for any thread count.
//!
//! All buffers are host `f32` slices, row-major; `rows` is the batch size. Packed weights have an
//! orientation: input-major `[n_in, n_out]` (element (i, o) at `i·n_out + o`, MADE's `[in, out]`
//! weights) or output-major `[n_out, n_in]` (at `o·n_in + i`, FVSBN's `[D, D]` weights indexed
//! `[d, j]`), the same as the parameter it is packed from, so that packing reads whole rows.

use gemm::{gemm, Parallelism};
use rayon::prelude::*;

/// Units per block (outputs for the forward product and the weight gradient, inputs for the
/// input gradient). Fixed: results never depend on how blocks are spread over threads.
pub const BLOCK: usize = 64;

/// The sorted structure of one masked layer.
#[derive(Clone, Debug)]
pub struct Staircase {
    pub n_in: usize,
    pub n_out: usize,
    /// Sorted position → original input index (by degree, ties by index).
    pub in_perm: Vec<usize>,
    /// Sorted position → original output index.
    pub out_perm: Vec<usize>,
    /// Original index → sorted position.
    in_pos: Vec<usize>,
    out_pos: Vec<usize>,
    /// For each sorted output, how many sorted inputs it sees (non-decreasing).
    pub reach: Vec<usize>,
    /// For each sorted input, the first sorted output that sees it (`n_out` if none; non-decreasing).
    pub first: Vec<usize>,
    /// Whether sorting leaves the inputs / the outputs in place (FVSBN; MADE's inputs and
    /// outputs in the natural order): packing then copies whole runs.
    in_identity: bool,
    out_identity: bool,
}

/// A raw pointer that rayon tasks may share: every task writes a disjoint set of entries.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

fn sort_by_degree(deg: &[usize]) -> Vec<usize> {
    let mut p: Vec<usize> = (0..deg.len()).collect();
    p.sort_by_key(|&i| (deg[i], i));
    p
}

fn inverse(p: &[usize]) -> Vec<usize> {
    let mut q = vec![0; p.len()];
    for (pos, &i) in p.iter().enumerate() {
        q[i] = pos;
    }
    q
}

/// `dst ← dst + lhs · rhs` (`read_dst`) or `dst ← lhs · rhs`, single-threaded; `m × n` result,
/// inner size `k`; each operand given by its pointer and (row, column) strides.
#[allow(clippy::too_many_arguments)]
unsafe fn mm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    (dst_rs, dst_cs): (usize, usize),
    read_dst: bool,
    lhs: *const f32,
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: *const f32,
    (rhs_rs, rhs_cs): (usize, usize),
) {
    gemm(
        m,
        n,
        k,
        dst,
        dst_cs as isize,
        dst_rs as isize,
        read_dst,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        Parallelism::None,
    )
}

impl Staircase {
    /// The layer in which input i feeds output o iff `out_deg[o] > in_deg[i]` (`strict`) or
    /// `out_deg[o] ≥ in_deg[i]`.
    pub fn new(in_deg: &[usize], out_deg: &[usize], strict: bool) -> Staircase {
        let (n_in, n_out) = (in_deg.len(), out_deg.len());
        let in_perm = sort_by_degree(in_deg);
        let out_perm = sort_by_degree(out_deg);
        let sorted_in: Vec<usize> = in_perm.iter().map(|&i| in_deg[i]).collect();
        let reach: Vec<usize> = out_perm
            .iter()
            .map(|&o| {
                let c = out_deg[o];
                sorted_in.partition_point(|&a| if strict { a < c } else { a <= c })
            })
            .collect();
        let first: Vec<usize> = (0..n_in).map(|i| reach.partition_point(|&r| r <= i)).collect();
        let is_id = |p: &[usize]| p.iter().enumerate().all(|(a, &b)| a == b);
        Staircase {
            n_in,
            n_out,
            in_identity: is_id(&in_perm),
            out_identity: is_id(&out_perm),
            in_pos: inverse(&in_perm),
            out_pos: inverse(&out_perm),
            in_perm,
            out_perm,
            reach,
            first,
        }
    }

    /// Whether original input `i` feeds original output `o`.
    pub fn connected(&self, i: usize, o: usize) -> bool {
        self.in_pos[i] < self.reach[self.out_pos[o]]
    }

    /// Multiply–adds per row of the blocked products (forward; the weight gradient is the same,
    /// the input gradient about the same), against `n_in · n_out` dense.
    pub fn blocked_macs(&self) -> usize {
        self.out_blocks().map(|(o0, o1)| (o1 - o0) * self.reach[o1 - 1]).sum()
    }

    /// Packed strides (of the input index, of the output index).
    fn strides(&self, out_major: bool) -> (usize, usize) {
        if out_major {
            (1, self.n_in)
        } else {
            (self.n_out, 1)
        }
    }

    fn out_blocks(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.n_out.div_ceil(BLOCK)).map(move |j| (j * BLOCK, ((j + 1) * BLOCK).min(self.n_out)))
    }

    /// `dst[r, pos] = src[r, perm[pos]]`: gather the columns of a `[rows, perm.len()]` matrix.
    pub fn gather_cols(src: &[f32], perm: &[usize], dst: &mut [f32]) {
        let n = perm.len();
        if perm.iter().enumerate().all(|(a, &b)| a == b) {
            dst[..src.len()].copy_from_slice(src);
            return;
        }
        dst.par_chunks_mut(n).zip(src.par_chunks(n)).for_each(|(d, s)| {
            for (x, &p) in d.iter_mut().zip(perm) {
                *x = s[p];
            }
        });
    }

    /// Pack the weights `w` (original order, orientation `out_major`) into `ws` (sorted order,
    /// same orientation): every staircase entry copied, every other entry zero.
    pub fn pack(&self, w: &[f32], out_major: bool, ws: &mut [f32]) {
        let (n_in, n_out) = (self.n_in, self.n_out);
        if out_major {
            ws.par_chunks_mut(n_in).enumerate().for_each(|(o, dst)| {
                let src = &w[self.out_perm[o] * n_in..][..n_in];
                let r = self.reach[o];
                if self.in_identity {
                    dst[..r].copy_from_slice(&src[..r]);
                } else {
                    for (x, &i) in dst[..r].iter_mut().zip(&self.in_perm[..r]) {
                        *x = src[i];
                    }
                }
                dst[r..].fill(0.0);
            });
        } else {
            ws.par_chunks_mut(n_out).enumerate().for_each(|(i, dst)| {
                let src = &w[self.in_perm[i] * n_out..][..n_out];
                let f = self.first[i];
                dst[..f].fill(0.0);
                if self.out_identity {
                    dst[f..].copy_from_slice(&src[f..]);
                } else {
                    for (x, &o) in dst[f..].iter_mut().zip(&self.out_perm[f..]) {
                        *x = src[o];
                    }
                }
            });
        }
    }

    /// The inverse of [`pack`](Self::pack) for a gradient: a new `[n_in·n_out]` buffer in the
    /// original order and orientation `out_major`, with the staircase entries of `ws` and zero
    /// wherever the mask is zero. (Where sorting moves units, a row is zeroed and its staircase
    /// entries scattered into it; otherwise every entry is written once.)
    pub fn unpack(&self, ws: &[f32], out_major: bool) -> Vec<f32> {
        let len = self.n_in * self.n_out;
        let mut w: Vec<f32> = Vec::with_capacity(len);
        self.unpack_into(ws, out_major, &mut w.spare_capacity_mut()[..len]);
        // SAFETY: `unpack_into` wrote all `len` entries.
        unsafe { w.set_len(len) };
        w
    }

    /// [`Staircase::unpack`] into `spare` (n_in·n_out entries, every one written; it may be
    /// uninitialised): the data-parallel step has the gradients unpacked straight into the
    /// combine's buffer.
    pub fn unpack_into(&self, ws: &[f32], out_major: bool, spare: &mut [std::mem::MaybeUninit<f32>]) {
        let (n_in, n_out) = (self.n_in, self.n_out);
        let len = n_in * n_out;
        assert!(ws.len() >= len && spare.len() == len);
        if out_major {
            spare.par_chunks_mut(n_in.max(1)).enumerate().for_each(|(o_orig, dst)| {
                let o = self.out_pos[o_orig];
                let src = &ws[o * n_in..][..n_in];
                let r = self.reach[o];
                if self.in_identity {
                    for (x, &v) in dst[..r].iter_mut().zip(&src[..r]) {
                        x.write(v);
                    }
                    dst[r..].iter_mut().for_each(|x| _ = x.write(0.0));
                } else {
                    // Zero the row, then scatter its staircase part (half the entries, no
                    // per-entry test: 1.8× faster than gathering every entry with one).
                    dst.iter_mut().for_each(|x| _ = x.write(0.0));
                    for (&i_orig, &v) in self.in_perm[..r].iter().zip(&src[..r]) {
                        dst[i_orig].write(v);
                    }
                }
            });
        } else {
            spare.par_chunks_mut(n_out.max(1)).enumerate().for_each(|(i_orig, dst)| {
                let i = self.in_pos[i_orig];
                let src = &ws[i * n_out..][..n_out];
                let f = self.first[i];
                if self.out_identity {
                    dst[..f].iter_mut().for_each(|x| _ = x.write(0.0));
                    for (x, &v) in dst[f..].iter_mut().zip(&src[f..]) {
                        x.write(v);
                    }
                } else {
                    dst.iter_mut().for_each(|x| _ = x.write(0.0));
                    for (&o_orig, &v) in self.out_perm[f..].iter().zip(&src[f..]) {
                        dst[o_orig].write(v);
                    }
                }
            });
        }
    }

    /// Where [`grad_weight`](Self::grad_weight) puts each entry of an input-major gradient
    /// (`out_major = false`), for a data-parallel sum that reads it there instead of unpacking:
    /// original (i, o) at `in_pos[i]·n_out + out_pos[o]`, where `out_pos[o] ≥ first[in_pos[i]]`
    /// (on the staircase), zero elsewhere.
    pub fn scatter(&self) -> wick_core::dist::Scatter {
        wick_core::dist::Scatter {
            cols: self.n_out,
            row_at: self.in_pos.iter().map(|&i| (i * self.n_out) as u32).collect(),
            from: self.in_pos.iter().map(|&i| self.first[i] as u32).collect(),
            col_at: self.out_pos.iter().map(|&o| o as u32).collect(),
        }
    }

    /// `y = x W̃ + bias` on sorted units: x `[rows, n_in]`, y `[rows, n_out]`, bias `[n_out]`.
    pub fn forward(&self, x: &[f32], ws: &[f32], out_major: bool, bias: &[f32], y: &mut [f32], rows: usize) {
        let (n_in, n_out) = (self.n_in, self.n_out);
        assert!(x.len() >= rows * n_in && y.len() >= rows * n_out && ws.len() >= n_in * n_out && bias.len() >= n_out);
        let (s_in, s_out) = self.strides(out_major);
        let yp = Shared(y.as_mut_ptr());
        let blocks: Vec<(usize, usize)> = self.out_blocks().collect();
        blocks.par_iter().for_each(|&(o0, o1)| {
            let yp = yp;
            for r in 0..rows {
                // SAFETY: this block owns columns o0..o1 of every row of y.
                unsafe { std::slice::from_raw_parts_mut(yp.0.add(r * n_out + o0), o1 - o0) }.copy_from_slice(&bias[o0..o1]);
            }
            let k = self.reach[o1 - 1];
            if k > 0 {
                // SAFETY: the operands lie inside x, ws and this block's columns of y (asserted sizes).
                unsafe {
                    mm(rows, o1 - o0, k, yp.0.add(o0), (n_out, 1), true, x.as_ptr(), (n_in, 1), ws.as_ptr().add(o0 * s_out), (s_in, s_out))
                }
            }
        });
    }

    /// The weight and bias gradients on sorted units: `dws = xᵀ dy` on the staircase (entries
    /// outside it are left unspecified: [`unpack`](Self::unpack) ignores them) and
    /// `db = Σ_rows dy`, summed in row order.
    pub fn grad_weight(&self, x: &[f32], dy: &[f32], out_major: bool, dws: &mut [f32], db: &mut [f32], rows: usize) {
        let (n_in, n_out) = (self.n_in, self.n_out);
        assert!(x.len() >= rows * n_in && dy.len() >= rows * n_out && dws.len() >= n_in * n_out && db.len() >= n_out);
        let (s_in, s_out) = self.strides(out_major);
        let (wp, bp) = (Shared(dws.as_mut_ptr()), Shared(db.as_mut_ptr()));
        let blocks: Vec<(usize, usize)> = self.out_blocks().collect();
        blocks.par_iter().for_each(|&(o0, o1)| {
            let (wp, bp) = (wp, bp);
            // SAFETY: this block owns db[o0..o1] and the entries of dws in output columns o0..o1.
            let dbj = unsafe { std::slice::from_raw_parts_mut(bp.0.add(o0), o1 - o0) };
            dbj.fill(0.0);
            for r in 0..rows {
                for (s, &g) in dbj.iter_mut().zip(&dy[r * n_out + o0..r * n_out + o1]) {
                    *s += g;
                }
            }
            let m = self.reach[o1 - 1];
            if m > 0 && rows > 0 {
                unsafe {
                    mm(m, o1 - o0, rows, wp.0.add(o0 * s_out), (s_in, s_out), false, x.as_ptr(), (1, n_in), dy.as_ptr().add(o0), (n_out, 1))
                }
            }
        });
    }

    /// The input gradient on sorted units: `dx = dy W̃ᵀ`, dx `[rows, n_in]`.
    pub fn grad_input(&self, dy: &[f32], ws: &[f32], out_major: bool, dx: &mut [f32], rows: usize) {
        let (n_in, n_out) = (self.n_in, self.n_out);
        assert!(dx.len() >= rows * n_in && dy.len() >= rows * n_out && ws.len() >= n_in * n_out);
        let (s_in, s_out) = self.strides(out_major);
        let xp = Shared(dx.as_mut_ptr());
        let blocks: Vec<(usize, usize)> = (0..n_in.div_ceil(BLOCK)).map(|j| (j * BLOCK, ((j + 1) * BLOCK).min(n_in))).collect();
        blocks.par_iter().for_each(|&(i0, i1)| {
            let xp = xp;
            let f = self.first[i0];
            if f == n_out || rows == 0 {
                for r in 0..rows {
                    unsafe { std::slice::from_raw_parts_mut(xp.0.add(r * n_in + i0), i1 - i0) }.fill(0.0);
                }
                return;
            }
            // SAFETY: this block owns columns i0..i1 of every row of dx.
            unsafe {
                mm(
                    rows,
                    i1 - i0,
                    n_out - f,
                    xp.0.add(i0),
                    (n_in, 1),
                    false,
                    dy.as_ptr().add(f),
                    (n_out, 1),
                    ws.as_ptr().add(i0 * s_in + f * s_out),
                    (s_out, s_in),
                )
            }
        });
    }
}

/// Fused Bernoulli log-likelihood and its gradient for logits `z` `[rows, cols]` and 0/1 targets
/// `x`: returns `−log p` per row, `Σ_c max(z,0) − z·x + log(1 + e^{−|z|})` (the terms summed in
/// f64, in column order), and with `grad_scale = Some(s)` overwrites z by `∂/∂z = (σ(z) − x)·s`.
///
/// The elementwise part is [`wick_core::loss::bce_terms_host`] (branch-free, vectorised, AVX2
/// chosen at run time, the same bits on every path).
pub fn bce_rows_host(z: &mut [f32], x: &[f32], cols: usize, grad_scale: Option<f32>) -> Vec<f32> {
    let cols = cols.max(1);
    let mut out = vec![0f32; z.len() / cols];
    out.par_iter_mut().zip(z.par_chunks_mut(cols)).zip(x.par_chunks(cols)).for_each(|((o, zr), xr)| {
        let mut terms = vec![0f32; cols];
        wick_core::loss::bce_terms_host(zr, xr, &mut terms, grad_scale);
        *o = terms.iter().map(|&t| t as f64).sum::<f64>() as f32;
    });
    out
}

/// The f32 data of a contiguous CPU tensor, handed to `f` without a copy.
pub fn with_host<R>(t: &candle_core::Tensor, what: &str, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let (s, l) = t.storage_and_layout();
    match &*s {
        candle_core::Storage::Cpu(c) => Ok(f(wick_core::cpu::f32_slice(c, l, what)?)),
        _ => candle_core::bail!("{what} must be on the CPU"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wick_core::rng::Rng;

    fn rand_vec(r: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| r.normal() as f32).collect()
    }

    /// A random layer, its dense 0/1 mask `[n_in, n_out]` and random degrees.
    /// With `sorted`, both degree lists are non-decreasing (sorting is the identity: the
    /// copying fast paths).
    fn layer(r: &mut Rng, n_in: usize, n_out: usize, strict: bool, sorted: bool) -> (Staircase, Vec<f32>) {
        let mut a: Vec<usize> = (0..n_in).map(|_| 1 + r.below(20) as usize).collect();
        let mut c: Vec<usize> = (0..n_out).map(|_| 1 + r.below(20) as usize).collect();
        if sorted {
            a.sort();
            c.sort();
        }
        let st = Staircase::new(&a, &c, strict);
        let m: Vec<f32> = (0..n_in * n_out).map(|e| {
            let (i, o) = (e / n_out, e % n_out);
            (if strict { c[o] > a[i] } else { c[o] >= a[i] }) as u8 as f32
        }).collect();
        (st, m)
    }

    /// The blocked kernels equal the naive masked products (values and gradients), in both
    /// orientations, for random degrees with ties, both strictnesses and sizes that are not
    /// multiples of the block.
    #[test]
    fn blocked_products_equal_naive_masked_products() {
        let mut r = Rng::stream(3, "stairs");
        let cases = [(70, 150, 7, true, false), (150, 70, 5, false, false), (200, 130, 3, true, false), (1, 1, 2, false, false), (150, 140, 4, true, true), (130, 200, 3, false, true)];
        for &(n_in, n_out, rows, strict, sorted) in &cases {
            let (st, mask) = layer(&mut r, n_in, n_out, strict, sorted);
            assert!(!sorted || (st.in_identity && st.out_identity));
            for (i, o) in [(0, 0), (n_in - 1, n_out - 1), (n_in / 2, n_out / 3)] {
                assert_eq!(st.connected(i, o), mask[i * n_out + o] == 1.0);
            }
            let w = rand_vec(&mut r, n_in * n_out); // [in, out]
            let x = rand_vec(&mut r, rows * n_in);
            let dy = rand_vec(&mut r, rows * n_out);
            let b = rand_vec(&mut r, n_out);
            let wm: Vec<f32> = w.iter().zip(&mask).map(|(a, m)| a * m).collect();
            // Naive: y = x Wm + b, dW = (xᵀ dy) ⊙ M, db = Σ dy, dx = dy Wmᵀ, in original order.
            let mut y0 = vec![0f64; rows * n_out];
            let mut dx0 = vec![0f64; rows * n_in];
            let mut dw0 = vec![0f64; n_in * n_out];
            for rr in 0..rows {
                for o in 0..n_out {
                    y0[rr * n_out + o] = b[o] as f64 + (0..n_in).map(|i| (x[rr * n_in + i] * wm[i * n_out + o]) as f64).sum::<f64>();
                }
                for i in 0..n_in {
                    dx0[rr * n_in + i] = (0..n_out).map(|o| (dy[rr * n_out + o] * wm[i * n_out + o]) as f64).sum::<f64>();
                }
            }
            for i in 0..n_in {
                for o in 0..n_out {
                    dw0[i * n_out + o] = mask[i * n_out + o] as f64 * (0..rows).map(|rr| (x[rr * n_in + i] * dy[rr * n_out + o]) as f64).sum::<f64>();
                }
            }
            for out_major in [false, true] {
                // The same weights in the other orientation: [out, in].
                let w_or: Vec<f32> = if out_major { (0..n_in * n_out).map(|e| w[(e % n_in) * n_out + e / n_in]).collect() } else { w.clone() };
                let mut ws = vec![f32::NAN; n_in * n_out];
                st.pack(&w_or, out_major, &mut ws);
                let mut xs = vec![0f32; rows * n_in];
                Staircase::gather_cols(&x, &st.in_perm, &mut xs);
                let mut dys = vec![0f32; rows * n_out];
                Staircase::gather_cols(&dy, &st.out_perm, &mut dys);
                let bs: Vec<f32> = st.out_perm.iter().map(|&o| b[o]).collect();
                let mut ys = vec![f32::NAN; rows * n_out];
                st.forward(&xs, &ws, out_major, &bs, &mut ys, rows);
                let mut dws = vec![f32::NAN; n_in * n_out];
                let mut dbs = vec![f32::NAN; n_out];
                st.grad_weight(&xs, &dys, out_major, &mut dws, &mut dbs, rows);
                let mut dxs = vec![f32::NAN; rows * n_in];
                st.grad_input(&dys, &ws, out_major, &mut dxs, rows);
                let dw = st.unpack(&dws, out_major);
                let close = |a: f32, b: f64| (a as f64 - b).abs() <= 1e-4 * (1.0 + b.abs());
                for rr in 0..rows {
                    for o in 0..n_out {
                        assert!(close(ys[rr * n_out + st.out_pos[o]], y0[rr * n_out + o]), "y {rr} {o}");
                    }
                    for i in 0..n_in {
                        assert!(close(dxs[rr * n_in + st.in_pos[i]], dx0[rr * n_in + i]), "dx {rr} {i}");
                    }
                }
                for o in 0..n_out {
                    let want: f64 = (0..rows).map(|rr| dy[rr * n_out + o] as f64).sum();
                    assert!(close(dbs[st.out_pos[o]], want));
                }
                for i in 0..n_in {
                    for o in 0..n_out {
                        let got = if out_major { dw[o * n_in + i] } else { dw[i * n_out + o] };
                        assert!(close(got, dw0[i * n_out + o]), "dw {i} {o} out_major={out_major}");
                        if mask[i * n_out + o] == 0.0 {
                            assert_eq!(got, 0.0);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn blocked_products_are_bit_identical_for_any_thread_count() {
        let mut r = Rng::stream(4, "stairs");
        let (st, _) = layer(&mut r, 300, 260, false, false);
        let (rows, n_in, n_out) = (9, 300, 260);
        let (w, x, dy) = (rand_vec(&mut r, n_in * n_out), rand_vec(&mut r, rows * n_in), rand_vec(&mut r, rows * n_out));
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let mut ws = vec![0f32; n_in * n_out];
                st.pack(&w, false, &mut ws);
                let mut y = vec![0f32; rows * n_out];
                st.forward(&x, &ws, false, &vec![0.5; n_out], &mut y, rows);
                let (mut dws, mut db, mut dx) = (vec![0f32; n_in * n_out], vec![0f32; n_out], vec![0f32; rows * n_in]);
                st.grad_weight(&x, &dy, false, &mut dws, &mut db, rows);
                st.grad_input(&dy, &ws, false, &mut dx, rows);
                let dw = st.unpack(&dws, false);
                [y, dw, db, dx].concat().iter().map(|v| v.to_bits()).collect::<Vec<u32>>()
            })
        };
        let one = run(1);
        for k in [2, 3, 5] {
            assert!(one == run(k), "{k} threads differ from 1");
        }
    }

    #[test]
    fn triangular_staircase_halves_the_work() {
        let d = 784;
        let deg: Vec<usize> = (0..d).collect();
        let st = Staircase::new(&deg, &deg, true);
        assert_eq!(st.reach, deg, "FVSBN: output d sees inputs 0..d");
        let frac = st.blocked_macs() as f64 / (d * d) as f64;
        assert!(frac < 0.55, "{frac}");
    }
}
