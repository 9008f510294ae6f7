//! The CPU fast path: a sequential net of dense and convolution layers (each `act(x Wᵀ + b)`,
//! a convolution as im2col first) run forward and backward by hand on host buffers, without
//! Candle's autograd.
//!
//! Forward keeps each layer's input (the im2col matrix for a convolution) and output; backward
//! walks the layers in reverse with the closed forms of [`crate::dense`]:
//! `∂h = ∂y ⊙ [y > 0]`, `∂W = ∂hᵀ x`, `∂b = Σ_rows ∂h`, `∂x = ∂h W` (then col2im for a
//! convolution), skipping `∂x` for the first layer, whose input is the data. The products are
//! the same fixed-block `gemm` calls as the custom ops, so the gradients equal those of Candle's
//! backward through [`crate::dense::dense`] and [`crate::conv::Conv`] bit for bit (tested in
//! `simclr.rs`) and do not depend on the thread count; what this path saves is Candle's
//! per-node work (a zero-filled gradient buffer and an elementwise add per argument, run on
//! Candle's spinning thread pool, which stalls whenever the machine is loaded).

use crate::conv::{grad_input_col2im, im2col, Conv};
use crate::dense;
use candle_core::backprop::GradStore;
use candle_core::Tensor;
use wick_core::Result;

/// One layer: `act(x Wᵀ + b)`, `W` `[O, K]`; for a convolution x is im2col of an NHWC input of
/// side (h, w).
pub struct HostLayer<'a> {
    pub w: &'a Tensor,
    pub b: &'a Tensor,
    pub relu: bool,
    pub conv: Option<(Conv, usize, usize)>,
}

/// What backward needs from forward.
pub struct Tape {
    /// Layer l's input matrix (`[rows_l, K_l]`; `None`: the previous layer's output, not copied)
    /// and output (`[rows_l, O_l]`).
    inputs: Vec<Option<Vec<f32>>>,
    outputs: Vec<Vec<f32>>,
    weights: Vec<Vec<f32>>,
    rows: Vec<usize>,
}

/// Whether the fast path can run `enc`: on the CPU with f32 parameters.
pub fn available(enc: &crate::Encoder, dev: &candle_core::Device) -> bool {
    dev.is_cpu() && enc.host_layers().iter().all(|l| l.w.dtype() == candle_core::DType::F32 && l.b.dtype() == candle_core::DType::F32)
}

/// The encoder's layers followed by a head's dense layers (each with whether a ReLU follows).
pub fn with_head<'a>(enc: &'a crate::Encoder, head: &[(&'a crate::encoder::Linear, bool)]) -> Vec<HostLayer<'a>> {
    let mut layers = enc.host_layers();
    layers.extend(head.iter().map(|&(l, relu)| HostLayer { w: &l.w, b: &l.b, relu, conv: None }));
    layers
}

fn host(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

/// The net's output for `n` inputs `x` (row-major), and the tape.
pub fn forward(layers: &[HostLayer], x: Vec<f32>, n: usize) -> Result<(Vec<f32>, Tape)> {
    let mut tape = Tape { inputs: Vec::new(), outputs: Vec::new(), weights: Vec::new(), rows: Vec::new() };
    let mut x = Some(x);
    for l in layers {
        let (o, k) = l.w.dims2()?;
        // This layer's input: the data (first layer) or the previous layer's output.
        let src: Option<Vec<f32>> = x.take();
        let (inp, rows) = match l.conv {
            Some((conv, h, w)) => {
                let from: &[f32] = src.as_deref().or(tape.outputs.last().map(Vec::as_slice)).unwrap_or(&[]);
                (Some(im2col(&conv, from, h, w)), n * conv.out_side(h) * conv.out_side(w))
            }
            None => (src, n),
        };
        let inp_slice: &[f32] = inp.as_deref().or(tape.outputs.last().map(Vec::as_slice)).unwrap_or(&[]);
        wick_core::ensure!(inp_slice.len() == rows * k, "host net: layer input has {} values, expected {rows} × {k}", inp_slice.len());
        let wv = host(l.w)?;
        let out = dense::forward(inp_slice, &wv, &host(l.b)?, l.relu, rows, k, o);
        tape.inputs.push(inp);
        tape.outputs.push(out);
        tape.weights.push(wv);
        tape.rows.push(rows);
    }
    let out = tape.outputs.last().cloned().unwrap_or_default();
    Ok((out, tape))
}

/// Add every layer's `∂W`, `∂b` to `grads`, given `g` = ∂L/∂(net output).
pub fn backward(layers: &[HostLayer], tape: &Tape, mut g: Vec<f32>, grads: &mut GradStore) -> Result<()> {
    // Whether `g` already carries the ReLU's backward (a convolution's fused input gradient).
    let mut masked = false;
    for (i, l) in layers.iter().enumerate().rev() {
        let (o, k) = l.w.dims2()?;
        let rows = tape.rows[i];
        if l.relu && !masked {
            wick_core::linalg::relu_grad_inplace(&mut g, &tape.outputs[i]);
        }
        masked = false;
        let inp: &[f32] = match &tape.inputs[i] {
            Some(v) => v,
            None => &tape.outputs[i - 1],
        };
        let dw = dense::grad_weight(&g, inp, rows, k, o);
        let db = wick_core::linalg::col_sums(&g, o);
        grads.insert(l.w, Tensor::from_vec(dw, (o, k), l.w.device())?);
        grads.insert(l.b, Tensor::from_vec(db, o, l.b.device())?);
        if i > 0 {
            g = match l.conv {
                Some((conv, h, w)) => {
                    // The product, col2im and the layer below's ReLU in one pass over a few images.
                    masked = layers[i - 1].relu;
                    grad_input_col2im(&conv, &g, &tape.weights[i], h, w, masked.then(|| tape.outputs[i - 1].as_slice()))
                }
                None => dense::grad_input(&g, &tape.weights[i], rows, k, o),
            };
        }
    }
    Ok(())
}
