//! Augmentations for small grey images, drawn on the host from a seeded stream (SimCLR's views).
//!
//! One view of an `H × W` image x ∈ [0,1] is, in this order:
//!
//! 1. **crop-and-resize, small rotation, shift** as one affine resampling: output pixel p (centred
//!    coordinates) reads the input at `s · R(θ) p + t` by bilinear interpolation (zero outside),
//!    with zoom `s ~ U(scale_min, 1)` (a crop of relative side s resized to the full image),
//!    `θ ~ U(−max_rotation, max_rotation)` and `t ~ U(−max_shift, max_shift)²` in pixels
//!    (a fraction of the side);
//! 2. **cut-out** (DeVries & Taylor 2017): with probability `cutout_p`, a square of side
//!    `cutout_frac · H` at a uniform position is set to 0;
//! 3. **noise**: `x + σ ε`, ε ~ N(0, 1) per pixel, clamped to [0, 1]: pixels 2j and 2j + 1 take
//!    the two values of the Box–Muller transform of pair j's uniforms, which are the bits of
//!    SplitMix64's j-th output from a key drawn from the view's stream ([`normal_pair`]: a
//!    counter-based stream, so every pair is computed independently, 16 at a time, with the
//!    logarithm, sine and cosine as short polynomials in plain f32 arithmetic — the same bits on
//!    every instruction set). Until 2026-12-07 the noise was Marsaglia's polar method drawn pair
//!    by pair from the view's sequential stream, with a rejection loop and a libm logarithm: 2.5×
//!    slower, and the views of earlier runs differ in their noise.
//!
//! Every draw comes from the `Rng` passed in, so a view is a pure function of the image and the
//! stream's state. [`Augment::view_pairs`] gives image i of a batch its own stream
//! `Rng::stream_indexed(seed, name, first + i)` and spreads images over rayon's threads: the
//! views are the same bits for any thread count.

use rayon::prelude::*;
use wick_core::rng::Rng;

/// Augmentation strengths.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Augment {
    pub height: usize,
    pub width: usize,
    /// Smallest zoom (relative crop side) of crop-and-resize.
    pub scale_min: f64,
    /// Largest rotation, radians.
    pub max_rotation: f64,
    /// Largest shift, as a fraction of the side.
    pub max_shift: f64,
    pub cutout_p: f64,
    pub cutout_frac: f64,
    /// Standard deviation of the additive Gaussian noise.
    pub noise: f64,
}

impl Augment {
    /// The defaults used by `wick train simclr`: crops of 70–100% of the side, ±15°, shifts up to
    /// 10% of the side, cut-out of a 30% square half the time, noise σ = 0.1.
    pub fn for_images(height: usize, width: usize) -> Augment {
        Augment { height, width, scale_min: 0.7, max_rotation: 15f64.to_radians(), max_shift: 0.1, cutout_p: 0.5, cutout_frac: 0.3, noise: 0.1 }
    }

