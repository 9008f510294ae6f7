//! Episodes collected on worker threads, with results bit-identical for every thread count.
//!
//! A run is a sequence of **batches** of episodes. All episodes of a batch are generated from
//! the agent as it stands at the start of the batch (for `batch = 1` this is the textbook
//! algorithm, one policy improvement per episode), then learned from in episode order. A batch
//! is cut into at most [`CHUNKS_PER_BATCH`] **chunks** of consecutive episodes; chunk `c`
//! starting at episode `k` draws everything (start pairs, exploratory actions, the env's cards
//! and slips) from its own stream `Rng::stream_indexed(seed, name, k)` and reseeds its env from
//! it. Which thread generates a chunk therefore changes nothing: `--threads 1` and
//! `--threads N` give the same bits, and a run resumed at a batch boundary needs no random
//! state from the checkpoint at all.
//!
//! **Split learning.** Where learning is "each counted visit's return `G` updates one table
//! entry" (MC prediction, MC ES, ε-greedy control) the agent says so with
//! [`McAgent::returns`]. The workers then also walk each episode backwards for its returns and
//! the first-visit test, right after generating it, and sort the `(key, G)` updates into
//! [`PARTITIONS`] buckets by key (16 consecutive entries, 128 bytes of the table, go to one
//! bucket, so that two threads never write to one cache line). The updates of one entry stay in
//! episode order within its bucket, so the partitions are applied on different threads at
//! once — the same operations on every entry in the same order as [`McAgent::learn`], hence
//! the same bits — and nothing of the learning stays on one thread (Amdahl).
//!
//! The threads are a team (`team.rs`) that stays up for the whole run: a batch is one job for all of
//! them (generate, a spinning barrier, apply), with no thread parked in between.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard};

use wick_core::checkpoint::Checkpoint;
use wick_core::rng::Rng;
use wick_core::{Error, Result};

use crate::tabular::{mean_step, QTable, TabularEnv, Transition, Visit, Visits};
use crate::team::{SpinBarrier, Team};

/// Chunks per batch: the unit of work of a thread when generating (independent of the thread count).
pub const CHUNKS_PER_BATCH: u64 = 16;

/// Table partitions of split learning: key `i` belongs to partition `(i / 16) % PARTITIONS`,
/// the unit of work of a thread when learning (independent of the thread count).
pub const PARTITIONS: usize = 16;

/// The partition of table entry `i`: blocks of 16 entries (128 bytes of `f64`s or `u64`s).
#[inline]
fn partition(i: usize) -> usize {
    (i / 16) % PARTITIONS
}

/// The returns an agent learns from when every counted visit's return updates one table entry:
/// `G_t = R_{t+1} + γ G_{t+1}` for each first (or every) visit of its key, `s · cols + a` for
/// action values (`cols` = the number of actions) or `s` for state values (`cols` = 1), applied
/// as the sample mean `q ← q + (G − q)/n` or, with `alpha`, constant-α `q ← q + α(G − q)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Returns {
    pub gamma: f64,
    pub visit: Visit,
    pub num_states: usize,
    pub cols: usize,
    pub alpha: Option<f64>,
}

impl Returns {
    fn keys(&self) -> usize {
        self.num_states * self.cols
    }

    /// The table entry of (state, action).
    #[inline]
    fn key(&self, s: usize, a: usize) -> usize {
        if self.cols == 1 {
            s
        } else {
            s * self.cols + a
        }
    }

    /// Learn from one episode in order: each counted visit's return is one estimate step on
    /// `table` (the agents' [`McAgent::learn`]). Returns the largest `|Δ|`.
    pub fn learn(&self, visits: &mut Visits, table: &mut QTable, ep: &[Transition]) -> f64 {
        let mut max = 0.0f64;
        visits.for_each_return(ep, self.gamma, self.visit, |s, a| self.key(s, a), |_, i, g| {
            max = max.max(mean_step(&mut table.q[i], &mut table.n[i], g, self.alpha));
        });
        max
    }

