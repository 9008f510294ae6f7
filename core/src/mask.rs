//! Masks over the D = h·w inputs of an image, shared by masked pretraining (wick-pretrain) and
//! the order-agnostic density models and their completions (wick-generative).
//!
//! Every draw comes from a caller's [`Rng`] stream. Three kinds:
//!
//! - **Random subsets** ([`MaskSpec`] with [`Hide::Ratio`]): the image is cut into square patches
//!   of side `patch` (1: pixels; edge patches may be smaller), and `round(ratio · P)` of the P
//!   patches are hidden, a uniform subset per image (the masks of MAE, He et al. 2022).
//! - **Order-agnostic** ([`MaskSpec`] with [`Hide::OrderAgnostic`], [`ordering`],
//!   [`order_agnostic`]): the training draw of Uria, Murray & Larochelle 2014 (§3, "A deep and
//!   tractable density estimator"): a uniformly random ordering o of the P units and a cut
//!   d ~ U{0, …, P−1}; the first d units of o are observed, the other P − d (at least one) hidden.
//!   MADE's order-agnostic training (Germain et al. 2015 §4.2) draws the same orderings and
//!   builds its connectivity from them: [`ordering`] is the ordering of both.
//! - **Named observation masks** ([`observed`]) for completion: `top-half`, `bottom-half`,
//!   `left-half`, `right-half`.
//!
//! Conventions: an ordering is given by its ranks, `rank[i]` = position of unit i in o (0-based;
//! MADE's input degrees are `rank + 1`); pretraining masks are rows of f32 with 1.0 = hidden;
//! observation masks are bools with true = observed.

use crate::rng::Rng;
use crate::{bail, ensure, Result};

/// A uniformly random ordering of `n` units, as ranks: `rank[i]` is the position of unit i.
/// (Fisher–Yates on 0..n from the stream; the inverse of a uniform permutation is uniform.)
pub fn ordering(n: usize, rng: &mut Rng) -> Vec<usize> {
    rng.permutation(n)
}

/// One order-agnostic draw over `n` units (Uria et al. 2014): an ordering and a cut
/// d ~ U{0, …, n−1}; returns (rank, d). Unit i is observed iff `rank[i] < d`.
pub fn order_agnostic(n: usize, rng: &mut Rng) -> (Vec<usize>, usize) {
    assert!(n >= 1, "order_agnostic over 0 units");
    let rank = ordering(n, rng);
    let d = rng.below(n as u64) as usize;
    (rank, d)
}

/// How many of an image's patches are hidden.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Hide {
    /// `round(ratio · P)` patches (at least 1, at most P − 1), a uniform subset; ratio in (0, 1).
    Ratio(f64),
    /// P − d patches, the last in a uniformly random ordering, d ~ U{0, …, P−1} (Uria et al. 2014).
    OrderAgnostic,
}

/// Which units of an h×w image are hidden: patches of side `patch`, and how many.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MaskSpec {
    pub height: usize,
    pub width: usize,
    /// Side of the square patches hidden together (1: pixels); edge patches may be smaller.
    pub patch: usize,
    pub hide: Hide,
}

impl MaskSpec {
    pub fn validate(&self) -> Result<()> {
        if let Hide::Ratio(r) = self.hide {
            ensure!(r > 0.0 && r < 1.0, "mask ratio must be in (0, 1), got {r}");
        }
        let side = self.height.min(self.width);
        ensure!(self.patch >= 1 && self.patch <= side, "mask patch must be between 1 and the image side {side}, got {}", self.patch);
        Ok(())
    }

    /// Patch rows and columns.
    pub fn grid(&self) -> (usize, usize) {
        (self.height.div_ceil(self.patch), self.width.div_ceil(self.patch))
    }

    /// The number of patches P.
    pub fn patches(&self) -> usize {
        let (gh, gw) = self.grid();
        gh * gw
    }

    /// [`Hide::Ratio`]: patches hidden per image, round(ratio · P), at least 1 and at most P − 1.
    /// [`Hide::OrderAgnostic`]: the expected number, (P + 1) / 2 rounded down.
    pub fn hidden_patches(&self) -> usize {
        let p = self.patches();
        match self.hide {
            Hide::Ratio(r) => ((r * p as f64).round() as usize).clamp(1, p.saturating_sub(1).max(1)),
            Hide::OrderAgnostic => p.div_ceil(2),
        }
    }

