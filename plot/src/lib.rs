//! wick-plot: the figures a person reads without the code, drawn with
//! [plotters](https://docs.rs/plotters) and returned as RGB pixels, PNG bytes or SVG text.
//!
//! Each figure is plain data (no env or agent types) implementing [`Figure`]:
//! - [`blackjack::Blackjack`]: Sutton & Barto Figs. 5.1/5.2, state values as heat maps with a
//!   colour bar and the policy as a HIT/STICK map, usable ace above, no usable ace below;
//! - [`curves::Curves`]: line charts with a legend, e.g. Example 5.4's ordinary vs weighted
//!   importance-sampling error on a log-scale episodes axis, or a learning curve;
//! - [`grid::GridPolicy`]: a grid world's greedy policy as arrows, forbidden and target cells
//!   coloured as in Zhao's book, the state value in each cell;
//! - [`completion::Completions`]: each original image beside the model's completion, the
//!   observed region outlined.
//!
//! Text is drawn with DejaVu Sans, bundled (a 20 KB subset, `assets/fonts`) and rendered by
//! ab_glyph, so figures look the same on a bare machine without fontconfig or system fonts.

pub mod blackjack;
pub mod completion;
pub mod curves;
pub mod grid;

use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use wick_core::{bail, Error, Result};

/// The drawing surface a figure draws on (a bitmap or an SVG document).
pub type Area<'a, DB> = DrawingArea<DB, Shift>;
/// What drawing on a backend `DB` can fail with.
pub type DrawResult<DB> = std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// A figure: its size in pixels and how it draws itself on any plotters backend.
pub trait Figure {
    /// (width, height) in pixels.
    fn size(&self) -> (u32, u32);
    /// Draw on `root` (already filled white).
    fn draw<DB: DrawingBackend>(&self, root: &Area<DB>) -> DrawResult<DB>;
}

/// An RGB image, row-major, 3 bytes a pixel.
#[derive(Clone, Debug, PartialEq)]
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans-subset.ttf");
const FONT_BOLD: &[u8] = include_bytes!("../assets/fonts/DejaVuSans-Bold-subset.ttf");

/// Register the bundled font as plotters' "sans-serif" (once per process).
fn fonts() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for (style, bytes) in [(FontStyle::Normal, FONT), (FontStyle::Bold, FONT_BOLD), (FontStyle::Italic, FONT), (FontStyle::Oblique, FONT)] {
            plotters::style::register_font("sans-serif", style, bytes).map_err(|_| ()).expect("the bundled font parses");
        }
    });
}

fn draw_err(e: impl std::fmt::Display) -> Error {
    Error::new(format!("cannot draw the figure: {e}"))
}

/// Render `fig` to RGB pixels.
pub fn rgb(fig: &impl Figure) -> Result<Rgb> {
    fonts();
    let (w, h) = fig.size();
    let mut pixels = vec![255u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        fig.draw(&root).map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    Ok(Rgb { width: w as usize, height: h as usize, pixels })
}

/// Render `fig` to PNG bytes.
pub fn png(fig: &impl Figure) -> Result<Vec<u8>> {
    let im = rgb(fig)?;
    wick_core::image::encode_png(&im.pixels, im.height, im.width, 3)
}

/// Render `fig` to an SVG document.
pub fn svg(fig: &impl Figure) -> Result<String> {
    fonts();
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, fig.size()).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        fig.draw(&root).map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    Ok(text)
}

/// Write `fig` to `path` atomically, PNG or SVG by the extension (`.png`, `.svg`).
pub fn write(fig: &impl Figure, path: &Path) -> Result<()> {
    let bytes = match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("png") => png(fig)?,
        Some("svg") => svg(fig)?.into_bytes(),
        _ => bail!("'{}': give the figure a .png or .svg name", path.display()),
    };
    wick_core::checkpoint::write_atomic(path, &bytes)
}

/// Any of the figures, for callers that hold several (`wick plot`, the gallery example).
pub enum Plot {
    Blackjack(blackjack::Blackjack),
    Curves(curves::Curves),
    Grid(grid::GridPolicy),
    Completions(completion::Completions),
}

