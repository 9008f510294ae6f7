//! MC ES on Blackjack-v1 (S&B Fig. 5.2's algorithm): episodes per second on 1 and 2 threads
//! (batches of 10,000 episodes, the CLI's default), the textbook one-episode-at-a-time form on
//! one thread, and — with `WICK_PYTHON` set (a Python with `gymnasium`) — the Python reference
//! `scripts/mc_es_blackjack.py` (Gymnasium env + dictionary Q, same algorithm) measured in the
//! same run, with the ratios.
//!
//! `WICK_PYTHON=.venv/bin/python cargo bench -p wick-agents --bench mc_es` (the collector starts
//! its own threads: rayon's settings do not apply)

use std::process::Command;
use std::time::Instant;

use wick_agents::parallel::{run, Collector};
use wick_agents::{mc_exploring_starts_par, EsAgent, EsConfig};
use wick_envs::blackjack::{Blackjack, BlackjackConfig, BlackjackObs};

/// Best of `reps` timings of 5M episodes (Fig. 5.2's budget).
fn wick(threads: usize, batch: u64, reps: usize) -> f64 {
    let cfg = EsConfig { episodes: 5_000_000, starts: BlackjackObs::decision_states(), batch, seed: 0, ..Default::default() };
    let mut best = 0.0f64;
    for _ in 0..reps {
        let envs = (0..threads).map(|_| Blackjack::new(BlackjackConfig::default())).collect();
        let t = Instant::now();
        let r = mc_exploring_starts_par(envs, &cfg).unwrap();
        let dt = t.elapsed().as_secs_f64();
        std::hint::black_box(&r.q);
        best = best.max(cfg.episodes as f64 / dt);
    }
    best
}

/// Seconds generating and learning on `threads` threads. With more than one thread both run
/// on all of them (split learning, `wick_agents::parallel`); on one, learning is `learn` per episode.
fn split(threads: usize) -> (f64, f64) {
    let cfg = EsConfig { episodes: 5_000_000, starts: BlackjackObs::decision_states(), batch: 10_000, seed: 0, ..Default::default() };
    let envs: Vec<_> = (0..threads).map(|_| Blackjack::new(BlackjackConfig::default())).collect();
    let mut agent = EsAgent::new(&envs[0], &cfg).unwrap();
    let mut col = Collector::new(envs, 0, "mc-es").unwrap();
    run(&mut agent, &mut col, cfg.episodes, cfg.batch).unwrap();
    col.timings()
}

fn main() {
    // 1 and 2 threads alternate, so that both see the same background load; best of 3 each.
    let (mut one, mut two) = (0.0f64, 0.0f64);
    for _ in 0..3 {
        one = one.max(wick(1, 10_000, 1));
        two = two.max(wick(2, 10_000, 1));
    }
    let seq = wick(1, 1, 3);
    println!("MC ES, Blackjack-v1, 5M episodes (best of 3; {} CPUs):", std::thread::available_parallelism().map_or(1, |n| n.get()));
    println!("  wick, batch 10000, 1 thread : {:>12.0} episodes/s ({:.2} s for Fig. 5.2)", one, 5e6 / one);
    println!("  wick, batch 10000, 2 threads: {:>12.0} episodes/s ({:.2} s; {:.2}x the 1-thread figure)", two, 5e6 / two, two / one);
    println!("  wick, batch 1 (textbook)    : {:>12.0} episodes/s ({:.2} s)", seq, 5e6 / seq);
    let ((g1, l1), (g2, l2)) = (split(1), split(2));
    println!("  seconds generating / learning: 1 thread {g1:.3} / {l1:.3}, 2 threads {g2:.3} / {l2:.3} ({:.2}x / {:.2}x)", g1 / g2, l1 / l2);
    match std::env::var("WICK_PYTHON") {
        Ok(py) if !py.is_empty() => {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/mc_es_blackjack.py");
            let out = Command::new(wick_core::oracle::resolve(&py)).args([script, "--episodes", "200000"]).output().expect("run Python");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON from the script");
            let p = v["episodes_per_s"].as_f64().unwrap();
            println!("  Python (Gymnasium + dict Q) : {:>12.0} episodes/s (200k episodes)", p);
            println!("  ratios vs Python: 1 thread {:.0}x, 2 threads {:.0}x, textbook {:.0}x", one / p, two / p, seq / p);
        }
        _ => println!("  (set WICK_PYTHON to a Python with gymnasium to measure the Python reference)"),
    }
}
