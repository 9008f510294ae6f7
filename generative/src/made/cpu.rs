//! MADE's CPU path: a member's forward pass, fused loss and backward pass on units sorted by
//! degree, where every mask is a staircase ([`crate::staircase`]) and the products skip its
//! zero blocks. The same values as the Candle path of [`super::Made`] (tested there).

use super::Made;
use crate::staircase::{bce_rows_host, with_host, Staircase};
use candle_core::{DType, Tensor};
use wick_core::Result;

/// Per layer: packed weights, their gradient, the layer's output (then its gradient); the
/// sorted input and an input-gradient buffer; the direct connections' packed weights, gradient
/// and output.
#[derive(Default)]
pub(super) struct Scratch {
    ws: Vec<Vec<f32>>,
    dws: Vec<Vec<f32>>,
    acts: Vec<Vec<f32>>,
    xs: Vec<f32>,
    dx: Vec<f32>,
    wd: Vec<f32>,
    dwd: Vec<f32>,
    yd: Vec<f32>,
}

/// The CPU path's result for one member: −log p_k(x) per row, and the gradients of the mean
/// over the rows, `(∂W_l, ∂b_l)` per layer in the parameters' layout, then `(∂A, [])` of the
/// direct connections if the model has them.
pub(super) type HostNll = (Vec<f32>, Option<Vec<(Vec<f32>, Vec<f32>)>>);

/// Where [`Made::host_member`] writes the gradients instead of returning them: `(∂W_l, ∂b_l)`
/// per layer and `∂A` of the direct connections, each in the parameter's layout (every entry is
/// written).
pub(super) struct GradsInto<'a> {
    pub layers: Vec<(&'a mut [f32], &'a mut [f32])>,
    pub direct: Option<&'a mut [f32]>,
    /// Leave the weights' gradients in sorted order (where [`crate::staircase::Staircase::scatter`]
    /// puts them) instead of unpacking them; the biases' are in parameter order either way.
    pub laid: bool,
}

/// `[f32]` as `[MaybeUninit<f32>]`, for the unpacking that writes every entry.
fn uninit(s: &mut [f32]) -> &mut [std::mem::MaybeUninit<f32>] {
    // SAFETY: same layout; only f32s are written through it.
    unsafe { &mut *(s as *mut [f32] as *mut [std::mem::MaybeUninit<f32>]) }
}

impl Made {
    pub(super) fn host_path(&self, x: &Tensor) -> bool {
        x.device().is_cpu() && x.dtype() == DType::F32 && self.layers[0].0.dtype() == DType::F32
    }

    /// The CPU path for member k: the forward pass on sorted units, the fused loss, and with
    /// `grad` the backward pass, the same equations as [`DensityModel::loss_and_grads`].
    /// The output layer's units are sorted by m⁰ like the inputs, so the targets are the
    /// sorted inputs.
    pub(super) fn host_member(&self, x: &Tensor, k: usize, grad: bool) -> Result<HostNll> {
        self.host_member_into(x, k, grad, None)
    }