impl Figure for Plot {
    fn size(&self) -> (u32, u32) {
        match self {
            Plot::Blackjack(f) => f.size(),
            Plot::Curves(f) => f.size(),
            Plot::Grid(f) => f.size(),
            Plot::Completions(f) => f.size(),
        }
    }
    fn draw<DB: DrawingBackend>(&self, root: &Area<DB>) -> DrawResult<DB> {
        match self {
            Plot::Blackjack(f) => f.draw(root),
            Plot::Curves(f) => f.draw(root),
            Plot::Grid(f) => f.draw(root),
            Plot::Completions(f) => f.draw(root),
        }
    }
}

/// Colours of the lines, in order (matplotlib's tab10, which the book's later figures resemble).
pub const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Diverging colour map for values in [−`scale`, `scale`]: red below 0, white at 0, blue above.
pub fn diverging(v: f64, scale: f64) -> RGBColor {
    let t = if v.is_finite() { (v / scale.max(1e-12)).clamp(-1.0, 1.0) } else { 0.0 };
    // From white to matplotlib's RdBu ends (178, 24, 43) and (33, 102, 172).
    let mix = |end: (f64, f64, f64), f: f64| {
        let c = |e: f64| (255.0 + (e - 255.0) * f).round() as u8;
        RGBColor(c(end.0), c(end.1), c(end.2))
    };
    if t < 0.0 {
        mix((178.0, 24.0, 43.0), -t)
    } else {
        mix((33.0, 102.0, 172.0), t)
    }
}

/// A number for a person: 3 significant digits, no trailing zeros, a real minus sign.
pub fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    let s = if (1e-3..1e5).contains(&a) {
        let decimals = (2 - a.log10().floor() as i32).max(0) as usize;
        let s = format!("{a:.decimals$}");
        if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
    } else {
        format!("{a:.1e}")
    };
    if v < 0.0 { format!("\u{2212}{s}") } else { s }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Decode PNG bytes with the `png` crate: (width, height, RGB pixels).
    pub fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let dec = png::Decoder::new(bytes);
        let mut r = dec.read_info().expect("a PNG header");
        let mut buf = vec![0; r.output_buffer_size()];
        let info = r.next_frame(&mut buf).expect("a PNG frame");
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    /// Distinct colours among the pixels of a region (x0..x1, y0..y1).
    pub fn colours(im: &Rgb, x: std::ops::Range<usize>, y: std::ops::Range<usize>) -> usize {
        let mut set = std::collections::HashSet::new();
        for yy in y {
            for xx in x.clone() {
                let i = (yy * im.width + xx) * 3;
                set.insert([im.pixels[i], im.pixels[i + 1], im.pixels[i + 2]]);
            }
        }
        set.len()
    }

    /// Pixels in a region that are dark grey to black (text, axes, arrows).
    pub fn dark(im: &Rgb, x: std::ops::Range<usize>, y: std::ops::Range<usize>) -> usize {
        let mut n = 0;
        for yy in y {
            for xx in x.clone() {
                let i = (yy * im.width + xx) * 3;
                if im.pixels[i..i + 3].iter().all(|&c| c < 90) {
                    n += 1;
                }
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_for_people() {
        assert_eq!(fmt_num(18.103904570473563), "18.1");
        assert_eq!(fmt_num(-0.04237), "\u{2212}0.0424");
        assert_eq!(fmt_num(1.0), "1");
        assert_eq!(fmt_num(500000.0), "5.0e5");
        assert_eq!(fmt_num(0.0), "0");
    }

    #[test]
    fn diverging_ends_and_middle() {
        assert_eq!(diverging(0.0, 1.0), RGBColor(255, 255, 255));
        assert_eq!(diverging(-1.0, 1.0), RGBColor(178, 24, 43));
        assert_eq!(diverging(5.0, 1.0), RGBColor(33, 102, 172));
        assert_eq!(diverging(f64::NAN, 1.0), RGBColor(255, 255, 255));
    }
}
