//! Where a pretraining step's time goes: `cargo run --release -p wick-pretrain --example prof_pretrain -- masked mlp`
//! (`-- masked|simclr|vicreg cnn [graph]`: the step by hand on the CPU, which `wick train` runs, or
//! through Candle's backward; the host step's forward and backward are timed together, under "backward").
//! VICReg also times its loss alone (the fused op; `composed`: Candle's composed ops) on fixed embeddings.
use candle_core::{Device, Tensor};
use std::time::Instant;
use wick_core::optim::{OptimConfig, Optimizer};
use wick_core::params::Params;
use wick_core::rng::Rng;
use wick_pretrain::augment::Augment;
use wick_pretrain::masked::{Hide, MaskSpec, MaskedPrediction};
use wick_pretrain::simclr::SimClr;
use wick_pretrain::vicreg::VicReg;
use wick_pretrain::{Encoder, EncoderKind};

fn main() -> wick_core::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let algo = args.get(1).map(String::as_str).unwrap_or("masked");
    let kind: EncoderKind = args.get(2).map(String::as_str).unwrap_or("mlp").parse()?;
    // `graph` as a third argument: SimCLR or VICReg through Candle's backward instead of the host
    // step; `composed`: VICReg's loss in composed ops too.
    let host = args.get(3).map(String::as_str).is_none_or(|a| a == "host");
    let composed = args.get(3).map(String::as_str) == Some("composed");
    wick_core::cpu::keep_freed_memory(); // as the wick binary does
    let dev = Device::Cpu;
    let (b, side) = (256, 28);
    let d = side * side;
    let mut r = Rng::stream(0, "x");
    let x = Tensor::from_vec((0..b * d).map(|_| (r.uniform() < 0.2) as u8 as f32).collect::<Vec<_>>(), (b, d), &dev)?;
    let mut p = Params::new();
    let mut init = Rng::stream(0, "init");
    let enc = Encoder::new(kind, side, side, &mut p, &mut init, &dev)?;
    let mh = MaskedPrediction::new(256, d, &mut p, &mut init, &dev)?;
    let sh = SimClr::new(256, &mut p, &mut init, &dev)?;
    let vh = VicReg::new(256, &mut p, &mut init, &dev)?;
    let spec = MaskSpec { height: side, width: side, patch: 4, hide: Hide::Ratio(0.5) };
    let aug = Augment::for_images(side, side);
    let mut opt = Optimizer::new(OptimConfig::default(), &p)?;
    let n = 20;
    let (mut t_in, mut t_fwd, mut t_bwd, mut t_opt, mut t_enc, mut t_embed) = (0f64, 0f64, 0f64, 0f64, 0f64, 0f64);
    for step in 0..n + 2 {
        let t = Instant::now();
        let inputs = if algo == "masked" {
            let m = spec.draw(b, &mut Rng::stream_indexed(0, "mask", step));
            vec![Tensor::from_vec(m, (b, d), &dev)?]
        } else {
            let (a, c) = aug.view_pairs(&x.flatten_all()?.to_vec1::<f32>()?, 0, "augment", step * b as u64);
            vec![Tensor::from_vec(a, (b, d), &dev)?, Tensor::from_vec(c, (b, d), &dev)?]
        };
        let t1 = Instant::now();
        let (t2, g) = if algo == "masked" && host {
            // The hand-driven CPU step that `wick train masked` runs.
            let (xv, mv) = (x.flatten_all()?.to_vec1::<f32>()?, inputs[0].flatten_all()?.to_vec1::<f32>()?);
            let t2 = Instant::now();
            (t2, mh.loss_and_grads_host(&enc, &xv, &mv, b)?.1)
        } else if algo != "masked" && host {
            // The hand-driven CPU step: forward and backward together.
            let (a, c) = (inputs[0].flatten_all()?.to_vec1::<f32>()?, inputs[1].flatten_all()?.to_vec1::<f32>()?);
            let t2 = Instant::now();
            (t2, if algo == "vicreg" { vh.loss_and_grads_host(&enc, &a, &c, b)?.1 } else { sh.loss_and_grads_host(&enc, &a, &c, b, 0.5)?.1 })
        } else {
            let loss = match algo {
                "masked" => mh.loss(&enc, &x, &inputs[0])?,
                "vicreg" => {
                    // The embeddings' forward alone, then the loss on them.
                    let te = Instant::now();
                    let z = vh.embed(&enc, &Tensor::cat(&[&inputs[0], &inputs[1]], 0)?)?;
                    let _ = z.sum_all()?.to_scalar::<f32>()?;
                    t_embed += te.elapsed().as_secs_f64() * (step >= 2) as u8 as f64;
                    if composed { wick_pretrain::vicreg::vicreg(&z.narrow(0, 0, b)?, &z.narrow(0, b, b)?)?.loss } else { wick_pretrain::vicreg::vicreg_of_embeddings(&z)? }
                }
                _ => sh.loss(&enc, &inputs[0], &inputs[1], 0.5)?,
            };
            let _ = loss.to_scalar::<f32>()?;
            (Instant::now(), loss.backward()?)
        };
        let t3 = Instant::now();
        opt.step(&p, &g, 1e-3)?;
        let t4 = Instant::now();
        let _ = enc.forward(&x)?.sum_all()?.to_scalar::<f32>()?;
        let t5 = Instant::now();
        if step >= 2 {
            t_in += (t1 - t).as_secs_f64();
            t_fwd += (t2 - t1).as_secs_f64();
            t_bwd += (t3 - t2).as_secs_f64();
            t_opt += (t4 - t3).as_secs_f64();
            t_enc += (t5 - t4).as_secs_f64();
        }
    }
    let ms = |v: f64| v / n as f64 * 1e3;
    if algo == "vicreg" {
        // The loss alone on fixed embeddings [2 × 256, 512]: forward, and forward + backward.
        let z = candle_core::Var::from_tensor(&Tensor::randn(0f32, 1.0, (2 * b, 512), &dev)?)?;
        let (mut tf, mut tb) = (0f64, 0f64);
        for i in 0..n + 2 {
            let t = Instant::now();
            let l = if composed { wick_pretrain::vicreg::vicreg(&z.narrow(0, 0, b)?, &z.narrow(0, b, b)?)?.loss } else { wick_pretrain::vicreg::vicreg_of_embeddings(&z)? };
            let _ = l.to_scalar::<f32>()?;
            let t1 = Instant::now();
            let _ = l.backward()?;
            if i >= 2 {
                tf += (t1 - t).as_secs_f64();
                tb += t1.elapsed().as_secs_f64();
            }
        }
        let zh = z.flatten_all()?.to_vec1::<f32>()?;
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(wick_pretrain::vicreg::vicreg_host(&zh, b, 512, Some(1.0)));
        }
        println!("vicreg loss and gradient by hand (the host step's): {:.1} ms", ms(t.elapsed().as_secs_f64()));
        println!("vicreg loss alone ({}): forward {:.1} ms, backward {:.1} ms; embeddings' forward in the step {:.1} ms", if composed { "composed ops" } else { "fused op" }, ms(tf), ms(tb), ms(t_embed));
    }
    println!("{algo}/{kind} batch {b}: inputs {:.1} ms, forward {:.1} ms, backward {:.1} ms, optimizer {:.1} ms (encoder forward alone {:.1} ms); {:.0} images/s",
        ms(t_in), ms(t_fwd), ms(t_bwd), ms(t_opt), ms(t_enc), b as f64 * n as f64 / (t_in + t_fwd + t_bwd + t_opt));
    Ok(())
}
