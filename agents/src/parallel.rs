//! Episodes collected on worker threads, with results bit-identical for every thread count.
//!
//! A run is a sequence of **batches** of episodes. All episodes of a batch are generated from
//! the agent as it stands at the start of the batch (for `batch = 1` this is the textbook
//! algorithm, one policy improvement per episode), then learned from one by one in episode
//! order. A batch is cut into at most [`CHUNKS_PER_BATCH`] **chunks** of consecutive
//! episodes; chunk `c` starting at episode `k` draws everything (start pairs, exploratory
//! actions, the env's cards and slips) from its own stream `Rng::stream_indexed(seed, name, k)`
//! and reseeds its env from it. Which thread generates a chunk therefore changes nothing:
//! `--threads 1` and `--threads N` give the same bits, and a run resumed at a batch boundary
//! needs no random state from the checkpoint at all.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use wick_core::checkpoint::Checkpoint;
use wick_core::rng::Rng;
use wick_core::{Error, Result};

use crate::tabular::{QTable, TabularEnv, Transition};

/// Chunks per batch: the unit of work of a thread (independent of the thread count).
pub const CHUNKS_PER_BATCH: u64 = 16;

/// A tabular Monte Carlo agent as the parallel driver sees it: it generates an episode from its
/// current state (read-only, so many threads can do it at once) and learns from a finished one.
pub trait McAgent: Sync {
    /// Generate episode number `k` (0-based over the run) into `steps`, with the behaviour
    /// probability `b(A_t|S_t)` of each action in `probs` where the agent needs it (off-policy).
    fn episode<E: TabularEnv + ?Sized>(&self, k: u64, env: &mut E, rng: &mut Rng, steps: &mut Vec<Transition>, probs: &mut Vec<f64>) -> Result<()>;
    /// Learn from episode `k`; returns the largest `|Δ|` of a value estimate it changed.
    fn learn(&mut self, k: u64, steps: &[Transition], probs: &[f64]) -> f64;
    /// After every episode of a batch was learned (MC Basic improves its policy here).
    fn end_batch(&mut self) {}
    /// True when there is nothing left to do (MC Basic: the policy is stable).
    fn converged(&self) -> bool {
        false
    }
    /// The action values, for control and Q prediction.
    fn q(&self) -> Option<&QTable>;
    /// State values: `max_a Q` for control, the estimate for prediction.
    fn state_values(&self) -> Vec<f64>;
    /// The greedy policy of a control agent.
    fn greedy_policy(&self) -> Option<Vec<usize>> {
        self.q().map(|q| q.greedy_policy())
    }
    /// Everything needed to continue exactly (tables as f64, counts as u64).
    fn save(&self, ck: &mut Checkpoint);
    fn load(&mut self, ck: &Checkpoint) -> Result<()>;
}

/// Save a Q-table as `q` (f64 `[S, A]`) and `n` (u64 `[S, A]`) under `prefix`.
pub fn save_q(ck: &mut Checkpoint, prefix: &str, q: &QTable) {
    ck.put_f64(&format!("{prefix}q"), &[q.num_states, q.num_actions], &q.q);
    ck.put_u64(&format!("{prefix}n"), &[q.num_states, q.num_actions], &q.n);
}

/// Load what [`save_q`] wrote into `q` (its shape must match).
pub fn load_q(ck: &Checkpoint, prefix: &str, q: &mut QTable) -> Result<()> {
    let shape = [q.num_states, q.num_actions];
    q.q = ck.f64_values(&format!("{prefix}q"), &shape)?;
    q.n = ck.u64_values(&format!("{prefix}n"), &shape)?;
    Ok(())
}

/// The episodes of one chunk, stored flat.
#[derive(Default)]
struct Chunk {
    first: u64,
    count: u64,
    steps: Vec<Transition>,
    probs: Vec<f64>,
    /// End offset of each episode in `steps`.
    ends: Vec<usize>,
    err: Option<Error>,
    /// Scratch for one episode.
    ep: Vec<Transition>,
    pr: Vec<f64>,
}

/// The driver: one env per thread and reusable chunk buffers.
pub struct Collector<E> {
    envs: Vec<E>,
    seed: u64,
    stream: String,
    chunks: Vec<Mutex<Chunk>>,
    /// Wall seconds spent generating episodes and learning from them.
    gen_secs: f64,
    learn_secs: f64,
}

impl<E: TabularEnv + Send> Collector<E> {
    /// `envs.len()` is the number of threads (at least 1); every env must be the same env.
    pub fn new(envs: Vec<E>, seed: u64, stream: &str) -> Result<Collector<E>> {
        wick_core::ensure!(!envs.is_empty(), "the collector needs at least one env");
        let chunks = (0..CHUNKS_PER_BATCH).map(|_| Mutex::new(Chunk::default())).collect();
        Ok(Collector { envs, seed, stream: stream.to_string(), chunks, gen_secs: 0.0, learn_secs: 0.0 })
    }

