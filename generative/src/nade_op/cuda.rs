//! The fused NADE op on CUDA: launches of the kernels in `nade_op.cu`, which `build.rs` compiles
//! to PTX with nvcc when the `cuda` feature is on. The design is in the parent module's doc.

use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, CudaViewMut, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{bail, CudaDevice, CudaStorage, Layout, Result, Shape};

use super::MAX_CUDA_HIDDEN as MAX_HIDDEN;

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/nade_op.ptx"));
/// The name the PTX module is cached under in the device (Candle loads it once per device).
const MODULE: &str = "wick_nade_op";

/// Samples per register tile in the backward (`NADE_BWD_TB` in the .cu file).
const BWD_TILE: usize = 8;
/// Threads (hidden units) per block in the backward (its `__launch_bounds__`).
const BWD_THREADS: usize = 64;
/// Cap on the backward's per-chunk partial gradients, in f32s (256 MB).
const BWD_SCRATCH: usize = 1 << 26;

fn input<'a>(s: &'a CudaStorage, l: &Layout, name: &str) -> Result<CudaView<'a, f32>> {
    let slice = s.as_cuda_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(slice.slice(a..b)),
        None => bail!("nade op: {name} must be contiguous"),
    }
}

fn check_sizes(bsz: usize, d: usize, h: usize) -> Result<()> {
    if bsz == 0 || d == 0 || h == 0 {
        bail!("nade op on CUDA: empty shapes are not supported (B = {bsz}, D = {d}, H = {h})");
    }
    if h > MAX_HIDDEN {
        bail!("nade op on CUDA: at most {MAX_HIDDEN} hidden units, got {h}");
    }
    if bsz.max((d + 1) * (h + 1)) > i32::MAX as usize || d + 1 > 65535 * 32 {
        bail!("nade op on CUDA: sizes too large (B = {bsz}, D = {d}, H = {h})");
    }
    Ok(())
}

/// The forward's block: `(threads, units per thread)`, with `units per thread` one of the
/// instantiated 1, 2, 4, 8, 16. A function of H alone, so results never depend on the device.
pub(super) fn fwd_shape(h: usize) -> (usize, usize) {
    let t = h.div_ceil(32).clamp(1, 8) * 32;
    let kpt = h.div_ceil(t).next_power_of_two();
    if kpt <= 16 {
        (t, kpt)
    } else {
        (512, h.div_ceil(512).next_power_of_two())
    }
}

/// The backward's split of the batch: `(samples per chunk, chunks)`, samples per chunk a
/// multiple of the tile, no chunk empty, partials within [`BWD_SCRATCH`]. A function of the
/// shapes alone, so the summation order (and the result) never depends on the device.
pub(super) fn bwd_chunks(bsz: usize, d: usize, h: usize) -> (usize, usize) {
    let max_chunks = (BWD_SCRATCH / ((2 * d + 1) * h)).clamp(1, 65535);
    let tiles = bsz.div_ceil(BWD_TILE);
    let per_chunk = tiles.div_ceil(max_chunks.min(tiles)) * BWD_TILE;
    (per_chunk, bsz.div_ceil(per_chunk))
}

/// `out[c, r] = input[r, c]` for `input` `[rows, cols]`.
fn transpose(
    dev: &CudaDevice,
    input: &CudaView<f32>,
    out: &mut CudaViewMut<f32>,
    rows: usize,
    cols: usize,
) -> Result<()> {
    let f = dev.get_or_load_custom_func("nade_transpose", MODULE, PTX)?;
    let cfg = LaunchConfig {
        grid_dim: (cols.div_ceil(32) as u32, rows.div_ceil(32) as u32, 1),
        block_dim: (32, 8, 1),
        shared_mem_bytes: 0,
    };
    let (r, c) = (rows as i32, cols as i32);
    let mut b = f.builder();
    b.arg(input).arg(out).arg(&r).arg(&c);
    unsafe { b.launch(cfg) }.w()?;
    Ok(())
}

