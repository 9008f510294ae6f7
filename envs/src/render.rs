//! Renders: an H×W×3 `u8` image type with the few drawing primitives the envs need, and text
//! helpers.

use std::path::Path;

use wick_core::Result;

use crate::space::Space;

/// An RGB image, row-major H×W×3 `u8` (Gymnasium's `rgb_array`).
#[derive(Clone, Debug, PartialEq)]
pub struct Rgb {
    pub height: usize,
    pub width: usize,
    pub data: Vec<u8>,
}

impl Rgb {
    /// A `height`×`width` image filled with `color`.
    pub fn new(height: usize, width: usize, color: [u8; 3]) -> Rgb {
        let mut data = Vec::with_capacity(height * width * 3);
        for _ in 0..height * width {
            data.extend_from_slice(&color);
        }
        Rgb { height, width, data }
    }

    #[inline]
    pub fn pixel(&self, y: usize, x: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    #[inline]
    pub fn put(&mut self, y: i64, x: i64, c: [u8; 3]) {
        if y >= 0 && x >= 0 && (y as usize) < self.height && (x as usize) < self.width {
            let i = (y as usize * self.width + x as usize) * 3;
            self.data[i..i + 3].copy_from_slice(&c);
        }
    }

    /// Fill the rectangle `[x0, x1) × [y0, y1)` (clipped).
    pub fn fill_rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: [u8; 3]) {
        for y in y0.max(0)..y1.min(self.height as i64) {
            for x in x0.max(0)..x1.min(self.width as i64) {
                self.put(y, x, c);
            }
        }
    }

    /// Fill a convex polygon (vertices in order), sampling pixel centres.
    pub fn fill_convex(&mut self, pts: &[(f64, f64)], c: [u8; 3]) {
        let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
        for &(x, y) in pts {
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
        let n = pts.len();
        for y in (y0.floor() as i64).max(0)..=(y1.ceil() as i64).min(self.height as i64 - 1) {
            for x in (x0.floor() as i64).max(0)..=(x1.ceil() as i64).min(self.width as i64 - 1) {
                let (px, py) = (x as f64 + 0.5, y as f64 + 0.5);
                let (mut pos, mut neg) = (false, false);
                for i in 0..n {
                    let (ax, ay) = pts[i];
                    let (bx, by) = pts[(i + 1) % n];
                    let cross = (bx - ax) * (py - ay) - (by - ay) * (px - ax);
                    pos |= cross > 0.0;
                    neg |= cross < 0.0;
                }
                if !(pos && neg) {
                    self.put(y, x, c);
                }
            }
        }
    }

    /// Fill a disc.
    pub fn fill_circle(&mut self, cx: f64, cy: f64, r: f64, c: [u8; 3]) {
        for y in (cy - r).floor() as i64..=(cy + r).ceil() as i64 {
            for x in (cx - r).floor() as i64..=(cx + r).ceil() as i64 {
                let (dx, dy) = (x as f64 + 0.5 - cx, y as f64 + 0.5 - cy);
                if dx * dx + dy * dy <= r * r {
                    self.put(y, x, c);
                }
            }
        }
    }

    /// Draw a one-pixel line from `(x0, y0)` to `(x1, y1)` (continuous coordinates, pixel
    /// `(x, y)` covering `[x, x+1) × [y, y+1)`; a point per pixel along the longer axis).
    pub fn draw_line(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, c: [u8; 3]) {
        let n = (x1 - x0).abs().max((y1 - y0).abs()).ceil().max(1.0) as i64;
        for i in 0..=n {
            let t = i as f64 / n as f64;
            self.put((y0 + t * (y1 - y0)).floor() as i64, (x0 + t * (x1 - x0)).floor() as i64, c);
        }
    }

    /// PNG bytes (via `wick_core::image`).
    pub fn to_png(&self) -> Result<Vec<u8>> {
        wick_core::image::encode_png(&self.data, self.height, self.width, 3)
    }

    pub fn write_png(&self, path: &Path) -> Result<()> {
        wick_core::image::write_png(path, &self.data, self.height, self.width, 3)
    }
}

/// A flat observation in Gymnasium's print style: `3`, `(14, 10, 0)`, `[0.01, -0.02]`.
pub fn obs_string(space: &Space, v: &[f32]) -> String {
    match space {
        Space::Discrete { .. } => format!("{}", v[0] as i64),
        Space::Tuple(_) => {
            let parts: Vec<String> = v.iter().map(|x| format!("{}", *x as i64)).collect();
            format!("({})", parts.join(", "))
        }
        Space::Box { .. } => {
            let parts: Vec<String> = v.iter().map(|x| format!("{x:.8}")).collect();
            format!("[{}]", parts.join(", "))
        }
    }
}

/// Colours the renders share.
pub(crate) const WHITE: [u8; 3] = [255, 255, 255];
pub(crate) const BLACK: [u8; 3] = [0, 0, 0];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_draw_inside_bounds() {
        let mut im = Rgb::new(10, 20, WHITE);
        im.fill_rect(-5, -5, 3, 3, BLACK);
        assert_eq!(im.pixel(0, 0), BLACK);
        assert_eq!(im.pixel(3, 3), WHITE);
        im.fill_convex(&[(10.0, 2.0), (15.0, 2.0), (15.0, 7.0), (10.0, 7.0)], [1, 2, 3]);
        assert_eq!(im.pixel(4, 12), [1, 2, 3]);
        im.fill_circle(5.0, 5.0, 2.0, [9, 9, 9]);
        assert_eq!(im.pixel(5, 5), [9, 9, 9]);
        im.draw_line(0.0, 9.5, 19.5, 9.5, [7, 7, 7]);
        assert!((0..20).all(|x| im.pixel(9, x) == [7, 7, 7]));
        assert!(im.to_png().unwrap().starts_with(b"\x89PNG"));
    }
}
