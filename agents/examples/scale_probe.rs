use std::time::Instant;
use wick_agents::parallel::{run, Collector};
use wick_agents::{EsAgent, EsConfig};
use wick_envs::blackjack::{Blackjack, BlackjackConfig, BlackjackObs};
fn main() {
    let mut starts = Vec::new();
    for s in 12..=21u8 { for d in 1..=10u8 { for a in [false, true] { starts.push(BlackjackObs { player_sum: s, dealer_card: d, usable_ace: a }.index()); } } }
    let only1 = std::env::args().any(|a| a == "one");
    for batch in [10_000u64, 100_000, 1_000_000] {
        for threads in [1usize, 2] {
            if only1 && threads == 2 { continue; }
            let cfg = EsConfig { episodes: 5_000_000, starts: starts.clone(), batch, seed: 0, ..Default::default() };
            let envs: Vec<_> = (0..threads).map(|_| Blackjack::new(BlackjackConfig::default())).collect();
            let mut agent = EsAgent::new(&envs[0], &cfg).unwrap();
            let mut col = Collector::new(envs, 0, "mc-es").unwrap();
            let t = Instant::now();
            if std::env::args().any(|a| a == "nocb") {
                let mut k = 0;
                while k < cfg.episodes { col.batch(&mut agent, k, batch, |_, _| {}).unwrap(); k += batch; }
            } else {
                run(&mut agent, &mut col, cfg.episodes, cfg.batch).unwrap();
            }
            let (g, l) = col.timings();
            println!("batch {batch:>8} threads {threads}: {:.3} s (gen {g:.3}, learn {l:.3})", t.elapsed().as_secs_f64());
        }
    }
}
