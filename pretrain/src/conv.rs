//! 2-D convolution in NHWC layout as im2col followed by one matrix product.
//!
//! For an input `x` `[B, H, W, C]`, a square kernel of side `k`, stride `s` and zero padding `p`,
//! the output has `Ho = (H + 2p − k)/s + 1` rows (likewise `Wo`) and
//!
//! ```text
//! y[b, i, j, o] = bias[o] + Σ_{u,v<k, c<C} W[o, (u·k + v)·C + c] · x[b, i·s + u − p, j·s + v − p, c]
//! ```
//!
//! i.e. `y = im2col(x) · Wᵀ + bias` with `im2col(x)` `[B·Ho·Wo, k·k·C]`. On the CPU `im2col` is a
//! fused op whose backward is the matching scatter-add (col2im), and the product is a
//! [`crate::dense`] layer, so the whole layer's gradient is two matrix products and one pass over
//! memory (one product for a first layer, whose input needs no gradient); Candle's own `conv2d` backward goes through
//! `conv_transpose2d` and a batch-sized kernel, which is far slower on the CPU. Elsewhere the same
//! function runs Candle's `conv2d` on permuted tensors (same values, tested).

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;
use wick_core::cpu::f32_slice;

/// Geometry of one convolution layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv {
    pub c_in: usize,
    pub c_out: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Conv {
    /// Output side for an input side `n`.
    pub fn out_side(&self, n: usize) -> usize {
        (n + 2 * self.pad - self.k) / self.stride + 1
    }

    /// `x` `[B, H, W, C_in]`, `w` `[C_out, k·k·C_in]`, `b` `[C_out]` → `[B, Ho, Wo, C_out]`.
    pub fn forward(&self, x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_act(x, w, b, false)
    }

    /// `relu` of [`Conv::forward`].
    pub fn forward_relu(&self, x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_act(x, w, b, true)
    }

    fn forward_act(&self, x: &Tensor, w: &Tensor, b: &Tensor, relu: bool) -> candle_core::Result<Tensor> {
        let (bs, h, wd, c) = x.dims4()?;
        if c != self.c_in {
            candle_core::bail!("conv: input has {c} channels, expected {}", self.c_in);
        }
        let (ho, wo) = (self.out_side(h), self.out_side(wd));
        if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
            let cols = x.contiguous()?.apply_op1(Im2Col { conv: *self, h, w: wd })?;
            let y = crate::dense::dense(&cols, w, b, relu)?;
            y.reshape((bs, ho, wo, self.c_out))
        } else {
            let kernel = w.reshape((self.c_out, self.k, self.k, self.c_in))?.permute((0, 3, 1, 2))?.contiguous()?;
            let y = x.permute((0, 3, 1, 2))?.contiguous()?.conv2d(&kernel, self.pad, self.stride, 1, 1)?;
            let y = y.permute((0, 2, 3, 1))?.broadcast_add(b)?.contiguous()?;
            if relu {
                y.relu()
            } else {
                Ok(y)
            }
        }
    }
}

/// `[B, H, W, C]` → `[B·Ho·Wo, k·k·C]`; rows in (b, i, j) order, columns in (u, v, c) order.
struct Im2Col {
    conv: Conv,
    h: usize,
    w: usize,
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "wick-im2col"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "im2col input")?;
        let (ho, wo) = (self.conv.out_side(self.h), self.conv.out_side(self.w));
        let bs = x.len() / (self.h * self.w * self.conv.c_in);
        Ok((CpuStorage::F32(im2col(&self.conv, x, self.h, self.w)), Shape::from((bs * ho * wo, self.conv.k * self.conv.k * self.conv.c_in))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(g.contiguous()?.apply_op1_no_bwd(&Col2Im { conv: self.conv, h: self.h, w: self.w })?))
    }
}

/// `[B, H, W, C]` → `[B·Ho·Wo, k·k·C]` on host buffers (see [`Im2Col`]).
pub fn im2col(conv: &Conv, x: &[f32], h: usize, w: usize) -> Vec<f32> {
    let Conv { c_in: c, k, stride, pad, .. } = *conv;
    let (ho, wo) = (conv.out_side(h), conv.out_side(w));
    let bs = x.len() / (h * w * c);
    let row = k * k * c;
    // Every entry is written once, a tap outside the image as an explicit zero, so the buffer
    // is not zero-filled first (a pass over `[B·Ho·Wo, k·k·C]` saved).
    let mut out: Vec<f32> = Vec::with_capacity(bs * ho * wo * row);
    out.spare_capacity_mut().par_chunks_mut(ho * wo * row).enumerate().for_each(|(b, ob)| {
        let xb = &x[b * h * w * c..(b + 1) * h * w * c];
        for i in 0..ho {
            for j in 0..wo {
                let r = &mut ob[(i * wo + j) * row..(i * wo + j + 1) * row];
                for u in 0..k {
                    let y = (i * stride + u) as isize - pad as isize;
                    for v in 0..k {
                        let xx = (j * stride + v) as isize - pad as isize;
                        let inside = !(y < 0 || y >= h as isize || xx < 0 || xx >= w as isize);
                        if c == 1 {
                            // One channel (a first layer): one value per tap.
                            r[u * k + v].write(if inside { xb[y as usize * w + xx as usize] } else { 0.0 });
                            continue;
                        }
                        let dst = &mut r[(u * k + v) * c..(u * k + v + 1) * c];
                        if !inside {
                            for d in dst {
                                d.write(0.0);
                            }
                        } else {
                            let src = (y as usize * w + xx as usize) * c;
                            for (d, &s) in dst.iter_mut().zip(&xb[src..src + c]) {
                                d.write(s);
                            }
                        }
                    }
                }
            }
        }
    });
    // SAFETY: the loops above wrote every entry of every image's `ho · wo · row` block.
    unsafe { out.set_len(bs * ho * wo * row) };
    out
}