    /// Push `(key, G)` for each counted visit of `ep` onto `out`, in the order
    /// [`Returns::learn`] applies them.
    fn collect(&self, visits: &mut Visits, ep: &[Transition], out: &mut Vec<(u32, f64)>) {
        visits.for_each_return(ep, self.gamma, self.visit, |s, a| self.key(s, a), |_, i, g| out.push((i as u32, g)));
    }
}

/// A tabular Monte Carlo agent as the parallel driver sees it: it generates an episode from its
/// current state (read-only, so many threads can do it at once) and learns from a finished one.
pub trait McAgent: Sync {
    /// Generate episode number `k` (0-based over the run) into `steps`, with the behaviour
    /// probability `b(A_t|S_t)` of each action in `probs` where the agent needs it (off-policy).
    fn episode<E: TabularEnv + ?Sized>(&self, k: u64, env: &mut E, rng: &mut Rng, steps: &mut Vec<Transition>, probs: &mut Vec<f64>) -> Result<()>;
    /// Learn from episode `k`; returns the largest `|Δ|` of a value estimate it changed.
    fn learn(&mut self, k: u64, steps: &[Transition], probs: &[f64]) -> f64;
    /// `Some` when `learn` is exactly "for each counted visit's return, in order, one
    /// [`Returns`] step on the entry of [`McAgent::table_mut`]": split learning (module docs).
    fn returns(&self) -> Option<Returns> {
        None
    }
    /// The table split learning updates.
    fn table_mut(&mut self) -> &mut QTable {
        unreachable!("table_mut is only called on agents whose returns() is Some")
    }
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
    /// End offset of each episode in `steps`, and its undiscounted return `Σ_t R_{t+1}`.
    ends: Vec<usize>,
    rets: Vec<f64>,
    /// Split learning: the chunk's `(key, G)` updates in episode order, the same grouped by
    /// partition (a stable counting sort, so each partition keeps episode order), partition
    /// `p` at `by_part[part[p]..part[p + 1]]`; first-visit scratch. (Everything a worker writes
    /// is in buffers of its chunk or its own: small buffers of two chunks side by side on the
    /// heap would share cache lines.)
    ups: Vec<(u32, f64)>,
    by_part: Vec<(u32, f64)>,
    part: [usize; PARTITIONS + 1],
    visits: Visits,
    err: Option<Error>,
}

/// A table's entries shared by the threads of split learning, each of which updates only the
/// keys of the partitions it claimed.
struct Cells {
    q: *mut f64,
    n: *mut u64,
    len: usize,
}

// SAFETY: the pointers come from a `&mut QTable` held for the whole learning phase, and every
// key belongs to exactly one partition, claimed by exactly one thread (an atomic counter).
unsafe impl Sync for Cells {}

impl Cells {
    /// Apply partition `p` of every chunk, in chunk (= episode) order; returns the largest `|Δ|`.
    ///
    /// # Safety
    /// No other thread may apply partition `p` at the same time.
    unsafe fn apply(&self, chunks: &[RwLockReadGuard<Chunk>], p: usize, alpha: Option<f64>) -> f64 {
        let mut max = 0.0f64;
        for ch in chunks {
            for &(i, g) in &ch.by_part[ch.part[p]..ch.part[p + 1]] {
                let i = i as usize;
                assert!(i < self.len);
                let (q, n) = (&mut *self.q.add(i), &mut *self.n.add(i));
                let d = mean_step(q, n, g, alpha);
                if d > max {
                    max = d;
                }
            }
        }
        max
    }
}

/// Where the threads write episode returns ([`Collector::batch_into`]).
struct Out(*mut f64);

// SAFETY: each chunk writes only its own range of the buffer, and the buffer outlives the batch.
unsafe impl Sync for Out {}

/// `T` on cache lines of its own: the threads' envs and chunks are written at every step, and
/// neighbours sharing a line (false sharing) cost the second thread all of its speed-up.
#[repr(align(128))]
struct Own<T>(T);

