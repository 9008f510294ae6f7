//! NADE's forward and backward as one fused Candle custom op, with a CPU kernel and CUDA kernels.
//!
//! With binary `x` `[B, D]`, `W` `[H, D]`, `c` `[H]`, `V` `[D, H]`, `b` `[D]`:
//!
//! ```text
//! a_0 = c,  a_{d+1} = a_d + W[:, d] x_d,   h_d = σ(a_d),   z_d = b_d + V[d, :] · h_d
//! ```
//!
//! [`nade_logits`] returns the logits `z` `[B, D]`; the loss stays outside in ordinary Candle
//! ops, and the op's backward turns `dL/dz` into the parameter gradients
//!
//! ```text
//! dV[d, :] = Σ_b dz_bd h_d,   db_d = Σ_b dz_bd,   da_d = dz_bd V[d, :] ⊙ h_d ⊙ (1 − h_d)
//! dc = Σ_b Σ_d da_d,          dW[:, j] = Σ_b x_bj Σ_{d > j} da_d
//! ```
//!
//! # Interface
//! Candle's `CustomOp3` takes three tensors, so the four parameters travel as two:
//! `w_tilde = [c | W]` `[H, D+1]` (c is column 0) and `v_tilde = [V | b]` `[D, H+1]` (b is the
//! last column). A model builds them with `Tensor::cat` (differentiable), and autograd splits
//! `dw_tilde`, `dv_tilde` back into dc, dW, dV, db. The op's `bwd` applies a second custom op
//! (no backward of its own), [`nade_grads`], to `stack([x, dz])`, `w_tilde`, `v_tilde`; it returns
//! both gradients packed in one vector that is narrowed and reshaped (views, no copies).
//! [`nade_grads`] is public too: with the BCE loss `dz = (σ(z) − x)/B` is closed-form, so a
//! model can skip the autograd graph altogether (as FVSBN's `loss_and_grads` does).
//!
//! # The CPU kernel
//! * **Nothing B×D×H is stored; h is recomputed only when it changes.** `a_{d+1} = a_d` when
//!   `x_d = 0`, so `h_d` is constant over the runs between the ones of x: a sample with n₁ ones
//!   needs n₁ + 1 sigmoid vectors, not D (MNIST: ~150 instead of 784). What remains per (sample,
//!   d) is dense and cheap: one FMA per hidden unit forward (`V[d]·h`), two backward
//!   (`dV[d] += dz h`, and the run sum `r += dz V[d]`; the run's `Σ da = u ⊙ r` with
//!   `u = h(1 − h)` is flushed into the running `g = Σ_{d'>d} da_{d'}` at each one).
//! * **Backward recomputes in reverse**: it rebuilds `a_D = c + Σ_j W[:, j] x_j` (in the
//!   forward's order) and walks d downwards subtracting `W[:, d] x_d`, which is what the
//!   reverse running sum `Σ_{d>j} da_d` needs. The recomputed `a_d` differ from the forward's by
//!   rounding only (~1e-7).
//! * **Layout**: the kernel copies `W̃` once per call into `[D+1, Hp]` (row j+1 = `W[:, j]`,
//!   contiguous) and `V` into `[D, Hp]`, zero-padded to `Hp` a multiple of 32 and of the
//!   backward's block width (padding units have `V = 0`, `W = 0` and so contribute nothing);
//!   O(DH), against O(BDH) of work. The backward's blocks read their columns of the same
//!   layout. The copy reads `W̃`/`Ṽ` for the op, or the model's own `W`, `c`, `V`, `b` for the
//!   host training step ([`loss_and_grads_host`]), which builds it once for both passes.
//! * **Parallel and bit-identical for any thread count** (rayon, current pool):
//!   - forward splits the **batch** into tiles of 8 samples (a remainder as 4 + 2 + 1). Each
//!     sample's arithmetic does not depend on the tile it lands in, and each tile writes its own
//!     rows of z.
//!   - backward splits the **hidden units** into blocks of `4·lanes` (64 with AVX-512). Every
//!     gradient entry belongs to exactly one block and is accumulated there in a fixed order
//!     (samples in order, in tiles of 16), and the only cross-unit sum, `db`, is done in sample
//!     order. No per-thread or per-chunk accumulators exist and there is no reduction step: the
//!     scratch is a few copies of the parameters (≈ 12 MB at D=784, H=500, kept in a small
//!     buffer pool between calls), independent of B and of the thread count.
//! * **SIMD**: explicit `std::arch` vectors behind a small trait, chosen at run time:
//!   AVX-512F (16 lanes), AVX2+FMA (8), or portable scalar code. `WICK_NADE_SIMD=avx512|avx2|
//!   scalar` forces one. Results are deterministic per backend (backends differ in the last
//!   bits of σ). The sigmoid is `1/(1 + e^{−a})` with e^y from Cody–Waite range reduction
//!   (`y = n ln2 + r`, |r| ≤ ln2/2), a degree-5 minimax polynomial and `2^n` by exponent
//!   arithmetic (`vscalefps` on AVX-512), and the reciprocal by `rcp` plus one Newton step
//!   (a true division would cost more than the rest: 10 cycles per 16 lanes). Relative error
//!   ≤ ~4e-7 for |a| ≤ 80 (tested); inputs are clamped to ±87, where σ is 0 or 1 to f32
//!   precision.
//!
//! # The CUDA kernels (`cuda` feature)
//! `nade_op/nade_op.cu`, compiled to PTX by `generative/build.rs` with nvcc (`$CUDA_HOME/bin/nvcc`,
//! target `compute_$CUDA_COMPUTE_CAP`, default 80) and launched from `nade_op/cuda.rs` through
//! Candle's `get_or_load_custom_func` and cudarc's launch builder. Both passes first transpose
//! `W̃` into `[D+1, H]` so that every access to a row of W, V is coalesced over hidden units.
//! * **Forward**: one block per sample; thread t holds `a[k]`, `h[k]` in registers for its units
//!   `k = t + i·T` (T ≤ 512 threads, up to 16 units each: H ≤ [`MAX_CUDA_HIDDEN`] = 8192). Per
//!   d, `V[d, :]·h` is reduced within each warp by shuffles into shared memory (`V[d+1]` is
//!   prefetched meanwhile), and h is recomputed only where `x_d ≠ 0` (a uniform branch, as x is
//!   the block's own sample). Every 64 steps one `__syncthreads` and `z_d = b_d + Σ_warps`.
//! * **Backward**: separable over hidden units: thread = unit k, owning `dW[k, :]`, `dc[k]`,
//!   `dV[:, k]`, no atomics. The batch is split into chunks (blockIdx.y) of whole tiles of 8
//!   samples whose state `a, h, u, g, r` stays in registers; each tile rebuilds `a_D` in the
//!   forward's order and walks d downwards with the CPU kernel's run sums, adding into its
//!   chunk's own partial gradients. A second kernel sums the chunks in chunk order (and db over
//!   samples in order) and the result is transposed back into `[H, D+1]`, `[D, H+1]`.
//! * **Deterministic**: the block shape and the chunking are functions of (B, D, H) only and
//!   every sum has a fixed order, so two runs give the same bits (tested). CUDA and CPU differ
//!   by rounding only (summation orders; CUDA's σ is `1/(1 + expf(−a))`); the tests allow 1e-4.
//!
//! The CUDA tests (`nade_op/cuda.rs`, `nade.rs`) compare with the CPU kernel on shapes from
//! 1×1×1 to 700×784×500 and check run-to-run bits; without a device they print a note and pass.
//! Without a GPU, `scripts/nade_cuda_emulate.sh` runs the same .cu source in a host emulation
//! (`nade_op/emulate.cpp`: a thread per CUDA thread, barriers for `__syncthreads` and shuffles)
//! against f64 evaluations of the formulas above.
//! `cargo run --release --features cuda -p wick-generative --example nade_cuda_bench` times the
//! fused op against the composed ops on a GPU.
//!
//! Only f32 tensors on the CPU or (in a `cuda` build) CUDA; inputs are made contiguous.

