//! `relu(h + b)` for `h` `[N, K]` and a bias `b` `[K]` as one CPU op with a closed-form backward:
//! `∂h = g ⊙ [y > 0]`, `∂b = Σ_rows ∂h` (rows summed in order, so the bits do not depend on the
//! thread count). Candle's composed `broadcast_add` + `relu` cost several passes and a strided
//! reduction each way; elsewhere than the CPU the composed ops run.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use wick_core::cpu::f32_slice;

/// `relu(h + b)` (or `h + b` with `relu = false`), `h` `[N, K]`, `b` `[K]`.
pub fn bias_act(h: &Tensor, b: &Tensor, relu: bool) -> candle_core::Result<Tensor> {
    let f32s = h.dtype() == candle_core::DType::F32 && b.dtype() == candle_core::DType::F32;
    if h.device().is_cpu() && f32s && h.rank() == 2 && b.dims() == [h.dim(1)?] {
        h.contiguous()?.apply_op2(&b.contiguous()?, BiasAct { relu })
    } else {
        let y = h.broadcast_add(b)?;
        if relu {
            y.relu()
        } else {
            Ok(y)
        }
    }
}

struct BiasAct {
    relu: bool,
}

impl CustomOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "wick-bias-act"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (h, b) = (f32_slice(s1, l1, "pre-activation")?, f32_slice(s2, l2, "bias")?);
        let k = b.len();
        let mut out = Vec::with_capacity(h.len());
        for row in h.chunks_exact(k) {
            if self.relu {
                out.extend(row.iter().zip(b).map(|(&v, &c)| (v + c).max(0.0)));
            } else {
                out.extend(row.iter().zip(b).map(|(&v, &c)| v + c));
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(&self, _h: &Tensor, _b: &Tensor, y: &Tensor, g: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let dh = if self.relu { g.contiguous()?.apply_op2_no_bwd(y, &ReluGrad)? } else { g.contiguous()? };
        let db = dh.apply_op1_no_bwd(&RowSum)?;
        Ok((Some(dh), Some(db)))
    }
}

/// `g ⊙ [y > 0]`.
pub(crate) struct ReluGrad;

impl CustomOp2 for ReluGrad {
    fn name(&self) -> &'static str {
        "wick-relu-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (g, y) = (f32_slice(s1, l1, "gradient")?, f32_slice(s2, l2, "activation")?);
        Ok((CpuStorage::F32(g.iter().zip(y).map(|(&g, &y)| if y > 0.0 { g } else { 0.0 }).collect()), l1.shape().clone()))
    }
}

/// Column sums of `[N, K]`: `[K]`.
struct RowSum;

impl CustomOp1 for RowSum {
    fn name(&self) -> &'static str {
        "wick-row-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "gradient")?;
        let (_, k) = l.shape().dims2()?;
        let mut out = vec![0f32; k];
        for row in x.chunks_exact(k) {
            for (o, &v) in out.iter_mut().zip(row) {
                *o += v;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(k)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use wick_core::rng::Rng;

    #[test]
    fn fused_bias_act_matches_the_composed_ops() {
        let dev = Device::Cpu;
        let mut r = Rng::stream(7, "f");
        let mut t = |s: &[usize]| Var::from_tensor(&Tensor::from_vec((0..s.iter().product()).map(|_| r.normal() as f32).collect::<Vec<_>>(), s, &dev).unwrap()).unwrap();
        let (h, b, w) = (t(&[5, 7]), t(&[7]), t(&[5, 7]));
        for relu in [true, false] {
            let fused = bias_act(h.as_tensor(), b.as_tensor(), relu).unwrap();
            let mut composed = h.broadcast_add(b.as_tensor()).unwrap();
            if relu {
                composed = composed.relu().unwrap();
            }
            assert_eq!(fused.to_vec2::<f32>().unwrap(), composed.to_vec2::<f32>().unwrap());
            let ga = (fused * w.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
            let gb = (composed * w.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&h, &b] {
                let (p, q) = (ga.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), gb.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap());
                for (p, q) in p.iter().zip(&q) {
                    assert!((p - q).abs() < 1e-5, "{p} vs {q}");
                }
            }
        }
    }
}