impl<T> std::ops::Deref for Own<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The driver: one env per thread, a team (`team.rs`) of that many threads, and reusable chunk buffers.
pub struct Collector<E> {
    envs: Vec<Own<Mutex<E>>>,
    team: Team,
    seed: u64,
    stream: String,
    chunks: Vec<Own<RwLock<Chunk>>>,
    /// Wall seconds spent generating episodes and learning from them.
    gen_secs: f64,
    learn_secs: f64,
}

impl<E: TabularEnv + Send> Collector<E> {
    /// `envs.len()` is the number of threads (at least 1); every env must be the same env.
    pub fn new(envs: Vec<E>, seed: u64, stream: &str) -> Result<Collector<E>> {
        wick_core::ensure!(!envs.is_empty(), "the collector needs at least one env");
        let t = envs.len();
        let team = Team::new(t).map_err(|e| Error::new(format!("cannot start {t} worker threads: {e}")))?;
        let chunks = (0..CHUNKS_PER_BATCH).map(|_| Own(RwLock::new(Chunk::default()))).collect();
        let envs = envs.into_iter().map(|e| Own(Mutex::new(e))).collect();
        Ok(Collector { envs, team, seed, stream: stream.to_string(), chunks, gen_secs: 0.0, learn_secs: 0.0 })
    }