use candle_core::{bail, CpuStorage, CudaStorage, CustomOp3, DType, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

#[cfg(feature = "cuda")]
mod cuda;

/// The largest hidden layer the CUDA kernels take (512 threads × 16 units in registers).
pub const MAX_CUDA_HIDDEN: usize = 8192;

/// Whether [`nade_logits`] and [`nade_grads`] have a kernel for this device and hidden size:
/// always on the CPU, on CUDA (in a `cuda` build) up to [`MAX_CUDA_HIDDEN`] units, nowhere else.
pub fn fused_supported(device: &Device, hidden: usize) -> bool {
    match device {
        Device::Cpu => true,
        Device::Cuda(_) => cfg!(feature = "cuda") && hidden <= MAX_CUDA_HIDDEN,
        _ => false,
    }
}

/// NADE logits z `[B, D]` from x `[B, D]` (0/1 f32), w_tilde `[H, D+1]`, v_tilde `[D, H+1]`;
/// differentiable w.r.t. w_tilde and v_tilde.
pub fn nade_logits(x: &Tensor, w_tilde: &Tensor, v_tilde: &Tensor) -> candle_core::Result<Tensor> {
    check_args(x, w_tilde, v_tilde, None)?;
    let (x, w, v) = (x.contiguous()?, w_tilde.contiguous()?, v_tilde.contiguous()?);
    x.apply_op3(&w, &v, NadeLogits)
}

/// The gradients `(dw_tilde [H, D+1], dv_tilde [D, H+1])` of a loss whose gradient with
/// respect to the logits is `dz` `[B, D]`, by the fused backward kernel and without autograd.
pub fn nade_grads(
    x: &Tensor,
    w_tilde: &Tensor,
    v_tilde: &Tensor,
    dz: &Tensor,
) -> candle_core::Result<(Tensor, Tensor)> {
    check_args(x, w_tilde, v_tilde, Some(dz))?;
    let (_, d) = x.dims2()?;
    let h = w_tilde.dim(0)?;
    let xdz = Tensor::stack(&[&x.detach(), &dz.detach()], 0)?;
    let (w, v) = (w_tilde.detach().contiguous()?, v_tilde.detach().contiguous()?);
    let packed = xdz.apply_op3_no_bwd(&w, &v, &NadeGrads)?;
    let dw = packed.narrow(0, 0, h * (d + 1))?.reshape((h, d + 1))?;
    let dv = packed.narrow(0, h * (d + 1), d * (h + 1))?.reshape((d, h + 1))?;
    Ok((dw, dv))
}

/// One training step on the CPU from host buffers in the model's own layout: `x` `[B, D]` (0/1),
/// `W` `[H, D]`, `c` `[H]`, `V` `[D, H]`, `b` `[D]`. Returns the mean over rows of
/// −log p(x) and its gradients `[∂W, ∂c, ∂V, ∂b]` in the same layouts.
///
/// The kernels of [`nade_logits`] and [`nade_grads`] (the same bits for z and for a given dz)
/// around one vectorised pass that turns z into the loss terms and, in place, into
/// `∂L/∂z = (σ(z) − x)/B` ([`wick_core::loss::bce_terms_host`]). The forward's transposed,
/// padded copy of the parameters is built once, straight from the model's tensors, and the
/// backward reads its blocks from it and writes the gradients in the model's layout: no
/// packing into `W̃`/`Ṽ`, no split afterwards, no Candle op in between. Those took about as
/// long as the backward kernel (measured 2026-12-06, docs/performance.md). The loss is summed
/// in row order and does not depend on the thread count.
#[allow(clippy::too_many_arguments)]
pub fn loss_and_grads_host(
    x: &[f32],
    w: &[f32],
    c: &[f32],
    v: &[f32],
    b: &[f32],
    bsz: usize,
    d: usize,
    h: usize,
) -> (f64, [Vec<f32>; 4]) {
    let (mut dw, mut dc, mut dv, mut db) = (vec![0f32; h * d], vec![0f32; h], vec![0f32; d * h], vec![0f32; d]);
    let loss = loss_and_grads_host_into(x, w, c, v, b, bsz, d, h, [&mut dw, &mut dc, &mut dv, &mut db]);
    (loss, [dw, dc, dv, db])
}

/// [`loss_and_grads_host`] writing the gradients ∂W `[H, D]`, ∂c `[H]`, ∂V `[D, H]`, ∂b `[D]`
/// into the caller's buffers (every entry is written; their old contents do not matter), for
/// the data-parallel step, which has them written straight where the combine reads them.
#[allow(clippy::too_many_arguments)]
pub fn loss_and_grads_host_into(x: &[f32], w: &[f32], c: &[f32], v: &[f32], b: &[f32], bsz: usize, d: usize, h: usize, out: [&mut [f32]; 4]) -> f64 {
    assert!(x.len() == bsz * d && w.len() == h * d && c.len() == h && v.len() == d * h && b.len() == d);
    let [dw, dc, dv, db] = out;
    assert!(dw.len() == h * d && dc.len() == h && dv.len() == d * h && db.len() == d);
    let be = backend();
    let lay = fwd_layout(&Src::split(w, c, v, b, d, h), d, h, be);
    let mut z = forward_lay(be, x, &lay, bsz, d);
    let mut terms = vec![0f32; bsz * d];
    // Elementwise, so the chunks (16 rows) do not change the bits.
    let (chunk, scale) = (16 * d.max(1), 1.0 / bsz.max(1) as f32);
    z.par_chunks_mut(chunk).zip(x.par_chunks(chunk)).zip(terms.par_chunks_mut(chunk)).for_each(|((z, x), t)| {
        wick_core::loss::bce_terms_host(z, x, t, Some(scale));
    });
    let loss = terms.chunks(d.max(1)).map(|r| r.iter().map(|&t| t as f64).sum::<f64>()).sum::<f64>() / bsz.max(1) as f64;
    backward_lay(be, x, &z, &lay, bsz, d, h, GradsOut::Split { dw, dc, dv, db });
    loss
}

/// The same logits with ordinary Candle ops, O(DH) per sample by carrying the pre-activation
/// forward (a loop over d), for tests and for the GPU-less comparison.
pub fn nade_logits_composed(x: &Tensor, w_tilde: &Tensor, v_tilde: &Tensor) -> candle_core::Result<Tensor> {
    check_args(x, w_tilde, v_tilde, None)?;
    let (bsz, d) = x.dims2()?;
    let h = w_tilde.dim(0)?;
    let c = w_tilde.narrow(1, 0, 1)?.t()?; // [1, H]
    let wt = w_tilde.narrow(1, 1, d)?.t()?.contiguous()?; // [D, H]: row j is W[:, j]
    let v = v_tilde.narrow(1, 0, h)?; // [D, H]
    let b = v_tilde.narrow(1, h, 1)?.t()?; // [1, D]
    let mut a = c.broadcast_as((bsz, h))?.contiguous()?;
    let mut zs = Vec::with_capacity(d);
    for j in 0..d {
        let hj = candle_nn::ops::sigmoid(&a)?;
        zs.push(hj.broadcast_mul(&v.narrow(0, j, 1)?)?.sum_keepdim(1)?);
        if j + 1 < d {
            a = (a + x.narrow(1, j, 1)?.broadcast_mul(&wt.narrow(0, j, 1)?)?)?;
        }
    }
    Tensor::cat(&zs, 1)?.broadcast_add(&b)
}

fn check_args(x: &Tensor, w: &Tensor, v: &Tensor, dz: Option<&Tensor>) -> candle_core::Result<()> {
    for (name, t) in [("x", x), ("w_tilde", w), ("v_tilde", v)].into_iter().chain(dz.map(|t| ("dz", t))) {
        if t.dtype() != DType::F32 {
            bail!("nade op: {name} must be f32, got {:?}", t.dtype());
        }
        if t.rank() != 2 {
            bail!("nade op: {name} must be 2-d, got shape {:?}", t.dims());
        }
    }
    let (bsz, d) = x.dims2()?;
    let (h, d1) = w.dims2()?;
    if d1 != d + 1 || v.dims2()? != (d, h + 1) {
        bail!(
            "nade op: expected w_tilde [H, D+1] and v_tilde [D, H+1] for x {:?}, got {:?} and {:?}",
            x.dims(),
            w.dims(),
            v.dims()
        );
    }
    if let Some(dz) = dz {
        if dz.dims2()? != (bsz, d) {
            bail!("nade op: dz must have x's shape {:?}, got {:?}", x.dims(), dz.dims());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The two custom ops.

struct NadeLogits;
struct NadeGrads;

fn cpu_slice<'a>(s: &'a CpuStorage, l: &Layout, name: &str) -> candle_core::Result<&'a [f32]> {
    wick_core::cpu::f32_slice(s, l, &format!("nade op: {name}"))
}

impl CustomOp3 for NadeLogits {
    fn name(&self) -> &'static str {
        "nade-logits"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (bsz, d) = l1.shape().dims2()?;
        let h = l2.shape().dims()[0];
        let (x, w, v) = (cpu_slice(s1, l1, "x")?, cpu_slice(s2, l2, "w_tilde")?, cpu_slice(s3, l3, "v_tilde")?);
        let z = forward_cpu(backend(), x, w, v, bsz, d, h);
        Ok((CpuStorage::F32(z), Shape::from((bsz, d))))
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        #[cfg(feature = "cuda")]
        return cuda::logits(s1, l1, s2, l2, s3, l3);
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (s1, l1, s2, l2, s3, l3);
            bail!("fused NADE op: this build has no CUDA support (build with --features cuda)")
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        w_tilde: &Tensor,
        v_tilde: &Tensor,
        _z: &Tensor,
        dz: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dw, dv) = nade_grads(x, w_tilde, v_tilde, &dz.contiguous()?)?;
        Ok((None, Some(dw), Some(dv)))
    }
}