    /// [`Made::host_member`], with `into` the gradients written there (and `None` returned for
    /// them) instead of into new vectors.
    pub(super) fn host_member_into(&self, x: &Tensor, k: usize, grad: bool, mut into: Option<GradsInto>) -> Result<HostNll> {
        let (rows, d) = x.dims2()?;
        let st = &self.stairs[k];
        let last = st.len() - 1;
        let xv = x.flatten_all()?.to_vec1::<f32>()?;
        let mut guard = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let Scratch { ws, dws, acts, xs, dx, wd, dwd, yd } = &mut *guard;
        ws.resize_with(st.len(), Vec::new);
        dws.resize_with(st.len(), Vec::new);
        acts.resize_with(st.len(), Vec::new);
        xs.resize(rows * d, 0.0);
        Staircase::gather_cols(&xv, &st[0].in_perm, xs);
        let mut biases = Vec::with_capacity(st.len());
        for (l, (s, (w, b))) in st.iter().zip(&self.layers).enumerate() {
            ws[l].resize(s.n_in * s.n_out, 0.0);
            with_host(w, "made weight", |w| s.pack(w, false, &mut ws[l]))?;
            let b = b.to_vec1::<f32>()?;
            let bs: Vec<f32> = s.out_perm.iter().map(|&o| b[o]).collect();
            let (done, rest) = acts.split_at_mut(l);
            let y = &mut rest[0];
            y.resize(rows * s.n_out, 0.0);
            let input = if l == 0 { &xs[..] } else { &done[l - 1][..] };
            s.forward(input, &ws[l], false, &bs, y, rows);
            if l < last {
                y.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            biases.push(bs);
        }
        // Direct connections: z += x̃ Ã on the same sorted order (outputs sorted like the inputs).
        let direct = self.direct.as_ref().map(|(a, stairs)| (a, &stairs[k]));
        if let Some((a, sd)) = direct {
            wd.resize(d * d, 0.0);
            with_host(a, "made direct weight", |w| sd.pack(w, false, wd))?;
            yd.resize(rows * d, 0.0);
            sd.forward(xs, wd, false, &vec![0f32; d], yd, rows);
            for (z, &v) in acts[last].iter_mut().zip(yd.iter()) {
                *z += v;
            }
        }
        let nll = bce_rows_host(&mut acts[last], xs, d, grad.then_some(1.0 / rows as f32));
        if !grad {
            return Ok((nll, None));
        }
        let mut grads = vec![(Vec::new(), Vec::new()); st.len()];
        if let Some((_, sd)) = direct {
            let mut unused = vec![0f32; d];
            let laid = into.as_ref().is_some_and(|o| o.laid);
            match into.as_mut().and_then(|o| o.direct.as_deref_mut()) {
                // Left in sorted order: written where the combine reads it.
                Some(out) if laid => sd.grad_weight(xs, &acts[last], false, out, &mut unused, rows),
                out => {
                    dwd.resize(d * d, 0.0);
                    sd.grad_weight(xs, &acts[last], false, dwd, &mut unused, rows);
                    match out {
                        Some(out) => sd.unpack_into(dwd, false, uninit(out)),
                        None => grads.push((sd.unpack(dwd, false), Vec::new())),
                    }
                }
            }
        }
        for l in (0..=last).rev() {
            let s = &st[l];
            let (below, rest) = acts.split_at_mut(l);
            let da = &rest[0];
            let input = if l == 0 { &xs[..] } else { &below[l - 1][..] };
            let mut dbs = vec![0f32; s.n_out];
            let laid = into.as_ref().is_some_and(|o| o.laid);
            match into.as_mut().map(|o| &mut o.layers[l]) {
                // Left in sorted order: written where the combine reads it.
                Some((dw, _)) if laid => s.grad_weight(input, da, false, dw, &mut dbs, rows),
                _ => {
                    dws[l].resize(s.n_in * s.n_out, 0.0);
                    s.grad_weight(input, da, false, &mut dws[l], &mut dbs, rows);
                }
            }
            // The biases in parameter order either way (out_perm is a permutation: every
            // entry is written).
            let unsort_bias = |db: &mut [f32]| {
                for (&o, &g) in s.out_perm.iter().zip(&dbs) {
                    db[o] = g;
                }
            };
            match into.as_mut().map(|o| &mut o.layers[l]) {
                Some((dw, db)) => {
                    if !laid {
                        s.unpack_into(&dws[l], false, uninit(dw));
                    }
                    unsort_bias(db);
                }
                None => {
                    let mut db = vec![0f32; s.n_out];
                    unsort_bias(&mut db);
                    grads[l] = (s.unpack(&dws[l], false), db);
                }
            }
            if l > 0 {
                dx.resize(rows * s.n_in, 0.0);
                s.grad_input(da, &ws[l], false, dx, rows);
                // ∂a_{l−1} = ∂h ⊙ 1[h > 0], in place of h.
                for (h, &g) in below[l - 1].iter_mut().zip(dx.iter()) {
                    *h = if *h > 0.0 { g } else { 0.0 };
                }
            }
        }
        Ok((nll, into.is_none().then_some(grads)))
    }

}