/// `wt = w_tildeᵀ` `[D+1, H]`: row 0 is c, row j+1 is W[:, j], contiguous over the hidden units.
fn transposed_w(dev: &CudaDevice, w: &CudaView<f32>, h: usize, d: usize) -> Result<CudaSlice<f32>> {
    let mut wt = unsafe { dev.alloc::<f32>(h * (d + 1))? };
    transpose(dev, w, &mut wt.slice_mut(..), h, d + 1)?;
    Ok(wt)
}

/// [`super::NadeLogits`]'s CUDA forward: z `[B, D]` from x, w_tilde, v_tilde.
pub(super) fn logits(
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
    s3: &CudaStorage,
    l3: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let dev = s1.device.clone();
    let (bsz, d) = l1.shape().dims2()?;
    let h = l2.shape().dims()[0];
    check_sizes(bsz, d, h)?;
    let (x, w, v) = (input(s1, l1, "x")?, input(s2, l2, "w_tilde")?, input(s3, l3, "v_tilde")?);
    let wt = transposed_w(&dev, &w, h, d)?;
    let (threads, kpt) = fwd_shape(h);
    let f = dev.get_or_load_custom_func(&format!("nade_fwd_k{kpt}"), MODULE, PTX)?;
    let mut z = unsafe { dev.alloc::<f32>(bsz * d)? };
    let cfg = LaunchConfig { grid_dim: (bsz as u32, 1, 1), block_dim: (threads as u32, 1, 1), shared_mem_bytes: 0 };
    let (di, hi) = (d as i32, h as i32);
    {
        let mut b = f.builder();
        b.arg(&x).arg(&wt).arg(&v).arg(&mut z).arg(&di).arg(&hi);
        unsafe { b.launch(cfg) }.w()?;
    }
    Ok((CudaStorage::wrap_cuda_slice(z, dev), Shape::from((bsz, d))))
}

