//! A batch whose episode generation fails (an error, or a panic on a worker thread) reports it,
//! leaves the agent's table as it was before the batch, and the collector goes on working.

use std::sync::atomic::{AtomicU64, Ordering};

use wick_agents::parallel::{Collector, McAgent, Returns};
use wick_agents::tabular::{QTable, TabularEnv, Transition};
use wick_agents::*;
use wick_core::checkpoint::Checkpoint;
use wick_core::rng::Rng;
use wick_envs::blackjack::{Blackjack, BlackjackConfig, BlackjackObs};

/// MC ES that fails at episode `fail_at` (an error or a panic), once.
struct Faulty {
    inner: EsAgent,
    fail_at: AtomicU64,
    panic: bool,
}

impl McAgent for Faulty {
    fn episode<E: TabularEnv + ?Sized>(&self, k: u64, env: &mut E, rng: &mut Rng, steps: &mut Vec<Transition>, probs: &mut Vec<f64>) -> wick_core::Result<()> {
        if self.fail_at.compare_exchange(k, u64::MAX, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            if self.panic {
                panic!("episode {k} panics");
            }
            wick_core::bail!("episode {k} fails");
        }
        self.inner.episode(k, env, rng, steps, probs)
    }
    fn learn(&mut self, k: u64, steps: &[Transition], probs: &[f64]) -> f64 {
        self.inner.learn(k, steps, probs)
    }
    fn returns(&self) -> Option<Returns> {
        self.inner.returns()
    }
    fn table_mut(&mut self) -> &mut QTable {
        self.inner.table_mut()
    }
    fn q(&self) -> Option<&QTable> {
        self.inner.q()
    }
    fn state_values(&self) -> Vec<f64> {
        self.inner.state_values()
    }
    fn save(&self, ck: &mut Checkpoint) {
        self.inner.save(ck)
    }
    fn load(&mut self, ck: &Checkpoint) -> wick_core::Result<()> {
        self.inner.load(ck)
    }
}

#[test]
fn a_failed_batch_changes_nothing_and_the_next_one_runs() {
    let bj = || Blackjack::new(BlackjackConfig::default());
    let starts = BlackjackObs::decision_states();
    let cfg = EsConfig { episodes: 0, batch: 2000, starts, seed: 3, ..Default::default() };
    for threads in [1, 2, 3] {
        for panic in [false, true] {
            let mut agent = Faulty { inner: EsAgent::new(&bj(), &cfg).unwrap(), fail_at: AtomicU64::new(u64::MAX), panic };
            let mut col = Collector::new((0..threads).map(|_| bj()).collect(), cfg.seed, "faulty").unwrap();
            col.batch(&mut agent, 0, 2000, |_, _| {}).unwrap();
            let before = agent.inner.q.clone();
            // Episode 3500 is in the batch's last chunk but one.
            agent.fail_at.store(3500, Ordering::SeqCst);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| col.batch(&mut agent, 2000, 2000, |_, _| {})));
            match (panic, r) {
                (true, Err(p)) => assert_eq!(p.downcast_ref::<String>().map(String::as_str), Some("episode 3500 panics")),
                (false, Ok(Err(e))) => assert_eq!(e.to_string(), "episode 3500 fails"),
                (_, r) => panic!("threads {threads}, panic {panic}: the failure was not reported: {:?}", r.map(|r| r.map_err(|e| e.to_string()))),
            }
            assert!(agent.inner.q == before, "threads {threads}: a failed batch changed the table");
            // The same batch again, now without the fault, is learned from.
            col.batch(&mut agent, 2000, 2000, |_, _| {}).unwrap();
            assert!(agent.inner.q.n.iter().sum::<u64>() > before.n.iter().sum::<u64>(), "threads {threads}: nothing learned after the failure");
        }
    }
}
