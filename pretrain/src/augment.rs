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
//! 3. **noise**: `x + σ ε`, ε ~ N(0, 1) per pixel, clamped to [0, 1].
//!
//! Every draw comes from the `Rng` passed in, so a view is a pure function of the image and the
//! stream's state.

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
    pub fn view(&self, x: &[f32], rng: &mut Rng) -> Vec<f32> {
        let (h, w) = (self.height, self.width);
        let s = self.scale_min + (1.0 - self.scale_min) * rng.uniform();
        let th = self.max_rotation * (2.0 * rng.uniform() - 1.0);
        let tx = self.max_shift * w as f64 * (2.0 * rng.uniform() - 1.0);
        let ty = self.max_shift * h as f64 * (2.0 * rng.uniform() - 1.0);
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
        let cut = rng.uniform() < self.cutout_p;
        let side = ((self.cutout_frac * h.min(w) as f64).round() as usize).max(1);
        let (r0, c0) = (rng.below((h - side + 1) as u64) as usize, rng.below((w - side + 1) as u64) as usize);
        if cut {
            for r in r0..r0 + side {
                out[r * w + c0..r * w + c0 + side].fill(0.0);
            }
        }
        for v in out.iter_mut() {
            *v = (*v as f64 + self.noise * rng.normal()).clamp(0.0, 1.0) as f32;
        }
        out
    }

    /// Two views of each of the `n` images in `x` (`n × H·W`): (first views, second views).
    pub fn view_pairs(&self, x: &[f32], rng: &mut Rng) -> (Vec<f32>, Vec<f32>) {
        let d = self.height * self.width;
        let (mut a, mut b) = (Vec::with_capacity(x.len()), Vec::with_capacity(x.len()));
        for img in x.chunks_exact(d) {
            a.extend(self.view(img, rng));
            b.extend(self.view(img, rng));
        }
        (a, b)
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
        let a = aug.view_pairs(&x, &mut Rng::stream(1, "augment"));
        assert_eq!(a, aug.view_pairs(&x, &mut Rng::stream(1, "augment")));
        let b = aug.view_pairs(&x, &mut Rng::stream(2, "augment"));
        assert_ne!(a, b);
        assert_ne!(a.0, a.1, "the two views of an image differ");
        assert!(a.0.iter().chain(&a.1).all(|v| (0.0..=1.0).contains(v)));
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