    /// One view of the image `x` (`H·W` values), drawn from `rng`.
    ///
    /// On x86-64 the resampling runs eight pixels at a time with AVX-512 (or the portable loop
    /// compiled for AVX2), chosen at run time: the same operations in the same order per pixel
    /// (no fused multiply-adds; Rust never fuses by itself), so the views are the same bits on
    /// every path (tested against the loop as first written).
    pub fn view(&self, x: &[f32], rng: &mut Rng) -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                // SAFETY: AVX-512F is available (checked just above).
                return unsafe { self.view_avx512(x, rng) };
            }
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 is available (checked just above).
                return unsafe { self.view_avx2(x, rng) };
            }
        }
        self.view_impl(x, rng, warp_rows)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn view_avx512(&self, x: &[f32], rng: &mut Rng) -> Vec<f32> {
        self.view_impl(x, rng, |p, padded, out| unsafe { warp_rows_avx512(p, padded, out) })
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn view_avx2(&self, x: &[f32], rng: &mut Rng) -> Vec<f32> {
        self.view_impl(x, rng, warp_rows)
    }

    #[inline(always)]
    fn view_impl(&self, x: &[f32], rng: &mut Rng, warp: impl FnOnce(&Warp, &[f64], &mut [f32])) -> Vec<f32> {
        let (h, w) = (self.height, self.width);
        let s = self.scale_min + (1.0 - self.scale_min) * rng.uniform();
        let th = self.max_rotation * (2.0 * rng.uniform() - 1.0);
        let tx = self.max_shift * w as f64 * (2.0 * rng.uniform() - 1.0);
        let ty = self.max_shift * h as f64 * (2.0 * rng.uniform() - 1.0);
        let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
        let (cs, sn) = (th.cos() * s, th.sin() * s);
        // The image in f64 inside a border of two zeros, and every tap's corner clamped into
        // [−2, side]: a tap outside the image reads a zero of the border, as "zero outside" asks,
        // without a branch per tap (the same values, so the same bits).
        let pw = w + 4;
        let mut padded = vec![0f64; (h + 4) * pw];
        for (r, row) in x.chunks_exact(w).enumerate() {
            for (p, &v) in padded[(r + 2) * pw + 2..(r + 2) * pw + 2 + w].iter_mut().zip(row) {
                *p = v as f64;
            }
        }
        let mut out = vec![0f32; h * w];
        warp(&Warp { h, w, pw, cs, sn, cx, cy, tx, ty }, &padded, &mut out);
        let cut = rng.uniform() < self.cutout_p;
        let side = ((self.cutout_frac * h.min(w) as f64).round() as usize).max(1);
        let (r0, c0) = (rng.below((h - side + 1) as u64) as usize, rng.below((w - side + 1) as u64) as usize);
        if cut {
            for r in r0..r0 + side {
                out[r * w + c0..r * w + c0 + side].fill(0.0);
            }
        }
        add_noise(&mut out, rng.bits(), self.noise as f32);
        out
    }

    /// Two views of each of the `n` images in `x` (`n × H·W`): (first views, second views).
    /// Image i's two views come from `Rng::stream_indexed(seed, name, first + i)`, first view
    /// first; images are spread over rayon's threads, which changes no bit.
    pub fn view_pairs(&self, x: &[f32], seed: u64, name: &str, first: u64) -> (Vec<f32>, Vec<f32>) {
        let d = self.height * self.width;
        let (mut a, mut b) = (vec![0f32; x.len()], vec![0f32; x.len()]);
        a.par_chunks_mut(d).zip(b.par_chunks_mut(d)).zip(x.par_chunks(d)).enumerate().for_each(|(i, ((va, vb), img))| {
            let mut rng = Rng::stream_indexed(seed, name, first + i as u64);
            va.copy_from_slice(&self.view(img, &mut rng));
            vb.copy_from_slice(&self.view(img, &mut rng));
        });
        (a, b)
    }
}

/// Pairs of noise values per block of [`add_noise`] (fixed-size loops, vectorised whole).
const NOISE_PAIRS: usize = 32;

/// `x ← clamp(x + σ ε, 0, 1)` for every pixel, ε from [`normal_pair`] keyed by `key`: pixel 2j
/// takes pair j's first value, pixel 2j + 1 its second.
#[inline(always)]
fn add_noise(out: &mut [f32], key: u64, sigma: f32) {
    let mut z = [0f32; 2 * NOISE_PAIRS];
    for (c, chunk) in out.chunks_mut(2 * NOISE_PAIRS).enumerate() {
        for j in 0..NOISE_PAIRS {
            (z[2 * j], z[2 * j + 1]) = normal_pair(key, (c * NOISE_PAIRS + j) as u64);
        }
        for (x, &e) in chunk.iter_mut().zip(&z) {
            *x = (*x + sigma * e).clamp(0.0, 1.0);
        }
    }
}