/// The adjoint of [`Im2Col`]: scatter-add `[B·Ho·Wo, k·k·C]` back into `[B, H, W, C]`.
struct Col2Im {
    conv: Conv,
    h: usize,
    w: usize,
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "wick-col2im"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = f32_slice(s, l, "col2im input")?;
        let bs = g.len() / (self.conv.out_side(self.h) * self.conv.out_side(self.w) * self.conv.k * self.conv.k * self.conv.c_in);
        Ok((CpuStorage::F32(col2im(&self.conv, g, self.h, self.w)), Shape::from((bs, self.h, self.w, self.conv.c_in))))
    }
}

/// The adjoint of [`im2col`]: `[B·Ho·Wo, k·k·C]` → `[B, H, W, C]` on host buffers.
pub fn col2im(conv: &Conv, g: &[f32], h: usize, w: usize) -> Vec<f32> {
    let Conv { c_in: c, k, .. } = *conv;
    let (ho, wo) = (conv.out_side(h), conv.out_side(w));
    let row = k * k * c;
    let bs = g.len() / (ho * wo * row);
    let mut out = vec![0f32; bs * h * w * c];
    // Per image, in a fixed order: the sums do not depend on the thread count.
    out.par_chunks_mut(h * w * c).enumerate().for_each(|(b, xb)| col2im_image(conv, &g[b * ho * wo * row..(b + 1) * ho * wo * row], h, w, xb));
    out
}

/// [`col2im`] of one image: its `[Ho·Wo, k·k·C]` rows added into `xb` `[H, W, C]`.
fn col2im_image(conv: &Conv, gb: &[f32], h: usize, w: usize, xb: &mut [f32]) {
    let Conv { c_in: c, k, stride, pad, .. } = *conv;
    let (ho, wo) = (conv.out_side(h), conv.out_side(w));
    let row = k * k * c;
    for i in 0..ho {
        for j in 0..wo {
            let r = &gb[(i * wo + j) * row..(i * wo + j + 1) * row];
            for u in 0..k {
                let y = (i * stride + u) as isize - pad as isize;
                if y < 0 || y >= h as isize {
                    continue;
                }
                for v in 0..k {
                    let xx = (j * stride + v) as isize - pad as isize;
                    if xx < 0 || xx >= w as isize {
                        continue;
                    }
                    let dst = (y as usize * w + xx as usize) * c;
                    for (d, s) in xb[dst..dst + c].iter_mut().zip(&r[(u * k + v) * c..(u * k + v + 1) * c]) {
                        *d += s;
                    }
                }
            }
        }
    }
}

/// Images per task of [`grad_input_col2im`]: their `[rows, k·k·C]` product (4 · 49 · 288 floats
/// for the CNN's second layer, 226 KB) stays in the core's cache between the product and col2im.
const GRAD_IMAGES: usize = 4;