    /// Wall seconds so far spent generating episodes (in parallel) and learning.
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
        self.envs[0].0.get_mut().unwrap()
    }

    /// Generate episodes `first .. first + count` from `agent` on the worker threads and learn
    /// from them (split learning where the agent offers it and there is more than one thread:
    /// the bits are the same either way). `each(k, returns)` then sees the undiscounted returns
    /// (summed on the workers) of episodes `k, k + 1, …`, a chunk at a time, in order. Returns
    /// the largest `|Δ|` of the batch.
    pub fn batch<A: McAgent>(&mut self, agent: &mut A, first: u64, count: u64, each: impl FnMut(u64, &[f64])) -> Result<f64> {
        let split = if self.threads() > 1 { agent.returns() } else { None };
        self.batch_with(agent, first, count, split, None::<fn(&A, u64, &[Transition])>, each, None)
    }

    /// Like [`Collector::batch`], with the undiscounted return of episode `first + i` written
    /// to `out[i]` by the thread that generated it (`out.len()` must be `count`).
    pub fn batch_into<A: McAgent>(&mut self, agent: &mut A, first: u64, out: &mut [f64]) -> Result<f64> {
        let split = if self.threads() > 1 { agent.returns() } else { None };
        self.batch_with(agent, first, out.len() as u64, split, None::<fn(&A, u64, &[Transition])>, |_, _| {}, Some(out))
    }

    /// Like [`Collector::batch`] but always learning one episode at a time with
    /// [`McAgent::learn`], so that `each(agent, k, steps)` sees the agent right after episode `k`.
    pub fn batch_observed<A: McAgent>(&mut self, agent: &mut A, first: u64, count: u64, each: impl FnMut(&A, u64, &[Transition])) -> Result<f64> {
        self.batch_with(agent, first, count, None, Some(each), |_, _| {}, None)
    }

    /// The batch, with `observe(agent, k, steps)` after each episode's `learn` (no split),
    /// `chunk(k, returns)` per chunk, and each episode's return written to `out` if given.
    #[allow(clippy::too_many_arguments)]
    fn batch_with<A: McAgent>(
        &mut self,
        agent: &mut A,
        first: u64,
        count: u64,
        split: Option<Returns>,
        mut observe: Option<impl FnMut(&A, u64, &[Transition])>,
        mut chunk: impl FnMut(u64, &[f64]),
        out: Option<&mut [f64]>,
    ) -> Result<f64> {
        if count == 0 {
            return Ok(0.0);
        }
        let n = count.min(CHUNKS_PER_BATCH) as usize;
        for c in 0..n {
            let mut ch = self.chunks[c].write().unwrap_or_else(PoisonError::into_inner);
            ch.first = first + count * c as u64 / n as u64;
            ch.count = first + count * (c as u64 + 1) / n as u64 - ch.first;
        }
        let (seed, stream, chunks, envs) = (self.seed, self.stream.as_str(), &self.chunks[..n], &self.envs);
        // Split learning writes the table through `cells` after every thread has passed the
        // barrier, i.e. after the last read of it through `shared` (the values live in the
        // table's heap buffers, which `shared` does not cover).
        let cells = split.map(|_| {
            let t = agent.table_mut();
            Cells { q: t.q.as_mut_ptr(), n: t.n.as_mut_ptr(), len: t.q.len().min(t.n.len()) }
        });
        // Each chunk's returns go to its own range of `out` (disjoint: chunks are).
        let out = out.map(|o| Out(o.as_mut_ptr()));
        let shared: &A = agent;
        let (next_chunk, next_part) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let failed = AtomicBool::new(false);
        let barrier = SpinBarrier::new(&self.team);
        let t0 = std::time::Instant::now();
        // One wake-up of the workers per batch: generate (chunks claimed in turn), wait for
        // every thread, then apply the updates (partitions claimed in turn).
        let out = on_threads(&mut self.team, |t| {
            let generated = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut env = envs[t].lock().unwrap_or_else(PoisonError::into_inner);
                // One episode's scratch, the thread's own.
                let (mut ep, mut pr) = (Vec::with_capacity(256), Vec::with_capacity(256));
                // Claim chunks in turn until none is left (or a thread failed: stop early).
                while !failed.load(Ordering::Relaxed) {
                    let c = next_chunk.fetch_add(1, Ordering::Relaxed);
                    if c >= n {
                        break;
                    }
                    let mut ch = chunks[c].write().unwrap_or_else(PoisonError::into_inner);
                    ch.err = fill(shared, split.as_ref(), &mut *env, seed, stream, &mut ch, &mut ep, &mut pr).err();
                    if ch.err.is_some() {
                        failed.store(true, Ordering::Relaxed);
                    } else if let Some(o) = &out {
                        // SAFETY: `out` has `count` entries and chunk `c` owns
                        // `ch.first - first ..` `+ ch.count` of them.
                        unsafe { std::ptr::copy_nonoverlapping(ch.rets.as_ptr(), o.0.add((ch.first - first) as usize), ch.rets.len()) };
                    }
                }
            }));
            let Some(cells) = cells.as_ref() else { return (generated, 0.0, None) };
            // Every thread reaches the barrier, even after a panic (else the others would wait
            // for ever); the team runs all `threads` of these at once.
            if generated.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            barrier.wait();
            let gen_end = (t == 0).then(std::time::Instant::now);
            let mut m = 0.0f64;
            // Read access to every chunk, taken once (lock words are shared cache lines: taking
            // them per partition, both threads at once, cost a tenth of the learning time).
            let chunks: Vec<_> = if failed.load(Ordering::Relaxed) { Vec::new() } else { chunks.iter().map(|c| c.read().unwrap_or_else(PoisonError::into_inner)).collect() };
            while !failed.load(Ordering::Relaxed) {
                let p = next_part.fetch_add(1, Ordering::Relaxed);
                if p >= PARTITIONS {
                    break;
                }
                // SAFETY: partition `p` was claimed by this thread alone; generation is over.
                m = m.max(unsafe { cells.apply(&chunks, p, split.unwrap().alpha) });
            }
            (generated, m, gen_end)
        });
        let mut max = 0.0f64;
        let mut t1 = std::time::Instant::now();
        for (generated, m, gen_end) in out {
            if let Err(panic) = generated {
                std::panic::resume_unwind(panic);
            }
            max = max.max(m);
            t1 = gen_end.unwrap_or(t1);
        }
        self.gen_secs += (t1 - t0).as_secs_f64();
        for ch in chunks {
            if let Some(e) = ch.write().unwrap_or_else(PoisonError::into_inner).err.take() {
                return Err(e);
            }
        }
        for ch in chunks {
            let ch = ch.read().unwrap_or_else(PoisonError::into_inner);
            if split.is_none() {
                let mut lo = 0;
                for (i, &hi) in ch.ends.iter().enumerate() {
                    let k = ch.first + i as u64;
                    let probs = if ch.probs.is_empty() { &[][..] } else { &ch.probs[lo..hi] };
                    max = max.max(agent.learn(k, &ch.steps[lo..hi], probs));
                    if let Some(f) = observe.as_mut() {
                        f(agent, k, &ch.steps[lo..hi]);
                    }
                    lo = hi;
                }
            }
            chunk(ch.first, &ch.rets);
        }
        agent.end_batch();
        self.learn_secs += t1.elapsed().as_secs_f64();
        Ok(max)
    }

}

