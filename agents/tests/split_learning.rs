//! Split learning (returns found on the worker threads, table updates applied by state
//! partition on several threads, `wick_agents::parallel`) gives the same bits as learning one
//! episode at a time with `McAgent::learn`, for every thread count.

use wick_agents::parallel::{self, Collector, McAgent};
use wick_agents::tabular::{QTable, TabularEnv, Transition};
use wick_agents::*;
use wick_core::checkpoint::Checkpoint;
use wick_core::rng::Rng;
use wick_envs::blackjack::{Blackjack, BlackjackConfig, BlackjackObs};
use wick_envs::grid_world::{GridWorld, GridWorldConfig};

/// An agent with split learning turned off: the driver must call `learn` per episode.
struct Sequential<A>(A);

impl<A: McAgent> McAgent for Sequential<A> {
    fn episode<E: TabularEnv + ?Sized>(&self, k: u64, env: &mut E, rng: &mut Rng, steps: &mut Vec<Transition>, probs: &mut Vec<f64>) -> wick_core::Result<()> {
        self.0.episode(k, env, rng, steps, probs)
    }
    fn learn(&mut self, k: u64, steps: &[Transition], probs: &[f64]) -> f64 {
        self.0.learn(k, steps, probs)
    }
    fn q(&self) -> Option<&QTable> {
        self.0.q()
    }
    fn state_values(&self) -> Vec<f64> {
        self.0.state_values()
    }
    fn save(&self, ck: &mut Checkpoint) {
        self.0.save(ck)
    }
    fn load(&mut self, ck: &Checkpoint) -> wick_core::Result<()> {
        self.0.load(ck)
    }
}

/// Everything a run leaves, as bits: the table (or the state values) and counts, each
/// episode's return, each batch's largest update.
fn outcome<A: McAgent>(a: &A, returns: &[f64], deltas: &[f64]) -> Vec<u64> {
    let mut v: Vec<u64> = match a.q() {
        Some(q) => q.q.iter().map(|x| x.to_bits()).chain(q.n.iter().copied()).collect(),
        None => a.state_values().iter().map(|x| x.to_bits()).collect(),
    };
    v.extend(returns.iter().chain(deltas).map(|x| x.to_bits()));
    v
}

/// Run `make()`'s agent on 1 thread (no split), split on 2 and 3 threads, and sequentially on
/// 2: everything must be identical to the bit.
fn check<A: McAgent, E: TabularEnv + Send>(make: impl Fn() -> A, env: impl Fn() -> E, episodes: u64, batch: u64) {
    let col = |threads: usize| Collector::new((0..threads).map(|_| env()).collect(), 5, "split").unwrap();
    let mut seq = Sequential(make());
    let (r, d) = drive(&mut seq, &mut col(2), episodes, batch);
    let reference = outcome(&seq, &r, &d);
    let without_deltas = outcome(&seq, &r, &[]);
    assert!(d.iter().any(|&x| x > 0.0), "nothing was learned");
    for threads in [1, 2, 3] {
        let mut a = make();
        assert!(a.returns().is_some(), "the agent does not offer split learning");
        let (r, d) = drive(&mut a, &mut col(threads), episodes, batch);
        assert!(outcome(&a, &r, &d) == reference, "split learning on {threads} threads differs from learning episode by episode");
        // `parallel::run`: the returns written into one buffer by the threads (`batch_into`).
        let mut a = make();
        let r = parallel::run(&mut a, &mut col(threads), episodes, batch).unwrap();
        assert!(outcome(&a, &r, &[]) == without_deltas, "parallel::run on {threads} threads differs from learning episode by episode");
    }
}

/// Like `parallel::run`, also keeping each batch's largest update.
fn drive<A: McAgent, E: TabularEnv + Send>(agent: &mut A, col: &mut Collector<E>, episodes: u64, batch: u64) -> (Vec<f64>, Vec<f64>) {
    let (mut returns, mut deltas) = (Vec::new(), Vec::new());
    let mut k = 0;
    while k < episodes {
        let b = batch.min(episodes - k);
        deltas.push(col.batch(agent, k, b, |_, g| returns.extend_from_slice(g)).unwrap());
        k += b;
    }
    (returns, deltas)
}

#[test]
fn mc_es_split_equals_sequential() {
    let bj = || Blackjack::new(BlackjackConfig::default());
    let starts = BlackjackObs::decision_states();
    let cfg = EsConfig { episodes: 60_000, batch: 1000, starts, seed: 5, ..Default::default() };
    check(|| EsAgent::new(&bj(), &cfg).unwrap(), bj, cfg.episodes, cfg.batch);
    // Every-visit, discounted, long episodes with repeated pairs (grid world).
    let gw = || GridWorld::new(GridWorldConfig::default());
    let cfg = EsConfig { episodes: 4_000, batch: 64, gamma: 0.9, visit: Visit::Every, max_len: Some(40), seed: 5, ..Default::default() };
    check(|| EsAgent::new(&gw(), &cfg).unwrap(), gw, cfg.episodes, cfg.batch);
}

#[test]
fn epsilon_greedy_split_equals_sequential() {
    let gw = || GridWorld::new(GridWorldConfig::default());
    for step_size in [None, Some(0.05)] {
        let cfg = EpsilonGreedyConfig { episodes: 4_000, gamma: 0.9, max_len: Some(50), batch: 100, step_size, ..Default::default() };
        check(|| EpsilonGreedyAgent::new(&gw(), &cfg).unwrap(), gw, cfg.episodes, cfg.batch);
    }
}

#[test]
fn prediction_split_equals_sequential() {
    let bj = || Blackjack::new(BlackjackConfig::default());
    let policy = Policy::uniform(bj().n_states(), 2);
    let cfg = PredictionConfig { episodes: 50_000, batch: 1000, ..Default::default() };
    check(|| PredictionAgent::new(&bj(), &policy, &cfg, Target::V, &[]).unwrap(), bj, cfg.episodes, cfg.batch);
    let gw = || GridWorld::new(GridWorldConfig::default());
    let policy = Policy::uniform(gw().n_states(), gw().n_actions());
    let cfg = PredictionConfig { episodes: 3_000, batch: 50, gamma: 0.9, max_len: Some(30), ..Default::default() };
    check(|| PredictionAgent::new(&gw(), &policy, &cfg, Target::Q { exploring_starts: true }, &[]).unwrap(), gw, cfg.episodes, cfg.batch);
}