    /// Wall seconds so far spent generating episodes (in parallel) and learning (in order).
    pub fn timings(&self) -> (f64, f64) {
        (self.gen_secs, self.learn_secs)
    }

    pub fn threads(&self) -> usize {
        self.envs.len()
    }

    /// Draw from another family of streams (independent repetitions of an experiment).
    pub fn set_stream(&mut self, stream: &str) {
        self.stream = stream.to_string();
    }

    pub fn env(&mut self) -> &mut E {
        &mut self.envs[0]
    }

    /// Generate episodes `first .. first + count` from `agent` on the worker threads, then let
    /// the agent learn from them in order. `each(k, steps)` sees every episode after it was
    /// learned from. Returns the largest `|Δ|` of the batch.
    pub fn batch<A: McAgent>(&mut self, agent: &mut A, first: u64, count: u64, mut each: impl FnMut(&A, u64, &[Transition])) -> Result<f64> {
        if count == 0 {
            return Ok(0.0);
        }
        let n = count.min(CHUNKS_PER_BATCH) as usize;
        for c in 0..n {
            let mut ch = self.chunks[c].lock().unwrap();
            ch.first = first + count * c as u64 / n as u64;
            ch.count = first + count * (c as u64 + 1) / n as u64 - ch.first;
        }
        let (seed, stream, chunks) = (self.seed, self.stream.as_str(), &self.chunks[..n]);
        let shared: &A = agent;
        let next = AtomicUsize::new(0);
        let t0 = std::time::Instant::now();
        let work = |env: &mut E| loop {
            let c = next.fetch_add(1, Ordering::Relaxed);
            if c >= n {
                break;
            }
            let mut ch = chunks[c].lock().unwrap();
            ch.err = fill(shared, env, seed, stream, &mut ch).err();
        };
        if self.envs.len() == 1 || n == 1 {
            work(&mut self.envs[0]);
        } else {
            let (main, rest) = self.envs.split_first_mut().unwrap();
            std::thread::scope(|sc| {
                for env in rest.iter_mut().take(n - 1) {
                    sc.spawn(|| work(env));
                }
                work(main);
            });
        }
        let t1 = std::time::Instant::now();
        self.gen_secs += (t1 - t0).as_secs_f64();
        let mut max = 0.0f64;
        for c in 0..n {
            let mut ch = self.chunks[c].lock().unwrap();
            if let Some(e) = ch.err.take() {
                return Err(e);
            }
            let mut lo = 0;
            for (i, &hi) in ch.ends.iter().enumerate() {
                let k = ch.first + i as u64;
                let probs = if ch.probs.is_empty() { &[][..] } else { &ch.probs[lo..hi] };
                max = max.max(agent.learn(k, &ch.steps[lo..hi], probs));
                each(agent, k, &ch.steps[lo..hi]);
                lo = hi;
            }
        }
        agent.end_batch();
        self.learn_secs += t1.elapsed().as_secs_f64();
        Ok(max)
    }
}

/// Generate one chunk's episodes from its own stream.
fn fill<A: McAgent, E: TabularEnv + ?Sized>(agent: &A, env: &mut E, seed: u64, stream: &str, ch: &mut Chunk) -> Result<()> {
    let mut rng = Rng::stream_indexed(seed, stream, ch.first);
    env.start(Some(rng.below(u64::MAX)))?;
    let Chunk { first, count, steps, probs, ends, ep, pr, .. } = ch;
    steps.clear();
    probs.clear();
    ends.clear();
    for k in *first..*first + *count {
        agent.episode(k, env, &mut rng, ep, pr)?;
        steps.extend_from_slice(ep);
        probs.extend_from_slice(pr);
        ends.push(steps.len());
    }
    Ok(())
}

/// Run `episodes` episodes in batches of `batch` (the library's simple loop; the CLI adds
/// logging and checkpoints around [`Collector::batch`]). Returns each episode's undiscounted return.
pub fn run<A: McAgent, E: TabularEnv + Send>(agent: &mut A, col: &mut Collector<E>, episodes: u64, batch: u64) -> Result<Vec<f64>> {
    let batch = batch.max(1);
    let mut returns = Vec::with_capacity(episodes.min(1 << 26) as usize);
    let mut k = 0;
    while k < episodes && !agent.converged() {
        let b = batch.min(episodes - k);
        col.batch(agent, k, b, |_, _, ep| returns.push(ep.iter().map(|t| t.r).sum()))?;
        k += b;
    }
    Ok(returns)
}
