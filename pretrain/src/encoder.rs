//! The encoders f: [0,1]^{H·W} → R^F that every objective trains and every probe reads.
//!
//! - **MLP**: `D → 512 → 256`, ReLU after each layer; F = 256.
//! - **CNN**: two 3×3 stride-2 convolutions (32 then 64 channels, zero padding 1, ReLU), then a
//!   fully connected layer to F = 256 with ReLU. On 28×28 inputs: 28 → 14 → 7, 7·7·64 = 3136 → 256.
//!   Activations are NHWC; see [`crate::conv`].
//!
//! Every weight and bias is drawn from U(−1/√fan_in, 1/√fan_in), PyTorch's default for
//! `nn.Linear` and `nn.Conv2d`, from the caller's stream.

use crate::conv::Conv;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use wick_core::params::Params;
use wick_core::rng::Rng;
use wick_core::{Error, Result};

/// Which encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderKind {
    Mlp,
    Cnn,
}

impl FromStr for EncoderKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<EncoderKind> {
        match s {
            "mlp" => Ok(EncoderKind::Mlp),
            "cnn" => Ok(EncoderKind::Cnn),
            _ => Err(Error::new(format!("unknown encoder '{s}': expected mlp or cnn"))),
        }
    }
}

impl fmt::Display for EncoderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncoderKind::Mlp => "mlp",
            EncoderKind::Cnn => "cnn",
        })
    }
}

/// Feature dimension F of both encoders.
pub const FEATURES: usize = 256;
const MLP_HIDDEN: usize = 512;
const CNN_CHANNELS: [usize; 2] = [32, 64];

/// A dense layer `y = x Wᵀ + b`, W `[out, in]` (PyTorch's layout).
#[derive(Clone)]
pub struct Linear {
    pub w: Tensor,
    pub b: Tensor,
}

impl Linear {
    /// Add `name.w` and `name.b` to `params`, U(±1/√in).
    pub fn new(name: &str, d_in: usize, d_out: usize, params: &mut Params, rng: &mut Rng, dev: &Device) -> Result<Linear> {
        let bound = 1.0 / (d_in as f64).sqrt();
        let w = params.uniform(&format!("{name}.w"), &[d_out, d_in], bound, rng, dev)?;
        let b = params.uniform(&format!("{name}.b"), &[d_out], bound, rng, dev)?;
        Ok(Linear { w, b })
    }

    /// `x Wᵀ + b` ([`crate::dense`]: no gradient is computed for an `x` that is plain data).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        crate::dense::dense(x, &self.w, &self.b, false)
    }

    /// `relu(x Wᵀ + b)`.
    pub fn forward_relu(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        crate::dense::dense(x, &self.w, &self.b, true)
    }
}

#[derive(Clone)]
enum Layer {
    Dense(Linear),
    /// A convolution with its input side (height, width).
    Conv { conv: Conv, w: Tensor, b: Tensor },
}

/// An encoder with its parameters (held in the `Params` given to [`Encoder::new`]).
#[derive(Clone)]
pub struct Encoder {
    pub kind: EncoderKind,
    height: usize,
    width: usize,
    layers: Vec<Layer>,
}

impl Encoder {
    /// Build an encoder of `height × width` images, its parameters named `encoder.*`.
    pub fn new(kind: EncoderKind, height: usize, width: usize, params: &mut Params, rng: &mut Rng, dev: &Device) -> Result<Encoder> {
        let d = height * width;
        let mut layers = Vec::new();
        match kind {
            EncoderKind::Mlp => {
                layers.push(Layer::Dense(Linear::new("encoder.fc1", d, MLP_HIDDEN, params, rng, dev)?));
                layers.push(Layer::Dense(Linear::new("encoder.fc2", MLP_HIDDEN, FEATURES, params, rng, dev)?));
            }
            EncoderKind::Cnn => {
                let (mut h, mut w, mut c) = (height, width, 1);
                for (i, &co) in CNN_CHANNELS.iter().enumerate() {
                    let conv = Conv { c_in: c, c_out: co, k: 3, stride: 2, pad: 1 };
                    let bound = 1.0 / ((9 * c) as f64).sqrt();
                    let wt = params.uniform(&format!("encoder.conv{}.w", i + 1), &[co, 9 * c], bound, rng, dev)?;
                    let b = params.uniform(&format!("encoder.conv{}.b", i + 1), &[co], bound, rng, dev)?;
                    layers.push(Layer::Conv { conv, w: wt, b });
                    (h, w, c) = (conv.out_side(h), conv.out_side(w), co);
                }
                layers.push(Layer::Dense(Linear::new("encoder.fc", h * w * c, FEATURES, params, rng, dev)?));
            }
        }
        Ok(Encoder { kind, height, width, layers })
    }

    /// The layers as the CPU fast path ([`crate::host`]) runs them, ReLU after each.
    pub fn host_layers(&self) -> Vec<crate::host::HostLayer<'_>> {
        let (mut h, mut w) = (self.height, self.width);
        self.layers
            .iter()
            .map(|l| match l {
                Layer::Dense(d) => crate::host::HostLayer { w: &d.w, b: &d.b, relu: true, conv: None },
                Layer::Conv { conv, w: wt, b } => {
                    let side = (h, w);
                    (h, w) = (conv.out_side(h), conv.out_side(w));
                    crate::host::HostLayer { w: wt, b, relu: true, conv: Some((*conv, side.0, side.1)) }
                }
            })
            .collect()
    }

    pub fn feature_dim(&self) -> usize {
        FEATURES
    }

    pub fn input_dim(&self) -> usize {
        self.height * self.width
    }

    /// Features `[B, F]` of images `x` `[B, H·W]`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let bs = x.dim(0)?;
        let mut h = match self.kind {
            EncoderKind::Mlp => x.clone(),
            EncoderKind::Cnn => x.reshape((bs, self.height, self.width, 1))?,
        };
        for layer in &self.layers {
            h = match layer {
                Layer::Dense(l) => {
                    let flat = if h.rank() > 2 { h.flatten_from(1)? } else { h };
                    l.forward_relu(&flat)?
                }
                Layer::Conv { conv, w, b } => conv.forward_relu(&h, w, b)?,
            };
        }
        Ok(h)
    }

    /// Features of every row of `x` `[N, D]`, in batches, as host values `N × F`.
    pub fn features(&self, x: &Tensor, batch: usize) -> Result<Vec<f32>> {
        let n = x.dim(0)?;
        let mut out = Vec::with_capacity(n * FEATURES);
        let mut i = 0;
        while i < n {
            let b = batch.min(n - i);
            out.extend(self.forward(&x.narrow(0, i, b)?)?.flatten_all()?.to_vec1::<f32>()?);
            i += b;
        }
        Ok(out)
    }
}
