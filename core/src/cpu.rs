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