impl CustomOp3 for NadeGrads {
    fn name(&self) -> &'static str {
        "nade-grads"
    }

    /// `s1` is `stack([x, dz])` `[2, B, D]`; the result packs dw_tilde `[H, D+1]` then
    /// dv_tilde `[D, H+1]`, row-major, into one vector.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, bsz, d) = l1.shape().dims3()?;
        let h = l2.shape().dims()[0];
        let (xdz, w, v) = (cpu_slice(s1, l1, "x|dz")?, cpu_slice(s2, l2, "w_tilde")?, cpu_slice(s3, l3, "v_tilde")?);
        let (x, dz) = xdz.split_at(bsz * d);
        let g = backward_cpu(backend(), x, dz, w, v, bsz, d, h);
        let n = g.len();
        Ok((CpuStorage::F32(g), Shape::from(n)))
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        #[cfg(feature = "cuda")]
        return cuda::grads(s1, l1, s2, l2, s3, l3);
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (s1, l1, s2, l2, s3, l3);
            bail!("fused NADE op: this build has no CUDA support (build with --features cuda)")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SIMD backends.

/// The vector instruction set the kernels run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Backend {
    /// Every backend this machine can run, best last.
    pub fn available() -> Vec<Backend> {
        #[allow(unused_mut)]
        let mut v = vec![Backend::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                v.push(Backend::Avx2);
                if is_x86_feature_detected!("avx512f") {
                    v.push(Backend::Avx512);
                }
            }
        }
        v
    }

    fn lanes(self) -> usize {
        match self {
            Backend::Scalar => 1,
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2 => 8,
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512 => 16,
        }
    }
}

/// The backend the op uses: the best available, or `WICK_NADE_SIMD` if it names one.
pub fn backend() -> Backend {
    static CHOICE: std::sync::OnceLock<Backend> = std::sync::OnceLock::new();
    *CHOICE.get_or_init(|| {
        let avail = Backend::available();
        let want = std::env::var("WICK_NADE_SIMD").unwrap_or_default().to_lowercase();
        avail.iter().copied().find(|b| format!("{b:?}").to_lowercase() == want).unwrap_or(*avail.last().unwrap())
    })
}

/// Lane-wise f32 vector operations; every method is `unsafe` because the x86 ones need their
/// target features, which the callers guarantee by dispatching on [`Backend::available`].
trait Simd {
    const LANES: usize;
    type V: Copy;
    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// a·b + c, fused.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// c − a·b, fused.
    unsafe fn fnma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn sum(v: Self::V) -> f32;
    unsafe fn sigmoid(a: Self::V) -> Self::V;
}

// e^r ≈ 1 + r(C4 + r(C3 + r(C2 + r(C1 + r C0)))) on |r| ≤ ln2/2 (minimax, from ARM's optimized
// routines' vector expf), with y = n ln2 + r split Cody–Waite style.
#[cfg(target_arch = "x86_64")]
const EXP_C: [u32; 5] = [0x3c07_2010, 0x3d2b_9f17, 0x3e2a_af33, 0x3eff_fedb, 0x3f7f_fff6];
#[cfg(target_arch = "x86_64")]
const LN2_HI: f32 = 0.693_145_75;
#[cfg(target_arch = "x86_64")]
const LN2_LO: f32 = 1.428_606_8e-6;
#[cfg(target_arch = "x86_64")]
const ROUND_SHIFT: f32 = 12_582_912.0; // 1.5·2^23: adding it rounds to an integer
const SIG_CLAMP: f32 = 87.0;

struct Scalar;