/// Two independent N(0, 1) values for pair `j` of a view's noise (Box–Muller): the 64 bits
/// `h = SplitMix64(key + j·γ)` (SplitMix64's j-th output from state `key`) give
/// `u = (h₆₃…₄₁ + ½) / 2²³ ∈ (0, 1)` (exact in f32, so ln u keeps its relative precision near
/// u = 1), a quadrant `q = h₂₃…₂₂` and `t = h₂₁…₀ / 2²² ∈ [0, 1)`, so the angle is
/// `θ = (q + t) π/2`; the values are `r cos θ` and `r sin θ` with `r = √(−2 ln u)` (at most
/// 5.8: the tails beyond 5.8σ, probability 7·10⁻⁹, are cut).
/// The logarithm is the exponent plus `2 atanh(s)`, `s = (m − 1)/(m + 1)` for the mantissa m in
/// (√½, √2] (`|s| ≤ 0.172`, terms to s⁹); sine and cosine of `t π/2` are their Taylor series
/// to the 11th and 12th powers (error under 6·10⁻⁸). Plain f32 operations with no branch, so
/// LLVM vectorises them and every instruction set gives the same bits.
#[inline(always)]
fn normal_pair(key: u64, j: u64) -> (f32, f32) {
    let h = wick_core::rng::splitmix64(key.wrapping_add(j.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    let u = (((h >> 41) as i32) as f32 + 0.5) * (1.0 / 8_388_608.0);
    let q = ((h >> 22) & 3) as i32;
    let t = ((h & 0x3F_FFFF) as i32) as f32 * (1.0 / 4_194_304.0);
    // ln u = e ln 2 + ln m, m ∈ (√½, √2].
    let bits = u.to_bits();
    let m = f32::from_bits((bits & 0x7F_FFFF) | 0x3F80_0000);
    let big = m > std::f32::consts::SQRT_2;
    let m = if big { m * 0.5 } else { m };
    let e = ((bits >> 23) & 0xFF) as i32 - 127 + big as i32;
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let ln_m = 2.0 * s + 2.0 * s * (s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0)))));
    let ln_u = e as f32 * std::f32::consts::LN_2 + ln_m;
    let r = (-2.0 * ln_u).sqrt();
    // sin and cos of φ = t π/2 ∈ [0, π/2).
    let p = t * std::f32::consts::FRAC_PI_2;
    let p2 = p * p;
    let sin = p * (1.0 + p2 * (-1.0 / 6.0 + p2 * (1.0 / 120.0 + p2 * (-1.0 / 5040.0 + p2 * (1.0 / 362_880.0 + p2 * (-1.0 / 39_916_800.0))))));
    let cos = 1.0 + p2 * (-0.5 + p2 * (1.0 / 24.0 + p2 * (-1.0 / 720.0 + p2 * (1.0 / 40_320.0 + p2 * (-1.0 / 3_628_800.0 + p2 * (1.0 / 479_001_600.0))))));
    // θ = φ + q π/2: quadrants 1 and 3 swap sine and cosine; the cosine is negative in
    // quadrants 1 and 2, the sine in 2 and 3.
    let swap = q & 1 == 1;
    let (c, s) = if swap { (sin, cos) } else { (cos, sin) };
    let c_sign = if (q ^ (q >> 1)) & 1 == 1 { -1.0 } else { 1.0 };
    let s_sign = if q >= 2 { -1.0 } else { 1.0 };
    (r * (c * c_sign), r * (s * s_sign))
}

/// The affine map of one view: output pixel (r, c) reads the bordered image at
/// `(sn·px + cs·py + cy + ty, cs·px − sn·py + cx + tx)`, px = c − cx, py = r − cy.
struct Warp {
    h: usize,
    w: usize,
    /// Row length of the bordered image (w + 4).
    pw: usize,
    cs: f64,
    sn: f64,
    cx: f64,
    cy: f64,
    tx: f64,
    ty: f64,
}

/// Output pixel (r, c) by bilinear interpolation of the bordered image.
#[inline(always)]
fn warp_one(p: &Warp, padded: &[f64], r: usize, c: usize) -> f32 {
    let at = |r: isize, c: isize| -> f64 { padded[(r + 2) as usize * p.pw + (c + 2) as usize] };
    let (px, py) = (c as f64 - p.cx, r as f64 - p.cy);
    let sx = p.cs * px - p.sn * py + p.cx + p.tx;
    let sy = p.sn * px + p.cs * py + p.cy + p.ty;
    let (x0, y0) = (sx.floor(), sy.floor());
    let (fx, fy) = (sx - x0, sy - y0);
    let (x0, y0) = ((x0 as isize).clamp(-2, p.w as isize), (y0 as isize).clamp(-2, p.h as isize));
    let v = (1.0 - fy) * ((1.0 - fx) * at(y0, x0) + fx * at(y0, x0 + 1)) + fy * ((1.0 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1));
    v as f32
}

