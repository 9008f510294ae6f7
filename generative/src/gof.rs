//! χ² goodness-of-fit for the samplers' tests (test builds only).

/// Pearson's χ² of observed `counts` against `expected(cell)`; cells with an expected count
/// under 5 are pooled into one. Returns (χ², number of cells after pooling).
pub fn chi2_pooled(counts: &[f64], expected: impl Fn(usize) -> f64) -> (f64, usize) {
    let (mut chi2, mut cells, mut pooled_e, mut pooled_o) = (0.0, 0usize, 0.0, 0.0);
    for (j, &o) in counts.iter().enumerate() {
        let e = expected(j);
        if e < 5.0 {
            pooled_e += e;
            pooled_o += o;
        } else {
            chi2 += (o - e) * (o - e) / e;
            cells += 1;
        }
    }
    if pooled_e > 0.0 {
        chi2 += (pooled_o - pooled_e) * (pooled_o - pooled_e) / pooled_e;
        cells += 1;
    }
    (chi2, cells)
}

/// Upper quantile of χ²(k) by the Wilson–Hilferty approximation; z = 3.0902 is the standard
/// normal's 0.999 quantile, so a test against it has a 0.1% false-alarm rate (seeded: it passes
/// or fails the same way every run).
pub fn chi2_999(k: f64) -> f64 {
    let z = 3.0902;
    k * (1.0 - 2.0 / (9.0 * k) + z * (2.0 / (9.0 * k)).sqrt()).powi(3)
}