impl Simd for Scalar {
    const LANES: usize = 1;
    type V = f32;
    #[inline(always)]
    unsafe fn zero() -> f32 {
        0.0
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> f32 {
        x
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32 {
        *p
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: f32) {
        *p = v
    }
    #[inline(always)]
    unsafe fn add(a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    unsafe fn fma(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
    #[inline(always)]
    unsafe fn fnma(a: f32, b: f32, c: f32) -> f32 {
        c - a * b
    }
    #[inline(always)]
    unsafe fn sum(v: f32) -> f32 {
        v
    }
    #[inline(always)]
    unsafe fn sigmoid(a: f32) -> f32 {
        1.0 / (1.0 + (-a.clamp(-SIG_CLAMP, SIG_CLAMP)).exp())
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    pub(super) struct Avx2;
    pub(super) struct Avx512;

    impl Simd for Avx2 {
        const LANES: usize = 8;
        type V = __m256;
        #[inline(always)]
        unsafe fn zero() -> __m256 {
            _mm256_setzero_ps()
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m256 {
            _mm256_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            _mm256_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256) {
            _mm256_storeu_ps(p, v)
        }
        #[inline(always)]
        unsafe fn add(a: __m256, b: __m256) -> __m256 {
            _mm256_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
            _mm256_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn fnma(a: __m256, b: __m256, c: __m256) -> __m256 {
            _mm256_fnmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn sum(v: __m256) -> f32 {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
            _mm_cvtss_f32(s)
        }
        #[inline(always)]
        unsafe fn sigmoid(a: __m256) -> __m256 {
            let a = _mm256_min_ps(_mm256_max_ps(a, _mm256_set1_ps(-SIG_CLAMP)), _mm256_set1_ps(SIG_CLAMP));
            // e^y with y = −a = n ln2 + r.
            let shift = _mm256_set1_ps(ROUND_SHIFT);
            let n = _mm256_sub_ps(_mm256_fmadd_ps(a, _mm256_set1_ps(-std::f32::consts::LOG2_E), shift), shift);
            let r = _mm256_fnmsub_ps(n, _mm256_set1_ps(LN2_LO), _mm256_fmadd_ps(n, _mm256_set1_ps(LN2_HI), a));
            let c = |i: usize| _mm256_set1_ps(f32::from_bits(EXP_C[i]));
            let mut p = _mm256_fmadd_ps(c(0), r, c(1));
            p = _mm256_fmadd_ps(p, r, c(2));
            p = _mm256_fmadd_ps(p, r, c(3));
            p = _mm256_fmadd_ps(p, r, c(4));
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
            let scale = _mm256_castsi256_ps(_mm256_slli_epi32(
                _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
                23,
            ));
            let den = _mm256_fmadd_ps(p, scale, _mm256_set1_ps(1.0));
            let rc = _mm256_rcp_ps(den);
            _mm256_fmadd_ps(rc, _mm256_fnmadd_ps(den, rc, _mm256_set1_ps(1.0)), rc)
        }
    }

    impl Simd for Avx512 {
        const LANES: usize = 16;
        type V = __m512;
        #[inline(always)]
        unsafe fn zero() -> __m512 {
            _mm512_setzero_ps()
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m512 {
            _mm512_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            _mm512_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m512) {
            _mm512_storeu_ps(p, v)
        }
        #[inline(always)]
        unsafe fn add(a: __m512, b: __m512) -> __m512 {
            _mm512_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
            _mm512_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn fnma(a: __m512, b: __m512, c: __m512) -> __m512 {
            _mm512_fnmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn sum(v: __m512) -> f32 {
            let lo = _mm512_castps512_ps256(v);
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
            Avx2::sum(_mm256_add_ps(lo, hi))
        }
        #[inline(always)]
        unsafe fn sigmoid(a: __m512) -> __m512 {
            // Only the lower clamp is needed: vscalefps sends e^y to 0 for very negative y.
            let a = _mm512_max_ps(a, _mm512_set1_ps(-SIG_CLAMP));
            let shift = _mm512_set1_ps(ROUND_SHIFT);
            let n = _mm512_sub_ps(_mm512_fmadd_ps(a, _mm512_set1_ps(-std::f32::consts::LOG2_E), shift), shift);
            let r = _mm512_fnmsub_ps(n, _mm512_set1_ps(LN2_LO), _mm512_fmadd_ps(n, _mm512_set1_ps(LN2_HI), a));
            let c = |i: usize| _mm512_set1_ps(f32::from_bits(EXP_C[i]));
            let mut p = _mm512_fmadd_ps(c(0), r, c(1));
            p = _mm512_fmadd_ps(p, r, c(2));
            p = _mm512_fmadd_ps(p, r, c(3));
            p = _mm512_fmadd_ps(p, r, c(4));
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0));
            let den = _mm512_add_ps(_mm512_scalef_ps(p, n), _mm512_set1_ps(1.0));
            let rc = _mm512_rcp14_ps(den);
            _mm512_fmadd_ps(rc, _mm512_fnmadd_ps(den, rc, _mm512_set1_ps(1.0)), rc)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Buffers and layout.

/// An f32 scratch buffer whose first element is 64-byte aligned, drawn from a small process-wide
/// pool and returned to it on drop: every call needs several megabytes of scratch, and fresh
/// allocations of that size are mmap'd and page-faulted in anew each time.
struct Aligned {
    buf: Vec<f32>,
    off: usize,
    len: usize,
}

static POOL: std::sync::Mutex<Vec<Vec<f32>>> = std::sync::Mutex::new(Vec::new());
/// At most this many idle buffers are kept (the op needs about a dozen at a time).
const POOL_MAX: usize = 64;

impl Aligned {
    /// A buffer of `len` floats with unspecified contents.
    fn uninit(len: usize) -> Aligned {
        let want = len + 16;
        let buf = {
            let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
            // The smallest idle buffer that is large enough.
            let best =
                pool.iter().enumerate().filter(|(_, b)| b.len() >= want).min_by_key(|(_, b)| b.len()).map(|(i, _)| i);
            best.map(|i| pool.swap_remove(i))
        };
        let buf = buf.unwrap_or_else(|| vec![0f32; want]);
        let off = (16 - (buf.as_ptr() as usize / 4) % 16) % 16;
        Aligned { buf, off, len }
    }
    fn zeros(len: usize) -> Aligned {
        let mut a = Aligned::uninit(len);
        a.as_mut_slice().fill(0.0);
        a
    }
    fn as_slice(&self) -> &[f32] {
        &self.buf[self.off..self.off + self.len]
    }
    fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(buf);
        }
    }
}

fn round_up(n: usize, m: usize) -> usize {
    n.div_ceil(m) * m
}

/// `W̃ᵀ` `[D+1, hp]` (row 0 = c, row j+1 = W[:, j]), `V` `[D, hp]`, zero-padded, and b.
struct FwdLayout {
    hp: usize,
    wt: Aligned,
    v: Aligned,
    b: Vec<f32>,
    /// σ(c), padded: every sample's h_0.
    h0: Aligned,
}

/// `dst[j·ldd + k] = src[k·lds + j]` for `k < n`, `j < m`: a transpose in 16×16 tiles.
fn transpose(src: &[f32], lds: usize, n: usize, m: usize, dst: &mut [f32], ldd: usize) {
    const T: usize = 16;
    if n == 0 || m == 0 {
        return;
    }
    assert!(src.len() > (n - 1) * lds + m - 1 && dst.len() > (m - 1) * ldd + n - 1);
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
    for kb in (0..n).step_by(T) {
        let ke = (kb + T).min(n);
        for jb in (0..m).step_by(T) {
            for j in jb..(jb + T).min(m) {
                for k in kb..ke {
                    // SAFETY: k < n and j < m, within the bounds asserted above.
                    unsafe { *dp.add(j * ldd + k) = *sp.add(k * lds + j) };
                }
            }
        }
    }
}

/// Where the kernels read the parameters: `W[k, j] = w[k·ldw + j]`, `c[k] = c[k·ldc]`,
/// `V[j, k] = v[j·ldv + k]`, `b[j] = b[j·ldb]`. The op's packing `W̃ = [c | W]`, `Ṽ = [V | b]`
/// ([`Src::tilde`]) and the model's own tensors ([`Src::split`]) are both such views.
#[derive(Clone, Copy)]
struct Src<'a> {
    w: &'a [f32],
    ldw: usize,
    c: &'a [f32],
    ldc: usize,
    v: &'a [f32],
    ldv: usize,
    b: &'a [f32],
    ldb: usize,
}

impl<'a> Src<'a> {
    /// `w_tilde` `[H, D+1]` (c is column 0), `v_tilde` `[D, H+1]` (b is column H).
    fn tilde(w_tilde: &'a [f32], v_tilde: &'a [f32], d: usize, h: usize) -> Src<'a> {
        Src { w: &w_tilde[1.min(w_tilde.len())..], ldw: d + 1, c: w_tilde, ldc: d + 1, v: v_tilde, ldv: h + 1, b: &v_tilde[h.min(v_tilde.len())..], ldb: h + 1 }
    }

    /// `W` `[H, D]`, `c` `[H]`, `V` `[D, H]`, `b` `[D]`.
    fn split(w: &'a [f32], c: &'a [f32], v: &'a [f32], b: &'a [f32], d: usize, h: usize) -> Src<'a> {
        Src { w, ldw: d, c, ldc: 1, v, ldv: h, b, ldb: 1 }
    }
}

/// The kernels' copy of the parameters for backend `be`. The hidden units are padded to a whole
/// number of the forward's vector pairs and of the backward's blocks, which read their columns
/// from the same layout.
fn fwd_layout(src: &Src, d: usize, h: usize, be: Backend) -> FwdLayout {
    let hp = round_up(h, (2 * be.lanes().max(16)).max(BWD_NV * be.lanes()));
    let mut wt = Aligned::uninit((d + 1) * hp);
    let rows_per = 16;
    wt.as_mut_slice().par_chunks_mut(rows_per * hp).enumerate().for_each(|(i, out)| {
        let r0 = i * rows_per;
        let rows = out.len() / hp;
        // Row 0 is c, row j + 1 is W[:, j].
        let skip = if r0 == 0 {
            for (k, o) in out[..h].iter_mut().enumerate() {
                *o = src.c[k * src.ldc];
            }
            1
        } else {
            0
        };
        let j0 = (r0 + skip) - 1;
        transpose(&src.w[j0.min(src.w.len())..], src.ldw, h, rows - skip, &mut out[skip * hp..], hp);
        for row in out.chunks_mut(hp) {
            row[h..].fill(0.0);
        }
    });
    let mut vv = Aligned::uninit(d * hp);
    vv.as_mut_slice().par_chunks_mut(hp).enumerate().for_each(|(j, o)| {
        o[..h].copy_from_slice(&src.v[j * src.ldv..j * src.ldv + h]);
        o[h..].fill(0.0);
    });
    let b = (0..d).map(|j| src.b[j * src.ldb]).collect();
    let mut h0 = Aligned::zeros(hp);
    for (o, &c) in h0.as_mut_slice().iter_mut().zip(wt.as_slice()[..hp].iter()) {
        *o = unsafe { Scalar::sigmoid(c) };
    }
    FwdLayout { hp, wt, v: vv, b, h0 }
}

// ---------------------------------------------------------------------------------------------
// Forward.

const FWD_TILE: usize = 8;
/// Padding (320 bytes) between scratch arrays that are accessed together; see `bwd_block`.
const ANTI_ALIAS: usize = 80;

/// z for a tile of `T` samples: `x`, `z` are their `T × D` rows; `scratch` holds `2·T·hp`.
#[inline(always)]
unsafe fn fwd_tile<S: Simd, const T: usize>(lay: &FwdLayout, x: &[f32], z: &mut [f32], scratch: &mut [f32], d: usize) {
    let (hp, l) = (lay.hp, S::LANES);
    let nv = hp / l;
    debug_assert!(nv % 2 == 0 && x.len() == T * d && z.len() == T * d && scratch.len() >= 2 * T * hp + ANTI_ALIAS);
    let (a, hh) = scratch.split_at_mut(T * hp + ANTI_ALIAS);
    let c = &lay.wt.as_slice()[..hp];
    for s in 0..T {
        a[s * hp..(s + 1) * hp].copy_from_slice(c);
        hh[s * hp..(s + 1) * hp].copy_from_slice(lay.h0.as_slice());
    }
    let (ap, hpp) = (a.as_mut_ptr(), hh.as_mut_ptr());
    let (wp, vp, xp) = (lay.wt.as_slice().as_ptr(), lay.v.as_slice().as_ptr(), x.as_ptr());
    for j in 0..d {
        if j > 0 {
            // a += W[:, j−1] x_{j−1} and h = σ(a), for the samples whose x_{j−1} ≠ 0.
            let mut m = 0u32;
            for s in 0..T {
                m |= ((*xp.add(s * d + j - 1) != 0.0) as u32) << s;
            }
            let w = wp.add(j * hp);
            while m != 0 {
                let s = m.trailing_zeros() as usize;
                m &= m - 1;
                let xv = S::splat(*xp.add(s * d + j - 1));
                let (pa, ph) = (ap.add(s * hp), hpp.add(s * hp));
                for k in (0..hp).step_by(l) {
                    let av = S::fma(xv, S::load(w.add(k)), S::load(pa.add(k)));
                    S::store(pa.add(k), av);
                    S::store(ph.add(k), S::sigmoid(av));
                }
            }
        }
        // z_j = b_j + V[j]·h, two accumulators per sample.
        let vr = vp.add(j * hp);
        let mut acc = [[S::zero(); 2]; T];
        for k in (0..nv).step_by(2) {
            let v0 = S::load(vr.add(k * l));
            let v1 = S::load(vr.add(k * l + l));
            for (s, acc) in acc.iter_mut().enumerate() {
                let ph = hpp.add(s * hp + k * l);
                acc[0] = S::fma(v0, S::load(ph), acc[0]);
                acc[1] = S::fma(v1, S::load(ph.add(l)), acc[1]);
            }
        }
        for (s, acc) in acc.iter().enumerate() {
            *z.get_unchecked_mut(s * d + j) = lay.b[j] + S::sum(S::add(acc[0], acc[1]));
        }
    }
}

macro_rules! dispatch_tile {
    ($be:expr, $t:expr, $f:ident, $($arg:expr),*) => {
        match ($be, $t) {
            (Backend::Scalar, 8) => $f::<Scalar, 8>($($arg),*),
            (Backend::Scalar, 4) => $f::<Scalar, 4>($($arg),*),
            (Backend::Scalar, 2) => $f::<Scalar, 2>($($arg),*),
            (Backend::Scalar, 1) => $f::<Scalar, 1>($($arg),*),
            #[cfg(target_arch = "x86_64")]
            (Backend::Avx2, 8) => fwd_tile_avx2::<8>($($arg),*),
            #[cfg(target_arch = "x86_64")]
            (Backend::Avx2, 4) => fwd_tile_avx2::<4>($($arg),*),
            #[cfg(target_arch = "x86_64")]
            (Backend::Avx2, 2) => fwd_tile_avx2::<2>($($arg),*),
            #[cfg(target_arch = "x86_64")]
            (Backend::Avx2, 1) => fwd_tile_avx2::<1>($($arg),*),
            #[cfg(target_arch = "x86_64")]
            (Backend::Avx512, 8) => fwd_tile_avx512::<8>($($arg),*),
            #[cfg(target_arch = "x86_64")]
            (Backend::Avx512, 4) => fwd_tile_avx512::<4>($($arg),*),
            #[cfg(target_arch = "x86_64")]
            (Backend::Avx512, 2) => fwd_tile_avx512::<2>($($arg),*),
            #[cfg(target_arch = "x86_64")]
            (Backend::Avx512, 1) => fwd_tile_avx512::<1>($($arg),*),
            _ => unreachable!("tile sizes are 8, 4, 2, 1"),
        }
    };
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fwd_tile_avx2<const T: usize>(lay: &FwdLayout, x: &[f32], z: &mut [f32], s: &mut [f32], d: usize) {
    fwd_tile::<x86::Avx2, T>(lay, x, z, s, d)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn fwd_tile_avx512<const T: usize>(lay: &FwdLayout, x: &[f32], z: &mut [f32], s: &mut [f32], d: usize) {
    fwd_tile::<x86::Avx512, T>(lay, x, z, s, d)
}

/// The logits `[B, D]`, row-major, from the op's packing `w_tilde`, `v_tilde`.
fn forward_cpu(be: Backend, x: &[f32], w: &[f32], v: &[f32], bsz: usize, d: usize, h: usize) -> Vec<f32> {
    assert!(x.len() == bsz * d && w.len() == h * (d + 1) && v.len() == d * (h + 1));
    if bsz == 0 || d == 0 {
        return vec![0f32; bsz * d];
    }
    forward_lay(be, x, &fwd_layout(&Src::tilde(w, v, d, h), d, h, be), bsz, d)
}

/// The logits `[B, D]` from a layout built by [`fwd_layout`] for `be`.
fn forward_lay(be: Backend, x: &[f32], lay: &FwdLayout, bsz: usize, d: usize) -> Vec<f32> {
    let mut z = vec![0f32; bsz * d];
    if bsz == 0 || d == 0 {
        return z;
    }
    // Tiles of 8 samples, the remainder as 4 + 2 + 1: a sample's result does not depend on its
    // tile, so any thread count gives the same bits.
    let mut tiles = Vec::new();
    let (mut start, mut rest) = (0, bsz);
    for t in [FWD_TILE, 4, 2, 1] {
        while rest >= t {
            tiles.push((start, t));
            start += t;
            rest -= t;
        }
    }
    let mut jobs = Vec::with_capacity(tiles.len());
    let mut zrest = z.as_mut_slice();
    for &(s0, t) in &tiles {
        let (zt, r) = zrest.split_at_mut(t * d);
        zrest = r;
        jobs.push((&x[s0 * d..(s0 + t) * d], zt, t));
    }
    jobs.into_par_iter().for_each_init(
        || Aligned::zeros(2 * FWD_TILE * lay.hp + ANTI_ALIAS),
        |scratch, (xt, zt, t)| unsafe { dispatch_tile!(be, t, fwd_tile, lay, xt, zt, scratch.as_mut_slice(), d) },
    );
    z
}

// ---------------------------------------------------------------------------------------------
// Backward.

const BWD_TILE: usize = 16;
/// Vectors per hidden block in the backward (the block is `BWD_NV · lanes` units wide).
const BWD_NV: usize = 4;

/// What every hidden block of the backward shares: x, dz and the positions of x's non-zeros.
struct BwdShared<'a> {
    x: &'a [f32],
    dz: &'a [f32],
    bsz: usize,
    d: usize,
    h: usize,
    /// `masks[t·D + j]`: bit s set when sample `BWD_TILE·t + s` has x_j ≠ 0.
    masks: Vec<u32>,
    /// Non-zero positions of sample s: `ones[s·D..s·D + counts[s]]`, ascending.
    ones: Vec<u32>,
    counts: Vec<usize>,
}

/// Where a hidden block writes its rows of `∂W` and `∂c`.
enum DwOut<'a> {
    /// Rows of dw_tilde `[rows, D+1]` (∂c in column 0).
    Tilde(&'a mut [f32]),
    /// Rows of ∂W `[rows, D]` and the same entries of ∂c.
    Split { dw: &'a mut [f32], dc: &'a mut [f32] },
}

/// One hidden block `[k0, k0 + hb)`: its rows of ∂W and ∂c into `out` and `dv_blk` (`[D, hb]`,
/// block-local). W̃ᵀ and V are read from the forward's layout (columns k0.., zero beyond H).
#[inline(always)]
unsafe fn bwd_block<S: Simd>(sh: &BwdShared, lay: &FwdLayout, k0: usize, out: DwOut, dv_blk: &mut [f32]) {
    let (d, h, l) = (sh.d, sh.h, S::LANES);
    let hb = BWD_NV * l;
    let rows = hb.min(h - k0);
    let ld = lay.hp;
    debug_assert!(k0 + hb <= ld);
    let mut dwb = Aligned::zeros((d + 1) * hb);
    dv_blk.fill(0.0);
    // Per-sample state of a tile: a, h, u = h(1−h), r (run sum of dz·V), g (Σ_{d'>d} da);
    // the tile's initialisation writes all of it.
    // The five arrays are `ANTI_ALIAS` floats further apart than their size, so that a load of
    // one is never 4 KiB-aliased with a store to another (which stalls the load).
    let sz = BWD_TILE * hb + ANTI_ALIAS;
    let mut st = Aligned::uninit(5 * sz);
    let stp = st.as_mut_slice().as_mut_ptr();
    let (ap, hp_, up, rp, gp) = (stp, stp.add(sz), stp.add(2 * sz), stp.add(3 * sz), stp.add(4 * sz));
    let (wbp, vbp, dwp, dvp) =
        (lay.wt.as_slice().as_ptr().add(k0), lay.v.as_slice().as_ptr().add(k0), dwb.as_mut_slice().as_mut_ptr(), dv_blk.as_mut_ptr());
    let (xp, dzp) = (sh.x.as_ptr(), sh.dz.as_ptr());
    for (t, s0) in (0..sh.bsz).step_by(BWD_TILE).enumerate() {
        let n = BWD_TILE.min(sh.bsz - s0);
        // a_D = c + Σ_j W[:, j] x_j in the forward's order; h, u from it; r = g = 0.
        for s in 0..n {
            let o = s * hb;
            let mut acc = [S::zero(); BWD_NV];
            for (q, acc) in acc.iter_mut().enumerate() {
                *acc = S::load(wbp.add(q * l));
            }
            for &j in &sh.ones[(s0 + s) * d..(s0 + s) * d + sh.counts[s0 + s]] {
                let j = j as usize;
                let xv = S::splat(*xp.add((s0 + s) * d + j));
                let wr = wbp.add((j + 1) * ld);
                for (q, acc) in acc.iter_mut().enumerate() {
                    *acc = S::fma(xv, S::load(wr.add(q * l)), *acc);
                }
            }
            for (q, &av) in acc.iter().enumerate() {
                let k = o + q * l;
                let hv = S::sigmoid(av);
                S::store(ap.add(k), av);
                S::store(hp_.add(k), hv);
                S::store(up.add(k), S::fnma(hv, hv, hv));
                S::store(rp.add(k), S::zero());
                S::store(gp.add(k), S::zero());
            }
        }
        for j in (0..d).rev() {
            // Samples with x_j ≠ 0: flush the run into g, dW[:, j] += x_j g, a −= W[:, j] x_j.
            let mut m = sh.masks[t * d + j];
            let wr = wbp.add((j + 1) * ld);
            let dwr = dwp.add((j + 1) * hb);
            while m != 0 {
                let s = m.trailing_zeros() as usize;
                m &= m - 1;
                let xv = S::splat(*xp.add((s0 + s) * d + j));
                for q in 0..BWD_NV {
                    let k = s * hb + q * l;
                    let g = S::fma(S::load(up.add(k)), S::load(rp.add(k)), S::load(gp.add(k)));
                    S::store(gp.add(k), g);
                    S::store(rp.add(k), S::zero());
                    S::store(dwr.add(q * l), S::fma(xv, g, S::load(dwr.add(q * l))));
                    let av = S::fnma(xv, S::load(wr.add(q * l)), S::load(ap.add(k)));
                    let hv = S::sigmoid(av);
                    S::store(ap.add(k), av);
                    S::store(hp_.add(k), hv);
                    S::store(up.add(k), S::fnma(hv, hv, hv));
                }
            }
            // Every sample: dV[j] += dz_j h,  r += dz_j V[j].
            let vr = vbp.add(j * ld);
            let mut vv = [S::zero(); BWD_NV];
            let mut dv = [S::zero(); BWD_NV];
            for (q, vv) in vv.iter_mut().enumerate() {
                *vv = S::load(vr.add(q * l));
            }
            for s in 0..n {
                let g = S::splat(*dzp.add((s0 + s) * d + j));
                for q in 0..BWD_NV {
                    let k = s * hb + q * l;
                    dv[q] = S::fma(g, S::load(hp_.add(k)), dv[q]);
                    S::store(rp.add(k), S::fma(g, vv[q], S::load(rp.add(k))));
                }
            }
            let dvr = dvp.add(j * hb);
            for (q, &dv) in dv.iter().enumerate() {
                S::store(dvr.add(q * l), S::add(S::load(dvr.add(q * l)), dv));
            }
        }
        // The last run; g is then Σ_d da_d, whose sum over samples is dc.
        for s in 0..n {
            for q in 0..BWD_NV {
                let k = s * hb + q * l;
                let g = S::fma(S::load(up.add(k)), S::load(rp.add(k)), S::load(gp.add(k)));
                S::store(dwp.add(q * l), S::add(S::load(dwp.add(q * l)), g));
            }
        }
    }
    // Rows k0..k0+rows of ∂W̃ = the transpose of dwb's first `rows` columns (row 0: ∂c).
    match out {
        DwOut::Tilde(dw_rows) => transpose(dwb.as_slice(), hb, d + 1, rows, dw_rows, d + 1),
        DwOut::Split { dw, dc } => {
            dc.copy_from_slice(&dwb.as_slice()[..rows]);
            transpose(&dwb.as_slice()[hb..], hb, d, rows, dw, d);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn bwd_block_avx2(sh: &BwdShared, lay: &FwdLayout, k0: usize, out: DwOut, dv: &mut [f32]) {
    bwd_block::<x86::Avx2>(sh, lay, k0, out, dv)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn bwd_block_avx512(sh: &BwdShared, lay: &FwdLayout, k0: usize, out: DwOut, dv: &mut [f32]) {
    bwd_block::<x86::Avx512>(sh, lay, k0, out, dv)
}

/// dw_tilde `[H, D+1]` then dv_tilde `[D, H+1]`, packed row-major in one vector, from the op's
/// packing `w_tilde`, `v_tilde`.
#[allow(clippy::too_many_arguments)]
fn backward_cpu(be: Backend, x: &[f32], dz: &[f32], w: &[f32], v: &[f32], bsz: usize, d: usize, h: usize) -> Vec<f32> {
    assert!(x.len() == bsz * d && dz.len() == bsz * d && w.len() == h * (d + 1) && v.len() == d * (h + 1));
    let mut out = vec![0f32; h * (d + 1) + d * (h + 1)];
    if h == 0 || d == 0 {
        return out;
    }
    let lay = fwd_layout(&Src::tilde(w, v, d, h), d, h, be);
    let (dw_out, dv_out) = out.split_at_mut(h * (d + 1));
    backward_lay(be, x, dz, &lay, bsz, d, h, GradsOut::Tilde { dw: dw_out, dv: dv_out });
    out
}

/// Where [`backward_lay`] writes the gradients.
enum GradsOut<'a> {
    /// dw_tilde `[H, D+1]` and dv_tilde `[D, H+1]`.
    Tilde { dw: &'a mut [f32], dv: &'a mut [f32] },
    /// ∂W `[H, D]`, ∂c `[H]`, ∂V `[D, H]`, ∂b `[D]`.
    Split { dw: &'a mut [f32], dc: &'a mut [f32], dv: &'a mut [f32], db: &'a mut [f32] },
}

/// The backward from the forward's layout (built by [`fwd_layout`] for `be`).
#[allow(clippy::too_many_arguments)]
fn backward_lay(be: Backend, x: &[f32], dz: &[f32], lay: &FwdLayout, bsz: usize, d: usize, h: usize, out: GradsOut) {
    if h == 0 || d == 0 {
        return;
    }
    // Branch-free bookkeeping of x's non-zeros, shared by all blocks.
    let ntiles = bsz.div_ceil(BWD_TILE);
    let mut masks = vec![0u32; ntiles * d];
    let mut ones = vec![0u32; bsz * d];
    let mut counts = vec![0usize; bsz];
    masks
        .par_chunks_mut(d)
        .zip(ones.par_chunks_mut(BWD_TILE * d))
        .zip(counts.par_chunks_mut(BWD_TILE))
        .enumerate()
        .for_each(|(t, ((m, ones), counts))| {
            for (bit, (ones, n)) in ones.chunks_mut(d).zip(counts.iter_mut()).enumerate() {
                let xs = &x[(t * BWD_TILE + bit) * d..][..d];
                for (j, (&xv, m)) in xs.iter().zip(m.iter_mut()).enumerate() {
                    let nz = xv != 0.0;
                    *m |= (nz as u32) << bit;
                    ones[*n] = j as u32;
                    *n += nz as usize;
                }
            }
        });
    let sh = BwdShared { x, dz, bsz, d, h, masks, ones, counts };
    let hb = BWD_NV * be.lanes();
    let nblocks = h.div_ceil(hb);
    let mut dv_blocks = Aligned::uninit(nblocks * d * hb);
    let block = |q: usize, o: DwOut, dv: &mut [f32]| unsafe {
        match be {
            Backend::Scalar => bwd_block::<Scalar>(&sh, lay, q * hb, o, dv),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2 => bwd_block_avx2(&sh, lay, q * hb, o, dv),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512 => bwd_block_avx512(&sh, lay, q * hb, o, dv),
        }
    };
    let dvs = dv_blocks.as_mut_slice().par_chunks_mut(d * hb);
    // Row j of ∂V from the blocks' columns `dvb`, and ∂b_j = Σ_b dz_bj in sample order.
    let dv_row = |dvb: &[f32], j: usize, row: &mut [f32]| {
        for q in 0..nblocks {
            let k0 = q * hb;
            let rows = hb.min(h - k0);
            row[k0..k0 + rows].copy_from_slice(&dvb[(q * d + j) * hb..(q * d + j) * hb + rows]);
        }
    };
    let db_j = |j: usize| (0..bsz).fold(0f32, |acc, s| acc + dz[s * d + j]);
    match out {
        GradsOut::Tilde { dw, dv } => {
            dw.par_chunks_mut(hb * (d + 1)).zip(dvs).enumerate().for_each(|(q, (dw, dv))| block(q, DwOut::Tilde(dw), dv));
            let dvb = dv_blocks.as_slice();
            dv.par_chunks_mut(h + 1).enumerate().for_each(|(j, row)| {
                dv_row(dvb, j, row);
                row[h] = db_j(j);
            });
        }
        GradsOut::Split { dw, dc, dv, db } => {
            dw.par_chunks_mut(hb * d)
                .zip(dc.par_chunks_mut(hb))
                .zip(dvs)
                .enumerate()
                .for_each(|(q, ((dw, dc), dv))| block(q, DwOut::Split { dw, dc }, dv));
            let dvb = dv_blocks.as_slice();
            dv.par_chunks_mut(h).enumerate().for_each(|(j, row)| dv_row(dvb, j, row));
            db.par_iter_mut().enumerate().for_each(|(j, o)| *o = db_j(j));
        }
    }
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::bce_with_logits;
    use candle_core::{Device, Var};
    use wick_core::rng::Rng;

    struct Problem {
        bsz: usize,
        d: usize,
        h: usize,
        x: Vec<f32>,
        w: Vec<f32>,
        v: Vec<f32>,
    }

    fn problem(bsz: usize, d: usize, h: usize, seed: u64) -> Problem {
        let mut rng = Rng::stream(seed, "nade-op");
        let mut u = |s: f64| ((2.0 * rng.uniform() - 1.0) * s) as f32;
        let w = (0..h * (d + 1)).map(|_| u(1.5)).collect();
        let v = (0..d * (h + 1)).map(|_| u(1.0)).collect();
        let mut rng = Rng::stream(seed, "x");
        let x = (0..bsz * d).map(|_| (rng.uniform() < 0.35) as u8 as f32).collect();
        Problem { bsz, d, h, x, w, v }
    }

    fn tensors(p: &Problem) -> (Tensor, Var, Var) {
        let dev = Device::Cpu;
        (
            Tensor::from_vec(p.x.clone(), (p.bsz, p.d), &dev).unwrap(),
            Var::from_vec(p.w.clone(), (p.h, p.d + 1), &dev).unwrap(),
            Var::from_vec(p.v.clone(), (p.d, p.h + 1), &dev).unwrap(),
        )
    }

    /// The logits straight from the equations, O(D²H) per sample, in f64; `w`, `v` as f64.
    fn naive_logits(p: &Problem, w: &[f64], v: &[f64]) -> Vec<f64> {
        let (d, h) = (p.d, p.h);
        let mut z = vec![0.0; p.bsz * d];
        for s in 0..p.bsz {
            let x = &p.x[s * d..(s + 1) * d];
            for j in 0..d {
                let mut zj = v[j * (h + 1) + h];
                for k in 0..h {
                    let a = w[k * (d + 1)] + (0..j).map(|i| w[k * (d + 1) + i + 1] * x[i] as f64).sum::<f64>();
                    zj += v[j * (h + 1) + k] / (1.0 + (-a).exp());
                }
                z[s * d + j] = zj;
            }
        }
        z
    }

    /// Σ BCE(z, x) in f64 from the naive logits.
    fn naive_loss(p: &Problem, w: &[f64], v: &[f64]) -> f64 {
        let z = naive_logits(p, w, v);
        z.iter().zip(&p.x).map(|(&z, &x)| z.max(0.0) - z * x as f64 + (-z.abs()).exp().ln_1p()).sum()
    }

    fn to64(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&x| x as f64).collect()
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    const SHAPES: [(usize, usize, usize); 4] = [(3, 7, 5), (9, 20, 16), (21, 30, 70), (37, 13, 130)];

    #[test]
    fn logits_equal_composed_and_naive_for_every_backend() {
        for &(bsz, d, h) in &SHAPES {
            let p = problem(bsz, d, h, (bsz * d + h) as u64);
            let want = naive_logits(&p, &to64(&p.w), &to64(&p.v));
            let (x, w, v) = tensors(&p);
            let composed = nade_logits_composed(&x, &w, &v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let fused = nade_logits(&x, &w, &v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for i in 0..want.len() {
                assert!(
                    close(fused[i] as f64, want[i], 1e-4),
                    "{bsz}x{d}x{h} [{i}]: fused {} vs naive {}",
                    fused[i],
                    want[i]
                );
                assert!(close(composed[i] as f64, want[i], 1e-4), "composed {} vs naive {}", composed[i], want[i]);
            }
            for be in Backend::available() {
                let z = forward_cpu(be, &p.x, &p.w, &p.v, bsz, d, h);
                for i in 0..want.len() {
                    assert!(close(z[i] as f64, want[i], 1e-4), "{be:?} {bsz}x{d}x{h} [{i}]: {} vs {}", z[i], want[i]);
                }
            }
        }
    }

    fn fused_grads(x: &Tensor, w: &Var, v: &Var) -> (Vec<f32>, Vec<f32>) {
        let z = nade_logits(x, w.as_tensor(), v.as_tensor()).unwrap();
        let g = bce_with_logits(&z, x).unwrap().sum_all().unwrap().backward().unwrap();
        let f = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        (f(g.get(w.as_tensor()).unwrap()), f(g.get(v.as_tensor()).unwrap()))
    }

    #[test]
    fn gradients_equal_autograd_of_composed_and_finite_differences() {
        for &(bsz, d, h) in &SHAPES {
            let p = problem(bsz, d, h, 7 + bsz as u64);
            let (x, w, v) = tensors(&p);
            let (gw, gv) = fused_grads(&x, &w, &v);
            let z = nade_logits_composed(&x, w.as_tensor(), v.as_tensor()).unwrap();
            let g = bce_with_logits(&z, &x).unwrap().sum_all().unwrap().backward().unwrap();
            let cw = g.get(w.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let cv = g.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let scale = gw.iter().chain(&gv).fold(0f32, |m, g| m.max(g.abs())) as f64;
            for (name, a, b) in [("w_tilde", &gw, &cw), ("v_tilde", &gv, &cv)] {
                for i in 0..a.len() {
                    assert!(
                        (a[i] - b[i]).abs() as f64 <= 1e-4 * (1.0 + b[i].abs() as f64 + 0.01 * scale),
                        "{bsz}x{d}x{h} d{name}[{i}]: fused {} vs composed {}",
                        a[i],
                        b[i]
                    );
                }
            }
            // Central differences of the f64 naive loss on a few entries of each parameter,
            // including c (column 0 of w_tilde) and b (column H of v_tilde).
            let (w64, v64) = (to64(&p.w), to64(&p.v));
            let eps = 1e-5;
            let mut rng = Rng::stream(bsz as u64, "fd");
            let mut pick = |n: usize| rng.below(n as u64) as usize;
            let wi: Vec<usize> = vec![0, d + 1, (h - 1) * (d + 1) + 1, pick(h * (d + 1)), pick(h * (d + 1))];
            let vi: Vec<usize> = vec![h, d * (h + 1) - 1, pick(d * (h + 1)), pick(d * (h + 1))];
            for (is_w, idx) in wi.iter().map(|&i| (true, i)).chain(vi.iter().map(|&i| (false, i))) {
                let (mut wp, mut vp) = (w64.clone(), v64.clone());
                let (mut wm, mut vm) = (w64.clone(), v64.clone());
                if is_w {
                    wp[idx] += eps;
                    wm[idx] -= eps;
                } else {
                    vp[idx] += eps;
                    vm[idx] -= eps;
                }
                let fd = (naive_loss(&p, &wp, &vp) - naive_loss(&p, &wm, &vm)) / (2.0 * eps);
                let got = if is_w { gw[idx] } else { gv[idx] } as f64;
                assert!(
                    close(got, fd, 1e-3),
                    "{bsz}x{d}x{h} {} [{idx}]: fused {got} vs fd {fd}",
                    if is_w { "w" } else { "v" }
                );
            }
        }
    }

    #[test]
    fn every_backend_gives_the_same_gradients_up_to_rounding() {
        let p = problem(21, 30, 70, 3);
        let mut rng = Rng::stream(3, "dz");
        let dz: Vec<f32> = (0..21 * 30).map(|_| (rng.uniform() - 0.5) as f32).collect();
        let all: Vec<_> =
            Backend::available().into_iter().map(|be| backward_cpu(be, &p.x, &dz, &p.w, &p.v, 21, 30, 70)).collect();
        for g in &all[1..] {
            for (a, b) in g.iter().zip(&all[0]) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn results_are_bit_identical_for_any_thread_count() {
        let p = problem(53, 40, 150, 11);
        let (x, w, v) = tensors(&p);
        let run = |k: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(k).build().unwrap();
            pool.install(|| {
                let z = nade_logits(&x, w.as_tensor(), v.as_tensor()).unwrap();
                let (gw, gv) = fused_grads(&x, &w, &v);
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                (bits(&z.flatten_all().unwrap().to_vec1::<f32>().unwrap()), bits(&gw), bits(&gv))
            })
        };
        let one = run(1);
        for k in [2, 3] {
            assert!(one == run(k), "{k} threads differ from 1");
        }
    }

    #[test]
    fn sigmoid_is_accurate_on_every_backend() {
        let xs: Vec<f32> = (0..=160_000).map(|i| -80.0 + i as f32 * 1e-3).collect();
        for be in Backend::available() {
            let l = be.lanes();
            let mut worst = 0f64;
            for chunk in xs.chunks_exact(16) {
                let mut out = [0f32; 16];
                unsafe { sigmoid_chunk(be, chunk, &mut out, l) };
                for (&a, &s) in chunk.iter().zip(&out) {
                    let want = 1.0 / (1.0 + (-(a as f64)).exp());
                    worst = worst.max((s as f64 - want).abs() / want);
                }
            }
            eprintln!("sigmoid {be:?}: max relative error {worst:.2e} on [-80, 80]");
            assert!(worst < 1e-6, "{be:?}: relative error {worst}");
        }
    }

    unsafe fn sigmoid_chunk(be: Backend, x: &[f32], out: &mut [f32; 16], l: usize) {
        for k in (0..16).step_by(l) {
            match be {
                Backend::Scalar => out[k] = Scalar::sigmoid(x[k]),
                #[cfg(target_arch = "x86_64")]
                Backend::Avx2 => sig_avx2(x.as_ptr().add(k), out.as_mut_ptr().add(k)),
                #[cfg(target_arch = "x86_64")]
                Backend::Avx512 => sig_avx512(x.as_ptr().add(k), out.as_mut_ptr().add(k)),
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn sig_avx2(x: *const f32, o: *mut f32) {
        use x86::Avx2 as S;
        S::store(o, S::sigmoid(S::load(x)))
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn sig_avx512(x: *const f32, o: *mut f32) {
        use x86::Avx512 as S;
        S::store(o, S::sigmoid(S::load(x)))
    }

    #[test]
    fn bad_inputs_fail_clearly() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
        let w = Tensor::zeros((4, 4), DType::F32, &dev).unwrap();
        let v = Tensor::zeros((3, 5), DType::F32, &dev).unwrap();
        assert!(nade_logits(&x, &w, &v).is_ok());
        let err = nade_logits(&x, &w, &Tensor::zeros((3, 4), DType::F32, &dev).unwrap()).unwrap_err();
        assert!(err.to_string().contains("v_tilde [D, H+1]"), "{err}");
        let err = nade_logits(&x.to_dtype(DType::F64).unwrap(), &w, &v).unwrap_err();
        assert!(err.to_string().contains("must be f32"), "{err}");
        // Non-contiguous inputs are made contiguous.
        let xt = Tensor::zeros((3, 2), DType::F32, &dev).unwrap().t().unwrap();
        assert!(nade_logits(&xt, &w, &v).is_ok());
    }
}