/// [`super::NadeGrads`]'s CUDA forward: from `stack([x, dz])` `[2, B, D]`, w_tilde and v_tilde,
/// dw_tilde `[H, D+1]` then dv_tilde `[D, H+1]` packed in one vector.
pub(super) fn grads(
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
    s3: &CudaStorage,
    l3: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let dev = s1.device.clone();
    let (_, bsz, d) = l1.shape().dims3()?;
    let h = l2.shape().dims()[0];
    check_sizes(bsz, d, h)?;
    let xdz = input(s1, l1, "x|dz")?;
    let (x, dz) = (xdz.slice(0..bsz * d), xdz.slice(bsz * d..2 * bsz * d));
    let (w, v) = (input(s2, l2, "w_tilde")?, input(s3, l3, "v_tilde")?);
    let wt = transposed_w(&dev, &w, h, d)?;
    let (bi, di, hi) = (bsz as i32, d as i32, h as i32);

    // Pass 1: each chunk of samples into its own partials.
    let (per_chunk, nchunks) = bwd_chunks(bsz, d, h);
    let mut pw = unsafe { dev.alloc::<f32>(nchunks * (d + 1) * h)? };
    let mut pv = unsafe { dev.alloc::<f32>(nchunks * d * h)? };
    {
        let f = dev.get_or_load_custom_func("nade_bwd_partial", MODULE, PTX)?;
        let cfg = LaunchConfig {
            grid_dim: (h.div_ceil(BWD_THREADS) as u32, nchunks as u32, 1),
            block_dim: (BWD_THREADS as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let pc = per_chunk as i32;
        let mut b = f.builder();
        b.arg(&x).arg(&dz).arg(&wt).arg(&v).arg(&mut pw).arg(&mut pv).arg(&bi).arg(&di).arg(&hi).arg(&pc);
        unsafe { b.launch(cfg) }.w()?;
    }

    // Pass 2: partials summed in chunk order, db in sample order.
    let nw = h * (d + 1);
    let n = nw + d * (h + 1);
    let mut out = unsafe { dev.alloc::<f32>(n)? };
    let mut accw = unsafe { dev.alloc::<f32>(nw)? };
    {
        let f = dev.get_or_load_custom_func("nade_bwd_reduce", MODULE, PTX)?;
        let total = (2 * d + 1) * h + d;
        let cfg = LaunchConfig {
            grid_dim: (total.div_ceil(256).min(1 << 16) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let nc = nchunks as i32;
        let mut dv = out.slice_mut(nw..);
        let mut b = f.builder();
        b.arg(&pw).arg(&pv).arg(&dz).arg(&mut accw).arg(&mut dv).arg(&bi).arg(&di).arg(&hi).arg(&nc);
        unsafe { b.launch(cfg) }.w()?;
    }
    transpose(&dev, &accw.slice(..), &mut out.slice_mut(..nw), d + 1, h)?;
    Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from(n)))
}

#[cfg(test)]
mod tests {
    //! These run only where a CUDA device is present; elsewhere each test prints a note and
    //! passes. They compare the CUDA kernels with the CPU kernel, which the parent module tests
    //! against the equations, autograd of composed ops and finite differences.
    use super::super::{nade_grads, nade_logits, nade_logits_composed};
    use super::*;
    use crate::model::bce_with_logits;
    use candle_core::{Device, Tensor, Var};
    use wick_core::rng::Rng;

    fn cuda() -> Option<Device> {
        match Device::new_cuda(0) {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("note: no CUDA device, CUDA test skipped ({e})");
                None
            }
        }
    }

    /// x (0/1, density 0.35), w_tilde, v_tilde and a dz, on the host.
    fn problem(bsz: usize, d: usize, h: usize, seed: u64) -> [(Vec<f32>, (usize, usize)); 4] {
        let mut rng = Rng::stream(seed, "nade-op-cuda");
        let mut u = |n: usize, s: f64| (0..n).map(|_| ((2.0 * rng.uniform() - 1.0) * s) as f32).collect::<Vec<_>>();
        let w = u(h * (d + 1), 1.5);
        let v = u(d * (h + 1), 1.0 / (h as f64).sqrt().max(1.0) * 3.0);
        let dz = u(bsz * d, 0.5);
        let mut rng = Rng::stream(seed, "x");
        let x = (0..bsz * d).map(|_| (rng.uniform() < 0.35) as u8 as f32).collect();
        [(x, (bsz, d)), (w, (h, d + 1)), (v, (d, h + 1)), (dz, (bsz, d))]
    }

    fn on(p: &[(Vec<f32>, (usize, usize)); 4], dev: &Device) -> Vec<Tensor> {
        p.iter().map(|(v, s)| Tensor::from_vec(v.clone(), *s, dev).unwrap()).collect()
    }

    fn host(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// |a − b| ≤ tol·(1 + |b| + 0.01·max|b|), entry by entry.
    fn assert_close(what: &str, a: &[f32], b: &[f32], tol: f64) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
        let mut worst = 0f64;
        for (i, (&p, &q)) in a.iter().zip(b).enumerate() {
            let err = (p - q).abs() as f64 / (1.0 + q.abs() as f64 + 0.01 * scale);
            assert!(err <= tol, "{what}[{i}]: cuda {p} vs cpu {q}");
            worst = worst.max(err);
        }
        eprintln!("{what}: worst scaled error {worst:.1e} over {} entries", a.len());
    }

    // (B, D, H): H below, at and above a warp, not a multiple of 32, each forward instantiation
    // (units per thread 1, 2, 4, 8, 16), partial backward tiles, several chunks and several
    // tiles per chunk (B = 700 at D = 784, H = 500), and the MNIST shape.
    const SHAPES: [(usize, usize, usize); 11] = [
        (1, 1, 1),
        (3, 7, 5),
        (9, 20, 32),
        (21, 30, 70),
        (37, 13, 130),
        (5, 40, 300),
        (6, 25, 1000),
        (4, 12, 1500),
        (3, 9, 5000),
        (100, 784, 500),
        (700, 784, 500),
    ];

    #[test]
    fn shapes_cover_every_kernel_instantiation() {
        let kpts: std::collections::BTreeSet<usize> = SHAPES.iter().map(|s| fwd_shape(s.2).1).collect();
        assert_eq!(kpts.into_iter().collect::<Vec<_>>(), vec![1, 2, 4, 8, 16]);
        assert_eq!(fwd_shape(MAX_HIDDEN), (512, 16));
        for h in 1..=MAX_HIDDEN {
            let (t, k) = fwd_shape(h);
            assert!(t * k >= h && t % 32 == 0 && t <= 512 && k <= 16, "H = {h}: {t} x {k}");
        }
        assert_eq!(bwd_chunks(100, 784, 500), (8, 13));
        let (per, n) = bwd_chunks(700, 784, 500);
        assert!(per > BWD_TILE && per % BWD_TILE == 0 && n * per >= 700 && (n - 1) * per < 700, "{per} {n}");
    }

    #[test]
    fn cuda_logits_and_gradients_match_the_cpu_kernel() {
        let Some(gpu) = cuda() else { return };
        for &(bsz, d, h) in &SHAPES {
            let p = problem(bsz, d, h, (bsz + 7 * d + 13 * h) as u64);
            let (c, g) = (on(&p, &Device::Cpu), on(&p, &gpu));
            let what = format!("{bsz}x{d}x{h}");
            let zc = host(&nade_logits(&c[0], &c[1], &c[2]).unwrap());
            let zg = host(&nade_logits(&g[0], &g[1], &g[2]).unwrap());
            assert_close(&format!("{what} z"), &zg, &zc, 1e-4);
            let (dwc, dvc) = nade_grads(&c[0], &c[1], &c[2], &c[3]).unwrap();
            let (dwg, dvg) = nade_grads(&g[0], &g[1], &g[2], &g[3]).unwrap();
            assert_close(&format!("{what} dw_tilde"), &host(&dwg), &host(&dwc), 1e-4);
            assert_close(&format!("{what} dv_tilde"), &host(&dvg), &host(&dvc), 1e-4);
        }
    }

    #[test]
    fn cuda_autograd_through_the_op_matches_composed_ops() {
        let Some(gpu) = cuda() else { return };
        let p = problem(13, 30, 45, 5);
        let t = on(&p, &gpu);
        let (w, v) = (Var::from_tensor(&t[1]).unwrap(), Var::from_tensor(&t[2]).unwrap());
        let grads = |z: Tensor| {
            let g = bce_with_logits(&z, &t[0]).unwrap().sum_all().unwrap().backward().unwrap();
            (host(g.get(w.as_tensor()).unwrap()), host(g.get(v.as_tensor()).unwrap()))
        };
        let fused = grads(nade_logits(&t[0], w.as_tensor(), v.as_tensor()).unwrap());
        let composed = grads(nade_logits_composed(&t[0], w.as_tensor(), v.as_tensor()).unwrap());
        assert_close("autograd dw_tilde", &fused.0, &composed.0, 1e-4);
        assert_close("autograd dv_tilde", &fused.1, &composed.1, 1e-4);
    }

    #[test]
    fn cuda_results_are_bit_identical_run_to_run() {
        let Some(gpu) = cuda() else { return };
        for &(bsz, d, h) in &[(37, 13, 130), (100, 784, 500)] {
            let g = on(&problem(bsz, d, h, 3), &gpu);
            let run = || {
                let z = host(&nade_logits(&g[0], &g[1], &g[2]).unwrap());
                let (dw, dv) = nade_grads(&g[0], &g[1], &g[2], &g[3]).unwrap();
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                (bits(&z), bits(&host(&dw)), bits(&host(&dv)))
            };
            assert!(run() == run(), "{bsz}x{d}x{h}: two CUDA runs differ");
        }
    }

    #[test]
    fn cuda_inputs_with_offsets_and_strides_are_honoured() {
        let Some(gpu) = cuda() else { return };
        let p = problem(10, 16, 40, 9);
        let g = on(&p, &gpu);
        // x as a narrow of a wider tensor (a start offset) and w_tilde through a double transpose.
        let wide = Tensor::cat(&[&g[0], &g[0]], 0).unwrap();
        let x = wide.narrow(0, 10, 10).unwrap();
        let w = g[1].t().unwrap().contiguous().unwrap().t().unwrap();
        let want = host(&nade_logits(&g[0], &g[1], &g[2]).unwrap());
        assert_eq!(host(&nade_logits(&x, &w, &g[2]).unwrap()), want);
    }
}