#[inline(always)]
fn warp_rows(p: &Warp, padded: &[f64], out: &mut [f32]) {
    for r in 0..p.h {
        for c in 0..p.w {
            out[r * p.w + c] = warp_one(p, padded, r, c);
        }
    }
}

/// [`warp_rows`] eight pixels of a row at a time (the last few of a row as eight too): the same
/// operations per pixel, so the same bits; the four taps are gathers from the bordered image.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn warp_rows_avx512(p: &Warp, padded: &[f64], out: &mut [f32]) {
    use std::arch::x86_64::*;
    assert!(padded.len() >= (p.h + 4) * p.pw && out.len() >= p.h * p.w && (p.h + 4) * p.pw < i32::MAX as usize);
    let (cs, sn, cx, cy, tx, ty) = (_mm512_set1_pd(p.cs), _mm512_set1_pd(p.sn), _mm512_set1_pd(p.cx), _mm512_set1_pd(p.cy), _mm512_set1_pd(p.tx), _mm512_set1_pd(p.ty));
    let one = _mm512_set1_pd(1.0);
    let (lo, xmax, ymax) = (_mm256_set1_epi32(-2), _mm256_set1_epi32(p.w as i32), _mm256_set1_epi32(p.h as i32));
    let (two, pw) = (_mm256_set1_epi32(2), _mm256_set1_epi32(p.pw as i32));
    let lanes = _mm512_set_pd(7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0);
    let base = padded.as_ptr();
    for r in 0..p.h {
        let py = _mm512_set1_pd(r as f64 - p.cy);
        let mut c = 0;
        while c < p.w {
            // c + lane is exact in f64, as `c as f64` is.
            let px = _mm512_sub_pd(_mm512_add_pd(_mm512_set1_pd(c as f64), lanes), cx);
            let sx = _mm512_add_pd(_mm512_add_pd(_mm512_sub_pd(_mm512_mul_pd(cs, px), _mm512_mul_pd(sn, py)), cx), tx);
            let sy = _mm512_add_pd(_mm512_add_pd(_mm512_add_pd(_mm512_mul_pd(sn, px), _mm512_mul_pd(cs, py)), cy), ty);
            let (x0, y0) = (_mm512_roundscale_pd::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(sx), _mm512_roundscale_pd::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(sy));
            let (fx, fy) = (_mm512_sub_pd(sx, x0), _mm512_sub_pd(sy, y0));
            let xi = _mm256_min_epi32(_mm256_max_epi32(_mm512_cvttpd_epi32(x0), lo), xmax);
            let yi = _mm256_min_epi32(_mm256_max_epi32(_mm512_cvttpd_epi32(y0), lo), ymax);
            let idx = _mm256_add_epi32(_mm256_mullo_epi32(_mm256_add_epi32(yi, two), pw), _mm256_add_epi32(xi, two));
            let a = _mm512_i32gather_pd::<8>(idx, base);
            let b = _mm512_i32gather_pd::<8>(_mm256_add_epi32(idx, _mm256_set1_epi32(1)), base);
            let idx2 = _mm256_add_epi32(idx, pw);
            let cc = _mm512_i32gather_pd::<8>(idx2, base);
            let d = _mm512_i32gather_pd::<8>(_mm256_add_epi32(idx2, _mm256_set1_epi32(1)), base);
            let (gx, gy) = (_mm512_sub_pd(one, fx), _mm512_sub_pd(one, fy));
            let top = _mm512_add_pd(_mm512_mul_pd(gx, a), _mm512_mul_pd(fx, b));
            let bot = _mm512_add_pd(_mm512_mul_pd(gx, cc), _mm512_mul_pd(fx, d));
            let v = _mm512_add_pd(_mm512_mul_pd(gy, top), _mm512_mul_pd(fy, bot));
            if c + 8 <= p.w {
                _mm256_storeu_ps(out.as_mut_ptr().add(r * p.w + c), _mm512_cvtpd_ps(v));
            } else {
                // The row's last pixels: lanes past its end computed too (their taps are clamped
                // into the bordered image like any other) and dropped.
                let mut last = [0f32; 8];
                _mm256_storeu_ps(last.as_mut_ptr(), _mm512_cvtpd_ps(v));
                out[r * p.w + c..(r + 1) * p.w].copy_from_slice(&last[..p.w - c]);
            }
            c += 8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digit() -> Vec<f32> {
        // A bar in the middle of an 8×8 image.
        (0..64).map(|i| if (2..6).contains(&(i % 8)) && (3..5).contains(&(i / 8)) { 1.0 } else { 0.0 }).collect()
    }

    #[test]
    fn views_are_deterministic_per_seed_and_differ_across_seeds() {
        let aug = Augment::for_images(8, 8);
        let x: Vec<f32> = [digit(), digit()].concat();
        let a = aug.view_pairs(&x, 1, "augment", 0);
        assert_eq!(a, aug.view_pairs(&x, 1, "augment", 0));
        let b = aug.view_pairs(&x, 2, "augment", 0);
        assert_ne!(a, b);
        assert_ne!(a.0, a.1, "the two views of an image differ");
        assert_ne!(a.0[..64], a.0[64..], "two copies of an image get different views");
        assert!(a.0.iter().chain(&a.1).all(|v| (0.0..=1.0).contains(v)));
    }

    /// Image i's views depend on (seed, first + i) only: not on the batch around it nor on how
    /// many threads computed them.
    #[test]
    fn views_depend_on_the_example_index_not_on_threads_or_batch() {
        let aug = Augment::for_images(8, 8);
        let mut r = Rng::stream(5, "imgs");
        let x: Vec<f32> = (0..37 * 64).map(|_| r.uniform() as f32).collect();
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| aug.view_pairs(&x, 3, "augment", 100));
        let three = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap().install(|| aug.view_pairs(&x, 3, "augment", 100));
        assert_eq!(one, three);
        // The batch's images 10.. on their own, starting at example 110.
        let tail = aug.view_pairs(&x[10 * 64..], 3, "augment", 110);
        assert_eq!(tail.0[..], one.0[10 * 64..]);
        assert_eq!(tail.1[..], one.1[10 * 64..]);
    }

    /// The noise is N(0, σ²): mean and variance of the added values on a mid-grey image without
    /// any other transform (no clamping within ±5σ).
    #[test]
    fn the_noise_has_the_stated_variance() {
        let aug = Augment { scale_min: 1.0, max_rotation: 0.0, max_shift: 0.0, cutout_p: 0.0, noise: 0.1, ..Augment::for_images(8, 8) };
        let x = vec![0.5f32; 64 * 400];
        let (a, b) = aug.view_pairs(&x, 9, "augment", 0);
        let e: Vec<f64> = a.iter().chain(&b).map(|&v| v as f64 - 0.5).collect();
        let n = e.len() as f64;
        let mean = e.iter().sum::<f64>() / n;
        let var = e.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        assert!(mean.abs() < 3.0 * 0.1 / n.sqrt(), "{mean}");
        assert!((var / 0.01 - 1.0).abs() < 0.03, "{var}");
    }

    /// The resampling as first written (a bounds check per tap, no border), for the test below.
    fn reference_warp(aug: &Augment, x: &[f32], rng: &mut Rng) -> Vec<f32> {
        let (h, w) = (aug.height, aug.width);
        let s = aug.scale_min + (1.0 - aug.scale_min) * rng.uniform();
        let th = aug.max_rotation * (2.0 * rng.uniform() - 1.0);
        let tx = aug.max_shift * w as f64 * (2.0 * rng.uniform() - 1.0);
        let ty = aug.max_shift * h as f64 * (2.0 * rng.uniform() - 1.0);
        let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
        let (cs, sn) = (th.cos() * s, th.sin() * s);
        let at = |r: isize, c: isize| -> f64 {
            if r < 0 || c < 0 || r >= h as isize || c >= w as isize {
                0.0
            } else {
                x[r as usize * w + c as usize] as f64
            }
        };
        let mut out = vec![0f32; h * w];
        for r in 0..h {
            for c in 0..w {
                let (px, py) = (c as f64 - cx, r as f64 - cy);
                let sx = cs * px - sn * py + cx + tx;
                let sy = sn * px + cs * py + cy + ty;
                let (x0, y0) = (sx.floor(), sy.floor());
                let (fx, fy) = (sx - x0, sy - y0);
                let (x0, y0) = (x0 as isize, y0 as isize);
                let v = (1.0 - fy) * ((1.0 - fx) * at(y0, x0) + fx * at(y0, x0 + 1)) + fy * ((1.0 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1));
                out[r * w + c] = v as f32;
            }
        }
        out
    }

    /// The bordered, branch-free resampling gives the bits of the bounds-checked one, also for
    /// views shifted far enough that many taps fall outside the image.
    #[test]
    fn the_border_changes_no_bit_of_the_resampling() {
        let mut r = Rng::stream(7, "imgs");
        let x: Vec<f32> = (0..784).map(|_| r.uniform() as f32).collect();
        for aug in [Augment::for_images(28, 28), Augment { max_shift: 0.9, scale_min: 0.2, max_rotation: 3.0, ..Augment::for_images(28, 28) }] {
            let warp_only = Augment { cutout_p: 0.0, noise: 0.0, ..aug };
            for k in 0..200 {
                let want = reference_warp(&warp_only, &x, &mut Rng::stream_indexed(2, "augment", k));
                let got = warp_only.view(&x, &mut Rng::stream_indexed(2, "augment", k));
                assert!(want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "view {k} differs");
            }
        }
    }

    /// The views as first written (one pass per pixel, the noise drawn and applied pair by pair),
    /// for the test below.
    fn reference_view(aug: &Augment, x: &[f32], rng: &mut Rng) -> Vec<f32> {
        let this = aug;
        let (h, w) = (this.height, this.width);
        let s = this.scale_min + (1.0 - this.scale_min) * rng.uniform();
        let th = this.max_rotation * (2.0 * rng.uniform() - 1.0);
        let tx = this.max_shift * w as f64 * (2.0 * rng.uniform() - 1.0);
        let ty = this.max_shift * h as f64 * (2.0 * rng.uniform() - 1.0);
        let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
        let (cs, sn) = (th.cos() * s, th.sin() * s);
        // The image in f64 inside a border of two zeros, and every tap's corner clamped into
        // [−2, side]: a tap outside the image reads a zero of the border, as "zero outside" asks,
        // without a branch per tap (the same values, so the same bits).
        let pw = w + 4;
        let mut padded = vec![0f64; (h + 4) * pw];
        for (r, row) in x.chunks_exact(w).enumerate() {
            for (p, &v) in padded[(r + 2) * pw + 2..(r + 2) * pw + 2 + w].iter_mut().zip(row) {
                *p = v as f64;
            }
        }
        let at = |r: isize, c: isize| -> f64 { padded[(r + 2) as usize * pw + (c + 2) as usize] };
        let (xmax, ymax) = (w as isize, h as isize);
        let mut out = vec![0f32; h * w];
        for r in 0..h {
            for c in 0..w {
                let (px, py) = (c as f64 - cx, r as f64 - cy);
                let sx = cs * px - sn * py + cx + tx;
                let sy = sn * px + cs * py + cy + ty;
                let (x0, y0) = (sx.floor(), sy.floor());
                let (fx, fy) = (sx - x0, sy - y0);
                let (x0, y0) = ((x0 as isize).clamp(-2, xmax), (y0 as isize).clamp(-2, ymax));
                let v = (1.0 - fy) * ((1.0 - fx) * at(y0, x0) + fx * at(y0, x0 + 1)) + fy * ((1.0 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1));
                out[r * w + c] = v as f32;
            }
        }
        let cut = rng.uniform() < this.cutout_p;
        let side = ((this.cutout_frac * h.min(w) as f64).round() as usize).max(1);
        let (r0, c0) = (rng.below((h - side + 1) as u64) as usize, rng.below((w - side + 1) as u64) as usize);
        if cut {
            for r in r0..r0 + side {
                out[r * w + c0..r * w + c0 + side].fill(0.0);
            }
        }
        // The noise pair by pair, each pair's values from normal_pair alone.
        let key = rng.bits();
        for (j, pair) in out.chunks_mut(2).enumerate() {
            let (a, b) = normal_pair(key, j as u64);
            for (x, e) in pair.iter_mut().zip([a, b]) {
                *x = (*x + this.noise as f32 * e).clamp(0.0, 1.0);
            }
        }
        out
    }

    /// Every build of a view (AVX-512, AVX2, portable) gives the bits of the loop as first
    /// written: full rows of eight, a width that is not, an odd number of pixels, taps far
    /// outside the image.
    #[test]
    fn views_are_the_same_bits_on_every_instruction_set() {
        let mut r = Rng::stream(6, "imgs");
        for (h, w) in [(28, 28), (7, 9), (8, 8), (5, 3)] {
            let x: Vec<f32> = (0..h * w).map(|_| r.uniform() as f32).collect();
            for aug in [Augment::for_images(h, w), Augment { max_shift: 0.9, scale_min: 0.2, max_rotation: 3.0, ..Augment::for_images(h, w) }] {
                for k in 0..50 {
                    let want = reference_view(&aug, &x, &mut Rng::stream_indexed(1, "augment", k));
                    let portable = aug.view_impl(&x, &mut Rng::stream_indexed(1, "augment", k), warp_rows);
                    let got = aug.view(&x, &mut Rng::stream_indexed(1, "augment", k));
                    let same = |a: &[f32]| want.iter().zip(a).all(|(p, q)| p.to_bits() == q.to_bits()) && a.len() == want.len();
                    assert!(same(&portable) && same(&got), "{h}×{w} view {k} differs");
                }
            }
        }
    }

    /// normal_pair's values against f64 Box–Muller from the same uniforms (the polynomials'
    /// error), and a Kolmogorov–Smirnov test of 200,000 values against N(0, 1): the statistic's
    /// critical value at a false-alarm rate of 10⁻³ is 1.95/√n.
    #[test]
    fn normal_pair_is_box_muller_and_normal() {
        let mut all = Vec::new();
        for j in 0..100_000u64 {
            let key = 0x1234_5678_9ABC_DEF0;
            let (a, b) = normal_pair(key, j);
            let h = wick_core::rng::splitmix64(key.wrapping_add(j.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
            let u = ((h >> 41) as f64 + 0.5) / 8_388_608.0;
            let th = (((h >> 22) & 3) as f64 + (h & 0x3F_FFFF) as f64 / 4_194_304.0) * std::f64::consts::FRAC_PI_2;
            let r = (-2.0 * u.ln()).sqrt();
            assert!((a as f64 - r * th.cos()).abs() < 2e-6 * (1.0 + r) && (b as f64 - r * th.sin()).abs() < 2e-6 * (1.0 + r), "pair {j}: {a} {b} vs {} {}", r * th.cos(), r * th.sin());
            all.extend([a as f64, b as f64]);
        }
        all.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let n = all.len() as f64;
        let phi = |x: f64| 0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2));
        let d = all.iter().enumerate().map(|(i, &x)| (phi(x) - i as f64 / n).abs().max((phi(x) - (i + 1) as f64 / n).abs())).fold(0.0, f64::max);
        assert!(d < 1.95 / n.sqrt(), "KS statistic {d}");
    }

    /// erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5·10⁻⁷), for the test above.
    fn erf(x: f64) -> f64 {
        let t = 1.0 / (1.0 + 0.3275911 * x.abs());
        let y = 1.0 - t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))) * (-x * x).exp();
        y.copysign(x)
    }

    #[test]
    fn the_identity_transform_keeps_the_image() {
        let aug = Augment { scale_min: 1.0, max_rotation: 0.0, max_shift: 0.0, cutout_p: 0.0, noise: 0.0, ..Augment::for_images(8, 8) };
        let x = digit();
        assert_eq!(aug.view(&x, &mut Rng::stream(0, "a")), x);
        // A pure shift by whole pixels moves the bar.
        let shift = Augment { max_shift: 0.5, ..aug };
        let v = shift.view(&x, &mut Rng::stream(0, "a"));
        assert!((v.iter().sum::<f32>() - x.iter().sum::<f32>()).abs() <= 8.0);
        let cut = Augment { cutout_p: 1.0, cutout_frac: 1.0, ..aug };
        assert!(cut.view(&x, &mut Rng::stream(0, "a")).iter().all(|&v| v == 0.0));
    }
}
