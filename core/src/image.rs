//! 8-bit PNG encoding, atomic PNG files and image grids.
//!
//! Pixels are always row-major (`height` rows of `width` pixels) with `channels`
//! interleaved bytes per pixel: 1 for grey, 3 for RGB.

use std::path::Path;

use crate::error::{Error, Result};

/// An I/O error as one short line: the OS message without its `(os error N)` suffix.
pub(crate) fn io_msg(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s,
    }
}

/// Checks the shape of an 8-bit image buffer.
fn check_shape(pixels: &[u8], height: usize, width: usize, channels: usize) -> Result<()> {
    crate::ensure!(
        channels == 1 || channels == 3,
        "images must have 1 (grey) or 3 (RGB) channels, got {channels}"
    );
    crate::ensure!(height > 0 && width > 0, "cannot encode an empty {height}x{width} image");
    crate::ensure!(
        u32::try_from(height).is_ok() && u32::try_from(width).is_ok(),
        "image of {height}x{width} pixels is too large for PNG"
    );
    let expected = height.checked_mul(width).and_then(|n| n.checked_mul(channels));
    crate::ensure!(
        expected == Some(pixels.len()),
        "image of {height}x{width}x{channels} needs {} bytes, got {}",
        expected.map_or_else(|| "too many".to_string(), |n| n.to_string()),
        pixels.len()
    );
    Ok(())
}

/// Encode 8-bit pixels (channels 1 or 3) as PNG bytes.
pub fn encode_png(pixels: &[u8], height: usize, width: usize, channels: usize) -> Result<Vec<u8>> {
    check_shape(pixels, height, width, channels)?;
    let png_err = |e: png::EncodingError| Error::new(format!("cannot encode PNG: {e}"));
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width as u32, height as u32);
        enc.set_color(if channels == 1 {
            png::ColorType::Grayscale
        } else {
            png::ColorType::Rgb
        });
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(png_err)?;
        w.write_image_data(pixels).map_err(png_err)?;
        w.finish().map_err(png_err)?;
    }
    Ok(out)
}

/// Write PNG atomically (temp file in the same directory, fsync, rename).
///
/// A reader never sees a half-written file at `path`: either the old file or the
/// complete new one.
pub fn write_png(path: &Path, pixels: &[u8], height: usize, width: usize, channels: usize) -> Result<()> {
    let bytes = encode_png(pixels, height, width, channels)?;
    crate::checkpoint::write_atomic_io(path, &bytes)
        .map_err(|e| Error::new(format!("cannot write '{}': {}", path.display(), io_msg(&e))))
}

/// Upscale factor so that small images (8×8 digits) are visible in TensorBoard: about 64 pixels a side.
pub fn display_scale(h: usize) -> usize {
    (64 / h.max(1)).max(1)
}

/// [`grid`] of `n` images of h × w values in [0,1], each upscaled by [`display_scale`] (pixel
/// replication) and bordered mid-grey; `cols == 0` picks about `sqrt(n)` columns.
pub fn display_grid(images: &[f32], n: usize, h: usize, w: usize, cols: usize) -> (Vec<u8>, usize, usize) {
    let s = display_scale(h);
    let mut up = Vec::with_capacity(n * h * w * s * s);
    for k in 0..n {
        for r in 0..h * s {
            for c in 0..w * s {
                up.push(images[k * h * w + (r / s) * w + c / s]);
            }
        }
    }
    grid(&up, n, h * s, w * s, cols, 128)
}

/// Tile n images of h x w values in [0,1] (row-major, grey) into a grid with `cols` columns and a 1-pixel border of value `pad` between tiles; returns (grey u8 pixels, height, width).
///
/// Values are clamped to [0, 1] and mapped to 0..=255 (NaN becomes 0). Cells of the
/// last row that hold no image, and the borders between tiles, are `pad`. There is
/// no border around the outside. `cols` is capped at `n`; `cols == 0` picks about
/// `sqrt(n)` columns. `n == 0` (or `h == 0` or `w == 0`) gives an empty `(vec![], 0, 0)`.
///
/// # Panics
/// If `images` holds fewer than `n * h * w` values (a caller bug).
pub fn grid(images: &[f32], n: usize, h: usize, w: usize, cols: usize, pad: u8) -> (Vec<u8>, usize, usize) {
    if n == 0 || h == 0 || w == 0 {
        return (Vec::new(), 0, 0);
    }
    assert!(
        images.len() >= n * h * w,
        "grid: {n} images of {h}x{w} need {} values, got {}",
        n * h * w,
        images.len()
    );
    let cols = if cols == 0 {
        ((n as f64).sqrt().ceil() as usize).max(1)
    } else {
        cols.min(n)
    };
    let rows = n.div_ceil(cols);
    let gh = rows * h + (rows - 1);
    let gw = cols * w + (cols - 1);
    let mut out = vec![pad; gh * gw];
    for (i, img) in images.chunks_exact(h * w).take(n).enumerate() {
        let (r, c) = (i / cols, i % cols);
        let (y0, x0) = (r * (h + 1), c * (w + 1));
        for y in 0..h {
            let row = &mut out[(y0 + y) * gw + x0..(y0 + y) * gw + x0 + w];
            for (dst, &v) in row.iter_mut().zip(&img[y * w..(y + 1) * w]) {
                *dst = to_u8(v);
            }
        }
    }
    (out, gh, gw)
}

