//! Where a pretraining step's time goes: `cargo run --release -p wick-pretrain --example prof_pretrain -- masked mlp`
//! (`-- simclr cnn [graph]`: the SimCLR step by hand on the CPU, which `wick train` runs, or through Candle's
//! backward; the host step's forward and backward are timed together, under "backward").
use candle_core::{Device, Tensor};
use std::time::Instant;
use wick_core::optim::{OptimConfig, Optimizer};
use wick_core::params::Params;
use wick_core::rng::Rng;
use wick_pretrain::augment::Augment;
use wick_pretrain::masked::{Hide, MaskSpec, MaskedPrediction};
use wick_pretrain::simclr::SimClr;
use wick_pretrain::{Encoder, EncoderKind};

fn main() -> wick_core::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let algo = args.get(1).map(String::as_str).unwrap_or("masked");
    let kind: EncoderKind = args.get(2).map(String::as_str).unwrap_or("mlp").parse()?;
    // `graph` as a third argument: SimCLR through Candle's backward instead of the host step.
    let host = args.get(3).map(String::as_str) != Some("graph");
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
    let spec = MaskSpec { height: side, width: side, patch: 4, hide: Hide::Ratio(0.5) };
    let aug = Augment::for_images(side, side);
    let mut opt = Optimizer::new(OptimConfig::default(), &p)?;
    let n = 20;
    let (mut t_in, mut t_fwd, mut t_bwd, mut t_opt, mut t_enc) = (0f64, 0f64, 0f64, 0f64, 0f64);
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
        let (t2, g) = if algo == "simclr" && host {
            // The hand-driven CPU step: forward and backward together.
            let (a, c) = (inputs[0].flatten_all()?.to_vec1::<f32>()?, inputs[1].flatten_all()?.to_vec1::<f32>()?);
            (Instant::now(), sh.loss_and_grads_host(&enc, &a, &c, b, 0.5)?.1)
        } else {
            let loss = if algo == "masked" { mh.loss(&enc, &x, &inputs[0])? } else { sh.loss(&enc, &inputs[0], &inputs[1], 0.5)? };
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
    println!("{algo}/{kind} batch {b}: inputs {:.1} ms, forward {:.1} ms, backward {:.1} ms, optimizer {:.1} ms (encoder forward alone {:.1} ms); {:.0} images/s",
        ms(t_in), ms(t_fwd), ms(t_bwd), ms(t_opt), ms(t_enc), b as f64 * n as f64 / (t_in + t_fwd + t_bwd + t_opt));
    Ok(())
}