    /// Set the pixels of patch `p` (row-major in the patch grid) to 1.0 in the image mask `m`.
    fn hide_patch(&self, p: usize, m: &mut [f32]) {
        let (_, gw) = self.grid();
        let (r0, c0) = ((p / gw) * self.patch, (p % gw) * self.patch);
        for r in r0..(r0 + self.patch).min(self.height) {
            m[r * self.width + c0..r * self.width + (c0 + self.patch).min(self.width)].fill(1.0);
        }
    }

    /// Masks for `n` images, row-major `n × D`, 1.0 = hidden, drawn from `rng`.
    pub fn draw(&self, n: usize, rng: &mut Rng) -> Vec<f32> {
        let (p, d) = (self.patches(), self.height * self.width);
        let mut out = vec![0f32; n * d];
        match self.hide {
            Hide::Ratio(_) => {
                let k = self.hidden_patches();
                let mut order: Vec<usize> = (0..p).collect();
                for m in out.chunks_exact_mut(d) {
                    // Partial Fisher–Yates: the first k entries are a uniform k-subset.
                    for i in 0..k {
                        let j = i + rng.below((order.len() - i) as u64) as usize;
                        order.swap(i, j);
                    }
                    for &q in &order[..k] {
                        self.hide_patch(q, m);
                    }
                }
            }
            Hide::OrderAgnostic => {
                for m in out.chunks_exact_mut(d) {
                    let (rank, cut) = order_agnostic(p, rng);
                    for (q, &r) in rank.iter().enumerate() {
                        if r >= cut {
                            self.hide_patch(q, m);
                        }
                    }
                }
            }
        }
        out
    }
}

/// The names [`observed`] knows.
pub const OBSERVED: &[&str] = &["top-half", "bottom-half", "left-half", "right-half"];

/// A named observation mask of an h×w image for completion, true = observed: `top-half`,
/// `bottom-half`, `left-half` or `right-half`.
pub fn observed(which: &str, h: usize, w: usize) -> Result<Vec<bool>> {
    let f: fn(usize, usize, usize, usize) -> bool = match which {
        "top-half" => |r, _, h, _| r < h / 2,
        "bottom-half" => |r, _, h, _| r >= h / 2,
        "left-half" => |_, c, _, w| c < w / 2,
        "right-half" => |_, c, _, w| c >= w / 2,
        other => bail!("--observe: '{other}' is not one of {}", OBSERVED.join(", ")),
    };
    Ok((0..h * w).map(|i| f(i / w, i % w, h, w)).collect())
}

