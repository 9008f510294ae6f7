//! Binarization of grey images for density models over x ∈ {0,1}^D.
//!
//! | mode | what | rows |
//! | --- | --- | --- |
//! | `threshold` | x = 1 where grey ≥ t (t: `--threshold`, else the dataset's default) | all |
//! | `static` | each pixel drawn **once** as x ~ Bernoulli(grey / max) from a fixed stream | all |
//! | `dynamic` | training rows redrawn every epoch from a per-epoch stream; valid and test as `static` | train |
//!
//! `static` is the protocol of Salakhutdinov & Murray (2008, "On the quantitative analysis of
//! deep belief networks", §5) that produced the `binarized_mnist_*.amat` files of the NADE,
//! MADE and order-agnostic NADE papers. Their random draws are not published, so wick's bits
//! are its own: the same in expectation as the papers', not bit for bit.
//!
//! # The streams
//!
//! Row `i` of a [`Dataset`] (0-based, in the order [`Dataset::load`] returns rows; for MNIST
//! the training file's images 0..59,999, then the t10k images as rows 60,000..69,999) gets its
//! own [`Rng`] (see [`crate::rng`] for the key derivation and xoshiro256++):
//!
//! ```text
//! static:   Rng::stream_indexed(0,    "binarize-static",  i)               (seed fixed at 0)
//! dynamic:  Rng::stream_indexed(seed, "binarize-dynamic", epoch << 32 | i) (the run's --seed, epoch ≥ 1)
//! ```
//!
//! and pixel `j` (row-major) of the row takes the row's `j`-th uniform u_j ∈ [0, 1) (53 bits:
//! `(next_u64 >> 11) · 2^-53`, [`Rng::uniform`]):
//!
//! ```text
//! x_ij = 1  if  u_j < grey_ij / max   (computed in f64)
//! ```
//!
//! so grey 0 is always 0 and grey = max always 1. Because every row owns its stream, the bits
//! do not depend on thread count, batch order or how many processes share the work.
//! `scripts/binarize_oracle.py` reimplements this in numpy; the tests compare the two.

use crate::data::Dataset;
use crate::rng::Rng;
use crate::{bail, Error, Result};
use rayon::prelude::*;
use std::fmt;
use std::str::FromStr;

/// How grey pixels become bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Binarize {
    Threshold,
    Static,
    Dynamic,
}

impl Binarize {
    pub const ALL: [Binarize; 3] = [Binarize::Threshold, Binarize::Static, Binarize::Dynamic];

    pub fn as_str(self) -> &'static str {
        match self {
            Binarize::Threshold => "threshold",
            Binarize::Static => "static",
            Binarize::Dynamic => "dynamic",
        }
    }

    /// The default for a dataset: `static` for the full MNIST (`--data mnist`), `threshold`
    /// for everything else (as before this option existed).
    pub fn default_for(data_spec: &str) -> Binarize {
        if data_spec == "mnist" {
            Binarize::Static
        } else {
            Binarize::Threshold
        }
    }
}

impl fmt::Display for Binarize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Binarize {
    type Err = Error;

    fn from_str(s: &str) -> Result<Binarize> {
        match s {
            "threshold" => Ok(Binarize::Threshold),
            "static" => Ok(Binarize::Static),
            "dynamic" => Ok(Binarize::Dynamic),
            _ => bail!("--binarize: '{s}' is not one of threshold, static, dynamic"),
        }
    }
}

/// Stream name of the static draws (seed 0).
pub const STATIC_STREAM: &str = "binarize-static";
/// Stream name of the per-epoch dynamic draws (the run's seed).
pub const DYNAMIC_STREAM: &str = "binarize-dynamic";

/// x_j = 1 if u_j < grey_j / max, u_j the j-th uniform of `rng`.
pub fn bernoulli_row(grey: &[f32], max: f32, rng: &mut Rng, out: &mut [f32]) {
    let max = max as f64;
    for (o, &g) in out.iter_mut().zip(grey) {
        let u = rng.uniform();
        *o = if u < g as f64 / max { 1.0 } else { 0.0 };
    }
}

/// Bits of rows `rows` of `data`, row `rows[k]` drawn from `stream(rows[k])`; concatenated.
fn draw_rows(data: &Dataset, rows: &[usize], stream: impl Fn(usize) -> Rng + Sync) -> Vec<f32> {
    let d = data.dim;
    let mut out = vec![0f32; rows.len() * d];
    out.par_chunks_mut(d.max(1)).zip(rows.par_iter()).for_each(|(o, &i)| {
        bernoulli_row(&data.pixels[i * d..(i + 1) * d], data.max_value, &mut stream(i), o);
    });
    out
}

/// Every row of `data`, statically binarized (see the module docs): `rows * dim` values 0/1.
pub fn static_bits(data: &Dataset) -> Vec<f32> {
    let all: Vec<usize> = (0..data.rows).collect();
    draw_rows(data, &all, |i| Rng::stream_indexed(0, STATIC_STREAM, i as u64))
}

