//! Where MC ES's time goes on 1 and 2 threads (Blackjack, 5M episodes, batches of 10k):
//! `cargo run --release -p wick-agents --example scale_probe [-- reps [batch]]`. Prints the
//! median and best wall seconds of each, alternating 1 and 2 threads so both see the same load.
use std::time::Instant;
use wick_agents::parallel::{run, Collector};
use wick_agents::{EsAgent, EsConfig};
use wick_envs::blackjack::{Blackjack, BlackjackConfig, BlackjackObs};

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let reps = args.first().copied().unwrap_or(9) as usize;
    let batch = args.get(1).copied().unwrap_or(10_000);
    let starts = BlackjackObs::decision_states();
    let mut times = [Vec::new(), Vec::new()];
    let mut parts = [Vec::new(), Vec::new()];
    for _ in 0..reps {
        for threads in [1usize, 2] {
            let cfg = EsConfig { episodes: 5_000_000, starts: starts.clone(), batch, seed: 0, ..Default::default() };
            let envs: Vec<_> = (0..threads).map(|_| Blackjack::new(BlackjackConfig::default())).collect();
            let mut agent = EsAgent::new(&envs[0], &cfg).unwrap();
            let mut col = Collector::new(envs, 0, "mc-es").unwrap();
            let t = Instant::now();
            run(&mut agent, &mut col, cfg.episodes, cfg.batch).unwrap();
            times[threads - 1].push(t.elapsed().as_secs_f64());
            parts[threads - 1].push(col.timings());
        }
    }
    let med = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0])
    };
    let mut ratios: Vec<f64> = times[0].iter().zip(&times[1]).map(|(a, b)| a / b).collect();
    ratios.sort_by(f64::total_cmp);
    for t in 0..2 {
        let (m, b) = med(&times[t]);
        let (g, _) = med(&parts[t].iter().map(|p| p.0).collect::<Vec<_>>());
        let (l, _) = med(&parts[t].iter().map(|p| p.1).collect::<Vec<_>>());
        println!("batch {batch} threads {}: median {m:.3} s, best {b:.3} s (median gen {g:.3}, learn {l:.3})", t + 1);
    }
    println!("per-pair ratio 1t/2t: median {:.2}x (min {:.2}, max {:.2})", ratios[ratios.len() / 2], ratios[0], ratios[ratios.len() - 1]);
}
