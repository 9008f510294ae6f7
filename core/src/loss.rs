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
/// Branch-free arithmetic ([`bce_terms`]) that the compiler vectorises; on x86-64 compiled a
/// second time with AVX2 and chosen at run time. Both builds do the same IEEE operations in the
/// same order (no fused multiply–adds), so they agree to the bit. Used by FVSBN's and MADE's CPU
/// paths and by masked prediction's host step.
pub fn bce_terms_host(z: &mut [f32], x: &[f32], terms: &mut [f32], grad_scale: Option<f32>) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is available (checked just above).
            return unsafe { bce_terms_avx2(z, x, terms, grad_scale) };
        }
    }
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
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³
    let n = z.len().min(x.len()).min(terms.len());
    let (z, x, terms) = (&mut z[..n], &x[..n], &mut terms[..n]);
    let scale = grad_scale.unwrap_or(0.0);
    for ((zv, &xv), t) in z.iter_mut().zip(x).zip(terms.iter_mut()) {
        let v = *zv;
        let y = (-v.abs()).max(-87.0);
        let k = (y * LOG2E + ROUND) - ROUND;
        let r = (y - k * LN2_HI) - k * LN2_LO;
        let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
        let two_k = f32::from_bits(((k as i32 + 127) as u32) << 23);
        let e = p * two_k;
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

#[cfg(test)]
mod tests {
    use super::*;

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