/// Rows `rows` of `data` as drawn for epoch `epoch` (1-based) of a run seeded `seed`,
/// concatenated in the order given.
pub fn dynamic_bits(data: &Dataset, rows: &[usize], seed: u64, epoch: u64) -> Vec<f32> {
    draw_rows(data, rows, |i| Rng::stream_indexed(seed, DYNAMIC_STREAM, (epoch << 32) | i as u64))
}

/// All rows of `data` as the run sees them outside training: thresholded (`threshold`, else
/// the dataset's default) for [`Binarize::Threshold`], the static bits otherwise (dynamic
/// runs evaluate valid and test on the static bits).
pub fn binarize(data: &Dataset, how: Binarize, threshold: Option<f32>) -> Vec<f32> {
    match how {
        Binarize::Threshold => data.binarized(threshold),
        Binarize::Static | Binarize::Dynamic => static_bits(data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Split;

    fn grey(rows: usize, dim: usize, max: f32, f: impl Fn(usize, usize) -> f32) -> Dataset {
        Dataset {
            name: "grey".into(),
            rows,
            dim,
            height: 1,
            width: dim,
            max_value: max,
            pixels: (0..rows * dim).map(|k| f(k / dim, k % dim)).collect(),
            labels: None,
            split: (0..rows).map(Split::standard).collect(),
            default_threshold: max / 2.0,
        }
    }

    #[test]
    fn modes_parse_and_print() {
        for b in Binarize::ALL {
            assert_eq!(b.as_str().parse::<Binarize>().unwrap(), b);
        }
        let e = "stochastic".parse::<Binarize>().unwrap_err().to_string();
        assert_eq!(e, "--binarize: 'stochastic' is not one of threshold, static, dynamic");
        assert_eq!(Binarize::default_for("mnist"), Binarize::Static);
        assert_eq!(Binarize::default_for("digits"), Binarize::Threshold);
    }

    /// Pinned against scripts/binarize_oracle.py, an independent numpy implementation of the
    /// stream: `python scripts/binarize_oracle.py --tiny` prints these rows (grey = 16·j + 8·i
    /// mod 256 for row i, pixel j, of 4 rows × 16 pixels, max 255).
    #[test]
    fn static_bits_are_pinned() {
        let d = grey(4, 16, 255.0, |i, j| ((16 * j + 8 * i) % 256) as f32);
        let bits: Vec<String> = static_bits(&d).chunks(16).map(|r| r.iter().map(|&b| if b == 1.0 { '1' } else { '0' }).collect()).collect();
        assert_eq!(bits, TINY_PINNED, "static bits changed: that changes every MNIST figure");
    }

    const TINY_PINNED: [&str; 4] = ["0001011110110111", "0000000000111111", "0001101101111110", "1011001100111110"];

    #[test]
    fn extremes_are_exact_and_frequencies_match_grey() {
        let d = grey(2000, 3, 255.0, |_, j| [0.0, 255.0, 64.0][j]);
        let b = static_bits(&d);
        assert!(b.chunks(3).all(|r| r[0] == 0.0 && r[1] == 1.0));
        let ones = b.chunks(3).filter(|r| r[2] == 1.0).count() as f64 / 2000.0;
        // p = 64/255 = 0.251, sd of the mean 0.0097: 5 sd.
        assert!((ones - 64.0 / 255.0).abs() < 0.05, "{ones}");
    }

    #[test]
    fn dynamic_rows_depend_on_epoch_and_row_not_on_order() {
        let d = grey(50, 40, 16.0, |i, j| ((i + j) % 17) as f32);
        let all: Vec<usize> = (0..50).collect();
        let e1 = dynamic_bits(&d, &all, 7, 1);
        let e2 = dynamic_bits(&d, &all, 7, 2);
        assert_ne!(e1, e2);
        assert_eq!(e1, dynamic_bits(&d, &all, 7, 1));
        assert_ne!(e1, dynamic_bits(&d, &all, 8, 1));
        assert_ne!(e1, static_bits(&d));
        // Row 31 alone, or in another order, gets the same bits.
        let some = dynamic_bits(&d, &[31, 2], 7, 1);
        assert_eq!(&some[..40], &e1[31 * 40..32 * 40]);
        assert_eq!(&some[40..], &e1[2 * 40..3 * 40]);
    }

    #[test]
    fn thread_count_does_not_matter() {
        let d = grey(300, 50, 255.0, |i, j| ((i * 7 + j * 13) % 256) as f32);
        let many = static_bits(&d);
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| static_bits(&d));
        assert_eq!(many, one);
    }

    #[test]
    fn threshold_mode_is_the_old_behaviour() {
        let d = grey(3, 4, 16.0, |_, j| [0.0, 8.0, 7.9, 16.0][j]);
        assert_eq!(binarize(&d, Binarize::Threshold, None), d.binarized(None));
        assert_eq!(binarize(&d, Binarize::Threshold, Some(16.0))[..4], [0.0, 0.0, 0.0, 1.0]);
        assert_eq!(binarize(&d, Binarize::Dynamic, None), static_bits(&d));
    }
}
