//! Helpers for wick's fused CPU kernels (Candle custom ops): the contiguous f32 data of a storage,
//! the run-time choice of instruction set for vectorised loops ([`widest`]), the fp32 peak.

use candle_core::{bail, CpuStorage, Layout};

/// The f32 values of a contiguous CPU tensor; `what` names it in the error.
pub fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        (CpuStorage::F32(_), None) => bail!("{what} must be contiguous"),
        _ => bail!("{what} must be f32"),
    }
}

/// `f` with the f32 data of CPU tensors, borrowed from their storage (no copy): the host steps'
/// view of a model's parameters. `what` names them in the error.
pub fn with_host_slices<R>(
    tensors: &[&candle_core::Tensor],
    what: &str,
    f: impl FnOnce(&[&[f32]]) -> crate::Result<R>,
) -> crate::Result<R> {
    let guards: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
    let host = guards
        .iter()
        .map(|(s, l)| match &**s {
            candle_core::Storage::Cpu(c) => Ok(f32_slice(c, l, what)?),
            _ => crate::bail!("{what} must be on the CPU for the host step"),
        })
        .collect::<crate::Result<Vec<&[f32]>>>()?;
    f(&host)
}

/// `f` with the f32 data of contiguous CPU tensors lent mutably (no copy): each slice comes from
/// its own storage's write lock, taken by nesting Candle in-place ops (one tensor each) and held
/// until `f` returns. The tensors must have distinct storages. `what` names them in the error.
pub fn with_host_slices_mut<R>(
    tensors: &[&candle_core::Tensor],
    what: &str,
    f: impl FnOnce(&mut [&mut [f32]]) -> crate::Result<R>,
) -> crate::Result<R> {
    use std::cell::RefCell;
    type Body<'b> = &'b mut dyn FnMut(&mut [f32]) -> crate::Result<()>;
    struct Lend<'a, 'b> {
        what: &'a str,
        body: RefCell<Body<'b>>,
        err: RefCell<Option<crate::Error>>,
    }
    impl candle_core::InplaceOp1 for Lend<'_, '_> {
        fn name(&self) -> &'static str {
            "wick-host-slices"
        }
        fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
            let v = f32_slice_mut(s, l, self.what)?;
            if let Err(e) = (self.body.borrow_mut())(v) {
                *self.err.borrow_mut() = Some(e);
            }
            Ok(())
        }
    }
    fn nest(ts: &[&candle_core::Tensor], what: &str, lent: &mut Vec<(*mut f32, usize)>, f: &mut dyn FnMut(&mut [&mut [f32]]) -> crate::Result<()>) -> crate::Result<()> {
        let Some((t, rest)) = ts.split_first() else {
            // SAFETY: each pointer is a distinct storage's data, lent by an enclosing op that
            // holds its write lock until this returns.
            let mut slices: Vec<&mut [f32]> = lent.iter().map(|&(p, n)| unsafe { std::slice::from_raw_parts_mut(p, n) }).collect();
            return f(&mut slices);
        };
        let mut body = |v: &mut [f32]| {
            lent.push((v.as_mut_ptr(), v.len()));
            let r = nest(rest, what, lent, f);
            lent.pop();
            r
        };
        let op = Lend { what, body: RefCell::new(&mut body), err: RefCell::new(None) };
        t.inplace_op1(&op)?;
        op.err.into_inner().map_or(Ok(()), Err)
    }
    let (mut f, mut out) = (Some(f), None);
    nest(tensors, what, &mut Vec::with_capacity(tensors.len()), &mut |s| {
        out = Some((f.take().expect("called once"))(s)?);
        Ok(())
    })?;
    Ok(out.expect("the innermost call ran"))
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

/// Runs `body` compiled for AVX-512F or AVX2 where the CPU has them (chosen at run time), else
/// as built: for loops that the compiler vectorises. Rust never fuses a multiply and an add by
/// itself, so every path does the same operations in the same order and gives the same bits.
///
/// Pass the closure as `widest(#[inline(always)] || …)`: only a body inlined into the chosen
/// build is compiled with its features. Without the attribute LLVM inlines small bodies (a ReLU
/// pass) but keeps larger ones (the first convolution's loops) as a separate function compiled
/// for the baseline, SSE2 only (seen in `perf annotate`: no zmm register in it).
#[inline(always)]
pub fn widest<R>(body: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512<R>(body: impl FnOnce() -> R) -> R {
            body()
        }
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<R>(body: impl FnOnce() -> R) -> R {
            body()
        }
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F is available (checked just above).
            return unsafe { avx512(body) };
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is available (checked just above).
            return unsafe { avx2(body) };
        }
    }
    body()
}

/// The fp32 peak of `threads` cores for a roofline line in the benchmarks, in GFLOP/s, and how
/// it was found. Measured where it can be ([`measured_peak_gflops`]: the cores run as fast as
/// they will under this load, turbo included); else reckoned as threads × clock (`cpu MHz` of
/// `/proc/cpuinfo`) × FLOP per cycle ([`nominal_peak_gflops`]). `WICK_PEAK_GFLOPS` overrides it.
///
/// The nominal clock is not what the cores run at: on the 2-core Intel Xeon of these benchmarks
/// `/proc/cpuinfo` says 2.1 GHz (269 GFLOP/s for two cores) while the FMA loop ran at 491, and
/// MKL's 2048³ product at 440 (2026-12-07), so shares of the nominal peak overstated every
/// kernel's share by 1.8×.
pub fn peak_gflops(threads: usize) -> Option<(f64, String)> {
    if let Some(v) = std::env::var("WICK_PEAK_GFLOPS").ok().and_then(|v| v.parse::<f64>().ok()) {
        return Some((v, "WICK_PEAK_GFLOPS".into()));
    }
    let nominal = nominal_peak_gflops(threads);
    match (measured_peak_gflops(threads), nominal) {
        (Some((m, how)), Some((n, _))) => Some((m, format!("measured: {how}; {n:.0} at the nominal clock"))),
        (Some((m, how)), None) => Some((m, format!("measured: {how}"))),
        (None, n) => n,
    }
}

