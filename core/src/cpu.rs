//! Helpers for wick's fused CPU kernels (Candle custom ops): the contiguous f32 data of a storage.

use candle_core::{bail, CpuStorage, Layout};

/// The f32 values of a contiguous CPU tensor; `what` names it in the error.
pub fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        (CpuStorage::F32(_), None) => bail!("{what} must be contiguous"),
        _ => bail!("{what} must be f32"),
    }
}

/// [`f32_slice`] for the tensor an in-place op writes.
pub fn f32_slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        (CpuStorage::F32(_), None) => bail!("{what} must be contiguous"),
        _ => bail!("{what} must be f32"),
    }
}

/// Keep freed memory in the process for reuse (glibc only; a no-op elsewhere).
///
/// glibc's malloc serves blocks above `M_MMAP_THRESHOLD` (128 KiB at start, raised dynamically)
/// with fresh `mmap`ed pages and gives freed heap tops back to the kernel above
/// `M_TRIM_THRESHOLD`. A training step allocates and frees the same multi-megabyte gradients and
/// temporaries every step, so without this each step page-faults them in again (measured with
/// `generative/examples/prof_step.rs`, MADE on mnist5k, 2 threads: 9× the page faults and
/// 10–20% more CPU time without it; before the MADE kernels reused their buffers, 25–30% of the
/// step time). Fixing the thresholds also turns the dynamic adjustment off. The binary calls
/// this once at start.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}