/// [0,1] -> 0..=255, clamped, NaN -> 0.
fn to_u8(v: f32) -> u8 {
    if v.is_nan() {
        0
    } else {
        (v.clamp(0.0, 1.0) * 255.0).round() as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn decode(bytes: &[u8]) -> (Vec<u8>, u32, u32, png::ColorType) {
        let mut reader = png::Decoder::new(bytes).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (buf, info.width, info.height, info.color_type)
    }

    #[test]
    fn png_round_trips_grey_and_rgb() {
        let grey: Vec<u8> = (0..15).map(|i| i * 10).collect();
        let (px, w, h, ct) = decode(&encode_png(&grey, 3, 5, 1).unwrap());
        assert_eq!((w, h, ct), (5, 3, png::ColorType::Grayscale));
        assert_eq!(px, grey);

        let rgb: Vec<u8> = (0..24).map(|i| i * 7).collect();
        let (px, w, h, ct) = decode(&encode_png(&rgb, 2, 4, 3).unwrap());
        assert_eq!((w, h, ct), (4, 2, png::ColorType::Rgb));
        assert_eq!(px, rgb);
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(encode_png(&[0; 6], 2, 3, 2).is_err());
        assert!(encode_png(&[0; 5], 2, 3, 1).is_err());
        assert!(encode_png(&[], 0, 3, 1).is_err());
        let e = encode_png(&[0; 7], 2, 3, 1).unwrap_err();
        assert_eq!(e.to_string(), "image of 2x3x1 needs 6 bytes, got 7");
    }

    #[test]
    fn write_png_is_atomic_and_reports_errors() {
        let dir = std::env::temp_dir().join(format!("wick-image-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.png");
        write_png(&path, &[1, 2, 3, 4, 5, 6], 2, 3, 1).unwrap();
        write_png(&path, &[9; 6], 3, 2, 1).unwrap(); // overwrite
        let (px, w, h, _) = decode(&fs::read(&path).unwrap());
        assert_eq!((px, w, h), (vec![9; 6], 2, 3));
        // No temp files left behind.
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.png")]);
        // A path under a regular file fails cleanly.
        let bad = path.join("y.png");
        let e = write_png(&bad, &[0; 6], 2, 3, 1).unwrap_err().to_string();
        assert!(
            e.starts_with("cannot write '") && e.contains("y.png") && !e.contains('\n'),
            "{e}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn grid_layout() {
        // 3 images of 2x2 with values i/4, 2 columns: 2 rows -> 5x5.
        let imgs: Vec<f32> = (0..3).flat_map(|i| vec![i as f32 / 2.0; 4]).collect();
        let (px, gh, gw) = grid(&imgs, 3, 2, 2, 2, 7);
        assert_eq!((gh, gw), (5, 5));
        #[rustfmt::skip]
        let expect = vec![
            0, 0, 7, 128, 128,
            0, 0, 7, 128, 128,
            7, 7, 7, 7, 7,
            255, 255, 7, 7, 7,
            255, 255, 7, 7, 7,
        ];
        assert_eq!(px, expect);
        // Clamping and NaN.
        let (px, _, _) = grid(&[-1.0, 2.0, f32::NAN, 0.5], 1, 2, 2, 4, 0);
        assert_eq!(px, vec![0, 255, 0, 128]);
        // Non-square tiles, one row; cols capped at n.
        let (px, gh, gw) = grid(&[1.0; 12], 2, 2, 3, 10, 9);
        assert_eq!((gh, gw), (2, 7));
        assert_eq!(&px[..7], &[255, 255, 255, 9, 255, 255, 255]);
        assert_eq!(grid(&[], 0, 2, 2, 2, 0), (vec![], 0, 0));
        // cols == 0: automatic.
        let (_, gh, gw) = grid(&[0.0; 5 * 4], 5, 2, 2, 0, 0);
        assert_eq!((gh, gw), (5, 8));
    }
}