/// The peak reckoned from the nominal clock: threads × `cpu MHz` × FLOP per cycle — 64 on Intel
/// cores with AVX-512 (two 512-bit FMA units), 32 with FMA otherwise (two 256-bit FMA pipes; AMD
/// Zen 4 runs AVX-512 on them in halves), 16 without FMA. Turbo clocks are not counted. `None`
/// where the clock is unknown (not Linux).
pub fn nominal_peak_gflops(threads: usize) -> Option<(f64, String)> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let field = |name: &str| info.lines().find(|l| l.starts_with(name)).and_then(|l| l.split(':').nth(1)).map(|v| v.trim().to_string());
    let mhz: f64 = field("cpu MHz")?.parse().ok()?;
    let flags = field("flags").unwrap_or_default();
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    let intel = field("vendor_id").is_some_and(|v| v == "GenuineIntel");
    let per_cycle = if intel && has("avx512f") { 64.0 } else if has("fma") { 32.0 } else { 16.0 };
    let peak = threads as f64 * mhz / 1000.0 * per_cycle;
    Some((peak, format!("{threads} core(s) × {:.2} GHz × {per_cycle} FLOP/cycle", mhz / 1000.0)))
}

/// The fp32 FMA throughput of `threads` threads, measured: each runs 12 independent chains of
/// fused multiply-adds on the widest vectors the CPU has (AVX-512, else AVX2 + FMA), 10 million
/// rounds (16 ms on a 3.8 GHz core); the best of three runs. No memory traffic, so no kernel can
/// beat it. `None` without FMA (or off x86-64).
pub fn measured_peak_gflops(threads: usize) -> Option<(f64, String)> {
    #[cfg(target_arch = "x86_64")]
    {
        let wide = std::is_x86_feature_detected!("avx512f");
        if !(wide || std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
            return None;
        }
        let threads = threads.max(1);
        const ITERS: u64 = 10_000_000;
        let lanes = if wide { 16.0 } else { 8.0 };
        let mut best = 0f64;
        for _ in 0..3 {
            let t = std::time::Instant::now();
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| {
                        // SAFETY: the features were checked above.
                        let v = unsafe { if wide { fma_chains_avx512(ITERS) } else { fma_chains_avx2(ITERS) } };
                        std::hint::black_box(v);
                    });
                }
            });
            let flops = threads as f64 * ITERS as f64 * 12.0 * lanes * 2.0;
            best = best.max(flops / t.elapsed().as_secs_f64() / 1e9);
        }
        let isa = if wide { "AVX-512" } else { "AVX2" };
        Some((best, format!("{threads} thread(s) of 12 independent {isa} FMA chains")))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = threads;
        None
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_chains_avx512(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let (b, c) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
    let mut a: [__m512; 12] = std::array::from_fn(|i| _mm512_set1_ps(i as f32));
    for _ in 0..iters {
        for v in a.iter_mut() {
            *v = _mm512_fmadd_ps(*v, b, c);
        }
    }
    a.iter().map(|&v| _mm512_reduce_add_ps(v)).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains_avx2(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let (b, c) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    let mut a: [__m256; 12] = std::array::from_fn(|i| _mm256_set1_ps(i as f32));
    for _ in 0..iters {
        for v in a.iter_mut() {
            *v = _mm256_fmadd_ps(*v, b, c);
        }
    }
    let mut out = [0f32; 8];
    a.iter().map(|&v| {
        _mm256_storeu_ps(out.as_mut_ptr(), v);
        out.iter().sum::<f32>()
    }).sum()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// The peak is the clock times the FLOP per cycle per core, so it scales with the cores.
    #[test]
    fn peak_is_per_core_times_cores() {
        if std::env::var_os("WICK_PEAK_GFLOPS").is_some() {
            return;
        }
        let (one, how) = super::nominal_peak_gflops(1).expect("/proc/cpuinfo has a clock");
        let (two, _) = super::nominal_peak_gflops(2).unwrap();
        assert!(one > 1.0 && one < 1000.0, "{one} ({how})");
        assert!((two - 2.0 * one).abs() < 1e-9, "{one} {two}");
        assert!(how.contains("FLOP/cycle"), "{how}");
    }

    /// The measured peak is a real figure: positive, bounded, and (the chains run in parallel)
    /// no less for two threads than for one, within noise.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_measured_peak_is_a_plausible_figure() {
        let Some((one, how)) = super::measured_peak_gflops(1) else { return };
        assert!(one > 1.0 && one < 5000.0, "{one} ({how})");
        assert!(how.contains("FMA chains"), "{how}");
        let (two, _) = super::measured_peak_gflops(2).unwrap();
        assert!(two > 0.8 * one, "{one} {two}");
    }
}
