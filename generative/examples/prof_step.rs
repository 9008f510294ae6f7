//! Full training steps (loss_and_grads + Adam) of FVSBN, MADE or NADE at mnist5k sizes (D = 784,
//! MADE and NADE H = 500, batch 100), on random binary batches (P(1) = 0.2; mnist5k has 17.4%
//! ones) like `scripts/torch_density.py --bench-steps`: `prof_step fvsbn|made|nade [steps]
//! [repeats]` times `repeats` blocks of `steps`
//! steps after 3 warm-up steps and prints each block, then one JSON line with the median.
//! Like the `wick` binary it keeps freed memory (`wick_core::cpu::keep_freed_memory`) unless
//! `WICK_DEFAULT_MALLOC` is set.
use candle_core::{Device, Tensor};
use std::time::Instant;
use wick_core::optim::{OptimConfig, Optimizer};
use wick_core::rng::Rng;
use wick_generative::made::{Made, Order};
use wick_generative::{DensityModel, Fvsbn, Nade};
fn main() {
    if std::env::var_os("WICK_DEFAULT_MALLOC").is_none() {
        wick_core::cpu::keep_freed_memory();
    }
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map(String::as_str).unwrap_or("made");
    let steps: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200);
    let repeats: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
    let (dev, d) = (Device::Cpu, 784);
    let m: Box<dyn DensityModel> = match which {
        "fvsbn" => Box::new(Fvsbn::new(d, &mut Rng::stream(0, "init"), &dev).unwrap()),
        "nade" => Box::new(Nade::new(d, 500, &mut Rng::stream(0, "init"), &dev).unwrap()),
        _ => Box::new(Made::new(d, 500, 1, 1, Order::Natural, false, 0, &dev).unwrap()),
    };
    let mut r = Rng::stream(0, "x");
    let pool: Vec<Tensor> = (0..8)
        .map(|_| Tensor::from_vec((0..100 * d).map(|_| (r.uniform() < 0.2) as u8 as f32).collect::<Vec<f32>>(), (100, d), &dev).unwrap())
        .collect();
    let mut opt = Optimizer::new(OptimConfig::default(), m.params()).unwrap();
    for s in 0..3 {
        let (_, g) = m.loss_and_grads(&pool[s % 8], s as u64).unwrap();
        opt.step(m.params(), &g, 1e-3).unwrap();
    }
    let mut rates = Vec::new();
    for rep in 0..repeats {
        let t = Instant::now();
        for s in 0..steps {
            let (_, g) = m.loss_and_grads(&pool[(s % 8) as usize], s).unwrap();
            opt.step(m.params(), &g, 1e-3).unwrap();
        }
        let ms = t.elapsed().as_secs_f64() * 1000.0 / steps as f64;
        rates.push(100.0 / ms * 1000.0);
        eprintln!("{which} rep {rep}: {ms:.3} ms/step");
    }
    let mut sorted = rates.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let best = sorted[sorted.len() - 1];
    println!("{{\"model\": \"{which}\", \"train_samples_per_s\": {median:.1}, \"samples_per_s_max\": {best:.1}, \"samples_per_s_each\": {rates:?}}}");
}