/// A convolution's input gradient `col2im(∂h W)` (`∂h` `[B·Ho·Wo, C_out]`, `W` `[C_out, k·k·C]`)
/// and, with `relu_out` (the input's own ReLU output `[B, H, W, C]`), that times `[relu_out > 0]`:
/// what [`crate::dense::grad_input`], [`col2im`] and `relu_grad_inplace` give, bit for bit
/// (tested), a few images at a time, so the `[B·Ho·Wo, k·k·C]` product never goes to memory
/// (29 MB written and read back for the CNN's second layer at 512 views; `examples/prof_cnn_parts.rs`).
pub fn grad_input_col2im(conv: &Conv, dh: &[f32], w: &[f32], h: usize, wd: usize, relu_out: Option<&[f32]>) -> Vec<f32> {
    let (o, row) = (conv.c_out, conv.k * conv.k * conv.c_in);
    let per_image = conv.out_side(h) * conv.out_side(wd);
    let img = h * wd * conv.c_in;
    let bs = dh.len() / (per_image * o);
    assert!(dh.len() == bs * per_image * o && w.len() == o * row && relu_out.is_none_or(|m| m.len() == bs * img));
    let mut out = vec![0f32; bs * img];
    out.par_chunks_mut(GRAD_IMAGES * img).enumerate().for_each(|(j, ob)| {
        let (imgs, first) = (ob.len() / img, j * GRAD_IMAGES);
        let rows = imgs * per_image;
        let mut gi = vec![0f32; rows * row];
        wick_core::linalg::matmul_serial(rows, row, o, &mut gi, (row, 1), false, &dh[first * per_image * o..(first * per_image + rows) * o], (o, 1), w, (row, 1));
        for (b, xb) in ob.chunks_exact_mut(img).enumerate() {
            col2im_image(conv, &gi[b * per_image * row..(b + 1) * per_image * row], h, wd, xb);
        }
        if let Some(m) = relu_out {
            wick_core::linalg::relu_grad_serial(ob, &m[first * img..first * img + ob.len()]);
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use wick_core::rng::Rng;

    fn rand(shape: &[usize], r: &mut Rng) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_vec((0..n).map(|_| r.normal() as f32).collect::<Vec<_>>(), shape, &Device::Cpu).unwrap()
    }

    /// The im2col path and Candle's conv2d give the same outputs and gradients.
    /// The fused input gradient gives the bits of the product, col2im and the ReLU's backward
    /// run one after another, with and without the mask, for 1 and 3 threads.
    #[test]
    fn the_fused_input_gradient_is_the_three_passes_bit_for_bit() {
        use wick_core::rng::Rng;
        let mut r = Rng::stream(4, "fused");
        for (conv, bs, side) in [(Conv { c_in: 32, c_out: 64, k: 3, stride: 2, pad: 1 }, 37, 14), (Conv { c_in: 3, c_out: 5, k: 3, stride: 1, pad: 1 }, 6, 7)] {
            let (ho, row) = (conv.out_side(side), conv.k * conv.k * conv.c_in);
            let dh: Vec<f32> = (0..bs * ho * ho * conv.c_out).map(|_| r.normal() as f32).collect();
            let w: Vec<f32> = (0..conv.c_out * row).map(|_| r.normal() as f32).collect();
            let y: Vec<f32> = (0..bs * side * side * conv.c_in).map(|_| (r.normal() as f32).max(0.0)).collect();
            let mut want = col2im(&conv, &crate::dense::grad_input(&dh, &w, bs * ho * ho, row, conv.c_out), side, side);
            let plain = want.clone();
            wick_core::linalg::relu_grad_inplace(&mut want, &y);
            for t in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap();
                let (got, got_plain) = pool.install(|| (grad_input_col2im(&conv, &dh, &w, side, side, Some(&y)), grad_input_col2im(&conv, &dh, &w, side, side, None)));
                assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()) && got.len() == want.len(), "{conv:?}, {t} threads, masked");
                assert!(got_plain.iter().zip(&plain).all(|(a, b)| a.to_bits() == b.to_bits()), "{conv:?}, {t} threads");
            }
        }
    }

    #[test]
    fn im2col_matches_candle_conv2d_values_and_gradients() {
        let mut r = Rng::stream(1, "conv");
        for conv in [Conv { c_in: 1, c_out: 4, k: 3, stride: 2, pad: 1 }, Conv { c_in: 3, c_out: 5, k: 3, stride: 1, pad: 1 }, Conv { c_in: 2, c_out: 3, k: 2, stride: 2, pad: 0 }] {
            let x = Var::from_tensor(&rand(&[2, 7, 7, conv.c_in], &mut r)).unwrap();
            let w = Var::from_tensor(&rand(&[conv.c_out, conv.k * conv.k * conv.c_in], &mut r)).unwrap();
            let b = Var::from_tensor(&rand(&[conv.c_out], &mut r)).unwrap();
            let y = conv.forward(x.as_tensor(), w.as_tensor(), b.as_tensor()).unwrap();
            // Reference: candle's conv2d on NCHW.
            let kernel = w.reshape((conv.c_out, conv.k, conv.k, conv.c_in)).unwrap().permute((0, 3, 1, 2)).unwrap().contiguous().unwrap();
            let yr = x.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap().conv2d(&kernel, conv.pad, conv.stride, 1, 1).unwrap();
            let yr = yr.permute((0, 2, 3, 1)).unwrap().broadcast_add(b.as_tensor()).unwrap();
            assert_eq!(y.dims(), yr.dims());
            let (a, c) = (y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), yr.flatten_all().unwrap().to_vec1::<f32>().unwrap());
            for (p, q) in a.iter().zip(&c) {
                assert!((p - q).abs() < 1e-4, "{p} vs {q}");
            }
            let wy = rand(y.dims(), &mut r);
            let ga = (y * &wy).unwrap().sum_all().unwrap().backward().unwrap();
            let gb = (yr * &wy).unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&x, &w, &b] {
                let p = ga.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let q = gb.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                for (p, q) in p.iter().zip(&q) {
                    assert!((p - q).abs() < 1e-3, "{p} vs {q}");
                }
            }
        }
    }
}
