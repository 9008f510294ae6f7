//! Losses shared by the trainers.

use candle_core::Tensor;

/// −log Bernoulli(x; σ(z)) elementwise, in the stable form `max(z,0) − z·x + log(1 + e^{−|z|})`
/// (candle-nn's `binary_cross_entropy_with_logit` takes sigmoid then log and overflows).
pub fn bce_with_logits(z: &Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
    let softplus_tail = (z.abs()?.neg()?.exp()? + 1.0)?.log()?;
    (z.relu()? - (z * x)?)? + softplus_tail
}

/// Bernoulli terms of logits `z` and targets `x`, elementwise: `terms[i] = max(z,0) − z·x +
/// log(1 + e^{−|z|})` (−log p of x_i), and with `grad_scale = Some(s)` `z ← (σ(z) − x)·s` in place.
///
/// Branch-free arithmetic ([`bce_terms`]) that the compiler vectorises; on x86-64 compiled
/// again with AVX-512F and with AVX2 and chosen at run time. Both builds do the same IEEE operations in the
/// same order (no fused multiply–adds), so they agree to the bit. Used by FVSBN's and MADE's CPU
/// paths and by masked prediction's host step.
pub fn bce_terms_host(z: &mut [f32], x: &[f32], terms: &mut [f32], grad_scale: Option<f32>) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F is available (checked just above).
            return unsafe { bce_terms_avx512(z, x, terms, grad_scale) };
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is available (checked just above).
            return unsafe { bce_terms_avx2(z, x, terms, grad_scale) };
        }
    }
    bce_terms(z, x, terms, grad_scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn bce_terms_avx512(z: &mut [f32], x: &[f32], terms: &mut [f32], grad_scale: Option<f32>) {
    bce_terms(z, x, terms, grad_scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn bce_terms_avx2(z: &mut [f32], x: &[f32], terms: &mut [f32], grad_scale: Option<f32>) {
    bce_terms(z, x, terms, grad_scale)
}

/// `terms[c] = max(z,0) − z·x + log1p(e)` with `e = e^{−|z|}` and, with a scale, `z ← (σ(z) − x)·s`
/// where `σ(z) = 1/(1+e)` for z ≥ 0 and `e/(1+e)` below.
///
/// `e^y` (y = −|z| clamped to −87, where it is below f32's smallest normal ratio to 1): `y = n ln2 + r`
/// with n rounded by the 1.5·2²³ trick and ln2 split in two (Cody–Waite), e^r by its degree-7
/// Taylor polynomial (|r| ≤ ln2/2: relative error < 1e-8), 2ⁿ by exponent bits. `log1p(e)` for
/// e ∈ (0, 1]: with `t = e/(2+e)` ≤ 1/3, `log(1+e) = 2 artanh t = 2(t + t³/3 + … + t¹³/13)`
/// (error < 1e-8, and relative accuracy kept for tiny e).
#[inline(always)]
fn bce_terms(z: &mut [f32], x: &[f32], terms: &mut [f32], grad_scale: Option<f32>) {
    let n = z.len().min(x.len()).min(terms.len());
    let (z, x, terms) = (&mut z[..n], &x[..n], &mut terms[..n]);
    let scale = grad_scale.unwrap_or(0.0);
    for ((zv, &xv), t) in z.iter_mut().zip(x).zip(terms.iter_mut()) {
        let v = *zv;
        let e = exp_reduced((-v.abs()).max(-87.0));
        let tt = e / (2.0 + e);
        let t2 = tt * tt;
        let series = 1.0 + t2 * (1.0 / 3.0 + t2 * (1.0 / 5.0 + t2 * (1.0 / 7.0 + t2 * (1.0 / 9.0 + t2 * (1.0 / 11.0 + t2 * (1.0 / 13.0))))));
        let log1p = 2.0 * tt * series;
        *t = v.max(0.0) - v * xv + log1p;
        if grad_scale.is_some() {
            let q = 1.0 / (1.0 + e);
            let sig = if v >= 0.0 { q } else { e * q };
            *zv = (sig - xv) * scale;
        }
    }
}

/// e^y for y ∈ [−87, 88] (the caller clamps): `y = k ln2 + r` with k rounded by the 1.5·2²³
/// trick and ln2 split in two (Cody–Waite), e^r by its degree-7 Taylor polynomial (|r| ≤ ln2/2:
/// relative error < 1e-7 after rounding), 2ᵏ by exponent bits. Branch-free, so loops over it
/// vectorise; no fused multiply–adds, so every instruction set gives the same bits.
#[inline(always)]
fn exp_reduced(y: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³
    let kr = y * LOG2E + ROUND; // 1.5·2²³ + k, with k = round(y log2 e) in its low mantissa bits
    let k = kr - ROUND;
    let r = (y - k * LN2_HI) - k * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // 2ᵏ from kr's bits (integer arithmetic, which vectorises; `k as i32` saturates element by
    // element): bits(kr) = bits(1.5·2²³) + k.
    let two_k = f32::from_bits(kr.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23);
    p * two_k
}

/// `x ← e^x` elementwise, for any x (clamped to [−87, 88]: below, e^x is under f32's smallest
/// normal, and it returns about 1.6e-38; above, it would overflow). The branch-free polynomial of
/// [`bce_terms_host`], compiled for AVX-512F and AVX2 besides the baseline and chosen at run
/// time: the same bits on every path and for any split of the slice (each entry on its own).
pub fn exp_in_place(x: &mut [f32]) {
    #[inline(always)]
    fn body(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = exp_reduced(v.clamp(-87.0, 88.0));
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512(x: &mut [f32]) {
            body(x)
        }
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(x: &mut [f32]) {
            body(x)
        }
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F is available (checked just above).
            return unsafe { avx512(x) };
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is available (checked just above).
            return unsafe { avx2(x) };
        }
    }
    body(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// e^x against f64 over the whole range, and the same bits as the portable build.
    #[test]
    fn exp_in_place_is_accurate_and_the_same_on_every_path() {
        let xs: Vec<f32> = (-9000..=9000).map(|i| i as f32 * 0.01).chain([-1e4, -87.5, -87.0, 88.0, 88.5, 1e4, -0.0, 1e-30]).collect();
        let mut fast = xs.clone();
        exp_in_place(&mut fast);
        let portable: Vec<f32> = xs.iter().map(|&v| exp_reduced(v.clamp(-87.0, 88.0))).collect();
        assert!(fast.iter().zip(&portable).all(|(a, b)| a.to_bits() == b.to_bits()), "instruction sets differ");
        for (&x, &e) in xs.iter().zip(&fast) {
            let want = (x.clamp(-87.0, 88.0) as f64).exp();
            assert!(e.is_finite() && e > 0.0, "e^{x} = {e}");
            assert!((e as f64 - want).abs() <= 3e-7 * want, "e^{x}: {e} vs {want}");
        }
    }

    /// The fast elementwise terms against f64 references, over the whole range of logits.
    #[test]
    fn fused_bce_terms_are_accurate() {
        let zs: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.05).chain([-200.0, -87.5, 87.5, 300.0, 1e-8, -1e-8, 0.0]).collect();
        for xv in [0f32, 1.0] {
            let mut z = zs.clone();
            let x = vec![xv; z.len()];
            let mut terms = vec![0f32; z.len()];
            bce_terms(&mut z, &x, &mut terms, Some(1.0));
            let (mut z2, mut t2) = (zs.clone(), vec![0f32; zs.len()]);
            bce_terms_host(&mut z2, &x, &mut t2, Some(1.0));
            assert!(z.iter().zip(&z2).all(|(a, b)| a.to_bits() == b.to_bits()) && terms == t2, "backends differ");
            for ((&v, &t), &g) in zs.iter().zip(&terms).zip(&z) {
                let v64 = v as f64;
                let want = v64.max(0.0) - v64 * xv as f64 + (-v64.abs()).exp().ln_1p();
                let sig = 1.0 / (1.0 + (-v64).exp());
                assert!((t as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()), "z {v} x {xv}: {t} vs {want}");
                assert!((g as f64 - (sig - xv as f64)).abs() <= 1e-6, "z {v}: grad {g} vs {}", sig - xv as f64);
            }
        }
    }
}