/// Run `f(t)` on every thread of `team` at once; the results in `t` order.
fn on_threads<R: Send>(team: &mut Team, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    if team.threads() == 1 {
        // No slots to allocate (`--batch 1` runs this once per episode).
        return vec![f(0)];
    }
    let out: Vec<Own<Mutex<Option<R>>>> = (0..team.threads()).map(|_| Own(Mutex::new(None))).collect();
    team.run(&|t| *out[t].lock().unwrap_or_else(PoisonError::into_inner) = Some(f(t)));
    out.into_iter().map(|m| m.0.into_inner().unwrap_or_else(PoisonError::into_inner).expect("every thread ran")).collect()
}

/// Generate one chunk's episodes from its own stream.
#[allow(clippy::too_many_arguments)]
fn fill<A: McAgent, E: TabularEnv + ?Sized>(
    agent: &A,
    returns: Option<&Returns>,
    env: &mut E,
    seed: u64,
    stream: &str,
    ch: &mut Chunk,
    ep: &mut Vec<Transition>,
    pr: &mut Vec<f64>,
) -> Result<()> {
    let mut rng = Rng::stream_indexed(seed, stream, ch.first);
    env.start(Some(rng.below(u64::MAX)))?;
    let Chunk { first, count, steps, probs, ends, rets, ups, by_part, part, visits, .. } = ch;
    steps.clear();
    probs.clear();
    ends.clear();
    rets.clear();
    ups.clear();
    if let Some(r) = returns {
        if visits.keys() != r.keys() {
            *visits = Visits::new(r.keys());
        }
    }
    for k in *first..*first + *count {
        agent.episode(k, env, &mut rng, ep, pr)?;
        rets.push(ep.iter().map(|t| t.r).sum());
        if let Some(r) = returns {
            r.collect(visits, ep, ups);
        } else {
            // Kept for `learn` on the caller's thread.
            steps.extend_from_slice(ep);
            probs.extend_from_slice(pr);
            ends.push(steps.len());
        }
    }
    if returns.is_some() {
        // Stable counting sort of the updates by partition.
        part.fill(0);
        for &(i, _) in ups.iter() {
            part[partition(i as usize) + 1] += 1;
        }
        for p in 0..PARTITIONS {
            part[p + 1] += part[p];
        }
        by_part.clear();
        by_part.resize(ups.len(), (0, 0.0));
        let mut at = *part;
        for &u in ups.iter() {
            let p = partition(u.0 as usize);
            by_part[at[p]] = u;
            at[p] += 1;
        }
    }
    Ok(())
}

/// Run `episodes` episodes in batches of `batch` (the library's simple loop; the CLI adds
/// logging and checkpoints around [`Collector::batch`]). Returns each episode's undiscounted return.
pub fn run<A: McAgent, E: TabularEnv + Send>(agent: &mut A, col: &mut Collector<E>, episodes: u64, batch: u64) -> Result<Vec<f64>> {
    let batch = batch.max(1);
    // Zeroed memory comes from the OS untouched: its pages are first written (and faulted in)
    // by the threads that generate the episodes, in parallel. (Reserved up to 2^26 episodes,
    // 512 MiB, at once: an agent may converge long before `episodes`.)
    let mut returns = vec![0.0; episodes.min(1 << 26) as usize];
    let mut k = 0;
    while k < episodes && !agent.converged() {
        let b = batch.min(episodes - k);
        let end = (k + b) as usize;
        if end > returns.len() {
            returns.resize(end.max(2 * returns.len()).min(episodes as usize), 0.0);
        }
        col.batch_into(agent, k, &mut returns[k as usize..end])?;
        k += b;
    }
    returns.truncate(k as usize);
    returns.shrink_to_fit();
    Ok(returns)
}