/// The observation mask that `--observe SPEC` names, for an h×w image (true = observed):
/// a name of [`observed`]; `random:FRACTION`, round(FRACTION · D) inputs (at least 1, at most
/// D − 1), a uniform subset drawn from `rng`; or the path of a mask file, D values 0 or 1
/// separated by whitespace or commas (1 = observed, row-major; e.g. h lines of w values).
pub fn observation(spec: &str, h: usize, w: usize, rng: &mut Rng) -> Result<Vec<bool>> {
    let d = h * w;
    if let Some(f) = spec.strip_prefix("random:") {
        let frac: f64 = f.parse().ok().filter(|v: &f64| *v > 0.0 && *v < 1.0).ok_or_else(|| {
            crate::Error::new(format!("--observe random:{f}: the fraction observed must be a number in (0, 1), e.g. random:0.3"))
        })?;
        let k = ((frac * d as f64).round() as usize).clamp(1, d.saturating_sub(1).max(1));
        let rank = ordering(d, rng);
        return Ok(rank.iter().map(|&r| r < k).collect());
    }
    if OBSERVED.contains(&spec) {
        ensure!(
            h >= 2 && w >= 2,
            "--observe {spec}: a region of an image, but the data are {d}-dimensional vectors: observe random:FRACTION or a mask file of {d} values 0/1"
        );
        return observed(spec, h, w);
    }
    let path = std::path::Path::new(spec);
    ensure!(
        path.exists(),
        "--observe: '{spec}' is not one of {}, random:FRACTION, or an existing mask file",
        OBSERVED.join(", ")
    );
    let text = std::fs::read_to_string(path).map_err(|e| crate::Error::new(format!("--observe: cannot read mask file '{spec}': {e}")))?;
    let vals: Vec<&str> = text.split(|c: char| c.is_whitespace() || c == ',').filter(|t| !t.is_empty()).collect();
    ensure!(vals.len() == d, "--observe: mask file '{spec}' has {} values, the model has {d} inputs (give D values 0 or 1)", vals.len());
    vals.iter()
        .enumerate()
        .map(|(i, t)| match *t {
            "0" => Ok(false),
            "1" => Ok(true),
            other => bail!("--observe: mask file '{spec}': value {} is '{other}', expected 0 or 1", i + 1),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hidden(m: &[f32]) -> usize {
        m.iter().filter(|&&v| v == 1.0).count()
    }

    /// Every patch of the grid is wholly hidden or wholly visible.
    fn whole_patches(spec: &MaskSpec, m: &[f32]) -> bool {
        let (gh, gw) = spec.grid();
        (0..gh * gw).all(|p| {
            let (r0, c0) = ((p / gw) * spec.patch, (p % gw) * spec.patch);
            let v = m[r0 * spec.width + c0];
            (r0..(r0 + spec.patch).min(spec.height)).all(|r| (c0..(c0 + spec.patch).min(spec.width)).all(|c| m[r * spec.width + c] == v))
        })
    }

    #[test]
    fn ratio_masks_hide_exactly_round_ratio_p_whole_patches_and_are_seeded() {
        let spec = MaskSpec { height: 28, width: 28, patch: 4, hide: Hide::Ratio(0.5) };
        let a = spec.draw(3, &mut Rng::stream(1, "mask"));
        assert_eq!(a, spec.draw(3, &mut Rng::stream(1, "mask")));
        assert_ne!(a, spec.draw(3, &mut Rng::stream(2, "mask")));
        for m in a.chunks(784) {
            assert_eq!(hidden(m), 25 * 16, "round(24.5) = 25 patches of 16 pixels");
            assert!(whole_patches(&spec, m));
        }
        // Rows of one draw differ (a fresh subset per image).
        assert_ne!(a[..784], a[784..1568]);
        // Ragged edge patches (28 = 9·3 + 1): 100 patches, 30 hidden, each whole.
        let ragged = MaskSpec { patch: 3, hide: Hide::Ratio(0.3), ..spec };
        assert_eq!((ragged.patches(), ragged.hidden_patches()), (100, 30));
        for m in ragged.draw(4, &mut Rng::stream(5, "mask")).chunks(784) {
            assert!(whole_patches(&ragged, m));
        }
        let pix = MaskSpec { height: 8, width: 8, patch: 1, hide: Hide::Ratio(0.3) };
        assert!(pix.draw(5, &mut Rng::stream(0, "m")).chunks(64).all(|m| hidden(m) == 19));
        for bad in [0.0, 1.0, -0.5, f64::NAN] {
            assert!(MaskSpec { hide: Hide::Ratio(bad), ..pix }.validate().is_err(), "ratio {bad}");
        }
        assert!(MaskSpec { patch: 0, ..pix }.validate().is_err() && MaskSpec { patch: 9, ..pix }.validate().is_err());
        assert!(MaskSpec { hide: Hide::OrderAgnostic, ..pix }.validate().is_ok());
    }

    /// Uria et al.'s draw: d uniform on {0, …, P−1}, so the hidden count P − d is uniform on
    /// {1, …, P}; the hidden patches are the last P − d of a uniform ordering, so each patch is
    /// hidden with probability (P + 1) / 2P.
    #[test]
    fn order_agnostic_masks_hide_a_uniform_number_of_whole_patches() {
        let spec = MaskSpec { height: 8, width: 8, patch: 2, hide: Hide::OrderAgnostic };
        let p = spec.patches();
        assert_eq!(p, 16);
        let n = 32_000;
        let masks = spec.draw(n, &mut Rng::stream(3, "oa"));
        assert_eq!(masks, spec.draw(n, &mut Rng::stream(3, "oa")));
        let mut counts = vec![0usize; p + 1];
        let mut per_pixel = vec![0usize; 64];
        for m in masks.chunks(64) {
            assert!(whole_patches(&spec, m));
            let h = hidden(m);
            assert_eq!(h % 4, 0);
            counts[h / 4] += 1;
            for (c, &v) in per_pixel.iter_mut().zip(m) {
                *c += (v == 1.0) as usize;
            }
        }
        assert_eq!(counts[0], 0, "at least one patch is always hidden");
        // Each count 1..=16 has probability 1/16: 2,000 expected, sd ≈ 43; allow 5 sd.
        for (k, &c) in counts.iter().enumerate().skip(1) {
            assert!((c as f64 - 2000.0).abs() < 215.0, "hidden {k} patches: {c} of {n}");
        }
        // P(hidden) = 17/32 for every pixel: 17,000 expected, sd ≈ 89.
        for (i, &c) in per_pixel.iter().enumerate() {
            assert!((c as f64 - 17_000.0).abs() < 450.0, "pixel {i}: {c}");
        }
        // The cut itself, straight from order_agnostic: uniform on 0..n, and the ranks a permutation.
        let mut r = Rng::stream(4, "cut");
        let mut cuts = [0usize; 5];
        for _ in 0..10_000 {
            let (rank, d) = order_agnostic(5, &mut r);
            let mut s = rank.clone();
            s.sort();
            assert_eq!(s, vec![0, 1, 2, 3, 4]);
            cuts[d] += 1;
        }
        assert!(cuts.iter().all(|&c| (1800..2200).contains(&c)), "{cuts:?}");
    }

    /// The orderings are the stream's Fisher–Yates permutations (MADE's degrees depend on this
    /// to the bit), and every position is equally likely for every unit.
    #[test]
    fn orderings_are_the_streams_permutations_and_uniform() {
        assert_eq!(ordering(10, &mut Rng::stream(9, "masks")), Rng::stream(9, "masks").permutation(10));
        let mut r = Rng::stream(1, "o");
        let mut first = [0usize; 4];
        for _ in 0..8000 {
            first[ordering(4, &mut r).iter().position(|&k| k == 0).unwrap()] += 1;
        }
        assert!(first.iter().all(|&c| (1800..2200).contains(&c)), "{first:?}");
    }

    #[test]
    fn named_observation_masks() {
        let top = observed("top-half", 4, 2).unwrap();
        assert_eq!(top, [true, true, true, true, false, false, false, false]);
        let left = observed("left-half", 2, 4).unwrap();
        assert_eq!(left, [true, true, false, false, true, true, false, false]);
        let bottom = observed("bottom-half", 4, 2).unwrap();
        assert!(top.iter().zip(&bottom).all(|(a, b)| a != b));
        let right = observed("right-half", 2, 4).unwrap();
        assert!(left.iter().zip(&right).all(|(a, b)| a != b));
        let e = observed("middle", 4, 4).unwrap_err().to_string();
        assert!(e.contains("'middle'") && e.contains("top-half"), "{e}");
    }
    #[test]
    fn observation_masks_by_name_random_fraction_or_file() {
        let mut r = Rng::stream(1, "observe");
        // Vectors (1×D): a named region is refused, a random subset is not.
        let e = observation("top-half", 1, 10, &mut r).unwrap_err().to_string();
        assert!(e.contains("10-dimensional vectors") && e.contains("random:FRACTION"), "{e}");
        assert_eq!(observation("random:0.5", 1, 10, &mut r).unwrap().iter().filter(|&&b| b).count(), 5);
        assert_eq!(observation("top-half", 4, 4, &mut r).unwrap(), observed("top-half", 4, 4).unwrap());
        let m = observation("random:0.3", 8, 8, &mut Rng::stream(2, "observe")).unwrap();
        assert_eq!(m.iter().filter(|&&b| b).count(), 19, "round(0.3 · 64)");
        assert_eq!(m, observation("random:0.3", 8, 8, &mut Rng::stream(2, "observe")).unwrap(), "seeded");
        assert_ne!(m, observation("random:0.3", 8, 8, &mut Rng::stream(3, "observe")).unwrap());
        for bad in ["random:0", "random:1", "random:x", "nowhere.txt"] {
            assert!(observation(bad, 8, 8, &mut r).is_err(), "{bad}");
        }
        let dir = std::env::temp_dir().join(format!("wick-mask-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("m.txt");
        std::fs::write(&f, "1 0\n0,1\n").unwrap();
        assert_eq!(observation(f.to_str().unwrap(), 2, 2, &mut r).unwrap(), vec![true, false, false, true]);
        std::fs::write(&f, "1 0 2 1").unwrap();
        assert!(observation(f.to_str().unwrap(), 2, 2, &mut r).unwrap_err().to_string().contains("value 3 is '2'"));
        std::fs::write(&f, "1 0 1").unwrap();
        assert!(observation(f.to_str().unwrap(), 2, 2, &mut r).unwrap_err().to_string().contains("has 3 values"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
