//! Image completion side by side (as in the NADE and MADE papers' inpainting figures): each
//! original test image, then the model's completion of it, pairs in a grid. The observed
//! pixels are grey as in the data; in both images the hidden region is tinted blue (the
//! completion: what the model drew there) and the observed region is outlined in red.

use crate::{Area, DrawResult, Figure};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// The figure's data: `n` originals and `n` completions of `h × w` values in [0, 1], row-major,
/// and the observed mask (`true` = given to the model) of one image.
#[derive(Clone, Debug)]
pub struct Completions {
    pub title: String,
    pub originals: Vec<f32>,
    pub completions: Vec<f32>,
    pub observed: Vec<bool>,
    pub n: usize,
    pub h: usize,
    pub w: usize,
}

const HEAD: u32 = 70;
const OBSERVED: RGBColor = RGBColor(220, 30, 30);

impl Completions {
    /// Pixels per image pixel: 28×28 digits at 4×.
    fn scale(&self) -> u32 {
        (112 / self.h.max(self.w).max(1) as u32).max(1)
    }
    /// Pairs per row.
    fn cols(&self) -> usize {
        self.n.clamp(1, 4)
    }
    fn tile(&self) -> (u32, u32) {
        (self.w as u32 * self.scale(), self.h as u32 * self.scale())
    }
}

impl Figure for Completions {
    fn size(&self) -> (u32, u32) {
        let (tw, th) = self.tile();
        let cols = self.cols() as u32;
        let rows = self.n.div_ceil(self.cols()).max(1) as u32;
        (cols * (2 * tw + 36) + 20, HEAD + rows * (th + 16) + 10)
    }

    fn draw<DB: DrawingBackend>(&self, root: &Area<DB>) -> DrawResult<DB> {
        let (w, _) = self.size();
        let centre = Pos::new(HPos::Center, VPos::Top);
        root.draw(&Text::new(self.title.as_str(), (w as i32 / 2, 8), TextStyle::from(("sans-serif", 18).into_font().style(FontStyle::Bold)).pos(centre)))?;
        let note = "each pair: original | completion; red outline = observed pixels, blue = hidden (completed by the model)";
        root.draw(&Text::new(note, (w as i32 / 2, 32), TextStyle::from(("sans-serif", 13)).pos(centre)))?;
        let (tw, th) = self.tile();
        let (tw, th) = (tw as i32, th as i32);
        let k = self.scale() as i32;
        let d = self.h * self.w;
        for i in 0..self.n {
            let (r, c) = ((i / self.cols()) as i32, (i % self.cols()) as i32);
            let y = HEAD as i32 + r * (th + 16);
            let x = 10 + c * (2 * tw + 36);
            for (j, img) in [&self.originals[i * d..(i + 1) * d], &self.completions[i * d..(i + 1) * d]].into_iter().enumerate() {
                let x = x + j as i32 * (tw + 6);
                if r == 0 {
                    let label = ["original", "completion"][j];
                    root.draw(&Text::new(label, (x + tw / 2, HEAD as i32 - 18), TextStyle::from(("sans-serif", 13)).pos(centre)))?;
                }
                for p in 0..d {
                    // Ink (value 1) dark on light paper (value 0): grey where observed, blue where hidden.
                    let ink = img[p].clamp(0.0, 1.0) as f64;
                    let colour = if self.observed[p] { grey(ink) } else { hidden(ink) };
                    let (py, px) = ((p / self.w) as i32, (p % self.w) as i32);
                    root.draw(&Rectangle::new([(x + px * k, y + py * k), (x + px * k + k, y + py * k + k)], colour.filled()))?;
                }
                outline(root, &self.observed, self.h, self.w, (x, y), k)?;
            }
        }
        Ok(())
    }
}

/// Observed pixels: white paper, black ink.
fn grey(ink: f64) -> RGBColor {
    let g = (255.0 * (1.0 - ink)).round() as u8;
    RGBColor(g, g, g)
}

/// Hidden pixels: paper tinted light blue, ink dark blue.
fn hidden(ink: f64) -> RGBColor {
    let mix = |paper: f64, dark: f64| (paper + (dark - paper) * ink).round() as u8;
    RGBColor(mix(215.0, 10.0), mix(230.0, 40.0), mix(255.0, 120.0))
}

/// The boundary of the observed region: an edge between an observed pixel and a hidden one
/// (or the image border).
fn outline<DB: DrawingBackend>(root: &Area<DB>, observed: &[bool], h: usize, w: usize, (x, y): (i32, i32), k: i32) -> DrawResult<DB> {
    let obs = |r: i32, c: i32| r >= 0 && c >= 0 && (r as usize) < h && (c as usize) < w && observed[r as usize * w + c as usize];
    let style = OBSERVED.stroke_width(2);
    for r in 0..h as i32 {
        for c in 0..w as i32 {
            if !obs(r, c) {
                continue;
            }
            let (x0, y0) = (x + c * k, y + r * k);
            for ((dr, dc), a, b) in [
                ((-1, 0), (x0, y0), (x0 + k, y0)),
                ((1, 0), (x0, y0 + k), (x0 + k, y0 + k)),
                ((0, -1), (x0, y0), (x0, y0 + k)),
                ((0, 1), (x0 + k, y0), (x0 + k, y0 + k)),
            ] {
                if !obs(r + dr, c + dc) {
                    root.draw(&PathElement::new(vec![a, b], style))?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::decode;

    #[test]
    fn pairs_side_by_side_with_the_observed_region_outlined() {
        let (h, w, n) = (8, 8, 3);
        let originals: Vec<f32> = (0..n * h * w).map(|i| ((i / 3) % 2) as f32).collect();
        let completions: Vec<f32> = (0..n * h * w).map(|i| ((i / 5) % 2) as f32).collect();
        let observed: Vec<bool> = (0..h * w).map(|p| p / w < h / 2).collect(); // top half
        let fig = Completions { title: "NADE completions".into(), originals, completions, observed, n, h, w };
        let (fw, fh, px) = decode(&crate::png(&fig).unwrap());
        assert_eq!((fw, fh), fig.size());
        assert_eq!(fig.cols(), 3);
        let has = |c: [u8; 3]| px.chunks(3).any(|p| p == c);
        let k = fig.scale() as usize;
        assert!(has([OBSERVED.0, OBSERVED.1, OBSERVED.2]), "no outline");
        assert!(has([10, 40, 120]) && has([215, 230, 255]), "hidden region not tinted");
        assert!(has([0, 0, 0]) && has([255, 255, 255]));
        // Ink is dark in both regions: value 1 at the first hidden pixel of the first original.
        let first_hidden = (h / 2) * w;
        let i = (0..w).map(|c| first_hidden + c).find(|&p| fig.originals[p] == 1.0).unwrap();
        let (x, y) = (10 + (i % w) * k + k / 2, HEAD as usize + (i / w) * k + k / 2);
        assert_eq!(&px[(y * fw as usize + x) * 3..][..3], &[10, 40, 120]);
        // The top row of the first original is observed: the red line runs along its top.
        let row = HEAD as usize;
        let red = (10..10 + w * k).filter(|&x| px[(row * fw as usize + x) * 3] == OBSERVED.0 && px[(row * fw as usize + x) * 3 + 1] == OBSERVED.1).count();
        assert!(red > w * k / 2, "{red}");
    }
}
